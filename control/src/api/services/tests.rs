//! Service updates and rollbacks through the API handlers: spec versions, update status, and bad
//! input refused with nothing changed.

use super::*;
use mesh_proto::{
    Annotations, ContainerSpec, ReplicatedService, TaskSpec, UpdateConfig, UpdateFailureAction,
};
use tonic::Code;

fn spec(image: &str, env: &str) -> ServiceSpec {
    ServiceSpec {
        annotations: Some(Annotations {
            name: "web".into(),
            ..Default::default()
        }),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: image.into(),
                env: vec![env.into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(Mode::Replicated(ReplicatedService { replicas: 2 })),
        ..Default::default()
    }
}

fn image(service: &Service) -> (&str, &str) {
    let container = service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.container.as_ref())
        .expect("a container");
    (container.image.as_str(), container.env[0].as_str())
}

fn state(service: &Service) -> (UpdateState, &str) {
    let status = service.update_status.as_ref().expect("an update status");
    (
        UpdateState::try_from(status.state).expect("a state"),
        status.message.as_str(),
    )
}

async fn write(
    store: &Store,
    spec: Option<ServiceSpec>,
    rollback: bool,
) -> Result<Service, Status> {
    update(
        store,
        UpdateServiceRequest {
            service_id: "web".into(),
            version: None,
            spec,
            rollback,
        },
    )
    .await
}

async fn created(store: &Store) -> Service {
    create(
        store,
        CreateServiceRequest {
            spec: Some(spec("busybox:1", "V=1")),
        },
    )
    .await
    .expect("created")
}

#[tokio::test]
async fn rollback_swaps_the_spec_and_its_version() {
    let store = crate::store::direct_store();
    let service = created(&store).await;
    assert_eq!(service.spec_version, 1);
    assert!(service.update_status.is_none(), "creating is not an update");

    let updated = write(&store, Some(spec("busybox:2", "V=2")), false)
        .await
        .expect("updated");
    assert_eq!(
        (updated.spec_version, updated.previous_spec_version),
        (2, 1)
    );
    assert_eq!(
        state(&updated),
        (UpdateState::Updating, "update in progress")
    );

    let back = write(&store, None, true).await.expect("rolled back");
    assert_eq!(image(&back), ("busybox:1", "V=1"));
    assert_eq!((back.spec_version, back.previous_spec_version), (1, 2));
    assert_eq!(
        state(&back),
        (UpdateState::RollbackStarted, "manually requested rollback")
    );

    // Rolling back again returns to the spec rolled back from, as Swarm does.
    let again = write(&store, None, true).await.expect("rolled back again");
    assert_eq!(image(&again), ("busybox:2", "V=2"));
    assert_eq!(again.spec_version, 2);

    // A new spec never reuses a version number.
    let back = write(&store, None, true).await.expect("back to 1");
    assert_eq!(back.spec_version, 1);
    let next = write(&store, Some(spec("busybox:3", "V=3")), false)
        .await
        .expect("updated");
    assert_eq!((next.spec_version, next.previous_spec_version), (3, 1));

    // A change that leaves the task template alone is no update, and clears the status.
    let mut scaled = spec("busybox:3", "V=3");
    scaled.mode = Some(Mode::Replicated(ReplicatedService { replicas: 5 }));
    let scaled = write(&store, Some(scaled), false).await.expect("scaled");
    assert_eq!(scaled.spec_version, 3);
    assert!(scaled.update_status.is_none());
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    let store = crate::store::direct_store();
    let service = created(&store).await;
    let version = |s: &Service| s.meta.as_ref().and_then(|m| m.version);

    let err = write(&store, None, true)
        .await
        .expect_err("no previous spec");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "service web does not have a previous spec");

    let err = write(&store, Some(spec("busybox:2", "V=2")), true)
        .await
        .expect_err("a rollback with a spec");
    assert_eq!(err.code(), Code::InvalidArgument);

    for (config, want) in [
        (
            UpdateConfig {
                max_failure_ratio: 1.5,
                ..Default::default()
            },
            "invalid --update-max-failure-ratio 1.5: must be between 0 and 1",
        ),
        (
            UpdateConfig {
                delay_ns: -1,
                ..Default::default()
            },
            "--update-delay must not be negative",
        ),
        (
            UpdateConfig {
                failure_action: 9,
                ..Default::default()
            },
            "unknown --update-failure-action 9: use pause, continue or rollback",
        ),
    ] {
        let mut bad = spec("busybox:2", "V=2");
        bad.update_config = Some(config);
        let err = write(&store, Some(bad), false).await.expect_err(want);
        assert_eq!((err.code(), err.message()), (Code::InvalidArgument, want));
    }
    let mut bad = spec("busybox:2", "V=2");
    bad.rollback_config = Some(UpdateConfig {
        failure_action: UpdateFailureAction::Rollback as i32,
        ..Default::default()
    });
    let err = write(&store, Some(bad), false)
        .await
        .expect_err("rollback of a rollback");
    assert_eq!(
        err.message(),
        "--rollback-failure-action must be pause or continue"
    );

    let after = get(
        &store,
        GetServiceRequest {
            reference: "web".into(),
        },
    )
    .expect("still there");
    assert_eq!(version(&after), version(&service), "nothing was written");
    assert_eq!(image(&after), ("busybox:1", "V=1"));
}
