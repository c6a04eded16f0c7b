//! Bad stacks create nothing; a deploy that fails half-way says what it did, and the next one
//! finishes the job.

use super::{deploy, write};
use anyhow::ensure;
use mesh_tests::{BUSYBOX_IMAGE, Cluster, require_privileged};

#[tokio::test]
async fn bad_stacks_create_nothing_and_a_half_done_deploy_is_finished_by_the_next()
-> anyhow::Result<()> {
    require_privileged!();
    let cluster = Cluster::builder().managers(1).start().await?;
    let dir = cluster.dir().to_owned();
    let svc = |body: &str| {
        format!("version: '3.8'\nservices:\n  web:\n    image: {BUSYBOX_IMAGE}\n{body}")
    };
    let cases = [
        (
            "syntax.yml",
            format!("version: '3.8'\nservices:\n  web:\n    image: {BUSYBOX_IMAGE}\n   bad: [\n"),
            "syntax.yml:5:4: did not find expected key",
        ),
        (
            "unknown.yml",
            svc("    deploy:\n      replica: 3\n"),
            "unknown.yml: services.web.deploy.replica: unknown key \"replica\"",
        ),
        (
            "type.yml",
            svc("    deploy:\n      replicas: three\n"),
            "type.yml: services.web.deploy.replicas: expected an integer, found string \"three\"",
        ),
        (
            "version.yml",
            format!("version: '2.4'\nservices:\n  web:\n    image: {BUSYBOX_IMAGE}\n"),
            "version.yml: version: unsupported compose file version \"2.4\": mesh reads versions 3.0 to 3.9",
        ),
        (
            "external.yml",
            svc("    networks: [outside]\nnetworks:\n  outside:\n    external: true\n"),
            "network \"outside\" is declared as external, but could not be found. You need to create a swarm-scoped network before the stack is deployed",
        ),
        (
            "external-secret.yml",
            svc("    secrets: [pw]\nsecrets:\n  pw:\n    external: true\n"),
            "secret \"pw\" is declared as external, but could not be found",
        ),
    ];
    for (name, text, want) in &cases {
        let path = write(&dir, name, text)?;
        let out = deploy(&cluster, &path, &[], "bad").await?;
        ensure!(!out.success(), "{name} was deployed");
        let line = out.stderr.trim();
        ensure!(
            line.lines().count() == 1 && line.ends_with(want),
            "{name}: {line:?}, want {want:?}"
        );
        ensure!(
            out.stdout.trim().is_empty(),
            "{name} created something: {}",
            out.stdout
        );
    }
    ensure!(
        cluster
            .manager()
            .meshctl_ok(&["service", "ls", "-q"])
            .await?
            .trim()
            .is_empty(),
        "a bad stack created a service"
    );
    let networks = cluster.manager().meshctl_json(&["network", "ls"]).await?;
    ensure!(
        networks
            .iter()
            .all(|n| !n["Name"].as_str().unwrap_or("").starts_with("bad_")),
        "{networks:?}"
    );

    // Half-way: port 18089 is taken by a service outside the stack, so `b` cannot be created.
    cluster
        .manager()
        .meshctl_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "blocker",
            "-p",
            "18089:80",
            BUSYBOX_IMAGE,
            "sleep",
            "1000000",
        ])
        .await?;
    let half = format!(
        "version: '3.8'\nservices:\n  a:\n    image: {BUSYBOX_IMAGE}\n    command: [sleep, '1000000']\n  b:\n    image: {BUSYBOX_IMAGE}\n    command: [sleep, '1000000']\n    ports: ['18089:80']\n  c:\n    image: {BUSYBOX_IMAGE}\n    command: [sleep, '1000000']\n"
    );
    let path = write(&dir, "half.yml", &half)?;
    let out = deploy(&cluster, &path, &[], "half").await?;
    ensure!(!out.success(), "the half deploy succeeded: {}", out.stdout);
    let line = out.stderr.trim();
    ensure!(line.lines().count() == 1, "{line:?}");
    ensure!(line.contains("failed to create service half_b"), "{line}");
    ensure!(
        line.contains("done: create network half_default, create service half_a;"),
        "{line}"
    );
    ensure!(line.contains("not done: create service half_c"), "{line}");
    cluster
        .manager()
        .meshctl_ok(&["service", "rm", "blocker"])
        .await?;
    let out = deploy(&cluster, &path, &[], "half")
        .await?
        .ok("the second deploy")?;
    ensure!(
        out.stdout.lines().collect::<Vec<_>>()
            == ["Creating service half_b", "Creating service half_c"],
        "the second deploy: {}",
        out.stdout
    );
    cluster
        .manager()
        .meshctl_ok(&["stack", "rm", "half"])
        .await?;
    cluster.close()
}
