//! The fabric side of a ping-pong: objects opened as `fi_pingpong` opens
//! them, and the data path (post, complete, repost) it times.
//!
//! The data path uses only the safe layer: buffers move into operations and
//! come back with their completions, registered once (when the provider asks
//! for `FI_MR_LOCAL`) and reused, so a round trip allocates nothing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use libfabric::{
    getinfo, Address, AddressVector, AvType, Bindings, Buf, Caps, CompletionQueue, CqConfig, Domain, EpType, Error,
    Event, EventQueue, Fabric, Hints, Info, MrMode, MsgEntry, OpFlags, OpKind, PassiveEndpoint, Read, Target, Unsync,
    WaitObj,
};
use libfabric_sys::flags::Mode;

use super::options::{Options, Sizes};
use super::Failure;

/// The tag of every tagged message (the C tool's).
pub const TAG: u64 = 1234;
/// The smallest receive buffer, for control messages such as "fin".
const MIN_RECV: usize = 64;
/// The largest transfer: 6 MiB, as in C, or less if the endpoint says so.
const MAX_TRANSFER: usize = (1 << 22) + (1 << 21);
/// How long a wait for a completion may take before the run fails (the C
/// tool waits forever; a lost datagram should not hang a test).
pub const COMPLETION_TIMEOUT: Duration = Duration::from_secs(20);

pub type Ep = libfabric::Endpoint<MsgEntry, Unsync>;
type Cq = CompletionQueue<MsgEntry, Unsync>;

/// The hints `fi_pingpong` asks with.
pub fn hints(o: &Options) -> Result<Hints, Failure> {
    let mut hints = Hints::new()?
        .ep_type(o.ep_type)
        .caps(if o.tagged { Caps::TAGGED } else { Caps::MSG })
        .mode(Mode::CONTEXT | Mode::CONTEXT2 | Mode::MSG_PREFIX)
        .mr_mode(MrMode::LOCAL | MrMode::ALLOCATED | MrMode::PROV_KEY | MrMode::VIRT_ADDR);
    if let Some(p) = &o.provider {
        hints = hints.provider(p)?;
    }
    if let Some(d) = &o.domain {
        hints = hints.domain_name(d)?;
    }
    if let (EpType::DGRAM, Sizes::One(size)) = (o.ep_type, o.sizes) {
        hints.attrs_mut().ep.set_max_msg_size(size);
    }
    Ok(hints)
}

/// The first info libfabric offers for `hints`.
pub fn first_info(hints: &Hints) -> Result<Info, Failure> {
    getinfo(&Target::default(), hints)?
        .into_iter()
        .next()
        .ok_or_else(|| Failure::new("fi_getinfo: no provider matches the options (-FI_ENODATA)"))
}

/// An open endpoint with its queue, buffers and peer.
pub struct Session {
    // Fields drop in order: the endpoint (cancelling what is in flight)
    // before the objects it uses.
    pub ep: Ep,
    cq: Cq,
    _av: Option<AddressVector<Unsync>>,
    pub eq: Option<EventQueue>,
    _domain: Domain<Unsync>,
    _fabric: Fabric,
    info: Info,
    /// The peer: an address vector handle, or UNSPEC when connected.
    peer: Address,
    tagged: bool,
    /// The send buffer, when no operation holds it.
    tx: Option<Buf>,
    /// Receive buffers whose message has arrived and not been handled yet,
    /// oldest first.
    arrived: VecDeque<Buf>,
    /// Receives posted and not yet arrived.
    posted: usize,
    tx_prefix: usize,
    rx_prefix: usize,
    /// The largest transfer of this endpoint.
    pub max_transfer: usize,
    /// Messages below this size go by `fi_inject`.
    inject_size: usize,
}

/// How long a wait has gone on. The clock is read only after many empty
/// polls, so a quick completion costs no clock reads at all.
#[derive(Default)]
struct Wait {
    empty_polls: u32,
    since: Option<Instant>,
}

impl Wait {
    /// Counts an empty poll; fails once the wait exceeds [`COMPLETION_TIMEOUT`].
    fn idle(&mut self, posted: usize) -> Result<(), Failure> {
        self.empty_polls = self.empty_polls.wrapping_add(1);
        if self.empty_polls % 4096 != 0 {
            return Ok(());
        }
        if self.since.get_or_insert_with(Instant::now).elapsed() > COMPLETION_TIMEOUT {
            return Err(Failure::new(format!(
                "no completion within {}s ({posted} receive(s) posted)",
                COMPLETION_TIMEOUT.as_secs()
            )));
        }
        Ok(())
    }
}

impl Session {
    /// Opens fabric, domain, queues and endpoint for `info`; `fabric` and
    /// `eq` when a passive endpoint already opened them.
    pub fn open(info: Info, o: &Options, opened: Option<(Fabric, EventQueue)>) -> Result<Session, Failure> {
        let (fabric, eq) = match opened {
            Some((f, e)) => (f, Some(e)),
            None => {
                let f = Fabric::open(&info)?;
                let e = if info.ep_type() == EpType::MSG { Some(EventQueue::open(&f)?) } else { None };
                (f, e)
            }
        };
        let domain: Domain<Unsync> = Domain::open(&fabric, &info)?;
        let tx = info.tx_attr().map_or(0, |a| a.size());
        let rx = info.rx_attr().map_or(0, |a| a.size());
        let cq = CompletionQueue::open(&domain, &CqConfig { size: tx + rx, wait_obj: WaitObj::NONE })?;
        let av = match info.ep_type() {
            EpType::MSG => None,
            _ => Some(AddressVector::open(&domain, info.domain_attr().map_or(AvType::UNSPEC, |d| d.av_type()))?),
        };
        let ep = libfabric::Endpoint::open(&domain, &info, Bindings { cq: &cq, av: av.as_ref(), eq: eq.as_ref() })?;
        let prefix = info.ep_attr().map_or(0, |e| e.msg_prefix_size());
        let has_prefix = |mode: Option<Mode>| mode.is_some_and(|m| m.contains(Mode::MSG_PREFIX));
        let tx_prefix = if has_prefix(info.tx_attr().map(|a| a.mode())) { prefix } else { 0 };
        let rx_prefix = if has_prefix(info.rx_attr().map(|a| a.mode())) { prefix } else { 0 };
        let max_transfer = match o.sizes {
            Sizes::One(n) => n,
            _ => MAX_TRANSFER,
        }
        .min(info.max_msg_size());
        let mut session = Session {
            tagged: info.caps().contains(Caps::TAGGED),
            inject_size: info.inject_size(),
            ep,
            cq,
            _av: av,
            eq,
            _domain: domain,
            _fabric: fabric,
            info,
            peer: Address::UNSPEC,
            tx: Some(Buf::zeroed(max_transfer.max(MIN_RECV) + tx_prefix)),
            arrived: VecDeque::with_capacity(2),
            posted: 0,
            tx_prefix,
            rx_prefix,
            max_transfer,
        };
        // One receive is always posted ahead; DGRAM keeps a second one, as
        // the C tool does, so a datagram never finds none.
        let depth = if session.info.ep_type() == EpType::DGRAM { 2 } else { 1 };
        for _ in 0..depth {
            session.post_recv(Buf::zeroed(max_transfer.max(MIN_RECV) + rx_prefix))?;
        }
        Ok(session)
    }

    /// The info the endpoint was opened with.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// Adds the peer's address to the address vector.
    pub fn set_peer(&mut self, name: &[u8]) -> Result<(), Failure> {
        let av = self._av.as_ref().ok_or_else(|| Failure::new("no address vector on a connected endpoint"))?;
        self.peer = av.insert_one(name)?;
        Ok(())
    }

    /// Sends `size` bytes (after the provider's prefix), filled by `fill`.
    pub fn send(&mut self, size: usize, fill: impl FnOnce(&mut [u8])) -> Result<(), Failure> {
        let mut buf = self.take_tx()?;
        let len = size + self.tx_prefix;
        buf.resize(len)?;
        fill(&mut buf[self.tx_prefix..]);
        if size < self.inject_size {
            let sent = self.inject(&buf);
            self.tx = Some(buf);
            return sent;
        }
        self.post_send(buf, OpFlags::empty())?;
        self.wait_tx()
    }

    /// Receives the next message and hands its bytes (after the prefix) to
    /// `check`, then posts the buffer again.
    pub fn recv<T>(&mut self, check: impl FnOnce(&[u8]) -> T) -> Result<T, Failure> {
        let buf = self.wait_rx()?;
        let out = check(buf.get(self.rx_prefix..).unwrap_or_default());
        self.post_recv(buf)?;
        Ok(out)
    }

    /// The closing exchange: "fin" with `FI_TRANSMIT_COMPLETE`, then the
    /// peer's "fin"; true when the peer's arrived intact.
    pub fn finish(&mut self) -> Result<bool, Failure> {
        let mut buf = self.take_tx()?;
        buf.resize(4 + self.tx_prefix)?;
        buf[..4].copy_from_slice(b"fin\0");
        self.post_send(buf, OpFlags::TRANSMIT_COMPLETE)?;
        self.wait_tx()?;
        let buf = self.wait_rx()?;
        Ok(buf.starts_with(b"fin\0"))
    }

    fn take_tx(&mut self) -> Result<Buf, Failure> {
        self.tx.take().ok_or_else(|| Failure::new("the send buffer is still in flight"))
    }

    fn inject(&mut self, data: &[u8]) -> Result<(), Failure> {
        let mut wait = Wait::default();
        loop {
            let sent =
                if self.tagged { self.ep.tinject(data, self.peer, TAG) } else { self.ep.inject(data, self.peer) };
            match sent {
                Err(e) if e.is_again() => self.progress(&mut wait)?,
                other => return Ok(other?),
            }
        }
    }

    fn post_send(&mut self, mut buf: Buf, flags: OpFlags) -> Result<(), Failure> {
        let mut wait = Wait::default();
        loop {
            let posted = if self.tagged {
                self.ep.tsend_with(buf, self.peer, TAG, 0, flags, 0)
            } else if flags.is_empty() {
                self.ep.send(buf, self.peer, 0)
            } else {
                self.ep.send_with(buf, self.peer, 0, flags, 0)
            };
            match posted {
                Ok(_) => return Ok(()),
                Err(e) if e.is_again() => {
                    buf = e.buf;
                    self.progress(&mut wait)?;
                }
                Err(e) => return Err(e.error.into()),
            }
        }
    }

    fn post_recv(&mut self, mut buf: Buf) -> Result<(), Failure> {
        let mut wait = Wait::default();
        loop {
            let posted = if self.tagged {
                self.ep.trecv(buf, Address::UNSPEC, TAG, 0, 0)
            } else {
                self.ep.recv(buf, Address::UNSPEC, 0)
            };
            match posted {
                Ok(_) => {
                    self.posted += 1;
                    return Ok(());
                }
                Err(e) if e.is_again() => {
                    buf = e.buf;
                    self.progress(&mut wait)?;
                }
                Err(e) => return Err(e.error.into()),
            }
        }
    }

    fn wait_tx(&mut self) -> Result<(), Failure> {
        let mut wait = Wait::default();
        while self.tx.is_none() {
            self.progress(&mut wait)?;
        }
        Ok(())
    }

    fn wait_rx(&mut self) -> Result<Buf, Failure> {
        let mut wait = Wait::default();
        loop {
            // The oldest first: receives complete in the order posted.
            if let Some(buf) = self.arrived.pop_front() {
                return Ok(buf);
            }
            self.progress(&mut wait)?;
        }
    }

    /// Reads one completion, if there is one, and puts its buffer back where
    /// it belongs.
    fn progress(&mut self, wait: &mut Wait) -> Result<(), Failure> {
        match self.cq.poll()? {
            Read::Op(done) => match done.kind {
                OpKind::Recv | OpKind::TaggedRecv => {
                    self.posted -= 1;
                    self.arrived.push_back(done.buf);
                }
                _ => self.tx = Some(done.buf),
            },
            Read::Failed { error, .. } => return Err(error.into()),
            Read::Empty => wait.idle(self.posted)?,
            other => {
                return Err(Failure::new(format!("fi_cq_read: a completion of no operation posted here: {other:?}")))
            }
        }
        Ok(())
    }
}

/// Server side of a MSG endpoint: the passive endpoint clients connect to.
pub struct Listener {
    pub pep: PassiveEndpoint,
    pub fabric: Fabric,
    pub eq: EventQueue,
    pub info: Info,
}

impl Listener {
    pub fn open(hints: &Hints) -> Result<Listener, Failure> {
        let info = first_info(hints)?;
        let fabric = Fabric::open(&info)?;
        let eq = EventQueue::open(&fabric)?;
        let pep = PassiveEndpoint::listen(&fabric, &info, &eq)?;
        Ok(Listener { pep, fabric, eq, info })
    }

    /// Waits for the connection request, accepts it, waits until connected.
    pub fn accept(self, o: &Options) -> Result<Session, Failure> {
        let request = match self.eq.read_timeout(COMPLETION_TIMEOUT)? {
            Some(Event::ConnectionRequest { info, .. }) => info,
            other => return Err(Failure::new(format!("fi_eq_sread: expected a connection request, got {other:?}"))),
        };
        let session = Session::open(request, o, Some((self.fabric, self.eq.clone())))?;
        session.ep.accept(&[])?;
        wait_connected(&self.eq)?;
        // The passive endpoint may close now: the connection is up.
        drop(self.pep);
        Ok(session)
    }
}

/// Waits for `FI_CONNECTED`.
pub fn wait_connected(eq: &EventQueue) -> Result<(), Failure> {
    match eq.read_timeout(COMPLETION_TIMEOUT)? {
        Some(Event::Connected { .. }) => Ok(()),
        other => Err(Failure::new(format!("fi_eq_sread: expected FI_CONNECTED, got {other:?}"))),
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::new(e.to_string())
    }
}
