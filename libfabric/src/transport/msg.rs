//! The connection-oriented transport: MSG endpoints, listen/accept/connect,
//! graceful shutdown and peer-closed detection.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use libfabric_sys::enums::{EpType, Errno};
use libfabric_sys::flags::Caps;
use tokio::sync::watch;
use tracing::Instrument;

use crate::av::Address;
use crate::driver::{AsyncEndpoint, OpError};
use crate::ep::{Bindings, Endpoint};
use crate::eq::{Event, EventQueue};
use crate::error::Error;
use crate::ops::Buf;
use crate::pep::PassiveEndpoint;

use super::events::AsyncEq;
use super::stack::{discover, Place, Stack};
use super::{bounded, timed_out, TransportConfig, TransportError};

/// After the peer closed, how long a receive still waits for a completion
/// that was already on its way (data sent before the close is not lost).
const CLOSE_GRACE: Duration = Duration::from_millis(200);

/// Listens for connections (`fi_listen` on a passive endpoint).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use libfabric::transport::{Listener, TransportConfig};
/// use libfabric::Buf;
/// let listener = Listener::bind(TransportConfig::new("tcp"), "127.0.0.1", 7100)?;
/// let conn = listener.accept().await?;
/// let msg = conn.recv(Buf::zeroed(4096)).await?;
/// conn.send(msg).await?; // echo
/// # Ok(()) }
/// ```
pub struct Listener {
    config: TransportConfig,
    events: AsyncEq,
    pep: PassiveEndpoint,
    stack: Stack,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener").field("provider", &self.config.provider).finish()
    }
}

impl Listener {
    /// Listens on `host:port` with `config.provider`'s MSG endpoints; needs a
    /// tokio runtime.
    pub fn bind(config: TransportConfig, host: &str, port: u16) -> Result<Listener, TransportError> {
        let config = TransportConfig { node: Some(host.to_string()), ..config };
        let service = port.to_string();
        let info = discover(&config, EpType::MSG, Caps::MSG, Place::Listening(&service))?;
        let stack = Stack::open(info)?;
        let eq = EventQueue::open(&stack.fabric)?;
        let pep = PassiveEndpoint::listen(&stack.fabric, &stack.info, &eq)?;
        Ok(Listener { config, events: AsyncEq::new(eq, None), pep, stack })
    }

    /// The address it listens on.
    pub fn name(&self) -> Result<Vec<u8>, Error> {
        self.pep.name()
    }

    /// Waits for the next connection request and accepts it.
    pub async fn accept(&self) -> Result<Connection, TransportError> {
        let info = loop {
            match self.events.next().await? {
                Event::ConnectionRequest { info, .. } => break info,
                other => tracing::debug!(?other, "listener: event ignored"),
            }
        };
        let driver = self.stack.driver(&self.config)?;
        let eq = EventQueue::open(&self.stack.fabric)?;
        let ep = Endpoint::open(
            &self.stack.domain,
            &info,
            Bindings { cq: driver.completion_queue(), av: None, eq: Some(&eq), tx_cq: None },
        )?;
        ep.accept(&[])?;
        Connection::established(self.config.clone(), ep, driver, eq, None).await
    }
}

/// A connected MSG endpoint. Cloning gives another handle to the same
/// connection.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<ConnInner>,
}

struct ConnInner {
    ep: AsyncEndpoint,
    config: TransportConfig,
    /// Becomes `true` when the peer closes (`FI_SHUTDOWN`) or the connection fails.
    closed: watch::Receiver<bool>,
    watcher: tokio::task::JoinHandle<()>,
    /// Every operation of the connection runs in it.
    span: tracing::Span,
    _stack: Option<Stack>,
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("ep", &self.inner.ep).field("closed", &self.is_closed()).finish()
    }
}

impl Connection {
    /// Connects to a [`Listener`] at `host:port`.
    pub async fn connect(config: TransportConfig, host: &str, port: u16) -> Result<Connection, TransportError> {
        let info = discover(&config, EpType::MSG, Caps::MSG, Place::Toward(host, &port.to_string()))?;
        let stack = Stack::open(info)?;
        let driver = stack.driver(&config)?;
        let eq = EventQueue::open(&stack.fabric)?;
        let ep = Endpoint::open(
            &stack.domain,
            &stack.info,
            Bindings { cq: driver.completion_queue(), av: None, eq: Some(&eq), tx_cq: None },
        )?;
        ep.connect(None, &[])?;
        Connection::established(config, ep, driver, eq, Some(stack)).await
    }

    /// Waits for `FI_CONNECTED`, then watches the queue for the peer closing.
    async fn established(
        config: TransportConfig,
        ep: Endpoint,
        driver: crate::driver::Driver,
        eq: EventQueue,
        stack: Option<Stack>,
    ) -> Result<Connection, TransportError> {
        let events = AsyncEq::new(eq, Some(driver.shared.gate.clone()));
        match tokio::time::timeout(config.op_timeout, events.next()).await {
            Err(_) => return Err(timed_out("fi_connect").into()),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(Event::Connected { .. })) => {}
            Ok(Ok(other)) => {
                return Err(Error::InvalidArgument {
                    call: "fi_connect",
                    reason: format!("unexpected event {other:?}"),
                }
                .into())
            }
        }
        let (tx, closed) = watch::channel(false);
        let span = tracing::debug_span!("connection", provider = %config.provider);
        tracing::debug!(parent: &span, "connected");
        let watcher = tokio::spawn(
            async move {
                loop {
                    match events.next().await {
                        Ok(Event::Shutdown { .. }) => break,
                        Ok(other) => tracing::debug!(?other, "connection: event ignored"),
                        Err(error) => {
                            tracing::debug!(%error, "connection: error event");
                            break;
                        }
                    }
                }
                tracing::debug!("closed by the peer");
                let _ = tx.send(true);
            }
            .instrument(span.clone()),
        );
        driver.spawn();
        let ep = AsyncEndpoint::new(ep, driver)?;
        Ok(Connection { inner: Arc::new(ConnInner { ep, config, closed, watcher, span, _stack: stack }) })
    }

    /// True once the peer has closed the connection (or it failed).
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// The async endpoint underneath.
    pub fn endpoint(&self) -> &AsyncEndpoint {
        &self.inner.ep
    }

    /// Sends `buf`; returns it when the provider is done with it.
    pub async fn send(&self, buf: Buf) -> Result<Buf, OpError> {
        if self.is_closed() {
            return Err(OpError { error: peer_closed("fi_send"), kind: None, buf: Some(buf) });
        }
        let op = self.inner.ep.send(buf, Address::UNSPEC);
        self.until_closed("fi_send", op).await
    }

    /// Receives the next message into `buf` (cut to its length).
    pub async fn recv(&self, buf: Buf) -> Result<Buf, OpError> {
        let op = self.inner.ep.recv(buf, Address::UNSPEC);
        self.until_closed("fi_recv", op).await
    }

    /// Awaits `op` within the operation timeout; if the peer closes first,
    /// gives a completion already on its way a moment, then fails.
    async fn until_closed(
        &self,
        call: &'static str,
        op: impl std::future::Future<Output = Result<crate::Completion<crate::TaggedEntry>, OpError>>,
    ) -> Result<Buf, OpError> {
        let mut closed = self.inner.closed.clone();
        let limit = self.inner.config.op_timeout;
        tokio::pin!(op);
        let work = async {
            tokio::select! {
                biased;
                done = &mut op => return done.map(|c| c.buf),
                _ = closed.wait_for(|c| *c) => {}
            }
            match tokio::time::timeout(CLOSE_GRACE, &mut op).await {
                Ok(done) => done.map(|c| c.buf),
                Err(_) => Err(OpError { error: peer_closed(call), kind: None, buf: None }),
            }
        };
        bounded(call, limit, self.inner.span.clone(), work).await
    }

    /// Closes the connection gracefully (`fi_shutdown`): the peer sees it closed.
    pub fn shutdown(&self) -> Result<(), Error> {
        self.inner.ep.endpoint().shutdown()
    }
}

fn peer_closed(call: &'static str) -> Error {
    Error::Call { call, errno: Errno::from_raw(libc::ECONNRESET) }
}
