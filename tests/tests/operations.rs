//! Focused tests of each operation family and error path of the safe layer,
//! in one process: two RDM endpoints on one domain of 127.0.0.1, each with its
//! own completion queue and address vector, talking to each other.
//!
//! Every test runs the same body over the providers offering the feature
//! (`tcp;ofi_rxm`, `udp;ofi_rxd`, `sockets`, `shm`). A provider absent from
//! `fi_getinfo` is skipped with a message; any error or timeout fails. Each
//! provider's failure is collected, so one failing provider does not hide the
//! others' results.

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use libfabric::sys::enums::Errno;
use libfabric::sys::{fi_context2, fi_msg, fi_msg_tagged, iovec, FI_ADDR_UNSPEC, FI_KEY_NOTAVAIL};
use libfabric::{
    getinfo, strerror, Address, AddressVector, AvInsertFlags, AvType, Bindings, Buf, Caps, Completion, CompletionFlags,
    CompletionQueue, ContextEntry, CqConfig, DataEntry, Domain, Endpoint, Entry, EpOption, EpType, EqEvent, Error,
    Event, EventQueue, Fabric, FixedRead, Info, MemoryRegion, MrAccess, MrMode, MsgEntry, OpFlags, OpId, OpKind,
    PostError, Read, TaggedEntry, Target, ThreadModel, ThreadSafe, Threading, Unsync, WaitObj,
};
use libfabric_tests::{payload, Case};

/// How long any wait may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// The RDM providers the tests run over.
const RDM: &[&str] = &["tcp;ofi_rxm", "udp;ofi_rxd", "sockets", "shm"];

// ---------------------------------------------------------------------------
// The harness: a pair of endpoints, bounded waits, retried posts.
// ---------------------------------------------------------------------------

/// One endpoint with its completion queue and address vector, and the
/// completions read while waiting for the other side.
struct Side<M: ThreadModel> {
    ep: Endpoint<TaggedEntry, M>,
    cq: CompletionQueue<TaggedEntry, M>,
    av: AddressVector<M>,
    /// The other endpoint, as this side addresses it.
    peer: Address,
    pending: RefCell<VecDeque<Read<TaggedEntry>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    A,
    B,
}

/// Two endpoints of one provider on one domain.
struct Pair<M: ThreadModel = Unsync> {
    provider: &'static str,
    info: Info,
    a: Side<M>,
    b: Side<M>,
    domain: Domain<M>,
    _fabric: Fabric,
}

fn case(provider: &'static str) -> Case {
    Case { provider, ep_type: EpType::RDM }
}

/// The info for an RDM endpoint of `provider` on 127.0.0.1 with `caps`.
fn info_for(provider: &'static str, caps: Caps) -> Info {
    case(provider).local_info(caps)
}

impl<M: ThreadModel> Pair<M> {
    fn open(provider: &'static str, caps: Caps) -> Pair<M> {
        Pair::open_with(info_for(provider, caps), &CqConfig::default())
    }

    fn open_with(info: Info, config: &CqConfig) -> Pair<M> {
        let provider = RDM.iter().copied().find(|p| *p == info.provider()).expect("one of the RDM providers");
        let fabric = Fabric::open(&info).unwrap_or_else(|e| panic!("{provider}: {e}"));
        let domain: Domain<M> = Domain::open(&fabric, &info).unwrap_or_else(|e| panic!("{provider}: {e}"));
        let side = || {
            let cq = CompletionQueue::open(&domain, config).unwrap_or_else(|e| panic!("{provider}: {e}"));
            let av = AddressVector::open(&domain, AvType::UNSPEC).unwrap_or_else(|e| panic!("{provider}: {e}"));
            let ep = Endpoint::open(&domain, &info, Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None })
                .unwrap_or_else(|e| panic!("{provider}: {e}"));
            Side { ep, cq, av, peer: Address::UNSPEC, pending: RefCell::default() }
        };
        let (mut a, mut b) = (side(), side());
        let (name_a, name_b) = (a.ep.name().expect("fi_getname"), b.ep.name().expect("fi_getname"));
        assert_ne!(name_a, name_b, "{provider}: two endpoints share an address");
        a.peer = a.av.insert_one(&name_b).unwrap_or_else(|e| panic!("{provider}: {e}"));
        b.peer = b.av.insert_one(&name_a).unwrap_or_else(|e| panic!("{provider}: {e}"));
        Pair { provider, info, a, b, domain, _fabric: fabric }
    }

    fn side(&self, who: Who) -> &Side<M> {
        match who {
            Who::A => &self.a,
            Who::B => &self.b,
        }
    }

    /// Reads one completion of `who`, if any, into its pending queue (which
    /// also drives the provider's progress); true when one was read.
    fn pull(&self, who: Who) -> bool {
        let side = self.side(who);
        match side.cq.poll() {
            Ok(Read::Empty) => false,
            Ok(read) => {
                side.pending.borrow_mut().push_back(read);
                true
            }
            Err(e) => panic!("{}: reading the CQ of {who:?}: {e}", self.provider),
        }
    }

    /// Drives both endpoints once.
    fn progress(&self) {
        self.pull(Who::A);
        self.pull(Who::B);
    }

    /// The next completion of `who` (any kind, failures included), driving
    /// both sides; fails after the deadline.
    fn next(&self, who: Who) -> Read<TaggedEntry> {
        let start = Instant::now();
        loop {
            if let Some(read) = self.side(who).pending.borrow_mut().pop_front() {
                return read;
            }
            if !self.pull(who) {
                self.pull(if who == Who::A { Who::B } else { Who::A });
            }
            assert!(start.elapsed() < DEADLINE, "{}: no completion on {who:?} within {DEADLINE:?}", self.provider);
        }
    }

    /// The next completion of `who`, which must be a successful operation
    /// posted through the safe API.
    fn op(&self, who: Who) -> Completion<TaggedEntry> {
        match self.next(who) {
            Read::Op(c) => c,
            other => panic!("{}: expected a successful operation on {who:?}, got {other:?}", self.provider),
        }
    }

    /// `n` successful operations of `who`, in token order.
    fn ops(&self, who: Who, n: usize) -> Vec<Completion<TaggedEntry>> {
        let mut got: Vec<_> = (0..n).map(|_| self.op(who)).collect();
        got.sort_by_key(|c| c.token);
        got
    }

    /// Drives both sides for `time` and asserts `who` completed nothing.
    fn quiet(&self, who: Who, time: Duration) {
        let start = Instant::now();
        while start.elapsed() < time {
            self.progress();
            std::thread::sleep(Duration::from_millis(1));
        }
        let pending = self.side(who).pending.borrow();
        assert!(pending.is_empty(), "{}: unexpected completions on {who:?}: {pending:?}", self.provider);
    }

    /// Posts with `post` (given the buffer back after each `FI_EAGAIN`),
    /// driving progress in between; bounded.
    fn post(&self, what: &str, buf: Buf, mut post: impl FnMut(Buf) -> Result<OpId, PostError>) -> OpId {
        let start = Instant::now();
        let mut buf = Some(buf);
        loop {
            match post(buf.take().expect("the buffer is back after a failed post")) {
                Ok(id) => return id,
                Err(e) if e.is_again() && start.elapsed() < DEADLINE => {
                    buf = Some(e.buf);
                    self.progress();
                }
                Err(e) => panic!("{}: {what}: {}", self.provider, e.error),
            }
        }
    }

    /// Retries a call while it says `FI_EAGAIN`, driving progress; bounded.
    fn retry<T>(&self, what: &str, mut call: impl FnMut() -> Result<T, Error>) -> T {
        let start = Instant::now();
        loop {
            match call() {
                Ok(v) => return v,
                Err(e) if e.is_again() && start.elapsed() < DEADLINE => self.progress(),
                Err(e) => panic!("{}: {what}: {e}", self.provider),
            }
        }
    }

    /// Sends `data` from A to B with `token`.
    fn send_ab(&self, data: Vec<u8>, token: u64) -> OpId {
        self.post("fi_send", Buf::from(data), |b| self.a.ep.send(b, self.a.peer, token))
    }

    /// One plain message A → B on fresh buffers, checked: the endpoints still work.
    fn round_trip(&self, seq: u64) {
        self.b.ep.recv(Buf::zeroed(64), Address::UNSPEC, 900 + seq).expect("fi_recv");
        self.send_ab(payload(seq, 40), 950 + seq);
        let rx = self.op(Who::B);
        assert_eq!((rx.kind, rx.token), (OpKind::Recv, 900 + seq), "{}", self.provider);
        assert_eq!(rx.buf[..], payload(seq, 40)[..], "{}: payload after the round trip", self.provider);
        let tx = self.op(Who::A);
        assert_eq!((tx.kind, tx.token), (OpKind::Send, 950 + seq), "{}", self.provider);
    }

    /// Asserts completion flags are `expected`, allowing only the extra bits a
    /// provider is known to add: sockets sets `FI_MSG` on tagged completions too
    /// and `FI_REMOTE_CQ_DATA` on the sender's completion of a send with data.
    fn assert_flags(&self, got: CompletionFlags, expected: CompletionFlags) {
        let p = self.provider;
        let tolerated = if p == "sockets" {
            CompletionFlags::MSG | CompletionFlags::REMOTE_CQ_DATA
        } else {
            CompletionFlags::empty()
        };
        assert!(got.contains(expected), "{p}: flags {got:?}, expected {expected:?}");
        assert!(tolerated.contains(got - expected), "{p}: flags {got:?}, expected {expected:?}");
    }

    /// Asserts nothing is left in flight on either side.
    fn assert_idle(&self) {
        assert_eq!(self.a.ep.in_flight(), 0, "{}: operations of A left in flight", self.provider);
        assert_eq!(self.b.ep.in_flight(), 0, "{}: operations of B left in flight", self.provider);
    }
}

/// Runs `body` for each provider of `providers` that `fi_getinfo` offers;
/// fails (after trying them all) if any provider failed.
fn each_provider(test: &str, providers: &[&'static str], mut body: impl FnMut(&'static str)) {
    let mut failed = Vec::new();
    for &provider in providers {
        if !case(provider).provider_offered() {
            eprintln!("{test}: skipped {provider}: fi_getinfo does not offer it on this machine");
            continue;
        }
        eprintln!("{test}: {provider}");
        if catch_unwind(AssertUnwindSafe(|| body(provider))).is_err() {
            failed.push(provider);
        }
    }
    assert!(failed.is_empty(), "{test} failed for {failed:?}");
}

/// The variable naming the provider a child process runs an isolated test for.
const CHILD: &str = "LIBFABRIC_OPERATIONS_CHILD";

/// Runs `body` for each provider in a child process of its own (this test
/// binary again, running only `test`), so that a provider crashing the
/// process fails that provider's case instead of killing every test. Each
/// child must exit successfully within the deadline.
fn isolated(test: &str, providers: &[&'static str], body: impl Fn(&'static str)) {
    if let Ok(provider) = std::env::var(CHILD) {
        let provider = providers.iter().copied().find(|p| *p == provider).expect("a provider of this test");
        body(provider);
        return;
    }
    each_provider(test, providers, |p| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = std::process::Command::new(exe)
            // The test may be #[ignore]d (a known bug): run it all the same.
            .args(["--exact", test, "--include-ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD, p)
            // A crashing provider may leave a backtrace file in the working
            // directory (psm's handler writes `<exe>.<host>-<pid>,vm.btr`).
            .current_dir(std::env::temp_dir())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn the child process");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the child") {
                break status;
            }
            // The child's own waits are bounded by DEADLINE; this only catches
            // a child stuck inside a libfabric call.
            if start.elapsed() > 2 * DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{p}: the child process did not finish within {:?}", 2 * DEADLINE);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        use std::os::unix::process::ExitStatusExt;
        assert!(status.success(), "{p}: the child process failed: {status} (signal {:?})", status.signal());
    });
}

/// The completion error inside a `Read::Failed`, with the operation returned.
fn failed(provider: &str, read: Read<TaggedEntry>) -> (Error, Option<(OpKind, u64, Buf)>) {
    match read {
        Read::Failed { error, op } => (error, op),
        other => panic!("{provider}: expected a failed completion, got {other:?}"),
    }
}

/// A caller-owned operation context: `FI_CONTEXT`/`FI_CONTEXT2` mode lets the
/// provider use it, so it must stay allocated until the operation completes.
fn context() -> Box<fi_context2> {
    Box::default()
}

fn ctx_ptr(ctx: &mut fi_context2) -> *mut libc::c_void {
    (ctx as *mut fi_context2).cast()
}

// ---------------------------------------------------------------------------
// 1. Messages with owned buffers.
// ---------------------------------------------------------------------------

#[test]
fn send_recv_return_the_same_buffers_with_exact_completions() {
    each_provider("send_recv", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);

        // A plain message: the receive comes back cut to the received length,
        // in the very allocation that was posted.
        let rx = Buf::zeroed(64);
        let rx_ptr = rx.as_ptr();
        pair.b.ep.recv(rx, Address::UNSPEC, 11).expect("fi_recv");
        assert_eq!(pair.b.ep.in_flight(), 1);
        let tx = Buf::from(payload(1, 23));
        let tx_ptr = tx.as_ptr();
        pair.post("fi_send", tx, |b| pair.a.ep.send(b, pair.a.peer, 12));

        let r = pair.op(Who::B);
        eprintln!("{p}: receive flags {:?}", r.entry.flags());
        assert_eq!((r.kind, r.token), (OpKind::Recv, 11), "{p}");
        assert_eq!(r.buf.as_ptr(), rx_ptr, "{p}: the receive buffer is the one posted");
        assert_eq!(r.buf.capacity(), 64, "{p}: the capacity is kept");
        assert_eq!(r.buf.len(), 23, "{p}: cut to the received length");
        assert_eq!(r.buf[..], payload(1, 23)[..], "{p}: payload");
        assert_eq!(r.entry.len(), 23, "{p}: entry length");
        assert_eq!(r.entry.context(), r.entry.0.op_context, "{p}");
        // Every provider here sets exactly the documented bits.
        assert_eq!(r.entry.flags(), CompletionFlags::RECV | CompletionFlags::MSG, "{p}: receive flags");
        assert_eq!(r.entry.data(), None, "{p}: no remote CQ data was sent");
        assert_eq!(r.entry.tag(), None, "{p}: not a tagged message");

        let s = pair.op(Who::A);
        eprintln!("{p}: send flags {:?}", s.entry.flags());
        assert_eq!((s.kind, s.token), (OpKind::Send, 12), "{p}");
        assert_eq!(s.buf.as_ptr(), tx_ptr, "{p}: the send buffer is the one posted");
        assert_eq!(s.buf[..], payload(1, 23)[..], "{p}: the send buffer is unchanged");
        assert_eq!(s.entry.flags(), CompletionFlags::SEND | CompletionFlags::MSG, "{p}: send flags");
        pair.assert_idle();

        // Remote CQ data (fi_senddata): the receive carries it and says so.
        pair.b.ep.recv(Buf::zeroed(64), Address::UNSPEC, 21).expect("fi_recv");
        pair.post("fi_senddata", Buf::from(payload(2, 7)), |b| {
            pair.a.ep.send_data(b, 0xdead_beef_0042, pair.a.peer, 22)
        });
        let r = pair.op(Who::B);
        assert_eq!((r.kind, r.token, &r.buf[..]), (OpKind::Recv, 21, &payload(2, 7)[..]), "{p}");
        assert_eq!(r.entry.data(), Some(0xdead_beef_0042), "{p}: remote CQ data");
        assert_eq!(
            r.entry.flags(),
            CompletionFlags::RECV | CompletionFlags::MSG | CompletionFlags::REMOTE_CQ_DATA,
            "{p}: receive flags with remote CQ data"
        );
        let s = pair.op(Who::A);
        assert_eq!((s.kind, s.token), (OpKind::Send, 22), "{p}");
        pair.assert_flags(s.entry.flags(), CompletionFlags::SEND | CompletionFlags::MSG);

        // inject and inject_data: delivered, and no completion on the sender.
        pair.b.ep.recv(Buf::zeroed(64), Address::UNSPEC, 31).expect("fi_recv");
        pair.b.ep.recv(Buf::zeroed(64), Address::UNSPEC, 32).expect("fi_recv");
        let small = payload(3, pair.info.inject_size().min(16));
        pair.retry("fi_inject", || pair.a.ep.inject(&small, pair.a.peer));
        pair.retry("fi_injectdata", || pair.a.ep.inject_data(&small, 77, pair.a.peer));
        let got = pair.ops(Who::B, 2);
        assert_eq!((got[0].token, &got[0].buf[..], got[0].entry.data()), (31, &small[..], None), "{p}: inject");
        assert_eq!((got[1].token, &got[1].buf[..], got[1].entry.data()), (32, &small[..], Some(77)), "{p}: injectdata");
        pair.quiet(Who::A, Duration::from_millis(200));
        pair.assert_idle();

        // More than the inject size is refused before reaching libfabric.
        let big = vec![0u8; pair.info.inject_size() + 1];
        let e = pair.a.ep.inject(&big, pair.a.peer).expect_err("inject past the inject size");
        assert!(matches!(e, Error::InvalidArgument { call: "fi_inject", .. }), "{p}: {e:?}");
    });
}

/// An endpoint bound to two queues (`Bindings::tx_cq`): its sends complete
/// on the transmit queue and its receives on the other, fixed buffers too,
/// and neither queue sees the other's; a driver refuses such an endpoint.
#[test]
fn transmit_completions_go_to_their_own_queue_when_bound_apart() {
    each_provider("split_queues", RDM, |p| {
        let info = info_for(p, Caps::MSG | Caps::TAGGED);
        let fabric = Fabric::open(&info).unwrap_or_else(|e| panic!("{p}: {e}"));
        let domain: Domain = Domain::open(&fabric, &info).unwrap_or_else(|e| panic!("{p}: {e}"));
        let queue = || -> CompletionQueue {
            CompletionQueue::open(&domain, &CqConfig::default()).unwrap_or_else(|e| panic!("{p}: {e}"))
        };
        // A's receives, A's sends, B's both.
        let queues = [queue(), queue(), queue()];
        let [a_rx, a_tx, b_cq] = &queues;
        let av = || AddressVector::open(&domain, AvType::UNSPEC).unwrap_or_else(|e| panic!("{p}: {e}"));
        let (a_av, b_av) = (av(), av());
        let a = Endpoint::open(&domain, &info, Bindings { cq: a_rx, av: Some(&a_av), eq: None, tx_cq: Some(a_tx) })
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        let b = Endpoint::open(&domain, &info, Bindings { cq: b_cq, av: Some(&b_av), eq: None, tx_cq: None })
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        let to_b = a_av.insert_one(&b.name().expect("fi_getname")).unwrap_or_else(|e| panic!("{p}: {e}"));
        let to_a = b_av.insert_one(&a.name().expect("fi_getname")).unwrap_or_else(|e| panic!("{p}: {e}"));

        // What each queue read; every read drives all three.
        let read: RefCell<[VecDeque<Read<TaggedEntry>>; 3]> = RefCell::default();
        let pull = || {
            for (cq, got) in queues.iter().zip(read.borrow_mut().iter_mut()) {
                match cq.poll().unwrap_or_else(|e| panic!("{p}: fi_cq_read: {e}")) {
                    Read::Empty => {}
                    other => got.push_back(other),
                }
            }
        };
        let next = |which: usize| {
            let start = Instant::now();
            loop {
                if let Some(got) = read.borrow_mut()[which].pop_front() {
                    return got;
                }
                pull();
                assert!(start.elapsed() < DEADLINE, "{p}: nothing on queue {which} within {DEADLINE:?}");
            }
        };
        let token = |read: Read<TaggedEntry>| match read {
            Read::Op(c) => (c.kind, c.token),
            Read::Fixed { kind, token, .. } => (kind, token),
            other => panic!("{p}: expected a completion, got {other:?}"),
        };
        // rxm connects on the first send: it takes progress to get through.
        let send = |ep: &Endpoint, to: Address, token: u64| {
            let start = Instant::now();
            let mut buf = Buf::from(payload(token, 32));
            loop {
                match ep.send(buf, to, token) {
                    Ok(_) => return,
                    Err(e) if e.is_again() && start.elapsed() < DEADLINE => {
                        buf = e.buf;
                        pull();
                    }
                    Err(e) => panic!("{p}: fi_send: {}", e.error),
                }
            }
        };

        b.recv(Buf::zeroed(64), Address::UNSPEC, 1).expect("fi_recv");
        send(&a, to_b, 2);
        assert_eq!(token(next(2)), (OpKind::Recv, 1), "{p}: B's receive");
        assert_eq!(token(next(1)), (OpKind::Send, 2), "{p}: A's send, on its transmit queue");

        a.recv(Buf::zeroed(64), Address::UNSPEC, 3).expect("fi_recv");
        send(&b, to_a, 4);
        assert_eq!(token(next(0)), (OpKind::Recv, 3), "{p}: A's receive, on its other queue");
        assert_eq!(token(next(2)), (OpKind::Send, 4), "{p}: B's send");

        // A fixed buffer's send completes on the transmit queue as well.
        b.recv(Buf::zeroed(64), Address::UNSPEC, 5).expect("fi_recv");
        let mut fixed = a.fix(Buf::from(payload(6, 32))).expect("a slot");
        let start = Instant::now();
        loop {
            match a.send_fixed(&mut fixed, to_b, 6) {
                Err(e) if e.is_again() && start.elapsed() < DEADLINE => pull(),
                done => break done.unwrap_or_else(|e| panic!("{p}: fi_send: {e}")),
            }
        }
        assert_eq!(token(next(2)), (OpKind::Recv, 5), "{p}: B's receive of the fixed buffer");
        assert_eq!(token(next(1)), (OpKind::Send, 6), "{p}: the fixed buffer's send");
        assert!(fixed.get().is_some(), "{p}: the fixed buffer is back");

        // Nothing crossed over, and nothing is left.
        std::thread::sleep(Duration::from_millis(50));
        pull();
        for (which, got) in read.borrow().iter().enumerate() {
            assert!(got.is_empty(), "{p}: queue {which} has more: {got:?}");
        }

        // A driver reads one queue: an endpoint that sends elsewhere is refused.
        let driver = libfabric::driver::Driver::new(queue(), libfabric::driver::DriverConfig::default());
        let ep = Endpoint::open(
            &domain,
            &info,
            Bindings { cq: driver.completion_queue(), av: Some(&a_av), eq: None, tx_cq: Some(a_tx) },
        )
        .unwrap_or_else(|e| panic!("{p}: {e}"));
        let refused = libfabric::driver::AsyncEndpoint::new(ep, driver).expect_err("two queues");
        assert!(matches!(refused, Error::InvalidArgument { call: "AsyncEndpoint::new", .. }), "{p}: {refused:?}");
    });
}

// ---------------------------------------------------------------------------
// 2. Tagged messages.
// ---------------------------------------------------------------------------

#[test]
fn tagged_receives_match_by_tag_and_ignore_mask() {
    each_provider("tagged", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        let tsend = |data: Vec<u8>, tag: u64, cq_data: Option<u64>, token: u64| {
            pair.post("fi_tsend", Buf::from(data), |b| match cq_data {
                Some(d) => pair.a.ep.tsend_data(b, d, pair.a.peer, tag, token),
                None => pair.a.ep.tsend(b, pair.a.peer, tag, token),
            })
        };

        // A family of tags: 0x5500..=0x55ff, whatever the low byte.
        pair.b.ep.trecv(Buf::zeroed(32), Address::UNSPEC, 0x5500, 0xff, 1).expect("fi_trecv");
        pair.b.ep.trecv(Buf::zeroed(32), Address::UNSPEC, 0x5500, 0xff, 2).expect("fi_trecv");
        tsend(payload(10, 9), 0x5501, None, 101);
        tsend(payload(11, 12), 0x55fe, Some(0xabcdef), 102);
        let got = pair.ops(Who::B, 2);
        for (c, (token, tag, seq, len, data)) in
            got.iter().zip([(1, 0x5501, 10, 9, None), (2, 0x55fe, 11, 12, Some(0xabcdef))])
        {
            assert_eq!((c.kind, c.token), (OpKind::TaggedRecv, token), "{p}");
            assert_eq!(c.entry.tag(), Some(tag), "{p}: the entry carries the message's tag, not the posted one");
            assert_eq!(c.entry.data(), data, "{p}: remote CQ data");
            assert_eq!(c.buf[..], payload(seq, len)[..], "{p}: payload");
            assert_eq!(c.entry.len(), len, "{p}: length");
            let mut flags = CompletionFlags::RECV | CompletionFlags::TAGGED;
            if data.is_some() {
                flags |= CompletionFlags::REMOTE_CQ_DATA;
            }
            pair.assert_flags(c.entry.flags(), flags);
        }
        for s in pair.ops(Who::A, 2) {
            assert_eq!(s.kind, OpKind::TaggedSend, "{p}");
            pair.assert_flags(s.entry.flags(), CompletionFlags::SEND | CompletionFlags::TAGGED);
        }

        // A receive for tag A does not take a message of tag B: B waits,
        // unexpected, for a receive of its own.
        const TAG_A: u64 = 0xa000_0000_0000_000a;
        const TAG_B: u64 = 0xb000_0000_0000_000b;
        pair.b.ep.trecv(Buf::zeroed(32), Address::UNSPEC, TAG_A, 0, 3).expect("fi_trecv");
        tsend(payload(12, 20), TAG_B, Some(0xbb), 103);
        let s = pair.op(Who::A);
        assert_eq!((s.kind, s.token), (OpKind::TaggedSend, 103), "{p}");
        pair.quiet(Who::B, Duration::from_millis(300));
        pair.b.ep.trecv(Buf::zeroed(32), Address::UNSPEC, TAG_B, 0, 4).expect("fi_trecv");
        let b = pair.op(Who::B);
        assert_eq!((b.kind, b.token, b.entry.tag()), (OpKind::TaggedRecv, 4, Some(TAG_B)), "{p}");
        if p == "sockets" {
            // sockets drops FI_REMOTE_CQ_DATA from the flags of a message that
            // arrived before its receive; the data field still holds the value.
            assert_eq!((b.entry.data(), b.entry.0.data), (None, 0xbb), "{p}: {b:?}");
        } else {
            assert_eq!(b.entry.data(), Some(0xbb), "{p}: remote CQ data of an unexpected message");
        }
        assert_eq!(b.buf[..], payload(12, 20)[..], "{p}: the message of tag B");
        tsend(payload(13, 5), TAG_A, None, 104);
        let a = pair.op(Who::B);
        assert_eq!((a.kind, a.token, a.entry.tag(), a.entry.data()), (OpKind::TaggedRecv, 3, Some(TAG_A), None));
        assert_eq!(a.buf[..], payload(13, 5)[..], "{p}: the message of tag A");
        assert_eq!(pair.op(Who::A).token, 104);

        // Tagged inject: the tag travels, no send completion.
        pair.b.ep.trecv(Buf::zeroed(32), Address::UNSPEC, 0x77, 0, 5).expect("fi_trecv");
        pair.retry("fi_tinjectdata", || pair.a.ep.tinject_data(b"tiny", 9, pair.a.peer, 0x77));
        let c = pair.op(Who::B);
        assert_eq!((c.token, &c.buf[..], c.entry.tag(), c.entry.data()), (5, &b"tiny"[..], Some(0x77), Some(9)));
        pair.quiet(Who::A, Duration::from_millis(100));
        pair.assert_idle();
    });
}

// ---------------------------------------------------------------------------
// 3. Truncation.
// ---------------------------------------------------------------------------

/// What a provider reports for a 100-byte message into a 16-byte receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truncation {
    /// An `FI_ETRUNC` error entry with these `err`, `len` and `olen` fields.
    Reported { errno: Errno, len: usize, olen: usize },
    /// No error: the receive completes with the bytes that fit.
    Silent,
}

/// What each provider of libfabric 1.17 does, observed and pinned here so a
/// change shows up. man 3 fi_cq wants `len` = bytes placed and `olen` = the
/// bytes that did not fit; only sockets lets the real length be derived.
fn truncation_report(provider: &str) -> Truncation {
    match provider {
        // `len` is the whole message's length (not the bytes placed), `olen`
        // the excess: the real length is `len`, and also 16 + `olen`.
        "sockets" => Truncation::Reported { errno: Errno::ETRUNC, len: 100, olen: 84 },
        // The error entry comes from the tcp provider underneath (prov_errno
        // EINPROGRESS) and carries neither length.
        "tcp;ofi_rxm" => Truncation::Reported { errno: Errno::ETRUNC, len: 0, olen: 0 },
        // shm writes the error negated (`err = -FI_ETRUNC`, against man 3
        // fi_cq), which the safe layer makes positive, and no lengths; see
        // `completion_errors_carry_positive_errnos_even_from_shm`.
        "shm" => Truncation::Reported { errno: Errno::ETRUNC, len: 0, olen: 0 },
        // rxd does not detect truncation.
        "udp;ofi_rxd" => Truncation::Silent,
        other => panic!("no truncation behaviour recorded for {other}"),
    }
}

#[test]
fn truncated_receive_fails_with_etrunc_and_returns_the_buffer() {
    each_provider("truncation", RDM, |p| {
        for tagged in [false, true] {
            let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
            let rx = Buf::zeroed(16);
            let rx_ptr = rx.as_ptr();
            let message = payload(20, 100);
            if tagged {
                pair.b.ep.trecv(rx, Address::UNSPEC, 0x42, 0, 7).expect("fi_trecv");
                pair.post("fi_tsend", Buf::from(message.clone()), |b| pair.a.ep.tsend(b, pair.a.peer, 0x42, 8));
            } else {
                pair.b.ep.recv(rx, Address::UNSPEC, 7).expect("fi_recv");
                pair.post("fi_send", Buf::from(message.clone()), |b| pair.a.ep.send(b, pair.a.peer, 8));
            }
            let kind = if tagged { OpKind::TaggedRecv } else { OpKind::Recv };
            let read = pair.next(Who::B);
            eprintln!("{p} (tagged: {tagged}): {read:?}");
            match truncation_report(p) {
                Truncation::Silent => {
                    let Read::Op(c) = read else { panic!("{p}: {read:?}") };
                    assert_eq!((c.kind, c.token, c.entry.len()), (kind, 7, 16), "{p}");
                    assert_eq!((c.buf.as_ptr(), &c.buf[..]), (rx_ptr, &message[..16]), "{p}: the bytes that fit");
                }
                Truncation::Reported { errno, len, olen } => {
                    let (error, op) = failed(p, read);
                    let Error::Completion { call, detail, .. } = &error else { panic!("{p}: {error:?}") };
                    assert_eq!(*call, "fi_cq_read", "{p}");
                    assert_eq!(error.errno(), errno, "{p}: {error}");
                    assert!(!error.is_again());
                    assert_eq!((detail.len, detail.overflow_len), (len, olen), "{p}: len and olen of {detail:?}");
                    if olen != 0 {
                        assert_eq!(16 + detail.overflow_len, message.len(), "{p}: the real length from olen");
                    }
                    let flags = CompletionFlags::from_bits_retain(detail.flags);
                    let kind_flag = if tagged { CompletionFlags::TAGGED } else { CompletionFlags::MSG };
                    assert!(flags.contains(CompletionFlags::RECV | kind_flag), "{p}: error entry flags {flags:?}");
                    let (k, token, buf) = op.unwrap_or_else(|| panic!("{p}: the truncated receive's buffer is lost"));
                    assert_eq!((k, token), (kind, 7), "{p}");
                    assert_eq!((buf.as_ptr(), buf.capacity()), (rx_ptr, 16), "{p}: the buffer posted comes back");
                    // What fit is in the buffer, except with rxm, which
                    // places nothing (consistent with its `len` of 0).
                    let placed = if p == "tcp;ofi_rxm" { vec![0; 16] } else { message[..16].to_vec() };
                    assert_eq!(buf[..], placed[..], "{p}: the truncated buffer");
                }
            }
            let s = pair.op(Who::A);
            assert_eq!((s.token, s.buf.len()), (8, 100), "{p}: the send itself succeeds");
            pair.assert_idle();
            if p == "tcp;ofi_rxm" {
                // rxm over tcp 1.17: after a truncation nothing more arrives
                // on that connection (the tcp provider leaves the rest of the
                // message in the stream); observed, a provider bug.
                continue;
            }
            pair.round_trip(1);
        }
    });
}

/// man 3 fi_cq: `err` is a positive fabric errno. shm 1.17 writes
/// `-FI_ETRUNC`; the safe layer normalises the sign, so `Error::errno()` is
/// `FI_ETRUNC` (it was `Errno(-265)`, which matches no `Errno` constant).
#[test]
fn completion_errors_carry_positive_errnos_even_from_shm() {
    each_provider("positive_errno", &["shm"], |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        pair.b.ep.recv(Buf::zeroed(16), Address::UNSPEC, 7).expect("fi_recv");
        pair.send_ab(payload(20, 100), 8);
        let (error, op) = failed(p, pair.next(Who::B));
        assert_eq!(error.errno(), Errno::ETRUNC, "{p}: {error}");
        assert!(error.to_string().contains("(FI_ETRUNC)"), "{p}: {error}");
        assert!(op.is_some());
        assert_eq!(pair.op(Who::A).token, 8);
    });
}

// ---------------------------------------------------------------------------
// 4. Cancel.
// ---------------------------------------------------------------------------

#[test]
fn cancelled_receive_fails_with_ecanceled_and_returns_the_buffer() {
    each_provider("cancel", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        for tagged in [false, true] {
            let rx = Buf::zeroed(32);
            let rx_ptr = rx.as_ptr();
            let id = if tagged {
                pair.b.ep.trecv(rx, Address::UNSPEC, 0x99, 0, 40).expect("fi_trecv")
            } else {
                pair.b.ep.recv(rx, Address::UNSPEC, 40).expect("fi_recv")
            };
            pair.b.ep.cancel(id).unwrap_or_else(|e| panic!("{p}: {e}"));
            let (error, op) = failed(p, pair.next(Who::B));
            eprintln!("{p}: {error}");
            assert_eq!(error.errno(), Errno::ECANCELED, "{p}: {error}");
            assert!(matches!(error, Error::Completion { call: "fi_cq_read", .. }), "{p}: {error:?}");
            let (kind, token, buf) =
                op.unwrap_or_else(|| panic!("{p}: the cancelled receive's buffer did not come back"));
            assert_eq!((kind, token), (if tagged { OpKind::TaggedRecv } else { OpKind::Recv }, 40), "{p}");
            assert_eq!((buf.as_ptr(), buf.capacity()), (rx_ptr, 32), "{p}: the buffer posted comes back");
            pair.assert_idle();
        }
        // The endpoint keeps working.
        pair.round_trip(2);
        pair.assert_idle();
    });
}

/// `OpId` names a slot and its generation, and slots are reused (LIFO):
/// cancelling an operation that already finished cancels nothing, returns
/// `Ok`, and leaves alone whichever operation took its slot (before
/// generations, it cancelled that one, with `FI_ECANCELED`, on every provider).
#[test]
fn cancel_of_a_finished_operation_leaves_later_operations_alone() {
    each_provider("cancel_finished", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        let old = pair.b.ep.recv(Buf::zeroed(64), Address::UNSPEC, 50).expect("fi_recv");
        pair.send_ab(payload(50, 10), 51);
        assert_eq!(pair.op(Who::B).token, 50);
        assert_eq!(pair.op(Who::A).token, 51);
        pair.assert_idle();
        // The finished operation's id, its slot free: nothing to cancel.
        pair.b.ep.cancel(old).unwrap_or_else(|e| panic!("{p}: cancelling a finished operation: {e}"));
        pair.quiet(Who::B, Duration::from_millis(50));

        // A new receive takes the slot back (the most recently freed one);
        // the stale id no longer designates it.
        let new = pair.b.ep.recv(Buf::zeroed(64), Address::UNSPEC, 52).expect("fi_recv");
        eprintln!("{p}: finished {old:?}, new {new:?}");
        assert_ne!(old, new, "{p}: the id of a finished operation names the next one");
        pair.b.ep.cancel(old).unwrap_or_else(|e| panic!("{p}: cancelling a finished operation: {e}"));
        assert_eq!(pair.b.ep.in_flight(), 1, "{p}: the new receive is still posted");
        pair.quiet(Who::B, Duration::from_millis(100));
        pair.send_ab(payload(53, 10), 53);
        match pair.next(Who::B) {
            Read::Op(c) => assert_eq!((c.token, &c.buf[..]), (52, &payload(53, 10)[..]), "{p}"),
            other => panic!("{p}: cancelling a finished operation cancelled the next one: {other:?}"),
        }
        assert_eq!(pair.op(Who::A).token, 53);
        pair.assert_idle();

        // Both ids are stale now; the live operation's id still cancels it.
        pair.b.ep.cancel(new).unwrap_or_else(|e| panic!("{p}: {e}"));
        let live = pair.b.ep.recv(Buf::zeroed(64), Address::UNSPEC, 54).expect("fi_recv");
        pair.b.ep.cancel(old).unwrap_or_else(|e| panic!("{p}: {e}"));
        pair.b.ep.cancel(new).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(pair.b.ep.in_flight(), 1, "{p}");
        pair.b.ep.cancel(live).unwrap_or_else(|e| panic!("{p}: {e}"));
        let (error, op) = failed(p, pair.next(Who::B));
        assert_eq!(error.errno(), Errno::ECANCELED, "{p}: {error}");
        assert_eq!(op.map(|(kind, token, _)| (kind, token)), Some((OpKind::Recv, 54)), "{p}");
        pair.assert_idle();
        // And once cancelled, its id is stale too.
        pair.b.ep.cancel(live).unwrap_or_else(|e| panic!("{p}: {e}"));
        pair.round_trip(5);
    });
}

/// An `OpId` names a slot and its generation, but not the endpoint: every
/// endpoint's first operation is slot 0, generation 0. Cancelling with the id
/// of another endpoint's operation must cancel nothing (or be refused); it
/// cancels this endpoint's own operation in the same slot instead.
#[test]
fn cancel_with_another_endpoints_id_cancels_nothing() {
    each_provider("cancel_foreign", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        let of_b = pair.b.ep.recv(Buf::zeroed(64), Address::UNSPEC, 1).expect("fi_recv");
        let of_a = pair.a.ep.recv(Buf::zeroed(64), Address::UNSPEC, 2).expect("fi_recv");
        eprintln!("{p}: A's {of_a:?}, B's {of_b:?}");
        match pair.b.ep.cancel(of_a) {
            Ok(()) => {}
            Err(e) => assert!(matches!(e, Error::InvalidArgument { call: "fi_cancel", .. }), "{p}: {e:?}"),
        }
        pair.quiet(Who::B, Duration::from_millis(200));
        assert_eq!(pair.b.ep.in_flight(), 1, "{p}: B's receive is still posted");
        pair.send_ab(payload(7, 10), 3);
        match pair.next(Who::B) {
            Read::Op(c) => assert_eq!((c.token, &c.buf[..]), (1, &payload(7, 10)[..]), "{p}"),
            other => panic!("{p}: cancelling with A's id hit B's receive: {other:?}"),
        }
        assert_eq!(pair.op(Who::A).token, 3, "{p}");
        // A's receive is still there for its own id.
        pair.a.ep.cancel(of_a).unwrap_or_else(|e| panic!("{p}: {e}"));
        let (error, op) = failed(p, pair.next(Who::A));
        assert_eq!((error.errno(), op.map(|(_, token, _)| token)), (Errno::ECANCELED, Some(2)), "{p}");
        pair.assert_idle();
    });
}

// ---------------------------------------------------------------------------
// 5. Addresses of other address vectors, and removed ones.
// ---------------------------------------------------------------------------

/// A post of a buffer, as a value.
type Post<'a> = dyn Fn(Buf) -> Result<OpId, PostError> + 'a;

/// Asserts a post was refused before reaching libfabric: `InvalidArgument`
/// naming `call`, with the buffer posted (`ptr`, `bytes`) back.
fn assert_refused_post(p: &str, call: &str, got: Result<OpId, PostError>, ptr: *const u8, bytes: &[u8]) {
    let e = match got {
        Ok(id) => panic!("{p}: {call} was not refused: {id:?}"),
        Err(e) => e,
    };
    assert!(matches!(&e.error, Error::InvalidArgument { call: c, .. } if *c == call), "{p}: {:?}", e.error);
    assert_eq!(e.error.errno(), Errno::EINVAL, "{p}: {call}");
    assert!(!e.is_again(), "{p}: {call}");
    assert_eq!((e.buf.as_ptr(), &e.buf[..]), (ptr, bytes), "{p}: {call}: the buffer posted comes back");
}

/// `Address` is opaque now: safe code gets one only from an address vector
/// (or a completion's source address), stamped with that vector's identity.
/// The test this replaces sent to `Address(12345)`, a handle no AV ever
/// issued, which segfaulted rxm, sockets and shm and made rxd return
/// `FI_EAGAIN` forever; such a handle can no longer be made without `unsafe`
/// (`Address::from_raw`, whose contract forbids it). What safe code can still
/// do is pass a real handle of *another* address vector, whose raw value
/// names nothing, or another peer, in this endpoint's vector: every call that
/// takes an address must refuse it before libfabric sees it, naming the call
/// and giving the buffer back. Child processes, as a regression would crash.
#[test]
fn addresses_of_another_address_vector_are_refused() {
    isolated("addresses_of_another_address_vector_are_refused", RDM, |p| {
        // Serial reads: so that the multi-receive post below is refused for
        // its address, not for its queue.
        let serial = CqConfig { serial_reads: true, ..CqConfig::default() };
        let pair: Pair = Pair::open_with(info_for(p, Caps::MSG | Caps::TAGGED), &serial);
        let (name_a, name_b) = (pair.a.ep.name().expect("fi_getname"), pair.b.ep.name().expect("fi_getname"));
        // A third vector on the same domain: B's name goes in second, at a
        // raw handle A's vector never issued.
        let other = AddressVector::open(&pair.domain, AvType::UNSPEC).expect("fi_av_open");
        let _a_there = other.insert_one(&name_a).unwrap_or_else(|e| panic!("{p}: {e}"));
        let b_there = other.insert_one(&name_b).unwrap_or_else(|e| panic!("{p}: {e}"));
        // And B's vector's handle of A, whose raw value is likely the very
        // value of A's handle of B.
        let foreign = [b_there, pair.b.peer];
        eprintln!("{p}: A's peer {:?}; foreign {foreign:?}", pair.a.peer);
        for dest in foreign {
            assert_ne!(dest, pair.a.peer, "{p}: handles of two vectors compare equal");
            let ep = &pair.a.ep;
            let posts: [(&str, &Post); 9] = [
                ("fi_send", &|b| ep.send(b, dest, 1)),
                ("fi_senddata", &|b| ep.send_data(b, 7, dest, 2)),
                ("fi_sendmsg", &|b| ep.send_with(b, dest, 0, OpFlags::empty(), 3)),
                ("fi_tsend", &|b| ep.tsend(b, dest, 0x10, 4)),
                ("fi_tsenddata", &|b| ep.tsend_data(b, 7, dest, 0x10, 5)),
                ("fi_tsendmsg", &|b| ep.tsend_with(b, dest, 0x10, 0, OpFlags::empty(), 6)),
                ("fi_recv", &|b| ep.recv(b, dest, 7)),
                ("fi_trecv", &|b| ep.trecv(b, dest, 0x10, 0, 8)),
                ("fi_recvmsg", &|b| ep.recv_multi(b, dest, 9)),
            ];
            for (call, post) in posts {
                let buf = Buf::from(payload(60, 30));
                let ptr = buf.as_ptr();
                assert_refused_post(p, call, post(buf), ptr, &payload(60, 30));
            }
            let small = payload(61, 8);
            let injects: [(&str, Result<(), Error>); 4] = [
                ("fi_inject", ep.inject(&small, dest)),
                ("fi_injectdata", ep.inject_data(&small, 7, dest)),
                ("fi_tinject", ep.tinject(&small, dest, 0x10)),
                ("fi_tinjectdata", ep.tinject_data(&small, 7, dest, 0x10)),
            ];
            for (call, got) in injects {
                let e = got.expect_err("an inject to an address of another address vector");
                assert!(matches!(&e, Error::InvalidArgument { call: c, .. } if *c == call), "{p}: {e:?}");
            }
            // Nor does A's vector look it up.
            let e = pair.a.av.lookup(dest).expect_err("a lookup of another vector's handle");
            assert!(matches!(e, Error::InvalidArgument { call: "fi_av_lookup", .. }), "{p}: {e:?}");
        }
        // `UNSPEC` is no handle of any vector: nothing to look up.
        let e = pair.a.av.lookup(Address::UNSPEC).expect_err("a lookup of FI_ADDR_UNSPEC");
        assert!(matches!(e, Error::InvalidArgument { call: "fi_av_lookup", .. }), "{p}: {e:?}");
        // The owner of each handle still resolves it.
        if p != "udp;ofi_rxd" {
            // (rxd 1.17 answers every lookup with FI_ENODATA.)
            assert_eq!(other.lookup(b_there).unwrap_or_else(|e| panic!("{p}: {e}")), name_b, "{p}");
            assert_eq!(pair.b.av.lookup(pair.b.peer).unwrap_or_else(|e| panic!("{p}: {e}")), name_a, "{p}");
        }

        // Nothing was posted, nothing arrived, and the endpoints still work.
        pair.assert_idle();
        pair.quiet(Who::B, Duration::from_millis(100));
        pair.quiet(Who::A, Duration::from_millis(10));
        pair.round_trip(3);
        pair.assert_idle();
    });
}

/// A handle removed from its address vector is refused from then on, with a
/// typed error naming the call: libfabric itself follows a removed handle
/// into freed state (rxm, sockets and shm still resolved it in
/// `fi_av_lookup`; a send to it segfaulted rxm, returned `FI_EAGAIN` forever
/// from rxd and reached the removed peer through sockets and shm). That
/// holds when libfabric hands the same raw value out again for the next
/// insert: the stale copy stays refused and the new handle reaches the peer.
/// `remove` also refuses another vector's handle and a handle listed twice.
/// Child processes, in case of a crash.
#[test]
fn removed_handles_are_refused_and_a_reinserted_peer_is_reachable() {
    isolated("removed_handles_are_refused_and_a_reinserted_peer_is_reachable", RDM, |p| {
        let mut pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        pair.round_trip(3);
        let name_b = pair.b.ep.name().expect("fi_getname");
        let other = AddressVector::open(&pair.domain, AvType::UNSPEC).expect("fi_av_open");
        let foreign = other.insert_one(&name_b).unwrap_or_else(|e| panic!("{p}: {e}"));
        let refused = |e: Error, call: &str| {
            eprintln!("{p}: {e}");
            assert!(matches!(&e, Error::InvalidArgument { call: c, .. } if *c == call), "{p}: {e:?}");
        };
        // SAFETY (each `remove` below): no other thread posts anything, no
        // operation to B is in flight (each round trip has completed), and
        // the vector has no AV set.
        refused(
            unsafe { pair.a.av.remove(&[pair.a.peer, foreign]) }.expect_err("another vector's handle"),
            "fi_av_remove",
        );
        refused(unsafe { pair.a.av.remove(&[pair.a.peer, pair.a.peer]) }.expect_err("a handle twice"), "fi_av_remove");
        pair.round_trip(4);

        let old = pair.a.peer;
        unsafe { pair.a.av.remove(&[old]) }.unwrap_or_else(|e| panic!("{p}: {e}"));
        let e = pair.a.ep.send(Buf::from(&b"to a removed peer"[..]), old, 1).expect_err("a send to a removed handle");
        refused(e.error, "fi_send");
        refused(pair.a.ep.inject(b"x", old).expect_err("an inject to a removed handle"), "fi_inject");
        refused(pair.a.ep.recv(Buf::zeroed(8), old, 2).expect_err("a receive from a removed handle").error, "fi_recv");
        refused(pair.a.av.lookup(old).expect_err("a lookup of a removed handle"), "fi_av_lookup");
        refused(unsafe { pair.a.av.remove(&[old]) }.expect_err("removed twice"), "fi_av_remove");

        pair.a.peer = pair.a.av.insert_one(&name_b).unwrap_or_else(|e| panic!("{p}: {e}"));
        eprintln!("{p}: removed {old:?}, inserted again as {:?}", pair.a.peer);
        assert_ne!(pair.a.peer, old, "{p}: a new handle, even for the same raw value");
        // Pinned: rxm, rxd and shm hand the freed raw value out again, so only
        // the generation tells the stale copy from the new peer; sockets
        // gives a new raw value.
        if p == "sockets" {
            assert_ne!(pair.a.peer.raw(), old.raw(), "{p}");
        } else {
            assert_eq!(pair.a.peer.raw(), old.raw(), "{p}: the raw value reissued");
        }
        refused(pair.a.ep.inject(b"x", old).expect_err("the stale copy after the reinsert"), "fi_inject");
        if p != "udp;ofi_rxd" {
            assert_eq!(pair.a.av.lookup(pair.a.peer).unwrap_or_else(|e| panic!("{p}: {e}")), name_b, "{p}");
        }
        pair.round_trip(5);
        pair.assert_idle();
    });
}

/// `Address::UNSPEC` (the same value as `NOTAVAIL`) is the one handle every
/// endpoint accepts: it means "any source" for a receive, and "the connected
/// peer" for a send on a connected (MSG) endpoint. On an RDM endpoint a send
/// to it names no peer, and libfabric does not check: rxm and shm index
/// their address tables with `FI_ADDR_UNSPEC` and segfault (observed, in
/// `fi_inject` and `fi_send` alike), rxd returns `FI_EAGAIN`, sockets
/// `FI_ENOENT`. The safe layer must refuse it as a destination there, as it
/// refuses another vector's handle. Child processes: the bug crashes.
#[test]
fn sends_to_unspec_on_an_endpoint_with_an_address_vector_are_refused() {
    isolated("sends_to_unspec_on_an_endpoint_with_an_address_vector_are_refused", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        pair.b.ep.recv(Buf::zeroed(64), Address::UNSPEC, 1).expect("fi_recv");
        for dest in [Address::UNSPEC, Address::NOTAVAIL] {
            let e = pair.a.ep.inject(b"tiny", dest).expect_err("an inject to FI_ADDR_UNSPEC");
            assert!(matches!(e, Error::InvalidArgument { call: "fi_inject", .. }), "{p}: {e:?}");
            let buf = Buf::from(payload(62, 30));
            let ptr = buf.as_ptr();
            assert_refused_post(p, "fi_send", pair.a.ep.send(buf, dest, 2), ptr, &payload(62, 30));
            let buf = Buf::from(payload(62, 30));
            let ptr = buf.as_ptr();
            assert_refused_post(p, "fi_tsend", pair.a.ep.tsend(buf, dest, 0x10, 3), ptr, &payload(62, 30));
        }
        pair.quiet(Who::B, Duration::from_millis(100));
        // The posted receive (UNSPEC: any source) takes the next message.
        pair.send_ab(payload(63, 10), 4);
        assert_eq!(pair.op(Who::B).token, 1, "{p}");
        assert_eq!(pair.op(Who::A).token, 4, "{p}");
        pair.assert_idle();
    });
}

// ---------------------------------------------------------------------------
// 6. Batched reads.
// ---------------------------------------------------------------------------

#[test]
fn poll_batch_returns_many_completions_at_once_each_token_once() {
    const N: u64 = 32;
    each_provider("poll_batch", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        for i in 0..N {
            pair.post("fi_recv", Buf::zeroed(64), |b| pair.b.ep.recv(b, Address::UNSPEC, i));
        }
        for i in 0..N {
            pair.send_ab(payload(i, 8 + i as usize), 1000 + i);
        }
        let start = Instant::now();
        let mut seen = BTreeSet::new();
        let mut largest = 0;
        // Completions read while retrying posts come first.
        let mut reads: Vec<Read<TaggedEntry>> = Vec::new();
        reads.extend(pair.a.pending.borrow_mut().drain(..));
        reads.extend(pair.b.pending.borrow_mut().drain(..));
        while seen.len() < 2 * N as usize {
            assert!(start.elapsed() < DEADLINE, "{p}: only {} of {} completions", seen.len(), 2 * N);
            for cq in [&pair.a.cq, &pair.b.cq] {
                let before = reads.len();
                let n = cq.poll_batch(&mut reads, 32).unwrap_or_else(|e| panic!("{p}: {e}"));
                assert_eq!(reads.len() - before, n, "{p}: poll_batch appends what it counts");
                assert!(n <= 32, "{p}: at most `max` entries");
                largest = largest.max(n);
            }
            for read in reads.drain(..) {
                let c = match read {
                    Read::Op(c) => c,
                    other => panic!("{p}: {other:?}"),
                };
                match c.kind {
                    OpKind::Recv => {
                        assert!(c.token < N, "{p}: {c:?}");
                        assert_eq!(c.buf[..], payload(c.token, 8 + c.token as usize)[..], "{p}: message {}", c.token);
                    }
                    OpKind::Send => assert!((1000..1000 + N).contains(&c.token), "{p}: {c:?}"),
                    _ => panic!("{p}: {c:?}"),
                }
                assert!(seen.insert(c.token), "{p}: token {} completed twice", c.token);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        eprintln!("{p}: largest batch {largest}");
        assert!(largest > 1, "{p}: poll_batch never returned more than one completion");
        pair.assert_idle();
    });
}

// ---------------------------------------------------------------------------
// 7. Blocking reads, wait descriptors, trywait, signal.
// ---------------------------------------------------------------------------

/// `poll(2)` on `fd` with `timeout_ms`: the number of ready descriptors and
/// the returned events.
fn poll_fd(fd: std::os::fd::BorrowedFd<'_>, timeout_ms: i32) -> (i32, i16) {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the call.
    let ret = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    assert!(ret >= 0, "poll(2): {}", std::io::Error::last_os_error());
    (ret, pfd.revents)
}

#[test]
fn blocking_reads_time_out_and_wait_descriptors_work() {
    let fd_cq = CqConfig { wait_obj: WaitObj::FD, ..CqConfig::default() };
    each_provider("blocking", RDM, |p| {
        let info = info_for(p, Caps::MSG | Caps::TAGGED);
        if p == "shm" {
            // shm 1.17 offers FI_WAIT_UNSPEC and FI_WAIT_YIELD only.
            let fabric = Fabric::open(&info).expect("fi_fabric");
            let domain: Domain<Unsync> = Domain::open(&fabric, &info).expect("fi_domain");
            let e = CompletionQueue::<TaggedEntry, Unsync>::open(&domain, &fd_cq).expect_err("shm without FD waits");
            assert!(matches!(e, Error::Call { call: "fi_cq_open", errno: Errno::ENOSYS }), "{p}: {e:?}");
            return;
        }
        let pair: Pair = Pair::open_with(info, &fd_cq);
        let cq = &pair.b.cq;

        // An empty queue: sread waits for the timeout, then says Empty.
        let timeout = Duration::from_millis(300);
        let start = Instant::now();
        let read = cq.sread(timeout).unwrap_or_else(|e| panic!("{p}: {e}"));
        let waited = start.elapsed();
        eprintln!("{p}: sread on an empty queue returned {read:?} after {waited:?}");
        assert!(matches!(read, Read::Empty), "{p}: {read:?}");
        assert!(waited >= timeout - Duration::from_millis(30), "{p}: returned after only {waited:?}");
        assert!(waited < timeout + Duration::from_secs(2), "{p}: returned after {waited:?}");

        // fi_cq_signal without a waiter: the next sread returns at once.
        cq.signal().unwrap_or_else(|e| panic!("{p}: {e}"));
        let start = Instant::now();
        let read = cq.sread(Duration::from_secs(5));
        eprintln!("{p}: sread after signal returned {read:?} after {:?}", start.elapsed());
        assert!(start.elapsed() < Duration::from_secs(2), "{p}: the signal did not end the wait");
        signalled_sread(p, read);

        // A CQ without a wait object has no fd.
        let plain: CompletionQueue<TaggedEntry, Unsync> =
            CompletionQueue::open(&pair.domain, &CqConfig::default()).expect("fi_cq_open");
        let e = plain.wait_fd().map(|_| ()).expect_err("a CQ without a wait object");
        assert!(matches!(e, Error::InvalidArgument { call: "fi_control(FI_GETWAIT)", .. }), "{p}: {e:?}");

        if p == "udp;ofi_rxd" {
            // rxd's CQ waits in sread but does not hand out its fd.
            let e = cq.wait_fd().map(|_| ()).expect_err("rxd has no wait fd");
            assert!(matches!(e, Error::Call { call: "fi_control(FI_GETWAIT)", errno: Errno::ENOSYS }), "{p}: {e:?}");
            eprintln!("{p}: trywait: {:?}", cq.trywait());
            return;
        }

        // The wait descriptor is a valid, pollable fd.
        let fd = cq.wait_fd().unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(fd.as_raw_fd() >= 0, "{p}");
        let (ready, revents) = poll_fd(fd, 0);
        eprintln!("{p}: poll(wait fd, 0) on an empty queue: {ready} {revents:#x}");
        assert_eq!(revents & libc::POLLNVAL, 0, "{p}: the wait fd is not open");
        // trywait: safe to block on an empty queue.
        assert!(cq.trywait().unwrap_or_else(|e| panic!("{p}: {e}")), "{p}: trywait on an empty queue");

        if p == "sockets" {
            // sockets 1.17: with a wait object on the CQ, the progress thread
            // does not complete a receive until the receiving endpoint
            // transmits something itself (observed): trywait stays true and
            // the fd stays silent, so the documented wait loop would hang.
            return;
        }
        // A completion arrives: trywait says "read first" (man 3 fi_poll);
        // until then, the documented loop blocks on the fd.
        pair.b.ep.recv(Buf::zeroed(64), Address::UNSPEC, 70).expect("fi_recv");
        pair.send_ab(payload(70, 12), 71);
        assert_eq!(pair.op(Who::A).token, 71);
        let start = Instant::now();
        loop {
            match cq.trywait() {
                Ok(false) => break,
                Ok(true) => {
                    poll_fd(fd, 50);
                }
                Err(e) => panic!("{p}: trywait with a completion pending: {e}"),
            }
            assert!(start.elapsed() < DEADLINE, "{p}: trywait never reported the completion");
        }
        let r = pair.op(Who::B);
        assert_eq!((r.token, &r.buf[..]), (70, &payload(70, 12)[..]), "{p}");
        assert!(cq.trywait().unwrap_or_else(|e| panic!("{p}: {e}")), "{p}: trywait after reading all");
        pair.assert_idle();
    });
}

/// What `sread` returns when `fi_cq_signal` ended it: man 3 fi_cq says
/// `-FI_EAGAIN` (`Read::Empty` here); sockets returns `-FI_ECANCELED`.
fn signalled_sread(p: &str, read: Result<Read<TaggedEntry>, Error>) {
    if p == "sockets" {
        let e = read.expect_err("sockets: FI_ECANCELED");
        assert!(matches!(e, Error::Call { call: "fi_cq_sread", errno: Errno::ECANCELED }), "{p}: {e:?}");
    } else {
        let read = read.unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(matches!(read, Read::Empty), "{p}: {read:?}");
    }
}

/// Every read is claim-aware now. The raw readers this replaces
/// (`read_raw`, `sread_raw`, `read_from`) handed out entries of operations
/// posted through the safe API without taking the operation out of its slot,
/// so the buffer never came back and `in_flight()` stayed 1; and no blocking
/// read returned `Read`. `sread` returns the operation with its buffer, a
/// failed one as `Read::Failed` with its buffer, and frees the slot.
#[test]
fn blocking_sread_returns_buffers_and_releases_operations() {
    each_provider("sread", RDM, |p| {
        // shm has no FD wait object; its default one blocks too.
        let wait_obj = if p == "shm" { WaitObj::UNSPEC } else { WaitObj::FD };
        let pair: Pair =
            Pair::open_with(info_for(p, Caps::MSG | Caps::TAGGED), &CqConfig { wait_obj, ..CqConfig::default() });
        let sread = |who: Who| {
            let start = Instant::now();
            loop {
                // Drives the other side (sockets and rxm progress on reads).
                pair.pull(if who == Who::A { Who::B } else { Who::A });
                match pair.side(who).cq.sread(Duration::from_millis(50)) {
                    Ok(Read::Empty) => {}
                    Ok(read) => return read,
                    Err(e) => panic!("{p}: fi_cq_sread: {e}"),
                }
                assert!(start.elapsed() < DEADLINE, "{p}: sread on {who:?} found nothing within {DEADLINE:?}");
            }
        };

        let rx = Buf::zeroed(64);
        let rx_ptr = rx.as_ptr();
        pair.b.ep.recv(rx, Address::UNSPEC, 1).expect("fi_recv");
        let tx = Buf::from(payload(1, 10));
        let tx_ptr = tx.as_ptr();
        pair.post("fi_send", tx, |b| pair.a.ep.send(b, pair.a.peer, 2));
        match sread(Who::B) {
            Read::Op(c) => {
                assert_eq!((c.kind, c.token, c.entry.len()), (OpKind::Recv, 1, 10), "{p}");
                assert_eq!((c.buf.as_ptr(), &c.buf[..]), (rx_ptr, &payload(1, 10)[..]), "{p}: the buffer posted");
            }
            other => panic!("{p}: sread: {other:?}"),
        }
        assert_eq!(pair.b.ep.in_flight(), 0, "{p}: the receive finished, but its slot and buffer are held");
        // The sender's completion may have been pulled while B waited.
        let s = match pair.a.pending.borrow_mut().pop_front() {
            Some(read) => read,
            None => sread(Who::A),
        };
        match s {
            Read::Op(c) => assert_eq!((c.kind, c.token, c.buf.as_ptr()), (OpKind::Send, 2, tx_ptr), "{p}"),
            other => panic!("{p}: sread: {other:?}"),
        }
        assert_eq!(pair.a.ep.in_flight(), 0, "{p}: the send finished, but its slot and buffer are held");

        // A failed operation: its buffer comes back through sread too.
        let id = pair.b.ep.recv(Buf::zeroed(32), Address::UNSPEC, 3).expect("fi_recv");
        pair.b.ep.cancel(id).unwrap_or_else(|e| panic!("{p}: {e}"));
        let (error, op) = failed(p, sread(Who::B));
        assert!(
            matches!(error, Error::Completion { call: "fi_cq_sread", errno: Errno::ECANCELED, .. }),
            "{p}: {error:?}"
        );
        let (kind, token, buf) = op.unwrap_or_else(|| panic!("{p}: the cancelled receive's buffer did not come back"));
        assert_eq!((kind, token, buf.capacity()), (OpKind::Recv, 3, 32), "{p}");
        pair.assert_idle();
    });
}

/// `fi_cq_signal` wakes a thread blocked in `fi_cq_sread` (a thread-safe
/// domain, so the queue can be shared).
#[test]
fn signal_wakes_a_blocked_sread() {
    each_provider("signal", RDM, |p| {
        let info = info_for(p, Caps::MSG | Caps::TAGGED);
        assert_eq!(info.threading(), Threading::SAFE, "{p}: the default threading");
        // shm has no FD wait object; its default one blocks too.
        let wait_obj = if p == "shm" { WaitObj::UNSPEC } else { WaitObj::FD };
        let pair: Pair<ThreadSafe> = Pair::open_with(info, &CqConfig { wait_obj, ..CqConfig::default() });
        // The thread borrows the queue: a thread-safe CQ is Sync.
        let cq = &pair.b.cq;
        std::thread::scope(|s| {
            let waiter = s.spawn(move || (cq.sread(Duration::from_secs(10)), Instant::now()));
            std::thread::sleep(Duration::from_millis(300));
            let signalled = Instant::now();
            cq.signal().unwrap_or_else(|e| panic!("{p}: {e}"));
            let (read, returned) = waiter.join().expect("the waiting thread");
            eprintln!("{p}: the blocked sread returned {read:?}, {:?} after the signal", returned - signalled);
            assert!(returned >= signalled, "{p}: sread returned before the signal");
            assert!(returned - signalled < Duration::from_secs(5), "{p}: sread was not woken");
            signalled_sread(p, read);
        });
    });
}

// ---------------------------------------------------------------------------
// 8. Event queues.
// ---------------------------------------------------------------------------

#[test]
fn event_queue_returns_user_events_and_times_out_empty() {
    each_provider("eq", RDM, |p| {
        let info = info_for(p, Caps::MSG);
        let fabric = Fabric::open(&info).unwrap_or_else(|e| panic!("{p}: {e}"));
        let eq = EventQueue::open(&fabric).unwrap_or_else(|e| panic!("{p}: {e}"));

        assert!(matches!(eq.read(), Ok(None)), "{p}: an empty EQ");
        let start = Instant::now();
        let got = eq.read_timeout(Duration::from_millis(200));
        let waited = start.elapsed();
        assert!(matches!(got, Ok(None)), "{p}: {got:?}");
        assert!(waited >= Duration::from_millis(170) && waited < Duration::from_secs(3), "{p}: waited {waited:?}");
        assert!(eq.trywait().unwrap_or_else(|e| panic!("{p}: {e}")), "{p}: trywait on an empty EQ");

        eq.write(EqEvent::NOTIFY, 0x1234_5678, 0xfeed_f00d).unwrap_or_else(|e| panic!("{p}: {e}"));
        let fd = eq.wait_fd().unwrap_or_else(|e| panic!("{p}: {e}"));
        let (ready, revents) = poll_fd(fd, 1000);
        eprintln!("{p}: EQ fd after a write: {ready} {revents:#x}");
        assert_eq!((ready, revents & libc::POLLIN), (1, libc::POLLIN), "{p}: the EQ fd is readable");
        let trywait = eq.trywait().unwrap_or_else(|e| panic!("{p}: {e}"));
        // sockets 1.17's fi_trywait does not look at event queues: it says
        // "wait" with an event queued (observed; harmless here, as the fd is
        // readable, so a wait on it returns at once).
        assert_eq!(trywait, p == "sockets", "{p}: fi_trywait with an event queued");
        match eq.read() {
            Ok(Some(Event::Other { event, fid, context, data })) => {
                assert_eq!((event, fid, context, data), (EqEvent::NOTIFY, 0, 0x1234_5678, 0xfeed_f00d), "{p}");
            }
            other => panic!("{p}: {other:?}"),
        }
        assert!(matches!(eq.read(), Ok(None)), "{p}: read once");

        eq.write(EqEvent::MR_COMPLETE, 42, u64::MAX).unwrap_or_else(|e| panic!("{p}: {e}"));
        match eq.read_timeout(Duration::from_secs(5)) {
            Ok(Some(Event::Other { event, context, data, .. })) => {
                assert_eq!((event, context, data), (EqEvent::MR_COMPLETE, 42, u64::MAX), "{p}");
            }
            other => panic!("{p}: {other:?}"),
        }
        assert!(eq.trywait().unwrap_or_else(|e| panic!("{p}: {e}")), "{p}: drained");
    });
}

/// man 3 fi_eq: "If the FI_WRITE flag is not set, then the application may
/// not invoke fi_eq_write", and sockets refuses it then (`FI_EINVAL`).
/// `EventQueue::open` sets it now, so `write` works everywhere.
#[test]
fn event_queues_are_opened_writable() {
    each_provider("eq_write", RDM, |p| {
        let fabric = Fabric::open(&info_for(p, Caps::MSG)).unwrap_or_else(|e| panic!("{p}: {e}"));
        let eq = EventQueue::open(&fabric).unwrap_or_else(|e| panic!("{p}: {e}"));
        eq.write(EqEvent::NOTIFY, 1, 2).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(matches!(eq.read(), Ok(Some(Event::Other { context: 1, data: 2, .. }))), "{p}");
    });
}

/// `read` decodes `FI_CONNREQ` as a connection-management entry, whose
/// `info` it owns and frees: a user event with that number would make its
/// context a `struct fi_info *` to free. `write` must refuse connection
/// events (or `read` must not trust them). Child processes, in case of a crash.
#[test]
fn user_events_cannot_forge_connection_requests() {
    isolated("user_events_cannot_forge_connection_requests", &["tcp;ofi_rxm"], |p| {
        let fabric = Fabric::open(&info_for(p, Caps::MSG)).unwrap_or_else(|e| panic!("{p}: {e}"));
        let eq = EventQueue::open(&fabric).unwrap_or_else(|e| panic!("{p}: {e}"));
        let bogus = 0x1234_5678;
        for event in [EqEvent::CONNREQ, EqEvent::CONNECTED, EqEvent::SHUTDOWN] {
            match eq.write(event, bogus, 7) {
                Err(e) => assert!(matches!(e, Error::InvalidArgument { call: "fi_eq_write", .. }), "{p}: {e:?}"),
                Ok(()) => match eq.read() {
                    Ok(Some(Event::ConnectionRequest { info, .. })) => {
                        panic!("{p}: a user event became a connection request: {:?}", info.as_raw() as *const _)
                    }
                    other => eprintln!("{p}: {event:?}: {other:?}"),
                },
            }
        }
        assert!(matches!(eq.read(), Ok(None)), "{p}: nothing was queued");
    });
}

// ---------------------------------------------------------------------------
// 9. Address vectors.
// ---------------------------------------------------------------------------

/// The port of an `AF_INET` address (`struct sockaddr_in`), if it is one.
fn inet_port(addr: &[u8]) -> Option<u16> {
    (addr.len() == std::mem::size_of::<libc::sockaddr_in>()
        && i32::from(u16::from_ne_bytes([addr[0], addr[1]])) == libc::AF_INET)
        .then(|| u16::from_be_bytes([addr[2], addr[3]]))
}

#[test]
fn address_vectors_insert_many_look_up_and_remove() {
    each_provider("av", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        // Three more endpoints, sharing a CQ and an AV of their own.
        let cq: CompletionQueue<TaggedEntry, Unsync> =
            CompletionQueue::open(&pair.domain, &CqConfig::default()).expect("fi_cq_open");
        let their_av = AddressVector::open(&pair.domain, AvType::UNSPEC).expect("fi_av_open");
        let eps: Vec<Endpoint<TaggedEntry, Unsync>> = (0..3)
            .map(|_| {
                Endpoint::open(
                    &pair.domain,
                    &pair.info,
                    Bindings { cq: &cq, av: Some(&their_av), eq: None, tx_cq: None },
                )
                .unwrap_or_else(|e| panic!("{p}: {e}"))
            })
            .collect();
        let names: Vec<Vec<u8>> = eps.iter().map(|e| e.name().expect("fi_getname")).collect();
        let addrlen = names[0].len();
        assert!(names.iter().all(|n| n.len() == addrlen), "{p}: {names:?}");
        let all = names.concat();
        // Several at once, in order; shm's names are strings (FI_ADDR_STR),
        // which libfabric cannot step through, so they go one at a time.
        let insert_all = |av: &AddressVector<Unsync>| -> Vec<Address> {
            if p == "shm" {
                let e = av.insert(&all, addrlen, AvInsertFlags::empty()).expect_err("several string addresses");
                assert!(matches!(e, Error::InvalidArgument { call: "fi_av_insert", .. }), "{p}: {e:?}");
                names.iter().map(|n| av.insert_one(n).unwrap_or_else(|e| panic!("{p}: {e}"))).collect()
            } else {
                av.insert(&all, addrlen, AvInsertFlags::empty()).unwrap_or_else(|e| panic!("{p}: {e}"))
            }
        };

        let av = AddressVector::open(&pair.domain, AvType::UNSPEC).expect("fi_av_open");
        let handles = insert_all(&av);
        eprintln!("{p}: addrlen {addrlen}, handles {handles:?}");
        assert_eq!(handles.len(), 3, "{p}");
        assert_eq!(handles.iter().collect::<BTreeSet<_>>().len(), 3, "{p}: distinct handles");
        for (h, name) in handles.iter().zip(&names) {
            let text = av.straddr(name).expect("a whole address");
            eprintln!("{p}: {h:?} is {text}");
            assert!(!text.is_empty(), "{p}: straddr");
            match av.lookup(*h) {
                Ok(back) => assert_eq!(back[..], name[..], "{p}: lookup of {h:?}"),
                // rxd 1.17 answers every lookup with FI_ENODATA (observed).
                Err(e) if p == "udp;ofi_rxd" => assert_eq!(e.errno(), Errno::ENODATA, "{p}: {e}"),
                Err(e) => panic!("{p}: {e}"),
            }
        }

        // The handles reach the right endpoints: A sends to the second.
        let extra = RefCell::new(VecDeque::new());
        let drive = || {
            pair.progress();
            match cq.poll().unwrap_or_else(|e| panic!("{p}: {e}")) {
                Read::Empty => {}
                read => extra.borrow_mut().push_back(read),
            }
        };
        let send_to = |dest: Address, seq: u64| {
            let mut buf = Buf::from(payload(seq, 11));
            let start = Instant::now();
            loop {
                match pair.a.ep.send(buf, dest, seq) {
                    Ok(_) => break,
                    Err(e) if e.is_again() && start.elapsed() < DEADLINE => {
                        buf = e.buf;
                        drive();
                    }
                    Err(e) => panic!("{p}: {}", e.error),
                }
            }
            let start = Instant::now();
            while pair.a.pending.borrow().is_empty() || extra.borrow().is_empty() {
                assert!(start.elapsed() < DEADLINE, "{p}: message {seq} did not arrive");
                drive();
            }
            assert_eq!(pair.op(Who::A).token, seq, "{p}");
            match extra.borrow_mut().pop_front() {
                Some(Read::Op(c)) => c,
                other => panic!("{p}: {other:?}"),
            }
        };
        let reach = insert_all(&pair.a.av);
        eps[1].recv(Buf::zeroed(32), Address::UNSPEC, 80).expect("fi_recv");
        let got = send_to(reach[1], 80);
        assert_eq!((got.token, &got.buf[..]), (80, &payload(80, 11)[..]), "{p}: the second endpoint");

        // A node and a service (IP providers): the same endpoint again.
        match inet_port(&names[2]) {
            Some(_) if p == "udp;ofi_rxd" => {
                let e = av.insert_service("127.0.0.1", "1234").expect_err("rxd has no fi_av_insertsvc");
                assert!(matches!(e, Error::Call { call: "fi_av_insertsvc", errno: Errno::ENOSYS }), "{p}: {e:?}");
            }
            Some(port) => {
                let h = pair.a.av.insert_service("127.0.0.1", &port.to_string()).unwrap_or_else(|e| panic!("{p}: {e}"));
                eprintln!("{p}: 127.0.0.1:{port} is {h:?}");
                eps[2].recv(Buf::zeroed(32), Address::UNSPEC, 82).expect("fi_recv");
                let got = send_to(h, 82);
                assert_eq!((got.token, &got.buf[..]), (82, &payload(82, 11)[..]), "{p}: the third endpoint");
            }
            None => {
                assert_eq!(p, "shm", "{p}: only shm has non-IP addresses");
                let e = av.insert_service("127.0.0.1", "1234").expect_err("shm has no services");
                eprintln!("{p}: {e}");
            }
        }

        // Removal: the removed handle is refused, the others stay (see
        // `removed_handles_are_refused_and_a_reinserted_peer_is_reachable`).
        // SAFETY: no other thread posts anything, nothing was ever posted
        // with this vector's handles (the sends went through A's own), and
        // it has no AV set.
        unsafe { av.remove(&handles[..1]) }.unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(av.lookup(handles[0]).is_err(), "{p}: a removed handle is not looked up");
        if p != "udp;ofi_rxd" {
            assert_eq!(av.lookup(handles[1]).expect("fi_av_lookup")[..], names[1][..], "{p}: the others stay");
        }

        // Malformed input is refused before libfabric sees it.
        for (bytes, len) in [(&all[..all.len() - 1], addrlen), (&all[..], 0)] {
            let e = av.insert(bytes, len, AvInsertFlags::empty()).expect_err("a malformed address list");
            assert!(matches!(e, Error::InvalidArgument { call: "fi_av_insert", .. }), "{p}: {e:?}");
        }
    });
}

/// Garbage bytes and addresses of the wrong length give errors, not crashes
/// (child processes, in case a provider crashes).
#[test]
fn address_vectors_reject_garbage_and_malformed_addresses() {
    isolated("address_vectors_reject_garbage_and_malformed_addresses", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        let name = pair.a.ep.name().expect("fi_getname");
        let av = AddressVector::open(&pair.domain, AvType::UNSPEC).expect("fi_av_open");

        // shm's addresses are C strings (FI_ADDR_STR) that libfabric reads up
        // to their NUL, so its garbage keeps one; without it, see
        // `string_addresses_without_a_nul_are_refused`.
        let string = p == "shm";
        let mut bytes = vec![0xa5; name.len()];
        if string {
            *bytes.last_mut().expect("a name") = 0;
        }
        let garbage = av.insert_one(&bytes);
        eprintln!("{p}: inserting garbage: {garbage:?}");
        if string {
            // Any string names a (nonexistent) peer.
            assert!(garbage.is_ok(), "{p}: {garbage:?}");
        } else {
            let e = garbage.expect_err("a garbage address");
            assert!(matches!(e, Error::InvalidArgument { call: "fi_av_insert", .. }), "{p}: {e:?}");
        }

        let short = if string {
            // The name one character shorter, still NUL-terminated.
            [&name[..name.len() - 2], &[0]].concat()
        } else {
            name[..name.len() - 1].to_vec()
        };
        let short = av.insert(&short, short.len(), AvInsertFlags::empty());
        eprintln!("{p}: a short address: {short:?}");
        if string {
            // Names vary in length: a shorter name is just another name.
            assert!(short.is_ok(), "{p}: {short:?}");
        } else {
            let e = short.expect_err("an address shorter than the domain's");
            assert!(matches!(e, Error::InvalidArgument { call: "fi_av_insert", .. }), "{p}: {e:?}");
        }
    });
}

/// `fi_av_insert` has no stride argument: libfabric reads the addresses back
/// to back at its own length. `insert` used to accept any `addrlen` dividing
/// the bytes, so with each address padded by a copy of the first, the second
/// handle silently mapped to the wrong peer. It now refuses an `addrlen`
/// other than the domain's address length, longer or shorter.
#[test]
fn address_vector_insert_refuses_a_stride_other_than_the_address_length() {
    each_provider("av_stride", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        let (a, b) = (pair.a.ep.name().expect("fi_getname"), pair.b.ep.name().expect("fi_getname"));
        let av = AddressVector::open(&pair.domain, AvType::UNSPEC).expect("fi_av_open");
        // [a, a] [b, a]: two addresses of 2 * len bytes each.
        let padded = [&a[..], &a[..], &b[..], &a[..]].concat();
        let e = av.insert(&padded, 2 * a.len(), AvInsertFlags::empty()).expect_err("a longer stride");
        eprintln!("{p}: {e}");
        assert!(matches!(e, Error::InvalidArgument { call: "fi_av_insert", .. }), "{p}: {e:?}");
        // Half the length: as many "addresses" as bytes allow, all wrong.
        let e = av.insert(&padded, a.len() / 2, AvInsertFlags::empty()).expect_err("a shorter stride");
        assert!(matches!(e, Error::InvalidArgument { call: "fi_av_insert", .. }), "{p}: {e:?}");
        if p == "shm" {
            // Strings (FI_ADDR_STR) vary in length: one at a time only.
            let e = av.insert(&padded, a.len(), AvInsertFlags::empty()).expect_err("several string addresses");
            assert!(matches!(e, Error::InvalidArgument { call: "fi_av_insert", .. }), "{p}: {e:?}");
            return;
        }
        // At the right length, the same bytes are four handles, in order.
        let h = av.insert(&padded, a.len(), AvInsertFlags::empty()).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(h.len(), 4, "{p}");
        if p != "udp;ofi_rxd" {
            let back: Vec<_> = h.iter().map(|h| av.lookup(*h).expect("fi_av_lookup")).collect();
            assert_eq!(back, [a.clone(), a.clone(), b.clone(), a.clone()], "{p}");
        }
    });
}

/// `lookup` takes only handles of its own vector. It used to take any
/// `Address`: for `Address(999999)`, one the AV never issued, rxd
/// (`FI_ENODATA`) and sockets (`FI_EINVAL`) failed, but rxm's util AV and shm
/// indexed their tables with it unchecked and segfaulted. Such a handle is
/// no longer expressible in safe code; a handle of another vector (here a
/// raw value past the end of this vector's table) is refused before
/// libfabric sees it. Child processes, as a regression would crash.
#[test]
fn address_vector_lookup_refuses_handles_of_other_vectors() {
    isolated("address_vector_lookup_refuses_handles_of_other_vectors", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        let names: Vec<Vec<u8>> = [&pair.a.ep, &pair.b.ep].iter().map(|e| e.name().expect("fi_getname")).collect();
        let big = AddressVector::open(&pair.domain, AvType::UNSPEC).expect("fi_av_open");
        let mut handles = Vec::new();
        for _ in 0..4 {
            for name in &names {
                handles.push(big.insert_one(name).unwrap_or_else(|e| panic!("{p}: {e}")));
            }
        }
        let last = *handles.last().expect("handles");
        eprintln!("{p}: handles of the bigger vector: {handles:?}");
        for h in [last, pair.b.peer] {
            let e = pair.a.av.lookup(h).expect_err("a lookup of another vector's handle");
            eprintln!("{p}: {e}");
            assert!(matches!(e, Error::InvalidArgument { call: "fi_av_lookup", .. }), "{p}: {e:?}");
        }
        // The owner resolves its own.
        match big.lookup(last) {
            Ok(name) => assert!(names.contains(&name), "{p}: {name:?}"),
            // rxd 1.17 answers every lookup with FI_ENODATA (observed).
            Err(e) if p == "udp;ofi_rxd" => assert_eq!(e.errno(), Errno::ENODATA, "{p}: {e}"),
            Err(e) => panic!("{p}: {e}"),
        }
    });
}

/// shm's addresses are C strings (`FI_ADDR_STR`), and `fi_av_insert` reads
/// each up to its NUL, wherever that is: bytes without one must be refused,
/// or libfabric reads past the end of the slice. Shown with the bytes right
/// before an inaccessible page, where the read past their end faults (child
/// processes, for the crash).
#[test]
fn string_addresses_without_a_nul_are_refused() {
    isolated("string_addresses_without_a_nul_are_refused", &["shm"], |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        let name = pair.a.ep.name().expect("fi_getname");
        assert_eq!(name.last(), Some(&0), "{p}: names come NUL-terminated: {name:?}");
        let page = 4096;
        // SAFETY: two fresh anonymous pages, the second made inaccessible;
        // unmapped below, after the last use of the slices into the first.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        let base = base.cast::<u8>();
        // SAFETY: the second page lies inside the mapping.
        assert_eq!(unsafe { libc::mprotect(base.add(page).cast(), page, libc::PROT_NONE) }, 0, "mprotect");
        for bytes in [vec![0xa5; name.len()], name[..name.len() - 1].to_vec()] {
            // SAFETY: the last `bytes.len()` bytes of the first page, readable
            // and writable, not otherwise referenced.
            let slice = unsafe {
                let at = base.add(page - bytes.len());
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len());
                std::slice::from_raw_parts(at, bytes.len())
            };
            let e = pair.a.av.insert_one(slice).expect_err("a string address without its NUL");
            eprintln!("{p}: {e}");
            assert!(matches!(e, Error::InvalidArgument { call: "fi_av_insert", .. }), "{p}: {e:?}");
        }
        // SAFETY: the mapping made above; no slice into it is used any more.
        assert_eq!(unsafe { libc::munmap(base.cast(), 2 * page) }, 0, "munmap");
    });
}

// ---------------------------------------------------------------------------
// 10. Memory registration.
// ---------------------------------------------------------------------------

#[test]
fn registered_buffers_travel_and_stay_registered() {
    each_provider("mr", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        let mut tx = Buf::from(payload(90, 48));
        pair.a.ep.register(&mut tx, MrAccess::SEND | MrAccess::RECV).unwrap_or_else(|e| panic!("{p}: {e}"));
        let key = tx.memory_region().expect("registered").key();
        assert_ne!(key, FI_KEY_NOTAVAIL, "{p}: the region has a key");
        let mut rx = Buf::zeroed(64);
        pair.b.ep.register(&mut rx, MrAccess::RECV).unwrap_or_else(|e| panic!("{p}: {e}"));
        let rx_key = rx.memory_region().expect("registered").key();
        eprintln!("{p}: keys {key:#x} {rx_key:#x}, mr_mode {:?}", pair.info.mr_mode());
        assert_ne!(key, rx_key, "{p}: two regions, two keys");
        // Remote access to a Buf is refused: its owner reads it as &[u8].
        let mut remote = Buf::zeroed(8);
        let e = pair.a.ep.register(&mut remote, MrAccess::REMOTE_WRITE).expect_err("remote access to a Buf");
        assert!(matches!(e, Error::InvalidArgument { call: "fi_mr_reg", .. }), "{p}: {e:?}");
        assert!(remote.memory_region().is_none(), "{p}");

        for round in 0..2 {
            pair.b.ep.recv(rx, Address::UNSPEC, 91).expect("fi_recv");
            pair.post("fi_send", tx, |b| pair.a.ep.send(b, pair.a.peer, 92));
            let r = pair.op(Who::B);
            assert_eq!(r.buf[..], payload(90, 48)[..], "{p}: round {round}");
            assert_eq!(r.buf.memory_region().map(MemoryRegion::key), Some(rx_key), "{p}: still registered");
            let s = pair.op(Who::A);
            assert_eq!(s.buf.memory_region().map(MemoryRegion::key), Some(key), "{p}: still registered");
            (tx, rx) = (s.buf, r.buf);
        }
        assert_eq!(tx.into_vec(), payload(90, 48), "{p}: the bytes, without the registration");

        // A registration of caller-managed memory.
        let heap = vec![7u8; 4096];
        // SAFETY: `heap` is neither moved nor freed before `mr` is dropped
        // (below), and nothing accesses it through libfabric meanwhile.
        let mr = unsafe { MemoryRegion::register_raw(&pair.domain, heap.as_ptr(), heap.len(), MrAccess::SEND) }
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_ne!(mr.key(), FI_KEY_NOTAVAIL, "{p}");
        assert!(![key, rx_key].contains(&mr.key()), "{p}: a key of its own");
        eprintln!("{p}: raw region {mr:?}, desc {:?}", mr.desc());
        drop(mr);
        drop(heap);
    });
}

// ---------------------------------------------------------------------------
// 11. Endpoint options.
// ---------------------------------------------------------------------------

/// `FI_OPT_MIN_MULTI_RECV` as each provider sets it by default (observed):
/// every provider here implements the option.
fn default_min_multi_recv(provider: &str) -> usize {
    match provider {
        "tcp;ofi_rxm" => 16384,
        "udp;ofi_rxd" => 0,
        "sockets" => 64,
        "shm" => 4096,
        other => panic!("no default recorded for {other}"),
    }
}

#[test]
fn endpoint_options_get_set_or_fail_with_enoprotoopt() {
    each_provider("options", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED | Caps::MULTI_RECV);
        let ep = &pair.a.ep;
        let default = ep.option(EpOption::MIN_MULTI_RECV).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(default, default_min_multi_recv(p), "{p}: FI_OPT_MIN_MULTI_RECV");
        ep.set_option(EpOption::MIN_MULTI_RECV, 512).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(ep.option(EpOption::MIN_MULTI_RECV).expect("fi_getopt"), 512, "{p}");
        // The other endpoint keeps its own value.
        assert_eq!(pair.b.ep.option(EpOption::MIN_MULTI_RECV).expect("fi_getopt"), default, "{p}");

        // An option only the efa provider has: FI_ENOPROTOOPT, naming the call.
        let e = ep.option(EpOption::EFA_RNR_RETRY).expect_err("FI_OPT_EFA_RNR_RETRY");
        eprintln!("{p}: {e}");
        assert_eq!((e.call(), e.errno()), ("fi_getopt", Errno::ENOPROTOOPT), "{p}: {e}");
        assert!(e.to_string().starts_with("fi_getopt failed: "), "{p}: {e}");
        let e = ep.set_option(EpOption::EFA_RNR_RETRY, 3).expect_err("FI_OPT_EFA_RNR_RETRY");
        eprintln!("{p}: {e}");
        assert_eq!((e.call(), e.errno()), ("fi_setopt", Errno::ENOPROTOOPT), "{p}: {e}");
        assert!(e.to_string().starts_with("fi_setopt failed: "), "{p}: {e}");
    });
}

// ---------------------------------------------------------------------------
// 12. Multi-receive through the raw API.
// ---------------------------------------------------------------------------

#[test]
fn multi_receive_through_the_raw_api() {
    const MSG_LEN: usize = 100;
    const MIN: usize = 128;
    const SIZE: usize = 512;
    each_provider("multi_recv_raw", RDM, |p| {
        // Declared before the endpoints, so they outlive them even when the
        // test fails halfway: the provider may write the buffer and use the
        // context until the endpoint is closed.
        let mut region = vec![0u8; SIZE];
        let mut ctx = context();
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED | Caps::MULTI_RECV);
        let ep = &pair.b.ep;
        ep.set_option(EpOption::MIN_MULTI_RECV, MIN).unwrap_or_else(|e| panic!("{p}: {e}"));
        // With 4 messages of 100 bytes, 112 bytes are left: less than MIN,
        // so the buffer is released with the fourth.
        let expected = (SIZE - MIN) / MSG_LEN + 1;

        let base = region.as_mut_ptr();
        let mr = if pair.info.mr_mode().contains(MrMode::LOCAL) {
            // SAFETY: `region` outlives `mr` (declared earlier, never moved).
            Some(unsafe { MemoryRegion::register_raw(&pair.domain, base, SIZE, MrAccess::RECV) }.expect("fi_mr_reg"))
        } else {
            None
        };
        let mut desc = mr.as_ref().map_or(std::ptr::null_mut(), MemoryRegion::desc);
        let iov = iovec { iov_base: base.cast(), iov_len: SIZE };
        let ctx_p = ctx_ptr(&mut ctx);
        let msg =
            fi_msg { msg_iov: &iov, desc: &mut desc, iov_count: 1, addr: FI_ADDR_UNSPEC, context: ctx_p, data: 0 };
        // SAFETY: `region` and `ctx` are declared before the endpoint, so
        // they stay allocated and unmoved until it is closed, and nothing
        // else touches them until the FI_MULTI_RECV completion is read (the
        // completed messages are read through `base`, not `region`). The
        // context is ours, not the crate's: its completions come back raw.
        unsafe { ep.recvmsg_raw(&msg, OpFlags::MULTI_RECV) }.unwrap_or_else(|e| panic!("{p}: {e}"));

        for i in 0..expected as u64 {
            pair.send_ab(payload(100 + i, MSG_LEN), 200 + i);
        }
        // shm reports the release as a completion of its own (length 0,
        // flags FI_MULTI_RECV only), as man 3 fi_msg allows; the others flag
        // the message that used the buffer up.
        let separate_release = p == "shm";
        let mut offsets = Vec::new();
        for i in 0..expected {
            let entry = match pair.next(Who::B) {
                Read::Raw(entry) => entry,
                other => panic!("{p}: expected a raw completion, got {other:?}"),
            };
            assert_eq!(entry.context(), ctx_p, "{p}: our own context comes back");
            let mut flags = CompletionFlags::RECV | CompletionFlags::MSG;
            if i + 1 == expected && !separate_release {
                flags |= CompletionFlags::MULTI_RECV;
            }
            assert_eq!(entry.flags(), flags, "{p}: message {i}");
            assert_eq!(entry.len(), MSG_LEN, "{p}");
            let offset = (entry.0.buf as usize).checked_sub(base as usize).expect("inside the buffer");
            assert!(offset + MSG_LEN <= SIZE, "{p}: offset {offset}");
            // SAFETY: the provider completed these bytes and writes later
            // messages elsewhere in the buffer.
            let bytes = unsafe { std::slice::from_raw_parts(base.add(offset), MSG_LEN) };
            assert_eq!(bytes, &payload(100 + i as u64, MSG_LEN)[..], "{p}: message {i}");
            offsets.push(offset);
        }
        if separate_release {
            match pair.next(Who::B) {
                Read::Raw(e) => {
                    assert_eq!((e.context(), e.flags(), e.len()), (ctx_p, CompletionFlags::MULTI_RECV, 0), "{p}")
                }
                other => panic!("{p}: expected the release, got {other:?}"),
            }
        }
        eprintln!("{p}: offsets {offsets:?}");
        assert_eq!(offsets.len(), expected, "{p}: messages before the release");
        assert!(offsets.windows(2).all(|w| w[1] >= w[0] + MSG_LEN), "{p}: packed in order: {offsets:?}");
        assert_eq!(pair.ops(Who::A, expected).len(), expected);
        pair.quiet(Who::B, Duration::from_millis(100));
        drop(mr);
        drop(pair);
        // The region is ours again.
        assert_eq!(region[offsets[0]..offsets[0] + MSG_LEN], payload(100, MSG_LEN)[..], "{p}");
    });
}

// ---------------------------------------------------------------------------
// 13. FI_PEEK, FI_CLAIM, FI_DISCARD.
// ---------------------------------------------------------------------------

/// Posts a raw tagged receive with `flags` and our own context, with no
/// buffer (peek and discard) or with `buf`.
///
/// # Safety
/// `ctx` and `buf` stay allocated and unmoved until the operation completes.
unsafe fn trecv_raw(
    ep: &Endpoint<TaggedEntry, Unsync>,
    tag: u64,
    ctx: *mut libc::c_void,
    buf: Option<&mut [u8]>,
    flags: OpFlags,
) -> Result<(), Error> {
    let iov = buf.map(|b| iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() });
    let mut desc = std::ptr::null_mut();
    let msg = fi_msg_tagged {
        msg_iov: iov.as_ref().map_or(std::ptr::null(), |i| i as *const iovec),
        desc: &mut desc,
        iov_count: usize::from(iov.is_some()),
        addr: FI_ADDR_UNSPEC,
        tag,
        ignore: 0,
        context: ctx,
        data: 0,
    };
    ep.trecvmsg_raw(&msg, flags)
}

#[test]
fn peek_claim_and_discard_unexpected_tagged_messages() {
    each_provider("peek", RDM, |p| {
        let mut peek_ctx = context();
        let mut claim_ctx = context();
        let mut discard_ctx = context();
        let mut claimed = vec![0u8; 64];
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        let ep = &pair.b.ep;
        const T1: u64 = 0x1111;
        const T2: u64 = 0x2222;
        let tsend = |seq: u64, tag: u64, token: u64| {
            pair.post("fi_tsenddata", Buf::from(payload(seq, 50)), |b| {
                pair.a.ep.tsend_data(b, seq, pair.a.peer, tag, token)
            });
            assert_eq!(pair.op(Who::A).token, token);
        };

        let peek_p = ctx_ptr(&mut peek_ctx);
        if p == "shm" {
            // shm 1.17 ignores FI_PEEK: the call succeeds and queues a plain
            // receive without a buffer, so there is no FI_ENOMSG, and the next
            // message of the tag completes it, truncated (observed).
            // SAFETY: no buffer; the context outlives the endpoint.
            unsafe { trecv_raw(ep, T1, peek_p, None, OpFlags::PEEK) }.unwrap_or_else(|e| panic!("{p}: {e}"));
            pair.quiet(Who::B, Duration::from_millis(300));
            tsend(1, T1, 301);
            let (error, op) = failed(p, pair.next(Who::B));
            let Error::Completion { detail, .. } = &error else { panic!("{p}: {error:?}") };
            // (shm writes the errno negated; the safe layer makes it positive.)
            assert_eq!(error.errno(), Errno::ETRUNC, "{p}: {error}");
            assert_eq!((detail.context, op.is_none()), (peek_p as usize, true), "{p}");
            pair.assert_idle();
            return;
        }

        // Nothing there yet: FI_ENOMSG, as an error entry with our context.
        // SAFETY: no buffer; the context outlives the endpoint.
        unsafe { trecv_raw(ep, T1, peek_p, None, OpFlags::PEEK) }.unwrap_or_else(|e| panic!("{p}: {e}"));
        let (error, op) = failed(p, pair.next(Who::B));
        let Error::Completion { detail, .. } = &error else { panic!("{p}: {error:?}") };
        assert_eq!((error.errno(), detail.context, op.is_none()), (Errno::ENOMSG, peek_p as usize, true), "{p}");

        // A message arrives unexpected; peek until it is seen.
        tsend(1, T1, 301);
        let start = Instant::now();
        let found = loop {
            // SAFETY: as above.
            unsafe { trecv_raw(ep, T1, peek_p, None, OpFlags::PEEK) }.unwrap_or_else(|e| panic!("{p}: {e}"));
            match pair.next(Who::B) {
                Read::Raw(entry) => break entry,
                Read::Failed { error, op: None } if error.errno() == Errno::ENOMSG => {}
                other => panic!("{p}: {other:?}"),
            }
            assert!(start.elapsed() < DEADLINE, "{p}: the message never showed up to FI_PEEK");
        };
        eprintln!("{p}: peeked {found:?}");
        assert_eq!(found.context(), peek_p, "{p}");
        // man 3 fi_tagged: a peek reports the length, tag "and available CQ
        // data"; none of these providers reports the data.
        assert_eq!((found.len(), found.tag(), found.data()), (50, Some(T1), None), "{p}: the message's metadata");
        assert!(found.flags().contains(CompletionFlags::RECV | CompletionFlags::TAGGED), "{p}: {:?}", found.flags());

        // Peek and claim it: a plain receive for the tag no longer gets it.
        let claim_p = ctx_ptr(&mut claim_ctx);
        // SAFETY: no buffer; the context outlives the endpoint.
        unsafe { trecv_raw(ep, T1, claim_p, None, OpFlags::PEEK | OpFlags::CLAIM) }
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        match pair.next(Who::B) {
            Read::Raw(entry) => {
                assert_eq!((entry.context(), entry.len(), entry.tag()), (claim_p, 50, Some(T1)), "{p}");
            }
            other => panic!("{p}: FI_PEEK | FI_CLAIM: {other:?}"),
        }
        pair.b.ep.trecv(Buf::zeroed(64), Address::UNSPEC, T1, 0, 302).expect("fi_trecv");
        pair.quiet(Who::B, Duration::from_millis(200));
        // Retrieve it with FI_CLAIM and the same context.
        // SAFETY: `claimed` and the context outlive the endpoint.
        unsafe { trecv_raw(ep, T1, claim_p, Some(&mut claimed), OpFlags::CLAIM) }
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        match pair.next(Who::B) {
            Read::Raw(entry) if p == "sockets" => {
                // sockets drops FI_REMOTE_CQ_DATA from the flags of an
                // unexpected message (the data field still holds it).
                let got = (entry.context(), entry.len(), entry.tag(), entry.data(), entry.0.data);
                assert_eq!(got, (claim_p, 50, Some(T1), None, 1), "{p}");
            }
            Read::Raw(entry) => {
                let got = (entry.context(), entry.len(), entry.tag(), entry.data());
                assert_eq!(got, (claim_p, 50, Some(T1), Some(1)), "{p}");
            }
            // rxd 1.17 fails the claim with FI_ETRUNC (olen 0) although the
            // 64-byte buffer holds the 50-byte message (observed).
            Read::Failed { error: Error::Completion { errno: Errno::ETRUNC, detail, .. }, op: None }
                if p == "udp;ofi_rxd" =>
            {
                assert_eq!((detail.context, detail.len, detail.overflow_len), (claim_p as usize, 50, 0), "{p}");
            }
            other => panic!("{p}: FI_CLAIM: {other:?}"),
        }
        eprintln!("{p}: the claimed buffer holds {:?}", &claimed[..50]);
        assert_eq!(claimed[..50], payload(1, 50)[..], "{p}: the claimed message's bytes");
        // The plain receive takes the next message of the tag.
        tsend(2, T1, 303);
        let c = pair.op(Who::B);
        assert_eq!((c.token, &c.buf[..], c.entry.data()), (302, &payload(2, 50)[..], Some(2)), "{p}");

        // Peek and discard: the message is gone.
        tsend(3, T2, 304);
        let discard_p = ctx_ptr(&mut discard_ctx);
        let start = Instant::now();
        loop {
            // SAFETY: no buffer; the context outlives the endpoint.
            unsafe { trecv_raw(ep, T2, discard_p, None, OpFlags::PEEK | OpFlags::DISCARD) }
                .unwrap_or_else(|e| panic!("{p}: {e}"));
            match pair.next(Who::B) {
                Read::Raw(entry) => {
                    eprintln!("{p}: discarded {entry:?}");
                    assert_eq!((entry.context(), entry.tag()), (discard_p, Some(T2)), "{p}");
                    break;
                }
                Read::Failed { error, op: None } if error.errno() == Errno::ENOMSG => {}
                other => panic!("{p}: FI_PEEK | FI_DISCARD: {other:?}"),
            }
            assert!(start.elapsed() < DEADLINE, "{p}: the message never showed up to FI_PEEK | FI_DISCARD");
        }
        // SAFETY: as above.
        unsafe { trecv_raw(ep, T2, peek_p, None, OpFlags::PEEK) }.unwrap_or_else(|e| panic!("{p}: {e}"));
        let (error, _) = failed(p, pair.next(Who::B));
        assert_eq!(error.errno(), Errno::ENOMSG, "{p}: the discarded message is gone: {error}");
        pair.assert_idle();
        drop(pair);
    });
}

// ---------------------------------------------------------------------------
// 14. How errors print.
// ---------------------------------------------------------------------------

#[test]
fn errors_print_the_call_libfabric_text_and_errno_name() {
    each_provider("errors", &["tcp;ofi_rxm", "sockets"], |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        let e = pair.a.ep.option(EpOption::EFA_RNR_RETRY).expect_err("an efa option elsewhere");
        let text = e.to_string();
        // (sockets answers FI_OPT_CM_DATA_SIZE even on RDM endpoints: 256.)
        eprintln!("{p}: {text}");
        assert_eq!(text, format!("fi_getopt failed: {} (FI_ENOPROTOOPT)", strerror(Errno::ENOPROTOOPT)), "{p}");
        assert_eq!(strerror(Errno::ENOPROTOOPT), "Protocol not available");
        assert!(matches!(e, Error::Call { call: "fi_getopt", errno: Errno::ENOPROTOOPT }), "{p}: {e:?}");

        // A failed operation names the read that found it, the reason, and
        // the provider's text.
        let id = pair.b.ep.recv(Buf::zeroed(8), Address::UNSPEC, 1).expect("fi_recv");
        pair.b.ep.cancel(id).expect("fi_cancel");
        let (e, _) = failed(p, pair.next(Who::B));
        let text = e.to_string();
        eprintln!("{p}: {text}");
        assert!(
            text.starts_with(&format!(
                "fi_cq_read: operation failed: {} (FI_ECANCELED); provider: ",
                strerror(Errno::ECANCELED)
            )),
            "{p}: {text}"
        );

        // A post error prints its error.
        let post = PostError { error: Error::Call { call: "fi_send", errno: Errno::EAGAIN }, buf: Buf::zeroed(1) };
        assert_eq!(post.to_string(), format!("fi_send failed: {} (FI_EAGAIN)", strerror(Errno::EAGAIN)));
        assert!(post.is_again());

        // Refused arguments name the call too.
        let e = pair.a.av.insert(&[1, 2, 3], 2, AvInsertFlags::empty()).expect_err("3 bytes of 2-byte addresses");
        assert!(e.to_string().starts_with("fi_av_insert: invalid argument: "), "{e}");
        assert_eq!(e.errno(), Errno::EINVAL);
    });
}

// ---------------------------------------------------------------------------
// 15. Thread markers.
// ---------------------------------------------------------------------------

fn assert_send_sync<T: Send + Sync>() {}

// Compile-time: the thread-safe flavour of every object crosses threads and
// is shared between them.
const _: fn() = || {
    assert_send_sync::<Endpoint<TaggedEntry, ThreadSafe>>();
    assert_send_sync::<CompletionQueue<TaggedEntry, ThreadSafe>>();
    assert_send_sync::<Domain<ThreadSafe>>();
    assert_send_sync::<AddressVector<ThreadSafe>>();
    assert_send_sync::<EventQueue>();
    assert_send_sync::<Fabric>();
    assert_send_sync::<Info>();
    assert_send_sync::<Buf>();
    assert_send_sync::<Error>();
};

/// lib.rs: "with ThreadSafe … every object is Send + Sync". The endpoint and
/// the completion queue were `Send` only: their `PhantomData<(E, M::Marker)>`
/// carried the entry type, a C struct with pointers that is not `Sync`. With
/// `PhantomData<(fn() -> E, M::Marker)>` they are `Sync` for every entry
/// format (checked at compile time), and a thread works through shared
/// references to them while another sends.
#[test]
fn thread_safe_objects_are_send_and_sync() {
    assert_send_sync::<Endpoint<ContextEntry, ThreadSafe>>();
    assert_send_sync::<Endpoint<MsgEntry, ThreadSafe>>();
    assert_send_sync::<Endpoint<DataEntry, ThreadSafe>>();
    assert_send_sync::<CompletionQueue<ContextEntry, ThreadSafe>>();
    assert_send_sync::<CompletionQueue<MsgEntry, ThreadSafe>>();
    assert_send_sync::<CompletionQueue<DataEntry, ThreadSafe>>();
    each_provider("thread_safe_sync", RDM, |p| {
        let pair: Pair<ThreadSafe> = Pair::open(p, Caps::MSG | Caps::TAGGED);
        let (ep, cq) = (&pair.b.ep, &pair.b.cq);
        std::thread::scope(|s| {
            // B receives on a thread of its own, through `&Endpoint` and `&CompletionQueue`.
            let receiver = s.spawn(move || {
                ep.recv(Buf::zeroed(64), Address::UNSPEC, 1).expect("fi_recv");
                let start = Instant::now();
                loop {
                    match cq.poll() {
                        Ok(Read::Empty) => std::thread::yield_now(),
                        Ok(Read::Op(c)) => return c,
                        other => panic!("{p}: {other:?}"),
                    }
                    assert!(start.elapsed() < DEADLINE, "{p}: nothing received within {DEADLINE:?}");
                }
            });
            // Once the receive is posted, A sends (and polls only its own queue).
            let start = Instant::now();
            while ep.in_flight() == 0 && !receiver.is_finished() {
                assert!(start.elapsed() < DEADLINE, "{p}: the receive was never posted");
                std::thread::yield_now();
            }
            let mut buf = Buf::from(payload(6, 24));
            let start = Instant::now();
            loop {
                match pair.a.ep.send(buf, pair.a.peer, 2) {
                    Ok(_) => break,
                    Err(e) if e.is_again() && start.elapsed() < DEADLINE => {
                        buf = e.buf;
                        pair.pull(Who::A);
                    }
                    Err(e) => panic!("{p}: {}", e.error),
                }
            }
            // Drive A (rxd transmits from its progress) until B has the message.
            while !receiver.is_finished() {
                pair.pull(Who::A);
                std::thread::sleep(Duration::from_millis(1));
            }
            let c = receiver.join().expect("the receiving thread");
            assert_eq!((c.token, &c.buf[..]), (1, &payload(6, 24)[..]), "{p}");
        });
        assert_eq!(pair.op(Who::A).token, 2, "{p}");
        pair.assert_idle();
    });
}

/// Compile-time: `T` is not `Send` (an ambiguous impl when it is).
macro_rules! assert_not_send {
    ($t:ty) => {
        const _: fn() = || {
            trait AmbiguousIfSend<A> {
                fn some_item() {}
            }
            impl<T: ?Sized> AmbiguousIfSend<()> for T {}
            #[allow(dead_code)]
            struct Invalid;
            impl<T: ?Sized + Send> AmbiguousIfSend<Invalid> for T {}
            let _ = <$t as AmbiguousIfSend<_>>::some_item;
        };
    };
}
assert_not_send!(Endpoint<TaggedEntry, Unsync>);
assert_not_send!(CompletionQueue<TaggedEntry, Unsync>);
assert_not_send!(Domain<Unsync>);
assert_not_send!(AddressVector<Unsync>);

#[test]
fn thread_safe_domains_need_fi_thread_safe() {
    each_provider("threading", RDM, |p| {
        let hints = case(p).hints(Caps::MSG | Caps::TAGGED).threading(Threading::DOMAIN);
        let target = if p == "shm" { Target::default() } else { Target::source("127.0.0.1", None) };
        let info = getinfo(&target, &hints)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .into_iter()
            .find(|i| i.provider() == p && i.ep_type() == EpType::RDM)
            .unwrap_or_else(|| panic!("{p}: no info with FI_THREAD_DOMAIN"));
        let fabric = Fabric::open(&info).unwrap_or_else(|e| panic!("{p}: {e}"));
        if p == "tcp;ofi_rxm" {
            // rxm answers FI_THREAD_DOMAIN hints with FI_THREAD_SAFE (a
            // stronger model), so its info opens a thread-safe domain.
            assert_eq!(info.threading(), Threading::SAFE, "{p}");
            Domain::<ThreadSafe>::open(&fabric, &info).unwrap_or_else(|e| panic!("{p}: {e}"));
            return;
        }
        assert_eq!(info.threading(), Threading::DOMAIN, "{p}: the threading asked for");
        let e = Domain::<ThreadSafe>::open(&fabric, &info).expect_err("a thread-safe domain on FI_THREAD_DOMAIN");
        eprintln!("{p}: {e}");
        assert!(matches!(&e, Error::InvalidArgument { call: "fi_domain", .. }), "{p}: {e:?}");
        assert_eq!(e.errno(), Errno::EINVAL);
        // The same info opens an Unsync domain, which works.
        let pair: Pair<Unsync> = Pair::open_with(info, &CqConfig::default());
        pair.round_trip(4);
        drop(fabric);
    });
}

/// The next completion of `who`, which must be a fixed buffer's.
fn fixed_done(pair: &Pair, who: Who) -> (OpKind, u64, usize) {
    match pair.next(who) {
        Read::Fixed { kind, token, entry } => (kind, token, entry.len()),
        other => panic!("{}: expected a fixed buffer's completion on {who:?}, got {other:?}", pair.provider),
    }
}

/// A fixed buffer is posted again and again without moving: while posted
/// its owner cannot see it, its completion hands it back with the received
/// length, and misuse (posting twice, another endpoint's buffer) is refused.
#[test]
fn fixed_buffers_are_reposted_in_place() {
    each_provider("fixed", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        let mut rx = pair.b.ep.fix(Buf::zeroed(512)).unwrap_or_else(|e| panic!("{p}: {e}"));
        let mut tx = pair.a.ep.fix(Buf::zeroed(512)).unwrap_or_else(|e| panic!("{p}: {e}"));
        let (rx_at, tx_at) = (rx.get().map(|b| b.as_ptr()), tx.get().map(|b| b.as_ptr()));
        for seq in 0..50u64 {
            let tagged = seq % 2 == 1;
            let data = payload(seq, 1 + (seq as usize * 37) % 512);
            if tagged {
                pair.b.ep.trecv_fixed(&mut rx, Address::UNSPEC, 7, 0, seq).expect("fi_trecv");
            } else {
                pair.b.ep.recv_fixed(&mut rx, Address::UNSPEC, seq).expect("fi_recv");
            }
            assert!(rx.is_posted() && rx.get().is_none(), "{p}: a posted buffer is libfabric's");
            let again = pair.b.ep.recv_fixed(&mut rx, Address::UNSPEC, 0).expect_err("posted twice");
            assert!(matches!(again, Error::InvalidArgument { call: "fi_recv", .. }), "{p}: {again:?}");
            let buf = tx.get_mut().expect("idle");
            buf.resize(data.len()).expect("within capacity");
            buf.copy_from_slice(&data);
            pair.retry("send_fixed", || {
                if tagged {
                    pair.a.ep.tsend_fixed(&mut tx, pair.a.peer, 7, 100 + seq)
                } else {
                    pair.a.ep.send_fixed(&mut tx, pair.a.peer, 100 + seq)
                }
            });
            let send_kind = if tagged { OpKind::TaggedSend } else { OpKind::Send };
            // (A send's length field: 0 on some providers, the bytes sent on others.)
            let (kind, token, _) = fixed_done(&pair, Who::A);
            assert_eq!((kind, token), (send_kind, 100 + seq), "{p}");
            let recv_kind = if tagged { OpKind::TaggedRecv } else { OpKind::Recv };
            assert_eq!(fixed_done(&pair, Who::B), (recv_kind, seq, data.len()), "{p}");
            assert_eq!(rx.get().map(|b| &b[..]), Some(&data[..]), "{p}: message {seq}");
        }
        assert_eq!((rx.get().map(|b| b.as_ptr()), tx.get().map(|b| b.as_ptr())), (rx_at, tx_at), "{p}: never moved");
        let foreign = pair.a.ep.recv_fixed(&mut rx, Address::UNSPEC, 0).expect_err("another endpoint's buffer");
        assert!(matches!(foreign, Error::InvalidArgument { .. }), "{p}: {foreign:?}");
        pair.assert_idle();
        drop((rx, tx));
    });
}

/// What `poll_fixed` read on B while A was being driven, in order.
type FixedStash = RefCell<VecDeque<FixedRead<TaggedEntry>>>;

/// Drives B through `poll_fixed` only (nothing else ever reads B's queue in
/// these tests), keeping what it reads.
fn drive_b_fixed(pair: &Pair, stash: &FixedStash) -> bool {
    assert!(pair.b.pending.borrow().is_empty(), "{}: B's queue was read by `poll`", pair.provider);
    match pair.b.cq.poll_fixed() {
        Ok(FixedRead::Empty) => false,
        Ok(read) => {
            stash.borrow_mut().push_back(read);
            true
        }
        Err(e) => panic!("{}: poll_fixed: {e}", pair.provider),
    }
}

/// The next completion of B read with `poll_fixed`; A is driven meanwhile
/// (its completions kept).
fn next_fixed(pair: &Pair, stash: &FixedStash) -> FixedRead<TaggedEntry> {
    let start = Instant::now();
    loop {
        if let Some(read) = stash.borrow_mut().pop_front() {
            return read;
        }
        if !drive_b_fixed(pair, stash) {
            pair.pull(Who::A);
        }
        assert!(start.elapsed() < DEADLINE, "{}: no completion on B within {DEADLINE:?}", pair.provider);
    }
}

/// Sends `data` from A to `dest`; B is driven only through `poll_fixed`.
fn send_from_a(pair: &Pair, stash: &FixedStash, data: &[u8], dest: Address, token: u64) {
    let start = Instant::now();
    let mut buf = Buf::from(data);
    loop {
        match pair.a.ep.send(buf, dest, token) {
            Ok(_) => return,
            Err(e) if e.is_again() && start.elapsed() < DEADLINE => {
                buf = e.buf;
                pair.pull(Who::A);
                drive_b_fixed(pair, stash);
            }
            Err(e) => panic!("{}: fi_send: {}", pair.provider, e.error),
        }
    }
}

/// The token of A's next completion; B is driven only through `poll_fixed`.
fn done_on_a(pair: &Pair, stash: &FixedStash) -> u64 {
    let start = Instant::now();
    loop {
        if let Some(read) = pair.a.pending.borrow_mut().pop_front() {
            match read {
                Read::Op(done) => return done.token,
                other => panic!("{}: expected A's send, got {other:?}", pair.provider),
            }
        }
        if !pair.pull(Who::A) {
            drive_b_fixed(pair, stash);
        }
        assert!(start.elapsed() < DEADLINE, "{}: no completion on A within {DEADLINE:?}", pair.provider);
    }
}

/// `poll_fixed` finishes a fixed buffer's completion in place and returns
/// its kind, token and entry; every other completion (a moved buffer's, a
/// failure) comes back whole, as `poll` would have read it.
#[test]
fn poll_fixed_answers_fixed_buffers_and_boxes_the_rest() {
    each_provider("poll_fixed", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        let stash = FixedStash::default();
        let mut rx = pair.b.ep.fix(Buf::zeroed(256)).unwrap_or_else(|e| panic!("{p}: {e}"));
        for seq in 0..20u64 {
            let data = payload(seq, 1 + seq as usize * 11);
            let fixed = seq % 2 == 0;
            if fixed {
                pair.b.ep.recv_fixed(&mut rx, Address::UNSPEC, seq).expect("fi_recv");
            } else {
                pair.b.ep.recv(Buf::zeroed(256), Address::UNSPEC, seq).expect("fi_recv");
            }
            send_from_a(&pair, &stash, &data, pair.a.peer, 1000 + seq);
            match (fixed, next_fixed(&pair, &stash)) {
                (true, FixedRead::Fixed { kind: OpKind::Recv, token, entry }) => {
                    assert_eq!((token, entry.len()), (seq, data.len()), "{p}");
                    assert_eq!(rx.get().map(|b| &b[..]), Some(&data[..]), "{p}: message {seq}");
                }
                // A moved buffer comes back with its completion, boxed.
                (false, FixedRead::Other(read)) => match *read {
                    Read::Op(done) => {
                        assert_eq!((done.kind, done.token, &done.buf[..]), (OpKind::Recv, seq, &data[..]))
                    }
                    other => panic!("{p}: expected receive {seq}, got {other:?}"),
                },
                (_, other) => panic!("{p}: expected receive {seq} (fixed: {fixed}), got {other:?}"),
            }
            assert_eq!(done_on_a(&pair, &stash), 1000 + seq, "{p}: the send");
        }

        // A second endpoint on B's queue: its fixed buffers' completions
        // (found past the first endpoint's table) are answered the same way.
        let second = Endpoint::open(
            &pair.domain,
            &pair.info,
            Bindings { cq: &pair.b.cq, av: Some(&pair.b.av), eq: None, tx_cq: None },
        )
        .unwrap_or_else(|e| panic!("{p}: {e}"));
        let to_second = pair.a.av.insert_one(&second.name().expect("fi_getname")).expect("fi_av_insert");
        let mut rx2 = second.fix(Buf::zeroed(256)).unwrap_or_else(|e| panic!("{p}: {e}"));
        for seq in 0..4u64 {
            second.recv_fixed(&mut rx2, Address::UNSPEC, 500 + seq).expect("fi_recv");
            let data = payload(seq, 33);
            send_from_a(&pair, &stash, &data, to_second, 600 + seq);
            match next_fixed(&pair, &stash) {
                FixedRead::Fixed { kind: OpKind::Recv, token, .. } => assert_eq!(token, 500 + seq, "{p}"),
                other => panic!("{p}: expected the second endpoint's fixed receive, got {other:?}"),
            }
            assert_eq!(rx2.get().map(|b| &b[..]), Some(&data[..]), "{p}: message {seq} to the second endpoint");
            assert_eq!(done_on_a(&pair, &stash), 600 + seq, "{p}: the send");
        }
        drop(rx2);
        drop(second);

        // A failed fixed operation is not a success: it comes back boxed too.
        pair.b.ep.recv_fixed(&mut rx, Address::UNSPEC, 99).expect("fi_recv");
        pair.b.ep.cancel_fixed(&rx).unwrap_or_else(|e| panic!("{p}: {e}"));
        match next_fixed(&pair, &stash) {
            FixedRead::Other(read) => match *read {
                Read::FixedFailed { error, kind: OpKind::Recv, token: 99 } => {
                    assert_eq!(error.errno(), Errno::ECANCELED, "{p}: {error}")
                }
                other => panic!("{p}: expected the cancelled fixed receive, got {other:?}"),
            },
            other => panic!("{p}: expected the cancelled fixed receive, got {other:?}"),
        }
        assert!(rx.get().is_some(), "{p}: the cancelled buffer is its owner's again");
        pair.assert_idle();
    });
}

/// Cancelling a posted fixed buffer completes it with `FI_ECANCELED` and
/// gives it back; dropping the handle of a posted buffer keeps its memory
/// until the completion, which then frees the slot.
#[test]
fn fixed_buffers_cancel_and_outlive_their_handles_while_posted() {
    each_provider("fixed cancel", RDM, |p| {
        let pair: Pair = Pair::open(p, Caps::MSG | Caps::TAGGED);
        let idle = pair.b.ep.in_flight();
        let mut rx = pair.b.ep.fix(Buf::zeroed(64)).expect("fix");
        pair.b.ep.recv_fixed(&mut rx, Address::UNSPEC, 5).expect("fi_recv");
        pair.b.ep.cancel_fixed(&rx).unwrap_or_else(|e| panic!("{p}: {e}"));
        match pair.next(Who::B) {
            Read::FixedFailed { error, kind: OpKind::Recv, token: 5 } => {
                assert_eq!(error.errno(), Errno::ECANCELED, "{p}: {error}")
            }
            other => panic!("{p}: expected the cancelled fixed receive, got {other:?}"),
        }
        assert!(rx.get().is_some(), "{p}: the cancelled buffer is its owner's again");
        assert!(pair.b.ep.cancel_fixed(&rx).is_ok(), "{p}: nothing in flight: nothing to cancel");

        // Dropped while posted: the message still lands in live memory.
        pair.b.ep.recv_fixed(&mut rx, Address::UNSPEC, 6).expect("fi_recv");
        drop(rx);
        assert_eq!(pair.b.ep.in_flight(), idle + 1, "{p}: the slot waits for its completion");
        pair.retry("inject", || pair.a.ep.inject(b"orphan", pair.a.peer));
        assert_eq!(fixed_done(&pair, Who::B), (OpKind::Recv, 6, 6), "{p}");
        assert_eq!(pair.b.ep.in_flight(), idle, "{p}: the completion freed the orphaned slot");
        pair.round_trip(3);
        pair.assert_idle();
    });
}
