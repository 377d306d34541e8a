//! Counters: completions counted instead of queued.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfabric_sys::enums::{CntrEvents, Errno, WaitObj};
use libfabric_sys::{
    fi_cntr_add, fi_cntr_adderr, fi_cntr_attr, fi_cntr_open, fi_cntr_read, fi_cntr_readerr, fi_cntr_set,
    fi_cntr_seterr, fi_cntr_wait, fi_control, fid, fid_cntr, FI_GETWAIT,
};

use crate::domain::{Domain, DomainInner};
use crate::error::{check, Error, Result};
use crate::fid::{Object, ThreadModel, ThreadSafe};

pub(crate) struct CntrInner {
    pub(crate) object: Object<fid_cntr>,
    _domain: Arc<DomainInner>,
    /// The wait object as the provider reports it after opening (shm turns
    /// `FI_WAIT_UNSPEC` into `FI_WAIT_YIELD`).
    wait_obj: WaitObj,
}

/// An open counter (`fi_cntr_open`), counting completions of the endpoints
/// bound to it, and their errors.
///
/// ```no_run
/// # fn demo(domain: &libfabric::Domain) -> libfabric::Result<()> {
/// use libfabric::{Counter, WaitObj};
/// let counter: Counter = Counter::open(domain, WaitObj::UNSPEC)?;
/// counter.add(2)?;
/// assert_eq!(counter.read(), 2);
/// # Ok(()) }
/// ```
pub struct Counter<M: ThreadModel = ThreadSafe> {
    pub(crate) inner: Arc<CntrInner>,
    _model: PhantomData<M::Marker>,
}

impl<M: ThreadModel> Clone for Counter<M> {
    fn clone(&self) -> Self {
        Counter { inner: self.inner.clone(), _model: PhantomData }
    }
}

impl<M: ThreadModel> fmt::Debug for Counter<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counter").field("value", &self.read()).field("errors", &self.read_errors()).finish()
    }
}

impl<M: ThreadModel> Counter<M> {
    /// Opens a counter of completed operations with the given wait object
    /// (`WaitObj::NONE` to poll only, `UNSPEC` to allow [`wait`](Self::wait)).
    /// `WaitObj::SET` is refused: it needs a wait set this call cannot pass
    /// (sockets dereferences the missing set).
    pub fn open(domain: &Domain<M>, wait_obj: WaitObj) -> Result<Self> {
        if wait_obj == WaitObj::SET {
            return Err(Error::InvalidArgument {
                call: "fi_cntr_open",
                reason: "FI_WAIT_SET needs a wait set, which Counter::open does not take".into(),
            });
        }
        let mut attr = fi_cntr_attr::default();
        attr.set_events(CntrEvents::COMP);
        attr.set_wait_obj(wait_obj);
        let mut raw = ptr::null_mut();
        // SAFETY: the domain is open; attr is valid for the call.
        check("fi_cntr_open", unsafe { fi_cntr_open(domain.as_raw(), &mut attr, &mut raw, ptr::null_mut()) })?;
        // SAFETY: fi_cntr_open succeeded.
        let object = unsafe { Object::new(raw, "fi_close(cntr)") }
            .ok_or(Error::InvalidArgument { call: "fi_cntr_open", reason: "returned no counter".into() })?;
        // The provider may have written back the wait object it chose.
        let wait_obj = match attr.wait_obj() {
            WaitObj::UNSPEC => wait_obj,
            chosen => chosen,
        };
        Ok(Counter {
            inner: Arc::new(CntrInner { object, _domain: domain.inner.clone(), wait_obj }),
            _model: PhantomData,
        })
    }

    /// The raw object, for calls this crate does not wrap.
    pub fn as_raw(&self) -> *mut fid_cntr {
        self.inner.object.as_ptr()
    }

    pub(crate) fn fid(&self) -> *mut fid {
        self.inner.object.fid()
    }

    /// The count of successful completions (`fi_cntr_read`).
    pub fn read(&self) -> u64 {
        // SAFETY: the counter is open.
        unsafe { fi_cntr_read(self.as_raw()) }
    }

    /// The count of failed completions (`fi_cntr_readerr`).
    pub fn read_errors(&self) -> u64 {
        // SAFETY: the counter is open.
        unsafe { fi_cntr_readerr(self.as_raw()) }
    }

    /// Adds to the count (`fi_cntr_add`).
    pub fn add(&self, value: u64) -> Result<()> {
        // SAFETY: the counter is open.
        check("fi_cntr_add", unsafe { fi_cntr_add(self.as_raw(), value) }).map(drop)
    }

    /// Adds to the error count (`fi_cntr_adderr`; `FI_ENOSYS` from providers
    /// older than the call).
    pub fn add_errors(&self, value: u64) -> Result<()> {
        // SAFETY: the counter is open.
        check("fi_cntr_adderr", unsafe { fi_cntr_adderr(self.as_raw(), value) }).map(drop)
    }

    /// Sets the count (`fi_cntr_set`).
    pub fn set(&self, value: u64) -> Result<()> {
        // SAFETY: the counter is open.
        check("fi_cntr_set", unsafe { fi_cntr_set(self.as_raw(), value) }).map(drop)
    }

    /// Sets the error count (`fi_cntr_seterr`).
    pub fn set_errors(&self, value: u64) -> Result<()> {
        // SAFETY: the counter is open.
        check("fi_cntr_seterr", unsafe { fi_cntr_seterr(self.as_raw(), value) }).map(drop)
    }

    /// Waits until the count reaches `threshold` (`fi_cntr_wait`): `Ok(true)`
    /// once it has, `Ok(false)` when `timeout` passed first, and an error
    /// with `FI_EAVAIL` when the error count changed meanwhile (an operation
    /// failed; see [`read_errors`](Self::read_errors)).
    ///
    /// The counter needs a wait object: one opened with `WaitObj::NONE` is
    /// refused (`fi_cntr_wait` is invalid there, and udp;ofi_rxd crashes).
    /// Where libfabric 1.17 returns early without the threshold reached
    /// (sockets returns `+FI_ETIMEDOUT` at once, or success when only the
    /// error count changed) this waits on until the timeout; on a
    /// `FI_WAIT_YIELD` counter (shm's choice for `UNSPEC`), whose 1.17 wait
    /// never times out, it polls instead of blocking.
    ///
    /// ```no_run
    /// # fn demo(domain: &libfabric::Domain) -> libfabric::Result<()> {
    /// use std::time::Duration;
    /// use libfabric::{Counter, WaitObj};
    /// let counter: Counter = Counter::open(domain, WaitObj::UNSPEC)?;
    /// // ... bind it to an endpoint and post 8 operations, then:
    /// if !counter.wait(8, Duration::from_secs(5))? {
    ///     println!("only {} done after 5 s", counter.read());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn wait(&self, threshold: u64, timeout: Duration) -> Result<bool> {
        const CALL: &str = "fi_cntr_wait";
        if self.inner.wait_obj == WaitObj::NONE {
            return Err(Error::InvalidArgument {
                call: CALL,
                reason: "the counter was opened with FI_WAIT_NONE: poll it with read()".into(),
            });
        }
        let start = Instant::now();
        let errors = self.read_errors();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            let ms = if self.inner.wait_obj == WaitObj::YIELD {
                0
            } else {
                i32::try_from(left.as_millis()).unwrap_or(i32::MAX)
            };
            // SAFETY: the counter is open and has a wait object (checked above).
            let ret = unsafe { fi_cntr_wait(self.as_raw(), threshold, ms) };
            if ret < 0 && ret != -libc::ETIMEDOUT {
                return Err(Error::Call { call: CALL, errno: Errno::from_raw(-ret) });
            }
            // Success, or an early return: judge by the counts themselves.
            if self.read() >= threshold {
                return Ok(true);
            }
            if self.read_errors() != errors {
                return Err(Error::Call { call: CALL, errno: Errno::EAVAIL });
            }
            if start.elapsed() >= timeout {
                return Ok(false);
            }
            if self.inner.wait_obj == WaitObj::YIELD {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// The counter's wait file descriptor (`fi_control(FI_GETWAIT)`), when it
    /// was opened with `WaitObj::FD`.
    pub fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        if self.inner.wait_obj != WaitObj::FD {
            return Err(Error::InvalidArgument {
                call: "fi_control(FI_GETWAIT)",
                reason: format!("the counter's wait object is {:?}, not FI_WAIT_FD", self.inner.wait_obj),
            });
        }
        let mut fd: libc::c_int = -1;
        // SAFETY: FI_GETWAIT on an FD wait object writes an int.
        check("fi_control(FI_GETWAIT)", unsafe {
            fi_control(self.fid(), FI_GETWAIT as i32, (&mut fd as *mut libc::c_int).cast())
        })?;
        // SAFETY: the descriptor belongs to the counter, which outlives the borrow.
        Ok(unsafe { BorrowedFd::borrow_raw(fd) })
    }
}
