//! How the cost per message grows with the work: message rate of
//! `examples/msgrate` with more operations in flight (window) and with more
//! peers in one address vector.

use std::path::Path;

use super::pingpong::pair;

/// One measured point.
#[derive(Debug, Clone)]
pub struct Point {
    pub lane: &'static str,
    pub peers: usize,
    pub window: usize,
    pub rate: f64,
    pub usec: f64,
}

/// Windows tried with one peer.
const WINDOWS: [usize; 5] = [1, 4, 16, 64, 256];
/// Peers tried with a window of 4, per provider: shm's address vector takes
/// at most 256 peers, and each tcp;ofi_rxm endpoint preallocates about
/// 100 MB of buffers (28 MB with its queue sizes cut to 64), so these are as
/// far as this 24 GiB machine goes; udp;ofi_rxd reaches 1,024 (about 5.6 GB
/// for the server's 1,024 endpoints).
const PEERS: [(&str, &[usize]); 3] =
    [("shm", &[1, 16, 64, 256]), ("tcp;ofi_rxm", &[1, 4, 16]), ("udp;ofi_rxd", &[1, 16, 64, 256, 1024])];

/// The most peers a quick run tries.
const QUICK_PEERS: usize = 256;

/// Runs msgrate at each window and peer count; `sparse` keeps the ends of
/// each range and one window between (the quick run's time budget).
pub fn measure(msgrate: &Path, messages: u64, sparse: bool) -> Result<Vec<Point>, String> {
    let ends = |all: &[usize], i: usize| !sparse || i == 0 || i + 1 == all.len();
    let mut points = Vec::new();
    for lane in ["shm", "tcp;ofi_rxm"] {
        for (i, &window) in WINDOWS.iter().enumerate() {
            if ends(&WINDOWS, i) || window == 16 {
                points.push(run(msgrate, lane, 1, window, messages)?);
            }
        }
    }
    for (lane, peers) in PEERS {
        // A quick run stops at QUICK_PEERS: udp;ofi_rxd's 1,024 endpoints
        // alone take about 18 s to open.
        let peers: Vec<usize> = peers.iter().copied().filter(|&n| !sparse || n <= QUICK_PEERS).collect();
        for (i, &n) in peers.iter().enumerate() {
            if ends(&peers, i) {
                points.push(run(msgrate, lane, n, 4, messages)?);
            }
        }
    }
    Ok(points)
}

fn run(msgrate: &Path, lane: &'static str, peers: usize, window: usize, messages: u64) -> Result<Point, String> {
    eprintln!("bench: msgrate {lane} peers {peers} window {window}");
    let args: Vec<String> =
        ["-p", lane, "-n", &peers.to_string(), "-W", &window.to_string(), "-N", &messages.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let out = pair(msgrate, &args, &[])?;
    let f: Vec<&str> = out.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).ok_or_else(|| format!("msgrate printed {out:?}"));
    Ok(Point { lane, peers, window, rate: num(5)?, usec: num(6)? })
}
