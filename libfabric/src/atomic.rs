//! Atomics on a peer's exposed memory, typed by the Rust element type.
//!
//! The element type `T` picks the `fi_datatype` ([`AtomicType`]), so the
//! datatype libfabric is told always matches the values: a mismatch does not
//! compile. An operation's buffer holds its sections back to back, built with
//! [`AtomicBuf`]: the operands, then (for compare) the compare values, then (for
//! fetch and compare) room for the results, which come back in the buffer with
//! the completion.

use std::mem::size_of;

use libfabric_sys::enums::{AtomicOp, Datatype};
use libfabric_sys::flags::{MrAccess, QueryAtomicFlags};
use libfabric_sys::{
    fi_atomic, fi_atomic_attr, fi_atomicvalid, fi_compare_atomic, fi_compare_atomicvalid, fi_fetch_atomic,
    fi_fetch_atomicvalid, fi_inject_atomic, fi_query_atomic,
};

use crate::av::Address;
use crate::cq::Entry;
use crate::ep::{Endpoint, OpId};
use crate::error::{check, Error, Result};
use crate::fid::ThreadModel;
use crate::ops::{Buf, OpKind, PostError};
use crate::rma::RemoteMemory;

mod private {
    pub trait Sealed {}
}

/// A Rust type libfabric atomics operate on, with its `fi_datatype`.
pub trait AtomicType: private::Sealed + Copy + Default + PartialEq + std::fmt::Debug + Send + 'static {
    /// The matching `enum fi_datatype` value.
    const DATATYPE: Datatype;
    /// Reads one value from native-endian bytes.
    fn from_bytes(bytes: &[u8]) -> Self;
    /// Appends the value's native-endian bytes.
    fn put(self, out: &mut Vec<u8>);
}

macro_rules! atomic_types {
    ($($t:ty => $d:ident),* $(,)?) => {$(
        impl private::Sealed for $t {}
        impl AtomicType for $t {
            const DATATYPE: Datatype = Datatype::$d;
            fn from_bytes(bytes: &[u8]) -> Self {
                let mut raw = [0u8; size_of::<$t>()];
                raw.copy_from_slice(&bytes[..size_of::<$t>()]);
                <$t>::from_ne_bytes(raw)
            }
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_ne_bytes());
            }
        }
    )*};
}

atomic_types!(
    i8 => INT8, u8 => UINT8, i16 => INT16, u16 => UINT16, i32 => INT32, u32 => UINT32,
    i64 => INT64, u64 => UINT64, f32 => FLOAT, f64 => DOUBLE,
);

/// Builds and reads the buffers of atomic operations.
///
/// ```no_run
/// # fn demo(ep: &libfabric::Endpoint, peer: libfabric::Address, remote: &libfabric::RemoteMemory)
/// #     -> Result<(), Box<dyn std::error::Error>> {
/// use libfabric::{AtomicBuf, AtomicOp};
/// // Fetch-add 1 to the u64 at offset 0 of the peer's exposed memory.
/// ep.fetch_atomic::<u64>(AtomicOp::SUM, AtomicBuf::fetch(&[1u64]), peer, remote, 0, 1)?;
/// // ... when its completion returns the buffer `buf`:
/// # let buf = libfabric::Buf::zeroed(16);
/// let previous: u64 = AtomicBuf::results::<u64>(&buf, 1)[0];
/// # let _ = previous; Ok(()) }
/// ```
#[derive(Debug)]
pub struct AtomicBuf;

impl AtomicBuf {
    /// A buffer for [`Endpoint::atomic`]: the operands.
    pub fn operands<T: AtomicType>(values: &[T]) -> Buf {
        Self::sections(&[values], values.len(), 0)
    }

    /// A buffer for [`Endpoint::fetch_atomic`]: the operands, then room for
    /// as many results.
    pub fn fetch<T: AtomicType>(operands: &[T]) -> Buf {
        Self::sections(&[operands], operands.len(), 1)
    }

    /// A buffer for [`Endpoint::compare_atomic`]: the operands, the compare
    /// values (as many), then room for the results.
    pub fn compare<T: AtomicType>(operands: &[T], compare: &[T]) -> Result<Buf> {
        if operands.len() != compare.len() {
            return Err(Error::InvalidArgument {
                call: "fi_compare_atomic",
                reason: format!("{} operands but {} compare values", operands.len(), compare.len()),
            });
        }
        Ok(Self::sections(&[operands, compare], operands.len(), 1))
    }

    fn sections<T: AtomicType>(filled: &[&[T]], count: usize, empty: usize) -> Buf {
        let mut bytes = Vec::with_capacity((filled.len() + empty) * count * size_of::<T>());
        for section in filled {
            section.iter().for_each(|v| v.put(&mut bytes));
        }
        bytes.resize(bytes.capacity(), 0);
        Buf::from(bytes)
    }

    /// The results of a completed fetch or compare operation: the last
    /// section of its buffer.
    pub fn results<T: AtomicType>(buf: &Buf, count: usize) -> Vec<T> {
        let start = buf.len().saturating_sub(count * size_of::<T>());
        buf[start..].chunks_exact(size_of::<T>()).map(T::from_bytes).collect()
    }
}

impl<M: ThreadModel> crate::Domain<M> {
    /// What the domain supports for `op` on `T` (`fi_query_atomic`): the most
    /// elements one operation carries and the size of one element. `flags`:
    /// empty for plain atomics, `FETCH_ATOMIC` or `COMPARE_ATOMIC`, optionally
    /// with `TAGGED`. An error (`FI_EOPNOTSUPP`, `FI_ENOSYS`) when unsupported.
    pub fn query_atomic<T: AtomicType>(&self, op: AtomicOp, flags: QueryAtomicFlags) -> Result<(usize, usize)> {
        let mut attr = fi_atomic_attr { count: 0, size: 0 };
        // SAFETY: the domain is open; `attr` is writable.
        check("fi_query_atomic", unsafe {
            fi_query_atomic(self.as_raw(), T::DATATYPE.raw(), op.raw(), &mut attr, flags.bits())
        })?;
        Ok((attr.count, attr.size))
    }
}

/// How many `T` elements a buffer of `sections` sections holds.
fn count_of<T: AtomicType>(call: &'static str, buf: &Buf, sections: usize) -> Result<usize> {
    let unit = size_of::<T>() * sections;
    if buf.is_empty() || buf.len() % unit != 0 {
        return Err(Error::InvalidArgument {
            call,
            reason: format!(
                "{} bytes are not {sections} whole section(s) of {}",
                buf.len(),
                std::any::type_name::<T>()
            ),
        });
    }
    Ok(buf.len() / unit)
}

impl<E: Entry, M: ThreadModel> Endpoint<E, M> {
    /// How many `T` elements one `op` may carry here (`fi_atomicvalid`); an
    /// error (`FI_EOPNOTSUPP`, …) when the provider does not support it.
    pub fn atomic_valid<T: AtomicType>(&self, op: AtomicOp) -> Result<usize> {
        let mut count = 0usize;
        // SAFETY: the endpoint is open; `count` is writable.
        check("fi_atomicvalid", unsafe { fi_atomicvalid(self.as_raw(), T::DATATYPE.raw(), op.raw(), &mut count) })?;
        Ok(count)
    }

    /// Like [`atomic_valid`](Self::atomic_valid) for fetch atomics.
    pub fn fetch_atomic_valid<T: AtomicType>(&self, op: AtomicOp) -> Result<usize> {
        let mut count = 0usize;
        // SAFETY: as above.
        check("fi_fetch_atomicvalid", unsafe {
            fi_fetch_atomicvalid(self.as_raw(), T::DATATYPE.raw(), op.raw(), &mut count)
        })?;
        Ok(count)
    }

    /// Like [`atomic_valid`](Self::atomic_valid) for compare atomics.
    pub fn compare_atomic_valid<T: AtomicType>(&self, op: AtomicOp) -> Result<usize> {
        let mut count = 0usize;
        // SAFETY: as above.
        check("fi_compare_atomicvalid", unsafe {
            fi_compare_atomicvalid(self.as_raw(), T::DATATYPE.raw(), op.raw(), &mut count)
        })?;
        Ok(count)
    }

    /// `remote[offset..] op= operands` (`fi_atomic`); `buf` from
    /// [`AtomicBuf::operands`].
    pub fn atomic<T: AtomicType>(
        &self,
        op: AtomicOp,
        buf: Buf,
        dest: Address,
        remote: &RemoteMemory,
        offset: u64,
        token: u64,
    ) -> Result<OpId, PostError> {
        let (count, at) = match self.atomic_target::<T>("fi_atomic", &buf, 1, remote, offset) {
            Ok(v) => v,
            Err(error) => return Err(PostError { error, buf }),
        };
        let (ep, key) = (self.as_raw(), remote.key);
        self.post(
            "fi_atomic",
            OpKind::Atomic,
            token,
            buf,
            dest,
            MrAccess::WRITE | MrAccess::READ,
            |p, _, desc, ctx, peer| {
                // SAFETY: the buffer is owned by the operation's slot until its completion.
                unsafe { fi_atomic(ep, p.cast(), count, desc, peer, at, key, T::DATATYPE.raw(), op.raw(), ctx) }
            },
        )
    }

    /// Like [`atomic`](Self::atomic), returning the previous values in the
    /// buffer's result section (`fi_fetch_atomic`); `buf` from
    /// [`AtomicBuf::fetch`].
    pub fn fetch_atomic<T: AtomicType>(
        &self,
        op: AtomicOp,
        buf: Buf,
        dest: Address,
        remote: &RemoteMemory,
        offset: u64,
        token: u64,
    ) -> Result<OpId, PostError> {
        let (count, at) = match self.atomic_target::<T>("fi_fetch_atomic", &buf, 2, remote, offset) {
            Ok(v) => v,
            Err(error) => return Err(PostError { error, buf }),
        };
        let (ep, key) = (self.as_raw(), remote.key);
        self.post(
            "fi_fetch_atomic",
            OpKind::Atomic,
            token,
            buf,
            dest,
            MrAccess::WRITE | MrAccess::READ,
            |p, _, desc, ctx, peer| {
                // SAFETY: as in `atomic`; the result section lies inside the same buffer.
                unsafe {
                    let result = p.add(count * size_of::<T>());
                    fi_fetch_atomic(
                        ep,
                        p.cast(),
                        count,
                        desc,
                        result.cast(),
                        desc,
                        peer,
                        at,
                        key,
                        T::DATATYPE.raw(),
                        op.raw(),
                        ctx,
                    )
                }
            },
        )
    }

    /// A compare atomic (`fi_compare_atomic`, `op` one of the `CSWAP*` or
    /// `MSWAP`), returning the previous values in the result section; `buf`
    /// from [`AtomicBuf::compare`].
    pub fn compare_atomic<T: AtomicType>(
        &self,
        op: AtomicOp,
        buf: Buf,
        dest: Address,
        remote: &RemoteMemory,
        offset: u64,
        token: u64,
    ) -> Result<OpId, PostError> {
        let (count, at) = match self.atomic_target::<T>("fi_compare_atomic", &buf, 3, remote, offset) {
            Ok(v) => v,
            Err(error) => return Err(PostError { error, buf }),
        };
        let (ep, key) = (self.as_raw(), remote.key);
        self.post(
            "fi_compare_atomic",
            OpKind::Atomic,
            token,
            buf,
            dest,
            MrAccess::WRITE | MrAccess::READ,
            |p, _, desc, ctx, peer| {
                // SAFETY: as in `atomic`; the compare and result sections lie inside the buffer.
                unsafe {
                    let section = count * size_of::<T>();
                    fi_compare_atomic(
                        ep,
                        p.cast(),
                        count,
                        desc,
                        p.add(section).cast(),
                        desc,
                        p.add(2 * section).cast(),
                        desc,
                        peer,
                        at,
                        key,
                        T::DATATYPE.raw(),
                        op.raw(),
                        ctx,
                    )
                }
            },
        )
    }

    /// An atomic with no completion (`fi_inject_atomic`); the operands are
    /// copied before the call returns.
    pub fn inject_atomic<T: AtomicType>(
        &self,
        op: AtomicOp,
        operands: &[T],
        dest: Address,
        remote: &RemoteMemory,
        offset: u64,
    ) -> Result<()> {
        let buf = AtomicBuf::operands(operands);
        let (count, at) = self.atomic_target::<T>("fi_inject_atomic", &buf, 1, remote, offset)?;
        let dest = self.destination("fi_inject_atomic", dest)?;
        // SAFETY: inject copies the operands before returning.
        check("fi_inject_atomic", unsafe {
            fi_inject_atomic(
                self.as_raw(),
                buf.as_ptr().cast(),
                count,
                dest,
                at,
                remote.key,
                T::DATATYPE.raw(),
                op.raw(),
            )
        })
        .map(drop)
    }

    /// Element count and remote address of an atomic on `buf`.
    fn atomic_target<T: AtomicType>(
        &self,
        call: &'static str,
        buf: &Buf,
        sections: usize,
        remote: &RemoteMemory,
        offset: u64,
    ) -> Result<(usize, u64)> {
        let count = count_of::<T>(call, buf, sections)?;
        let len = (count * size_of::<T>()) as u64;
        match offset.checked_add(len) {
            Some(end) if end <= remote.len => Ok((count, remote.addr + offset)),
            _ => Err(Error::InvalidArgument {
                call,
                reason: format!("{len} bytes at offset {offset} exceed the {} bytes exposed", remote.len),
            }),
        }
    }
}
