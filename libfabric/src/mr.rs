//! Memory registration.
//!
//! Registering memory safely means the memory outlives the registration. Two
//! ways here: a [`Buf`](crate::Buf) carries its own registration (closed before
//! its bytes are freed, and a `Buf` never reallocates), or the `unsafe`
//! [`MemoryRegion::register_raw`] with that contract written down.

use std::fmt;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libfabric_sys::flags::{MrAccess, MrMode};
use libfabric_sys::{
    fi_mr_bind, fi_mr_desc, fi_mr_enable, fi_mr_key, fi_mr_reg, fi_mr_regattr, fi_mr_regv, fid, fid_mr,
};

use crate::domain::{Domain, DomainInner};
use crate::error::{check, Error, Result};
use crate::fid::{Object, ThreadModel};

/// Keys this process asks for when the provider lets the application choose
/// (no `FI_MR_PROV_KEY`): unique within the process, so within every domain.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A registered memory region (`fi_mr_reg`).
pub struct MemoryRegion {
    object: Object<fid_mr>,
    _domain: Arc<DomainInner>,
}

impl fmt::Debug for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRegion").field("key", &self.key()).finish()
    }
}

impl MemoryRegion {
    /// Registers `len` bytes at `addr` for `access`.
    ///
    /// With `FI_MR_ENDPOINT` the region must then be bound to an endpoint and
    /// enabled ([`bind_to`](Self::bind_to)) before use.
    ///
    /// # Safety
    /// The memory stays allocated, and is not moved, until the region is
    /// dropped, and nothing but libfabric writes it while a remote peer or an
    /// operation may access it.
    pub unsafe fn register_raw<M: ThreadModel>(
        domain: &Domain<M>,
        addr: *const u8,
        len: usize,
        access: MrAccess,
    ) -> Result<MemoryRegion> {
        Self::register(&domain.inner, addr, len, access)
    }

    /// [`register_raw`](Self::register_raw) on a domain's shared part.
    ///
    /// # Safety
    /// As for `register_raw`.
    pub(crate) unsafe fn register(
        domain: &Arc<DomainInner>,
        addr: *const u8,
        len: usize,
        access: MrAccess,
    ) -> Result<MemoryRegion> {
        let mode = domain.info.mr_mode();
        let key = if mode.contains(MrMode::PROV_KEY) { 0 } else { NEXT_KEY.fetch_add(1, Ordering::Relaxed) };
        let mut raw = ptr::null_mut();
        check(
            "fi_mr_reg",
            fi_mr_reg(domain.object.as_ptr(), addr.cast(), len, access.bits(), 0, key, 0, &mut raw, ptr::null_mut()),
        )?;
        let object = Object::new(raw, "fi_close(mr)")
            .ok_or(Error::InvalidArgument { call: "fi_mr_reg", reason: "returned no region".into() })?;
        Ok(MemoryRegion { object, _domain: domain.clone() })
    }

    /// Registers several buffers as one region (`fi_mr_regv`).
    ///
    /// # Safety
    /// As for [`register_raw`](Self::register_raw), for every buffer of `iov`.
    pub unsafe fn register_iov_raw<M: ThreadModel>(
        domain: &Domain<M>,
        iov: &[libc::iovec],
        access: MrAccess,
    ) -> Result<MemoryRegion> {
        let mode = domain.info().mr_mode();
        let key = if mode.contains(MrMode::PROV_KEY) { 0 } else { NEXT_KEY.fetch_add(1, Ordering::Relaxed) };
        let mut raw = ptr::null_mut();
        check(
            "fi_mr_regv",
            fi_mr_regv(domain.as_raw(), iov.as_ptr(), iov.len(), access.bits(), 0, key, 0, &mut raw, ptr::null_mut()),
        )?;
        let object = Object::new(raw, "fi_close(mr)")
            .ok_or(Error::InvalidArgument { call: "fi_mr_regv", reason: "returned no region".into() })?;
        Ok(MemoryRegion { object, _domain: domain.inner.clone() })
    }

    /// Registers from a full attribute struct (`fi_mr_regattr`): device memory
    /// (`iface`, `device`), offsets, requested keys.
    ///
    /// # Safety
    /// As for [`register_raw`](Self::register_raw), for the memory `attr`
    /// describes; `attr`'s pointers are valid for the call.
    pub unsafe fn register_attr_raw<M: ThreadModel>(
        domain: &Domain<M>,
        attr: &libfabric_sys::fi_mr_attr,
        flags: u64,
    ) -> Result<MemoryRegion> {
        let mut raw = ptr::null_mut();
        check("fi_mr_regattr", fi_mr_regattr(domain.as_raw(), attr, flags, &mut raw))?;
        let object = Object::new(raw, "fi_close(mr)")
            .ok_or(Error::InvalidArgument { call: "fi_mr_regattr", reason: "returned no region".into() })?;
        Ok(MemoryRegion { object, _domain: domain.inner.clone() })
    }

    /// For `FI_MR_ENDPOINT` providers: binds the region to `ep` and enables it
    /// (`fi_mr_bind`, `fi_mr_enable`).
    pub fn bind_to<E: crate::Entry, M: ThreadModel>(&self, ep: &crate::Endpoint<E, M>) -> Result<()> {
        self.bind_and_enable(ep.fid())
    }

    /// [`bind_to`](Self::bind_to) by `struct fid`.
    pub(crate) fn bind_and_enable(&self, ep: *mut fid) -> Result<()> {
        // SAFETY: both objects are open.
        check("fi_mr_bind", unsafe { fi_mr_bind(self.object.as_ptr(), ep, 0) })?;
        // SAFETY: the region is open and bound.
        check("fi_mr_enable", unsafe { fi_mr_enable(self.object.as_ptr()) }).map(drop)
    }

    /// The local descriptor operations pass as `desc` (`fi_mr_desc`).
    pub fn desc(&self) -> *mut libc::c_void {
        // SAFETY: the region is open.
        unsafe { fi_mr_desc(self.object.as_ptr()) }
    }

    /// The remote key peers use to reach the region (`fi_mr_key`).
    pub fn key(&self) -> u64 {
        // SAFETY: the region is open.
        unsafe { fi_mr_key(self.object.as_ptr()) }
    }

    /// The raw object, for calls this crate does not wrap.
    pub fn as_raw(&self) -> *mut fid_mr {
        self.object.as_ptr()
    }
}
