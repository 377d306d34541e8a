//! The async transport beside the synchronous tools on the same provider:
//! request/response latency of `examples/async_bench` against the Rust
//! pingpong, and its pipelined message rate against `examples/msgrate`,
//! alternating which goes first, with the driver busy-polling and waiting.

use std::path::Path;

use super::pingpong::{median, pair, pingpong_args, run_pair, Rounds};

/// An RDM lane of the transport, and how much work each of its runs does.
pub struct AsyncLane {
    pub provider: &'static str,
    /// Round trips of a latency run, of the pingpong and the async
    /// transport alike: enough that a run's first thousand or so, which are
    /// slow (see `Plan::scale`), weigh little, on this machine 0.1–0.3 s of
    /// work.
    pub round_trips: u64,
    /// Messages of a rate run: a second or two of work (shm sends about 2
    /// million a second here, tcp;ofi_rxm 40,000 to 60,000).
    pub messages: u64,
}

/// shm, and tcp;ofi_rxm as the tcp lane; in quick and full runs alike.
pub const LANES: [AsyncLane; 2] = [
    AsyncLane { provider: "shm", round_trips: 100_000, messages: 200_000 },
    AsyncLane { provider: "tcp;ofi_rxm", round_trips: 20_000, messages: 50_000 },
];
/// Sends in flight for the message rate.
const WINDOW: usize = 16;

/// Executables measured.
pub struct Tools<'a> {
    /// The synchronous Rust pingpong.
    pub pingpong: &'a Path,
    /// The synchronous message-rate tool.
    pub msgrate: &'a Path,
    /// The async transport's latency and rate tool.
    pub async_bench: &'a Path,
}

/// Medians of one lane: latency in µs one way and rate in messages/s, each
/// as [synchronous, async busy-polling, async waiting]; latency also of the
/// synchronous pingpong in tagged mode, as the transport's requests are
/// tagged messages.
#[derive(Debug, Clone)]
pub struct Row {
    /// The provider.
    pub lane: &'static str,
    /// One-way latency, µs.
    pub usec: [f64; 3],
    /// One-way latency of the pingpong's tagged mode (`-m tagged`), µs.
    pub tagged_usec: f64,
    /// Messages per second.
    pub rate: [f64; 3],
    /// Medians of the latency ratios of single rounds (every kind runs once
    /// a round): async busy-polling and waiting, against the
    /// untagged pingpong, then against the tagged one.
    pub paired: [[f64; 2]; 2],
}

/// Every lane, `rounds` times each kind, the order rotating; the medians.
pub fn measure(tools: &Tools, rounds: usize) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for AsyncLane { provider: lane, round_trips, messages } in LANES {
        eprintln!("bench: async transport on {lane}");
        let mut usec: [Vec<f64>; 4] = Default::default();
        let mut rate: [Vec<f64>; 3] = Default::default();
        for round in 0..rounds {
            // Rotate the order, so no kind always runs first.
            for k in (0..4).map(|i| (i + round) % 4) {
                usec[k].push(latency(tools, lane, k, round_trips)?);
                if k < 3 {
                    rate[k].push(message_rate(tools, lane, k, messages)?);
                }
            }
        }
        let paired = |of: usize, base: usize| Rounds::of(usec[of].iter().zip(&usec[base]).map(|(a, b)| a / b)).median;
        let paired = [[paired(1, 0), paired(2, 0)], [paired(1, 3), paired(2, 3)]];
        let [sync, busy, wait, tagged] = usec.map(median);
        rows.push(Row { lane, usec: [sync, busy, wait], tagged_usec: tagged, rate: rate.map(median), paired });
    }
    Ok(rows)
}

/// `async_bench`'s arguments: `size`-byte messages, `n` of them. Kind 0 is
/// synchronous; 1 async busy-polling; 2 async waiting (for latency, 3 is
/// the synchronous pingpong's tagged mode).
pub fn async_args(lane: &str, kind: usize, mode: &str, size: usize, n: u64) -> Vec<String> {
    let (size, n) = (size.to_string(), n.to_string());
    let mut args: Vec<String> = ["-p", lane, "-m", mode, "-S", &size, "-I", &n, "-W", &WINDOW.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if kind == 1 {
        args.push("--busy".into());
    }
    args
}

fn latency(tools: &Tools, lane: &str, kind: usize, n: u64) -> Result<f64, String> {
    if kind == 0 || kind == 3 {
        let mode = if kind == 3 { "tagged" } else { "msg" };
        let mut args = pingpong_args(lane, "rdm", 64, n);
        args.extend(["-m".to_string(), mode.to_string()]);
        let row = run_pair(tools.pingpong, &args, 64)?.ok_or_else(|| format!("{lane}: pingpong printed no row"))?;
        return Ok(row.0);
    }
    field(&pair(tools.async_bench, &async_args(lane, kind, "latency", 64, n), &[])?, 6)
}

fn message_rate(tools: &Tools, lane: &str, kind: usize, n: u64) -> Result<f64, String> {
    if kind == 0 {
        let args: Vec<String> = ["-p", lane, "-n", "1", "-W", &WINDOW.to_string(), "-N", &n.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        return field(&pair(tools.msgrate, &args, &[])?, 5);
    }
    field(&pair(tools.async_bench, &async_args(lane, kind, "rate", 64, n), &[])?, 7)
}

/// The `i`th number of a tool's one-line result.
fn field(out: &str, i: usize) -> Result<f64, String> {
    out.split_whitespace().nth(i).and_then(|v| v.parse().ok()).ok_or_else(|| format!("unexpected output {out:?}"))
}
