//! Turning a user's reference (id, name or id prefix) into an object, as Docker resolves them.

use mesh_proto::{Node, Service, Task};

use crate::store::{Kind, Read, StoreError};

/// The one object `reference` names among `all` (read in place: only the one found is copied):
/// by exact id, then by name, then by unique id prefix.
pub(super) fn pick<'a, T: Clone + 'a>(
    kind: Kind,
    reference: &str,
    all: impl Iterator<Item = &'a T>,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Result<T, StoreError> {
    if reference.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "{kind} reference is empty"
        )));
    }
    let (mut by_name, mut by_prefix) = (Vec::new(), Vec::new());
    for object in all {
        if id(object) == reference {
            return Ok(object.clone());
        }
        if name(object) == reference {
            by_name.push(object);
        }
        if id(object).starts_with(reference) {
            by_prefix.push(object);
        }
    }
    if let [one] = by_name.as_slice() {
        return Ok((*one).clone());
    }
    match by_prefix.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(StoreError::NotFound {
            kind,
            id: reference.to_string(),
        }),
        many => Err(StoreError::InvalidArgument(format!(
            "{kind} {reference} is ambiguous ({} matches)",
            many.len()
        ))),
    }
}

pub fn service(tx: &impl Read, reference: &str) -> Result<Service, StoreError> {
    pick(
        Kind::Service,
        reference,
        tx.iter::<Service>(),
        |s| &s.id,
        service_name,
    )
}

pub fn node(tx: &impl Read, reference: &str) -> Result<Node, StoreError> {
    pick(
        Kind::Node,
        reference,
        tx.iter::<Node>(),
        |n| &n.id,
        |n| n.description.as_ref().map_or("", |d| d.hostname.as_str()),
    )
}

pub fn task(tx: &impl Read, reference: &str) -> Result<Task, StoreError> {
    pick(Kind::Task, reference, tx.iter::<Task>(), |t| &t.id, |_| "")
}

pub fn service_name(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map_or("", |a| a.name.as_str())
}

pub fn network(tx: &impl Read, reference: &str) -> Result<mesh_proto::Network, StoreError> {
    pick(
        Kind::Network,
        reference,
        tx.iter::<mesh_proto::Network>(),
        |n| &n.id,
        network_name,
    )
}

pub fn network_name(network: &mesh_proto::Network) -> &str {
    network
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map_or("", |a| a.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// An object that counts its copies.
    struct Counted<'c> {
        id: &'static str,
        name: &'static str,
        copies: &'c Cell<usize>,
    }

    impl Clone for Counted<'_> {
        fn clone(&self) -> Self {
            self.copies.set(self.copies.get() + 1);
            Self { ..*self }
        }
    }

    #[test]
    fn references_resolve_by_id_then_name_then_prefix_copying_only_the_one() {
        let copies = Cell::new(0);
        let all = [
            ("abc1", "web"),
            ("abc2", "db"),
            ("xyz", "abc1x"),
            ("web", "other"),
        ]
        .map(|(id, name)| Counted {
            id,
            name,
            copies: &copies,
        });
        let pick = |reference: &str| {
            pick(Kind::Service, reference, all.iter(), |o| o.id, |o| o.name).map(|o| o.id)
        };
        // (reference, the id it names, or the error's text)
        let cases = [
            ("web", Ok("web")),
            ("db", Ok("abc2")),
            ("abc2", Ok("abc2")),
            ("xy", Ok("xyz")),
            ("abc", Err("service abc is ambiguous (2 matches)")),
            ("nope", Err("service nope not found")),
            ("", Err("service reference is empty")),
        ];
        for (reference, want) in cases {
            copies.set(0);
            let got = pick(reference).map_err(|e| e.to_string());
            match want {
                Ok(id) => {
                    assert_eq!(got.as_deref(), Ok(id), "{reference:?}");
                    assert_eq!(copies.get(), 1, "{reference:?}: only the one found copied");
                }
                Err(text) => {
                    assert!(
                        got.as_ref().is_err_and(|e| e.contains(text)),
                        "{reference:?}: {got:?}"
                    );
                    assert_eq!(copies.get(), 0, "{reference:?}");
                }
            }
        }
    }
}
