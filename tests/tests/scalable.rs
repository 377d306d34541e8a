//! Scalable endpoints between two processes, where a provider offers them
//! (sockets: up to 16 contexts): the target opens one scalable endpoint with
//! four receive contexts, each with its own completion queue; the peer
//! addresses each context by `fi_rx_addr` and sends it its own message.

use std::time::Instant;

use libfabric::{
    Address, AddressVector, AvType, Bindings, Buf, Caps, CompletionQueue, CqConfig, Domain, Endpoint, EpType, Fabric,
    Hints, Info, Read, ScalableEndpoint, TaggedEntry, Target, Unsync,
};
use libfabric_tests::{payload, peer_role, spawn_peer, wait_peer, Case, Oob, DEADLINE};

const CONTEXTS: usize = 4;
const CONTEXT_BITS: u32 = 2;

type Cq = CompletionQueue<TaggedEntry, Unsync>;

/// Providers whose endpoints offer several receive contexts.
const CASES: &[&str] = &["sockets"];

/// An RDM info of `provider` on 127.0.0.1 that can name receive contexts,
/// with `rx` receive contexts per endpoint.
fn info(provider: &str, rx: usize) -> Info {
    let mut hints = Hints::new()
        .and_then(|h| h.provider(provider))
        .expect("hints")
        .ep_type(EpType::RDM)
        .caps(Caps::MSG | Caps::NAMED_RX_CTX);
    hints.attrs_mut().ep.set_tx_ctx_cnt(1);
    hints.attrs_mut().ep.set_rx_ctx_cnt(rx);
    let infos = libfabric::getinfo(&Target::source("127.0.0.1", None), &hints).expect("fi_getinfo");
    infos.into_iter().find(|i| i.provider() == provider).unwrap_or_else(|| panic!("{provider}: no scalable RDM info"))
}

/// Waits for one completion of `token` on `cq`; returns its buffer.
fn completion(cq: &Cq, token: u64) -> Buf {
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < DEADLINE, "no completion for {token}");
        match cq.poll().expect("fi_cq_read") {
            Read::Op(c) if c.token == token => return c.buf,
            Read::Empty => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The peer: a plain endpoint sending message `i` to receive context `i`.
fn sender(provider: &str, oob: &mut Oob) {
    let info = info(provider, 1);
    let fabric = Fabric::open(&info).expect("fi_fabric");
    let domain: Domain<Unsync> = Domain::open(&fabric, &info).expect("fi_domain");
    let cq: Cq = CompletionQueue::open(&domain, &CqConfig::default()).expect("cq");
    let av = AddressVector::open_scalable(&domain, AvType::UNSPEC, CONTEXT_BITS).expect("fi_av_open");
    let ep = Endpoint::open(&domain, &info, Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None })
        .expect("fi_endpoint");
    let target = av.insert_one(&oob.recv()).expect("fi_av_insert");
    assert!(av.rx_context(target, 1 << CONTEXT_BITS).is_err(), "a context past the bits is refused");
    for i in 0..CONTEXTS {
        let to: Address = av.rx_context(target, i as u32).expect("fi_rx_addr");
        ep.send(Buf::from(payload(i as u64, 100 + i)), to, i as u64).expect("send");
        completion(&cq, i as u64);
    }
    oob.send(b"sent");
    oob.expect("done");
}

#[test]
fn peer_process() {
    let Some((_role, case, port)) = peer_role() else { return };
    let mut oob = Oob::connect(port);
    sender(case.provider, &mut oob);
}

#[test]
fn each_receive_context_gets_its_own_messages() {
    for &provider in CASES {
        let case = Case { provider, ep_type: EpType::RDM };
        if !case.provider_offered() {
            eprintln!("skipped: fi_getinfo does not offer the {provider} provider");
            continue;
        }
        let listener = Oob::listener();
        let child = spawn_peer("sender", &case, &listener);
        let mut oob = Oob::accept(&listener);

        let info = info(provider, CONTEXTS);
        let fabric = Fabric::open(&info).expect("fi_fabric");
        let domain: Domain<Unsync> = Domain::open(&fabric, &info).expect("fi_domain");
        let av = AddressVector::open(&domain, AvType::UNSPEC).expect("fi_av_open");
        let sep = ScalableEndpoint::open(&domain, &info, &av).expect("fi_scalable_ep");
        let tx_cq: Cq = CompletionQueue::open(&domain, &CqConfig::default()).expect("cq");
        let _tx = sep.tx_context(0, &tx_cq).expect("fi_tx_context");
        let cqs: Vec<Cq> =
            (0..CONTEXTS).map(|_| CompletionQueue::open(&domain, &CqConfig::default()).expect("cq")).collect();
        let rx: Vec<_> = cqs.iter().enumerate().map(|(i, cq)| sep.rx_context(i, cq).expect("fi_rx_context")).collect();
        sep.enable().expect("fi_enable(sep)");
        for (i, ctx) in rx.iter().enumerate() {
            ctx.recv(Buf::zeroed(256), Address::UNSPEC, i as u64).expect("post receive");
        }
        oob.send(&sep.name().expect("fi_getname"));
        // Completions read while waiting would be lost: only the transmit
        // queue is polled (for progress) until the peer reports its sends done.
        assert_eq!(oob.recv_while(|| drop(tx_cq.poll())), b"sent");
        for (i, cq) in cqs.iter().enumerate() {
            let got = completion(cq, i as u64);
            assert!(got[..] == payload(i as u64, 100 + i)[..], "{provider}: context {i} got another message");
        }
        oob.send(b"done");
        wait_peer(child);
    }
}
