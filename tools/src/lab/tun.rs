//! TUN devices: open one in the current network namespace and read or
//! write whole IP packets on its file descriptor. The descriptor keeps
//! working after the device is moved to another namespace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An open TUN device (layer 3, no packet-information header).
#[derive(Debug)]
pub struct TunDevice {
    pub fd: OwnedFd,
    pub name: String,
}

impl TunDevice {
    /// Creates a non-persistent TUN device named after `pattern` (`%d` is
    /// replaced by the kernel with a free number). It disappears when the
    /// descriptor is closed.
    pub fn create(pattern: &str) -> io::Result<TunDevice> {
        if pattern.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface name too long",
            ));
        }
        // SAFETY: a plain open(2) of a constant, NUL-terminated path.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(pattern.bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let name: Vec<u8> = ifr
            .ifr_name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        Ok(TunDevice {
            fd,
            name: String::from_utf8_lossy(&name).into_owned(),
        })
    }
}

/// One packet from a non-blocking descriptor into `buf`.
pub fn read_packet(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One whole packet to a descriptor.
pub fn write_packet(fd: RawFd, packet: &[u8]) -> io::Result<usize> {
    // SAFETY: `packet` is valid for `packet.len()` bytes of reads.
    let n = unsafe { libc::write(fd, packet.as_ptr().cast(), packet.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
