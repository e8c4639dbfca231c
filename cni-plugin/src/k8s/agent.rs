//! The agent's local socket: one JSON request line, one JSON reply line.
//!
//! Request: `{"op":"pod","namespace":NS,"name":NAME}` or `{"op":"namespace","name":NAME}`.
//! Reply: the object as the API server returns it, or `{"error":"…"}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// Replies larger than this are refused (a pod object is a few KiB).
const MAX_REPLY: u64 = 4 << 20;

pub enum Request<'a> {
    Pod { namespace: &'a str, name: &'a str },
    Namespace { name: &'a str },
}

impl Request<'_> {
    fn to_json(&self) -> Value {
        match self {
            Request::Pod { namespace, name } => {
                json!({"op": "pod", "namespace": namespace, "name": name})
            }
            Request::Namespace { name } => json!({"op": "namespace", "name": name}),
        }
    }

    /// The API server path of the same object; names are checked first.
    pub fn api_path(&self) -> Result<String, String> {
        let check = |n: &str| {
            if super::valid_name(n) {
                Ok(())
            } else {
                Err(format!("{n:?} is not a valid Kubernetes name"))
            }
        };
        match self {
            Request::Pod { namespace, name } => {
                check(namespace)?;
                check(name)?;
                Ok(format!("/api/v1/namespaces/{namespace}/pods/{name}"))
            }
            Request::Namespace { name } => {
                check(name)?;
                Ok(format!("/api/v1/namespaces/{name}"))
            }
        }
    }
}

pub fn ask(socket: &Path, req: &Request<'_>, timeout: Duration) -> Result<Value, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect {socket:?}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut line = req.to_json().to_string();
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = Vec::new();
    BufReader::new(s.take(MAX_REPLY))
        .read_until(b'\n', &mut reply)
        .map_err(|e| format!("read: {e}"))?;
    if !reply.ends_with(b"\n") {
        return Err("reply was cut short or too large".into());
    }
    let v: Value = serde_json::from_slice(&reply).map_err(|e| format!("reply is not JSON: {e}"))?;
    if let Some(e) = v.get("error") {
        return Err(match e.as_str() {
            Some(s) => s.to_string(),
            None => e.to_string(),
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("cniscope-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("a.sock");
        let _ = std::fs::remove_file(&sock);
        let l = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            for reply in [
                "{\"metadata\":{\"name\":\"p\"}}\n",
                "{\"error\":\"not found\"}\n",
                "{\"metadata\":", // cut short
            ] {
                let (mut c, _) = l.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&mut c).read_line(&mut line).unwrap();
                assert!(line.contains("\"op\":\"pod\""), "{line}");
                c.write_all(reply.as_bytes()).unwrap();
            }
        });
        let req = Request::Pod {
            namespace: "ns",
            name: "p",
        };
        let to = Duration::from_secs(2);
        assert_eq!(ask(&sock, &req, to).unwrap()["metadata"]["name"], "p");
        assert_eq!(ask(&sock, &req, to).unwrap_err(), "not found");
        assert!(ask(&sock, &req, to).unwrap_err().contains("cut short"));
        t.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn paths_reject_injection() {
        assert!(
            Request::Pod {
                namespace: "a/../b",
                name: "p"
            }
            .api_path()
            .is_err()
        );
        assert_eq!(
            Request::Namespace { name: "lab" }.api_path().unwrap(),
            "/api/v1/namespaces/lab"
        );
    }
}
