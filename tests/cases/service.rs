//! meshd as systemd runs it (packaging/meshd.service). `Type=notify`: meshd is started with
//! `NOTIFY_SOCKET` naming a datagram socket the test holds, as systemd would, and the test reads
//! what meshd tells it; `READY=1` must come only once the API socket answers a request, and a meshd
//! that cannot start must never say it. `CapabilityBoundingSet=`: a cluster whose meshds hold only
//! the unit's capabilities runs tasks on an overlay, answers on the routing mesh and balances a VIP.

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use mesh_tests::dockerd::{Dockerd, Networking};
use mesh_tests::meshctl::{binary, meshctl};
use mesh_tests::netns::{Bridge, Netns};
use mesh_tests::overlay::OverlayCluster;
use mesh_tests::{BUSYBOX_IMAGE, Cluster, process, require_privileged, wait_for};

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
    // Its own tmpfs for secrets (unmounted with dockerd), not the host's /run/mesh/secrets.
    let secrets = mesh_tests::secrets::mount(&dir)?;
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
        .args(["--secrets-dir", &secrets.display().to_string()])
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

/// A bad config file: one line naming the file and the key, and EX_CONFIG, the exit status the
/// unit does not restart on (`RestartPreventExitStatus=78`). Needs no root.
#[test]
fn a_bad_config_file_stops_meshd_in_one_line_with_ex_config() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let file = temp.path().join("meshd.toml");
    for (text, key) in [
        ("gossip-port = \"many\"\n", "key `gossip-port`"),
        ("gosip-port = 7946\n", "key `gosip-port`"),
        ("gossip-port = \n", "line 1"),
    ] {
        std::fs::write(&file, text)?;
        let out = Command::new(binary("meshd")?)
            .args(["--config", &file.display().to_string()])
            .args(["--docker-host", "unix:///nonexistent/docker.sock"])
            .stdin(Stdio::null())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(78),
            "{text:?}: {} {stderr}",
            out.status
        );
        let line = format!("meshd: {}: {key}", file.display());
        ensure!(
            stderr.lines().count() == 1 && stderr.starts_with(&line),
            "{text:?}: {stderr}"
        );
    }
    Ok(())
}

/// The unit's `CapabilityBoundingSet=`.
fn unit_capabilities() -> anyhow::Result<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/meshd.service");
    let unit = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let set = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .context("the unit has no CapabilityBoundingSet=")?;
    Ok(set.split_whitespace().map(String::from).collect())
}

/// A group every Debian has, standing in for the package's `mesh`.
const SOCKET_GROUP: &str = "nogroup";

/// The id of `group`, from /etc/group.
fn group_id(group: &str) -> anyhow::Result<u32> {
    let groups = std::fs::read_to_string("/etc/group")?;
    groups
        .lines()
        .find_map(|l| {
            let mut fields = l.split(':');
            (fields.next() == Some(group))
                .then(|| fields.nth(1))
                .flatten()
                .and_then(|gid| gid.parse().ok())
        })
        .with_context(|| format!("no group {group} in /etc/group"))
}

/// A task serving its container's hostname over HTTP on port 80.
const WEB: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

#[tokio::test]
async fn a_cluster_works_with_only_the_unit_s_capabilities() -> anyhow::Result<()> {
    require_privileged!();
    let kept = unit_capabilities()?;
    let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
    let cluster = OverlayCluster::new(
        Cluster::builder()
            .managers(1)
            .workers(1)
            .capabilities(&kept)
            // Giving the API socket to a group (the package's `mesh`) takes CAP_CHOWN.
            .socket_group(SOCKET_GROUP)
            .start()
            .await?,
    );
    let group = group_id(SOCKET_GROUP)?;
    // The bounding set is what the unit says, and no more.
    for node in cluster.nodes() {
        let pid = node.meshd_pid().context("meshd runs")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let bounding = status
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .context("CapBnd")?
            .trim()
            .to_owned();
        let bits = u64::from_str_radix(&bounding, 16)?;
        ensure!(
            bits.count_ones() as usize == kept.len(),
            "meshd on {} has bounding set {bounding}, not the unit's {kept:?}",
            node.hostname()
        );
        let socket = std::fs::metadata(node.socket())?;
        ensure!(
            std::os::unix::fs::MetadataExt::gid(&socket) == group,
            "{}'s socket does not belong to group {SOCKET_GROUP}",
            node.hostname()
        );
    }
    let manager = cluster.manager();
    manager
        .meshctl_ok(&["network", "create", "-d", "overlay", "capnet"])
        .await?;
    manager
        .meshctl_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "--replicas-max-per-node",
            "1",
            "--network",
            "capnet",
            "-p",
            "8090:80",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            WEB,
        ])
        .await?;
    // A secret written with only these capabilities: its owner (CAP_CHOWN) and mode as asked.
    let secret = cluster.dir().join("capsecret");
    std::fs::write(&secret, "cap-secret-value")?;
    manager
        .meshctl_ok(&[
            "secret",
            "create",
            "capsecret",
            &secret.display().to_string(),
        ])
        .await?;
    manager
        .meshctl_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "client",
            "--network",
            "capnet",
            "--secret",
            "source=capsecret,target=token,uid=1000,gid=1000,mode=0400",
            BUSYBOX_IMAGE,
            "sleep",
            "1000000",
        ])
        .await?;
    let mut sandboxes = Vec::new();
    let web = wait_for(START, "2 web tasks and a client", async || {
        let mut web = Vec::new();
        let mut client = Vec::new();
        for node in cluster.nodes() {
            web.extend(node.sandboxes("web").await?);
            client.extend(node.sandboxes("client").await?);
        }
        Ok((web.len() == 2 && client.len() == 1).then(|| {
            sandboxes = client;
            web
        }))
    })
    .await?;
    let hostnames: Vec<String> = web.iter().map(|t| t.hostname.clone()).collect();
    // The routing mesh (iptables, ingress namespace) on every node.
    for node in cluster.nodes() {
        let addr = std::net::SocketAddr::from((node.addr(), 8090));
        let what = format!("{}:8090 to answer", node.hostname());
        let answer = wait_for(START, &what, async || {
            Ok(tokio::task::spawn_blocking(move || mesh_tests::observe::http_get(addr)).await?)
        })
        .await?;
        ensure!(hostnames.contains(&answer), "{what}: {answer}");
    }
    // The service's name (embedded DNS) and VIP (eBPF balancer) from the client's sandbox.
    let client = sandboxes.pop().context("the client")?;
    let node = cluster
        .nodes()
        .iter()
        .find(|n| n.hostname() == client.node)
        .context("the client's node")?;
    let script = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web 80";
    let answer = wait_for(START, "web to answer the client", async || {
        let out = node
            .docker(&["exec", &client.container, "sh", "-c", script])
            .await?;
        Ok(
            (out.code == 0 && out.stdout.starts_with("HTTP/1.")).then(|| {
                out.stdout
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            }),
        )
    })
    .await?;
    ensure!(hostnames.contains(&answer), "the VIP answered {answer}");
    let token = node
        .docker(&[
            "exec",
            &client.container,
            "sh",
            "-c",
            "stat -c '%u %g %a' /run/secrets/token && cat /run/secrets/token",
        ])
        .await?
        .ok("read the secret")?;
    ensure!(
        token.stdout == "1000 1000 400\ncap-secret-value",
        "the client's secret: {:?}",
        token.stdout
    );
    Ok(())
}
