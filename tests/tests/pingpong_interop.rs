//! The Rust `fi_pingpong` (examples/fi_pingpong) against libfabric's C
//! `fi_pingpong`, in both directions: Rust server with C client, C server
//! with Rust client, untagged and tagged, with the data check (`-c`) on.
//!
//! Each side is its own process: the C tool, and this test binary run again
//! as the Rust side. Traffic stays on loopback (`FI_*_IFACE=lo`, control
//! connection on 127.0.0.1). Where a provider does not offer tagged
//! messages on an endpoint type, both tools must refuse the same way.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libfabric::{Caps, EpType};
use libfabric_examples::fi_pingpong::{run, Options};
use libfabric_tests::{Case, PEER_TEST};

/// The C tool, from Debian's libfabric-bin (scripts/test installs it).
const C_PINGPONG: &str = "fi_pingpong";
/// How long one side may run before the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// The variable that makes this binary the Rust side, holding its arguments.
const ARGS_VAR: &str = "LIBFABRIC_PINGPONG_ARGS";
/// Every provider's interface variable, pinned to loopback.
const LOOPBACK: [(&str, &str); 4] =
    [("FI_TCP_IFACE", "lo"), ("FI_UDP_IFACE", "lo"), ("FI_SOCKETS_IFACE", "lo"), ("FI_NET_IFACE", "lo")];

/// The Rust side, when this process was started as one.
#[test]
fn peer_process() {
    let Ok(args) = std::env::var(ARGS_VAR) else { return };
    let options = Options::parse(args.split('\u{1f}')).expect("the test passes valid options");
    if let Err(failure) = run(&options, &mut std::io::stdout().lock()) {
        eprintln!("{failure}");
        std::process::exit(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    C,
    Rust,
}

/// A finished run of one side.
#[derive(Debug)]
struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// The table rows: (size, #sent, #ack column).
    fn rows(&self) -> Vec<(String, String, String)> {
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

fn spawn(side: Side, args: &[String]) -> Child {
    let mut cmd = match side {
        Side::C => {
            let mut c = Command::new(C_PINGPONG);
            c.args(args);
            c
        }
        Side::Rust => {
            let mut c = Command::new(std::env::current_exe().expect("the test binary"));
            c.args(["--exact", PEER_TEST, "--nocapture", "--test-threads=1", "-q"]);
            c.env(ARGS_VAR, args.join("\u{1f}"));
            c
        }
    };
    cmd.envs(LOOPBACK).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap_or_else(|e| panic!("start the {side:?} pingpong: {e} (is libfabric-bin installed?)"))
}

fn finish(side: Side, mut child: Child) -> Outcome {
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

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("an ephemeral port").port()
}

/// Waits until something listens on `port` (the server's control socket),
/// reading the kernel's socket table so that no probe connection is made.
fn wait_listening(port: u16, server: &mut Child) {
    let needle = format!(":{port:04X} ");
    let start = Instant::now();
    loop {
        let listening = ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
            std::fs::read_to_string(table).unwrap_or_default().lines().any(|l| {
                l.split_whitespace().nth(1).is_some_and(|local| format!("{local} ").ends_with(&needle))
                    && l.split_whitespace().nth(3) == Some("0A")
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

/// One run: `server` serves, `client` connects; both outcomes.
fn pingpong(server: Side, client: Side, args: &[&str]) -> (Outcome, Outcome) {
    let port = free_port().to_string();
    let with = |extra: &[&str]| args.iter().chain(extra).map(|s| s.to_string()).collect::<Vec<_>>();
    let mut srv = spawn(server, &with(&["-B", &port]));
    wait_listening(port.parse().expect("a port"), &mut srv);
    let cli = spawn(client, &with(&["-P", &port, "127.0.0.1"]));
    let cli = finish(client, cli);
    (finish(server, srv), cli)
}

/// Both directions and both modes for one provider and endpoint type.
fn interop(case: Case) {
    if !case.provider_offered() {
        eprintln!("skipped: fi_getinfo does not offer {}", case.provider);
        return;
    }
    let ep = match case.ep_type {
        EpType::MSG => "msg",
        EpType::RDM => "rdm",
        _ => "dgram",
    };
    for (mode, caps) in [("msg", Caps::MSG), ("tagged", Caps::TAGGED)] {
        let offered = case.try_local_info(caps).is_some();
        // Two round trips per size: enough to check the data, quick on the slow lanes.
        let args = ["-p", case.provider, "-e", ep, "-m", mode, "-I", "2", "-c"];
        for (server, client) in [(Side::Rust, Side::C), (Side::C, Side::Rust)] {
            let what = format!("{} -m {mode}: {server:?} server, {client:?} client", case.name());
            let (srv, cli) = pingpong(server, client, &args);
            if !offered {
                // Nobody can run it: both must fail, the Rust side saying why.
                assert!(!srv.ok && !cli.ok, "{what}: ran although fi_getinfo does not offer it");
                let rust = if server == Side::Rust { &srv } else { &cli };
                assert!(
                    rust.stderr.contains("FI_ENODATA") || rust.stderr.contains("closed by the peer"),
                    "{what}: unclear refusal: {}",
                    rust.stderr
                );
                continue;
            }
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
            // The same sizes on both sides, every message acknowledged.
            let sizes = |rows: &[(String, String, String)]| rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
            assert_eq!(sizes(&s_rows), sizes(&c_rows), "{what}: the sides ran different sizes");
            for (size, sent, ack) in c_rows.iter().chain(&s_rows) {
                assert_eq!(
                    (sent.as_str(), ack.as_str()),
                    ("2", "=2"),
                    "{what}: size {size}: not every message came back"
                );
            }
        }
    }
}

#[test]
fn tcp_msg() {
    interop(Case { provider: "tcp", ep_type: EpType::MSG });
}

#[test]
fn tcp_rxm_rdm() {
    interop(Case { provider: "tcp;ofi_rxm", ep_type: EpType::RDM });
}

#[test]
fn udp_dgram() {
    interop(Case { provider: "udp", ep_type: EpType::DGRAM });
}

#[test]
fn udp_rxd_rdm() {
    interop(Case { provider: "udp;ofi_rxd", ep_type: EpType::RDM });
}

#[test]
fn shm_rdm() {
    interop(Case { provider: "shm", ep_type: EpType::RDM });
}

#[test]
fn sockets_rdm() {
    interop(Case { provider: "sockets", ep_type: EpType::RDM });
}

#[test]
fn sockets_msg() {
    interop(Case { provider: "sockets", ep_type: EpType::MSG });
}

#[test]
fn net_rdm() {
    interop(Case { provider: "net", ep_type: EpType::RDM });
}
