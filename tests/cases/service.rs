//! meshd as systemd runs it (`Type=notify`, packaging/meshd.service): meshd is started with
//! `NOTIFY_SOCKET` naming a datagram socket the test holds, as systemd would, and the test reads
//! what meshd tells it. `READY=1` must come only once the API socket answers a request; a meshd
//! that cannot start must never say it.

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use mesh_tests::dockerd::{Dockerd, Networking};
use mesh_tests::meshctl::{binary, meshctl};
use mesh_tests::netns::{Bridge, Netns};
use mesh_tests::{process, require_privileged};

/// Bounds meshd's start: bounds the test, not a speed assertion.
const START: Duration = Duration::from_secs(60);

/// A meshd process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        process::terminate(self.0.id(), Duration::from_secs(10));
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The notification socket systemd would create, bound under `dir`.
fn notify_socket(dir: &Path) -> anyhow::Result<(UnixDatagram, std::path::PathBuf)> {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).context("cannot bind the notify socket")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok((socket, path))
}

/// The next notification within `until`, if any.
fn next_message(socket: &UnixDatagram, until: Instant) -> Option<String> {
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        if let Ok(n) = socket.recv(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

#[tokio::test]
async fn ready_is_sent_only_once_the_api_socket_answers() -> anyhow::Result<()> {
    require_privileged!();
    let temp = tempfile::Builder::new()
        .prefix(&format!("mt-{:x}-notify-", std::process::id()))
        .tempdir_in("/tmp")?;
    let bridge = Bridge::for_test()?;
    let ns = Netns::attach(&bridge, 1)?;
    let dir = temp.path().join("dockerd");
    std::fs::create_dir_all(&dir)?;
    let dockerd = Dockerd::start(&ns, &dir, Networking::None).await?;
    let (notify, notify_path) = notify_socket(temp.path())?;
    let api = temp.path().join("meshd.sock");
    let log = temp.path().join("meshd.log");
    let addr = ns.addr();
    let meshd = Command::new("nsenter")
        .arg(format!("--net={}", ns.path()))
        .arg(binary("meshd")?)
        .args([
            "--state-dir",
            &temp.path().join("state").display().to_string(),
        ])
        .args(["--socket", &api.display().to_string()])
        .args(["--docker-host", &dockerd.host()])
        .args(["--hostname", "notify1"])
        .args(["--listen-addr", &format!("{addr}:2377")])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .process_group(0)
        .spawn()
        .context("cannot start meshd")?;
    let mut meshd = Running(meshd);

    let until = Instant::now() + START;
    let ready = loop {
        let Some(message) = next_message(&notify, until) else {
            bail!(
                "no READY=1 within {START:?}:\n{}",
                mesh_tests::log_tail(&log, 30)
            );
        };
        if message.lines().any(|l| l == "READY=1") {
            break message;
        }
        if let Ok(Some(status)) = meshd.0.try_wait() {
            bail!(
                "meshd exited ({status}):\n{}",
                mesh_tests::log_tail(&log, 30)
            );
        }
    };
    // At the moment meshd says it is ready, its API answers: one request, no retry.
    let info = meshctl(&api, &["info", "--format", "json"]).await?;
    ensure!(
        info.success(),
        "READY=1 ({ready:?}) came before the API socket answered: {}",
        info.stderr
    );
    ensure!(ready.contains("STATUS=serving"), "{ready:?}");

    // Stopping is said too, as systemd expects of a notify service.
    process::signal(meshd.0.id(), "TERM");
    let stopping = next_message(&notify, Instant::now() + Duration::from_secs(10));
    ensure!(
        stopping
            .as_deref()
            .is_some_and(|m| m.lines().any(|l| l == "STOPPING=1")),
        "after SIGTERM: {stopping:?}"
    );
    let status = meshd.0.wait()?;
    ensure!(status.success(), "meshd stopped with {status}");
    Ok(())
}

/// Docker missing: meshd stops at start with one line naming the dependency, and never says
/// READY=1 (systemd would then mark the start failed and show that line).
#[tokio::test]
async fn without_docker_meshd_fails_in_one_line_and_is_never_ready() -> anyhow::Result<()> {
    require_privileged!();
    let temp = tempfile::Builder::new()
        .prefix(&format!("mt-{:x}-nodocker-", std::process::id()))
        .tempdir_in("/tmp")?;
    let (notify, notify_path) = notify_socket(temp.path())?;
    let missing = temp.path().join("docker.sock");
    let out = Command::new(binary("meshd")?)
        .args([
            "--state-dir",
            &temp.path().join("state").display().to_string(),
        ])
        .args([
            "--socket",
            &temp.path().join("meshd.sock").display().to_string(),
        ])
        .args(["--docker-host", &format!("unix://{}", missing.display())])
        .args(["--gossip-port", "0"])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .context("cannot run meshd")?;
    ensure!(!out.status.success(), "meshd started without Docker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("meshd: "))
        .collect();
    ensure!(said.len() == 1, "not one line: {stderr}");
    ensure!(
        said[0].contains("meshd needs Docker") && said[0].contains(&missing.display().to_string()),
        "{}",
        said[0]
    );
    let mut buf = [0u8; 4096];
    notify.set_nonblocking(true)?;
    while let Ok(n) = notify.recv(&mut buf) {
        let message = String::from_utf8_lossy(&buf[..n]);
        ensure!(!message.contains("READY=1"), "READY=1 without Docker");
    }
    Ok(())
}
