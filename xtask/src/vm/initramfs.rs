//! The VM's initramfs, an uncompressed cpio archive in the "newc" format the kernel unpacks: the
//! probe as `/init`, the modules with the order to load them in, and iptables (the legacy
//! binary, its extensions and libraries, taken from this machine — Debian too — along with its
//! `/usr` merge symlinks and loader cache), which mesh's IPVS backend runs in each sandbox.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::modules::{Module, read_module};

/// The iptables that the probe's sandboxes run, and where its extensions are.
const IPTABLES: &str = "/usr/sbin/xtables-legacy-multi";
const XTABLES: &str = "/usr/lib/x86_64-linux-gnu/xtables";
/// Top-level directories that are symlinks into `/usr` on a merged-`/usr` system.
const MERGED: [&str; 4] = ["bin", "sbin", "lib", "lib64"];

/// The initramfs for `probe` and `modules`.
pub fn build(probe: &Path, modules: &[Module]) -> anyhow::Result<Vec<u8>> {
    let mut archive = Archive::default();
    for dir in ["proc", "sys", "run", "tmp"] {
        archive.dir(dir);
    }
    // The kernel opens /dev/console for init's standard streams before anything is mounted.
    archive.char_device("dev/console", 5, 1);
    let init = std::fs::read(probe).with_context(|| format!("reading {}", probe.display()))?;
    archive.file("init", init, 0o755);
    let mut order = String::new();
    for module in modules {
        let file = format!("{}.ko", module.name);
        archive.file(
            &format!("modules/{file}"),
            read_module(&module.path)?,
            0o644,
        );
        order.push_str(&file);
        order.push_str(if module.optional { " optional\n" } else { "\n" });
    }
    archive.file("modules/order", order.into_bytes(), 0o644);
    add_iptables(&mut archive)?;
    Ok(archive.to_bytes())
}

/// iptables as `iptables` on the default search path, with what it loads.
fn add_iptables(archive: &mut Archive) -> anyhow::Result<()> {
    let merged: Vec<(String, String)> = MERGED
        .iter()
        .filter_map(|dir| {
            let target = std::fs::read_link(Path::new("/").join(dir)).ok()?;
            Some(((*dir).to_owned(), target.to_string_lossy().into_owned()))
        })
        .collect();
    for (link, target) in &merged {
        archive.symlink(link, target);
    }
    let inside = |host: &Path| -> String {
        let path = host.to_string_lossy();
        let path = path.trim_start_matches('/');
        for (link, target) in &merged {
            if let Some(rest) = path.strip_prefix(&format!("{link}/")) {
                return format!("{target}/{rest}");
            }
        }
        path.to_owned()
    };
    let binary = Path::new(IPTABLES);
    if !binary.exists() {
        bail!("{IPTABLES} is missing: install it with `apt-get install -y iptables`");
    }
    archive.file("usr/bin/iptables", std::fs::read(binary)?, 0o755);
    let mut objects = vec![binary.to_path_buf()];
    for entry in std::fs::read_dir(XTABLES).with_context(|| format!("reading {XTABLES}"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "so") {
            archive.file(&inside(&path), std::fs::read(&path)?, 0o755);
            objects.push(path);
        }
    }
    for library in libraries(&objects)? {
        archive.file(&inside(&library), std::fs::read(&library)?, 0o755);
    }
    if let Ok(cache) = std::fs::read("/etc/ld.so.cache") {
        archive.file("etc/ld.so.cache", cache, 0o644);
    }
    Ok(())
}

/// The shared libraries (and the loader) `objects` need, as `ldd` finds them.
fn libraries(objects: &[PathBuf]) -> anyhow::Result<BTreeSet<PathBuf>> {
    let out = Command::new("ldd")
        .args(objects)
        .output()
        .context("cannot run ldd")?;
    if !out.status.success() {
        bail!(
            "ldd failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(ldd_paths(&String::from_utf8_lossy(&out.stdout)))
}

fn ldd_paths(text: &str) -> BTreeSet<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.ends_with(':') {
                return None; // the object ldd is listing for
            }
            let path = match line.split_once("=>") {
                Some((_, found)) => found.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[derive(Debug)]
enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    CharDevice { major: u32, minor: u32 },
    Symlink(String),
}

/// Paths (relative, `/`-separated) and what they hold; parents are added as directories.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFLNK: u32 = 0o120_000;

impl Archive {
    pub fn dir(&mut self, path: &str) {
        self.parents(path);
        self.entries.entry(path.to_owned()).or_insert(Entry::Dir);
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.parents(path);
        self.entries
            .insert(path.to_owned(), Entry::File { data, mode });
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        self.parents(path);
        self.entries
            .insert(path.to_owned(), Entry::CharDevice { major, minor });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.entries
            .insert(path.to_owned(), Entry::Symlink(target.to_owned()));
    }

    fn parents(&mut self, path: &str) {
        let mut at = 0;
        while let Some(slash) = path[at..].find('/') {
            let parent = &path[..at + slash];
            self.entries.entry(parent.to_owned()).or_insert(Entry::Dir);
            at += slash + 1;
        }
    }

    /// The archive: every entry (a parent sorts before what it holds), then the trailer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (mode, data, rdev) = match entry {
                Entry::Dir => (S_IFDIR | 0o755, &[][..], (0, 0)),
                Entry::File { data, mode } => (S_IFREG | mode, data.as_slice(), (0, 0)),
                Entry::CharDevice { major, minor } => (S_IFCHR | 0o600, &[][..], (*major, *minor)),
                Entry::Symlink(target) => (S_IFLNK | 0o777, target.as_bytes(), (0, 0)),
            };
            let nlink = if matches!(entry, Entry::Dir) { 2 } else { 1 };
            write_entry(&mut out, path, ino, mode, nlink, rdev, data);
        }
        write_entry(&mut out, "TRAILER!!!", 0, 0, 1, (0, 0), &[]);
        out
    }
}

/// One "newc" entry: a 110-byte ASCII header (magic and 13 hex fields), the NUL-terminated name
/// and the data, each padded to 4 bytes.
fn write_entry(
    out: &mut Vec<u8>,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    (rdev_major, rdev_minor): (u32, u32),
    data: &[u8],
) {
    let size = u32::try_from(data.len()).expect("a file under 4 GiB");
    let name_size = u32::try_from(name.len() + 1).expect("a short name");
    let fields = [
        ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev_major, rdev_minor, name_size, 0,
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad(out);
    out.extend_from_slice(data);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_newc_with_parents_first_and_a_trailer() {
        let mut archive = Archive::default();
        archive.file("a/b", b"xyz".to_vec(), 0o644);
        let bytes = archive.to_bytes();
        // "a" (dir), "a/b" (file), trailer.
        let dir_header = &bytes[..110];
        assert_eq!(&dir_header[..6], b"070701");
        assert_eq!(&dir_header[6..14], b"00000001", "ino");
        assert_eq!(&dir_header[14..22], b"000041ED", "mode: directory 0755");
        assert_eq!(&dir_header[94..102], b"00000002", "name size");
        // 110 + "a\0" = 112, already aligned.
        assert_eq!(&bytes[110..112], b"a\0");
        let file = &bytes[112..];
        assert_eq!(&file[14..22], b"000081A4", "mode: regular 0644");
        assert_eq!(&file[54..62], b"00000003", "file size");
        // 110 + "a/b\0" = 114, padded to 116; then the data, padded to 4.
        assert_eq!(&file[110..116], b"a/b\0\0\0");
        assert_eq!(&file[116..120], b"xyz\0");
        let trailer = &file[120..];
        assert_eq!(&trailer[110..121], b"TRAILER!!!\0");
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(trailer.len(), 124);
    }

    #[test]
    fn devices_and_symlinks() {
        let mut archive = Archive::default();
        archive.char_device("dev/console", 5, 1);
        archive.symlink("lib", "usr/lib");
        let bytes = archive.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        // dev (dir), dev/console, lib.
        let console = text.find("dev/console").unwrap() - 110;
        assert_eq!(
            &text[console + 14..console + 22],
            "00002180",
            "char device 0600"
        );
        assert_eq!(
            &text[console + 78..console + 94],
            "0000000500000001",
            "rdev 5:1"
        );
        let lib = text.find("lib\0").unwrap() - 110;
        assert_eq!(&text[lib + 14..lib + 22], "0000A1FF", "symlink 0777");
        assert!(text.contains("lib\0\0\0usr/lib"), "the target is the data");
    }

    #[test]
    fn ldd_output_gives_the_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                    \tlibxtables.so.12 => /lib/x86_64-linux-gnu/libxtables.so.12 (0x00007f30)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f30)\n\
                    /usr/sbin/xtables-legacy-multi:\n";
        let paths: Vec<PathBuf> = ldd_paths(text).into_iter().collect();
        assert_eq!(
            paths,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libxtables.so.12"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
