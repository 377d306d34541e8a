//! `fi_info` in Rust: libfabric's discovery tool, on the safe `libfabric` crate.
//!
//! Takes the options of the C `fi_info` shipped with libfabric 1.17 and
//! prints the same bytes, so the two can be diffed:
//!
//! ```text
//! cargo run -p libfabric-examples --example info -- -p tcp -t FI_EP_MSG -v
//! ```
//!
//! | option | value | effect |
//! |---|---|---|
//! | `-s`, `--src_addr` | ADDR | node to bind to (`FI_SOURCE`) |
//! | `-n`, `--node` | NAME | node to reach |
//! | `-P`, `--port` | PNUM | service |
//! | `-c`, `--caps` | `FI_MSG\|FI_RMA…` | required capabilities (accumulate) |
//! | `-m`, `--mode` | `FI_CONTEXT\|…` | supported modes (default: all) |
//! | `-t`, `--ep_type` | `FI_EP_RDM`… | endpoint type |
//! | `-d`, `--domain` / `-f`, `--fabric` | name | domain / fabric name |
//! | `-a`, `--addr_format` | `FI_SOCKADDR_IN`… | address format |
//! | `-p`, `--provider` | `tcp;ofi_rxm`… | provider |
//! | `-e`, `--env` / `-g`, `--getenv` | / SUBSTR | print libfabric's variables (containing SUBSTR) |
//! | `-i`, `--info` | SUBSTR | verbose, only entries containing SUBSTR |
//! | `-l`, `--list` | | providers only |
//! | `-v`, `--verbose` | | every attribute (`fi_tostr`) |
//! | `-h`, `--help` / `--version` | | usage (exit 1) / versions (exit 0) |
//!
//! Like the C tool (which uses glibc's `getopt_long`), options may be
//! clustered (`-lv`), values attached (`-cFI_MSG`, `--caps=FI_MSG`), long
//! names abbreviated (`--prov`), and words that are not options are ignored
//! wherever they stand (`--` ends the options; with `POSIXLY_CORRECT` set, so
//! does the first such word). Names of capabilities, modes, endpoint types
//! and address formats are matched without regard to case against the names
//! the generated crate knows (`Caps::NAMED`, `Mode::NAMED`, `EpType::name`,
//! `AddrFormat::name`).
//!
//! The exit status is the C tool's: 0 on success, 1 for usage errors and
//! `--help`, 22 (`EINVAL`) for an unknown value, and the error number when
//! `fi_getinfo` fails (61, `ENODATA`, when nothing matches).
//!
//! ## Where it differs from the C tool
//!
//! - The C tool accepts names from lists of its own: `-c` also takes the
//!   operation flags `FI_REMOTE_CQ_DATA`, `FI_MORE` and `FI_PEEK` (not
//!   capabilities; refused here) but not `FI_VARIABLE_MSG`, `FI_XPU_TRIGGER`,
//!   `FI_RMA_PMEM`, `FI_AV_USER_ID` or `FI_PEER`; `-m` lacks
//!   `FI_BUFFERED_RECV` and `FI_PEER_TRANSFER`; `-a` lacks `FI_ADDR_IB_UD`,
//!   `FI_ADDR_PSMX3`, `FI_ADDR_OPX` and `FI_ADDR_CXI`. This tool accepts
//!   every name libfabric 1.17 defines for each.
//! - The C tool cuts a verbose entry at 8 KiB; with hint options this prints
//!   it whole (1.17's entries are under 4 KiB).
//! - For an invalid option letter outside ASCII, getopt's message names its
//!   first byte and this one the whole character; arguments that are not
//!   UTF-8 are read lossily.

use std::ffi::{c_char, CStr, CString};
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::ptr::{self, NonNull};

use libfabric::sys::enums::{ParamType, TostrType};
use libfabric::sys::{
    self, fi_ep_attr, fi_fabric_attr, fi_info, fi_param, FI_MAJOR, FI_MAJOR_VERSION, FI_MINOR, FI_MINOR_VERSION,
    FI_REVISION_VERSION, FI_VERSION,
};
use libfabric::{getinfo, AddrFormat, Caps, EpType, GetinfoFlags, Hints, Info, Mode, MrMode, Protocol, Target};

// ---------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------

/// An option that takes no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    Help,
    Env,
    List,
    Verbose,
    Version,
}

/// An option that requires a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Valued {
    SrcAddr,
    Node,
    Port,
    Caps,
    Mode,
    EpType,
    Domain,
    Fabric,
    AddrFormat,
    Provider,
    GetEnv,
    Info,
}

/// What an option does, independent of how it was spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Flag(Flag),
    Valued(Valued),
}

/// One option as `getopt_long` sees it, with its line of `--help`.
struct OptSpec {
    opt: Opt,
    long: &'static str,
    /// The short letter; `--version` has none.
    short: Option<char>,
    /// What `--help` calls the value.
    value_name: &'static str,
    /// The description, with the tabs that align it in the C tool's `--help`.
    help: &'static str,
}

/// Every option, in the order `--help` lists them (that of the C tool).
const OPTIONS: &[OptSpec] = &[
    flag(Flag::Help, "help", Some('h'), "\t\tdisplay this help and exit"),
    valued(Valued::SrcAddr, "src_addr", 's', "ADDR", "\t\tsource name or address"),
    valued(Valued::Node, "node", 'n', "NAME", "\t\tdest node name or address"),
    valued(Valued::Port, "port", 'P', "PNUM", "\t\tport number"),
    valued(Valued::Caps, "caps", 'c', "CAP1|CAP2..", "\tone or more capabilities: FI_MSG|FI_RMA..."),
    valued(Valued::Mode, "mode", 'm', "MOD1|MOD2..", "\tone or more modes, default all modes"),
    valued(Valued::EpType, "ep_type", 't', "EPTYPE", "\t\tspecify single endpoint type: FI_EP_MSG, FI_EP_DGRAM..."),
    valued(Valued::Domain, "domain", 'd', "DOMAIN", "\t\tspecify the domain name"),
    valued(Valued::Fabric, "fabric", 'f', "FABRIC", "\t\tspecify the fabric name"),
    valued(
        Valued::AddrFormat,
        "addr_format",
        'a',
        "FMT",
        "\t\tspecify accepted address format: FI_FORMAT_UNSPEC, FI_SOCKADDR...",
    ),
    valued(Valued::Provider, "provider", 'p', "PROV", "\t\tspecify provider explicitly"),
    flag(Flag::Env, "env", Some('e'), "\t\tprint libfabric environment variables"),
    valued(Valued::GetEnv, "getenv", 'g', "SUBSTR", "\t\tprint libfabric environment variables with substr"),
    // The C tool's help names no value here, though the option requires one.
    valued(Valued::Info, "info", 'i', "", "\t\tprint fi_info structures containing substr"),
    flag(Flag::List, "list", Some('l'), "\t\tlist available libfabric providers"),
    flag(Flag::Verbose, "verbose", Some('v'), "\t\tverbose output"),
    flag(Flag::Version, "version", None, "\t\tprint version info and exit"),
];

/// An [`OptSpec`] for an option without a value.
const fn flag(flag: Flag, long: &'static str, short: Option<char>, help: &'static str) -> OptSpec {
    OptSpec { opt: Opt::Flag(flag), long, short, value_name: "", help }
}

/// An [`OptSpec`] for an option with a value.
const fn valued(
    valued: Valued,
    long: &'static str,
    short: char,
    value_name: &'static str,
    help: &'static str,
) -> OptSpec {
    OptSpec { opt: Opt::Valued(valued), long, short: Some(short), value_name, help }
}

/// The `--help` text, with `prog` (the C tool's `argv[0]`) in its first line.
fn usage(prog: &str) -> String {
    let mut text = format!("Usage: {prog}\n");
    for o in OPTIONS {
        let line = match o.short {
            Some(c) if matches!(o.opt, Opt::Valued(_)) => format!("  -{c}, --{}={}{}\n", o.long, o.value_name, o.help),
            Some(c) => format!("  -{c}, --{}\t{}\n", o.long, o.help),
            None => format!("  --{}\t{}\n", o.long, o.help),
        };
        text.push_str(&line);
    }
    text
}

/// Splits the command line into options the way glibc's `getopt_long` does,
/// with the same messages for what it rejects.
struct Getopt {
    prog: String,
    args: Vec<String>,
    /// The next argument to look at.
    next: usize,
    /// A cluster of short options being read (`-lv`) and the byte offset of
    /// its next letter.
    cluster: Option<(String, usize)>,
    /// Stop at the first word that is not an option (`POSIXLY_CORRECT`).
    posix: bool,
}

/// One option read from the command line, with its value if it takes one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    Flag(Flag),
    Valued(Valued, String),
}

/// An option, or getopt's complaint about what stood in its place.
type Parsed = Result<Arg, String>;

impl Getopt {
    fn new(prog: String, args: Vec<String>) -> Getopt {
        Getopt { prog, args, next: 0, cluster: None, posix: std::env::var_os("POSIXLY_CORRECT").is_some() }
    }

    /// The next word, consumed as an option's value.
    fn take_next(&mut self) -> Option<String> {
        let value = self.args.get(self.next).cloned();
        if value.is_some() {
            self.next += 1;
        }
        value
    }

    /// The next option letter of a cluster, `at` being its byte offset in `word`.
    fn short(&mut self, word: String, at: usize) -> Parsed {
        let c = word[at..].chars().next().unwrap_or('-');
        let rest = at + c.len_utf8();
        let Some(spec) = OPTIONS.iter().find(|o| o.short == Some(c)) else {
            return Err(format!("{}: invalid option -- '{c}'", self.prog));
        };
        match spec.opt {
            Opt::Flag(flag) => {
                if rest < word.len() {
                    self.cluster = Some((word, rest));
                }
                Ok(Arg::Flag(flag))
            }
            // The value is the rest of the word, else the next word.
            Opt::Valued(valued) if rest < word.len() => Ok(Arg::Valued(valued, word[rest..].to_string())),
            Opt::Valued(valued) => match self.take_next() {
                Some(value) => Ok(Arg::Valued(valued, value)),
                None => Err(format!("{}: option requires an argument -- '{c}'", self.prog)),
            },
        }
    }

    /// A long option, `body` being the word without its leading `--`.
    fn long(&mut self, body: &str) -> Parsed {
        let (name, attached) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        let spec = self.long_spec(body, name)?;
        match (spec.opt, attached) {
            (Opt::Flag(_), Some(_)) => {
                Err(format!("{}: option '--{}' doesn't allow an argument", self.prog, spec.long))
            }
            (Opt::Flag(flag), None) => Ok(Arg::Flag(flag)),
            (Opt::Valued(valued), Some(value)) => Ok(Arg::Valued(valued, value)),
            (Opt::Valued(valued), None) => match self.take_next() {
                Some(value) => Ok(Arg::Valued(valued, value)),
                None => Err(format!("{}: option '--{}' requires an argument", self.prog, spec.long)),
            },
        }
    }

    /// The option `name` spells in full or abbreviates unambiguously.
    fn long_spec(&self, body: &str, name: &str) -> Result<&'static OptSpec, String> {
        if let Some(exact) = OPTIONS.iter().find(|o| o.long == name) {
            return Ok(exact);
        }
        let matches: Vec<&'static OptSpec> = OPTIONS.iter().filter(|o| o.long.starts_with(name)).collect();
        match matches[..] {
            [only] => Ok(only),
            [] => Err(format!("{}: unrecognized option '--{body}'", self.prog)),
            _ => {
                let names: String = matches.iter().map(|o| format!(" '--{}'", o.long)).collect();
                Err(format!("{}: option '--{body}' is ambiguous; possibilities:{names}", self.prog))
            }
        }
    }
}

impl Iterator for Getopt {
    type Item = Parsed;

    fn next(&mut self) -> Option<Parsed> {
        if let Some((word, at)) = self.cluster.take() {
            return Some(self.short(word, at));
        }
        loop {
            let word = self.args.get(self.next)?.clone();
            self.next += 1;
            if word == "--" {
                self.next = self.args.len();
                return None;
            }
            if let Some(body) = word.strip_prefix("--") {
                return Some(self.long(body));
            }
            if word.len() > 1 && word.starts_with('-') {
                return Some(self.short(word, 1));
            }
            if self.posix {
                return None;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Values: C names of capabilities, modes, endpoint types, address formats
// ---------------------------------------------------------------------------

/// The value of an open enum whose C name is `input` (from the generated
/// `NAMED` table), ignoring case as the C tool's `strcasecmp` does.
fn enum_named<T: Copy>(input: &str, table: &[(&str, T)]) -> Option<T> {
    table.iter().find(|(name, _)| name.eq_ignore_ascii_case(input)).map(|&(_, v)| v)
}

/// The bits of a `|`-separated list of flag names (`FI_MSG|FI_RMA`); empty
/// items are skipped, as C's `strtok` skips them. `Err` is the unknown name.
fn flags_named<'a>(input: &'a str, table: &[(&str, u64)]) -> Result<u64, &'a str> {
    input.split('|').filter(|t| !t.is_empty()).try_fold(0, |bits, token| {
        let (_, value) = table.iter().find(|(name, _)| name.eq_ignore_ascii_case(token)).ok_or(token)?;
        Ok(bits | value)
    })
}

/// The exit status of C's `return code` from `main`: the low 8 bits, all the
/// operating system keeps.
fn exit_status(code: i32) -> u8 {
    code.to_le_bytes()[0]
}

/// Why the command line was refused, and the exit status.
struct Failure {
    message: String,
    status: u8,
    /// Print `--help` after the message (what the C tool does for usage errors).
    usage: bool,
}

impl Failure {
    /// A value the C tool rejects with `-EINVAL` (exit status 22).
    fn unrecognized(what: &str, value: &str) -> Failure {
        Failure {
            message: format!("error: Unrecognized {what}: {value}"),
            status: exit_status(libc::EINVAL),
            usage: false,
        }
    }

    /// A usage error: getopt's message, then `--help`, exit status 1.
    fn usage(message: String) -> Failure {
        Failure { message, status: 1, usage: true }
    }
}

/// `-c`: capability names, `|`-separated.
fn parse_caps(value: &str) -> Result<Caps, Failure> {
    let bits = flags_named(value, Caps::NAMED).map_err(|name| Failure::unrecognized("capability", name))?;
    Ok(Caps::from_bits_retain(bits))
}

/// `-m`: mode names, `|`-separated.
fn parse_mode(value: &str) -> Result<Mode, Failure> {
    let bits = flags_named(value, Mode::NAMED).map_err(|name| Failure::unrecognized("mode", name))?;
    Ok(Mode::from_bits_retain(bits))
}

/// `-t`: one endpoint type.
fn parse_ep_type(value: &str) -> Result<EpType, Failure> {
    enum_named(value, EpType::NAMED).ok_or_else(|| Failure::unrecognized("endpoint type", value))
}

/// `-a`: one address format.
fn parse_addr_format(value: &str) -> Result<AddrFormat, Failure> {
    enum_named(value, AddrFormat::NAMED).ok_or_else(|| Failure::unrecognized("address format", value))
}

// ---------------------------------------------------------------------------
// The request
// ---------------------------------------------------------------------------

/// Which listing to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// Provider, fabric, domain, version, type, protocol of each entry.
    Short,
    /// Provider names and versions (`-l`).
    Providers,
    /// `fi_tostr` of each entry (`-v`, `-i`).
    Verbose,
    /// libfabric's configuration variables (`-e`, `-g`).
    Variables,
}

/// Everything the command line asks for.
struct Request {
    caps: Caps,
    mode: Mode,
    ep_type: Option<EpType>,
    addr_format: Option<AddrFormat>,
    provider: Option<String>,
    domain: Option<String>,
    fabric: Option<String>,
    /// True once any hint was given; otherwise `fi_getinfo` gets none.
    use_hints: bool,
    node: Option<String>,
    port: Option<String>,
    flags: GetinfoFlags,
    list: bool,
    verbose: bool,
    variables: bool,
    /// The substring of `-g` or `-i` (the C tool keeps one for both).
    filter: Option<String>,
}

impl Default for Request {
    fn default() -> Request {
        Request {
            caps: Caps::empty(),
            // Every mode: the tool itself never transfers data.
            mode: Mode::from_bits_retain(!0),
            ep_type: None,
            addr_format: None,
            provider: None,
            domain: None,
            fabric: None,
            use_hints: false,
            node: None,
            port: None,
            flags: GetinfoFlags::empty(),
            list: false,
            verbose: false,
            variables: false,
            filter: None,
        }
    }
}

impl Request {
    /// The listing the options select, by the C tool's precedence.
    fn listing(&self) -> Listing {
        if self.variables {
            Listing::Variables
        } else if self.verbose {
            Listing::Verbose
        } else if self.list {
            Listing::Providers
        } else {
            Listing::Short
        }
    }

    /// Applies an option without a value.
    fn set(&mut self, flag: Flag) {
        match flag {
            Flag::Env => self.variables = true,
            Flag::List => {
                self.list = true;
                self.flags |= GetinfoFlags::PROV_ATTR_ONLY;
            }
            Flag::Verbose => self.verbose = true,
            // Handled before a request is run.
            Flag::Help | Flag::Version => {}
        }
    }

    /// Applies an option with a value; names that mean nothing are refused
    /// with the C tool's message.
    fn apply(&mut self, option: Valued, value: String) -> Result<(), Failure> {
        let hint = match option {
            Valued::SrcAddr => {
                self.node = Some(value);
                self.flags |= GetinfoFlags::SOURCE;
                false
            }
            Valued::Node => {
                self.node = Some(value);
                false
            }
            Valued::Port => {
                self.port = Some(value);
                false
            }
            Valued::GetEnv => {
                (self.filter, self.variables) = (Some(value), true);
                false
            }
            Valued::Info => {
                (self.filter, self.verbose) = (Some(value), true);
                false
            }
            Valued::Caps => {
                self.caps |= parse_caps(&value)?;
                true
            }
            Valued::Mode => {
                self.mode = parse_mode(&value)?;
                true
            }
            Valued::EpType => {
                self.ep_type = Some(parse_ep_type(&value)?);
                true
            }
            Valued::AddrFormat => {
                self.addr_format = Some(parse_addr_format(&value)?);
                true
            }
            Valued::Provider => {
                self.provider = Some(value);
                true
            }
            Valued::Domain => {
                self.domain = Some(value);
                true
            }
            Valued::Fabric => {
                self.fabric = Some(value);
                true
            }
        };
        self.use_hints |= hint;
        Ok(())
    }

    /// The hints for `fi_getinfo`: what the options asked for, every mode and
    /// every memory registration mode but the legacy basic and scalable ones.
    fn hints(&self) -> libfabric::Result<Hints> {
        // The legacy values are named only to be left out, as the C tool does.
        #[allow(deprecated)]
        let legacy = {
            use libfabric::sys::enums::LegacyMrMode;
            LegacyMrMode::BASIC.raw() | LegacyMrMode::SCALABLE.raw()
        };
        let mut hints = Hints::new()?.caps(self.caps).mode(self.mode).mr_mode(MrMode::from_bits_retain(!legacy));
        hints.attrs_mut().domain.set_mode(Mode::from_bits_retain(!0));
        if let Some(ty) = self.ep_type {
            hints = hints.ep_type(ty);
        }
        if let Some(format) = self.addr_format {
            hints = hints.addr_format(format);
        }
        if let Some(name) = &self.provider {
            hints = hints.provider(name)?;
        }
        if let Some(name) = &self.domain {
            hints = hints.domain_name(name)?;
        }
        if let Some(name) = &self.fabric {
            hints = hints.fabric_name(name)?;
        }
        Ok(hints)
    }
}

/// What the command line asks the tool to do.
enum Command {
    Run(Box<Request>),
    Usage,
    Version,
}

/// Reads the options in order, stopping where the C tool stops: at `--help`,
/// `--version`, or the first error.
fn parse(prog: &str, args: Vec<String>) -> Result<Command, Failure> {
    let mut request = Request::default();
    for arg in Getopt::new(prog.to_string(), args) {
        match arg.map_err(Failure::usage)? {
            Arg::Flag(Flag::Help) => return Ok(Command::Usage),
            Arg::Flag(Flag::Version) => return Ok(Command::Version),
            Arg::Flag(flag) => request.set(flag),
            Arg::Valued(option, value) => request.apply(option, value)?,
        }
    }
    Ok(Command::Run(Box::new(request)))
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// A C type `fi_tostr` renders, with the kind that names it.
///
/// # Safety
/// `KIND` must be the kind whose C type `Self` has the layout of.
unsafe trait Tostr {
    const KIND: TostrType;
}

// SAFETY: `#[repr(transparent)]` over the C enum's integer.
unsafe impl Tostr for EpType {
    const KIND: TostrType = TostrType::EP_TYPE;
}

// SAFETY: `#[repr(transparent)]` over the C enum's integer.
unsafe impl Tostr for Protocol {
    const KIND: TostrType = TostrType::PROTOCOL;
}

// SAFETY: the C struct itself.
unsafe impl Tostr for fi_info {
    const KIND: TostrType = TostrType::INFO;
}

/// The loaded library, for `FI_TYPE_VERSION` (which reads nothing of it).
struct LibraryVersion;

// SAFETY: fi_tostr does not read the value of FI_TYPE_VERSION.
unsafe impl Tostr for LibraryVersion {
    const KIND: TostrType = TostrType::VERSION;
}

/// `fi_tostr_r` of a value, into a buffer as large as the C tool's (8 KiB).
fn tostr<T: Tostr>(value: &T) -> String {
    let mut buf = vec![0 as c_char; 8192];
    // SAFETY: `value` has the layout of the C type of `T::KIND` (the trait's
    // contract), and the buffer is writable for its length.
    let text = unsafe { sys::fi_tostr_r(buf.as_mut_ptr(), buf.len(), ptr::from_ref(value).cast(), T::KIND.raw()) };
    if text.is_null() {
        return String::new();
    }
    // SAFETY: fi_tostr_r NUL-terminates what it writes within the buffer.
    unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
}

/// The version of the libfabric library loaded, e.g. `1.17.0`.
fn library_version() -> String {
    tostr(&LibraryVersion)
}

/// What the listings read from one `fi_getinfo` entry, whether the safe
/// crate returned it ([`Info`]) or the call without hints ([`RawEntry`]).
/// Names are `None` where the C string is NULL.
trait Entry {
    fn provider(&self) -> Option<&str>;
    fn fabric(&self) -> Option<&str>;
    fn domain(&self) -> Option<&str>;
    /// `fabric_attr.prov_version`.
    fn prov_version(&self) -> u32;
    fn ep_type(&self) -> EpType;
    fn protocol(&self) -> Protocol;
    /// Every attribute, as `fi_tostr(FI_TYPE_INFO)` renders them.
    fn describe(&self) -> String;
}

impl Entry for Info {
    fn provider(&self) -> Option<&str> {
        self.fabric_attr().filter(|a| !a.prov_name.is_null()).map(|_| Info::provider(self))
    }

    fn fabric(&self) -> Option<&str> {
        self.fabric_attr().filter(|a| !a.name.is_null()).map(|_| self.fabric_name())
    }

    fn domain(&self) -> Option<&str> {
        self.domain_attr().filter(|a| !a.name.is_null()).map(|_| self.domain_name())
    }

    fn prov_version(&self) -> u32 {
        self.fabric_attr().map_or(0, fi_fabric_attr::prov_version)
    }

    fn ep_type(&self) -> EpType {
        Info::ep_type(self)
    }

    fn protocol(&self) -> Protocol {
        self.ep_attr().map_or(Protocol::UNSPEC, fi_ep_attr::protocol)
    }

    fn describe(&self) -> String {
        self.to_string()
    }
}

/// The list `fi_getinfo` returns when called without hints, freed on drop.
///
/// The safe crate's [`getinfo`] always passes hints, and providers answer
/// "no hints" differently from "empty hints" (rxm adds `FI_BUFFERED_RECV`
/// to its modes, net leaves out its RDM entries), so the C tool's default
/// listing needs this call.
struct RawList(NonNull<fi_info>);

impl RawList {
    /// `fi_getinfo(node, service, flags, NULL)`; `Err` is its return value.
    fn get(target: &Target<'_>) -> Result<RawList, i32> {
        let c = |s: Option<&str>| s.map(CString::new).transpose().map_err(|_| -libc::EINVAL);
        let (node, service) = (c(target.node)?, c(target.service)?);
        let mut list = ptr::null_mut();
        // SAFETY: the strings outlive the call; the list is freed by Drop.
        let ret = unsafe {
            sys::fi_getinfo(
                FI_VERSION(FI_MAJOR_VERSION as u32, FI_MINOR_VERSION as u32),
                node.as_ref().map_or(ptr::null(), |n| n.as_ptr()),
                service.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
                target.flags.bits(),
                ptr::null(),
                &mut list,
            )
        };
        if ret != 0 {
            return Err(ret);
        }
        NonNull::new(list).map(RawList).ok_or(-libc::ENODATA)
    }

    /// The entries, in libfabric's order.
    fn entries(&self) -> Vec<RawEntry<'_>> {
        // SAFETY: the list and its `next` chain stay valid until Drop.
        std::iter::successors(Some(unsafe { self.0.as_ref() }), |info| unsafe { info.next.as_ref() })
            .map(RawEntry)
            .collect()
    }
}

impl Drop for RawList {
    fn drop(&mut self) {
        // SAFETY: the list came from fi_getinfo and is freed once, here.
        unsafe { sys::fi_freeinfo(self.0.as_ptr()) }
    }
}

/// One entry of a [`RawList`].
struct RawEntry<'a>(&'a fi_info);

impl<'a> RawEntry<'a> {
    /// An attribute struct of the entry.
    fn attr<T>(&self, p: *mut T) -> Option<&'a T> {
        // SAFETY: attribute pointers of an fi_info from fi_getinfo are NULL or
        // valid as long as the list, which `'a` borrows.
        unsafe { p.as_ref() }
    }

    /// A string field of the entry (`None` for NULL; `""` if not UTF-8).
    fn text(&self, p: *const c_char) -> Option<&'a str> {
        // SAFETY: as in `attr`: strings of the entry are NUL-terminated and
        // live as long as the list.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().unwrap_or(""))
    }
}

impl Entry for RawEntry<'_> {
    fn provider(&self) -> Option<&str> {
        self.attr(self.0.fabric_attr).and_then(|a| self.text(a.prov_name))
    }

    fn fabric(&self) -> Option<&str> {
        self.attr(self.0.fabric_attr).and_then(|a| self.text(a.name))
    }

    fn domain(&self) -> Option<&str> {
        self.attr(self.0.domain_attr).and_then(|a| self.text(a.name))
    }

    fn prov_version(&self) -> u32 {
        self.attr(self.0.fabric_attr).map_or(0, fi_fabric_attr::prov_version)
    }

    fn ep_type(&self) -> EpType {
        self.attr(self.0.ep_attr).map_or(EpType::UNSPEC, fi_ep_attr::type_)
    }

    fn protocol(&self) -> Protocol {
        self.attr(self.0.ep_attr).map_or(Protocol::UNSPEC, fi_ep_attr::protocol)
    }

    fn describe(&self) -> String {
        tostr(self.0)
    }
}

/// A name as glibc's `printf("%s")` prints it: `(null)` for NULL.
fn shown(name: Option<&str>) -> &str {
    name.unwrap_or("(null)")
}

/// `major.minor` of a provider's version.
fn version_text(version: u32) -> String {
    format!("{}.{}", FI_MAJOR(version), FI_MINOR(version))
}

/// Provider, fabric, domain, version, endpoint type and protocol of each entry.
fn print_short(out: &mut impl Write, entries: &[impl Entry]) -> io::Result<()> {
    for e in entries {
        writeln!(out, "provider: {}", shown(e.provider()))?;
        writeln!(out, "    fabric: {}", shown(e.fabric()))?;
        writeln!(out, "    domain: {}", shown(e.domain()))?;
        writeln!(out, "    version: {}", version_text(e.prov_version()))?;
        writeln!(out, "    type: {}", tostr(&e.ep_type()))?;
        writeln!(out, "    protocol: {}", tostr(&e.protocol()))?;
    }
    Ok(())
}

/// The name and version of each provider (`-l`).
fn print_providers(out: &mut impl Write, entries: &[impl Entry]) -> io::Result<()> {
    for e in entries {
        writeln!(out, "{}:", shown(e.provider()))?;
        writeln!(out, "    version: {}", version_text(e.prov_version()))?;
    }
    Ok(())
}

/// True when `haystack` contains `needle`, ignoring ASCII case (C's `strcasestr`).
fn contains_ignore_case(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Every attribute of each entry, each after a `---` line; with a filter,
/// only the entries whose text contains it.
///
/// The C tool renders into an 8 KiB buffer, so it would cut an entry longer
/// than that where this prints it whole; 1.17's entries stay under 4 KiB.
fn print_verbose(out: &mut impl Write, entries: &[impl Entry], filter: Option<&str>) -> io::Result<()> {
    for e in entries {
        let text = e.describe();
        if filter.map_or(true, |f| contains_ignore_case(text.as_bytes(), f)) {
            write!(out, "---\n{text}")?;
        }
    }
    Ok(())
}

/// libfabric's configuration variables (`fi_getparams`), freed on drop.
struct Params {
    list: NonNull<fi_param>,
    count: usize,
}

/// One variable of [`Params`]; strings are `None` where NULL.
struct Param<'a> {
    name: Option<&'a [u8]>,
    ty: ParamType,
    help: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

impl Params {
    /// Every variable libfabric and its providers define; `Err` is `fi_getparams`'s return value.
    fn get() -> Result<Params, i32> {
        let mut list = ptr::null_mut();
        let mut count = 0;
        // SAFETY: both out-pointers are valid; the array is freed by Drop.
        let ret = unsafe { sys::fi_getparams(&mut list, &mut count) };
        if ret != 0 {
            return Err(ret);
        }
        let list = NonNull::new(list).ok_or(-libc::ENOMEM)?;
        Ok(Params { list, count: usize::try_from(count).unwrap_or(0) })
    }

    /// The variables, in libfabric's order.
    fn iter(&self) -> impl Iterator<Item = Param<'_>> {
        // SAFETY: fi_getparams returned an array of `count` entries, alive until Drop.
        let all = unsafe { std::slice::from_raw_parts(self.list.as_ptr(), self.count) };
        all.iter().map(|p| Param {
            name: self.text(p.name),
            ty: ParamType::from_raw(p.type_),
            help: self.text(p.help_string),
            value: self.text(p.value),
        })
    }

    /// A string of one of the variables, or `None` for NULL.
    fn text(&self, p: *const c_char) -> Option<&[u8]> {
        // SAFETY: `p` is a field of one of the entries, NUL-terminated and
        // alive until Drop.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
    }
}

impl Drop for Params {
    fn drop(&mut self) {
        // SAFETY: the array came from fi_getparams and is freed once, here.
        unsafe { sys::fi_freeparams(self.list.as_ptr()) }
    }
}

/// How the C tool describes a variable's type.
fn param_type(ty: ParamType) -> &'static str {
    match ty {
        ParamType::STRING => "String",
        ParamType::INT => "Integer",
        ParamType::SIZE_T => "size_t",
        ParamType::BOOL => "Boolean (0/1, on/off, true/false, yes/no)",
        _ => "Unknown",
    }
}

/// One variable: its name and type, its help, and its value when set.
fn print_param(out: &mut impl Write, param: &Param<'_>) -> io::Result<()> {
    let name = param.name.unwrap_or(b"(null)");
    for part in [b"# ", name, b": ", param_type(param.ty).as_bytes(), b"\n# ", param.help.unwrap_or(b"(null)"), b"\n"] {
        out.write_all(part)?;
    }
    if let Some(value) = param.value {
        // A value with a space is quoted; any other is framed by NUL bytes,
        // which is what the C tool's `printf("%c", '\0')` writes.
        let delim: &[u8] = if value.contains(&b' ') { b"\"" } else { b"\0" };
        for part in [name, b"=", delim, value, delim, b"\n"] {
            out.write_all(part)?;
        }
    }
    out.write_all(b"\n")
}

/// The configuration variables, only those whose name contains `filter` if given.
fn print_variables(out: &mut impl Write, params: &Params, filter: Option<&str>) -> io::Result<()> {
    for param in params.iter() {
        if filter.map_or(true, |f| contains_ignore_case(param.name.unwrap_or(b"(null)"), f)) {
            print_param(out, &param)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------

/// `--version`: this tool's version (that of the headers it was built from),
/// the library's, and the API's.
fn print_version(out: &mut impl Write, prog: &str) -> io::Result<()> {
    writeln!(out, "{prog}: {FI_MAJOR_VERSION}.{FI_MINOR_VERSION}.{FI_REVISION_VERSION}")?;
    writeln!(out, "libfabric: {}", library_version())?;
    writeln!(out, "libfabric api: {FI_MAJOR_VERSION}.{FI_MINOR_VERSION}")
}

/// The C tool's report of a failed `fi_getinfo` (`ret` negative): the value
/// on standard error, its negation as exit status.
fn getinfo_failure(ret: i32) -> Failure {
    Failure { message: format!("fi_getinfo: {ret}"), status: exit_status(ret.wrapping_neg()), usage: false }
}

/// `fi_getinfo` with the request's hints, through the safe crate.
fn discover(request: &Request, target: &Target<'_>) -> Result<Vec<Info>, Failure> {
    let hints = request.hints().map_err(|e| getinfo_failure(-e.errno().raw()))?;
    let infos = getinfo(target, &hints).map_err(|e| getinfo_failure(-e.errno().raw()))?;
    if infos.is_empty() {
        // The safe crate reports -FI_ENODATA as an empty list.
        return Err(getinfo_failure(-libc::ENODATA));
    }
    Ok(infos)
}

/// Prints the listing the request selects.
fn list(out: &mut impl Write, request: &Request, entries: &[impl Entry]) -> Result<(), Failure> {
    let filter = request.filter.as_deref();
    let written = match request.listing() {
        Listing::Short => print_short(out, entries),
        Listing::Providers => print_providers(out, entries),
        Listing::Verbose => print_verbose(out, entries, filter),
        Listing::Variables => {
            let params = Params::get().map_err(|ret| Failure {
                message: format!("fi_getparams: {ret}"),
                status: exit_status(ret.wrapping_neg()),
                usage: false,
            })?;
            print_variables(out, &params, filter)
        }
    };
    written.map_err(write_failure)
}

/// Discovers and prints what the request asks for; without hint options,
/// `fi_getinfo` gets no hints at all, as from the C tool.
fn run(out: &mut impl Write, request: &Request) -> Result<(), Failure> {
    let target = Target { node: request.node.as_deref(), service: request.port.as_deref(), flags: request.flags };
    if request.use_hints {
        list(out, request, &discover(request, &target)?)
    } else {
        let raw = RawList::get(&target).map_err(getinfo_failure)?;
        list(out, request, &raw.entries())
    }
}

/// A failure to write to standard output.
fn write_failure(error: io::Error) -> Failure {
    Failure { message: format!("error: writing the output: {error}"), status: 1, usage: false }
}

/// Parses the command line and does what it says.
fn main_with(out: &mut impl Write, prog: &str, args: Vec<String>) -> Result<(), Failure> {
    match parse(prog, args)? {
        Command::Run(request) => run(out, &request),
        Command::Version => print_version(out, prog).map_err(write_failure),
        Command::Usage => Err(Failure::usage(String::new())),
    }
}

fn main() -> ExitCode {
    // Arguments that are not UTF-8 are read lossily: libfabric's names are ASCII.
    let mut argv = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    let prog = argv.next().unwrap_or_else(|| "fi_info".to_string());
    if libfabric::check_version().is_err() {
        eprintln!("{prog}: libfabric {} is older than the API {}", library_version(), libfabric::api_version());
        return ExitCode::FAILURE;
    }
    let mut out = BufWriter::new(io::stdout().lock());
    let status = match main_with(&mut out, &prog, argv.collect()) {
        Ok(()) => 0,
        Err(failure) => report(&mut out, &prog, failure),
    };
    if let Err(error) = out.flush() {
        eprintln!("{prog}: {}", write_failure(error).message);
        return ExitCode::FAILURE;
    }
    ExitCode::from(status)
}

/// Prints a failure: its message on standard error, then `--help` after a
/// usage error. Returns the exit status.
fn report(out: &mut impl Write, prog: &str, failure: Failure) -> u8 {
    if !failure.message.is_empty() {
        eprintln!("{}", failure.message);
    }
    if failure.usage {
        // A failure to write it shows when `out` is flushed.
        let _ = out.write_all(usage(prog).as_bytes());
    }
    failure.status
}
