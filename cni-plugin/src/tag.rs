//! The netns tag: what this plugin knows about a network namespace, for the cniscope agent.
//!
//! One JSON file per namespace, `<tagDir>/<netns inode>.json`, written atomically (temp file in
//! the same directory, then rename) under an flock on the directory, so the agent never reads a
//! half-written tag and two attachments of one pod (`eth0`, `net1`) do not lose each other's
//! entries. A file, not a socket: ADD never waits for, or fails because of, the agent.
//!
//! ```json
//! {"netns_inode": 4026532481, "netns_dev": 4, "attachments": [ {
//!    "container_id": "…", "ifname": "eth0", "network": "…", "cni_version": "1.0.0",
//!    "netns_path": "/run/netns/…", "pod": {"namespace": "…", "name": "…", "uid": "…"},
//!    "time": "2026-11-23T08:12:03.514Z", "source": "annotation k8s.v1.cni.cncf.io/chainsaw",
//!    "on_error": "passthrough", "problem": null,
//!    "commands": [ {"command": "ip route", "argv": ["ip","route"], "action": "route show",
//!                   "outcome": "ran", "exit_code": 0, "stdout": "…", "stderr": "",
//!                   "duration_ms": 1.9} ] } ] }
//! ```

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

pub fn path_for(dir: &Path, inode: u64) -> PathBuf {
    dir.join(format!("{inode}.json"))
}

/// Holds an exclusive flock on the tag directory while alive.
struct DirLock {
    _file: File,
}

impl DirLock {
    fn take(dir: &Path) -> std::io::Result<Self> {
        let f = File::open(dir)?;
        // SAFETY: flock on an fd we own; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(DirLock { _file: f })
    }
}

fn attachment_key(a: &Value) -> (Option<&str>, Option<&str>) {
    (
        a.get("container_id").and_then(Value::as_str),
        a.get("ifname").and_then(Value::as_str),
    )
}

/// Adds or replaces this attachment's entry in the namespace's tag.
pub fn write(dir: &Path, inode: u64, dev: u64, attachment: Value) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let _lock = DirLock::take(dir)?;
    let path = path_for(dir, inode);
    let mut attachments: Vec<Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("attachments")?.as_array().cloned())
        .unwrap_or_default();
    let key = attachment_key(&attachment);
    let key = (key.0.map(String::from), key.1.map(String::from));
    attachments.retain(|a| {
        let k = attachment_key(a);
        (k.0.map(String::from), k.1.map(String::from)) != key
    });
    attachments.push(attachment);
    let doc = json!({"netns_inode": inode, "netns_dev": dev, "attachments": attachments});
    write_atomic(&path, &serde_json::to_vec_pretty(&doc).unwrap_or_default())?;
    Ok(path)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Removes this attachment's entry; the file goes when no entry is left. With no inode (the
/// netns is already gone on DEL) every tag in the directory is searched. Missing files,
/// directories and entries are fine: DEL must not fail because state is gone.
pub fn remove(dir: &Path, inode: Option<u64>, container_id: &str, ifname: &str) -> usize {
    remove_where(dir, inode, |a| {
        attachment_key(a) == (Some(container_id), Some(ifname))
    })
}

/// GC: drops every entry of `network` whose (container id, ifname) is not in `valid`.
pub fn gc(dir: &Path, network: &str, valid: &[(String, String)]) -> usize {
    remove_where(dir, None, |a| {
        let (c, i) = attachment_key(a);
        a.get("network").and_then(Value::as_str) == Some(network)
            && !valid
                .iter()
                .any(|(vc, vi)| Some(vc.as_str()) == c && Some(vi.as_str()) == i)
    })
}

fn remove_where(dir: &Path, inode: Option<u64>, drop_it: impl Fn(&Value) -> bool) -> usize {
    let Ok(_lock) = DirLock::take(dir) else {
        return 0;
    };
    let files: Vec<PathBuf> = match inode {
        Some(i) => vec![path_for(dir, i)],
        None => std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut removed = 0;
    for f in files {
        let Some(mut doc) = std::fs::read(&f)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        else {
            continue;
        };
        let Some(list) = doc.get_mut("attachments").and_then(Value::as_array_mut) else {
            continue;
        };
        let before = list.len();
        list.retain(|a| !drop_it(a));
        let n = before - list.len();
        if n == 0 {
            continue;
        }
        removed += n;
        if list.is_empty() {
            let _ = std::fs::remove_file(&f);
        } else {
            let _ = write_atomic(&f, &serde_json::to_vec_pretty(&doc).unwrap_or_default());
        }
    }
    removed
}

/// RFC 3339 UTC with milliseconds, from the system clock.
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_millis())
}

fn rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_421_523, 514), "2026-11-23T08:12:03.514Z");
    }

    #[test]
    fn write_merge_remove() {
        let dir = std::env::temp_dir().join(format!("cniscope-tag-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = |c: &str, i: &str, n: &str| json!({"container_id": c, "ifname": i, "network": n});
        let p = write(&dir, 42, 4, a("c1", "eth0", "n")).unwrap();
        write(&dir, 42, 4, a("c1", "net1", "m")).unwrap();
        write(&dir, 42, 4, a("c1", "eth0", "n")).unwrap();
        let doc: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(doc["attachments"].as_array().unwrap().len(), 2);
        assert_eq!(doc["netns_inode"], 42);
        assert_eq!(remove(&dir, None, "c1", "eth0"), 1);
        assert_eq!(remove(&dir, Some(42), "c1", "eth0"), 0);
        assert_eq!(gc(&dir, "m", &[("c1".into(), "net1".into())]), 0);
        assert_eq!(gc(&dir, "m", &[]), 1);
        assert!(!p.exists());
        assert_eq!(remove(&dir.join("missing"), Some(1), "c", "i"), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
