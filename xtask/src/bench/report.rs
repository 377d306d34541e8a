//! The report: a markdown table per lane and an SVG plot of latency and
//! bandwidth against size, Rust beside C.

use std::fmt::Write as _;

use super::callgrind::Counts;
use super::pingpong::{self, Rounds, SizeResult};
use super::scaling::Point;
use super::transport::Row;
use super::turns;
use super::{Lane, Plan};

pub struct LaneResult {
    pub lane: Lane,
    pub timing: Vec<SizeResult>,
    pub counts: Counts,
}

pub fn markdown(
    results: &[LaneResult],
    scaling: &[Point],
    transport: &[Row],
    turns: &[turns::Row],
    plan: Plan,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks: Rust pingpong beside C `fi_pingpong`\n");
    let _ = writeln!(
        md,
        "Written by `cargo xtask bench{}`; do not edit. Each size ran {} rounds, C and Rust alternating \
         (which goes first alternates too); the figures are medians. Latency is one way, worked out from \
         the tools' `MB/sec` (their `usec/xfer` is printed to 0.01 µs, 1.7% at 0.6 µs); bandwidth is \
         their `MB/sec`; \"one round\" is the median of the ratios of single rounds (C and Rust run back \
         to back: the paired estimate, which a drift of the machine between rounds moves less than the ratio of \
         the medians), then their lowest and highest. Both tools run on loopback (`FI_*_IFACE=lo`) on the same \
         machine, server and client busy-polling, {}. The Rust tools are built with the workspace's release \
         profile (`[profile.release]` in `Cargo.toml`, as README advises programs built on the crate); C's \
         `fi_pingpong` is the one installed (`libfabric-bin`).\n",
        if plan.rounds < 7 { " --quick" } else { "" },
        plan.pingpong_rounds,
        match pingpong::cores() {
            Some([server, client]) =>
                format!("the server on CPU {server} and the client on CPU {client} (every run of the report)"),
            None => "unpinned (fewer than two CPUs, or no `taskset`)".to_string(),
        }
    );
    let _ = writeln!(md, "Targets (issue 6): latency ratio ≤ 1.02, bandwidth ratio ≥ 0.98, instructions ≤ 1.02× C.\n");
    let _ = writeln!(md, "![latency and bandwidth](benchmarks.svg)\n");
    for r in results {
        let _ = writeln!(md, "## {}\n", r.lane.name());
        let _ = writeln!(
            md,
            "| size | round trips | C µs | Rust µs | latency Rust/C | one round: median (range) | C MB/s | Rust MB/s | bandwidth Rust/C | one round: median (range) |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for s in &r.timing {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.2} | {:.3} | {} | {:.2} | {:.2} | {:.3} | {} |",
                size(s.size),
                s.iterations,
                s.usec[0],
                s.usec[1],
                s.usec[1] / s.usec[0],
                rounds(&s.rounds[0]),
                s.mbps[0],
                s.mbps[1],
                s.mbps[1] / s.mbps[0],
                rounds(&s.rounds[1])
            );
        }
        let (c, rust) = (&r.counts.c, &r.counts.rust);
        let _ = writeln!(
            md,
            "\nInstructions per 64-byte round trip (client, callgrind; {}). \"Reads\" are the calls of the \
             completion-queue read (full and empty) and \"outside\" everything else: how often the client finds \
             the queue empty is a matter of timing, so the totals move with it from run to run, while the \
             instructions outside the reads hardly do (an empty read adds only the loop around it). \"At C's \
             reads\" is Rust's total had it read the queue as often as C did (C's total, with Rust's \
             instructions outside the reads in place of C's).\n",
            if plan.callgrind_runs > 1 {
                "of two runs each, the one with the fewest reads, and up to two more of the tool that read \
                 the queue more often while C's and Rust's reads differ by over 0.05 per round trip"
            } else {
                "one run each, and up to two more of the tool that read the queue more often while C's and \
                 Rust's reads differ by over 0.05 per round trip: the one with the fewest reads"
            }
        );
        let _ = writeln!(md, "| | total | application | libfabric | libc | reads | outside the reads |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
        for (name, x) in [("C", c), ("Rust", rust)] {
            let _ = writeln!(
                md,
                "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} |",
                x.total, x.app, x.libfabric, x.libc, x.reads, x.outside_reads
            );
        }
        let at_c_reads = (c.total - c.outside_reads + rust.outside_reads) / c.total;
        let _ = writeln!(
            md,
            "| Rust/C | {:.3} | | | | | {:.3} |\n\nRust/C at C's reads: **{at_c_reads:.3}**.\n",
            rust.total / c.total,
            rust.outside_reads / c.outside_reads
        );
    }
    let _ = writeln!(md, "## Scaling: message rate (`examples/msgrate`)\n");
    let _ = writeln!(
        md,
        "One client streams {} messages of 64 bytes to the server's endpoints (all in one address vector, \
         round-robin), keeping `window` sends in flight, after one untimed message to each endpoint (the \
         provider's per-peer setup: rxm connects, rxd handshakes); each server endpoint keeps `window` \
         receives posted. Fixed buffers throughout: no allocation per message.\n",
        plan.messages
    );
    let _ = writeln!(md, "| lane | peers | window | messages/s | µs/message |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for p in scaling {
        let _ = writeln!(md, "| {} | {} | {} | {:.0} | {:.3} |", p.lane, p.peers, p.window, p.rate, p.usec);
    }
    let _ = writeln!(
        md,
        "\nPeers stop at 256 on shm (its address vector's limit) and at 16 on tcp;ofi_rxm (each rxm \
         endpoint preallocates about 100 MB of buffers, so 1,024 peers would need about 100 GB; 28 MB \
         with `FI_OFI_RXM_*_SIZE=64`, still 28 GB); udp;ofi_rxd goes to 1,024{}. On rxd the cost per \
         message grows with the peers even after each peer's handshake (its reliability protocol keeps \
         a window and acknowledgements per peer; not looked into further).",
        if plan.sparse_scaling {
            " in a full run (a quick run stops at 256: opening 1,024 endpoints takes about 18 s)"
        } else {
            ""
        }
    );
    async_transport(&mut md, transport, plan);
    critical_path(&mut md, turns, plan);
    md
}

fn critical_path(md: &mut String, rows: &[turns::Row], plan: Plan) {
    let _ = writeln!(md, "\n## The critical path: what each side does in a round trip\n");
    let _ = writeln!(
        md,
        "Wall times here wander by up to 2× for minutes at a time, mostly in the provider's part of a round \
         trip. So each tool also runs with `scripts/turns.c` preloaded into both processes: it wraps the \
         completion read and the sends (`fi_inject`, `fi_send` and their data and tagged forms) of every \
         libfabric object the program opens (through `fi_fabric`, the one call it can interpose), the C \
         tool's as much as ours, and reads the time stamp counter. A side's **turn** runs from the read that \
         returned a message to the call that sends the answer: all that the program does. The rest of a \
         round trip is the provider's: the two sends, and the two **trips** from a send to the peer's read \
         that returns the message. So the difference of two tools' turns is the difference of their round \
         trips that the code makes, and \"by the critical path\" below is the ratio it gives: latency (the \
         reference's round trip + the difference of turns) / the reference's round trip, and bandwidth the \
         inverse, the round trip being twice the reference's µs one way in the same runs (the probes \
         lengthen it by about 100 ns, outside the parts). Trips are shown where the size goes by inject (for \
         a send the client's wait ends at the send's own completion). {} runs of each tool and size, the \
         order rotating; each figure is the median over runs of a run's mean between its 10th and 90th \
         percentile, in ns.\n",
        plan.rounds
    );
    let _ = writeln!(md, "### Rust pingpong beside C `fi_pingpong` (issue 6)\n");
    let _ = writeln!(
        md,
        "| lane | size | C turns (client + server) | Rust turns | Rust − C | C round trip | latency Rust/C | bandwidth Rust/C | C trip | Rust trip |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let extra = r.rust.turns() - r.c.turns();
        let round_trip = r.c.round_trip();
        let trips = if r.size == turns::small(&r.lane) {
            format!("{:.0} | {:.0}", r.c.trip(), r.rust.trip())
        } else {
            "– | –".into()
        };
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} + {:.1} | {:.1} + {:.1} | {:+.1} | {:.0} | {:.3} | {:.3} | {trips} |",
            r.lane.name(),
            size(r.size),
            r.c.client_turn,
            r.c.server_turn,
            r.rust.client_turn,
            r.rust.server_turn,
            extra,
            round_trip,
            (round_trip + extra) / round_trip,
            round_trip / (round_trip + extra)
        );
    }
    let _ = writeln!(md, "\n### The async transport beside the Rust pingpong (issue 5)\n");
    let _ = writeln!(
        md,
        "`async_bench -m latency --busy` against the Rust pingpong, the same size. The async server answers \
         from its serving loop; its client posts the answer's receive after the request's inject, outside its turn.\n"
    );
    let _ = writeln!(
        md,
        "| lane | size | pingpong turns (client + server) | async turns | async − pingpong | pingpong round trip | async/pingpong by the critical path | pingpong trip | async trip |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let Some(a) = r.async_busy else { continue };
        let extra = a.turns() - r.rust.turns();
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} + {:.1} | {:.1} + {:.1} | {:+.1} | {:.0} | {:.2} | {:.0} | {:.0} |",
            r.lane.provider,
            size(r.size),
            r.rust.client_turn,
            r.rust.server_turn,
            a.client_turn,
            a.server_turn,
            extra,
            r.rust.round_trip(),
            (r.rust.round_trip() + extra) / r.rust.round_trip(),
            r.rust.trip(),
            a.trip()
        );
    }
}

fn async_transport(md: &mut String, rows: &[Row], plan: Plan) {
    let _ = writeln!(md, "\n## The async transport beside the synchronous tools\n");
    let _ = writeln!(
        md,
        "Latency: `examples/async_bench -m latency`, 64-byte requests one at a time through \
         `Peer::request` against `Node::serve` (tagged send, by inject when it fits, the answer's receive \
         posted after the inject; the serving loop answers a request whose handler is done at once, the peer's task the others), half the \
         round trip, against the Rust pingpong (`-e rdm -S 64`, one way). Message \
         rate: `async_bench -m rate`, 64-byte `Peer::send`s from 16 tasks to one `Node::incoming` with 16 receives posted, against \
         `examples/msgrate -n 1 -W 16`. Both sides of the async runs on one thread (tokio's current-thread \
         runtime), the driver either busy-polling (`ProgressMode::BusyPoll`: the future polled last reads the \
         queue on each of its polls) or waiting (the default: the same while the queue is active, until 200 µs after \
         the last completion or post, 2.5 ms on a queue without a wait descriptor; then sleeping on the CQ's wait \
         descriptor, or polling every millisecond). {}; {} \
         rounds, the order rotating; medians, and in brackets the median of the ratios of single rounds (each \
         round runs every kind once).\n",
        super::transport::LANES
            .map(|l| format!("{} round trips and {} messages a run on {}", l.round_trips, l.messages, l.provider))
            .join(", "),
        plan.rounds
    );
    let _ = writeln!(md, "Targets (issue 5): latency ≤ 1.15× and message rate ≥ 0.9× of the synchronous tools.\n");
    let _ = writeln!(md, "| lane | sync µs | async busy µs | ratio | async wait µs | ratio | sync msg/s | async busy msg/s | ratio | async wait msg/s | ratio |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} |",
            r.lane,
            latency_cells(r.usec[0], r, r.paired[0]),
            r.rate[0],
            r.rate[1],
            r.rate[1] / r.rate[0],
            r.rate[2],
            r.rate[2] / r.rate[0]
        );
    }
    let _ = writeln!(
        md,
        "\nThe transport's requests and answers are tagged messages, whose matching costs the provider more \
         than untagged ones: the same latency against the pingpong's tagged mode (`-m tagged`).\n"
    );
    let _ = writeln!(md, "| lane | sync tagged µs | async busy µs | ratio | async wait µs | ratio |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(md, "| {} | {} |", r.lane, latency_cells(r.tagged_usec, r, r.paired[1]));
    }
}

/// The latency cells of a transport row against the synchronous `base`:
/// base, async busy-polling and its ratio, async waiting and its ratio,
/// each ratio with the median of single rounds' (`paired`) in brackets.
fn latency_cells(base: f64, r: &Row, paired: [f64; 2]) -> String {
    let [_, busy, wait] = r.usec;
    format!(
        "{base:.3} | {busy:.3} | {:.2} ({:.2}) | {wait:.3} | {:.2} ({:.2})",
        busy / base,
        paired[0],
        wait / base,
        paired[1]
    )
}

/// A [`Rounds`] cell: the median, then the range.
fn rounds(r: &Rounds) -> String {
    format!("{:.3} ({:.2}–{:.2})", r.median, r.low, r.high)
}

fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// Two log-log panels (latency, bandwidth) against size; one colour per
/// lane, solid C and dashed Rust.
pub fn svg(results: &[LaneResult]) -> String {
    const W: f64 = 940.0;
    const H: f64 = 380.0;
    const PANEL: f64 = 400.0;
    const COLORS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    type Metric = fn(&SizeResult, usize) -> f64;
    let panels: [(&str, Metric); 2] =
        [("latency (µs, one way)", |r, i| r.usec[i]), ("bandwidth (MB/s)", |r, i| r.mbps[i])];
    for (p, (title, value)) in panels.iter().enumerate() {
        let x0 = 50.0 + p as f64 * (PANEL + 50.0);
        let (y0, ph) = (30.0, 260.0);
        let values: Vec<f64> = results
            .iter()
            .flat_map(|r| r.timing.iter().flat_map(|t| [value(t, 0), value(t, 1)]))
            .filter(|v| *v > 0.0)
            .collect();
        let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        let (lo, hi) = (lo.max(1e-3).log10().floor(), hi.max(1e-3).log10().ceil().max(lo.log10().floor() + 1.0));
        let (xlo, xhi) = (64f64.log2(), ((1 << 20) as f64).log2());
        let px = |size: usize| x0 + ((size as f64).log2() - xlo) / (xhi - xlo) * PANEL;
        let py = |v: f64| y0 + ph - (v.max(1e-3).log10() - lo) / (hi - lo) * ph;
        let _ = writeln!(s, r#"<text x="{}" y="18" font-size="13">{title}</text>"#, x0);
        let _ = writeln!(s, r##"<rect x="{x0}" y="{y0}" width="{PANEL}" height="{ph}" fill="none" stroke="#888"/>"##);
        let mut decade = lo;
        while decade <= hi {
            let y = py(10f64.powf(decade));
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                x0 + PANEL,
                x0 - 4.0,
                y + 4.0,
                10f64.powf(decade)
            );
            decade += 1.0;
        }
        for (size, label) in [(64, "64"), (1024, "1K"), (65536, "64K"), (1 << 20, "1M")] {
            let _ =
                writeln!(s, r#"<text x="{:.1}" y="{}" text-anchor="middle">{label}</text>"#, px(size), y0 + ph + 14.0);
        }
        for (l, r) in results.iter().enumerate() {
            for (i, dash) in [(0, ""), (1, r#" stroke-dasharray="5,3""#)] {
                let points: Vec<String> =
                    r.timing.iter().map(|t| format!("{:.1},{:.1}", px(t.size), py(value(t, i)))).collect();
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"{dash}/>"#,
                    points.join(" "),
                    COLORS[l % COLORS.len()]
                );
            }
        }
    }
    for (l, r) in results.iter().enumerate() {
        let x = 50.0 + l as f64 * 170.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="335" x2="{}" y2="335" stroke="{}" stroke-width="2"/><text x="{}" y="339">{}</text>"#,
            x + 20.0,
            COLORS[l % COLORS.len()],
            x + 24.0,
            r.lane.name()
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="50" y="365">solid: C fi_pingpong, dashed: Rust pingpong; x: message size (bytes)</text>"#
    );
    s.push_str("</svg>\n");
    s
}
