//! The `info` example against libfabric's own `fi_info`: for each command
//! line below, both run with the same arguments and must print the same
//! bytes on standard output and exit with the same status; where the C tool
//! reports an error itself, standard error must match too.
//!
//! The C tool comes from Debian's `libfabric-bin` (which `scripts/test`
//! installs); without it these tests fail rather than skip. The example is
//! built with the `cargo` running the tests.
//!
//! Both programs run with `argv[0]` set to `fi_info`, the name both print in
//! `--help`, `--version` and getopt's messages.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The C `fi_info` of `libfabric-bin`.
const C_FI_INFO: &str = "/usr/bin/fi_info";

/// The C tool, or a failed test that says how to install it.
fn c_fi_info() -> &'static Path {
    let path = Path::new(C_FI_INFO);
    assert!(path.is_file(), "{C_FI_INFO} is missing: install libfabric-bin (apt-get install libfabric-bin)");
    path
}

/// The example, built once per test binary.
fn rust_fi_info() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| libfabric_tests::example("info"))
}

/// What one run printed and how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `program` as `fi_info` with `args`, and masks what differs between
/// two runs of the same program.
///
/// The one such value is the shm provider's address, `fi_shm://PID`: its
/// name is the process id (`fi_info -v` prints it as `src_addr` and
/// `dest_addr`), so exactly that string becomes `fi_shm://<pid>`, and its
/// length (which depends on the id's digits) is masked too. Lines of
/// libfabric's own log (`libfabric:PID:TIME:…`, on standard error, absent at
/// the default level unless a provider warns) carry a process id and a time
/// and are dropped.
fn run(program: &Path, args: &[&str]) -> Run {
    let child = Command::new(program)
        .arg0("fi_info")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start: {e}", program.display()));
    let pid = child.id();
    let Output { status, stdout, stderr } = child.wait_with_output().expect("the program's output is readable");
    let mask = |bytes: Vec<u8>| mask_shm_address(&String::from_utf8_lossy(&bytes), pid);
    let stderr: String =
        mask(stderr).lines().filter(|l| !l.starts_with("libfabric:")).map(|l| format!("{l}\n")).collect();
    Run { status: status.code(), stdout: mask(stdout), stderr }
}

/// Masks the shm address `fi_shm://PID` and, in the blocks whose address
/// format is `FI_ADDR_STR` (shm's), its length (`src_addrlen`,
/// `dest_addrlen`: the string and its NUL), which depends on how many digits
/// the process id has.
fn mask_shm_address(text: &str, pid: u32) -> String {
    let address = format!("fi_shm://{pid}");
    let lengths = [format!("src_addrlen: {}", address.len() + 1), format!("dest_addrlen: {}", address.len() + 1)];
    let mut string_format = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with("addr_format:") {
            string_format = trimmed.ends_with("FI_ADDR_STR");
        }
        if string_format && lengths.iter().any(|l| trimmed == l) {
            out.push_str(&line.replace(&(address.len() + 1).to_string(), "<length of fi_shm://<pid>>"));
        } else {
            out.push_str(&line.replace(&address, "fi_shm://<pid>"));
        }
    }
    out
}

/// The first line where `a` and `b` differ, for the failure message.
fn first_difference(a: &str, b: &str) -> String {
    let (mut left, mut right) = (a.lines(), b.lines());
    for n in 1.. {
        match (left.next(), right.next()) {
            (None, None) => break,
            (l, r) if l == r => {}
            (l, r) => return format!("line {n}:\n  fi_info: {l:?}\n  example: {r:?}"),
        }
    }
    "no line differs (line endings or a final newline do)".to_string()
}

/// Both tools on `args`: same exit status and standard output; standard
/// error too when `check_stderr` (the cases where the C tool reports an
/// error itself). Returns the C tool's run for further checks.
fn same(args: &[&str], check_stderr: bool) -> Run {
    let c = run(c_fi_info(), args);
    let rust = run(rust_fi_info(), args);
    assert_eq!(c.status, rust.status, "exit status of fi_info {args:?}; stderr:\n{}\n{}", c.stderr, rust.stderr);
    assert!(
        c.stdout == rust.stdout,
        "stdout of fi_info {args:?} differs at {}",
        first_difference(&c.stdout, &rust.stdout)
    );
    if check_stderr {
        assert_eq!(c.stderr, rust.stderr, "stderr of fi_info {args:?}");
    }
    c
}

/// Like [`same`], and the C tool succeeded with some output (so that a
/// broken environment does not pass as two identical empty listings).
fn same_listing(args: &[&str]) {
    let c = same(args, true);
    assert_eq!(c.status, Some(0), "fi_info {args:?} failed: {}", c.stderr);
    assert!(!c.stdout.is_empty(), "fi_info {args:?} printed nothing");
}

#[test]
fn default_listing() {
    same_listing(&[]);
}

#[test]
fn list_providers() {
    same_listing(&["-l"]);
}

#[test]
fn verbose() {
    same_listing(&["-v"]);
}

#[test]
fn provider_tcp() {
    same_listing(&["-p", "tcp"]);
}

#[test]
fn provider_rxm_rdm() {
    same_listing(&["-p", "tcp;ofi_rxm", "-t", "FI_EP_RDM"]);
}

#[test]
fn provider_udp_dgram() {
    same_listing(&["-p", "udp", "-t", "FI_EP_DGRAM"]);
}

/// `-e` is `--env` in 1.17's fi_info (the endpoint type is `-t`): this prints
/// libfabric's variables, and `FI_EP_DGRAM` is an operand, which getopt
/// moves past and the tool ignores. The variables' values come from the
/// environment, which both runs share.
#[test]
fn env_with_a_stray_operand() {
    same_listing(&["-p", "udp", "-e", "FI_EP_DGRAM"]);
    same_listing(&["-p", "tcp;ofi_rxm", "-e", "FI_EP_RDM"]);
}

#[test]
fn caps() {
    same_listing(&["-c", "FI_MSG|FI_TAGGED"]);
    same_listing(&["--caps=fi_msg||fi_rma", "-v"]);
}

#[test]
fn sockets_verbose() {
    same_listing(&["-p", "sockets", "-v"]);
}

#[test]
fn mode_and_addr_format() {
    same_listing(&["-m", "FI_CONTEXT", "-p", "tcp", "-v"]);
    same_listing(&["-a", "FI_SOCKADDR_IN", "-v"]);
}

/// A node and port put addresses in the verbose listing (the shm provider's
/// is the process id, masked by `run`).
#[test]
fn node_and_source() {
    same_listing(&["-n", "127.0.0.1", "-P", "4444", "-v"]);
    same_listing(&["-s", "127.0.0.1", "-p", "tcp", "-v"]);
}

#[test]
fn filters() {
    same_listing(&["-i", "sockets"]);
    same_listing(&["-g", "LOG"]);
}

/// getopt's spellings: clusters, attached values, abbreviations, operands and `--`.
#[test]
fn getopt_spellings() {
    same_listing(&["-lvpudp"]);
    same_listing(&["--prov", "tcp", "--ep=fi_ep_msg"]);
    same_listing(&["operand", "-l", "--", "-x"]);
}

#[test]
fn missing_provider() {
    let c = same(&["-p", "no_such_provider"], true);
    assert_eq!(c.status, Some(61), "fi_info exits with FI_ENODATA");
    assert_eq!(c.stderr, "fi_getinfo: -61\n");
}

#[test]
fn unknown_values() {
    for args in [["-t", "FI_EP_NONE"], ["-c", "FI_MSG|FI_NONE"], ["-m", "FI_NONE"], ["-a", "FI_NONE"]] {
        let c = same(&args, true);
        assert_eq!(c.status, Some(22), "fi_info {args:?} exits with EINVAL");
    }
}

#[test]
fn usage_errors() {
    for args in [&["-x"][..], &["--no-such-option"], &["--p=tcp"], &["--list=1"], &["-c"], &["--caps"]] {
        let c = same(args, true);
        assert_eq!(c.status, Some(1), "fi_info {args:?} prints its usage and exits with 1");
        assert!(c.stdout.starts_with("Usage: fi_info\n"), "{args:?}: {}", c.stdout);
    }
}

#[test]
fn help_and_version() {
    let help = same(&["--help"], true);
    assert_eq!(help.status, Some(1));
    same_listing(&["--version"]);
}

#[test]
fn shm_addresses_of_any_process_id_mask_alike() {
    let block = |pid: u32| {
        let len = format!("fi_shm://{pid}").len() + 1;
        format!(
            "    addr_format: FI_ADDR_STR\n    src_addrlen: {len}\n    dest_addrlen: {len}\n    \
             src_addr: fi_shm://{pid}\n    addr_format: FI_SOCKADDR_IN\n    src_addrlen: 13\n"
        )
    };
    assert_eq!(mask_shm_address(&block(442), 442), mask_shm_address(&block(32672), 32672));
    // Outside an FI_ADDR_STR block a length is left as it is.
    assert!(mask_shm_address(&block(442), 442).ends_with("src_addrlen: 13\n"));
}
