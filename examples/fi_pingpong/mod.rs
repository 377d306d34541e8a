//! A Rust `fi_pingpong`, built on the safe layer, that speaks the C tool's
//! protocol: a Rust server serves the C client and the other way round.
//!
//! The run follows `fi_pingpong`: swap addresses over a TCP control
//! connection (or, for MSG endpoints, connect through a passive endpoint),
//! then for each size synchronise, bounce `-I` messages back and forth,
//! agree on the count and print a row of the same table. A closing "fin"
//! exchange ends the run.
//!
//! ```text
//! cargo run --release -p libfabric-examples --example pingpong -- -p tcp -e msg            # server
//! cargo run --release -p libfabric-examples --example pingpong -- -p tcp -e msg 127.0.0.1  # client
//! ```

mod ctrl;
mod fabric;
mod options;
mod report;
mod verify;

use std::fmt;
use std::io::{self, Write};
use std::time::Instant;

use libfabric::{AddrFormat, EpType};

pub use ctrl::{Ctrl, Role, DEFAULT_PORT};
pub use options::{Options, Sizes, Stop, USAGE};
pub use report::{count, magnitude, row, test_sizes, HEADER};
pub use verify::{Mismatch, Pattern};

use fabric::{first_info, hints, wait_connected, Listener, Session};

/// Why a run stopped: the failing call and libfabric's (or the system's)
/// reason, as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(String);

impl Failure {
    #[cold]
    fn new(why: impl Into<String>) -> Failure {
        Failure(why.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

impl From<io::Error> for Failure {
    #[cold]
    fn from(e: io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => Failure::new("control connection: closed by the peer"),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure(format!(
                "control connection: no answer from the peer within {} s",
                ctrl::read_timeout().as_secs()
            )),
            _ => Failure(format!("control connection: {e}")),
        }
    }
}

/// Runs one ping-pong as server (no `dst_addr`) or client, writing the
/// results table to `out`.
pub fn run(o: &Options, out: &mut dyn Write) -> Result<(), Failure> {
    libfabric::check_version()?;
    let mut ctrl = if let Some(host) = &o.dst_addr {
        let port = if o.dst_port == 0 { DEFAULT_PORT } else { o.dst_port };
        Ctrl::connect(host, port, o.src_port, o.ipv6)?
    } else {
        Ctrl::accept(if o.src_port == 0 { DEFAULT_PORT } else { o.src_port }, o.ipv6)?
    };
    debug(o, format_args!("control connection up"));
    let hints = hints(o)?;
    let mut session = match (o.ep_type, o.dst_addr.is_some()) {
        (EpType::MSG, false) => {
            let listener = Listener::open(&hints)?;
            ctrl.send_name(&listener.pep.name()?, listener.info.addr_format().0)?;
            listener.accept(o)?
        }
        (EpType::MSG, true) => {
            let (name, format) = ctrl.recv_name()?;
            let info = first_info(&hints.addr_format(AddrFormat(format)).dest_addr(&name)?)?;
            let session = Session::open(info, o, None)?;
            session.ep.connect(Some(&name), &[])?;
            wait_connected(session.eq.as_ref().ok_or_else(|| Failure::new("no event queue"))?)?;
            session
        }
        (_, false) => {
            let mut session = Session::open(first_info(&hints)?, o, None)?;
            ctrl.send_name(&session.ep.name()?, session.info().addr_format().0)?;
            let (name, _) = ctrl.recv_name()?;
            session.set_peer(&name)?;
            session
        }
        (_, true) => {
            let (name, format) = ctrl.recv_name()?;
            let info = first_info(&hints.addr_format(AddrFormat(format)).dest_addr(&name)?)?;
            let mut session = Session::open(info, o, None)?;
            ctrl.send_name(&session.ep.name()?, session.info().addr_format().0)?;
            session.set_peer(&name)?;
            session
        }
    };
    debug(o, format_args!("running pingpong test with fi_info:\n{}", session.info()));
    suite(&mut session, &mut ctrl, o, out)?;
    let fin = session.finish()?;
    if o.verify && !fin {
        return Err(Failure::new("the peer's closing \"fin\" arrived damaged"));
    }
    if o.ep_type == EpType::MSG {
        // As in C: the run is over either way, so a failed shutdown is only reported.
        if let Err(e) = session.ep.shutdown() {
            debug(o, format_args!("{e}"));
        }
    }
    Ok(())
}

/// Every size: sync, bounce, count, print.
fn suite(s: &mut Session, ctrl: &mut Ctrl, o: &Options, out: &mut dyn Write) -> Result<(), Failure> {
    let client = o.dst_addr.is_some();
    let mut pattern = Pattern::default();
    let sizes = test_sizes(o.sizes, s.max_transfer);
    debug(o, format_args!("sizes to test: {sizes:?}"));
    for (n, &size) in sizes.iter().enumerate() {
        ctrl.sync()?;
        let start = Instant::now();
        let mut received = 0u64;
        for _ in 0..o.iterations {
            if client {
                send(s, &mut pattern, size, o.verify)?;
                recv(s, &mut pattern, size, o.verify)?;
            } else {
                recv(s, &mut pattern, size, o.verify)?;
                send(s, &mut pattern, size, o.verify)?;
            }
            received += 1;
        }
        let elapsed = start.elapsed();
        let acked = ctrl.exchange_count(received)?;
        if n == 0 {
            writeln!(out, "{HEADER}")?;
        }
        writeln!(out, "{}", row(size, o.iterations as u64, acked, elapsed))?;
    }
    Ok(())
}

#[inline(always)]
fn send(s: &mut Session, pattern: &mut Pattern, size: usize, verify: bool) -> Result<(), Failure> {
    s.send(size, verify.then_some(|bytes: &mut [u8]| pattern.fill(bytes)))
}

#[inline(always)]
fn recv(s: &mut Session, pattern: &mut Pattern, size: usize, verify: bool) -> Result<(), Failure> {
    let checked = s.recv(verify.then_some(|bytes: &[u8]| match bytes.get(..size) {
        Some(data) => pattern.check(data),
        None => Err(Mismatch { iteration: 0, byte: bytes.len() }),
    }))?;
    checked
        .unwrap_or(Ok(()))
        .map_err(|m| Failure::new(format!("Error at iteration={} size={size} byte={}", m.iteration, m.byte)))
}

fn debug(o: &Options, what: fmt::Arguments<'_>) {
    if o.verbose {
        eprintln!("[debug] {what}");
    }
}
