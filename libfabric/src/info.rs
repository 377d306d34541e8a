//! Discovery: hints in, `fi_getinfo`, owned `Info` values out.

use std::ffi::{CStr, CString};
use std::fmt;
use std::ptr::{self, NonNull};

use libfabric_sys::enums::{AddrFormat, AvType, EpType, Progress, Protocol, ResourceMgmt, Threading, TostrType};
use libfabric_sys::flags::{Caps, GetinfoFlags, Mode, MrMode, MsgOrder, OpFlags};
use libfabric_sys::{
    fi_allocinfo, fi_domain_attr, fi_dupinfo, fi_ep_attr, fi_fabric_attr, fi_freeinfo, fi_getinfo, fi_info, fi_rx_attr,
    fi_tostr_r, fi_tx_attr, fi_version, FI_MAJOR, FI_MAJOR_VERSION, FI_MINOR, FI_MINOR_VERSION, FI_VERSION,
};

use crate::error::{check, Error, Result, Version};

/// The API version these bindings were generated for (`FI_VERSION` of the headers).
pub fn api_version() -> Version {
    Version { major: FI_MAJOR_VERSION as u32, minor: FI_MINOR_VERSION as u32 }
}

/// The version of the libfabric library loaded at run time.
pub fn runtime_version() -> Version {
    // SAFETY: fi_version takes no arguments and only returns a number.
    let v = unsafe { fi_version() };
    Version { major: FI_MAJOR(v), minor: FI_MINOR(v) }
}

/// Fails when the loaded library is older than the headers' API.
pub fn check_version() -> Result<()> {
    let (runtime, required) = (runtime_version(), api_version());
    if runtime < required {
        return Err(Error::Version { runtime, required });
    }
    Ok(())
}

/// One `struct fi_info` allocated by libfabric, freed exactly once.
struct OwnedInfo(NonNull<fi_info>);

impl Drop for OwnedInfo {
    fn drop(&mut self) {
        // SAFETY: the pointer came from fi_allocinfo/fi_dupinfo and is freed once, here.
        unsafe { fi_freeinfo(self.0.as_ptr()) }
    }
}

// SAFETY: an fi_info is plain data owned by this value; libfabric keeps no
// reference to it.
unsafe impl Send for OwnedInfo {}
// SAFETY: shared access only reads.
unsafe impl Sync for OwnedInfo {}

fn cstring(call: &'static str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument { call, reason: format!("{s:?} contains a NUL byte") })
}

/// What to ask `fi_getinfo` for. Every field left unset means "any".
///
/// ```
/// use libfabric::{Hints, EpType, Caps};
/// let hints = Hints::new()?.provider("tcp")?.ep_type(EpType::RDM).caps(Caps::MSG | Caps::TAGGED);
/// # Ok::<(), libfabric::Error>(())
/// ```
pub struct Hints {
    info: OwnedInfo,
}

impl fmt::Debug for Hints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hints").field("info", &tostr(self.raw(), TostrType::INFO)).finish()
    }
}

/// Sets a `char *` attribute the way libfabric expects: `strdup`ed, freed by `fi_freeinfo`.
///
/// # Safety
/// `slot` is a string field of an fi_info owned by the caller.
unsafe fn set_string(slot: &mut *mut libc::c_char, value: &CStr) -> Result<()> {
    let copy = libc::strdup(value.as_ptr());
    if copy.is_null() {
        return Err(Error::Call { call: "strdup", errno: libfabric_sys::enums::Errno::from_raw(libc::ENOMEM) });
    }
    if !slot.is_null() {
        libc::free((*slot).cast());
    }
    *slot = copy;
    Ok(())
}

/// Mutable views of the attribute structs of [`Hints`].
#[derive(Debug)]
pub struct HintAttrs<'a> {
    /// `struct fi_info` itself.
    pub info: &'a mut fi_info,
    /// `info->ep_attr`.
    pub ep: &'a mut fi_ep_attr,
    /// `info->domain_attr`.
    pub domain: &'a mut fi_domain_attr,
    /// `info->fabric_attr`.
    pub fabric: &'a mut fi_fabric_attr,
    /// `info->tx_attr`.
    pub tx: &'a mut fi_tx_attr,
    /// `info->rx_attr`.
    pub rx: &'a mut fi_rx_attr,
}

/// Sets an address field: a `malloc`ed copy, freed by `fi_freeinfo`.
///
/// # Safety
/// The fields belong to an fi_info owned by the caller.
unsafe fn set_bytes(slot: &mut *mut libc::c_void, len: &mut usize, bytes: &[u8]) -> Result<()> {
    let copy = libc::malloc(bytes.len().max(1));
    if copy.is_null() {
        return Err(Error::Call { call: "malloc", errno: libfabric_sys::enums::Errno::from_raw(libc::ENOMEM) });
    }
    ptr::copy_nonoverlapping(bytes.as_ptr(), copy.cast(), bytes.len());
    if !slot.is_null() {
        libc::free(*slot);
    }
    *slot = copy;
    *len = bytes.len();
    Ok(())
}

impl Hints {
    /// Hints that ask for nothing in particular (`fi_allocinfo`), except the
    /// mode bits this crate always honours: `FI_CONTEXT` and `FI_CONTEXT2`
    /// (every operation posted through it carries a 64-byte context).
    pub fn new() -> Result<Hints> {
        // SAFETY: fi_allocinfo returns a zeroed fi_info with its attribute structs allocated.
        let raw = unsafe { fi_allocinfo() };
        let raw = NonNull::new(raw)
            .ok_or(Error::Call { call: "fi_allocinfo", errno: libfabric_sys::enums::Errno::from_raw(libc::ENOMEM) })?;
        let mut hints = Hints { info: OwnedInfo(raw) };
        hints.raw_mut().set_mode(Mode::CONTEXT | Mode::CONTEXT2);
        Ok(hints)
    }

    fn raw(&self) -> &fi_info {
        // SAFETY: the pointer is valid for the lifetime of `self`.
        unsafe { self.info.0.as_ref() }
    }

    fn raw_mut(&mut self) -> &mut fi_info {
        // SAFETY: the pointer is valid and uniquely owned by `self`.
        unsafe { self.info.0.as_mut() }
    }

    fn ep_attr(&mut self) -> &mut fi_ep_attr {
        // SAFETY: fi_allocinfo allocates every attribute struct.
        unsafe { &mut *self.raw_mut().ep_attr }
    }

    fn domain_attr(&mut self) -> &mut fi_domain_attr {
        // SAFETY: fi_allocinfo allocates every attribute struct.
        unsafe { &mut *self.raw_mut().domain_attr }
    }

    fn fabric_attr(&mut self) -> &mut fi_fabric_attr {
        // SAFETY: fi_allocinfo allocates every attribute struct.
        unsafe { &mut *self.raw_mut().fabric_attr }
    }

    fn tx_attr(&mut self) -> &mut fi_tx_attr {
        // SAFETY: fi_allocinfo allocates every attribute struct.
        unsafe { &mut *self.raw_mut().tx_attr }
    }

    fn rx_attr(&mut self) -> &mut fi_rx_attr {
        // SAFETY: fi_allocinfo allocates every attribute struct.
        unsafe { &mut *self.raw_mut().rx_attr }
    }

    /// Required capabilities (`fi_info.caps`).
    pub fn caps(mut self, caps: Caps) -> Self {
        self.raw_mut().set_caps(caps);
        self
    }

    /// Mode bits the application supports (`fi_info.mode`), replacing the
    /// default `FI_CONTEXT | FI_CONTEXT2`. Adding others (`FI_MSG_PREFIX`,
    /// `FI_ASYNC_IOV`, …) makes honouring them the caller's job.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.raw_mut().set_mode(mode);
        self
    }

    /// Address format (`fi_info.addr_format`).
    pub fn addr_format(mut self, format: AddrFormat) -> Self {
        self.raw_mut().set_addr_format(format);
        self
    }

    /// Endpoint type (`ep_attr.type`).
    pub fn ep_type(mut self, ty: EpType) -> Self {
        self.ep_attr().set_type(ty);
        self
    }

    /// Wire protocol (`ep_attr.protocol`).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.ep_attr().set_protocol(protocol);
        self
    }

    /// Remote CQ data size in bytes (`domain_attr.cq_data_size`).
    pub fn cq_data_size(mut self, bytes: usize) -> Self {
        self.domain_attr().set_cq_data_size(bytes);
        self
    }

    /// Provider name, e.g. `"tcp"` or `"tcp;ofi_rxm"` (`fabric_attr.prov_name`).
    pub fn provider(mut self, name: &str) -> Result<Self> {
        let c = cstring("fi_getinfo", name)?;
        // SAFETY: prov_name is a string field of the fi_info these hints own.
        unsafe { set_string(&mut self.fabric_attr().prov_name, &c)? };
        Ok(self)
    }

    /// Fabric name (`fabric_attr.name`).
    pub fn fabric_name(mut self, name: &str) -> Result<Self> {
        let c = cstring("fi_getinfo", name)?;
        // SAFETY: name is a string field of the fi_info these hints own.
        unsafe { set_string(&mut self.fabric_attr().name, &c)? };
        Ok(self)
    }

    /// Domain name (`domain_attr.name`).
    pub fn domain_name(mut self, name: &str) -> Result<Self> {
        let c = cstring("fi_getinfo", name)?;
        // SAFETY: name is a string field of the fi_info these hints own.
        unsafe { set_string(&mut self.domain_attr().name, &c)? };
        Ok(self)
    }

    /// Threading model (`domain_attr.threading`).
    pub fn threading(mut self, threading: Threading) -> Self {
        self.domain_attr().set_threading(threading);
        self
    }

    /// Control progress model (`domain_attr.control_progress`).
    pub fn control_progress(mut self, progress: Progress) -> Self {
        self.domain_attr().set_control_progress(progress);
        self
    }

    /// Data progress model (`domain_attr.data_progress`).
    pub fn data_progress(mut self, progress: Progress) -> Self {
        self.domain_attr().set_data_progress(progress);
        self
    }

    /// Resource management (`domain_attr.resource_mgmt`).
    pub fn resource_mgmt(mut self, mgmt: ResourceMgmt) -> Self {
        self.domain_attr().set_resource_mgmt(mgmt);
        self
    }

    /// Memory registration modes the application supports (`domain_attr.mr_mode`).
    pub fn mr_mode(mut self, mode: MrMode) -> Self {
        self.domain_attr().set_mr_mode(mode);
        self
    }

    /// Address vector type (`domain_attr.av_type`).
    pub fn av_type(mut self, ty: AvType) -> Self {
        self.domain_attr().set_av_type(ty);
        self
    }

    /// Transmit queue size (`tx_attr.size`).
    pub fn tx_size(mut self, size: usize) -> Self {
        self.tx_attr().set_size(size);
        self
    }

    /// Receive queue size (`rx_attr.size`).
    pub fn rx_size(mut self, size: usize) -> Self {
        self.rx_attr().set_size(size);
        self
    }

    /// Default transmit operation flags (`tx_attr.op_flags`).
    pub fn tx_op_flags(mut self, flags: OpFlags) -> Self {
        self.tx_attr().set_op_flags(flags);
        self
    }

    /// Message ordering required on transmit (`tx_attr.msg_order`).
    pub fn tx_msg_order(mut self, order: MsgOrder) -> Self {
        self.tx_attr().set_msg_order(order);
        self
    }

    /// Minimum inject size (`tx_attr.inject_size`).
    pub fn inject_size(mut self, bytes: usize) -> Self {
        self.tx_attr().set_inject_size(bytes);
        self
    }

    /// The hints as a C struct.
    pub fn as_raw(&self) -> &fi_info {
        self.raw()
    }

    /// Every attribute struct, for fields without a builder method: each has
    /// typed setters from the generated crate (`set_op_flags(OpFlags)`,
    /// `set_max_msg_size(usize)`, …). String fields must be set through the
    /// builder methods, which copy them the way `fi_freeinfo` expects.
    pub fn attrs_mut(&mut self) -> HintAttrs<'_> {
        // SAFETY: fi_allocinfo allocated each attribute struct; the borrows are
        // disjoint and bounded by `&mut self`.
        unsafe {
            let info = self.info.0.as_ptr();
            HintAttrs {
                info: &mut *info,
                ep: &mut *(*info).ep_attr,
                domain: &mut *(*info).domain_attr,
                fabric: &mut *(*info).fabric_attr,
                tx: &mut *(*info).tx_attr,
                rx: &mut *(*info).rx_attr,
            }
        }
    }

    /// The local address to use (`fi_info.src_addr`), in the format of
    /// [`addr_format`](Self::addr_format).
    pub fn src_addr(mut self, addr: &[u8]) -> Result<Self> {
        let info = self.raw_mut();
        // SAFETY: the field belongs to these hints; the copy is malloc'ed as fi_freeinfo expects.
        unsafe { set_bytes(&mut info.src_addr, &mut info.src_addrlen, addr)? };
        Ok(self)
    }

    /// The remote address to reach (`fi_info.dest_addr`).
    pub fn dest_addr(mut self, addr: &[u8]) -> Result<Self> {
        let info = self.raw_mut();
        // SAFETY: as in `src_addr`.
        unsafe { set_bytes(&mut info.dest_addr, &mut info.dest_addrlen, addr)? };
        Ok(self)
    }
}

/// Where to look: `node` and `service` of `fi_getinfo`, and its flags.
#[derive(Debug, Clone, Default)]
pub struct Target<'a> {
    /// A host name or address (`node`).
    pub node: Option<&'a str>,
    /// A port or service name (`service`).
    pub service: Option<&'a str>,
    /// `FI_SOURCE` (node/service are local), `FI_NUMERICHOST`, …
    pub flags: GetinfoFlags,
}

impl<'a> Target<'a> {
    /// A local address to bind to (`FI_SOURCE`).
    pub fn source(node: &'a str, service: Option<&'a str>) -> Self {
        Target { node: Some(node), service, flags: GetinfoFlags::SOURCE }
    }

    /// A remote address to reach.
    pub fn destination(node: &'a str, service: Option<&'a str>) -> Self {
        Target { node: Some(node), service, flags: GetinfoFlags::empty() }
    }
}

/// Asks libfabric which fabrics match `hints` (`fi_getinfo` with the headers'
/// API version). An empty result is `Ok(vec![])`, not an error.
///
/// ```no_run
/// let infos = libfabric::getinfo(&libfabric::Target::default(), &libfabric::Hints::new()?.provider("tcp")?)?;
/// for info in &infos {
///     println!("{} {:?}", info.provider(), info.ep_type());
/// }
/// # Ok::<(), libfabric::Error>(())
/// ```
/// `hints` may be `None`: libfabric then applies no filter, and providers
/// answer with their defaults (which differ from empty hints: no mode bits are
/// assumed supported).
pub fn getinfo<'h>(target: &Target<'_>, hints: impl Into<Option<&'h Hints>>) -> Result<Vec<Info>> {
    let hints = hints.into();
    let node = target.node.map(|n| cstring("fi_getinfo", n)).transpose()?;
    let service = target.service.map(|s| cstring("fi_getinfo", s)).transpose()?;
    let mut list: *mut fi_info = ptr::null_mut();
    // SAFETY: strings and hints outlive the call; the list is freed below.
    let ret = unsafe {
        fi_getinfo(
            FI_VERSION(FI_MAJOR_VERSION as u32, FI_MINOR_VERSION as u32),
            node.as_ref().map_or(ptr::null(), |n| n.as_ptr()),
            service.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
            target.flags.bits(),
            hints.map_or(ptr::null(), |h| h.raw() as *const fi_info),
            &mut list,
        )
    };
    if ret == -(libc::ENODATA) {
        return Ok(Vec::new());
    }
    check("fi_getinfo", ret)?;
    let head = OwnedInfo(
        NonNull::new(list)
            .ok_or(Error::Call { call: "fi_getinfo", errno: libfabric_sys::enums::Errno::from_raw(libc::ENODATA) })?,
    );
    let mut out = Vec::new();
    let mut cur = head.0.as_ptr();
    while !cur.is_null() {
        // SAFETY: `cur` walks the list libfabric returned, which `head` keeps alive.
        let copy = unsafe { fi_dupinfo(cur) };
        let copy = NonNull::new(copy)
            .ok_or(Error::Call { call: "fi_dupinfo", errno: libfabric_sys::enums::Errno::from_raw(libc::ENOMEM) })?;
        out.push(Info { info: OwnedInfo(copy) });
        // SAFETY: as above.
        cur = unsafe { (*cur).next };
    }
    Ok(out)
}

/// One fabric description returned by [`getinfo`], owned (a `fi_dupinfo`
/// copy, freed when dropped).
pub struct Info {
    info: OwnedInfo,
}

impl Clone for Info {
    fn clone(&self) -> Self {
        // SAFETY: the source is valid; fi_dupinfo returns NULL only when out of memory.
        let copy = unsafe { fi_dupinfo(self.info.0.as_ptr()) };
        Info { info: OwnedInfo(NonNull::new(copy).expect("fi_dupinfo: out of memory")) }
    }
}

/// A string field of `owner`'s fi_info, or "" when unset.
fn cstr_field(_owner: &Info, p: *const libc::c_char) -> &str {
    if p.is_null() {
        return "";
    }
    // SAFETY: strings of an fi_info from libfabric are NUL-terminated and live
    // as long as the fi_info, which the `_owner` borrow bounds.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
}

impl Info {
    /// Takes ownership of an fi_info libfabric handed over (a connection
    /// request's).
    ///
    /// # Safety
    /// `info` is valid and freed by nobody else.
    pub(crate) unsafe fn from_owned(info: NonNull<fi_info>) -> Info {
        Info { info: OwnedInfo(info) }
    }

    /// The C struct (for generated accessors not wrapped here).
    pub fn as_raw(&self) -> &fi_info {
        // SAFETY: valid for the lifetime of `self`.
        unsafe { self.info.0.as_ref() }
    }

    /// A pointer for libfabric calls that take `struct fi_info *`.
    pub(crate) fn as_ptr(&self) -> *mut fi_info {
        self.info.0.as_ptr()
    }

    fn attr<T>(&self, p: *mut T) -> Option<&T> {
        // SAFETY: attribute pointers of an fi_info from libfabric are NULL or
        // valid for the fi_info's lifetime, which `&self` bounds.
        unsafe { p.as_ref() }
    }

    /// Provider name, e.g. `"tcp;ofi_rxm"`.
    pub fn provider(&self) -> &str {
        self.attr(self.as_raw().fabric_attr).map_or("", |a| cstr_field(self, a.prov_name))
    }

    /// Fabric name.
    pub fn fabric_name(&self) -> &str {
        self.attr(self.as_raw().fabric_attr).map_or("", |a| cstr_field(self, a.name))
    }

    /// Domain name.
    pub fn domain_name(&self) -> &str {
        self.attr(self.as_raw().domain_attr).map_or("", |a| cstr_field(self, a.name))
    }

    /// Capabilities.
    pub fn caps(&self) -> Caps {
        self.as_raw().caps()
    }

    /// Mode bits the provider requires of the application.
    pub fn mode(&self) -> Mode {
        self.as_raw().mode()
    }

    /// Address format.
    pub fn addr_format(&self) -> AddrFormat {
        self.as_raw().addr_format()
    }

    /// Endpoint type.
    pub fn ep_type(&self) -> EpType {
        self.attr(self.as_raw().ep_attr).map_or(EpType::UNSPEC, |a| a.type_())
    }

    /// Endpoint attributes.
    pub fn ep_attr(&self) -> Option<&fi_ep_attr> {
        self.attr(self.as_raw().ep_attr)
    }

    /// Domain attributes.
    pub fn domain_attr(&self) -> Option<&fi_domain_attr> {
        self.attr(self.as_raw().domain_attr)
    }

    /// Fabric attributes.
    pub fn fabric_attr(&self) -> Option<&fi_fabric_attr> {
        self.attr(self.as_raw().fabric_attr)
    }

    /// Transmit attributes.
    pub fn tx_attr(&self) -> Option<&fi_tx_attr> {
        self.attr(self.as_raw().tx_attr)
    }

    /// Receive attributes.
    pub fn rx_attr(&self) -> Option<&fi_rx_attr> {
        self.attr(self.as_raw().rx_attr)
    }

    /// Threading model of the domain.
    pub fn threading(&self) -> Threading {
        self.domain_attr().map_or(Threading::UNSPEC, |d| d.threading())
    }

    /// Memory registration modes the provider requires.
    pub fn mr_mode(&self) -> MrMode {
        self.domain_attr().map_or(MrMode::empty(), |d| d.mr_mode())
    }

    /// Largest message that can be sent with `inject`.
    pub fn inject_size(&self) -> usize {
        self.tx_attr().map_or(0, |t| t.inject_size())
    }

    /// Largest message the endpoint transfers.
    pub fn max_msg_size(&self) -> usize {
        self.ep_attr().map_or(0, |e| e.max_msg_size())
    }

    /// The source address bytes, if any.
    pub fn src_addr(&self) -> Option<&[u8]> {
        let i = self.as_raw();
        // SAFETY: src_addr points to src_addrlen bytes owned by the fi_info.
        (!i.src_addr.is_null()).then(|| unsafe { std::slice::from_raw_parts(i.src_addr.cast(), i.src_addrlen) })
    }

    /// The destination address bytes, if any.
    pub fn dest_addr(&self) -> Option<&[u8]> {
        let i = self.as_raw();
        // SAFETY: dest_addr points to dest_addrlen bytes owned by the fi_info.
        (!i.dest_addr.is_null()).then(|| unsafe { std::slice::from_raw_parts(i.dest_addr.cast(), i.dest_addrlen) })
    }
}

impl fmt::Debug for Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Info")
            .field("provider", &self.provider())
            .field("fabric", &self.fabric_name())
            .field("domain", &self.domain_name())
            .field("ep_type", &self.ep_type())
            .field("caps", &self.caps())
            .finish()
    }
}

impl fmt::Display for Info {
    /// libfabric's own rendering (`fi_tostr_r(FI_TYPE_INFO)`), as `fi_info -v` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&tostr(self.as_raw(), TostrType::INFO))
    }
}

/// `fi_tostr_r` for a value of the given kind.
pub(crate) fn tostr<T>(value: &T, kind: TostrType) -> String {
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    // SAFETY: `value` matches `kind` (callers pass the struct or integer fi_tostr
    // expects for it) and the buffer is writable for its length.
    let p = unsafe { fi_tostr_r(buf.as_mut_ptr(), buf.len(), (value as *const T).cast(), kind.raw()) };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: fi_tostr_r NUL-terminates within the buffer.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
