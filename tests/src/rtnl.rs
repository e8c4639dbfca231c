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

/// Sends RTM_NEWROUTE `dst/len dev <oif>` inside the netns at `netns_path` (from a thread that
/// enters it) and returns the kernel's error code (0 for an ACK) and the sender's tid.
pub fn add_route_oif(netns_path: &str, dst: [u8; 4], len: u8, oif: u32) -> (i32, u32) {
    let file = std::fs::File::open(netns_path).expect("open netns");
    std::thread::spawn(move || {
        // SAFETY: raw socket and setns calls on this thread with valid arguments.
        unsafe {
            assert_eq!(
                libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET),
                0,
                "setns"
            );
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket");
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
            let sent = libc::sendto(
                fd,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            );
            assert_eq!(sent, msg.len() as isize, "sendto");
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
