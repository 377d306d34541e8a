//! Instructions per round trip, counted by callgrind: deterministic where
//! wall time on a shared machine is not.
//!
//! The client runs under callgrind with `n` and `n + counted` round trips of
//! 64 bytes (each at least `Plan::callgrind_runs` times, and again while C
//! and Rust read the queue unequally often: see [`per_round_trip`]);
//! the difference divided by `counted` is the cost of one round trip with
//! setup and teardown cancelled out. Each count is split by
//! object file: the application (the C tool or the Rust example with the
//! safe layer inlined into it), libfabric, and libc.

use std::collections::HashMap;
use std::path::Path;

use super::pingpong::{pair, pingpong_args};
use super::Lane;

/// Instructions per round trip, by object, for C and Rust.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Total, application, libfabric, libc: C then Rust.
    pub c: Split,
    pub rust: Split,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Split {
    pub total: f64,
    pub app: f64,
    pub libfabric: f64,
    pub libc: f64,
    /// Completion-queue reads (the libfabric function the program calls
    /// most often), full and empty.
    pub reads: f64,
    /// Everything but those reads: what does not depend on how often the
    /// client found the queue empty.
    pub outside_reads: f64,
}

/// Round trips of the shorter run: enough that start-up (first-touch page
/// faults, connection set-up, cold caches) is over before the counted ones,
/// and few, since a stall in this run counts against the counted round
/// trips of the longer one (a run takes about 1.7 s however many of these
/// it makes: valgrind's start-up is most of it).
const BASE: usize = 200;

/// Counts C and Rust, each count `runs` times (the run that read the queue
/// least often kept), then counts again the tool that read the queue more
/// often per round trip, while the two differ by more than [`MATCHED`], at
/// most [`EXTRA_ROUNDS`] times.
///
/// A client under callgrind runs about 50 times slower than its native
/// server, so the answer is nearly always in by its next read; but when the
/// server is off its core for a moment, the client reads the queue empty
/// again and again. Each empty read costs 100 to 150 instructions in
/// libfabric and libc, and the loop around it in the program (about 12 in
/// C, 25 in Rust): a matter of timing, not of the work a round trip needs.
/// [`Split::outside_reads`] leaves out the first but not the second, so the
/// comparison holds only for runs that read the queue about equally often
/// (one quick run read the shm queue 1.87 times per round trip in Rust and
/// 0.99 in C, and came out at 1.031 where matched runs give 1.01).
pub fn per_round_trip(lane: &Lane, c: &Path, rust: &Path, counted: usize, runs: usize) -> Result<Counts, String> {
    let mut tools = [Tool::count(lane, c, counted, runs)?, Tool::count(lane, rust, counted, runs)?];
    for _ in 0..EXTRA_ROUNDS {
        let reads = tools.each_ref().map(|t| t.per_trip().reads);
        if (reads[0] - reads[1]).abs() <= MATCHED {
            break;
        }
        let more = if reads[0] > reads[1] { 0 } else { 1 };
        eprintln!(
            "bench: {} under callgrind: {} read the queue {:.2} times per round trip, {} {:.2}; counting it again",
            lane.name(),
            tools[more].name(),
            reads[more],
            tools[1 - more].name(),
            reads[1 - more]
        );
        tools[more].count_again(lane)?;
    }
    let [c, rust] = tools.map(|t| t.per_trip());
    Ok(Counts { c, rust })
}

/// Reads per round trip, C's and Rust's, that count as matched.
const MATCHED: f64 = 0.05;
/// Rounds of counting again, at most.
const EXTRA_ROUNDS: usize = 2;

/// One tool's two counts, each the run with the fewest reads so far.
struct Tool<'a> {
    exe: &'a Path,
    counted: usize,
    small: Split,
    large: Split,
}

impl<'a> Tool<'a> {
    fn count(lane: &Lane, exe: &'a Path, counted: usize, runs: usize) -> Result<Self, String> {
        let mut tool = Tool { exe, counted, small: count(lane, exe, BASE)?, large: count(lane, exe, BASE + counted)? };
        for _ in 1..runs {
            tool.count_again(lane)?;
        }
        Ok(tool)
    }

    fn count_again(&mut self, lane: &Lane) -> Result<(), String> {
        let small = count(lane, self.exe, BASE)?;
        if small.reads < self.small.reads {
            self.small = small;
        }
        let large = count(lane, self.exe, BASE + self.counted)?;
        if large.reads < self.large.reads {
            self.large = large;
        }
        Ok(())
    }

    fn name(&self) -> std::borrow::Cow<'_, str> {
        self.exe.file_name().unwrap_or_default().to_string_lossy()
    }

    fn per_trip(&self) -> Split {
        let (small, large) = (&self.small, &self.large);
        let per = |f: fn(&Split) -> f64| (f(large) - f(small)) / self.counted as f64;
        Split {
            total: per(|s| s.total),
            app: per(|s| s.app),
            libfabric: per(|s| s.libfabric),
            libc: per(|s| s.libc),
            reads: per(|s| s.reads),
            outside_reads: per(|s| s.outside_reads),
        }
    }
}

/// Runs a native server and a client under callgrind; the client's counts.
fn count(lane: &Lane, exe: &Path, iterations: usize) -> Result<Split, String> {
    let out = std::env::temp_dir().join(format!("libfabric-rs-bench-{}.callgrind", std::process::id()));
    let args = pingpong_args(lane.provider, lane.ep, 64, iterations);
    // --cache-sim=yes: only Ir is reported, but simulating the caches
    // slows the client about twofold, so the native server's answer is
    // almost always there by its next read: without it the client found the
    // queue empty up to 0.8 more times per round trip in one run than in
    // another (udp: 923 to 1,422 instructions per round trip, C and Rust
    // alike); with it 0.01 to 0.06 times, and 1,017 to 1,034.
    let wrapper = [
        "valgrind".to_string(),
        "--tool=callgrind".into(),
        "--cache-sim=yes".into(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    pair(exe, &args, &wrapper)?;
    let mut split = split_by_object(&out)?;
    let reads = queue_reads(&out)?;
    split.reads = reads.calls;
    split.outside_reads = split.total - reads.instructions;
    let _ = std::fs::remove_file(&out);
    Ok(split)
}

/// Self cost by object, from `callgrind_annotate --inclusive=no`.
fn split_by_object(profile: &Path) -> Result<Split, String> {
    let output = std::process::Command::new("callgrind_annotate")
        .args(["--inclusive=no", "--threshold=100", "--show=Ir"])
        .arg(profile)
        .output()
        .map_err(|e| format!("callgrind_annotate: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut split = Split::default();
    for line in text.lines() {
        let line = line.trim_start();
        let Some((number, rest)) = line.split_once(' ') else { continue };
        let Ok(ir) = number.replace(',', "").parse::<f64>() else { continue };
        if rest.contains("PROGRAM TOTALS") {
            split.total = ir;
            continue;
        }
        let object = rest.rsplit_once('[').map_or("", |(_, o)| o.trim_end_matches(']'));
        if object.contains("libfabric.so") {
            split.libfabric += ir;
        } else if object.contains("libc.so") {
            split.libc += ir;
        }
    }
    // The rest is the program: its own object, and code callgrind files under
    // the source of an inlined function without naming the object.
    split.app = split.total - split.libfabric - split.libc;
    Ok(split)
}

/// The calls from the program into its most-called libfabric function, and
/// the instructions spent in them (inclusive).
#[derive(Debug, Default, PartialEq)]
struct Calls {
    calls: f64,
    instructions: f64,
}

/// The program's completion-queue reads, from the profile's call records:
/// the libfabric function the program calls most often (see
/// [`most_called`] for ties), which in a ping-pong is `cq->ops->read`
/// (every round trip posts once per direction and reads until its
/// completions are in). libfabric's internal functions have no symbols
/// here, so they are told apart by address.
fn queue_reads(profile: &Path) -> Result<Calls, String> {
    let text = std::fs::read_to_string(profile).map_err(|e| format!("{}: {e}", profile.display()))?;
    let program = profile_command(&text).ok_or_else(|| format!("{}: no cmd: line", profile.display()))?;
    let reads = most_called(&text, &program);
    if reads.calls == 0.0 {
        return Err(format!("{}: no call from {program} into libfabric", profile.display()));
    }
    Ok(reads)
}

/// The executable's file name, from the profile's `cmd:` line.
fn profile_command(text: &str) -> Option<String> {
    let cmd = text.lines().find_map(|l| l.strip_prefix("cmd:"))?;
    let exe = cmd.split_whitespace().next()?;
    Some(exe.rsplit('/').next().unwrap_or(exe).to_string())
}

/// Sums the call records from objects named like `program` into
/// libfabric, per callee; returns the callee with the most calls, or of
/// those called nearly as often, the costliest.
fn most_called(text: &str, program: &str) -> Calls {
    // Names are compressed: "(3) name" defines id 3, "(3)" refers to it.
    fn name<'a>(names: &mut HashMap<(char, &'a str), &'a str>, kind: char, value: &'a str) -> &'a str {
        let value = value.trim();
        let Some(rest) = value.strip_prefix('(') else { return value };
        let Some((id, named)) = rest.split_once(')') else { return value };
        let named = named.trim();
        if named.is_empty() {
            names.get(&(kind, id)).copied().unwrap_or("")
        } else {
            names.insert((kind, id), named);
            named
        }
    }
    let mut names = HashMap::new();
    let mut positions = 1;
    let (mut object, mut callee_object, mut callee) = ("", None::<&str>, "");
    let mut pending_calls = None::<f64>;
    let mut per_callee: HashMap<&str, Calls> = HashMap::new();
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("positions:") {
            positions = p.split_whitespace().count().max(1);
        } else if let Some(v) = line.strip_prefix("ob=") {
            object = name(&mut names, 'o', v);
            callee_object = None;
        } else if let Some(v) = line.strip_prefix("fn=") {
            name(&mut names, 'f', v);
            callee_object = None;
        } else if let Some(v) = line.strip_prefix("cob=") {
            callee_object = Some(name(&mut names, 'o', v));
        } else if let Some(v) = line.strip_prefix("cfn=") {
            callee = name(&mut names, 'f', v);
        } else if let Some(v) = line.strip_prefix("calls=") {
            pending_calls = v.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(calls) = pending_calls.take() {
            // The cost line of the call: positions, then Ir first.
            let ir = line.split_whitespace().nth(positions).and_then(|n| n.parse::<f64>().ok()).unwrap_or(0.0);
            let into_libfabric = callee_object.unwrap_or(object).contains("libfabric.so");
            if object.rsplit('/').next() == Some(program) && into_libfabric {
                let c = per_callee.entry(callee).or_default();
                c.calls += calls;
                c.instructions += ir;
            }
            callee_object = None;
        }
    }
    // A round trip posts a receive and a send and reads the queue at least
    // once, so the read may tie with a post on calls when the queue was
    // never found empty; of the callees called nearly as often as the most
    // called, the read is the one that costs most (it runs the provider's
    // progress and copies the completion out).
    let most = per_callee.values().map(|c| c.calls).fold(0.0, f64::max);
    per_callee
        .into_values()
        .filter(|c| c.calls >= 0.9 * most)
        .max_by(|a, b| a.instructions.total_cmp(&b.instructions))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_called_libfabric_function_and_its_inclusive_cost() {
        let profile = "\
positions: line
events: Ir Dr
cmd: /usr/bin/fi_pingpong -S 64
ob=(1) /usr/bin/fi_pingpong
fn=(1) main
cob=(2) /usr/lib/x86_64-linux-gnu/libfabric.so.1
cfn=(2) 0x400c0
calls=30 0
12 900 10
cob=(2)
cfn=(3) 0x6b5f0
calls=10 0
13 100 1
cob=(3) /usr/lib/x86_64-linux-gnu/libc.so.6
cfn=(4) memcpy
calls=50 0
14 500 5
fn=(5) loop
cob=(2)
cfn=(2)
calls=5 0
+2 150 3
";
        assert_eq!(profile_command(profile).as_deref(), Some("fi_pingpong"));
        assert_eq!(most_called(profile, "fi_pingpong"), Calls { calls: 35.0, instructions: 1050.0 });
    }

    #[test]
    fn a_read_that_ties_with_a_post_is_told_apart_by_its_cost() {
        let profile = "\
positions: line
events: Ir
cmd: pingpong
ob=(1) /x/pingpong
fn=(1) main
cob=(2) /usr/lib/libfabric.so.1
cfn=(2) 0x6b5f0
calls=1000 0
1 100000
cob=(2)
cfn=(3) 0x400c0
calls=1000 0
2 650000
cob=(2)
cfn=(4) 0x6b8a0
calls=1000 0
3 48000
";
        assert_eq!(most_called(profile, "pingpong"), Calls { calls: 1000.0, instructions: 650000.0 });
    }
}
