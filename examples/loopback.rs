//! Loopback over libfabric's default provider, with the generated crate only.
//!
//! Asks `fi_getinfo` for a reliable-datagram (RDM) endpoint on 127.0.0.1,
//! takes the provider libfabric ranks first (or the one named with
//! `--provider NAME`), opens fabric, domain, completion queue, address vector
//! and endpoint, then sends messages to its own address and checks each one.
//!
//! ```text
//! cargo run -p libfabric-examples --example loopback [-- --provider tcp --count 1000]
//! ```

use std::ffi::{c_void, CStr, CString};
use std::process::ExitCode;
use std::ptr;
use std::time::{Duration, Instant};

use libfabric_sys::enums::{AvType, CqFormat, EpType};
use libfabric_sys::flags::{BindFlags, Caps, MrMode};
use libfabric_sys::*;

/// A failed libfabric call: its name and libfabric's text for the code.
struct Failure(String);

fn check(call: &str, ret: isize) -> Result<(), Failure> {
    if ret >= 0 {
        return Ok(());
    }
    // SAFETY: fi_strerror returns a static NUL-terminated string for any code.
    let text = unsafe { CStr::from_ptr(fi_strerror((-ret) as i32)) };
    Err(Failure(format!("{call}: {} ({ret})", text.to_string_lossy())))
}

struct Options {
    provider: Option<CString>,
    count: usize,
}

fn options() -> Result<Options, Failure> {
    let mut o = Options { provider: None, count: 100 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| Failure(format!("{a} needs a value")));
        match a.as_str() {
            "--provider" | "-p" => {
                o.provider = Some(CString::new(value()?).map_err(|_| Failure("provider name has a NUL".into()))?)
            }
            "--count" | "-c" => o.count = value()?.parse().map_err(|_| Failure("--count takes a number".into()))?,
            "--help" | "-h" => {
                println!("usage: loopback [--provider NAME] [--count N]");
                std::process::exit(0);
            }
            other => return Err(Failure(format!("unknown argument {other:?} (try --help)"))),
        }
    }
    Ok(o)
}

/// The objects of one endpoint, closed children-first on drop.
struct Endpoint {
    info: *mut fi_info,
    fabric: *mut fid_fabric,
    domain: *mut fid_domain,
    cq: *mut fid_cq,
    av: *mut fid_av,
    ep: *mut fid_ep,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // SAFETY: each pointer is null or an object this struct opened and has
        // not closed; children are closed before their parents.
        unsafe {
            for f in [self.ep.cast::<fid>(), self.av.cast(), self.cq.cast(), self.domain.cast(), self.fabric.cast()] {
                if !f.is_null() {
                    let ret = fi_close(f);
                    if ret != 0 {
                        eprintln!("warning: fi_close failed: {ret}");
                    }
                }
            }
            if !self.info.is_null() {
                fi_freeinfo(self.info);
            }
        }
    }
}

/// Discovers and opens an RDM endpoint on 127.0.0.1.
///
/// # Safety
/// Plain libfabric calls; the returned objects are closed by `Endpoint`'s drop.
unsafe fn open(provider: Option<&CStr>) -> Result<Endpoint, Failure> {
    let hints = fi_allocinfo();
    if hints.is_null() {
        return Err(Failure("fi_allocinfo: out of memory".into()));
    }
    (*hints).set_caps(Caps::MSG);
    (*(*hints).ep_attr).set_type(EpType::RDM);
    (*(*hints).domain_attr).set_mr_mode(MrMode::LOCAL | MrMode::ALLOCATED | MrMode::PROV_KEY | MrMode::VIRT_ADDR);
    if let Some(p) = provider {
        (*(*hints).fabric_attr).set_prov_name(libc::strdup(p.as_ptr()));
    }
    let mut e = Endpoint {
        info: ptr::null_mut(),
        fabric: ptr::null_mut(),
        domain: ptr::null_mut(),
        cq: ptr::null_mut(),
        av: ptr::null_mut(),
        ep: ptr::null_mut(),
    };
    let ret = fi_getinfo(FI_VERSION(1, 17), c"127.0.0.1".as_ptr(), ptr::null(), FI_SOURCE, hints, &mut e.info);
    fi_freeinfo(hints);
    check("fi_getinfo", ret as isize)?;

    check("fi_fabric", fi_fabric((*e.info).fabric_attr, &mut e.fabric, ptr::null_mut()) as isize)?;
    check("fi_domain", fi_domain(e.fabric, e.info, &mut e.domain, ptr::null_mut()) as isize)?;
    let mut cq_attr: fi_cq_attr = std::mem::zeroed();
    cq_attr.set_format(CqFormat::CONTEXT);
    check("fi_cq_open", fi_cq_open(e.domain, &mut cq_attr, &mut e.cq, ptr::null_mut()) as isize)?;
    let mut av_attr: fi_av_attr = std::mem::zeroed();
    av_attr.set_type(AvType::MAP);
    check("fi_av_open", fi_av_open(e.domain, &mut av_attr, &mut e.av, ptr::null_mut()) as isize)?;
    check("fi_endpoint", fi_endpoint(e.domain, e.info, &mut e.ep, ptr::null_mut()) as isize)?;
    check(
        "fi_ep_bind(cq)",
        fi_ep_bind(e.ep, &mut (*e.cq).fid, (BindFlags::TRANSMIT | BindFlags::RECV).bits()) as isize,
    )?;
    check("fi_ep_bind(av)", fi_ep_bind(e.ep, &mut (*e.av).fid, 0) as isize)?;
    check("fi_enable", fi_enable(e.ep) as isize)?;
    Ok(e)
}

/// Reads one completion, waiting at most until `deadline`.
///
/// # Safety
/// `cq` is an open completion queue of format `FI_CQ_FORMAT_CONTEXT`.
unsafe fn next_completion(cq: *mut fid_cq, deadline: Instant) -> Result<*mut c_void, Failure> {
    let mut entry: fi_cq_entry = std::mem::zeroed();
    loop {
        let ret = fi_cq_read(cq, (&mut entry as *mut fi_cq_entry).cast(), 1);
        if ret == 1 {
            return Ok(entry.op_context);
        }
        if ret == -(FI_EAVAIL as isize) {
            let mut err: fi_cq_err_entry = std::mem::zeroed();
            fi_cq_readerr(cq, &mut err, 0);
            return Err(Failure(format!("completion error: {:?}", err.err())));
        }
        if ret != -(FI_EAGAIN as isize) {
            check("fi_cq_read", ret)?;
        }
        if Instant::now() > deadline {
            return Err(Failure("no completion within the deadline".into()));
        }
    }
}

fn run() -> Result<(), Failure> {
    let o = options()?;
    // SAFETY: the libfabric contract is kept: objects come from `open` and are
    // closed by `Endpoint`'s drop after the loop; each buffer and context lives
    // until both of its message's completions have been read.
    unsafe {
        let e = open(o.provider.as_deref())?;
        let prov = (*(*e.info).fabric_attr).prov_name().map(|p| p.to_string_lossy().into_owned());
        println!("provider: {}", prov.as_deref().unwrap_or("?"));
        println!("endpoint: {:?}, caps {:?}", (*(*e.info).ep_attr).type_(), (*e.info).caps());

        let mut name = [0u8; 256];
        let mut len = name.len();
        check("fi_getname", fi_getname(&mut (*e.ep).fid, name.as_mut_ptr().cast(), &mut len) as isize)?;
        let mut me: fi_addr_t = FI_ADDR_UNSPEC;
        if fi_av_insert(e.av, name.as_ptr().cast(), 1, &mut me, 0, ptr::null_mut()) != 1 {
            return Err(Failure("fi_av_insert did not insert our own address".into()));
        }

        let mut rx = [0u8; 64];
        let mut rx_ctx = fi_context::default();
        let mut tx_ctx = fi_context::default();
        let (rxp, txp): (*mut c_void, *mut c_void) =
            ((&mut rx_ctx as *mut fi_context).cast(), (&mut tx_ctx as *mut fi_context).cast());
        let started = Instant::now();
        for i in 0..o.count {
            let msg = format!("message {i}");
            let deadline = Instant::now() + Duration::from_secs(10);
            check("fi_recv", fi_recv(e.ep, rx.as_mut_ptr().cast(), rx.len(), ptr::null_mut(), FI_ADDR_UNSPEC, rxp))?;
            loop {
                let ret = fi_send(e.ep, msg.as_ptr().cast(), msg.len(), ptr::null_mut(), me, txp);
                if ret != -(FI_EAGAIN as isize) || Instant::now() > deadline {
                    check("fi_send", ret)?;
                    break;
                }
                fi_cq_read(e.cq, ptr::null_mut(), 0); // drive progress
            }
            let (a, b) = (next_completion(e.cq, deadline)?, next_completion(e.cq, deadline)?);
            if !((a == rxp && b == txp) || (a == txp && b == rxp)) {
                return Err(Failure(format!("unexpected completion contexts {a:?} {b:?}")));
            }
            if &rx[..msg.len()] != msg.as_bytes() {
                return Err(Failure(format!("message {i} arrived corrupted")));
            }
        }
        let per = started.elapsed() / o.count.max(1) as u32;
        println!("{} messages sent to ourselves and verified, {per:?} per send+receive", o.count);
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("loopback failed: {message}");
            ExitCode::FAILURE
        }
    }
}
