//! What a store change looks like as a cluster event: Docker's `Type`, `Action` and `Actor`
//! (id and attributes). Pure: the [`EventLog`](super::EventLog) stamps the time.
//!
//! Only what a user changed or would watch for becomes an event: an update that touched none
//! of it (an allocation filled in, a certificate reissued, a status message) is left out.
//! Attributes carry names, images and states — never an environment, a secret or a key (a secret's
//! or config's event names it; its data never leaves the store this way).

use std::collections::HashMap;

use mesh_proto::{
    Annotations, ClusterEvent, Config, Network, Node, NodeAvailability, NodeRole, NodeState,
    Secret, Service, Task, TaskState, service_spec::Mode,
};

use crate::store::{Event, Kind};

/// The types of event there are, as `--filter type=` names them.
pub const TYPES: [&str; 6] = ["service", "node", "task", "network", "secret", "config"];

type Attributes = HashMap<String, String>;

/// Whether a store change is an event ([`event`] gives one), worked out without building it for
/// a task: a leader applies several changes of each of a million tasks.
pub fn is_event(change: &Event) -> bool {
    match (change, change.as_a::<Task>()) {
        (Event::Created(_) | Event::Deleted(_), Some(_)) => true,
        (Event::Updated { .. }, Some(new)) => change
            .old_as::<Task>()
            .is_none_or(|old| task_moved(old, new)),
        _ => event(change).is_some(),
    }
}

/// The event for a store change, without its time; `None` for a change no one watches.
pub fn event(change: &Event) -> Option<ClusterEvent> {
    let action = match change {
        Event::Created(_) => "create",
        Event::Updated { .. } => "update",
        Event::Deleted(_) => "remove",
        Event::Commit { .. } | Event::Reset => return None,
    };
    let object = change.object()?;
    let attributes = match object.kind() {
        Kind::Service => service(change.old_as(), change.as_a()?),
        Kind::Node => node(change.old_as(), change.as_a()?),
        Kind::Task => task(change.old_as(), change.as_a()?),
        Kind::Network => network(change.old_as(), change.as_a()?),
        Kind::Secret => {
            let annotations = |s: &Secret| s.spec.as_ref().and_then(|s| s.annotations.clone());
            named(
                change.old_as().map(annotations),
                annotations(change.as_a()?),
            )
        }
        Kind::Config => {
            let annotations = |c: &Config| c.spec.as_ref().and_then(|s| s.annotations.clone());
            named(
                change.old_as().map(annotations),
                annotations(change.as_a()?),
            )
        }
        Kind::Cluster => None,
    }?;
    Some(ClusterEvent {
        r#type: object.kind().to_string(),
        action: action.into(),
        actor_id: object.id().to_owned(),
        attributes,
        time_nano: 0,
    })
}

/// Adds `key.old`/`key.new` when the value changed; whether it did.
fn changed(attributes: &mut Attributes, key: &str, old: Option<String>, new: String) -> bool {
    match old {
        Some(old) if old != new => {
            attributes.insert(format!("{key}.old"), old);
            attributes.insert(format!("{key}.new"), new);
            true
        }
        _ => false,
    }
}

fn service_name(service: &Service) -> String {
    service
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.clone())
        .unwrap_or_default()
}

fn replicas(service: &Service) -> String {
    match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(Mode::Replicated(r)) => r.replicas.to_string(),
        Some(Mode::Global(_)) => "global".into(),
        None => String::new(),
    }
}

fn image(service: &Service) -> String {
    service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.container.as_ref())
        .map(|c| c.image.clone())
        .unwrap_or_default()
}

fn update_state(service: &Service) -> &'static str {
    crate::orchestrator::update::state_name(crate::orchestrator::update::state(service))
}

/// A service's name; on an update only a changed spec counts, with its replicas and image
/// old and new when they changed.
fn service(old: Option<&Service>, new: &Service) -> Option<Attributes> {
    let mut attributes = Attributes::from([("name".to_owned(), service_name(new))]);
    if let Some(old) = old {
        // As docker: a rolling update's state changing is a service update of its own.
        let state_changed = changed(
            &mut attributes,
            "updatestate",
            Some(update_state(old).to_owned()),
            update_state(new).to_owned(),
        );
        if old.spec == new.spec {
            return state_changed.then_some(attributes);
        }
        changed(
            &mut attributes,
            "name",
            Some(service_name(old)),
            service_name(new),
        );
        changed(
            &mut attributes,
            "replicas",
            Some(replicas(old)),
            replicas(new),
        );
        changed(&mut attributes, "image", Some(image(old)), image(new));
    }
    Some(attributes)
}

/// `TASK_STATE_RUNNING` → `running`, as `meshctl service ps` prints states.
pub fn task_state_name(state: i32) -> String {
    TaskState::try_from(state).map_or_else(
        |_| "unknown".into(),
        |s| {
            s.as_str_name()
                .trim_start_matches("TASK_STATE_")
                .to_ascii_lowercase()
        },
    )
}

fn node_state_name(node: &Node) -> String {
    let state = node.status.as_ref().map_or(0, |s| s.state);
    NodeState::try_from(state).map_or_else(
        |_| "unknown".into(),
        |s| {
            s.as_str_name()
                .trim_start_matches("NODE_STATE_")
                .to_ascii_lowercase()
        },
    )
}

fn availability_name(node: &Node) -> String {
    let availability = node.spec.as_ref().map_or(0, |s| s.availability);
    NodeAvailability::try_from(availability).map_or_else(
        |_| "unknown".into(),
        |a| {
            a.as_str_name()
                .trim_start_matches("NODE_AVAILABILITY_")
                .to_ascii_lowercase()
        },
    )
}

fn role_name(node: &Node) -> String {
    NodeRole::try_from(node.role).map_or_else(
        |_| "unknown".into(),
        |r| {
            r.as_str_name()
                .trim_start_matches("NODE_ROLE_")
                .to_ascii_lowercase()
        },
    )
}

/// A node's hostname; an update counts when its state, availability, role or labels changed.
fn node(old: Option<&Node>, new: &Node) -> Option<Attributes> {
    let name = new
        .description
        .as_ref()
        .map(|d| d.hostname.clone())
        .unwrap_or_default();
    let mut attributes = Attributes::from([("name".to_owned(), name)]);
    if let Some(old) = old {
        let state = changed(
            &mut attributes,
            "state",
            Some(node_state_name(old)),
            node_state_name(new),
        );
        let availability = changed(
            &mut attributes,
            "availability",
            Some(availability_name(old)),
            availability_name(new),
        );
        let role = changed(
            &mut attributes,
            "role",
            Some(role_name(old)),
            role_name(new),
        );
        if !(state || availability || role || old.spec != new.spec) {
            return None;
        }
    }
    Some(attributes)
}

/// A task's service, slot and node; an update counts when its state or desired state changed.
fn task(old: Option<&Task>, new: &Task) -> Option<Attributes> {
    if old.is_some_and(|old| !task_moved(old, new)) {
        return None;
    }
    let state = |t: &Task| task_state_name(t.status.as_ref().map_or(0, |s| s.state));
    let mut attributes = Attributes::from([
        (
            "service".to_owned(),
            new.service_annotations
                .as_ref()
                .map(|a| a.name.clone())
                .unwrap_or_default(),
        ),
        ("service.id".to_owned(), new.service_id.clone()),
        ("slot".to_owned(), new.slot.to_string()),
        ("node.id".to_owned(), new.node_id.clone()),
        ("state".to_owned(), state(new)),
        ("desired".to_owned(), task_state_name(new.desired_state)),
    ]);
    if let Some(old) = old {
        changed(&mut attributes, "state", Some(state(old)), state(new));
        changed(
            &mut attributes,
            "desired",
            Some(task_state_name(old.desired_state)),
            task_state_name(new.desired_state),
        );
    }
    Some(attributes)
}

/// Whether a task's update moves its state or its desired state, as their names tell (every
/// number no state has is "unknown").
fn task_moved(old: &Task, new: &Task) -> bool {
    let named = |state: i32| TaskState::try_from(state).ok();
    let state = |t: &Task| named(t.status.as_ref().map_or(0, |s| s.state));
    state(old) != state(new) || named(old.desired_state) != named(new.desired_state)
}

/// A network's name and driver; an update counts when its spec changed.
fn network(old: Option<&Network>, new: &Network) -> Option<Attributes> {
    if old.is_some_and(|old| old.spec == new.spec) {
        return None;
    }
    let spec = new.spec.clone().unwrap_or_default();
    Some(Attributes::from([
        (
            "name".to_owned(),
            spec.annotations.map(|a| a.name).unwrap_or_default(),
        ),
        ("type".to_owned(), spec.driver),
    ]))
}

/// A secret's or config's name, and nothing of its data; an update counts when its labels changed
/// (the only thing that may).
fn named(old: Option<Option<Annotations>>, new: Option<Annotations>) -> Option<Attributes> {
    if old.is_some_and(|old| old == new) {
        return None;
    }
    Some(Attributes::from([(
        "name".to_owned(),
        new.map(|a| a.name).unwrap_or_default(),
    )]))
}
