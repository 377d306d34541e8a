//! Opening what every transport endpoint stands on: the info, fabric,
//! domain and a driven completion queue.

use std::sync::atomic::{AtomicU64, Ordering};

use libfabric_sys::enums::{EpType, Threading, WaitObj};
use libfabric_sys::flags::{Caps, MrMode};

use crate::cq::{CompletionQueue, CqConfig};
use crate::domain::Domain;
use crate::driver::Driver;
use crate::driver::ProgressMode;
use crate::error::{Error, Result};
use crate::fabric::Fabric;
use crate::info::{getinfo, Hints, Info, Target};

use super::TransportConfig;

/// The fabric and domain of one transport endpoint.
pub(crate) struct Stack {
    pub(crate) info: Info,
    pub(crate) fabric: Fabric,
    pub(crate) domain: Domain,
}

/// Where an endpoint is to be opened.
pub(crate) enum Place<'a> {
    /// On the configured node, any port (RDM nodes).
    Local,
    /// On the configured node, this service (a listener).
    Listening(&'a str),
    /// Toward this node and service (a connecting client).
    Toward(&'a str, &'a str),
}

/// The first info of `config.provider` with `ep_type` and `caps` for `place`.
pub(crate) fn discover(config: &TransportConfig, ep_type: EpType, caps: Caps, place: Place<'_>) -> Result<Info> {
    let hints = Hints::new()?
        .provider(&config.provider)?
        .ep_type(ep_type)
        .caps(caps)
        .threading(Threading::SAFE)
        .mr_mode(MrMode::LOCAL | MrMode::VIRT_ADDR | MrMode::ALLOCATED | MrMode::PROV_KEY | MrMode::ENDPOINT);
    let unique;
    let node = match (&config.node, config.provider.as_str()) {
        (Some(node), _) => Some(node.as_str()),
        // shm names an endpoint after its node; without one, every endpoint
        // of a process would share the process id as its name.
        (None, "shm") => {
            unique = unique_name();
            Some(unique.as_str())
        }
        (None, _) => None,
    };
    let target = match (place, node) {
        (Place::Toward(host, service), _) => Target::destination(host, Some(service)),
        (Place::Listening(service), node) => Target::source(node.unwrap_or("0.0.0.0"), Some(service)),
        (Place::Local, Some(node)) => Target::source(node, None),
        (Place::Local, None) => Target::default(),
    };
    getinfo(&target, &hints)?.into_iter().find(|i| i.ep_type() == ep_type).ok_or_else(|| Error::InvalidArgument {
        call: "fi_getinfo",
        reason: format!("provider {:?} offers no {ep_type:?} endpoint with {caps:?}", config.provider),
    })
}

impl Stack {
    pub(crate) fn open(info: Info) -> Result<Stack> {
        let fabric = Fabric::open(&info)?;
        let domain = Domain::open(&fabric, &info)?;
        Ok(Stack { info, fabric, domain })
    }

    /// A completion queue with a wait descriptor when the provider has one
    /// (the driver sleeps on it), else one the driver polls. A busy-polling
    /// driver never sleeps, so its queue has none: where there is one, the
    /// provider signals it on each completion and clears it on reading, a
    /// system call each on tcp. Not spawned yet: the caller spawns it once
    /// its endpoint is bound (udp;ofi_rxd crashes reading a queue while an
    /// endpoint is being bound to it).
    pub(crate) fn driver(&self, config: &TransportConfig) -> Result<Driver> {
        let size = config.driver.in_flight.max(64);
        let queue = |wait_obj| CqConfig { size, wait_obj, ..CqConfig::default() };
        let wait_obj = match config.driver.mode {
            ProgressMode::Wait => WaitObj::FD,
            ProgressMode::BusyPoll => WaitObj::NONE,
        };
        let cq = match CompletionQueue::open(&self.domain, &queue(wait_obj)) {
            Ok(cq) => cq,
            Err(e) if e.errno().raw() == libc::ENOSYS => CompletionQueue::open(&self.domain, &queue(WaitObj::NONE))?,
            Err(e) => return Err(e),
        };
        Ok(Driver::new(cq, config.driver.clone()))
    }
}

/// A shm endpoint name no other endpoint uses: the process id, a counter,
/// and the time the name is made, since a process killed before it closed its
/// endpoints leaves their files in `/dev/shm`, and a later process given the
/// same id would otherwise fail to open (`FI_EBUSY`).
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("libfabric-rs-{}-{}-{nanos:x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}
