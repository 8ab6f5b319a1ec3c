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

/// Sets the don't-fragment bit on what `socket` sends without following path-MTU discovery
/// (`IP_PMTUDISC_PROBE`; IPv6 likewise). With DF the kernel skips the per-datagram IP ID
/// generation (`__ip_select_ident`, ~4% of a shard at 1 -> 1000 fanout), which only a
/// fragmentable IPv4 datagram needs; the price: a datagram above the device MTU fails to send
/// (counted) and one above a smaller path MTU is lost on the way, instead of being fragmented.
/// Media datagrams are sized below common path MTUs by their senders, so `[media]
/// dont_fragment` offers it, off by default. Best effort.
pub fn set_dont_fragment(socket: &UdpSocket, v6: bool) {
    let fd = socket.as_raw_fd();
    // On a dual-stack socket the IPv4 option covers IPv4-mapped traffic.
    let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_PROBE);
    if v6 {
        let _ = setsockopt_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn getsockopt_int(fd: i32, level: i32, name: i32) -> libc::c_int {
        let mut v: libc::c_int = -1;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: passes a live c_int and its length.
        let r = unsafe {
            libc::getsockopt(fd, level, name, (&mut v as *mut libc::c_int).cast(), &mut len)
        };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        v
    }

    #[test]
    fn dont_fragment_is_set_on_ipv4_and_dual_stack_sockets() {
        let (s, info) = bind_udp("127.0.0.1:0".parse().unwrap(), false, 1 << 16, false).unwrap();
        let before = getsockopt_int(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_MTU_DISCOVER);
        assert_ne!(before, libc::IP_PMTUDISC_PROBE, "the kernel default differs");
        set_dont_fragment(&s, info.v6);
        let fd = s.as_raw_fd();
        assert_eq!(
            getsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            libc::IP_PMTUDISC_PROBE
        );
        // Still sends (a datagram below the loopback MTU).
        let r = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(&[7u8; 1200], r.local_addr().unwrap()).unwrap();
        let mut b = [0u8; 1500];
        r.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        assert_eq!(r.recv(&mut b).unwrap(), 1200);
        if let Ok((s6, i6)) = bind_udp("[::1]:0".parse().unwrap(), false, 1 << 16, false) {
            set_dont_fragment(&s6, i6.v6);
            assert_eq!(
                getsockopt_int(s6.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
                libc::IPV6_PMTUDISC_PROBE
            );
        }
    }
}
