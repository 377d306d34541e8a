// Memory exposed to remote peers may change at any moment, outside Rust's
// view: it is read and written by copies (`read_at`, `write_at`), never
// borrowed as a slice.
use libfabric::Exposed;

fn borrow_window(window: &Exposed) -> &[u8] {
    &window[..]
}

fn main() {}
