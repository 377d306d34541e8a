//! The capability matrix: what each provider and endpoint type of the test
//! matrix offers, and whether the cheap features work end to end.
//!
//! ```text
//! cargo run -p libfabric-examples --example capabilities
//! ```
//!
//! For every case (a provider and endpoint type, the matrix of
//! `tests/src/lib.rs`) and every feature, `fi_getinfo` on 127.0.0.1 (shm: no
//! node) decides whether the provider offers it. Messaging, tagged
//! messaging, multi-receive, remote CQ data, RMA, atomics and counters are
//! then exercised once through the safe layer, between two endpoints of one
//! domain in this process (connected through a passive endpoint for MSG).
//! The result is a markdown table on stdout with the same bytes on every run:
//! no timings, addresses or process ids. `cargo xtask matrix` writes it to
//! `docs/capabilities.md`.
//!
//! The probe's own failures are cells of the table (`failed: …`), never
//! panics; the exit status is non-zero only when the table could not be
//! written.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use libfabric::sys::flags::BindFlags;
use libfabric::{
    api_version, getinfo, runtime_version, Address, AddressVector, AtomicBuf, AtomicOp, AvType, Bindings, Buf, Caps,
    Completion, CompletionFlags, CompletionQueue, Counter, CqConfig, Domain, Endpoint, Entry, EpOption, EpType, Errno,
    Event, EventQueue, Fabric, Hints, Info, MrAccess, MrMode, OpId, PassiveEndpoint, PostError, Read, TaggedEntry,
    Target, Unsync, WaitObj,
};

/// How long one wait of the probe may take before its cell fails.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Cases and features.
// ---------------------------------------------------------------------------

/// One provider and endpoint type.
#[derive(Debug, Clone, Copy)]
struct Case {
    provider: &'static str,
    ep_type: EpType,
}

/// The provider matrix of the test suite (`tests/src/lib.rs`): every
/// provider and endpoint type Debian's libfabric 1.17 offers.
const CASES: &[Case] = &[
    Case { provider: "tcp", ep_type: EpType::MSG },
    Case { provider: "tcp;ofi_rxm", ep_type: EpType::RDM },
    Case { provider: "udp", ep_type: EpType::DGRAM },
    Case { provider: "udp;ofi_rxd", ep_type: EpType::RDM },
    Case { provider: "sockets", ep_type: EpType::MSG },
    Case { provider: "sockets", ep_type: EpType::RDM },
    Case { provider: "sockets", ep_type: EpType::DGRAM },
    Case { provider: "shm", ep_type: EpType::RDM },
    Case { provider: "net", ep_type: EpType::MSG },
    Case { provider: "net", ep_type: EpType::RDM },
];

impl Case {
    /// `provider/type`, e.g. `tcp;ofi_rxm/rdm`, as the tests name cases.
    fn name(&self) -> String {
        let ty = match self.ep_type {
            EpType::MSG => "msg",
            EpType::RDM => "rdm",
            _ => "dgram",
        };
        format!("{}/{ty}", self.provider)
    }

    /// The first info of exactly this provider and endpoint type that has
    /// `caps` and satisfies `attribute`, on 127.0.0.1 (shm names its
    /// endpoints after the node, so it gets its default, per-process name).
    fn info(&self, caps: Caps, attribute: fn(&Info) -> bool) -> libfabric::Result<Option<Info>> {
        let hints = Hints::new()?
            .provider(self.provider)?
            .ep_type(self.ep_type)
            .caps(caps)
            .mr_mode(MrMode::LOCAL | MrMode::VIRT_ADDR | MrMode::ALLOCATED | MrMode::PROV_KEY | MrMode::ENDPOINT);
        let target = if self.provider == "shm" { Target::default() } else { Target::source("127.0.0.1", None) };
        Ok(getinfo(&target, &hints)?.into_iter().find(|i| {
            i.provider() == self.provider && i.ep_type() == self.ep_type && i.caps().contains(caps) && attribute(i)
        }))
    }
}

/// A check run in this process on an info offering the feature.
type Exercise = fn(&Info) -> Result<(), Problem>;

/// One column of the table.
struct Feature {
    /// The column heading.
    title: &'static str,
    /// What `fi_getinfo` is asked for.
    caps: Caps,
    /// What the returned info must also show.
    attribute: fn(&Info) -> bool,
    /// How "offered" is decided and what the probe does, for the legend.
    rule: &'static str,
    /// The probe's own check, for the cheap features.
    exercise: Option<Exercise>,
    /// Which test in `tests/tests` checks the feature on which cases. Kept
    /// by hand: change it with the tests.
    tests: &'static [(&'static str, &'static [&'static str])],
}

/// Messages and RMA both ways: what rma.rs asks for.
const RMA_CAPS: Caps =
    Caps::MSG.union(Caps::RMA).union(Caps::READ).union(Caps::WRITE).union(Caps::REMOTE_READ).union(Caps::REMOTE_WRITE);

/// The probes' queues: serial reads, which the multi-receive probe needs
/// (a probe reads each queue from one thread, so the lock is never contended).
const PROBE_CQ: CqConfig = CqConfig { size: 0, wait_obj: WaitObj::NONE, serial_reads: true };

/// No attribute beyond the caps.
fn any(_: &Info) -> bool {
    true
}

/// The domain carries remote CQ data.
fn carries_cq_data(info: &Info) -> bool {
    info.domain_attr().is_some_and(|d| d.cq_data_size() > 0)
}

/// An endpoint may have several transmit contexts (a scalable endpoint).
fn has_tx_contexts(info: &Info) -> bool {
    info.domain_attr().is_some_and(|d| d.max_ep_tx_ctx() > 1)
}

/// Endpoints may share transmit contexts.
fn has_shared_contexts(info: &Info) -> bool {
    info.domain_attr().is_some_and(|d| d.max_ep_stx_ctx() > 0)
}

/// Every case of the matrix, by name.
const ALL: &[&str] = &[
    "tcp/msg",
    "tcp;ofi_rxm/rdm",
    "udp/dgram",
    "udp;ofi_rxd/rdm",
    "sockets/msg",
    "sockets/rdm",
    "sockets/dgram",
    "shm/rdm",
    "net/msg",
    "net/rdm",
];
/// The providers of `operations.rs`, with their RDM endpoints.
const OPERATIONS: &[&str] = &["tcp;ofi_rxm/rdm", "udp;ofi_rxd/rdm", "sockets/rdm", "shm/rdm"];
/// The cases where `provider_matrix.rs` asks for `FI_SOURCE`: it does so
/// for RDM and DGRAM endpoints whose `FI_MSG` info lists it.
const SOURCE_CHECKED: &[&str] = &["udp/dgram", "udp;ofi_rxd/rdm", "sockets/rdm", "sockets/dgram", "shm/rdm", "net/rdm"];
/// The cases of `counters.rs` with `FI_RMA_EVENT`.
const RMA_EVENT_CHECKED: &[&str] =
    &["tcp/msg", "udp;ofi_rxd/rdm", "sockets/msg", "sockets/rdm", "shm/rdm", "net/msg", "net/rdm"];

/// The columns, in order.
const FEATURES: &[Feature] = &[
    Feature {
        title: "messaging",
        caps: Caps::MSG,
        attribute: any,
        rule: "`FI_MSG`; exercised: `fi_send` of 100 bytes to a posted `fi_recv`, checked byte for byte",
        exercise: Some(messaging),
        tests: &[("provider_matrix.rs", ALL)],
    },
    Feature {
        title: "tagged",
        caps: Caps::MSG.union(Caps::TAGGED),
        attribute: any,
        rule: "`FI_TAGGED`; exercised: `fi_tsend` to a posted `fi_trecv` of its tag, checked with its tag",
        exercise: Some(tagged),
        tests: &[("operations.rs", OPERATIONS)],
    },
    Feature {
        title: "multi-receive",
        caps: Caps::MSG.union(Caps::MULTI_RECV),
        attribute: any,
        rule: "`FI_MULTI_RECV`; exercised: two messages land at their offsets in one posted buffer, \
               which comes back flagged `FI_MULTI_RECV`",
        exercise: Some(multi_receive),
        tests: &[("multi_recv.rs", &["tcp;ofi_rxm/rdm", "udp;ofi_rxd/rdm"]), ("operations.rs", OPERATIONS)],
    },
    Feature {
        title: "remote CQ data",
        caps: Caps::MSG,
        attribute: carries_cq_data,
        rule: "`domain_attr.cq_data_size > 0`; exercised: `fi_senddata`, whose receive reports the data",
        exercise: Some(cq_data),
        tests: &[("provider_matrix.rs", ALL)],
    },
    Feature {
        title: "FI_SOURCE",
        caps: Caps::MSG.union(Caps::SOURCE),
        attribute: any,
        rule: "`FI_SOURCE` (the source address of each receive); not exercised",
        exercise: None,
        tests: &[("provider_matrix.rs", SOURCE_CHECKED)],
    },
    Feature {
        title: "RMA",
        caps: RMA_CAPS,
        attribute: any,
        rule: "`FI_RMA` with local and remote reads and writes; exercised: `fi_write` into exposed memory \
               until the bytes show there, then `fi_read` of them back",
        exercise: Some(rma),
        tests: &[("rma.rs", &["tcp/msg", "tcp;ofi_rxm/rdm", "udp;ofi_rxd/rdm", "shm/rdm", "net/msg", "net/rdm"])],
    },
    Feature {
        title: "atomics",
        caps: RMA_CAPS.union(Caps::ATOMIC),
        attribute: any,
        rule: "`FI_ATOMIC` as for RMA; exercised, where `fi_fetch_atomicvalid` accepts it: `fi_fetch_atomic` \
               `FI_SUM` of 3 onto a `u64` 6, which comes back while 9 shows at the target. The 6 is put \
               with `fi_write` first, as atomics.rs does: in libfabric 1.17 a fetch atomic as the very first \
               operation from a udp;ofi_rxd endpoint to a peer completes at once with its result untouched, \
               and the next progress crashes the process (reproduced in C)",
        exercise: Some(atomics),
        tests: &[("atomics.rs", &["udp;ofi_rxd/rdm", "shm/rdm", "net/rdm"])],
    },
    Feature {
        title: "RMA events",
        caps: RMA_CAPS.union(Caps::RMA_EVENT),
        attribute: any,
        rule: "`FI_RMA_EVENT` as for RMA; not exercised",
        exercise: None,
        tests: &[("counters.rs", RMA_EVENT_CHECKED)],
    },
    Feature {
        title: "counters",
        caps: Caps::MSG,
        attribute: any,
        rule: "no capability bit (and `domain_attr.cntr_cnt`, the optimal number of counters, is 0 on most \
               providers), so `FI_MSG` and `fi_cntr_open`; exercised: a counter bound to the sender with \
               `FI_SEND` counts one send",
        exercise: Some(counters),
        tests: &[(
            "counters.rs",
            &[
                "tcp/msg",
                "tcp;ofi_rxm/rdm",
                "udp;ofi_rxd/rdm",
                "sockets/msg",
                "sockets/rdm",
                "shm/rdm",
                "net/msg",
                "net/rdm",
            ],
        )],
    },
    Feature {
        title: "FI_PEEK",
        caps: Caps::MSG.union(Caps::TAGGED),
        attribute: any,
        rule: "`FI_TAGGED` (`FI_PEEK` is a flag of tagged receives, with no capability bit); not exercised",
        exercise: None,
        tests: &[("operations.rs: shm ignores the flag", &["shm/rdm"]), ("operations.rs", OPERATIONS)],
    },
    Feature {
        title: "scalable endpoints",
        caps: Caps::MSG,
        attribute: has_tx_contexts,
        rule: "`domain_attr.max_ep_tx_ctx > 1`; not exercised",
        exercise: None,
        tests: &[("scalable.rs", &["sockets/rdm"])],
    },
    Feature {
        title: "shared contexts",
        caps: Caps::MSG,
        attribute: has_shared_contexts,
        rule: "`domain_attr.max_ep_stx_ctx > 0`; not exercised",
        exercise: None,
        tests: &[("shared_contexts.rs", &["sockets/rdm"])],
    },
    Feature {
        title: "triggered operations",
        caps: Caps::MSG.union(Caps::TRIGGER),
        attribute: any,
        rule: "`FI_TRIGGER`; not exercised",
        exercise: None,
        tests: &[("triggered.rs", &["sockets/rdm"])],
    },
    Feature {
        title: "collectives",
        caps: Caps::MSG.union(Caps::COLLECTIVE),
        attribute: any,
        rule: "`FI_COLLECTIVE`; not exercised",
        exercise: None,
        tests: &[("collectives.rs", &["tcp;ofi_rxm/rdm"])],
    },
];

impl Feature {
    /// The test that checks this feature on `case`, if any.
    fn test_for(&self, case: &Case) -> Option<&'static str> {
        let name = case.name();
        self.tests.iter().find(|(_, cases)| cases.contains(&name.as_str())).map(|(test, _)| *test)
    }
}

// ---------------------------------------------------------------------------
// Cells.
// ---------------------------------------------------------------------------

/// Why an exercise did not pass.
#[derive(Debug)]
enum Problem {
    /// The provider refused the feature when asked (`FI_ENOSYS` or
    /// `FI_EOPNOTSUPP` from a validity query or from opening the object): a
    /// fact about the provider, not a failure of the binding.
    Unsupported(String),
    /// Anything else: an error, a wrong result, a timeout.
    Failed(String),
}

impl From<String> for Problem {
    fn from(why: String) -> Problem {
        Problem::Failed(why)
    }
}

impl Problem {
    /// `Unsupported` for `FI_ENOSYS` and `FI_EOPNOTSUPP`, `Failed` otherwise.
    fn of(e: libfabric::Error) -> Problem {
        if [Errno::ENOSYS, Errno::EOPNOTSUPP].contains(&e.errno()) {
            Problem::Unsupported(format!("{}: {:?}", e.call(), e.errno()))
        } else {
            Problem::Failed(e.to_string())
        }
    }
}

/// What happened for one feature of one case.
#[derive(Debug)]
enum Cell {
    /// Offered, and the probe's operation worked; the test that also checks it.
    Passed(Option<&'static str>),
    /// Offered, not exercised by the probe; the test that checks it.
    Offered(Option<&'static str>),
    /// `fi_getinfo` offers it, but the provider refuses it when asked.
    Unsupported(String, Option<&'static str>),
    /// `fi_getinfo` does not offer it.
    NotOffered,
    /// The probe's operation (or `fi_getinfo`) failed.
    Failed(String),
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (text, test) = match self {
            Cell::Passed(test) => ("passed".to_string(), test),
            Cell::Offered(test) => ("offered".to_string(), test),
            Cell::Unsupported(why, test) => (format!("unsupported: {why}"), test),
            Cell::NotOffered => return f.write_str("not offered"),
            // One table cell: no column separators, no line breaks.
            Cell::Failed(why) => return write!(f, "failed: {}", why.replace('|', "/").replace('\n', " ")),
        };
        match test {
            Some(test) => write!(f, "{text} ({test})"),
            None => f.write_str(&text),
        }
    }
}

/// Decides one cell: offered or not, and for the cheap features whether the
/// operation works.
fn cell(case: &Case, feature: &Feature) -> Cell {
    let info = match case.info(feature.caps, feature.attribute) {
        Ok(Some(info)) => info,
        Ok(None) => return Cell::NotOffered,
        Err(e) => return Cell::Failed(e.to_string()),
    };
    let test = feature.test_for(case);
    let Some(exercise) = feature.exercise else { return Cell::Offered(test) };
    match catch_unwind(AssertUnwindSafe(|| exercise(&info))) {
        Ok(Ok(())) => Cell::Passed(test),
        Ok(Err(Problem::Unsupported(why))) => Cell::Unsupported(why, test),
        Ok(Err(Problem::Failed(why))) => Cell::Failed(why),
        Err(panic) => Cell::Failed(format!("panicked: {}", panic_text(panic.as_ref()))),
    }
}

/// Opens a link for `info` (with `counted`, a counter counts A's sends) and
/// runs `body` on it. After a failure the link is leaked, not closed: an
/// endpoint left in a bad state may never finish closing (closing a
/// udp;ofi_rxd endpoint whose fetch atomic had gone wrong never returned),
/// and a hung probe reports nothing.
fn with_link(info: &Info, counted: bool, body: impl FnOnce(&Link) -> Result<(), Problem>) -> Result<(), Problem> {
    let link = Link::open(info, counted)?;
    let outcome = body(&link);
    if matches!(outcome, Err(Problem::Failed(_))) {
        std::mem::forget(link);
    }
    outcome
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

// ---------------------------------------------------------------------------
// Two endpoints of one domain.
// ---------------------------------------------------------------------------

/// The completion queue, endpoint and counter types of the probe.
type Cq = CompletionQueue<TaggedEntry, Unsync>;
type Ep = Endpoint<TaggedEntry, Unsync>;
type Cntr = Counter<Unsync>;

/// Any error of the safe layer, as cell text.
fn text(e: impl fmt::Display) -> String {
    e.to_string()
}

/// One endpoint of a [`Link`] and the completions it read meanwhile.
struct Side {
    ep: Ep,
    cq: Cq,
    /// The other endpoint, as this one addresses it (`UNSPEC` when connected).
    peer: Address,
    read: RefCell<Vec<Read<TaggedEntry>>>,
    _av: Option<AddressVector<Unsync>>,
    _eq: Option<EventQueue>,
}

impl Side {
    fn new(ep: Ep, cq: Cq, peer: Address, av: Option<AddressVector<Unsync>>, eq: Option<EventQueue>) -> Side {
        Side { ep, cq, peer, read: RefCell::default(), _av: av, _eq: eq }
    }

    /// The completion of the operation posted with `token`, if it arrived.
    fn take(&self, token: u64) -> Option<Completion<TaggedEntry>> {
        let mut read = self.read.borrow_mut();
        let at = read.iter().position(|r| matches!(r, Read::Op(c) if c.token == token))?;
        match read.remove(at) {
            Read::Op(c) => Some(c),
            _ => None,
        }
    }

    /// The messages reported so far in the multi-receive buffer of `token`:
    /// (offset, length) each.
    fn messages(&self, token: u64) -> Vec<(usize, usize)> {
        let read = self.read.borrow();
        let of_token = |r: &Read<TaggedEntry>| match r {
            Read::Message { token: t, offset, entry } if *t == token => Some((*offset, entry.len())),
            _ => None,
        };
        read.iter().filter_map(of_token).collect()
    }
}

/// Which side of a link.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// The initiator.
    A,
    /// The target.
    B,
}

/// Two endpoints of one domain that reach each other: addressed through
/// address vectors (RDM, DGRAM) or connected (MSG).
struct Link {
    a: Side,
    b: Side,
    /// Counts A's sends, when asked for.
    sends: Option<Cntr>,
    _pep: Option<PassiveEndpoint>,
    _domain: Domain<Unsync>,
    _fabric: Fabric,
}

impl Link {
    /// Opens the link; with `counted`, A's sends are counted by a counter.
    fn open(info: &Info, counted: bool) -> Result<Link, Problem> {
        let fabric = Fabric::open(info).map_err(text)?;
        let domain: Domain<Unsync> = Domain::open(&fabric, info).map_err(text)?;
        let sends = if counted { Some(Counter::open(&domain, WaitObj::UNSPEC).map_err(Problem::of)?) } else { None };
        let counters: Vec<(&Cntr, BindFlags)> = sends.iter().map(|c| (c, BindFlags::SEND)).collect();
        let (a, b, pep) = if info.ep_type() == EpType::MSG {
            let (a, b, pep) = connected(&fabric, &domain, info, &counters)?;
            (a, b, Some(pep))
        } else {
            let (a, b) = addressed(&domain, info, &counters)?;
            (a, b, None)
        };
        Ok(Link { a, b, sends, _pep: pep, _domain: domain, _fabric: fabric })
    }

    fn side(&self, who: Who) -> &Side {
        match who {
            Who::A => &self.a,
            Who::B => &self.b,
        }
    }

    /// Reads one completion of each side (which drives their progress);
    /// true when one arrived. An error completion ends the probe's check.
    fn drive(&self) -> Result<bool, String> {
        let mut arrived = false;
        for side in [&self.a, &self.b] {
            match side.cq.poll().map_err(text)? {
                Read::Empty => {}
                Read::Failed { error, .. } => return Err(error.to_string()),
                read => {
                    side.read.borrow_mut().push(read);
                    arrived = true;
                }
            }
        }
        Ok(arrived)
    }

    /// Drives both sides until `done` holds; `what` names it on timeout.
    fn until(&self, what: &str, mut done: impl FnMut() -> Result<bool, String>) -> Result<(), String> {
        let start = Instant::now();
        while !done()? {
            if start.elapsed() > DEADLINE {
                return Err(format!("{what}: not within {} s", DEADLINE.as_secs()));
            }
            if !self.drive()? {
                std::thread::yield_now();
            }
        }
        Ok(())
    }

    /// Waits for the completion of the operation `who` posted with `token`.
    fn completion(&self, who: Who, token: u64, call: &str) -> Result<Completion<TaggedEntry>, String> {
        let mut found = None;
        self.until(&format!("the completion of {call}"), || {
            found = self.side(who).take(token);
            Ok(found.is_some())
        })?;
        found.ok_or_else(|| format!("the completion of {call} went missing"))
    }

    /// Posts `buf` with `post`, retrying while the provider says `FI_EAGAIN`
    /// (driving progress in between).
    fn post(&self, buf: Buf, mut post: impl FnMut(Buf) -> Result<OpId, PostError>) -> Result<(), String> {
        let mut buf = Some(buf);
        self.until("a post the provider kept refusing with FI_EAGAIN", || {
            let Some(b) = buf.take() else { return Ok(true) };
            match post(b) {
                Ok(_) => Ok(true),
                Err(e) if e.is_again() => {
                    buf = Some(e.buf);
                    Ok(false)
                }
                Err(e) => Err(e.error.to_string()),
            }
        })
    }
}

/// Two endpoints with a completion queue and an address vector each, each
/// holding the other's address; `counters` are bound to A.
fn addressed(domain: &Domain<Unsync>, info: &Info, counters: &[(&Cntr, BindFlags)]) -> Result<(Side, Side), String> {
    let open = |counters: &[(&Cntr, BindFlags)]| -> libfabric::Result<(Ep, Cq, AddressVector<Unsync>)> {
        let cq = CompletionQueue::open(domain, &PROBE_CQ)?;
        let av = AddressVector::open(domain, AvType::UNSPEC)?;
        let ep = Endpoint::open_with_counters(
            domain,
            info,
            Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None },
            counters,
        )?;
        Ok((ep, cq, av))
    };
    let (ep_a, cq_a, av_a) = open(counters).map_err(text)?;
    let (ep_b, cq_b, av_b) = open(&[]).map_err(text)?;
    let peer_a = av_a.insert_one(&ep_b.name().map_err(text)?).map_err(text)?;
    let peer_b = av_b.insert_one(&ep_a.name().map_err(text)?).map_err(text)?;
    Ok((Side::new(ep_a, cq_a, peer_a, Some(av_a), None), Side::new(ep_b, cq_b, peer_b, Some(av_b), None)))
}

/// A connection: side A connects to a passive endpoint, side B is the
/// endpoint accepting it; each has its own event queue; `counters` are
/// bound to A.
fn connected(
    fabric: &Fabric,
    domain: &Domain<Unsync>,
    info: &Info,
    counters: &[(&Cntr, BindFlags)],
) -> Result<(Side, Side, PassiveEndpoint), String> {
    let (client_eq, server_eq) = (EventQueue::open(fabric).map_err(text)?, EventQueue::open(fabric).map_err(text)?);
    let pep = PassiveEndpoint::listen(fabric, info, &server_eq).map_err(text)?;
    let cq_a: Cq = CompletionQueue::open(domain, &PROBE_CQ).map_err(text)?;
    let bindings = Bindings { cq: &cq_a, av: None, eq: Some(&client_eq), tx_cq: None };
    let client = Endpoint::open_with_counters(domain, info, bindings, counters).map_err(text)?;
    client.connect(Some(&pep.name().map_err(text)?), &[]).map_err(text)?;

    let mut events = [Vec::new(), Vec::new()];
    let eqs = [&client_eq, &server_eq];
    let requested = |e: &Event| matches!(e, Event::ConnectionRequest { .. });
    read_events(eqs, &mut events, "FI_CONNREQ", |e| e[1].iter().any(requested))?;
    let at = events[1].iter().position(requested);
    let Some(Event::ConnectionRequest { info: request, .. }) = at.map(|i| events[1].remove(i)) else {
        return Err("the connection request went missing".into());
    };
    let cq_b: Cq = CompletionQueue::open(domain, &PROBE_CQ).map_err(text)?;
    let server = Endpoint::open(domain, &request, Bindings { cq: &cq_b, av: None, eq: Some(&server_eq), tx_cq: None })
        .map_err(text)?;
    server.accept(&[]).map_err(text)?;
    let up = |e: &Vec<Event>| e.iter().any(|e| matches!(e, Event::Connected { .. }));
    read_events(eqs, &mut events, "FI_CONNECTED", |e| up(&e[0]) && up(&e[1]))?;
    let a = Side::new(client, cq_a, Address::UNSPEC, None, Some(client_eq));
    let b = Side::new(server, cq_b, Address::UNSPEC, None, Some(server_eq));
    Ok((a, b, pep))
}

/// Reads both event queues into `events` until `done` holds (bounded).
fn read_events(
    eqs: [&EventQueue; 2],
    events: &mut [Vec<Event>; 2],
    what: &str,
    done: impl Fn(&[Vec<Event>; 2]) -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    while !done(events) {
        if start.elapsed() > DEADLINE {
            return Err(format!("no {what} within {} s", DEADLINE.as_secs()));
        }
        let mut arrived = false;
        for (eq, got) in eqs.iter().zip(events.iter_mut()) {
            if let Some(event) = eq.read().map_err(text)? {
                got.push(event);
                arrived = true;
            }
        }
        if !arrived {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The exercises.
// ---------------------------------------------------------------------------

/// Tokens of the probe's operations.
const SEND: u64 = 1;
const RECV: u64 = 2;
const WRITE: u64 = 3;
const READ: u64 = 4;
const ATOMIC: u64 = 5;

/// A deterministic payload for message `seq` of `len` bytes.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (seq.wrapping_mul(131).wrapping_add(i * 7) % 251) as u8).collect()
}

/// Fails unless `got` is `want`.
fn same(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: other bytes arrived ({} for {} sent)", got.len(), want.len()))
    }
}

/// A tag or CQ data word as the error text shows it.
fn hex(value: Option<u64>) -> String {
    value.map_or_else(|| "none".into(), |v| format!("{v:#x}"))
}

/// How a message of [`one_message`] is sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Tagged,
    WithData,
}

const TAG: u64 = 0x7a6;
/// Remote CQ data that fits the smallest `cq_data_size` (4 bytes) libfabric allows.
const CQ_DATA: u64 = 0x5eed_c0de;

/// One plain message.
fn messaging(info: &Info) -> Result<(), Problem> {
    with_link(info, false, |link| Ok(one_message(link, Kind::Plain)?))
}

/// One tagged message.
fn tagged(info: &Info) -> Result<(), Problem> {
    with_link(info, false, |link| Ok(one_message(link, Kind::Tagged)?))
}

/// One message with remote CQ data.
fn cq_data(info: &Info) -> Result<(), Problem> {
    with_link(info, false, |link| Ok(one_message(link, Kind::WithData)?))
}

/// One message from A to a receive B posted first, checked byte for byte,
/// with its tag or remote CQ data.
fn one_message(link: &Link, kind: Kind) -> Result<(), String> {
    let (a, b) = (&link.a, &link.b);
    let data = payload(1, 100);
    link.post(Buf::zeroed(128), |buf| match kind {
        Kind::Tagged => b.ep.trecv(buf, Address::UNSPEC, TAG, 0, RECV),
        _ => b.ep.recv(buf, Address::UNSPEC, RECV),
    })?;
    link.post(Buf::from(data.clone()), |buf| match kind {
        Kind::Plain => a.ep.send(buf, a.peer, SEND),
        Kind::Tagged => a.ep.tsend(buf, a.peer, TAG, SEND),
        Kind::WithData => a.ep.send_data(buf, CQ_DATA, a.peer, SEND),
    })?;
    link.completion(Who::A, SEND, "the send")?;
    let got = link.completion(Who::B, RECV, "the receive")?;
    same("the receive", &got.buf, &data)?;
    let (tag, cq_data) = (got.entry.tag(), got.entry.data());
    match kind {
        Kind::Tagged if tag != Some(TAG) => Err(format!("the receive reports tag {}, not {TAG:#x}", hex(tag))),
        Kind::WithData if cq_data != Some(CQ_DATA) => {
            Err(format!("the receive reports CQ data {}, not {CQ_DATA:#x}", hex(cq_data)))
        }
        _ => Ok(()),
    }
}

/// Two 40-byte messages into one 256-byte multi-receive buffer that is
/// released once less than 200 bytes are free, i.e. after the second.
fn multi_receive(info: &Info) -> Result<(), Problem> {
    with_link(info, false, |link| {
        const SIZE: usize = 256;
        const MIN_FREE: usize = 200;
        const LEN: usize = 40;
        let (a, b) = (&link.a, &link.b);
        b.ep.set_option(EpOption::MIN_MULTI_RECV, MIN_FREE).map_err(text)?;
        link.post(Buf::zeroed(SIZE), |buf| b.ep.recv_multi(buf, Address::UNSPEC, RECV))?;
        for seq in 0..2 {
            link.post(Buf::from(payload(seq, LEN)), |buf| a.ep.send(buf, a.peer, SEND + 10 * seq))?;
            link.completion(Who::A, SEND + 10 * seq, "a send")?;
        }
        let released = link.completion(Who::B, RECV, "the multi-receive buffer")?;
        if !released.entry.flags().contains(CompletionFlags::MULTI_RECV) {
            return Err(format!("the buffer came back without FI_MULTI_RECV: {:?}", released.entry.flags()).into());
        }
        let mut messages = b.messages(RECV);
        if released.entry.len() > 0 {
            messages.push((released.offset, released.entry.len()));
        }
        messages.sort_unstable();
        if messages.len() != 2 {
            return Err(format!("{} messages reported in the buffer, not 2", messages.len()).into());
        }
        for (seq, (offset, len)) in messages.into_iter().enumerate() {
            let got = released.buf.get(offset..offset + len).ok_or("a message outside the buffer".to_string())?;
            same("a message in the buffer", got, &payload(seq as u64, LEN))?;
        }
        Ok(())
    })
}

/// `fi_write` into B's exposed memory until the bytes show there, then
/// `fi_read` of them back.
fn rma(info: &Info) -> Result<(), Problem> {
    with_link(info, false, |link| {
        const OFFSET: usize = 32;
        let (a, b) = (&link.a, &link.b);
        let window = b.ep.expose(Buf::zeroed(256), MrAccess::REMOTE_READ | MrAccess::REMOTE_WRITE).map_err(text)?;
        let remote = window.remote();
        let data = payload(7, 64);
        link.post(Buf::from(data.clone()), |buf| a.ep.write(buf, a.peer, &remote, OFFSET as u64, WRITE))?;
        link.completion(Who::A, WRITE, "fi_write")?;
        link.until("the written bytes at the target", || {
            let mut seen = vec![0u8; data.len()];
            window.read_at(OFFSET, &mut seen).map_err(text)?;
            Ok(seen == data)
        })?;
        link.post(Buf::zeroed(data.len()), |buf| a.ep.read(buf, a.peer, &remote, OFFSET as u64, READ))?;
        let back = link.completion(Who::A, READ, "fi_read")?;
        Ok(same("fi_read", &back.buf, &data)?)
    })
}

/// `fi_fetch_atomic` `FI_SUM` of 3 onto a `u64` 6 that A put into B's
/// exposed memory with `fi_write`: 6 comes back, 9 shows at the target.
fn atomics(info: &Info) -> Result<(), Problem> {
    with_link(info, false, |link| {
        let a = &link.a;
        let valid = a.ep.fetch_atomic_valid::<u64>(AtomicOp::SUM).map_err(Problem::of)?;
        if valid == 0 {
            return Err(Problem::Unsupported("fi_fetch_atomicvalid: count 0".into()));
        }
        let exposed = link.b.ep.expose(Buf::zeroed(8), MrAccess::REMOTE_READ | MrAccess::REMOTE_WRITE).map_err(text)?;
        let (window, remote) = (&exposed, exposed.remote());
        let value = |want: u64| {
            move || {
                let mut seen = [0u8; 8];
                window.read_at(0, &mut seen).map_err(text)?;
                Ok(u64::from_ne_bytes(seen) == want)
            }
        };
        link.post(Buf::from(6u64.to_ne_bytes().to_vec()), |buf| a.ep.write(buf, a.peer, &remote, 0, WRITE))?;
        link.completion(Who::A, WRITE, "fi_write")?;
        link.until("the written value at the target", value(6))?;
        link.post(AtomicBuf::fetch(&[3u64]), |buf| {
            a.ep.fetch_atomic::<u64>(AtomicOp::SUM, buf, a.peer, &remote, 0, ATOMIC)
        })?;
        let done = link.completion(Who::A, ATOMIC, "fi_fetch_atomic")?;
        let previous = AtomicBuf::results::<u64>(&done.buf, 1);
        if previous != [6] {
            return Err(format!("fi_fetch_atomic returned {previous:?}, not [6]").into());
        }
        Ok(link.until("the sum at the target", value(9))?)
    })
}

/// One message from A, whose sends a counter counts: the counter shows 1.
fn counters(info: &Info) -> Result<(), Problem> {
    with_link(info, true, |link| {
        let sends = link.sends.as_ref().ok_or("the link was opened without a counter".to_string())?;
        one_message(link, Kind::Plain)?;
        Ok(link.until("the send counter at 1", || Ok(sends.read() == 1))?)
    })
}

// ---------------------------------------------------------------------------
// The table.
// ---------------------------------------------------------------------------

/// Writes the provenance line, the table and its legend.
fn write_table(out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "Probed with libfabric {} (the library loaded at run time; this binding's API is {}).\n",
        runtime_version(),
        api_version()
    )?;
    let titles: Vec<&str> = FEATURES.iter().map(|f| f.title).collect();
    writeln!(out, "| provider/type | {} |", titles.join(" | "))?;
    writeln!(out, "|---|{}", "---|".repeat(FEATURES.len()))?;
    for case in CASES {
        let cells: Vec<String> = FEATURES.iter().map(|f| cell(case, f).to_string()).collect();
        writeln!(out, "| {} | {} |", case.name(), cells.join(" | "))?;
        out.flush()?;
    }
    write_legend(out)
}

/// What the columns and cells mean.
fn write_legend(out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "\nColumns: what `fi_getinfo` is asked for (with `FI_MSG`), and what the probe does.\n")?;
    for f in FEATURES {
        writeln!(out, "- **{}**: {}.", f.title, f.rule)?;
    }
    writeln!(
        out,
        "\nCells:\n\n\
         - `passed`: offered, and the probe's operation worked between two endpoints of one domain in one \
         process (connected through a passive endpoint for MSG).\n\
         - `offered`: `fi_getinfo` offers it on 127.0.0.1 (shm: no node); the probe does not exercise it.\n\
         - `unsupported: …`: offered, but the provider refuses the probe's operation when asked \
         (`FI_ENOSYS` or `FI_EOPNOTSUPP`).\n\
         - `not offered`: `fi_getinfo` returns no info of this provider and endpoint type with it.\n\
         - `failed: …`: the probe's operation failed; `cargo xtask matrix` then exits non-zero.\n\
         - `(file.rs)`: the test in `tests/tests` that checks the feature on this case. `multi_recv.rs` and \
         `operations.rs` run in one process, the others between two. Without one, nothing in the suite \
         checks it there."
    )
}

fn main() -> ExitCode {
    let stdout = io::stdout();
    match write_table(&mut stdout.lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capabilities: writing the table: {e}");
            ExitCode::FAILURE
        }
    }
}
