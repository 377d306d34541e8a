//! Two hosts: the peers run in two network namespaces this test creates,
//! joined by a veth pair with addresses the test picks, so nothing goes
//! over loopback. tcp (MSG) and tcp;ofi_rxm (RDM), Rust to Rust and Rust to
//! C in both directions, with the data check on.
//!
//! Creating namespaces needs root (CI runs as root); elsewhere the test
//! says so and skips.

use std::process::Command;

use libfabric::EpType;
use libfabric_tests::pingpong::{assert_ran, peer_main, pingpong, Host, Side};
use libfabric_tests::Case;

/// The Rust side, when this process was started as one.
#[test]
fn peer_process() {
    peer_main();
}

/// Two namespaces and the veth pair between them, removed on drop.
struct TwoHosts {
    a: Host,
    b: Host,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl TwoHosts {
    /// Namespaces named after this process, so parallel runs do not meet;
    /// addresses from 10.201.0.0/24, which exist only inside them.
    fn create() -> Result<TwoHosts, String> {
        let id = std::process::id() % 100_000;
        let (na, nb) = (format!("lfrs{id}a"), format!("lfrs{id}b"));
        let (va, vb) = (format!("lf{id}a"), format!("lf{id}b"));
        ip(&["netns", "add", &na])?;
        let hosts = TwoHosts {
            a: Host { netns: Some(na.clone()), iface: va.clone(), addr: "10.201.0.1".into() },
            b: Host { netns: Some(nb.clone()), iface: vb.clone(), addr: "10.201.0.2".into() },
        };
        ip(&["netns", "add", &nb])?;
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        ip(&["link", "set", &va, "netns", &na])?;
        ip(&["link", "set", &vb, "netns", &nb])?;
        for (ns, dev, addr) in [(&na, &va, "10.201.0.1/24"), (&nb, &vb, "10.201.0.2/24")] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        // Deleting a namespace also deletes the veth end inside it.
        for host in [&self.a, &self.b] {
            if let Some(ns) = &host.netns {
                let _ = ip(&["netns", "del", ns]);
            }
        }
    }
}

#[test]
fn pingpong_between_two_network_namespaces() {
    let hosts = match TwoHosts::create() {
        Ok(h) => h,
        Err(why) => {
            eprintln!("skipped: cannot create network namespaces here (needs root): {why}");
            return;
        }
    };
    for case in [Case { provider: "tcp", ep_type: EpType::MSG }, Case { provider: "tcp;ofi_rxm", ep_type: EpType::RDM }]
    {
        if !case.provider_offered() {
            eprintln!("skipped {}: fi_getinfo does not offer it", case.provider);
            continue;
        }
        let ep = if case.ep_type == EpType::MSG { "msg" } else { "rdm" };
        let args = ["-p", case.provider, "-e", ep, "-I", "3", "-c"];
        for (server, client) in [(Side::Rust, Side::Rust), (Side::Rust, Side::C), (Side::C, Side::Rust)] {
            let what = format!(
                "{}: {server:?} server in {:?}, {client:?} client in {:?}",
                case.name(),
                hosts.a.netns,
                hosts.b.netns
            );
            let (srv, cli) = pingpong((server, &hosts.a), (client, &hosts.b), &args);
            assert_ran(&what, &srv, &cli, 3);
        }
    }
}
