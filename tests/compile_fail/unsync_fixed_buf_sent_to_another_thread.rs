// A fixed buffer of an endpoint that is not thread-safe stays on the
// endpoint's thread: its completions then go without an atomic
// read-modify-write, which a drop on another thread would race.
use libfabric::{FixedBuf, Unsync};

fn drop_elsewhere(fixed: FixedBuf<Unsync>) {
    std::thread::spawn(move || drop(fixed));
}

fn main() {}
