//! Completion queues: typed entries, batched reads, error entries, waiting.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libfabric_sys::enums::{CqFormat, CqWaitCond, Errno, WaitObj};
use libfabric_sys::flags::CompletionFlags;
use libfabric_sys::{
    fi_addr_t, fi_control, fi_cq_attr, fi_cq_data_entry, fi_cq_entry, fi_cq_err_entry, fi_cq_msg_entry, fi_cq_open,
    fi_cq_read, fi_cq_readerr, fi_cq_readfrom, fi_cq_signal, fi_cq_sread, fi_cq_strerror, fi_cq_tagged_entry,
    fi_trywait, fid, fid_cq, FI_GETWAIT,
};

use crate::av::{Address, Removals};
use crate::domain::{Domain, DomainInner};
use crate::error::{check, CompletionError, Error, Result};
use crate::fid::{Object, ThreadModel, ThreadSafe, Types};
use crate::ops::{Buf, Completion, Failed, OpKind, TableSet};

/// A completion entry format (`FI_CQ_FORMAT_*`): the type a CQ is read into.
///
/// # Safety
/// `Self` has the layout of the C entry struct for `FORMAT`, and every bit
/// pattern libfabric may write into it (over a `Default` value) is a valid
/// `Self`: plain integers and raw pointers, no references, `bool`s or
/// enums.
#[allow(clippy::len_without_is_empty)] // `len` is the entry's byte count, not a collection size
pub unsafe trait Entry: Copy + Default + fmt::Debug + Send + 'static {
    /// The format libfabric is asked for.
    const FORMAT: CqFormat;
    /// The operation context the entry carries.
    fn context(&self) -> *mut libc::c_void;
    /// Completion flags (`FI_SEND`, `FI_RECV`, …); empty for the context format.
    fn flags(&self) -> CompletionFlags {
        CompletionFlags::empty()
    }
    /// Bytes received or sent; 0 for the context format.
    fn len(&self) -> usize {
        0
    }
    /// Remote CQ data, when `FI_REMOTE_CQ_DATA` is set.
    fn data(&self) -> Option<u64> {
        None
    }
    /// The tag of a tagged message.
    fn tag(&self) -> Option<u64> {
        None
    }
    /// Where the received data starts (multi-receive); NULL for formats
    /// without the field.
    fn buf(&self) -> *mut libc::c_void {
        std::ptr::null_mut()
    }
}

macro_rules! entry {
    ($(#[$doc:meta])* $name:ident, $raw:ty, $format:ident, |$e:ident| { $($body:tt)* }) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Clone, Copy, Default)]
        pub struct $name(pub $raw);

        // SAFETY: an entry is plain data; its pointers (context, buffer) are
        // values to compare, never dereferenced through the entry.
        unsafe impl Send for $name {}

        // SAFETY: repr(transparent) over the C struct of this format.
        unsafe impl Entry for $name {
            const FORMAT: CqFormat = CqFormat::$format;
            fn context(&self) -> *mut libc::c_void {
                self.0.op_context
            }
            $($body)*
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let $e = self;
                f.debug_struct(stringify!($name))
                    .field("context", &$e.context())
                    .field("flags", &$e.flags())
                    .field("len", &$e.len())
                    .field("data", &$e.data())
                    .field("tag", &$e.tag())
                    .finish()
            }
        }
    };
}

entry!(
    /// `struct fi_cq_entry`: only the context.
    ContextEntry, fi_cq_entry, CONTEXT, |e| {}
);
entry!(
    /// `struct fi_cq_msg_entry`: context, flags and length.
    MsgEntry, fi_cq_msg_entry, MSG, |e| {
        fn flags(&self) -> CompletionFlags { self.0.flags() }
        fn len(&self) -> usize { self.0.len }
    }
);
entry!(
    /// `struct fi_cq_data_entry`: adds the received buffer and remote CQ data.
    DataEntry, fi_cq_data_entry, DATA, |e| {
        fn flags(&self) -> CompletionFlags { self.0.flags() }
        fn len(&self) -> usize { self.0.len }
        fn buf(&self) -> *mut libc::c_void { self.0.buf }
        fn data(&self) -> Option<u64> {
            self.0.flags().contains(CompletionFlags::REMOTE_CQ_DATA).then_some(self.0.data)
        }
    }
);
entry!(
    /// `struct fi_cq_tagged_entry`: adds the tag.
    TaggedEntry, fi_cq_tagged_entry, TAGGED, |e| {
        fn flags(&self) -> CompletionFlags { self.0.flags() }
        fn len(&self) -> usize { self.0.len }
        fn buf(&self) -> *mut libc::c_void { self.0.buf }
        fn data(&self) -> Option<u64> {
            self.0.flags().contains(CompletionFlags::REMOTE_CQ_DATA).then_some(self.0.data)
        }
        fn tag(&self) -> Option<u64> {
            self.0.flags().contains(CompletionFlags::TAGGED).then_some(self.0.tag)
        }
    }
);

/// How to open a completion queue.
#[derive(Debug, Clone)]
pub struct CqConfig {
    /// Entries the queue holds (0: the provider's default).
    pub size: usize,
    /// The wait object: `FD` for [`CompletionQueue::wait_fd`] and
    /// [`CompletionQueue::sread`], `UNSPEC` for the provider's choice (also
    /// allows `sread`), `NONE` for polling only.
    pub wait_obj: WaitObj,
    /// One thread at a time reads the queue and hands out what it read (a
    /// lock around each read). [`Endpoint::recv_multi`](crate::Endpoint::recv_multi)
    /// needs it: a multi-receive buffer's message entries all name its
    /// operation, and one still being handed out by a thread when another
    /// reads the buffer's final entry would meet the operation's successor.
    /// Other readers spin (yielding) meanwhile, also while an
    /// [`sread`](CompletionQueue::sread) waits.
    pub serial_reads: bool,
}

impl Default for CqConfig {
    fn default() -> Self {
        CqConfig { size: 0, wait_obj: WaitObj::NONE, serial_reads: false }
    }
}

/// The lock of a queue with serial reads: a flag, spun on. A read holds it
/// for one `fi_cq_read` and the hand-out of what it read, so waits are
/// short; and unlike a `Mutex` guard, releasing it is one store, which
/// keeps the unlocked queues' hot path free of a guard to drop.
#[derive(Default)]
pub(crate) struct ReadLock(AtomicBool);

impl ReadLock {
    #[inline]
    fn acquire(&self) -> &AtomicBool {
        let mut spins = 0u32;
        while self.0.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        &self.0
    }
}

/// Releases what [`CompletionQueue::lock_reads`] took.
#[inline(always)]
fn unlock_reads(held: Option<&AtomicBool>) {
    if let Some(held) = held {
        held.store(false, Ordering::Release);
    }
}

/// The most entries [`CompletionQueue::poll_each`] reads at once: room on
/// the stack that is zeroed before each read, so kept small.
pub(crate) const EACH_MAX: usize = 8;

/// Room for the entries of one [`CompletionQueue::poll_each`] read, every
/// entry at its `Default` (all zero) between reads: not every provider
/// writes every field of an entry (verbs leaves `len`, `buf` or `data`
/// alone for some operations), so what it leaves must read as zero. A
/// reader that keeps one from read to read (the async driver) zeroes only
/// the entries a read returned, not the whole room before each read: an
/// empty read, the common case while a reader waits, then writes nothing.
pub(crate) struct ReadRoom<E>([E; EACH_MAX]);

impl<E: Entry> Default for ReadRoom<E> {
    fn default() -> Self {
        ReadRoom([E::default(); EACH_MAX])
    }
}

/// Holds a [`ReadLock`] (if the queue has one) until dropped.
pub(crate) struct ReadGuard<'a>(Option<&'a AtomicBool>);

impl Drop for ReadGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        unlock_reads(self.0);
    }
}

pub(crate) struct CqInner {
    pub(crate) object: Object<fid_cq>,
    pub(crate) _domain: Arc<DomainInner>,
    /// Operation tables of the endpoints bound to this queue: completions
    /// carry pointers into them. They stay here until the queue closes, so a
    /// completion of a closed endpoint never points at freed memory.
    pub(crate) tables: TableSet,
    /// The address vectors of the bound endpoints, by identity (0: an
    /// endpoint without one) with their removal records: a source address
    /// read from the queue is a handle of one of them.
    pub(crate) avs: Mutex<Vec<(u32, Option<Arc<Removals>>)>>,
    wait_obj: WaitObj,
    /// The context libfabric holds for the queue (what a poll set reports).
    pub(crate) id: usize,
    /// The wait set it signals, closed after it.
    _wait_set: Option<Arc<Object<libfabric_sys::fid_wait>>>,
    /// Held across each read and its hand-out, when the queue was opened
    /// with [`CqConfig::serial_reads`].
    pub(crate) serial: Option<ReadLock>,
}

/// Identities of completion queues, never reused within a process.
static NEXT_CQ_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// An open completion queue of entry format `E`.
pub struct CompletionQueue<E: Entry = TaggedEntry, M: ThreadModel = ThreadSafe> {
    pub(crate) inner: Arc<CqInner>,
    // `fn() -> E`: the entry type names the format only; the marker decides Send/Sync.
    _types: Types<E, M>,
}

impl<E: Entry, M: ThreadModel> Clone for CompletionQueue<E, M> {
    fn clone(&self) -> Self {
        CompletionQueue { inner: self.inner.clone(), _types: PhantomData }
    }
}

impl<E: Entry, M: ThreadModel> fmt::Debug for CompletionQueue<E, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionQueue").field("format", &E::FORMAT).field("wait_obj", &self.inner.wait_obj).finish()
    }
}

/// What reading one completion gave.
#[derive(Debug)]
pub enum Read<E> {
    /// Nothing to read yet (`-FI_EAGAIN`).
    Empty,
    /// An entry of an operation posted with a raw context.
    Raw(E),
    /// An operation posted through this crate, with its buffer returned.
    Op(Completion<E>),
    /// A message landed in a multi-receive buffer that stays posted
    /// ([`Endpoint::recv_multi`](crate::Endpoint::recv_multi)): its bytes are at
    /// `offset..offset + entry.len()` of the buffer, which comes back, with all
    /// its messages, in the [`Read::Op`] flagged `FI_MULTI_RECV`.
    Message {
        /// The token of the multi-receive operation.
        token: u64,
        /// Where the message starts in the buffer.
        offset: usize,
        /// The completion entry.
        entry: E,
    },
    /// A [`FixedBuf`](crate::FixedBuf) operation finished: the buffer is its
    /// owner's again (for a receive, cut to the received length).
    Fixed {
        /// What the operation was.
        kind: OpKind,
        /// The token given when posting.
        token: u64,
        /// The completion entry.
        entry: E,
    },
    /// A [`FixedBuf`](crate::FixedBuf) operation failed; the buffer is its
    /// owner's again.
    FixedFailed {
        /// The error, with the provider's details.
        error: Error,
        /// What the operation was.
        kind: OpKind,
        /// The token given when posting.
        token: u64,
    },
    /// An operation failed (an error entry, [`Error::Completion`]); an
    /// operation posted through this crate returns its kind, token and buffer.
    Failed {
        /// The error, with the provider's details.
        error: Error,
        /// The failed operation's kind, token and buffer, if this crate posted it.
        op: Option<(OpKind, u64, Buf)>,
    },
}

/// What [`CompletionQueue::poll_fixed`] read: the answer of a loop over
/// [`FixedBuf`](crate::FixedBuf)s, a fraction of a [`Read`]'s size.
#[derive(Debug)]
pub enum FixedRead<E> {
    /// Nothing to read yet (`-FI_EAGAIN`).
    Empty,
    /// A fixed buffer's operation finished: the buffer is its owner's again
    /// (for a receive, cut to the received length).
    Fixed {
        /// What the operation was.
        kind: OpKind,
        /// The token given when posting.
        token: u64,
        /// The completion entry.
        entry: E,
    },
    /// Anything else, exactly as [`poll`](CompletionQueue::poll) reads it
    /// (another operation's completion, a failure): boxed, so the common
    /// answers stay small. Loops that mix fixed and moved buffers use `poll`.
    Other(Box<Read<E>>),
}

impl<E: Entry, M: ThreadModel> CompletionQueue<E, M> {
    /// Opens a completion queue on `domain`.
    ///
    /// ```no_run
    /// # fn demo(domain: &libfabric::Domain) -> libfabric::Result<()> {
    /// use libfabric::{CompletionQueue, CqConfig, TaggedEntry, WaitObj};
    /// let cq: CompletionQueue<TaggedEntry> =
    ///     CompletionQueue::open(domain, &CqConfig { size: 1024, wait_obj: WaitObj::FD, ..CqConfig::default() })?;
    /// let fd = cq.wait_fd()?; // for poll(2), epoll or any async runtime
    /// # let _ = fd; Ok(()) }
    /// ```
    pub fn open(domain: &Domain<M>, config: &CqConfig) -> Result<Self> {
        Self::open_with(domain, config, None)
    }

    /// Opens a completion queue that signals `set` (`FI_WAIT_SET`): one
    /// [`WaitSet::wait`](crate::WaitSet::wait) covers all its queues.
    #[deprecated(note = "wait sets are deprecated in libfabric 2.x; use wait_fd with your event loop")]
    #[allow(deprecated)]
    pub fn open_in_wait_set(domain: &Domain<M>, size: usize, set: &crate::WaitSet) -> Result<Self> {
        Self::open_with(domain, &CqConfig { size, wait_obj: WaitObj::SET, serial_reads: false }, Some(set))
    }

    #[allow(deprecated)]
    fn open_with(domain: &Domain<M>, config: &CqConfig, set: Option<&crate::WaitSet>) -> Result<Self> {
        let mut attr = fi_cq_attr::default();
        attr.set_size(config.size);
        attr.set_format(E::FORMAT);
        attr.set_wait_obj(config.wait_obj);
        attr.set_wait_cond(CqWaitCond::NONE);
        if let Some(set) = set {
            attr.set_wait_set(set.as_raw());
        }
        let mut raw = ptr::null_mut();
        let id = NEXT_CQ_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the domain is open; attr is valid for the call; the context
        // is a plain number libfabric only hands back.
        check("fi_cq_open", unsafe { fi_cq_open(domain.as_raw(), &mut attr, &mut raw, id as *mut libc::c_void) })?;
        // SAFETY: fi_cq_open succeeded, so `raw` is an open CQ.
        let object = unsafe { Object::new(raw, "fi_close(cq)") }
            .ok_or(Error::InvalidArgument { call: "fi_cq_open", reason: "returned no CQ".into() })?;
        Ok(CompletionQueue {
            inner: Arc::new(CqInner {
                object,
                _domain: domain.inner.clone(),
                tables: TableSet::default(),
                avs: Mutex::new(Vec::new()),
                wait_obj: config.wait_obj,
                id,
                _wait_set: set.map(|s| s.object.clone()),
                serial: config.serial_reads.then(ReadLock::default),
            }),
            _types: PhantomData,
        })
    }

    /// The raw object, for calls this crate does not wrap.
    pub fn as_raw(&self) -> *mut fid_cq {
        self.inner.object.as_ptr()
    }

    pub(crate) fn fid(&self) -> *mut fid {
        self.inner.object.fid()
    }

    /// The queue's identity, as a [`PollSet`](crate::PollSet) reports it.
    pub fn id(&self) -> usize {
        self.inner.id
    }

    /// Reads up to `max` completions at once (at most 32 per call), appending
    /// them to `out`; returns how many. Operations posted through this crate
    /// come back with their buffers; error entries as `Read::Failed`.
    pub fn poll_batch(&self, out: &mut Vec<Read<E>>, max: usize) -> Result<usize> {
        let mut total = 0;
        while total < max.min(32) {
            let want = (max.min(32) - total).min(EACH_MAX);
            let n = self.poll_each(want, |read| out.push(read))?;
            total += n;
            if n < want {
                break;
            }
        }
        Ok(total)
    }

    /// Reads up to `max` completions (at most 8) in one `fi_cq_read` and
    /// hands each to `each`, as [`poll`](Self::poll) returns them; returns
    /// how many. Allocates nothing.
    ///
    /// Fewer than `max` means the queue held no more when it was read, so a
    /// loop that empties the queue can stop there instead of reading it once
    /// more to find it empty (on shm, a read costs as much as the rest of a
    /// round trip). An error entry comes alone, as a count of one.
    ///
    /// ```no_run
    /// # fn demo(cq: &libfabric::CompletionQueue) -> libfabric::Result<()> {
    /// let mut reads = 0;
    /// while cq.poll_each(8, |read| { let _ = read; reads += 1; })? == 8 {}
    /// # Ok(()) }
    /// ```
    pub fn poll_each(&self, max: usize, each: impl FnMut(Read<E>)) -> Result<usize> {
        self.poll_each_in(&mut ReadRoom::default(), max, each)
    }

    /// [`poll_each`](Self::poll_each) into `room`, whose entries are all
    /// zero on entry and are left so.
    #[inline]
    pub(crate) fn poll_each_in(
        &self,
        room: &mut ReadRoom<E>,
        max: usize,
        mut each: impl FnMut(Read<E>),
    ) -> Result<usize> {
        let _serial = self.serial();
        let entries = &mut room.0;
        let want = max.min(EACH_MAX);
        // SAFETY: `entries` holds `want` entries of this queue's format.
        let ret = unsafe { fi_cq_read(self.as_raw(), entries.as_mut_ptr().cast(), want) };
        if ret < 0 && ret != -(libc::EAGAIN as isize) {
            // Whatever a failing read may have written is zeroed again.
            *room = ReadRoom::default();
        }
        if ret == -(libfabric_sys::FI_EAVAIL as isize) {
            each(self.failed("fi_cq_read"));
            return Ok(1);
        }
        let n = self.count("fi_cq_read", ret)?;
        for e in &mut room.0[..n] {
            // Taken out, zeroing its place for the next read.
            let e = std::mem::take(e);
            each(self.claim(e).unwrap_or(Read::Raw(e)));
        }
        Ok(n)
    }

    /// Waits up to `timeout` for one completion (`fi_cq_sread`; the queue
    /// needs a wait object); `Read::Empty` on timeout. Like [`poll`](Self::poll),
    /// it hands back the buffer of an operation posted through this crate.
    pub fn sread(&self, timeout: Duration) -> Result<Read<E>> {
        let _serial = self.serial();
        let mut e = [E::default()];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one entry of this queue's format; no wait condition is passed.
        let ret = unsafe { fi_cq_sread(self.as_raw(), e.as_mut_ptr().cast(), 1, ptr::null(), ms) };
        if ret == -(libc::ETIMEDOUT as isize) || ret == -(libc::EAGAIN as isize) {
            return Ok(Read::Empty);
        }
        if ret == -(libfabric_sys::FI_EAVAIL as isize) {
            return Ok(self.failed("fi_cq_sread"));
        }
        check("fi_cq_sread", ret)?;
        Ok(self.claim(e[0]).unwrap_or(Read::Raw(e[0])))
    }

    /// Like [`poll`](Self::poll), also returning the source address of the
    /// completion (`fi_cq_readfrom`; the endpoint needs `FI_SOURCE`, otherwise
    /// it is `Address::NOTAVAIL` or unspecified).
    pub fn poll_from(&self) -> Result<(Read<E>, Address)> {
        let _serial = self.serial();
        let mut e = [E::default()];
        let mut from: [fi_addr_t; 1] = [Address::NOTAVAIL.raw];
        // SAFETY: one entry and one address of room.
        let ret = unsafe { fi_cq_readfrom(self.as_raw(), e.as_mut_ptr().cast(), 1, from.as_mut_ptr()) };
        if ret == -(libfabric_sys::FI_EAVAIL as isize) {
            return Ok((self.failed("fi_cq_readfrom"), Address::NOTAVAIL));
        }
        if self.count("fi_cq_readfrom", ret)? == 0 {
            return Ok((Read::Empty, Address::NOTAVAIL));
        }
        Ok((self.claim(e[0]).unwrap_or(Read::Raw(e[0])), self.stamp(from[0])))
    }

    /// A source handle read from the queue, stamped with its address vector
    /// when all bound endpoints share one (otherwise it matches no endpoint,
    /// and only compares).
    fn stamp(&self, raw: libfabric_sys::fi_addr_t) -> Address {
        if raw == Address::UNSPEC.raw || raw == Address::NOTAVAIL.raw {
            return Address::UNSPEC;
        }
        let avs = self.inner.avs.lock().unwrap_or_else(|p| p.into_inner());
        match avs.first() {
            Some((id, Some(removals))) if avs.iter().all(|(other, _)| other == id) => {
                Address { raw, av: *id, generation: removals.current(raw) }
            }
            // No vector has this identity.
            _ => Address { raw, av: u32::MAX, generation: 0 },
        }
    }

    /// Reads one completion and, for operations posted through this crate,
    /// returns the buffer with it.
    #[inline(always)]
    pub fn poll(&self) -> Result<Read<E>> {
        // The hot path: one entry on the stack, nothing allocated; errors
        // are handled out of line. Zeroed first: not every provider writes
        // every field of an entry (verbs leaves `len`, `buf` or `data` alone
        // for some operations).
        // The read lock as in `poll_fixed`: released on each path.
        let lock = self.lock_reads();
        let mut e = [E::default()];
        // SAFETY: `e` holds one entry of this queue's format.
        let ret = unsafe { fi_cq_read(self.as_raw(), e.as_mut_ptr().cast(), 1) };
        if ret == 1 {
            let read = self.claim(e[0]).unwrap_or(Read::Raw(e[0]));
            unlock_reads(lock);
            return Ok(read);
        }
        if ret == -(libc::EAGAIN as isize) {
            unlock_reads(lock);
            return Ok(Read::Empty);
        }
        let failed = self.poll_failed(ret);
        unlock_reads(lock);
        failed
    }

    /// Like [`poll`](Self::poll), for loops over [`FixedBuf`](crate::FixedBuf)s:
    /// a fixed buffer's completion is finished in place and comes back as
    /// its kind, token and entry, without the general [`Read`] being built
    /// and moved. Anything else comes back boxed in [`FixedRead::Other`].
    ///
    /// ```no_run
    /// # fn demo(ep: &libfabric::Endpoint, cq: &libfabric::CompletionQueue) -> Result<(), Box<dyn std::error::Error>> {
    /// use libfabric::{Address, Buf, FixedRead};
    /// let mut rx = ep.fix(Buf::zeroed(4096))?;
    /// ep.recv_fixed(&mut rx, Address::UNSPEC, 7)?;
    /// loop {
    ///     match cq.poll_fixed()? {
    ///         FixedRead::Fixed { token: 7, .. } => break,
    ///         FixedRead::Empty => std::hint::spin_loop(),
    ///         other => return Err(format!("unexpected: {other:?}").into()),
    ///     }
    /// }
    /// let message: &[u8] = rx.get().expect("completed");
    /// # let _ = message; Ok(()) }
    /// ```
    #[inline(always)]
    pub fn poll_fixed(&self) -> Result<FixedRead<E>> {
        // Zeroed first: not every provider writes every field of an entry
        // (verbs leaves `len`, `buf` or `data` alone for some operations).
        // The read lock is released on each path just before it returns:
        // a guard dropped at one common exit would merge the paths and make
        // the caller's match dispatch again (about 25 instructions a read).
        let lock = self.lock_reads();
        let mut e = [E::default()];
        // SAFETY: `e` holds one entry of this queue's format.
        let ret = unsafe { fi_cq_read(self.as_raw(), e.as_mut_ptr().cast(), 1) };
        if ret == 1 {
            if let Some((kind, token)) = self.inner.tables.complete_fixed(&e[0]) {
                unlock_reads(lock);
                return Ok(FixedRead::Fixed { kind, token, entry: e[0] });
            }
            let other = self.not_fixed(e[0]);
            unlock_reads(lock);
            return Ok(other);
        }
        if ret == -(libc::EAGAIN as isize) {
            unlock_reads(lock);
            return Ok(FixedRead::Empty);
        }
        let failed = self.poll_failed(ret);
        unlock_reads(lock);
        failed.map(|read| match read {
            Read::Empty => FixedRead::Empty,
            read => FixedRead::Other(Box::new(read)),
        })
    }

    /// `poll_fixed` read an entry of no fixed buffer.
    #[cold]
    #[inline(never)]
    fn not_fixed(&self, entry: E) -> FixedRead<E> {
        match self.claim(entry) {
            // A fixed buffer of an endpoint bound after the first.
            Some(Read::Fixed { kind, token, entry }) => FixedRead::Fixed { kind, token, entry },
            Some(read) => FixedRead::Other(Box::new(read)),
            None => FixedRead::Other(Box::new(Read::Raw(entry))),
        }
    }

    /// `poll` when `fi_cq_read` returned neither an entry nor `-FI_EAGAIN`.
    #[cold]
    #[inline(never)]
    fn poll_failed(&self, ret: isize) -> Result<Read<E>> {
        if ret == -(libfabric_sys::FI_EAVAIL as isize) {
            return Ok(self.failed("fi_cq_read"));
        }
        self.count("fi_cq_read", ret)?;
        Ok(Read::Empty)
    }

    /// The read lock of a queue opened with [`CqConfig::serial_reads`];
    /// nothing to hold otherwise.
    #[inline(always)]
    fn serial(&self) -> ReadGuard<'_> {
        ReadGuard(self.lock_reads())
    }

    /// Takes the read lock, if the queue has one; [`unlock_reads`] gives it
    /// back (for the hot paths, which release it on each path by hand).
    #[inline(always)]
    fn lock_reads(&self) -> Option<&AtomicBool> {
        self.inner.serial.as_ref().map(ReadLock::acquire)
    }

    /// Maps an entry back to the operation that produced it, if one of the
    /// bound endpoints posted it.
    #[inline(always)]
    pub(crate) fn claim(&self, entry: E) -> Option<Read<E>> {
        self.inner.tables.complete(entry)
    }

    /// Wakes a thread blocked in [`sread`](Self::sread) (`fi_cq_signal`).
    pub fn signal(&self) -> Result<()> {
        // SAFETY: the CQ is open.
        check("fi_cq_signal", unsafe { fi_cq_signal(self.as_raw()) }).map(drop)
    }

    /// `fi_trywait`: `Ok(true)` when it is safe to block on the file
    /// descriptor, `Ok(false)` when completions are ready (read them first).
    pub fn trywait(&self) -> Result<bool> {
        let mut fids = [self.fid()];
        let fabric = self.inner._domain._fabric.as_ptr();
        // SAFETY: the fabric and CQ are open; the array lives for the call.
        let ret = unsafe { fi_trywait(fabric, fids.as_mut_ptr(), 1) };
        if ret == -libc::EAGAIN {
            return Ok(false);
        }
        check("fi_trywait", ret).map(|_| true)
    }

    #[inline]
    fn count(&self, call: &'static str, ret: isize) -> Result<usize> {
        if ret >= 0 {
            return Ok(ret as usize);
        }
        match -ret as i32 {
            libc::EAGAIN => Ok(0),
            // The failed operation's buffer, if it was ours, is freed here;
            // `poll` returns it instead.
            e if e == libfabric_sys::FI_EAVAIL as i32 => Err(self.read_error(call).0),
            e => Err(Error::Call { call, errno: Errno::from_raw(e) }),
        }
    }

    /// Reads the waiting error entry (`fi_cq_readerr`), with the provider's
    /// text, and takes back the failed operation if it was posted through this crate.
    #[cold]
    #[inline(never)]
    fn failed(&self, call: &'static str) -> Read<E> {
        match self.read_error(call) {
            (error, Some(Failed::Fixed(kind, token))) => Read::FixedFailed { error, kind, token },
            (error, Some(Failed::Owned(kind, token, buf))) => Read::Failed { error, op: Some((kind, token, buf)) },
            (error, None) => Read::Failed { error, op: None },
        }
    }

    /// Reads the waiting error entry; see [`failed`](Self::failed).
    #[cold]
    #[inline(never)]
    fn read_error(&self, call: &'static str) -> (Error, Option<Failed>) {
        let mut err = fi_cq_err_entry::default();
        // SAFETY: the CQ is open; `err` is a valid error entry to fill.
        let ret = unsafe { fi_cq_readerr(self.as_raw(), &mut err, 0) };
        if ret < 0 {
            return (Error::Call { call: "fi_cq_readerr", errno: Errno::from_raw((-ret) as i32) }, None);
        }
        let mut buf = [0 as libc::c_char; 256];
        // A negative provider errno is an errno value the provider passed on
        // (rxm reports a cancelled operation as -ECANCELED); rxm's
        // fi_cq_strerror crashes on it, so it is read as the errno it is.
        // Zero is no provider error at all (udp;ofi_rxd's cancellations),
        // and rxd's fi_cq_strerror crashes on it once the endpoint has
        // closed (tests/libfabric-known-issues.md, 9): nothing to ask then.
        let text = if err.prov_errno < 0 {
            crate::error::strerror(Errno::from_raw(-err.prov_errno))
        } else if err.prov_errno == 0 {
            String::new()
        } else {
            // SAFETY: err_data/err_data_size come from the entry just read; buf is writable.
            unsafe {
                let p = fi_cq_strerror(self.as_raw(), err.prov_errno, err.err_data, buf.as_mut_ptr(), buf.len());
                if p.is_null() {
                    String::new()
                } else {
                    std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            }
        };
        let op = { self.inner.tables.fail(err.op_context) };
        let error = Error::Completion {
            call,
            // Positive by the man page; shm writes it negated.
            errno: Errno::from_raw(err.err.abs()),
            detail: Box::new(CompletionError {
                context: err.op_context as usize,
                flags: err.flags,
                len: err.len,
                overflow_len: err.olen,
                prov_errno: err.prov_errno,
                provider_text: text,
                data: Vec::new(),
            }),
        };
        (error, op)
    }
}

impl<E: Entry, M: ThreadModel> CompletionQueue<E, M> {
    /// The queue's wait file descriptor (`fi_control(FI_GETWAIT)`), for any
    /// event loop: wait for it to become readable after
    /// [`trywait`](Self::trywait) returned `true`. The queue must have been
    /// opened with `WaitObj::FD`; otherwise this is an error.
    pub fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        if self.inner.wait_obj != WaitObj::FD {
            return Err(Error::InvalidArgument {
                call: "fi_control(FI_GETWAIT)",
                reason: format!("the CQ's wait object is {:?}, not FI_WAIT_FD", self.inner.wait_obj),
            });
        }
        let mut fd: libc::c_int = -1;
        // SAFETY: FI_GETWAIT on an FD wait object writes an int.
        check("fi_control(FI_GETWAIT)", unsafe {
            fi_control(self.fid(), FI_GETWAIT as i32, (&mut fd as *mut libc::c_int).cast())
        })?;
        // SAFETY: the descriptor belongs to the CQ, which outlives the borrow.
        Ok(unsafe { BorrowedFd::borrow_raw(fd) })
    }
}
