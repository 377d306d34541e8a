//! The out-of-band control connection `fi_pingpong` uses: a TCP socket on
//! which the peers swap fabric addresses, synchronise before each size and
//! agree on how many messages arrived. Every message is byte-for-byte what
//! the C tool sends, so either side may be C.
//!
//! | step | bytes |
//! |---|---|
//! | address | length (u32, network order), `addr_format` (u32, host order), the address |
//! | sync | client `"q\0"`, server `"a\0"` |
//! | count | client: the count in decimal, NUL-padded to 10 bytes; server `"cnt ok\0"` |

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

/// The control port when `-B`/`-P` give none.
pub const DEFAULT_PORT: u16 = 47592;
/// How long any control read may wait (the C tool's `SO_RCVTIMEO`).
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Overrides [`READ_TIMEOUT`], in seconds: a peer running under valgrind
/// takes longer than 5 s to open its fabric. The C tool has no such knob, so
/// it is not on the command line.
pub const TIMEOUT_ENV: &str = "PINGPONG_CTRL_TIMEOUT";

/// How long a control read may wait in this run: [`TIMEOUT_ENV`] when it
/// holds a number of seconds, else the C tool's 5 s.
pub fn read_timeout() -> Duration {
    std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(READ_TIMEOUT, Duration::from_secs)
}
const SYNC_Q: &[u8] = b"q\0";
const SYNC_A: &[u8] = b"a\0";
const COUNT_LEN: usize = 10;
const COUNT_OK: &[u8] = b"cnt ok\0";
/// The longest address accepted from a peer (larger than any provider's).
const MAX_NAME: usize = 4096;

/// Which end of the control connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Listens, answers.
    Server,
    /// Connects, asks.
    Client,
}

/// A connected control channel.
#[derive(Debug)]
pub struct Ctrl {
    stream: TcpStream,
    role: Role,
}

fn protocol(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Ctrl {
    /// Server: listens on `port` (any address) and takes one connection.
    pub fn accept(port: u16, ipv6: bool) -> io::Result<Ctrl> {
        let any: SocketAddr =
            if ipv6 { (Ipv6Addr::UNSPECIFIED, port).into() } else { (Ipv4Addr::UNSPECIFIED, port).into() };
        // SO_REUSEADDR, as the C tool sets: back-to-back runs reuse the port.
        let socket = Socket::new(Domain::for_address(any), Type::STREAM, Some(SockProtocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&any.into())?;
        socket.listen(10)?;
        let listener: TcpListener = socket.into();
        let (stream, _) = listener.accept()?;
        Ctrl::ready(stream, Role::Server)
    }

    /// Client: connects to `host:port`, from `src_port` when it is not 0.
    pub fn connect(host: &str, port: u16, src_port: u16, ipv6: bool) -> io::Result<Ctrl> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"));
        for addr in (host, port).to_socket_addrs()?.filter(|a| a.is_ipv6() == ipv6) {
            match connect_from(addr, src_port) {
                Ok(stream) => return Ctrl::ready(stream, Role::Client),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn ready(stream: TcpStream, role: Role) -> io::Result<Ctrl> {
        stream.set_read_timeout(Some(read_timeout()))?;
        stream.set_nodelay(true)?;
        Ok(Ctrl { stream, role })
    }

    /// How long a read may wait ([`read_timeout`] unless changed), for protocols whose
    /// peers take longer between messages.
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))
    }

    /// Sends this side's fabric address and its format.
    pub fn send_name(&mut self, name: &[u8], addr_format: u32) -> io::Result<()> {
        let len = u32::try_from(name.len()).map_err(|_| protocol("address too long"))?;
        let mut msg = Vec::with_capacity(8 + name.len());
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(&addr_format.to_ne_bytes());
        msg.extend_from_slice(name);
        self.stream.write_all(&msg)
    }

    /// Receives the peer's fabric address and its format.
    pub fn recv_name(&mut self) -> io::Result<(Vec<u8>, u32)> {
        let len = u32::from_be_bytes(self.read_array()?) as usize;
        if len == 0 || len > MAX_NAME {
            return Err(protocol(format!("peer sent an address of {len} bytes")));
        }
        let format = u32::from_ne_bytes(self.read_array()?);
        let mut name = vec![0u8; len];
        self.stream.read_exact(&mut name)?;
        Ok((name, format))
    }

    /// Both sides are here: the client asks, the server answers.
    pub fn sync(&mut self) -> io::Result<()> {
        match self.role {
            Role::Client => {
                self.stream.write_all(SYNC_Q)?;
                self.expect(SYNC_A)
            }
            Role::Server => {
                self.expect(SYNC_Q)?;
                self.stream.write_all(SYNC_A)
            }
        }
    }

    /// Client: reports how many messages it received; server: learns it.
    /// Returns the client's count on both sides.
    pub fn exchange_count(&mut self, received: u64) -> io::Result<u64> {
        match self.role {
            Role::Client => {
                let mut msg = [0u8; COUNT_LEN];
                let digits = received.to_string();
                let n = digits.len().min(COUNT_LEN);
                msg[..n].copy_from_slice(&digits.as_bytes()[..n]);
                self.stream.write_all(&msg)?;
                self.expect(COUNT_OK)?;
                Ok(received)
            }
            Role::Server => {
                let msg: [u8; COUNT_LEN] = self.read_array()?;
                let digits = msg.split(|b| *b == 0).next().unwrap_or_default();
                let count = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| protocol(format!("bad message count {msg:?}")))?;
                self.stream.write_all(COUNT_OK)?;
                Ok(count)
            }
        }
    }

    fn expect(&mut self, want: &[u8]) -> io::Result<()> {
        let mut got = vec![0u8; want.len()];
        self.stream.read_exact(&mut got)?;
        if got != want {
            return Err(protocol(format!("expected {want:?} on the control connection, got {got:?}")));
        }
        Ok(())
    }

    fn read_array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut a = [0u8; N];
        self.stream.read_exact(&mut a)?;
        Ok(a)
    }
}

fn connect_from(addr: SocketAddr, src_port: u16) -> io::Result<TcpStream> {
    if src_port == 0 {
        return TcpStream::connect(addr);
    }
    // std cannot bind a socket before connecting it; socket2 can.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(SockProtocol::TCP))?;
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, src_port).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, src_port).into(),
    };
    socket.bind(&local.into())?;
    socket.connect(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_agree() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut c = Ctrl::ready(s, Role::Server).unwrap();
            c.send_name(b"server-address", 2).unwrap();
            let got = c.recv_name().unwrap();
            c.sync().unwrap();
            (got, c.exchange_count(0).unwrap())
        });
        let mut c = Ctrl::connect("127.0.0.1", port, 0, false).unwrap();
        assert_eq!(c.recv_name().unwrap(), (b"server-address".to_vec(), 2));
        c.send_name(b"client", 7).unwrap();
        c.sync().unwrap();
        assert_eq!(c.exchange_count(1234).unwrap(), 1234);
        assert_eq!(server.join().unwrap(), ((b"client".to_vec(), 7), 1234));
    }
}
