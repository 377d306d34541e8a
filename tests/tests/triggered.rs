//! Triggered operations between two processes, where a provider offers
//! `FI_TRIGGER` (sockets): the peer posts a send held until a counter reaches
//! 2; the target sees nothing after the first increment and the message after
//! the second.

use std::time::{Duration, Instant};

use libfabric::{
    Address, AddressVector, AvType, Bindings, Buf, Caps, CompletionQueue, Counter, CqConfig, Domain, Endpoint, EpType,
    Fabric, Read, TaggedEntry, Unsync, WaitObj,
};
use libfabric_tests::{payload, peer_role, spawn_peer, wait_peer, Case, Oob, DEADLINE};

type Cq = CompletionQueue<TaggedEntry, Unsync>;
type Ep = Endpoint<TaggedEntry, Unsync>;

/// Providers offering `FI_TRIGGER` on RDM endpoints.
const CASES: &[&str] = &["sockets"];

fn open(case: &Case) -> (Fabric, Domain<Unsync>, Cq, AddressVector<Unsync>, Ep) {
    let info = case.local_info(Caps::MSG | Caps::TRIGGER);
    let fabric = Fabric::open(&info).expect("fi_fabric");
    let domain: Domain<Unsync> = Domain::open(&fabric, &info).expect("fi_domain");
    let cq: Cq = CompletionQueue::open(&domain, &CqConfig::default()).expect("cq");
    let av = AddressVector::open(&domain, AvType::UNSPEC).expect("av");
    let ep = Endpoint::open(&domain, &info, Bindings { cq: &cq, av: Some(&av), eq: None }).expect("endpoint");
    (fabric, domain, cq, av, ep)
}

/// The peer: a send triggered by its counter reaching 2.
fn peer(case: &Case, oob: &mut Oob) {
    let (_fabric, domain, cq, av, ep) = open(case);
    let target = av.insert_one(&oob.recv()).expect("insert");
    let counter = Counter::open(&domain, WaitObj::NONE).expect("fi_cntr_open");
    ep.send_triggered(Buf::from(payload(7, 300)), target, &counter, 2, 1).expect("triggered send");
    counter.add(1).expect("fi_cntr_add");
    oob.send(b"once");
    oob.expect("nothing yet");
    counter.add(1).expect("fi_cntr_add");
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < DEADLINE, "the triggered send never completed");
        match cq.poll().expect("fi_cq_read") {
            Read::Op(c) if c.token == 1 => break,
            Read::Empty => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    oob.send(b"fired");
    oob.expect("done");
}

#[test]
fn peer_process() {
    let Some((_role, case, port)) = peer_role() else { return };
    let mut oob = Oob::connect(port);
    peer(&case, &mut oob);
}

#[test]
fn a_triggered_send_waits_for_its_threshold() {
    for &provider in CASES {
        let case = Case { provider, ep_type: EpType::RDM };
        if !case.provider_offered() {
            eprintln!("skipped: fi_getinfo does not offer the {provider} provider");
            continue;
        }
        let listener = Oob::listener();
        let child = spawn_peer("peer", &case, &listener);
        let mut oob = Oob::accept(&listener);
        let (_fabric, _domain, cq, _av, ep) = open(&case);
        ep.recv(Buf::zeroed(512), Address::UNSPEC, 9).expect("receive");
        oob.send(&ep.name().expect("name"));
        let received = std::cell::RefCell::new(None);
        let drive = || {
            if let Read::Op(c) = cq.poll().expect("fi_cq_read") {
                *received.borrow_mut() = Some(c.buf);
            }
        };
        assert_eq!(oob.recv_while(drive), b"once");
        // Below the threshold: nothing arrives, however long progress runs.
        let quiet = Instant::now();
        while quiet.elapsed() < Duration::from_millis(300) {
            drive();
        }
        assert!(received.borrow().is_none(), "{provider}: the send fired below its threshold");
        oob.send(b"nothing yet");
        assert_eq!(oob.recv_while(drive), b"fired");
        let start = Instant::now();
        while received.borrow().is_none() {
            assert!(start.elapsed() < DEADLINE, "{provider}: the triggered message never arrived");
            drive();
        }
        let buf = received.take().expect("received");
        assert!(buf[..] == payload(7, 300)[..], "{provider}: triggered payload");
        oob.send(b"done");
        wait_peer(child);
    }
}
