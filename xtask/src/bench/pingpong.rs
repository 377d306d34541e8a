//! Timed runs: a server and a client of the same implementation, on
//! loopback, alternating C and Rust so both see the same machine.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{Lane, Plan};

/// Which pingpong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    C,
    Rust,
}

/// Every provider's interface variable, pinned to loopback.
pub const LOOPBACK: [(&str, &str); 4] =
    [("FI_TCP_IFACE", "lo"), ("FI_UDP_IFACE", "lo"), ("FI_SOCKETS_IFACE", "lo"), ("FI_NET_IFACE", "lo")];

/// How long one run may take.
const DEADLINE: Duration = Duration::from_secs(300);

/// Median results of one size.
#[derive(Debug, Clone)]
pub struct SizeResult {
    pub size: usize,
    pub iterations: usize,
    /// Median microseconds per transfer (one way), C and Rust.
    pub usec: [f64; 2],
    /// Median MB/s, C and Rust.
    pub mbps: [f64; 2],
    /// The median, lowest and highest Rust/C ratio of a single round (C and
    /// Rust back to back): latency, then bandwidth. The median is the paired
    /// estimate, which a drift of the machine between rounds moves less
    /// than the ratio of the medians; the range is how far this machine's
    /// noise moves one comparison.
    pub rounds: [Rounds; 2],
}

/// The C tool's round trips for a size (its `size_to_count`), times `scale`.
fn iterations(size: usize, scale: usize) -> usize {
    let n = if size >= 1 << 20 {
        100
    } else if size >= 1 << 16 {
        1000
    } else {
        10000
    };
    n * scale
}

/// Runs every size of `lane`, `plan.pingpong_rounds` times each,
/// alternating which implementation goes first.
pub fn measure(lane: &Lane, sizes: &[usize], c: &Path, rust: &Path, plan: Plan) -> Result<Vec<SizeResult>, String> {
    let mut out = Vec::new();
    for &size in sizes {
        let n = iterations(size, plan.scale);
        let mut samples: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
        for round in 0..plan.pingpong_rounds {
            let order = if round % 2 == 0 { [Impl::C, Impl::Rust] } else { [Impl::Rust, Impl::C] };
            let mut failures = Vec::new();
            for which in order {
                let exe = if which == Impl::C { c } else { rust };
                let args = pingpong_args(lane.provider, lane.ep, size, n);
                match run_pair(exe, &args, size) {
                    Ok(Some(row)) => samples[which as usize].push(row),
                    Ok(None) => failures.push(format!("{which:?}: no result row")),
                    Err(e) => failures.push(format!("{which:?}: {e}")),
                }
            }
            match failures.len() {
                0 => {}
                // Neither tool can run this size here (above the lane's largest message).
                2 if round == 0 => break,
                _ => return Err(format!("{} size {size}: {}", lane.name(), failures.join("; "))),
            }
        }
        if samples.iter().any(Vec::is_empty) {
            continue;
        }
        let median = |i: usize, f: fn(&(f64, f64)) -> f64| median(samples[i].iter().map(f).collect());
        let rounds =
            |f: fn(&(f64, f64)) -> f64| Rounds::of(samples[0].iter().zip(&samples[1]).map(|(c, r)| f(r) / f(c)));
        out.push(SizeResult {
            size,
            iterations: n,
            usec: [median(0, |s| s.0), median(1, |s| s.0)],
            mbps: [median(0, |s| s.1), median(1, |s| s.1)],
            rounds: [rounds(|s| s.0), rounds(|s| s.1)],
        });
    }
    Ok(out)
}

/// Ratios of single rounds: their median, lowest and highest.
#[derive(Debug, Clone, Copy)]
pub struct Rounds {
    /// The median ratio: the paired estimate.
    pub median: f64,
    /// The lowest ratio.
    pub low: f64,
    /// The highest ratio.
    pub high: f64,
}

impl Rounds {
    /// Of `ratios`, at least one.
    pub fn of(ratios: impl Iterator<Item = f64>) -> Rounds {
        let ratios: Vec<f64> = ratios.collect();
        let (low, high) = ratios.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        Rounds { median: median(ratios), low, high }
    }
}

/// A pingpong's arguments (the C tool's and ours): `provider`, endpoint
/// type `ep`, `size`-byte messages, `n` round trips.
pub fn pingpong_args(provider: &str, ep: &str, size: usize, n: impl ToString) -> Vec<String> {
    ["-p", provider, "-e", ep, "-S", &size.to_string(), "-I", &n.to_string()].iter().map(|s| s.to_string()).collect()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A server and a client of `exe` with `args` (messages of `size` bytes);
/// the client's (usec/xfer, MB/sec), or `None` when it printed no row
/// (size above the lane's limit).
pub fn run_pair(exe: &Path, args: &[String], size: usize) -> Result<Option<(f64, f64)>, String> {
    Ok(parse_row(&pair(exe, args, &[])?, size))
}

/// Runs a server (`-B port`) and a client (`-P port 127.0.0.1`) of `exe`
/// with `args` on loopback, the client under `wrapper` (a command and its
/// arguments, put before `exe`) when one is given; the client's stdout.
pub fn pair(exe: &Path, args: &[String], wrapper: &[String]) -> Result<String, String> {
    Ok(pair_with(exe, args, wrapper, &[])?.client)
}

/// What the two sides of a run printed.
pub struct Printed {
    /// The client's stdout.
    pub client: String,
    /// The client's stderr.
    pub client_err: String,
    /// The server's stderr.
    pub server_err: String,
}

/// [`pair`] with `env` set for both sides; what both printed. The server
/// and the client run on CPUs of their own when there are two (see
/// [`cores`]).
pub fn pair_with(exe: &Path, args: &[String], wrapper: &[String], env: &[(&str, &str)]) -> Result<Printed, String> {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let [server_core, client_core] = match cores() {
        Some([server, client]) => [Some(server), Some(client)],
        None => [None, None],
    };
    let mut server = spawn(exe, &[args, &["-B".into(), port.to_string()]].concat(), false, env, server_core)?;
    wait_listening(port, &mut server)?;
    let client_args = [args, &["-P".into(), port.to_string(), "127.0.0.1".into()]].concat();
    let client = match wrapper.split_first() {
        Some((command, rest)) => spawn(
            Path::new(command),
            &[rest, &[exe.display().to_string()], &client_args].concat(),
            true,
            env,
            client_core,
        )?,
        None => spawn(exe, &client_args, true, env, client_core)?,
    };
    let (client, client_err) = match finish(client) {
        Ok(out) => out,
        Err(e) => {
            // Its peer is gone: the server would wait out its own deadline.
            let _ = server.kill();
            let _ = server.wait();
            return Err(e);
        }
    };
    let (_, server_err) = finish(server)?;
    Ok(Printed { client, client_err, server_err })
}

/// Starts `exe` with `args` on loopback, on CPU `core` if one is given.
pub fn spawn(
    exe: &Path,
    args: &[String],
    capture: bool,
    env: &[(&str, &str)],
    core: Option<usize>,
) -> Result<Child, String> {
    let mut command = match core {
        Some(core) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", &core.to_string()]).arg(exe);
            taskset
        }
        None => Command::new(exe),
    };
    command
        .args(args)
        .envs(LOOPBACK)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(if capture { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", exe.display()))
}

/// The CPUs the server and the client of a run are pinned to: the first
/// two this process may run on. Left to the scheduler, the two busy-polling
/// sides of a run on a 2-core machine now and then share a core or move,
/// and the run then takes up to 15% longer in either tool: single rounds of
/// shm at 64 KiB ranged over 4.5–5.7 µs unpinned against 4.7–5.0 pinned
/// (bar one). `None`, so unpinned, with fewer than two CPUs or no `taskset`.
pub fn cores() -> Option<[usize; 2]> {
    static CORES: OnceLock<Option<[usize; 2]>> = OnceLock::new();
    *CORES.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
        let cpus = cpu_list(list.trim())?;
        let taskset = Command::new("taskset").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
        match (cpus.as_slice(), taskset) {
            ([server, client, ..], Ok(status)) if status.success() => Some([*server, *client]),
            _ => None,
        }
    })
}

/// The CPUs of a list such as `0-3,8,10-11`, in order; `None` if malformed.
fn cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((first, last)) => cpus.extend(first.parse::<usize>().ok()?..=last.parse::<usize>().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// Waits for the child; its stdout and stderr, or its stderr as the error.
pub fn finish(child: Child) -> Result<(String, String), String> {
    let start = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() || start.elapsed() > DEADLINE {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if start.elapsed() > DEADLINE {
        let _ = child.kill();
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("pingpong failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// Waits until the server's control socket listens (read from the kernel's
/// socket table: a probe connection would be taken for the client).
pub fn wait_listening(port: u16, server: &mut Child) -> Result<(), String> {
    let needle = format!(":{port:04X}");
    let start = Instant::now();
    loop {
        let listening = ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|t| {
            std::fs::read_to_string(t).unwrap_or_default().lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&needle) && f[3] == "0A"
            })
        });
        if listening {
            return Ok(());
        }
        if let Ok(Some(status)) = server.try_wait() {
            return Err(format!("the server exited before listening: {status}"));
        }
        if start.elapsed() > DEADLINE {
            return Err(format!("nothing listened on port {port}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The first result row of `size`-byte messages: (usec/xfer, MB/sec).
///
/// The time per transfer is worked out from MB/sec, bytes per microsecond
/// printed to 0.01 (five significant digits at 64 bytes), rather than
/// read from usec/xfer: both tools print that to 0.01 µs, which at 0.6 µs
/// is a step of 1.7%, too coarse to judge a 2% target (a ratio could only
/// be 1.000, 1.017 or 1.033). Without bytes there is no rate to use.
fn parse_row(stdout: &str, size: usize) -> Option<(f64, f64)> {
    let row = stdout.lines().find(|l| l.starts_with(|c: char| c.is_ascii_digit()))?;
    let f: Vec<&str> = row.split_whitespace().collect();
    let (printed, mbps): (f64, f64) = (f.get(6)?.parse().ok()?, f.get(5)?.parse().ok()?);
    let usec = if size > 0 && mbps > 0.0 { size as f64 / mbps } else { printed };
    Some((usec, mbps))
}

#[cfg(test)]
mod tests {
    use super::{cpu_list, parse_row, Rounds};

    #[test]
    fn cpu_lists_read_as_the_kernel_writes_them() {
        assert_eq!(cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(cpu_list("2,4-6,9"), Some(vec![2, 4, 5, 6, 9]));
        assert_eq!(cpu_list("3"), Some(vec![3]));
        assert_eq!(cpu_list("0-x"), None);
    }

    #[test]
    fn rounds_give_their_median_and_range() {
        let r = Rounds::of([1.04, 0.97, 1.50, 1.01, 0.99].into_iter());
        assert_eq!((r.median, r.low, r.high), (1.01, 0.97, 1.50));
    }

    #[test]
    fn the_time_per_transfer_comes_from_the_rate() {
        let out = "bytes   #sent   #ack     total       time     MB/sec    usec/xfer   Mxfers/sec\n\
                   64      100k    =100k    12m         0.13s     95.69       0.67       1.50\n";
        let (usec, mbps) = parse_row(out, 64).expect("a row");
        assert_eq!(mbps, 95.69);
        assert!((usec - 64.0 / 95.69).abs() < 1e-12, "{usec}");
        let zero = "0       100     =100     0           0.00s      0.00       0.94       1.06\n";
        assert_eq!(parse_row(zero, 0), Some((0.94, 0.0)), "no bytes: the printed time");
    }
}
