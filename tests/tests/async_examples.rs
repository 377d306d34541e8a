//! The async examples run as a user runs them: each on its own (server and
//! client in one process on loopback), and as a server and a client in two
//! processes; `async_bench` once per mode, as `cargo xtask bench` drives it.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use libfabric_tests::pingpong::{free_port, wait_listening};
use libfabric_tests::{example, Case};

/// Examples and the providers each runs on.
const EXAMPLES: &[(&str, &[&str])] =
    &[("async_echo", &["tcp/msg"]), ("async_request", &["tcp;ofi_rxm/rdm", "udp;ofi_rxd/rdm", "shm/rdm"])];

const MESSAGES: usize = 5;

fn offered(lane: &str) -> Option<&'static str> {
    let case = Case::named(lane).expect("a lane of the matrix");
    if case.provider_offered() {
        Some(case.provider)
    } else {
        println!("{lane}: provider not offered by fi_getinfo; skipped");
        None
    }
}

fn run(exe: &Path, args: &[&str]) -> Child {
    Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()))
}

/// Waits for `child` for at most `DEADLINE`, killing it past that.
fn finish(mut child: Child) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > libfabric_tests::DEADLINE {
            libfabric_tests::kill_and_clean(&mut child);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("collect the output")
}

/// The client printed one line per message, the last one numbered `MESSAGES - 1`.
fn assert_client(what: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{what}: {}\n{stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    let last = format!(" {}: ", MESSAGES - 1);
    assert!(stdout.lines().any(|l| l.contains(&last)), "{what}: no line for the last message in\n{stdout}");
}

#[test]
fn each_example_runs_on_its_own() {
    for (name, lanes) in EXAMPLES {
        let exe = example(name);
        for provider in lanes.iter().filter_map(|l| offered(l)) {
            let port = free_port().to_string();
            let out = finish(run(&exe, &["-p", provider, "-P", &port, "-n", &MESSAGES.to_string()]));
            assert_client(&format!("{name} on {provider}"), &out);
            println!("{name} on {provider}: {MESSAGES} messages verified in one process");
        }
    }
}

#[test]
fn each_example_runs_as_server_and_client() {
    for (name, lanes) in EXAMPLES {
        let exe = example(name);
        for provider in lanes.iter().filter_map(|l| offered(l)) {
            let port = free_port();
            let p = port.to_string();
            let mut server = run(&exe, &["-p", provider, "-P", &p, "server"]);
            wait_listening(port, &mut server);
            let client = run(&exe, &["-p", provider, "-P", &p, "-n", &MESSAGES.to_string(), "client", "127.0.0.1"]);
            let out = finish(client);
            libfabric_tests::kill_and_clean(&mut server);
            assert_client(&format!("{name} on {provider}, two processes"), &out);
            println!("{name} on {provider}: {MESSAGES} messages verified between two processes");
        }
    }
}

#[test]
fn async_bench_runs_each_mode() {
    let exe = example("async_bench");
    for provider in ["shm/rdm", "tcp;ofi_rxm/rdm"].iter().filter_map(|l| offered(l)) {
        for (mode, busy) in [("latency", false), ("latency", true), ("rate", false), ("rate", true)] {
            let port = free_port();
            let p = port.to_string();
            let mut args = vec!["-p", provider, "-m", mode, "-I", "500", "-W", "8"];
            if busy {
                args.push("--busy");
            }
            let mut server = run(&exe, &[&args[..], &["-B", &p]].concat());
            wait_listening(port, &mut server);
            let out = finish(run(&exe, &[&args[..], &["-P", &p, "127.0.0.1"]].concat()));
            let served = finish(server);
            let line = String::from_utf8_lossy(&out.stdout);
            let what = format!("async_bench {args:?}");
            let said = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
            assert!(
                out.status.success() && served.status.success(),
                "{what}: client {} ({}); server {} ({})",
                out.status,
                said(&out),
                served.status,
                said(&served)
            );
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(
                (fields.len(), fields.first().copied(), fields.get(3).copied()),
                (8, Some(mode), Some("500")),
                "{what}: printed {line:?}"
            );
            println!("{what}: {}", line.trim());
        }
    }
}
