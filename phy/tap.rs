//! [`TapLink`]: a Linux TAP interface as a [`Link`] (feature `tap`).
//!
//! The kernel side of a TAP interface is an ordinary network interface
//! (give it an address, route to it, run tcpdump on it); our side is a file
//! descriptor that reads and writes whole Ethernet frames. So a stack on a
//! `TapLink` is a separate host on a virtual Ethernet segment shared with
//! the kernel.
//!
//! The interface is opened through `/dev/net/tun` with `IFF_TAP | IFF_NO_PI`
//! (frames without the 4-byte packet-info prefix), creating it if it does
//! not exist (which needs `CAP_NET_ADMIN`) or attaching to an existing
//! persistent one. The descriptor is non-blocking: [`Link::receive`] returns
//! `Ok(None)` when no frame is waiting and [`Link::transmit`] fails with
//! [`LinkError::Busy`] when the kernel queue is full. The interface lives
//! in the network namespace of the thread that opened it.
//!
//! smoltcp's own `TunTapInterface` is a smoltcp `Device`; this is a small
//! libc wrapper with the [`Link`] shape instead, so the middleware
//! ([`FaultLink`](super::fault::FaultLink), [`PcapLink`](super::pcap::PcapLink))
//! and the [`RxSignal`] driver-thread model work on it like on every other
//! link.
//!
//! The MAC address is *ours*, not the kernel interface's (which has its own
//! random one): by default a locally administered unicast address derived
//! from the interface name ([`TapLink::mac_for_name`]), or the one given to
//! [`TapLink::with_mac`].

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::string::String;
use std::sync::Arc;

use super::{Link, LinkError, RxSignal, MAX_FRAME_LEN};

/// A Linux TAP interface; see the [module docs](self).
pub struct TapLink {
    fd: OwnedFd,
    /// `AF_INET` datagram socket for `SIOCGIFFLAGS`, opened in the same
    /// namespace as the interface.
    ctl: OwnedFd,
    ifr_name: [libc::c_char; libc::IFNAMSIZ],
    name: String,
    mac: [u8; 6],
}

impl core::fmt::Debug for TapLink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TapLink")
            .field("name", &self.name)
            .field("mac", &self.mac)
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

/// An `ifreq` with everything zero but the name.
fn ifreq(name: &[libc::c_char; libc::IFNAMSIZ]) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (a name array and a union of
    // integers, sockaddrs and a raw pointer); all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { core::mem::zeroed() };
    req.ifr_name = *name;
    req
}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl TapLink {
    /// Open (creating if needed) the TAP interface `name`, e.g. `"tap0"`.
    ///
    /// An empty name, or a pattern like `"ndv%d"`, lets the kernel pick one;
    /// [`name`](Self::name) tells which. Names must be shorter than 16
    /// bytes. The interface is left in whatever up/down state it was in.
    pub fn open(name: &str) -> io::Result<TapLink> {
        let bytes = name.as_bytes();
        if bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TAP interface name too long or contains NUL",
            ));
        }
        let mut ifr_name = [0 as libc::c_char; libc::IFNAMSIZ];
        for (d, &s) in ifr_name.iter_mut().zip(bytes) {
            *d = s as libc::c_char;
        }

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let fd = OwnedFd::from(file);

        let mut req = ifreq(&ifr_name);
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: `fd` is an open /dev/net/tun descriptor and `req` a valid
        // `ifreq` that outlives the call; TUNSETIFF reads and writes only it.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // The kernel wrote back the real name (NUL-terminated).
        let ifr_name = req.ifr_name;
        let name: String = ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8 as char)
            .collect();

        // SAFETY: plain syscall with constant arguments.
        let ctl = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if ctl < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `ctl` was just returned by socket(2) and is owned by no one
        // else.
        let ctl = unsafe { OwnedFd::from_raw_fd(ctl) };

        let mac = Self::mac_for_name(&name);
        Ok(TapLink {
            fd,
            ctl,
            ifr_name,
            name,
            mac,
        })
    }

    /// Use `mac` as our MAC address instead of the derived one.
    pub fn with_mac(mut self, mac: [u8; 6]) -> Self {
        self.mac = mac;
        self
    }

    /// The interface name (as the kernel knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MAC a `TapLink` on interface `name` uses by default: `02:` (locally
    /// administered, unicast) followed by 5 bytes of an FNV-1a hash of the
    /// name.
    pub fn mac_for_name(name: &str) -> [u8; 6] {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in name.as_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let b = h.to_be_bytes();
        [0x02, b[3], b[4], b[5], b[6], b[7]]
    }

    /// The interface flags (`IFF_UP`, `IFF_RUNNING`, ...).
    fn flags(&self) -> io::Result<libc::c_int> {
        let mut req = ifreq(&self.ifr_name);
        // SAFETY: `ctl` is an open socket and `req` a valid `ifreq` that
        // outlives the call; SIOCGIFFLAGS writes only `ifru_flags`.
        if unsafe { libc::ioctl(self.ctl.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: SIOCGIFFLAGS filled in `ifru_flags`.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        Ok(flags as u16 as libc::c_int)
    }
}

impl Link for TapLink {
    fn hardware_addr(&self) -> [u8; 6] {
        self.mac
    }

    fn max_frame_len(&self) -> usize {
        // MTU 1500 + 14-byte header. The kernel side may be set to a
        // larger MTU; such frames are refused on receive (TooLong).
        MAX_FRAME_LEN
    }

    /// Whether the kernel side is administratively up (`IFF_UP`) and has
    /// carrier (`IFF_RUNNING`), asked with one `SIOCGIFFLAGS` ioctl. The
    /// interface going away counts as down.
    fn link_up(&mut self) -> bool {
        match self.flags() {
            Ok(f) => f & libc::IFF_UP != 0 && f & libc::IFF_RUNNING != 0,
            Err(_) => false,
        }
    }

    /// Write one frame. `EAGAIN` (kernel queue full) is [`LinkError::Busy`],
    /// `EIO` (interface down) [`LinkError::Down`].
    fn transmit(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > MAX_FRAME_LEN {
            return Err(LinkError::TooLong);
        }
        loop {
            // SAFETY: `frame` is valid for reads of `frame.len()` bytes.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
            if n >= 0 {
                // The tun driver takes whole frames or nothing.
                return Ok(());
            }
            return Err(match last_errno() {
                libc::EINTR => continue,
                libc::EAGAIN => LinkError::Busy,
                libc::EIO => LinkError::Down,
                _ => LinkError::Device,
            });
        }
    }

    /// Read one frame if one is waiting. A frame longer than `buf` is
    /// dropped with [`LinkError::TooLong`].
    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        // The tun driver truncates a frame to the buffer it is given, and
        // says how much it copied; one extra byte tells truncation apart
        // from a frame that fills `buf` exactly.
        let mut extra = 0u8;
        let iov = [
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
            libc::iovec {
                iov_base: (&mut extra as *mut u8).cast(),
                iov_len: 1,
            },
        ];
        loop {
            // SAFETY: both iovecs describe writable memory (`buf`, `extra`)
            // that lives across the call.
            let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
            if n > 0 {
                let n = n as usize;
                if n > buf.len() {
                    return Err(LinkError::TooLong);
                }
                return Ok(Some(n));
            }
            if n == 0 {
                return Ok(None);
            }
            return match last_errno() {
                libc::EINTR => continue,
                libc::EAGAIN => Ok(None),
                _ => Err(LinkError::Device),
            };
        }
    }

    /// A `poll(2)` on a duplicate of the descriptor. (While the signal is
    /// alive the duplicate keeps a non-persistent interface in existence.)
    fn rx_signal(&self) -> Option<Arc<dyn RxSignal>> {
        let fd = self.fd.try_clone().ok()?;
        Some(Arc::new(TapRxSignal { fd }))
    }
}

/// [`RxSignal`] of a [`TapLink`]: polls for `POLLIN`.
struct TapRxSignal {
    fd: OwnedFd,
}

impl RxSignal for TapRxSignal {
    fn wait(&self, timeout: Option<core::time::Duration>) {
        let ms: libc::c_int = match timeout {
            None => -1,
            // Round up so a sub-millisecond timeout sleeps instead of
            // spinning.
            Some(d) => d
                .as_nanos()
                .div_ceil(1_000_000)
                .min(libc::c_int::MAX as u128) as libc::c_int,
        };
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd that outlives the call. Errors
        // (EINTR) are a spurious wake-up, which `wait` allows.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};
    use std::vec::Vec;

    #[test]
    fn derived_mac() {
        let m = TapLink::mac_for_name("tap0");
        assert_eq!(m[0], 0x02, "locally administered unicast");
        assert_eq!(m, TapLink::mac_for_name("tap0"));
        assert_ne!(m, TapLink::mac_for_name("tap1"));
    }

    #[test]
    fn bad_names() {
        let e = TapLink::open("a-name-far-too-long").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(TapLink::open("a\0b").is_err());
    }

    /// Deletes the namespace on drop, also when the test fails.
    struct NetnsGuard(String);

    impl Drop for NetnsGuard {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn ip(ns: &str, args: &[&str]) {
        let out = Command::new("ip")
            .args(["-n", ns])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {ns} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    const KERNEL_IP: [u8; 4] = [10, 77, 0, 1];
    const OUR_IP: [u8; 4] = [10, 77, 0, 2];

    fn arp_request(mac: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::with_capacity(60);
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x08, 0x06]); // ARP
        f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
        f.extend_from_slice(&mac);
        f.extend_from_slice(&OUR_IP);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&KERNEL_IP);
        f.resize(60, 0);
        f
    }

    fn is_arp_reply_to_us(f: &[u8], mac: [u8; 6]) -> bool {
        f.len() >= 42
            && f[..6] == mac
            && f[12..14] == [0x08, 0x06]
            && f[20..22] == [0, 2]
            && f[28..32] == KERNEL_IP
            && f[32..38] == mac
            && f[38..42] == OUR_IP
    }

    /// Runs on its own thread: enters the namespace (network namespaces are
    /// per thread), opens the TAP, configures the kernel side and checks the
    /// kernel answers our ARP request. `Err` means "cannot run here".
    fn arp_in_namespace(ns: &str) -> Result<(), String> {
        let path = ["/var/run/netns", "/run/netns"]
            .iter()
            .map(|d| format!("{d}/{ns}"))
            .find(|p| Path::new(p).exists())
            .ok_or("namespace file not found")?;
        let nsfile = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        // SAFETY: `nsfile` is an open namespace descriptor; setns moves only
        // this (test-owned) thread into it.
        if unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", io::Error::last_os_error()));
        }
        drop(nsfile);

        let name = "ndvtap0";
        let mut tap = TapLink::open(name).map_err(|e| format!("open TAP: {e}"))?;
        assert_eq!(tap.name(), name);
        assert_eq!(tap.hardware_addr(), TapLink::mac_for_name(name));
        assert_eq!(tap.max_frame_len(), 1514);
        assert!(!tap.link_up(), "a new TAP starts down");
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert_eq!(tap.receive(&mut buf), Ok(None));
        assert_eq!(
            tap.transmit(&[0; MAX_FRAME_LEN + 1]),
            Err(LinkError::TooLong)
        );
        assert_eq!(tap.transmit(&arp_request(tap.mac)), Err(LinkError::Down));

        ip(ns, &["addr", "add", "10.77.0.1/24", "dev", name]);
        ip(ns, &["link", "set", name, "up"]);

        // Carrier (IFF_RUNNING) follows asynchronously.
        let t = Instant::now();
        while !tap.link_up() {
            assert!(t.elapsed() < Duration::from_secs(5), "TAP never came up");
            std::thread::sleep(Duration::from_millis(20));
        }

        let sig = tap.rx_signal().expect("rx signal");
        let mac = tap.hardware_addr();
        let start = Instant::now();
        let mut next_request = start;
        let mut seen = 0;
        loop {
            let now = Instant::now();
            assert!(
                now - start < Duration::from_secs(10),
                "no ARP reply ({seen} other frames seen)"
            );
            if now >= next_request {
                tap.transmit(&arp_request(mac))
                    .expect("transmit ARP request");
                next_request = now + Duration::from_millis(500);
            }
            match tap.receive(&mut buf).expect("receive") {
                Some(n) if is_arp_reply_to_us(&buf[..n], mac) => break,
                // IPv6 router solicitations, MLD reports, ...
                Some(_) => seen += 1,
                None => sig.wait(Some(Duration::from_millis(100))),
            }
        }

        ip(ns, &["link", "set", name, "down"]);
        assert!(!tap.link_up());
        Ok(())
    }

    #[test]
    fn tap_arp_reply_in_netns() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let cannot_run = |why: &str| {
            assert!(!ci, "TAP test cannot run under CI=true: {why}");
            std::println!("skipping TAP test: {why}");
        };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return cannot_run("not root");
        }
        if !Path::new("/dev/net/tun").exists() {
            return cannot_run("/dev/net/tun missing");
        }
        let ns = format!("ndv-phy-{}", std::process::id());
        match Command::new("ip").args(["netns", "add", &ns]).output() {
            Err(e) => return cannot_run(&format!("cannot run ip: {e}")),
            Ok(o) if !o.status.success() => {
                return cannot_run(&format!(
                    "ip netns add failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                ))
            }
            Ok(_) => {}
        }
        let _guard = NetnsGuard(ns.clone());

        let thread_ns = ns.clone();
        match std::thread::spawn(move || arp_in_namespace(&thread_ns)).join() {
            Ok(Ok(())) => {}
            Ok(Err(why)) => cannot_run(&why),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
