//! Which kernel modules the VM loads, and in which order: the roots and everything they need,
//! read from each module's `.modinfo` section (`depends=`, `softdep=`, `alias=`). The package
//! carries no `modules.dep`: depmod writes it at install time.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// A module to load.
pub struct Module {
    /// Its name, with `_` for `-` as the kernel treats them.
    pub name: String,
    pub path: PathBuf,
    /// One of several modules offering what another asks for by alias (`softdep`); some may not
    /// load on the VM's CPU.
    pub optional: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Info {
    depends: Vec<String>,
    /// `softdep=pre:` names or aliases.
    pre: Vec<String>,
    aliases: Vec<String>,
}

/// `roots` and what they need under `tree` (`lib/modules/<release>/kernel`), dependencies first.
pub fn resolve(tree: &Path, roots: &[&str]) -> anyhow::Result<Vec<Module>> {
    let index = index(tree)?;
    let mut resolver = Resolver {
        index: &index,
        order: Vec::new(),
        seen: HashSet::new(),
    };
    for root in roots {
        resolver.visit(&normal(root), false)?;
    }
    Ok(resolver.order)
}

struct Resolver<'a> {
    index: &'a HashMap<String, (PathBuf, Info)>,
    order: Vec<Module>,
    seen: HashSet<String>,
}

impl Resolver<'_> {
    fn visit(&mut self, name: &str, optional: bool) -> anyhow::Result<()> {
        if !self.seen.insert(name.to_owned()) {
            return Ok(());
        }
        let (path, info) = self
            .index
            .get(name)
            .with_context(|| format!("no module {name} in the kernel package"))?;
        for wanted in &info.pre {
            let mut providers: Vec<&String> = self
                .index
                .iter()
                .filter(|(n, (_, i))| *n == wanted || i.aliases.contains(wanted))
                .map(|(n, _)| n)
                .collect();
            // The generic implementation first: it loads on any CPU.
            providers.sort_by_key(|n| (!n.contains("generic"), n.as_str()));
            for provider in providers {
                self.visit(provider, true)?;
            }
        }
        for dep in &info.depends {
            self.visit(dep, optional)?;
        }
        self.order.push(Module {
            name: name.to_owned(),
            path: path.clone(),
            optional,
        });
        Ok(())
    }
}

/// Every module under `tree` by name.
fn index(tree: &Path) -> anyhow::Result<HashMap<String, (PathBuf, Info)>> {
    let mut index = HashMap::new();
    let mut dirs = vec![tree.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            let Some(stem) = [".ko", ".ko.xz", ".ko.zst"]
                .iter()
                .find_map(|ext| file.strip_suffix(ext))
            else {
                continue;
            };
            let bytes = read_module(&path)?;
            let info = modinfo(&bytes).with_context(|| format!("{}", path.display()))?;
            index.insert(normal(stem), (path, info));
        }
    }
    Ok(index)
}

/// A module file's bytes, decompressed if it is compressed.
pub fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        return std::fs::read(path).with_context(|| format!("reading {name}"));
    };
    let out = Command::new(tool)
        .args(["-dc", &name])
        .output()
        .with_context(|| format!("cannot run {tool}"))?;
    if !out.status.success() {
        bail!("{tool} -dc {name} failed");
    }
    Ok(out.stdout)
}

fn normal(name: &str) -> String {
    name.replace('-', "_")
}

/// The `.modinfo` section of an ELF64 little-endian module: `key=value` strings, NUL-separated.
fn modinfo(elf: &[u8]) -> anyhow::Result<Info> {
    let section = section(elf, ".modinfo")?.context("no .modinfo section")?;
    let mut info = Info::default();
    for entry in section.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        match key {
            "depends" => info
                .depends
                .extend(value.split(',').filter(|d| !d.is_empty()).map(normal)),
            "softdep" => info.pre.extend(softdep_pre(value)),
            "alias" => info.aliases.push(value.to_owned()),
            _ => {}
        }
    }
    Ok(info)
}

/// `pre: a b post: c` → `a`, `b`.
fn softdep_pre(value: &str) -> Vec<String> {
    let mut pre = Vec::new();
    let mut in_pre = false;
    for word in value.split_whitespace() {
        match word {
            "pre:" => in_pre = true,
            "post:" => in_pre = false,
            name if in_pre => pre.push(name.to_owned()),
            _ => {}
        }
    }
    pre
}

/// The contents of the section called `name`, if the ELF has one.
fn section<'a>(elf: &'a [u8], name: &str) -> anyhow::Result<Option<&'a [u8]>> {
    let bad = || anyhow::anyhow!("not an ELF64 little-endian object");
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(bad());
    }
    let u16_at = |at: usize| -> anyhow::Result<usize> {
        let b = elf.get(at..at + 2).ok_or_else(bad)?;
        Ok(usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u32_at = |at: usize| -> anyhow::Result<usize> {
        let b: [u8; 4] = elf.get(at..at + 4).ok_or_else(bad)?.try_into()?;
        Ok(u32::from_le_bytes(b) as usize)
    };
    let u64_at = |at: usize| -> anyhow::Result<usize> {
        let b: [u8; 8] = elf.get(at..at + 8).ok_or_else(bad)?.try_into()?;
        Ok(usize::try_from(u64::from_le_bytes(b))?)
    };
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?);
    let header = |i: usize| shoff + i * shentsize;
    let contents = |i: usize| -> anyhow::Result<&'a [u8]> {
        let (offset, size) = (u64_at(header(i) + 0x18)?, u64_at(header(i) + 0x20)?);
        elf.get(offset..offset + size).ok_or_else(bad)
    };
    let names = contents(shstrndx)?;
    for i in 0..shnum {
        let at = u32_at(header(i))?;
        let section_name = names
            .get(at..)
            .and_then(|rest| rest.split(|&b| b == 0).next())
            .ok_or_else(bad)?;
        if section_name == name.as_bytes() {
            return contents(i).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softdeps_before_post() {
        assert_eq!(softdep_pre("pre: crc32c"), ["crc32c"]);
        assert_eq!(softdep_pre("pre: a b post: c"), ["a", "b"]);
        assert!(softdep_pre("post: c").is_empty());
    }

    /// A minimal ELF64 object: a null section, `.modinfo`, and the section-name table.
    fn object(modinfo: &[u8]) -> Vec<u8> {
        let names = b"\0.modinfo\0.shstrtab\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let info_at = elf.len();
        elf.extend_from_slice(modinfo);
        let names_at = elf.len();
        elf.extend_from_slice(names);
        let shoff = elf.len();
        let mut header = |name: u32, offset: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        header(0, 0, 0);
        header(1, info_at, modinfo.len());
        header(10, names_at, names.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf
    }

    #[test]
    fn modinfo_gives_dependencies_softdeps_and_aliases() {
        let elf = object(
            b"license=GPL\0depends=nf_conntrack,libcrc32c\0softdep=pre: crc32c\0alias=crypto-crc32c\0",
        );
        assert_eq!(
            modinfo(&elf).unwrap(),
            Info {
                depends: vec!["nf_conntrack".into(), "libcrc32c".into()],
                pre: vec!["crc32c".into()],
                aliases: vec!["crypto-crc32c".into()],
            }
        );
        assert!(modinfo(&elf[..40]).is_err(), "truncated");
        assert!(modinfo(b"not an elf at all, not at all.").is_err());
    }
}
