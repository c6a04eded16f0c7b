//! `meshd --lb-backend`: asking for a load balancer this kernel cannot run stops meshd at start
//! with one line on stderr, before it touches Docker or its state.

use std::path::Path;
use std::process::{Command, Output};

fn meshd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket = dir.path().join("meshd.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--socket")
        .arg(&socket)
        .args(["--docker-host", "unix:///nonexistent/docker.sock"])
        .args(args)
        .env_remove("MESH_LB_BACKEND")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        !state.exists() && !socket.exists(),
        "meshd went past its start"
    );
    out
}

const ABSENT: &str = "meshd: --lb-backend ipvs: IPVS is not available in this kernel \
                      (/proc/net/ip_vs is absent); use --lb-backend ebpf or auto\n";

#[test]
fn forcing_ipvs_without_it_fails_at_start_with_one_line() {
    if Path::new("/proc/net/ip_vs").exists() {
        eprintln!("skipped: this kernel has IPVS, so --lb-backend ipvs is not refused");
        return;
    }
    for out in [
        meshd(&["--lb-backend", "ipvs"], &[]),
        meshd(&[], &[("MESH_LB_BACKEND", "ipvs")]),
    ] {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), ABSENT);
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn an_unknown_backend_is_a_usage_error() {
    let out = meshd(&["--lb-backend", "iptables"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'iptables' for '--lb-backend <LB_BACKEND>'")
            && stderr.contains("[possible values: auto, ebpf, ipvs]"),
        "{stderr}"
    );
}
