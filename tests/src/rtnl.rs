//! A minimal rtnetlink client for requests `ip` refuses to send (e.g. a route through an
//! interface index that does not exist): the test then sees what the kernel itself answers.

use std::os::fd::AsRawFd;

fn attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend((len as u16).to_ne_bytes());
    buf.extend(ty.to_ne_bytes());
    buf.extend(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// How a request is handed to the kernel. The agent finds the request through the sender's
/// registers: sendto's buffer directly, sendmsg's through the msghdr and its iovec, which it
/// reads with the 1 KiB above the msghdr in one go when they lie there (as on `ip`'s stack).
#[derive(Clone, Copy, Debug)]
pub enum Via {
    Sendto,
    /// msghdr, then the iovec 64 bytes above it and the request 128 bytes above it: all
    /// within the agent's window.
    SendmsgAdjacent,
    /// The iovec right below the msghdr (as `struct iovec iov; struct msghdr msg;` may lay out on
    /// a stack), the request below that.
    SendmsgIovecBelow,
    /// The request and the iovec below the msghdr, which ends where the mapping does (the next
    /// page is PROT_NONE): the window read fails, and every pointer is followed on its own.
    SendmsgScattered,
}

/// Sends RTM_NEWROUTE `dst/len dev <oif>` inside the netns at `netns_path` (from a thread that
/// enters it) and returns the kernel's error code (0 for an ACK) and the sender's tid.
pub fn add_route_oif(netns_path: &str, dst: [u8; 4], len: u8, oif: u32) -> (i32, u32) {
    add_route_oif_via(netns_path, dst, len, oif, Via::Sendto)
}

/// `add_route_oif`, sent the way `via` says.
pub fn add_route_oif_via(
    netns_path: &str,
    dst: [u8; 4],
    len: u8,
    oif: u32,
    via: Via,
) -> (i32, u32) {
    add_route(netns_path, dst, len, oif, via, false)
}

/// `add_route_oif`, but the way Go plugins do it: the socket is opened inside the netns, and the
/// thread goes back to its own netns before sending on it.
pub fn add_route_oif_from_outside(netns_path: &str, dst: [u8; 4], len: u8, oif: u32) -> (i32, u32) {
    add_route(netns_path, dst, len, oif, Via::Sendto, true)
}

fn add_route(
    netns_path: &str,
    dst: [u8; 4],
    len: u8,
    oif: u32,
    via: Via,
    send_from_outside: bool,
) -> (i32, u32) {
    let file = std::fs::File::open(netns_path).expect("open netns");
    std::thread::spawn(move || {
        let own = std::fs::File::open("/proc/thread-self/ns/net").expect("own netns");
        // SAFETY: raw socket and setns calls on this thread with valid arguments.
        unsafe {
            assert_eq!(
                libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET),
                0,
                "setns"
            );
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket");
            if send_from_outside {
                assert_eq!(
                    libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET),
                    0,
                    "setns back"
                );
            }
            let mut msg = Vec::new();
            msg.extend(0u32.to_ne_bytes()); // len
            msg.extend(24u16.to_ne_bytes()); // RTM_NEWROUTE
            msg.extend((0x1u16 | 0x4 | 0x400 | 0x200).to_ne_bytes()); // REQUEST|ACK|CREATE|EXCL
            msg.extend(4242u32.to_ne_bytes()); // seq
            msg.extend(0u32.to_ne_bytes()); // pid
            // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
            msg.extend([libc::AF_INET as u8, len, 0, 0, 254, 4, 0, 1]);
            msg.extend(0u32.to_ne_bytes());
            attr(&mut msg, 1, &dst); // RTA_DST
            attr(&mut msg, 4, &oif.to_ne_bytes()); // RTA_OIF
            let l = msg.len() as u32;
            msg[0..4].copy_from_slice(&l.to_ne_bytes());
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            let sent = match via {
                Via::Sendto => libc::sendto(
                    fd,
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&sa as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                ),
                Via::SendmsgAdjacent | Via::SendmsgIovecBelow | Via::SendmsgScattered => {
                    sendmsg_laid_out(fd, &msg, &mut sa, via)
                }
            };
            assert_eq!(sent, msg.len() as isize, "{via:?}");
            let mut buf = [0u8; 1024];
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            assert!(n >= 20, "no reply");
            libc::close(fd);
            let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            (err, libc::gettid() as u32)
        }
    })
    .join()
    .expect("rtnl thread")
}

const PAGE: usize = 4096;

/// sendmsg with the msghdr, iovec and request placed in a fresh mapping as `via` says.
///
/// # Safety
/// `fd` is a netlink socket.
unsafe fn sendmsg_laid_out(fd: i32, msg: &[u8], sa: &mut libc::sockaddr_nl, via: Via) -> isize {
    assert!(msg.len() <= 512);
    // SAFETY: a private anonymous mapping of two pages, used only here.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            2 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(map, libc::MAP_FAILED, "mmap");
        let base = map.cast::<u8>();
        let hdr = std::mem::size_of::<libc::msghdr>();
        let (mh, iov, req) = match via {
            Via::SendmsgAdjacent => (base, base.add(64), base.add(128)),
            Via::SendmsgIovecBelow => (base.add(256), base.add(256 - 16), base),
            _ => {
                // Nothing readable after the first page.
                assert_eq!(
                    libc::mprotect(base.add(PAGE).cast(), PAGE, libc::PROT_NONE),
                    0,
                    "mprotect"
                );
                (base.add(PAGE - hdr), base.add(512), base)
            }
        };
        std::ptr::copy_nonoverlapping(msg.as_ptr(), req, msg.len());
        let iov = iov.cast::<libc::iovec>();
        iov.write(libc::iovec {
            iov_base: req.cast(),
            iov_len: msg.len(),
        });
        let mut m: libc::msghdr = std::mem::zeroed();
        m.msg_name = (sa as *mut libc::sockaddr_nl).cast();
        m.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as u32;
        m.msg_iov = iov;
        m.msg_iovlen = 1;
        let mh = mh.cast::<libc::msghdr>();
        mh.write(m);
        let sent = libc::sendmsg(fd, mh, 0);
        libc::munmap(map, 2 * PAGE);
        sent
    }
}
