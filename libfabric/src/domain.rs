//! The domain: one NIC (or software stack) and the resources opened on it.

use std::fmt;
use std::marker::PhantomData;
use std::ptr;
use std::sync::Arc;

use libfabric_sys::{fi_domain, fid_domain, fid_fabric};

use crate::error::{check, Error, Result};
use crate::fabric::Fabric;
use crate::fid::{Object, ThreadModel, ThreadSafe};
use crate::info::Info;

/// The shared part of a domain: its object and its fabric, kept alive by children.
pub(crate) struct DomainInner {
    pub(crate) object: Object<fid_domain>,
    // Closed after the domain: fields drop in declaration order.
    pub(crate) _fabric: Arc<Object<fid_fabric>>,
    pub(crate) info: Info,
}

/// An open domain (`fi_domain`). `M` says how its objects may be shared
/// between threads: [`ThreadSafe`] (the default) needs a domain opened with
/// `FI_THREAD_SAFE` and makes every object `Send + Sync`; [`Unsync`](crate::Unsync)
/// accepts any threading model and keeps objects on one thread.
pub struct Domain<M: ThreadModel = ThreadSafe> {
    pub(crate) inner: Arc<DomainInner>,
    pub(crate) _model: PhantomData<M::Marker>,
}

impl<M: ThreadModel> Clone for Domain<M> {
    fn clone(&self) -> Self {
        Domain { inner: self.inner.clone(), _model: PhantomData }
    }
}

impl<M: ThreadModel> fmt::Debug for Domain<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Domain").field("name", &self.inner.info.domain_name()).finish()
    }
}

impl<M: ThreadModel> Domain<M> {
    /// Opens the domain `info` describes on `fabric`.
    ///
    /// With `M = ThreadSafe`, `info` must have `FI_THREAD_SAFE` threading
    /// (ask for it with [`Hints::threading`](crate::Hints::threading)).
    ///
    /// ```no_run
    /// use libfabric::{Domain, Fabric, Hints, Threading, getinfo};
    /// let hints = Hints::new()?.provider("tcp")?.threading(Threading::SAFE);
    /// let info = getinfo(&Default::default(), &hints)?.remove(0);
    /// let fabric = Fabric::open(&info)?;
    /// let domain: Domain = Domain::open(&fabric, &info)?;
    /// # Ok::<(), libfabric::Error>(())
    /// ```
    pub fn open(fabric: &Fabric, info: &Info) -> Result<Domain<M>> {
        if let Some(required) = M::REQUIRES {
            if info.threading() != required {
                return Err(Error::InvalidArgument {
                    call: "fi_domain",
                    reason: format!(
                        "a {} domain needs {required:?}, the info has {:?}; ask for it in the hints or use Domain<Unsync>",
                        std::any::type_name::<M>(),
                        info.threading()
                    ),
                });
            }
        }
        let mut raw = ptr::null_mut();
        // SAFETY: the fabric is open and `info` valid for the call.
        check("fi_domain", unsafe { fi_domain(fabric.as_raw(), info.as_ptr(), &mut raw, ptr::null_mut()) })?;
        // SAFETY: fi_domain succeeded, so `raw` is an open domain.
        let object = unsafe { Object::new(raw, "fi_close(domain)") }
            .ok_or(Error::InvalidArgument { call: "fi_domain", reason: "returned no domain".into() })?;
        Ok(Domain {
            inner: Arc::new(DomainInner { object, _fabric: fabric.inner.clone(), info: info.clone() }),
            _model: PhantomData,
        })
    }

    /// The info the domain was opened with.
    pub fn info(&self) -> &Info {
        &self.inner.info
    }

    /// Queues deferred work (`fi_control(FI_QUEUE_WORK)`): an operation
    /// libfabric starts when `work.triggering_cntr` reaches `work.threshold`.
    /// Providers without a deferred work queue answer `FI_ENOSYS` or
    /// `FI_EOPNOTSUPP`.
    ///
    /// # Safety
    /// `work` and everything it points to (counters, buffers, iovs, the
    /// operation's message) stay valid and unmoved until the work completed or
    /// was cancelled (`FI_CANCEL_WORK`), as fi_trigger(3) requires.
    pub unsafe fn queue_work_raw(&self, work: *mut libfabric_sys::fi_deferred_work) -> Result<()> {
        check(
            "fi_control(FI_QUEUE_WORK)",
            libfabric_sys::fi_control(self.inner.object.fid(), libfabric_sys::FI_QUEUE_WORK as i32, work.cast()),
        )
        .map(drop)
    }

    /// The raw object, for calls this crate does not wrap.
    pub fn as_raw(&self) -> *mut fid_domain {
        self.inner.object.as_ptr()
    }
}
