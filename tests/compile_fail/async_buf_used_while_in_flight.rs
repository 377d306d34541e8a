// An async send owns its buffer until it resolves: the caller cannot read it
// meanwhile (it gets it back from the completion).
use libfabric::driver::AsyncEndpoint;
use libfabric::{Address, Buf};

async fn read_while_sending(ep: &AsyncEndpoint, peer: Address) {
    let buf = Buf::zeroed(64);
    let sending = ep.send(buf, peer);
    let _ = buf.len();
    let _ = sending.await;
}

fn main() {}
