// ... nor free it.
use libfabric::{Address, Buf, Endpoint};

fn recv_then_free(ep: &Endpoint) {
    let buf = Buf::zeroed(64);
    let _ = ep.recv(buf, Address::UNSPEC, 1);
    drop(buf);
}

fn main() {}
