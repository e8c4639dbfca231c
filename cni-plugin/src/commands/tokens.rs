//! Tokens a command may use instead of values only known at ADD time: the interface the
//! previous plugin made in this sandbox and its addresses.
//!
//! A token is a whole run of `[A-Z0-9_]` that starts with a letter and contains `_`
//! (`CURRENT_INTERFACE`, `POD_IPV4/32` → run `POD_IPV4`). A run of that shape that is not a known
//! token is refused rather than passed to ip as text, so a typo never turns into a wrong route.

use std::collections::BTreeMap;

use serde_json::Value;

pub const KNOWN: &[&str] = &[
    "CURRENT_INTERFACE",
    "CNI_IFNAME",
    "POD_IPV4",
    "POD_IPV4_CIDR",
    "POD_IPV6",
    "POD_IPV6_CIDR",
    "GATEWAY_IPV4",
    "GATEWAY_IPV6",
];

/// Each known token's value, or why it has none in this invocation.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    values: BTreeMap<&'static str, Result<String, String>>,
}

impl Tokens {
    /// Values from prevResult. CURRENT_INTERFACE follows chainsaw: the prevResult interface whose
    /// `sandbox` is this CNI_NETNS (the one named CNI_IFNAME if several are), else CNI_IFNAME.
    /// Addresses are the first of each family on that interface (or with no interface index).
    pub fn from_result(prev: Option<&Value>, netns: &str, ifname: &str) -> Self {
        let empty = Vec::new();
        let ifaces = prev
            .and_then(|p| p.get("interfaces"))
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        let in_sandbox: Vec<(usize, &str)> = ifaces
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                !netns.is_empty() && i.get("sandbox").and_then(Value::as_str) == Some(netns)
            })
            .filter_map(|(n, i)| Some((n, i.get("name")?.as_str()?)))
            .collect();
        let current = in_sandbox
            .iter()
            .find(|(_, name)| *name == ifname)
            .or(in_sandbox.first())
            .copied();
        let (cur_idx, cur_name) = match current {
            Some((i, n)) => (Some(i), n.to_string()),
            None => (None, ifname.to_string()),
        };
        let mut values = BTreeMap::new();
        values.insert("CURRENT_INTERFACE", checked(cur_name));
        values.insert("CNI_IFNAME", checked(ifname.to_string()));
        let ips = prev
            .and_then(|p| p.get("ips"))
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        for (v6, addr_tok, cidr_tok, gw_tok, fam) in [
            (false, "POD_IPV4", "POD_IPV4_CIDR", "GATEWAY_IPV4", "IPv4"),
            (true, "POD_IPV6", "POD_IPV6_CIDR", "GATEWAY_IPV6", "IPv6"),
        ] {
            let ip = ips.iter().find(|ip| {
                let is_v6 = ip
                    .get("address")
                    .and_then(Value::as_str)
                    .is_some_and(|a| a.contains(':'));
                let iface = ip.get("interface").and_then(Value::as_u64);
                is_v6 == v6
                    && (iface.is_none() || cur_idx.is_none() || iface == cur_idx.map(|i| i as u64))
            });
            let missing = || Err(format!("prevResult has no {fam} address"));
            let cidr = ip.and_then(|ip| ip.get("address")?.as_str());
            values.insert(
                cidr_tok,
                cidr.map(|c| checked(c.to_string())).unwrap_or_else(missing),
            );
            values.insert(
                addr_tok,
                cidr.map(|c| checked(c.split('/').next().unwrap_or(c).to_string()))
                    .unwrap_or_else(missing),
            );
            values.insert(
                gw_tok,
                ip.and_then(|ip| ip.get("gateway")?.as_str())
                    .map(|g| checked(g.to_string()))
                    .unwrap_or_else(|| Err(format!("prevResult has no {fam} gateway"))),
            );
        }
        Tokens { values }
    }

    /// Replaces tokens in every word. `Err` names an unknown token or one without a value.
    pub fn substitute(&self, argv: &[String]) -> Result<Vec<String>, String> {
        argv.iter().map(|w| self.substitute_word(w)).collect()
    }

    fn substitute_word(&self, w: &str) -> Result<String, String> {
        let b = w.as_bytes();
        let mut out = String::with_capacity(w.len());
        let mut i = 0;
        while i < b.len() {
            let run_char = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_';
            if b[i].is_ascii_uppercase() && (i == 0 || !run_char(b[i - 1])) {
                let end = (i..b.len()).find(|&j| !run_char(b[j])).unwrap_or(b.len());
                let run = &w[i..end];
                if run.contains('_') {
                    match self.values.get(run) {
                        Some(Ok(v)) => out.push_str(v),
                        Some(Err(why)) => return Err(format!("token {run} has no value: {why}")),
                        None => {
                            return Err(format!(
                                "unknown token {run} (known: {})",
                                KNOWN.join(", ")
                            ));
                        }
                    }
                } else {
                    out.push_str(run);
                }
                i = end;
            } else {
                out.push(b[i] as char);
                i += 1;
            }
        }
        Ok(out)
    }
}

/// Values come from prevResult, which the previous plugin wrote; they still must look like
/// interface names or addresses before they become ip arguments.
fn checked(v: String) -> Result<String, String> {
    let ok = !v.is_empty()
        && !v.starts_with('-')
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:/-_@%".contains(&b));
    if ok {
        Ok(v)
    } else {
        Err(format!(
            "value {v:?} from prevResult is not a plain name or address"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prev() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "vethabc", "mac": "aa:bb:cc:dd:ee:fe"},
                {"name": "net1", "mac": "aa:bb:cc:dd:ee:fd", "sandbox": "/run/netns/p"}
            ],
            "ips": [
                {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 2},
                {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 2}
            ]
        })
    }
    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn current_interface_is_the_sandbox_one() {
        let t = Tokens::from_result(Some(&prev()), "/run/netns/p", "eth0");
        assert_eq!(
            t.substitute(&words("ip route add 192.0.3.0/24 dev CURRENT_INTERFACE"))
                .unwrap(),
            words("ip route add 192.0.3.0/24 dev net1")
        );
        // No interface in this sandbox: fall back to CNI_IFNAME.
        let t = Tokens::from_result(Some(&prev()), "/run/netns/other", "eth0");
        assert_eq!(
            t.substitute(&words("dev CURRENT_INTERFACE")).unwrap(),
            words("dev eth0")
        );
        let t = Tokens::from_result(None, "/run/netns/p", "eth0");
        assert_eq!(
            t.substitute(&words("CURRENT_INTERFACE")).unwrap(),
            words("eth0")
        );
    }

    #[test]
    fn addresses_and_gateways() {
        let t = Tokens::from_result(Some(&prev()), "/run/netns/p", "net1");
        let got = t
            .substitute(&words("POD_IPV4 POD_IPV4/32 POD_IPV4_CIDR GATEWAY_IPV4 POD_IPV6 GATEWAY_IPV6 POD_IPV6_CIDR CNI_IFNAME"))
            .unwrap();
        assert_eq!(
            got,
            words("10.1.0.5 10.1.0.5/32 10.1.0.5/24 10.1.0.1 fd00::5 fd00::1 fd00::5/64 net1")
        );
    }

    #[test]
    fn unknown_and_empty_tokens_are_refused() {
        let t = Tokens::from_result(Some(&json!({"ips": []})), "/x", "eth0");
        assert!(
            t.substitute(&words("POD_IPV5"))
                .unwrap_err()
                .contains("unknown token POD_IPV5")
        );
        assert!(t.substitute(&words("xCURRENT_INTERFACEx")).is_ok());
        assert!(
            t.substitute(&words("CURRENT_INTERFACEX"))
                .unwrap_err()
                .contains("unknown")
        );
        assert!(
            t.substitute(&words("POD_IPV4"))
                .unwrap_err()
                .contains("no IPv4")
        );
        // Words without an underscore run are left alone (ip keywords, hex, device names).
        assert_eq!(
            t.substitute(&words("FE80::1 Eth0 ABC")).unwrap(),
            words("FE80::1 Eth0 ABC")
        );
    }

    #[test]
    fn hostile_values_from_prev_result_are_not_used() {
        let p = json!({"interfaces":[{"name":"-n","sandbox":"/x"}]});
        let t = Tokens::from_result(Some(&p), "/x", "eth0");
        assert!(
            t.substitute(&words("CURRENT_INTERFACE"))
                .unwrap_err()
                .contains("not a plain")
        );
    }
}
