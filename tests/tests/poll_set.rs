//! Poll sets (deprecated in libfabric 2.x, present in 1.17): two completion
//! queues in one set; after a message between their endpoints, polling the
//! set names both queues, and each then yields its completion.
#![allow(deprecated)]

use std::time::Instant;

use libfabric::{
    Address, AddressVector, AvType, Bindings, Buf, Caps, CompletionQueue, CqConfig, Domain, Endpoint, EpType, Fabric,
    PollSet, Read, TaggedEntry, Unsync,
};
use libfabric_tests::{payload, Case, DEADLINE};

type Cq = CompletionQueue<TaggedEntry, Unsync>;

#[test]
fn a_poll_set_names_the_queues_with_completions() {
    for provider in ["tcp;ofi_rxm", "udp;ofi_rxd", "sockets"] {
        let case = Case { provider, ep_type: EpType::RDM };
        if !case.provider_offered() {
            eprintln!("skipped: fi_getinfo does not offer the {provider} provider");
            continue;
        }
        let info = case.local_info(Caps::MSG);
        let fabric = Fabric::open(&info).expect("fi_fabric");
        let domain: Domain<Unsync> = Domain::open(&fabric, &info).expect("fi_domain");
        let (cq1, cq2): (Cq, Cq) = (
            CompletionQueue::open(&domain, &CqConfig::default()).expect("cq"),
            CompletionQueue::open(&domain, &CqConfig::default()).expect("cq"),
        );
        let av = AddressVector::open(&domain, AvType::UNSPEC).expect("av");
        let e1 = Endpoint::open(&domain, &info, Bindings { cq: &cq1, av: Some(&av), eq: None, tx_cq: None })
            .expect("endpoint");
        let e2 = Endpoint::open(&domain, &info, Bindings { cq: &cq2, av: Some(&av), eq: None, tx_cq: None })
            .expect("endpoint");
        let to_e2 = av.insert_one(&e2.name().expect("name")).expect("insert");
        let set = PollSet::open(&domain).expect("fi_poll_open");
        set.add(&cq1).expect("fi_poll_add");
        set.add(&cq2).expect("fi_poll_add");
        assert!(cq1.id() != cq2.id());

        e2.recv(Buf::zeroed(64), Address::UNSPEC, 2).expect("receive");
        let (mut sent, mut received) = (false, None);
        // Reads the queues the set names; polling the set also drives the
        // progress of both queues' endpoints.
        let drain = |sent: &mut bool, received: &mut Option<Buf>| {
            for id in set.poll(4).expect("fi_poll") {
                let cq = if id == cq1.id() {
                    &cq1
                } else if id == cq2.id() {
                    &cq2
                } else {
                    panic!("unknown id {id}")
                };
                match cq.poll().expect("fi_cq_read") {
                    Read::Op(c) if c.token == 1 => *sent = true,
                    Read::Op(c) => *received = Some(c.buf),
                    Read::Empty => {}
                    other => panic!("{provider}: unexpected {other:?}"),
                }
            }
        };
        let start = Instant::now();
        let mut buf = Buf::from(payload(1, 40));
        loop {
            match e1.send(buf, to_e2, 1) {
                Ok(_) => break,
                Err(e) if e.is_again() && start.elapsed() < DEADLINE => {
                    buf = e.buf;
                    drain(&mut sent, &mut received);
                }
                Err(e) => panic!("{provider}: fi_send: {}", e.error),
            }
        }
        while !sent || received.is_none() {
            assert!(start.elapsed() < DEADLINE, "{provider}: the poll set never named both queues");
            drain(&mut sent, &mut received);
        }
        assert!(received.expect("received")[..] == payload(1, 40)[..], "{provider}: payload");
        set.remove(&cq2).expect("fi_poll_del");
    }
}

#[test]
fn a_wait_set_wakes_for_its_queues_and_times_out_when_idle() {
    use libfabric::WaitSet;
    use std::time::Duration;
    for provider in ["tcp;ofi_rxm", "udp;ofi_rxd", "sockets"] {
        let case = Case { provider, ep_type: EpType::RDM };
        if !case.provider_offered() {
            eprintln!("skipped: fi_getinfo does not offer the {provider} provider");
            continue;
        }
        let info = case.local_info(Caps::MSG);
        let fabric = Fabric::open(&info).expect("fi_fabric");
        let domain: Domain<Unsync> = Domain::open(&fabric, &info).expect("fi_domain");
        let set = WaitSet::open(&fabric).expect("fi_wait_open");
        let cq1: Cq = CompletionQueue::open_in_wait_set(&domain, 0, &set).expect("cq in the set");
        let cq2: Cq = CompletionQueue::open_in_wait_set(&domain, 0, &set).expect("cq in the set");
        let av = AddressVector::open(&domain, AvType::UNSPEC).expect("av");
        let e1 = Endpoint::open(&domain, &info, Bindings { cq: &cq1, av: Some(&av), eq: None, tx_cq: None })
            .expect("endpoint");
        let e2 = Endpoint::open(&domain, &info, Bindings { cq: &cq2, av: Some(&av), eq: None, tx_cq: None })
            .expect("endpoint");
        let to_e2 = av.insert_one(&e2.name().expect("name")).expect("insert");

        let idle = Instant::now();
        assert!(!set.wait(Duration::from_millis(100)).expect("fi_wait"), "{provider}: woke with nothing to do");
        assert!(idle.elapsed() >= Duration::from_millis(50), "{provider}: returned before the timeout");

        e2.recv(Buf::zeroed(64), Address::UNSPEC, 2).expect("receive");
        let (mut sent, mut received) = (false, None);
        let read = |sent: &mut bool, received: &mut Option<Buf>| {
            for cq in [&cq1, &cq2] {
                match cq.poll().expect("fi_cq_read") {
                    Read::Op(c) if c.token == 1 => *sent = true,
                    Read::Op(c) => *received = Some(c.buf),
                    Read::Empty => {}
                    other => panic!("{provider}: unexpected {other:?}"),
                }
            }
        };
        let start = Instant::now();
        let mut buf = Buf::from(payload(3, 40));
        loop {
            match e1.send(buf, to_e2, 1) {
                Ok(_) => break,
                Err(e) if e.is_again() && start.elapsed() < DEADLINE => {
                    buf = e.buf;
                    read(&mut sent, &mut received);
                }
                Err(e) => panic!("{provider}: fi_send: {}", e.error),
            }
        }
        while !sent || received.is_none() {
            assert!(start.elapsed() < DEADLINE, "{provider}: completions never signalled");
            let _ = set.wait(Duration::from_millis(20)).expect("fi_wait");
            read(&mut sent, &mut received);
        }
        assert!(received.expect("received")[..] == payload(3, 40)[..], "{provider}: payload");
    }
}
