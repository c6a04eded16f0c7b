//! Secrets and configs end to end on one manager and two workers, driven through meshctl as a
//! user would: a service pinned to one worker gets its secret (uid, gid and mode as asked) under
//! a read-only `/run/secrets` and its config at an absolute path; the secret's value is then
//! looked for in every file under every node's directory (state, Raft log and snapshots, Docker's
//! data root, meshd's and dockerd's logs) and may only be found in the running worker's secrets
//! tmpfs; `secret inspect`/`ls` never show it; removal is refused while the service uses it;
//! rotation by `service update --secret-rm/--secret-add` replaces the task; a meshd killed and
//! restarted leaves the running task's file readable; a task that ended and a removed service
//! leave no files.
//! Bad input is refused in one line with nothing created.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use base64::Engine as _;
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Node, Output, require_privileged, wait_for, wait_until};
use serde_json::Value;

/// Bound on convergence: bounds the test, not a speed assertion.
const CONVERGE: Duration = Duration::from_secs(90);
const SECRET_TARGET: &str = "/run/secrets/db_password";
const CONFIG_TARGET: &str = "/etc/app.conf";

/// A value no file holds by chance.
fn unique_value(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("mesh-{tag}-{:x}-{nanos:x}", std::process::id())
}

/// Writes `data` to a file under `dir` (the cluster's, outside every node's) for `create`.
fn data_file(dir: &Path, name: &str, data: &[u8]) -> anyhow::Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, data).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.display().to_string())
}

/// A command that must be refused: non-zero exit, one line on stderr containing `want`.
fn refused(out: &Output, want: &str) -> anyhow::Result<()> {
    ensure!(
        !out.success(),
        "expected a refusal ({want}), got success: {}",
        out.stdout
    );
    let line = out.stderr.trim();
    ensure!(line.contains(want), "expected {want:?} in {line:?}");
    ensure!(!line.contains('\n'), "the error is not one line: {line:?}");
    Ok(())
}

/// `docker exec CONTAINER ARGS` on `node`.
async fn exec(node: &Node, container: &str, args: &[&str]) -> anyhow::Result<Output> {
    let mut full = vec!["exec", container];
    full.extend_from_slice(args);
    node.docker(&full).await
}

/// The one running container of `service` on `node`.
async fn container(node: &Node, service: &str) -> anyhow::Result<String> {
    let what = format!("one running container of {service} on {}", node.hostname());
    wait_for(CONVERGE, &what, async || {
        let ids = node.containers(service, false).await?;
        Ok((ids.len() == 1).then(|| ids[0].clone()))
    })
    .await
}

/// What `value` may look like in a file: as is, base64 (JSON of bytes in some encoders), and as
/// the JSON array of its bytes (serde's default for `Vec<u8>`).
fn forms(value: &str) -> Vec<Vec<u8>> {
    let numbers: Vec<String> = value.bytes().map(|b| b.to_string()).collect();
    vec![
        value.as_bytes().to_vec(),
        base64::engine::general_purpose::STANDARD
            .encode(value)
            .into_bytes(),
        numbers.join(",").into_bytes(),
    ]
}

/// Every regular file under `dir` (symlinks not followed) holding one of `patterns`.
fn files_holding(dir: &Path, patterns: &[Vec<u8>], found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            files_holding(&path, patterns, found);
        } else if meta.is_file()
            && let Ok(bytes) = std::fs::read(&path)
            && patterns
                .iter()
                .any(|p| bytes.windows(p.len()).any(|w| w == p.as_slice()))
        {
            found.push(path.display().to_string());
        }
    }
}

/// The files of `node` holding `value` outside `allowed` (a directory of that node, if any).
fn leaks(node: &Node, value: &str, allowed: Option<&Path>) -> Vec<String> {
    let mut found = Vec::new();
    files_holding(node.dir(), &forms(value), &mut found);
    found.retain(|f| allowed.is_none_or(|dir| !Path::new(f).starts_with(dir)));
    found
}

/// The task directories in `node`'s secrets tmpfs.
fn task_dirs(node: &Node) -> Vec<String> {
    std::fs::read_dir(mesh_tests::secrets::dir(node.dir()))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_secret_reaches_only_its_tasks_node_and_only_in_memory() -> anyhow::Result<()> {
    require_privileged!();
    let mut cluster = Cluster::builder().managers(1).workers(2).start().await?;
    let value = unique_value("secret");
    let rotated = unique_value("rotated");
    let dir = cluster.dir().to_path_buf();
    let m = cluster.manager();
    let (w1, w2) = (&cluster.nodes()[1], &cluster.nodes()[2]);

    let file = data_file(&dir, "value", value.as_bytes())?;
    let id = m
        .meshctl_ok(&["secret", "create", "--label", "app=web", "db_pw", &file])
        .await?;
    std::fs::remove_file(&file)?;
    ensure!(id.trim().len() == 25, "secret create prints the id: {id:?}");
    let conf = data_file(&dir, "conf", b"listen=8080\n")?;
    m.meshctl_ok(&["config", "create", "app_conf", &conf])
        .await?;

    let constraint = format!("node.hostname=={}", w1.hostname());
    m.meshctl_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--constraint",
        &constraint,
        "--secret",
        "source=db_pw,target=db_password,uid=1000,gid=1000,mode=0400",
        "--config",
        "source=app_conf,target=/etc/app.conf",
        "--stop-grace-period",
        "1s",
        BUSYBOX_IMAGE,
        "sleep",
        "1000000",
    ])
    .await?;
    let first = container(w1, "web").await?;

    // Inside the container: content, owner and mode as asked; nothing can be written there.
    let read = exec(w1, &first, &["cat", SECRET_TARGET]).await?.ok("cat")?;
    ensure!(read.stdout == value, "secret content: {:?}", read.stdout);
    let stat = exec(w1, &first, &["stat", "-c", "%u %g %a", SECRET_TARGET]).await?;
    ensure!(
        stat.ok("stat")?.stdout.trim() == "1000 1000 400",
        "secret owner and mode"
    );
    let read = exec(w1, &first, &["cat", CONFIG_TARGET]).await?.ok("cat")?;
    ensure!(
        read.stdout == "listen=8080\n",
        "config content: {:?}",
        read.stdout
    );
    let stat = exec(w1, &first, &["stat", "-c", "%u %g %a", CONFIG_TARGET]).await?;
    ensure!(
        stat.ok("stat")?.stdout.trim() == "0 0 444",
        "config owner and mode"
    );
    for attempt in [
        "touch /run/secrets/planted",
        "echo x > /run/secrets/db_password",
        "echo x > /etc/app.conf",
    ] {
        let out = exec(w1, &first, &["sh", "-c", attempt]).await?;
        ensure!(!out.success(), "{attempt} succeeded in the container");
    }

    // Never shown by the API.
    for args in [
        &["secret", "inspect", "db_pw"][..],
        &["secret", "inspect", "--pretty", "db_pw"],
        &["secret", "ls"],
        &["secret", "ls", "--format", "json"],
    ] {
        let out = m.meshctl_ok(args).await?;
        ensure!(out.contains("db_pw"), "{args:?} names the secret: {out}");
        ensure!(!out.contains(&value), "{args:?} shows the value");
    }
    let inspected: Vec<Value> =
        serde_json::from_str(&m.meshctl_ok(&["secret", "inspect", "db_pw"]).await?)?;
    let spec = &inspected[0]["Spec"];
    ensure!(
        spec["Name"] == "db_pw" && spec["Labels"]["app"] == "web",
        "{spec}"
    );
    ensure!(
        spec.get("Data").is_none(),
        "secret inspect shows Data: {spec}"
    );
    let config: Vec<Value> =
        serde_json::from_str(&m.meshctl_ok(&["config", "inspect", "app_conf"]).await?)?;
    ensure!(
        config[0]["Spec"]["Data"] == "bGlzdGVuPTgwODAK",
        "{}",
        config[0]
    );
    let service: Vec<Value> =
        serde_json::from_str(&m.meshctl_ok(&["service", "inspect", "web"]).await?)?;
    let container_spec = &service[0]["Spec"]["TaskTemplate"]["ContainerSpec"];
    let secret_ref = &container_spec["Secrets"][0];
    ensure!(
        secret_ref["SecretName"] == "db_pw"
            && secret_ref["SecretID"] == id.trim()
            && secret_ref["File"]["Name"] == "db_password"
            && secret_ref["File"]["UID"] == "1000"
            && secret_ref["File"]["Mode"] == 0o400,
        "service inspect: {secret_ref}"
    );
    ensure!(container_spec["Configs"][0]["File"]["Name"] == CONFIG_TARGET);

    // Refused while in use, naming the service.
    let out = m.meshctl(&["secret", "rm", "db_pw"]).await?;
    refused(
        &out,
        "secret 'db_pw' is in use by the following service: web",
    )?;

    // On disk and in the logs: only in the running worker's tmpfs.
    let w1_tmpfs = mesh_tests::secrets::dir(w1.dir());
    for node in cluster.nodes() {
        let allowed = (node.hostname() == w1.hostname()).then_some(w1_tmpfs.as_path());
        let found = leaks(node, &value, allowed);
        ensure!(
            found.is_empty(),
            "the value is on {}'s disk: {found:?}",
            node.hostname()
        );
    }
    ensure!(
        task_dirs(w2).is_empty() && task_dirs(m).is_empty(),
        "other nodes got files"
    );
    ensure!(
        !leaks(w1, &value, None).is_empty(),
        "the search finds the tmpfs copy"
    );

    // Rotation: a new secret at the same target replaces the task.
    let file = data_file(&dir, "rotated", rotated.as_bytes())?;
    m.meshctl_ok(&["secret", "create", "db_pw_v2", &file])
        .await?;
    std::fs::remove_file(&file)?;
    m.meshctl_ok(&[
        "service",
        "update",
        "-d",
        "--secret-rm",
        "db_pw",
        "--secret-add",
        "source=db_pw_v2,target=db_password,uid=1000,gid=1000,mode=0400",
        "web",
    ])
    .await?;
    let second = wait_for(CONVERGE, "the rotated secret in a new task", async || {
        let ids = w1.containers("web", false).await?;
        let [only] = ids.as_slice() else {
            return Ok(None);
        };
        let out = exec(w1, only, &["cat", SECRET_TARGET]).await?;
        Ok((only != &first && out.stdout == rotated).then(|| only.clone()))
    })
    .await?;
    m.meshctl_ok(&["secret", "rm", "db_pw"]).await?;
    wait_until(CONVERGE, "the old task's files to go", async || {
        Ok(task_dirs(w1).len() == 1)
    })
    .await?;
    ensure!(
        leaks(w1, &value, None).is_empty(),
        "the old value is left on w1"
    );

    // A meshd killed and restarted leaves the running task's file in place.
    let index = cluster.position(w1.hostname())?;
    cluster.nodes_mut()[index].kill_meshd();
    cluster.nodes_mut()[index].restart_meshd().await?;
    let w1 = &cluster.nodes()[index];
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(
        container(w1, "web").await? == second,
        "the task was replaced"
    );
    let read = exec(w1, &second, &["cat", SECRET_TARGET])
        .await?
        .ok("cat")?;
    ensure!(
        read.stdout == rotated,
        "after the restart: {:?}",
        read.stdout
    );

    // service rm: the task's directory goes, and the secret can be removed.
    let m = cluster.manager();
    m.meshctl_ok(&["service", "rm", "web"]).await?;
    wait_until(CONVERGE, "w1's task files to go", async || {
        Ok(w1.containers("web", true).await?.is_empty() && task_dirs(w1).is_empty())
    })
    .await?;
    m.meshctl_ok(&["secret", "rm", "db_pw_v2"]).await?;
    m.meshctl_ok(&["config", "rm", "app_conf"]).await?;
    for node in cluster.nodes() {
        ensure!(
            leaks(node, &rotated, None).is_empty(),
            "value left on {}",
            node.hostname()
        );
    }
    cluster.close()
}

#[tokio::test]
async fn bad_secrets_and_references_are_refused_and_nothing_is_created() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = Cluster::builder().managers(1).workers(0).start().await?;
    let dir = cluster.dir().to_path_buf();
    let m = cluster.manager();
    let small = data_file(&dir, "small", b"hunter2")?;
    let big = data_file(&dir, "big", &vec![b'x'; 500 * 1024])?;
    m.meshctl_ok(&["secret", "create", "dup", &small]).await?;
    let missing = dir.join("missing").display().to_string();
    let cases: [(&[&str], &str); 5] = [
        (
            &["secret", "create", "large", &big],
            "less than 512000 bytes",
        ),
        (&["secret", "create", "bad/name", &small], "invalid name"),
        (
            &["secret", "create", "dup", &small],
            "secret dup already exists",
        ),
        (
            &["secret", "create", "nofile", &missing],
            "error reading content from",
        ),
        (&["config", "create", "app conf", &small], "invalid name"),
    ];
    for (args, want) in cases {
        refused(&m.meshctl(args).await?, want)?;
    }
    let service = |flag: &'static str, value: &'static str| {
        [
            "service",
            "create",
            "--name",
            "api",
            flag,
            value,
            BUSYBOX_IMAGE,
        ]
    };
    let cases = [
        (service("--secret", "nope"), "secret not found: nope"),
        (service("--config", "nope"), "config not found: nope"),
        (service("--secret", "source=dup,mode=0899"), "invalid mode"),
        (
            service("--secret", "source=dup,colour=red"),
            "invalid field key",
        ),
        (service("--secret", "source=dup,target=../x"), "'..'"),
    ];
    for (args, want) in cases {
        refused(&m.meshctl(&args).await?, want)?;
    }
    let secrets = m.meshctl_ok(&["secret", "ls", "-q"]).await?;
    ensure!(secrets.lines().count() == 1, "only dup exists: {secrets}");
    ensure!(
        m.meshctl_ok(&["service", "ls", "-q"])
            .await?
            .trim()
            .is_empty()
    );

    // The data cannot change through the API either.
    let status = update_data_as(m, "dup").await?;
    ensure!(
        status.as_deref() == Some("only updates to Labels are allowed"),
        "UpdateSecret changing the data: {status:?}"
    );
    cluster.close()
}

/// Calls `UpdateSecret` on the manager's port with a new value for `name`, over mutual TLS with
/// the manager's own certificate; returns the refusal's message, or `None` when it was taken.
async fn update_data_as(node: &Node, name: &str) -> anyhow::Result<Option<String>> {
    let identity = mesh_control::ca::TlsIdentity::from_pem(
        node.certificate_file("node.crt")?,
        node.certificate_file("node.key")?,
        node.certificate_file("ca.crt")?,
    )?;
    let addr = format!("{}:{}", node.addr(), mesh_tests::cluster::MANAGER_PORT);
    let channel = mesh_control::ca::connect(&addr, &identity).await?;
    let mut client = mesh_proto::control_client::ControlClient::new(channel);
    let request = mesh_proto::UpdateSecretRequest {
        secret_id: name.into(),
        version: None,
        spec: Some(mesh_proto::SecretSpec {
            annotations: Some(mesh_proto::Annotations {
                name: name.into(),
                ..Default::default()
            }),
            data: b"changed".to_vec(),
        }),
    };
    match client.update_secret(request).await {
        Ok(_) => Ok(None),
        Err(status) => Ok(Some(status.message().to_string())),
    }
}

/// meshd's `--secrets-dir` on a disk-backed directory: a tmpfs is mounted there (as meshd does
/// at start, in the anchoring mount namespace), and one already there is left as it is.
#[tokio::test]
async fn a_secrets_dir_on_disk_gets_a_tmpfs() -> anyhow::Result<()> {
    require_privileged!();
    let temp = tempfile::tempdir_in("/tmp")?;
    let dir = temp.path().join("secrets");
    ensure!(
        !mesh_agent::netlink::host::in_memory(temp.path()),
        "/tmp is on disk here"
    );
    let files = mesh_agent::taskfiles::TaskFiles::open(&dir);
    let mounted = mesh_agent::netlink::host::in_memory(&dir);
    let again = mesh_agent::taskfiles::TaskFiles::open(&dir).map(drop);
    let mode =
        std::fs::metadata(&dir).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
    let _ = mesh_tests::process::run_sync("umount", &["-l", &dir.display().to_string()]);
    files.map(drop)?;
    ensure!(mounted, "no tmpfs at {}", dir.display());
    again?;
    ensure!(mode? & 0o7777 == 0o700, "the tmpfs is not mode 0700");
    ensure!(!mesh_agent::netlink::host::in_memory(&dir), "unmounted");
    Ok(())
}
