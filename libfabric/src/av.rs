//! Address vectors: peers' addresses, inserted once, used by handle.

use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use libfabric_sys::enums::{AddrFormat, AvType};
use libfabric_sys::flags::AvInsertFlags;
use libfabric_sys::{
    fi_addr_t, fi_av_attr, fi_av_insert, fi_av_insertsvc, fi_av_lookup, fi_av_open, fi_av_remove, fi_av_straddr,
    fid_av, FI_ADDR_NOTAVAIL, FI_ADDR_UNSPEC,
};

mod removals;

use crate::domain::{Domain, DomainInner};
use crate::error::{check, Error, Result};
use crate::fid::{Object, ThreadModel, ThreadSafe};
pub(crate) use removals::Removals;

/// A peer's handle in an address vector (`fi_addr_t`), valid only with the
/// address vector that made it.
///
/// Handles come from [`AddressVector::insert`] (or a completion's source
/// address), carry the identity of their address vector, and an endpoint
/// refuses one from another vector: libfabric itself would read out of bounds
/// for a handle it never issued. [`Address::UNSPEC`] is accepted everywhere.
///
/// A handle removed from its vector ([`AddressVector::remove`]) is refused
/// from then on, with [`Error::InvalidArgument`], even when libfabric hands
/// its raw value out again for a later insert.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub(crate) raw: fi_addr_t,
    /// The address vector that issued it; 0 for `UNSPEC`/`NOTAVAIL`.
    pub(crate) av: u32,
    /// Which peer of those libfabric gave this raw value to (see
    /// [`Removals`]); 0 until the value is handed out again after a removal.
    pub(crate) generation: u32,
}

/// Identities of address vectors, never reused within a process.
static NEXT_AV_ID: AtomicU32 = AtomicU32::new(1);

/// A fresh identity: never 0 (no vector) nor `u32::MAX` (a source address
/// of no single vector); `None` once a process has opened four billion
/// vectors (an identity used twice would let one vector's handles into
/// another).
fn next_av_id() -> Option<u32> {
    NEXT_AV_ID
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| id.checked_add(1))
        .ok()
        .filter(|id| *id != u32::MAX)
}

impl Address {
    /// `FI_ADDR_UNSPEC`: any peer (receives), or the connected peer (MSG).
    pub const UNSPEC: Address = Address { raw: FI_ADDR_UNSPEC, av: 0, generation: 0 };
    /// `FI_ADDR_NOTAVAIL`: a source address libfabric could not resolve (the
    /// same value as `FI_ADDR_UNSPEC` in libfabric).
    pub const NOTAVAIL: Address = Address { raw: FI_ADDR_NOTAVAIL, av: 0, generation: 0 };

    /// The raw `fi_addr_t`.
    pub fn raw(self) -> fi_addr_t {
        self.raw
    }

    /// A handle from a raw `fi_addr_t`, for raw calls.
    ///
    /// # Safety
    /// `raw` is a live handle of `av` (inserted and not removed), or
    /// `FI_ADDR_UNSPEC`.
    pub unsafe fn from_raw<M: ThreadModel>(raw: fi_addr_t, av: &AddressVector<M>) -> Address {
        // Live, so the peer libfabric gave `raw` to last: a value it handed
        // out again after a removal is its next generation.
        av.issue(&[raw])[0]
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Address::UNSPEC => f.write_str("Address(UNSPEC)"),
            a if a.generation == 0 => write!(f, "Address({} of av {})", a.raw, a.av),
            a => write!(f, "Address({} of av {}, generation {})", a.raw, a.av, a.generation),
        }
    }
}

pub(crate) struct AvInner {
    pub(crate) object: Object<fid_av>,
    _domain: Arc<DomainInner>,
    addrlen: usize,
    /// The domain's addresses are strings of varying length (`FI_ADDR_STR`).
    string_addresses: bool,
    /// The domain's addresses are socket addresses, whose length libfabric
    /// takes from their family field rather than from the caller.
    socket_addresses: bool,
    /// Bits of a handle that select a receive context (`fi_av_attr.rx_ctx_bits`).
    rx_ctx_bits: u32,
    /// Stamped on every handle this vector issues.
    pub(crate) id: u32,
    /// The handles removed so far, so that none is used again (shared with
    /// the completion queues that stamp source addresses).
    pub(crate) removals: Arc<Removals>,
}

/// An open address vector (`fi_av_open`).
pub struct AddressVector<M: ThreadModel = ThreadSafe> {
    pub(crate) inner: Arc<AvInner>,
    _model: PhantomData<M::Marker>,
}

impl<M: ThreadModel> Clone for AddressVector<M> {
    fn clone(&self) -> Self {
        AddressVector { inner: self.inner.clone(), _model: PhantomData }
    }
}

impl<M: ThreadModel> fmt::Debug for AddressVector<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressVector").field("raw", &self.inner.object.as_ptr()).finish()
    }
}

impl<M: ThreadModel> AddressVector<M> {
    /// Opens an address vector whose handles address receive contexts of
    /// scalable endpoints: `rx_ctx_bits` bits of each handle select the
    /// context ([`AddressVector::rx_context`]).
    pub fn open_scalable(domain: &Domain<M>, ty: AvType, rx_ctx_bits: u32) -> Result<Self> {
        Self::open_with(domain, ty, rx_ctx_bits)
    }

    /// Opens an address vector of `ty` (`AvType::UNSPEC`: the provider's choice).
    ///
    /// ```no_run
    /// # fn demo(domain: &libfabric::Domain, peer_name: &[u8]) -> libfabric::Result<()> {
    /// use libfabric::{AddressVector, AvType};
    /// let av = AddressVector::open(domain, AvType::UNSPEC)?;
    /// let peer = av.insert_one(peer_name)?; // a name from the peer's Endpoint::name
    /// println!("{}", av.straddr(&av.lookup(peer)?)?);
    /// # Ok(()) }
    /// ```
    pub fn open(domain: &Domain<M>, ty: AvType) -> Result<Self> {
        Self::open_with(domain, ty, 0)
    }

    fn open_with(domain: &Domain<M>, ty: AvType, rx_ctx_bits: u32) -> Result<Self> {
        let bits = i32::try_from(rx_ctx_bits).ok().filter(|b| *b < 64).ok_or(Error::InvalidArgument {
            call: "fi_av_open",
            reason: format!("{rx_ctx_bits} receive context bits do not fit a 64-bit handle"),
        })?;
        let id = next_av_id().ok_or(Error::InvalidArgument {
            call: "fi_av_open",
            reason: "this process has used up the 2^32 address vector identities".into(),
        })?;
        let mut attr = fi_av_attr::default();
        attr.set_type(ty);
        attr.set_rx_ctx_bits(bits);
        let mut raw = ptr::null_mut();
        // SAFETY: the domain is open; attr is valid for the call.
        check("fi_av_open", unsafe { fi_av_open(domain.as_raw(), &mut attr, &mut raw, ptr::null_mut()) })?;
        // SAFETY: fi_av_open succeeded.
        let object = unsafe { Object::new(raw, "fi_close(av)") }
            .ok_or(Error::InvalidArgument { call: "fi_av_open", reason: "returned no AV".into() })?;
        let addrlen = domain.info().as_raw().src_addrlen.max(domain.info().as_raw().dest_addrlen);
        Ok(AddressVector {
            inner: Arc::new(AvInner {
                object,
                _domain: domain.inner.clone(),
                addrlen,
                string_addresses: domain.info().addr_format() == AddrFormat::ADDR_STR,
                socket_addresses: [AddrFormat::SOCKADDR, AddrFormat::SOCKADDR_IN, AddrFormat::SOCKADDR_IN6]
                    .contains(&domain.info().addr_format()),
                rx_ctx_bits,
                id,
                removals: Arc::new(Removals::new(rx_ctx_bits)),
            }),
            _model: PhantomData,
        })
    }

    /// The raw object, for calls this crate does not wrap. Handles inserted
    /// or removed through it are not known to [`remove`](Self::remove)'s
    /// record of removed handles.
    pub fn as_raw(&self) -> *mut fid_av {
        self.inner.object.as_ptr()
    }

    /// Inserts raw addresses (as `Endpoint::name` returns them), `addrlen` bytes
    /// each, back to back; returns one handle per address, in order. Every
    /// address must be valid: when libfabric takes only some, the call fails.
    pub fn insert(&self, addrs: &[u8], addrlen: usize, flags: AvInsertFlags) -> Result<Vec<Address>> {
        if addrlen == 0 || addrs.len() % addrlen != 0 {
            return Err(Error::InvalidArgument {
                call: "fi_av_insert",
                reason: format!("{} bytes are not a whole number of {addrlen}-byte addresses", addrs.len()),
            });
        }
        // Flags other than FI_MORE change what the call reads or writes
        // (FI_SYNC_ERR wants an error array as context, FI_AV_USER_ID reads
        // the handle array as input): not through this method.
        if !AvInsertFlags::MORE.contains(flags) {
            return Err(Error::InvalidArgument {
                call: "fi_av_insert",
                reason: format!("{flags:?}: only FI_MORE is accepted here"),
            });
        }
        let count = addrs.len() / addrlen;
        if count == 0 {
            // Nothing to insert; libfabric is not asked (udp's vector
            // dereferences the empty array it is given: found by tests/tests/fuzz.rs).
            return Ok(Vec::new());
        }
        // String addresses (FI_ADDR_STR: shm's names) vary in length, so
        // libfabric cannot step through several: one at a time.
        if self.inner.string_addresses && count != 1 {
            return Err(Error::InvalidArgument {
                call: "fi_av_insert",
                reason: "string addresses (FI_ADDR_STR) are inserted one at a time".into(),
            });
        }
        // fi_av_insert reads addresses back to back at the domain's own
        // length (a string address up to its NUL): anything else would pair
        // handles with the wrong bytes or read past the end.
        self.check_one_address("fi_av_insert", &addrs[..addrlen])?;
        let mut raw = vec![FI_ADDR_NOTAVAIL; count];
        let _changing = self.inner.removals.changing();
        // SAFETY: `addrs` holds `count` addresses; `raw` has room for `count` handles.
        let ret = unsafe {
            fi_av_insert(self.as_raw(), addrs.as_ptr().cast(), count, raw.as_mut_ptr(), flags.bits(), ptr::null_mut())
        };
        let inserted = check("fi_av_insert", ret)? as usize;
        if inserted != count {
            return Err(Error::InvalidArgument {
                call: "fi_av_insert",
                reason: format!("only {inserted} of {count} addresses were valid"),
            });
        }
        Ok(self.issue(&raw))
    }

    /// Inserts one address.
    pub fn insert_one(&self, addr: &[u8]) -> Result<Address> {
        Ok(self.insert(addr, addr.len(), AvInsertFlags::empty())?[0])
    }

    /// Resolves and inserts `node`/`service` (`fi_av_insertsvc`).
    pub fn insert_service(&self, node: &str, service: &str) -> Result<Address> {
        let invalid = |what: &str| Error::InvalidArgument {
            call: "fi_av_insertsvc",
            reason: format!("{what} contains a NUL byte"),
        };
        if node.is_empty() || service.is_empty() {
            // libfabric 1.17 reads the byte before an empty node string
            // (found by tests/tests/fuzz.rs under valgrind).
            return Err(Error::InvalidArgument {
                call: "fi_av_insertsvc",
                reason: "the node and the service must not be empty".into(),
            });
        }
        let node = CString::new(node).map_err(|_| invalid("node"))?;
        let service = CString::new(service).map_err(|_| invalid("service"))?;
        let mut raw = FI_ADDR_NOTAVAIL;
        let _changing = self.inner.removals.changing();
        // SAFETY: the strings and `raw` outlive the call.
        let ret =
            unsafe { fi_av_insertsvc(self.as_raw(), node.as_ptr(), service.as_ptr(), &mut raw, 0, ptr::null_mut()) };
        if check("fi_av_insertsvc", ret)? != 1 {
            return Err(Error::InvalidArgument {
                call: "fi_av_insertsvc",
                reason: "the address was not inserted".into(),
            });
        }
        Ok(self.issue(&[raw])[0])
    }

    /// The raw address behind a handle (`fi_av_lookup`).
    pub fn lookup(&self, addr: Address) -> Result<Vec<u8>> {
        self.check(addr, "fi_av_lookup")?;
        let mut buf = vec![0u8; self.inner.addrlen.max(16)];
        loop {
            let mut len = buf.len();
            // SAFETY: `buf` is writable for `len` bytes; the handle is this vector's.
            let ret = unsafe { fi_av_lookup(self.as_raw(), addr.raw, buf.as_mut_ptr().cast(), &mut len) };
            check("fi_av_lookup", ret)?;
            if len <= buf.len() {
                buf.truncate(len);
                return Ok(buf);
            }
            buf.resize(len, 0); // too small: libfabric reported the size it needs
        }
    }

    /// A printable form of a raw address (`fi_av_straddr`).
    ///
    /// libfabric reads as many bytes as an address of this domain has, so
    /// `addr` must be one whole address (or, for string addresses, hold its
    /// NUL); anything shorter is an error rather than a read past its end.
    pub fn straddr(&self, addr: &[u8]) -> Result<String> {
        self.check_one_address("fi_av_straddr", addr)?;
        let mut buf = [0 as libc::c_char; 256];
        let mut len = buf.len();
        // SAFETY: `addr` holds a whole address (checked above); `buf` is
        // writable for `len` bytes.
        let p = unsafe { fi_av_straddr(self.as_raw(), addr.as_ptr().cast(), buf.as_mut_ptr(), &mut len) };
        if p.is_null() {
            return Ok(String::new());
        }
        // SAFETY: fi_av_straddr NUL-terminates within `buf`.
        Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// Checks that `addr` is one whole address of this domain: libfabric
    /// reads its own length from whatever pointer it is given.
    fn check_one_address(&self, call: &'static str, addr: &[u8]) -> Result<()> {
        let refuse = |reason: String| Err(Error::InvalidArgument { call, reason });
        if self.inner.string_addresses {
            if !addr.contains(&0) {
                return refuse("a string address (FI_ADDR_STR) must end in a NUL byte".into());
            }
        } else if self.inner.addrlen == 0 {
            return refuse("this domain does not say how long its addresses are".into());
        } else if addr.len() != self.inner.addrlen {
            return refuse(format!("addresses of this domain are {} bytes, not {}", self.inner.addrlen, addr.len()));
        } else if self.inner.socket_addresses {
            // libfabric sizes a socket address by its family: one that claims
            // a longer family than the bytes hold would be read past its end
            // (found by tests/tests/fuzz.rs under valgrind).
            let family = addr.get(..2).map_or(0, |f| u16::from_ne_bytes([f[0], f[1]])) as i32;
            let size = match family {
                libc::AF_INET => std::mem::size_of::<libc::sockaddr_in>(),
                libc::AF_INET6 => std::mem::size_of::<libc::sockaddr_in6>(),
                _ => return refuse(format!("address family {family} is not an IPv4 or IPv6 socket address")),
            };
            if size != addr.len() {
                return refuse(format!("a family-{family} socket address is {size} bytes, not {}", addr.len()));
            }
        }
        Ok(())
    }

    /// The handle of receive context `index` of the scalable endpoint `addr`
    /// (`fi_rx_addr`), for a vector opened with [`open_scalable`](Self::open_scalable).
    pub fn rx_context(&self, addr: Address, index: u32) -> Result<Address> {
        self.check(addr, "fi_rx_addr")?;
        let bits = self.inner.rx_ctx_bits;
        if bits == 0 || u64::from(index) >> bits != 0 {
            return Err(Error::InvalidArgument {
                call: "fi_rx_addr",
                reason: format!("receive context {index} does not fit the vector's {bits} context bits"),
            });
        }
        // SAFETY: fi_rx_addr only computes (and is defined for every width).
        let raw = unsafe { libfabric_sys::fi_rx_addr(addr.raw, index as i32, bits as i32) };
        // A context of the same peer: its generation.
        Ok(Address { raw, av: self.inner.id, generation: addr.generation })
    }

    /// Fails unless `addr` was issued by this address vector and has not
    /// been removed from it.
    pub(crate) fn check(&self, addr: Address, call: &'static str) -> Result<()> {
        if addr.av != self.inner.id {
            return Err(Error::InvalidArgument {
                call,
                reason: format!("{addr:?} is not a handle of this address vector"),
            });
        }
        if !self.inner.removals.is_live(addr.raw, addr.generation) {
            return Err(removed(call, addr));
        }
        Ok(())
    }

    /// The handles of raw values libfabric just issued (inserted), each at
    /// the generation it starts (see [`Removals::issued`]).
    fn issue(&self, raws: &[fi_addr_t]) -> Vec<Address> {
        let generations = self.inner.removals.issued(raws);
        raws.iter().zip(generations).map(|(&raw, generation)| Address { raw, av: self.inner.id, generation }).collect()
    }

    /// The handle of a raw value this vector issued, at its current
    /// generation (for raw values read back from libfabric).
    #[cfg(feature = "tokio")]
    pub(crate) fn handle(&self, raw: fi_addr_t) -> Address {
        Address { raw, av: self.inner.id, generation: self.inner.removals.current(raw) }
    }

    /// Removes handles (`fi_av_remove`). From then on every use of them, or of
    /// a copy, is refused with [`Error::InvalidArgument`] (libfabric would
    /// follow a removed handle into freed state), also once libfabric hands
    /// the same raw value out again for a new peer. Inserting an address
    /// twice may give the same handle twice (libfabric counts them): removing
    /// it refuses both copies. Receive-context handles
    /// ([`rx_context`](Self::rx_context)) are not removed themselves: remove
    /// the peer's handle.
    ///
    /// # Safety
    /// libfabric leaves undefined what happens to operations that use a
    /// removed address, so: no operation posted with one of these handles
    /// (as destination or receive source) is still in flight; none is being
    /// posted on another thread while this runs (it would have passed its
    /// check before the removal); and no [`AvSet`](crate::AvSet) or
    /// collective group of this vector includes them.
    pub unsafe fn remove(&self, addrs: &[Address]) -> Result<()> {
        for a in addrs {
            self.check(*a, "fi_av_remove")?;
            if !self.inner.removals.is_peer(a.raw) {
                return Err(Error::InvalidArgument {
                    call: "fi_av_remove",
                    reason: format!("{a:?} names a receive context, not an inserted peer"),
                });
            }
        }
        let mut raw: Vec<fi_addr_t> = addrs.iter().map(|a| a.raw).collect();
        let mut distinct = raw.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != raw.len() {
            // libfabric would free the same entry twice.
            return Err(Error::InvalidArgument { call: "fi_av_remove", reason: "a handle is listed twice".into() });
        }
        if raw.is_empty() {
            return Ok(());
        }
        let _changing = self.inner.removals.changing();
        let ret = fi_av_remove(self.as_raw(), raw.as_mut_ptr(), raw.len(), 0);
        // Refused from now on, even if libfabric reports a failure: which
        // of them it dropped is then unknown.
        self.inner.removals.removed(&raw);
        check("fi_av_remove", ret).map(drop)
    }
}

/// The error of a handle removed from its vector.
#[cold]
#[inline(never)]
pub(crate) fn removed(call: &'static str, addr: Address) -> Error {
    Error::InvalidArgument { call, reason: format!("{addr:?} was removed from its address vector") }
}
