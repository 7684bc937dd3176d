//! The original destination of a connection that iptables redirected to the proxy,
//! read with `SO_ORIGINAL_DST` (IPv4) or `IP6T_SO_ORIGINAL_DST` (IPv6).

use std::{io, net::SocketAddr};
use tokio::net::TcpStream;

/// Where the client meant to connect before the `REDIRECT` rule sent it to the proxy.
///
/// A connection that was not redirected reports its own local address: the caller must
/// treat `orig_dst == local` as "not redirected", or it would forward to itself. `local`
/// is the stream's local address (which the caller needs anyway: one system call less).
pub fn original_dst(stream: &TcpStream, local: SocketAddr) -> io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let addr = match local {
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => sock.original_dst_v6()?,
        // IPv4, also when it arrived on a dual-stack socket as ::ffff:a.b.c.d.
        _ => sock.original_dst_v4()?,
    };
    let addr = addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "original destination is not an IP address",
        )
    })?;
    Ok(canonical(addr))
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a dual-stack socket
/// reports IPv4 peers) turned back into IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Without a NAT rule the kernel answers with the socket's own address (or ENOENT when
    // conntrack is not loaded); the redirect case is covered by the namespace tests.
    #[tokio::test]
    async fn unredirected_connection_is_its_own_destination_or_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        match original_dst(&server, server.local_addr().unwrap()) {
            Ok(dst) => assert_eq!(dst, addr),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}"),
        }
    }
}
