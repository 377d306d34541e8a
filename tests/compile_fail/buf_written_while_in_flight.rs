// ... nor write it while a receive may be filling it.
use libfabric::{Address, Buf, Endpoint};

fn recv_then_scribble(ep: &Endpoint) {
    let mut buf = Buf::zeroed(64);
    let _ = ep.recv(buf, Address::UNSPEC, 1);
    buf[0] = 7;
}

fn main() {}
