//! Active endpoints (MSG, RDM, DGRAM): messaging, tagged messaging,
//! connections.
//!
//! Safe posting methods take a [`Buf`] by value and return it with the
//! operation's completion (from [`CompletionQueue::poll`]), so a buffer cannot
//! be read, written or freed while libfabric may touch it. The `*_raw` methods
//! take pointers and contexts as C does, with the contract written on each.

use std::fmt;
use std::marker::PhantomData;
use std::ptr;
use std::sync::Arc;

use libfabric_sys::enums::{EpOption, OptLevel, TriggerEvent};
use libfabric_sys::flags::{BindFlags, MrAccess, MrMode, OpFlags};
use libfabric_sys::{
    fi_accept, fi_addr_t, fi_cancel, fi_connect, fi_enable, fi_endpoint, fi_ep_bind, fi_getname, fi_getopt, fi_getpeer,
    fi_inject, fi_injectdata, fi_msg, fi_msg_tagged, fi_recv, fi_recvmsg, fi_recvv, fi_send, fi_senddata, fi_sendmsg,
    fi_sendv, fi_setopt, fi_shutdown, fi_srx_context, fi_stx_context, fi_tinject, fi_tinjectdata, fi_trecv,
    fi_trecvmsg, fi_trigger_threshold, fi_triggered_context, fi_triggered_context__trigger, fi_tsend, fi_tsenddata,
    fi_tsendmsg, fid, fid_ep, fid_stx,
};

use crate::av::{Address, AddressVector, AvInner};
use crate::cntr::{CntrInner, Counter};
use crate::cq::{CompletionQueue, CqInner, Entry, TaggedEntry};
use crate::domain::{Domain, DomainInner};
use crate::eq::EventQueue;
use crate::error::{check, Error, Result};
use crate::fid::{Object, ThreadModel, ThreadSafe, Types};
use crate::info::Info;
use crate::mr::MemoryRegion;
use crate::ops::{Buf, OpKind, OpTable, PostError};

pub(crate) struct EpInner {
    // Fields drop in order: the endpoint is closed before anything it uses.
    pub(crate) object: Object<fid_ep>,
    pub(crate) ops: Arc<OpTable>,
    /// The completion queue (none for a shared receive context, whose
    /// completions arrive on the queues of the endpoints sharing it): of
    /// both directions, or of receives when `tx_cq` is set.
    pub(crate) cq: Option<Arc<CqInner>>,
    /// The queue of transmit completions, when it is not `cq`.
    pub(crate) tx_cq: Option<Arc<CqInner>>,
    /// The bound address vector; its handles are the endpoint's peers.
    av: Option<Arc<AvInner>>,
    _eq: Option<EventQueue>,
    _counters: Vec<Arc<CntrInner>>,
    /// Counters that triggered operations wait on: kept open while this
    /// endpoint may still fire them.
    triggers: std::sync::Mutex<Vec<Arc<CntrInner>>>,
    pub(crate) domain: Arc<DomainInner>,
    pub(crate) info: Info,
    /// Read from `info` once, for the hot path: buffers need a local
    /// registration (`FI_MR_LOCAL`), and the largest inject.
    local_mr: bool,
    inject_size: usize,
    /// What this endpoint uses and must outlive: the scalable endpoint it is
    /// a context of, the shared contexts it is bound to (closed after it).
    _keep: Vec<Arc<dyn std::any::Any + Send + Sync>>,
}

// A triggered operation's context lives in its slot's `fi_context2`.
const _: () = assert!(
    std::mem::size_of::<fi_triggered_context>() <= std::mem::size_of::<libfabric_sys::fi_context2>()
        && std::mem::align_of::<fi_triggered_context>() <= std::mem::align_of::<libfabric_sys::fi_context2>()
);

/// A shared transmit context (`fi_stx_context`): endpoints opened with
/// [`Endpoint::open_shared`] send through it.
pub struct SharedTxContext<M: ThreadModel = ThreadSafe> {
    object: Arc<Object<fid_stx>>,
    _domain: Arc<DomainInner>,
    _model: PhantomData<M::Marker>,
}

impl<M: ThreadModel> fmt::Debug for SharedTxContext<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTxContext").field("raw", &self.object.as_ptr()).finish()
    }
}

impl<M: ThreadModel> SharedTxContext<M> {
    /// Opens a shared transmit context on `domain` with its default attributes.
    pub fn open(domain: &Domain<M>) -> Result<Self> {
        let mut raw = ptr::null_mut();
        // The domain's transmit attributes (a copy: the call takes a mutable pointer).
        let mut attr = domain.info().tx_attr().copied().unwrap_or_default();
        // SAFETY: the domain is open; `attr` is valid for the call.
        check("fi_stx_context", unsafe { fi_stx_context(domain.as_raw(), &mut attr, &mut raw, ptr::null_mut()) })?;
        // SAFETY: fi_stx_context succeeded.
        let object = unsafe { Object::new(raw, "fi_close(stx)") }
            .ok_or(Error::InvalidArgument { call: "fi_stx_context", reason: "returned no context".into() })?;
        Ok(SharedTxContext { object: Arc::new(object), _domain: domain.inner.clone(), _model: PhantomData })
    }
}

/// The objects an endpoint is bound to when it is opened.
#[derive(Debug)]
pub struct Bindings<'a, E: Entry, M: ThreadModel> {
    /// Completions of both directions go here, or those of receives only
    /// when `tx_cq` is given.
    pub cq: &'a CompletionQueue<E, M>,
    /// A queue of its own for transmit completions (`fi_ep_bind` with
    /// `FI_TRANSMIT`; `cq` is then bound with `FI_RECV`), as `fi_pingpong`
    /// binds its two: a wait for a send's completion then never reads past
    /// receives, nor the other way round. `None`: `cq` takes both. Not for
    /// an [`AsyncEndpoint`](crate::driver::AsyncEndpoint), whose driver reads
    /// one queue.
    pub tx_cq: Option<&'a CompletionQueue<E, M>>,
    /// The address vector (RDM and DGRAM endpoints).
    pub av: Option<&'a AddressVector<M>>,
    /// The event queue (MSG endpoints: connection events).
    pub eq: Option<&'a EventQueue>,
}

/// An enabled active endpoint (`fi_endpoint` + binds + `fi_enable`).
pub struct Endpoint<E: Entry = TaggedEntry, M: ThreadModel = ThreadSafe> {
    pub(crate) inner: Arc<EpInner>,
    // `fn() -> E`: the entry type names the format only; the marker decides Send/Sync.
    _types: Types<E, M>,
}

impl<E: Entry, M: ThreadModel> fmt::Debug for Endpoint<E, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("provider", &self.inner.info.provider())
            .field("type", &self.inner.info.ep_type())
            .finish()
    }
}

/// Identifies a posted operation, for [`Endpoint::cancel`]: its slot and the
/// slot's generation, so the id of a finished operation names nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpId {
    /// The endpoint's operation table (its address): an id of another
    /// endpoint names nothing here.
    table: usize,
    index: u32,
    generation: u32,
}

/// True when buffers must be registered before use (`FI_MR_LOCAL`).
fn needs_local_mr(info: &Info) -> bool {
    // FI_LOCAL_MR is the pre-1.5 spelling of FI_MR_LOCAL; old providers still ask for it.
    #[allow(deprecated)]
    let old = info.mode().contains(libfabric_sys::flags::Mode::LOCAL_MR);
    info.mr_mode().contains(MrMode::LOCAL) || old
}

fn post_error(call: &'static str, ret: isize, buf: Buf) -> PostError {
    let error = check(call, ret as i64).err().unwrap_or(Error::InvalidArgument { call, reason: "failed".into() });
    PostError { error, buf }
}

impl<E: Entry, M: ThreadModel> Endpoint<E, M> {
    /// Opens an endpoint for `info` on `domain`, binds it and enables it.
    ///
    /// ```no_run
    /// # fn demo(domain: &libfabric::Domain, info: &libfabric::Info) -> libfabric::Result<()> {
    /// use libfabric::*;
    /// let cq: CompletionQueue = CompletionQueue::open(domain, &CqConfig::default())?;
    /// let av = AddressVector::open(domain, AvType::UNSPEC)?;
    /// let ep = Endpoint::open(domain, info, Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None })?;
    /// println!("my address: {:?}", ep.name()?);
    /// # Ok(()) }
    /// ```
    pub fn open(domain: &Domain<M>, info: &Info, bind: Bindings<'_, E, M>) -> Result<Self> {
        Self::open_with_counters(domain, info, bind, &[])
    }

    /// Like [`open`](Self::open), also binding counters, each for the events
    /// its flags name (`BindFlags::SEND`, `RECV`, `READ`, `WRITE`, `REMOTE_READ`,
    /// `REMOTE_WRITE`).
    pub fn open_with_counters(
        domain: &Domain<M>,
        info: &Info,
        bind: Bindings<'_, E, M>,
        counters: &[(&Counter<M>, BindFlags)],
    ) -> Result<Self> {
        let mut raw = ptr::null_mut();
        // SAFETY: the domain is open and `info` valid for the call.
        check("fi_endpoint", unsafe { fi_endpoint(domain.as_raw(), info.as_ptr(), &mut raw, ptr::null_mut()) })?;
        // SAFETY: fi_endpoint succeeded.
        let object = unsafe { Object::new(raw, "fi_close(endpoint)") }
            .ok_or(Error::InvalidArgument { call: "fi_endpoint", reason: "returned no endpoint".into() })?;
        Self::setup(object, domain, info, bind, counters, BindFlags::TRANSMIT | BindFlags::RECV, None)
    }

    /// Like [`open`](Self::open), also sharing a transmit context and/or a
    /// receive context with other endpoints of the domain. The info must say
    /// so (`ep_attr.tx_ctx_cnt`/`rx_ctx_cnt` = `FI_SHARED_CONTEXT`, set in the
    /// hints). Receives posted on `srx` complete on this endpoint's queue when
    /// a message arrives here.
    pub fn open_shared(
        domain: &Domain<M>,
        info: &Info,
        bind: Bindings<'_, E, M>,
        stx: Option<&SharedTxContext<M>>,
        srx: Option<&Endpoint<E, M>>,
    ) -> Result<Self> {
        let mut raw = ptr::null_mut();
        // SAFETY: the domain is open and `info` valid for the call.
        check("fi_endpoint", unsafe { fi_endpoint(domain.as_raw(), info.as_ptr(), &mut raw, ptr::null_mut()) })?;
        // SAFETY: fi_endpoint succeeded.
        let object = unsafe { Object::new(raw, "fi_close(endpoint)") }
            .ok_or(Error::InvalidArgument { call: "fi_endpoint", reason: "returned no endpoint".into() })?;
        let mut keep: Vec<Arc<dyn std::any::Any + Send + Sync>> = Vec::new();
        if let Some(stx) = stx {
            // SAFETY: both objects are open.
            check("fi_ep_bind(stx)", unsafe { fi_ep_bind(object.as_ptr(), stx.object.fid(), 0) })?;
            keep.push(stx.object.clone());
        }
        if let Some(srx) = srx {
            // SAFETY: both objects are open.
            check("fi_ep_bind(srx)", unsafe { fi_ep_bind(object.as_ptr(), srx.fid(), 0) })?;
            // The shared receives complete on this endpoint's queue.
            bind.cq.inner.tables.add(srx.inner.ops.clone());
            keep.push(srx.inner.clone());
        }
        let ep = Self::setup(object, domain, info, bind, &[], BindFlags::TRANSMIT | BindFlags::RECV, None)?;
        let inner = Arc::try_unwrap(ep.inner).map_err(|_| Error::InvalidArgument {
            call: "fi_endpoint",
            reason: "endpoint shared during setup".into(),
        })?;
        Ok(Endpoint { inner: Arc::new(EpInner { _keep: keep, ..inner }), _types: PhantomData })
    }

    /// A shared receive context (`fi_srx_context`): post receives on it; they
    /// complete on the queue of whichever endpoint sharing it
    /// ([`open_shared`](Self::open_shared)) the message arrives at.
    pub fn shared_rx(domain: &Domain<M>, info: &Info) -> Result<Self> {
        let mut raw = ptr::null_mut();
        // The info's receive attributes (a copy: the call takes a mutable pointer).
        let mut attr = info.rx_attr().copied().unwrap_or_default();
        // SAFETY: the domain is open; `attr` is valid for the call.
        check("fi_srx_context", unsafe { fi_srx_context(domain.as_raw(), &mut attr, &mut raw, ptr::null_mut()) })?;
        // SAFETY: fi_srx_context succeeded.
        let object = unsafe { Object::new(raw, "fi_close(srx)") }
            .ok_or(Error::InvalidArgument { call: "fi_srx_context", reason: "returned no context".into() })?;
        let depth = info.rx_attr().map_or(0, |r| r.size());
        Ok(Endpoint {
            inner: Arc::new(EpInner {
                object,
                ops: OpTable::new(depth.clamp(64, 1 << 16), M::SHARED),
                cq: None,
                tx_cq: None,
                av: None,
                _eq: None,
                _counters: Vec::new(),
                triggers: Default::default(),
                domain: domain.inner.clone(),
                local_mr: needs_local_mr(info),
                inject_size: info.inject_size(),
                info: info.clone(),
                _keep: Vec::new(),
            }),
            _types: PhantomData,
        })
    }

    /// Binds an opened endpoint (or a context of a scalable endpoint: its
    /// completions bind with `cq_flags`) and enables it; `parent` keeps the
    /// object it belongs to open for as long as it is. A context uses its
    /// parent's address vector: `bind.av` is then recorded, not bound.
    pub(crate) fn setup(
        object: Object<fid_ep>,
        domain: &Domain<M>,
        info: &Info,
        bind: Bindings<'_, E, M>,
        counters: &[(&Counter<M>, BindFlags)],
        cq_flags: BindFlags,
        parent: Option<Arc<dyn std::any::Any + Send + Sync>>,
    ) -> Result<Self> {
        let ep = object.as_ptr();
        let bind_to = |call: &'static str, what: *mut fid, flags: BindFlags| {
            // SAFETY: both objects are open.
            check(call, unsafe { fi_ep_bind(ep, what, flags.bits()) }).map(drop)
        };
        // A transmit queue of its own takes the transmit side of `cq_flags`.
        let tx_cq = bind.tx_cq.filter(|tx| !std::ptr::eq(*tx, bind.cq));
        match tx_cq {
            Some(tx) if cq_flags.contains(BindFlags::TRANSMIT | BindFlags::RECV) => {
                bind_to("fi_ep_bind(cq)", bind.cq.fid(), cq_flags - BindFlags::TRANSMIT)?;
                bind_to("fi_ep_bind(tx_cq)", tx.fid(), BindFlags::TRANSMIT)?;
            }
            Some(_) => {
                return Err(Error::InvalidArgument {
                    call: "fi_ep_bind(tx_cq)",
                    reason: "a context of one direction binds one completion queue".into(),
                })
            }
            None => bind_to("fi_ep_bind(cq)", bind.cq.fid(), cq_flags)?,
        }
        if let (Some(av), None) = (bind.av, &parent) {
            bind_to("fi_ep_bind(av)", av.inner.object.fid(), BindFlags::empty())?;
        }
        if let Some(eq) = bind.eq {
            bind_to("fi_ep_bind(eq)", eq.fid(), BindFlags::empty())?;
        }
        for (counter, flags) in counters {
            bind_to("fi_ep_bind(cntr)", counter.fid(), *flags)?;
        }
        // SAFETY: the endpoint is open and bound.
        check("fi_enable", unsafe { fi_enable(ep) })?;

        let depth = info.tx_attr().map_or(0, |t| t.size()) + info.rx_attr().map_or(0, |r| r.size());
        let ops = OpTable::new(depth.clamp(64, 1 << 16), M::SHARED);
        for cq in std::iter::once(bind.cq).chain(tx_cq) {
            cq.inner.tables.add(ops.clone());
            // Each vector once (the queue only asks whether they are all one).
            let mut avs = cq.inner.avs.lock().unwrap_or_else(|p| p.into_inner());
            let av = bind.av.map_or((0, None), |a| (a.inner.id, Some(a.inner.removals.clone())));
            if !avs.iter().any(|(id, _)| *id == av.0) {
                avs.push(av);
            }
        }
        Ok(Endpoint {
            inner: Arc::new(EpInner {
                object,
                ops,
                cq: Some(bind.cq.inner.clone()),
                tx_cq: tx_cq.map(|tx| tx.inner.clone()),
                av: bind.av.map(|a| a.inner.clone()),
                _eq: bind.eq.cloned(),
                _counters: counters.iter().map(|(c, _)| c.inner.clone()).collect(),
                triggers: Default::default(),
                domain: domain.inner.clone(),
                local_mr: needs_local_mr(info),
                inject_size: info.inject_size(),
                info: info.clone(),
                _keep: parent.into_iter().collect(),
            }),
            _types: PhantomData,
        })
    }

    /// Closes the endpoint now and reports libfabric's verdict (dropping it
    /// closes it too, logging a failure). Operations still in flight are
    /// cancelled; their buffers are freed when the completion queue closes.
    pub fn close(self) -> Result<()> {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner.object.close(),
            Err(_) => Ok(()), // not reachable: the endpoint is the only owner
        }
    }

    /// The info the endpoint was opened with.
    pub fn info(&self) -> &Info {
        &self.inner.info
    }

    /// The raw object, for calls this crate does not wrap.
    pub fn as_raw(&self) -> *mut fid_ep {
        self.inner.object.as_ptr()
    }

    pub(crate) fn fid(&self) -> *mut fid {
        self.inner.object.fid()
    }

    /// Operations posted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.inner.ops.in_flight()
    }

    /// The endpoint's own address (`fi_getname`), to hand to peers.
    pub fn name(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; 64];
        loop {
            let mut len = buf.len();
            // SAFETY: `buf` is writable for `len` bytes.
            let ret = unsafe { fi_getname(self.fid(), buf.as_mut_ptr().cast(), &mut len) };
            if ret == -(libfabric_sys::FI_ETOOSMALL as i32) || (ret == 0 && len > buf.len()) {
                buf.resize(len, 0);
                continue;
            }
            check("fi_getname", ret)?;
            buf.truncate(len);
            return Ok(buf);
        }
    }

    /// The connected peer's address (`fi_getpeer`, MSG endpoints).
    pub fn peer(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; 128];
        let mut len = buf.len();
        // SAFETY: `buf` is writable for `len` bytes.
        check("fi_getpeer", unsafe { fi_getpeer(self.as_raw(), buf.as_mut_ptr().cast(), &mut len) })?;
        buf.truncate(len);
        Ok(buf)
    }

    /// Starts connecting a MSG endpoint to `dest` (an address from the
    /// peer's `name`, or `None` for the info's `dest_addr`), sending `data`
    /// with the request. `FI_CONNECTED` arrives on the event queue.
    pub fn connect(&self, dest: Option<&[u8]>, data: &[u8]) -> Result<()> {
        let addr = match dest {
            Some(d) => d.as_ptr(),
            None => self.inner.info.dest_addr().map_or(ptr::null(), <[u8]>::as_ptr),
        };
        // SAFETY: the address and data are readable for the call.
        check("fi_connect", unsafe { fi_connect(self.as_raw(), addr.cast(), data.as_ptr().cast(), data.len()) })
            .map(drop)
    }

    /// Accepts the connection request this endpoint was opened for, sending
    /// `data` back. `FI_CONNECTED` arrives on the event queue.
    pub fn accept(&self, data: &[u8]) -> Result<()> {
        // SAFETY: the data is readable for the call.
        check("fi_accept", unsafe { fi_accept(self.as_raw(), data.as_ptr().cast(), data.len()) }).map(drop)
    }

    /// Closes the connection (`fi_shutdown`).
    pub fn shutdown(&self) -> Result<()> {
        // SAFETY: the endpoint is open.
        check("fi_shutdown", unsafe { fi_shutdown(self.as_raw(), 0) }).map(drop)
    }

    /// Reads an `size_t` endpoint option (`fi_getopt(FI_OPT_ENDPOINT, …)`).
    pub fn option(&self, name: EpOption) -> Result<usize> {
        let mut value = 0usize;
        let mut len = std::mem::size_of::<usize>();
        // SAFETY: `value` is writable for `len` bytes.
        check("fi_getopt", unsafe {
            fi_getopt(self.fid(), OptLevel::ENDPOINT.raw(), name.raw(), (&mut value as *mut usize).cast(), &mut len)
        })?;
        Ok(value)
    }

    /// Sets a `size_t` endpoint option (`fi_setopt(FI_OPT_ENDPOINT, …)`), such as
    /// `EpOption::MIN_MULTI_RECV`.
    pub fn set_option(&self, name: EpOption, value: usize) -> Result<()> {
        // SAFETY: `value` is readable for its size.
        check("fi_setopt", unsafe {
            fi_setopt(
                self.fid(),
                OptLevel::ENDPOINT.raw(),
                name.raw(),
                (&value as *const usize).cast(),
                std::mem::size_of::<usize>(),
            )
        })
        .map(drop)
    }

    /// Identifies this endpoint's operations.
    fn table_id(&self) -> usize {
        Arc::as_ptr(&self.inner.ops) as usize
    }

    /// The raw handle of a receive's source filter: `UNSPEC` (anyone), or a
    /// handle of the bound address vector.
    #[inline(always)]
    pub(crate) fn resolve(&self, call: &'static str, addr: Address) -> Result<fi_addr_t> {
        if addr == Address::UNSPEC || self.inner.av.as_ref().is_some_and(|av| is_peer(av, addr)) {
            return Ok(addr.raw);
        }
        Err(self.refused(call, addr))
    }

    /// The raw handle of a destination: a handle of the bound address vector
    /// (not removed from it) or, on a connected endpoint (no address
    /// vector), `UNSPEC`. libfabric would read out of bounds, or freed
    /// state, for anything else.
    #[inline(always)]
    pub(crate) fn destination(&self, call: &'static str, addr: Address) -> Result<fi_addr_t> {
        match &self.inner.av {
            Some(av) if is_peer(av, addr) => Ok(addr.raw),
            // The connected peer.
            None if addr == Address::UNSPEC => Ok(addr.raw),
            _ => Err(self.refused(call, addr)),
        }
    }

    /// The identity of the bound address vector (0: none).
    pub(crate) fn av_id(&self) -> u32 {
        self.inner.av.as_ref().map_or(0, |av| av.id)
    }

    /// Why `addr` is refused.
    #[cold]
    #[inline(never)]
    fn refused(&self, call: &'static str, addr: Address) -> Error {
        if addr.av != 0 && addr.av == self.av_id() {
            return crate::av::removed(call, addr);
        }
        if addr == Address::UNSPEC {
            return Error::InvalidArgument {
                call,
                reason: "a destination on an endpoint with an address vector must be one of its handles, not UNSPEC"
                    .into(),
            };
        }
        Error::InvalidArgument {
            call,
            reason: format!("{addr:?} is not a handle of the address vector bound to this endpoint"),
        }
    }

    /// Registers `buf` for local access when the provider needs it
    /// (`FI_MR_LOCAL`), once: the registration stays with the buffer.
    #[inline]
    pub(crate) fn prepare(&self, buf: &mut Buf, access: MrAccess) -> Result<()> {
        if buf.mr.is_some() || !self.inner.local_mr {
            return Ok(());
        }
        self.register(buf, access)
    }

    /// Registers `buf` on this endpoint's domain for `access` (bound to the
    /// endpoint and enabled when the provider uses `FI_MR_ENDPOINT`). The
    /// registration stays with the buffer until it is dropped or turned back
    /// into a `Vec`.
    ///
    /// Only local access is accepted here: memory a remote peer may write
    /// could change under the owner's `&[u8]`, so remote access goes through
    /// the RMA API instead.
    pub fn register(&self, buf: &mut Buf, access: MrAccess) -> Result<()> {
        if access.intersects(MrAccess::REMOTE_READ | MrAccess::REMOTE_WRITE) {
            return Err(Error::InvalidArgument {
                call: "fi_mr_reg",
                reason: "a Buf is registered for local access only; remote access needs memory the owner cannot borrow"
                    .into(),
            });
        }
        let cap = buf.capacity();
        let ptr = buf.full_ptr();
        // SAFETY: a Buf never reallocates and drops its registration before its
        // bytes; the bytes are only written through operations or by the owner
        // while no operation holds the buffer.
        let mr = unsafe { MemoryRegion::register(&self.inner.domain, ptr, cap.max(1), access)? };
        if self.inner.info.mr_mode().contains(MrMode::ENDPOINT) {
            mr.bind_and_enable(self.fid())?;
        }
        buf.mr = Some(Box::new(mr));
        Ok(())
    }

    /// Posts an operation on `buf`: reserve a slot, register if needed, post
    /// with the slot as context; on failure the buffer comes back.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn post(
        &self,
        call: &'static str,
        kind: OpKind,
        token: u64,
        mut buf: Buf,
        peer: Address,
        access: MrAccess,
        post: impl FnOnce(*mut u8, usize, *mut libc::c_void, *mut libc::c_void, fi_addr_t) -> isize,
    ) -> Result<OpId, PostError> {
        // Receives name a source filter (UNSPEC: anyone); collectives address
        // their group, not a peer; everything else a destination.
        let from_anyone = matches!(kind, OpKind::Recv | OpKind::TaggedRecv | OpKind::MultiRecv | OpKind::Collective);
        let peer = match if from_anyone { self.resolve(call, peer) } else { self.destination(call, peer) } {
            Ok(p) => p,
            Err(error) => return Err(PostError { error, buf }),
        };
        if let Err(error) = self.prepare(&mut buf, access) {
            return Err(PostError { error, buf });
        }
        let Some(index) = self.inner.ops.reserve() else {
            let errno = libfabric_sys::enums::Errno::from_raw(libc::EAGAIN);
            return Err(PostError { error: Error::Call { call, errno }, buf });
        };
        let receives =
            matches!(kind, OpKind::Recv | OpKind::TaggedRecv | OpKind::MultiRecv | OpKind::Read | OpKind::Collective);
        let len = if receives { buf.capacity() } else { buf.len() };
        let data = if receives { buf.full_ptr() } else { buf.as_ptr().cast_mut() };
        let desc = buf.desc();
        let id = OpId { table: self.table_id(), index, generation: self.inner.ops.generation(index) };
        let context = self.inner.ops.occupy(index, kind, token, buf);
        let ret = post(data, len, desc, context, peer);
        if ret < 0 {
            let buf = self.inner.ops.vacate(index).expect("the slot holds the buffer it was just given");
            return Err(post_error(call, ret, buf));
        }
        Ok(id)
    }

    /// Sends `buf` to `dest` (`fi_send`; `Address::UNSPEC` on a connected MSG
    /// endpoint). `token` comes back with the completion.
    ///
    /// ```no_run
    /// # fn demo(ep: &libfabric::Endpoint, cq: &libfabric::CompletionQueue, peer: libfabric::Address) -> Result<(), Box<dyn std::error::Error>> {
    /// use libfabric::{Buf, Read};
    /// ep.send(Buf::from(b"ping".to_vec()), peer, 7)?;
    /// loop {
    ///     if let Read::Op(done) = cq.poll()? {
    ///         assert_eq!(done.token, 7);
    ///         let _buf = done.buf; // ours again
    ///         break;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn send(&self, buf: Buf, dest: Address, token: u64) -> Result<OpId, PostError> {
        let ep = self.as_raw();
        self.post("fi_send", OpKind::Send, token, buf, dest, MrAccess::SEND, |p, len, desc, ctx, peer| {
            // SAFETY: the buffer is owned by the operation's slot until its completion.
            unsafe { fi_send(ep, p.cast(), len, desc, peer, ctx) }
        })
    }

    /// Sends `buf` with remote CQ data (`fi_senddata`).
    pub fn send_data(&self, buf: Buf, data: u64, dest: Address, token: u64) -> Result<OpId, PostError> {
        let ep = self.as_raw();
        self.post("fi_senddata", OpKind::Send, token, buf, dest, MrAccess::SEND, |p, len, desc, ctx, peer| {
            // SAFETY: as in `send`.
            unsafe { fi_senddata(ep, p.cast(), len, desc, data, peer, ctx) }
        })
    }

    /// Posts `buf` to receive a message from `src` (`Address::UNSPEC`: anyone).
    /// The completion returns the buffer cut to the received length.
    ///
    /// ```no_run
    /// # fn demo(ep: &libfabric::Endpoint, cq: &libfabric::CompletionQueue, peer: libfabric::Address) -> Result<(), Box<dyn std::error::Error>> {
    /// use libfabric::{Address, Buf, Read};
    /// ep.recv(Buf::zeroed(4096), Address::UNSPEC, 1)?;
    /// if let Read::Op(done) = cq.poll()? {
    ///     println!("{} bytes: {:?}", done.buf.len(), &done.buf[..]);
    /// }
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn recv(&self, buf: Buf, src: Address, token: u64) -> Result<OpId, PostError> {
        let ep = self.as_raw();
        self.post("fi_recv", OpKind::Recv, token, buf, src, MrAccess::RECV, |p, len, desc, ctx, peer| {
            // SAFETY: as in `send`; the provider may write `len` bytes.
            unsafe { fi_recv(ep, p.cast(), len, desc, peer, ctx) }
        })
    }

    /// Posts `buf` as a multi-receive buffer (`fi_recvmsg` with
    /// `FI_MULTI_RECV`): messages land one after another, each reported as
    /// [`Read::Message`](crate::Read::Message) with its offset; the buffer
    /// comes back in the completion flagged `FI_MULTI_RECV`, once the free space
    /// falls below the endpoint's `EpOption::MIN_MULTI_RECV`.
    ///
    /// The endpoint's completion queue must be opened with
    /// [`CqConfig::serial_reads`](crate::CqConfig::serial_reads), otherwise
    /// this is refused with [`Error::InvalidArgument`]: every message entry
    /// names the buffer's operation, and a thread still handing one out
    /// while another reads the final entry, which ends the operation, would
    /// meet the operation's successor.
    pub fn recv_multi(&self, buf: Buf, src: Address, token: u64) -> Result<OpId, PostError> {
        if !self.inner.cq.as_ref().is_some_and(|cq| cq.serial.is_some()) {
            let reason = "a multi-receive buffer needs its endpoint's completion queue opened with \
                          CqConfig::serial_reads"
                .into();
            return Err(PostError { error: Error::InvalidArgument { call: "fi_recvmsg", reason }, buf });
        }
        let ep = self.as_raw();
        self.post("fi_recvmsg", OpKind::MultiRecv, token, buf, src, MrAccess::RECV, |p, len, mut desc, ctx, peer| {
            let iov = libc::iovec { iov_base: p.cast(), iov_len: len };
            let msg = fi_msg { msg_iov: &iov, desc: &mut desc, iov_count: 1, addr: peer, context: ctx, data: 0 };
            // SAFETY: the buffer is owned by the operation's slot until the
            // FI_MULTI_RECV completion; `msg` and `iov` live for the call.
            unsafe { fi_recvmsg(ep, &msg, (OpFlags::MULTI_RECV | OpFlags::COMPLETION).bits()) }
        })
    }

    /// Sends a tagged message (`fi_tsend`).
    #[inline]
    pub fn tsend(&self, buf: Buf, dest: Address, tag: u64, token: u64) -> Result<OpId, PostError> {
        let ep = self.as_raw();
        self.post("fi_tsend", OpKind::TaggedSend, token, buf, dest, MrAccess::SEND, |p, len, desc, ctx, peer| {
            // SAFETY: as in `send`.
            unsafe { fi_tsend(ep, p.cast(), len, desc, peer, tag, ctx) }
        })
    }

    /// Sends a tagged message with remote CQ data (`fi_tsenddata`).
    pub fn tsend_data(&self, buf: Buf, data: u64, dest: Address, tag: u64, token: u64) -> Result<OpId, PostError> {
        let ep = self.as_raw();
        self.post("fi_tsenddata", OpKind::TaggedSend, token, buf, dest, MrAccess::SEND, |p, len, desc, ctx, peer| {
            // SAFETY: as in `send`.
            unsafe { fi_tsenddata(ep, p.cast(), len, desc, data, peer, tag, ctx) }
        })
    }

    /// Posts a tagged receive matching `tag` except for the bits set in `ignore`.
    ///
    /// ```no_run
    /// # fn demo(ep: &libfabric::Endpoint, cq: &libfabric::CompletionQueue, peer: libfabric::Address) -> Result<(), Box<dyn std::error::Error>> {
    /// use libfabric::{Address, Buf};
    /// // Any tag 0x1200..=0x12ff.
    /// ep.trecv(Buf::zeroed(256), Address::UNSPEC, 0x1200, 0xff, 1)?;
    /// ep.tsend(Buf::from(vec![1, 2, 3]), peer, 0x1234, 2)?;
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn trecv(&self, buf: Buf, src: Address, tag: u64, ignore: u64, token: u64) -> Result<OpId, PostError> {
        let ep = self.as_raw();
        self.post("fi_trecv", OpKind::TaggedRecv, token, buf, src, MrAccess::RECV, |p, len, desc, ctx, peer| {
            // SAFETY: as in `recv`.
            unsafe { fi_trecv(ep, p.cast(), len, desc, peer, tag, ignore, ctx) }
        })
    }

    /// Sends a tagged message with explicit flags (`fi_tsendmsg`), e.g.
    /// `OpFlags::INJECT_COMPLETE` or `OpFlags::REMOTE_CQ_DATA` with `data`.
    pub fn tsend_with(
        &self,
        buf: Buf,
        dest: Address,
        tag: u64,
        data: u64,
        flags: OpFlags,
        token: u64,
    ) -> Result<OpId, PostError> {
        let ep = self.as_raw();
        self.post("fi_tsendmsg", OpKind::TaggedSend, token, buf, dest, MrAccess::SEND, |p, len, mut desc, ctx, peer| {
            let iov = libc::iovec { iov_base: p.cast(), iov_len: len };
            let msg = fi_msg_tagged {
                msg_iov: &iov,
                desc: &mut desc,
                iov_count: 1,
                addr: peer,
                tag,
                ignore: 0,
                context: ctx,
                data,
            };
            // SAFETY: as in `send`; `msg` and `iov` live for the call.
            unsafe { fi_tsendmsg(ep, &msg, (flags | OpFlags::COMPLETION).bits()) }
        })
    }

    /// A send that libfabric holds until `counter` reaches `threshold`
    /// (`fi_sendmsg` with `FI_TRIGGER`, on providers offering `FI_TRIGGER`).
    /// The buffer is the operation's until its completion, as for
    /// [`send`](Self::send); the counter stays open while the endpoint does.
    pub fn send_triggered(
        &self,
        buf: Buf,
        dest: Address,
        counter: &Counter<M>,
        threshold: u64,
        token: u64,
    ) -> Result<OpId, PostError> {
        let threshold = match usize::try_from(threshold) {
            Ok(t) => t,
            Err(_) => {
                let error = Error::InvalidArgument { call: "fi_sendmsg", reason: "threshold too large".into() };
                return Err(PostError { error, buf });
            }
        };
        self.inner.triggers.lock().unwrap_or_else(|p| p.into_inner()).push(counter.inner.clone());
        let (ep, cntr) = (self.as_raw(), counter.as_raw());
        self.post("fi_sendmsg", OpKind::Send, token, buf, dest, MrAccess::SEND, |p, len, mut desc, ctx, peer| {
            // The operation's context is its triggered context: the slot's
            // storage (64 bytes) holds the 32-byte `fi_triggered_context`.
            let trigger: *mut fi_triggered_context = ctx.cast();
            // SAFETY: the slot is reserved for this operation and large enough.
            unsafe {
                trigger.write(fi_triggered_context {
                    event_type: TriggerEvent::THRESHOLD.raw(),
                    trigger: fi_triggered_context__trigger { threshold: fi_trigger_threshold { cntr, threshold } },
                });
            }
            let iov = libc::iovec { iov_base: p.cast(), iov_len: len };
            let msg = fi_msg { msg_iov: &iov, desc: &mut desc, iov_count: 1, addr: peer, context: ctx, data: 0 };
            // SAFETY: as in `send`; `msg` and `iov` live for the call, the
            // triggered context for the operation.
            unsafe { fi_sendmsg(ep, &msg, (OpFlags::TRIGGER | OpFlags::COMPLETION).bits()) }
        })
    }

    /// Sends with explicit flags (`fi_sendmsg`).
    pub fn send_with(&self, buf: Buf, dest: Address, data: u64, flags: OpFlags, token: u64) -> Result<OpId, PostError> {
        let ep = self.as_raw();
        self.post("fi_sendmsg", OpKind::Send, token, buf, dest, MrAccess::SEND, |p, len, mut desc, ctx, peer| {
            let iov = libc::iovec { iov_base: p.cast(), iov_len: len };
            let msg = fi_msg { msg_iov: &iov, desc: &mut desc, iov_count: 1, addr: peer, context: ctx, data };
            // SAFETY: as in `send`; `msg` and `iov` live for the call.
            unsafe { fi_sendmsg(ep, &msg, (flags | OpFlags::COMPLETION).bits()) }
        })
    }

    /// Sends a small message with no completion (`fi_inject`); the data is
    /// copied before the call returns. At most `info().inject_size()` bytes.
    #[inline(always)]
    pub fn inject(&self, data: &[u8], dest: Address) -> Result<()> {
        self.check_inject("fi_inject", data)?;
        let dest = self.destination("fi_inject", dest)?;
        // SAFETY: inject copies `data` before returning.
        check("fi_inject", unsafe { fi_inject(self.as_raw(), data.as_ptr().cast(), data.len(), dest) }).map(drop)
    }

    /// `fi_injectdata`: inject with remote CQ data.
    pub fn inject_data(&self, data: &[u8], cq_data: u64, dest: Address) -> Result<()> {
        self.check_inject("fi_injectdata", data)?;
        let dest = self.destination("fi_injectdata", dest)?;
        // SAFETY: inject copies `data` before returning.
        check("fi_injectdata", unsafe { fi_injectdata(self.as_raw(), data.as_ptr().cast(), data.len(), cq_data, dest) })
            .map(drop)
    }

    /// `fi_tinject`: a tagged inject.
    #[inline(always)]
    pub fn tinject(&self, data: &[u8], dest: Address, tag: u64) -> Result<()> {
        self.check_inject("fi_tinject", data)?;
        let dest = self.destination("fi_tinject", dest)?;
        // SAFETY: inject copies `data` before returning.
        check("fi_tinject", unsafe { fi_tinject(self.as_raw(), data.as_ptr().cast(), data.len(), dest, tag) }).map(drop)
    }

    /// `fi_tinjectdata`: a tagged inject with remote CQ data.
    pub fn tinject_data(&self, data: &[u8], cq_data: u64, dest: Address, tag: u64) -> Result<()> {
        self.check_inject("fi_tinjectdata", data)?;
        let dest = self.destination("fi_tinjectdata", dest)?;
        // SAFETY: inject copies `data` before returning.
        check("fi_tinjectdata", unsafe {
            fi_tinjectdata(self.as_raw(), data.as_ptr().cast(), data.len(), cq_data, dest, tag)
        })
        .map(drop)
    }

    /// The provider's inject size, read once when the endpoint opened.
    #[cfg(feature = "async")]
    #[inline]
    pub(crate) fn inject_limit(&self) -> usize {
        self.inner.inject_size
    }

    #[inline(always)]
    pub(crate) fn check_inject(&self, call: &'static str, data: &[u8]) -> Result<()> {
        let max = self.inner.inject_size;
        if data.len() > max {
            return Err(too_large_to_inject(call, data.len(), max));
        }
        Ok(())
    }

    /// Asks libfabric to cancel an operation (`fi_cancel`). A cancelled
    /// operation completes with `FI_ECANCELED`, returning its buffer; one that
    /// already finished completes normally.
    ///
    /// The id of an operation that already completed cancels nothing (`Ok`).
    pub fn cancel(&self, op: OpId) -> Result<()> {
        if op.table != self.table_id() {
            return Err(Error::InvalidArgument {
                call: "fi_cancel",
                reason: "the operation is another endpoint's".into(),
            });
        }
        let fid = self.fid();
        // SAFETY: the context is the live operation's slot, which cannot be
        // freed and reused while `with_live` holds it.
        let ret = self.inner.ops.with_live(op.index, op.generation, |ctx| unsafe { fi_cancel(fid, ctx) });
        check("fi_cancel", ret.unwrap_or(0)).map(drop)
    }

    /// `fi_recvmsg` with caller-managed memory and context, for flags the safe
    /// methods do not cover (`FI_MULTI_RECV`, …).
    ///
    /// # Safety
    /// Every buffer of `msg` stays valid, unmoved and otherwise untouched until
    /// the operation's last completion (for `FI_MULTI_RECV`: the one flagged
    /// `FI_MULTI_RECV`) has been read; `msg.context` is not one this crate
    /// manages (completions for it come back as [`Read::Raw`](crate::Read::Raw)).
    pub unsafe fn recvmsg_raw(&self, msg: &fi_msg, flags: OpFlags) -> Result<()> {
        check("fi_recvmsg", fi_recvmsg(self.as_raw(), msg, flags.bits())).map(drop)
    }

    /// `fi_trecvmsg` with caller-managed memory and context (`FI_PEEK`,
    /// `FI_CLAIM`, `FI_DISCARD`, …).
    ///
    /// # Safety
    /// As for [`recvmsg_raw`](Self::recvmsg_raw); with `FI_CLAIM`, `msg.context`
    /// is the context a preceding `FI_PEEK | FI_CLAIM` used.
    pub unsafe fn trecvmsg_raw(&self, msg: &fi_msg_tagged, flags: OpFlags) -> Result<()> {
        check("fi_trecvmsg", fi_trecvmsg(self.as_raw(), msg, flags.bits())).map(drop)
    }

    /// `fi_sendv`: a message gathered from several buffers.
    ///
    /// # Safety
    /// Every buffer of `iov` (with its descriptor in `desc`, one per buffer or
    /// none) stays valid and unchanged until the operation completes;
    /// `context` is not one this crate manages.
    pub unsafe fn sendv_raw(
        &self,
        iov: &[libc::iovec],
        desc: &mut [*mut libc::c_void],
        dest: Address,
        context: *mut libc::c_void,
    ) -> Result<()> {
        let dest = self.destination("fi_sendv", dest)?;
        let desc = if desc.is_empty() { ptr::null_mut() } else { desc.as_mut_ptr() };
        check("fi_sendv", fi_sendv(self.as_raw(), iov.as_ptr(), desc, iov.len(), dest, context)).map(drop)
    }

    /// `fi_recvv`: a message scattered into several buffers.
    ///
    /// # Safety
    /// Every buffer of `iov` stays valid, unmoved and untouched by the caller
    /// until the operation completes; `context` is not one this crate manages.
    pub unsafe fn recvv_raw(
        &self,
        iov: &[libc::iovec],
        desc: &mut [*mut libc::c_void],
        src: Address,
        context: *mut libc::c_void,
    ) -> Result<()> {
        let src = self.resolve("fi_recvv", src)?;
        let desc = if desc.is_empty() { ptr::null_mut() } else { desc.as_mut_ptr() };
        check("fi_recvv", fi_recvv(self.as_raw(), iov.as_ptr(), desc, iov.len(), src, context)).map(drop)
    }

    /// `fi_sendmsg` with caller-managed memory and context.
    ///
    /// # Safety
    /// Every buffer of `msg` stays valid and unchanged until the operation
    /// completes; `msg.context` is not one this crate manages.
    pub unsafe fn sendmsg_raw(&self, msg: &fi_msg, flags: OpFlags) -> Result<()> {
        check("fi_sendmsg", fi_sendmsg(self.as_raw(), msg, flags.bits())).map(drop)
    }
}

/// True for a handle of `av` that is still in it.
#[inline(always)]
fn is_peer(av: &AvInner, addr: Address) -> bool {
    addr.av == av.id && av.removals.is_live(addr.raw, addr.generation)
}

/// The error of an inject larger than the endpoint allows.
#[cold]
#[inline(never)]
fn too_large_to_inject(call: &'static str, len: usize, max: usize) -> Error {
    Error::InvalidArgument { call, reason: format!("{len} bytes exceed the inject size of {max}") }
}
