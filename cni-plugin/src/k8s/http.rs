//! A minimal HTTP/1.1 GET: enough for one API server read, with bounded size and time, over
//! plain TCP (`http://`) or TLS (`https://`, see `tls`). One deadline covers everything: connect,
//! TLS handshake, request and response.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::tls;

/// Bodies larger than this are refused.
const MAX_RESPONSE: usize = 8 << 20;
/// Response headers larger than this are refused.
const MAX_HEAD: usize = 64 << 10;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A server URL as kubeconfigs give it: `http[s]://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    /// A name or an IP address; IPv6 without its brackets.
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing `/` (empty for none).
    pub prefix: String,
}

impl Url {
    /// The `Host` header: `host:port`, IPv6 in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

pub fn parse_url(url: &str) -> Result<Url, String> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else {
        return Err(format!(
            "{url:?}: only http:// and https:// servers are supported"
        ));
    };
    let (authority, prefix) = match rest.find(['/', '?', '#']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].trim_end_matches('/')),
        Some(_) => return Err(format!("{url:?}: a query or fragment is not supported")),
        None => (rest, ""),
    };
    if prefix.contains(['?', '#']) {
        return Err(format!("{url:?}: a query or fragment is not supported"));
    }
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?}: bad host"));
    }
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let (h, p) = h
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: bad IPv6 host"))?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(p))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), ""),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?}: bad host"));
    }
    let port = if port.is_empty() {
        match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    } else {
        port.parse().map_err(|_| format!("{url:?}: bad port"))?
    };
    Ok(Url {
        scheme,
        host,
        port,
        prefix: prefix.to_string(),
    })
}

/// A TCP stream whose every read and write gets only what is left of one deadline.
pub struct DeadlineStream {
    inner: TcpStream,
    deadline: Instant,
}

impl DeadlineStream {
    fn left(&self) -> io::Result<Duration> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.inner.set_read_timeout(Some(left))?;
        self.inner.read(buf)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.inner.set_write_timeout(Some(left))?;
        self.inner.write(buf)
    }
    /// rustls writes a record as several slices, and an alert after a failure in one call: the
    /// default (first slice only) would send a bare record header.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let left = self.left()?;
        self.inner.set_write_timeout(Some(left))?;
        self.inner.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// GET `path` from `url`'s server; `tls` is required for `https://` and unused for `http://`.
pub fn get(
    url: &Url,
    path: &str,
    headers: &[(&str, String)],
    timeout: Duration,
    tls: Option<&tls::Client>,
) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {}: {e}", url.host))?
        .next()
        .ok_or_else(|| format!("resolve {}: no address", url.host))?;
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("resolve {}: took the whole {timeout:?}", url.host))?;
    let inner =
        TcpStream::connect_timeout(&addr, left).map_err(|e| format!("connect {addr}: {e}"))?;
    let s = DeadlineStream { inner, deadline };
    let request = request(url, path, headers)?;
    match (url.scheme, tls) {
        (Scheme::Http, _) => exchange(s, &request, timeout),
        (Scheme::Https, Some(c)) => exchange(c.handshake(s, &addr, timeout)?, &request, timeout),
        (Scheme::Https, None) => Err("https:// server without a TLS configuration".into()),
    }
}

fn request(url: &Url, path: &str, headers: &[(&str, String)]) -> Result<String, String> {
    let mut req = format!(
        "GET {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: cniscope-cni\r\nConnection: close\r\n",
        url.prefix,
        url.authority()
    );
    for (k, v) in headers {
        if v.contains(['\r', '\n']) {
            return Err(format!("header {k} contains a line break"));
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    Ok(req)
}

/// Sends `request` and reads one response, stopping as soon as its framing says it is complete
/// (so a TLS peer that closes without close_notify after a complete response is no error).
fn exchange<S: Read + Write>(
    mut s: S,
    request: &str,
    timeout: Duration,
) -> Result<Response, String> {
    s.write_all(request.as_bytes())
        .and_then(|()| s.flush())
        .map_err(|e| format!("write: {}", tls::describe_io(&e, timeout)))?;
    let mut raw = Vec::new();
    let mut reader = ResponseReader::default();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(format!("read: {}", tls::describe_io(&e, timeout)));
            }
        };
        if n == 0 {
            return parse_response(&raw);
        }
        raw.extend_from_slice(&buf[..n]);
        if reader.complete(&raw)? {
            return parse_response(&raw);
        }
    }
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

struct Head {
    status: u16,
    framing: Framing,
    /// Where the body starts in the raw response.
    body: usize,
}

fn parse_head(raw: &[u8], end: usize) -> Result<Head, String> {
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "response header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k == "content-length" {
            length = v.parse().ok();
        }
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::UntilClose,
    };
    Ok(Head {
        status,
        framing,
        body: end + 4,
    })
}

fn header_end(raw: &[u8], from: usize) -> Option<usize> {
    raw.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i)
}

/// Decides, as bytes arrive, whether the response is complete; bounded in size.
#[derive(Default)]
struct ResponseReader {
    head: Option<Head>,
    /// Bytes already searched for the header end.
    searched: usize,
    /// Body offset of the next chunk header not yet passed over.
    chunk_pos: usize,
}

impl ResponseReader {
    fn complete(&mut self, raw: &[u8]) -> Result<bool, String> {
        if self.head.is_none() {
            match header_end(raw, self.searched.saturating_sub(3)) {
                Some(end) => self.head = Some(parse_head(raw, end)?),
                None if raw.len() > MAX_HEAD => return Err("response header too large".into()),
                None => {
                    self.searched = raw.len();
                    return Ok(false);
                }
            }
        }
        let Some(head) = &self.head else {
            return Ok(false);
        };
        let body = &raw[head.body..];
        if body.len() > MAX_RESPONSE {
            return Err("response too large".into());
        }
        match head.framing {
            Framing::Length(n) if n > MAX_RESPONSE => Err("response too large".into()),
            Framing::Length(n) => Ok(body.len() >= n),
            Framing::UntilClose => Ok(false),
            Framing::Chunked => scan_chunks(body, &mut self.chunk_pos),
        }
    }
}

/// Passes over complete chunks from `*pos`: true once the last (empty) chunk's header is in.
fn scan_chunks(body: &[u8], pos: &mut usize) -> Result<bool, String> {
    loop {
        let rest = &body[*pos..];
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return if rest.len() > 1024 {
                Err("bad chunk header".into())
            } else {
                Ok(false)
            };
        };
        let size = chunk_size(&rest[..eol])?;
        if size == 0 {
            return Ok(true);
        }
        let next = eol
            .checked_add(2)
            .and_then(|n| n.checked_add(size))
            .and_then(|n| n.checked_add(2))
            .ok_or("bad chunk size")?;
        if rest.len() < next {
            return Ok(false);
        }
        *pos += next;
    }
}

fn chunk_size(line: &[u8]) -> Result<usize, String> {
    let txt = std::str::from_utf8(line).map_err(|_| "bad chunk size")?;
    let txt = txt.split(';').next().unwrap_or("").trim();
    usize::from_str_radix(txt, 16).map_err(|_| "bad chunk size".into())
}

/// A whole response (the connection has ended, or its framing says it is complete).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = header_end(raw, 0).ok_or("response has no header end")?;
    let head = parse_head(raw, end)?;
    let body = &raw[head.body..];
    let body = match head.framing {
        Framing::Chunked => dechunk(body)?,
        Framing::Length(n) => body
            .get(..n)
            .ok_or("body shorter than Content-Length")?
            .to_vec(),
        Framing::UntilClose => body.to_vec(),
    };
    if body.len() > MAX_RESPONSE {
        return Err("response too large".into());
    }
    Ok(Response {
        status: head.status,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk header")?;
        let size = chunk_size(&b[..eol])?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).ok_or("chunk cut short")?);
        b = b
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or("chunk cut short")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(scheme: Scheme, host: &str, port: u16, prefix: &str) -> Url {
        Url {
            scheme,
            host: host.into(),
            port,
            prefix: prefix.into(),
        }
    }

    #[test]
    fn urls() {
        use Scheme::*;
        assert_eq!(
            parse_url("http://127.0.0.1:8080").unwrap(),
            url(Http, "127.0.0.1", 8080, "")
        );
        assert_eq!(
            parse_url("http://api/k8s/").unwrap(),
            url(Http, "api", 80, "/k8s")
        );
        assert_eq!(
            parse_url("https://10.96.0.1:443").unwrap(),
            url(Https, "10.96.0.1", 443, "")
        );
        assert_eq!(
            parse_url("https://kubernetes.default.svc").unwrap(),
            url(Https, "kubernetes.default.svc", 443, "")
        );
        let v6 = parse_url("https://[fd00::1]:6443/").unwrap();
        assert_eq!(v6, url(Https, "fd00::1", 6443, ""));
        assert_eq!(v6.authority(), "[fd00::1]:6443");
        assert_eq!(parse_url("https://[::1]").unwrap().port, 443);
        assert!(
            parse_url("ftp://x")
                .unwrap_err()
                .contains("only http:// and https://")
        );
        for bad in [
            "http://u:p@x",
            "http://x:99999",
            "https://",
            "https://:443",
            "https://x?a=b",
            "https://x/p?a=b",
            "https://[::1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_line_and_headers() {
        let u = parse_url("https://[::1]:6443/k8s").unwrap();
        let r = request(
            &u,
            "/api/v1/namespaces/a",
            &[("Authorization", "Bearer t".into())],
        )
        .unwrap();
        assert!(r.starts_with("GET /k8s/api/v1/namespaces/a HTTP/1.1\r\nHost: [::1]:6443\r\n"));
        assert!(r.ends_with("Authorization: Bearer t\r\n\r\n"));
        assert!(request(&u, "/", &[("X", "a\r\nB: c".into())]).is_err());
    }

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra").unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"{}"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"{\"a\":1}");
        assert_eq!(
            parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n")
                .unwrap()
                .status,
            404
        );
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabXY")
                .is_err()
        );
    }

    /// Byte by byte: complete exactly when the framing says so, whatever the split.
    #[test]
    fn completion_as_bytes_arrive() {
        let cases: [(&[u8], usize); 3] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 0),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n",
                0,
            ),
            // Until close: never complete before EOF.
            (b"HTTP/1.1 200 OK\r\n\r\n{}", 1),
        ];
        for (full, never) in cases {
            let mut r = ResponseReader::default();
            let mut done_at = None;
            for i in 1..=full.len() {
                if r.complete(&full[..i]).unwrap() {
                    done_at = Some(i);
                    break;
                }
            }
            if never == 1 {
                assert_eq!(done_at, None);
            } else {
                assert_eq!(
                    done_at,
                    Some(full.len()),
                    "{}",
                    String::from_utf8_lossy(full)
                );
            }
        }
        let mut r = ResponseReader::default();
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_RESPONSE + 1
        );
        assert!(
            r.complete(big.as_bytes())
                .unwrap_err()
                .contains("too large")
        );
        let mut r = ResponseReader::default();
        assert!(r.complete(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    /// A plain-TCP server: the whole request within the deadline, and a server that says nothing
    /// gives "timed out" within the deadline, not after it.
    #[test]
    fn plain_get_and_deadline() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf).unwrap();
            // Complete by Content-Length, connection left open: the client must not wait.
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                .unwrap();
            let (_silent, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_millis(600));
            drop(c);
        });
        let u = url(Scheme::Http, "127.0.0.1", port, "");
        let start = Instant::now();
        let r = get(&u, "/x", &[], Duration::from_millis(400), None).unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"{}"[..]));
        assert!(start.elapsed() < Duration::from_millis(300));
        let start = Instant::now();
        let e = get(&u, "/x", &[], Duration::from_millis(300), None).unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        t.join().unwrap();
    }
}
