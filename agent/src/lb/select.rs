//! Which service load balancer meshd runs, chosen once at start with `--lb-backend`: IPVS where
//! the kernel has it, the eBPF socket balancer otherwise, or either by name.

use std::fmt;
use std::path::{Path, PathBuf};

use tracing::info;

use super::backend::{BackendError, LoadBalancer};
use super::ebpf::{LbError, Pins, SockLb};
use super::ipvs::{IpvsError, IpvsLb, IpvsSocket, NetnsTables};

/// Where the kernel shows IPVS's connection table; present exactly when IPVS is loaded.
pub const IPVS_PROC: &str = "/proc/net/ip_vs";

/// `--lb-backend`: which load balancer to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LbBackend {
    /// IPVS when the kernel has it (`/proc/net/ip_vs` exists), eBPF otherwise.
    #[default]
    Auto,
    /// The eBPF socket load balancer.
    Ebpf,
    /// IPVS in each task's sandbox.
    Ipvs,
}

/// A load balancer that was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Ebpf,
    Ipvs,
}

impl Backend {
    /// Its name, as logs and `meshctl info` show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ebpf => "ebpf",
            Self::Ipvs => "ipvs",
        }
    }

    /// Starts it: loads and attaches the eBPF programs pinned in `pins` (re-adopting what an
    /// earlier run pinned there), or readies IPVS (each sandbox's table is opened when its first
    /// VIP is set; its state lives in the sandboxes and outlives meshd by itself).
    pub fn open(self, pins: &Pins) -> Result<Box<dyn LoadBalancer>, BackendError> {
        Ok(match self {
            Self::Ebpf => Box::new(SockLb::load_pinned(pins)?),
            Self::Ipvs => Box::new(IpvsLb::new(NetnsTables)),
        })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Backend> for LbBackend {
    fn from(backend: Backend) -> Self {
        match backend {
            Backend::Ebpf => Self::Ebpf,
            Backend::Ipvs => Self::Ipvs,
        }
    }
}

/// Why the load balancer asked for cannot run here. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(
        "--lb-backend ipvs: IPVS is not available in this kernel ({} is absent); use --lb-backend ebpf or auto",
        .path.display()
    )]
    IpvsAbsent { path: PathBuf },
    #[error("--lb-backend ipvs: {}; use --lb-backend ebpf or auto", one_line(.0))]
    Ipvs(#[source] IpvsError),
    #[error("--lb-backend ebpf: the eBPF load balancer cannot load: {}", one_line(.0))]
    Ebpf(#[source] LbError),
}

/// An error's message on one line (a verifier log spans many).
fn one_line(err: &dyn std::error::Error) -> String {
    err.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl LbBackend {
    /// The backend this choice means where `ipvs_proc` (in meshd, [`IPVS_PROC`]) does or does not
    /// exist: `auto` is IPVS exactly when it exists, and `ipvs` where it does not is an error.
    pub fn resolve(self, ipvs_proc: &Path) -> Result<Backend, SelectError> {
        let has_ipvs = ipvs_proc.exists();
        match self {
            Self::Auto if has_ipvs => Ok(Backend::Ipvs),
            Self::Auto | Self::Ebpf => Ok(Backend::Ebpf),
            Self::Ipvs if has_ipvs => Ok(Backend::Ipvs),
            Self::Ipvs => Err(SelectError::IpvsAbsent {
                path: ipvs_proc.to_owned(),
            }),
        }
    }

    /// meshd's choice at start: [`LbBackend::resolve`] on this kernel, and for a backend asked
    /// for by name, proof that it runs here (the eBPF programs load and attach, or the kernel
    /// resolves the IPVS family), so that meshd stops at once instead of running without
    /// service VIPs. `auto` falls back at run time as it always has.
    pub fn select(self) -> Result<Backend, SelectError> {
        let backend = self.resolve(Path::new(IPVS_PROC))?;
        match self {
            Self::Ebpf => drop(SockLb::load().map_err(SelectError::Ebpf)?),
            Self::Ipvs => drop(IpvsSocket::open().map_err(SelectError::Ipvs)?),
            Self::Auto => {}
        }
        info!(backend = backend.name(), "service load balancer selected");
        Ok(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_ipvs_exactly_when_the_kernel_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("ip_vs");
        std::fs::write(&present, "IP Virtual Server version 1.2.1\n").unwrap();
        let absent = dir.path().join("absent");
        let cases = [
            (LbBackend::Auto, &present, Backend::Ipvs),
            (LbBackend::Auto, &absent, Backend::Ebpf),
            (LbBackend::Ebpf, &present, Backend::Ebpf),
            (LbBackend::Ebpf, &absent, Backend::Ebpf),
            (LbBackend::Ipvs, &present, Backend::Ipvs),
        ];
        for (choice, path, want) in cases {
            assert_eq!(choice.resolve(path).unwrap(), want, "{choice:?} {path:?}");
        }
    }

    #[test]
    fn forcing_ipvs_without_it_is_a_one_line_error() {
        let err = LbBackend::Ipvs
            .resolve(Path::new("/nonexistent/proc/net/ip_vs"))
            .unwrap_err();
        assert!(matches!(err, SelectError::IpvsAbsent { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "--lb-backend ipvs: IPVS is not available in this kernel \
             (/nonexistent/proc/net/ip_vs is absent); use --lb-backend ebpf or auto"
        );
    }

    /// On a kernel without IPVS (the development machines), forcing it fails the start-up
    /// check; where IPVS exists the check passes.
    #[test]
    fn select_checks_ipvs_against_this_kernel() {
        match LbBackend::Ipvs.select() {
            Ok(backend) => {
                assert!(Path::new(IPVS_PROC).exists());
                assert_eq!(backend, Backend::Ipvs);
            }
            Err(err) => {
                assert!(!Path::new(IPVS_PROC).exists(), "{err}");
                assert!(matches!(err, SelectError::IpvsAbsent { .. }), "{err:?}");
            }
        }
    }

    #[test]
    fn errors_are_rendered_on_one_line() {
        let err = SelectError::Ebpf(LbError::Io {
            path: "/sys/fs/cgroup".into(),
            source: std::io::Error::other("verifier said:\n  line 1\n  line 2"),
        });
        assert_eq!(
            err.to_string(),
            "--lb-backend ebpf: the eBPF load balancer cannot load: \
             reading /sys/fs/cgroup: verifier said: line 1 line 2"
        );
    }

    #[test]
    fn the_flag_parses_its_three_values() {
        use clap::ValueEnum;
        for (text, want) in [
            ("auto", LbBackend::Auto),
            ("ebpf", LbBackend::Ebpf),
            ("ipvs", LbBackend::Ipvs),
        ] {
            assert_eq!(LbBackend::from_str(text, false).unwrap(), want);
        }
        assert!(LbBackend::from_str("iptables", false).is_err());
        assert_eq!(LbBackend::from(Backend::Ipvs), LbBackend::Ipvs);
    }
}
