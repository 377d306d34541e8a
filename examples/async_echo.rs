//! An async echo server and client over connected (MSG) endpoints, on the
//! `tokio` feature's transport: the server echoes every message of every
//! connection; the client sends messages, checks each echo and prints the
//! round-trip time.
//!
//! ```text
//! cargo run -p libfabric-examples --example async_echo                         # both, in one process, on loopback
//! cargo run -p libfabric-examples --example async_echo -- server               # terminal 1
//! cargo run -p libfabric-examples --example async_echo -- client 127.0.0.1     # terminal 2
//! ```
//!
//! Options: `-p PROVIDER` (default `tcp`), `-P PORT` (default 7100),
//! `-n MESSAGES` (default 10), `-S BYTES` (default 64).

use std::process::ExitCode;
use std::time::Instant;

use libfabric::transport::{Connection, Listener, TransportConfig};
use libfabric::Buf;
use libfabric_examples::cli::{self, Args, Role, MAX_SIZE};

fn main() -> ExitCode {
    cli::run("async_echo", "tcp", 7100, |args| async move {
        let config = TransportConfig::new(&args.provider);
        match &args.role {
            Role::Server(host) => serve(&config, host, args.port).await,
            Role::Client(host) => client(&config, host, &args).await,
            Role::Both => {
                // Listen first, so the client finds the port open.
                let listener = bind(&config, "127.0.0.1", args.port)?;
                tokio::spawn(async {
                    if let Err(e) = accept_forever(listener).await {
                        eprintln!("async_echo: server: {e}");
                    }
                });
                client(&config, "127.0.0.1", &args).await
            }
        }
    })
}

fn bind(config: &TransportConfig, host: &str, port: u16) -> Result<Listener, String> {
    Listener::bind(config.clone(), host, port).map_err(|e| format!("listen on {host}:{port}: {e}"))
}

async fn serve(config: &TransportConfig, host: &str, port: u16) -> Result<(), String> {
    let listener = bind(config, host, port)?;
    println!("echoing on {host}:{port} ({})", config.provider);
    accept_forever(listener).await
}

/// Accepts connections and echoes each on its own task.
async fn accept_forever(listener: Listener) -> Result<(), String> {
    loop {
        let conn = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
        tokio::spawn(async move {
            // Ends when the peer closes (the receive then fails).
            while let Ok(msg) = conn.recv(Buf::zeroed(MAX_SIZE)).await {
                if let Err(e) = conn.send(msg).await {
                    eprintln!("echo: {e}");
                    break;
                }
            }
        });
    }
}

async fn client(config: &TransportConfig, host: &str, args: &Args) -> Result<(), String> {
    let conn = Connection::connect(config.clone(), host, args.port)
        .await
        .map_err(|e| format!("connect to {host}:{}: {e}", args.port))?;
    for seq in 0..args.messages {
        let sent: Vec<u8> = (0..args.size).map(|i| (seq as usize + i) as u8).collect();
        let start = Instant::now();
        conn.send(Buf::from(sent.clone())).await.map_err(|e| format!("send {seq}: {e}"))?;
        let echo = conn.recv(Buf::zeroed(args.size)).await.map_err(|e| format!("receive {seq}: {e}"))?;
        let elapsed = start.elapsed();
        if echo[..] != sent[..] {
            return Err(format!("echo {seq}: the bytes differ from those sent"));
        }
        println!("echo {seq}: {} bytes in {:.1} µs", echo.len(), elapsed.as_secs_f64() * 1e6);
    }
    conn.shutdown().map_err(|e| format!("shutdown: {e}"))?;
    Ok(())
}
