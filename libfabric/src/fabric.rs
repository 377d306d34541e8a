//! The fabric: the root of every other object.

use std::fmt;
use std::ptr;
use std::sync::Arc;

use libfabric_sys::{fi_fabric, fid_fabric};

use crate::error::{check, Error, Result};
use crate::fid::Object;
use crate::info::Info;

/// An open fabric (`fi_fabric`). Cloning shares it; it is closed when the last
/// clone and the last of its domains and event queues are gone.
#[derive(Clone)]
pub struct Fabric {
    pub(crate) inner: Arc<Object<fid_fabric>>,
    pub(crate) info: Info,
}

impl fmt::Debug for Fabric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fabric")
            .field("provider", &self.info.provider())
            .field("name", &self.info.fabric_name())
            .finish()
    }
}

impl Fabric {
    /// Opens the fabric `info` describes.
    ///
    /// ```no_run
    /// let info = libfabric::getinfo(&Default::default(), &libfabric::Hints::new()?.provider("tcp")?)?.remove(0);
    /// let fabric = libfabric::Fabric::open(&info)?;
    /// # Ok::<(), libfabric::Error>(())
    /// ```
    pub fn open(info: &Info) -> Result<Fabric> {
        crate::info::check_version()?;
        let attr = info.as_raw().fabric_attr;
        if attr.is_null() {
            return Err(Error::InvalidArgument {
                call: "fi_fabric",
                reason: "the info has no fabric attributes".into(),
            });
        }
        let mut raw = ptr::null_mut();
        // SAFETY: `attr` belongs to `info`, valid for the call; `raw` receives the new object.
        check("fi_fabric", unsafe { fi_fabric(attr, &mut raw, ptr::null_mut()) })?;
        // SAFETY: fi_fabric succeeded, so `raw` is an open fabric.
        let inner = unsafe { Object::new(raw, "fi_close(fabric)") }
            .ok_or(Error::InvalidArgument { call: "fi_fabric", reason: "returned no fabric".into() })?;
        Ok(Fabric { inner: Arc::new(inner), info: info.clone() })
    }

    /// The info the fabric was opened with.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The raw object, for calls this crate does not wrap.
    pub fn as_raw(&self) -> *mut fid_fabric {
        self.inner.as_ptr()
    }
}
