// A buffer's registration lives inside the buffer: it cannot outlive it.
use libfabric::{Buf, MemoryRegion};

fn keep_registration(buf: Buf) -> u64 {
    let mr: &MemoryRegion = buf.memory_region().unwrap();
    drop(buf);
    mr.key()
}

fn main() {}
