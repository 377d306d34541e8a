// A fixed buffer's bytes cannot be held across a post: posting takes the
// handle mutably, so no borrow of its bytes may be alive.
use libfabric::{Address, Endpoint, FixedBuf};

fn hold_across_post(ep: &Endpoint, fixed: &mut FixedBuf) {
    let bytes = fixed.get().unwrap();
    let _ = ep.recv_fixed(fixed, Address::UNSPEC, 1);
    println!("{}", bytes[0]);
}

fn main() {}
