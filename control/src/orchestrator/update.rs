//! Rolling replacement of tasks made from an older spec version, with Swarm's default update
//! config: one slot at a time, no delay, stop-first.
//!
//! The updater keeps no state of its own: a slot is being updated while its live task comes from
//! the current spec, is not running yet, and the slot still holds a task of an older version. The
//! next slot is started once that task runs, or at once if it ended (the restart policy then
//! handles the slot).

use mesh_proto::{Service, Task, TaskState};

use super::task::{self, SlotKey};

/// Slots replaced at the same time.
pub const PARALLELISM: usize = 1;

/// A slot as the updater sees it: its live task and every task it holds.
#[derive(Debug, Clone, Copy)]
pub struct SlotView<'a> {
    pub key: &'a SlotKey,
    pub live: &'a Task,
    pub history: &'a [&'a Task],
}

/// The slot to replace next, if the update may progress; slots come in `SlotKey` order.
pub fn next_slot<'a>(spec_version: u64, slots: &[SlotView<'a>]) -> Option<&'a SlotKey> {
    let in_flight = slots
        .iter()
        .filter(|s| {
            s.live.spec_version == spec_version
                && task::state(s.live) < TaskState::Running
                && s.history.iter().any(|t| t.spec_version != spec_version)
        })
        .count();
    if in_flight >= PARALLELISM {
        return None;
    }
    slots
        .iter()
        .find(|s| s.live.spec_version != spec_version)
        .map(|s| s.key)
}

/// Stop-first replacement of `live`: it is shut down and a task of the current spec takes its slot.
pub fn replace(service: &Service, live: &Task) -> (Task, Task) {
    let node = (live.slot == 0).then_some(live.node_id.as_str());
    let replacement = task::new_task(service, live.slot, node);
    (task::with_desired(live, TaskState::Shutdown), replacement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::TaskStatus;

    fn task(version: u64, state: TaskState) -> Task {
        Task {
            spec_version: version,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn picks_one_slot_at_a_time() {
        use TaskState::{Failed, Pending, Running};
        let keys: Vec<SlotKey> = (1..=3).map(SlotKey::Replica).collect();
        // (slots as (live, older task in the slot?), expected next slot index)
        type Case = (Vec<(Task, bool)>, Option<usize>);
        let cases: Vec<Case> = vec![
            // Nothing outdated.
            (
                vec![(task(2, Running), false), (task(2, Running), true)],
                None,
            ),
            // First outdated slot in order.
            (
                vec![(task(2, Running), true), (task(1, Running), false)],
                Some(1),
            ),
            // Slot 1 is being replaced (not running yet): wait.
            (
                vec![(task(2, Pending), true), (task(1, Running), false)],
                None,
            ),
            // A new task that is pending from a scale-up does not hold the update.
            (
                vec![(task(2, Pending), false), (task(1, Running), false)],
                Some(1),
            ),
            // The replacement failed: move on.
            (
                vec![(task(2, Failed), true), (task(1, Running), false)],
                Some(1),
            ),
        ];
        for (i, (slots, want)) in cases.into_iter().enumerate() {
            let older = task(1, TaskState::Shutdown);
            let histories: Vec<Vec<&Task>> = slots
                .iter()
                .map(|(live, has_older)| {
                    let mut h = vec![live];
                    if *has_older {
                        h.push(&older);
                    }
                    h
                })
                .collect();
            let views: Vec<SlotView<'_>> = slots
                .iter()
                .zip(&histories)
                .zip(&keys)
                .map(|(((live, _), history), key)| SlotView { key, live, history })
                .collect();
            assert_eq!(next_slot(2, &views), want.map(|k| &keys[k]), "case {i}");
        }
    }
}
