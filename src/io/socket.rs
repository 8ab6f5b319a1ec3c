//! The shard's UDP socket (socket2): SO_REUSEPORT, large buffers, PKTINFO on IPv4 and IPv6,
//! optional UDP_GRO, non-blocking; and the GSO capability check.

use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// What [`bind_udp`] set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketInfo {
    /// The bound address (with the kernel-chosen port when asked for port 0).
    pub local_addr: SocketAddr,
    /// An AF_INET6 socket (IPv4 peers appear as mapped addresses at the syscall level).
    pub v6: bool,
    /// The kernel accepts UDP_SEGMENT on this socket.
    pub gso: bool,
    /// UDP_GRO is enabled.
    pub gro: bool,
}

fn setsockopt_int(fd: i32, level: i32, name: i32, v: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn gso_supported(fd: i32) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: passes a live c_int and its length.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0
}

/// Create, configure and bind a non-blocking UDP socket for a shard.
pub fn bind_udp(
    addr: SocketAddr,
    reuse_port: bool,
    buffer: usize,
    gro: bool,
) -> io::Result<(UdpSocket, SocketInfo)> {
    let v6 = addr.is_ipv6();
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    if v6 {
        // Dual-stack when bound to `::`; a specific IPv6 address only ever sees IPv6.
        sock.set_only_v6(false)?;
    }
    // Buffer sizes are best effort: the kernel caps them at net.core.[rw]mem_max.
    let _ = sock.set_recv_buffer_size(buffer);
    let _ = sock.set_send_buffer_size(buffer);
    let fd = sock.as_raw_fd();
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        // IPv4-mapped traffic on a dual-stack socket reports IP_PKTINFO.
        let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
    }
    let gro = gro && setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
    sock.bind(&addr.into())?;
    let local_addr = sock
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound socket has no IP address"))?;
    let gso = gso_supported(fd);
    let std: UdpSocket = sock.into();
    Ok((std, SocketInfo { local_addr, v6, gso, gro }))
}
