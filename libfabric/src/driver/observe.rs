//! What the async operations report: a `tracing` event per finished
//! operation (TRACE level) and, with the `metrics` feature, counters and a
//! latency histogram through the `metrics` facade, labelled by provider,
//! endpoint type and operation.
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | `libfabric_operations_total` | counter | operations finished |
//! | `libfabric_operation_errors_total` | counter | of those, failed (cancelled, truncated, timed out, …) |
//! | `libfabric_bytes_total` | counter | bytes sent or received by successful operations |
//! | `libfabric_operation_seconds` | histogram | from post to completion |
//! | `libfabric_in_flight` | gauge | operations of the endpoint's driver not yet finished |
//!
//! The handles are registered once per endpoint, so recording allocates
//! nothing per operation.

use std::time::Instant;

use crate::cq::Entry;
use crate::info::Info;
use crate::ops::Completion;

use super::OpError;

/// The operations an [`AsyncEndpoint`](super::AsyncEndpoint) posts, as they
/// are labelled.
#[cfg(feature = "metrics")]
const OPERATIONS: &[&str] = &[
    "send",
    "send_data",
    "recv",
    "tsend",
    "tsend_data",
    "tinject_data",
    "trecv",
    "write",
    "read",
    "atomic",
    "fetch_atomic",
    "compare_atomic",
];

#[cfg(feature = "metrics")]
struct Handles {
    ops: metrics::Counter,
    errors: metrics::Counter,
    bytes: metrics::Counter,
    seconds: metrics::Histogram,
}

/// One endpoint's reporting.
pub(crate) struct Observer {
    provider: String,
    #[cfg(feature = "metrics")]
    handles: Vec<Handles>,
    #[cfg(feature = "metrics")]
    in_flight: metrics::Gauge,
}

impl Observer {
    pub(crate) fn new(info: &Info) -> Observer {
        let provider = info.provider().to_string();
        #[cfg(feature = "metrics")]
        {
            let ep_type = format!("{:?}", info.ep_type());
            let labels = |op: &'static str| {
                [("provider", provider.clone()), ("ep_type", ep_type.clone()), ("operation", op.to_string())]
            };
            let handles = OPERATIONS
                .iter()
                .map(|&op| Handles {
                    ops: metrics::counter!("libfabric_operations_total", &labels(op)),
                    errors: metrics::counter!("libfabric_operation_errors_total", &labels(op)),
                    bytes: metrics::counter!("libfabric_bytes_total", &labels(op)),
                    seconds: metrics::histogram!("libfabric_operation_seconds", &labels(op)),
                })
                .collect();
            let in_flight =
                metrics::gauge!("libfabric_in_flight", &[("provider", provider.clone()), ("ep_type", ep_type.clone())]);
            Observer { provider, handles, in_flight }
        }
        #[cfg(not(feature = "metrics"))]
        Observer { provider }
    }

    /// When an operation starts, if anything will report its duration (the
    /// `metrics` feature, or a subscriber of TRACE events): reading the clock
    /// is the largest part of an unobserved post's cost.
    #[inline]
    pub(crate) fn start(&self) -> Option<Instant> {
        (cfg!(feature = "metrics") || tracing::enabled!(tracing::Level::TRACE)).then(Instant::now)
    }

    /// Reports one finished operation.
    #[inline]
    pub(crate) fn record<E: Entry>(
        &self,
        op: &'static str,
        started: Option<Instant>,
        in_flight: impl FnOnce() -> usize,
        result: Result<&Completion<E>, &OpError>,
    ) {
        let bytes = result.map_or(0, |c| c.buf.len());
        tracing::trace!(provider = %self.provider, op, ok = result.is_ok(), bytes, elapsed = ?started.map(|s| s.elapsed()), "operation finished");
        #[cfg(feature = "metrics")]
        if let Some(i) = OPERATIONS.iter().position(|&name| std::ptr::eq(name, op) || name == op) {
            let h = &self.handles[i];
            h.ops.increment(1);
            if result.is_err() {
                h.errors.increment(1);
            }
            h.bytes.increment(bytes as u64);
            if let Some(started) = started {
                h.seconds.record(started.elapsed().as_secs_f64());
            }
            self.in_flight.set(in_flight() as f64);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = in_flight;
    }

    /// Reports an inject: done when the call returned, so it has bytes but
    /// no duration, and nothing stays in flight.
    #[inline]
    pub(crate) fn injected(&self, op: &'static str, bytes: usize) {
        tracing::trace!(provider = %self.provider, op, ok = true, bytes, "operation finished");
        #[cfg(feature = "metrics")]
        if let Some(i) = OPERATIONS.iter().position(|&name| std::ptr::eq(name, op) || name == op) {
            let h = &self.handles[i];
            h.ops.increment(1);
            h.bytes.increment(bytes as u64);
        }
    }
}
