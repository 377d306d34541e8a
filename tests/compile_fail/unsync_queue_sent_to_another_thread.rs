// ... and cannot be moved to another one either.
use libfabric::{CompletionQueue, TaggedEntry, Unsync};

fn send_away(cq: CompletionQueue<TaggedEntry, Unsync>) {
    std::thread::spawn(move || drop(cq));
}

fn main() {}
