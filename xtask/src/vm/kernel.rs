//! Debian's kernel package, downloaded with apt and unpacked under `target/vm/<package>/`: the
//! VM boots its vmlinuz and loads its modules.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use mesh_tests::process::run_shown;

/// The metapackage whose dependency is the current kernel image.
const METAPACKAGE: &str = "linux-image-amd64";

/// An unpacked kernel package.
pub struct Kernel {
    pub package: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>/kernel`.
    pub modules: PathBuf,
}

/// The kernel `package` (default: what [`METAPACKAGE`] depends on), downloaded and unpacked
/// under `cache` unless it is there already.
pub fn fetch(cache: &Path, package: Option<&str>) -> anyhow::Result<Kernel> {
    let package = match package {
        Some(p) => p.to_owned(),
        None => current_image()?,
    };
    let root = cache.join(&package);
    if let Some(kernel) = unpacked(&package, &root)? {
        eprintln!("vm: using {package} from {}", root.display());
        return Ok(kernel);
    }
    std::fs::create_dir_all(cache)?;
    let deb = download(cache, &package)?;
    let partial = cache.join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    run_shown(
        "dpkg-deb",
        &["-x", &deb.to_string_lossy(), &partial.to_string_lossy()],
        &[],
    )?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&partial, &root)?;
    std::fs::remove_file(&deb)?;
    unpacked(&package, &root)?.with_context(|| format!("{package} has no vmlinuz or modules"))
}

/// The image package the metapackage depends on, e.g. `linux-image-6.1.0-57-amd64`.
fn current_image() -> anyhow::Result<String> {
    let out = Command::new("apt-cache")
        .args(["depends", METAPACKAGE])
        .output()
        .context("cannot run apt-cache")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_owned)
        .with_context(|| {
            format!("apt-cache does not know {METAPACKAGE}'s kernel: run `apt-get update` first")
        })
}

/// `apt-get download PACKAGE` into `dir`, updating the package lists once if apt cannot find it.
fn download(dir: &Path, package: &str) -> anyhow::Result<PathBuf> {
    let fetch = || {
        Command::new("apt-get")
            .args(["download", package])
            .current_dir(dir)
            .status()
    };
    eprintln!("+ apt-get download {package}");
    if !fetch()?.success() {
        run_shown("apt-get", &["update"], &[])?;
        if !fetch()?.success() {
            bail!("`apt-get download {package}` failed");
        }
    }
    let prefix = format!("{package}_");
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(path);
        }
    }
    bail!(
        "apt-get download {package} left no .deb in {}",
        dir.display()
    )
}

fn unpacked(package: &str, root: &Path) -> anyhow::Result<Option<Kernel>> {
    let (Ok(boot), Ok(modules)) = (
        std::fs::read_dir(root.join("boot")),
        std::fs::read_dir(root.join("lib/modules")),
    ) else {
        return Ok(None);
    };
    let vmlinuz = boot.filter_map(Result::ok).map(|e| e.path()).find(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
    });
    let release = modules.filter_map(Result::ok).map(|e| e.path()).next();
    Ok(match (vmlinuz, release) {
        (Some(vmlinuz), Some(release)) => Some(Kernel {
            package: package.to_owned(),
            vmlinuz,
            modules: release.join("kernel"),
        }),
        _ => None,
    })
}
