//! Shared transmit and receive contexts between two processes, where a
//! provider offers them (sockets): the target opens two endpoints that send
//! through one shared transmit context and receive into buffers posted on
//! one shared receive context; the peer sends one message to each endpoint
//! and gets one reply from each.

use std::time::Instant;

use libfabric::{
    Address, AddressVector, AvType, Bindings, Buf, Caps, CompletionQueue, CqConfig, Domain, Endpoint, EpType, Fabric,
    Hints, Info, Read, SharedTxContext, TaggedEntry, Target, Unsync,
};
use libfabric_sys::FI_SHARED_CONTEXT;
use libfabric_tests::{payload, peer_role, spawn_peer, wait_peer, Case, Oob, DEADLINE};

type Cq = CompletionQueue<TaggedEntry, Unsync>;
type Ep = Endpoint<TaggedEntry, Unsync>;

/// Providers whose domains offer shared contexts (`max_ep_stx_ctx` > 0).
const CASES: &[&str] = &["sockets"];

/// An RDM info of `provider` on 127.0.0.1, with shared contexts if asked.
fn info(provider: &str, shared: bool) -> Info {
    let mut hints =
        Hints::new().and_then(|h| h.provider(provider)).expect("hints").ep_type(EpType::RDM).caps(Caps::MSG);
    if shared {
        hints.attrs_mut().ep.set_tx_ctx_cnt(FI_SHARED_CONTEXT as usize);
        hints.attrs_mut().ep.set_rx_ctx_cnt(FI_SHARED_CONTEXT as usize);
    }
    let infos = libfabric::getinfo(&Target::source("127.0.0.1", None), &hints).expect("fi_getinfo");
    infos.into_iter().find(|i| i.provider() == provider).unwrap_or_else(|| panic!("{provider}: no RDM info"))
}

/// Polls `cq` until completions of all `tokens` arrived; returns their buffers by token.
fn completions(cq: &Cq, tokens: &[u64]) -> Vec<(u64, Buf)> {
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < tokens.len() {
        assert!(start.elapsed() < DEADLINE, "completions {tokens:?}: only {} arrived", got.len());
        match cq.poll().expect("fi_cq_read") {
            Read::Op(c) if tokens.contains(&c.token) => got.push((c.token, c.buf)),
            Read::Empty => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    got.sort_by_key(|(t, _)| *t);
    got
}

/// The peer: one plain endpoint, talking to both of the target's.
fn peer(provider: &str, oob: &mut Oob) {
    let info = info(provider, false);
    let fabric = Fabric::open(&info).expect("fi_fabric");
    let domain: Domain<Unsync> = Domain::open(&fabric, &info).expect("fi_domain");
    let cq: Cq = CompletionQueue::open(&domain, &CqConfig::default()).expect("cq");
    let av = AddressVector::open(&domain, AvType::UNSPEC).expect("av");
    let ep: Ep =
        Endpoint::open(&domain, &info, Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None }).expect("endpoint");
    let a = av.insert_one(&oob.recv()).expect("insert A");
    let b = av.insert_one(&oob.recv()).expect("insert B");
    oob.send(&ep.name().expect("name"));
    ep.recv(Buf::zeroed(256), Address::UNSPEC, 10).expect("receive");
    ep.recv(Buf::zeroed(256), Address::UNSPEC, 11).expect("receive");
    oob.expect("posted");
    ep.send(Buf::from(payload(0, 100)), a, 0).expect("send to A");
    ep.send(Buf::from(payload(1, 101)), b, 1).expect("send to B");
    // The sends' and the replies' completions, in whatever order they come:
    // a reply may be read before the send it answers reports completion
    // (seen once in CI: the reply's receive, token 10, came first).
    let replies: Vec<(u64, Buf)> =
        completions(&cq, &[0, 1, 10, 11]).into_iter().filter(|(token, _)| *token >= 10).collect();
    let mut lens: Vec<usize> = replies.iter().map(|(_, b)| b.len()).collect();
    lens.sort_unstable();
    assert_eq!(lens, [200, 201], "one reply from each endpoint");
    for (_, buf) in &replies {
        let seq = (buf.len() - 200) as u64 + 100;
        assert!(buf[..] == payload(seq, buf.len())[..], "reply payload");
    }
    oob.send(b"done");
}

#[test]
fn peer_process() {
    let Some((_role, case, port)) = peer_role() else { return };
    let mut oob = Oob::connect(port);
    peer(case.provider, &mut oob);
}

#[test]
fn two_endpoints_share_transmit_and_receive_contexts() {
    for &provider in CASES {
        let case = Case { provider, ep_type: EpType::RDM };
        if !case.provider_offered() {
            eprintln!("skipped: fi_getinfo does not offer the {provider} provider");
            continue;
        }
        let listener = Oob::listener();
        let child = spawn_peer("peer", &case, &listener);
        let mut oob = Oob::accept(&listener);

        let info = info(provider, true);
        let fabric = Fabric::open(&info).expect("fi_fabric");
        let domain: Domain<Unsync> = Domain::open(&fabric, &info).expect("fi_domain");
        let cq: Cq = CompletionQueue::open(&domain, &CqConfig::default()).expect("cq");
        let av = AddressVector::open(&domain, AvType::UNSPEC).expect("av");
        let stx = SharedTxContext::open(&domain).expect("fi_stx_context");
        let srx: Ep = Endpoint::shared_rx(&domain, &info).expect("fi_srx_context");
        let open = || {
            Endpoint::open_shared(
                &domain,
                &info,
                Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None },
                Some(&stx),
                Some(&srx),
            )
            .expect("fi_endpoint (shared)")
        };
        let (a, b) = (open(), open());
        oob.send(&a.name().expect("name A"));
        oob.send(&b.name().expect("name B"));
        let peer = av.insert_one(&oob.recv()).expect("insert peer");
        // Two receives on the shared context serve both endpoints.
        srx.recv(Buf::zeroed(256), Address::UNSPEC, 20).expect("receive on the srx");
        srx.recv(Buf::zeroed(256), Address::UNSPEC, 21).expect("receive on the srx");
        oob.send(b"posted");
        let got = completions(&cq, &[20, 21]);
        let mut lens: Vec<usize> = got.iter().map(|(_, b)| b.len()).collect();
        lens.sort_unstable();
        assert_eq!(lens, [100, 101], "{provider}: both messages through the shared receive context");
        for (_, buf) in &got {
            let seq = (buf.len() - 100) as u64;
            assert!(buf[..] == payload(seq, buf.len())[..], "{provider}: payload {seq}");
        }
        // A reply from each endpoint, both through the shared transmit context.
        a.send(Buf::from(payload(100, 200)), peer, 30).expect("reply from A");
        b.send(Buf::from(payload(101, 201)), peer, 31).expect("reply from B");
        completions(&cq, &[30, 31]);
        assert_eq!(oob.recv_while(|| drop(cq.poll())), b"done");
        wait_peer(child);
    }
}
