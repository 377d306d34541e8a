//! Operations in flight: the buffers libfabric may touch, and how each
//! completion finds its way back to its operation.
//!
//! A posted operation moves its [`Buf`] into a slot of its endpoint's
//! [`OpTable`]; the slot's first field is the `fi_context2` libfabric gets as
//! the operation context (which also satisfies `FI_CONTEXT`/`FI_CONTEXT2`
//! mode). When the completion arrives, its context pointer identifies the slot
//! and the buffer is handed back. Slots are allocated once per endpoint, so
//! posting allocates nothing, and no global lock is taken.

use std::cell::UnsafeCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use libfabric_sys::fi_context2;

use crate::bytes::Bytes;
use crate::cq::{Entry, Read};
use crate::drd;
use crate::error::Error;
use crate::mr::MemoryRegion;

/// An owned byte buffer that operations borrow from the caller by value: it is
/// moved into an operation while libfabric may read or write it, and comes back
/// with the operation's completion (or with the error that stopped it).
///
/// The buffer never reallocates: its length can shrink (a receive completes
/// with the received length) but not grow past the capacity it was made with.
///
/// ```
/// use libfabric::Buf;
/// let mut buf = Buf::from(vec![7u8; 64]);
/// assert_eq!((buf.len(), buf.capacity()), (64, 64));
/// buf.resize(16)?;                 // within the capacity: fine
/// assert!(buf.resize(65).is_err()); // past it: refused, never reallocated
/// assert_eq!(buf.into_vec(), vec![7u8; 16]);
/// # Ok::<(), libfabric::Error>(())
/// ```
pub struct Buf {
    /// Always `capacity` bytes, all initialised: posting a receive hands
    /// libfabric the whole capacity without writing a byte first.
    bytes: Bytes,
    /// The bytes the owner sees (`Deref`): what was sent, or received.
    len: usize,
    /// The registration, when the provider needs one (`FI_MR_LOCAL`) or the
    /// caller made one. Dropped, and so closed, before `bytes` is freed.
    /// Boxed: a buffer moves in and out of every operation, and a pointer
    /// moves faster than the registration itself.
    pub(crate) mr: Option<Box<MemoryRegion>>,
}

impl Buf {
    /// A zeroed buffer of `len` bytes.
    pub fn zeroed(len: usize) -> Buf {
        Buf::from(vec![0u8; len])
    }

    /// A zeroed buffer of `len` bytes at an address that is a multiple of
    /// `align`, a power of two: the page size, say, as `fi_pingpong`
    /// allocates, so that a page-sized message spans one page instead of
    /// two (on shm a 4 KiB round trip from a page took 1.70 µs, from the
    /// heap 1.83). [`into_vec`](Self::into_vec) copies such a buffer.
    ///
    /// ```
    /// use libfabric::Buf;
    /// let buf = Buf::aligned_zeroed(4096, 4096)?;
    /// assert_eq!((buf.len(), buf.as_ptr() as usize % 4096), (4096, 0));
    /// assert!(Buf::aligned_zeroed(64, 3).is_err()); // not a power of two
    /// # Ok::<(), libfabric::Error>(())
    /// ```
    pub fn aligned_zeroed(len: usize, align: usize) -> Result<Buf, Error> {
        let bytes = Bytes::zeroed(len, align).ok_or_else(|| Error::InvalidArgument {
            call: "Buf::aligned_zeroed",
            reason: format!("no allocation of {len} bytes aligned to {align} (a power of two, at most isize::MAX)"),
        })?;
        Ok(Buf { len: bytes.len(), bytes, mr: None })
    }

    /// The bytes a receive may fill: the capacity the buffer was made with.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.bytes.len()
    }

    /// Sets the length (up to the capacity); bytes that come into view are
    /// zeroed.
    #[inline]
    pub fn resize(&mut self, len: usize) -> Result<(), Error> {
        if len > self.capacity() {
            return Err(Error::InvalidArgument {
                call: "Buf::resize",
                reason: format!("{len} bytes exceed the buffer's capacity of {}", self.capacity()),
            });
        }
        if len > self.len {
            self.bytes.as_mut_slice()[self.len..len].fill(0);
        }
        // Within capacity: never reallocates, so a registration stays valid.
        self.len = len;
        Ok(())
    }

    /// The registration attached to the buffer, if any.
    pub fn memory_region(&self) -> Option<&MemoryRegion> {
        self.mr.as_deref()
    }

    /// The whole capacity, for an operation to fill; the length becomes the
    /// capacity (the bytes are already initialised, so nothing is written).
    #[inline]
    pub(crate) fn full_ptr(&mut self) -> *mut u8 {
        self.len = self.bytes.len();
        self.bytes.as_ptr()
    }

    /// Cuts the length to what an operation wrote (at most the capacity),
    /// keeping the bytes libfabric put there.
    #[inline]
    pub(crate) fn set_filled(&mut self, len: usize) {
        self.len = len.min(self.bytes.len());
    }

    /// The local descriptor for the operation (`fi_mr_desc`), or NULL.
    #[inline]
    pub(crate) fn desc(&self) -> *mut libc::c_void {
        self.mr.as_ref().map_or(std::ptr::null_mut(), |m| m.desc())
    }

    /// Takes the bytes back; the registration, if any, is closed. A
    /// buffer made by [`aligned_zeroed`](Self::aligned_zeroed) is copied
    /// (a `Vec` frees its memory as byte-aligned).
    pub fn into_vec(self) -> Vec<u8> {
        let Buf { bytes, len, mr } = self;
        // Closed before the memory it covers goes anywhere.
        drop(mr);
        bytes.into_vec(len)
    }
}

impl From<Vec<u8>> for Buf {
    /// Takes the vector's allocation as it is (no copy): its length is the
    /// buffer's capacity.
    fn from(bytes: Vec<u8>) -> Buf {
        let len = bytes.len();
        Buf { bytes: Bytes::from_vec(bytes), len, mr: None }
    }
}

impl From<&[u8]> for Buf {
    fn from(bytes: &[u8]) -> Buf {
        Buf::from(bytes.to_vec())
    }
}

impl Deref for Buf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        debug_assert!(self.len <= self.bytes.len());
        // SAFETY: `len` never exceeds `bytes.len()` (every setter clamps it).
        unsafe { self.bytes.as_slice().get_unchecked(..self.len) }
    }
}

impl DerefMut for Buf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`.
        unsafe { self.bytes.as_mut_slice().get_unchecked_mut(..self.len) }
    }
}

impl fmt::Debug for Buf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buf")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("registered", &self.mr.is_some())
            .finish()
    }
}

/// What an operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `fi_send` and friends.
    Send,
    /// `fi_recv`.
    Recv,
    /// `fi_tsend` and friends.
    TaggedSend,
    /// `fi_trecv`.
    TaggedRecv,
    /// `fi_recvmsg` with `FI_MULTI_RECV`: one buffer, many messages.
    MultiRecv,
    /// `fi_write` and friends: local bytes to remote memory.
    Write,
    /// `fi_read`: remote memory into the local buffer.
    Read,
    /// `fi_atomic`, `fi_fetch_atomic`, `fi_compare_atomic`.
    Atomic,
    /// `fi_barrier`, `fi_allreduce`, `fi_broadcast`.
    Collective,
}

impl OpKind {
    pub(crate) fn receives(self) -> bool {
        matches!(self, OpKind::Recv | OpKind::TaggedRecv)
    }
    // A multi-receive buffer keeps its whole length: messages sit at offsets.
}

/// A finished operation: its kind, its buffer, the completion entry, and the
/// caller's token.
#[derive(Debug)]
pub struct Completion<E> {
    /// What the operation was.
    pub kind: OpKind,
    /// The caller's value given when posting.
    pub token: u64,
    /// The buffer, back with the caller. For a receive its length is the
    /// received length.
    pub buf: Buf,
    /// The completion entry as libfabric wrote it.
    pub entry: E,
    /// For the final completion of a multi-receive buffer: where its last
    /// message starts (0 otherwise).
    pub offset: usize,
}

/// A failed post: why, and the buffer, returned to the caller untouched.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PostError {
    /// Why the post failed.
    #[source]
    pub error: Error,
    /// The buffer, untouched.
    pub buf: Buf,
}

impl PostError {
    /// True for `FI_EAGAIN`: the queue is full; read completions and retry.
    pub fn is_again(&self) -> bool {
        self.error.is_again()
    }
}

impl From<PostError> for Error {
    fn from(e: PostError) -> Error {
        e.error
    }
}

/// One in-flight operation. `ctx` is first, so the operation context libfabric
/// sees is the slot's address.
#[repr(C)]
pub(crate) struct Slot {
    ctx: UnsafeCell<fi_context2>,
    op: UnsafeCell<Option<(OpKind, u64, Buf)>>,
    /// `generation << 5 | ORPHAN | POSTED | FIXED | PINNED | BUSY`. The generation is bumped each time
    /// the slot is freed, so an [`OpId`](crate::OpId) of a finished operation
    /// never designates the slot's next operation.
    state: AtomicU32,
}

impl Slot {
    /// The operation of a fixed slot, for its [`FixedBuf`](crate::FixedBuf)
    /// handle: the slot holds the buffer from [`OpTable::fix`] until the
    /// handle is dropped, so no `Option` check is needed.
    ///
    /// # Safety
    /// The caller is the slot's live handle, and nothing else borrows the
    /// operation meanwhile (the slot is not posted, or the handle only
    /// prepares its post).
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    unsafe fn fixed_op(&self) -> &mut (OpKind, u64, Buf) {
        // SAFETY: the caller is the only one borrowing the operation.
        let op = unsafe { &mut *self.op.get() };
        debug_assert!(op.is_some(), "a fixed slot holds its buffer");
        // SAFETY: the handle is live, so `fix` stored the operation and
        // nothing has taken it (`unfix` runs when the handle is dropped).
        unsafe { op.as_mut().unwrap_unchecked() }
    }

    /// Like [`fixed_op`](Self::fixed_op), shared (several shared borrows of
    /// the handle may read the buffer at once).
    ///
    /// # Safety
    /// As for `fixed_op`, except that other shared borrows may coexist.
    #[inline(always)]
    unsafe fn fixed_op_ref(&self) -> &(OpKind, u64, Buf) {
        // SAFETY: only shared borrows of the operation exist meanwhile.
        let op = unsafe { &*self.op.get() };
        debug_assert!(op.is_some(), "a fixed slot holds its buffer");
        // SAFETY: as in `fixed_op`.
        unsafe { op.as_ref().unwrap_unchecked() }
    }

    /// The fixed buffer held here, while it is not posted.
    ///
    /// # Safety
    /// The caller is the slot's [`FixedBuf`](crate::FixedBuf) handle, and the
    /// borrow it returns is bounded by a borrow of that handle (so no post,
    /// which takes the handle mutably, overlaps it).
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub(crate) unsafe fn fixed_buf_mut(&self) -> Option<&mut Buf> {
        if self.is_posted() {
            return None;
        }
        // SAFETY: the caller is the handle, borrowed mutably, and the buffer
        // is not posted.
        Some(unsafe { &mut self.fixed_op().2 })
    }

    /// Like [`fixed_buf_mut`](Self::fixed_buf_mut), shared.
    ///
    /// # Safety
    /// As for `fixed_buf_mut`, with a shared borrow of the handle.
    #[inline]
    pub(crate) unsafe fn fixed_buf(&self) -> Option<&Buf> {
        if self.is_posted() {
            return None;
        }
        // SAFETY: the caller is the handle, borrowed shared, and the buffer
        // is not posted.
        Some(unsafe { &self.fixed_op_ref().2 })
    }

    /// Marks the fixed slot posted for (`kind`, `token`); returns the
    /// buffer's data pointer and capacity (a receive) or length, its
    /// descriptor and the context, for the post.
    ///
    /// # Safety
    /// As for [`fixed_buf_mut`](Self::fixed_buf_mut), and the slot is not
    /// posted. On a failed post the caller calls [`unpost`](Self::unpost).
    #[inline]
    pub(crate) unsafe fn post_fixed(
        &self,
        kind: OpKind,
        token: u64,
    ) -> (*mut u8, usize, *mut libc::c_void, *mut libc::c_void) {
        // SAFETY: the caller is the handle, borrowed mutably, and the slot is
        // not posted.
        let op = unsafe { self.fixed_op() };
        op.0 = kind;
        op.1 = token;
        let buf = &mut op.2;
        let (data, len) =
            if kind.receives() { (buf.full_ptr(), buf.capacity()) } else { (buf.bytes.as_ptr(), buf.len) };
        let desc = buf.desc();
        // From here on the completion, on any thread, may touch the slot.
        // A plain store, not a `lock or`: while a fixed slot is not posted,
        // its handle, borrowed mutably here, is the only writer of its state
        // (a completion writes only while it is posted, `reserve` and
        // `with_live` leave a fixed slot alone, and only the handle's drop
        // sets ORPHAN or frees it). A `lock or` is also a full barrier,
        // draining the store buffer on each post; on x86 a release store is
        // a plain `mov`.
        let now = self.state.load(Ordering::Relaxed);
        drd::happens_before(&self.state);
        self.state.store(now | POSTED, Ordering::Release);
        (data, len, desc, self.ctx.get().cast())
    }

    /// Undoes [`post_fixed`](Self::post_fixed) after libfabric refused the post.
    pub(crate) fn unpost(&self) {
        drd::happens_before(&self.state);
        self.state.fetch_and(!POSTED, Ordering::Release);
    }

    /// True while the fixed buffer held here is posted.
    #[inline]
    pub(crate) fn is_posted(&self) -> bool {
        let state = self.state.load(Ordering::Acquire);
        drd::happens_after(&self.state);
        state & POSTED != 0
    }

    /// The context of the fixed buffer's operation, while it is posted (for
    /// `fi_cancel`).
    pub(crate) fn fixed_context(&self) -> Option<*mut libc::c_void> {
        self.is_posted().then(|| self.ctx.get().cast())
    }
}

/// The slot holds an operation (reserved until its completion frees it).
const BUSY: u32 = 1;
/// A cancel is using the slot's context: freeing waits until it is done.
const PINNED: u32 = 2;
/// The slot holds a [`FixedBuf`](crate::FixedBuf)'s buffer for as long as
/// its handle lives.
const FIXED: u32 = 4;
/// The fixed buffer is posted: libfabric may touch it, its owner may not.
const POSTED: u32 = 8;
/// The handle of a posted fixed buffer was dropped: its completion frees
/// the slot.
const ORPHAN: u32 = 16;
/// One generation, in `state` (above the flag bits).
const GENERATION: u32 = 32;
const GENERATION_SHIFT: u32 = 5;

/// What a failed completion ends.
#[derive(Debug)]
pub(crate) enum Failed {
    /// An operation that held its buffer: kind, token and buffer come back.
    Owned(OpKind, u64, Buf),
    /// A posted fixed buffer: it is its owner's again.
    Fixed(OpKind, u64),
}

/// Where `data` points into `buf`, or 0.
fn offset_in(buf: &Buf, data: *mut libc::c_void) -> usize {
    // `Bytes::as_ptr` makes no reference to bytes libfabric may be writing.
    (data as usize).checked_sub(buf.bytes.as_ptr() as usize).filter(|o| *o <= buf.capacity()).unwrap_or(0)
}

/// A message in a multi-receive buffer that stays posted: its place in the
/// buffer, without touching the buffer (libfabric may still write later
/// messages into it).
#[cold]
#[inline(never)]
fn multi_recv_message<E: Entry>(slot: &Slot, entry: E) -> Option<Read<E>> {
    // SAFETY: the slot's operation is in flight, so only its completions
    // look at it; reading the token and the buffer's base address does not
    // touch the bytes libfabric writes.
    match unsafe { &*slot.op.get() } {
        Some((OpKind::MultiRecv, token, buf)) => {
            Some(Read::Message { token: *token, offset: offset_in(buf, entry.buf()), entry })
        }
        _ => None,
    }
}

/// The slots of one endpoint's operations.
///
/// Reserving and freeing a slot is one atomic compare-and-swap on the slot's
/// state, no lock: posting and completing stay as cheap as the C calls they
/// wrap.
pub(crate) struct OpTable {
    slots: Box<[Slot]>,
    /// Whether the table's endpoint, queue and fixed buffers may be used
    /// from several threads ([`ThreadSafe`](crate::ThreadSafe)); if not
    /// ([`Unsync`](crate::Unsync)), they are all on one thread, so a fixed
    /// buffer's completion needs no atomic read-modify-write.
    shared: bool,
    /// Where the next reservation starts looking: just past the last one,
    /// so in steady state the first slot tried is free.
    hint: AtomicU32,
}

// SAFETY: a slot is accessed by one party at a time: the poster between
// reserving it (the BUSY bit, taken by compare-and-swap) and posting, then
// libfabric (its context only), then the single completion that takes its
// operation and frees it. Acquire/release on `state` orders those hand-overs.
unsafe impl Send for OpTable {}
// SAFETY: as above.
unsafe impl Sync for OpTable {}

impl OpTable {
    pub(crate) fn new(capacity: usize, shared: bool) -> Arc<OpTable> {
        let capacity = capacity.clamp(1, 1 << 24);
        let slots = (0..capacity)
            .map(|_| Slot {
                ctx: UnsafeCell::new(fi_context2::default()),
                op: UnsafeCell::new(None),
                state: AtomicU32::new(0),
            })
            .collect();
        let table = Arc::new(OpTable { slots, shared, hint: AtomicU32::new(0) });
        drd::atomic(&table.hint);
        table.slots.iter().for_each(|slot| drd::atomic(&slot.state));
        table
    }

    /// Reserves a free slot; `None` when every slot is in flight.
    #[inline]
    pub(crate) fn reserve(&self) -> Option<u32> {
        let n = self.slots.len();
        let start = (self.hint.load(Ordering::Relaxed) as usize).min(n - 1);
        for i in (start..n).chain(0..start) {
            let state = &self.slots[i].state;
            let now = state.load(Ordering::Relaxed);
            if now & BUSY == 0 && state.compare_exchange(now, now | BUSY, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                drd::happens_after(state);
                self.hint.store(if i + 1 == n { 0 } else { i as u32 + 1 }, Ordering::Relaxed);
                return Some(i as u32);
            }
        }
        None
    }

    /// Frees a slot (its operation is over, or was never posted), waiting
    /// for a cancel that is using its context to finish.
    #[inline]
    pub(crate) fn release(&self, index: u32) {
        let state = &self.slots[index as usize].state;
        let mut now = state.load(Ordering::Relaxed);
        loop {
            if now & PINNED != 0 {
                std::hint::spin_loop();
                now = state.load(Ordering::Relaxed);
                continue;
            }
            let freed = (now & !(BUSY | FIXED | POSTED | ORPHAN)).wrapping_add(GENERATION);
            drd::happens_before(state);
            match state.compare_exchange_weak(now, freed, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => now = actual,
            }
        }
    }

    /// The generation of a reserved slot: with the index, it names the
    /// operation about to be posted there.
    #[inline]
    pub(crate) fn generation(&self, index: u32) -> u32 {
        self.slots[index as usize].state.load(Ordering::Relaxed) >> GENERATION_SHIFT
    }

    /// Runs `f` with the context of operation (`index`, `generation`) if that
    /// operation has not finished; the slot is pinned meanwhile (freeing it
    /// waits), so `f` never touches a later operation.
    pub(crate) fn with_live<T>(
        &self,
        index: u32,
        generation: u32,
        f: impl FnOnce(*mut libc::c_void) -> T,
    ) -> Option<T> {
        let slot = self.slots.get(index as usize)?;
        let live = generation.wrapping_shl(GENERATION_SHIFT) | BUSY;
        slot.state.compare_exchange(live, live | PINNED, Ordering::Acquire, Ordering::Relaxed).ok()?;
        drd::happens_after(&slot.state);
        let out = f(slot.ctx.get().cast());
        drd::happens_before(&slot.state);
        slot.state.fetch_and(!PINNED, Ordering::Release);
        Some(out)
    }

    /// Stores the operation in its reserved slot; returns the context pointer.
    #[inline]
    pub(crate) fn occupy(&self, index: u32, kind: OpKind, token: u64, buf: Buf) -> *mut libc::c_void {
        let slot = &self.slots[index as usize];
        // SAFETY: the caller reserved `index`, so nobody else touches the slot.
        unsafe { *slot.op.get() = Some((kind, token, buf)) };
        slot.ctx.get().cast()
    }

    /// Takes the operation back out of a slot whose post failed.
    pub(crate) fn vacate(&self, index: u32) -> Option<Buf> {
        let slot = &self.slots[index as usize];
        // SAFETY: the post failed, so libfabric never saw the context; the
        // caller still holds the reservation.
        let op = unsafe { (*slot.op.get()).take() };
        self.release(index);
        op.map(|(_, _, b)| b)
    }

    /// The slot a context pointer designates, and its index, if it is one
    /// of ours.
    #[inline(always)]
    fn slot_of(&self, context: *mut libc::c_void) -> Option<(usize, &Slot)> {
        let base = self.slots.as_ptr() as usize;
        let offset = (context as usize).checked_sub(base)?;
        let size = std::mem::size_of::<Slot>();
        if offset % size != 0 {
            return None;
        }
        let index = offset / size;
        self.slots.get(index).map(|slot| (index, slot))
    }

    /// The completion of one of this table's operations.
    #[inline(always)]
    pub(crate) fn complete<E: Entry>(&self, entry: E) -> Option<Read<E>> {
        let (index, slot) = self.slot_of(entry.context())?;
        let state = slot.state.load(Ordering::Acquire);
        drd::happens_after(&slot.state);
        if state & FIXED != 0 {
            // A fixed buffer that is not posted has no completion to come.
            if state & POSTED == 0 {
                return None;
            }
            let (kind, token) = self.finish_fixed(index, slot, Some(entry.len()));
            return Some(Read::Fixed { kind, token, entry });
        }
        // SAFETY: the slot's operation is in flight, so only its completions
        // look at it; reading its kind does not touch the buffer.
        let multi = matches!(unsafe { &*slot.op.get() }, Some((OpKind::MultiRecv, _, _)));
        if multi && !entry.flags().contains(libfabric_sys::flags::CompletionFlags::MULTI_RECV) {
            return multi_recv_message(slot, entry);
        }
        // SAFETY: libfabric reported the operation done: it no longer touches
        // the buffer, and this single completion owns the slot until the index
        // is freed below.
        let (kind, token, mut buf) = unsafe { (*slot.op.get()).take()? };
        self.release(index as u32);
        let offset = if kind == OpKind::MultiRecv { offset_in(&buf, entry.buf()) } else { 0 };
        if kind.receives() {
            // The received length; never more than the capacity posted.
            buf.set_filled(entry.len());
        }
        Some(Read::Op(Completion { kind, token, buf, entry, offset }))
    }

    /// The completion of one of this table's posted fixed buffers, finished
    /// in place; `None` for any other entry (left untouched).
    #[inline(always)]
    pub(crate) fn complete_fixed<E: Entry>(&self, entry: &E) -> Option<(OpKind, u64)> {
        let (index, slot) = self.slot_of(entry.context())?;
        // Only a posted fixed buffer has a completion to come (Acquire: its
        // post's writes to the slot are visible here).
        let state = slot.state.load(Ordering::Acquire);
        drd::happens_after(&slot.state);
        if state & (FIXED | POSTED) != FIXED | POSTED {
            return None;
        }
        Some(self.finish_fixed(index, slot, Some(entry.len())))
    }

    /// The operation of a failed completion, if it is one of ours.
    pub(crate) fn fail(&self, context: *mut libc::c_void) -> Option<Failed> {
        let (index, slot) = self.slot_of(context)?;
        let state = slot.state.load(Ordering::Acquire);
        drd::happens_after(&slot.state);
        if state & FIXED != 0 {
            if state & POSTED == 0 {
                return None;
            }
            let (kind, token) = self.finish_fixed(index, slot, None);
            return Some(Failed::Fixed(kind, token));
        }
        // SAFETY: as in `complete`: the error entry ends the operation.
        let (kind, token, buf) = unsafe { (*slot.op.get()).take()? };
        self.release(index as u32);
        Some(Failed::Owned(kind, token, buf))
    }

    /// Takes a slot for a fixed buffer: it stays reserved, holding `buf`,
    /// until [`unfix`](Self::unfix).
    pub(crate) fn fix(&self, buf: Buf) -> Result<u32, Buf> {
        let Some(index) = self.reserve() else { return Err(buf) };
        let slot = &self.slots[index as usize];
        // SAFETY: reserved just now: nobody else touches the slot.
        unsafe { *slot.op.get() = Some((OpKind::Recv, 0, buf)) };
        slot.state.fetch_or(FIXED, Ordering::Relaxed);
        Ok(index)
    }

    /// The slot at `index`, for a [`FixedBuf`](crate::FixedBuf) to reach
    /// without looking it up again: the slots never move while the table lives.
    pub(crate) fn slot(&self, index: u32) -> NonNull<Slot> {
        NonNull::from(&self.slots[index as usize])
    }

    /// The completion of a posted fixed buffer: its length (for a receive),
    /// back to its owner, or the slot freed if the owner is gone.
    #[inline(always)]
    fn finish_fixed(&self, index: usize, slot: &Slot, len: Option<usize>) -> (OpKind, u64) {
        // SAFETY: the slot is fixed and posted, and this is its completion:
        // libfabric is done with the buffer, the owner cannot touch it until
        // POSTED is cleared below, and an orphan is freed only after that.
        // Checked, not assumed: a completion is the one path that reaches a
        // slot without its handle.
        let (kind, token) = match unsafe { (*slot.op.get()).as_mut() } {
            Some((kind, token, buf)) => {
                if let (true, Some(len)) = (kind.receives(), len) {
                    buf.set_filled(len);
                }
                (*kind, *token)
            }
            None => (OpKind::Recv, 0),
        };
        drd::happens_before(&slot.state);
        // Clears POSTED, which is set: the caller saw it, and only this
        // completion can clear it now (each post has one completion, read by
        // one thread; the owner unposts only a refused post, and the slot is
        // freed only after POSTED is clear). A subtraction is one
        // `lock xadd`, where `fetch_and` needs a compare-exchange loop. On a
        // table used from one thread only, a handle cannot set ORPHAN in
        // between, so a load and a store do (no `lock`: about 5 ns less a
        // completion, measured on shm).
        let before = if self.shared {
            slot.state.fetch_sub(POSTED, Ordering::AcqRel)
        } else {
            let before = slot.state.load(Ordering::Relaxed);
            slot.state.store(before - POSTED, Ordering::Release);
            before
        };
        drd::happens_after(&slot.state);
        if before & ORPHAN != 0 {
            // SAFETY: the handle is gone and the operation over: the slot is ours.
            drop(unsafe { (*slot.op.get()).take() });
            self.release(index as u32);
        }
        (kind, token)
    }

    /// The handle of fixed slot `index` is dropped: free the slot now, or,
    /// while it is posted, when its completion arrives.
    pub(crate) fn unfix(&self, index: u32) {
        let slot = &self.slots[index as usize];
        drd::happens_before(&slot.state);
        let before = slot.state.fetch_or(ORPHAN, Ordering::AcqRel);
        drd::happens_after(&slot.state);
        if before & POSTED == 0 {
            // SAFETY: not posted and the handle is gone: nobody else touches it.
            drop(unsafe { (*slot.op.get()).take() });
            self.release(index);
        }
    }

    /// Operations still in flight.
    pub(crate) fn in_flight(&self) -> usize {
        // A fixed buffer's slot counts only while the buffer is posted.
        let live = |state: u32| state & BUSY != 0 && (state & FIXED == 0 || state & POSTED != 0);
        self.slots.iter().filter(|s| live(s.state.load(Ordering::Relaxed))).count()
    }
}

/// The operation tables whose completions arrive on one completion queue.
///
/// The first endpoint bound to the queue is looked up without a lock (the
/// common case: one endpoint per queue); the tables of later endpoints sit
/// behind a mutex.
#[derive(Default)]
pub(crate) struct TableSet {
    first: OnceLock<Arc<OpTable>>,
    more: Mutex<Vec<Arc<OpTable>>>,
}

impl TableSet {
    /// Adds the table of an endpoint bound to the queue. Tables stay until
    /// the queue closes, so a completion never points at freed slots; those
    /// of endpoints that are gone with nothing in flight are let go.
    pub(crate) fn add(&self, table: Arc<OpTable>) {
        if let Err(table) = self.first.set(table) {
            let mut more = self.more.lock().unwrap_or_else(|p| p.into_inner());
            more.retain(|t| Arc::strong_count(t) > 1 || t.in_flight() > 0);
            more.push(table);
        }
    }

    /// The completion of an operation of one of the tables, if it is one.
    #[inline(always)]
    pub(crate) fn complete<E: Entry>(&self, entry: E) -> Option<Read<E>> {
        if let Some(done) = self.first.get().and_then(|t| t.complete(entry)) {
            return Some(done);
        }
        self.more.lock().unwrap_or_else(|p| p.into_inner()).iter().find_map(|t| t.complete(entry))
    }

    /// The completion of a posted fixed buffer of the first table (see
    /// [`OpTable::complete_fixed`]); `None` sends the entry down the general path.
    #[inline(always)]
    pub(crate) fn complete_fixed<E: Entry>(&self, entry: &E) -> Option<(OpKind, u64)> {
        self.first.get()?.complete_fixed(entry)
    }

    /// The operation of a failed completion, if one of the tables posted it.
    pub(crate) fn fail(&self, context: *mut libc::c_void) -> Option<Failed> {
        if let Some(op) = self.first.get().and_then(|t| t.fail(context)) {
            return Some(op);
        }
        self.more.lock().unwrap_or_else(|p| p.into_inner()).iter().find_map(|t| t.fail(context))
    }
}
