//! Poll sets (`fi_poll_open`): which of several completion queues have
//! completions, in one call; and wait sets (`fi_wait_open`): one blocking wait
//! for several queues. Both are deprecated by libfabric 2.x in favour of wait
//! file descriptors ([`CompletionQueue::wait_fd`]); kept for 1.17.

#![allow(deprecated)]

use std::fmt;
use std::marker::PhantomData;
use std::ptr;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use libfabric_sys::enums::WaitObj;
use libfabric_sys::{
    fi_poll, fi_poll_add, fi_poll_attr, fi_poll_del, fi_poll_open, fi_wait, fi_wait_attr, fi_wait_open, fid_poll,
    fid_wait,
};

use crate::cq::{CompletionQueue, CqInner, Entry};
use crate::domain::{Domain, DomainInner};
use crate::error::{check, Error, Result};
use crate::fabric::Fabric;
use crate::fid::{Object, ThreadModel, ThreadSafe};

/// An open poll set over completion queues.
///
/// ```no_run
/// # #![allow(deprecated)]
/// # fn demo(domain: &libfabric::Domain, a: &libfabric::CompletionQueue, b: &libfabric::CompletionQueue)
/// #     -> libfabric::Result<()> {
/// use libfabric::PollSet;
/// let set = PollSet::open(domain)?;
/// set.add(a)?;
/// set.add(b)?;
/// for id in set.poll(8)? {
///     if id == a.id() { /* read a */ }
/// }
/// # Ok(()) }
/// ```
#[deprecated(note = "poll sets are deprecated in libfabric 2.x; wait on CompletionQueue::wait_fd instead")]
pub struct PollSet<M: ThreadModel = ThreadSafe> {
    object: Object<fid_poll>,
    /// The queues added, kept open while they are in the set.
    members: Mutex<Vec<Arc<CqInner>>>,
    _domain: Arc<DomainInner>,
    _model: PhantomData<M::Marker>,
}

impl<M: ThreadModel> fmt::Debug for PollSet<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollSet").field("raw", &self.object.as_ptr()).finish()
    }
}

impl<M: ThreadModel> PollSet<M> {
    /// Opens an empty poll set on `domain`.
    pub fn open(domain: &Domain<M>) -> Result<Self> {
        let mut attr = fi_poll_attr::default();
        let mut raw = ptr::null_mut();
        // SAFETY: the domain is open; `attr` is valid for the call.
        check("fi_poll_open", unsafe { fi_poll_open(domain.as_raw(), &mut attr, &mut raw) })?;
        // SAFETY: fi_poll_open succeeded.
        let object = unsafe { Object::new(raw, "fi_close(poll set)") }
            .ok_or(Error::InvalidArgument { call: "fi_poll_open", reason: "returned no poll set".into() })?;
        Ok(PollSet { object, members: Mutex::new(Vec::new()), _domain: domain.inner.clone(), _model: PhantomData })
    }

    /// Adds a completion queue (`fi_poll_add`).
    pub fn add<E: Entry>(&self, cq: &CompletionQueue<E, M>) -> Result<()> {
        // SAFETY: both objects are open.
        check("fi_poll_add", unsafe { fi_poll_add(self.object.as_ptr(), cq.inner.object.fid(), 0) })?;
        self.members.lock().unwrap_or_else(|p| p.into_inner()).push(cq.inner.clone());
        Ok(())
    }

    /// Removes a completion queue (`fi_poll_del`).
    pub fn remove<E: Entry>(&self, cq: &CompletionQueue<E, M>) -> Result<()> {
        // SAFETY: both objects are open.
        check("fi_poll_del", unsafe { fi_poll_del(self.object.as_ptr(), cq.inner.object.fid(), 0) })?;
        self.members.lock().unwrap_or_else(|p| p.into_inner()).retain(|m| !Arc::ptr_eq(m, &cq.inner));
        Ok(())
    }

    /// The [`id`](CompletionQueue::id)s of up to `max` queues with completions
    /// (`fi_poll`); empty when none has any.
    pub fn poll(&self, max: usize) -> Result<Vec<usize>> {
        let count = i32::try_from(max.clamp(1, 1024)).unwrap_or(1024);
        let mut contexts = vec![ptr::null_mut::<libc::c_void>(); count as usize];
        // SAFETY: `contexts` has room for `count` pointers.
        let ret = unsafe { fi_poll(self.object.as_ptr(), contexts.as_mut_ptr(), count) };
        let n = check("fi_poll", ret)? as usize;
        Ok(contexts[..n.min(contexts.len())].iter().map(|c| *c as usize).collect())
    }
}

/// An open wait set (`fi_wait_open`): completion queues opened with
/// [`CompletionQueue::open_in_wait_set`] signal it.
///
/// ```no_run
/// # #![allow(deprecated)]
/// # fn demo(fabric: &libfabric::Fabric, domain: &libfabric::Domain) -> libfabric::Result<()> {
/// use libfabric::{CompletionQueue, TaggedEntry, WaitSet};
/// use std::time::Duration;
/// let set = WaitSet::open(fabric)?;
/// let cq: CompletionQueue<TaggedEntry> = CompletionQueue::open_in_wait_set(domain, 0, &set)?;
/// if set.wait(Duration::from_millis(100))? {
///     let _ = cq.poll()?;
/// }
/// # Ok(()) }
/// ```
#[deprecated(note = "wait sets are deprecated in libfabric 2.x; wait on CompletionQueue::wait_fd instead")]
pub struct WaitSet {
    pub(crate) object: Arc<Object<fid_wait>>,
    _fabric: Arc<Object<libfabric_sys::fid_fabric>>,
}

impl fmt::Debug for WaitSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitSet").field("raw", &self.object.as_ptr()).finish()
    }
}

impl WaitSet {
    /// Opens a wait set on `fabric` with the provider's wait object.
    pub fn open(fabric: &Fabric) -> Result<WaitSet> {
        let mut attr = fi_wait_attr::default();
        attr.set_wait_obj(WaitObj::UNSPEC);
        let mut raw = ptr::null_mut();
        // SAFETY: the fabric is open; `attr` is valid for the call.
        check("fi_wait_open", unsafe { fi_wait_open(fabric.as_raw(), &mut attr, &mut raw) })?;
        // SAFETY: fi_wait_open succeeded.
        let object = unsafe { Object::new(raw, "fi_close(wait set)") }
            .ok_or(Error::InvalidArgument { call: "fi_wait_open", reason: "returned no wait set".into() })?;
        Ok(WaitSet { object: Arc::new(object), _fabric: fabric.inner.clone() })
    }

    pub(crate) fn as_raw(&self) -> *mut fid_wait {
        self.object.as_ptr()
    }

    /// Waits up to `timeout` for any member to signal (`fi_wait`): `Ok(true)`
    /// when one did, `Ok(false)` on timeout.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the wait set is open.
        let ret = unsafe { fi_wait(self.as_raw(), ms) };
        if ret == -libc::ETIMEDOUT {
            return Ok(false);
        }
        check("fi_wait", ret).map(|_| true)
    }
}
