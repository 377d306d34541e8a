//! Scalable endpoints: one address, several transmit and receive contexts
//! (`fi_scalable_ep`, `fi_tx_context`, `fi_rx_context`), each context used
//! like an endpoint of its own.

use std::fmt;
use std::marker::PhantomData;
use std::ptr;
use std::sync::Arc;

use libfabric_sys::flags::BindFlags;
use libfabric_sys::{fi_enable, fi_getname, fi_rx_context, fi_scalable_ep, fi_scalable_ep_bind, fi_tx_context, fid_ep};

use crate::av::{AddressVector, AvInner};
use crate::cq::{CompletionQueue, Entry};
use crate::domain::{Domain, DomainInner};
use crate::ep::{Bindings, Endpoint};
use crate::error::{check, Error, Result};
use crate::fid::{Object, ThreadModel, ThreadSafe};
use crate::info::Info;

/// What the contexts of a scalable endpoint keep alive: it, its address vector
/// and its domain, closed in that order after the last context.
struct SepInner {
    object: Object<fid_ep>,
    _av: Arc<AvInner>,
    _domain: Arc<DomainInner>,
}

/// An open scalable endpoint (`fi_scalable_ep` bound to an address vector).
///
/// Create its contexts, then [`enable`](Self::enable) it. Peers reach receive
/// context `i` at [`AddressVector::rx_context`] of its address, in a vector
/// opened with [`AddressVector::open_scalable`].
///
/// ```no_run
/// # fn demo(domain: &libfabric::Domain, info: &libfabric::Info, av: &libfabric::AddressVector,
/// #         cq: &libfabric::CompletionQueue) -> libfabric::Result<()> {
/// use libfabric::ScalableEndpoint;
/// let sep = ScalableEndpoint::open(domain, info, av)?;
/// let tx = sep.tx_context(0, cq)?;
/// let rx: Vec<_> = (0..4).map(|i| sep.rx_context(i, cq)).collect::<Result<_, _>>()?;
/// sep.enable()?;
/// # let _ = (tx, rx); Ok(()) }
/// ```
pub struct ScalableEndpoint<M: ThreadModel = ThreadSafe> {
    inner: Arc<SepInner>,
    domain: Domain<M>,
    av: AddressVector<M>,
    info: Info,
    _model: PhantomData<M::Marker>,
}

impl<M: ThreadModel> fmt::Debug for ScalableEndpoint<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScalableEndpoint").field("provider", &self.info.provider()).finish()
    }
}

impl<M: ThreadModel> ScalableEndpoint<M> {
    /// Opens a scalable endpoint for `info` (its `ep_attr.tx_ctx_cnt` and
    /// `rx_ctx_cnt` say how many contexts) and binds `av`.
    pub fn open(domain: &Domain<M>, info: &Info, av: &AddressVector<M>) -> Result<Self> {
        let mut raw = ptr::null_mut();
        // SAFETY: the domain is open and `info` valid for the call.
        check("fi_scalable_ep", unsafe { fi_scalable_ep(domain.as_raw(), info.as_ptr(), &mut raw, ptr::null_mut()) })?;
        // SAFETY: fi_scalable_ep succeeded.
        let object = unsafe { Object::new(raw, "fi_close(scalable endpoint)") }
            .ok_or(Error::InvalidArgument { call: "fi_scalable_ep", reason: "returned no endpoint".into() })?;
        // SAFETY: both objects are open.
        check("fi_scalable_ep_bind", unsafe { fi_scalable_ep_bind(object.as_ptr(), av.inner.object.fid(), 0) })?;
        Ok(ScalableEndpoint {
            inner: Arc::new(SepInner { object, _av: av.inner.clone(), _domain: domain.inner.clone() }),
            domain: domain.clone(),
            av: av.clone(),
            info: info.clone(),
            _model: PhantomData,
        })
    }

    /// Transmit context `index` (`fi_tx_context`), with its completions on `cq`.
    pub fn tx_context<E: Entry>(&self, index: usize, cq: &CompletionQueue<E, M>) -> Result<Endpoint<E, M>> {
        self.context("fi_tx_context", index, cq, BindFlags::TRANSMIT)
    }

    /// Receive context `index` (`fi_rx_context`), with its completions on `cq`.
    pub fn rx_context<E: Entry>(&self, index: usize, cq: &CompletionQueue<E, M>) -> Result<Endpoint<E, M>> {
        self.context("fi_rx_context", index, cq, BindFlags::RECV)
    }

    fn context<E: Entry>(
        &self,
        call: &'static str,
        index: usize,
        cq: &CompletionQueue<E, M>,
        flags: BindFlags,
    ) -> Result<Endpoint<E, M>> {
        let index =
            i32::try_from(index).map_err(|_| Error::InvalidArgument { call, reason: "index too large".into() })?;
        let sep = self.inner.object.as_ptr();
        let mut raw = ptr::null_mut();
        // SAFETY: the scalable endpoint is open; NULL attributes take the info's.
        let ret = unsafe {
            if flags == BindFlags::TRANSMIT {
                fi_tx_context(sep, index, ptr::null_mut(), &mut raw, ptr::null_mut())
            } else {
                fi_rx_context(sep, index, ptr::null_mut(), &mut raw, ptr::null_mut())
            }
        };
        check(call, ret)?;
        // SAFETY: the call succeeded, so `raw` is an open context.
        let object = unsafe { Object::new(raw, "fi_close(context)") }
            .ok_or(Error::InvalidArgument { call, reason: "returned no context".into() })?;
        let parent: Arc<dyn std::any::Any + Send + Sync> = self.inner.clone();
        Endpoint::setup(
            object,
            &self.domain,
            &self.info,
            Bindings { cq, av: Some(&self.av), eq: None, tx_cq: None },
            &[],
            flags,
            Some(parent),
        )
    }

    /// Enables the scalable endpoint, once its contexts exist (`fi_enable`).
    pub fn enable(&self) -> Result<()> {
        // SAFETY: the endpoint is open and bound.
        check("fi_enable", unsafe { fi_enable(self.inner.object.as_ptr()) }).map(drop)
    }

    /// Its address (`fi_getname`), to hand to peers.
    pub fn name(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; 128];
        let mut len = buf.len();
        // SAFETY: `buf` is writable for `len` bytes.
        check("fi_getname", unsafe { fi_getname(self.inner.object.fid(), buf.as_mut_ptr().cast(), &mut len) })?;
        buf.truncate(len);
        Ok(buf)
    }
}
