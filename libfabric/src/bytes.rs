//! The memory of a [`Buf`](crate::Buf): one allocation of fixed size, at
//! the alignment it was asked for.
//!
//! A `Vec<u8>` cannot hold memory aligned beyond a byte (it frees with the
//! layout of `[u8]`), and a buffer's alignment matters to the provider: a
//! 4 KiB message from an address that is not page-aligned spans two pages,
//! and on shm such a round trip took 1.83 µs against 1.70 from a page.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Owned bytes: `len` initialised bytes at `ptr`, allocated with `align`
/// (or, for `len == 0`, no allocation at all).
pub(crate) struct Bytes {
    ptr: NonNull<u8>,
    len: usize,
    align: usize,
}

// SAFETY: `Bytes` owns its allocation outright, as a `Box<[u8]>` does.
unsafe impl Send for Bytes {}
// SAFETY: shared access only reads (through `&self`), as for `Box<[u8]>`.
unsafe impl Sync for Bytes {}

impl Bytes {
    /// `len` zeroed bytes at a multiple of `align` (a power of two), or
    /// `None` when that is no valid layout or the allocation fails.
    pub(crate) fn zeroed(len: usize, align: usize) -> Option<Bytes> {
        let layout = Layout::from_size_align(len, align).ok()?;
        if len == 0 {
            // A dangling pointer at the alignment, as `Vec` uses for nothing.
            return Some(Bytes { ptr: NonNull::new(align as *mut u8)?, len, align });
        }
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc::alloc_zeroed(layout) })?;
        Some(Bytes { ptr, len, align })
    }

    /// The bytes of `vec`, without a copy (its spare capacity is released).
    pub(crate) fn from_vec(vec: Vec<u8>) -> Bytes {
        let len = vec.len();
        // Leaked here, freed by `drop` (or handed back by `into_vec`).
        let ptr = NonNull::from(Box::leak(vec.into_boxed_slice())).cast::<u8>();
        Bytes { ptr, len, align: 1 }
    }

    /// The first `keep` bytes (at most `len`) as a `Vec`: the allocation
    /// itself when it has a `Vec`'s alignment, else a copy.
    pub(crate) fn into_vec(self, keep: usize) -> Vec<u8> {
        let keep = keep.min(self.len);
        if self.align != 1 {
            return self.as_slice()[..keep].to_vec();
        }
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: with alignment 1 the memory is a `Box<[u8]>` of `len` bytes
        // (or dangling for none), which is a `Vec` of that capacity; `this`
        // is not dropped, so the allocation has one owner.
        let mut vec = unsafe { Vec::from_raw_parts(this.ptr.as_ptr(), this.len, this.len) };
        vec.truncate(keep);
        vec
    }

    /// How many bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The first byte, without making a reference to any (libfabric may be
    /// writing them).
    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes at `ptr`, owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    #[inline]
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, borrowed exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: allocated with this size and alignment: by `alloc_zeroed`,
        // or as a `Box<[u8]>` (alignment 1), whose layout is the same.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Layout::from_size_align_unchecked(self.len, self.align)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_bytes_are_zeroed_at_their_alignment_and_come_back_as_a_copy() {
        let mut bytes = Bytes::zeroed(5000, 4096).expect("a layout");
        assert_eq!(bytes.as_ptr() as usize % 4096, 0);
        assert!(bytes.as_slice().iter().all(|&b| b == 0));
        bytes.as_mut_slice()[..3].copy_from_slice(b"abc");
        assert_eq!(bytes.into_vec(3), b"abc");
    }

    #[test]
    fn a_vec_goes_in_and_out_without_a_copy() {
        let vec = b"hello".to_vec();
        let ptr = vec.as_ptr();
        let back = Bytes::from_vec(vec).into_vec(4);
        assert_eq!((back.as_ptr(), &back[..]), (ptr, &b"hell"[..]));
    }

    #[test]
    fn nothing_allocates_nothing_and_a_bad_alignment_is_refused() {
        let none = Bytes::zeroed(0, 64).expect("a layout");
        assert_eq!((none.len(), none.as_ptr() as usize % 64), (0, 0));
        assert!(Bytes::from_vec(Vec::new()).into_vec(0).is_empty());
        assert!(Bytes::zeroed(16, 3).is_none());
    }
}
