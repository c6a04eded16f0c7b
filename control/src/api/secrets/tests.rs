//! Secrets and configs through the API handlers: what is returned, what is refused (in one line,
//! with nothing changed), and how services refer to them.

use super::*;
use mesh_proto::{
    ConfigReference, CreateServiceRequest, FileTarget, ReplicatedService, SecretReference,
    ServiceSpec, TaskSpec, UpdateServiceRequest, service_spec::Mode,
};
use tonic::Code;

const VALUE: &[u8] = b"s3cr3t-value";

fn secret_spec(name: &str, data: &[u8]) -> SecretSpec {
    SecretSpec {
        annotations: Some(Annotations {
            name: name.into(),
            ..Default::default()
        }),
        data: data.to_vec(),
    }
}

fn service_spec(name: &str, secrets: &[&str], configs: &[&str]) -> ServiceSpec {
    ServiceSpec {
        annotations: Some(Annotations {
            name: name.into(),
            ..Default::default()
        }),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "busybox".into(),
                secrets: secrets
                    .iter()
                    .map(|s| SecretReference {
                        secret_name: s.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                configs: configs
                    .iter()
                    .map(|c| ConfigReference {
                        config_name: c.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(Mode::Replicated(ReplicatedService { replicas: 1 })),
        ..Default::default()
    }
}

fn count<T: Payload + prost::Message>(store: &Store) -> usize {
    list::<T, _>(store, |run: Vec<T>| run).concat().len()
}

#[tokio::test]
async fn a_secrets_data_never_comes_back_and_a_configs_does() {
    let store = crate::store::direct_store();
    let created = create::<Secret>(&store, Some(secret_spec("db", VALUE)))
        .await
        .expect("created");
    assert!(created.spec.as_ref().is_some_and(|s| s.data.is_empty()));
    let got = get::<Secret>(&store, "db").expect("by name");
    assert_eq!(got.id, created.id);
    assert!(got.spec.as_ref().is_some_and(|s| s.data.is_empty()));
    assert!(
        get::<Secret>(&store, &created.id[..6]).is_ok(),
        "by id prefix"
    );
    assert!(
        list::<Secret, _>(&store, |run| run)
            .concat()
            .iter()
            .all(|s| s.spec.as_ref().is_some_and(|s| s.data.is_empty()))
    );
    // The store holds it, for the dispatcher.
    let stored = store
        .view(|tx| tx.get::<Secret>(&created.id))
        .expect("stored");
    assert_eq!(stored.spec.map(|s| s.data), Some(VALUE.to_vec()));

    let config = ConfigSpec {
        annotations: Some(Annotations {
            name: "app.conf".into(),
            ..Default::default()
        }),
        data: b"port=80".to_vec(),
    };
    create::<Config>(&store, Some(config))
        .await
        .expect("created");
    let got = get::<Config>(&store, "app.conf").expect("by name");
    assert_eq!(got.spec.map(|s| s.data), Some(b"port=80".to_vec()));
}

#[tokio::test]
async fn bad_secrets_are_refused_in_one_line_and_nothing_is_written() {
    let store = crate::store::direct_store();
    create::<Secret>(&store, Some(secret_spec("db", VALUE)))
        .await
        .expect("created");
    let cases: [(Option<SecretSpec>, Code, &str); 6] = [
        (None, Code::InvalidArgument, "spec is missing"),
        (
            Some(secret_spec("db", VALUE)),
            Code::AlreadyExists,
            "secret db already exists",
        ),
        (
            Some(secret_spec("", VALUE)),
            Code::InvalidArgument,
            "name must be provided",
        ),
        (
            Some(secret_spec("bad/name", VALUE)),
            Code::InvalidArgument,
            "invalid name",
        ),
        (
            Some(secret_spec("empty", b"")),
            Code::InvalidArgument,
            "larger than 0",
        ),
        (
            Some(secret_spec("big", &vec![1; MAX_SECRET_BYTES])),
            Code::InvalidArgument,
            "less than 512000 bytes",
        ),
    ];
    for (spec, code, want) in cases {
        let err = create::<Secret>(&store, spec).await.expect_err(want);
        assert_eq!(err.code(), code, "{want}: {}", err.message());
        assert!(
            err.message().contains(want) && !err.message().contains('\n'),
            "{}",
            err.message()
        );
    }
    assert_eq!(count::<Secret>(&store), 1);
}

#[tokio::test]
async fn only_labels_may_change() {
    let store = crate::store::direct_store();
    let created = create::<Secret>(&store, Some(secret_spec("db", VALUE)))
        .await
        .expect("created");
    let mut labelled = secret_spec("db", b"");
    if let Some(a) = labelled.annotations.as_mut() {
        a.labels.insert("env".into(), "prod".into());
    }
    let updated = update::<Secret>(
        &store,
        "db",
        created.meta.and_then(|m| m.version),
        Some(labelled),
    )
    .await
    .expect("labels change");
    let labels = updated.spec.and_then(|s| s.annotations).map(|a| a.labels);
    assert_eq!(
        labels.and_then(|l| l.get("env").cloned()).as_deref(),
        Some("prod")
    );
    let stored = store
        .view(|tx| tx.get::<Secret>(&created.id))
        .expect("stored");
    assert_eq!(
        stored.spec.map(|s| s.data),
        Some(VALUE.to_vec()),
        "data kept"
    );

    // The same data again is taken, as Swarm takes it (a stack re-deployed sends it).
    update::<Secret>(&store, "db", None, Some(secret_spec("db", VALUE)))
        .await
        .expect("the same data");
    for spec in [secret_spec("db", b"other"), secret_spec("renamed", b"")] {
        let err = update::<Secret>(&store, "db", None, Some(spec))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(err.message(), "only updates to Labels are allowed");
    }
    let stale = Some(mesh_proto::Version { index: 1 });
    let err = update::<Secret>(&store, "db", stale, Some(secret_spec("db", b"")))
        .await
        .expect_err("stale version");
    assert_eq!(err.code(), Code::Aborted);
}

#[tokio::test]
async fn services_resolve_references_and_removal_waits_for_them() {
    let store = crate::store::direct_store();
    let secret = create::<Secret>(&store, Some(secret_spec("db", VALUE)))
        .await
        .expect("created");
    let config = ConfigSpec {
        annotations: Some(Annotations {
            name: "app".into(),
            ..Default::default()
        }),
        data: b"x".to_vec(),
    };
    create::<Config>(&store, Some(config))
        .await
        .expect("created");

    let err = crate::api::services::create(
        &store,
        CreateServiceRequest {
            spec: Some(service_spec("web", &["db", "nope", "gone"], &[])),
        },
    )
    .await
    .expect_err("unknown secrets");
    assert_eq!(err.message(), "secrets not found: nope, gone");
    let mut conflicting = service_spec("web", &["db"], &["app"]);
    if let Some(c) = conflicting.task.as_mut().and_then(|t| t.container.as_mut()) {
        c.configs[0].file = Some(FileTarget {
            name: "/run/secrets/db".into(),
            ..Default::default()
        });
    }
    let err = crate::api::services::create(
        &store,
        CreateServiceRequest {
            spec: Some(conflicting),
        },
    )
    .await
    .expect_err("conflicting targets");
    assert!(
        err.message().contains("conflicting target"),
        "{}",
        err.message()
    );
    assert!(
        store.view(|tx| tx.list::<Service>()).is_empty(),
        "nothing created"
    );

    for name in ["web", "api"] {
        let service = crate::api::services::create(
            &store,
            CreateServiceRequest {
                spec: Some(service_spec(name, &["db"], &["app"])),
            },
        )
        .await
        .expect("created");
        let container = service
            .spec
            .and_then(|s| s.task)
            .and_then(|t| t.container)
            .expect("container");
        assert_eq!(container.secrets[0].secret_id, secret.id);
        assert_eq!(container.secrets[0].secret_name, "db");
        assert!(!container.configs[0].config_id.is_empty());
    }
    let err = remove::<Secret>(&store, "db").await.expect_err("in use");
    assert_eq!(
        err.message(),
        "secret 'db' is in use by the following services: api, web"
    );
    let err = remove::<Config>(&store, "app").await.expect_err("in use");
    assert!(
        err.message().starts_with("config 'app' is in use"),
        "{}",
        err.message()
    );

    // One service lets go of it; the other is removed.
    crate::api::services::update(
        &store,
        UpdateServiceRequest {
            service_id: "web".into(),
            spec: Some(service_spec("web", &[], &[])),
            ..Default::default()
        },
    )
    .await
    .expect("updated");
    let err = remove::<Secret>(&store, "db")
        .await
        .expect_err("still in use");
    assert_eq!(
        err.message(),
        "secret 'db' is in use by the following service: api"
    );
    crate::api::services::remove(
        &store,
        mesh_proto::RemoveServiceRequest {
            service_id: "api".into(),
        },
    )
    .await
    .expect("removed");
    remove::<Secret>(&store, "db")
        .await
        .expect("no longer in use");
    remove::<Config>(&store, "app")
        .await
        .expect("no longer in use");
    assert_eq!((count::<Secret>(&store), count::<Config>(&store)), (0, 0));
}
