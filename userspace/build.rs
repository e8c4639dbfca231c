//! Builds the eBPF programs (the `cniscope-ebpf` binary, for bpfel-unknown-none) with aya-build and
//! leaves the object in OUT_DIR for `include_bytes_aligned!`.
//!
//! Toolchain: the one building this crate (RUSTUP_TOOLCHAIN), with RUSTC_BOOTSTRAP=1 for
//! `-Z build-std=core`, so no nightly is needed; `CNISCOPE_EBPF_TOOLCHAIN` overrides it.
//! `cargo xtask setup` installs rust-src and a bpf-linker built against that toolchain's LLVM.

use std::path::PathBuf;

fn on_path(bin: &str) -> bool {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    dirs.iter().any(|d| d.join(bin).is_file())
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=CNISCOPE_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("CNISCOPE_EBPF_TOOLCHAIN")
        .or_else(|_| std::env::var("RUSTUP_TOOLCHAIN"))
        .unwrap_or_else(|_| "stable".to_string());
    if !on_path("bpf-linker") {
        anyhow::bail!(
            "bpf-linker is not installed; run `cargo xtask setup` (it builds bpf-linker against \
             the LLVM of toolchain `{toolchain}`)"
        );
    }
    if std::env::var_os("RUSTC_BOOTSTRAP").is_none() {
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest
        .parent()
        .map(|p| p.join("ebpf"))
        .ok_or_else(|| anyhow::anyhow!("no workspace root above {}", manifest.display()))?;
    let ebpf_dir = ebpf_dir.to_string_lossy().into_owned();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "cniscope-ebpf",
            root_dir: &ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
