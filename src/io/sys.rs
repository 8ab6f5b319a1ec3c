//! Small kernel helpers shared by both backends: socket address conversion, control
//! messages (IP_PKTINFO / IPV6_PKTINFO / UDP_GRO on receive, UDP_SEGMENT / PKTINFO on send).

use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Canonical form for the core: IPv4-mapped IPv6 becomes IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, a.port())),
            None => addr,
        },
        v4 => v4,
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Decode a kernel socket address (`sockaddr_in` or `sockaddr_in6` bytes).
pub(crate) fn decode_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    if name.len() < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: at least two bytes are present; read unaligned.
    let family = unsafe { name.as_ptr().cast::<libc::sa_family_t>().read_unaligned() };
    match family as i32 {
        libc::AF_INET if name.len() >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: length checked; read unaligned.
            let a = unsafe { name.as_ptr().cast::<libc::sockaddr_in>().read_unaligned() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if name.len() >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: length checked; read unaligned.
            let a = unsafe { name.as_ptr().cast::<libc::sockaddr_in6>().read_unaligned() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(canonical(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))))
        }
        _ => None,
    }
}

/// Encode `addr` for a socket of family `v6_socket`, mapping IPv4 into IPv6 on IPv6 sockets.
/// Returns the length to pass as `msg_namelen`.
pub(crate) fn encode_sockaddr(
    addr: SocketAddr,
    v6_socket: bool,
    out: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    let addr = match (addr, v6_socket) {
        (SocketAddr::V4(a), true) => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        (a, _) => a,
    };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from(*a.ip()).to_be() };
            sin.sin_zero = [0; 8];
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Bytes reserved for receive control messages: IPV6_PKTINFO (or IP_PKTINFO) + UDP_GRO.
pub(crate) const RX_CMSG_SPACE: usize = 128;
/// Bytes reserved for send control messages: UDP_SEGMENT + one PKTINFO.
pub(crate) const TX_CMSG_SPACE: usize = 64;

/// An 8-byte aligned control-message buffer.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CmsgBuf<const N: usize>(pub [u8; N]);

impl<const N: usize> CmsgBuf<N> {
    pub const fn new() -> Self {
        CmsgBuf([0; N])
    }
}

/// What the receive control messages said.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RxCmsg {
    pub dst_ip: Option<IpAddr>,
    /// UDP_GRO segment size when the kernel coalesced.
    pub gro_segment: Option<usize>,
}

const fn cmsg_align(len: usize) -> usize {
    (len + size_of::<usize>() - 1) & !(size_of::<usize>() - 1)
}

const CMSG_HDR: usize = cmsg_align(size_of::<libc::cmsghdr>());

/// Parse the receive control messages (bounded walk; malformed lengths stop the walk).
pub(crate) fn parse_rx_cmsgs(control: &[u8]) -> RxCmsg {
    let mut out = RxCmsg::default();
    let mut off = 0usize;
    while off + CMSG_HDR <= control.len() {
        // SAFETY: a full header is in bounds; read unaligned.
        let hdr = unsafe { control.as_ptr().add(off).cast::<libc::cmsghdr>().read_unaligned() };
        #[allow(clippy::unnecessary_cast)] // size_t on glibc, socklen_t on musl
        let len = hdr.cmsg_len as usize;
        if len < CMSG_HDR || off + len > control.len() {
            break;
        }
        let data = &control[off + CMSG_HDR..off + len];
        match (hdr.cmsg_level, hdr.cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if data.len() >= size_of::<libc::in_pktinfo>() => {
                // SAFETY: length checked; read unaligned.
                let p = unsafe { data.as_ptr().cast::<libc::in_pktinfo>().read_unaligned() };
                out.dst_ip = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                if data.len() >= size_of::<libc::in6_pktinfo>() =>
            {
                // SAFETY: length checked; read unaligned.
                let p = unsafe { data.as_ptr().cast::<libc::in6_pktinfo>().read_unaligned() };
                out.dst_ip = Some(canonical_ip(IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr))));
            }
            (libc::SOL_UDP, libc::UDP_GRO) if data.len() >= size_of::<libc::c_int>() => {
                // SAFETY: length checked; read unaligned.
                let seg = unsafe { data.as_ptr().cast::<libc::c_int>().read_unaligned() };
                if seg > 0 {
                    out.gro_segment = Some(seg as usize);
                }
            }
            _ => {}
        }
        off += cmsg_align(len);
    }
    out
}

fn put_cmsg(buf: &mut [u8], off: &mut usize, level: i32, ty: i32, data: &[u8]) -> bool {
    let len = CMSG_HDR + data.len();
    let space = cmsg_align(len);
    if *off + space > buf.len() {
        return false;
    }
    // SAFETY: all-zero is a valid cmsghdr.
    let mut hdr: libc::cmsghdr = unsafe { zeroed() };
    hdr.cmsg_len = len as _;
    hdr.cmsg_level = level;
    hdr.cmsg_type = ty;
    let start = *off;
    buf[start..start + space].fill(0);
    // SAFETY: `space >= CMSG_HDR` bytes are in bounds; write unaligned.
    unsafe { buf.as_mut_ptr().add(start).cast::<libc::cmsghdr>().write_unaligned(hdr) };
    buf[start + CMSG_HDR..start + len].copy_from_slice(data);
    *off += space;
    true
}

/// Write the send control messages (GSO segment size, source address) into `buf`; returns the
/// `msg_controllen` (0: none).
pub(crate) fn build_tx_cmsgs(
    buf: &mut [u8],
    segment: Option<u16>,
    src: Option<IpAddr>,
    v6_socket: bool,
) -> usize {
    let mut off = 0;
    if let Some(seg) = segment {
        put_cmsg(buf, &mut off, libc::SOL_UDP, libc::UDP_SEGMENT, &seg.to_ne_bytes());
    }
    match src {
        Some(IpAddr::V4(ip)) => {
            // SAFETY: all-zero is a valid in_pktinfo.
            let mut p: libc::in_pktinfo = unsafe { zeroed() };
            p.ipi_spec_dst = libc::in_addr { s_addr: u32::from(ip).to_be() };
            // SAFETY: viewing a plain C struct as bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&p as *const libc::in_pktinfo).cast::<u8>(),
                    size_of::<libc::in_pktinfo>(),
                )
            };
            put_cmsg(buf, &mut off, libc::IPPROTO_IP, libc::IP_PKTINFO, bytes);
        }
        Some(IpAddr::V6(ip)) if v6_socket => {
            // SAFETY: all-zero is a valid in6_pktinfo.
            let mut p: libc::in6_pktinfo = unsafe { zeroed() };
            p.ipi6_addr = libc::in6_addr { s6_addr: ip.octets() };
            // SAFETY: viewing a plain C struct as bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&p as *const libc::in6_pktinfo).cast::<u8>(),
                    size_of::<libc::in6_pktinfo>(),
                )
            };
            put_cmsg(buf, &mut off, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, bytes);
        }
        _ => {}
    }
    off
}

/// Whether an error from a GSO send means "this device/path cannot segment": step down.
pub(crate) fn is_gso_error(err: i32) -> bool {
    err == libc::EIO || err == libc::EINVAL || err == libc::EOPNOTSUPP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip_and_mapping() {
        let mut st: libc::sockaddr_storage = unsafe { zeroed() };
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let n = encode_sockaddr(a, true, &mut st);
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&st as *const libc::sockaddr_storage).cast::<u8>(),
                n as usize,
            )
        };
        assert_eq!(decode_sockaddr(bytes), Some(a));
        let b: SocketAddr = "[::1]:5000".parse().unwrap();
        let n = encode_sockaddr(b, true, &mut st);
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&st as *const libc::sockaddr_storage).cast::<u8>(),
                n as usize,
            )
        };
        assert_eq!(decode_sockaddr(bytes), Some(b));
        assert_eq!(decode_sockaddr(&[1]), None);
    }

    #[test]
    fn cmsg_build_parse() {
        let mut buf = [0u8; TX_CMSG_SPACE];
        let n = build_tx_cmsgs(&mut buf, Some(1200), Some("10.0.0.1".parse().unwrap()), false);
        assert!(n > 0);
        // The walk sees both messages (UDP_SEGMENT is not UDP_GRO; the send-side PKTINFO leaves
        // ipi_addr zero) and never reads past the end.
        let r = parse_rx_cmsgs(&buf[..n]);
        assert_eq!(r.gro_segment, None);
        assert_eq!(r.dst_ip, Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        assert_eq!(parse_rx_cmsgs(&[0xff; 7]).dst_ip, None);
    }
}
