//! Poll sets (`fi_poll_open`): which of several completion queues have
//! completions, in one call. Deprecated by libfabric 2.x in favour of wait
//! file descriptors ([`CompletionQueue::wait_fd`]); kept for 1.17.

#![allow(deprecated)]

use std::fmt;
use std::marker::PhantomData;
use std::ptr;
use std::sync::{Arc, Mutex};

use libfabric_sys::{fi_poll, fi_poll_add, fi_poll_attr, fi_poll_del, fi_poll_open, fid_poll};

use crate::cq::{CompletionQueue, CqInner, Entry};
use crate::domain::{Domain, DomainInner};
use crate::error::{check, Error, Result};
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
