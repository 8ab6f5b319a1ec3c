//! Start-up probe: can this process run the io_uring backend? Otherwise fall back to epoll.
//!
//! Checked, in order: `kernel.io_uring_disabled` (2 = disabled for everyone), `io_uring_setup`
//! itself (EPERM from seccomp in containers, ENOSYS on old kernels or without
//! CONFIG_IO_URING), the opcodes the shard uses (RECVMSG, SENDMSG, POLL_ADD, ASYNC_CANCEL),
//! IORING_FEAT_EXT_ARG (wait with a timeout), the kernel release (multishot RECVMSG needs 6.0)
//! and registering a provided buffer ring (IORING_REGISTER_PBUF_RING, 5.19).

use io_uring::{IoUring, opcode, register::Probe};

use crate::config::IoBackend;
use crate::io::uring::PageBuf;

/// The outcome of [`probe_uring`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UringSupport {
    /// Every feature the io_uring backend needs is there.
    Available,
    /// Not usable, with the reason (logged).
    Unavailable(String),
}

fn kernel_release() -> Option<(u32, u32)> {
    // SAFETY: all-zero is a valid utsname; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let rel: String = u.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Probe the running kernel and this thread's seccomp policy for the io_uring backend.
pub fn probe_uring() -> UringSupport {
    use UringSupport::Unavailable;
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        && s.trim() == "2"
    {
        return Unavailable("kernel.io_uring_disabled = 2".into());
    }
    let ring = match IoUring::new(8) {
        Ok(r) => r,
        Err(e) => return Unavailable(format!("io_uring_setup failed: {e}")),
    };
    if !ring.params().is_feature_ext_arg() {
        return Unavailable("IORING_FEAT_EXT_ARG missing (kernel < 5.11)".into());
    }
    let mut probe = Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        return Unavailable(format!("IORING_REGISTER_PROBE failed: {e}"));
    }
    for (code, name) in [
        (opcode::RecvMsg::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Unavailable(format!("opcode {name} not supported"));
        }
    }
    match kernel_release() {
        Some(v) if v >= (6, 0) => {}
        Some((a, b)) => return Unavailable(format!("kernel {a}.{b} < 6.0: no multishot RECVMSG")),
        None => return Unavailable("cannot read the kernel release".into()),
    }
    let page = match PageBuf::new(4096) {
        Ok(p) => p,
        Err(e) => return Unavailable(format!("mmap failed: {e}")),
    };
    // SAFETY: the page outlives the registration (unregistered right below, before `page` drops).
    let reg = unsafe { ring.submitter().register_buf_ring_with_flags(page.addr(), 1, 0, 0) };
    if let Err(e) = reg {
        return Unavailable(format!("IORING_REGISTER_PBUF_RING failed: {e}"));
    }
    let _ = ring.submitter().unregister_buf_ring(0);
    drop(ring);
    drop(page);
    UringSupport::Available
}

/// Resolve `[media] io_backend` to a concrete backend, logging the choice. `Uring` requested
/// but unavailable is an error; `Auto` falls back to epoll.
pub fn choose_backend(requested: IoBackend) -> Result<IoBackend, String> {
    match requested {
        IoBackend::Epoll => {
            tracing::info!(backend = "epoll", "data-plane I/O backend chosen by configuration");
            Ok(IoBackend::Epoll)
        }
        IoBackend::Uring => match probe_uring() {
            UringSupport::Available => {
                tracing::info!(
                    backend = "io_uring",
                    "data-plane I/O backend chosen by configuration"
                );
                Ok(IoBackend::Uring)
            }
            UringSupport::Unavailable(why) => Err(format!(
                "io_backend = \"uring\" but io_uring is unavailable: {why}; set [media] io_backend = \"auto\" or \"epoll\""
            )),
        },
        IoBackend::Auto => match probe_uring() {
            UringSupport::Available => {
                tracing::info!(backend = "io_uring", "data-plane I/O backend: io_uring (probed)");
                Ok(IoBackend::Uring)
            }
            UringSupport::Unavailable(why) => {
                tracing::warn!(backend = "epoll", reason = %why, "io_uring unavailable, data plane falls back to epoll");
                Ok(IoBackend::Epoll)
            }
        },
    }
}
