//! The kernel's answer to a request: the NLMSG_ERROR message left on the socket (error 0 is an
//! ACK), matched by sequence number, with the extended-ACK message when the socket asked for it.

use serde::Serialize;

pub const NLMSG_ERROR: u16 = 2;
pub const NLM_F_ACK: u16 = 0x4;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The kernel acknowledged the request (error 0).
    Ack,
    /// The kernel refused it with an errno.
    Error,
    /// No ACK was requested and no error was queued: the kernel accepted it silently.
    NoAckRequested,
    /// The socket's last message was not the reply to this request (another request on the
    /// same socket, a multi-message send, or a reader that raced the tracepoint).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// `strerror` of errno, e.g. "File exists".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kernel's extended-ACK text, e.g. "Nexthop device is not up".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extack: Option<String>,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

pub fn strerror(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno)
        .to_string()
        .split(" (os error")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Parses an NLMSG_ERROR reply: (seq of the request it answers, error, extack message).
pub fn parse_error_msg(reply: &[u8]) -> Option<(u32, i32, Option<String>)> {
    let len = u32_at(reply, 0)? as usize;
    let ty = u16_at(reply, 4)?;
    let flags = u16_at(reply, 6)?;
    if ty != NLMSG_ERROR {
        return None;
    }
    let error = u32_at(reply, 16)? as i32;
    let orig_len = u32_at(reply, 20)? as usize;
    let orig_seq = u32_at(reply, 28)?;
    let mut extack = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        let start = 20
            + if flags & NLM_F_CAPPED != 0 {
                16
            } else {
                orig_len
            };
        let mut o = (start + 3) & !3;
        let end = len.min(reply.len());
        while o + 4 <= end {
            let alen = u16_at(reply, o)? as usize;
            let aty = u16_at(reply, o + 2)? & 0x3fff;
            if alen < 4 || o + alen > end {
                break;
            }
            if aty == NLMSGERR_ATTR_MSG {
                let v = &reply[o + 4..o + alen];
                let v = v.split(|&c| c == 0).next().unwrap_or_default();
                extack = Some(String::from_utf8_lossy(v).into_owned());
            }
            o += (alen + 3) & !3;
        }
    }
    Some((orig_seq, error, extack))
}

/// How the request with sequence `seq` and header flags `req_flags` ended.
pub fn outcome(reply: &[u8], seq: u32, req_flags: u16, tp_extack: Option<&str>) -> Outcome {
    let tp_extack = tp_extack.filter(|s| !s.is_empty()).map(str::to_string);
    match parse_error_msg(reply) {
        Some((s, error, extack)) if s == seq => {
            let extack = extack.or(tp_extack);
            if error == 0 {
                Outcome {
                    status: Status::Ack,
                    errno: None,
                    error: None,
                    extack,
                }
            } else {
                let errno = -error;
                Outcome {
                    status: Status::Error,
                    errno: Some(errno),
                    error: Some(strerror(errno)),
                    extack,
                }
            }
        }
        _ if req_flags & NLM_F_ACK == 0 && tp_extack.is_none() => Outcome {
            status: Status::NoAckRequested,
            errno: None,
            error: None,
            extack: None,
        },
        _ => Outcome {
            status: Status::Unknown,
            errno: None,
            error: None,
            extack: tp_extack,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// An ACK (error 0) or error reply without extack, for other modules' tests.
    pub fn error_reply(seq: u32, error: i32) -> Vec<u8> {
        super::tests::error_reply(seq, error, None)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An NLMSG_ERROR as the kernel builds it for a socket with NETLINK_EXT_ACK: capped, with
    /// an NLMSGERR_ATTR_MSG.
    pub fn error_reply(seq: u32, error: i32, msg: Option<&str>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(0u32.to_ne_bytes()); // len, fixed below
        b.extend(NLMSG_ERROR.to_ne_bytes());
        let mut flags = NLM_F_CAPPED;
        if msg.is_some() {
            flags |= NLM_F_ACK_TLVS;
        }
        b.extend(flags.to_ne_bytes());
        b.extend(seq.to_ne_bytes());
        b.extend(1234u32.to_ne_bytes());
        b.extend(error.to_ne_bytes());
        // the original header (capped: header only)
        b.extend(52u32.to_ne_bytes());
        b.extend(24u16.to_ne_bytes());
        b.extend(0x605u16.to_ne_bytes());
        b.extend(seq.to_ne_bytes());
        b.extend(0u32.to_ne_bytes());
        if let Some(m) = msg {
            let mut v = m.as_bytes().to_vec();
            v.push(0);
            let alen = 4 + v.len();
            b.extend((alen as u16).to_ne_bytes());
            b.extend(NLMSGERR_ATTR_MSG.to_ne_bytes());
            b.extend(&v);
            while !b.len().is_multiple_of(4) {
                b.push(0);
            }
        }
        let len = b.len() as u32;
        b[0..4].copy_from_slice(&len.to_ne_bytes());
        b
    }

    #[test]
    fn ack_error_and_extack() {
        let ok = outcome(&error_reply(7, 0, None), 7, NLM_F_ACK, None);
        assert_eq!(ok.status, Status::Ack);
        let e = outcome(&error_reply(7, -17, None), 7, NLM_F_ACK, None);
        assert_eq!(
            (e.status, e.errno, e.error.as_deref()),
            (Status::Error, Some(17), Some("File exists"))
        );
        let x = outcome(
            &error_reply(9, -19, Some("Nexthop device is not up")),
            9,
            NLM_F_ACK,
            None,
        );
        assert_eq!(x.extack.as_deref(), Some("Nexthop device is not up"));
        assert_eq!(x.errno, Some(19));
    }

    #[test]
    fn other_sequence_is_unknown_and_silence_without_ack_flag_is_accepted() {
        assert_eq!(
            outcome(&error_reply(8, 0, None), 7, NLM_F_ACK, None).status,
            Status::Unknown
        );
        assert_eq!(outcome(&[], 7, 0, None).status, Status::NoAckRequested);
        assert_eq!(outcome(&[], 7, NLM_F_ACK, None).status, Status::Unknown);
    }

    #[test]
    fn truncated_replies_never_panic() {
        let full = error_reply(3, -22, Some("Invalid prefix for given prefix length"));
        for n in 0..full.len() {
            let _ = outcome(&full[..n], 3, NLM_F_ACK, None);
        }
    }
}
