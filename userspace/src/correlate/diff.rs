//! What a plugin changed in the result it was handed: its prevResult against the result it
//! printed, by the parts of a CNI result people look for.

use std::borrow::Cow;

use serde::Serialize;

use super::json::Json;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Side {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
}

impl Side {
    fn is_empty(&self) -> bool {
        self.interfaces.is_empty()
            && self.ips.is_empty()
            && self.routes.is_empty()
            && self.dns.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResultDiff {
    #[serde(skip_serializing_if = "Side::is_empty")]
    pub added: Side,
    #[serde(skip_serializing_if = "Side::is_empty")]
    pub removed: Side,
    /// The result is the prevResult, unchanged (what a pass-through chained plugin returns).
    pub unchanged: bool,
}

/// A side's items, sorted and without duplicates; borrowed from the parsed result unless an
/// item had to be composed (`eth0 (in /run/netns/x)`).
type Set<'v> = Vec<Cow<'v, str>>;

fn set(mut v: Set<'_>) -> Set<'_> {
    v.sort_unstable();
    v.dedup();
    v
}

fn items<'v>(v: Option<&'v Json<'_>>) -> [Set<'v>; 4] {
    fn arr<'v, 'a>(v: Option<&'v Json<'a>>, k: &str) -> &'v [Json<'a>] {
        v.and_then(|v| v.get(k))
            .and_then(Json::as_array)
            .unwrap_or(&[])
    }
    fn s<'v>(v: &'v Json<'_>, k: &str) -> &'v str {
        v.get(k).and_then(Json::as_str).unwrap_or("")
    }
    // `a`, or `a<sep>b` when `b` is there.
    fn pair<'v>(a: &'v str, sep: &str, b: &str, close: &str) -> Cow<'v, str> {
        if b.is_empty() {
            Cow::Borrowed(a)
        } else {
            let mut s = String::with_capacity(a.len() + sep.len() + b.len() + close.len());
            for part in [a, sep, b, close] {
                s.push_str(part);
            }
            Cow::Owned(s)
        }
    }
    let interfaces = arr(v, "interfaces")
        .iter()
        .map(|i| pair(s(i, "name"), " (in ", s(i, "sandbox"), ")"))
        .collect();
    let ips = arr(v, "ips")
        .iter()
        .map(|i| pair(s(i, "address"), " gw ", s(i, "gateway"), ""))
        .collect();
    let routes = arr(v, "routes")
        .iter()
        .map(|r| pair(s(r, "dst"), " via ", s(r, "gw"), ""))
        .collect();
    let dns = v
        .and_then(|v| v.get("dns"))
        .and_then(|d| d.get("nameservers"))
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Json::as_str)
                .map(Cow::Borrowed)
                .collect()
        })
        .unwrap_or_default();
    [set(interfaces), set(ips), set(routes), set(dns)]
}

/// Compares `prev` (the prevResult the plugin read, if any) with `result` (what it printed).
pub fn diff(prev: Option<&Json<'_>>, result: Option<&Json<'_>>) -> ResultDiff {
    let [pi, pa, pr, pd] = items(prev);
    let [ri, ra, rr, rd] = items(result);
    // What `a` has and `b` has not, in order.
    let d = |a: &Set, b: &Set| {
        a.iter()
            .filter(|x| b.binary_search(x).is_err())
            .map(|x| x.to_string())
            .collect()
    };
    let unchanged = match (prev, result) {
        // Equal but for `cniVersion` (a plugin may print the result in another version).
        (Some(p), Some(r)) => p.same_except(r, "cniVersion"),
        _ => false,
    };
    ResultDiff {
        added: Side {
            interfaces: d(&ri, &pi),
            ips: d(&ra, &pa),
            routes: d(&rr, &pr),
            dns: d(&rd, &pd),
        },
        removed: Side {
            interfaces: d(&pi, &ri),
            ips: d(&pa, &ra),
            routes: d(&pr, &rr),
            dns: d(&pd, &rd),
        },
        unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(text: &str) -> Json<'_> {
        Json::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn bridge_adds_interfaces_ips_and_routes() {
        let text = r#"{"cniVersion":"1.0.0",
            "interfaces":[{"name":"cni0"},{"name":"veth1"},{"name":"eth0","sandbox":"/run/netns/p"}],
            "ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1","interface":2}],
            "routes":[{"dst":"0.0.0.0/0"}], "dns":{}}"#;
        let r = j(text);
        let d = diff(None, Some(&r));
        assert_eq!(
            d.added.interfaces,
            ["cni0", "eth0 (in /run/netns/p)", "veth1"]
        );
        assert_eq!(d.added.ips, ["10.1.0.5/24 gw 10.1.0.1"]);
        assert_eq!(d.added.routes, ["0.0.0.0/0"]);
        assert!(!d.unchanged);
        let same = diff(Some(&r), Some(&r));
        assert!(same.unchanged && same.added == Side::default());
        // Printed in another version, members reordered: still the same result.
        let other_version = text.replace("1.0.0", "0.4.0").replace(r#", "dns":{}"#, "");
        let other_version = format!(r#"{{"dns":{{}},{}"#, &other_version[1..]);
        assert!(diff(Some(&r), Some(&j(&other_version))).unchanged);
        let r2 = text.replace(
            r#""routes":[{"dst":"0.0.0.0/0"}]"#,
            r#""routes":[{"dst":"0.0.0.0/0"},{"dst":"192.0.3.0/24","gw":"10.1.0.1"}]"#,
        );
        let d2 = diff(Some(&r), Some(&j(&r2)));
        assert_eq!(d2.added.routes, ["192.0.3.0/24 via 10.1.0.1"]);
        assert!(!d2.unchanged);
    }
}
