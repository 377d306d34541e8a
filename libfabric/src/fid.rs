//! Ownership of libfabric objects: closed exactly once, after their children.

use std::marker::PhantomData;
use std::ptr::NonNull;

use libfabric_sys::enums::Threading;
use libfabric_sys::{fi_close, fid};

use crate::error::{check, Result};

/// An open libfabric object (`struct fid_*`, which starts with `struct fid`),
/// closed when dropped. Children keep their parent's `Object` alive through an
/// `Arc`, so a parent is always closed after its children.
pub(crate) struct Object<T> {
    raw: NonNull<T>,
    /// `"fi_close(endpoint)"`: names the call in errors and logs.
    close_call: &'static str,
    open: bool,
}

// SAFETY: libfabric objects may be used from any thread as the domain's
// threading model allows; the public handles carry a `ThreadModel` marker that
// removes `Send`/`Sync` where the model forbids it.
unsafe impl<T> Send for Object<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Object<T> {}

impl<T> Object<T> {
    /// Takes ownership of an object libfabric just opened.
    ///
    /// # Safety
    /// `raw` is an open libfabric object whose first member is `struct fid`.
    pub(crate) unsafe fn new(raw: *mut T, close_call: &'static str) -> Option<Object<T>> {
        NonNull::new(raw).map(|raw| Object { raw, close_call, open: true })
    }

    pub(crate) fn as_ptr(&self) -> *mut T {
        self.raw.as_ptr()
    }

    /// The embedded `struct fid` (every `fid_*` struct begins with it).
    pub(crate) fn fid(&self) -> *mut fid {
        self.raw.as_ptr().cast()
    }

    /// Closes now, returning libfabric's verdict instead of logging it.
    pub(crate) fn close(mut self) -> Result<()> {
        self.open = false;
        // SAFETY: the object is open and, as `self` is consumed, never used again.
        check(self.close_call, unsafe { fi_close(self.fid()) }).map(drop)
    }
}

impl<T> Drop for Object<T> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // SAFETY: the object is open and this is its last use.
        let ret = unsafe { fi_close(self.fid()) };
        if let Err(e) = check(self.close_call, ret) {
            tracing::error!(error = %e, "closing a libfabric object failed");
        }
    }
}

/// The marker an object carries for its entry type `E` and model `M`: `E`
/// names a completion format only (so it never affects `Send`/`Sync`), the
/// model decides.
pub(crate) type Types<E, M> = std::marker::PhantomData<(fn() -> E, <M as ThreadModel>::Marker)>;

/// How the objects of a domain may be shared between threads.
pub trait ThreadModel: private::Sealed + 'static {
    /// The threading model this marker needs from the domain, if any.
    const REQUIRES: Option<Threading>;
    /// Whether the objects may be used from several threads at once.
    #[doc(hidden)]
    const SHARED: bool;
    #[doc(hidden)]
    type Marker: Default;
}

/// The domain was opened with `FI_THREAD_SAFE`: its objects are `Send + Sync`.
#[derive(Debug)]
pub enum ThreadSafe {}

/// Any other threading model: objects are neither `Send` nor `Sync`, so the
/// compiler keeps all use on one thread (which satisfies every model).
#[derive(Debug)]
pub enum Unsync {}

impl ThreadModel for ThreadSafe {
    const REQUIRES: Option<Threading> = Some(Threading::SAFE);
    const SHARED: bool = true;
    type Marker = PhantomData<()>;
}

impl ThreadModel for Unsync {
    const REQUIRES: Option<Threading> = None;
    const SHARED: bool = false;
    type Marker = PhantomData<*const ()>;
}

mod private {
    pub trait Sealed {}
    impl Sealed for super::ThreadSafe {}
    impl Sealed for super::Unsync {}
}
