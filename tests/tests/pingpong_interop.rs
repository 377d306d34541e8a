//! The Rust `fi_pingpong` (examples/fi_pingpong) against libfabric's C
//! `fi_pingpong`, in both directions: Rust server with C client, C server
//! with Rust client, untagged and tagged, with the data check (`-c`) on.
//!
//! Each side is its own process: the C tool, and this test binary run again
//! as the Rust side. Traffic stays on loopback (`FI_*_IFACE=lo`, control
//! connection on 127.0.0.1). Where a provider does not offer tagged
//! messages on an endpoint type, both tools must refuse the same way.

use libfabric::{Caps, EpType};
use libfabric_tests::pingpong::{assert_ran, peer_main, pingpong, Host, Side};
use libfabric_tests::Case;

/// The Rust side, when this process was started as one.
#[test]
fn peer_process() {
    peer_main();
}

/// Both directions and both modes for one provider and endpoint type.
fn interop(case: Case) {
    if !case.provider_offered() {
        eprintln!("skipped: fi_getinfo does not offer {}", case.provider);
        return;
    }
    let ep = match case.ep_type {
        EpType::MSG => "msg",
        EpType::RDM => "rdm",
        _ => "dgram",
    };
    let lo = Host::loopback();
    for (mode, caps) in [("msg", Caps::MSG), ("tagged", Caps::TAGGED)] {
        let offered = case.try_local_info(caps).is_some();
        // Two round trips per size: enough to check the data, quick on the slow lanes.
        let args = ["-p", case.provider, "-e", ep, "-m", mode, "-I", "2", "-c"];
        for (server, client) in [(Side::Rust, Side::C), (Side::C, Side::Rust)] {
            let what = format!("{} -m {mode}: {server:?} server, {client:?} client", case.name());
            let (srv, cli) = pingpong((server, &lo), (client, &lo), &args);
            if !offered {
                // Nobody can run it: both must fail, the Rust side saying why.
                assert!(!srv.ok && !cli.ok, "{what}: ran although fi_getinfo does not offer it");
                let rust = if server == Side::Rust { &srv } else { &cli };
                assert!(
                    rust.stderr.contains("FI_ENODATA") || rust.stderr.contains("closed by the peer"),
                    "{what}: unclear refusal: {}",
                    rust.stderr
                );
                continue;
            }
            assert_ran(&what, &srv, &cli, 2);
        }
    }
}

#[test]
fn tcp_msg() {
    interop(Case { provider: "tcp", ep_type: EpType::MSG });
}

#[test]
fn tcp_rxm_rdm() {
    interop(Case { provider: "tcp;ofi_rxm", ep_type: EpType::RDM });
}

#[test]
fn udp_dgram() {
    interop(Case { provider: "udp", ep_type: EpType::DGRAM });
}

#[test]
fn udp_rxd_rdm() {
    interop(Case { provider: "udp;ofi_rxd", ep_type: EpType::RDM });
}

#[test]
fn shm_rdm() {
    interop(Case { provider: "shm", ep_type: EpType::RDM });
}

#[test]
fn sockets_rdm() {
    interop(Case { provider: "sockets", ep_type: EpType::RDM });
}

#[test]
fn sockets_msg() {
    interop(Case { provider: "sockets", ep_type: EpType::MSG });
}

#[test]
fn net_rdm() {
    interop(Case { provider: "net", ep_type: EpType::RDM });
}
