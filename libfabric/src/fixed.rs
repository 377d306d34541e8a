//! Fixed buffers: a buffer that stays with one endpoint, registered once and
//! posted again and again without moving.
//!
//! A [`Buf`] passed to [`Endpoint::send`] moves into the operation and comes
//! back with its completion: simple, but every round trip moves the buffer
//! through the completion path. A [`FixedBuf`] lives in a slot of its
//! endpoint's operation table instead; posting it only marks the slot
//! posted, and its completion ([`Read::Fixed`](crate::Read::Fixed)) only
//! marks it free. The same guarantee holds: while posted, the buffer cannot
//! be read or written through the handle ([`FixedBuf::get`] answers
//! `None`), and dropping the handle while libfabric may still write leaves
//! the memory alive until the completion arrives.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use libfabric_sys::flags::MrAccess;
use libfabric_sys::{fi_cancel, fi_recv, fi_send, fi_trecv, fi_tsend};

use crate::av::Address;
use crate::cq::Entry;
use crate::error::{check, Error, Result};
use crate::fid::{ThreadModel, ThreadSafe, Types};
use crate::ops::{Buf, OpKind, OpTable, PostError, Slot};
use crate::Endpoint;

/// A buffer held by one endpoint for repeated operations without moving
/// (see the `fixed` module notes). Made by [`Endpoint::fix`].
///
/// ```no_run
/// # fn demo(ep: &libfabric::Endpoint, cq: &libfabric::CompletionQueue, peer: libfabric::Address) -> Result<(), Box<dyn std::error::Error>> {
/// use libfabric::{Address, Buf, Read};
/// let mut rx = ep.fix(Buf::zeroed(4096))?;
/// loop {
///     ep.recv_fixed(&mut rx, Address::UNSPEC, 1)?;
///     assert!(rx.get().is_none()); // posted: libfabric's until it completes
///     while !matches!(cq.poll()?, Read::Fixed { token: 1, .. }) {}
///     let message: &[u8] = rx.get().expect("completed"); // the received bytes
///     # let _ = message; break;
/// }
/// # Ok(()) }
/// ```
///
/// Its model is its endpoint's: a fixed buffer of an [`Unsync`](crate::Unsync)
/// endpoint stays on the endpoint's thread (neither `Send` nor `Sync`), which
/// lets its completions go without an atomic read-modify-write.
pub struct FixedBuf<M: ThreadModel = ThreadSafe> {
    /// Keeps the slots alive (and names the endpoint the buffer belongs to).
    table: Arc<OpTable>,
    /// The buffer's slot in `table`, reached directly on every post and check.
    slot: NonNull<Slot>,
    index: u32,
    _model: Types<(), M>,
}

impl<M: ThreadModel> fmt::Debug for FixedBuf<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBuf").field("slot", &self.index).field("posted", &self.is_posted()).finish()
    }
}

impl<M: ThreadModel> FixedBuf<M> {
    #[inline(always)]
    fn slot(&self) -> &Slot {
        // SAFETY: `table` owns the slots and never moves or frees them while
        // it lives, and this handle holds `table`.
        unsafe { self.slot.as_ref() }
    }

    /// True while an operation on the buffer is in flight.
    #[inline]
    pub fn is_posted(&self) -> bool {
        self.slot().is_posted()
    }

    /// The buffer, unless an operation on it is in flight. After a receive
    /// completed, its length is the received length.
    #[inline]
    pub fn get(&self) -> Option<&Buf> {
        // SAFETY: this handle owns the slot; the shared borrow of `self`
        // keeps any post (which takes `&mut self`) from overlapping it.
        unsafe { self.slot().fixed_buf() }
    }

    /// The buffer, to fill before a send (`resize` sets how much is sent),
    /// unless an operation on it is in flight.
    #[inline]
    pub fn get_mut(&mut self) -> Option<&mut Buf> {
        // SAFETY: as in `get`, with an exclusive borrow.
        unsafe { self.slot().fixed_buf_mut() }
    }
}

impl<M: ThreadModel> Drop for FixedBuf<M> {
    fn drop(&mut self) {
        // Frees the slot now, or at the completion if libfabric still holds it.
        self.table.unfix(self.index);
    }
}

// SAFETY: the handle only reaches its slot's buffer through `&self`/`&mut
// self` while the slot is not posted; the table is Send + Sync. Only for
// `ThreadSafe`: an `Unsync` table clears a completion's posted bit with a
// load and a store, which a handle dropped on another thread would race.
unsafe impl Send for FixedBuf<ThreadSafe> {}
// SAFETY: shared access only reads the buffer, and only while not posted.
unsafe impl Sync for FixedBuf<ThreadSafe> {}

impl<E: Entry, M: ThreadModel> Endpoint<E, M> {
    /// Gives `buf` a slot of this endpoint for good: registered once (when
    /// the provider needs `FI_MR_LOCAL`), then posted with the `*_fixed`
    /// methods as often as needed. The slot counts against the endpoint's
    /// operations in flight until the handle is dropped.
    pub fn fix(&self, mut buf: Buf) -> Result<FixedBuf<M>, PostError> {
        if let Err(error) = self.prepare(&mut buf, MrAccess::SEND | MrAccess::RECV) {
            return Err(PostError { error, buf });
        }
        match self.inner.ops.fix(buf) {
            Ok(index) => Ok(FixedBuf {
                table: self.inner.ops.clone(),
                slot: self.inner.ops.slot(index),
                index,
                _model: std::marker::PhantomData,
            }),
            Err(buf) => Err(PostError {
                error: Error::Call { call: "fi_recv", errno: libfabric_sys::enums::Errno::from_raw(libc::EAGAIN) },
                buf,
            }),
        }
    }

    /// Posts the whole capacity of `fixed` to receive a message from `src`
    /// (`fi_recv`); [`Read::Fixed`](crate::Read::Fixed) with `token` says it
    /// arrived.
    #[inline(always)]
    pub fn recv_fixed(&self, fixed: &mut FixedBuf<M>, src: Address, token: u64) -> Result<()> {
        let ep = self.as_raw();
        let src = self.resolve("fi_recv", src)?;
        self.post_fixed("fi_recv", fixed, OpKind::Recv, token, |data, len, desc, ctx| {
            // SAFETY: the slot holds the buffer until its completion.
            unsafe { fi_recv(ep, data.cast(), len, desc, src, ctx) }
        })
    }

    /// Sends the bytes of `fixed` (its length) to `dest` (`fi_send`).
    #[inline(always)]
    pub fn send_fixed(&self, fixed: &mut FixedBuf<M>, dest: Address, token: u64) -> Result<()> {
        let ep = self.as_raw();
        let dest = self.destination("fi_send", dest)?;
        self.post_fixed("fi_send", fixed, OpKind::Send, token, |data, len, desc, ctx| {
            // SAFETY: as in `recv_fixed`.
            unsafe { fi_send(ep, data.cast(), len, desc, dest, ctx) }
        })
    }

    /// Tagged receive into `fixed` (`fi_trecv`).
    #[inline(always)]
    pub fn trecv_fixed(&self, fixed: &mut FixedBuf<M>, src: Address, tag: u64, ignore: u64, token: u64) -> Result<()> {
        let ep = self.as_raw();
        let src = self.resolve("fi_trecv", src)?;
        self.post_fixed("fi_trecv", fixed, OpKind::TaggedRecv, token, |data, len, desc, ctx| {
            // SAFETY: as in `recv_fixed`.
            unsafe { fi_trecv(ep, data.cast(), len, desc, src, tag, ignore, ctx) }
        })
    }

    /// Tagged send of the bytes of `fixed` (`fi_tsend`).
    #[inline(always)]
    pub fn tsend_fixed(&self, fixed: &mut FixedBuf<M>, dest: Address, tag: u64, token: u64) -> Result<()> {
        let ep = self.as_raw();
        let dest = self.destination("fi_tsend", dest)?;
        self.post_fixed("fi_tsend", fixed, OpKind::TaggedSend, token, |data, len, desc, ctx| {
            // SAFETY: as in `recv_fixed`.
            unsafe { fi_tsend(ep, data.cast(), len, desc, dest, tag, ctx) }
        })
    }

    /// Asks libfabric to cancel the operation in flight on `fixed`
    /// (`fi_cancel`); it completes with `FI_ECANCELED`
    /// ([`Read::FixedFailed`](crate::Read::FixedFailed)). Nothing in flight: `Ok`.
    pub fn cancel_fixed(&self, fixed: &FixedBuf<M>) -> Result<()> {
        self.check_owner("fi_cancel", fixed)?;
        let Some(ctx) = fixed.slot().fixed_context() else { return Ok(()) };
        // SAFETY: the slot cannot be reused while `fixed` lives, so the
        // context names this buffer's operation or one already finished.
        check("fi_cancel", unsafe { fi_cancel(self.fid(), ctx) }).map(drop)
    }

    fn check_owner(&self, call: &'static str, fixed: &FixedBuf<M>) -> Result<()> {
        if !Arc::ptr_eq(&fixed.table, &self.inner.ops) {
            return Err(Error::InvalidArgument { call, reason: "the fixed buffer belongs to another endpoint".into() });
        }
        Ok(())
    }

    #[inline(always)]
    fn post_fixed(
        &self,
        call: &'static str,
        fixed: &mut FixedBuf<M>,
        kind: OpKind,
        token: u64,
        post: impl FnOnce(*mut u8, usize, *mut libc::c_void, *mut libc::c_void) -> isize,
    ) -> Result<()> {
        self.check_owner(call, fixed)?;
        if fixed.is_posted() {
            return Err(Error::InvalidArgument { call, reason: "the fixed buffer is already posted".into() });
        }
        let slot = fixed.slot();
        // SAFETY: `fixed` is this slot's handle, borrowed mutably, and not posted.
        let (data, len, desc, ctx) = unsafe { slot.post_fixed(kind, token) };
        let ret = post(data, len, desc, ctx);
        if ret < 0 {
            slot.unpost();
            return check(call, ret as i64).map(drop);
        }
        Ok(())
    }
}
