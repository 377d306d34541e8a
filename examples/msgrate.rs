//! Message rate with many operations in flight and many peers: how the cost
//! per message grows with the work. One client streams `-N` messages of
//! `-S` bytes to `-n` server endpoints (one address vector holds them all,
//! used round-robin), keeping up to `-W` sends in flight, after one untimed
//! message to each endpoint (which sets up the provider's per-peer state); each server
//! endpoint keeps `-W` receives posted. Buffers are [`FixedBuf`]s: posting
//! moves nothing and allocates nothing.
//!
//! ```text
//! cargo run --release -p libfabric-examples --example msgrate -- -p shm -n 16 -W 64          # server
//! cargo run --release -p libfabric-examples --example msgrate -- -p shm -n 16 -W 64 127.0.0.1 # client
//! ```
//!
//! The client prints one line: `peers window size messages seconds msgs/s usec/msg`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use libfabric::{
    getinfo, Address, AddressVector, AvType, Bindings, Buf, Caps, CompletionQueue, CqConfig, Domain, Endpoint, EpType,
    Fabric, FixedBuf, FixedRead, Hints, Info, MrMode, MsgEntry, Target, Unsync, WaitObj,
};
use libfabric_examples::fi_pingpong::{Ctrl, DEFAULT_PORT};

type Ep = Endpoint<MsgEntry, Unsync>;

/// How long the run may go without a completion before it fails.
const STALL: Duration = Duration::from_secs(30);
/// How long the client waits for the server on the control connection: the
/// server opens its endpoints first (about 16 s for 1,024 on udp;ofi_rxd)
/// and may finish receiving well after the client's last send completed
/// (over 30 s behind with 1,024 rxd peers). The server fails by itself when
/// it stalls (`STALL`), which closes the connection, so this wait ends then.
const SETTLE: Duration = Duration::from_secs(600);

struct Options {
    provider: String,
    peers: usize,
    window: usize,
    messages: u64,
    size: usize,
    port: u16,
    server: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        provider: "shm".into(),
        peers: 1,
        window: 16,
        messages: 100_000,
        size: 64,
        port: DEFAULT_PORT,
        server: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{arg}: not a number: {v}"));
        match arg.as_str() {
            "-p" => o.provider = value()?,
            "-n" => o.peers = number(value()?)?.max(1) as usize,
            "-W" => o.window = number(value()?)?.max(1) as usize,
            "-N" => o.messages = number(value()?)?,
            "-S" => o.size = number(value()?)? as usize,
            "-B" | "-P" => o.port = number(value()?)? as u16,
            "-h" => {
                return Err(
                    "usage: msgrate [-p provider] [-n peers] [-W window] [-N messages] [-S size] [-B|-P port] [server]"
                        .into(),
                )
            }
            other if !other.starts_with('-') => o.server = Some(other.to_string()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// Fabric, domain, one completion queue and one address vector; endpoints
/// are opened on them.
struct Fabricated {
    info: Info,
    domain: Domain<Unsync>,
    cq: CompletionQueue<MsgEntry, Unsync>,
    av: AddressVector<Unsync>,
    _fabric: Fabric,
}

impl Fabricated {
    fn open(o: &Options) -> Result<Fabricated, String> {
        let hints = Hints::new()
            .and_then(|h| h.provider(&o.provider))
            .map_err(|e| e.to_string())?
            .ep_type(EpType::RDM)
            .caps(Caps::MSG)
            .mr_mode(MrMode::LOCAL | MrMode::ALLOCATED | MrMode::PROV_KEY | MrMode::VIRT_ADDR);
        let info = getinfo(&Target::default(), &hints)
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
            .ok_or_else(|| format!("fi_getinfo: {} offers no RDM endpoint", o.provider))?;
        let fabric = Fabric::open(&info).map_err(|e| e.to_string())?;
        let domain: Domain<Unsync> = Domain::open(&fabric, &info).map_err(|e| e.to_string())?;
        let depth = (o.window * o.peers).clamp(64, 1 << 16);
        let cq =
            CompletionQueue::open(&domain, &CqConfig { size: depth, wait_obj: WaitObj::NONE, ..CqConfig::default() })
                .map_err(|e| e.to_string())?;
        let av = AddressVector::open(&domain, AvType::UNSPEC).map_err(|e| e.to_string())?;
        Ok(Fabricated { info, domain, cq, av, _fabric: fabric })
    }

    fn endpoint(&self) -> Result<Ep, String> {
        Endpoint::open(&self.domain, &self.info, Bindings { cq: &self.cq, av: Some(&self.av), eq: None, tx_cq: None })
            .map_err(|e| e.to_string())
    }
}

/// The server: `peers` endpoints, each with `window` receives posted and
/// reposted as messages arrive.
fn serve(o: &Options) -> Result<(), String> {
    let mut ctrl = Ctrl::accept(o.port, false).map_err(|e| e.to_string())?;
    ctrl.set_read_timeout(STALL).map_err(|e| e.to_string())?;
    let f = Fabricated::open(o)?;
    let mut eps = Vec::with_capacity(o.peers);
    for _ in 0..o.peers {
        let ep = f.endpoint()?;
        let mut bufs = Vec::with_capacity(o.window);
        for _ in 0..o.window {
            bufs.push(ep.fix(Buf::zeroed(o.size.max(1))).map_err(|e| e.to_string())?);
        }
        eps.push((ep, bufs));
    }
    for (e, (ep, bufs)) in eps.iter_mut().enumerate() {
        for (i, buf) in bufs.iter_mut().enumerate() {
            ep.recv_fixed(buf, Address::UNSPEC, token(e, i)).map_err(|e| e.to_string())?;
        }
    }
    ctrl.exchange_count(0).map_err(|e| e.to_string())?; // the client learns nothing; keeps step
    for (ep, _) in &eps {
        ctrl.send_name(&ep.name().map_err(|e| e.to_string())?, 0).map_err(|e| e.to_string())?;
    }
    ctrl.sync().map_err(|e| e.to_string())?;
    let mut received = 0u64;
    let mut last = Instant::now();
    // The client's warm-up message to each endpoint, then the timed ones.
    while received < o.messages + o.peers as u64 {
        match f.cq.poll_fixed().map_err(|e| e.to_string())? {
            FixedRead::Fixed { token, .. } => {
                let (e, i) = ((token >> 32) as usize, (token & 0xffff_ffff) as usize);
                let (ep, bufs) = &mut eps[e];
                ep.recv_fixed(&mut bufs[i], Address::UNSPEC, token).map_err(|e| e.to_string())?;
                received += 1;
                last = Instant::now();
            }
            FixedRead::Empty if last.elapsed() > STALL => return Err(format!("stalled after {received} messages")),
            FixedRead::Empty => {}
            other => return Err(format!("unexpected completion: {other:?}")),
        }
    }
    ctrl.sync().map_err(|e| e.to_string())
}

fn token(endpoint: usize, slot: usize) -> u64 {
    ((endpoint as u64) << 32) | slot as u64
}

/// The client: one endpoint, every server endpoint in its address vector,
/// up to `window` sends in flight.
fn stream(o: &Options, host: &str) -> Result<(), String> {
    let mut ctrl = Ctrl::connect(host, o.port, 0, false).map_err(|e| e.to_string())?;
    ctrl.set_read_timeout(SETTLE).map_err(|e| e.to_string())?;
    let f = Fabricated::open(o)?;
    let ep = f.endpoint()?;
    ctrl.exchange_count(0).map_err(|e| e.to_string())?;
    let mut peers = Vec::with_capacity(o.peers);
    for _ in 0..o.peers {
        let (name, _) = ctrl.recv_name().map_err(|e| e.to_string())?;
        peers.push(f.av.insert_one(&name).map_err(|e| e.to_string())?);
    }
    let mut bufs = Vec::with_capacity(o.window);
    for _ in 0..o.window {
        let mut buf = ep.fix(Buf::zeroed(o.size.max(1))).map_err(|e| e.to_string())?;
        if let Some(b) = buf.get_mut() {
            b.resize(o.size).map_err(|e| e.to_string())?;
        }
        bufs.push(buf);
    }
    let mut free: Vec<usize> = (0..o.window).rev().collect();
    ctrl.sync().map_err(|e| e.to_string())?;
    // One message to every peer first, untimed: the first message towards a
    // peer sets up the provider's connection or peer state (rxm connects,
    // rxd handshakes), which is a cost per peer, not per message.
    let mut sending = Sending { ep: &ep, cq: &f.cq, bufs: &mut bufs, free: &mut free, peers: &peers };
    sending.pump(o.peers as u64)?;
    let start = Instant::now();
    sending.pump(o.messages)?;
    ctrl.sync().map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} {} {} {} {secs:.3} {:.0} {:.3}",
        o.peers,
        o.window,
        o.size,
        o.messages,
        o.messages as f64 / secs,
        secs * 1e6 / o.messages as f64
    );
    Ok(())
}

/// The client's sending state: fixed buffers, the free ones, the peers.
struct Sending<'a> {
    ep: &'a Ep,
    cq: &'a CompletionQueue<MsgEntry, Unsync>,
    bufs: &'a mut [FixedBuf<Unsync>],
    free: &'a mut Vec<usize>,
    peers: &'a [Address],
}

impl Sending<'_> {
    /// Sends `count` messages round-robin over the peers, up to a window
    /// in flight, and waits for every one to complete.
    fn pump(&mut self, count: u64) -> Result<(), String> {
        let (mut sent, mut done) = (0u64, 0u64);
        let mut last = Instant::now();
        while done < count {
            while sent < count {
                let Some(&i) = self.free.last() else { break };
                let peer = self.peers[(sent % self.peers.len() as u64) as usize];
                match self.ep.send_fixed(&mut self.bufs[i], peer, i as u64) {
                    Ok(()) => {
                        self.free.pop();
                        sent += 1;
                    }
                    Err(e) if e.is_again() => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            match self.cq.poll_fixed().map_err(|e| e.to_string())? {
                FixedRead::Fixed { token, .. } => {
                    self.free.push(token as usize);
                    done += 1;
                    last = Instant::now();
                }
                FixedRead::Empty if last.elapsed() > STALL => return Err(format!("stalled after {done} messages")),
                FixedRead::Empty => {}
                other => return Err(format!("unexpected completion: {other:?}")),
            }
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let run = options().and_then(|o| match &o.server {
        Some(host) => stream(&o, host),
        None => serve(&o),
    });
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("msgrate: {why}");
            ExitCode::FAILURE
        }
    }
}
