//! Passive endpoints: listening for connections (MSG endpoints).

use std::fmt;
use std::ptr;
use std::sync::Arc;

use libfabric_sys::{fi_getname, fi_listen, fi_passive_ep, fi_pep_bind, fi_reject, fid_fabric, fid_pep};

use crate::eq::EventQueue;
use crate::error::{check, Error, Result};
use crate::fabric::Fabric;
use crate::fid::Object;
use crate::info::Info;

/// A listening endpoint (`fi_passive_ep` + `fi_pep_bind` + `fi_listen`):
/// connection requests arrive on its event queue as
/// [`Event::ConnectionRequest`](crate::Event::ConnectionRequest).
pub struct PassiveEndpoint {
    object: Object<fid_pep>,
    _eq: EventQueue,
    _fabric: Arc<Object<fid_fabric>>,
}

impl fmt::Debug for PassiveEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassiveEndpoint").field("raw", &self.object.as_ptr()).finish()
    }
}

impl PassiveEndpoint {
    /// Opens a passive endpoint for `info` (its `src_addr` is where it listens),
    /// binds `eq` and starts listening.
    ///
    /// ```no_run
    /// # fn demo(fabric: &libfabric::Fabric, info: &libfabric::Info, domain: &libfabric::Domain,
    /// #         cq: &libfabric::CompletionQueue) -> libfabric::Result<()> {
    /// use libfabric::{Bindings, Endpoint, Event, EventQueue, PassiveEndpoint};
    /// let eq = EventQueue::open(fabric)?;
    /// let listener = PassiveEndpoint::listen(fabric, info, &eq)?;
    /// println!("clients connect to {:?}", listener.name()?);
    /// if let Some(Event::ConnectionRequest { info, .. }) = eq.read_timeout(std::time::Duration::from_secs(5))? {
    ///     let ep = Endpoint::open(domain, &info, Bindings { cq, av: None, eq: Some(&eq), tx_cq: None })?;
    ///     ep.accept(b"welcome")?; // FI_CONNECTED follows on `eq`
    /// }
    /// # Ok(()) }
    /// ```
    pub fn listen(fabric: &Fabric, info: &Info, eq: &EventQueue) -> Result<PassiveEndpoint> {
        let mut raw = ptr::null_mut();
        // SAFETY: the fabric is open; `info` is valid for the call.
        check("fi_passive_ep", unsafe { fi_passive_ep(fabric.as_raw(), info.as_ptr(), &mut raw, ptr::null_mut()) })?;
        // SAFETY: fi_passive_ep succeeded.
        let object = unsafe { Object::new(raw, "fi_close(pep)") }
            .ok_or(Error::InvalidArgument { call: "fi_passive_ep", reason: "returned no endpoint".into() })?;
        // SAFETY: both objects are open.
        check("fi_pep_bind", unsafe { fi_pep_bind(object.as_ptr(), eq.fid(), 0) })?;
        // SAFETY: the endpoint is open and bound.
        check("fi_listen", unsafe { fi_listen(object.as_ptr()) })?;
        Ok(PassiveEndpoint { object, _eq: eq.clone(), _fabric: fabric.inner.clone() })
    }

    /// The address it listens on (`fi_getname`), for clients to connect to.
    pub fn name(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; 128];
        let mut len = buf.len();
        // SAFETY: `buf` is writable for `len` bytes.
        check("fi_getname", unsafe { fi_getname(self.object.fid(), buf.as_mut_ptr().cast(), &mut len) })?;
        buf.truncate(len);
        Ok(buf)
    }

    /// Rejects a connection request, sending `data` to the requester.
    pub fn reject(&self, request: &Info, data: &[u8]) -> Result<()> {
        let handle = request.as_raw().handle;
        // SAFETY: `handle` is the connection request's, `data` readable.
        check("fi_reject", unsafe { fi_reject(self.object.as_ptr(), handle, data.as_ptr().cast(), data.len()) })
            .map(drop)
    }
}
