//! What each message of a request does, the way `ip` users read it
//! (`route add 192.0.3.0/24 dev eth0 proto static scope link table main`) plus structured fields.
//! Parsing is netlink-packet-route's; anything it cannot parse becomes an `Undecodable` with the
//! reason, never a panic.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::digits::push_decimal;

use netlink_packet_core::ParseableParametrized;
use netlink_packet_route::{
    RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope},
    rule::{RuleAttribute, RuleMessage},
};
use serde::Serialize;

use super::NlRequest;
use super::names::{Names, netns_of_fd, netns_of_pid};
use super::reply::{Outcome, Status, outcome};

const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;

/// One state-changing message of a request.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub seq: u32,
    pub msg_type: u16,
    /// link, addr, route, neigh, rule, nexthop.
    pub object: &'static str,
    /// add, replace, change, set, del.
    pub verb: &'static str,
    /// `ip`-style rendering.
    pub op: String,
    /// The interface it is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// For a link moved to another namespace: that namespace's inode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_netns: Option<u32>,
    pub outcome: Outcome,
    pub detail: Detail,
}

/// Structured fields of a change, by object.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Detail {
    Route(RouteDetail),
    Addr(AddrDetail),
    Link(LinkDetail),
    Neigh(NeighDetail),
    Rule(RuleDetail),
    None,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteDetail {
    pub family: String,
    pub dst: Option<String>,
    pub gateway: Option<String>,
    pub oif: Option<u32>,
    pub dev: Option<String>,
    pub protocol: String,
    pub scope: Option<String>,
    pub table: u32,
    pub metric: Option<u32>,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AddrDetail {
    pub family: String,
    pub local: Option<String>,
    pub address: Option<String>,
    pub prefix_len: u8,
    pub index: u32,
    pub dev: String,
    pub label: Option<String>,
    pub scope: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkDetail {
    pub index: Option<u32>,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub peer: Option<String>,
    pub peer_netns: Option<u32>,
    pub mtu: Option<u32>,
    pub master: Option<u32>,
    /// The attributes the request carried, by name.
    pub attributes: Vec<String>,
    pub up: Option<bool>,
    pub netns_fd: Option<i32>,
    pub netns_pid: Option<u32>,
    pub target_netns: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NeighDetail {
    pub dst: Option<String>,
    pub lladdr: Option<String>,
    pub index: u32,
    pub dev: String,
    pub state: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleDetail {
    pub from: Option<String>,
    pub to: Option<String>,
    pub table: u32,
    pub priority: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Undecodable {
    pub msg_type: u16,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub enum Described {
    Change(Box<Change>),
    Undecodable(Undecodable),
}

fn object_of(t: u16) -> Option<&'static str> {
    match t {
        16..=19 => Some("link"),
        20..=23 => Some("addr"),
        24..=27 => Some("route"),
        28..=31 => Some("neigh"),
        32..=35 => Some("rule"),
        104..=107 => Some("nexthop"),
        _ => None,
    }
}

fn verb_of(t: u16, flags: u16) -> Option<&'static str> {
    let base = if t >= 104 { t - 104 } else { (t - 16) % 4 };
    match base {
        0 if flags & NLM_F_CREATE != 0 && flags & NLM_F_REPLACE != 0 => Some("replace"),
        0 if flags & NLM_F_CREATE != 0 => Some("add"),
        0 if t == 16 => Some("set"),
        0 => Some("change"),
        1 => Some("del"),
        3 => Some("set"),
        _ => None, // GET
    }
}

/// Appends an address as `Display` writes it (IPv4 digit by digit; IPv6, with its zero-run
/// compression, by `Display` itself).
fn push_ip(s: &mut String, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v) => {
            for (k, o) in v.octets().into_iter().enumerate() {
                if k > 0 {
                    s.push('.');
                }
                push_decimal(s, u64::from(o));
            }
        }
        IpAddr::V6(v) => {
            let _ = write!(s, "{v}");
        }
    }
}

fn ip_string(ip: &IpAddr) -> String {
    let mut s = String::with_capacity(15);
    push_ip(&mut s, ip);
    s
}

fn addr(a: &RouteAddress) -> String {
    match a {
        RouteAddress::Inet(v) => ip_string(&IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => ip_string(&IpAddr::V6(*v)),
        other => format!("{other:?}"),
    }
}

/// A value's `Debug` rendering, lowercased as `ip` prints enum names (`Kernel` → `kernel`,
/// `Other(42)` → `other(42)`), written once instead of formatted and then copied.
fn debug_lower(v: &dyn std::fmt::Debug) -> String {
    struct Lower(String);
    impl std::fmt::Write for Lower {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.extend(s.chars().map(|c| c.to_ascii_lowercase()));
            Ok(())
        }
    }
    let mut l = Lower(String::new());
    let _ = write!(l, "{v:?}");
    l.0
}

/// A variant's name: its `Debug` rendering up to the first `(`, space or `{`. Formatting stops
/// there (the writer refuses the rest), so an attribute holding nested data costs its name, not
/// a full dump of the data.
fn debug_head(v: &dyn std::fmt::Debug) -> String {
    struct Head(String);
    impl std::fmt::Write for Head {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            match s.find(['(', ' ', '{']) {
                Some(i) => {
                    self.0.push_str(&s[..i]);
                    Err(std::fmt::Error)
                }
                None => {
                    self.0.push_str(s);
                    Ok(())
                }
            }
        }
    }
    let mut h = Head(String::new());
    let _ = write!(h, "{v:?}");
    h.0
}

fn push_table(s: &mut String, t: u32) {
    match t {
        254 => s.push_str("main"),
        255 => s.push_str("local"),
        253 => s.push_str("default"),
        n => push_decimal(s, u64::from(n)),
    }
}

struct Ctx<'a> {
    names: &'a mut Names,
    netns: u32,
    tgid: u32,
    target_netns: Option<u32>,
    peer_netns: Option<u32>,
}

impl Ctx<'_> {
    fn dev(&mut self, index: u32) -> String {
        self.names
            .ifname(self.netns, index, &[self.tgid])
            .unwrap_or_else(|| format!("if{index}"))
    }
}

fn route(m: &RouteMessage, verb: &str, cx: &mut Ctx) -> (String, Option<u32>, Detail) {
    let h = &m.header;
    let mut dst = None;
    let (mut gw, mut oif, mut table, mut metric, mut src) = (None, None, None, None, None);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = Some(addr(d)),
            RouteAttribute::Gateway(g) => gw = Some(addr(g)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = Some(*t),
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::PrefSource(s) => src = Some(addr(s)),
            _ => {}
        }
    }
    let table = table.unwrap_or(h.table as u32);
    let mut s = String::with_capacity(96);
    s.push_str("route ");
    s.push_str(verb);
    s.push(' ');
    // The destination with its prefix length, as the op shows it and as the detail keeps it.
    let dst = dst.map(|mut d| {
        d.push('/');
        push_decimal(&mut d, u64::from(h.destination_prefix_length));
        d
    });
    match &dst {
        Some(d) if h.destination_prefix_length > 0 => s.push_str(d),
        _ => s.push_str("default"),
    }
    let field = |s: &mut String, name: &str, v: &str| {
        s.push(' ');
        s.push_str(name);
        s.push(' ');
        s.push_str(v);
    };
    if let Some(g) = &gw {
        field(&mut s, "via", g);
    }
    let dev = oif.map(|i| cx.dev(i));
    if let Some(d) = &dev {
        field(&mut s, "dev", d);
    }
    let proto = debug_lower(&h.protocol);
    if proto != "unspec" {
        field(&mut s, "proto", &proto);
    }
    let scope = match h.scope {
        RouteScope::Universe => None,
        other => Some(debug_lower(&other)),
    };
    if let Some(sc) = &scope {
        field(&mut s, "scope", sc);
    }
    if let Some(p) = &src {
        field(&mut s, "src", p);
    }
    if table != 0 {
        s.push_str(" table ");
        push_table(&mut s, table);
    }
    if let Some(m) = metric {
        s.push_str(" metric ");
        push_decimal(&mut s, u64::from(m));
    }
    let detail = Detail::Route(RouteDetail {
        family: debug_lower(&h.address_family),
        dst,
        gateway: gw,
        oif,
        dev,
        protocol: proto,
        scope,
        table,
        metric,
        kind: debug_lower(&h.kind),
    });
    (s, oif, detail)
}

fn address(m: &AddressMessage, verb: &str, cx: &mut Ctx) -> (String, Option<u32>, Detail) {
    let h = &m.header;
    let mut local = None;
    let mut address = None;
    let mut label = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(ip_string(ip)),
            AddressAttribute::Address(ip) => address = Some(ip_string(ip)),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            _ => {}
        }
    }
    let ip = local
        .clone()
        .or(address.clone())
        .unwrap_or_else(|| "?".into());
    let dev = cx.dev(h.index);
    let mut s = String::with_capacity(64);
    for part in ["addr ", verb, " ", &ip, "/"] {
        s.push_str(part);
    }
    push_decimal(&mut s, u64::from(h.prefix_len));
    s.push_str(" dev ");
    s.push_str(&dev);
    let detail = Detail::Addr(AddrDetail {
        family: debug_lower(&h.family),
        local,
        address,
        prefix_len: h.prefix_len,
        index: h.index,
        dev,
        label,
        scope: debug_lower(&h.scope),
    });
    (s, Some(h.index), detail)
}

/// A veth peer created with the link: its name and where it goes (fd or pid).
#[derive(Default)]
struct Peer {
    name: Option<String>,
    ns_fd: Option<i32>,
    ns_pid: Option<u32>,
}

/// Link kind, and a veth peer, from IFLA_LINKINFO.
fn link_info(infos: &[LinkInfo]) -> (Option<String>, Peer) {
    let mut kind = None;
    let mut peer = Peer::default();
    for i in infos {
        match i {
            LinkInfo::Kind(k) => {
                kind = Some(match k {
                    InfoKind::Other(s) => s.clone(),
                    other => debug_lower(other),
                })
            }
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => {
                for a in &p.attributes {
                    match a {
                        LinkAttribute::IfName(n) => peer.name = Some(n.clone()),
                        LinkAttribute::NetNsFd(fd) => peer.ns_fd = Some(*fd),
                        LinkAttribute::NetNsPid(pid) => peer.ns_pid = Some(*pid),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (kind, peer)
}

fn link(
    m: &LinkMessage,
    verb: &str,
    cx: &mut Ctx,
    target: &mut Option<u32>,
) -> Option<(String, Option<u32>, Detail)> {
    let h = &m.header;
    let (mut name, mut mtu, mut master, mut kind, mut ns_fd, mut ns_pid) =
        (None, None, None, None, None, None);
    let mut peer = Peer::default();
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Mtu(v) => mtu = Some(*v),
            LinkAttribute::Controller(c) => master = Some(*c),
            LinkAttribute::LinkInfo(infos) => (kind, peer) = link_info(infos),
            LinkAttribute::NetNsFd(fd) => ns_fd = Some(*fd),
            LinkAttribute::NetNsPid(p) => ns_pid = Some(*p),
            _ => {}
        }
    }
    if let Some(fd) = ns_fd {
        *target = cx.target_netns.or_else(|| netns_of_fd(cx.tgid, fd));
    } else if let Some(p) = ns_pid {
        *target = netns_of_pid(p);
    }
    let index = (h.index != 0).then_some(h.index);
    if index.is_none() && name.is_none() {
        // Names no link (iproute2 sends one such RTM_NEWLINK at start-up to probe the kernel):
        // it cannot change anything.
        return None;
    }
    if let (Some(i), Some(n)) = (index, &name) {
        cx.names.learn_ifname(cx.netns, i, n);
    }
    let dev = match (index, &name) {
        (Some(i), _) if verb != "add" => cx.dev(i),
        (_, Some(n)) => n.clone(),
        (Some(i), None) => cx.dev(i),
        (None, None) => "?".into(),
    };
    let mut s = String::with_capacity(96);
    s.push_str(match verb {
        "add" => "link add ",
        "del" => "link del dev ",
        _ => "link set dev ",
    });
    s.push_str(&dev);
    if verb == "add" {
        if let Some(k) = &kind {
            let _ = write!(s, " type {k}");
        }
        if let Some(p) = &peer.name {
            let _ = write!(s, " peer name {p}");
        }
    } else if let (Some(n), Some(_)) = (&name, index)
        && *n != dev
    {
        let _ = write!(s, " name {n}");
    }
    if h.change_mask.contains(LinkFlags::Up) {
        s.push_str(if h.flags.contains(LinkFlags::Up) {
            " up"
        } else {
            " down"
        });
    }
    if let Some(m) = mtu {
        let _ = write!(s, " mtu {m}");
    }
    if let Some(c) = master {
        if c == 0 {
            s.push_str(" nomaster");
        } else {
            let mdev = cx.dev(c);
            let _ = write!(s, " master {mdev}");
        }
    }
    if ns_fd.is_some() || ns_pid.is_some() {
        match (target.as_ref(), ns_pid) {
            (Some(t), _) => {
                let shown = cx
                    .names
                    .display(*t)
                    .unwrap_or_else(|| format!("netns:[{t}]"));
                let _ = write!(s, " netns {shown}");
            }
            (None, Some(p)) => {
                let _ = write!(s, " netns pid {p}");
            }
            (None, None) => s.push_str(" netns <fd>"),
        }
    }
    // Where a veth peer goes: only userspace can resolve a nested fd, while the sender lives.
    let peer_netns = match (peer.ns_fd, peer.ns_pid) {
        (Some(fd), _) => cx.peer_netns.or_else(|| netns_of_fd(cx.tgid, fd)),
        (None, Some(p)) => netns_of_pid(p),
        _ => None,
    };
    if peer.ns_fd.is_some() || peer.ns_pid.is_some() {
        let shown = peer_netns
            .map(|t| {
                cx.names
                    .display(t)
                    .unwrap_or_else(|| format!("netns:[{t}]"))
            })
            .unwrap_or_else(|| "<unresolved>".into());
        let _ = write!(s, " netns {shown}");
    }
    let attributes: Vec<String> = m.attributes.iter().map(|a| debug_head(a)).collect();
    let detail = Detail::Link(LinkDetail {
        index,
        name,
        kind,
        peer: peer.name,
        peer_netns,
        mtu,
        master,
        attributes,
        up: h
            .change_mask
            .contains(LinkFlags::Up)
            .then(|| h.flags.contains(LinkFlags::Up)),
        netns_fd: ns_fd,
        netns_pid: ns_pid,
        target_netns: *target,
    });
    Some((s, index, detail))
}

fn neigh(m: &NeighbourMessage, verb: &str, cx: &mut Ctx) -> (String, Option<u32>, Detail) {
    let h = &m.header;
    let mut dst = None;
    let mut lladdr = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => dst = Some(v.to_string()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => {
                dst = Some(v.to_string())
            }
            NeighbourAttribute::LinkLayerAddress(mac) => {
                lladdr = Some(
                    mac.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                )
            }
            _ => {}
        }
    }
    let dev = cx.dev(h.ifindex);
    let mut s = format!("neigh {verb} {}", dst.clone().unwrap_or_else(|| "?".into()));
    if let Some(l) = &lladdr {
        let _ = write!(s, " lladdr {l}");
    }
    let _ = write!(s, " dev {dev}");
    let state = debug_lower(&h.state);
    let _ = write!(s, " nud {state}");
    let detail = Detail::Neigh(NeighDetail {
        dst,
        lladdr,
        index: h.ifindex,
        dev,
        state,
    });
    (s, Some(h.ifindex), detail)
}

fn rule(m: &RuleMessage, verb: &str) -> (String, Option<u32>, Detail) {
    let mut s = format!("rule {verb}");
    let (mut from, mut to, mut table, mut prio) = (None, None, None, None);
    for a in &m.attributes {
        match a {
            RuleAttribute::Source(ip) => from = Some(format!("{ip}/{}", m.header.src_len)),
            RuleAttribute::Destination(ip) => to = Some(format!("{ip}/{}", m.header.dst_len)),
            RuleAttribute::Table(t) => table = Some(*t),
            RuleAttribute::Priority(p) => prio = Some(*p),
            _ => {}
        }
    }
    if let Some(p) = prio {
        let _ = write!(s, " priority {p}");
    }
    if let Some(f) = &from {
        let _ = write!(s, " from {f}");
    }
    if let Some(t) = &to {
        let _ = write!(s, " to {t}");
    }
    let table = table.unwrap_or(m.header.table as u32);
    if table != 0 {
        s.push_str(" table ");
        push_table(&mut s, table);
    }
    (
        s,
        None,
        Detail::Rule(RuleDetail {
            from,
            to,
            table,
            priority: prio,
        }),
    )
}

/// Describes every state-changing message in `req`.
pub fn describe(req: &NlRequest, names: &mut Names) -> Vec<Described> {
    let b = &req.request;
    let mut out = Vec::new();
    let mut o = 0usize;
    let mut cx = Ctx {
        names,
        netns: req.netns,
        tgid: req.tgid,
        target_netns: req.target_netns,
        peer_netns: req.peer_netns,
    };
    let mut msgs = Vec::new();
    while o + 16 <= b.len() {
        let len = u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as usize;
        let ty = u16::from_ne_bytes([b[o + 4], b[o + 5]]);
        let flags = u16::from_ne_bytes([b[o + 6], b[o + 7]]);
        let seq = u32::from_ne_bytes([b[o + 8], b[o + 9], b[o + 10], b[o + 11]]);
        if len < 16 {
            out.push(Described::Undecodable(Undecodable {
                msg_type: ty,
                reason: format!("message length {len} is shorter than a netlink header"),
            }));
            break;
        }
        if o + len > b.len() {
            let why = if req.request_cut {
                format!(
                    "message of {len} bytes runs past the {} bytes captured (the request was cut)",
                    b.len() - o
                )
            } else {
                format!(
                    "message of {len} bytes runs past the {} bytes sent",
                    b.len() - o
                )
            };
            out.push(Described::Undecodable(Undecodable {
                msg_type: ty,
                reason: why,
            }));
            break;
        }
        msgs.push((ty, flags, seq, o + 16..o + len));
        o += (len + 3) & !3;
    }
    if msgs.is_empty() && out.is_empty() {
        out.push(Described::Undecodable(Undecodable {
            msg_type: 0,
            reason: format!("{} bytes hold no complete netlink message", b.len()),
        }));
    }
    let last = msgs.len().saturating_sub(1);
    for (i, (ty, flags, seq, range)) in msgs.into_iter().enumerate() {
        let (Some(object), Some(verb)) = (object_of(ty), verb_of(ty, flags)) else {
            continue; // a GET or another family in the same send
        };
        // Only the last message's reply is visible on the socket.
        let oc = if i == last {
            outcome(&req.reply, seq, flags, req.extack.as_deref())
        } else {
            Outcome {
                status: Status::Unknown,
                errno: None,
                error: None,
                extack: None,
            }
        };
        if object == "nexthop" {
            out.push(Described::Change(Box::new(Change {
                seq,
                msg_type: ty,
                object,
                verb,
                op: format!("nexthop {verb}"),
                ifindex: None,
                ifname: None,
                target_netns: None,
                outcome: oc,
                detail: Detail::None,
            })));
            continue;
        }
        let parsed = RouteNetlinkMessage::parse_with_param(&b[range], ty);
        let mut target = None;
        let rendered = match &parsed {
            Ok(RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m)) => {
                Some(route(m, verb, &mut cx))
            }
            Ok(RouteNetlinkMessage::NewAddress(m) | RouteNetlinkMessage::DelAddress(m)) => {
                Some(address(m, verb, &mut cx))
            }
            Ok(
                RouteNetlinkMessage::NewLink(m)
                | RouteNetlinkMessage::DelLink(m)
                | RouteNetlinkMessage::SetLink(m),
            ) => match link(m, verb, &mut cx, &mut target) {
                Some(r) => Some(r),
                None => continue,
            },
            Ok(RouteNetlinkMessage::NewNeighbour(m) | RouteNetlinkMessage::DelNeighbour(m)) => {
                Some(neigh(m, verb, &mut cx))
            }
            Ok(RouteNetlinkMessage::NewRule(m) | RouteNetlinkMessage::DelRule(m)) => {
                Some(rule(m, verb))
            }
            Ok(_) => None,
            Err(e) => {
                out.push(Described::Undecodable(Undecodable {
                    msg_type: ty,
                    reason: format!("{object} message does not parse: {e}"),
                }));
                continue;
            }
        };
        let Some((op, ifindex, detail)) = rendered else {
            continue;
        };
        if let Detail::Link(l) = &detail
            && verb == "add"
            && oc.status == Status::Ack
        {
            // The kernel chose the new links' indexes: learn them now, so a later
            // `link del dev <index>` still has a name after the link is gone.
            for n in [&l.name, &l.peer].into_iter().flatten() {
                cx.names.learn_index(req.netns, n, &[req.tgid]);
            }
        }
        let ifname = ifindex.and_then(|i| cx.names.ifname(req.netns, i, &[req.tgid]));
        out.push(Described::Change(Box::new(Change {
            seq,
            msg_type: ty,
            object,
            verb,
            op,
            ifindex,
            ifname,
            target_netns: target,
            outcome: oc,
            detail,
        })));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let ips: [IpAddr; 6] = [
            "0.0.0.0".parse().unwrap(),
            "10.244.77.2".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
            "192.0.3.100".parse().unwrap(),
            "fe80::1".parse().unwrap(),
            "2001:db8::8:800:200c:417a".parse().unwrap(),
        ];
        for ip in ips {
            assert_eq!(ip_string(&ip), ip.to_string());
        }
    }

    #[test]
    fn enum_names_read_as_ip_prints_them() {
        use netlink_packet_route::route::RouteProtocol;
        assert_eq!(debug_lower(&RouteProtocol::Kernel), "kernel");
        // An unnamed value keeps its number.
        assert_eq!(debug_lower(&RouteProtocol::Other(42)), "other(42)");
        // An attribute's name only, however much data it holds.
        let info = LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(LinkMessage::default()))),
        ]);
        assert_eq!(debug_head(&info), "LinkInfo");
        assert_eq!(debug_head(&LinkAttribute::Mtu(1500)), "Mtu");
        assert_eq!(debug_head(&LinkAttribute::IfName("eth0".into())), "IfName");
    }

    fn attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
        buf.extend(((4 + data.len()) as u16).to_ne_bytes());
        buf.extend(ty.to_ne_bytes());
        buf.extend(data);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
    }

    fn msg(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(((16 + body.len()) as u32).to_ne_bytes());
        m.extend(ty.to_ne_bytes());
        m.extend(flags.to_ne_bytes());
        m.extend(seq.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend(body);
        m
    }

    /// `ip route add 192.0.3.0/24 dev <oif>` as iproute2 builds it.
    fn route_add(seq: u32, oif: u32) -> Vec<u8> {
        let mut b = vec![2, 24, 0, 0, 254, 3, 253, 1, 0, 0, 0, 0];
        attr(&mut b, 1, &[192, 0, 3, 0]);
        attr(&mut b, 4, &oif.to_ne_bytes());
        msg(24, 0x1 | 0x4 | 0x400 | 0x200, seq, &b)
    }

    fn req(request: Vec<u8>, reply: Vec<u8>) -> NlRequest {
        NlRequest {
            ts_ns: 1,
            pid: 1,
            tgid: 1,
            comm: "ip".into(),
            netns: 0,
            task_netns: 0,
            target_netns: None,
            peer_netns: None,
            sk: 0,
            plugin_tree: false,
            sendto: false,
            request_total: request.len() as u32,
            request,
            request_cut: false,
            reply,
            extack: None,
        }
    }

    fn changes(r: &NlRequest) -> Vec<Described> {
        describe(r, &mut Names::default())
    }

    #[test]
    fn route_add_reads_like_ip() {
        let mut names = Names::default();
        names.learn_ifname(0, 7, "net1");
        let r = req(
            route_add(5, 7),
            crate::netlink::reply::tests_support::error_reply(5, -17),
        );
        let d = describe(&r, &mut names);
        let Described::Change(c) = &d[0] else {
            panic!("{d:?}")
        };
        assert_eq!(
            c.op,
            "route add 192.0.3.0/24 dev net1 proto boot scope link table main"
        );
        assert_eq!((c.object, c.verb), ("route", "add"));
        assert_eq!(c.outcome.errno, Some(17));
        assert_eq!(c.ifname.as_deref(), Some("net1"));
    }

    #[test]
    fn gets_are_not_changes_and_replace_is_named() {
        let get = msg(26, 0x1 | 0x300, 1, &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(changes(&req(get, vec![])).is_empty());
        let mut b = vec![2, 0, 0, 0, 254, 4, 0, 1, 0, 0, 0, 0];
        attr(&mut b, 5, &[10, 0, 0, 1]);
        let rep = msg(24, 0x1 | 0x4 | 0x400 | 0x100, 2, &b);
        let d = changes(&req(rep, vec![]));
        let Described::Change(c) = &d[0] else {
            panic!("{d:?}")
        };
        assert_eq!(c.verb, "replace");
        assert!(
            c.op.starts_with("route replace default via 10.0.0.1"),
            "{}",
            c.op
        );
    }

    #[test]
    fn every_truncation_is_undecodable_or_fewer_changes_never_a_panic() {
        let full = route_add(9, 3);
        for n in 0..full.len() {
            let mut r = req(full[..n].to_vec(), vec![]);
            r.request_cut = n % 2 == 0;
            let d = changes(&r);
            assert!(
                d.iter().all(|x| matches!(x, Described::Undecodable(_))),
                "a cut message must not look whole ({n} bytes): {d:?}"
            );
            assert!(!d.is_empty(), "{n} bytes gave nothing at all");
        }
    }

    #[test]
    fn malformed_attributes_are_reported() {
        let mut m = route_add(1, 3);
        // An attribute claiming more bytes than the message holds.
        let l = m.len();
        m[l - 8] = 0xff;
        let d = changes(&req(m, vec![]));
        assert!(
            matches!(&d[0], Described::Undecodable(u) if u.reason.contains("does not parse")),
            "{d:?}"
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..20_000 {
            let len = (round % 300) as usize;
            let mut b = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            // Make some of them look like netlink headers of a change type.
            if b.len() >= 16 && round % 3 == 0 {
                let l = b.len() as u32;
                b[0..4].copy_from_slice(&l.to_ne_bytes());
                b[4..6].copy_from_slice(&(16 + (round % 20) as u16).to_ne_bytes());
            }
            let _ = changes(&req(b.clone(), b));
        }
    }
}
