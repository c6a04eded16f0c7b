//! The tasks waiting for the scheduler's next pass, kept by service.
//!
//! A pass decides at most a batch of tasks, and a run of tasks of one service is decided as a
//! group: the filters once over every node, then a heap pop per task. Taken in task id order
//! (random) from the tasks of hundreds of services, as after a tenth of the nodes was lost, a
//! batch held about one task per service and every task cost a pass over every node. Here a batch
//! takes whole runs of one service, and the next batch goes on after the last service served,
//! round the services in turn, so that none waits for another's thousands of tasks.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

#[derive(Debug, Default)]
pub(super) struct Queue {
    /// (service id, task id) of every queued task.
    by_service: BTreeSet<(String, String)>,
    /// The service of each queued task, to remove it by id.
    service_of: HashMap<String, String>,
    /// Where the last batch stopped: the next one starts after it.
    after: Option<(String, String)>,
}

impl Queue {
    pub fn insert(&mut self, service_id: &str, task_id: &str) {
        if self.service_of.contains_key(task_id) {
            return;
        }
        self.service_of
            .insert(task_id.to_owned(), service_id.to_owned());
        self.by_service
            .insert((service_id.to_owned(), task_id.to_owned()));
    }

    pub fn remove(&mut self, task_id: &str) {
        if let Some(service_id) = self.service_of.remove(task_id) {
            self.by_service.remove(&(service_id, task_id.to_owned()));
        }
    }

    pub fn contains(&self, task_id: &str) -> bool {
        self.service_of.contains_key(task_id)
    }

    pub fn is_empty(&self) -> bool {
        self.service_of.is_empty()
    }

    pub fn len(&self) -> usize {
        self.service_of.len()
    }

    /// Takes up to `limit` task ids out of the queue: the tasks of a service together, starting
    /// after where the last batch stopped and wrapping round to the first service.
    pub fn take(&mut self, limit: usize) -> Vec<String> {
        let start = match self.after.take() {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let keys: Vec<(String, String)> = self
            .by_service
            .range((start.clone(), Bound::Unbounded))
            .chain(
                self.by_service
                    .range((Bound::Unbounded, bounded_above(&start))),
            )
            .take(limit)
            .cloned()
            .collect();
        for key in &keys {
            self.by_service.remove(key);
            self.service_of.remove(&key.1);
        }
        self.after = keys.last().cloned();
        keys.into_iter().map(|(_, task_id)| task_id).collect()
    }
}

/// The part of the queue before `start` (what a batch wraps round to).
fn bounded_above(start: &Bound<(String, String)>) -> Bound<(String, String)> {
    match start {
        Bound::Excluded(key) => Bound::Included(key.clone()),
        _ => Bound::Excluded((String::new(), String::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(tasks: &[(&str, &str)]) -> Queue {
        let mut queue = Queue::default();
        for (service, task) in tasks {
            queue.insert(service, task);
        }
        queue
    }

    #[test]
    fn a_batch_takes_a_service_s_tasks_together() {
        // Task ids interleave the services, as random ids do.
        let mut q = queue(&[("b", "1"), ("a", "2"), ("b", "3"), ("a", "4"), ("c", "5")]);
        assert_eq!(q.len(), 5);
        assert_eq!(q.take(2), ["2", "4"]);
        assert_eq!(q.take(10), ["1", "3", "5"]);
        assert!(q.is_empty());
        assert!(q.take(10).is_empty());
    }

    #[test]
    fn batches_go_round_the_services_in_turn() {
        let mut q = queue(&[("a", "1"), ("a", "2"), ("a", "3"), ("b", "4"), ("c", "5")]);
        assert_eq!(q.take(2), ["1", "2"]);
        // New work for a service already served waits for the others' turn.
        q.insert("a", "0");
        assert_eq!(q.take(2), ["3", "4"]);
        assert_eq!(q.take(2), ["5", "0"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_task_is_queued_once_and_removed_by_id() {
        let mut q = queue(&[("a", "1"), ("a", "1"), ("b", "2")]);
        assert_eq!(q.len(), 2);
        assert!(q.contains("1") && q.contains("2") && !q.contains("3"));
        q.remove("1");
        assert!(!q.contains("1"));
        q.remove("missing");
        assert_eq!(q.len(), 1);
        assert_eq!(q.take(10), ["2"]);
    }
}
