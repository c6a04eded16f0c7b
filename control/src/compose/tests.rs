//! Loading compose files: errors name the file and the key path (or line and column), warnings
//! are docker's.

use super::*;

fn file(name: &str, text: &str) -> ComposeFile {
    ComposeFile {
        name: name.to_string(),
        text: text.to_string(),
    }
}

fn load_one(text: &str) -> Result<Loaded, String> {
    load(&[file("stack.yml", text)], &HashMap::new()).map_err(|e| e.to_string())
}

#[test]
fn bad_files_are_refused_in_one_line_naming_where() {
    let cases: &[(&str, &str)] = &[
        (
            "version: '3.8'\nservices:\n  web:\n    image: x\n   bad: [\n",
            "stack.yml:5:4: did not find expected key",
        ),
        (
            "version: '3.8'\nservices:\n  web:\n    image: x\n    deploy:\n      replicas: three\n",
            "stack.yml: services.web.deploy.replicas: expected an integer, found string \"three\"",
        ),
        (
            "version: '3.8'\nservices:\n  web:\n    image: x\n    deploy:\n      replica: 3\n",
            "stack.yml: services.web.deploy.replica: unknown key \"replica\"",
        ),
        (
            "version: '3.8'\nservices:\n  web:\n    imag: x\n",
            "stack.yml: services.web.imag: unknown key \"imag\"",
        ),
        (
            "version: '2.4'\nservices:\n  web:\n    image: x\n",
            "stack.yml: version: unsupported compose file version \"2.4\": mesh reads versions 3.0 to 3.9",
        ),
        (
            "version: '3.10'\nservices: {}\n",
            "stack.yml: version: unsupported compose file version \"3.10\": mesh reads versions 3.0 to 3.9",
        ),
        (
            "version: '3.2'\nservices:\n  web:\n    image: x\n    ports: [{target: eighty}]\n",
            "stack.yml: services.web.ports[0].target: expected an integer, found string \"eighty\"",
        ),
        (
            "version: '3'\nservices:\n  web:\n    image: x\n    stop_grace_period: soon\n",
            "stack.yml: services.web.stop_grace_period: invalid duration \"soon\": expected a duration such as 10s, 1m30s or 500ms",
        ),
        (
            "version: '3'\nservices:\n  web:\n    image: x\n    deploy: {resources: {limits: {memory: lots}}}\n",
            "stack.yml: services.web.deploy.resources.limits.memory: invalid size \"lots\": expected a number with an optional unit (b, k, m, g, t), e.g. 512M",
        ),
        (
            "version: '3'\nservices:\n  web:\n    image: x\n    environment: 3\n",
            "stack.yml: services.web.environment: expected a list of KEY=VALUE strings or a mapping, found integer `3`",
        ),
        (
            "version: '3'\nservices:\n  web:\n    image: x\n    volumes_from: [db]\n",
            "stack.yml: services.web.volumes_from: not supported by docker stack deploy: To share a volume between services, define it using the top-level `volumes` option and reference it from each service that shares it using the service-level `volumes` option.",
        ),
        (
            "version: '3'\nservices:\n  web:\n    image: ${TAG:?set TAG}\n",
            "stack.yml: services.web.image: required variable TAG is missing a value: set TAG",
        ),
        ("", "stack.yml: (root): the file is empty"),
        (
            "- a\n",
            "stack.yml: (root): the top level must be a mapping",
        ),
    ];
    for (text, want) in cases {
        let got = load_one(text).expect_err(text);
        assert_eq!(&got, want, "{text}");
        assert!(!got.contains('\n'), "one line: {got}");
    }
}

#[test]
fn ignored_keys_give_docker_s_warnings_once() {
    let loaded = load(
        &[
            file(
                "a.yml",
                "version: '3.8'\nservices:\n  web:\n    image: x\n    build: .\n    restart: always\n    container_name: w\n    depends_on: [db]\n    cap_add: [NET_ADMIN]\n  db:\n    image: y\n    build: ./db\nx-common: {a: 1}\n",
            ),
            file("b.yml", "version: '3.8'\nservices:\n  web:\n    links: [db]\n"),
        ],
        &HashMap::new(),
    )
    .expect("loads");
    assert_eq!(
        loaded.warnings,
        vec![
            "Ignoring unsupported options: build, depends_on, links, restart".to_string(),
            "Ignoring deprecated options:\n\ncontainer_name: Setting the container name is not supported.".to_string(),
            "Ignoring options mesh does not support yet: cap_add".to_string(),
        ]
    );
    assert_eq!(
        loaded.config.services["web"].restart.as_deref(),
        Some("always"),
        "restart is still read for the restart policy"
    );
}

#[test]
fn several_files_merge_as_docker_merges_them() {
    let base = "version: '3.8'\nservices:\n  web:\n    image: web:1\n    command: [a, b]\n    environment: {A: '1', B: '2'}\n    ports: ['8080:80', '9090:90']\n    volumes: ['data:/data']\n    deploy:\n      replicas: 2\n      placement: {constraints: [node.role==worker]}\n      update_config: {parallelism: 2, delay: 5s}\n  db:\n    image: db:1\nnetworks:\n  back: {driver_opts: {a: '1'}}\nvolumes:\n  data: {}\n";
    let over = "version: '3.8'\nservices:\n  web:\n    image: web:2\n    command: c\n    environment: [B=3, C=4]\n    ports: [{target: 81, published: 8080}]\n    volumes: ['other:/data']\n    deploy:\n      placement: {constraints: [node.labels.zone==a]}\n      update_config: {delay: 1s}\n  cache:\n    image: cache:1\nnetworks:\n  back: {attachable: true}\nvolumes:\n  other: {}\n";
    let loaded = load(&[file("a.yml", base), file("b.yml", over)], &HashMap::new()).expect("loads");
    let config = &loaded.config;
    assert_eq!(
        config.services.keys().collect::<Vec<_>>(),
        ["cache", "db", "web"]
    );
    let web = &config.services["web"];
    assert_eq!(web.image.as_deref(), Some("web:2"));
    assert_eq!(
        web.command,
        Some(syntax::StringOrList::String("c".into())),
        "command is replaced"
    );
    let env = &web.environment.as_ref().expect("env").0;
    assert_eq!(env.get("A"), Some(&Some("1".to_string())));
    assert_eq!(env.get("B"), Some(&Some("3".to_string())));
    assert_eq!(env.get("C"), Some(&Some("4".to_string())));
    assert_eq!(
        web.ports.len(),
        2,
        "8080 replaced, 9090 kept: {:?}",
        web.ports
    );
    assert!(matches!(&web.ports[0], syntax::ShortOrLong::Long(p) if p.target == 81));
    assert_eq!(web.volumes.len(), 1, "the volume at /data is replaced");
    let deploy = web.deploy.as_ref().expect("deploy");
    assert_eq!(deploy.replicas, Some(2));
    assert_eq!(
        deploy.placement.as_ref().expect("placement").constraints,
        ["node.role==worker", "node.labels.zone==a"],
        "lists are appended"
    );
    let update = deploy.update_config.as_ref().expect("update");
    assert_eq!(update.parallelism, Some(2));
    assert_eq!(update.delay, Some(syntax::Duration(1_000_000_000)));
    let back = &config.networks["back"];
    assert_eq!(back.attachable, Some(true));
    assert!(
        back.driver_opts.is_empty(),
        "a top-level entry is replaced whole"
    );
    assert_eq!(config.volumes.len(), 2);
}

#[test]
fn versions_3_0_to_3_9_load() {
    for version in [
        "3", "3.0", "3.1", "3.2", "3.3", "3.4", "3.5", "3.6", "3.7", "3.8", "3.9",
    ] {
        let text = format!("version: '{version}'\nservices:\n  web:\n    image: x\n");
        load_one(&text).unwrap_or_else(|e| panic!("{version}: {e}"));
    }
    load_one("version: 3.7\nservices:\n  web:\n    image: x\n").expect("an unquoted version");
    load_one("services:\n  web:\n    image: x\n").expect("no version");
}

#[test]
fn keys_newer_than_the_file_s_version_are_refused() {
    let svc = |version: &str, body: &str| {
        format!("version: '{version}'\nservices:\n  web:\n    image: x\n{body}")
    };
    let cases: &[(String, Option<&str>)] = &[
        (
            svc("3.0", "    secrets: [a]\nsecrets:\n  a: {file: ./a}\n"),
            Some(
                "stack.yml: services.web.secrets: needs compose file version 3.1 or later (this file is 3.0)",
            ),
        ),
        (
            svc("3.1", "    secrets: [a]\nsecrets:\n  a: {file: ./a}\n"),
            None,
        ),
        (
            svc("3.1", "    ports: [{target: 80}]\n"),
            Some(
                "stack.yml: services.web.ports[0]: the long syntax needs compose file version 3.2 or later (this file is 3.1)",
            ),
        ),
        (svc("3.1", "    ports: ['80']\n"), None),
        (
            svc("3", "    deploy: {rollback_config: {parallelism: 1}}\n"),
            Some(
                "stack.yml: services.web.deploy.rollback_config: needs compose file version 3.7 or later (this file is 3.0)",
            ),
        ),
        (
            svc(
                "3.7",
                "    deploy: {placement: {max_replicas_per_node: 1}}\n",
            ),
            Some(
                "stack.yml: services.web.deploy.placement.max_replicas_per_node: needs compose file version 3.8 or later (this file is 3.7)",
            ),
        ),
        (
            svc(
                "3.5",
                "    volumes: [{type: tmpfs, target: /t, tmpfs: {size: 1}}]\n",
            ),
            Some(
                "stack.yml: services.web.volumes[0].tmpfs: needs compose file version 3.6 or later (this file is 3.5)",
            ),
        ),
        (
            "version: '3.3'\nx-common: {a: 1}\nservices:\n  web:\n    image: x\n".to_string(),
            Some("stack.yml: x-common: needs compose file version 3.4 or later (this file is 3.3)"),
        ),
        (
            svc("3.6", "    x-meta: {a: 1}\n"),
            Some(
                "stack.yml: services.web.x-meta: needs compose file version 3.7 or later (this file is 3.6)",
            ),
        ),
        (
            svc("3.9", "    deploy: {resources: {limits: {cpus: '1'}}}\n"),
            None,
        ),
        (
            svc("3.4", "networks:\n  n: {name: other}\n"),
            Some(
                "stack.yml: networks.n.name: needs compose file version 3.5 or later (this file is 3.4)",
            ),
        ),
    ];
    for (text, want) in cases {
        let got = load_one(text).err();
        assert_eq!(got.as_deref(), *want, "{text}");
    }
}
