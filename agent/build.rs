//! Records the git commit the daemon was built from (for `meshd --version`), compiles the eBPF
//! programs under `ebpf/` (`*.bpf.c`) with clang into `OUT_DIR`, and builds `mesh-pause` (the
//! process of task sandboxes, `pause/main.rs`) as a static executable there; all are embedded in
//! the binary.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    record_commit();
    if let Err(err) = build_ebpf() {
        // One line that cargo shows as the build's error, with what to do about it.
        println!("cargo::error=building the eBPF programs: {err}");
    }
    if let Err(err) = build_pause() {
        println!("cargo::error=building mesh-pause: {err}");
    }
}

/// `pause/main.rs` as a statically linked executable in `OUT_DIR/mesh-pause`.
fn build_pause() -> Result<(), String> {
    let source = manifest_dir()?.join("pause/main.rs");
    println!("cargo:rerun-if-changed={}", source.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = std::env::var("TARGET").map_err(|e| e.to_string())?;
    let status = Command::new(&rustc)
        .args(["--edition", "2024", "--crate-name", "mesh_pause"])
        .args(["--target", &target])
        .args(["-C", "target-feature=+crt-static"])
        .args(["-C", "opt-level=s", "-C", "strip=symbols"])
        .arg("-o")
        .arg(out.join("mesh-pause"))
        .arg(&source)
        .status()
        .map_err(|e| format!("cannot run {rustc}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{rustc} could not build {} statically for {target} ({status}); a link error \
             means glibc's static libc.a is missing (Debian's libc6-dev)",
            source.display()
        ));
    }
    Ok(())
}

fn record_commit() {
    // Where git keeps them: a worktree's HEAD is not under ../.git, and a path that does not
    // exist would make cargo rerun this script (and rebuild the crate) on every build.
    for name in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MESH_GIT_COMMIT={commit}");
}

/// The crate's directory as cargo names it for this run: not the one this script was compiled
/// in (`env!`), which a build directory shared between checkouts keeps after that one is gone.
fn manifest_dir() -> Result<PathBuf, String> {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| "cargo did not set CARGO_MANIFEST_DIR".to_string())
}

/// What `git ARGS` prints, trimmed; None when git is missing, fails or prints nothing.
fn git(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn build_ebpf() -> Result<(), String> {
    let dir = manifest_dir()?.join("../ebpf");
    println!("cargo:rerun-if-changed={}", dir.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut sources: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    let clang = std::env::var("MESH_CLANG").unwrap_or_else(|_| "clang-19".into());
    for source in sources {
        println!("cargo:rerun-if-changed={}", source.display());
        let name = source
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let object = out.join(name.replace(".bpf.c", ".bpf.o"));
        let status = Command::new(&clang)
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-I")
            .arg(&dir)
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .status()
            .map_err(|e| {
                format!(
                    "cannot run {clang} ({e}): run `cargo xtask deps`, which installs clang-19 \
                     and libbpf-dev (or set MESH_CLANG to another clang)"
                )
            })?;
        if !status.success() {
            return Err(format!(
                "{clang} failed on {} (its messages are above); if it cannot find \
                 bpf/bpf_helpers.h, run `cargo xtask deps`, which installs libbpf-dev",
                source.display()
            ));
        }
    }
    Ok(())
}
