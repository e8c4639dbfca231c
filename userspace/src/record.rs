//! Recordings: the raw ring-buffer records of a session, and the facts the agent looked up on the
//! system while handling them (interface and namespace names, netns tags, runtime names), so
//! that `cniscope replay` runs the same pipeline and prints the same lines on any machine.
//!
//! Format: a sequence of frames `[u32 little-endian payload length][u8 kind][payload]`:
//! kind 0 = header (JSON), 1 = one raw ring-buffer record, 2 = facts learned while handling the
//! preceding record (JSON array of `Fact`), 3 = a tick that completed invocations (u64 LE
//! boot-time ns). Readers skip unknown kinds.

use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const KIND_HEADER: u8 = 0;
pub const KIND_RECORD: u8 = 1;
pub const KIND_FACTS: u8 = 2;
/// The agent completed invocations at this boot-time ns (u64 LE): replay completes them at
/// the same point of the stream.
pub const KIND_TICK: u8 = 3;
/// Frames larger than this are corrupt (the largest ring-buffer record is ~10 KiB).
const MAX_FRAME: u32 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Fact {
    /// Interface `index` in namespace `netns` is called `name`.
    Ifname {
        netns: u32,
        index: u32,
        name: String,
    },
    /// Namespace `ino` is shown as `name` (a /run/netns name, "host", or unknown).
    Display { ino: u32, name: Option<String> },
    /// The namespace file at `path` has inode `ino`.
    NetnsInode { path: String, ino: Option<u32> },
    /// cniscope-cni's tag for namespace `inode`.
    Tag { inode: u32, tag: Option<Value> },
    /// Process `pid` was called `comm`.
    Comm { pid: u32, comm: Option<String> },
    /// The agent's pod cache knew pod `namespace`/`name` (`uid`, when asked by uid) as `pod`
    /// (its uid and labels only).
    Pod {
        namespace: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<String>,
        pod: Option<Value>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// Unix-epoch ns minus boot ns when the recording started (as a string: it exceeds JSON's
    /// safe integers).
    pub clock_offset_ns: String,
    pub kernel: String,
    pub created: String,
}

pub struct Recorder {
    w: BufWriter<std::fs::File>,
    pub frames: u64,
}

impl Recorder {
    pub fn create(path: &Path, clock_offset_ns: i128, created: String) -> Result<Self> {
        let f = std::fs::File::create(path)
            .with_context(|| format!("creating recording {}", path.display()))?;
        let mut r = Self {
            w: BufWriter::new(f),
            frames: 0,
        };
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let h = Header {
            format: "cniscope-recording".into(),
            version: 1,
            clock_offset_ns: clock_offset_ns.to_string(),
            kernel,
            created,
        };
        r.frame(KIND_HEADER, &serde_json::to_vec(&h)?)?;
        Ok(r)
    }

    pub fn frame(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        self.w.write_all(&(payload.len() as u32).to_le_bytes())?;
        self.w.write_all(&[kind])?;
        self.w.write_all(payload)?;
        self.frames += 1;
        Ok(())
    }

    pub fn facts(&mut self, facts: &[Fact]) -> io::Result<()> {
        if facts.is_empty() {
            return Ok(());
        }
        let b = serde_json::to_vec(facts).map_err(io::Error::other)?;
        self.frame(KIND_FACTS, &b)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// One frame read back.
pub enum Frame {
    Header(Header),
    Record(Vec<u8>),
    Facts(Vec<Fact>),
    Tick(u64),
    Other(u8),
}

pub struct Reader<R: Read> {
    r: R,
}

impl<R: Read> Reader<R> {
    pub fn new(r: R) -> Self {
        Self { r }
    }

    /// The next frame; `Ok(None)` at a clean end; an error for a truncated or corrupt file.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let mut len = [0u8; 4];
        match self.r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(len);
        if len > MAX_FRAME {
            bail!("corrupt recording: a frame claims {len} bytes");
        }
        let mut kind = [0u8; 1];
        self.r
            .read_exact(&mut kind)
            .context("recording ends inside a frame header")?;
        let mut payload = vec![0u8; len as usize];
        self.r
            .read_exact(&mut payload)
            .context("recording ends inside a frame (was the agent killed while writing?)")?;
        Ok(Some(match kind[0] {
            KIND_HEADER => Frame::Header(serde_json::from_slice(&payload).context("bad header")?),
            KIND_RECORD => Frame::Record(payload),
            KIND_FACTS => Frame::Facts(serde_json::from_slice(&payload).context("bad facts")?),
            KIND_TICK if payload.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&payload);
                Frame::Tick(u64::from_le_bytes(b))
            }
            k => Frame::Other(k),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_truncation_is_an_error() {
        let dir = std::env::temp_dir().join(format!("cniscope-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.rec");
        let mut r = Recorder::create(&p, -5, "now".into()).unwrap();
        r.frame(KIND_RECORD, b"abc").unwrap();
        r.facts(&[Fact::Comm {
            pid: 1,
            comm: Some("init".into()),
        }])
        .unwrap();
        r.flush().unwrap();
        drop(r);
        let bytes = std::fs::read(&p).unwrap();
        let mut rd = Reader::new(&bytes[..]);
        assert!(
            matches!(rd.next_frame().unwrap(), Some(Frame::Header(h)) if h.clock_offset_ns == "-5")
        );
        assert!(matches!(rd.next_frame().unwrap(), Some(Frame::Record(b)) if b == b"abc"));
        assert!(matches!(rd.next_frame().unwrap(), Some(Frame::Facts(f)) if f.len() == 1));
        assert!(rd.next_frame().unwrap().is_none());
        let mut cut = Reader::new(&bytes[..bytes.len() - 2]);
        let mut err = false;
        for _ in 0..4 {
            match cut.next_frame() {
                Err(_) => {
                    err = true;
                    break;
                }
                Ok(None) => break,
                Ok(Some(_)) => {}
            }
        }
        assert!(err, "a truncated recording must be reported");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
