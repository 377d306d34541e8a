// A posted async operation borrows its endpoint: the endpoint cannot be
// dropped (and closed) while the operation may still complete.
use libfabric::driver::AsyncEndpoint;
use libfabric::{Address, Buf};

async fn drop_endpoint_under_a_posted_receive(ep: AsyncEndpoint) {
    let Ok(op) = ep.post_recv(Buf::zeroed(64), Address::UNSPEC).await else { return };
    drop(ep);
    let _ = op.await;
}

fn main() {}
