//! Messaging and tagged messaging between two processes, over every provider
//! and endpoint type this machine's libfabric offers, on 127.0.0.1.
//!
//! For each case the test process and a peer process (this binary again)
//! open endpoints, swap addresses out-of-band, and exchange messages from 0
//! bytes to past the inject size and the providers' eager limits, each
//! checked byte for byte, with its completion's length, flags, remote CQ data,
//! tag and (where the provider offers `FI_SOURCE`) source address. A case is
//! skipped only when `fi_getinfo` does not offer its provider.

use libfabric::{Address, Buf, Caps, Completion, CompletionFlags, Entry, EpType, OpKind, TaggedEntry};
use libfabric_tests::session::Session;
use libfabric_tests::{payload, peer_role, spawn_peer, wait_peer, Case, Oob};

/// The caps to ask for: messages, tagged messages where the provider offers
/// them, and `FI_SOURCE` where it offers that (to check source addresses).
fn caps_for(case: &Case) -> Caps {
    // Providers list only what was asked for: ask for each extra capability.
    let mut caps = Caps::MSG;
    for extra in [Caps::TAGGED, Caps::SOURCE] {
        if case.try_local_info(caps | extra).is_some() {
            caps |= extra;
        }
    }
    caps
}

/// The matrix's part of a session: message sizes and the exchange.
trait Exchange {
    fn sizes(&self) -> Vec<usize>;
    fn send(&self, seq: u64, data: Vec<u8>, tag: Option<u64>, cq_data: Option<u64>, inject: bool) -> Option<u64>;
    fn post_recv(&self, seq: u64, capacity: usize, tag: Option<u64>) -> u64;
    fn check_received(&self, c: &Completion<TaggedEntry>, seq: u64, len: usize, tag: Option<u64>, cq_data: Option<u64>);
    #[allow(clippy::too_many_arguments)]
    fn round(&self, oob: &mut Oob, first: bool, seq: u64, len: usize, tagged: bool, with_data: bool, inject: bool);
    fn exchange(&self, oob: &mut Oob, first: bool);
}

impl Exchange for Session {
    /// Message sizes: empty, small, around the inject size, past the providers'
    /// eager limits (16 KiB for rxm, 64 KiB windows for tcp), within the
    /// endpoint's maximum and the datagram limits.
    fn sizes(&self) -> Vec<usize> {
        let inject = self.info.inject_size();
        let max = if self.case.ep_type == EpType::DGRAM { 4096.min(self.info.max_msg_size()) } else { 1 << 20 };
        let mut sizes = vec![0, 1, 63, inject, inject + 1, 4096, 16 * 1024 + 1, 65536 + 7, 1 << 20];
        sizes.retain(|&s| s <= max);
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    /// Sends `data`, by inject when it fits and `inject` is asked for.
    fn send(&self, seq: u64, data: Vec<u8>, tag: Option<u64>, cq_data: Option<u64>, inject: bool) -> Option<u64> {
        let token = 1_000_000 + seq;
        let ep = &self.ep;
        if inject && data.len() <= self.info.inject_size() {
            self.retry("inject", || match (tag, cq_data) {
                (Some(t), Some(d)) => ep.tinject_data(&data, d, self.peer, t),
                (Some(t), None) => ep.tinject(&data, self.peer, t),
                (None, Some(d)) => ep.inject_data(&data, d, self.peer),
                (None, None) => ep.inject(&data, self.peer),
            });
            return None;
        }
        let mut buf = Some(Buf::from(data));
        self.retry("send", || {
            let b = buf.take().expect("the buffer is back after each failed post");
            let posted = match (tag, cq_data) {
                (Some(t), Some(d)) => ep.tsend_data(b, d, self.peer, t, token),
                (Some(t), None) => ep.tsend(b, self.peer, t, token),
                (None, Some(d)) => ep.send_data(b, d, self.peer, token),
                (None, None) => ep.send(b, self.peer, token),
            };
            posted.map_err(|e| {
                buf = Some(e.buf);
                e.error
            })
        });
        Some(token)
    }

    fn post_recv(&self, seq: u64, capacity: usize, tag: Option<u64>) -> u64 {
        let token = seq;
        let buf = Buf::zeroed(capacity);
        match tag {
            Some(t) => self.ep.trecv(buf, Address::UNSPEC, t, 0, token),
            None => self.ep.recv(buf, Address::UNSPEC, token),
        }
        .expect("post receive");
        token
    }

    /// Checks a receive completion: length, payload, flags, data, tag, source.
    fn check_received(
        &self,
        c: &Completion<TaggedEntry>,
        seq: u64,
        len: usize,
        tag: Option<u64>,
        cq_data: Option<u64>,
    ) {
        let name = self.case.name();
        assert_eq!(c.kind, if tag.is_some() { OpKind::TaggedRecv } else { OpKind::Recv });
        assert_eq!(c.entry.len(), len, "{name}: received length of message {seq}");
        assert_eq!(c.buf.len(), len, "{name}: buffer cut to the received length");
        assert!(c.buf[..] == payload(seq, len)[..], "{name}: payload of message {seq} ({len} bytes) differs");
        let flags = c.entry.flags();
        assert!(flags.contains(CompletionFlags::RECV), "{name}: flags {flags:?}");
        assert_eq!(flags.contains(CompletionFlags::TAGGED), tag.is_some(), "{name}: flags {flags:?}");
        assert_eq!(c.entry.tag(), tag, "{name}: tag");
        assert_eq!(c.entry.data(), cq_data, "{name}: remote CQ data");
    }

    /// One message each way: both sides pre-post a receive, the sender
    /// (`first`) sends, the receiver checks it and replies with `seq + 1`.
    fn round(&self, oob: &mut Oob, first: bool, seq: u64, len: usize, tagged: bool, with_data: bool, inject: bool) {
        // Remote CQ data only where the domain carries it.
        let with_data = with_data && self.info.domain_attr().is_some_and(|d| d.cq_data_size() > 0);
        let tag = tagged.then_some(0xabc0_0000 + seq);
        let reply_tag = tagged.then_some(0xabc0_0000 + seq + 1);
        let data = with_data.then_some(seq << 8 | 0x5a);
        let reply_data = with_data.then_some((seq + 1) << 8 | 0x5a);
        let (their_seq, their_tag, their_data, my_seq, my_tag, my_data) = if first {
            (seq + 1, reply_tag, reply_data, seq, tag, data)
        } else {
            (seq, tag, data, seq + 1, reply_tag, reply_data)
        };
        let rx = self.post_recv(their_seq, len.max(1) + 16, their_tag);
        oob.send(b"posted");
        oob.expect("posted");
        if first {
            let tx = self.send(my_seq, payload(my_seq, len), my_tag, my_data, inject);
            let mut tokens = vec![rx];
            tokens.extend(tx);
            let done = self.wait(&tokens);
            self.check_received(&done[0], their_seq, len, their_tag, their_data);
        } else {
            let got = self.wait(&[rx]);
            self.check_received(&got[0], their_seq, len, their_tag, their_data);
            let tx = self.send(my_seq, payload(my_seq, len), my_tag, my_data, inject);
            self.wait(&tx.into_iter().collect::<Vec<_>>());
        }
    }

    /// The exchange both processes run, in lockstep.
    fn exchange(&self, oob: &mut Oob, first: bool) {
        let tagged = self.caps.contains(Caps::TAGGED);
        let mut seq = 0;
        for len in self.sizes() {
            for (tagged, with_data, inject) in [
                (false, false, false),
                (false, true, false),
                (false, false, true),
                (tagged, false, false),
                (tagged, true, true),
            ] {
                self.round(oob, first, seq, len, tagged, with_data, inject);
                seq += 2;
            }
        }
        assert_eq!(self.ep.in_flight(), 0, "{}: operations left in flight", self.case.name());
    }
}

/// The test side of a case.
fn run(case_name: &str) {
    let case = Case::named(case_name).expect("a case of the matrix");
    if !case.provider_offered() {
        eprintln!("skipped: fi_getinfo does not offer the {} provider on this machine", case.provider);
        return;
    }
    let listener = Oob::listener();
    let child = spawn_peer("client", &case, &listener);
    let mut oob = Oob::accept(&listener);
    let caps = caps_for(&case);
    eprintln!("{}: {caps:?}", case.name());
    let session = Session::open(case, caps, &mut oob, true);
    session.exchange(&mut oob, true);
    oob.send(b"done");
    oob.expect("done");
    wait_peer(child);
}

/// The peer side: runs only in the spawned process.
#[test]
fn peer_process() {
    let Some((_role, case, port)) = peer_role() else { return };
    let mut oob = Oob::connect(port);
    let session = Session::open(case, caps_for(&case), &mut oob, false);
    session.exchange(&mut oob, false);
    oob.expect("done");
    oob.send(b"done");
}

#[test]
fn tcp_msg() {
    run("tcp/msg");
}

#[test]
fn tcp_rxm_rdm() {
    run("tcp;ofi_rxm/rdm");
}

#[test]
fn udp_dgram() {
    run("udp/dgram");
}

#[test]
fn udp_rxd_rdm() {
    run("udp;ofi_rxd/rdm");
}

#[test]
fn sockets_msg() {
    run("sockets/msg");
}

#[test]
fn sockets_rdm() {
    run("sockets/rdm");
}

#[test]
fn sockets_dgram() {
    run("sockets/dgram");
}

#[test]
fn shm_rdm() {
    run("shm/rdm");
}

#[test]
fn net_msg() {
    run("net/msg");
}

#[test]
fn net_rdm() {
    run("net/rdm");
}
