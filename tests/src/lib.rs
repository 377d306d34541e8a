//! Shared helpers for the integration tests: the provider matrix, a peer
//! process, and an out-of-band channel to exchange addresses.
//!
//! A two-process test runs its own test binary again as the peer: the peer is
//! the `#[test]` named [`PEER_TEST`], which does nothing unless the
//! `LIBFABRIC_TEST_PEER` variable names a role. The two processes talk
//! out-of-band over a TCP connection on 127.0.0.1 to swap fabric addresses.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod pingpong;
pub mod session;

use libfabric::{getinfo, EpType, Hints, Info, Target};

/// The test every two-process test binary defines for its peer role.
pub const PEER_TEST: &str = "peer_process";

/// How long any wait in these tests may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// One provider and endpoint type of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    pub provider: &'static str,
    pub ep_type: EpType,
}

/// Every provider and endpoint type Debian's libfabric 1.17 offers.
pub const MATRIX: &[Case] = &[
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
    /// Looks a case up by its name (`"tcp;ofi_rxm/rdm"`).
    pub fn named(name: &str) -> Option<Case> {
        MATRIX.iter().copied().find(|c| c.name() == name)
    }

    /// `provider/type`, e.g. `tcp;ofi_rxm/rdm`.
    pub fn name(&self) -> String {
        let ty = match self.ep_type {
            EpType::MSG => "msg",
            EpType::RDM => "rdm",
            _ => "dgram",
        };
        format!("{}/{ty}", self.provider)
    }

    /// The hints for this case: its provider and endpoint type, the given caps,
    /// and every memory registration mode the safe layer handles.
    pub fn hints(&self, caps: libfabric::Caps) -> Hints {
        use libfabric::MrMode;
        Hints::new()
            .and_then(|h| h.provider(self.provider))
            .expect("hints")
            .ep_type(self.ep_type)
            .caps(caps)
            .mr_mode(MrMode::LOCAL | MrMode::VIRT_ADDR | MrMode::ALLOCATED | MrMode::PROV_KEY | MrMode::ENDPOINT)
    }

    /// True when `fi_getinfo` offers this provider at all: the only reason a
    /// case may skip.
    pub fn provider_offered(&self) -> bool {
        let hints = Hints::new().and_then(|h| h.provider(self.provider)).expect("hints");
        let infos = getinfo(&Target::default(), &hints).expect("fi_getinfo");
        infos.iter().any(|i| i.provider() == self.provider)
    }

    /// The info for a local endpoint on 127.0.0.1 with exactly this provider.
    pub fn local_info(&self, caps: libfabric::Caps) -> Info {
        self.try_local_info(caps).unwrap_or_else(|| {
            panic!("{}: fi_getinfo offers the provider but not this endpoint type on 127.0.0.1", self.name())
        })
    }

    /// Like [`local_info`](Self::local_info); `None` when this provider and
    /// endpoint type do not offer `caps`.
    pub fn try_local_info(&self, caps: libfabric::Caps) -> Option<Info> {
        // shm names its endpoints after the node given, and its default name is
        // the process id, shared by every endpoint of a process: each info
        // gets a name of its own.
        let name = unique_shm_name();
        let target =
            if self.provider == "shm" { Target::source(&name, None) } else { Target::source("127.0.0.1", None) };
        let infos = getinfo(&target, &self.hints(caps)).unwrap_or_else(|e| panic!("{}: {e}", self.name()));
        infos.into_iter().find(|i| i.provider() == self.provider && i.ep_type() == self.ep_type)
    }
}

/// A shm endpoint name no other endpoint of this machine uses.
fn unique_shm_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("libfabric-rs-{}-{n}", std::process::id())
}

/// Starts the peer process for `role` and `case`, connected back to `oob`.
pub fn spawn_peer(role: &str, case: &Case, oob: &TcpListener) -> Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    let port = oob.local_addr().expect("listener address").port();
    Command::new(exe)
        .args(["--exact", PEER_TEST, "--nocapture", "--test-threads=1"])
        .env("LIBFABRIC_TEST_PEER", role)
        .env("LIBFABRIC_TEST_CASE", case.name())
        .env("LIBFABRIC_TEST_OOB", port.to_string())
        .stdin(Stdio::null())
        // The peer's harness chatter would repeat the test runner's summary
        // lines; its panics still reach stderr.
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the peer process")
}

/// In the peer process: its role, case and out-of-band port, when it is one.
pub fn peer_role() -> Option<(String, Case, u16)> {
    let role = std::env::var("LIBFABRIC_TEST_PEER").ok()?;
    let case = Case::named(&std::env::var("LIBFABRIC_TEST_CASE").ok()?)?;
    let port = std::env::var("LIBFABRIC_TEST_OOB").ok()?.parse().ok()?;
    Some((role, case, port))
}

/// A length-prefixed message channel between the two processes.
pub struct Oob {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Oob {
    /// The test side: listens on 127.0.0.1, an ephemeral port.
    pub fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").expect("bind the out-of-band listener")
    }

    /// The test side: accepts the peer's connection (bounded wait).
    pub fn accept(listener: &TcpListener) -> Oob {
        listener.set_nonblocking(true).expect("nonblocking listener");
        let start = Instant::now();
        loop {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).expect("blocking stream");
                    return Oob::new(s);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < DEADLINE => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("the peer did not connect out-of-band: {e}"),
            }
        }
    }

    /// The peer side: connects to the test.
    pub fn connect(port: u16) -> Oob {
        Oob::new(TcpStream::connect(("127.0.0.1", port)).expect("connect out-of-band"))
    }

    fn new(s: TcpStream) -> Oob {
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        Oob { reader: BufReader::new(s.try_clone().expect("clone stream")), writer: s }
    }

    /// Sends one message.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(&(bytes.len() as u32).to_le_bytes()).expect("oob write");
        self.writer.write_all(bytes).expect("oob write");
    }

    /// Receives one message.
    pub fn recv(&mut self) -> Vec<u8> {
        let mut len = [0u8; 4];
        self.reader.read_exact(&mut len).expect("oob read");
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        self.reader.read_exact(&mut buf).expect("oob read");
        buf
    }

    /// Receives one message, calling `idle` while none has arrived: a side that
    /// must keep driving libfabric's progress (the target of RMA on a provider
    /// with manual progress) polls its queues there.
    pub fn recv_while(&mut self, mut idle: impl FnMut()) -> Vec<u8> {
        let start = Instant::now();
        loop {
            if self.reader.buffer().len() >= 4 {
                return self.recv();
            }
            self.writer.set_nonblocking(true).expect("nonblocking");
            let mut head = [0u8; 4];
            let ready = matches!(self.writer.peek(&mut head), Ok(4));
            self.writer.set_nonblocking(false).expect("blocking");
            if ready {
                return self.recv();
            }
            assert!(start.elapsed() < DEADLINE, "the peer said nothing within {DEADLINE:?}");
            idle();
        }
    }

    /// Waits until the other side says `word` (a synchronisation point).
    pub fn expect(&mut self, word: &str) {
        let got = self.recv();
        assert_eq!(String::from_utf8_lossy(&got), word, "out-of-band protocol");
    }
}

/// Waits for the peer process to exit successfully (bounded).
pub fn wait_peer(mut child: Child) {
    let start = Instant::now();
    loop {
        match child.try_wait().expect("wait for the peer") {
            Some(status) => {
                assert!(status.success(), "the peer process failed: {status}");
                return;
            }
            None if start.elapsed() < DEADLINE => std::thread::sleep(Duration::from_millis(10)),
            None => {
                let _ = child.kill();
                panic!("the peer process did not finish within {DEADLINE:?}");
            }
        }
    }
}

/// A deterministic payload for message `seq` of `len` bytes.
pub fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq.wrapping_mul(131).wrapping_add(i as u64 * 7) % 251) as u8).collect()
}

/// Posts `buf` with `post`, retrying on `FI_EAGAIN` (a full queue, or a
/// connection still being set up) while polling `cq` to drive progress;
/// completions read meanwhile are appended to `stash`. Bounded by [`DEADLINE`].
pub fn post_with_progress<E: libfabric::Entry, M: libfabric::ThreadModel>(
    cq: &libfabric::CompletionQueue<E, M>,
    stash: &mut Vec<libfabric::Read<E>>,
    buf: libfabric::Buf,
    mut post: impl FnMut(libfabric::Buf) -> Result<libfabric::OpId, libfabric::PostError>,
) -> libfabric::OpId {
    let start = Instant::now();
    let mut buf = buf;
    loop {
        match post(buf) {
            Ok(id) => return id,
            Err(e) if e.is_again() && start.elapsed() < DEADLINE => {
                buf = e.buf;
                match cq.poll().expect("fi_cq_read") {
                    libfabric::Read::Empty => {}
                    read => stash.push(read),
                }
            }
            Err(e) => panic!("post failed: {}", e.error),
        }
    }
}

/// Builds the example `name` of `libfabric-examples` with the `cargo` running
/// the tests; its path, read from cargo's JSON messages, so any target
/// directory or profile works.
pub fn example(name: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace");
    let output = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "libfabric-examples", "--example", name, "--message-format=json"])
        .current_dir(workspace)
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "cargo build of the {name} example failed: {}", output.status);
    executable(&String::from_utf8_lossy(&output.stdout), name)
        .unwrap_or_else(|| panic!("cargo reports the {name} example's executable"))
}

/// The `executable` of example `name` in cargo's `--message-format=json`
/// output (one JSON object a line; read without a JSON parser, as the line of
/// the example's artifact is the only one naming it with an executable).
fn executable(messages: &str, name: &str) -> Option<PathBuf> {
    const KEY: &str = "\"executable\":\"";
    let named = format!("\"name\":\"{name}\"");
    let line = messages.lines().find(|l| l.contains("\"kind\":[\"example\"]") && l.contains(&named))?;
    let start = line.find(KEY)? + KEY.len();
    let len = line[start..].find('"')?;
    Some(PathBuf::from(&line[start..start + len]))
}

/// Kills `child` (SIGKILL), reaps it, and removes the shared-memory files
/// its shm endpoints left in `/dev/shm` (a process killed
/// this way cannot unlink them). Left behind, 16 MiB each, they also make a
/// later process that is given the same process id fail to open an shm
/// endpoint (`fi_enable`: `FI_EBUSY`).
pub fn kill_and_clean(child: &mut Child) {
    let pid = child.id();
    let _ = child.kill();
    let _ = child.wait();
    // shm's own names (`PID:…`) and the ones the tests and the transport
    // give (`libfabric-rs-PID-…`).
    let prefixes = [format!("{pid}:"), format!("libfabric-rs-{pid}-")];
    if let Ok(entries) = std::fs::read_dir("/dev/shm") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if prefixes.iter().any(|p| name.to_string_lossy().starts_with(p.as_str())) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
