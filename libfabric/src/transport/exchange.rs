//! The address exchange: two programs that know only a host and port swap
//! fabric addresses over TCP, and each learns the handle the other gave it.
//!
//! | step | bytes |
//! |---|---|
//! | dialer → server | name length (u32, big-endian), the dialer's fabric name |
//! | server → dialer | name length, the server's fabric name, the dialer's handle at the server (u64, big-endian) |
//! | dialer → server | the server's handle at the dialer (u64, big-endian) |
//! | server → dialer | one byte, 1: the dialer is now a known peer, so what it sends is taken |

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longer than any provider's address.
const MAX_NAME: usize = 4096;

fn protocol(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

pub(crate) async fn write_name(stream: &mut TcpStream, name: &[u8]) -> io::Result<()> {
    let len = u32::try_from(name.len()).map_err(|_| protocol("address too long".into()))?;
    let mut msg = Vec::with_capacity(4 + name.len());
    msg.extend_from_slice(&len.to_be_bytes());
    msg.extend_from_slice(name);
    stream.write_all(&msg).await
}

pub(crate) async fn read_name(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len == 0 || len > MAX_NAME {
        return Err(protocol(format!("the peer sent an address of {len} bytes")));
    }
    let mut name = vec![0u8; len];
    stream.read_exact(&mut name).await?;
    Ok(name)
}

pub(crate) async fn write_handle(stream: &mut TcpStream, handle: u64) -> io::Result<()> {
    stream.write_all(&handle.to_be_bytes()).await
}

pub(crate) async fn read_handle(stream: &mut TcpStream) -> io::Result<u64> {
    stream.read_u64().await
}

/// The server's last word: the dialer is registered.
pub(crate) async fn write_ready(stream: &mut TcpStream) -> io::Result<()> {
    stream.write_all(&[1]).await
}

pub(crate) async fn read_ready(stream: &mut TcpStream) -> io::Result<()> {
    match stream.read_u8().await? {
        1 => Ok(()),
        other => Err(protocol(format!("the peer sent {other} where 1 (ready) was due"))),
    }
}
