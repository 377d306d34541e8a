//! Project automation, run as `cargo xtask <command>`.
//!
//! - `regen`: regenerate `generated/` from the installed libfabric headers
//!   (`--check` compares instead of writing, for CI).
//! - `soak`: the soak test at full size (a million messages per provider).
//! - `fuzz`: the property tests with many more cases than CI runs.
//! - `bench`: the Rust pingpong beside C `fi_pingpong`; writes
//!   `docs/benchmarks.md` and `docs/benchmarks.svg` (`--quick`: under 3 minutes).
//! - `coverage`: per header, the items found, emitted and skipped.
//! - `matrix`: probe every provider and endpoint type for every feature
//!   (`examples/capabilities.rs`) and write `docs/capabilities.md`
//!   (`--check` compares instead of writing, for CI).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use clap::{Parser, Subcommand};

mod bench;
use libfabric_generator::inventory::{self, Outcome};
use libfabric_generator::{generate, parse, Generated, Options};

#[derive(Parser)]
#[command(about = "libfabric-rs project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Regenerate generated/ from the libfabric headers.
    Regen {
        /// Include directory holding rdma/fabric.h (default: pkg-config's libfabric includedir).
        #[arg(long, value_name = "DIR")]
        headers: Option<PathBuf>,
        /// Do not write: exit non-zero and print the diff if generated/ differs from a fresh run.
        #[arg(long)]
        check: bool,
    },
    /// Print, per header, the items found, emitted and skipped (with reasons).
    Coverage {
        /// Include directory holding rdma/fabric.h (default: pkg-config's libfabric includedir).
        #[arg(long, value_name = "DIR")]
        headers: Option<PathBuf>,
        /// Exit non-zero if any item is neither emitted nor skipped with a reason.
        #[arg(long)]
        strict: bool,
    },
    /// Probe every provider and endpoint type for every feature and write docs/capabilities.md;
    /// exits non-zero when any probe failed.
    Matrix {
        /// Do not write: exit non-zero and print the diff if docs/capabilities.md differs from a fresh probe.
        #[arg(long)]
        check: bool,
    },
    /// The soak test at full size: 1,000,000 messages each over tcp;ofi_rxm and shm between two
    /// processes, every one checked, memory flat (tests/tests/soak.rs; CI runs 50,000).
    Soak {
        /// Messages per provider.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
    },
    /// The property tests (generator over mutated headers; address, descriptor, hints and text
    /// inputs of the safe layer) with many more cases than CI runs.
    Fuzz {
        /// Cases per property.
        #[arg(long, default_value_t = 5000)]
        cases: u32,
    },
    /// Split round trips into each side's turn (from the read that returned a message to the call
    /// that sends the answer), the sends and the trips, with scripts/turns.c preloaded into both
    /// sides: compares builds of fi_pingpong, examples/pingpong and examples/async_bench by hand.
    /// Prints each run (µs one way, then ns) and the medians.
    Turns {
        /// Executables: a name holding "pingpong" runs as a pingpong, any other as async_bench's
        /// latency mode.
        #[arg(required = true)]
        bins: Vec<PathBuf>,
        #[arg(long, default_value = "shm")]
        provider: String,
        /// The pingpong's endpoint type.
        #[arg(long, default_value = "rdm")]
        ep: String,
        /// Message size: below the provider's inject size, for the trips to mean anything.
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 200_000)]
        iterations: u64,
        /// async_bench waits for completions (the default progress mode) instead of busy-polling.
        #[arg(long)]
        wait: bool,
        /// Runs of each executable, the order rotating.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Run the Rust pingpong beside C fi_pingpong (latency, bandwidth, callgrind instruction counts)
    /// and write docs/benchmarks.md and docs/benchmarks.svg.
    Bench {
        /// Three lanes (shm, udp, tcp), three rounds, the C tool's round trips (a full run does five
        /// times as many): under 3 minutes.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// `--headers DIR` may name the include directory or its `rdma/` subdirectory.
fn include_dir(headers: Option<PathBuf>) -> Result<PathBuf, String> {
    let dir = match headers {
        Some(d) => d,
        None => parse::clang::pkg_config_include_dir().map_err(|e| e.to_string())?,
    };
    if dir.join("rdma/fabric.h").is_file() {
        Ok(dir)
    } else if dir.join("fabric.h").is_file() && dir.file_name().is_some_and(|n| n == "rdma") {
        Ok(dir.parent().map(Path::to_path_buf).unwrap_or(dir))
    } else {
        Err(format!("{}: no rdma/fabric.h here; pass the include directory of a libfabric install", dir.display()))
    }
}

fn run_generator(headers: Option<PathBuf>) -> Result<Generated, String> {
    let root = workspace_root();
    let options = Options {
        include_dir: include_dir(headers)?,
        config: root.join("generator/libfabric.toml"),
        templates: root.join("templates"),
    };
    generate(&options).map_err(|e| e.to_string())
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Task::Regen { headers, check } => {
            let started = Instant::now();
            let generated = run_generator(headers)?;
            let target = workspace_root().join("generated");
            if check {
                check_files(&generated, &target)
            } else {
                write_files(&generated, &target)?;
                eprintln!(
                    "regenerated {} files in {} in {:.1}s",
                    generated.files.len(),
                    target.display(),
                    started.elapsed().as_secs_f64()
                );
                Ok(ExitCode::SUCCESS)
            }
        }
        Task::Coverage { headers, strict } => {
            let generated = run_generator(headers)?;
            print!("{}", inventory::coverage(&generated.inventory, &generated.config.headers));
            let unmatched = inventory::unmatched_config(&generated.api, &generated.config);
            if !unmatched.is_empty() {
                println!(
                    "\nconfiguration entries these headers do not have (another libfabric version's names, or typos):"
                );
                for u in &unmatched {
                    println!("  {u}");
                }
            }
            let unhandled = generated.inventory.iter().filter(|e| matches!(e.outcome, Outcome::Unhandled(_))).count();
            Ok(if strict && unhandled > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Task::Matrix { check } => matrix(check),
        Task::Soak { messages } => soak(messages),
        Task::Fuzz { cases } => fuzz(cases),
        Task::Turns { bins, provider, ep, size, iterations, wait, rounds } => {
            let hand = bench::ByHand { bins, provider, ep, size, iterations, busy: !wait, rounds };
            println!("{}", bench::by_hand(&workspace_root(), &hand)?);
            Ok(ExitCode::SUCCESS)
        }
        Task::Bench { quick } => {
            let plan = if quick { bench::Plan::quick() } else { bench::Plan::full() };
            let markdown = bench::run(&workspace_root(), plan)?;
            println!("{markdown}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `cargo test --release -p libfabric-tests --test soak` with `messages`.
fn soak(messages: u64) -> Result<ExitCode, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(workspace_root())
        .args(["test", "--release", "-p", "libfabric-tests", "--test", "soak", "--", "--nocapture", "--test-threads=1"])
        .env("LIBFABRIC_SOAK_MESSAGES", messages.to_string())
        .status()
        .map_err(|e| format!("could not run {}: {e}", cargo.to_string_lossy()))?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The two property-test binaries with `PROPTEST_CASES=cases`.
fn fuzz(cases: u32) -> Result<ExitCode, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for (package, test) in [("libfabric-generator", "fuzz"), ("libfabric-tests", "fuzz")] {
        let status = Command::new(&cargo)
            .current_dir(workspace_root())
            .args(["test", "--release", "-p", package, "--test", test, "--", "--test-threads=1"])
            .env("PROPTEST_CASES", cases.to_string())
            .status()
            .map_err(|e| format!("could not run {}: {e}", cargo.to_string_lossy()))?;
        if !status.success() {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Files under `dir`, relative, skipping nothing but directories.
fn existing_files(dir: &Path) -> Result<BTreeSet<String>, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(base, &path, out)?;
            } else if let Ok(rel) = path.strip_prefix(base) {
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    if dir.is_dir() {
        walk(dir, dir, &mut out).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(out)
}

fn write_files(generated: &Generated, target: &Path) -> Result<(), String> {
    for stale in existing_files(target)?.iter().filter(|f| !generated.files.contains_key(*f)) {
        let path = target.join(stale);
        std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for (rel, contents) in &generated.files {
        let path = target.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        if std::fs::read_to_string(&path).ok().as_deref() != Some(contents.as_str()) {
            std::fs::write(&path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Generates into a scratch directory and diffs it against `target`.
fn check_files(generated: &Generated, target: &Path) -> Result<ExitCode, String> {
    let scratch = std::env::temp_dir().join(format!("libfabric-regen-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    write_files(generated, &scratch)?;
    let diff = Command::new("diff").arg("-ruN").arg(target).arg(&scratch).output();
    let _ = std::fs::remove_dir_all(&scratch);
    let diff = diff.map_err(|e| format!("could not run `diff` (install diffutils): {e}"))?;
    if diff.status.success() {
        eprintln!("generated/ is up to date with the headers ({} files)", generated.files.len());
        Ok(ExitCode::SUCCESS)
    } else {
        print!("{}", String::from_utf8_lossy(&diff.stdout));
        eprintln!("generated/ differs from a fresh `cargo xtask regen`: regenerate and commit (see CI.md)");
        Ok(ExitCode::FAILURE)
    }
}

/// Where `cargo xtask matrix` writes the capability matrix, from the workspace root.
const MATRIX_DOC: &str = "docs/capabilities.md";

/// What the capability matrix is, above the probe's output (which starts
/// with the libfabric version it probed).
const MATRIX_HEADER: &str = "\
# Capabilities

What each provider and endpoint type of this machine's libfabric offers, whether the simple
operations of each feature work through the safe layer, and which test of the suite checks it.

Written by `cargo xtask matrix`, which runs the probe `examples/capabilities.rs`; do not edit
it by hand. CI runs `cargo xtask matrix --check`, which fails when this file differs from a fresh
probe or when any cell says `failed`.

";

/// Runs the probe and writes `docs/capabilities.md` (with `check`, compares
/// it instead); fails when the file is stale or any probe failed.
fn matrix(check: bool) -> Result<ExitCode, String> {
    let root = workspace_root();
    let table = run_probe(&root)?;
    let doc = format!("{MATRIX_HEADER}{table}");
    let target = root.join(MATRIX_DOC);
    let current = if check { check_doc(&doc, &target)? } else { write_doc(&doc, &target)? };
    let failed = failed_cells(&table);
    for cell in &failed {
        eprintln!("  {cell}");
    }
    if !failed.is_empty() {
        eprintln!("{} cell(s) of the capability matrix say `failed` (above, and in {MATRIX_DOC})", failed.len());
    }
    Ok(if current && failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The probe's markdown: `cargo run -p libfabric-examples --example capabilities`.
fn run_probe(root: &Path) -> Result<String, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["run", "--quiet", "-p", "libfabric-examples", "--example", "capabilities"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not run {}: {e}", cargo.to_string_lossy()))?;
    if !output.status.success() {
        return Err(format!("the probe (examples/capabilities.rs) did not finish: {}", output.status));
    }
    String::from_utf8(output.stdout).map_err(|_| "the probe printed bytes that are not UTF-8".to_string())
}

/// Writes `doc` to `target` unless it already holds it; true (it is current).
fn write_doc(doc: &str, target: &Path) -> Result<bool, String> {
    if std::fs::read_to_string(target).ok().as_deref() == Some(doc) {
        eprintln!("{} is up to date", target.display());
        return Ok(true);
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(target, doc).map_err(|e| format!("{}: {e}", target.display()))?;
    eprintln!("wrote {}", target.display());
    Ok(true)
}

/// Diffs `target` against `doc` (written to a scratch file), printing the
/// diff; true when they are the same.
fn check_doc(doc: &str, target: &Path) -> Result<bool, String> {
    let scratch = std::env::temp_dir().join(format!("libfabric-matrix-check-{}.md", std::process::id()));
    std::fs::write(&scratch, doc).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let diff = Command::new("diff")
        .args(["-uN", "--label", MATRIX_DOC, "--label", "fresh probe"])
        .arg(target)
        .arg(&scratch)
        .output();
    let _ = std::fs::remove_file(&scratch);
    let diff = diff.map_err(|e| format!("could not run `diff` (install diffutils): {e}"))?;
    match diff.status.code() {
        Some(0) => {
            eprintln!("{MATRIX_DOC} is up to date with a fresh probe");
            Ok(true)
        }
        Some(1) => {
            print!("{}", String::from_utf8_lossy(&diff.stdout));
            eprintln!("{MATRIX_DOC} differs from a fresh `cargo xtask matrix`: regenerate and commit (see CI.md)");
            Ok(false)
        }
        _ => Err(format!("diff failed: {}", String::from_utf8_lossy(&diff.stderr).trim())),
    }
}

/// `case, feature: cell` for every cell of the table that says `failed`.
fn failed_cells(table: &str) -> Vec<String> {
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|line| line.starts_with('|'))
        .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    let Some((header, body)) = rows.split_first() else { return Vec::new() };
    let mut failed = Vec::new();
    for row in body {
        for (column, cell) in row.iter().enumerate().skip(1).filter(|(_, cell)| cell.starts_with("failed")) {
            let feature = header.get(column).copied().unwrap_or("?");
            failed.push(format!("{}, {feature}: {cell}", row.first().copied().unwrap_or("?")));
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::failed_cells;

    #[test]
    fn failed_cells_name_their_case_and_feature() {
        let table = "Probed with libfabric 1.17.\n\n\
                     | provider/type | messaging | RMA |\n\
                     |---|---|---|\n\
                     | tcp/msg | passed (provider_matrix.rs) | failed: fi_write failed: x (FI_EIO) |\n\
                     | udp/dgram | failed: no FI_CONNECTED within 10 s | not offered |\n\n\
                     - `failed: …`: the legend is not a row.\n";
        assert_eq!(
            failed_cells(table),
            [
                "tcp/msg, RMA: failed: fi_write failed: x (FI_EIO)",
                "udp/dgram, messaging: failed: no FI_CONNECTED within 10 s"
            ]
        );
        assert!(failed_cells("| provider/type | messaging |\n|---|---|\n| shm/rdm | passed |\n").is_empty());
    }
}
