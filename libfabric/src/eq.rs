//! Event queues: connection management and other asynchronous events.

use std::fmt;
use std::mem::size_of;
use std::os::fd::BorrowedFd;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::time::Duration;

use libfabric_sys::enums::{EqEvent, Errno, WaitObj};
use libfabric_sys::flags::EqAttrFlags;
use libfabric_sys::{
    fi_control, fi_eq_attr, fi_eq_cm_entry, fi_eq_entry, fi_eq_err_entry, fi_eq_open, fi_eq_read, fi_eq_readerr,
    fi_eq_sread, fi_eq_strerror, fi_eq_write, fi_trywait, fid, fid_eq, fid_fabric, FI_GETWAIT,
};

use crate::error::{check, CompletionError, Error, Result};
use crate::fabric::Fabric;
use crate::fid::Object;
use crate::info::Info;

/// Largest connection private data read with an event.
const MAX_CM_DATA: usize = 256;

pub(crate) struct EqInner {
    pub(crate) object: Object<fid_eq>,
    _fabric: Arc<Object<fid_fabric>>,
}

/// An open event queue (`fi_eq_open`).
#[derive(Clone)]
pub struct EventQueue {
    pub(crate) inner: Arc<EqInner>,
}

impl fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventQueue").field("raw", &self.inner.object.as_ptr()).finish()
    }
}

/// One event.
#[derive(Debug)]
pub enum Event {
    /// A peer asks to connect (`FI_CONNREQ`): accept or reject with `info`.
    ConnectionRequest {
        /// The requester's info: open the accepting endpoint with it.
        info: Info,
        /// The private data sent with the request.
        data: Vec<u8>,
    },
    /// A connection is up (`FI_CONNECTED`).
    Connected {
        /// The endpoint's `struct fid` address, identifying it.
        fid: usize,
        /// The private data the other side sent with its accept.
        data: Vec<u8>,
    },
    /// The peer closed the connection (`FI_SHUTDOWN`).
    Shutdown {
        /// The endpoint's `struct fid` address.
        fid: usize,
    },
    /// Any other event (`struct fi_eq_entry`).
    Other {
        /// The event number.
        event: EqEvent,
        /// The object it concerns, if any.
        fid: usize,
        /// The context given with it.
        context: usize,
        /// Its data word.
        data: u64,
    },
}

/// Bytes large enough and aligned for a CM entry with private data.
#[repr(C, align(8))]
struct EventBuf([u8; size_of::<fi_eq_cm_entry>() + MAX_CM_DATA]);

impl EventQueue {
    /// Opens an event queue on `fabric` with a file-descriptor wait object, so
    /// [`read_timeout`](Self::read_timeout) can block.
    ///
    /// ```no_run
    /// # fn demo(fabric: &libfabric::Fabric) -> libfabric::Result<()> {
    /// use libfabric::{Event, EventQueue};
    /// use std::time::Duration;
    /// let eq = EventQueue::open(fabric)?;
    /// match eq.read_timeout(Duration::from_secs(1))? {
    ///     Some(Event::ConnectionRequest { info, data }) => println!("{} asks, {data:?}", info.provider()),
    ///     Some(other) => println!("{other:?}"),
    ///     None => println!("nothing within a second"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn open(fabric: &Fabric) -> Result<EventQueue> {
        Self::open_with_size(fabric, 0)
    }

    /// Like [`open`](Self::open), holding at least `size` events (0: the
    /// provider's default).
    pub fn open_with_size(fabric: &Fabric, size: usize) -> Result<EventQueue> {
        let mut attr = fi_eq_attr::default();
        attr.set_size(size);
        attr.set_wait_obj(WaitObj::FD);
        // `write` needs FI_WRITE on the queue (man 3 fi_eq).
        attr.set_flags(EqAttrFlags::WRITE);
        let mut raw = ptr::null_mut();
        // SAFETY: the fabric is open; attr is valid for the call.
        check("fi_eq_open", unsafe { fi_eq_open(fabric.as_raw(), &mut attr, &mut raw, ptr::null_mut()) })?;
        // SAFETY: fi_eq_open succeeded.
        let object = unsafe { Object::new(raw, "fi_close(eq)") }
            .ok_or(Error::InvalidArgument { call: "fi_eq_open", reason: "returned no EQ".into() })?;
        Ok(EventQueue { inner: Arc::new(EqInner { object, _fabric: fabric.inner.clone() }) })
    }

    pub(crate) fn fid(&self) -> *mut fid {
        self.inner.object.fid()
    }

    /// The raw object, for calls this crate does not wrap.
    pub fn as_raw(&self) -> *mut fid_eq {
        self.inner.object.as_ptr()
    }

    /// The queue's wait file descriptor (`fi_control(FI_GETWAIT)`), for any
    /// event loop: wait for it after [`trywait`](Self::trywait) returned `true`.
    pub fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        let mut fd: libc::c_int = -1;
        // SAFETY: the EQ has an FD wait object (see `open`); FI_GETWAIT writes an int.
        check("fi_control(FI_GETWAIT)", unsafe {
            fi_control(self.fid(), FI_GETWAIT as i32, (&mut fd as *mut libc::c_int).cast())
        })?;
        // SAFETY: the descriptor belongs to the EQ, which outlives the borrow.
        Ok(unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// `fi_trywait`: `Ok(true)` when it is safe to block on the file
    /// descriptor, `Ok(false)` when events are ready (read them first).
    pub fn trywait(&self) -> Result<bool> {
        let mut fids = [self.fid()];
        // SAFETY: the fabric and EQ are open; the array lives for the call.
        let ret = unsafe { fi_trywait(self.inner._fabric.as_ptr(), fids.as_mut_ptr(), 1) };
        if ret == -libc::EAGAIN {
            return Ok(false);
        }
        check("fi_trywait", ret).map(|_| true)
    }

    /// Reads one event if one is ready.
    pub fn read(&self) -> Result<Option<Event>> {
        let mut buf = EventBuf([0; size_of::<fi_eq_cm_entry>() + MAX_CM_DATA]);
        let mut event = 0u32;
        // SAFETY: `buf` is writable for its length and aligned for the entries.
        let ret = unsafe { fi_eq_read(self.as_raw(), &mut event, buf.0.as_mut_ptr().cast(), buf.0.len(), 0) };
        self.decode("fi_eq_read", ret, event, &buf)
    }

    /// Waits up to `timeout` for one event (`fi_eq_sread`).
    pub fn read_timeout(&self, timeout: Duration) -> Result<Option<Event>> {
        let mut buf = EventBuf([0; size_of::<fi_eq_cm_entry>() + MAX_CM_DATA]);
        let mut event = 0u32;
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: as in `read`.
        let ret = unsafe { fi_eq_sread(self.as_raw(), &mut event, buf.0.as_mut_ptr().cast(), buf.0.len(), ms, 0) };
        if ret == -(libc::ETIMEDOUT as isize) {
            return Ok(None);
        }
        self.decode("fi_eq_sread", ret, event, &buf)
    }

    /// Posts a user event (`fi_eq_write`). Connection events are refused:
    /// libfabric would hand them back as if its own, with pointers (a
    /// connection request's `info`) that this entry does not carry.
    pub fn write(&self, event: EqEvent, context: usize, data: u64) -> Result<()> {
        if matches!(event, EqEvent::CONNREQ | EqEvent::CONNECTED | EqEvent::SHUTDOWN) {
            return Err(Error::InvalidArgument {
                call: "fi_eq_write",
                reason: format!("{event:?} is a connection event; only libfabric may post it"),
            });
        }
        let entry = fi_eq_entry { context: context as *mut libc::c_void, data, ..Default::default() };
        // SAFETY: `entry` is readable for its size.
        let ret = unsafe {
            fi_eq_write(self.as_raw(), event.raw(), (&entry as *const fi_eq_entry).cast(), size_of::<fi_eq_entry>(), 0)
        };
        check("fi_eq_write", ret).map(drop)
    }

    fn decode(&self, call: &'static str, ret: isize, event: u32, buf: &EventBuf) -> Result<Option<Event>> {
        if ret == -(libc::EAGAIN as isize) {
            return Ok(None);
        }
        if ret == -(libfabric_sys::FI_EAVAIL as isize) {
            return Err(self.read_error(call));
        }
        let len = check(call, ret)? as usize;
        let event = EqEvent::from_raw(event);
        let header = size_of::<fi_eq_cm_entry>();
        let data = |len: usize| buf.0[header..len.max(header)].to_vec();
        Ok(Some(match event {
            EqEvent::CONNREQ | EqEvent::CONNECTED | EqEvent::SHUTDOWN if len >= header => {
                // SAFETY: libfabric wrote a CM entry at the start of the aligned buffer.
                let entry = unsafe { ptr::read(buf.0.as_ptr().cast::<fi_eq_cm_entry>()) };
                match event {
                    EqEvent::CONNREQ => {
                        let info = NonNull::new(entry.info)
                            .ok_or(Error::InvalidArgument { call, reason: "connection request without info".into() })?;
                        // SAFETY: the CONNREQ entry's info is ours to free.
                        Event::ConnectionRequest { info: unsafe { Info::from_owned(info) }, data: data(len) }
                    }
                    EqEvent::CONNECTED => Event::Connected { fid: entry.fid as usize, data: data(len) },
                    _ => Event::Shutdown { fid: entry.fid as usize },
                }
            }
            _ => {
                // SAFETY: other events are a struct fi_eq_entry.
                let entry = unsafe { ptr::read(buf.0.as_ptr().cast::<fi_eq_entry>()) };
                Event::Other { event, fid: entry.fid as usize, context: entry.context as usize, data: entry.data }
            }
        }))
    }

    fn read_error(&self, call: &'static str) -> Error {
        let mut err = fi_eq_err_entry::default();
        // SAFETY: the EQ is open; `err` is writable.
        let ret = unsafe { fi_eq_readerr(self.as_raw(), &mut err, 0) };
        if ret < 0 {
            return Error::Call { call: "fi_eq_readerr", errno: Errno::from_raw((-ret) as i32) };
        }
        // For a rejection, err_data holds the listener's private data.
        let data = if err.err_data.is_null() || err.err_data_size == 0 {
            Vec::new()
        } else {
            // SAFETY: libfabric filled err_data with err_data_size bytes, valid
            // until the next read of this queue.
            unsafe { std::slice::from_raw_parts(err.err_data.cast::<u8>(), err.err_data_size) }.to_vec()
        };
        let mut text = [0 as libc::c_char; 256];
        // SAFETY: err_data comes from the entry; `text` is writable.
        let provider_text = unsafe {
            let p = fi_eq_strerror(self.as_raw(), err.prov_errno, err.err_data, text.as_mut_ptr(), text.len());
            if p.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Error::Completion {
            call,
            errno: Errno::from_raw(err.err.abs()),
            detail: Box::new(CompletionError {
                context: err.context as usize,
                flags: 0,
                len: 0,
                overflow_len: 0,
                prov_errno: err.prov_errno,
                provider_text,
                data,
            }),
        }
    }
}
