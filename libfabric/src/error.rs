//! The error type: which call failed, and libfabric's reason.

use std::ffi::CStr;
use std::fmt;

use libfabric_sys::enums::Errno;
use libfabric_sys::fi_strerror;

/// What a failed completion reported (`struct fi_cq_err_entry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionError {
    /// The operation's context pointer, as posted.
    pub context: usize,
    /// The completion flags (`FI_SEND`, `FI_RECV`, …) as raw bits.
    pub flags: u64,
    /// Bytes transferred before the error.
    pub len: usize,
    /// For `FI_ETRUNC`: the bytes that did not fit.
    pub overflow_len: usize,
    /// The provider's own error code.
    pub prov_errno: i32,
    /// The provider's text for `prov_errno` (`fi_cq_strerror`).
    pub provider_text: String,
    /// For a rejected connection (`FI_ECONNREFUSED` on an event queue): the
    /// private data the listener sent with its rejection; otherwise empty.
    pub data: Vec<u8>,
}

/// Every failure of this crate: the libfabric call that failed and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A libfabric call returned a negative errno.
    #[error("{call} failed: {} ({errno:?})", strerror(*.errno))]
    Call {
        /// The libfabric function, e.g. `"fi_getinfo"`.
        call: &'static str,
        /// libfabric's reason.
        errno: Errno,
    },
    /// An operation completed with an error entry in its completion queue.
    #[error("{call}: operation failed: {} ({errno:?}); provider: {}", strerror(*.errno), .detail.provider_text)]
    Completion {
        /// The call that read the completion (`fi_cq_read`, `fi_eq_read`, …).
        call: &'static str,
        /// The operation's error (`FI_ETRUNC`, `FI_ECANCELED`, …).
        errno: Errno,
        /// The rest of the error entry.
        detail: Box<CompletionError>,
    },
    /// An argument this crate rejects before calling libfabric.
    #[error("{call}: invalid argument: {reason}")]
    InvalidArgument {
        /// The call the argument was for.
        call: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The libfabric library loaded at run time is older than the headers this
    /// crate was generated from.
    #[error("libfabric {runtime} is older than {required}, the API this binding was generated for")]
    Version {
        /// The version of the loaded library.
        runtime: Version,
        /// The version of the headers.
        required: Version,
    },
}

impl Error {
    /// The errno behind the error (`FI_EINVAL` for invalid arguments and
    /// `FI_ENOSYS` for a version mismatch).
    pub fn errno(&self) -> Errno {
        match self {
            Error::Call { errno, .. } | Error::Completion { errno, .. } => *errno,
            Error::InvalidArgument { .. } => Errno::from_raw(libc::EINVAL),
            Error::Version { .. } => Errno::from_raw(libc::ENOSYS),
        }
    }

    /// The name of the libfabric call that failed.
    pub fn call(&self) -> &'static str {
        match self {
            Error::Call { call, .. } | Error::Completion { call, .. } | Error::InvalidArgument { call, .. } => call,
            Error::Version { .. } => "fi_version",
        }
    }

    /// True for `FI_EAGAIN`: the call may succeed later (after progress).
    pub fn is_again(&self) -> bool {
        self.errno() == Errno::from_raw(libc::EAGAIN)
    }

    /// True for a refused or rejected connection (`FI_ECONNREFUSED`).
    pub fn is_refused(&self) -> bool {
        self.errno() == Errno::from_raw(libc::ECONNREFUSED)
    }

    /// True for a timeout (`FI_ETIMEDOUT`).
    pub fn is_timeout(&self) -> bool {
        self.errno() == Errno::from_raw(libc::ETIMEDOUT)
    }

    /// The private data a listener sent with its rejection, if this is one.
    pub fn rejection_data(&self) -> Option<&[u8]> {
        match self {
            Error::Completion { detail, .. } if self.is_refused() && !detail.data.is_empty() => Some(&detail.data),
            _ => None,
        }
    }
}

/// A `FI_VERSION(major, minor)` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// `FI_MAJOR`.
    pub major: u32,
    /// `FI_MINOR`.
    pub minor: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// libfabric's text for an errno (positive).
pub fn strerror(errno: Errno) -> String {
    // SAFETY: fi_strerror accepts any value and returns a static,
    // NUL-terminated string.
    unsafe { CStr::from_ptr(fi_strerror(errno.raw())) }.to_string_lossy().into_owned()
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A C return value: `int` or `ssize_t`.
pub(crate) trait ReturnCode {
    fn code(self) -> i64;
}

impl ReturnCode for i32 {
    fn code(self) -> i64 {
        i64::from(self)
    }
}

impl ReturnCode for isize {
    fn code(self) -> i64 {
        self as i64
    }
}

impl ReturnCode for i64 {
    fn code(self) -> i64 {
        self
    }
}

/// Turns a libfabric return value into a `Result`: negative values are
/// `-errno`; others are returned as they are.
#[inline]
pub(crate) fn check(call: &'static str, ret: impl ReturnCode) -> Result<u64> {
    let ret = ret.code();
    if ret < 0 {
        Err(Error::Call { call, errno: Errno::from_raw((-ret) as i32) })
    } else {
        Ok(ret as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_call_and_the_reason() {
        let e = check("fi_av_insert", -(libc::EINVAL as i64)).unwrap_err();
        assert_eq!(e.call(), "fi_av_insert");
        assert_eq!(e.errno(), Errno::from_raw(libc::EINVAL));
        assert_eq!(e.to_string(), "fi_av_insert failed: Invalid argument (FI_EINVAL)");
        assert_eq!(check("x", 5).unwrap(), 5);
    }
}
