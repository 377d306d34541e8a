//! Collectives: address-vector sets, joining a collective group, and the
//! collective operations on it (barrier, broadcast, allreduce).
//!
//! Every process inserts the group's members into its address vector in the
//! same order, opens an [`AvSet`] over them, and joins it
//! ([`Endpoint::join`]); the join completes with an `FI_JOIN_COMPLETE` event
//! on the endpoint's event queue. Operations then address the
//! [`CollectiveGroup`] and complete on the completion queue like any other.

use std::fmt;
use std::mem::size_of;
use std::ptr;
use std::sync::Arc;

use libfabric_sys::enums::AtomicOp;
use libfabric_sys::flags::{AvSetFlags, MrAccess};
use libfabric_sys::{
    fi_allgather, fi_allreduce, fi_alltoall, fi_av_set, fi_av_set_addr, fi_av_set_attr, fi_barrier, fi_broadcast,
    fi_gather, fi_join_collective, fi_mc_addr, fi_reduce, fi_reduce_scatter, fi_scatter, fid_av_set, fid_mc,
};

use crate::atomic::AtomicType;
use crate::av::{Address, AddressVector, AvInner};
use crate::cq::Entry;
use crate::ep::{Endpoint, OpId};
use crate::error::{check, Error, Result};
use crate::fid::{Object, ThreadModel};
use crate::ops::{Buf, OpKind, PostError};

/// A set of an address vector's members (`fi_av_set`): the whole vector here.
pub struct AvSet {
    object: Object<fid_av_set>,
    av: Arc<AvInner>,
    /// Members, when known (a range); operations whose results scale with
    /// the group need it to size their buffers.
    members: Option<usize>,
}

impl fmt::Debug for AvSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AvSet").field("raw", &self.object.as_ptr()).finish()
    }
}

impl AvSet {
    /// The set of every address in `av` (`FI_UNIVERSE`). (tcp;ofi_rxm in
    /// libfabric 1.17 answers `FI_ENOMEM`; [`range`](Self::range) works there.)
    pub fn universe<M: ThreadModel>(av: &AddressVector<M>) -> Result<AvSet> {
        Self::open(av, 0, Address::NOTAVAIL.raw, Address::NOTAVAIL.raw, AvSetFlags::UNIVERSE)
    }

    /// The set of `count` addresses from `first` to `last` of `av` (an
    /// `AvType::TABLE` vector numbers its addresses 0, 1, …).
    pub fn range<M: ThreadModel>(av: &AddressVector<M>, first: Address, last: Address, count: usize) -> Result<AvSet> {
        for a in [first, last] {
            av.check(a, "fi_av_set")?;
        }
        Self::open(av, count, first.raw, last.raw, AvSetFlags::empty())
    }

    fn open<M: ThreadModel>(
        av: &AddressVector<M>,
        count: usize,
        start: u64,
        end: u64,
        flags: AvSetFlags,
    ) -> Result<AvSet> {
        let mut attr = fi_av_set_attr {
            count,
            start_addr: start,
            end_addr: end,
            stride: 1,
            comm_key_size: 0,
            comm_key: ptr::null_mut(),
            flags: flags.bits(),
        };
        let mut raw = ptr::null_mut();
        // SAFETY: the address vector is open; `attr` is valid for the call.
        check("fi_av_set", unsafe { fi_av_set(av.as_raw(), &mut attr, &mut raw, ptr::null_mut()) })?;
        // SAFETY: fi_av_set succeeded.
        let object = unsafe { Object::new(raw, "fi_close(av set)") }
            .ok_or(Error::InvalidArgument { call: "fi_av_set", reason: "returned no set".into() })?;
        Ok(AvSet { object, av: av.inner.clone(), members: (count > 0).then_some(count) })
    }

    /// The set's collective address (`fi_av_set_addr`), to join.
    fn addr(&self) -> Result<u64> {
        let mut addr = Address::NOTAVAIL.raw;
        // SAFETY: the set is open; `addr` is writable.
        check("fi_av_set_addr", unsafe { fi_av_set_addr(self.object.as_ptr(), &mut addr) })?;
        Ok(addr)
    }
}

/// A joined collective group (`struct fid_mc`): the address collective
/// operations take. Usable once `FI_JOIN_COMPLETE` arrived.
pub struct CollectiveGroup {
    // Kept open while the group is in use.
    _object: Object<fid_mc>,
    addr: u64,
    set: Arc<AvSet>,
}

/// The collectives whose buffers scale with the group: each takes `count`
/// elements per member, and its buffer holds `count × members` elements of
/// input then as many of room for results (the largest either side can need,
/// so no operation reads or writes past the buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupOp {
    /// `fi_allgather`: every member's `count` elements, to every member.
    Allgather,
    /// `fi_alltoall`: `count` distinct elements from each member to each.
    Alltoall,
    /// `fi_reduce_scatter` with the given reduction.
    ReduceScatter(AtomicOp),
    /// `fi_reduce` with the given reduction, to the root.
    Reduce(AtomicOp),
    /// `fi_scatter` from the root.
    Scatter,
    /// `fi_gather` to the root.
    Gather,
}

impl fmt::Debug for CollectiveGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectiveGroup").field("addr", &self.addr).finish()
    }
}

impl<E: Entry, M: ThreadModel> Endpoint<E, M> {
    /// Joins the collective group of `set` (`fi_join_collective`). The join
    /// completes with an `FI_JOIN_COMPLETE` event on the endpoint's event
    /// queue; use the group only after it.
    pub fn join(&self, set: Arc<AvSet>) -> Result<CollectiveGroup> {
        if set.av.id != self.av_id() {
            return Err(Error::InvalidArgument {
                call: "fi_join_collective",
                reason: "the set belongs to another address vector than the endpoint's".into(),
            });
        }
        let coll = set.addr()?;
        let mut mc = ptr::null_mut();
        // SAFETY: the endpoint and set are open; `mc` receives the group.
        check("fi_join_collective", unsafe {
            fi_join_collective(self.as_raw(), coll, set.object.as_ptr(), 0, &mut mc, ptr::null_mut())
        })?;
        // SAFETY: the join was accepted, so `mc` is an open group.
        let object = unsafe { Object::new(mc, "fi_close(collective group)") }
            .ok_or(Error::InvalidArgument { call: "fi_join_collective", reason: "returned no group".into() })?;
        // SAFETY: the group is open.
        let addr = unsafe { fi_mc_addr(object.as_ptr()) };
        Ok(CollectiveGroup { _object: object, addr, set })
    }

    /// A barrier across the group (`fi_barrier`); completes when every member
    /// reached it. `buf` is returned with the completion (it may be empty).
    pub fn barrier(&self, group: &CollectiveGroup, buf: Buf, token: u64) -> Result<OpId, PostError> {
        let (ep, coll) = (self.as_raw(), group.addr);
        self.post_collective("fi_barrier", token, buf, |_, _, _, ctx| {
            // SAFETY: the group is joined; the context is the operation's slot.
            unsafe { fi_barrier(ep, coll, ctx) }
        })
    }

    /// Sums (or `op`s) the members' `T` values elementwise (`fi_allreduce`).
    /// `buf` holds the operands then room for as many results
    /// ([`AtomicBuf::fetch`](crate::AtomicBuf::fetch)); read them with
    /// [`AtomicBuf::results`](crate::AtomicBuf::results).
    pub fn allreduce<T: AtomicType>(
        &self,
        op: AtomicOp,
        group: &CollectiveGroup,
        buf: Buf,
        token: u64,
    ) -> Result<OpId, PostError> {
        let unit = 2 * size_of::<T>();
        if buf.is_empty() || buf.len() % unit != 0 {
            let reason = format!("{} bytes are not operands and results of {}", buf.len(), std::any::type_name::<T>());
            return Err(PostError { error: Error::InvalidArgument { call: "fi_allreduce", reason }, buf });
        }
        let count = buf.len() / unit;
        let (ep, coll) = (self.as_raw(), group.addr);
        self.post_collective("fi_allreduce", token, buf, |p, _, desc, ctx| {
            // SAFETY: the group is joined; operands and results lie inside the
            // operation's buffer, owned by its slot until completion.
            unsafe {
                let result = p.add(count * size_of::<T>());
                fi_allreduce(ep, p.cast(), count, desc, result.cast(), desc, coll, T::DATATYPE.raw(), op.raw(), 0, ctx)
            }
        })
    }

    /// Copies the root's `T` values to every member (`fi_broadcast`); `buf`
    /// holds the values (at the root) or room for them.
    pub fn broadcast<T: AtomicType>(
        &self,
        group: &CollectiveGroup,
        root: Address,
        buf: Buf,
        token: u64,
    ) -> Result<OpId, PostError> {
        let root = match self.destination("fi_broadcast", root) {
            Ok(r) => r,
            Err(error) => return Err(PostError { error, buf }),
        };
        let count = buf.len() / size_of::<T>();
        let (ep, coll) = (self.as_raw(), group.addr);
        self.post_collective("fi_broadcast", token, buf, |p, _, desc, ctx| {
            // SAFETY: as in `allreduce`.
            unsafe { fi_broadcast(ep, p.cast(), count, desc, coll, root, T::DATATYPE.raw(), 0, ctx) }
        })
    }

    /// One of the group-sized collectives ([`GroupOp`]) on `count` elements of
    /// `T` per member; `root` for the rooted ones (reduce, scatter, gather).
    /// `buf` holds `count × members` elements of input, then as many of room
    /// for the results, which come back in the buffer with the completion.
    /// The group's size must be known: join a set made by [`AvSet::range`].
    #[allow(clippy::too_many_arguments)]
    pub fn group_op<T: AtomicType>(
        &self,
        op: GroupOp,
        group: &CollectiveGroup,
        count: usize,
        root: Option<Address>,
        buf: Buf,
        token: u64,
    ) -> Result<OpId, PostError> {
        let call = match op {
            GroupOp::Allgather => "fi_allgather",
            GroupOp::Alltoall => "fi_alltoall",
            GroupOp::ReduceScatter(_) => "fi_reduce_scatter",
            GroupOp::Reduce(_) => "fi_reduce",
            GroupOp::Scatter => "fi_scatter",
            GroupOp::Gather => "fi_gather",
        };
        let fail = |reason: String, buf: Buf| Err(PostError { error: Error::InvalidArgument { call, reason }, buf });
        let Some(members) = group.set.members else {
            return fail("the group's size is unknown: join a set made by AvSet::range".into(), buf);
        };
        let section = count.checked_mul(members).and_then(|n| n.checked_mul(size_of::<T>()));
        match section {
            Some(bytes) if bytes > 0 && buf.len() >= 2 * bytes => {}
            _ => return fail(format!("{count} elements per member of {members} need twice that many"), buf),
        }
        let rooted = matches!(op, GroupOp::Reduce(_) | GroupOp::Scatter | GroupOp::Gather);
        let root = match (rooted, root) {
            (true, Some(r)) => match self.destination(call, r) {
                Ok(r) => r,
                Err(error) => return Err(PostError { error, buf }),
            },
            (true, None) => return fail("this collective needs a root".into(), buf),
            (false, _) => 0,
        };
        let results = count * members * size_of::<T>();
        let (ep, coll, dt) = (self.as_raw(), group.addr, T::DATATYPE.raw());
        self.post_collective(call, token, buf, |p, _, desc, ctx| {
            // SAFETY: the group is joined; input and results (each
            // `count × members` elements, the most any of these reads or
            // writes) lie inside the operation's buffer, owned by its slot.
            unsafe {
                let (src, dst) = (p.cast::<libc::c_void>(), p.add(results).cast::<libc::c_void>());
                match op {
                    GroupOp::Allgather => fi_allgather(ep, src, count, desc, dst, desc, coll, dt, 0, ctx),
                    GroupOp::Alltoall => fi_alltoall(ep, src, count, desc, dst, desc, coll, dt, 0, ctx),
                    GroupOp::ReduceScatter(o) => {
                        fi_reduce_scatter(ep, src, count, desc, dst, desc, coll, dt, o.raw(), 0, ctx)
                    }
                    GroupOp::Reduce(o) => fi_reduce(ep, src, count, desc, dst, desc, coll, root, dt, o.raw(), 0, ctx),
                    GroupOp::Scatter => fi_scatter(ep, src, count, desc, dst, desc, coll, root, dt, 0, ctx),
                    GroupOp::Gather => fi_gather(ep, src, count, desc, dst, desc, coll, root, dt, 0, ctx),
                }
            }
        })
    }

    fn post_collective(
        &self,
        call: &'static str,
        token: u64,
        buf: Buf,
        post: impl FnOnce(*mut u8, usize, *mut libc::c_void, *mut libc::c_void) -> isize,
    ) -> Result<OpId, PostError> {
        self.post(
            call,
            OpKind::Collective,
            token,
            buf,
            Address::UNSPEC,
            MrAccess::SEND | MrAccess::RECV,
            |p, len, desc, ctx, _| post(p, len, desc, ctx),
        )
    }
}
