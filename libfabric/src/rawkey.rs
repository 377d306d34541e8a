//! Raw memory keys (`FI_MR_RAW`): for providers whose keys do not fit 64
//! bits, the owner hands out the raw key bytes and the peer maps them to a
//! usable 64-bit key in its own domain (`fi_mr_raw_attr`, `fi_mr_map_raw`,
//! `fi_mr_unmap_key`).

use std::fmt;
use std::sync::Arc;

use libfabric_sys::{fi_mr_map_raw, fi_mr_raw_attr, fi_mr_unmap_key, FI_ETOOSMALL};

use crate::cq::Entry;
use crate::domain::DomainInner;
use crate::ep::Endpoint;
use crate::error::{check, Error, Result};
use crate::fid::ThreadModel;
use crate::rma::{Exposed, RemoteMemory};

/// Exposed memory described with its raw key, to send to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRemoteMemory {
    /// The base address the raw key was issued for (`fi_mr_raw_attr`).
    pub base_addr: u64,
    /// The address to add offsets to (as in [`RemoteMemory::addr`]).
    pub addr: u64,
    /// The length exposed.
    pub len: u64,
    /// The raw key bytes.
    pub key: Vec<u8>,
}

impl Exposed {
    /// The raw-key description of this memory (`fi_mr_raw_attr`); providers
    /// without raw keys answer with an error (`FI_ENOSYS`, `FI_EOPNOTSUPP`).
    pub fn raw_remote(&self) -> Result<RawRemoteMemory> {
        let mr = self.memory_region().as_raw();
        let mut base_addr = 0u64;
        let mut size = 0usize;
        // SAFETY: the region is open; a zero size asks for the key's size.
        let ret = unsafe { fi_mr_raw_attr(mr, &mut base_addr, std::ptr::null_mut(), &mut size, 0) };
        if ret != -(FI_ETOOSMALL as i32) {
            check("fi_mr_raw_attr", ret)?;
        }
        let mut key = vec![0u8; size];
        // SAFETY: `key` is writable for `size` bytes.
        check("fi_mr_raw_attr", unsafe { fi_mr_raw_attr(mr, &mut base_addr, key.as_mut_ptr(), &mut size, 0) })?;
        key.truncate(size);
        let remote = self.remote();
        Ok(RawRemoteMemory { base_addr, addr: remote.addr, len: remote.len, key })
    }
}

/// A raw key mapped into this process's domain: usable as a
/// [`RemoteMemory`] until dropped (`fi_mr_unmap_key`).
pub struct MappedRemote {
    remote: RemoteMemory,
    domain: Arc<DomainInner>,
}

impl fmt::Debug for MappedRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedRemote").field("remote", &self.remote).finish()
    }
}

impl MappedRemote {
    /// The descriptor RMA and atomic operations take.
    pub fn remote(&self) -> &RemoteMemory {
        &self.remote
    }
}

impl Drop for MappedRemote {
    fn drop(&mut self) {
        // SAFETY: the key was mapped in this domain, which is still open.
        let ret = unsafe { fi_mr_unmap_key(self.domain.object.as_ptr(), self.remote.key) };
        if ret != 0 {
            tracing::debug!(ret, "fi_mr_unmap_key");
        }
    }
}

impl<E: Entry, M: ThreadModel> Endpoint<E, M> {
    /// Maps a peer's raw key into this endpoint's domain (`fi_mr_map_raw`).
    pub fn map_raw(&self, raw: &RawRemoteMemory) -> Result<MappedRemote> {
        if raw.key.is_empty() {
            return Err(Error::InvalidArgument { call: "fi_mr_map_raw", reason: "an empty raw key".into() });
        }
        let mut key = 0u64;
        let mut bytes = raw.key.clone();
        // SAFETY: the domain is open; the key bytes are readable for their length.
        check("fi_mr_map_raw", unsafe {
            fi_mr_map_raw(
                self.inner.domain.object.as_ptr(),
                raw.base_addr,
                bytes.as_mut_ptr(),
                bytes.len(),
                &mut key,
                0,
            )
        })?;
        Ok(MappedRemote {
            remote: RemoteMemory { addr: raw.addr, len: raw.len, key },
            domain: self.inner.domain.clone(),
        })
    }
}
