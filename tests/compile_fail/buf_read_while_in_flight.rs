// A buffer handed to a send belongs to the operation until its completion
// hands it back: the caller cannot read it meanwhile.
use libfabric::{Address, Buf, Endpoint};

fn send_then_peek(ep: &Endpoint, peer: Address) {
    let buf = Buf::from(vec![1u8; 64]);
    let _ = ep.send(buf, peer, 1);
    println!("{}", buf[0]);
}

fn main() {}
