//! Rows of `service ls`, `node ls` and `ps`: columns, names, history indentation and JSON keys.

use super::*;
use mesh_proto::{
    Annotations, ContainerSpec, EngineDescription, ManagerStatus, Meta, NodeDescription, NodeSpec,
    NodeState, NodeStatus, Placement, ReplicatedService, ServiceSpec, TaskSpec, TaskStatus,
};

const SECOND: i64 = 1_000_000_000;

fn service(id: &str, name: &str, mode: Mode, max: u64) -> Service {
    Service {
        id: id.into(),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "busybox:1@sha256:abc".into(),
                    ..Default::default()
                }),
                placement: Some(Placement {
                    max_replicas: max,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(mode),
            endpoint: None,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn service_ls_rows() {
    let response = ListServicesResponse {
        services: vec![
            service(
                "zzzzzzzzzzzzzzzz1",
                "web",
                Mode::Replicated(ReplicatedService { replicas: 3 }),
                2,
            ),
            service(
                "aaaaaaaaaaaaaaaa2",
                "agent",
                Mode::Global(Default::default()),
                0,
            ),
        ],
        running_tasks: [("zzzzzzzzzzzzzzzz1".to_string(), 2)].into(),
        desired_tasks: [("aaaaaaaaaaaaaaaa2".to_string(), 4)].into(),
    };
    let rows = service_rows(&response);
    assert_eq!(rows[0].name, "agent");
    assert_eq!(
        (rows[0].mode.as_str(), rows[0].replicas.as_str()),
        ("global", "0/4")
    );
    assert_eq!(rows[1].id, "zzzzzzzzzzzz");
    assert_eq!(rows[1].replicas, "2/3 (max 2 per node)");
    assert_eq!(rows[1].image, "busybox:1");
    assert_eq!(
        rows[1].json().to_string(),
        r#"{"ID":"zzzzzzzzzzzz","Image":"busybox:1","Mode":"replicated","Name":"web","Ports":"","Replicas":"2/3 (max 2 per node)"}"#
    );
    let mut out = Vec::new();
    render(&mut out, &rows, false, false).expect("render");
    let text = String::from_utf8(out).expect("utf8");
    assert!(
        text.starts_with("ID             NAME      MODE         REPLICAS"),
        "{text}"
    );
    let mut quiet = Vec::new();
    render(&mut quiet, &rows, true, false).expect("render");
    assert_eq!(quiet, b"aaaaaaaaaaaa\nzzzzzzzzzzzz\n");
}

fn node(id: &str, host: &str, leader: Option<bool>) -> Node {
    Node {
        id: id.into(),
        spec: Some(NodeSpec {
            availability: 2,
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: host.into(),
            engine: Some(EngineDescription {
                engine_version: "20.10.24".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            ..Default::default()
        }),
        manager_status: leader.map(|leader| ManagerStatus {
            leader,
            reachability: Reachability::Reachable as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn node_ls_rows() {
    let nodes = [
        node("n2", "beta", None),
        node("n1", "alpha", Some(true)),
        node("n3", "gamma", Some(false)),
    ];
    let rows = node_rows(&nodes, "n1");
    let hosts: Vec<_> = rows.iter().map(|r| r.hostname.as_str()).collect();
    assert_eq!(hosts, ["alpha", "beta", "gamma"]);
    assert_eq!(rows[0].cells()[0], "n1 *");
    assert_eq!(rows[1].cells()[0], "n2  ");
    let managers: Vec<_> = rows.iter().map(|r| r.manager_status.as_str()).collect();
    assert_eq!(managers, ["Leader", "", "Reachable"]);
    assert_eq!(
        (rows[0].status.as_str(), rows[0].availability.as_str()),
        ("Ready", "Drain")
    );
    assert_eq!(
        rows[0].json().to_string(),
        r#"{"Availability":"Drain","EngineVersion":"20.10.24","Hostname":"alpha","ID":"n1","ManagerStatus":"Leader","Self":true,"Status":"Ready","TLSStatus":"Unknown"}"#
    );
}

fn task(
    id: &str,
    slot: u64,
    created: i64,
    state: TaskState,
    desired: TaskState,
    err: &str,
) -> Task {
    Task {
        id: id.into(),
        service_id: "svc".into(),
        slot,
        node_id: "n1".into(),
        meta: Some(Meta {
            created_at: created,
            ..Default::default()
        }),
        spec: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "busybox@sha256:1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        service_annotations: Some(Annotations {
            name: "web".into(),
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: state as i32,
            timestamp: created,
            err: err.into(),
            ..Default::default()
        }),
        desired_state: desired as i32,
        ..Default::default()
    }
}

#[test]
fn ps_rows_group_slots_with_history() {
    let long_err = "task: non-zero exit (1): container failed badly";
    let tasks = [
        task(
            "old1aaaaaaaaaaaa",
            1,
            10 * SECOND,
            TaskState::Failed,
            TaskState::Shutdown,
            long_err,
        ),
        task(
            "new2bbbbbbbbbbbb",
            2,
            30 * SECOND,
            TaskState::Running,
            TaskState::Running,
            "",
        ),
        task(
            "new1cccccccccccc",
            1,
            20 * SECOND,
            TaskState::Running,
            TaskState::Running,
            "",
        ),
    ];
    let hostnames = [("n1".to_string(), "host-1".to_string())].into();
    let names = HashMap::new();
    let ctx = TaskContext {
        hostnames: &hostnames,
        service_names: &names,
        now_nanos: 35 * SECOND,
        no_trunc: false,
    };
    let rows = task_rows(&tasks, &ctx);
    let names: Vec<_> = rows.iter().map(|r| r.cells()[1].clone()).collect();
    assert_eq!(names, ["web.1", " \\_ web.1", "web.2"]);
    assert_eq!(rows[0].id, "new1cccccccc");
    assert_eq!(rows[0].current_state, "Running 15 seconds ago");
    assert_eq!(rows[0].node, "host-1");
    assert_eq!(rows[0].image, "busybox");
    assert_eq!(rows[1].desired_state, "Shutdown");
    assert_eq!(rows[1].error, "\"task: non-zero exit (1): cont…\"");
    assert_eq!(rows[2].current_state, "Running 5 seconds ago");
    // JSON names are never indented.
    assert_eq!(rows[1].json()["Name"], "web.1");
    assert_eq!(
        rows[0].json().to_string(),
        r#"{"CurrentState":"Running 15 seconds ago","DesiredState":"Running","Error":"","ID":"new1cccccccc","Image":"busybox","Name":"web.1","Node":"host-1","Ports":""}"#
    );

    let full = TaskContext {
        no_trunc: true,
        ..ctx
    };
    let rows = task_rows(&tasks, &full);
    assert_eq!(rows[1].error, format!("\"{long_err}\""));
    assert_eq!(rows[1].id, "old1aaaaaaaaaaaa");
    assert_eq!(rows[1].image, "busybox@sha256:1");
}

#[test]
fn ps_rows_for_global_and_pending_tasks() {
    let mut pending = task("g1", 0, 0, TaskState::Pending, TaskState::Running, "");
    pending.node_id = "node9".into();
    if let Some(status) = pending.status.as_mut() {
        status.scheduling_reason = "no suitable node".into();
    }
    let hostnames = HashMap::new();
    let names = HashMap::new();
    let ctx = TaskContext {
        hostnames: &hostnames,
        service_names: &names,
        now_nanos: 0,
        no_trunc: false,
    };
    let rows = task_rows(&[pending], &ctx);
    assert_eq!(rows[0].name, "web.node9");
    assert_eq!(rows[0].node, "node9");
    assert_eq!(rows[0].error, "\"no suitable node\"");
    assert_eq!(rows[0].current_state, "Pending less than a second ago");
}

#[test]
fn service_ls_notes_an_update_under_way_or_paused() {
    use mesh_proto::{UpdateState, UpdateStatus};
    // (state, what REPLICAS says)
    let cases = [
        (None, "1/2"),
        (Some(UpdateState::Updating), "1/2 (updating)"),
        (Some(UpdateState::Paused), "1/2 (update paused)"),
        (Some(UpdateState::Completed), "1/2"),
        (Some(UpdateState::RollbackStarted), "1/2 (rolling back)"),
        (Some(UpdateState::RollbackPaused), "1/2 (rollback paused)"),
        (Some(UpdateState::RollbackCompleted), "1/2"),
    ];
    for (state, want) in cases {
        let mut web = service(
            "zzzzzzzzzzzzzzzz1",
            "web",
            Mode::Replicated(ReplicatedService { replicas: 2 }),
            0,
        );
        web.update_status = state.map(|s| UpdateStatus {
            state: s as i32,
            ..Default::default()
        });
        let response = ListServicesResponse {
            services: vec![web],
            running_tasks: [("zzzzzzzzzzzzzzzz1".to_string(), 1)].into(),
            desired_tasks: Default::default(),
        };
        assert_eq!(service_rows(&response)[0].replicas, want, "{state:?}");
    }
}
