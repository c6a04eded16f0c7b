//! `cargo xtask fresh-check`: proves that the README's two commands work on a fresh machine, so
//! that the path cannot break again unnoticed. It builds a throwaway Debian 12 root with
//! debootstrap holding only what a fresh machine has (git, a C linker, CA certificates with this
//! machine's own authorities, and the docker client where this machine has one), lends it this
//! machine's Rust toolchain read-only, clones HEAD into it, and, with the root as the root of
//! private mount, pid and network namespaces (the network reaching out through NAT here), runs
//! with a cold target directory and an empty cargo home: `cargo xtask demo`, a request to the
//! demo's published port on every node, `cargo xtask demo down`, and `.ci/run` with `CI=true`.
//! The kernel is this machine's, as it is for CI. Every line is shown and kept in
//! `target/fresh-check/transcript.log`; the summary gives each command's time and outcome.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use mesh_tests::process::{run_shown, run_sync_ok};

use crate::{deps, step};

mod uplink;

use uplink::Uplink;

/// Everything the check keeps: the cached base root, the work root, the transcript.
pub const DIR: &str = "target/fresh-check";
pub const SUITE: &str = "bookworm";
/// What a fresh machine has besides Rust: git, a C compiler and linker with libc's development
/// files (Rust needs them to link anything), CA certificates (cargo speaks HTTPS).
const BASELINE: &str = "ca-certificates,git,gcc,libc6-dev";
/// Where the clone lives inside the root.
const CLONE: &str = "/root/mesh";
/// How each command's result is marked in the transcript, for the summary.
const MARK: &str = "fresh-check:";

#[derive(clap::Args)]
pub struct FreshArgs {
    /// The Debian mirror for debootstrap and for the root's package sources.
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    mirror: String,
    /// Run only the demo command, not the test suite.
    #[arg(long)]
    demo_only: bool,
    /// Build the base root again instead of reusing the cached one.
    #[arg(long)]
    rebuild_base: bool,
    /// Keep the work root afterwards (under target/fresh-check/root), to look inside.
    #[arg(long)]
    keep: bool,
}

pub fn check(args: &FreshArgs) -> anyhow::Result<()> {
    ensure!(
        mesh_tests::skip::is_root(),
        "the fresh-machine check builds a Debian root and mounts inside it: run it as root"
    );
    let started = Instant::now();
    deps::install_packages(deps::FRESH_CHECK_PACKAGES)?;
    let dir = std::fs::canonicalize(".")?.join(DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let base = step::run(
        "a Debian 12 base root (debootstrap, cached)",
        "check that the mirror answers, or pass another with --mirror",
        || base_root(&dir, &args.mirror, args.rebuild_base),
    )?;
    let root = dir.join("root");
    let commit = step::run(
        "a fresh root with a clean clone of HEAD",
        "see the message above; `cargo xtask fresh-check --rebuild-base` starts from scratch",
        || prepare_root(&base, &root, &args.mirror),
    )?;
    let sysroot = toolchain()?;
    let transcript = dir.join("transcript.log");
    let uplink = step::run(
        "the fresh root's own network (a namespace, NAT to this machine's)",
        "check that iproute2 and iptables work here",
        Uplink::up,
    )?;
    let outcome = step::run(
        "the README's commands inside the fresh root",
        "the transcript shows the first failure",
        || run_inside(&root, &sysroot, &uplink, args.demo_only, &transcript),
    );
    // Whatever the run made in its network goes with its namespace.
    drop(uplink);
    if !args.keep {
        remove_root(&root)?;
    }
    let marks = outcome?;
    print_summary(&commit, &marks, &transcript, started.elapsed());
    let failed: Vec<&Mark> = marks.iter().filter(|m| !m.ok).collect();
    if let Some(first) = failed.first() {
        bail!(
            "`{}` failed on the fresh root (transcript: {})",
            first.command,
            transcript.display()
        );
    }
    let wanted = if args.demo_only { 3 } else { 4 };
    ensure!(
        marks.len() == wanted,
        "only {} of the {wanted} commands reported back (transcript: {})",
        marks.len(),
        transcript.display()
    );
    Ok(())
}

/// The cached minimal Debian root with [`BASELINE`] under `dir`, built once with debootstrap
/// (again when `rebuild`).
pub fn base_root(dir: &Path, mirror: &str, rebuild: bool) -> anyhow::Result<PathBuf> {
    let base = dir.join(format!("base-{SUITE}"));
    let complete = base.join(".complete");
    if complete.exists() && !rebuild {
        eprintln!("    reusing {}", base.display());
        return Ok(base);
    }
    let partial = dir.join(format!("base-{SUITE}.partial"));
    for old in [&base, &partial] {
        remove_root(old)?;
    }
    let target = partial.display().to_string();
    let include = format!("--include={BASELINE}");
    run_shown(
        "debootstrap",
        &["--variant=minbase", &include, SUITE, &target, mirror],
        &[],
    )?;
    std::fs::rename(&partial, &base)?;
    std::fs::write(&complete, b"")?;
    Ok(base)
}

/// Copies the base to `root`, points its package sources at the mirror, gives it this machine's
/// resolver and docker client, and clones HEAD into it. Returns the commit cloned.
fn prepare_root(base: &Path, root: &Path, mirror: &str) -> anyhow::Result<String> {
    remove_root(root)?;
    run_shown(
        "cp",
        &[
            "-a",
            &base.display().to_string(),
            &root.display().to_string(),
        ],
        &[],
    )?;
    reach_packages(root, mirror)?;
    // The machines this project runs on come with a docker client (no engine) in /usr/local/bin.
    let client = Path::new("/usr/local/bin/docker");
    if client.is_file() {
        std::fs::copy(client, root.join("usr/local/bin/docker"))?;
    }
    let dirty = run_sync_ok("git", &["status", "--porcelain", "--untracked-files=no"])?;
    if !dirty.trim().is_empty() {
        eprintln!("    note: uncommitted changes here are not part of the check; it clones HEAD");
    }
    let clone = root.join(CLONE.trim_start_matches('/'));
    run_shown(
        "git",
        &["clone", "--quiet", ".", &clone.display().to_string()],
        &[],
    )?;
    let commit = run_sync_ok("git", &["rev-parse", "--short=12", "HEAD"])?;
    Ok(commit.trim().to_owned())
}

/// Points `root`'s package sources at `mirror` and gives it this machine's resolver and its own
/// certificate authorities, so that apt (and cargo) inside reach what this machine reaches.
pub fn reach_packages(root: &Path, mirror: &str) -> anyhow::Result<()> {
    let security = mirror.replace("/debian", "/debian-security");
    let sources = format!(
        "deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n\
         deb {security} {SUITE}-security main\n"
    );
    std::fs::write(root.join("etc/apt/sources.list"), sources)?;
    std::fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf"))
        .context("cannot copy /etc/resolv.conf into the root")?;
    // A machine's own certificate authorities (a site's TLS-inspecting proxy, say) come with the
    // machine: without them neither cargo nor apt would reach anything over HTTPS.
    let local_cas = Path::new("/usr/local/share/ca-certificates");
    if let Ok(entries) = std::fs::read_dir(local_cas) {
        let into = root.join("usr/local/share/ca-certificates");
        for entry in entries.flatten().filter(|e| e.path().is_file()) {
            std::fs::copy(entry.path(), into.join(entry.file_name()))?;
        }
        run_shown(
            "chroot",
            &[&root.display().to_string(), "update-ca-certificates"],
            &[],
        )?;
    }
    Ok(())
}

/// This machine's Rust toolchain directory (with cargo, rustc, rustfmt and clippy in `bin/`).
fn toolchain() -> anyhow::Result<PathBuf> {
    let sysroot = run_sync_ok("rustc", &["--print", "sysroot"])?;
    let sysroot = PathBuf::from(sysroot.trim());
    ensure!(
        sysroot.join("bin/cargo").is_file(),
        "{} has no bin/cargo: cannot lend this toolchain to the fresh root",
        sysroot.display()
    );
    Ok(sysroot)
}

/// One command's outcome, as the script inside marked it.
#[derive(Debug, PartialEq)]
struct Mark {
    command: String,
    ok: bool,
    seconds: u64,
}

/// `fresh-check: <ok|FAILED> <seconds> <command>`
fn parse_mark(line: &str) -> Option<Mark> {
    let rest = line.strip_prefix(MARK)?.trim_start();
    let (verdict, rest) = rest.split_once(' ')?;
    let (seconds, command) = rest.split_once(' ')?;
    let ok = match verdict {
        "ok" => true,
        "FAILED" => false,
        _ => return None,
    };
    Some(Mark {
        command: command.to_owned(),
        ok,
        seconds: seconds.parse().ok()?,
    })
}

/// The script run inside the root: each of the README's commands in turn, each marked with its
/// outcome and time; it stops at the first failure.
fn script(demo_only: bool) -> String {
    let mut commands = vec![
        "cargo xtask demo".to_owned(),
        // From the host's side of the demo's bridge, by bash alone: every node answers on 8080.
        "for a in 10.232.0.1 10.232.0.2 10.232.0.3; do exec 3<>/dev/tcp/$a/8080 && \
         printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '^HTTP/1.[01] 200' <&3 && \
         exec 3<&- || exit 1; done"
            .to_owned(),
        "cargo xtask demo down".to_owned(),
    ];
    if !demo_only {
        commands.push(".ci/run".to_owned());
    }
    let mut script = format!("set -u\ncd {CLONE}\n");
    for command in commands {
        let quoted = command.replace('\'', "'\\''");
        script.push_str(&format!(
            "start=$SECONDS\necho \"+ {label}\"\nif bash -c '{quoted}'; then \
             echo \"{MARK} ok $((SECONDS - start)) {label}\"; else \
             echo \"{MARK} FAILED $((SECONDS - start)) {label}\"; exit 1; fi\n",
            label = label(&command),
        ));
    }
    script
}

/// How a command shows in the transcript and the summary.
fn label(command: &str) -> &str {
    if command.starts_with("for a in") {
        "the demo answers on 8080 at every node"
    } else {
        command
    }
}

/// Runs [`script`] with `root` as the root of a private mount namespace (pivot_root, not chroot:
/// container runtimes need `/` to be the namespace's root, or `docker exec` lands outside the
/// container), of a private pid namespace, so that nothing started inside outlives the script,
/// and in the network namespace of `uplink`, so that nothing it makes meets this machine's.
/// It gets its own /proc, /run and bpffs (pins made by this machine's own runs are not its
/// leftovers) and this machine's toolchain, read-only; every line is shown and recorded; returns
/// the marks.
fn run_inside(
    root: &Path,
    sysroot: &Path,
    uplink: &Uplink,
    demo_only: bool,
    transcript: &Path,
) -> anyhow::Result<Vec<Mark>> {
    let r = root.display().to_string();
    let s = sysroot.display().to_string();
    let mounts = format!(
        "set -e\n\
         mount --bind {r} {r}\n\
         mount --rbind /dev {r}/dev && mount --make-rslave {r}/dev\n\
         mount --rbind /sys {r}/sys && mount --make-rslave {r}/sys\n\
         mount -t bpf bpf {r}/sys/fs/bpf\n\
         mount -t proc proc {r}/proc\n\
         mount -t tmpfs tmpfs {r}/run\n\
         mkdir -p {r}{s} {r}/.host\n\
         mount --bind {s} {r}{s} && mount -o remount,bind,ro {r}{s}\n\
         cd {r} && pivot_root . .host\n\
         exec /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb CI=true \
         PATH={s}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
         /bin/bash -c 'cd / && umount -l /.host && rmdir /.host && exec bash -c \"$0\"' \"$0\" 2>&1\n"
    );
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", uplink.netns()))
        .args([
            "--",
            "unshare",
            "--mount",
            "--pid",
            "--propagation",
            "private",
            "--fork",
            "--",
        ])
        .args(["/bin/sh", "-c", &mounts, &script(demo_only)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start unshare")?;
    let mut log = std::fs::File::create(transcript)
        .with_context(|| format!("cannot create {}", transcript.display()))?;
    let mut marks = Vec::new();
    let stdout = child.stdout.take().context("no stdout from unshare")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_else(|err| format!("(unreadable line: {err})"));
        eprintln!("  | {line}");
        writeln!(log, "{line}")?;
        marks.extend(parse_mark(&line));
    }
    let status = child.wait()?;
    if !status.success() && marks.iter().all(|m| m.ok) {
        bail!("the root could not be entered ({status}): see the lines above");
    }
    Ok(marks)
}

/// Removes a root directory, refusing while anything is mounted inside it.
pub fn remove_root(root: &Path) -> anyhow::Result<()> {
    if !root.exists() {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = format!("{}/", root.display());
    if let Some(mounted) = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .find(|point| point.starts_with(&prefix))
    {
        bail!("{mounted} is still mounted: unmount it before the root can be removed");
    }
    std::fs::remove_dir_all(root).with_context(|| format!("cannot remove {}", root.display()))
}

fn print_summary(commit: &str, marks: &[Mark], transcript: &Path, total: Duration) {
    println!(
        "fresh-machine check of {commit}: Debian 12 root from debootstrap ({BASELINE}), \
         this machine's Rust, a clean clone, a cold target directory"
    );
    for mark in marks {
        let verdict = if mark.ok { "ok" } else { "FAILED" };
        let took = step::took(Duration::from_secs(mark.seconds));
        println!("  {:<42} {:>6}  {took}", mark.command, verdict);
    }
    println!(
        "  in all {} (transcript: {})",
        step::took(total),
        transcript.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_read_back_from_the_transcript() {
        let cases = [
            (
                "fresh-check: ok 372 cargo xtask demo",
                Some(Mark {
                    command: "cargo xtask demo".into(),
                    ok: true,
                    seconds: 372,
                }),
            ),
            (
                "fresh-check: FAILED 9 .ci/run",
                Some(Mark {
                    command: ".ci/run".into(),
                    ok: false,
                    seconds: 9,
                }),
            ),
            ("fresh-check: maybe 9 .ci/run", None),
            ("fresh-check: ok soon .ci/run", None),
            ("+ cargo xtask demo", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_mark(line), want, "{line}");
        }
    }

    #[test]
    fn the_script_marks_every_command_and_stops_at_the_first_failure() {
        let full = script(false);
        for label in [
            "cargo xtask demo",
            "the demo answers on 8080 at every node",
            "cargo xtask demo down",
            ".ci/run",
        ] {
            assert!(full.contains(&format!("{MARK} ok $((SECONDS - start)) {label}\"")));
            assert!(full.contains(&format!(
                "{MARK} FAILED $((SECONDS - start)) {label}\"; exit 1"
            )));
        }
        assert!(!script(true).contains(".ci/run"));
    }
}
