//! `cargo xtask image`: an OCI image with the agent (`cniscope`) and the chained plugin
//! (`cniscope-cni`), built without a container daemon or a base image.
//!
//! The binaries are dynamically linked against glibc, so the image carries exactly the shared
//! libraries and the loader that `ldd` names for them, plus `ip` (iproute2) with its libraries
//! and a shell (dash) with core tools (a static busybox) for the DaemonSet's install step and
//! for `kubectl exec`. The layer is a reproducible tar (sorted names, mtime 0, owner root); the
//! image is written as an OCI layout inside an `oci-archive` tar, which `podman load`,
//! `skopeo copy oci-archive:…` and `ctr images import` all accept, and is then loaded into
//! podman's store under the tag (default `localhost/cniscope:dev`).
//!
//! Options:
//! - `--tag NAME`       image name (default `localhost/cniscope:dev`)
//! - `--output FILE`    where the oci-archive goes (default `target/image/cniscope.oci.tar`)
//! - `--bin-dir DIR`    take the binaries from DIR instead of a release build (tests use the
//!   debug binaries they already test)
//! - `--no-load`        only write the archive

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{cargo, run, show, workspace_root};

const DEFAULT_TAG: &str = "localhost/cniscope:dev";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const IP: &str = "/usr/sbin/ip";
const BUSYBOX: &str = "/usr/bin/busybox";
/// The shell is dash, not busybox's ash: Debian's static busybox runs its own applets before
/// anything on PATH, so `ip` in an ash script would be busybox's cut-down `ip`, not iproute2's.
const SHELL: &str = "/bin/dash";
/// The busybox applets linked into /bin: what the install script and a person in `kubectl exec`
/// use. Deliberately no `ip` (the real one is /usr/sbin/ip) and no network clients.
const APPLETS: &[&str] = &[
    "cat", "cp", "mv", "rm", "ln", "ls", "mkdir", "chmod", "chown", "cmp", "test", "[", "echo",
    "printf", "sleep", "base64", "sed", "grep", "head", "tail", "tr", "wc", "env", "id", "stat",
    "sync", "true", "false", "ps", "readlink", "realpath", "find", "du", "df", "date", "uname",
    "mktemp", "dirname", "basename", "cut", "sort", "uniq", "xargs", "less", "vi", "kill", "mount",
    "umount", "nsenter", "which",
];
const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

struct Opts {
    tag: String,
    output: PathBuf,
    bin_dir: Option<PathBuf>,
    load: bool,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Self> {
        let mut o = Opts {
            tag: DEFAULT_TAG.into(),
            output: workspace_root().join("target/image/cniscope.oci.tar"),
            bin_dir: None,
            load: true,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value"))
            };
            match a.as_str() {
                "--tag" => o.tag = value("--tag")?,
                "--output" => o.output = PathBuf::from(value("--output")?),
                "--bin-dir" => o.bin_dir = Some(PathBuf::from(value("--bin-dir")?)),
                "--no-load" => o.load = false,
                other => bail!(
                    "unknown option {other:?} (cargo xtask image [--tag NAME] [--output FILE] \
                     [--bin-dir DIR] [--no-load])"
                ),
            }
        }
        let last = o.tag.rsplit('/').next().unwrap_or_default();
        if o.tag.contains(char::is_whitespace) || !last.contains(':') {
            bail!("--tag {:?}: expected NAME:TAG", o.tag);
        }
        Ok(o)
    }
}

/// The binaries that go into the image; the plugin may be missing while it is being written.
struct Binaries {
    agent: PathBuf,
    plugin: Option<PathBuf>,
    plugin_note: Option<String>,
}

pub fn image(args: &[String]) -> Result<()> {
    let opts = Opts::parse(args)?;
    let bins = binaries(&opts)?;
    let work = opts
        .output
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
        .join("cniscope-image.work");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let rootfs = work.join("rootfs");
    stage(&rootfs, &bins)?;
    let image_id = oci_archive(&work, &rootfs, &opts)?;
    fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    eprintln!(
        "xtask: wrote {} (image id {})",
        opts.output.display(),
        &image_id[..12]
    );
    if opts.load {
        load(&opts.output, &image_id, &opts.tag)?;
        eprintln!("xtask: loaded into podman as {}", opts.tag);
    }
    match &bins.plugin_note {
        Some(note) => eprintln!("xtask: WARNING: the image has NO cniscope-cni: {note}"),
        None => eprintln!("xtask: the image has cniscope and cniscope-cni"),
    }
    Ok(())
}

fn binaries(opts: &Opts) -> Result<Binaries> {
    let dir = match &opts.bin_dir {
        Some(d) => d.clone(),
        None => {
            let dir = workspace_root().join("target/release");
            let both =
                run(cargo().args(["build", "--release", "-p", "cniscope", "-p", "cniscope-cni"]));
            if let Err(e) = both {
                // The plugin is developed alongside; an image of the agent alone is still useful
                // (and a stale plugin binary from an older build must not slip in).
                eprintln!("xtask: building both failed ({e:#}); building the agent alone");
                run(cargo().args(["build", "--release", "-p", "cniscope"]))?;
                return Ok(Binaries {
                    agent: dir.join("cniscope"),
                    plugin: None,
                    plugin_note: Some("`cargo build --release -p cniscope-cni` failed".into()),
                });
            }
            dir
        }
    };
    let agent = dir.join("cniscope");
    if !agent.is_file() {
        bail!("{} is missing", agent.display());
    }
    let plugin = dir.join("cniscope-cni");
    Ok(if plugin.is_file() {
        Binaries {
            agent,
            plugin: Some(plugin),
            plugin_note: None,
        }
    } else {
        Binaries {
            agent,
            plugin: None,
            plugin_note: Some(format!("{} does not exist", plugin.display())),
        }
    })
}

/// Lays out the image's file tree.
fn stage(root: &Path, bins: &Binaries) -> Result<()> {
    for d in ["bin", "usr/bin", "usr/sbin", "etc", "tmp", "run", "root"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    let mut elfs = vec![
        put(&bins.agent, root, "usr/bin/cniscope", 0o755)?,
        put(Path::new(IP), root, "usr/sbin/ip", 0o755)?,
    ];
    if let Some(p) = &bins.plugin {
        elfs.push(put(p, root, "usr/bin/cniscope-cni", 0o755)?);
    }
    if !Path::new(BUSYBOX).is_file() {
        bail!("{BUSYBOX} is missing: apt-get install busybox-static (cargo xtask setup does)");
    }
    elfs.push(put(Path::new(BUSYBOX), root, "bin/busybox", 0o755)?);
    for a in APPLETS {
        symlink("busybox", root.join("bin").join(a))?;
    }
    elfs.push(put(Path::new(SHELL), root, "bin/dash", 0o755)?);
    symlink("dash", root.join("bin/sh"))?;
    // ip's own tables (rt_tables, rt_protos, …), so it prints names as on the host.
    for dir in ["/etc/iproute2", "/usr/share/iproute2", "/usr/lib/iproute2"] {
        if Path::new(dir).is_dir() {
            copy_tree(Path::new(dir), &root.join(dir.trim_start_matches('/')))?;
        }
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    let mut libs = std::collections::BTreeSet::new();
    for e in &elfs {
        libs.extend(shared_libraries(e)?);
    }
    for lib in &libs {
        let rel = lib.strip_prefix("/").unwrap_or(lib);
        put(lib, root, &rel.to_string_lossy(), 0o755)?;
    }
    eprintln!(
        "xtask: staged {} binaries and {} shared libraries: {}",
        elfs.len(),
        libs.len(),
        libs.iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

/// Copies `src` (following symlinks) to `root/rel` with `mode`; returns the staged path.
fn put(src: &Path, root: &Path, rel: &str, mode: u32) -> Result<PathBuf> {
    let dst = root.join(rel);
    if let Some(p) = dst.parent() {
        fs::create_dir_all(p)?;
    }
    fs::copy(src, &dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    fs::set_permissions(&dst, fs::Permissions::from_mode(mode))?;
    Ok(dst)
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir_all(dst)?;
    for e in fs::read_dir(src)? {
        let e = e?;
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &to)?;
        } else if e.path().is_file() {
            fs::copy(e.path(), &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

/// The shared libraries and loader of an ELF file, as the host's loader resolves them
/// (empty for a static binary).
fn shared_libraries(elf: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(elf)
        .output()
        .context("running ldd (libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            elf.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_ldd(&text).with_context(|| format!("ldd {}", elf.display()))
}

fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("statically linked") {
            continue;
        }
        if line.contains("=> not found") {
            bail!("a library is missing on this machine: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        // linux-vdso.so.1 has no file; everything else is an absolute path.
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Writes the OCI layout and its archive; returns the image id (the config's digest).
fn oci_archive(work: &Path, rootfs: &Path, opts: &Opts) -> Result<String> {
    let epoch = source_date_epoch();
    let layout = work.join("oci");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let layer_tar = work.join("layer.tar");
    run(Command::new("tar")
        .args(reproducible_tar_flags(epoch))
        .arg("-C")
        .arg(rootfs)
        .arg("-cf")
        .arg(&layer_tar)
        .arg("."))?;
    let diff_id = sha256(&layer_tar)?;
    let layer_gz = work.join("layer.tar.gz");
    let gz = fs::File::create(&layer_gz)?;
    let status = Command::new("gzip")
        .args(["-n", "-6", "-c"])
        .arg(&layer_tar)
        .stdout(gz)
        .status()
        .context("running gzip")?;
    if !status.success() {
        bail!("gzip failed: {status}");
    }
    fs::remove_file(&layer_tar)?;
    let layer_digest = sha256(&layer_gz)?;
    let layer_size = fs::metadata(&layer_gz)?.len();
    fs::rename(&layer_gz, blobs.join(&layer_digest))?;

    let created = rfc3339(epoch);
    let config = json!({
        "created": created,
        "architecture": oci_arch()?,
        "os": "linux",
        "config": {
            "Env": [PATH_ENV],
            "Entrypoint": ["/usr/bin/cniscope"],
            "Cmd": ["agent"],
            "WorkingDir": "/",
            "Labels": labels(&created),
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created": created, "created_by": "cargo xtask image"}],
    });
    let (config_digest, config_size) = write_blob(&blobs, &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": format!("sha256:{config_digest}"), "size": config_size},
        "layers": [{"mediaType": MT_LAYER_GZ, "digest": format!("sha256:{layer_digest}"), "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = write_blob(&blobs, &manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MT_MANIFEST,
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": opts.tag},
        }],
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    if let Some(p) = opts.output.parent() {
        fs::create_dir_all(p)?;
    }
    let tmp = opts.output.with_extension("tar.part");
    run(Command::new("tar")
        .args(reproducible_tar_flags(epoch))
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tmp)
        .args(["oci-layout", "index.json", "blobs"]))?;
    fs::rename(&tmp, &opts.output)?;
    Ok(config_digest)
}

fn reproducible_tar_flags(epoch: u64) -> Vec<String> {
    vec![
        "--sort=name".into(),
        format!("--mtime=@{epoch}"),
        "--owner=0".into(),
        "--group=0".into(),
        "--numeric-owner".into(),
        "--format=gnu".into(),
    ]
}

fn write_blob(blobs: &Path, v: &Value) -> Result<(String, u64)> {
    let bytes = serde_json::to_vec(v)?;
    let tmp = blobs.join("tmp.json");
    fs::write(&tmp, &bytes)?;
    let digest = sha256(&tmp)?;
    fs::rename(&tmp, blobs.join(&digest))?;
    Ok((digest, bytes.len() as u64))
}

fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("running sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", path.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("sha256sum printed {text:?}");
    }
    Ok(hex.to_string())
}

fn oci_arch() -> Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => bail!("no OCI architecture name known for {other}"),
    })
}

/// SOURCE_DATE_EPOCH, else the time of the last commit, else 0: the same tree gives the same
/// image id.
fn source_date_epoch() -> u64 {
    if let Some(v) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return v;
    }
    git(&["log", "-1", "--format=%ct"])
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(workspace_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn labels(created: &str) -> Value {
    let mut l = json!({
        "org.opencontainers.image.title": "cniscope",
        "org.opencontainers.image.description":
            "cniscope agent (eBPF CNI chain introspector) and the cniscope-cni chained plugin",
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.created": created,
    });
    if let Some(rev) = git(&["rev-parse", "HEAD"]) {
        let dirty =
            git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        l["org.opencontainers.image.revision"] =
            Value::String(if dirty { format!("{rev}-dirty") } else { rev });
    }
    l
}

/// Seconds since the epoch as RFC 3339 UTC (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
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
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Loads the archive into podman's store and points `tag` at it; an image the tag pointed at
/// before and that nothing else names is removed, so rebuilding never piles up old images.
fn load(archive: &Path, image_id: &str, tag: &str) -> Result<()> {
    let previous = podman_output(&["image", "inspect", "--format", "{{.Id}}", tag]).ok();
    run(Command::new("podman")
        .args(["load", "--quiet", "--input"])
        .arg(archive))?;
    run(Command::new("podman").args(["tag", image_id, tag]))?;
    let now = podman_output(&["image", "inspect", "--format", "{{.Id}}", tag])?;
    if now != image_id {
        bail!("{tag} is {now} after loading, expected {image_id}");
    }
    if let Some(old) = previous.filter(|p| p != image_id) {
        let names = podman_output(&["image", "inspect", "--format", "{{len .RepoTags}}", &old]);
        if names.ok().as_deref() == Some("0") {
            let mut c = Command::new("podman");
            c.args(["image", "rm", &old]);
            if let Err(e) = run(&mut c) {
                eprintln!("xtask: could not remove the previous image {old}: {e:#}");
            }
        }
    }
    Ok(())
}

fn podman_output(args: &[&str]) -> Result<String> {
    let mut c = Command::new("podman");
    c.args(args);
    let out = c
        .output()
        .with_context(|| format!("running {}", show(&c)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            show(&c),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f63)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f63)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f63)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_422_172), "2026-11-23T08:22:52Z");
    }

    #[test]
    fn options() {
        let o = Opts::parse(&["--tag".into(), "x/y:z".into(), "--no-load".into()]).unwrap();
        assert_eq!(o.tag, "x/y:z");
        assert!(!o.load);
        assert!(Opts::parse(&["--tag".into(), "nocolon".into()]).is_err());
        assert!(Opts::parse(&["--tag".into(), "reg:5000/x".into()]).is_err());
        assert!(Opts::parse(&["--bogus".into()]).is_err());
        assert!(Opts::parse(&["--output".into()]).is_err());
    }
}
