//! Skipping privileged tests where they cannot run, unless CI demands that they run.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Set to `1` (CI does) to turn every skip into a failure.
pub const REQUIRE_ENV: &str = "MESH_TEST_REQUIRE_PRIVILEGED";

/// A file each skipped test appends its line to, so that `cargo xtask test` can count them.
pub const SKIP_LOG_ENV: &str = "MESH_TEST_SKIP_LOG";

/// Tools the privileged tests call, and where busybox-static puts its binary.
const TOOLS: &[&str] = &["ip", "dockerd", "docker", "nsenter", "unshare", "tar"];

/// Why privileged tests cannot run here, or `None` when they can.
pub fn privileged_unavailable() -> Option<String> {
    // /proc/self belongs to the effective uid; this crate forbids the unsafe geteuid call.
    match std::fs::metadata("/proc/self") {
        Ok(meta) if meta.uid() == 0 => {}
        Ok(meta) => return Some(format!("needs root (running as uid {})", meta.uid())),
        Err(err) => return Some(format!("cannot read /proc/self: {err}")),
    }
    if let Some(tool) = TOOLS.iter().find(|t| which(t).is_none()) {
        return Some(format!(
            "`{tool}` is not installed (cargo xtask deps installs it)"
        ));
    }
    if crate::image::busybox_binary().is_none() {
        return Some("busybox-static is not installed (cargo xtask deps installs it)".into());
    }
    None
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether the environment asks for skips to fail.
pub fn skips_are_failures() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// Finds a program on `PATH` (plus the sbin directories, which non-login root shells may miss).
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// What a skipped test returns: `()` or `Ok(())`.
pub trait Skipped {
    fn skipped() -> Self;
}

impl Skipped for () {
    fn skipped() -> Self {}
}

impl<E> Skipped for Result<(), E> {
    fn skipped() -> Self {
        Ok(())
    }
}

/// What a privileged test does here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Run,
    /// Skip, printing the reason.
    Skip(String),
    /// Fail: privileges are missing and [`REQUIRE_ENV`] demands them.
    Fail(String),
}

/// Decides from why privileged tests cannot run (if they cannot) and whether skips are failures.
pub fn verdict(unavailable: Option<String>, require: bool) -> Verdict {
    match unavailable {
        None => Verdict::Run,
        Some(reason) if require => Verdict::Fail(format!(
            "{REQUIRE_ENV}=1 but privileged tests cannot run: {reason}"
        )),
        Some(reason) => Verdict::Skip(reason),
    }
}

/// The verdict for this process and environment.
pub fn check() -> Verdict {
    verdict(privileged_unavailable(), skips_are_failures())
}

/// Says that the running test is skipped and why, in one line on the real stderr (libtest captures
/// only the print macros, so the line shows even for a passing test), and appends that line to
/// the file named by [`SKIP_LOG_ENV`], if set.
pub fn report(reason: &str) {
    let line = skip_line(std::thread::current().name(), reason);
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(err) = appended {
            let _ = writeln!(
                std::io::stderr(),
                "cannot record the skip in {}: {err}",
                Path::new(&path).display()
            );
        }
    }
}

/// `skipped: <test>: <reason>`; libtest names each test's thread after the test.
fn skip_line(thread: Option<&str>, reason: &str) -> String {
    let test = thread.filter(|t| *t != "main").unwrap_or("a test");
    format!("skipped: {test}: {reason}\n")
}

/// The skip lines recorded in `log` (one per skipped test); none when it does not exist.
pub fn recorded(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Returns early from a test (printing `skipped: <test>: <reason>`) when privileged tests cannot run;
/// panics instead when `MESH_TEST_REQUIRE_PRIVILEGED=1`.
#[macro_export]
macro_rules! require_privileged {
    () => {
        match $crate::skip::check() {
            $crate::skip::Verdict::Run => {}
            $crate::skip::Verdict::Skip(reason) => {
                $crate::skip::report(&reason);
                return $crate::skip::Skipped::skipped();
            }
            $crate::skip::Verdict::Fail(reason) => panic!("{reason}"),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_names_the_test_and_the_reason_and_is_counted() {
        assert_eq!(
            skip_line(Some("overlay::reach"), "needs root"),
            "skipped: overlay::reach: needs root\n"
        );
        assert_eq!(
            skip_line(Some("main"), "needs root"),
            "skipped: a test: needs root\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips");
        assert!(recorded(&log).is_empty());
        std::fs::write(&log, skip_line(Some("a"), "x") + &skip_line(None, "y")).unwrap();
        assert_eq!(
            recorded(&log),
            ["skipped: a: x", "skipped: a test: y"].map(String::from)
        );
    }

    #[test]
    fn verdicts() {
        let reason = || Some("needs root".to_owned());
        let cases = [
            (None, false, Verdict::Run),
            (None, true, Verdict::Run),
            (reason(), false, Verdict::Skip("needs root".into())),
            (
                reason(),
                true,
                Verdict::Fail(format!(
                    "{REQUIRE_ENV}=1 but privileged tests cannot run: needs root"
                )),
            ),
        ];
        for (unavailable, require, want) in cases {
            assert_eq!(
                verdict(unavailable.clone(), require),
                want,
                "{unavailable:?} {require}"
            );
        }
    }
}
