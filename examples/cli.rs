//! The command line the async examples share, and their `main` ([`run`]):
//! `[-p PROVIDER] [-P PORT] [-n MESSAGES] [-S BYTES] [server [HOST] | client HOST]`.

use std::future::Future;
use std::process::ExitCode;

/// Which side this process plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Serve on this host (default 127.0.0.1).
    Server(String),
    /// Talk to the server on this host.
    Client(String),
    /// Both, in one process, on loopback.
    Both,
}

/// The largest message the examples send (`-S`).
pub const MAX_SIZE: usize = 1 << 20;

/// The parsed command line.
#[derive(Debug, Clone)]
pub struct Args {
    /// `-p`: the libfabric provider.
    pub provider: String,
    /// `-P`: the server's TCP port (listening, or address exchange).
    pub port: u16,
    /// `-n`: how many messages or requests the client sends.
    pub messages: u64,
    /// `-S`: bytes per message, at most [`MAX_SIZE`].
    pub size: usize,
    /// Which side (or both) this process plays.
    pub role: Role,
}

impl Args {
    /// Parses `std::env::args`; on `-h` or a bad argument prints the usage
    /// (and the reason) and returns the exit code to end with.
    pub fn parse(program: &str, provider: &str, port: u16) -> Result<Args, ExitCode> {
        Args::parse_from(std::env::args().skip(1), provider, port).map_err(|why| {
            let usage = format!(
                "usage: {program} [-p PROVIDER (default {provider})] [-P PORT (default {port})] \
                 [-n MESSAGES] [-S BYTES] [server [HOST] | client HOST]"
            );
            match why {
                None => {
                    println!("{usage}");
                    ExitCode::SUCCESS
                }
                Some(why) => {
                    eprintln!("{program}: {why}\n{usage}");
                    ExitCode::from(2)
                }
            }
        })
    }

    /// Parses `args`; `Err(None)` asks for the usage, `Err(Some(why))` is a
    /// mistake.
    pub fn parse_from(
        args: impl IntoIterator<Item = String>,
        provider: &str,
        port: u16,
    ) -> Result<Args, Option<String>> {
        let mut parsed = Args { provider: provider.to_string(), port, messages: 10, size: 64, role: Role::Both };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| Some(format!("{arg} needs a value")));
            let number = |v: String| v.parse::<u64>().map_err(|_| Some(format!("{arg}: not a number: {v}")));
            match arg.as_str() {
                "-p" => parsed.provider = value()?,
                "-P" => {
                    parsed.port = u16::try_from(number(value()?)?).map_err(|_| Some(format!("{arg}: not a port")))?
                }
                "-n" => parsed.messages = number(value()?)?,
                "-S" => {
                    parsed.size = usize::try_from(number(value()?)?)
                        .ok()
                        .filter(|&n| n <= MAX_SIZE)
                        .ok_or_else(|| Some(format!("{arg}: at most {MAX_SIZE} bytes")))?
                }
                "-h" | "--help" => return Err(None),
                "server" => parsed.role = Role::Server("127.0.0.1".into()),
                // A host right after `server` is where to serve.
                host if matches!(parsed.role, Role::Server(_)) && !host.starts_with('-') => {
                    parsed.role = Role::Server(host.to_string())
                }
                "client" => parsed.role = Role::Client(value()?),
                other => return Err(Some(format!("unknown argument {other:?}"))),
            }
        }
        Ok(parsed)
    }
}

/// The `main` of an async example: parses the command line (defaults
/// `provider` and `port`), runs `work` on a tokio runtime, and turns its
/// outcome into the exit code, printing an error as `program: error`.
pub fn run<F, Fut>(program: &str, provider: &str, port: u16, work: F) -> ExitCode
where
    F: FnOnce(Args) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let args = match Args::parse(program, provider, port) {
        Ok(args) => args,
        Err(usage) => return usage,
    };
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| format!("tokio runtime: {e}"))
        .and_then(|runtime| runtime.block_on(work(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, Option<String>> {
        Args::parse_from(args.iter().map(|s| s.to_string()), "tcp", 7100)
    }

    #[test]
    fn defaults_run_both_sides() {
        let args = parse(&[]).expect("defaults");
        assert_eq!((args.provider.as_str(), args.port, args.role), ("tcp", 7100, Role::Both));
    }

    #[test]
    fn roles_and_options() {
        let args = parse(&["-p", "shm", "-n", "5", "client", "10.0.0.1"]).expect("client");
        assert_eq!((args.provider.as_str(), args.messages), ("shm", 5));
        assert_eq!(args.role, Role::Client("10.0.0.1".into()));
        assert_eq!(parse(&["server"]).expect("server").role, Role::Server("127.0.0.1".into()));
        assert_eq!(parse(&["server", "10.0.0.2"]).expect("server").role, Role::Server("10.0.0.2".into()));
        let args = parse(&["server", "-p", "shm"]).expect("an option after server");
        assert_eq!((args.provider.as_str(), args.role), ("shm", Role::Server("127.0.0.1".into())));
    }

    #[test]
    fn mistakes_are_reported() {
        assert_eq!(parse(&["-P", "70000"]).unwrap_err(), Some("-P: not a port".into()));
        assert_eq!(parse(&["-n"]).unwrap_err(), Some("-n needs a value".into()));
        assert_eq!(parse(&["-h"]).unwrap_err(), None);
        assert_eq!(parse(&["-S", "99999999999"]).unwrap_err(), Some("-S: at most 1048576 bytes".into()));
    }
}
