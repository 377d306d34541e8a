//! Eight threads sharing one `FI_THREAD_SAFE` domain: each posts tagged
//! receives on one endpoint and tagged sends to it from another, and every
//! thread reads completions from both shared queues, whoever posted them.
//! At the end every message arrived exactly once with its own payload,
//! every send completed, and nothing is left in flight.
//!
//! `LIBFABRIC_THREADS_MESSAGES` sets the messages per thread (default
//! 2,000) for a longer run; `LIBFABRIC_THREADS_PROVIDERS` (comma-separated)
//! narrows the providers (the DRD lane runs them one at a time), and
//! `LIBFABRIC_THREADS_DEADLINE_SECS` replaces the 120 s deadline.
//!
//! `scripts/drd` runs it under valgrind's DRD race detector, built with the
//! `drd` feature (see CI.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libfabric::{
    getinfo, Address, AddressVector, AvType, Bindings, Buf, Caps, CompletionQueue, CqConfig, Domain, Endpoint, EpType,
    Fabric, Hints, MrMode, Read, TaggedEntry, Target, Threading,
};
use libfabric_tests::payload;

const THREADS: u64 = 8;
/// Operations each thread keeps in flight.
const WINDOW: u64 = 8;
/// How long a thread may take, unless `LIBFABRIC_THREADS_DEADLINE_SECS`
/// says otherwise (the DRD lane: its run time varies threefold with how
/// valgrind schedules the spinning threads).
fn deadline() -> Duration {
    let secs = std::env::var("LIBFABRIC_THREADS_DEADLINE_SECS")
        .map(|v| v.parse().expect("LIBFABRIC_THREADS_DEADLINE_SECS: whole seconds"))
        .unwrap_or(120);
    Duration::from_secs(secs)
}
const PROVIDERS: &[&str] = &["tcp;ofi_rxm", "udp;ofi_rxd", "shm", "sockets"];

fn messages_per_thread() -> u64 {
    std::env::var("LIBFABRIC_THREADS_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

/// The tag (and payload seed) of message `seq` of thread `thread`.
fn tag(thread: u64, seq: u64) -> u64 {
    (thread << 32) | seq
}

fn length(tag: u64) -> usize {
    1 + (tag as usize * 29) % 2048
}

struct Side {
    ep: Endpoint<TaggedEntry>,
    cq: CompletionQueue<TaggedEntry>,
    peer: Address,
    _av: AddressVector,
}

/// What the threads found, together.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    received: AtomicU64,
    wrong: Mutex<Vec<String>>,
}

impl Tally {
    /// Accounts one completion, whichever thread's operation it was.
    fn take(&self, read: Read<TaggedEntry>) -> bool {
        match read {
            Read::Empty => return false,
            Read::Op(done) if done.kind == libfabric::OpKind::TaggedSend => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Read::Op(done) => {
                let tag = done.entry.0.tag;
                if done.token != tag || done.buf[..] != payload(tag, length(tag))[..] {
                    self.wrong.lock().unwrap().push(format!(
                        "message {tag:#x}: token {} len {}",
                        done.token,
                        done.buf.len()
                    ));
                }
                self.received.fetch_add(1, Ordering::Relaxed);
            }
            other => self.wrong.lock().unwrap().push(format!("{other:?}")),
        }
        true
    }
}

fn open(provider: &str) -> Option<(Side, Side, Domain, Fabric)> {
    let hints = Hints::new()
        .and_then(|h| h.provider(provider))
        .expect("hints")
        .ep_type(EpType::RDM)
        .caps(Caps::MSG | Caps::TAGGED)
        .threading(Threading::SAFE)
        .mr_mode(MrMode::LOCAL | MrMode::VIRT_ADDR | MrMode::ALLOCATED | MrMode::PROV_KEY | MrMode::ENDPOINT);
    let target = if provider == "shm" { Target::default() } else { Target::source("127.0.0.1", None) };
    let info = getinfo(&target, &hints).expect("fi_getinfo").into_iter().find(|i| i.provider() == provider)?;
    let fabric = Fabric::open(&info).expect("fabric");
    let domain: Domain = Domain::open(&fabric, &info).expect("a FI_THREAD_SAFE domain");
    let side = || {
        let cq = CompletionQueue::open(&domain, &CqConfig { size: 1024, ..CqConfig::default() }).expect("cq");
        let av = AddressVector::open(&domain, AvType::UNSPEC).expect("av");
        let ep = Endpoint::open(&domain, &info, Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None })
            .expect("endpoint");
        (ep, cq, av)
    };
    let ((ep_a, cq_a, av_a), (ep_b, cq_b, av_b)) = (side(), side());
    let to_b = av_a.insert_one(&ep_b.name().expect("name")).expect("insert");
    let to_a = av_b.insert_one(&ep_a.name().expect("name")).expect("insert");
    Some((
        Side { ep: ep_a, cq: cq_a, peer: to_b, _av: av_a },
        Side { ep: ep_b, cq: cq_b, peer: to_a, _av: av_b },
        domain,
        fabric,
    ))
}

/// One thread: its own messages, with a window in flight, reading every
/// completion it comes across on either queue.
fn worker(thread: u64, n: u64, a: &Side, b: &Side, tally: &Tally) {
    let start = Instant::now();
    let deadline = deadline();
    let progress = || {
        let mut any = tally.take(a.cq.poll().expect("poll A"));
        any |= tally.take(b.cq.poll().expect("poll B"));
        assert!(start.elapsed() < deadline, "thread {thread}: stuck");
        any
    };
    for seq in 0..n {
        let t = tag(thread, seq);
        let mut rx = Buf::zeroed(2048);
        loop {
            match b.ep.trecv(rx, Address::UNSPEC, t, 0, t) {
                Ok(_) => break,
                Err(e) if e.is_again() => {
                    rx = e.buf;
                    progress();
                }
                Err(e) => panic!("thread {thread}: fi_trecv: {}", e.error),
            }
        }
        let mut tx = Buf::from(payload(t, length(t)));
        loop {
            match a.ep.tsend(tx, a.peer, t, 0) {
                Ok(_) => break,
                Err(e) if e.is_again() => {
                    tx = e.buf;
                    progress();
                }
                Err(e) => panic!("thread {thread}: fi_tsend: {}", e.error),
            }
        }
        // Keep about WINDOW of this thread's messages in flight.
        while a.ep.in_flight() as u64 > WINDOW * THREADS || b.ep.in_flight() as u64 > WINDOW * THREADS {
            progress();
        }
    }
    let total = n * THREADS;
    while tally.sent.load(Ordering::Relaxed) < total || tally.received.load(Ordering::Relaxed) < total {
        progress();
    }
}

#[test]
fn eight_threads_share_one_thread_safe_domain() {
    let n = messages_per_thread();
    let only = std::env::var("LIBFABRIC_THREADS_PROVIDERS").ok();
    for &provider in PROVIDERS.iter().filter(|p| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == **p))) {
        let Some((a, b, _domain, _fabric)) = open(provider) else {
            eprintln!("skipped {provider}: fi_getinfo offers no FI_THREAD_SAFE RDM endpoint");
            continue;
        };
        let tally = Tally::default();
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..THREADS)
                .map(|thread| {
                    let (a, b, tally) = (&a, &b, &tally);
                    s.spawn(move || worker(thread, n, a, b, tally))
                })
                .collect();
            // Joined one by one (the scope would wait anyway): a join is a
            // pthread_join, which valgrind's DRD follows, and the scope's
            // own wait is not (see `scripts/drd`).
            for worker in workers {
                if let Err(panic) = worker.join() {
                    std::panic::resume_unwind(panic);
                }
            }
        });
        let wrong = tally.wrong.lock().unwrap();
        assert!(wrong.is_empty(), "{provider}: {} wrong completions, first: {:?}", wrong.len(), wrong.first());
        assert_eq!(tally.sent.load(Ordering::Relaxed), n * THREADS, "{provider}: sends completed");
        assert_eq!(tally.received.load(Ordering::Relaxed), n * THREADS, "{provider}: messages received");
        assert_eq!((a.ep.in_flight(), b.ep.in_flight()), (0, 0), "{provider}: operations left in flight");
        eprintln!("{provider}: {THREADS} threads, {} messages, all exact", n * THREADS);
    }
}
