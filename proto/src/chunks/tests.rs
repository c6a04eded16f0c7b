//! Splitting lists into bounded chunks and gathering them back.

use super::*;
use crate::v1::{Service, Task};
use tonic::Status;

fn task(id: usize, image_bytes: usize) -> Task {
    Task {
        id: format!("task{id}"),
        service_id: "svc".into(),
        node_id: format!("node{}", id % 7),
        // A stand-in for the task's spec: bulk that makes tasks of different sizes.
        service_annotations: Some(crate::v1::Annotations {
            name: "x".repeat(image_bytes),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn task_chunks(tasks: Vec<Task>, bound: usize) -> Vec<ListTasksResponse> {
    split(
        tasks,
        bound,
        |t| field_len(1, t),
        |tasks| ListTasksResponse { tasks },
    )
}

#[test]
fn split_cuts_runs_within_the_bound() {
    // (item costs, bound, expected run lengths)
    let cases: &[(&[usize], usize, &[usize])] = &[
        (&[], 10, &[0]),
        (&[3], 10, &[1]),
        (&[3, 3, 3], 10, &[3]),
        (&[3, 3, 3, 3], 10, &[3, 1]),
        (&[5, 5, 5], 10, &[2, 1]),
        (&[11], 10, &[1]),
        (&[2, 11, 2], 10, &[1, 1, 1]),
        (&[10, 1, 9, 1], 10, &[1, 2, 1]),
    ];
    for (costs, bound, runs) in cases {
        let chunks = split(costs.to_vec(), *bound, |c| *c, |run| run);
        let lengths: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(&lengths, runs, "costs {costs:?} bound {bound}");
        let flat: Vec<usize> = chunks.concat();
        assert_eq!(&flat, costs, "order kept");
    }
}

#[test]
fn task_chunks_encode_within_the_bound_and_reassemble() {
    let tasks: Vec<Task> = (0..20_000).map(|i| task(i, 20 + i % 300)).collect();
    let whole = ListTasksResponse {
        tasks: tasks.clone(),
    };
    assert!(
        whole.encoded_len() > 3 * LIST_CHUNK_BYTES,
        "the list spans several chunks"
    );
    let chunks = task_chunks(tasks, LIST_CHUNK_BYTES);
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    for chunk in &chunks {
        assert!(
            chunk.encoded_len() <= LIST_CHUNK_BYTES,
            "{}",
            chunk.encoded_len()
        );
        assert!(!chunk.tasks.is_empty());
    }
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, Status>));
    let gathered = futures::executor::block_on(gather(stream)).expect("gathered");
    assert_eq!(gathered, whole);
}

#[test]
fn an_object_above_the_bound_comes_alone() {
    let tasks = vec![task(0, 10), task(1, 3000), task(2, 10)];
    let chunks = task_chunks(tasks, 1000);
    let sizes: Vec<usize> = chunks.iter().map(|c| c.tasks.len()).collect();
    assert_eq!(sizes, [1, 1, 1]);
    assert!(chunks[1].encoded_len() > 1000);
    assert!(chunks[0].encoded_len() <= 1000 && chunks[2].encoded_len() <= 1000);
}

#[test]
fn gather_merges_service_counts_and_stops_at_an_error() {
    let chunk = |id: &str, running: u64| ListServicesResponse {
        services: vec![Service {
            id: id.into(),
            ..Default::default()
        }],
        running_tasks: [(id.to_string(), running)].into(),
        desired_tasks: [(id.to_string(), 3)].into(),
    };
    let ok = futures::stream::iter([Ok(chunk("a", 1)), Ok(chunk("b", 2))]);
    let whole = futures::executor::block_on(gather(ok)).expect("gathered");
    let ids: Vec<&str> = whole.services.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(whole.running_tasks["b"], 2);
    assert_eq!(whole.desired_tasks.len(), 2);

    let broken = futures::stream::iter([
        Ok(chunk("a", 1)),
        Err(Status::unavailable("connection reset")),
    ]);
    let err = futures::executor::block_on(gather(broken)).expect_err("broken off");
    assert_eq!(err.code(), tonic::Code::Unavailable);
}
