//! `meshctl stack`: a multi-service stack from a compose file written for the test, on three
//! nodes. Services find each other by short name on the stack's network, a named volume outlives
//! its task's container, a placement constraint and a global service hold; deploying the same
//! file again restarts nothing, an edited file updates one service, `--prune` removes what left
//! the file and `stack rm` leaves nothing behind. Bad files are refused in one line before
//! anything is created; a deploy that fails half-way says what it did and a second one finishes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use mesh_tests::overlay::OverlayCluster;
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Output, require_privileged, wait_for, wait_until};
use serde_json::Value;

#[path = "stack/bad.rs"]
mod bad;

const CONVERGE: Duration = Duration::from_secs(90);
/// How long a re-deploy is watched for a restart that must not come.
const QUIET: Duration = Duration::from_secs(5);
const SERVICES: [&str; 4] = ["agent", "db", "store", "web"];

/// The stack: `web` (2 replicas) reaches `db` (busybox httpd) by name, `store` keeps `/data`
/// in the named volume `data` on one node, `agent` is global.
fn stack_file(web_image: &str, store_node: &str, with_agent: bool) -> String {
    let mut text = format!(
        r#"version: "3.8"
services:
  web:
    image: {web_image}
    command: ["sleep", "1000000"]
    stop_grace_period: 1s
    deploy:
      replicas: 2
      update_config: {{parallelism: 1, delay: 1s}}
  db:
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "mkdir -p /www && echo db-answer > /www/index.html && exec httpd -f -p 80 -h /www"]
    stop_grace_period: 1s
    secrets:
      - source: db_password
        target: db_pw
        mode: 0400
    configs:
      - source: db_conf
        target: /etc/db.conf
  store:
    image: {BUSYBOX_IMAGE}
    command: ["sleep", "1000000"]
    stop_grace_period: 1s
    volumes: ["data:/data"]
    deploy:
      placement:
        constraints: ["node.hostname == {store_node}"]
"#
    );
    if with_agent {
        text.push_str(&format!(
            "  agent:\n    image: {BUSYBOX_IMAGE}\n    command: [\"sleep\", \"1000000\"]\n    stop_grace_period: 1s\n    deploy: {{mode: global}}\n"
        ));
    }
    text.push_str("volumes:\n  data:\n");
    text.push_str("secrets:\n  db_password:\n    file: ./db_password.txt\n");
    text.push_str("configs:\n  db_conf:\n    file: ./db.conf\n");
    text
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

async fn deploy(
    cluster: &Cluster,
    file: &Path,
    extra: &[&str],
    stack: &str,
) -> anyhow::Result<Output> {
    let file = file.display().to_string();
    let mut args = vec!["stack", "deploy", "-c", file.as_str()];
    args.extend_from_slice(extra);
    args.push(stack);
    cluster.manager().meshctl(&args).await
}

/// The running containers of a service on every node, by node.
async fn containers(
    cluster: &Cluster,
    service: &str,
) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut all = BTreeMap::new();
    for node in cluster.nodes() {
        let ids: BTreeSet<String> = node.containers(service, false).await?.into_iter().collect();
        if !ids.is_empty() {
            all.insert(node.hostname().to_owned(), ids);
        }
    }
    Ok(all)
}

fn count(by_node: &BTreeMap<String, BTreeSet<String>>) -> usize {
    by_node.values().map(BTreeSet::len).sum()
}

/// Every service's running containers and store version.
async fn snapshot(
    cluster: &Cluster,
    services: &[&str],
) -> anyhow::Result<BTreeMap<String, (u64, BTreeMap<String, BTreeSet<String>>)>> {
    let mut out = BTreeMap::new();
    for service in services {
        let name = format!("shop_{service}");
        let inspect = cluster
            .manager()
            .meshctl_ok(&["service", "inspect", &name])
            .await?;
        let parsed: Value = serde_json::from_str(&inspect)?;
        let version = parsed[0]["Version"]["Index"]
            .as_u64()
            .with_context(|| format!("no version in {parsed}"))?;
        out.insert(name.clone(), (version, containers(cluster, &name).await?));
    }
    Ok(out)
}

async fn wait_converged(cluster: &Cluster, want: &[(&str, usize)]) -> anyhow::Result<()> {
    for (service, n) in want {
        let name = format!("shop_{service}");
        wait_until(CONVERGE, &format!("{name} running {n} task(s)"), || async {
            Ok(count(&containers(cluster, &name).await?) == *n)
        })
        .await?;
    }
    Ok(())
}

/// `db`'s answer, fetched from a `web` container by the short name `db`: the name is looked up
/// with the embedded DNS (busybox's static `nc` cannot resolve), the answer read with `nc`.
async fn web_reaches_db(cluster: &Cluster) -> anyhow::Result<String> {
    let web = containers(cluster, "shop_web").await?;
    let (node, ids) = web.iter().next().context("no web container")?;
    let node = cluster.node(node)?;
    let id = ids.iter().next().context("no web container")?;
    let script = "ip=$(nslookup -type=a db 127.0.0.11 | sed -n '/^Name:/,$ s/^Address: *//p' | head -n1) \
                  && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 \"$ip\" 80";
    let out = node.docker(&["exec", id, "sh", "-c", script]).await?;
    Ok(format!("{}{}", out.stdout, out.stderr))
}

#[tokio::test]
async fn a_stack_deploys_redeploys_prunes_and_leaves_nothing_behind() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = OverlayCluster::new(Cluster::builder().managers(1).workers(2).start().await?);
    let store_node = cluster.nodes()[1].hostname().to_owned();
    let dir = cluster.dir().to_owned();
    let v1 = write(
        &dir,
        "stack.yml",
        &stack_file(BUSYBOX_IMAGE, &store_node, true),
    )?;
    write(&dir, "db_password.txt", "s3cr3t-stack-value")?;
    write(&dir, "db.conf", "listen=80\n")?;

    let out = deploy(&cluster, &v1, &[], "shop")
        .await?
        .ok("stack deploy")?;
    for line in [
        "Creating secret shop_db_password",
        "Creating config shop_db_conf",
        "Creating network shop_default",
        "Creating service shop_web",
        "Creating service shop_db",
        "Creating service shop_store",
        "Creating service shop_agent",
    ] {
        ensure!(
            out.stdout.contains(line),
            "missing {line:?} in:\n{}",
            out.stdout
        );
    }
    wait_converged(
        &cluster,
        &[("web", 2), ("db", 1), ("store", 1), ("agent", 3)],
    )
    .await?;

    // The global service runs once on every node; the constrained one where it was told.
    let agents = containers(&cluster, "shop_agent").await?;
    ensure!(
        agents.len() == 3 && agents.values().all(|c| c.len() == 1),
        "agent: {agents:?}"
    );
    let store = containers(&cluster, "shop_store").await?;
    ensure!(
        store.keys().collect::<Vec<_>>() == [&store_node],
        "store runs on {store:?}, not only {store_node}"
    );

    // Labels, as docker puts them.
    let inspect: Value = serde_json::from_str(
        &cluster
            .manager()
            .meshctl_ok(&["service", "inspect", "shop_web"])
            .await?,
    )?;
    let labels = &inspect[0]["Spec"]["Labels"];
    ensure!(
        labels["com.docker.stack.namespace"] == "shop",
        "service labels: {labels}"
    );
    ensure!(
        labels["com.docker.stack.image"] == BUSYBOX_IMAGE,
        "service labels: {labels}"
    );

    // db reads its secret (relative paths start at the file's directory) and its config.
    let db = containers(&cluster, "shop_db").await?;
    let (db_node, db_ids) = db.iter().next().context("no db container")?;
    let db_id = db_ids.iter().next().context("no db container")?;
    let script = "cat /run/secrets/db_pw; stat -c %a /run/secrets/db_pw; cat /etc/db.conf";
    let files = cluster
        .node(db_node)?
        .docker(&["exec", db_id, "sh", "-c", script])
        .await?
        .ok("read the secret and config")?;
    ensure!(
        files.stdout == "s3cr3t-stack-value400\nlisten=80\n",
        "{:?}",
        files.stdout
    );

    // web finds db by its short name on the stack's network.
    let answer = wait_for(CONVERGE, "web reaching db by name", || async {
        let answer = web_reaches_db(&cluster).await?;
        Ok(answer.contains("db-answer").then_some(answer))
    })
    .await?;
    ensure!(answer.contains("200 OK"), "{answer}");

    // The named volume outlives its container: write, kill, the replacement reads it.
    let node = cluster.node(&store_node)?;
    let old = store[&store_node]
        .iter()
        .next()
        .context("store container")?
        .clone();
    node.docker(&["exec", &old, "sh", "-c", "echo kept > /data/f"])
        .await?
        .ok("write to the volume")?;
    node.docker(&["kill", &old]).await?.ok("docker kill")?;
    let new = wait_for(CONVERGE, "a replacement store task", || async {
        let now = containers(&cluster, "shop_store").await?;
        Ok(now
            .get(&store_node)
            .and_then(|c| c.iter().find(|id| **id != old).cloned()))
    })
    .await?;
    let read = node
        .docker(&["exec", &new, "cat", "/data/f"])
        .await?
        .ok("read the volume")?;
    ensure!(
        read.stdout.trim() == "kept",
        "the replacement reads {:?}",
        read.stdout
    );
    let volumes = node
        .docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            "label=com.docker.stack.namespace=shop",
        ])
        .await?
        .ok("docker volume ls")?;
    ensure!(
        volumes.stdout.split_whitespace().collect::<Vec<_>>() == ["shop_data"],
        "volumes: {:?}",
        volumes.stdout
    );

    // The same file again: nothing written, nothing restarted.
    let before = snapshot(&cluster, &SERVICES).await?;
    let out = deploy(&cluster, &v1, &[], "shop").await?.ok("re-deploy")?;
    ensure!(
        !out.stdout.contains("Creating") && !out.stdout.contains("Updating"),
        "re-deploy did something:\n{}",
        out.stdout
    );
    tokio::time::sleep(QUIET).await;
    ensure!(
        snapshot(&cluster, &SERVICES).await? == before,
        "a re-deploy changed a service or restarted a task"
    );

    // A new image for web: only web is updated, through its update_config.
    for n in cluster.nodes() {
        n.docker(&["tag", BUSYBOX_IMAGE, "mesh/busybox:v2"])
            .await?
            .ok("docker tag")?;
    }
    let v2 = write(
        &dir,
        "stack-v2.yml",
        &stack_file("mesh/busybox:v2", &store_node, true),
    )?;
    let out = deploy(&cluster, &v2, &[], "shop")
        .await?
        .ok("deploy an edited file")?;
    let updated: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("Updating service"))
        .collect();
    ensure!(
        updated.len() == 1 && updated[0].starts_with("Updating service shop_web (id: "),
        "{}",
        out.stdout
    );
    let old_web: BTreeSet<String> = before["shop_web"].1.values().flatten().cloned().collect();
    wait_until(CONVERGE, "web's tasks replaced", || async {
        let now = containers(&cluster, "shop_web").await?;
        Ok(count(&now) == 2 && now.values().flatten().all(|id| !old_web.contains(id)))
    })
    .await?;
    let after = snapshot(&cluster, &SERVICES).await?;
    for service in ["shop_agent", "shop_db"] {
        ensure!(
            after[service] == before[service],
            "{service} changed with web's image"
        );
    }
    ensure!(
        after["shop_store"].0 == before["shop_store"].0,
        "store's spec changed with web's image"
    );

    // `--prune` removes the service that left the file, and only it.
    let v3 = write(
        &dir,
        "stack-v3.yml",
        &stack_file("mesh/busybox:v2", &store_node, false),
    )?;
    let out = deploy(&cluster, &v3, &["--prune"], "shop")
        .await?
        .ok("deploy --prune")?;
    ensure!(
        out.stdout.trim() == "Removing service shop_agent",
        "{}",
        out.stdout
    );
    wait_until(CONVERGE, "agent's tasks gone", || async {
        Ok(containers(&cluster, "shop_agent").await?.is_empty())
    })
    .await?;
    let pruned = snapshot(&cluster, &["db", "store", "web"]).await?;
    ensure!(pruned["shop_db"] == after["shop_db"], "db changed on prune");

    // ls, services and ps see the stack.
    let stacks = cluster.manager().meshctl_json(&["stack", "ls"]).await?;
    ensure!(
        stacks == [serde_json::json!({"Name": "shop", "Services": "3"})],
        "{stacks:?}"
    );
    let table = cluster.manager().meshctl_ok(&["stack", "ls"]).await?;
    ensure!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.split_whitespace().eq(["NAME", "SERVICES"])),
        "{table}"
    );
    let services = cluster
        .manager()
        .meshctl_json(&["stack", "services", "shop"])
        .await?;
    let names: BTreeSet<&str> = services.iter().filter_map(|s| s["Name"].as_str()).collect();
    ensure!(
        names == BTreeSet::from(["shop_db", "shop_store", "shop_web"]),
        "{services:?}"
    );
    let tasks = cluster
        .manager()
        .meshctl_json(&["stack", "ps", "shop", "-f", "desired-state=running"])
        .await?;
    ensure!(tasks.len() == 4, "stack ps: {tasks:?}");

    // `stack rm` leaves no service, network or container.
    let out = cluster
        .manager()
        .meshctl_ok(&["stack", "rm", "shop"])
        .await?;
    for line in [
        "Removing service shop_db",
        "Removing service shop_store",
        "Removing service shop_web",
        "Removing network shop_default",
        "Removing secret shop_db_password",
        "Removing config shop_db_conf",
    ] {
        ensure!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    ensure!(
        cluster
            .manager()
            .meshctl_ok(&["service", "ls", "-q"])
            .await?
            .trim()
            .is_empty(),
        "services left"
    );
    for noun in ["secret", "config"] {
        let left = cluster.manager().meshctl_ok(&[noun, "ls", "-q"]).await?;
        ensure!(left.trim().is_empty(), "{noun}s left: {left}");
    }
    let networks = cluster.manager().meshctl_json(&["network", "ls"]).await?;
    ensure!(
        networks
            .iter()
            .all(|n| !n["Name"].as_str().unwrap_or("").starts_with("shop_")),
        "{networks:?}"
    );
    for node in cluster.nodes() {
        wait_until(
            CONVERGE,
            &format!("no container left on {}", node.hostname()),
            || async {
                Ok(node
                    .docker(&["ps", "-aq"])
                    .await?
                    .ok("docker ps")?
                    .stdout
                    .trim()
                    .is_empty())
            },
        )
        .await?;
    }
    let gone = cluster.manager().meshctl(&["stack", "ps", "shop"]).await?;
    ensure!(
        gone.stderr.trim() == "Nothing found in stack: shop",
        "{gone:?}"
    );
    cluster.close()
}
