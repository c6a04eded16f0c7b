//! The stored object types and the trait that lets the store treat them alike.

use mesh_proto::{Cluster, Config, Meta, Network, Node, Secret, Service, Task, store_action};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::key::Key;
use super::memory::Tables;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    Node,
    Service,
    Task,
    Cluster,
    Network,
    Secret,
    Config,
}

impl Kind {
    /// The kind's name, as messages and `meshctl events --filter type=` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Service => "service",
            Kind::Task => "task",
            Kind::Cluster => "cluster",
            Kind::Network => "network",
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Any stored object, as carried by events and store actions. Shared: an event holds the very
/// object the tables hold, so a write copies no object and a watcher's queue of events holds
/// only the states the tables have let go of.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Node(Arc<Node>),
    Service(Arc<Service>),
    Task(Arc<Task>),
    Cluster(Arc<Cluster>),
    Network(Arc<Network>),
    Secret(Arc<Secret>),
    Config(Arc<Config>),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Node(_) => Kind::Node,
            Object::Service(_) => Kind::Service,
            Object::Task(_) => Kind::Task,
            Object::Cluster(_) => Kind::Cluster,
            Object::Network(_) => Kind::Network,
            Object::Secret(_) => Kind::Secret,
            Object::Config(_) => Kind::Config,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Object::Node(o) => &o.id,
            Object::Service(o) => &o.id,
            Object::Task(o) => &o.id,
            Object::Cluster(o) => &o.id,
            Object::Network(o) => &o.id,
            Object::Secret(o) => &o.id,
            Object::Config(o) => &o.id,
        }
    }

    /// The object as a store action carries it: moved out when no one else holds it.
    pub(crate) fn into_target(self) -> store_action::Target {
        match self {
            Object::Node(o) => store_action::Target::Node(Arc::unwrap_or_clone(o)),
            Object::Service(o) => store_action::Target::Service(Arc::unwrap_or_clone(o)),
            Object::Task(o) => store_action::Target::Task(Arc::unwrap_or_clone(o)),
            Object::Cluster(o) => store_action::Target::Cluster(Arc::unwrap_or_clone(o)),
            Object::Network(o) => store_action::Target::Network(Arc::unwrap_or_clone(o)),
            Object::Secret(o) => store_action::Target::Secret(Arc::unwrap_or_clone(o)),
            Object::Config(o) => store_action::Target::Config(Arc::unwrap_or_clone(o)),
        }
    }

    pub(crate) fn from_target(target: store_action::Target) -> Self {
        match target {
            store_action::Target::Node(o) => o.into_object(),
            store_action::Target::Service(o) => o.into_object(),
            store_action::Target::Task(o) => o.into_object(),
            store_action::Target::Cluster(o) => o.into_object(),
            store_action::Target::Network(o) => o.into_object(),
            store_action::Target::Secret(o) => o.into_object(),
            store_action::Target::Config(o) => o.into_object(),
        }
    }

    /// The object's size as it is proposed.
    pub(crate) fn encoded_len(&self) -> usize {
        use prost::Message;
        match self {
            Object::Node(o) => o.encoded_len(),
            Object::Service(o) => o.encoded_len(),
            Object::Task(o) => o.encoded_len(),
            Object::Cluster(o) => o.encoded_len(),
            Object::Network(o) => o.encoded_len(),
            Object::Secret(o) => o.encoded_len(),
            Object::Config(o) => o.encoded_len(),
        }
    }

    /// The object's metadata, to change: copies the object first if anyone else holds it.
    pub(crate) fn meta_mut(&mut self) -> &mut Option<Meta> {
        match self {
            Object::Node(o) => &mut Arc::make_mut(o).meta,
            Object::Service(o) => &mut Arc::make_mut(o).meta,
            Object::Task(o) => &mut Arc::make_mut(o).meta,
            Object::Cluster(o) => &mut Arc::make_mut(o).meta,
            Object::Network(o) => &mut Arc::make_mut(o).meta,
            Object::Secret(o) => &mut Arc::make_mut(o).meta,
            Object::Config(o) => &mut Arc::make_mut(o).meta,
        }
    }
}

/// A type the store keeps in a table of its own.
pub trait StoreObject: Clone + Sized + Send + Sync + 'static {
    const KIND: Kind;
    fn id(&self) -> &str;
    fn meta(&self) -> Option<&Meta>;
    fn into_object(self) -> Object {
        Self::shared(Arc::new(self))
    }
    /// The object, held by others too.
    fn shared(object: Arc<Self>) -> Object;
    fn from_object(object: &Object) -> Option<&Self>;
    fn table(tables: &Tables) -> &BTreeMap<Key, Arc<Self>>;
    fn table_mut(tables: &mut Tables) -> &mut BTreeMap<Key, Arc<Self>>;

    /// The version this object was read at (0 for an object not yet stored).
    fn version(&self) -> u64 {
        self.meta()
            .and_then(|m| m.version.as_ref())
            .map_or(0, |v| v.index)
    }
}

macro_rules! store_object {
    ($ty:ident, $field:ident) => {
        impl StoreObject for $ty {
            const KIND: Kind = Kind::$ty;
            fn id(&self) -> &str {
                &self.id
            }
            fn meta(&self) -> Option<&Meta> {
                self.meta.as_ref()
            }
            fn shared(object: Arc<Self>) -> Object {
                Object::$ty(object)
            }
            fn from_object(object: &Object) -> Option<&Self> {
                match object {
                    Object::$ty(o) => Some(&**o),
                    _ => None,
                }
            }
            fn table(tables: &Tables) -> &BTreeMap<Key, Arc<Self>> {
                &tables.$field
            }
            fn table_mut(tables: &mut Tables) -> &mut BTreeMap<Key, Arc<Self>> {
                &mut tables.$field
            }
        }
    };
}

store_object!(Node, nodes);
store_object!(Service, services);
store_object!(Task, tasks);
store_object!(Cluster, clusters);
store_object!(Network, networks);
store_object!(Secret, secrets);
store_object!(Config, configs);
