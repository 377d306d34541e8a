//! The generated crate alone, against the real libfabric: discover tcp,
//! open fabric, domain, CQ, AV and an RDM endpoint, and drive them through
//! the generated inline wrappers, ending with a message sent to itself.
//!
//! Skips only when `fi_getinfo` does not offer the tcp provider.

use std::ffi::{c_void, CStr};
use std::ptr;
use std::time::{Duration, Instant};

use libfabric_sys::enums::{AvType, CqFormat, EpType};
use libfabric_sys::flags::{BindFlags, Caps, MrMode};
use libfabric_sys::*;

/// Fails the test with the call's name and libfabric's text for `ret`.
fn check(call: &str, ret: isize) {
    if ret < 0 {
        // SAFETY: fi_strerror returns a static, NUL-terminated string for any value.
        let text = unsafe { CStr::from_ptr(fi_strerror((-ret) as i32)) };
        panic!("{call} failed: {ret} ({})", text.to_string_lossy());
    }
}

/// `fi_getinfo` for the tcp provider with an RDM endpoint; `None` when tcp is absent.
///
/// # Safety
/// The returned list must be freed with `fi_freeinfo`.
unsafe fn tcp_rdm_info() -> Option<*mut fi_info> {
    let hints = fi_allocinfo();
    assert!(!hints.is_null(), "fi_allocinfo returned NULL");
    (*(*hints).fabric_attr).set_prov_name(libc::strdup(c"tcp".as_ptr()));
    let mut any = ptr::null_mut();
    let ret = fi_getinfo(FI_VERSION(1, 17), ptr::null(), ptr::null(), 0, hints, &mut any);
    if ret == -FI_ENODATA {
        fi_freeinfo(hints);
        return None;
    }
    check("fi_getinfo(tcp)", ret as isize);
    fi_freeinfo(any);

    (*(*hints).ep_attr).set_type(EpType::RDM);
    (*hints).set_caps(Caps::MSG);
    (*(*hints).domain_attr).set_mr_mode(MrMode::LOCAL | MrMode::ALLOCATED | MrMode::PROV_KEY | MrMode::VIRT_ADDR);
    let mut info = ptr::null_mut();
    let ret = fi_getinfo(FI_VERSION(1, 17), c"127.0.0.1".as_ptr(), ptr::null(), FI_SOURCE, hints, &mut info);
    fi_freeinfo(hints);
    check("fi_getinfo(tcp, FI_EP_RDM)", ret as isize);
    Some(info)
}

#[test]
fn generated_crate_drives_a_tcp_rdm_endpoint() {
    // SAFETY: every call follows its libfabric contract: objects are opened
    // before use and closed children-first, buffers outlive their operations
    // (the test waits for both completions before closing anything).
    unsafe {
        let Some(info) = tcp_rdm_info() else {
            eprintln!("skipped: fi_getinfo offers no tcp provider on this machine");
            return;
        };
        assert_eq!((*(*info).ep_attr).type_(), EpType::RDM);
        let prov = (*(*info).fabric_attr).prov_name().expect("provider name");
        assert!(prov.to_string_lossy().contains("tcp"), "provider {prov:?}");

        let mut fabric = ptr::null_mut();
        check("fi_fabric", fi_fabric((*info).fabric_attr, &mut fabric, ptr::null_mut()) as isize);
        let mut domain = ptr::null_mut();
        check("fi_domain", fi_domain(fabric, info, &mut domain, ptr::null_mut()) as isize);

        let mut cq_attr: fi_cq_attr = std::mem::zeroed();
        cq_attr.set_format(CqFormat::CONTEXT);
        cq_attr.set_size(16);
        let mut cq = ptr::null_mut();
        check("fi_cq_open", fi_cq_open(domain, &mut cq_attr, &mut cq, ptr::null_mut()) as isize);

        let mut av_attr: fi_av_attr = std::mem::zeroed();
        av_attr.set_type(AvType::MAP);
        let mut av = ptr::null_mut();
        check("fi_av_open", fi_av_open(domain, &mut av_attr, &mut av, ptr::null_mut()) as isize);

        let mut ep = ptr::null_mut();
        check("fi_endpoint", fi_endpoint(domain, info, &mut ep, ptr::null_mut()) as isize);
        check(
            "fi_ep_bind(cq)",
            fi_ep_bind(ep, &mut (*cq).fid, (BindFlags::TRANSMIT | BindFlags::RECV).bits()) as isize,
        );
        check("fi_ep_bind(av)", fi_ep_bind(ep, &mut (*av).fid, 0) as isize);
        check("fi_enable", fi_enable(ep) as isize);

        // An empty CQ says "try again".
        let mut entry: fi_cq_entry = std::mem::zeroed();
        assert_eq!(fi_cq_read(cq, (&mut entry as *mut fi_cq_entry).cast(), 1), -(FI_EAGAIN as isize));

        // Our own address, inserted into the AV.
        let mut name = [0u8; 256];
        let mut len = name.len();
        check("fi_getname", fi_getname(&mut (*ep).fid, name.as_mut_ptr().cast(), &mut len) as isize);
        assert!(len > 0 && len <= name.len());
        let mut me: fi_addr_t = FI_ADDR_UNSPEC;
        let inserted = fi_av_insert(av, name.as_ptr().cast(), 1, &mut me, 0, ptr::null_mut());
        assert_eq!(inserted, 1, "fi_av_insert");

        // An endpoint option through fi_setopt/fi_getopt (dispatched through ep->ops).
        let mut min: usize = 0;
        let mut min_len = std::mem::size_of::<usize>();
        let ret = fi_getopt(
            &mut (*ep).fid,
            FI_OPT_ENDPOINT as i32,
            FI_OPT_MIN_MULTI_RECV as i32,
            (&mut min as *mut usize).cast(),
            &mut min_len,
        );
        if ret == 0 {
            check(
                "fi_setopt",
                fi_setopt(
                    &mut (*ep).fid,
                    FI_OPT_ENDPOINT as i32,
                    FI_OPT_MIN_MULTI_RECV as i32,
                    (&min as *const usize).cast(),
                    min_len,
                ) as isize,
            );
        } else {
            assert_eq!(ret, -FI_ENOPROTOOPT, "fi_getopt: unexpected {ret}");
        }

        // A message to ourselves: post the receive, send, reap two completions.
        let mut rx = [0u8; 64];
        let tx = *b"hello from the generated crate\0";
        let mut rx_ctx = [0u8; 64];
        let mut tx_ctx = [0u8; 64];
        let rx_ctx_ptr: *mut c_void = rx_ctx.as_mut_ptr().cast();
        let tx_ctx_ptr: *mut c_void = tx_ctx.as_mut_ptr().cast();
        check("fi_recv", fi_recv(ep, rx.as_mut_ptr().cast(), rx.len(), ptr::null_mut(), FI_ADDR_UNSPEC, rx_ctx_ptr));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ret = fi_send(ep, tx.as_ptr().cast(), tx.len(), ptr::null_mut(), me, tx_ctx_ptr);
            if ret == -(FI_EAGAIN as isize) && Instant::now() < deadline {
                fi_cq_read(cq, ptr::null_mut(), 0);
                continue;
            }
            check("fi_send", ret);
            break;
        }
        let mut seen = Vec::new();
        while seen.len() < 2 {
            assert!(Instant::now() < deadline, "no completion within 10 s (got {seen:?})");
            let ret = fi_cq_read(cq, (&mut entry as *mut fi_cq_entry).cast(), 1);
            if ret == 1 {
                seen.push(entry.op_context);
            } else if ret == -(FI_EAVAIL as isize) {
                let mut err: fi_cq_err_entry = std::mem::zeroed();
                fi_cq_readerr(cq, &mut err, 0);
                panic!("completion error: {:?}", err.err());
            } else {
                assert_eq!(ret, -(FI_EAGAIN as isize), "fi_cq_read");
            }
        }
        assert!(seen.contains(&rx_ctx_ptr) && seen.contains(&tx_ctx_ptr), "contexts {seen:?}");
        assert_eq!(&rx[..tx.len()], &tx[..]);

        for (what, fid) in [
            ("endpoint", &mut (*ep).fid as *mut fid),
            ("av", &mut (*av).fid),
            ("cq", &mut (*cq).fid),
            ("domain", &mut (*domain).fid),
            ("fabric", &mut (*fabric).fid),
        ] {
            check(&format!("fi_close({what})"), fi_close(fid) as isize);
        }
        fi_freeinfo(info);
    }
}

#[test]
fn typed_values_print_their_c_names() {
    assert_eq!(format!("{:?}", EpType::RDM), "FI_EP_RDM");
    assert_eq!(format!("{:?}", EpType::from_raw(4242)), "EpType(4242)");
    assert_eq!(format!("{:?}", Caps::MSG | Caps::RMA), "Caps(FI_MSG | FI_RMA)");
    assert_eq!(format!("{:?}", Caps::from_bits_retain(1 << 63)), "Caps(0x8000000000000000)");
    assert_eq!(u32::from(EpType::MSG), FI_EP_MSG);
}

#[test]
fn appended_ops_members_are_guarded() {
    // A fabric whose ops table predates `trywait` (size covers only the first
    // members): the wrapper must answer -FI_ENOSYS instead of reading past it.
    unsafe extern "C" fn never(_: *mut fid_fabric, _: *mut fi_info, _: *mut *mut fid_domain, _: *mut c_void) -> i32 {
        unreachable!("not called")
    }
    let mut ops: fi_ops_fabric = unsafe { std::mem::zeroed() };
    ops.size = std::mem::offset_of!(fi_ops_fabric, trywait);
    ops.domain = Some(never);
    let mut fabric: fid_fabric = unsafe { std::mem::zeroed() };
    fabric.ops = &mut ops;
    // SAFETY: `fabric` and its ops table are valid for the call.
    let ret = unsafe { fi_trywait(&mut fabric, ptr::null_mut(), 0) };
    assert_eq!(ret, -FI_ENOSYS);

    // A NULL collective table (providers without collectives leave it NULL).
    let mut ep: fid_ep = unsafe { std::mem::zeroed() };
    // SAFETY: `ep` is valid; the wrapper must not dereference the NULL table.
    let ret = unsafe { fi_barrier(&mut ep, 0, ptr::null_mut()) };
    assert_eq!(ret, -(FI_ENOSYS as isize));
}

#[test]
fn rx_addr_is_defined_for_every_width() {
    // SAFETY: fi_rx_addr only computes.
    unsafe {
        assert_eq!(fi_rx_addr(5, 3, 0), 5);
        assert_eq!(fi_rx_addr(5, 3, 8), (3u64 << 56) | 5);
        assert_eq!(fi_rx_addr(5, 1, 64), 1 | 5);
    }
}
