//! Multi-receive buffers through the safe API: messages land one after the
//! other in one posted buffer, each reported with its offset, and the buffer
//! comes back with the completion flagged `FI_MULTI_RECV`.

use std::time::Instant;

use libfabric::{
    AddressVector, AvType, Bindings, Buf, Caps, CompletionFlags, CompletionQueue, CqConfig, Domain, Endpoint, Entry,
    EpOption, EpType, Fabric, OpKind, Read, TaggedEntry, Unsync,
};
use libfabric_tests::{payload, post_with_progress, Case, DEADLINE};

#[test]
fn messages_land_in_one_buffer_and_it_comes_back() {
    for case in
        [Case { provider: "tcp;ofi_rxm", ep_type: EpType::RDM }, Case { provider: "udp;ofi_rxd", ep_type: EpType::RDM }]
    {
        if !case.provider_offered() {
            eprintln!("skipped {}: fi_getinfo does not offer the provider", case.name());
            continue;
        }
        let info = case.local_info(Caps::MSG | Caps::MULTI_RECV);
        let fabric = Fabric::open(&info).expect("fi_fabric");
        let domain: Domain<Unsync> = Domain::open(&fabric, &info).expect("fi_domain");
        let cq: CompletionQueue<TaggedEntry, Unsync> =
            CompletionQueue::open(&domain, &CqConfig { serial_reads: true, ..CqConfig::default() }).expect("cq");
        let av = AddressVector::open(&domain, AvType::UNSPEC).expect("av");
        let ep = Endpoint::open(&domain, &info, Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None })
            .expect("endpoint");
        let me = av.insert_one(&ep.name().expect("name")).expect("insert");

        // Five 100-byte messages fill 500 of 1000 bytes; with at least 600
        // bytes required free, the buffer is released after the fifth.
        const SIZE: usize = 1000;
        const MESSAGES: u64 = 5;
        ep.set_option(EpOption::MIN_MULTI_RECV, 600).expect("fi_setopt(FI_OPT_MIN_MULTI_RECV)");
        ep.recv_multi(Buf::zeroed(SIZE), me, 77).expect("fi_recvmsg(FI_MULTI_RECV)");
        let mut stash = Vec::new();
        for seq in 0..MESSAGES {
            post_with_progress(&cq, &mut stash, Buf::from(payload(seq, 100)), |b| ep.send(b, me, 100 + seq));
        }

        let start = Instant::now();
        let (mut messages, mut sends, mut released) = (Vec::new(), 0, None);
        while released.is_none() || sends < MESSAGES {
            assert!(start.elapsed() < DEADLINE, "{}: completions missing", case.name());
            let read = if stash.is_empty() { cq.poll().expect("fi_cq_read") } else { stash.remove(0) };
            match read {
                Read::Message { token, offset, entry } => {
                    assert_eq!(token, 77);
                    assert!(entry.flags().contains(CompletionFlags::RECV));
                    messages.push((offset, entry.len()));
                }
                Read::Op(c) if c.kind == OpKind::Send => sends += 1,
                Read::Op(c) => {
                    assert_eq!((c.kind, c.token), (OpKind::MultiRecv, 77), "{}", case.name());
                    assert!(c.entry.flags().contains(CompletionFlags::MULTI_RECV));
                    if c.entry.len() > 0 {
                        messages.push((c.offset, c.entry.len()));
                    }
                    released = Some(c.buf);
                }
                Read::Empty => {}
                other => panic!("{}: unexpected {other:?}", case.name()),
            }
        }
        let buf = released.expect("released");
        assert_eq!(buf.len(), SIZE, "the whole buffer comes back");
        assert_eq!(messages.len(), MESSAGES as usize, "{}: one report per message: {messages:?}", case.name());
        for (seq, (offset, len)) in messages.into_iter().enumerate() {
            assert_eq!(len, 100);
            assert_eq!(&buf[offset..offset + len], &payload(seq as u64, 100)[..], "{}: message {seq}", case.name());
        }
        assert_eq!(ep.in_flight(), 0);
    }
}

/// A multi-receive buffer on a queue whose reads are not serialised is
/// refused, and the buffer comes back untouched.
#[test]
fn a_queue_without_serial_reads_refuses_a_multi_receive_buffer() {
    let case = Case { provider: "tcp;ofi_rxm", ep_type: EpType::RDM };
    if !case.provider_offered() {
        eprintln!("skipped {}: fi_getinfo does not offer the provider", case.name());
        return;
    }
    let info = case.local_info(Caps::MSG | Caps::MULTI_RECV);
    let fabric = Fabric::open(&info).expect("fi_fabric");
    let domain: Domain = Domain::open(&fabric, &info).expect("fi_domain");
    let cq: CompletionQueue = CompletionQueue::open(&domain, &CqConfig::default()).expect("cq");
    let av = AddressVector::open(&domain, AvType::UNSPEC).expect("av");
    let ep =
        Endpoint::open(&domain, &info, Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None }).expect("endpoint");
    let buf = Buf::from(payload(3, 64));
    let ptr = buf.as_ptr();
    let refused = ep.recv_multi(buf, libfabric::Address::UNSPEC, 1).expect_err("refused");
    match &refused.error {
        libfabric::Error::InvalidArgument { call, reason } => {
            assert_eq!(*call, "fi_recvmsg");
            assert!(reason.contains("serial_reads"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((refused.buf.as_ptr(), &refused.buf[..]), (ptr, &payload(3, 64)[..]));
    assert_eq!(ep.in_flight(), 0);
}
