//! Reading an event queue asynchronously: its wait descriptor in tokio's
//! reactor after `fi_trywait`, polling where there is none.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;

use crate::driver::runtime::{watch, WaitFd, POLL_TICK, WAIT_TICK};
use crate::driver::{Door, Gate};
use crate::eq::{Event, EventQueue};
use crate::error::Result;

impl Drop for AsyncEq {
    /// The queue may be the last reference to an event queue bound to the
    /// endpoint whose driver holds `gate`: tcp crashes in `fi_trywait` on the
    /// completion queue while such an event queue closes, so it closes with
    /// the driver kept out of libfabric.
    fn drop(&mut self) {
        let _shut = self.gate.as_ref().map(|g| g.shut());
        drop(self.fd.take());
        drop(self.eq.take());
    }
}

/// An event queue whose events are awaited.
pub(crate) struct AsyncEq {
    // Both taken (and closed) in `drop`, under the gate.
    eq: Option<EventQueue>,
    fd: Option<AsyncFd<WaitFd<EventQueue>>>,
    /// The driver's gate of the endpoint bound to this queue: reading the
    /// queue must not race the endpoint's close.
    gate: Option<Arc<Gate>>,
}

impl AsyncEq {
    /// Needs a tokio runtime (the reactor the descriptor joins).
    pub(crate) fn new(eq: EventQueue, gate: Option<Arc<Gate>>) -> AsyncEq {
        let fd = eq.wait_fd().ok().and_then(|fd| watch(fd.as_raw_fd(), eq.clone()).ok());
        AsyncEq { eq: Some(eq), fd, gate }
    }

    /// One read, and whether it is safe to sleep, under the gate; `None`
    /// while the driver reads its queue inside the gate.
    fn read(&self) -> Result<Option<(Option<Event>, bool)>> {
        let _reading = match &self.gate {
            Some(gate) => match gate.try_read(Door::Events) {
                Some(reading) => Some(reading),
                None => return Ok(None),
            },
            None => None,
        };
        let Some(eq) = &self.eq else { return Ok(Some((None, false))) };
        Ok(Some(match eq.read()? {
            Some(event) => (Some(event), false),
            None if self.fd.is_some() => (None, eq.trywait()?),
            None => (None, false),
        }))
    }

    /// The next event; an error entry (refused, rejected, …) is an `Err`.
    pub(crate) async fn next(&self) -> Result<Event> {
        loop {
            let Some((event, may_sleep)) = self.read()? else {
                // The driver is inside the gate: try again after a tick.
                tokio::time::sleep(POLL_TICK).await;
                continue;
            };
            if let Some(event) = event {
                return Ok(event);
            }
            match &self.fd {
                Some(fd) if may_sleep => {
                    tokio::select! {
                        ready = fd.readable() => {
                            if let Ok(mut guard) = ready {
                                guard.clear_ready();
                            }
                        }
                        _ = tokio::time::sleep(WAIT_TICK) => {}
                    }
                }
                Some(_) => {}
                None => tokio::time::sleep(POLL_TICK).await,
            }
        }
    }
}
