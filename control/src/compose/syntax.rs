//! The compose format's "this or that" values (a string or a list, a list or a mapping, a short
//! string or a long mapping), each a small serde `Deserialize` that keeps the key path of a
//! nested error (the long forms are read through their derived impls).

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, de::value::MapAccessDeserializer};
use std::collections::BTreeMap;
use std::fmt;

/// A YAML scalar read as text: `driver_opts` and environment values may be numbers or booleans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `command`, `entrypoint`, `env_file`, a health check's `test`: one string or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringOrList {
    String(String),
    List(Vec<String>),
}

impl StringOrList {
    /// The list form; a single string is one item.
    pub fn into_list(self) -> Vec<String> {
        match self {
            StringOrList::String(s) => vec![s],
            StringOrList::List(l) => l,
        }
    }
}

impl<'de> Deserialize<'de> for StringOrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringOrList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringOrList, E> {
                Ok(StringOrList::String(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<StringOrList, A::Error> {
                Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(StringOrList::List)
            }
        }
        d.deserialize_any(V)
    }
}

/// `environment` and `labels`: `["K=V", "K"]` or `{K: V, K: null}`; a value is `None` when
/// the entry has none (`K` or `K:`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOrDict(pub BTreeMap<String, Option<String>>);

impl<'de> Deserialize<'de> for ListOrDict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListOrDict;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of KEY=VALUE strings or a mapping")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ListOrDict, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(item) = seq.next_element::<String>()? {
                    match item.split_once('=') {
                        Some((k, v)) => out.insert(k.to_string(), Some(v.to_string())),
                        None => out.insert(item, None),
                    };
                }
                Ok(ListOrDict(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ListOrDict, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<Option<Scalar>>()?;
                    out.insert(key, value.map(|s| s.0));
                }
                Ok(ListOrDict(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A value with a short string form and a long mapping form (`ports`, `volumes`, `secrets`).
#[derive(Debug, Clone, PartialEq)]
pub enum ShortOrLong<L> {
    Short(String),
    Long(L),
}

impl<'de, L: Deserialize<'de>> Deserialize<'de> for ShortOrLong<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<L>(std::marker::PhantomData<L>);
        impl<'de, L: Deserialize<'de>> Visitor<'de> for V<L> {
            type Value = ShortOrLong<L>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a mapping")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ShortOrLong::Short(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ShortOrLong::Short(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ShortOrLong::Short(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                L::deserialize(MapAccessDeserializer::new(map)).map(ShortOrLong::Long)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `external: true` or (before 3.4) `external: {name: N}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct External {
    pub external: bool,
    pub name: Option<String>,
}

impl<'de> Deserialize<'de> for External {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Named {
            name: Option<String>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = External;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean or a mapping with a name")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<External, E> {
                Ok(External {
                    external: v,
                    name: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<External, A::Error> {
                let named = Named::deserialize(MapAccessDeserializer::new(map))?;
                Ok(External {
                    external: true,
                    name: named.name,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A Go duration (`10s`, `1m30s`, `500ms`) in nanoseconds, refused with its key path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub i64);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Scalar::deserialize(d)?.0;
        crate::cli::flags::parse_duration_ns(&text)
            .map(Duration)
            .map_err(de::Error::custom)
    }
}

/// A memory size (`512M`, `1gb`, or a number of bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub i64);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Scalar::deserialize(d)?.0;
        crate::cli::flags::parse_bytes(&text)
            .map(Bytes)
            .map_err(de::Error::custom)
    }
}

/// A CPU count (`'0.5'` or `0.5`) in nano CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpus(pub i64);

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Scalar::deserialize(d)?.0;
        crate::cli::flags::parse_nano_cpus(&text)
            .map(Cpus)
            .map_err(de::Error::custom)
    }
}

/// A file mode: `0440` is octal, as docker's YAML reader takes it (YAML 1.2 readers see a
/// string), `0o440` too; a plain number is taken as written (`288`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Scalar::deserialize(d)?.0;
        let octal = text
            .strip_prefix("0o")
            .or_else(|| text.strip_prefix('0').filter(|r| !r.is_empty()));
        let parsed = match octal {
            Some(digits) => u32::from_str_radix(digits, 8).ok(),
            None => text.parse::<u32>().ok(),
        };
        parsed.map(FileMode).ok_or_else(|| {
            de::Error::custom(format!(
                "invalid file mode {text:?}: expected an octal mode such as 0440"
            ))
        })
    }
}
