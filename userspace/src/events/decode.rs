//! The one place that interprets raw ring-buffer bytes. Every record becomes a typed `Event` or
//! an `Event::Undecodable` that says why.

use std::mem::size_of;
use std::sync::Arc;

use cniscope_ebpf as abi;

use super::{CniEnv, Event, Exec, Exit, Fork, Role, Stdio, Stream};

/// Reads a `T` from the front of `buf` when `buf` is exactly `size_of::<T>()` long.
fn read_exact<T: Copy>(buf: &[u8]) -> Result<T, String> {
    if buf.len() != size_of::<T>() {
        return Err(format!(
            "record is {} bytes, expected {}",
            buf.len(),
            size_of::<T>()
        ));
    }
    // SAFETY: the length was checked; T is a #[repr(C)] ABI struct made only of integers and
    // byte arrays, so any bit pattern is a valid value; read_unaligned copes with any alignment.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

fn role(r: u32) -> Result<Role, String> {
    match r {
        abi::ROLE_PLUGIN => Ok(Role::Plugin),
        abi::ROLE_CHILD => Ok(Role::Child),
        other => Err(format!("unknown role {other}")),
    }
}

fn cstr(b: &[u8]) -> String {
    let end = memchr::memchr(0, b).unwrap_or(b.len());
    text(&b[..end])
}

/// Bytes as a string, replacing what is not UTF-8. Paths, argv and CNI variables are nearly
/// always short ASCII, for which a byte loop is several times cheaper than the general UTF-8
/// check (that check's set-up costs more than the bytes of a short string).
fn text(b: &[u8]) -> String {
    if b.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8.
        return unsafe { std::str::from_utf8_unchecked(b) }.to_owned();
    }
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// Splits a NUL-separated block (argv or environment) into strings. The block is checked as
/// UTF-8 once (the usual case) rather than piece by piece.
pub fn split_block(b: &[u8]) -> Vec<String> {
    if b.is_empty() {
        return Vec::new();
    }
    // Every string ends in a NUL; a block cut short ends in the middle of one.
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    let mut v = Vec::with_capacity(memchr::memchr_iter(0, b).count() + 1);
    match std::str::from_utf8(b) {
        Ok(s) => {
            // Cut at each NUL found by memchr (ASCII, so every cut is a character boundary).
            let mut from = 0;
            for nul in memchr::memchr_iter(0, b) {
                v.push(s[from..nul].to_owned());
                from = nul + 1;
            }
            v.push(s[from..].to_owned());
        }
        Err(_) => v.extend(b.split(|&c| c == 0).map(text)),
    }
    v
}

/// Extracts the `CNI_*` variables from an environment window. With `tail`, the window starts
/// inside a variable, so its first fragment is skipped. A later duplicate wins, as in the
/// environment a runtime builds (Go's exec de-duplicates keeping the last).
///
/// The window is read from its end, one variable at a time: libcni appends the `CNI_*`
/// variables after the runtime's own environment, the first occurrence seen from the end is the
/// one that wins, and the scan stops as soon as all six are found (a runtime's environment is
/// kilobytes; the six are usually its last few hundred bytes).
pub fn cni_env(window: &[u8], tail: bool) -> CniEnv {
    let mut env = CniEnv::default();
    // With a tail window the bytes before the first NUL are a fragment, never a variable.
    let start = if tail {
        match memchr::memchr(0, window) {
            Some(i) => i + 1,
            None => return env,
        }
    } else {
        0
    };
    let window = &window[start..];
    const ALL: u8 = (1 << 6) - 1;
    let mut found = 0u8;
    let mut end = window.len();
    while found != ALL {
        let begin = memchr::memrchr(0, &window[..end]).map_or(0, |i| i + 1);
        let var = &window[begin..end];
        if let Some(rest) = var.strip_prefix(b"CNI_")
            && let Some(eq) = memchr::memchr(b'=', rest)
        {
            let known = match &rest[..eq] {
                b"COMMAND" => Some((&mut env.command, 0)),
                b"CONTAINERID" => Some((&mut env.containerid, 1)),
                b"NETNS" => Some((&mut env.netns, 2)),
                b"IFNAME" => Some((&mut env.ifname, 3)),
                b"ARGS" => Some((&mut env.args, 4)),
                b"PATH" => Some((&mut env.path, 5)),
                _ => None,
            };
            if let Some((slot, bit)) = known
                && found & (1 << bit) == 0
            {
                *slot = Some(text(&rest[eq + 1..]));
                found |= 1 << bit;
            }
        }
        if begin == 0 {
            break;
        }
        end = begin - 1;
    }
    env
}

/// The fixed part of an exec record (everything before `filename`).
#[repr(C)]
#[derive(Clone, Copy)]
struct ExecHead {
    hdr: abi::Header,
    ppid: u32,
    netns: u32,
    cgroup_id: u64,
    role: u32,
    uid: u32,
    filename_len: u32,
    argv_len: u32,
    argv_total: u32,
    env_len: u32,
    env_total: u32,
    _pad0: u32,
    comm: [u8; 16],
}
const EXEC_FILENAME: usize = std::mem::offset_of!(abi::ExecEvent, filename);
const EXEC_ARGV: usize = std::mem::offset_of!(abi::ExecEvent, argv);
const EXEC_ENV: usize = std::mem::offset_of!(abi::ExecEvent, env);
const _: () = assert!(size_of::<ExecHead>() == EXEC_FILENAME);

/// Reads the head `H` of a fixed-size record of type `T` (checking the whole length) without
/// copying the rest: the byte arrays behind the head are read in place.
fn read_head<H: Copy, T>(buf: &[u8]) -> Result<H, String> {
    if buf.len() != size_of::<T>() {
        return Err(format!(
            "record is {} bytes, expected {}",
            buf.len(),
            size_of::<T>()
        ));
    }
    read_exact::<H>(&buf[..size_of::<H>()])
}

fn exec(buf: &[u8]) -> Result<Event, String> {
    let e: ExecHead = read_head::<ExecHead, abi::ExecEvent>(buf)?;
    let role = role(e.role)?;
    let fl = e.hdr.flags;
    let filename_len = (e.filename_len as usize).min(abi::MAX_FILENAME);
    let argv_len = (e.argv_len as usize).min(abi::MAX_ARGV);
    let env_len = (e.env_len as usize).min(abi::MAX_ENV);
    let env_tail = fl & abi::EXEC_F_ENV_TAIL != 0;
    let env = &buf[EXEC_ENV..EXEC_ENV + env_len];
    let cni = (role == Role::Plugin).then(|| cni_env(env, env_tail));
    Ok(Event::Exec(Arc::new(Exec {
        ts_ns: e.hdr.ts_ns,
        pid: e.hdr.pid,
        tgid: e.hdr.tgid,
        ppid: e.ppid,
        role,
        netns: e.netns,
        cgroup_id: e.cgroup_id,
        uid: e.uid,
        comm: cstr(&e.comm),
        filename: text(&buf[EXEC_FILENAME..EXEC_FILENAME + filename_len]),
        argv: split_block(&buf[EXEC_ARGV..EXEC_ARGV + argv_len]),
        argv_cut: fl & abi::EXEC_F_ARGV_CUT != 0,
        cni,
        held: fl & abi::EXEC_F_HELD != 0,
        unheld: fl & abi::EXEC_F_UNHELD != 0,
        env_tail,
    })))
}

fn exit(buf: &[u8]) -> Result<Event, String> {
    let e: abi::ExitEvent = read_exact(buf)?;
    let status = e.exit_code;
    let sig = (status & 0x7f) as i32;
    let (code, signal) = if sig == 0 {
        (Some(((status >> 8) & 0xff) as i32), None)
    } else {
        (None, Some(sig))
    };
    Ok(Event::Exit(Exit {
        ts_ns: e.hdr.ts_ns,
        tgid: e.hdr.tgid,
        role: role(e.role)?,
        code,
        signal,
        core_dumped: status & 0x80 != 0,
        status,
        duration_ns: (e.exec_ts_ns != 0).then(|| e.hdr.ts_ns.saturating_sub(e.exec_ts_ns)),
        captured: e.captured,
        cut: e.cut,
    }))
}

/// The fixed part of a stdio record (everything before `data`).
#[repr(C)]
#[derive(Clone, Copy)]
struct StdioHead {
    hdr: abi::Header,
    fd: u32,
    len: u32,
    offset: u64,
}
const STDIO_DATA: usize = std::mem::offset_of!(abi::StdioEvent, data);
const _: () = assert!(size_of::<StdioHead>() == STDIO_DATA);

fn stdio(buf: &[u8]) -> Result<Event, String> {
    let e: StdioHead = read_head::<StdioHead, abi::StdioEvent>(buf)?;
    let stream = Stream::from_fd(e.fd).ok_or_else(|| format!("unknown stdio fd {}", e.fd))?;
    let len = e.len as usize;
    if len > abi::CHUNK {
        return Err(format!(
            "stdio chunk claims {len} bytes, the most is {}",
            abi::CHUNK
        ));
    }
    Ok(Event::Stdio(Stdio {
        ts_ns: e.hdr.ts_ns,
        pid: e.hdr.pid,
        tgid: e.hdr.tgid,
        stream,
        offset: e.offset,
        data: buf[STDIO_DATA..STDIO_DATA + len].to_vec(),
    }))
}

/// The fixed part of a netlink record (everything before `data`).
#[repr(C)]
#[derive(Clone, Copy)]
struct NlHead {
    hdr: abi::Header,
    netns: u32,
    task_netns: u32,
    req_len: u32,
    req_total: u32,
    ack_len: u32,
    extack_len: u32,
    target_netns: u32,
    peer_netns: u32,
    sk: u64,
    comm: [u8; 16],
}
const _: () = assert!(size_of::<NlHead>() == abi::NL_FIXED);

/// `EV_NETLINK` records carry the extack text after the reply; `EV_NETLINK_V1` records (from
/// earlier agents' recordings) in a fixed field before the request.
fn netlink(buf: &[u8], v1: bool) -> Result<Event, String> {
    let fixed = if v1 { abi::NL_FIXED_V1 } else { abi::NL_FIXED };
    if buf.len() < fixed {
        return Err(format!(
            "netlink record of {} bytes is shorter than its fixed part ({fixed})",
            buf.len(),
        ));
    }
    let e: NlHead = read_exact(&buf[..abi::NL_FIXED])?;
    let data = &buf[fixed..];
    let fl = e.hdr.flags;
    let req_len = e.req_len as usize;
    let ack_len = e.ack_len as usize;
    let extack_len = if v1 { 0 } else { e.extack_len as usize };
    if req_len > abi::NL_MAX_REQ
        || ack_len > abi::NL_MAX_ACK
        || extack_len > abi::NL_MAX_EXTACK
        || fixed + req_len + ack_len + extack_len != buf.len()
    {
        return Err(format!(
            "netlink record of {} bytes claims {req_len} request, {ack_len} reply and {extack_len} extack bytes",
            buf.len()
        ));
    }
    let extack = (fl & abi::NL_F_EXTACK != 0).then(|| {
        if v1 {
            cstr(&buf[abi::NL_FIXED..fixed])
        } else {
            cstr(&data[req_len + ack_len..])
        }
    });
    Ok(Event::Netlink(crate::netlink::NlRequest {
        ts_ns: e.hdr.ts_ns,
        pid: e.hdr.pid,
        tgid: e.hdr.tgid,
        comm: cstr(&e.comm),
        netns: e.netns,
        task_netns: e.task_netns,
        target_netns: (e.target_netns != 0).then_some(e.target_netns),
        peer_netns: (e.peer_netns != 0).then_some(e.peer_netns),
        sk: e.sk,
        plugin_tree: fl & abi::NL_F_TRACKED != 0,
        sendto: fl & abi::NL_F_SENDTO != 0,
        request: data[..req_len].to_vec(),
        request_total: e.req_total,
        request_cut: fl & abi::NL_F_REQ_CUT != 0,
        reply: data[req_len..req_len + ack_len].to_vec(),
        extack,
    }))
}

fn fork(buf: &[u8]) -> Result<Event, String> {
    let e: abi::ForkEvent = read_exact(buf)?;
    Ok(Event::Fork(Fork {
        ts_ns: e.hdr.ts_ns,
        pid: e.hdr.tgid,
        parent_tgid: e.parent_tgid,
    }))
}

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Event {
    if buf.len() < size_of::<abi::Header>() {
        return Event::Undecodable {
            kind: 0,
            len: buf.len(),
            reason: format!("record of {} bytes is shorter than the header", buf.len()),
        };
    }
    let kind = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let r = match kind {
        abi::EV_EXEC => exec(buf),
        abi::EV_FORK => fork(buf),
        abi::EV_EXIT => exit(buf),
        abi::EV_STDIO => stdio(buf),
        abi::EV_NETLINK => netlink(buf, false),
        abi::EV_NETLINK_V1 => netlink(buf, true),
        other => Err(format!("unknown event kind {other}")),
    };
    r.unwrap_or_else(|reason| Event::Undecodable {
        kind,
        len: buf.len(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is a plain-old-data ABI struct without implicit padding.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn hdr(kind: u32, flags: u32) -> abi::Header {
        abi::Header {
            kind,
            flags,
            ts_ns: 1_000,
            pid: 42,
            tgid: 42,
        }
    }

    #[test]
    fn exec_with_cni_env_in_the_tail() {
        // SAFETY: all-zero is a valid ExecEvent (integers and byte arrays).
        let mut e: abi::ExecEvent = unsafe { std::mem::zeroed() };
        e.hdr = hdr(abi::EV_EXEC, abi::EXEC_F_HELD | abi::EXEC_F_ENV_TAIL);
        e.role = abi::ROLE_PLUGIN;
        let f = b"/usr/lib/cni/bridge";
        e.filename[..f.len()].copy_from_slice(f);
        e.filename_len = f.len() as u32;
        let a = b"/usr/lib/cni/bridge\0--x\0";
        e.argv[..a.len()].copy_from_slice(a);
        e.argv_len = a.len() as u32;
        let env = b"ATH=/bin\0CNI_COMMAND=ADD\0CNI_IFNAME=eth0\0CNI_IFNAME=net1\0CNI_NETNS=/run/netns/x\0";
        e.env[..env.len()].copy_from_slice(env);
        e.env_len = env.len() as u32;
        let Event::Exec(x) = decode(&as_bytes(&e)) else {
            panic!("not an exec")
        };
        assert_eq!(x.filename, "/usr/lib/cni/bridge");
        assert_eq!(x.argv, ["/usr/lib/cni/bridge", "--x"]);
        assert!(x.held && x.env_tail && !x.unheld);
        let cni = x.cni.clone().unwrap();
        assert_eq!(cni.command.as_deref(), Some("ADD"));
        assert_eq!(cni.ifname.as_deref(), Some("net1"), "last duplicate wins");
        assert_eq!(cni.netns.as_deref(), Some("/run/netns/x"));
        assert_eq!(cni.path, None, "the cut first fragment is not a variable");
    }

    #[test]
    fn blocks_split_into_strings() {
        let split = |b: &[u8]| split_block(b);
        assert!(split(b"").is_empty());
        assert_eq!(split(b"\0"), [""]);
        assert_eq!(split(b"ip\0route\0"), ["ip", "route"]);
        assert_eq!(split(b"ip\0\0"), ["ip", ""]);
        assert_eq!(
            split(b"ip\0rou"),
            ["ip", "rou"],
            "a cut block keeps its fragment"
        );
        assert_eq!(
            split(b"ip\0\xffx\0"),
            ["ip", "\u{fffd}x"],
            "bad UTF-8 is replaced"
        );
    }

    /// The plain reading of an environment block: every variable front to back, the last
    /// duplicate winning. `cni_env` must agree with it on any window.
    fn cni_env_reference(window: &[u8], tail: bool) -> CniEnv {
        let mut env = CniEnv::default();
        let mut vars = window.split(|&b| b == 0);
        if tail {
            vars.next();
            if !window.contains(&0) {
                return env;
            }
        }
        for var in vars {
            let Some(eq) = var.iter().position(|&b| b == b'=') else {
                continue;
            };
            let v = Some(String::from_utf8_lossy(&var[eq + 1..]).into_owned());
            match &var[..eq] {
                b"CNI_COMMAND" => env.command = v,
                b"CNI_CONTAINERID" => env.containerid = v,
                b"CNI_NETNS" => env.netns = v,
                b"CNI_IFNAME" => env.ifname = v,
                b"CNI_ARGS" => env.args = v,
                b"CNI_PATH" => env.path = v,
                _ => {}
            }
        }
        env
    }

    #[test]
    fn cni_env_read_from_the_end_agrees_with_a_front_to_back_reading() {
        // Windows built from a small alphabet of variables, fragments, duplicates, empty
        // variables and stray NULs, in every order a simple generator produces.
        let parts: [&[u8]; 12] = [
            b"CNI_COMMAND=ADD",
            b"CNI_COMMAND=DEL",
            b"CNI_IFNAME=eth0",
            b"CNI_IFNAME=",
            b"CNI_NETNS=/run/netns/x",
            b"CNI_CONTAINERID=abc",
            b"CNI_ARGS=K8S_POD_NAME=p;X=CNI_PATH=no",
            b"CNI_PATH=/opt/cni/bin",
            b"XCNI_PATH=/not",
            b"CNI_NOPE=1",
            b"CNI_IFNAME",
            b"",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut w = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 10) as usize;
            let mut s = seed;
            for _ in 0..n {
                w.extend_from_slice(parts[(s % 12) as usize]);
                w.push(0);
                s /= 12;
            }
            if seed & (1 << 60) != 0 {
                w.pop(); // a window cut before its last NUL
            }
            for tail in [false, true] {
                assert_eq!(
                    cni_env(&w, tail),
                    cni_env_reference(&w, tail),
                    "{:?} tail={tail}",
                    String::from_utf8_lossy(&w)
                );
            }
        }
    }

    #[test]
    fn exit_status_is_split_into_code_and_signal() {
        let mut e = abi::ExitEvent {
            hdr: hdr(abi::EV_EXIT, 0),
            role: abi::ROLE_PLUGIN,
            exec_ts_ns: 400,
            ..Default::default()
        };
        e.exit_code = 1 << 8;
        let Event::Exit(x) = decode(&as_bytes(&e)) else {
            panic!()
        };
        assert_eq!(
            (x.code, x.signal, x.duration_ns),
            (Some(1), None, Some(600))
        );
        e.exit_code = 9;
        let Event::Exit(x) = decode(&as_bytes(&e)) else {
            panic!()
        };
        assert_eq!((x.code, x.signal), (None, Some(9)));
    }

    #[test]
    fn stdio_chunk_keeps_exact_bytes() {
        // SAFETY: all-zero is a valid StdioEvent.
        let mut e: abi::StdioEvent = unsafe { std::mem::zeroed() };
        e.hdr = hdr(abi::EV_STDIO, 0);
        e.fd = 1;
        e.len = 3;
        e.offset = 4096;
        e.data[..3].copy_from_slice(&[0xff, 0, b'{']);
        let Event::Stdio(s) = decode(&as_bytes(&e)) else {
            panic!()
        };
        assert_eq!(
            (s.stream, s.offset, s.data.as_slice()),
            (Stream::Stdout, 4096, &[0xff, 0, b'{'][..])
        );
    }

    #[test]
    fn netlink_extack_follows_the_request_and_reply() {
        let mut head = [0u8; abi::NL_FIXED];
        let h = hdr(abi::EV_NETLINK, abi::NL_F_REPLY | abi::NL_F_EXTACK);
        head[..24].copy_from_slice(&as_bytes(&h));
        let put = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        put(&mut head, 32, 16); // req_len
        put(&mut head, 36, 16); // req_total
        put(&mut head, 40, 20); // ack_len
        put(&mut head, 44, 8); // extack_len
        let mut rec = head.to_vec();
        rec.extend([1u8; 16]);
        rec.extend([2u8; 20]);
        rec.extend(b"Nexthop\0");
        let Event::Netlink(n) = decode(&rec) else {
            panic!("{:?}", decode(&rec))
        };
        assert_eq!((n.request.len(), n.reply.len()), (16, 20));
        assert_eq!(n.extack.as_deref(), Some("Nexthop"));
        // A length that does not add up is refused, not guessed at.
        rec.push(0);
        assert!(matches!(decode(&rec), Event::Undecodable { .. }));
    }

    #[test]
    fn malformed_records_are_undecodable_not_panics() {
        assert!(matches!(decode(&[]), Event::Undecodable { .. }));
        assert!(matches!(decode(&[1, 0, 0, 0]), Event::Undecodable { .. }));
        let mut e: abi::StdioEvent = unsafe { std::mem::zeroed() };
        e.hdr = hdr(abi::EV_STDIO, 0);
        e.fd = 1;
        e.len = 99_999;
        assert!(
            matches!(decode(&as_bytes(&e)), Event::Undecodable { reason, .. } if reason.contains("claims"))
        );
        e.fd = 7;
        e.len = 1;
        assert!(matches!(decode(&as_bytes(&e)), Event::Undecodable { .. }));
        let mut b = as_bytes(&hdr(99, 0));
        b.extend([0; 8]);
        assert!(matches!(decode(&b), Event::Undecodable { kind: 99, .. }));
        // Every truncation of a valid record is rejected cleanly.
        let full = as_bytes(&abi::ExitEvent {
            hdr: hdr(abi::EV_EXIT, 0),
            role: 1,
            ..Default::default()
        });
        for n in 0..full.len() {
            assert!(matches!(decode(&full[..n]), Event::Undecodable { .. }));
        }
    }
}
