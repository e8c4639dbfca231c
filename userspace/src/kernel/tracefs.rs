//! tracefs: finding or mounting it, and reading tracepoint `format` files so field offsets come
//! from the running kernel rather than from constants.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// `CNISCOPE_TRACEFS` names another mount point (a container's bind mount of the host's, or a
/// test of the unmountable case); the default is the standard pair.
fn candidates() -> Vec<PathBuf> {
    match std::env::var_os("CNISCOPE_TRACEFS") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![PathBuf::from(TRACEFS), PathBuf::from(DEBUGFS_TRACING)],
    }
}

/// Where tracefs is mounted, if it is.
pub fn find() -> Option<PathBuf> {
    candidates().into_iter().find(|p| p.join("events").is_dir())
}

/// Returns the tracefs path, mounting it at `/sys/kernel/tracing` (or `CNISCOPE_TRACEFS`) when it
/// is missing.
pub fn ensure_mounted() -> Result<PathBuf> {
    if let Some(p) = find() {
        return Ok(p);
    }
    let at = candidates().remove(0);
    let target = std::ffi::CString::new(at.to_string_lossy().as_bytes())?;
    let fstype = std::ffi::CString::new("tracefs")?;
    // SAFETY: plain mount(2) with valid NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "tracefs is not mounted and mounting it at {} failed: {err} (mount it with \
             `mount -t tracefs tracefs {TRACEFS}`, or in a container bind-mount the host's)",
            at.display()
        );
    }
    find().context("mounted tracefs but it has no events/ directory")
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// Parses the text of a tracepoint `format` file into its fields.
pub fn parse_format(text: &str) -> Vec<Field> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = "";
        let mut offset = None;
        let mut size = None;
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.trim().parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.trim().parse().ok();
            } else if decl.is_empty() {
                decl = part;
            }
        }
        // The name is the last identifier of the declaration once array brackets are removed
        // (`char comm[16]`, `__data_loc char[] filename`).
        let mut plain = String::with_capacity(decl.len());
        let mut depth = 0;
        for c in decl.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ if depth == 0 => plain.push(c),
                _ => {}
            }
        }
        let decl = plain.trim();
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or("")
            .to_string();
        if let (Some(offset), Some(size)) = (offset, size)
            && !name.is_empty()
        {
            out.push(Field { name, offset, size });
        }
    }
    out
}

/// Offset of `field` in tracepoint `category/name`.
pub fn field_offset(tracefs: &Path, category: &str, name: &str, field: &str) -> Result<u32> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "tracepoint {category}:{name} is not available ({})",
            path.display()
        )
    })?;
    parse_format(&text)
        .into_iter()
        .find(|f| f.name == field)
        .map(|f| f.offset)
        .with_context(|| format!("tracepoint {category}:{name} has no field `{field}`"))
}

/// Whether tracepoint `category/name` exists.
pub fn has_tracepoint(tracefs: &Path, category: &str, name: &str) -> bool {
    tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("id")
        .exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXEC: &str = "name: sched_process_exec
ID: 311
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;

print fmt: \"filename=%s pid=%d old_pid=%d\", __get_str(filename), REC->pid, REC->old_pid
";

    const READ: &str = "\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:char * buf;\toffset:24;\tsize:8;\tsigned:0;
\tfield:size_t count;\toffset:32;\tsize:8;\tsigned:0;";

    #[test]
    fn parses_data_loc_and_pointer_fields() {
        let f = parse_format(EXEC);
        let names: Vec<_> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "common_type",
                "common_flags",
                "common_preempt_count",
                "common_pid",
                "filename",
                "pid",
                "old_pid"
            ]
        );
        assert_eq!(f[4].offset, 8);
        let r = parse_format(READ);
        assert_eq!(
            r.iter().find(|f| f.name == "buf").map(|f| f.offset),
            Some(24)
        );
        assert_eq!(r.iter().find(|f| f.name == "fd").map(|f| f.size), Some(8));
    }

    #[test]
    fn garbage_gives_no_fields() {
        assert!(parse_format("field:;offset:x;size:;").is_empty());
        assert!(parse_format("").is_empty());
    }
}
