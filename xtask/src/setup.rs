//! `cargo xtask setup`: everything the build and the tests need, idempotently.
//!
//! 1. Debian packages the tests use (only those missing are installed).
//! 2. `rust-src` for the toolchain that builds the eBPF crate (the active one; build.rs uses it
//!    with RUSTC_BOOTSTRAP=1 for `-Z build-std=core`, so no nightly is needed).
//! 3. `bpf-linker` built against that toolchain's own libLLVM: a prefix whose `lib/` holds
//!    `libLLVM.so` and the exact soname as symlinks into the toolchain's sysroot, so bpf-linker
//!    finds LLVM without LD_LIBRARY_PATH. Names and versions are read at run time.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run;

/// Debian packages: the real CNI plugins, ip, podman with the CNI backend and what it runs
/// with, and the tools the tests and benchmarks drive.
pub const APT_PACKAGES: &[&str] = &[
    "containernetworking-plugins",
    "iproute2",
    "podman",
    "runc",
    "busybox-static",
    "jq",
    "tmux",
    "hyperfine",
    "procps",
    "util-linux",
];

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {}", crate::show(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            crate::show(cmd),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        eprintln!("xtask: apt packages present");
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "missing packages {missing:?}; run as root or install them: apt-get install {}",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The toolchain cargo runs under (rustup sets RUSTUP_TOOLCHAIN for its proxies).
pub fn toolchain() -> Result<String> {
    if let Ok(tc) = std::env::var("CNISCOPE_EBPF_TOOLCHAIN") {
        return Ok(tc);
    }
    if let Ok(tc) = std::env::var("RUSTUP_TOOLCHAIN") {
        return Ok(tc);
    }
    let active = output(Command::new("rustup").args(["show", "active-toolchain"]))?;
    Ok(active
        .split_whitespace()
        .next()
        .unwrap_or("stable")
        .to_string())
}

fn rust_src(tc: &str) -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        tc,
    ]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: rust-src present for {tc}");
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", tc]))
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

fn bpf_linker(tc: &str) -> Result<()> {
    let sysroot = PathBuf::from(output(
        Command::new("rustup").args(["run", tc, "rustc", "--print", "sysroot"]),
    )?);
    let vv = output(Command::new("rustup").args(["run", tc, "rustc", "-vV"]))?;
    let llvm_major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc -vV reports no LLVM version")?
        .to_string();
    let libdir = sysroot.join("lib");
    let soname = std::fs::read_dir(&libdir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .or_else(|| {
            std::fs::read_dir(&libdir)
                .ok()?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with("libLLVM") && n.ends_with(".so"))
        })
        .with_context(|| format!("no libLLVM in {}", libdir.display()))?;

    let prefix = cargo_home().join("cniscope-llvm").join(&soname);
    let marker = prefix.join("bpf-linker.installed");
    let linker = cargo_home().join("bin").join("bpf-linker");
    if marker.exists() && linker.exists() {
        let ok = Command::new(&linker)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            eprintln!("xtask: bpf-linker present (built against {soname})");
            return Ok(());
        }
        eprintln!("xtask: bpf-linker is there but does not start; rebuilding");
    }
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    for name in ["libLLVM.so".to_string(), soname.clone()] {
        let link = lib.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(libdir.join(&soname), &link)
            .with_context(|| format!("symlinking {}", link.display()))?;
    }
    eprintln!("xtask: building bpf-linker against LLVM {llvm_major} ({soname}); about a minute");
    run(Command::new("cargo")
        .args([
            &format!("+{tc}"),
            "install",
            "bpf-linker",
            "--version",
            "^0.13",
            "--force",
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .env_remove("RUSTUP_TOOLCHAIN"))?;
    std::fs::write(&marker, format!("{tc}\n"))?;
    Ok(())
}

pub fn setup() -> Result<()> {
    apt()?;
    let tc = toolchain()?;
    rust_src(&tc)?;
    bpf_linker(&tc)?;
    eprintln!("xtask: setup complete (eBPF toolchain: {tc} with RUSTC_BOOTSTRAP=1)");
    Ok(())
}
