//! Project automation, run as `cargo xtask <command>`.
//!
//! - `regen`: regenerate `generated/` from the installed libfabric headers
//!   (`--check` compares instead of writing, for CI).
//! - `coverage`: per header, the items found, emitted and skipped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::{Parser, Subcommand};
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
    }
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
