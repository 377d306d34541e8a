//! Request/response over tagged messages on a reliable datagram (RDM)
//! endpoint, on the `tokio` feature's transport. The server accepts peers
//! through an address exchange on a TCP port and answers each request with
//! its bytes reversed; the client sends requests, checks every answer and
//! prints its round-trip time.
//!
//! ```text
//! cargo run -p libfabric-examples --example async_request                        # both, in one process, on loopback
//! cargo run -p libfabric-examples --example async_request -- server              # terminal 1
//! cargo run -p libfabric-examples --example async_request -- client 127.0.0.1    # terminal 2
//! ```
//!
//! Options: `-p PROVIDER` (default `tcp;ofi_rxm`; also `udp;ofi_rxd`, `shm`),
//! `-P PORT` of the address exchange (default 7200), `-n REQUESTS`
//! (default 10), `-S BYTES` (default 64).

use std::process::ExitCode;
use std::time::Instant;

use libfabric::transport::{Node, Request, TransportConfig};
use libfabric::Buf;
use libfabric_examples::cli::{self, Args, Role};
use tokio::net::TcpListener;

fn main() -> ExitCode {
    cli::run("async_request", "tcp;ofi_rxm", 7200, |args| async move {
        match &args.role {
            Role::Server(host) => serve(&args, host).await,
            Role::Client(host) => client(&args, host).await,
            Role::Both => {
                let exchange = listen("127.0.0.1", args.port).await?;
                let node = open(&args, "127.0.0.1")?;
                tokio::spawn(async {
                    if let Err(e) = accept_and_answer(node, exchange).await {
                        eprintln!("async_request: server: {e}");
                    }
                });
                client(&args, "127.0.0.1").await
            }
        }
    })
}

/// A node of the chosen provider on `host` (shm picks its own name).
fn open(args: &Args, host: &str) -> Result<Node, String> {
    let config = TransportConfig::new(&args.provider);
    let config = if args.provider == "shm" { config } else { config.node(host) };
    Node::open(config).map_err(|e| format!("open a {} node: {e}", args.provider))
}

/// This machine's address on the way to `host`: the node opens there, so
/// that the server's answers can reach it. (A UDP socket's `connect` only
/// picks the route; it sends nothing.)
fn local_address(host: &str, port: u16) -> Result<String, String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("a local address: {e}"))?;
    socket.connect((host, port)).map_err(|e| format!("a route to {host}: {e}"))?;
    Ok(socket.local_addr().map_err(|e| format!("a local address: {e}"))?.ip().to_string())
}

async fn listen(host: &str, port: u16) -> Result<TcpListener, String> {
    TcpListener::bind((host, port)).await.map_err(|e| format!("listen on {host}:{port}: {e}"))
}

async fn serve(args: &Args, host: &str) -> Result<(), String> {
    let exchange = listen(host, args.port).await?;
    let node = open(args, host)?;
    println!("answering requests; peers dial {host}:{} ({})", args.port, args.provider);
    accept_and_answer(node, exchange).await
}

/// Answers every peer's requests (each peer's in order) on one task and
/// accepts peers on this one, until an operation fails. Serving starts
/// first, so that a peer's first request finds a receive posted.
async fn accept_and_answer(node: Node, exchange: TcpListener) -> Result<(), String> {
    let serving = node.clone();
    let answering = tokio::spawn(async move {
        serving
            .serve(|request: Request| async move {
                let mut answer = request.body;
                answer.reverse(); // in place: the received buffer goes back out
                answer
            })
            .await
    });
    loop {
        if answering.is_finished() {
            return match answering.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("serve: {e}")),
                Err(e) => Err(format!("serve: {e}")),
            };
        }
        match node.accept_peer(&exchange).await {
            Ok(peer) => println!("peer {:?} joined", peer.id()),
            Err(e) => eprintln!("accept a peer: {e}"),
        }
    }
}

async fn client(args: &Args, host: &str) -> Result<(), String> {
    let node = open(args, &local_address(host, args.port)?)?;
    let server = node.dial((host, args.port)).await.map_err(|e| format!("dial {host}:{}: {e}", args.port))?;
    for seq in 0..args.messages {
        let body: Vec<u8> = (0..args.size).map(|i| (seq as usize * 7 + i) as u8).collect();
        let start = Instant::now();
        let answer = server
            .request(Buf::from(body.clone()), Buf::zeroed(args.size))
            .await
            .map_err(|e| format!("request {seq}: {e}"))?
            .answer;
        let elapsed = start.elapsed();
        if !answer.iter().eq(body.iter().rev()) {
            return Err(format!("answer {seq}: not the request reversed"));
        }
        println!("request {seq}: {} bytes answered in {:.1} µs", answer.len(), elapsed.as_secs_f64() * 1e6);
    }
    Ok(())
}
