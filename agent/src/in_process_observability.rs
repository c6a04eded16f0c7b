//! Metrics and events of a real one-manager daemon (fake executor, no root): what a scrape and
//! `meshctl events` show while a service is created, scaled and removed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mesh_proto::control_server::Control;
use mesh_proto::{
    ClusterEvent, CreateServiceRequest, EventsRequest, GetServiceRequest, RemoveServiceRequest,
    UpdateServiceRequest,
};

use crate::exec::fake::FakeExecutor;
use crate::in_process_tests::{eventually, free_port, initialized, local, running, spec};
use crate::metrics::tests::parse;

/// The next event of `stream`, within 10 s.
async fn next(
    stream: &mut (impl futures::Stream<Item = Result<ClusterEvent, tonic::Status>> + Unpin),
) -> ClusterEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

fn summary(event: &ClusterEvent) -> String {
    let attribute = |k: &str| event.attributes.get(k).cloned().unwrap_or_default();
    match event.action.as_str() {
        "update" => format!(
            "{} {} {} {}->{}",
            event.r#type,
            event.action,
            attribute("name"),
            attribute("replicas.old"),
            attribute("replicas.new")
        ),
        _ => format!("{} {} {}", event.r#type, event.action, attribute("name")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_and_the_events_follow_a_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeExecutor::new());
    let daemon = initialized(dir.path(), free_port(), fake.clone()).await;
    let api = daemon.api().clone();
    let mut services = api
        .events(local(EventsRequest {
            types: vec!["service".into()],
            ..Default::default()
        }))
        .await
        .expect("events")
        .into_inner();

    let created = api
        .create_service(local(CreateServiceRequest {
            spec: Some(spec("web", 2)),
        }))
        .await
        .expect("create")
        .into_inner();
    eventually("2 replicas run", || async {
        running(&api, "web").await == 2
    })
    .await;

    let values = parse(&daemon.metrics().render(daemon.metrics_sample().await));
    assert_eq!(
        values.get("mesh_tasks{state=\"running\"}"),
        Some(&2.0),
        "{values:?}"
    );
    assert!(values["mesh_raft_term"] >= 1.0, "{values:?}");
    assert!(values["mesh_raft_commit_index"] >= 3.0, "{values:?}");
    assert_eq!(values.get("mesh_raft_leader"), Some(&1.0));
    assert_eq!(
        values.get("mesh_dispatcher_sessions"),
        Some(&1.0),
        "{values:?}"
    );
    assert!(
        values["mesh_raft_leader_changes_total"] >= 1.0,
        "{values:?}"
    );
    assert!(values["mesh_process_resident_memory_bytes"] > 0.0);
    let text = daemon.metrics().render(daemon.metrics_sample().await);
    let commits = text
        .lines()
        .find_map(|l| l.strip_prefix("mesh_raft_commit_latency_seconds_count "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("a commit latency count");
    assert!(commits >= 3, "{text}");

    let service = api
        .get_service(local(GetServiceRequest {
            reference: "web".into(),
        }))
        .await
        .expect("get")
        .into_inner();
    api.update_service(local(UpdateServiceRequest {
        service_id: service.id.clone(),
        version: service.meta.and_then(|m| m.version),
        spec: Some(spec("web", 3)),
        rollback: false,
    }))
    .await
    .expect("scale");
    api.remove_service(local(RemoveServiceRequest {
        service_id: created.id.clone(),
    }))
    .await
    .expect("remove");

    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = next(&mut services).await;
        assert_eq!(event.actor_id, created.id);
        seen.push(summary(&event));
    }
    assert_eq!(
        seen,
        [
            "service create web",
            "service update web 2->3",
            "service remove web"
        ]
    );

    // --since replays what was remembered, in order; a filter keeps only its type.
    let mut replay = api
        .events(local(EventsRequest {
            types: vec!["service".into()],
            since_ns: Some(0),
            until_ns: Some(mesh_control::store::now_nanos()),
        }))
        .await
        .expect("events")
        .into_inner();
    let mut replayed = Vec::new();
    while let Some(event) = replay.next().await {
        replayed.push(summary(&event.expect("an event")));
    }
    assert_eq!(replayed, seen, "a past --until ends the replay");
    let mut tasks = api
        .events(local(EventsRequest {
            types: vec!["task".into()],
            since_ns: Some(0),
            ..Default::default()
        }))
        .await
        .expect("events")
        .into_inner();
    let first = next(&mut tasks).await;
    assert_eq!(
        (first.r#type.as_str(), first.action.as_str()),
        ("task", "create")
    );
    assert_eq!(
        first.attributes.get("service").map(String::as_str),
        Some("web")
    );

    let refused = api
        .events(local(EventsRequest {
            types: vec!["container".into()],
            ..Default::default()
        }))
        .await
        .map(drop)
        .expect_err("an unknown type is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    daemon.shutdown().await;
}
