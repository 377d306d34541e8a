//! Collectives between two processes where a provider offers them
//! (tcp;ofi_rxm, through libfabric's collective layer): both join the group
//! of their address vector, pass a barrier, and allreduce two sums that both
//! then hold, and receive rank 0's broadcast; a provider without
//! `FI_COLLECTIVE` says so clearly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfabric::{
    AddressVector, AtomicBuf, AtomicOp, AvSet, AvType, Bindings, Buf, Caps, CompletionQueue, CqConfig, Domain,
    Endpoint, EpType, EqEvent, Event, EventQueue, Fabric, GroupOp, Read, TaggedEntry, Unsync,
};
use libfabric_tests::{peer_role, spawn_peer, wait_peer, Case, Oob, DEADLINE};

type Cq = CompletionQueue<TaggedEntry, Unsync>;

/// One member: rank 0 is the test process, rank 1 the peer.
fn member(case: &Case, rank: u64, oob: &mut Oob) {
    let info = case.local_info(Caps::MSG | Caps::COLLECTIVE);
    let fabric = Fabric::open(&info).expect("fi_fabric");
    let domain: Domain<Unsync> = Domain::open(&fabric, &info).expect("fi_domain");
    let cq: Cq = CompletionQueue::open(&domain, &CqConfig::default()).expect("cq");
    let eq = EventQueue::open(&fabric).expect("eq");
    let av = AddressVector::open(&domain, AvType::TABLE).expect("av");
    let ep = Endpoint::open(&domain, &info, Bindings { cq: &cq, av: Some(&av), eq: Some(&eq), tx_cq: None })
        .expect("endpoint");
    // Both members insert the group in rank order.
    let mine = ep.name().expect("name");
    oob.send(&mine);
    let theirs = oob.recv();
    let (first, second) = if rank == 0 { (&mine, &theirs) } else { (&theirs, &mine) };
    let r0 = av.insert_one(first).expect("insert rank 0");
    let r1 = av.insert_one(second).expect("insert rank 1");

    let set = Arc::new(AvSet::range(&av, r0, r1, 2).expect("fi_av_set"));
    let group = ep.join(set).expect("fi_join_collective");
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < DEADLINE, "rank {rank}: no FI_JOIN_COMPLETE");
        let _ = cq.poll();
        match eq.read_timeout(Duration::from_millis(10)).expect("fi_eq_read") {
            Some(Event::Other { event: EqEvent::JOIN_COMPLETE, .. }) => break,
            Some(other) => panic!("rank {rank}: unexpected {other:?}"),
            None => {}
        }
    }
    let wait = |token: u64| -> Buf {
        let start = Instant::now();
        loop {
            assert!(start.elapsed() < DEADLINE, "rank {rank}: no completion for {token}");
            match cq.poll().expect("fi_cq_read") {
                Read::Op(c) if c.token == token => return c.buf,
                Read::Empty => {}
                other => panic!("rank {rank}: unexpected {other:?}"),
            }
        }
    };
    ep.barrier(&group, Buf::zeroed(0), 1).expect("fi_barrier");
    wait(1);
    let operands = [rank + 1, 10 * (rank + 1)];
    ep.allreduce::<u64>(AtomicOp::SUM, &group, AtomicBuf::fetch(&operands), 2).expect("fi_allreduce");
    let sums = AtomicBuf::results::<u64>(&wait(2), 2);
    assert_eq!(sums, [3, 30], "rank {rank}: allreduce");
    let values = if rank == 0 { AtomicBuf::operands(&[7u64, 8]) } else { Buf::zeroed(16) };
    ep.broadcast::<u64>(&group, r0, values, 3).expect("fi_broadcast");
    let got = wait(3);
    assert_eq!(AtomicBuf::results::<u64>(&got, 2), [7, 8], "rank {rank}: broadcast from rank 0");

    // The group-sized collectives: each either works (and is checked) or
    // says clearly that the provider does not support it.
    let r = rank;
    let cases: [(GroupOp, [u64; 2], Option<Vec<u64>>); 6] = [
        (GroupOp::Allgather, [r + 1, 0], Some(vec![1, 2])),
        (GroupOp::Alltoall, [10 * r, 10 * r + 1], Some(vec![r, 10 + r])),
        (GroupOp::ReduceScatter(AtomicOp::SUM), [r + 1, 10 * (r + 1)], Some(vec![[3, 30][r as usize]])),
        (GroupOp::Reduce(AtomicOp::SUM), [r + 1, 0], (r == 0).then(|| vec![3])),
        (GroupOp::Scatter, [100, 200], Some(vec![100 + 100 * r])),
        (GroupOp::Gather, [r + 1, 0], (r == 0).then(|| vec![1, 2])),
    ];
    for (i, (op, input, want)) in cases.into_iter().enumerate() {
        let token = 10 + i as u64;
        let outcome = match ep.group_op::<u64>(op, &group, 1, Some(r0), AtomicBuf::fetch(&input), token) {
            Err(e) => Err(e.error),
            Ok(_) => wait_result(&cq, token),
        };
        eprintln!("rank {rank}: {op:?}: {}", if outcome.is_ok() { "ran" } else { "not supported" });
        match outcome {
            Ok(buf) => {
                let got = AtomicBuf::results::<u64>(&buf, 2);
                if let Some(want) = want {
                    assert_eq!(got[..want.len()], want[..], "rank {rank}: {op:?}");
                }
            }
            Err(e) => assert!(
                [libc::ENOSYS, libc::EOPNOTSUPP].contains(&e.errno().raw()),
                "rank {rank}: {op:?} failed with something other than 'not supported': {e}"
            ),
        }
    }
    oob.send(b"done");
    oob.expect("done");
}

/// The buffer of `token`'s completion, or its error.
fn wait_result(cq: &Cq, token: u64) -> Result<Buf, libfabric::Error> {
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < DEADLINE, "no completion for {token}");
        match cq.poll()? {
            Read::Op(c) if c.token == token => return Ok(c.buf),
            Read::Failed { error, op: Some((_, t, _)) } if t == token => return Err(error),
            Read::Empty => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn peer_process() {
    let Some((_role, case, port)) = peer_role() else { return };
    let mut oob = Oob::connect(port);
    member(&case, 1, &mut oob);
}

#[test]
fn two_processes_barrier_and_allreduce() {
    let case = Case { provider: "tcp;ofi_rxm", ep_type: EpType::RDM };
    if !case.provider_offered() {
        eprintln!("skipped: fi_getinfo does not offer the tcp;ofi_rxm provider");
        return;
    }
    let listener = Oob::listener();
    let child = spawn_peer("member", &case, &listener);
    let mut oob = Oob::accept(&listener);
    member(&case, 0, &mut oob);
    wait_peer(child);
}

#[test]
fn providers_without_collectives_say_so() {
    for case in
        [Case { provider: "udp;ofi_rxd", ep_type: EpType::RDM }, Case { provider: "sockets", ep_type: EpType::RDM }]
    {
        if !case.provider_offered() {
            continue;
        }
        let hints = case.hints(Caps::MSG | Caps::COLLECTIVE);
        let infos = libfabric::getinfo(&libfabric::Target::source("127.0.0.1", None), &hints).expect("fi_getinfo");
        assert!(
            infos.iter().all(|i| i.provider() != case.provider),
            "{}: offers FI_COLLECTIVE after all; move it to the collective tests",
            case.name()
        );
    }
}
