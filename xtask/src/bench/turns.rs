//! The critical path of a round trip, measured the same way in every tool:
//! `scripts/turns.c`, preloaded into both sides, times each side's turn
//! (from the read that returned a message to the call that sends the
//! answer), the sends, and the waits between them. Wall times on a shared
//! machine wander by 2× for minutes at a time, mostly in the provider's
//! trips; turns hold what the program does, and stay within a few ns.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::pingpong::{median, pair_with, pingpong_args};
use super::transport::async_args;
use super::Lane;

/// Means (between the 10th and 90th percentile) of one run, ns, and the
/// tool's own µs one way.
#[derive(Debug, Clone, Copy, Default)]
pub struct Split {
    pub client_turn: f64,
    pub server_turn: f64,
    pub client_send: f64,
    pub server_send: f64,
    /// From the client's inject to the read that returned the answer.
    pub client_wait: f64,
    pub usec: f64,
}

impl Split {
    /// Both turns: what the program does in a round trip.
    pub fn turns(&self) -> f64 {
        self.client_turn + self.server_turn
    }

    /// The round trip by the tool's own clock (twice its µs one way), ns:
    /// the parts and the probes between them.
    pub fn round_trip(&self) -> f64 {
        2000.0 * self.usec
    }

    /// One trip through the provider (the client's wait less the server's
    /// turn and send, halved); only for a size that goes by inject.
    pub fn trip(&self) -> f64 {
        (self.client_wait - self.server_turn - self.server_send) / 2.0
    }

    /// Field by field medians of `runs`.
    pub fn median(runs: &[Split]) -> Split {
        let m = |f: fn(&Split) -> f64| median(runs.iter().map(f).collect());
        Split {
            client_turn: m(|s| s.client_turn),
            server_turn: m(|s| s.server_turn),
            client_send: m(|s| s.client_send),
            server_send: m(|s| s.server_send),
            client_wait: m(|s| s.client_wait),
            usec: m(|s| s.usec),
        }
    }
}

/// One lane and size's medians: C and Rust pingpong, and the async
/// transport (busy-polling) where it runs on the lane, at the small size.
#[derive(Debug, Clone)]
pub struct Row {
    pub lane: Lane,
    pub size: usize,
    pub c: Split,
    pub rust: Split,
    pub async_busy: Option<Split>,
}

/// The small size of a lane: below its inject size, so that the trips
/// can be told from the waits (tcp and tcp;ofi_rxm inject below 64).
pub fn small(lane: &Lane) -> usize {
    if lane.provider.starts_with("tcp") {
        32
    } else {
        64
    }
}

/// The sizes measured: the small one, and large ones for bandwidth
/// (`sparse`: the small one only, which keeps a quick run under its
/// 3 minutes).
fn sizes(lane: &Lane, sparse: bool) -> Vec<usize> {
    if sparse {
        return vec![small(lane)];
    }
    vec![small(lane), 64 << 10, 1 << 20]
}

/// Round trips per run: a few tenths of a second of work at this machine's
/// latencies (0.7 µs a small round trip on shm, 8 to 15 on the others).
fn round_trips(lane: &Lane, size: usize) -> usize {
    match (size, lane.provider) {
        (s, _) if s >= 1 << 20 => 200,
        (s, _) if s >= 64 << 10 => 2_000,
        (_, "shm") => 200_000,
        (_, "tcp;ofi_rxm") => 20_000,
        _ => 50_000,
    }
}

/// Builds the library from `scripts/turns.c` into the target directory.
pub fn build_library(root: &Path, target: &Path) -> Result<PathBuf, String> {
    let library = target.join("turns.so");
    let status = Command::new("cc")
        .args(["-O2", "-Wall", "-shared", "-fPIC"])
        .arg(root.join("scripts/turns.c"))
        .arg("-o")
        .arg(&library)
        .status()
        .map_err(|e| format!("cc: {e}"))?;
    status.success().then_some(library).ok_or_else(|| "cc of scripts/turns.c failed".into())
}

/// The executables compared.
pub struct Tools<'a> {
    /// The library built from `scripts/turns.c`.
    pub library: &'a Path,
    pub c: &'a Path,
    pub rust: &'a Path,
    pub async_bench: &'a Path,
}

/// Every lane and size, `rounds` times each tool, the order rotating; the
/// medians. `async_lanes` names the providers the async transport runs on.
/// `sparse` (a quick run): the small size only, a quarter of the round
/// trips.
/// A size that neither pingpong runs on a lane (above its largest message)
/// is left out.
pub fn measure(
    lanes: &[Lane],
    async_lanes: &[&str],
    tools: &Tools,
    rounds: usize,
    sparse: bool,
) -> Result<Vec<Row>, String> {
    let preload = tools.library.to_str().ok_or("the library's path is not UTF-8")?;
    let env = [("LD_PRELOAD", preload)];
    let mut rows = Vec::new();
    for lane in lanes {
        for size in sizes(lane, sparse) {
            eprintln!("bench: turns on {} at {size} B", lane.name());
            // A quick run does a quarter of the round trips, so that it
            // stays under its 3 minutes (it took 3 min 7 s once). The first
            // tenth, which turns.c drops, still covers the thousand or so
            // slow round trips a run starts with (shm 5,000, udp and tcp
            // 1,250).
            let n = round_trips(lane, size) / if sparse { 4 } else { 1 };
            let pingpong_args = pingpong_args(lane.provider, lane.ep, size, n);
            let async_args = async_args(lane.provider, 1, "latency", size, n as u64);
            let mut runners: Vec<(&Path, &[String])> = vec![(tools.c, &pingpong_args), (tools.rust, &pingpong_args)];
            if size == small(lane) && async_lanes.contains(&lane.provider) {
                runners.push((tools.async_bench, &async_args));
            }
            let runs = match alternate(&runners, rounds, &env, |_, _| {}) {
                Ok(runs) => runs,
                // Above the lane's largest message: no tool runs it.
                Err(Failed { round: 0, runner: 0, .. }) => continue,
                Err(e) => return Err(format!("{} on {} at {size} B: {}", e.exe, lane.name(), e.error)),
            };
            let mut medians = runs.iter().map(|r| Split::median(r));
            let (c, rust) = (medians.next().unwrap_or_default(), medians.next().unwrap_or_default());
            rows.push(Row { lane: *lane, size, c, rust, async_busy: medians.next() });
        }
    }
    Ok(rows)
}

/// What `cargo xtask turns` compares: builds of the tools by hand.
pub struct ByHand {
    /// The executables: a name holding "pingpong" runs as a pingpong
    /// (`-p`, `-e`, `-S`, `-I`), any other as `async_bench -m latency`.
    pub bins: Vec<PathBuf>,
    pub provider: String,
    /// The pingpong's endpoint type.
    pub ep: String,
    pub size: usize,
    pub iterations: u64,
    /// Whether async_bench busy-polls (`--busy`) or waits.
    pub busy: bool,
    pub rounds: usize,
}

/// Runs [`ByHand`]'s executables alternately, printing each run's split
/// as it ends; returns the medians per executable, one line each.
pub fn by_hand(root: &Path, hand: &ByHand) -> Result<String, String> {
    let library = build_library(root, &super::target_dir(root))?;
    let preload = library.to_str().ok_or("the library's path is not UTF-8")?;
    let pingpong = pingpong_args(&hand.provider, &hand.ep, hand.size, hand.iterations);
    let latency = async_args(&hand.provider, usize::from(hand.busy), "latency", hand.size, hand.iterations);
    let runners: Vec<(&Path, &[String])> = hand
        .bins
        .iter()
        .map(|bin| {
            let name = bin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (bin.as_path(), if name.contains("pingpong") { &pingpong[..] } else { &latency[..] })
        })
        .collect();
    let line = |k: usize, s: &Split| {
        format!(
            "{}: usec {:.3} cturn {:.1} sturn {:.1} csend {:.1} ssend {:.1} trip {:.1}",
            hand.bins[k].display(),
            s.usec,
            s.client_turn,
            s.server_turn,
            s.client_send,
            s.server_send,
            s.trip()
        )
    };
    let env = [("LD_PRELOAD", preload)];
    let runs = alternate(&runners, hand.rounds, &env, |k, s| println!("{}", line(k, s)))
        .map_err(|e| format!("{} (round {}): {}", e.exe, e.round + 1, e.error))?;
    let medians: Vec<String> = runs.iter().enumerate().map(|(k, r)| line(k, &Split::median(r))).collect();
    Ok(format!("medians (usec: µs one way; the rest ns):\n{}", medians.join("\n")))
}

/// One failed run of [`alternate`]: which, and why.
pub struct Failed {
    pub round: usize,
    pub runner: usize,
    pub exe: String,
    pub error: String,
}

/// Runs each of `runners` (an executable and its arguments, both sides)
/// `rounds` times with `env`, the order rotating each round; each run's
/// split, per runner. `each(runner, split)` sees every run as it ends.
pub fn alternate(
    runners: &[(&Path, &[String])],
    rounds: usize,
    env: &[(&str, &str)],
    mut each: impl FnMut(usize, &Split),
) -> Result<Vec<Vec<Split>>, Failed> {
    let mut runs: Vec<Vec<Split>> = vec![Vec::new(); runners.len()];
    for round in 0..rounds {
        for k in (0..runners.len()).map(|i| (i + round) % runners.len()) {
            let (exe, args) = runners[k];
            let failed = |error: String| Failed { round, runner: k, exe: exe.display().to_string(), error };
            let printed = pair_with(exe, args, &[], env).map_err(failed)?;
            let parts = split(&printed.client, &printed.client_err, &printed.server_err)
                .ok_or_else(|| failed("no turns line".into()))?;
            each(k, &parts);
            runs[k].push(parts);
        }
    }
    Ok(runs)
}

/// The split of one run from what its two sides printed.
fn split(client_out: &str, client_err: &str, server_err: &str) -> Option<Split> {
    let [client_turn, client_send, client_wait] = means(client_err)?;
    let [server_turn, server_send, _] = means(server_err)?;
    // Every tool prints the µs one way as the 7th field of its last line.
    let usec = client_out.lines().last()?.split_whitespace().nth(6)?.parse().ok()?;
    Some(Split { client_turn, server_turn, client_send, server_send, client_wait, usec })
}

/// The means of turns, injects and waits of the library's line:
/// `turns: turns N p10 a p50 b p90 c mean d, sends …, waits … ns`.
fn means(stderr: &str) -> Option<[f64; 3]> {
    let line = stderr.lines().find_map(|l| l.strip_prefix("turns: "))?;
    let mut parts = line.split(", ").map(|part| {
        let fields: Vec<&str> = part.split_whitespace().collect();
        let at = fields.iter().position(|&f| f == "mean")?;
        fields.get(at + 1)?.parse::<f64>().ok()
    });
    Some([parts.next()??, parts.next()??, parts.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_splits_into_turns_sends_and_trips() {
        let client = "turns: turns 9 p10 30 p50 40 p90 50 mean 38.5, sends 9 p10 70 p50 72 p90 80 mean 72.0, \
                      waits 9 p10 400 p50 430 p90 460 mean 430.0 ns\n";
        let server = "turns: turns 9 p10 30 p50 35 p90 40 mean 35.0, sends 9 p10 70 p50 73 p90 80 mean 75.0, \
                      waits 9 p10 400 p50 440 p90 460 mean 441.0 ns\n";
        let out = "bytes #sent ...\n64      200k    =200k    24m         0.15s    174.62       0.37       2.73\n";
        let s = split(out, client, server).expect("parsed");
        assert_eq!((s.client_turn, s.server_turn, s.client_send, s.server_send), (38.5, 35.0, 72.0, 75.0));
        assert_eq!(s.usec, 0.37);
        assert_eq!(s.turns(), 73.5);
        assert_eq!(s.round_trip(), 740.0);
        assert_eq!(s.trip(), (430.0 - 35.0 - 75.0) / 2.0);
    }

    #[test]
    fn a_run_without_the_line_gives_nothing() {
        assert!(split("64 1 1 1 1 1 0.37 1\n", "", "").is_none());
        assert!(means("turns: turns 0, sends 0, waits 0 ns").is_none());
    }
}
