//! The command line of `fi_pingpong`, parsed the way its `getopt` does:
//! `-p tcp` or `-ptcp`, flags clustered (`-cv`), options before or after the
//! server address.

use std::fmt;

use libfabric::EpType;

/// Where a run stands: what `fi_pingpong` calls its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `-B`: the control port (server: to listen on; client: to bind to).
    pub src_port: u16,
    /// `-P`: the server's control port (client).
    pub dst_port: u16,
    /// The server's address: given for a client, absent for a server.
    pub dst_addr: Option<String>,
    /// `-d`: the domain name.
    pub domain: Option<String>,
    /// `-p`: the provider name.
    pub provider: Option<String>,
    /// `-e`: the endpoint type (DGRAM unless told).
    pub ep_type: EpType,
    /// `-I`: iterations per size.
    pub iterations: usize,
    /// Sizes to run.
    pub sizes: Sizes,
    /// `-c`: fill and check every message's bytes.
    pub verify: bool,
    /// `-m tagged`: tagged messages instead of untagged.
    pub tagged: bool,
    /// `-v`: debugging output on stderr.
    pub verbose: bool,
    /// `-6`: the control connection over IPv6.
    pub ipv6: bool,
}

/// Which transfer sizes a run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizes {
    /// 64 B to 1 MiB in powers of four (and 64 KiB), as far as the endpoint goes.
    Default,
    /// `-S all`: 0, 1, 2, 3, 4, 6, 8, 12, … up to the endpoint's limit.
    All,
    /// `-S N`: exactly this size.
    One(usize),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            src_port: 0,
            dst_port: 0,
            dst_addr: None,
            domain: None,
            provider: None,
            ep_type: EpType::DGRAM,
            iterations: 10,
            sizes: Sizes::Default,
            verify: false,
            tagged: false,
            verbose: false,
            ipv6: false,
        }
    }
}

/// What parsing the command line ended with, other than options to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// `-h`: print [`USAGE`] and stop.
    Help,
    /// A bad option or value: say why, then print [`USAGE`].
    Bad(String),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Help => f.write_str("help requested"),
            Stop::Bad(why) => f.write_str(why),
        }
    }
}

/// The usage text, the same as the C tool's.
pub const USAGE: &str = "Usage:
  pingpong [OPTIONS]\t\tstart server
  pingpong [OPTIONS] <srv_addr>\tconnect to server

Ping pong client and server

Options:
 -B <src_port>        source control port number (server: 47592, client: auto)
 -P <dst_port>        destination control port number (client: 47592)
 -d <domain>          domain name
 -p <provider>        specific provider name eg sockets, verbs
 -e <ep_type>         endpoint type: msg|rdm|dgram (dgram)
 -I <number>          number of iterations (10)
 -S <size>            specific transfer size or 'all' (all)
 -c                   enables data_integrity checks
 -m <transmit mode>   transmit mode type: msg|tagged (msg)
 -h                   display this help output
 -v                   enable debugging output
 -6                   use IPv6 address
";

/// Options that take a value.
const WITH_VALUE: &str = "dpeISBPm";
/// Options that are flags.
const FLAGS: &str = "hvc6";

impl Options {
    /// Parses the arguments after the program name.
    ///
    /// ```
    /// use libfabric_examples::fi_pingpong::{Options, Sizes};
    /// let o = Options::parse(["-p", "tcp", "-e", "msg", "-S64", "-c", "127.0.0.1"]).unwrap();
    /// assert_eq!(o.provider.as_deref(), Some("tcp"));
    /// assert_eq!((o.sizes, o.verify), (Sizes::One(64), true));
    /// assert_eq!(o.dst_addr.as_deref(), Some("127.0.0.1"));
    /// ```
    pub fn parse<I, S>(args: I) -> Result<Options, Stop>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut o = Options::default();
        let mut args = args.into_iter().map(Into::into);
        let mut positional = Vec::new();
        while let Some(arg) = args.next() {
            if arg == "--" {
                positional.extend(args.by_ref());
                break;
            }
            let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
                positional.push(arg);
                continue;
            };
            for (i, opt) in cluster.char_indices() {
                if FLAGS.contains(opt) {
                    o.flag(opt)?;
                    continue;
                }
                if !WITH_VALUE.contains(opt) {
                    return Err(Stop::Bad(format!("invalid option -- '{opt}'")));
                }
                // The value is the rest of this argument, or the next one.
                let rest = &cluster[i + opt.len_utf8()..];
                let value = if rest.is_empty() {
                    args.next().ok_or_else(|| Stop::Bad(format!("option requires an argument -- '{opt}'")))?
                } else {
                    rest.to_string()
                };
                o.value(opt, &value)?;
                break;
            }
        }
        o.dst_addr = positional.into_iter().next();
        Ok(o)
    }

    fn flag(&mut self, opt: char) -> Result<(), Stop> {
        match opt {
            'h' => return Err(Stop::Help),
            'v' => self.verbose = true,
            'c' => self.verify = true,
            _ => self.ipv6 = true,
        }
        Ok(())
    }

    fn value(&mut self, opt: char, value: &str) -> Result<(), Stop> {
        match opt {
            'd' => self.domain = Some(value.to_string()),
            'p' => self.provider = Some(value.to_string()),
            'e' => {
                self.ep_type = match value.to_ascii_lowercase().as_str() {
                    "msg" => EpType::MSG,
                    "rdm" => EpType::RDM,
                    "dgram" => EpType::DGRAM,
                    _ => return Err(Stop::Bad(format!("Unknown endpoint : {value}"))),
                }
            }
            'I' => self.iterations = number(value, i32::MAX as usize)?,
            'S' if value.eq_ignore_ascii_case("all") => self.sizes = Sizes::All,
            'S' => self.sizes = Sizes::One(number(value, i32::MAX as usize)?),
            'B' => self.src_port = number(value, u16::MAX as usize)? as u16,
            'P' => self.dst_port = number(value, u16::MAX as usize)? as u16,
            // Anything but "msg" selects tagged messages, as in C.
            _ => self.tagged = !value.eq_ignore_ascii_case("msg"),
        }
        Ok(())
    }
}

fn number(value: &str, max: usize) -> Result<usize, Stop> {
    match value.parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        Ok(_) => Err(Stop::Bad(format!("Error parsing \"{value}\": Numerical result out of range"))),
        Err(_) => Err(Stop::Bad(format!("Error parsing \"{value}\": Invalid argument"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_getopt() {
        let o =
            Options::parse(["127.0.0.1", "-ptcp;ofi_rxm", "-erdm", "-cvI", "5", "-m", "tagged", "-B", "9"]).unwrap();
        assert_eq!(o.provider.as_deref(), Some("tcp;ofi_rxm"));
        assert_eq!(o.ep_type, EpType::RDM);
        assert!(o.verify && o.verbose && o.tagged);
        assert_eq!((o.iterations, o.src_port), (5, 9));
        assert_eq!(o.dst_addr.as_deref(), Some("127.0.0.1"));
        assert_eq!(Options::parse(["-S", "all"]).unwrap().sizes, Sizes::All);
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        assert_eq!(Options::parse(["-h"]), Err(Stop::Help));
        assert!(matches!(Options::parse(["-x"]), Err(Stop::Bad(_))));
        assert!(matches!(Options::parse(["-e", "rc"]), Err(Stop::Bad(_))));
        assert!(matches!(Options::parse(["-B", "70000"]), Err(Stop::Bad(_))));
        assert!(matches!(Options::parse(["-I"]), Err(Stop::Bad(_))));
    }
}
