/// libfabric's `fi_rx_addr` (`rdma/fi_domain.h`), from the reviewed template
/// `templates/inline/fi_rx_addr.rs`: the address of receive context
/// `rx_index` of the scalable endpoint at `fi_addr`.
///
/// C computes `((uint64_t) rx_index << (64 - rx_ctx_bits)) | fi_addr`, which is
/// undefined when `rx_ctx_bits` is 0 (a shift by 64) or outside 0..=64. Here a
/// shift that would leave the 64 bits contributes nothing, so `rx_ctx_bits ==
/// 0` (an endpoint without receive contexts) returns `fi_addr` unchanged.
///
/// # Safety
///
/// None beyond the C contract; the function reads no memory. It is `unsafe`
/// only to match the other wrappers.
#[inline]
pub unsafe fn fi_rx_addr(fi_addr: fi_addr_t, rx_index: ::core::ffi::c_int, rx_ctx_bits: ::core::ffi::c_int) -> fi_addr_t {
    let shift = 64i64 - i64::from(rx_ctx_bits);
    let high = match u32::try_from(shift) {
        Ok(s) if s < 64 => (rx_index as u64).wrapping_shl(s),
        _ => 0,
    };
    high | fi_addr
}
