//! Compiles `udp-hostname` (src/image/udp.rs behind a generated `main`) into `$OUT_DIR/udp-hostname`,
//! statically linked, for the test image: the image holds nothing but busybox, so the program
//! cannot use a shared libc. Built once per build of this crate, like any other artefact.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let source = manifest.join("src/image/udp.rs");
    println!("cargo::rerun-if-changed={}", source.display());

    let root = out.join("udp_hostname.rs");
    let program = format!(
        "#![forbid(unsafe_code)]\n\
         #[path = {:?}]\n\
         mod udp;\n\
         fn main() -> std::process::ExitCode {{\n    udp::run(std::env::args().skip(1))\n}}\n",
        source.display().to_string()
    );
    std::fs::write(&root, program).with_context(|| format!("cannot write {}", root.display()))?;

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let target = std::env::var("TARGET")?;
    let binary = out.join("udp-hostname");
    let status = Command::new(&rustc)
        .args(["--edition", "2024", "--crate-name", "udp_hostname"])
        .args(["--target", &target])
        .args(["-C", "target-feature=+crt-static"])
        .args(["-C", "opt-level=s", "-C", "strip=symbols"])
        .arg("-o")
        .arg(&binary)
        .arg(&root)
        .status()
        .with_context(|| format!("cannot run {rustc}"))?;
    if !status.success() {
        bail!(
            "{rustc} could not link udp-hostname statically for {target} ({status}); \
             it needs glibc's static libc.a (Debian's libc6-dev)"
        );
    }
    Ok(())
}
