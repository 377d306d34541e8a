// Objects of a domain without FI_THREAD_SAFE (`Unsync`) stay on one thread.
use libfabric::{Endpoint, TaggedEntry, Unsync};

fn share(ep: &'static Endpoint<TaggedEntry, Unsync>) {
    std::thread::spawn(move || ep.in_flight());
}

fn main() {}
