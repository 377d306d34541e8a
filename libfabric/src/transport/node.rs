//! The connectionless transport: an RDM endpoint, its peers, messages,
//! requests and handlers.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use libfabric_sys::enums::{AvType, EpType};
use libfabric_sys::flags::Caps;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::av::{Address, AddressVector};
use crate::cq::Entry;
use crate::driver::credits::Credits;
use crate::driver::{AsyncEndpoint, OpError};
use crate::ep::{Bindings, Endpoint};
use crate::error::Error;
use crate::ops::Buf;

use super::incoming::Incoming;
use super::peer_map::PeerMap;
use super::stack::{discover, Place, Stack};
use super::{bounded, exchange, timed_out, wire, TransportConfig, TransportError};

/// A peer as this node knows it: its handle in this node's address vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl PeerId {
    /// The sender a one-way message names (its remote CQ data; `u64::MAX`,
    /// no peer, when it carried none).
    pub(super) fn of_message(entry: &crate::TaggedEntry) -> PeerId {
        PeerId(entry.data().unwrap_or(u64::MAX))
    }
}

/// An RDM endpoint with its peers. Cloning gives another handle to the same node.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use libfabric::transport::{Node, TransportConfig};
/// use libfabric::Buf;
/// let node = Node::open(TransportConfig::new("tcp;ofi_rxm").node("127.0.0.1"))?;
/// let server = node.dial("127.0.0.1:7000").await?;      // the other program runs accept_peer
/// let reply = server.request(Buf::from(&b"ping"[..]), Buf::zeroed(64)).await?;
/// println!("{:?}", &reply.answer[..]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    // Before `ep`: the endpoint holds the vector too, so the vector closes
    // with the endpoint, while the driver is kept out of libfabric (a queue
    // read racing the vector's close crashes tcp;ofi_rxm).
    av: AddressVector,
    ep: AsyncEndpoint,
    config: TransportConfig,
    name: Vec<u8>,
    next_request: AtomicU64,
    /// Whether requests post their answer's receive before they leave (see
    /// [`Peer::request`]). From the start on udp;ofi_rxd: answers that come
    /// in before their receives now and then make it lose another answer,
    /// or loop for good in `fi_cq_read` (tests/libfabric-known-issues.md,
    /// 10). Elsewhere once [`Node::serve`] has posted its request receives,
    /// which ignore the id bits.
    receive_first: AtomicBool,
    /// The peers added to the address vector, with their credits (shared by
    /// every handle to a peer) and this node's handle there. Only these may
    /// be sent to: a handle read off the wire is checked here first, since
    /// libfabric would read out of bounds for one it never issued.
    peers: Mutex<PeerMap<(Arc<Credits>, u64)>>,
    /// Answered requests' buffers, for the next requests to be received
    /// into ([`Node::serve`]): a served request allocates nothing.
    spare: Mutex<Vec<Buf>>,
    // Last: the endpoint and queue close before the domain and fabric.
    _stack: Stack,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node").field("provider", &self.inner.config.provider).field("ep", &self.inner.ep).finish()
    }
}

/// A peer of a [`Node`]: where messages and requests go.
#[derive(Clone)]
pub struct Peer {
    node: Node,
    id: PeerId,
    addr: Address,
    /// This node's handle in the peer's address vector: sent with every
    /// message so the peer knows who it is from.
    me_there: u64,
    credits: Arc<Credits>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer").field("id", &self.id).field("me_there", &self.me_there).finish()
    }
}

/// A request as a handler of [`Node::serve`] sees it.
#[derive(Debug)]
pub struct Request {
    /// Who sent it.
    pub peer: PeerId,
    /// The bytes received.
    pub body: Buf,
}

impl Node {
    /// Opens an RDM endpoint of `config.provider` (untagged and tagged messages, remote CQ
    /// data) with its address vector and a driver task; needs a tokio runtime.
    pub fn open(config: TransportConfig) -> Result<Node, TransportError> {
        let info = discover(&config, EpType::RDM, Caps::MSG | Caps::TAGGED, Place::Local)?;
        let stack = Stack::open(info)?;
        let driver = stack.driver(&config)?;
        let av = AddressVector::open(&stack.domain, AvType::UNSPEC)?;
        let ep = Endpoint::open(
            &stack.domain,
            &stack.info,
            Bindings { cq: driver.completion_queue(), av: Some(&av), eq: None, tx_cq: None },
        )?;
        let name = ep.name()?;
        driver.spawn();
        let ep = AsyncEndpoint::new(ep, driver)?;
        tracing::debug!(provider = %config.provider, "transport node open");
        let receive_first = stack.info.provider().ends_with("ofi_rxd");
        Ok(Node {
            inner: Arc::new(NodeInner {
                av,
                ep,
                config,
                name,
                next_request: AtomicU64::new(1),
                receive_first: AtomicBool::new(receive_first),
                peers: Mutex::new(PeerMap::default()),
                spare: Mutex::new(Vec::new()),
                _stack: stack,
            }),
        })
    }

    /// This node's fabric address, for peers to insert.
    pub fn name(&self) -> &[u8] {
        &self.inner.name
    }

    /// The configuration.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// The async endpoint underneath, for operations the transport does not
    /// wrap (RMA, atomics). Its untagged messages and its tags with either of
    /// the two top bits set are the transport's: an untagged receive posted
    /// here takes one-way messages meant for [`recv`](Self::recv), and an
    /// untagged send arrives there as a message from whichever peer its
    /// remote CQ data names.
    pub fn endpoint(&self) -> &AsyncEndpoint {
        &self.inner.ep
    }

    /// Adds a peer by its fabric address; `me_there` is this node's handle
    /// in the peer's address vector (what the exchange reports).
    pub fn add_peer(&self, name: &[u8], me_there: u64) -> Result<Peer, TransportError> {
        let addr = self.inner.av.insert_one(name)?;
        Ok(self.peer_at(addr, me_there))
    }

    fn peer_at(&self, addr: Address, me_there: u64) -> Peer {
        let id = PeerId(addr.raw());
        let limit = self.inner.config.peer_credits.max(1);
        let mut peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        let entry = peers.entry(id).or_insert_with(|| (Arc::new(Credits::new(limit)), me_there));
        entry.1 = me_there;
        Peer { node: self.clone(), id, addr, me_there, credits: entry.0.clone() }
    }

    /// Waits for a program dialing `listener` ([`dial`](Self::dial)) and
    /// swaps addresses with it. The wait for a dialer is unbounded (that is
    /// what a server does); the exchange itself is bounded by the operation
    /// timeout.
    pub async fn accept_peer(&self, listener: &TcpListener) -> Result<Peer, TransportError> {
        let (mut stream, from) = listener.accept().await?;
        let exchange = async {
            let theirs = exchange::read_name(&mut stream).await?;
            let addr = self.inner.av.insert_one(&theirs)?;
            exchange::write_name(&mut stream, &self.inner.name).await?;
            exchange::write_handle(&mut stream, addr.raw()).await?;
            let me_there = exchange::read_handle(&mut stream).await?;
            let peer = self.peer_at(addr, me_there);
            // Only now may the dialer send: a message from a peer not yet
            // registered would be refused.
            exchange::write_ready(&mut stream).await?;
            tracing::debug!(%from, peer = addr.raw(), "peer accepted");
            Ok(peer)
        };
        let limit = self.inner.config.op_timeout;
        tokio::time::timeout(limit, exchange).await.map_err(|_| timed_out("accept_peer").into()).and_then(|r| r)
    }

    /// Finds the program that accepts peers at `server` and swaps addresses.
    pub async fn dial(&self, server: impl ToSocketAddrs) -> Result<Peer, TransportError> {
        let limit = self.inner.config.op_timeout;
        let work = async {
            let mut stream = TcpStream::connect(server).await?;
            stream.set_nodelay(true)?;
            exchange::write_name(&mut stream, &self.inner.name).await?;
            let theirs = exchange::read_name(&mut stream).await?;
            let me_there = exchange::read_handle(&mut stream).await?;
            let addr = self.inner.av.insert_one(&theirs)?;
            exchange::write_handle(&mut stream, addr.raw()).await?;
            exchange::read_ready(&mut stream).await?;
            Ok(self.peer_at(addr, me_there))
        };
        tokio::time::timeout(limit, work).await.map_err(|_| timed_out("dial").into()).and_then(|r| r)
    }

    /// The peer this node knows as `id` (from a [`Request`] or
    /// [`recv`](Self::recv)); `None` if no peer was added with that handle.
    pub fn peer(&self, id: PeerId) -> Option<Peer> {
        let peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        let (credits, me_there) = peers.get(&id)?;
        let addr = self.inner.av.handle(id.0);
        Some(Peer { node: self.clone(), id, addr, me_there: *me_there, credits: credits.clone() })
    }

    /// Receives the next one-way message from any peer into `buf`, within
    /// the operation timeout. The [`PeerId`] is the sender's word (its
    /// remote CQ data); [`peer`](Self::peer) says whether it names a peer
    /// this node added.
    pub async fn recv(&self, buf: Buf) -> Result<(PeerId, Buf), OpError> {
        let ep = &self.inner.ep;
        let done =
            bounded("fi_recv", self.inner.config.op_timeout, tracing::Span::none(), ep.recv(buf, Address::UNSPEC))
                .await?;
        Ok((PeerId::of_message(&done.entry), done.buf))
    }

    /// The one-way messages reaching this node as they arrive, with `depth`
    /// receives of `size` bytes kept posted (at least one, and at most a
    /// quarter of the endpoint's receive credits: the rest stay for
    /// [`serve`](Self::serve), [`recv`](Self::recv) and the answers to this
    /// node's requests). For a steady stream of messages; see [`Incoming`].
    pub fn incoming(&self, depth: usize, size: usize) -> Incoming<'_> {
        let most = (self.inner.ep.credits().1 / 4).max(1);
        Incoming::new(self, depth.clamp(1, most), size)
    }
}

impl Node {
    /// From now on this node serves: see [`Peer::request`].
    pub(super) fn mark_serving(&self) {
        self.inner.receive_first.store(true, Ordering::Relaxed);
    }

    /// A buffer to receive a request into: an answered request's, or a new one.
    pub(super) fn request_buffer(&self) -> Buf {
        let spare = self.inner.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        spare.unwrap_or_else(|| Buf::zeroed(self.inner.config.max_message))
    }

    /// Keeps `buf` for a later request if it can take any request and
    /// fewer than a peer's credits are kept already.
    pub(super) fn recycle(&self, buf: Buf) {
        if !self.fits_any_request(&buf) {
            return;
        }
        let mut spare = self.inner.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < self.inner.config.peer_credits {
            spare.push(buf);
        }
    }

    /// Whether a request of any size may be received into `buf`.
    pub(super) fn fits_any_request(&self, buf: &Buf) -> bool {
        // A registered buffer's access was chosen for the operation it
        // was registered for (a send); a receive needs its own.
        buf.memory_region().is_none() && buf.capacity() == self.inner.config.max_message
    }
}

/// What [`Peer::request`] gives back: the answer, and the request's own
/// buffer, the caller's again for the next request.
#[derive(Debug)]
pub struct Reply {
    /// The answer, cut to its length.
    pub answer: Buf,
    /// The buffer the request was sent from.
    pub request: Buf,
}

/// A posted receive that is detached, not cancelled, if dropped.
struct Detached<'a>(Option<crate::driver::Op<'a, crate::TaggedEntry>>);

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        if let Some(op) = self.0.take() {
            op.detach();
        }
    }
}

impl Peer {
    /// The span a peer's operations run in: the node's provider and the peer.
    fn span(&self) -> tracing::Span {
        tracing::debug_span!("peer", provider = %self.node.inner.config.provider, peer = self.id.0)
    }

    /// This peer's handle in the node's address vector.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The peer's address in the node's address vector, for operations the
    /// transport does not wrap, posted on [`Node::endpoint`] (RMA, atomics).
    pub fn address(&self) -> Address {
        self.addr
    }

    /// The node's handle at the peer (sent with each message).
    pub fn me_there(&self) -> u64 {
        self.me_there
    }

    /// Sends a one-way message, received by the peer's [`Node::recv`] or
    /// [`Node::incoming`]; returns the buffer once the provider is done with
    /// it. Always a send, never an inject, however small: the send holds one
    /// of the peer's credits until it completes, which is what slows a
    /// sender down to a slow receiver (with injects, udp;ofi_rxd took
    /// messages faster than it could deliver them, and later sends timed
    /// out).
    pub async fn send(&self, buf: Buf) -> Result<Buf, OpError> {
        // Untagged (see `wire`): its receives are not queued behind the
        // request receives a serving node keeps posted.
        let node = &self.node.inner;
        let work = async {
            let _credit = self.credits.take().await;
            Ok(node.ep.send_data(buf, self.me_there, self.addr).await?.buf)
        };
        bounded("fi_senddata", node.config.op_timeout, self.span(), work).await
    }

    /// A tagged message by inject, if it fits and the provider has room
    /// (see [`AsyncEndpoint::try_tinject_data`]).
    pub(super) fn try_inject_tagged(&self, data: &[u8], tag: u64) -> Result<bool, Error> {
        self.node.inner.ep.try_tinject_data(data, self.me_there, self.addr, tag)
    }

    pub(super) async fn send_tagged(&self, buf: Buf, tag: u64) -> Result<Buf, OpError> {
        let node = &self.node.inner;
        // A small message goes by inject: copied at once, nothing in flight
        // to hold a credit or wait for.
        match self.try_inject_tagged(&buf, tag) {
            Ok(true) => return Ok(buf),
            Ok(false) => {}
            Err(error) => return Err(OpError { error, kind: None, buf: Some(buf) }),
        }
        let work = async {
            let _credit = self.credits.take().await;
            Ok(node.ep.tsend_data(buf, self.me_there, self.addr, tag).await?.buf)
        };
        bounded("fi_tsenddata", node.config.op_timeout, self.span(), work).await
    }

    /// Sends `body` as a request and receives the answer into `response`
    /// (cut to its length), within the operation timeout; both buffers come
    /// back in the [`Reply`], so a loop of requests allocates nothing. The request holds
    /// one of the peer's credits until its answer is in, so a peer never has
    /// more than [`TransportConfig::peer_credits`] requests of this node to
    /// hold at once. A request within the provider's inject size goes by
    /// `fi_tinjectdata`, so only its answer is waited for.
    ///
    /// Such a request leaves before its answer's receive is posted, unless
    /// the node serves too: posting then happens while the request
    /// travels, not between the previous answer and this request (on shm
    /// about 80 ns less a round trip, the largest single piece). The
    /// receive is in place long before the answer can come back (a round
    /// trip), and an answer that came first would wait in the provider
    /// until it is. On udp;ofi_rxd every node posts first: answers that
    /// waited there make it lose a message, or hang in `fi_cq_read`, now
    /// and then. A serving node posts first too: its request receives
    /// leave shm's receive entries ignoring the id bits, and shm then
    /// matches an answer that waited with any answer receive
    /// (tests/libfabric-known-issues.md, 6).
    ///
    /// A plain function returning the future, not an `async fn`: the
    /// future is then `bounded`'s own, not one more layer around it that
    /// copies it in (about 80 instructions of `memcpy` a request). Inlined
    /// into the caller (not being generic, it would not be otherwise), which
    /// then writes the future's fields where it awaits it: the client's turn
    /// 164.6 → 151.7 ns on shm (`cargo xtask turns`, 7 runs).
    #[inline]
    pub fn request(&self, body: Buf, response: Buf) -> impl Future<Output = Result<Reply, OpError>> + Send + '_ {
        let node = &self.node.inner;
        let id = node.next_request.fetch_add(1, Ordering::Relaxed);
        let limit = node.config.op_timeout;
        let work = async move {
            let _credit = self.credits.take().await;
            // The receive's credit is taken before the request leaves, so
            // nothing between the two can wait (and be dropped): a request
            // out without its answer's receive would leave the answer in
            // the provider for good (unless the provider's queue is full,
            // which `post_trecv` waits out). A serving node posts first
            // (see above), as does every node on udp;ofi_rxd and one
            // without a free receive credit.
            let ahead = if node.receive_first.load(Ordering::Relaxed) { None } else { node.ep.try_reserve_recv() };
            // A small request goes by inject: copied at once, no send
            // completion to wait for.
            let injected = match &ahead {
                Some(_) => match self.try_inject_tagged(&body, wire::request(id)) {
                    Ok(injected) => injected,
                    Err(error) => return Err(OpError { error, kind: None, buf: Some(body) }),
                },
                None => false,
            };
            let answer = match ahead {
                Some(credit) => credit.post_trecv(response, Address::UNSPEC, wire::response(id), 0),
                None => node.ep.post_trecv(response, Address::UNSPEC, wire::response(id), 0),
            };
            let answer = answer.await?;
            let sent = if injected {
                body
            } else {
                match self.try_inject_tagged(&body, wire::request(id)) {
                    Ok(true) => body,
                    Ok(false) => node.ep.tsend_data(body, self.me_there, self.addr, wire::request(id)).await?.buf,
                    Err(error) => return Err(OpError { error, kind: None, buf: Some(body) }),
                }
            };
            // The request is out, so its answer will come: if this future is
            // dropped from here on, the receive stays posted and takes the
            // answer, which would otherwise sit in the provider unexpected
            // for good (and, on udp;ofi_rxd, hold up the peer's later answers).
            let mut answer = Detached(Some(answer));
            let got = answer.0.as_mut().expect("the answer's receive").await;
            answer.0 = None;
            let got = got?;
            // A provider that matched another tag would hand us someone
            // else's answer: refuse it rather than return wrong data.
            match got.entry.tag() {
                Some(tag) if tag == wire::response(id) => Ok(Reply { answer: got.buf, request: sent }),
                other => Err(OpError {
                    error: Error::InvalidArgument {
                        call: "fi_trecv",
                        reason: format!(
                            "the answer to request {id} came with tag {other:x?}, not {:x}",
                            wire::response(id)
                        ),
                    },
                    kind: Some(got.kind),
                    buf: Some(got.buf),
                }),
            }
        };
        bounded("request", limit, self.span(), work)
    }
}
