//! The tables' keys: object ids held in the tables' own nodes.

use arrayvec::ArrayString;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// The longest id held in place: ids are 25 characters ([`new_id`](super::new_id)).
const INLINE: usize = 28;

/// An object's id as a table's key, ordered and hashed as the `str` it is. A B-tree of `String`
/// keys follows each key's pointer to compare it: a lookup among a million tasks (about twenty
/// comparisons) missed the cache as often, and comparing ids took ~6% of a leader replacing
/// 100,000 tasks. An id of up to [`INLINE`] bytes is held in the key itself; a longer one (only
/// an id a test or a snapshot chose) on the heap.
#[derive(Clone)]
pub enum Key {
    Inline(ArrayString<INLINE>),
    Heap(Box<str>),
}

impl Key {
    pub fn as_str(&self) -> &str {
        match self {
            Key::Inline(id) => id.as_str(),
            Key::Heap(id) => id,
        }
    }
}

impl From<&str> for Key {
    fn from(id: &str) -> Self {
        ArrayString::from(id).map_or_else(|_| Key::Heap(id.into()), Key::Inline)
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

// Equality, order and hash are the `str`'s: what `Borrow<str>` requires of a map's key.
impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn ids_are_held_in_place_up_to_the_inline_length() {
        let id = super::super::new_id();
        assert!(matches!(Key::from(id.as_str()), Key::Inline(_)), "{id}");
        assert!(matches!(
            Key::from("x".repeat(INLINE).as_str()),
            Key::Inline(_)
        ));
        let long = "x".repeat(INLINE + 1);
        assert!(matches!(Key::from(long.as_str()), Key::Heap(_)));
        assert_eq!(Key::from(long.as_str()).as_str(), long);
    }

    /// Keys held in place and on the heap sort among each other as their strings do, and a map
    /// finds each by its `str`.
    #[test]
    fn keys_order_and_are_found_as_their_strings() {
        let ids: Vec<String> = vec![
            "b".into(),
            "".into(),
            "a".repeat(INLINE + 3),
            "ab".into(),
            "a".repeat(INLINE),
            "a".repeat(INLINE - 1) + "b",
            "é".into(),
            "zz".into(),
        ];
        let mut strings = ids.clone();
        strings.sort();
        let mut keys: Vec<Key> = ids.iter().map(|s| Key::from(s.as_str())).collect();
        keys.sort();
        let sorted: Vec<&str> = keys.iter().map(Key::as_str).collect();
        assert_eq!(sorted, strings);

        let map: BTreeMap<Key, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, s)| (Key::from(s.as_str()), i))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(map.get(id.as_str()), Some(&i), "{id}");
        }
        assert_eq!(map.get("a"), None);
    }
}
