//! RMA: reading and writing a peer's registered memory.
//!
//! The owner turns a [`Buf`] into [`Exposed`] memory, granting exactly the
//! remote access it chooses (a plain registration is local-only), and hands the
//! peer a [`RemoteMemory`] descriptor (address, length, key). While memory is
//! exposed a peer may write it at any moment, so its owner reads and writes it
//! only by copying ([`Exposed::read_at`], [`Exposed::write_at`]), never through
//! a reference. The initiator posts RMA operations on owned `Buf`s, like
//! messages.

use std::fmt;
use std::sync::Arc;

use libfabric_sys::flags::{BindFlags, MrAccess, MrMode, OpFlags};
use libfabric_sys::{
    fi_inject_write, fi_inject_writedata, fi_mr_bind, fi_mr_enable, fi_msg_rma, fi_read, fi_readmsg, fi_readv,
    fi_rma_iov, fi_write, fi_writedata, fi_writemsg, fi_writev,
};

use crate::av::Address;
use crate::cntr::{CntrInner, Counter};
use crate::cq::Entry;
use crate::ep::{Endpoint, OpId};
use crate::error::{check, Error, Result};
use crate::fid::ThreadModel;
use crate::mr::MemoryRegion;
use crate::ops::{Buf, OpKind, PostError};

/// What a peer needs to reach exposed memory: where it is, how long, the key.
///
/// `addr` is the buffer's virtual address when the provider uses
/// `FI_MR_VIRT_ADDR`, and 0 (offsets from the start) otherwise; operations take
/// an offset and add it, so callers never deal with either form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteMemory {
    /// The address to add offsets to.
    pub addr: u64,
    /// The length exposed.
    pub len: u64,
    /// The remote key (`fi_mr_key`).
    pub key: u64,
}

impl RemoteMemory {
    /// 24 bytes, little-endian, to send to the peer.
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.addr.to_le_bytes());
        out[8..16].copy_from_slice(&self.len.to_le_bytes());
        out[16..].copy_from_slice(&self.key.to_le_bytes());
        out
    }

    /// Reads [`to_bytes`](Self::to_bytes)' form; `None` unless exactly 24 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<RemoteMemory> {
        let word = |i: usize| bytes.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        if bytes.len() != 24 {
            return None;
        }
        Some(RemoteMemory { addr: word(0)?, len: word(8)?, key: word(16)? })
    }

    /// The remote address of `offset`, if `offset..offset + len` lies inside.
    fn at(&self, call: &'static str, offset: u64, len: usize) -> Result<u64> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.len => Ok(self.addr + offset),
            _ => Err(Error::InvalidArgument {
                call,
                reason: format!("{len} bytes at offset {offset} exceed the {} bytes exposed", self.len),
            }),
        }
    }
}

/// Memory a remote peer may access. Dropping it (or [`into_buf`](Self::into_buf))
/// closes the registration first, so no remote access outlives it.
pub struct Exposed {
    // Declared before `bytes`: the registration closes before the memory goes.
    mr: MemoryRegion,
    /// Counters bound to the registration: closed after it, since a provider
    /// may count into them until it is gone (sockets keeps a bare pointer).
    _counters: Vec<Arc<CntrInner>>,
    bytes: Buf,
    remote: RemoteMemory,
}

impl fmt::Debug for Exposed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exposed").field("remote", &self.remote).finish()
    }
}

impl Exposed {
    /// The descriptor to hand to the peer.
    pub fn remote(&self) -> RemoteMemory {
        self.remote
    }

    /// The registration.
    pub fn memory_region(&self) -> &MemoryRegion {
        &self.mr
    }

    /// Copies `out.len()` bytes at `offset` out of the exposed memory.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.range("Exposed::read_at", offset, out.len())?;
        let base = self.bytes.as_ptr();
        for (i, o) in out.iter_mut().enumerate() {
            // SAFETY: in bounds (checked above). A volatile read, because a
            // peer may write this memory at any moment, outside Rust's view.
            *o = unsafe { std::ptr::read_volatile(base.add(offset + i)) };
        }
        Ok(())
    }

    /// Copies `data` into the exposed memory at `offset`.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.range("Exposed::write_at", offset, data.len())?;
        let base = self.bytes.as_ptr().cast_mut();
        for (i, d) in data.iter().enumerate() {
            // SAFETY: in bounds; volatile for the same reason as in `read_at`.
            // The memory is the Buf's own heap allocation, writable by its owner.
            unsafe { std::ptr::write_volatile(base.add(offset + i), *d) };
        }
        Ok(())
    }

    /// Ends remote access (closes the registration) and returns the buffer.
    pub fn into_buf(self) -> Buf {
        let Exposed { mr, bytes, .. } = self;
        drop(mr);
        bytes
    }

    fn range(&self, call: &'static str, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.bytes.capacity() => Ok(()),
            _ => Err(Error::InvalidArgument {
                call,
                reason: format!("{len} bytes at {offset} exceed the {} bytes exposed", self.bytes.capacity()),
            }),
        }
    }
}

impl<E: Entry, M: ThreadModel> Endpoint<E, M> {
    /// Exposes `buf` to remote peers with `access` (`MrAccess::REMOTE_READ`,
    /// `REMOTE_WRITE`, or both; nothing else is granted).
    ///
    /// ```no_run
    /// # fn demo(ep: &libfabric::Endpoint) -> libfabric::Result<()> {
    /// use libfabric::{Buf, MrAccess};
    /// let window = ep.expose(Buf::zeroed(1 << 20), MrAccess::REMOTE_WRITE)?;
    /// let for_the_peer = window.remote().to_bytes(); // send it out of band
    /// // ... later, after the peer wrote:
    /// let mut head = [0u8; 16];
    /// window.read_at(0, &mut head)?;
    /// # let _ = for_the_peer; Ok(()) }
    /// ```
    pub fn expose(&self, buf: Buf, access: MrAccess) -> Result<Exposed> {
        self.expose_with_counters(buf, access, &[])
    }

    /// Like [`expose`](Self::expose), also binding the registration to
    /// counters (`fi_mr_bind`) before it is enabled: each counts the remote
    /// accesses its flags name (`BindFlags::REMOTE_WRITE`, the one flag the
    /// man page defines; `REMOTE_READ` is passed on as given). The counters
    /// stay open for as long as the exposure.
    ///
    /// This counts per region. The usual way to count accesses to all of an
    /// endpoint's memory is a counter bound to the endpoint with
    /// `BindFlags::REMOTE_WRITE`/`REMOTE_READ` and `Caps::RMA_EVENT`
    /// ([`open_with_counters`](Self::open_with_counters)). Of libfabric 1.17's
    /// providers only sockets binds regions to counters; the others answer
    /// `FI_ENOSYS`. A domain whose `mr_mode` has `FI_MR_RMA_EVENT` is refused
    /// when counters are given: its regions must be registered with
    /// `FI_RMA_EVENT`, which this crate's registration does not pass yet.
    ///
    /// ```no_run
    /// # fn demo(ep: &libfabric::Endpoint, domain: &libfabric::Domain) -> libfabric::Result<()> {
    /// use libfabric::sys::flags::BindFlags;
    /// use libfabric::{Buf, Counter, MrAccess, WaitObj};
    /// let writes: Counter = Counter::open(domain, WaitObj::UNSPEC)?;
    /// let window =
    ///     ep.expose_with_counters(Buf::zeroed(4096), MrAccess::REMOTE_WRITE, &[(&writes, BindFlags::REMOTE_WRITE)])?;
    /// // ... hand window.remote() to the peer; after its 3 writes:
    /// writes.wait(3, std::time::Duration::from_secs(5))?;
    /// # Ok(()) }
    /// ```
    pub fn expose_with_counters(
        &self,
        mut buf: Buf,
        access: MrAccess,
        counters: &[(&Counter<M>, BindFlags)],
    ) -> Result<Exposed> {
        let remote_only = MrAccess::REMOTE_READ | MrAccess::REMOTE_WRITE;
        if access.is_empty() || !remote_only.contains(access) {
            return Err(Error::InvalidArgument {
                call: "fi_mr_reg",
                reason: format!("expose grants remote read and/or write, not {access:?}"),
            });
        }
        let remote_events = BindFlags::REMOTE_READ | BindFlags::REMOTE_WRITE;
        if let Some((_, flags)) = counters.iter().find(|(_, f)| f.is_empty() || !remote_events.contains(*f)) {
            return Err(Error::InvalidArgument {
                call: "fi_mr_bind",
                reason: format!("a region counts remote reads and/or writes, not {flags:?}"),
            });
        }
        let mode = self.inner.info.mr_mode();
        if mode.contains(MrMode::RMA_EVENT) && !counters.is_empty() {
            return Err(Error::InvalidArgument {
                call: "fi_mr_reg",
                reason: "FI_MR_RMA_EVENT: the region would need FI_RMA_EVENT at registration, which is not supported"
                    .into(),
            });
        }
        buf.mr = None;
        let len = buf.capacity();
        let ptr = buf.full_ptr();
        // SAFETY: the registration is stored beside the bytes in `Exposed` and
        // closed before them; a Buf never reallocates; the owner touches the
        // bytes only through volatile copies while they are exposed.
        let mr = unsafe { MemoryRegion::register(&self.inner.domain, ptr, len.max(1), access)? };
        // Every binding comes before fi_mr_enable, after which none may be made.
        if mode.contains(MrMode::ENDPOINT) {
            // SAFETY: the region and the endpoint are open.
            check("fi_mr_bind", unsafe { fi_mr_bind(mr.as_raw(), self.fid(), 0) })?;
        }
        for (counter, flags) in counters {
            // SAFETY: the region and the counter are open; the counter is kept
            // open in `Exposed` until after the region is closed (and, should
            // this fail, the region closes here while the caller's counter lives).
            check("fi_mr_bind(cntr)", unsafe { fi_mr_bind(mr.as_raw(), counter.fid(), flags.bits()) })?;
        }
        if mode.contains(MrMode::ENDPOINT) {
            // SAFETY: the region is open and fully bound.
            check("fi_mr_enable", unsafe { fi_mr_enable(mr.as_raw()) })?;
        }
        let addr = if mode.contains(MrMode::VIRT_ADDR) { ptr as u64 } else { 0 };
        let remote = RemoteMemory { addr, len: len as u64, key: mr.key() };
        let counters = counters.iter().map(|(c, _)| c.inner.clone()).collect();
        Ok(Exposed { mr, _counters: counters, bytes: buf, remote })
    }

    /// Writes `buf` into the peer's memory at `offset` (`fi_write`).
    pub fn write(
        &self,
        buf: Buf,
        dest: Address,
        remote: &RemoteMemory,
        offset: u64,
        token: u64,
    ) -> Result<OpId, PostError> {
        let at = match remote.at("fi_write", offset, buf.len()) {
            Ok(a) => a,
            Err(error) => return Err(PostError { error, buf }),
        };
        let (ep, key) = (self.as_raw(), remote.key);
        self.post("fi_write", OpKind::Write, token, buf, dest, MrAccess::WRITE, |p, len, desc, ctx, peer| {
            // SAFETY: the buffer is owned by the operation's slot until its completion.
            unsafe { fi_write(ep, p.cast(), len, desc, peer, at, key, ctx) }
        })
    }

    /// Writes with remote CQ data (`fi_writedata`): the target's completion
    /// queue reports `data`.
    pub fn write_data(
        &self,
        buf: Buf,
        data: u64,
        dest: Address,
        remote: &RemoteMemory,
        offset: u64,
        token: u64,
    ) -> Result<OpId, PostError> {
        let at = match remote.at("fi_writedata", offset, buf.len()) {
            Ok(a) => a,
            Err(error) => return Err(PostError { error, buf }),
        };
        let (ep, key) = (self.as_raw(), remote.key);
        self.post("fi_writedata", OpKind::Write, token, buf, dest, MrAccess::WRITE, |p, len, desc, ctx, peer| {
            // SAFETY: as in `write`.
            unsafe { fi_writedata(ep, p.cast(), len, desc, data, peer, at, key, ctx) }
        })
    }

    /// Writes with explicit flags (`fi_writemsg`), e.g.
    /// `OpFlags::DELIVERY_COMPLETE` so the completion reports the target's
    /// verdict, or `OpFlags::REMOTE_CQ_DATA` with `data`.
    #[allow(clippy::too_many_arguments)]
    pub fn write_with(
        &self,
        buf: Buf,
        dest: Address,
        remote: &RemoteMemory,
        offset: u64,
        data: u64,
        flags: OpFlags,
        token: u64,
    ) -> Result<OpId, PostError> {
        let at = match remote.at("fi_writemsg", offset, buf.len()) {
            Ok(a) => a,
            Err(error) => return Err(PostError { error, buf }),
        };
        let (ep, key) = (self.as_raw(), remote.key);
        self.post("fi_writemsg", OpKind::Write, token, buf, dest, MrAccess::WRITE, |p, len, mut desc, ctx, peer| {
            let iov = libc::iovec { iov_base: p.cast(), iov_len: len };
            let rma_iov = fi_rma_iov { addr: at, len, key };
            let msg = fi_msg_rma {
                msg_iov: &iov,
                desc: &mut desc,
                iov_count: 1,
                addr: peer,
                rma_iov: &rma_iov,
                rma_iov_count: 1,
                context: ctx,
                data,
            };
            // SAFETY: as in `write`; `msg` and the iovs live for the call.
            unsafe { fi_writemsg(ep, &msg, (flags | OpFlags::COMPLETION).bits()) }
        })
    }

    /// Reads the peer's memory at `offset` into `buf` (all of its capacity;
    /// `fi_read`).
    pub fn read(
        &self,
        buf: Buf,
        dest: Address,
        remote: &RemoteMemory,
        offset: u64,
        token: u64,
    ) -> Result<OpId, PostError> {
        let at = match remote.at("fi_read", offset, buf.capacity()) {
            Ok(a) => a,
            Err(error) => return Err(PostError { error, buf }),
        };
        let (ep, key) = (self.as_raw(), remote.key);
        self.post("fi_read", OpKind::Read, token, buf, dest, MrAccess::READ, |p, len, desc, ctx, peer| {
            // SAFETY: as in `write`; the provider may write `len` bytes.
            unsafe { fi_read(ep, p.cast(), len, desc, peer, at, key, ctx) }
        })
    }

    /// `fi_writev`: gathers several local buffers into the peer's memory.
    ///
    /// # Safety
    /// Every buffer of `iov` (with its descriptor in `desc`, one per buffer or
    /// none) stays valid and unchanged until the operation completes;
    /// `context` is not one this crate manages.
    pub unsafe fn writev_raw(
        &self,
        iov: &[libc::iovec],
        desc: &mut [*mut libc::c_void],
        dest: Address,
        remote: &RemoteMemory,
        offset: u64,
        context: *mut libc::c_void,
    ) -> Result<()> {
        let len = iov.iter().map(|v| v.iov_len).sum();
        let at = remote.at("fi_writev", offset, len)?;
        let dest = self.destination("fi_writev", dest)?;
        let desc = if desc.is_empty() { std::ptr::null_mut() } else { desc.as_mut_ptr() };
        check("fi_writev", fi_writev(self.as_raw(), iov.as_ptr(), desc, iov.len(), dest, at, remote.key, context))
            .map(drop)
    }

    /// `fi_readv`: scatters the peer's memory into several local buffers.
    ///
    /// # Safety
    /// Every buffer of `iov` stays valid, unmoved and untouched by the caller
    /// until the operation completes; `context` is not one this crate manages.
    pub unsafe fn readv_raw(
        &self,
        iov: &[libc::iovec],
        desc: &mut [*mut libc::c_void],
        dest: Address,
        remote: &RemoteMemory,
        offset: u64,
        context: *mut libc::c_void,
    ) -> Result<()> {
        let len = iov.iter().map(|v| v.iov_len).sum();
        let at = remote.at("fi_readv", offset, len)?;
        let dest = self.destination("fi_readv", dest)?;
        let desc = if desc.is_empty() { std::ptr::null_mut() } else { desc.as_mut_ptr() };
        check("fi_readv", fi_readv(self.as_raw(), iov.as_ptr(), desc, iov.len(), dest, at, remote.key, context))
            .map(drop)
    }

    /// `fi_readmsg` with caller-managed memory, remote iovs and context.
    ///
    /// # Safety
    /// As for [`readv_raw`](Self::readv_raw); `msg.addr` is a handle of the
    /// address vector bound to this endpoint and `msg.rma_iov` lies inside
    /// memory the peer exposed.
    pub unsafe fn readmsg_raw(&self, msg: &fi_msg_rma, flags: OpFlags) -> Result<()> {
        check("fi_readmsg", fi_readmsg(self.as_raw(), msg, flags.bits())).map(drop)
    }

    /// `fi_writemsg` with caller-managed memory, remote iovs and context.
    ///
    /// # Safety
    /// As for [`writev_raw`](Self::writev_raw), and as for
    /// [`readmsg_raw`](Self::readmsg_raw) about `msg`.
    pub unsafe fn writemsg_raw(&self, msg: &fi_msg_rma, flags: OpFlags) -> Result<()> {
        check("fi_writemsg", fi_writemsg(self.as_raw(), msg, flags.bits())).map(drop)
    }

    /// Writes a small buffer with no completion (`fi_inject_write`); the data is
    /// copied before the call returns.
    pub fn inject_write(&self, data: &[u8], dest: Address, remote: &RemoteMemory, offset: u64) -> Result<()> {
        self.check_inject("fi_inject_write", data)?;
        let dest = self.destination("fi_inject_write", dest)?;
        let at = remote.at("fi_inject_write", offset, data.len())?;
        // SAFETY: inject copies `data` before returning.
        check("fi_inject_write", unsafe {
            fi_inject_write(self.as_raw(), data.as_ptr().cast(), data.len(), dest, at, remote.key)
        })
        .map(drop)
    }

    /// `fi_inject_writedata`: inject write with remote CQ data.
    pub fn inject_write_data(
        &self,
        data: &[u8],
        cq_data: u64,
        dest: Address,
        remote: &RemoteMemory,
        offset: u64,
    ) -> Result<()> {
        self.check_inject("fi_inject_writedata", data)?;
        let dest = self.destination("fi_inject_writedata", dest)?;
        let at = remote.at("fi_inject_writedata", offset, data.len())?;
        // SAFETY: inject copies `data` before returning.
        check("fi_inject_writedata", unsafe {
            fi_inject_writedata(self.as_raw(), data.as_ptr().cast(), data.len(), cq_data, dest, at, remote.key)
        })
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip_and_bound_offsets() {
        let r = RemoteMemory { addr: 0x1000, len: 64, key: 7 };
        assert_eq!(RemoteMemory::from_bytes(&r.to_bytes()), Some(r));
        assert_eq!(RemoteMemory::from_bytes(&[0; 23]), None);
        assert_eq!(r.at("x", 60, 4).unwrap(), 0x1000 + 60);
        assert!(r.at("x", 61, 4).is_err());
        assert!(r.at("x", u64::MAX, 1).is_err());
    }
}
