//! Per-operation cost of the three layers over one libfabric call: a direct
//! call through the C ops table, the generated inline wrapper, and the safe
//! layer. `cargo bench -p libfabric --bench per_op`.
//!
//! - `cq_read_empty`: reading an empty completion queue, the call a
//!   busy-polling loop makes most often; pure binding overhead around the
//!   provider's check.
//! - `self_message`: one 64-byte message to the endpoint's own address over
//!   udp (post a receive, inject, poll until it arrives): the whole per
//!   message path of each layer.

use std::hint::black_box;
use std::ptr;

use criterion::{criterion_group, criterion_main, Criterion};
use libfabric::{
    getinfo, Address, AddressVector, AvType, Bindings, Buf, Caps, CompletionQueue, CqConfig, Domain, EpType, Fabric,
    Hints, MsgEntry, Read, Target, Unsync, WaitObj,
};
use libfabric_sys::fi_cq_msg_entry;

struct Loopback {
    ep: libfabric::Endpoint<MsgEntry, Unsync>,
    cq: CompletionQueue<MsgEntry, Unsync>,
    me: Address,
    _av: AddressVector<Unsync>,
    _domain: Domain<Unsync>,
    _fabric: Fabric,
}

/// A udp DGRAM endpoint on 127.0.0.1 with its own address in its vector.
fn loopback() -> Loopback {
    let hints = Hints::new().and_then(|h| h.provider("udp")).expect("hints").ep_type(EpType::DGRAM).caps(Caps::MSG);
    let info = getinfo(&Target::source("127.0.0.1", None), &hints).expect("fi_getinfo").into_iter().next();
    let info = info.expect("the udp provider on 127.0.0.1");
    let fabric = Fabric::open(&info).expect("fabric");
    let domain: Domain<Unsync> = Domain::open(&fabric, &info).expect("domain");
    let cq = CompletionQueue::open(&domain, &CqConfig { size: 64, wait_obj: WaitObj::NONE, ..CqConfig::default() })
        .expect("cq");
    let av = AddressVector::open(&domain, AvType::UNSPEC).expect("av");
    let ep = libfabric::Endpoint::open(&domain, &info, Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None })
        .expect("ep");
    let me = av.insert_one(&ep.name().expect("name")).expect("av insert");
    Loopback { ep, cq, me, _av: av, _domain: domain, _fabric: fabric }
}

fn cq_read_empty(c: &mut Criterion) {
    let lb = loopback();
    let raw = lb.cq.as_raw();
    let mut entry = fi_cq_msg_entry::default();
    let mut g = c.benchmark_group("cq_read_empty");
    g.bench_function("ops table (direct)", |b| {
        // SAFETY: an open CQ; one entry of its format.
        b.iter(|| unsafe {
            black_box(((*(*raw).ops).read.unwrap_unchecked())(raw, ptr::addr_of_mut!(entry).cast(), 1))
        })
    });
    g.bench_function("generated fi_cq_read", |b| {
        // SAFETY: as above.
        b.iter(|| unsafe { black_box(libfabric_sys::fi_cq_read(raw, ptr::addr_of_mut!(entry).cast(), 1)) })
    });
    g.bench_function("safe CompletionQueue::poll", |b| b.iter(|| black_box(lb.cq.poll().expect("poll"))));
    g.finish();
}

fn self_message(c: &mut Criterion) {
    let lb = loopback();
    let (ep, cq) = (lb.ep.as_raw(), lb.cq.as_raw());
    let me = lb.me.raw();
    let mut rx = vec![0u8; 256];
    let tx = [7u8; 64];
    let mut entry = fi_cq_msg_entry::default();
    let mut g = c.benchmark_group("self_message");
    g.bench_function("generated wrappers", |b| {
        b.iter(|| {
            // SAFETY: open objects; `rx` outlives the receive, which completes
            // before the next iteration; the context is only compared.
            unsafe {
                let ctx = rx.as_mut_ptr().cast();
                while libfabric_sys::fi_recv(ep, rx.as_mut_ptr().cast(), rx.len(), ptr::null_mut(), 0, ctx) != 0 {}
                while libfabric_sys::fi_inject(ep, tx.as_ptr().cast(), tx.len(), me) != 0 {}
                while libfabric_sys::fi_cq_read(cq, ptr::addr_of_mut!(entry).cast(), 1) != 1 {}
            }
        })
    });
    let mut buf = Some(Buf::zeroed(256));
    g.bench_function("safe layer", |b| {
        b.iter(|| {
            let posted = buf.take().map(|b| lb.ep.recv(b, Address::UNSPEC, 0));
            posted.expect("the buffer is back").expect("fi_recv");
            while lb.ep.inject(&tx, lb.me).is_err() {}
            loop {
                if let Read::Op(done) = lb.cq.poll().expect("poll") {
                    buf = Some(done.buf);
                    break;
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, cq_read_empty, self_message);
criterion_main!(benches);
