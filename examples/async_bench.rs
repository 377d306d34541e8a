//! The async transport's latency and message rate, for `cargo xtask bench`
//! to set beside the synchronous pingpong and msgrate on the same provider.
//!
//! - `-m latency`: `-I` requests of `-S` bytes, one at a time, each answered
//!   with its own bytes ([`Peer::request`] against [`Node::serve`]); prints
//!   the one-way time (half the round trip), as `fi_pingpong` does.
//! - `-m rate`: `-I` one-way messages of `-S` bytes from `-W` tasks, each
//!   with one send in flight, to a receiving task that keeps `-W` receives
//!   posted ([`Node::incoming`]); timed until a last request confirms the
//!   server has them all.
//!
//! ```text
//! cargo run --release -p libfabric-examples --example async_bench -- -p shm -m rate -W 16 -B 9300            # server
//! cargo run --release -p libfabric-examples --example async_bench -- -p shm -m rate -W 16 -P 9300 127.0.0.1  # client
//! ```
//!
//! `--busy` makes the driver busy-poll ([`ProgressMode::BusyPoll`]) instead
//! of sleeping on the queue's wait descriptor. Both sides run on one thread
//! (a current-thread runtime), as the synchronous tools do. The client
//! prints one line: `mode provider size iterations window seconds usec/xfer msgs/s`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use libfabric::driver::ProgressMode;
use libfabric::transport::{Node, Peer, TransportConfig};
use libfabric::Buf;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Requests before the timed ones (connection setup, first-touch of buffers).
const WARMUP: u64 = 100;
/// How long a server waits for its client's closing message at most.
const SERVER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);
/// The largest message (`-S`).
const MAX_SIZE: usize = 1 << 20;

#[derive(Debug, Clone)]
struct Options {
    provider: String,
    rate: bool,
    size: usize,
    iterations: u64,
    window: usize,
    busy: bool,
    port: u16,
    server: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        provider: "tcp;ofi_rxm".into(),
        rate: false,
        size: 64,
        iterations: 10_000,
        window: 16,
        busy: false,
        port: 9300,
        server: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{arg}: not a number: {v}"));
        match arg.as_str() {
            "-p" => o.provider = value()?,
            "-m" => {
                o.rate = match value()?.as_str() {
                    "latency" => false,
                    "rate" => true,
                    other => return Err(format!("-m: latency or rate, not {other}")),
                }
            }
            "-S" => {
                o.size = usize::try_from(number(value()?)?)
                    .ok()
                    .filter(|&n| n <= MAX_SIZE)
                    .ok_or_else(|| format!("{arg}: at most {MAX_SIZE} bytes"))?
            }
            "-I" => o.iterations = number(value()?)?.max(1),
            "-W" => o.window = number(value()?)?.max(1) as usize,
            "-B" | "-P" => o.port = u16::try_from(number(value()?)?).map_err(|_| format!("{arg}: not a port"))?,
            "--busy" => o.busy = true,
            host if !host.starts_with('-') => o.server = Some(host.to_string()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    // A one-way message of no bytes ends the server: real ones have some.
    o.size = o.size.max(1);
    Ok(o)
}

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("async_bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("async_bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On a task rather than in `block_on`: the runtime polls its tasks
    // first and the `block_on` future only between rounds of them.
    let result = runtime.block_on(async {
        let o = o.clone();
        let work = tokio::spawn(async move {
            match o.server.clone() {
                Some(host) => client(&o, &host).await,
                None => server(&o).await,
            }
        });
        work.await.unwrap_or_else(|e| Err(format!("the benchmark task: {e}")))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("async_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open(o: &Options) -> Result<Node, String> {
    let mut config = TransportConfig::new(&o.provider);
    if o.provider != "shm" {
        config = config.node("127.0.0.1");
    }
    config.peer_credits = config.peer_credits.max(o.window);
    config.max_message = config.max_message.max(o.size);
    if o.busy {
        config.driver.mode = ProgressMode::BusyPoll;
    }
    Node::open(config).map_err(|e| format!("open a {} node: {e}", o.provider))
}

/// Answers requests with their own bytes and counts one-way messages, until
/// a message of no bytes arrives (or [`SERVER_DEADLINE`] passes).
async fn server(o: &Options) -> Result<(), String> {
    let exchange = TcpListener::bind(("127.0.0.1", o.port)).await.map_err(|e| format!("listen: {e}"))?;
    let node = open(o)?;
    // Receives are posted (serve, the receiving task) before the peer can
    // send: a request that came first would wait unexpected, where shm may
    // never match it (tests/libfabric-known-issues.md, 4).
    let fence = Arc::new(Fence::default());
    if o.rate {
        // A request is the client's fence, carrying the count of messages it
        // sent: answered once they are all in.
        let fence = fence.clone();
        tokio::spawn(serve(node.clone(), move |request| {
            let fence = fence.clone();
            async move {
                fence.reached(count_in(&request.body)).await;
                request.body
            }
        }));
    } else {
        // An echo, as the synchronous pingpong's server is.
        tokio::spawn(serve(node.clone(), |request| async move { request.body }));
    }
    // One receiving task, `-W` receives kept posted (one in latency mode),
    // reporting how it ended: the closing message, or an error.
    let depth = if o.rate { o.window } else { 1 };
    let (ended, mut end) = tokio::sync::mpsc::channel::<Result<(), String>>(1);
    let (receiving, size) = (node.clone(), o.size);
    tokio::spawn(async move {
        let mut incoming = receiving.incoming(depth, size);
        let outcome = loop {
            match incoming.next().await {
                Ok((_, msg)) if msg.is_empty() => break Ok(()),
                Ok((_, msg)) => {
                    fence.arrived();
                    incoming.recycle(msg);
                }
                Err(e) if e.error.is_timeout() => {}
                Err(e) => break Err(format!("recv: {e}")),
            }
        };
        let _ = ended.send(outcome).await;
    });
    node.accept_peer(&exchange).await.map_err(|e| format!("accept the peer: {e}"))?;
    match tokio::time::timeout(SERVER_DEADLINE, end.recv()).await {
        Ok(Some(outcome)) => outcome,
        Ok(None) => Err("every receiving task ended without a word".into()),
        Err(_) => Err(format!("no closing message within {SERVER_DEADLINE:?}")),
    }
}

/// Answers requests with `handler` until serving fails.
async fn serve<F, Fut>(node: Node, handler: F)
where
    F: Fn(libfabric::transport::Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Buf> + Send + 'static,
{
    if let Err(e) = node.serve(handler).await {
        eprintln!("async_bench: serve: {e}");
    }
}

/// One-way messages counted in, and a rate fence waiting for a count.
struct Fence {
    received: AtomicU64,
    /// The count a fence waits for (none: u64::MAX); receivers wake the
    /// fence only once it is reached, not on every message.
    wanted: AtomicU64,
    wake: Notify,
}

impl Default for Fence {
    fn default() -> Self {
        Fence { received: AtomicU64::new(0), wanted: AtomicU64::new(u64::MAX), wake: Notify::new() }
    }
}

impl Fence {
    /// One more message is in.
    fn arrived(&self) {
        if self.received.fetch_add(1, Ordering::SeqCst) + 1 >= self.wanted.load(Ordering::SeqCst) {
            self.wake.notify_waiters();
        }
    }

    /// Returns once `expected` messages are in.
    async fn reached(&self, expected: u64) {
        if self.received.load(Ordering::SeqCst) >= expected {
            return;
        }
        // SeqCst with the receivers' add and load: either a receiver sees
        // this wish, or this sees its count.
        self.wanted.store(expected, Ordering::SeqCst);
        loop {
            // Registered before the check, so no wake-up is missed.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.received.load(Ordering::SeqCst) >= expected {
                return;
            }
            woken.await;
        }
    }
}

/// The message count a rate fence carries (8 bytes, big-endian).
fn count_in(body: &[u8]) -> u64 {
    body.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes)
}

async fn client(o: &Options, host: &str) -> Result<(), String> {
    let node = open(o)?;
    let peer = node.dial((host, o.port)).await.map_err(|e| format!("dial {host}:{}: {e}", o.port))?;
    let (seconds, round_trips) = if o.rate { rate(o, &peer).await? } else { latency(o, &peer).await? };
    peer.send(Buf::zeroed(0)).await.map_err(|e| format!("the closing message: {e}"))?;
    let iterations = o.iterations as f64;
    let usec = if o.rate { seconds * 1e6 / iterations } else { seconds * 1e6 / round_trips as f64 / 2.0 };
    println!(
        "{} {} {} {} {} {:.6} {:.3} {:.0}",
        if o.rate { "rate" } else { "latency" },
        o.provider.replace(' ', "_"),
        o.size,
        o.iterations,
        if o.rate { o.window } else { 1 },
        seconds,
        usec,
        iterations / seconds
    );
    Ok(())
}

/// One request at a time, the same two buffers each time (a reply returns
/// both), so the loop allocates nothing.
async fn latency(o: &Options, peer: &Peer) -> Result<(f64, u64), String> {
    let (mut body, mut answer) = (Buf::zeroed(o.size), Buf::zeroed(o.size));
    let mut start = Instant::now();
    for i in 0..WARMUP + o.iterations {
        if i == WARMUP {
            start = Instant::now();
        }
        let reply = peer.request(body, answer).await.map_err(|e| format!("request {i}: {e}"))?;
        (body, answer) = (reply.request, reply.answer);
        answer.resize(o.size).map_err(|e| format!("resize: {e}"))?;
    }
    Ok((start.elapsed().as_secs_f64(), o.iterations))
}

/// `-W` senders, each with its own buffer and one send in flight.
async fn rate(o: &Options, peer: &Peer) -> Result<(f64, u64), String> {
    let start = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    let each = o.iterations / o.window as u64;
    for s in 0..o.window as u64 {
        let (peer, size) = (peer.clone(), o.size);
        let count = if s == 0 { each + o.iterations % o.window as u64 } else { each };
        senders.spawn(async move {
            let mut buf = Buf::zeroed(size);
            for i in 0..count {
                buf = peer.send(buf).await.map_err(|e| format!("send {i}: {e}"))?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(sent) = senders.join_next().await {
        sent.map_err(|e| format!("sender: {e}"))??;
    }
    let count = Buf::from(o.iterations.to_be_bytes().to_vec());
    peer.request(count, Buf::zeroed(8)).await.map_err(|e| format!("the fence: {e}"))?;
    Ok((start.elapsed().as_secs_f64(), o.iterations))
}
