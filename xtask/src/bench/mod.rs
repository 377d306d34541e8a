//! `cargo xtask bench`: the Rust pingpong (examples/fi_pingpong) beside
//! libfabric's C `fi_pingpong`, run alternately in one session, per provider
//! and size; median latency and bandwidth of each, the ratio Rust/C, and the
//! instructions per round trip of both counted by callgrind; then message
//! rate against the work, the async transport beside the synchronous
//! tools, and the critical path of each (turns, measured alike in C and
//! Rust). Writes
//! `docs/benchmarks.md` and `docs/benchmarks.svg`.

mod callgrind;
mod pingpong;
mod report;
mod scaling;
mod transport;
mod turns;

pub use turns::{by_hand, ByHand};

use std::path::{Path, PathBuf};
use std::process::Command;

/// One provider and endpoint type, as the pingpong tools name them.
#[derive(Debug, Clone, Copy)]
pub struct Lane {
    pub provider: &'static str,
    pub ep: &'static str,
}

impl Lane {
    pub fn name(&self) -> String {
        format!("{}/{}", self.provider, self.ep)
    }
}

/// The lanes of a full run; a quick run takes the first three (the ones the
/// targets name: shm, udp, tcp).
/// (udp;ofi_rxd is left out: a 1 MiB round trip takes it about a second
/// here, so its rows alone would take a quarter of an hour.)
const LANES: [Lane; 4] = [
    Lane { provider: "shm", ep: "rdm" },
    Lane { provider: "udp", ep: "dgram" },
    Lane { provider: "tcp", ep: "msg" },
    Lane { provider: "tcp;ofi_rxm", ep: "rdm" },
];

/// Sizes from 64 B to 1 MiB (a lane stops at its largest message).
const SIZES: [usize; 6] = [64, 256, 1024, 4096, 65536, 1 << 20];

/// How much work a run does.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Lanes to run (from the start of [`LANES`]).
    pub lanes: usize,
    /// Rounds of each async transport kind and of each tool's turns.
    pub rounds: usize,
    /// Alternating rounds per size of the pingpong rows: the medians are
    /// over these. More than the others, since these rows' wall-time ratios
    /// are held to 2%, and single rounds' ratios range over ±5% and more
    /// here (two sets of 10 rounds of one binary gave medians of 0.98 and
    /// 1.03 at 64 B on shm).
    pub pingpong_rounds: usize,
    /// Round trips per run: the C tool's defaults times this. The first
    /// thousand or so round trips of a run are slow (on shm here 1.7–4.3 µs
    /// each, against 1.2 µs after), so in a run of the default 10,000 small
    /// messages that warm-up is a tenth of the time, and it wanders from run
    /// to run.
    pub scale: usize,
    /// Round trips counted under callgrind (beyond the setup run).
    pub counted: usize,
    /// Callgrind runs per count, the fewest instructions kept.
    pub callgrind_runs: usize,
    /// Messages per message-rate run.
    pub messages: u64,
    /// Message rate at the ends of each window and peer range only.
    pub sparse_scaling: bool,
    /// Turns at the small size only.
    pub sparse_turns: bool,
}

impl Plan {
    pub fn quick() -> Plan {
        Plan {
            lanes: 3,
            rounds: 3,
            pingpong_rounds: 3,
            scale: 1,
            counted: 5000,
            callgrind_runs: 1,
            messages: 10_000,
            sparse_scaling: true,
            sparse_turns: true,
        }
    }
    pub fn full() -> Plan {
        Plan {
            lanes: LANES.len(),
            rounds: 11,
            pingpong_rounds: 21,
            scale: 5,
            counted: 20_000,
            callgrind_runs: 2,
            messages: 100_000,
            sparse_scaling: false,
            sparse_turns: false,
        }
    }
}

/// Runs the benchmark and writes the report; returns the markdown.
pub fn run(root: &Path, plan: Plan) -> Result<String, String> {
    let rust = build_example(root, "pingpong")?;
    let msgrate = build_example(root, "msgrate")?;
    let c = PathBuf::from("fi_pingpong");
    let mut results = Vec::new();
    for lane in &LANES[..plan.lanes] {
        eprintln!("bench: {}", lane.name());
        let timing = pingpong::measure(lane, &SIZES, &c, &rust, plan)?;
        eprintln!("bench: {} under callgrind", lane.name());
        let counts = callgrind::per_round_trip(lane, &c, &rust, plan.counted, plan.callgrind_runs)?;
        results.push(report::LaneResult { lane: *lane, timing, counts });
    }
    let scaling = scaling::measure(&msgrate, plan.messages, plan.sparse_scaling)?;
    let async_bench = build_example(root, "async_bench")?;
    let tools = transport::Tools { pingpong: &rust, msgrate: &msgrate, async_bench: &async_bench };
    let transport = transport::measure(&tools, plan.rounds)?;
    let library = turns::build_library(root, &target_dir(root))?;
    let async_lanes = transport::LANES.map(|l| l.provider);
    let turn_tools = turns::Tools { library: &library, c: &c, rust: &rust, async_bench: &async_bench };
    let turns = turns::measure(&LANES[..plan.lanes], &async_lanes, &turn_tools, plan.rounds, plan.sparse_turns)?;
    let markdown = report::markdown(&results, &scaling, &transport, &turns, plan);
    let docs = root.join("docs");
    std::fs::write(docs.join("benchmarks.md"), &markdown).map_err(|e| format!("docs/benchmarks.md: {e}"))?;
    std::fs::write(docs.join("benchmarks.svg"), report::svg(&results))
        .map_err(|e| format!("docs/benchmarks.svg: {e}"))?;
    Ok(markdown)
}

/// Builds an example with optimisations; returns its path.
fn build_example(root: &Path, name: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(root)
        .args(["build", "--release", "-q", "-p", "libfabric-examples", "--example", name])
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of the {name} example failed"));
    }
    let exe = target_dir(root).join("release/examples").join(name);
    exe.is_file().then_some(exe.clone()).ok_or_else(|| format!("{}: not built", exe.display()))
}

/// The workspace's target directory.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}
