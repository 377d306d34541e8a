//! Running the pingpong tools, C `fi_pingpong` and the Rust example, as
//! separate processes, on loopback or in network namespaces a test made.
//!
//! The Rust side is the test binary run again: its `peer_process` test
//! calls [`peer_main`], which runs the pingpong with the arguments in
//! [`ARGS_VAR`].

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libfabric_examples::fi_pingpong::{run, Options};

use crate::PEER_TEST;

/// The C tool, from Debian's libfabric-bin (scripts/test installs it).
pub const C_PINGPONG: &str = "fi_pingpong";
/// The variable that makes a test binary the Rust side, holding its arguments.
pub const ARGS_VAR: &str = "LIBFABRIC_PINGPONG_ARGS";
/// How long one side may run before the test fails.
pub const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// Which implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    C,
    Rust,
}

/// Where a side runs: on this host's loopback, or in a network namespace
/// with its own interface.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace (`ip netns exec`), if any.
    pub netns: Option<String>,
    /// The interface the providers use (`FI_*_IFACE`).
    pub iface: String,
    /// The address the other side reaches this one at.
    pub addr: String,
}

impl Host {
    /// This host, loopback only.
    pub fn loopback() -> Host {
        Host { netns: None, iface: "lo".into(), addr: "127.0.0.1".into() }
    }
}

/// In a test binary's `peer_process` test: runs the Rust pingpong when this
/// process was started as the Rust side (and exits 1 on failure).
pub fn peer_main() {
    let Ok(args) = std::env::var(ARGS_VAR) else { return };
    let options = Options::parse(args.split('\u{1f}')).expect("the test passes valid options");
    if let Err(failure) = run(&options, &mut std::io::stdout().lock()) {
        eprintln!("{failure}");
        std::process::exit(1);
    }
}

/// A finished run of one side.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// The table rows: (size, #sent, #ack column).
    pub fn rows(&self) -> Vec<(String, String, String)> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .map(|l| {
                let mut f = l.split_whitespace().map(str::to_string);
                let mut next = || f.next().unwrap_or_default();
                (next(), next(), next())
            })
            .collect()
    }
}

/// Starts one side on `host` with `args`.
pub fn spawn(side: Side, host: &Host, args: &[String]) -> Child {
    let program = match side {
        Side::C => C_PINGPONG.to_string(),
        Side::Rust => std::env::current_exe().expect("the test binary").display().to_string(),
    };
    let mut argv: Vec<String> = Vec::new();
    if let Some(ns) = &host.netns {
        argv.extend(["ip", "netns", "exec", ns].map(String::from));
    }
    argv.push(program);
    if side == Side::Rust {
        argv.extend(["--exact", PEER_TEST, "--nocapture", "--test-threads=1", "-q"].map(String::from));
    }
    if side == Side::C {
        argv.extend(args.iter().cloned());
    }
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    if side == Side::Rust {
        cmd.env(ARGS_VAR, args.join("\u{1f}"));
    }
    for var in ["FI_TCP_IFACE", "FI_UDP_IFACE", "FI_SOCKETS_IFACE", "FI_NET_IFACE"] {
        cmd.env(var, &host.iface);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap_or_else(|e| panic!("start the {side:?} pingpong ({}): {e}", argv[0]))
}

/// Waits for a side (killing it past [`RUN_DEADLINE`]) and collects its output.
pub fn finish(side: Side, mut child: Child) -> Outcome {
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the pingpong") {
            break status;
        }
        if start.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the {side:?} pingpong ran past {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.stdout.take().map(|mut s| s.read_to_string(&mut stdout));
    child.stderr.take().map(|mut s| s.read_to_string(&mut stderr));
    Outcome { ok: status.success(), stdout, stderr }
}

/// A port nobody listens on now, below the kernel's ephemeral range
/// (32768 and up here), so that no socket another test opens meanwhile is
/// given it: a server that then failed to listen there would look ready to
/// [`wait_listening`], which sees every socket of the namespace.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Each test binary starts at its own point of the range (its process id).
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 10_000) as u16;
    (0..12_000)
        .map(|_| 20_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port between 20000 and 32000")
}

/// Waits until the server listens on `port`, reading the socket table of
/// its own network namespace (`/proc/PID/net/tcp`), so that no probe
/// connection is made (the server would take it for the client).
pub fn wait_listening(port: u16, server: &mut Child) {
    let needle = format!(":{port:04X}");
    let start = Instant::now();
    loop {
        let listening = ["tcp", "tcp6"].iter().any(|t| {
            std::fs::read_to_string(format!("/proc/{}/net/{t}", server.id())).unwrap_or_default().lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&needle) && f[3] == "0A"
            })
        });
        if listening {
            return;
        }
        if let Ok(Some(status)) = server.try_wait() {
            panic!("the server exited before listening: {status}");
        }
        assert!(start.elapsed() < RUN_DEADLINE, "the server never listened on {port}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One run: `server` serves on its host, `client` connects to it from its
/// own; both outcomes.
pub fn pingpong(server: (Side, &Host), client: (Side, &Host), args: &[&str]) -> (Outcome, Outcome) {
    let port = free_port().to_string();
    let with = |extra: &[&str]| args.iter().chain(extra).map(|s| s.to_string()).collect::<Vec<_>>();
    let mut srv = spawn(server.0, server.1, &with(&["-B", &port]));
    wait_listening(port.parse().expect("a port"), &mut srv);
    let cli = spawn(client.0, client.1, &with(&["-P", &port, &server.1.addr]));
    let cli = finish(client.0, cli);
    (finish(server.0, srv), cli)
}

/// Asserts a successful run: both sides exit 0, run the same sizes, and
/// every one of `iterations` messages per size came back.
pub fn assert_ran(what: &str, srv: &Outcome, cli: &Outcome, iterations: usize) {
    assert!(
        srv.ok && cli.ok,
        "{what}: failed\nserver: {}{}\nclient: {}{}",
        srv.stdout,
        srv.stderr,
        cli.stdout,
        cli.stderr
    );
    let (s_rows, c_rows) = (srv.rows(), cli.rows());
    assert!(!c_rows.is_empty(), "{what}: no results\n{}", cli.stdout);
    let sizes = |rows: &[(String, String, String)]| rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
    assert_eq!(sizes(&s_rows), sizes(&c_rows), "{what}: the sides ran different sizes");
    let n = iterations.to_string();
    for (size, sent, ack) in c_rows.iter().chain(&s_rows) {
        assert_eq!((sent, ack), (&n, &format!("={n}")), "{what}: size {size}: not every message came back");
    }
}
