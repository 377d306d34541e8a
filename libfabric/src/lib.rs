//! # libfabric: a safe Rust binding of libfabric (OFI)
//!
//! Built on [`libfabric_sys`], the binding generated from libfabric's headers.
//! One module per libfabric object; every object keeps its parent alive, so no
//! object can be used after it is closed, and each is closed exactly once,
//! children first.
//!
//! ```no_run
//! use libfabric::*;
//!
//! let hints = Hints::new()?.provider("tcp")?.ep_type(EpType::RDM).caps(Caps::MSG).threading(Threading::SAFE);
//! let info = getinfo(&Target::source("127.0.0.1", None), &hints)?.remove(0);
//! let fabric = Fabric::open(&info)?;
//! let domain: Domain = Domain::open(&fabric, &info)?;
//! let cq: CompletionQueue = CompletionQueue::open(&domain, &CqConfig::default())?;
//! let av = AddressVector::open(&domain, AvType::MAP)?;
//! let ep = Endpoint::open(&domain, &info, Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None })?;
//! let me = av.insert_one(&ep.name()?)?;
//! ep.recv(Buf::zeroed(64), Address::UNSPEC, 1)?;
//! ep.send(Buf::from(&b"hello"[..]), me, 2)?;
//! let mut done = 0;
//! while done < 2 {
//!     match cq.poll()? {
//!         Read::Op(c) => { println!("{:?} {:?}", c.kind, &c.buf[..]); done += 1; }
//!         Read::Raw(_) | Read::Message { .. } | Read::Fixed { .. } | Read::Empty => {}
//!         Read::Failed { error, .. } | Read::FixedFailed { error, .. } => return Err(error),
//!     }
//! }
//! # Ok::<(), libfabric::Error>(())
//! ```
//!
//! ## Threads
//!
//! Objects carry a [`ThreadModel`]: with [`ThreadSafe`] (the default) the
//! domain must be opened with `FI_THREAD_SAFE` and every object is
//! `Send + Sync`; with [`Unsync`] any threading model is accepted and the
//! objects are neither `Send` nor `Sync`, so the compiler keeps them on one
//! thread, which every libfabric threading model allows.

#![warn(missing_docs, missing_debug_implementations)]

mod atomic;
mod av;
mod bytes;
mod cntr;
mod collective;
mod cq;
mod deferred;
mod domain;
mod drd;
#[cfg(feature = "async")]
pub mod driver;
mod ep;
mod eq;
mod error;
mod fabric;
mod fid;
mod fixed;
mod info;
mod mr;
mod ops;
mod pep;
mod poll;
mod rawkey;
mod rma;
mod sep;
#[cfg(feature = "tokio")]
pub mod transport;

pub use atomic::{AtomicBuf, AtomicType};
pub use av::{Address, AddressVector};
pub use cntr::Counter;
pub use collective::{AvSet, CollectiveGroup, GroupOp};
pub use cq::{CompletionQueue, ContextEntry, CqConfig, DataEntry, Entry, FixedRead, MsgEntry, Read, TaggedEntry};
pub use deferred::{CounterOp, DeferredCounterAdd};
pub use domain::Domain;
pub use ep::{Bindings, Endpoint, OpId, SharedTxContext};
pub use eq::{Event, EventQueue};
pub use error::{strerror, CompletionError, Error, Result, Version};
pub use fabric::Fabric;
pub use fid::{ThreadModel, ThreadSafe, Unsync};
pub use fixed::FixedBuf;
pub use info::{api_version, check_version, getinfo, runtime_version, HintAttrs, Hints, Info, Target};
pub use mr::MemoryRegion;
pub use ops::{Buf, Completion, OpKind, PostError};
pub use pep::PassiveEndpoint;
#[allow(deprecated)]
pub use poll::{PollSet, WaitSet};
pub use rawkey::{MappedRemote, RawRemoteMemory};
pub use rma::{Exposed, RemoteMemory};
pub use sep::ScalableEndpoint;

pub use libfabric_sys::enums::{
    AddrFormat, AvType, CqFormat, EpType, EqEvent, Errno, Progress, Protocol, Threading, WaitObj,
};
pub use libfabric_sys::enums::{AtomicOp, Datatype, EpOption};
pub use libfabric_sys::flags::{
    AvInsertFlags, Caps, CompletionFlags, GetinfoFlags, Mode, MrAccess, MrMode, MsgOrder, OpFlags,
};

/// The generated binding underneath, for what this crate does not wrap.
pub use libfabric_sys as sys;
