//! Annotations for valgrind's DRD race detector (the `drd` feature).
//!
//! DRD follows pthread locks, which is how libfabric hands a context from
//! the thread that posts to the one that reads its completion. It does not
//! follow atomic instructions, which is how the operation table hands a
//! slot from the completion that frees it to the post that reserves it
//! next. Without these annotations it reports each slot's atomic state word
//! and the slot's contents as races, though in Rust's memory model the
//! Acquire/Release pairs on the state word order them.
//!
//! With the feature, each atomic word is marked as exempt from race
//! checking, and each Release on a state word is announced as
//! "happens before" and each Acquire as "happens after". DRD then orders
//! every Acquire after every earlier Release on the same word, whichever
//! value the load read: more than Rust's model orders, so a clean run shows
//! that nothing outside the slot hand-overs races, not that each Acquire
//! reads the Release it needs. Without the feature every function here is
//! empty and inlined away. With it, outside valgrind each annotation costs
//! a six-word array on the stack, a few register rotations and a compiler
//! barrier; `scripts/drd` is the lane that uses it. x86_64 only.

/// Marks `word`, an atomic variable, as exempt from race checks: its
/// accesses are atomic, so they cannot race, but DRD sees plain loads and
/// stores. The exemption ends when the memory is freed.
#[inline(always)]
pub(crate) fn atomic<T>(word: &T) {
    imp::request(imp::START_SUPPRESSION, word as *const T as usize, std::mem::size_of::<T>());
}

/// Announces a Release on `word`: everything this thread did so far happens
/// before whatever a later [`happens_after`] on the same word follows.
/// Call it just before the releasing store.
#[inline(always)]
pub(crate) fn happens_before<T>(word: &T) {
    imp::request(imp::HAPPENS_BEFORE, word as *const T as usize, 0);
}

/// Announces an Acquire on `word` (see [`happens_before`]). Call it just
/// after the acquiring load.
#[inline(always)]
pub(crate) fn happens_after<T>(word: &T) {
    imp::request(imp::HAPPENS_AFTER, word as *const T as usize, 0);
}

#[cfg(all(feature = "drd", target_arch = "x86_64"))]
mod imp {
    /// DRD's request codes (valgrind's `drd.h`): `VG_USERREQ_TOOL_BASE('D','R')`
    /// + 2, and `VG_USERREQ_TOOL_BASE('H','G')` + 256 + 33 and + 34.
    pub(super) const START_SUPPRESSION: usize = 0x4452_0002;
    pub(super) const HAPPENS_BEFORE: usize = 0x4847_0121;
    pub(super) const HAPPENS_AFTER: usize = 0x4847_0122;

    /// A valgrind client request with two arguments.
    #[inline(always)]
    pub(super) fn request(code: usize, first: usize, second: usize) {
        let args: [usize; 6] = [code, first, second, 0, 0, 0];
        // SAFETY: valgrind's amd64 "special instruction" sequence. Natively
        // it changes nothing: the four rotations of rdi add up to 128 bits
        // and `xchg rbx, rbx` swaps a register with itself; the flags the
        // rotations change are clobbered (no `preserves_flags`). Under
        // valgrind it is the client request
        // whose arguments `rax` points to (read only, and alive for the
        // asm), with its result in `rdx`.
        unsafe {
            std::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") args.as_ptr(),
                inout("rdx") 0usize => _,
                options(nostack),
            );
        }
    }
}

#[cfg(all(feature = "drd", not(target_arch = "x86_64")))]
compile_error!("the `drd` feature's annotations are written for x86_64 only");

#[cfg(not(feature = "drd"))]
mod imp {
    pub(super) const START_SUPPRESSION: usize = 0;
    pub(super) const HAPPENS_BEFORE: usize = 0;
    pub(super) const HAPPENS_AFTER: usize = 0;

    #[inline(always)]
    pub(super) fn request(_code: usize, _first: usize, _second: usize) {}
}
