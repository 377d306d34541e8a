//! One side of a two-process test: fabric, domain, completion queue and an
//! endpoint paired with the peer process (connected for MSG, addresses
//! swapped for RDM and DGRAM), plus bounded waiting for completions.

use std::time::Instant;

use libfabric::{
    Address, AddressVector, AvType, Bindings, Caps, Completion, CompletionQueue, CqConfig, Domain, Endpoint, EpType,
    Event, EventQueue, Fabric, Info, OpKind, PassiveEndpoint, Read, TaggedEntry, Unsync,
};

use crate::{Case, Oob, DEADLINE};

/// The completion queue type of these tests.
pub type Cq = CompletionQueue<TaggedEntry, Unsync>;
/// The endpoint type of these tests.
pub type Ep = Endpoint<TaggedEntry, Unsync>;

/// Both sides of a case: the endpoint and what it needs.
pub struct Session {
    pub case: Case,
    pub info: Info,
    pub cq: Cq,
    pub ep: Ep,
    pub av: Option<AddressVector<Unsync>>,
    /// The peer, as this side addresses it.
    pub peer: Address,
    /// The caps actually granted (tagged, source).
    pub caps: Caps,
    /// Completions read while driving progress for a retried post.
    pub pending: std::cell::RefCell<Vec<(Completion<TaggedEntry>, Address)>>,
    // Kept open for the session's lifetime (MSG endpoints).
    _eq: Option<EventQueue>,
    _pep: Option<PassiveEndpoint>,
    pub domain: Domain<Unsync>,
    pub fabric: Fabric,
}

impl Session {
    /// Opens the endpoint and pairs it with the peer over `oob`. The test side
    /// listens (MSG) or goes first (RDM/DGRAM); the peer side connects.
    pub fn open(case: Case, caps: Caps, oob: &mut Oob, listener_side: bool) -> Session {
        let info = case.local_info(caps);
        let fabric = Fabric::open(&info).expect("fi_fabric");
        let domain: Domain<Unsync> = Domain::open(&fabric, &info).expect("fi_domain");
        let cq: Cq = CompletionQueue::open(&domain, &CqConfig::default()).expect("fi_cq_open");
        if case.ep_type == EpType::MSG {
            let eq = EventQueue::open(&fabric).expect("fi_eq_open");
            let (ep, pep) = if listener_side {
                let pep = PassiveEndpoint::listen(&fabric, &info, &eq).expect("listen");
                oob.send(&pep.name().expect("pep name"));
                let request = match wait_event(&eq) {
                    Event::ConnectionRequest { info, data } => {
                        assert_eq!(data, b"hello from the peer", "connection request data");
                        info
                    }
                    other => panic!("{}: expected a connection request, got {other:?}", case.name()),
                };
                let ep = Endpoint::open(&domain, &request, Bindings { cq: &cq, av: None, eq: Some(&eq), tx_cq: None })
                    .expect("fi_endpoint (accepted)");
                ep.accept(b"welcome").expect("fi_accept");
                (ep, Some(pep))
            } else {
                let server = oob.recv();
                let ep = Endpoint::open(&domain, &info, Bindings { cq: &cq, av: None, eq: Some(&eq), tx_cq: None })
                    .expect("fi_endpoint");
                ep.connect(Some(&server), b"hello from the peer").expect("fi_connect");
                (ep, None)
            };
            match wait_event(&eq) {
                Event::Connected { data, .. } if !listener_side => assert_eq!(data, b"welcome", "accept data"),
                Event::Connected { .. } => {}
                other => panic!("{}: expected FI_CONNECTED, got {other:?}", case.name()),
            }
            return Session {
                case,
                info,
                cq,
                ep,
                av: None,
                peer: Address::UNSPEC,
                caps,
                pending: Default::default(),
                _eq: Some(eq),
                _pep: pep,
                domain,
                fabric,
            };
        }
        let av = AddressVector::open(&domain, AvType::UNSPEC).expect("fi_av_open");
        let ep = Endpoint::open(&domain, &info, Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None })
            .expect("fi_endpoint");
        let name = ep.name().expect("fi_getname");
        let theirs = if listener_side {
            oob.send(&name);
            oob.recv()
        } else {
            let theirs = oob.recv();
            oob.send(&name);
            theirs
        };
        let peer = av.insert_one(&theirs).expect("fi_av_insert");
        Session {
            case,
            info,
            cq,
            ep,
            av: Some(av),
            peer,
            caps,
            pending: Default::default(),
            _eq: None,
            _pep: None,
            domain,
            fabric,
        }
    }

    /// Polls until completions with each of `tokens` arrived; returns them in
    /// token order. Fails on an error completion or after the deadline. With
    /// `FI_SOURCE`, every receive must come from the peer's address.
    pub fn wait(&self, tokens: &[u64]) -> Vec<Completion<TaggedEntry>> {
        let start = Instant::now();
        let mut got: Vec<Completion<TaggedEntry>> = Vec::new();
        let with_source = self.caps.contains(Caps::SOURCE);
        loop {
            for (c, from) in self.pending.borrow_mut().drain(..) {
                assert!(tokens.contains(&c.token), "{}: unexpected completion {c:?}", self.case.name());
                if with_source && matches!(c.kind, OpKind::Recv | OpKind::TaggedRecv) {
                    assert_eq!(from, self.peer, "{}: source address of a receive", self.case.name());
                }
                got.push(c);
            }
            if got.len() >= tokens.len() {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "{}: completions {tokens:?} did not all arrive", self.case.name());
            self.progress();
        }
        got.sort_by_key(|c| tokens.iter().position(|t| *t == c.token));
        got
    }

    /// Reads one completion, if any, into `pending` (which also drives the
    /// provider's progress).
    pub fn progress(&self) {
        let (read, from) = if self.caps.contains(Caps::SOURCE) {
            self.cq.poll_from().expect("fi_cq_readfrom")
        } else {
            (self.cq.poll().expect("fi_cq_read"), Address::NOTAVAIL)
        };
        match read {
            Read::Op(c) => self.pending.borrow_mut().push((c, from)),
            Read::Empty => {}
            Read::Raw(e) => panic!("{}: completion of an unknown context {e:?}", self.case.name()),
            Read::Message { token, .. } => panic!("{}: no multi-receive was posted (token {token})", self.case.name()),
            Read::Failed { error, .. } => panic!("{}: {error}", self.case.name()),
            Read::Fixed { token, .. } | Read::FixedFailed { token, .. } => {
                panic!("{}: no fixed buffer was posted (token {token})", self.case.name())
            }
        }
    }

    /// Retries a post while it says `FI_EAGAIN` (queue full, or a connection
    /// still being set up), driving progress in between; bounded.
    pub fn retry<T>(&self, what: &str, mut post: impl FnMut() -> Result<T, libfabric::Error>) -> T {
        let start = Instant::now();
        loop {
            match post() {
                Ok(v) => return v,
                Err(e) if e.is_again() && start.elapsed() < DEADLINE => self.progress(),
                Err(e) => panic!("{}: {what}: {e}", self.case.name()),
            }
        }
    }
}

/// Waits for one event queue event (bounded).
pub fn wait_event(eq: &EventQueue) -> Event {
    let start = Instant::now();
    loop {
        if let Some(e) = eq.read_timeout(std::time::Duration::from_millis(100)).expect("fi_eq_sread") {
            return e;
        }
        assert!(start.elapsed() < DEADLINE, "no event within {DEADLINE:?}");
    }
}
