//! The event mapping, the filters, the history bound and how slow subscribers are dropped.

use std::time::Duration;

use futures::StreamExt;
use mesh_proto::{
    Annotations, Cluster, ClusterEvent, ContainerSpec, EventsRequest, Network, NetworkSpec,
    ReplicatedService, Service, ServiceSpec, Task, TaskSpec, TaskState, TaskStatus,
    service_spec::Mode,
};
use tokio::sync::watch;

use super::*;
use crate::store::{Event, Read as _, StoreObject, direct_store};

fn service(id: &str, name: &str, replicas: u64, image: &str) -> Service {
    Service {
        id: id.into(),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: image.into(),
                    env: vec!["PASSWORD=hunter2".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(Mode::Replicated(ReplicatedService { replicas })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn task(state: TaskState, desired: TaskState) -> Task {
    Task {
        id: "t1".into(),
        service_id: "s1".into(),
        slot: 2,
        node_id: "n1".into(),
        service_annotations: Some(Annotations {
            name: "web".into(),
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: state as i32,
            message: "starting".into(),
            ..Default::default()
        }),
        desired_state: desired as i32,
        ..Default::default()
    }
}

fn created(object: impl StoreObject) -> Event {
    Event::Created(object.into_object())
}

fn updated<T: StoreObject>(old: T, new: T) -> Event {
    Event::Updated {
        old: old.into_object(),
        new: new.into_object(),
    }
}

fn attrs(event: &ClusterEvent) -> Vec<(String, String)> {
    let mut attributes: Vec<_> = event
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    attributes.sort();
    attributes
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn service_changes_map_to_docker_shaped_events_without_secrets() {
    let create = event(&created(service("s1", "web", 2, "busybox"))).unwrap();
    assert_eq!(
        (
            create.r#type.as_str(),
            create.action.as_str(),
            create.actor_id.as_str()
        ),
        ("service", "create", "s1")
    );
    assert_eq!(attrs(&create), pairs(&[("name", "web")]));

    let scaled = event(&updated(
        service("s1", "web", 2, "busybox"),
        service("s1", "web", 3, "busybox:2"),
    ))
    .unwrap();
    assert_eq!(scaled.action, "update");
    assert_eq!(
        attrs(&scaled),
        pairs(&[
            ("image.new", "busybox:2"),
            ("image.old", "busybox"),
            ("name", "web"),
            ("replicas.new", "3"),
            ("replicas.old", "2"),
        ])
    );
    let text = format!("{create:?}{scaled:?}");
    assert!(!text.contains("hunter2"), "{text}");

    // The allocator filling in the endpoint is no change of the user's.
    let mut allocated = service("s1", "web", 2, "busybox");
    allocated.endpoint = Some(Default::default());
    assert_eq!(
        event(&updated(service("s1", "web", 2, "busybox"), allocated,)),
        None
    );
    // An update's state moving is an update event, as docker's `updatestate.old/new`.
    let mut paused = service("s1", "web", 2, "busybox");
    paused.update_status = Some(mesh_proto::UpdateStatus {
        state: mesh_proto::UpdateState::Paused as i32,
        ..Default::default()
    });
    let mut updating = paused.clone();
    if let Some(status) = updating.update_status.as_mut() {
        status.state = mesh_proto::UpdateState::Updating as i32;
    }
    let moved = event(&updated(updating.clone(), paused)).unwrap();
    assert_eq!(
        attrs(&moved),
        pairs(&[
            ("name", "web"),
            ("updatestate.new", "paused"),
            ("updatestate.old", "updating"),
        ])
    );
    let mut reworded = updating.clone();
    if let Some(status) = reworded.update_status.as_mut() {
        status.message = "another message".into();
    }
    assert_eq!(event(&updated(updating, reworded)), None, "the same state");
    let removed = event(&Event::Deleted(
        service("s1", "web", 2, "busybox").into_object(),
    ))
    .unwrap();
    assert_eq!(
        (removed.action.as_str(), attrs(&removed)),
        ("remove", pairs(&[("name", "web")]))
    );
}

#[test]
fn task_updates_count_only_when_a_state_moves() {
    let old = task(TaskState::Starting, TaskState::Running);
    let running = task(TaskState::Running, TaskState::Running);
    let event = event(&updated(old.clone(), running)).unwrap();
    assert_eq!(
        (event.r#type.as_str(), event.action.as_str()),
        ("task", "update")
    );
    assert_eq!(
        attrs(&event),
        pairs(&[
            ("desired", "running"),
            ("node.id", "n1"),
            ("service", "web"),
            ("service.id", "s1"),
            ("slot", "2"),
            ("state", "running"),
            ("state.new", "running"),
            ("state.old", "starting"),
        ])
    );
    let mut reworded = old.clone();
    reworded.status.as_mut().unwrap().message = "still starting".into();
    assert_eq!(super::event(&updated(old, reworded)), None);
}

#[test]
fn commits_resets_and_the_cluster_object_are_not_events() {
    assert_eq!(event(&Event::Commit { index: 3 }), None);
    assert_eq!(event(&Event::Reset), None);
    assert_eq!(event(&created(Cluster::default())), None);
    let network = Network {
        id: "n1".into(),
        spec: Some(NetworkSpec {
            annotations: Some(Annotations {
                name: "back".into(),
                ..Default::default()
            }),
            driver: "overlay".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let create = event(&created(network)).unwrap();
    assert_eq!(
        attrs(&create),
        pairs(&[("name", "back"), ("type", "overlay")])
    );
}

#[test]
fn secrets_and_configs_show_their_name_and_never_their_data() {
    let secret = mesh_proto::Secret {
        id: "sec1".into(),
        spec: Some(mesh_proto::SecretSpec {
            annotations: Some(Annotations {
                name: "db".into(),
                ..Default::default()
            }),
            data: b"s3cr3t".to_vec(),
        }),
        ..Default::default()
    };
    let create = event(&created(secret)).unwrap();
    assert_eq!(
        (create.r#type.as_str(), create.actor_id.as_str()),
        ("secret", "sec1")
    );
    assert_eq!(attrs(&create), pairs(&[("name", "db")]));
    assert!(!format!("{create:?}").contains("s3cr3t"));
    let config = mesh_proto::Config {
        id: "cfg1".into(),
        spec: Some(mesh_proto::ConfigSpec {
            annotations: Some(Annotations {
                name: "app".into(),
                ..Default::default()
            }),
            data: b"port=80".to_vec(),
        }),
        ..Default::default()
    };
    let create = event(&created(config)).unwrap();
    assert_eq!(create.r#type, "config");
    assert_eq!(attrs(&create), pairs(&[("name", "app")]));
}

fn stamped(kind: &str, id: &str, time_nano: i64) -> ClusterEvent {
    ClusterEvent {
        r#type: kind.into(),
        action: "create".into(),
        actor_id: id.into(),
        time_nano,
        ..Default::default()
    }
}

#[test]
fn filters_select_by_type_and_time_and_refuse_what_does_not_exist() {
    let request = |types: &[&str], since, until| EventsRequest {
        types: types.iter().map(|t| (*t).to_owned()).collect(),
        since_ns: since,
        until_ns: until,
    };
    let filter =
        Filter::from_request(&request(&["service", "network"], Some(10), Some(20))).unwrap();
    assert!(filter.matches(&stamped("service", "a", 10)));
    assert!(filter.matches(&stamped("network", "a", 20)));
    assert!(!filter.matches(&stamped("task", "a", 15)));
    assert!(!filter.matches(&stamped("service", "a", 9)));
    assert!(!filter.matches(&stamped("service", "a", 21)));
    assert!(
        Filter::from_request(&request(&[], None, None))
            .unwrap()
            .matches(&stamped("node", "a", 1))
    );
    assert_eq!(
        Filter::from_request(&request(&["container"], None, None)),
        Err(
            "unknown event type \"container\": expected one of service, node, task, network, secret, config".into()
        )
    );
    assert_eq!(
        Filter::from_request(&request(&[], Some(5), Some(4))),
        Err("--since must be before --until".into())
    );
}

#[tokio::test]
async fn history_is_bounded_and_replayed_only_when_a_window_is_asked_for() {
    let log = EventLog::new();
    for i in 0..(HISTORY as i64 + 10) {
        log.record(stamped("service", &i.to_string(), i));
    }
    let replay = |since| {
        log.subscribe(Filter {
            since: Some(since),
            until: Some(i64::MAX / 2),
            ..Default::default()
        })
    };
    let ids: Vec<String> = replay(0)
        .take(HISTORY)
        .map(|e| e.unwrap().actor_id)
        .collect()
        .await;
    assert_eq!(ids.len(), HISTORY);
    assert_eq!(ids[0], "10", "the oldest ten were forgotten");
    assert_eq!(ids[HISTORY - 1], (HISTORY + 9).to_string());
    let recent: Vec<String> = replay(HISTORY as i64 + 8)
        .take(2)
        .map(|e| e.unwrap().actor_id)
        .collect()
        .await;
    assert_eq!(
        recent,
        [(HISTORY + 8).to_string(), (HISTORY + 9).to_string()]
    );

    // Without --since or --until only what happens from now on is sent.
    let mut live = Box::pin(log.subscribe(Filter::default()));
    log.record(stamped("node", "new", 1));
    assert_eq!(live.next().await.unwrap().unwrap().actor_id, "new");
}

#[tokio::test]
async fn until_ends_the_stream_and_a_past_until_ends_it_after_the_replay() {
    let log = EventLog::new();
    log.record(stamped("service", "old", now_nanos() - 1_000_000_000));
    let past = log.subscribe(Filter {
        until: Some(now_nanos()),
        ..Default::default()
    });
    let ids: Vec<String> = tokio::time::timeout(
        Duration::from_secs(5),
        past.map(|e| e.unwrap().actor_id).collect(),
    )
    .await
    .expect("a past --until ends the stream");
    assert_eq!(ids, ["old"]);
    let soon = log.subscribe(Filter {
        since: Some(now_nanos()),
        until: Some(now_nanos() + 200_000_000),
        ..Default::default()
    });
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(5), soon.collect())
        .await
        .expect("--until ends a live stream");
    assert!(events.is_empty());
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_dropped_with_a_clear_message() {
    let log = EventLog::new();
    let mut slow = Box::pin(log.subscribe(Filter::default()));
    for i in 0..(LIVE_BUFFER + 5) {
        log.record(stamped("task", &i.to_string(), 1));
    }
    let status = slow.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("5 events were dropped"),
        "{}",
        status.message()
    );
    assert!(
        slow.next().await.is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test]
async fn the_log_follows_the_store() {
    let store = direct_store();
    let log = EventLog::new();
    let (_stop, stop) = watch::channel(false);
    let mut events = Box::pin(log.subscribe(Filter {
        types: vec!["service".into()],
        ..Default::default()
    }));
    let follower = log.follow(store.memory(), stop);
    store
        .update(|tx| {
            tx.create(Network {
                id: "net".into(),
                ..Default::default()
            })?;
            tx.create(service("s1", "web", 1, "busybox"))
        })
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.r#type.as_str(), first.actor_id.as_str()),
        ("service", "s1")
    );
    assert!(first.time_nano > 0);
    follower.abort();
}

#[tokio::test]
async fn entries_replayed_at_a_restart_are_not_news_and_times_are_the_changes_own() {
    let store = direct_store();
    let log = EventLog::new();
    let (_stop, stop) = watch::channel(false);
    log.replaying();
    let follower = log.follow(store.memory(), stop);
    // Entry 1 stands for one the log held before this run.
    store
        .update(|tx| tx.create(service("old", "old", 1, "busybox")))
        .await
        .unwrap();
    log.replayed_through(1);
    store
        .update(|tx| tx.create(service("new", "new", 1, "busybox")))
        .await
        .unwrap();
    let written = store
        .view(|tx| tx.get::<Service>("new"))
        .and_then(|s| s.meta)
        .map(|m| m.updated_at)
        .unwrap();
    let mut events = Box::pin(log.subscribe(Filter {
        since: Some(0),
        ..Default::default()
    }));
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.actor_id, "new", "the replayed entry is not an event");
    assert_eq!(first.time_nano, written, "the time is the change's own");
    follower.abort();
}

/// Whether a change is an event is told without building it, and agrees with building it: task
/// creations, moves of either state (to a number no state has, too), rewordings, removals, and
/// the other kinds' changes.
#[test]
fn an_event_is_told_apart_as_building_it_would() {
    use TaskState::{Running, Shutdown, Starting};
    let starting = task(Starting, Running);
    let mut reworded = starting.clone();
    reworded.status.as_mut().unwrap().message = "still starting".into();
    let mut unknown = starting.clone();
    unknown.status.as_mut().unwrap().state = 4242;
    let mut other_unknown = starting.clone();
    other_unknown.status.as_mut().unwrap().state = 4343;
    let renamed = {
        let mut s = service("s1", "web", 1, "busybox");
        s.spec.as_mut().unwrap().annotations.as_mut().unwrap().name = "api".into();
        s
    };
    let cases: Vec<(&str, Event, bool)> = vec![
        ("task created", created(starting.clone()), true),
        (
            "task running",
            updated(starting.clone(), task(Running, Running)),
            true,
        ),
        (
            "task told to stop",
            updated(starting.clone(), task(Starting, Shutdown)),
            true,
        ),
        ("task reworded", updated(starting.clone(), reworded), false),
        (
            "task to an unknown state",
            updated(starting.clone(), unknown.clone()),
            true,
        ),
        (
            "task between unknown states",
            updated(unknown, other_unknown),
            false,
        ),
        (
            "task removed",
            Event::Deleted(starting.clone().into_object()),
            true,
        ),
        (
            "service created",
            created(service("s1", "web", 1, "busybox")),
            true,
        ),
        (
            "service renamed",
            updated(service("s1", "web", 1, "busybox"), renamed),
            true,
        ),
        (
            "service unchanged",
            updated(
                service("s1", "web", 1, "busybox"),
                service("s1", "web", 1, "busybox"),
            ),
            false,
        ),
        ("cluster", created(Cluster::default()), false),
        ("commit", Event::Commit { index: 1 }, false),
    ];
    for (name, change, expected) in cases {
        assert_eq!(event(&change).is_some(), expected, "{name}: built");
        assert_eq!(is_event(&change), expected, "{name}: told");
    }
}
