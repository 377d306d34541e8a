//! The deferred work queue (fi_trigger(3), `FI_QUEUE_WORK`): an operation
//! libfabric starts by itself once a counter reaches a threshold.
//!
//! [`DeferredCounterAdd`] queues the counter operations (`FI_OP_CNTR_ADD`,
//! `FI_OP_CNTR_SET`): they carry no buffers, so the work and the counters it
//! names are simply kept alive by the handle, and dropping the handle cancels
//! work that has not run (`FI_CANCEL_WORK`). Other operations go through
//! [`Domain::queue_work_raw`](crate::Domain::queue_work_raw).

use std::fmt;
use std::sync::Arc;

use libfabric_sys::{
    fi_control, fi_deferred_work, fi_deferred_work__op, fi_op_cntr, FI_CANCEL_WORK, FI_OP_CNTR_ADD, FI_OP_CNTR_SET,
    FI_QUEUE_WORK,
};

use crate::cntr::{CntrInner, Counter};
use crate::domain::{Domain, DomainInner};
use crate::error::{check, Result};
use crate::fid::ThreadModel;

/// What the work does to its target counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterOp {
    /// `FI_OP_CNTR_ADD`: add the value.
    Add(u64),
    /// `FI_OP_CNTR_SET`: set the counter to the value.
    Set(u64),
}

/// The parts libfabric points into, at stable heap addresses.
struct Work {
    work: fi_deferred_work,
    op: fi_op_cntr,
}

/// Queued deferred work on counters. Dropping it cancels the work if it has
/// not run; the counters stay open at least as long.
pub struct DeferredCounterAdd {
    work: Box<Work>,
    domain: Arc<DomainInner>,
    _counters: [Arc<CntrInner>; 3],
}

impl fmt::Debug for DeferredCounterAdd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredCounterAdd").field("threshold", &self.work.work.threshold).finish()
    }
}

// SAFETY: the boxed work is only read by libfabric (thread-safe for the
// counters' domain) and written here at creation and cancellation.
unsafe impl Send for DeferredCounterAdd {}

impl DeferredCounterAdd {
    /// Queues `op` on `target`, run once `trigger` reaches `threshold`;
    /// `completion` counts it when done.
    ///
    /// ```no_run
    /// # fn demo(domain: &libfabric::Domain) -> libfabric::Result<()> {
    /// use libfabric::{Counter, CounterOp, DeferredCounterAdd, WaitObj};
    /// let (trigger, target, done) = (
    ///     Counter::open(domain, WaitObj::NONE)?,
    ///     Counter::open(domain, WaitObj::NONE)?,
    ///     Counter::open(domain, WaitObj::NONE)?,
    /// );
    /// let work = DeferredCounterAdd::queue(domain, &trigger, 2, &target, CounterOp::Add(5), &done)?;
    /// trigger.add(2)?; // libfabric adds 5 to `target`
    /// # drop(work); Ok(()) }
    /// ```
    pub fn queue<M: ThreadModel>(
        domain: &Domain<M>,
        trigger: &Counter<M>,
        threshold: u64,
        target: &Counter<M>,
        op: CounterOp,
        completion: &Counter<M>,
    ) -> Result<DeferredCounterAdd> {
        let (op_type, value) = match op {
            CounterOp::Add(v) => (FI_OP_CNTR_ADD, v),
            CounterOp::Set(v) => (FI_OP_CNTR_SET, v),
        };
        let mut work = Box::new(Work {
            work: fi_deferred_work {
                context: Default::default(),
                threshold,
                triggering_cntr: trigger.as_raw(),
                completion_cntr: completion.as_raw(),
                op_type,
                op: fi_deferred_work__op { cntr: std::ptr::null_mut() },
            },
            op: fi_op_cntr { cntr: target.as_raw(), value },
        });
        work.work.op.cntr = &mut work.op;
        // SAFETY: the work and its operation live in the box, which this
        // handle keeps (and cancels before freeing); the counters are kept
        // open by the handle's Arcs.
        check("fi_control(FI_QUEUE_WORK)", unsafe {
            fi_control(
                domain.inner.object.fid(),
                FI_QUEUE_WORK as i32,
                (&mut work.work as *mut fi_deferred_work).cast(),
            )
        })?;
        Ok(DeferredCounterAdd {
            work,
            domain: domain.inner.clone(),
            _counters: [trigger.inner.clone(), target.inner.clone(), completion.inner.clone()],
        })
    }
}

impl Drop for DeferredCounterAdd {
    fn drop(&mut self) {
        // SAFETY: the work was queued on this domain and is still alive;
        // after FI_CANCEL_WORK (or once it ran) libfabric no longer uses it.
        let ret = unsafe {
            fi_control(
                self.domain.object.fid(),
                FI_CANCEL_WORK as i32,
                (&mut self.work.work as *mut fi_deferred_work).cast(),
            )
        };
        // Work that already ran is not found: nothing to report.
        if ret != 0 && ret != -libc::ENOENT {
            tracing::debug!(ret, "fi_control(FI_CANCEL_WORK)");
        }
    }
}
