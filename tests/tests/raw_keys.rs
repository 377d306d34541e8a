//! Raw memory keys (`FI_MR_RAW`): exposed memory described by its raw key,
//! mapped by the peer into a 64-bit key and read through it. No provider here
//! requires raw keys; where one offers `fi_mr_raw_attr` anyway the round trip
//! must work, and where it does not the error must say "not supported".

use std::time::Instant;

use libfabric::{
    AddressVector, AvType, Bindings, Buf, Caps, CompletionQueue, CqConfig, Domain, Endpoint, EpType, Fabric, MrAccess,
    Read, TaggedEntry, Unsync,
};
use libfabric_tests::{payload, Case, DEADLINE};

type Cq = CompletionQueue<TaggedEntry, Unsync>;

#[test]
fn raw_keys_round_trip_or_are_refused_clearly() {
    for provider in ["tcp;ofi_rxm", "udp;ofi_rxd", "sockets", "shm"] {
        let case = Case { provider, ep_type: EpType::RDM };
        if !case.provider_offered() {
            continue;
        }
        let info = case.local_info(Caps::MSG | Caps::RMA);
        let fabric = Fabric::open(&info).expect("fi_fabric");
        let domain: Domain<Unsync> = Domain::open(&fabric, &info).expect("fi_domain");
        let cq: Cq = CompletionQueue::open(&domain, &CqConfig::default()).expect("cq");
        let av = AddressVector::open(&domain, AvType::UNSPEC).expect("av");
        let owner = Endpoint::open(&domain, &info, Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None })
            .expect("endpoint");
        let reader = Endpoint::open(&domain, &info, Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None })
            .expect("endpoint");
        let to_owner = av.insert_one(&owner.name().expect("name")).expect("insert");
        let exposed = owner.expose(Buf::from(payload(5, 256)), MrAccess::REMOTE_READ).expect("expose");

        let raw = match exposed.raw_remote() {
            Err(e) => {
                assert!(
                    [libc::ENOSYS, libc::EOPNOTSUPP].contains(&e.errno().raw()),
                    "{provider}: fi_mr_raw_attr failed with {e}"
                );
                continue;
            }
            Ok(raw) => raw,
        };
        assert!(!raw.key.is_empty(), "{provider}: an empty raw key");
        let mapped = match reader.map_raw(&raw) {
            Err(e) => {
                assert!(
                    [libc::ENOSYS, libc::EOPNOTSUPP].contains(&e.errno().raw()),
                    "{provider}: fi_mr_map_raw failed with {e}"
                );
                continue;
            }
            Ok(m) => m,
        };
        let start = Instant::now();
        let mut buf = Buf::zeroed(256);
        loop {
            match reader.read(buf, to_owner, mapped.remote(), 0, 1) {
                Ok(_) => break,
                Err(e) if e.is_again() && start.elapsed() < DEADLINE => {
                    buf = e.buf;
                    let _ = cq.poll();
                }
                Err(e) => panic!("{provider}: fi_read through the mapped key: {}", e.error),
            }
        }
        let got = loop {
            assert!(start.elapsed() < DEADLINE, "{provider}: no read completion");
            match cq.poll().expect("fi_cq_read") {
                Read::Op(c) if c.token == 1 => break c.buf,
                Read::Empty | Read::Raw(_) => {}
                other => panic!("{provider}: unexpected {other:?}"),
            }
        };
        assert!(got[..] == payload(5, 256)[..], "{provider}: bytes read through the mapped raw key");
        eprintln!("{provider}: raw key of {} bytes round trip", raw.key.len());
    }
}
