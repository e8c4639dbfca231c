//! What an `ip` argv may do. `ip` accepts any unique-enough prefix of its options, objects and
//! verbs (`ip -ne x`, `ip ro ad`), so every word is resolved the way `ip` resolves it before it
//! is judged, and a word that could mean something dangerous is refused outright.

use std::collections::BTreeSet;

/// Options that switch namespace, read commands from elsewhere, or touch every namespace.
/// Any prefix of these (from two characters) is refused, even where `ip` would pick a harmless
/// option first (`-f` is `-family` to ip, but it is also a prefix of `-force`).
const FORBIDDEN_OPTIONS: &[(&str, &str)] = &[
    ("-netns", "switches to another network namespace"),
    ("-batch", "reads commands from a file or stdin"),
    ("-force", "keeps going after errors in batch mode"),
    ("-all", "runs the command in every network namespace"),
];

/// Options accepted before the object, spelled exactly like this.
const ALLOWED_OPTIONS: &[&str] = &[
    "-4",
    "-6",
    "-0",
    "-s",
    "-stats",
    "-statistics",
    "-d",
    "-details",
    "-j",
    "-json",
    "-p",
    "-pretty",
    "-o",
    "-oneline",
    "-br",
    "-brief",
    "-h",
    "-human",
    "-human-readable",
    "-iec",
    "-t",
    "-timestamp",
    "-ts",
    "-tshort",
    "-c",
    "-color",
];
/// `-family X` takes a value.
const FAMILIES: &[&str] = &["inet", "inet6", "link", "bridge", "mpls"];

/// ip's object table in ip's own order: a prefix means the first entry it starts.
const OBJECTS: &[&str] = &[
    "address",
    "addrlabel",
    "amt",
    "maddress",
    "route",
    "rule",
    "neighbor",
    "neighbour",
    "ntable",
    "ntbl",
    "link",
    "l2tp",
    "fou",
    "ila",
    "macsec",
    "tunnel",
    "tuntap",
    "tap",
    "token",
    "tcpmetrics",
    "tcp_metrics",
    "monitor",
    "xfrm",
    "mroute",
    "mrule",
    "netns",
    "netconf",
    "vrf",
    "sr",
    "nexthop",
    "mptcp",
    "ioam",
    "stats",
    "help",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Object {
    Address,
    Route,
    Rule,
    Neighbour,
    Link,
}

impl Object {
    pub fn name(self) -> &'static str {
        match self {
            Object::Address => "addr",
            Object::Route => "route",
            Object::Rule => "rule",
            Object::Neighbour => "neigh",
            Object::Link => "link",
        }
    }

    fn from_canonical(s: &str) -> Option<Self> {
        Some(match s {
            "address" | "addr" => Object::Address,
            "route" => Object::Route,
            "rule" => Object::Rule,
            "neighbor" | "neighbour" | "neigh" => Object::Neighbour,
            "link" => Object::Link,
            _ => return None,
        })
    }

    /// Every verb ip knows for the object: (spelling, canonical name). Synonyms share a
    /// canonical name (`show`/`list`/`lst`; for links `change` is `set`).
    fn verbs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Object::Route => &[
                ("add", "add"),
                ("change", "change"),
                ("chg", "change"),
                ("replace", "replace"),
                ("prepend", "prepend"),
                ("append", "append"),
                ("test", "test"),
                ("delete", "del"),
                ("list", "show"),
                ("show", "show"),
                ("lst", "show"),
                ("get", "get"),
                ("flush", "flush"),
                ("save", "save"),
                ("restore", "restore"),
                ("showdump", "showdump"),
                ("help", "help"),
            ],
            Object::Address => &[
                ("add", "add"),
                ("change", "change"),
                ("chg", "change"),
                ("replace", "replace"),
                ("delete", "del"),
                ("list", "show"),
                ("show", "show"),
                ("lst", "show"),
                ("flush", "flush"),
                ("save", "save"),
                ("restore", "restore"),
                ("showdump", "showdump"),
                ("help", "help"),
            ],
            Object::Link => &[
                ("add", "add"),
                ("set", "set"),
                ("change", "set"),
                ("replace", "replace"),
                ("delete", "del"),
                ("show", "show"),
                ("list", "show"),
                ("lst", "show"),
                ("xstats", "xstats"),
                ("afstats", "afstats"),
                ("property", "property"),
                ("help", "help"),
            ],
            Object::Neighbour => &[
                ("add", "add"),
                ("change", "change"),
                ("chg", "change"),
                ("replace", "replace"),
                ("delete", "del"),
                ("show", "show"),
                ("list", "show"),
                ("lst", "show"),
                ("flush", "flush"),
                ("get", "get"),
                ("help", "help"),
            ],
            Object::Rule => &[
                ("add", "add"),
                ("delete", "del"),
                ("list", "show"),
                ("show", "show"),
                ("lst", "show"),
                ("flush", "flush"),
                ("save", "save"),
                ("restore", "restore"),
                ("help", "help"),
            ],
        }
    }

    /// Verbs that only read state: allowed by the default policy.
    fn read_only(self) -> &'static [&'static str] {
        match self {
            Object::Route => &["show", "get", "save", "showdump"],
            Object::Address => &["show", "save", "showdump"],
            Object::Link => &["show", "xstats", "afstats"],
            Object::Neighbour => &["show", "get"],
            Object::Rule => &["show", "save"],
        }
    }

    /// Verbs an operator may add to the policy. Everything else (creating or deleting links,
    /// `restore` from stdin, `property`) stays refused whatever the config says.
    fn allowable(self) -> &'static [&'static str] {
        match self {
            Object::Route => &[
                "add", "change", "replace", "prepend", "append", "del", "flush",
            ],
            Object::Address => &["add", "change", "replace", "del", "flush"],
            Object::Link => &["set"],
            Object::Neighbour => &["add", "change", "replace", "del", "flush"],
            Object::Rule => &["add", "del", "flush"],
        }
    }
}

/// An (object, canonical verb) pair such as `route add`.
pub type Action = (Object, &'static str);

/// The part of the policy that judges one argv.
#[derive(Debug, Clone)]
pub struct VerbPolicy {
    allowed: BTreeSet<Action>,
}

impl Default for VerbPolicy {
    /// Read-only: `show`/`list`/`get` (and the dump forms) of route, addr, link, neigh, rule.
    fn default() -> Self {
        let mut allowed = BTreeSet::new();
        for o in [
            Object::Address,
            Object::Route,
            Object::Rule,
            Object::Neighbour,
            Object::Link,
        ] {
            for v in o.read_only() {
                allowed.insert((o, *v));
            }
        }
        VerbPolicy { allowed }
    }
}

impl VerbPolicy {
    /// The default plus the operator's `allow` entries (`"route add"`, `"link set"`, …).
    pub fn with_allow(entries: &[String]) -> Result<Self, String> {
        let mut p = VerbPolicy::default();
        for e in entries {
            let words: Vec<&str> = e.split_whitespace().collect();
            let [obj, verb] = words[..] else {
                return Err(format!(
                    "policy allow entry {e:?}: expected \"OBJECT VERB\", e.g. \"route add\""
                ));
            };
            let o = Object::from_canonical(obj).ok_or_else(|| {
                format!(
                    "policy allow entry {e:?}: object {obj:?} can not be allowed (route, addr, link, neigh, rule)"
                )
            })?;
            let canonical = o
                .verbs()
                .iter()
                .find(|(s, c)| *s == verb || *c == verb)
                .map(|(_, c)| *c)
                .ok_or_else(|| format!("policy allow entry {e:?}: unknown verb {verb:?}"))?;
            if !o.allowable().contains(&canonical) && !o.read_only().contains(&canonical) {
                return Err(format!(
                    "policy allow entry {e:?}: \"{} {canonical}\" can never be allowed",
                    o.name()
                ));
            }
            p.allowed.insert((o, canonical));
        }
        Ok(p)
    }

    pub fn allows(&self, a: Action) -> bool {
        self.allowed.contains(&a)
    }

    /// Judges a split, token-substituted argv. `Ok` is the action, e.g. `route add`.
    pub fn check(&self, argv: &[String]) -> Result<Action, String> {
        let Some(first) = argv.first() else {
            return Err("empty command".into());
        };
        if first != "ip" {
            return Err(if first.contains('/') {
                format!(
                    "{first:?} refused: write the bare name `ip`; the plugin runs its own configured ip binary"
                )
            } else {
                format!("only `ip` commands are run, not {first:?}")
            });
        }
        // Words that must never appear anywhere, whatever position ip gives them.
        for w in &argv[1..] {
            if w == "netns" || w == "exec" {
                return Err(format!(
                    "{w:?} refused: commands run only in the pod's own network namespace"
                ));
            }
            if w.starts_with('-') {
                let n = normalize_option(w);
                if let Some((name, why)) = forbidden_option(n) {
                    return Err(format!("option {w} ({name}) refused: it {why}"));
                }
            }
        }
        let mut i = 1;
        while let Some(w) = argv.get(i).filter(|w| w.starts_with('-')) {
            let n = normalize_option(w);
            if n == "-family" {
                let fam = argv.get(i + 1).map(String::as_str).unwrap_or("");
                if !FAMILIES.contains(&fam) {
                    return Err(format!("-family {fam:?}: expected one of {FAMILIES:?}"));
                }
                i += 2;
                continue;
            }
            if !ALLOWED_OPTIONS.contains(&n) {
                return Err(format!("option {w} is not allowed"));
            }
            i += 1;
        }
        let Some(obj_word) = argv.get(i) else {
            return Err("no object: expected e.g. `ip route`".into());
        };
        if obj_word.is_empty() {
            return Err("empty object".into());
        }
        if "netns".starts_with(obj_word.as_str()) {
            return Err(format!(
                "object {obj_word:?} refused: it can mean `netns`, which leaves the pod's namespace"
            ));
        }
        let resolved = OBJECTS
            .iter()
            .find(|o| o.starts_with(obj_word.as_str()))
            .ok_or_else(|| format!("unknown object {obj_word:?}"))?;
        let obj = Object::from_canonical(resolved)
            .ok_or_else(|| format!("object `{resolved}` is not allowed"))?;
        let rest = &argv[i + 1..];
        let verb = match rest.first() {
            None => "show",
            Some(v) => self.resolve_verb(obj, v)?,
        };
        if !self.allows((obj, verb)) {
            return Err(format!(
                "`{} {verb}` is not allowed by the policy (allow it with \"{} {verb}\" in policy.allow)",
                obj.name(),
                obj.name()
            ));
        }
        let args = rest.get(1..).unwrap_or(&[]);
        if obj == Object::Route
            && let Some(w) = args
                .iter()
                .find(|w| w.len() >= 2 && "encap".starts_with(w.as_str()))
        {
            return Err(format!(
                "route argument {w:?} (encap) refused: encapsulations can load BPF objects from files"
            ));
        }
        if (obj, verb) == (Object::Link, "set") {
            check_link_set(args)?;
        }
        Ok((obj, verb))
    }

    /// A verb word to its canonical verb. An abbreviation that could mean several verbs is
    /// accepted only when every one of them is read-only and allowed, so whichever `ip` picks
    /// is harmless.
    fn resolve_verb(&self, obj: Object, word: &str) -> Result<&'static str, String> {
        if word.is_empty() {
            return Err("empty verb".into());
        }
        if let Some((_, c)) = obj.verbs().iter().find(|(s, _)| *s == word) {
            return Ok(c);
        }
        let mut cands: Vec<&'static str> = obj
            .verbs()
            .iter()
            .filter(|(s, _)| s.starts_with(word))
            .map(|(_, c)| *c)
            .collect();
        cands.dedup();
        let mut uniq = cands.clone();
        uniq.sort();
        uniq.dedup();
        match uniq.len() {
            0 => Err(format!("unknown verb {word:?} for `ip {}`", obj.name())),
            1 => Ok(uniq[0]),
            _ => {
                let all_harmless = uniq
                    .iter()
                    .all(|v| obj.read_only().contains(v) && self.allows((obj, v)));
                if all_harmless {
                    Ok(cands[0])
                } else {
                    Err(format!(
                        "abbreviation {word:?} is ambiguous for `ip {}` ({}): spell the verb out",
                        obj.name(),
                        uniq.join(", ")
                    ))
                }
            }
        }
    }
}

/// `ip` treats `--json` like `-json`.
fn normalize_option(w: &str) -> &str {
    if w.starts_with("--") { &w[1..] } else { w }
}

fn forbidden_option(n: &str) -> Option<(&'static str, &'static str)> {
    if n.len() < 2 {
        return None;
    }
    FORBIDDEN_OPTIONS
        .iter()
        .find(|(name, _)| name.starts_with(n))
        .copied()
}

/// `ip link set [dev] NAME` followed only by `up`, `down` or `mtu N`.
fn check_link_set(args: &[String]) -> Result<(), String> {
    const LIMIT: &str = "`link set` is limited to `[dev] NAME` with `up`, `down` and `mtu N`";
    let mut it = args.iter().map(String::as_str).peekable();
    if it.peek() == Some(&"dev") {
        it.next();
    }
    match it.next() {
        Some(name) if !name.is_empty() && !matches!(name, "up" | "down" | "mtu") => {}
        _ => return Err(format!("{LIMIT}: no device name")),
    }
    let mut any = false;
    while let Some(w) = it.next() {
        match w {
            "up" | "down" => any = true,
            "mtu" => match it.next() {
                Some(n)
                    if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && n.len() <= 6 =>
                {
                    any = true
                }
                other => return Err(format!("{LIMIT}: bad mtu {other:?}")),
            },
            other => return Err(format!("{LIMIT}: {other:?} refused")),
        }
    }
    if !any {
        return Err(format!("{LIMIT}: nothing to set"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }
    fn default_check(s: &str) -> Result<Action, String> {
        VerbPolicy::default().check(&argv(s))
    }
    fn wide() -> VerbPolicy {
        VerbPolicy::with_allow(&[
            "route add".into(),
            "route del".into(),
            "route replace".into(),
            "addr add".into(),
            "link set".into(),
        ])
        .unwrap()
    }

    #[test]
    fn default_policy_is_read_only() {
        for ok in [
            "ip route",
            "ip r",
            "ip route show",
            "ip r s",
            "ip ro li",
            "ip route get 10.0.0.1",
            "ip addr",
            "ip a",
            "ip a s",
            "ip -j addr show",
            "ip --json -p link",
            "ip -4 -o addr",
            "ip -family inet6 route",
            "ip link show",
            "ip neigh show",
            "ip neighbour",
            "ip rule show",
            "ip rule",
            "ip -s -d link show dev eth0",
        ] {
            assert!(default_check(ok).is_ok(), "{ok}: {:?}", default_check(ok));
        }
        for bad in [
            "ip route add 1.2.3.0/24 dev eth0",
            "ip addr add 1.2.3.4/24 dev eth0",
            "ip link set eth0 down",
            "ip route flush table main",
            "ip neigh add 1.2.3.4 lladdr 00:11:22:33:44:55 dev eth0",
        ] {
            let e = default_check(bad).unwrap_err();
            assert!(e.contains("not allowed by the policy"), "{bad}: {e}");
        }
    }

    #[test]
    fn namespace_and_batch_escapes_are_refused_in_every_spelling() {
        for (cmd, want) in [
            ("ip -n other route", "network namespace"),
            ("ip -ne other route", "network namespace"),
            ("ip -net other route", "network namespace"),
            ("ip -netns other route", "network namespace"),
            ("ip --netns other route", "network namespace"),
            ("ip netns exec x ip route", "pod's own"),
            ("ip net", "netns"),
            ("ip n", "netns"),
            ("ip ne show", "netns"),
            ("ip -b /etc/shadow", "file"),
            ("ip -batch -", "file"),
            ("ip -ba x", "file"),
            ("ip -force -batch x", "batch"),
            ("ip -fo route", "batch"),
            ("ip -a netns exec ip route", "every network namespace"),
            ("ip -all route", "every network namespace"),
            ("ip route show -n x", "network namespace"),
            ("ip link set eth0 netns 1", "pod's own"),
            ("ip -f inet route", "-force"),
        ] {
            let e = wide().check(&argv(cmd)).unwrap_err();
            assert!(e.contains(want), "{cmd}: {e}");
        }
    }

    #[test]
    fn only_bare_ip() {
        assert!(
            default_check("/bin/ip route")
                .unwrap_err()
                .contains("bare name")
        );
        assert!(
            default_check("ipx route")
                .unwrap_err()
                .contains("only `ip`")
        );
        assert!(default_check("sh -c id").unwrap_err().contains("only `ip`"));
        assert!(default_check("ip").unwrap_err().contains("no object"));
        assert!(default_check("ip -j").unwrap_err().contains("no object"));
        assert!(
            default_check("ip -r route")
                .unwrap_err()
                .contains("not allowed")
        );
        assert!(
            default_check("ip -N route")
                .unwrap_err()
                .contains("not allowed")
        );
        assert!(
            default_check("ip xfrm state")
                .unwrap_err()
                .contains("not allowed")
        );
        assert!(
            default_check("ip monitor")
                .unwrap_err()
                .contains("not allowed")
        );
        assert!(
            default_check("ip bogus")
                .unwrap_err()
                .contains("unknown object")
        );
        assert!(
            default_check("ip route frob")
                .unwrap_err()
                .contains("unknown verb")
        );
    }

    #[test]
    fn operator_allowed_verbs() {
        let p = wide();
        assert_eq!(
            p.check(&argv("ip route add 192.0.3.0/24 dev eth0"))
                .unwrap(),
            (Object::Route, "add")
        );
        assert_eq!(
            p.check(&argv("ip ro del 1.0.0.0/8")).unwrap(),
            (Object::Route, "del")
        );
        assert_eq!(
            p.check(&argv("ip link set dev eth0 mtu 1400 up")).unwrap(),
            (Object::Link, "set")
        );
        assert_eq!(
            p.check(&argv("ip link change eth0 down")).unwrap(),
            (Object::Link, "set")
        );
        // change/chg on routes is a different verb and was not allowed.
        assert!(
            p.check(&argv("ip route change 1.0.0.0/8 dev eth0"))
                .is_err()
        );
        // `ip r a` could be add or append: append was not allowed.
        assert!(
            p.check(&argv("ip r a 1.0.0.0/8 dev eth0"))
                .unwrap_err()
                .contains("ambiguous")
        );
        // `ip l s` could be show or set: set is not read-only.
        assert!(
            p.check(&argv("ip l s eth0 up"))
                .unwrap_err()
                .contains("ambiguous")
        );
    }

    #[test]
    fn link_set_is_limited() {
        let p = wide();
        for bad in [
            "ip link set eth0 address 00:11:22:33:44:55",
            "ip link set eth0 name evil",
            "ip link set eth0 xdp obj /tmp/x.o",
            "ip link set eth0 mtu",
            "ip link set eth0 mtu 1e3",
            "ip link set eth0",
            "ip link set up",
            "ip link set eth0 promisc on",
        ] {
            assert!(
                p.check(&argv(bad)).unwrap_err().contains("limited"),
                "{bad}"
            );
        }
    }

    #[test]
    fn route_encap_is_refused() {
        let p = wide();
        let e = p
            .check(&argv(
                "ip route add 1.0.0.0/8 encap bpf in obj /tmp/x.o dev eth0",
            ))
            .unwrap_err();
        assert!(e.contains("encap"), "{e}");
        assert!(
            p.check(&argv("ip route add 1.0.0.0/8 en bpf dev eth0"))
                .is_err()
        );
    }

    #[test]
    fn allow_entries_are_validated() {
        assert!(VerbPolicy::with_allow(&["netns exec".into()]).is_err());
        assert!(
            VerbPolicy::with_allow(&["link add".into()])
                .unwrap_err()
                .contains("never")
        );
        assert!(VerbPolicy::with_allow(&["link delete".into()]).is_err());
        assert!(VerbPolicy::with_allow(&["route restore".into()]).is_err());
        assert!(VerbPolicy::with_allow(&["route".into()]).is_err());
        assert!(VerbPolicy::with_allow(&["route frob".into()]).is_err());
        let p = VerbPolicy::with_allow(&["route delete".into(), "neighbour add".into()]).unwrap();
        assert!(p.allows((Object::Route, "del")));
        assert!(p.allows((Object::Neighbour, "add")));
    }
}
