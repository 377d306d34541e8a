// `close` consumes the endpoint: operations on a closed object do not exist.
use libfabric::{Address, Buf, Endpoint};

fn close_then_send(ep: Endpoint, peer: Address) {
    let _ = ep.close();
    let _ = ep.send(Buf::zeroed(8), peer, 1);
}

fn main() {}
