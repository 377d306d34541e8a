//! The fabric side of a ping-pong: objects opened as `fi_pingpong` opens
//! them, and the data path (post, complete, repost) it times.
//!
//! The data path uses only the safe layer: buffers move into operations and
//! come back with their completions, registered once (when the provider asks
//! for `FI_MR_LOCAL`) and reused, so a round trip allocates nothing.

use std::time::{Duration, Instant};

use libfabric::{
    getinfo, Address, AddressVector, AvType, Bindings, Buf, Caps, CompletionQueue, CqConfig, Domain, EpType, Error,
    Event, EventQueue, Fabric, FixedBuf, FixedRead, Hints, Info, MrMode, MsgEntry, OpFlags, PassiveEndpoint, Read,
    Target, Unsync, WaitObj,
};
use libfabric_sys::flags::Mode;

use super::options::{Options, Sizes};
use super::Failure;

/// The tag of every tagged message (the C tool's).
pub const TAG: u64 = 1234;
/// The token of the closing "fin" send.
const FIN: u64 = u64::MAX;
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
    /// Receive completions; transmit completions have a queue of their own,
    /// as in C, so a wait for one never reads past the other.
    rx_cq: Cq,
    tx_cq: Cq,
    _av: Option<AddressVector<Unsync>>,
    pub eq: Option<EventQueue>,
    _domain: Domain<Unsync>,
    _fabric: Fabric,
    info: Info,
    /// The peer: an address vector handle, or UNSPEC when connected.
    peer: Address,
    tagged: bool,
    /// The send buffer: registered once, never moved.
    tx: FixedBuf<Unsync>,
    /// The receive buffers, posted in turn; receives complete in the order
    /// they were posted, so `rx[next_rx]` is the next to arrive.
    rx: Vec<FixedBuf<Unsync>>,
    next_rx: usize,
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
    #[inline(always)]
    fn idle(&mut self, rx: &[FixedBuf<Unsync>]) -> Result<(), Failure> {
        self.empty_polls = self.empty_polls.wrapping_add(1);
        if self.empty_polls % 4096 != 0 {
            return Ok(());
        }
        self.check_clock(rx)
    }

    #[cold]
    #[inline(never)]
    fn check_clock(&mut self, rx: &[FixedBuf<Unsync>]) -> Result<(), Failure> {
        if self.since.get_or_insert_with(Instant::now).elapsed() > COMPLETION_TIMEOUT {
            let posted = rx.iter().filter(|b| b.is_posted()).count();
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
        let queue =
            |size| CompletionQueue::open(&domain, &CqConfig { size, wait_obj: WaitObj::NONE, ..CqConfig::default() });
        let (tx_cq, rx_cq) = (queue(tx)?, queue(rx)?);
        let av = match info.ep_type() {
            EpType::MSG => None,
            _ => Some(AddressVector::open(&domain, info.domain_attr().map_or(AvType::UNSPEC, |d| d.av_type()))?),
        };
        let ep = libfabric::Endpoint::open(
            &domain,
            &info,
            Bindings { cq: &rx_cq, av: av.as_ref(), eq: eq.as_ref(), tx_cq: Some(&tx_cq) },
        )?;
        let prefix = info.ep_attr().map_or(0, |e| e.msg_prefix_size());
        let has_prefix = |mode: Option<Mode>| mode.is_some_and(|m| m.contains(Mode::MSG_PREFIX));
        let tx_prefix = if has_prefix(info.tx_attr().map(|a| a.mode())) { prefix } else { 0 };
        let rx_prefix = if has_prefix(info.rx_attr().map(|a| a.mode())) { prefix } else { 0 };
        let max_transfer = match o.sizes {
            Sizes::One(n) => n,
            _ => MAX_TRANSFER,
        }
        .min(info.max_msg_size());
        // One receive is always posted ahead; DGRAM keeps a second one, as
        // the C tool does, so a datagram never finds none.
        let depth = if info.ep_type() == EpType::DGRAM { 2 } else { 1 };
        let rx = (0..depth)
            .map(|_| Ok(ep.fix(page_buffer(max_transfer.max(MIN_RECV) + rx_prefix)?)?))
            .collect::<Result<Vec<_>, Failure>>()?;
        let mut session = Session {
            tagged: info.caps().contains(Caps::TAGGED),
            inject_size: info.inject_size(),
            tx: ep.fix(page_buffer(max_transfer.max(MIN_RECV) + tx_prefix)?)?,
            rx,
            next_rx: 0,
            ep,
            rx_cq,
            tx_cq,
            _av: av,
            eq,
            _domain: domain,
            _fabric: fabric,
            info,
            peer: Address::UNSPEC,
            tx_prefix,
            rx_prefix,
            max_transfer,
        };
        for i in 0..depth {
            session.post_recv(i)?;
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

    /// Sends `size` bytes (after the provider's prefix), filled by `fill`
    /// when there is one (as in C, the bytes stay as they are otherwise).
    ///
    /// Each step is tried once inline; a full queue (cold) and the wait for
    /// a completion go to functions of their own, so the round trip the loop
    /// makes again and again carries no retry state.
    #[inline(always)]
    pub fn send(&mut self, size: usize, fill: Option<impl FnOnce(&mut [u8])>) -> Result<(), Failure> {
        let buf = self.tx.get_mut().ok_or_else(|| Failure::new("the send buffer is still in flight"))?;
        let len = size + self.tx_prefix;
        // The length changes with the size, not with each round trip.
        if buf.len() != len {
            resize(buf, len)?;
        }
        if let Some(fill) = fill {
            fill(&mut buf[self.tx_prefix..]);
        }
        if size < self.inject_size {
            return match inject(&self.ep, self.tagged, buf, self.peer) {
                Err(e) if e.is_again() => self.inject_again(),
                done => Ok(done?),
            };
        }
        match self.post_send() {
            Err(e) if e.is_again() => self.send_again(),
            done => {
                done?;
                self.wait_sent()
            }
        }
    }

    /// `fi_inject` until the queue takes it.
    #[cold]
    #[inline(never)]
    fn inject_again(&self) -> Result<(), Failure> {
        let buf = self.tx.get().ok_or_else(|| Failure::new("the send buffer is still in flight"))?;
        let mut wait = Wait::default();
        loop {
            progress(&self.tx_cq, &mut wait, &self.rx)?;
            match inject(&self.ep, self.tagged, buf, self.peer) {
                Err(e) if e.is_again() => continue,
                done => return Ok(done?),
            }
        }
    }

    /// Posts the send buffer (`fi_send` or `fi_tsend`), for sizes that do
    /// not go inline.
    #[inline(always)]
    fn post_send(&mut self) -> Result<(), Error> {
        if self.tagged {
            self.ep.tsend_fixed(&mut self.tx, self.peer, TAG, 0)
        } else {
            self.ep.send_fixed(&mut self.tx, self.peer, 0)
        }
    }

    /// `fi_send` until the queue takes it, then waits for its completion.
    #[cold]
    #[inline(never)]
    fn send_again(&mut self) -> Result<(), Failure> {
        let mut wait = Wait::default();
        loop {
            progress(&self.tx_cq, &mut wait, &self.rx)?;
            match self.post_send() {
                Err(e) if e.is_again() => continue,
                done => break done?,
            }
        }
        self.wait_sent()
    }

    /// Waits for the send buffer's completion. Not cold: a send this large
    /// always waits.
    #[inline(never)]
    fn wait_sent(&self) -> Result<(), Failure> {
        let mut wait = Wait::default();
        while self.tx.is_posted() {
            progress(&self.tx_cq, &mut wait, &self.rx)?;
        }
        Ok(())
    }

    /// Receives the next message and hands its bytes (after the prefix) to
    /// `check` when there is one, then posts the buffer again.
    #[inline(always)]
    pub fn recv<T>(&mut self, check: Option<impl FnOnce(&[u8]) -> T>) -> Result<Option<T>, Failure> {
        let next = self.next_rx;
        // Read the queue first: nothing else reads it, so the answer cannot
        // have been seen before.
        read_one(&self.rx_cq)?;
        // The buffer is readable once its receive has completed; its
        // payload is sliced only to be checked.
        let buf = match self.rx[next].get() {
            Some(buf) => buf,
            None => self.wait_rx(next)?,
        };
        let out = check.map(|check| check(buf.get(self.rx_prefix..).unwrap_or_default()));
        self.post_recv(next)?;
        self.next_rx = if next + 1 == self.rx.len() { 0 } else { next + 1 };
        Ok(out)
    }

    /// The closing exchange: "fin" with `FI_TRANSMIT_COMPLETE`, then the
    /// peer's "fin"; true when the peer's arrived intact.
    pub fn finish(&mut self) -> Result<bool, Failure> {
        let mut fin = Buf::zeroed(4 + self.tx_prefix);
        fin[..4].copy_from_slice(b"fin\0");
        let flags = OpFlags::TRANSMIT_COMPLETE;
        let mut wait = Wait::default();
        loop {
            let posted = if self.tagged {
                self.ep.tsend_with(fin, self.peer, TAG, 0, flags, FIN)
            } else {
                self.ep.send_with(fin, self.peer, 0, flags, FIN)
            };
            match posted {
                Ok(_) => break,
                Err(e) if e.is_again() => {
                    fin = e.buf;
                    progress(&self.tx_cq, &mut wait, &self.rx)?;
                }
                Err(e) => return Err(e.error.into()),
            }
        }
        loop {
            match self.tx_cq.poll()? {
                Read::Op(done) if done.token == FIN => break,
                Read::Empty => wait.idle(&self.rx)?,
                other => unexpected(other)?,
            }
        }
        Ok(self.wait_rx(self.next_rx)?.starts_with(b"fin\0"))
    }

    /// Posts receive buffer `i`.
    #[inline(always)]
    fn post_recv(&mut self, i: usize) -> Result<(), Failure> {
        match self.try_post_recv(i) {
            // The queue is full, or a connection is still being set up.
            Err(e) if e.is_again() => self.post_recv_again(i),
            done => Ok(done?),
        }
    }

    /// Posts receive buffer `i` once (`fi_recv` or `fi_trecv`).
    #[inline(always)]
    fn try_post_recv(&mut self, i: usize) -> Result<(), Error> {
        let rx = &mut self.rx[i];
        if self.tagged {
            self.ep.trecv_fixed(rx, Address::UNSPEC, TAG, 0, i as u64)
        } else {
            self.ep.recv_fixed(rx, Address::UNSPEC, i as u64)
        }
    }

    /// `fi_recv` until the queue takes it.
    #[cold]
    #[inline(never)]
    fn post_recv_again(&mut self, i: usize) -> Result<(), Failure> {
        let mut wait = Wait::default();
        loop {
            progress(&self.rx_cq, &mut wait, &self.rx)?;
            match self.try_post_recv(i) {
                Err(e) if e.is_again() => continue,
                done => return Ok(done?),
            }
        }
    }

    /// Receive buffer `i` once its message is in. Not cold: natively the
    /// answer is seldom in at the first read.
    #[inline(never)]
    fn wait_rx(&self, i: usize) -> Result<&Buf, Failure> {
        let mut wait = Wait::default();
        loop {
            if let Some(buf) = self.rx[i].get() {
                return Ok(buf);
            }
            progress(&self.rx_cq, &mut wait, &self.rx)?;
        }
    }
}

/// A zeroed buffer of `len` bytes as C's `fi_pingpong` makes its own: at
/// the start of a page, so that a page-sized message spans one page, not two
/// (4 KiB on shm: 1.83 µs a round trip from the heap, 1.70 from a page, as
/// C's), and with every page written once, as C's `memset` leaves them. An
/// untouched large allocation maps the kernel's one shared zero page until
/// written, and a send from it reads the same cached page over and over
/// (1 MiB on shm: 40 µs a round trip against C's 77; written, 75).
fn page_buffer(len: usize) -> Result<Buf, Failure> {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut buf = Buf::aligned_zeroed(len, page)?;
    for page in buf.chunks_mut(page) {
        // SAFETY: `page` is a live, exclusive slice of at least one byte.
        // Volatile: a zero written over zeroes is otherwise optimised away.
        unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 0) };
    }
    Ok(buf)
}

/// Sets the send buffer's length for a new size: once per size, so out of
/// the round trip's way.
#[cold]
fn resize(buf: &mut Buf, len: usize) -> Result<(), Failure> {
    Ok(buf.resize(len)?)
}

/// Sends `buf` inline (`fi_inject` or `fi_tinject`).
#[inline(always)]
fn inject(ep: &Ep, tagged: bool, buf: &Buf, peer: Address) -> Result<(), Error> {
    if tagged {
        ep.tinject(buf, peer, TAG)
    } else {
        ep.inject(buf, peer)
    }
}

/// Reads one completion, if there is one; false when the queue was empty.
/// A fixed buffer's completion only has to happen: it hands the buffer back
/// by itself.
#[inline(always)]
fn read_one(cq: &Cq) -> Result<bool, Failure> {
    match cq.poll_fixed()? {
        FixedRead::Fixed { .. } => Ok(true),
        FixedRead::Empty => Ok(false),
        FixedRead::Other(read) => unexpected(*read).map(|()| true),
    }
}

/// [`read_one`] in a wait: an empty queue counts towards its timeout.
#[inline(always)]
fn progress(cq: &Cq, wait: &mut Wait, rx: &[FixedBuf<Unsync>]) -> Result<(), Failure> {
    if read_one(cq)? {
        return Ok(());
    }
    wait.idle(rx)
}

/// A completion the data path does not expect: an error, or an operation
/// it did not post.
#[cold]
fn unexpected(read: Read<MsgEntry>) -> Result<(), Failure> {
    match read {
        Read::Fixed { .. } | Read::Empty => Ok(()),
        Read::Failed { error, .. } | Read::FixedFailed { error, .. } => Err(error.into()),
        other => Err(Failure::new(format!("fi_cq_read: a completion of no operation posted here: {other:?}"))),
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

// Cold, as the other conversions to `Failure`: a call to one marks its
// branch unlikely, so the compiler lays the round trip's path out straight
// and puts the error paths aside (a branch it cannot rank may go either way,
// and the loop's code then spreads over twice the cache lines it needs).
impl From<libfabric::PostError> for Failure {
    #[cold]
    fn from(e: libfabric::PostError) -> Failure {
        e.error.into()
    }
}

impl From<Error> for Failure {
    #[cold]
    fn from(e: Error) -> Failure {
        Failure::new(e.to_string())
    }
}
