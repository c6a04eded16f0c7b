//! Conversion of whole stacks, table-driven, with compose files from Docker's own documentation
//! and samples as fixtures.

use super::*;
use crate::compose::{ComposeFile, IMAGE_LABEL, load};
use mesh_proto::service_spec::Mode;
use mesh_proto::{EndpointMode, MountType, PortProtocol, PublishMode, RestartCondition};

fn env() -> HashMap<String, String> {
    [("HOME", "/home/u"), ("FROM_CLIENT", "c")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn files(path: &Path) -> Result<String, String> {
    match path.to_str() {
        Some("/srv/app/web.env") => Ok("# comment\nA=from-file\nB=from-file\n\nBARE\n".into()),
        _ => Err(format!("cannot read {}: no such file", path.display())),
    }
}

pub(super) fn plan(text: &str) -> Result<Plan, String> {
    let env = env();
    let loaded = load(
        &[ComposeFile {
            name: "stack.yml".into(),
            text: text.into(),
        }],
        &env,
    )
    .map_err(|e| e.to_string())?;
    let context = Context {
        stack: "shop",
        working_dir: Path::new("/srv/app"),
        env: &env,
        read: &files,
    };
    convert(&loaded.config, &context).map_err(|e| e.to_string())
}

const STACK: &str = r#"
version: "3.8"
services:
  web:
    image: mesh/busybox:latest
    entrypoint: /bin/sh -c
    command: ["httpd -f -p 80"]
    env_file: web.env
    environment:
      B: from-environment
      FROM_CLIENT:
    labels: [tier=front]
    ports:
      - "8080:80"
      - "9000-9001:7000-7001/udp"
      - {target: 443, published: 8443, mode: host}
    volumes:
      - data:/data
      - ./static:/static:ro
      - type: tmpfs
        target: /scratch
        tmpfs: {size: 1048576}
      - /anonymous
    healthcheck:
      test: nc -z localhost 80
      interval: 5s
      retries: 2
    stop_grace_period: 1m30s
    user: "1000:1000"
    working_dir: /srv
    hostname: web-host
    networks:
      front:
        aliases: [www]
    deploy:
      replicas: 3
      labels: {team: shop}
      endpoint_mode: vip
      placement:
        constraints: [node.role == worker]
        preferences: [{spread: node.labels.zone}]
        max_replicas_per_node: 2
      resources:
        limits: {cpus: '0.5', memory: 64M}
        reservations: {cpus: 0.25, memory: 32M}
      restart_policy: {condition: on-failure, delay: 2s, max_attempts: 3, window: 1m}
      update_config: {parallelism: 2, delay: 10s, failure_action: rollback, monitor: 5s, max_failure_ratio: 0.5, order: start-first}
      rollback_config: {parallelism: 1, failure_action: continue}
  db:
    image: mesh/busybox:latest
    restart: on-failure:4
    healthcheck: {disable: true}
    deploy: {mode: global, endpoint_mode: dnsrr}
  agent:
    image: mesh/busybox:latest
    networks: [default, outside]
volumes:
  data:
    driver: local
    driver_opts: {type: tmpfs, device: tmpfs}
    labels: {kind: scratch}
networks:
  front:
    attachable: true
    ipam: {config: [{subnet: 10.77.0.0/24}]}
    labels: {net: front}
  outside:
    external: true
    name: shared-net
"#;

#[test]
fn a_stack_converts_as_docker_converts_it() {
    let plan = plan(STACK).expect("converts");
    let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["shop_agent", "shop_db", "shop_web"]);
    let networks: Vec<&str> = plan.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        networks,
        ["shop_default", "shop_front"],
        "only networks in use"
    );
    assert_eq!(plan.external_networks, ["shared-net"]);
    let front = &plan.networks[1].spec;
    assert_eq!(front.driver, "overlay");
    assert!(front.attachable);
    assert_eq!(front.ipam[0].subnet, "10.77.0.0/24");
    let front_labels = &front.annotations.as_ref().expect("annotations").labels;
    assert_eq!(
        front_labels.get(NAMESPACE_LABEL).map(String::as_str),
        Some("shop")
    );
    assert_eq!(front_labels.get("net").map(String::as_str), Some("front"));

    let web = &plan.services[2].spec;
    let labels = &web.annotations.as_ref().expect("annotations").labels;
    assert_eq!(
        labels.get(NAMESPACE_LABEL).map(String::as_str),
        Some("shop")
    );
    assert_eq!(
        labels.get(IMAGE_LABEL).map(String::as_str),
        Some("mesh/busybox:latest")
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("shop"));
    let task = web.task.as_ref().expect("task");
    let c = task.container.as_ref().expect("container");
    assert_eq!(c.command, ["/bin/sh", "-c"]);
    assert_eq!(c.args, ["httpd -f -p 80"]);
    assert_eq!(
        c.env,
        ["A=from-file", "B=from-environment", "BARE", "FROM_CLIENT=c"],
        "env_file, then environment over it, values from the client, sorted"
    );
    assert_eq!(c.labels.get("tier").map(String::as_str), Some("front"));
    assert_eq!(
        c.labels.get(NAMESPACE_LABEL).map(String::as_str),
        Some("shop")
    );
    assert_eq!(c.stop_grace_period_ns, Some(90_000_000_000));
    assert_eq!(
        (c.user.as_str(), c.dir.as_str(), c.hostname.as_str()),
        ("1000:1000", "/srv", "web-host")
    );
    let health = c.healthcheck.as_ref().expect("healthcheck");
    assert_eq!(health.test, ["CMD-SHELL", "nc -z localhost 80"]);
    assert_eq!((health.interval_ns, health.retries), (5_000_000_000, 2));

    let m = &c.mounts;
    assert_eq!(m.len(), 4);
    assert_eq!(
        (m[0].r#type, m[0].source.as_str(), m[0].target.as_str()),
        (MountType::Volume as i32, "shop_data", "/data")
    );
    assert_eq!(m[0].volume_driver, "local");
    assert_eq!(
        m[0].volume_driver_opts.get("type").map(String::as_str),
        Some("tmpfs")
    );
    assert_eq!(
        m[0].volume_labels.get("kind").map(String::as_str),
        Some("scratch")
    );
    assert_eq!(
        m[0].volume_labels.get(NAMESPACE_LABEL).map(String::as_str),
        Some("shop")
    );
    assert_eq!(
        (m[1].r#type, m[1].source.as_str(), m[1].read_only),
        (MountType::Bind as i32, "/srv/app/static", true)
    );
    assert_eq!(
        (m[2].r#type, m[2].tmpfs_size_bytes),
        (MountType::Tmpfs as i32, 1 << 20)
    );
    assert_eq!(
        (m[3].r#type, m[3].source.as_str(), m[3].target.as_str()),
        (MountType::Volume as i32, "", "/anonymous")
    );

    assert_eq!(task.networks.len(), 1);
    assert_eq!(task.networks[0].target, "shop_front");
    assert_eq!(
        task.networks[0].aliases,
        ["www", "web"],
        "the short name is an alias"
    );
    let placement = task.placement.as_ref().expect("placement");
    assert_eq!(placement.constraints, ["node.role == worker"]);
    assert_eq!(
        placement.preferences[0].spread_descriptor,
        "node.labels.zone"
    );
    assert_eq!(placement.max_replicas, 2);
    let resources = task.resources.as_ref().expect("resources");
    let limits = resources.limits.as_ref().expect("limits");
    assert_eq!(
        (limits.nano_cpus, limits.memory_bytes),
        (500_000_000, 64 << 20)
    );
    let reservations = resources.reservations.as_ref().expect("reservations");
    assert_eq!(
        (reservations.nano_cpus, reservations.memory_bytes),
        (250_000_000, 32 << 20)
    );
    let restart = task.restart.as_ref().expect("restart");
    assert_eq!(restart.condition, RestartCondition::OnFailure as i32);
    assert_eq!(
        (restart.delay_ns, restart.max_attempts, restart.window_ns),
        (Some(2_000_000_000), 3, 60_000_000_000)
    );
    assert_eq!(
        web.mode,
        Some(Mode::Replicated(mesh_proto::ReplicatedService {
            replicas: 3
        }))
    );
    let update = web.update_config.as_ref().expect("update_config");
    assert_eq!(
        (update.parallelism, update.delay_ns, update.monitor_ns),
        (2, 10_000_000_000, Some(5_000_000_000))
    );
    assert_eq!(
        update.failure_action,
        mesh_proto::UpdateFailureAction::Rollback as i32
    );
    assert_eq!(update.order, mesh_proto::UpdateOrder::StartFirst as i32);
    assert!((update.max_failure_ratio - 0.5).abs() < f32::EPSILON);
    let rollback = web.rollback_config.as_ref().expect("rollback_config");
    assert_eq!(
        rollback.failure_action,
        mesh_proto::UpdateFailureAction::Continue as i32
    );

    let endpoint = web.endpoint.as_ref().expect("endpoint");
    let ports: Vec<(u32, u32, i32, i32)> = endpoint
        .ports
        .iter()
        .map(|p| (p.published_port, p.target_port, p.protocol, p.publish_mode))
        .collect();
    let (tcp, udp) = (PortProtocol::Tcp as i32, PortProtocol::Udp as i32);
    let (ingress, host) = (PublishMode::Ingress as i32, PublishMode::Host as i32);
    assert_eq!(
        ports,
        [
            (8080, 80, tcp, ingress),
            (8443, 443, tcp, host),
            (9000, 7000, udp, ingress),
            (9001, 7001, udp, ingress)
        ]
    );

    let db = &plan.services[1].spec;
    assert_eq!(db.mode, Some(Mode::Global(mesh_proto::GlobalService {})));
    assert_eq!(
        db.endpoint.as_ref().map(|e| e.mode),
        Some(EndpointMode::Dnsrr as i32)
    );
    let db_task = db.task.as_ref().expect("task");
    assert_eq!(db_task.networks[0].target, "shop_default");
    assert_eq!(db_task.networks[0].aliases, ["db"]);
    let db_restart = db_task.restart.as_ref().expect("restart from `restart:`");
    assert_eq!(
        (db_restart.condition, db_restart.max_attempts),
        (RestartCondition::OnFailure as i32, 4)
    );
    assert_eq!(
        db_task
            .container
            .as_ref()
            .and_then(|c| c.healthcheck.as_ref())
            .map(|h| h.test.clone()),
        Some(vec!["NONE".to_string()])
    );

    let agent = plan.services[0].spec.task.as_ref().expect("task");
    let targets: Vec<&str> = agent.networks.iter().map(|n| n.target.as_str()).collect();
    assert_eq!(
        targets,
        ["shared-net", "shop_default"],
        "external networks keep their name"
    );
}

#[test]
fn the_same_file_converts_to_the_same_plan() {
    assert_eq!(plan(STACK), plan(STACK), "a re-deploy compares equal specs");
}

#[test]
fn stacks_that_do_not_make_sense_are_refused_naming_the_key() {
    let svc = |body: &str| {
        format!("version: '3.9'\nservices:\n  web:\n    image: mesh/busybox:latest\n{body}")
    };
    let cases: Vec<(String, &str)> = vec![
        (
            svc("    networks: [back]\n"),
            "services.web.networks: undefined network \"back\": declare it under the top-level networks",
        ),
        (
            svc("    volumes: ['data:/data']\n"),
            "services.web.volumes[0]: undefined volume \"data\": declare it under the top-level volumes",
        ),
        (
            svc("    secrets: [pw]\n"),
            "services.web.secrets[0]: undefined secret \"pw\": declare it under the top-level secrets",
        ),
        (
            svc("    deploy: {mode: global, replicas: 2}\n"),
            "services.web.deploy.replicas: replicas can only be used with replicated mode",
        ),
        (
            svc("    deploy: {mode: daemon}\n"),
            "services.web.deploy.mode: invalid mode \"daemon\": expected replicated or global",
        ),
        (
            svc("    deploy: {placement: {constraints: [node.colour]}}\n"),
            "services.web.deploy.placement.constraints[0]: invalid constraint \"node.colour\": expected KEY==VALUE or KEY!=VALUE",
        ),
        (
            svc("    ports: ['8080-8082:80-81']\n"),
            "services.web.ports[0]: invalid port \"8080-8082:80-81\": the published and target ranges differ in length",
        ),
        (
            svc("    ports: ['70000']\n"),
            "services.web.ports[0]: invalid port \"70000\": \"70000\" is not a port (1-65535)",
        ),
        (
            svc("    ports: [{target: 80, mode: bridge}]\n"),
            "services.web.ports[0]: invalid mode \"bridge\": expected ingress or host",
        ),
        (
            svc("    volumes: ['data:relative']\n"),
            "services.web.volumes[0]: invalid target \"relative\": must be an absolute path",
        ),
        (
            svc("    healthcheck: {test: [CMD, x], disable: true}\n"),
            "services.web.healthcheck: test and disable can't be set at the same time",
        ),
        (
            svc("    deploy: {update_config: {order: sideways}}\n"),
            "services.web.deploy.update_config.order: invalid order \"sideways\": expected stop-first or start-first",
        ),
        (
            svc("    env_file: missing.env\n"),
            "services.web.env_file[0]: cannot read /srv/app/missing.env: no such file",
        ),
        (
            svc("    deploy: {resources: {limits: {pids: 10}}}\n"),
            "services.web.deploy.resources.limits.pids: a pids limit is not supported by mesh",
        ),
        (
            "version: '3.8'\nservices:\n  web: {}\n".to_string(),
            "services.web: invalid image reference for service web: no image specified",
        ),
        (
            svc("networks:\n  default: {driver: bridge}\n"),
            "networks.default.driver: unsupported network driver \"bridge\": a stack's networks are overlay networks",
        ),
        (
            "version: '3.8'\nservices: {}\n".to_string(),
            "services: the stack has no services",
        ),
        (
            svc(
                "    secrets: [a, {source: b, target: a}]\nsecrets:\n  a: {file: ./a}\n  b: {file: ./b}\n",
            ),
            "services.web: secret references 'shop_a' and 'shop_b' have a conflicting target: '/run/secrets/a'",
        ),
        (
            svc("    configs: [{source: c, mode: 01777}]\nconfigs:\n  c: {file: ./c}\n"),
            "services.web: invalid config mode 1777 for shop_c: expected at most 0777",
        ),
        (
            svc("secrets:\n  a: {file: ./a, external: true}\n"),
            "secrets.a: an external object takes no file",
        ),
    ];
    for (text, want) in &cases {
        assert_eq!(plan(text).expect_err(text), *want, "{text}");
    }
}

#[test]
fn secrets_and_configs_become_a_plan_of_their_own() {
    let text = "version: '3.8'\nservices:\n  web:\n    image: mesh/busybox:latest\n    secrets: [pw, {source: api, target: api.key, uid: '100', gid: '101', mode: 0400}]\n    configs: [{source: site, target: /etc/site.conf}, site2]\nsecrets:\n  pw: {file: ./pw.txt}\n  api: {external: true, name: prod_api}\nconfigs:\n  site: {file: /etc/site.conf, labels: [a=b]}\n  site2: {file: site2.conf, name: shared_site}\n";
    let plan = plan(text).expect("converts");
    let names = |v: &[FilePlan]| v.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&plan.secrets), ["prod_api", "shop_pw"]);
    assert_eq!(
        plan.secrets[1].source,
        FileSource::File("/srv/app/pw.txt".into())
    );
    assert_eq!(plan.secrets[0].source, FileSource::External);
    assert_eq!(names(&plan.configs), ["shop_site", "shared_site"]);
    assert_eq!(
        plan.configs[0]
            .labels
            .get(NAMESPACE_LABEL)
            .map(String::as_str),
        Some("shop")
    );
    let c = plan.services[0]
        .spec
        .task
        .as_ref()
        .and_then(|t| t.container.as_ref())
        .expect("container");
    let secrets: Vec<(&str, &str, &str, u32)> = c
        .secrets
        .iter()
        .map(|r| {
            let f = r.file.as_ref().expect("file");
            (
                r.secret_name.as_str(),
                f.name.as_str(),
                f.uid.as_str(),
                f.mode,
            )
        })
        .collect();
    assert_eq!(
        secrets,
        [
            ("shop_pw", "pw", "0", 0o444),
            ("prod_api", "api.key", "100", 0o400)
        ],
        "the default target is the compose name; ids are the API's to fill in"
    );
    assert!(c.secrets.iter().all(|r| r.secret_id.is_empty()));
    let configs: Vec<(&str, &str)> = c
        .configs
        .iter()
        .map(|r| {
            (
                r.config_name.as_str(),
                r.file.as_ref().map_or("", |f| f.name.as_str()),
            )
        })
        .collect();
    assert_eq!(
        configs,
        [("shop_site", "/etc/site.conf"), ("shared_site", "/site2")]
    );
}
