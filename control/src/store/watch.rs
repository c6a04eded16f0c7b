//! Typed change events delivered to watchers after each applied write. Objects are shared with
//! the tables, so neither writing an event nor handing it to many watchers copies an object.

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use super::object::{Object, StoreObject};

#[derive(Debug, Clone)]
pub enum Event {
    Created(Object),
    Updated {
        old: Object,
        new: Object,
    },
    Deleted(Object),
    /// Every change of one Raft entry has been delivered.
    Commit {
        index: u64,
    },
    /// The whole state was replaced by a snapshot: watchers must re-read everything.
    Reset,
}

impl Event {
    /// The object this event is about, in its newest state (the last one for a delete).
    pub fn object(&self) -> Option<&Object> {
        match self {
            Event::Created(o) | Event::Deleted(o) => Some(o),
            Event::Updated { new, .. } => Some(new),
            Event::Commit { .. } | Event::Reset => None,
        }
    }

    /// The object as `T`, when the event is about a `T`.
    pub fn as_a<T: StoreObject>(&self) -> Option<&T> {
        self.object().and_then(T::from_object)
    }

    /// The object's previous state, for updates.
    pub fn old_as<T: StoreObject>(&self) -> Option<&T> {
        match self {
            Event::Updated { old, .. } => T::from_object(old),
            _ => None,
        }
    }

    pub fn is_delete(&self) -> bool {
        matches!(self, Event::Deleted(_))
    }
}

/// The next event already delivered to `events`, as `recv` would give it, or `None` when none is
/// waiting: watchers take in everything delivered before acting once on all of it.
pub fn try_next(events: &mut broadcast::Receiver<Event>) -> Option<Result<Event, RecvError>> {
    match events.try_recv() {
        Ok(event) => Some(Ok(event)),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Lagged(missed)) => Some(Err(RecvError::Lagged(missed))),
        Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
    }
}
