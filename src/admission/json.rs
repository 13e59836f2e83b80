//! A JSON value for the admission rules, built in a per-request arena.
//!
//! Parsing an object's `spec` into a `serde_json::Value` costs a map node and an owned
//! `String` per key and per string value, all dropped again a microsecond later. [`Json`]
//! borrows every string without escapes straight from the input, and everything else (an
//! object's members, an array's elements, an unescaped string) lives in a [`Bump`] arena
//! that the handler empties before each review: no allocation per value, and nothing to
//! drop afterwards (a `Json` owns no memory).
//!
//! An [`Object`] keeps its members sorted by key with each key once (the last duplicate
//! wins), which is exactly what `serde_json::Value` (without `preserve_order`) holds. So
//! iterating, comparing and serialising give the same order and result as with a `Value`,
//! and the messages that quote or walk a value do not change. API servers send objects
//! with sorted keys, so keeping them sorted costs one comparison per member; any other
//! order is sorted once, in O(n log n) whatever the input.

use bumpalo::Bump;
use serde::de::{Deserializer, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// A JSON value whose strings, arrays and objects are borrowed: from the input when a
/// string has no escapes, else from the arena it was built in.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// A number, as serde_json holds it.
    Number(Number),
    /// A string.
    String(&'a str),
    /// An array.
    Array(&'a [Json<'a>]),
    /// An object.
    Object(Object<'a>),
}

/// A JSON object: members sorted by key, each key once (see the module docs). Equality is
/// therefore map equality: the order members were written in does not matter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Object<'a> {
    members: &'a [(&'a str, Json<'a>)],
}

/// Members being collected for an [`Object`], in the arena.
pub(super) type Members<'a> = bumpalo::collections::Vec<'a, (&'a str, Json<'a>)>;

impl<'a> Object<'a> {
    /// Builds the object from members in any order; a repeated key keeps its last value.
    pub(super) fn from_members(mut members: Members<'a>) -> Self {
        let sorted = members.windows(2).all(|w| w[0].0 < w[1].0);
        if !sorted {
            // Stable: duplicates stay in input order. `dedup_by` keeps the first of a run
            // and hands each later one as `later`: moving its value into the kept member
            // leaves the value written last. Both steps work in place.
            members.sort_by(|a, b| a.0.cmp(b.0));
            members.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    std::mem::swap(&mut later.1, &mut kept.1);
                }
                same
            });
        }
        Object {
            members: members.into_bump_slice(),
        }
    }

    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<&'a Json<'a>> {
        // A spec has a handful of members: comparing for equality (lengths first) beats
        // ordering comparisons there; large objects use the order.
        let members = self.members;
        if members.len() <= 16 {
            return members.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
        }
        members
            .binary_search_by(|(k, _)| (*k).cmp(key))
            .ok()
            .map(|i| &members[i].1)
    }

    /// True when `key` is present (even with a null value).
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The members, sorted by key.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a Json<'a>)> + use<'a> {
        self.members.iter().map(|(k, v)| (*k, v))
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl<'a> Json<'a> {
    /// The member `key` of an object; None for a missing key or a non-object.
    pub fn get(&self, key: &str) -> Option<&'a Json<'a>> {
        self.as_object().and_then(|o| o.get(key))
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&'a [Json<'a>]> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The number as a u64, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// The number as an i64, if it is an integer in range.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// The number as an f64, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// `value`, copied into `arena` (for values that come from serde_json: the offline
    /// validator, and reviews the fast reader leaves to serde_json).
    pub fn from_value(value: &Value, arena: &'a Bump) -> Json<'a> {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.clone()),
            Value::String(s) => Json::String(arena.alloc_str(s)),
            Value::Array(a) => Json::Array(
                arena.alloc_slice_fill_iter(a.iter().map(|v| Json::from_value(v, arena))),
            ),
            // A Value's map is already sorted with unique keys.
            Value::Object(m) => Json::Object(Object {
                members: arena.alloc_slice_fill_iter(
                    m.iter()
                        .map(|(k, v)| (&*arena.alloc_str(k), Json::from_value(v, arena))),
                ),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Conversions

impl From<&Json<'_>> for Value {
    fn from(json: &Json<'_>) -> Self {
        match json {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.to_string()),
            Json::Array(a) => Value::Array(a.iter().map(Value::from).collect()),
            Json::Object(o) => Value::from(o),
        }
    }
}

impl From<&Object<'_>> for Value {
    fn from(object: &Object<'_>) -> Self {
        Value::Object(
            object
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(v)))
                .collect(),
        )
    }
}

// ---------------------------------------------------------------------------------------
// Serialize: the same output as the equivalent serde_json::Value.

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(a) => {
                let mut seq = serializer.serialize_seq(Some(a.len()))?;
                for element in a.iter() {
                    seq.serialize_element(element)?;
                }
                seq.end()
            }
            Json::Object(o) => o.serialize(serializer),
        }
    }
}

impl Serialize for Object<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl fmt::Display for Json<'_> {
    /// Compact JSON, as `serde_json::Value`'s Display.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

// ---------------------------------------------------------------------------------------
// Deserialize: strings of the envelope, borrowing from the input when they can.

/// A string that borrows from the input when it has no escapes. Serde's own `Cow<str>` impl
/// always copies, and `#[serde(borrow)]` borrows only a bare `Cow<str>` field, not one in
/// an `Option`: see [`borrowed_opt_str`].
struct BorrowedStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BorrowedStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(Key(PhantomData))
            .map(BorrowedStr)
    }
}

/// For `#[serde(deserialize_with = ...)]` on an `Option<Cow<'a, str>>` field: null or
/// absent is None, a string borrows from the input when it can.
pub fn borrowed_opt_str<'de: 'a, 'a, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<BorrowedStr<'a>>::deserialize(deserializer)?.map(|s| s.0))
}

/// Deserialises a string as a `Cow` that borrows from the input when it can.
struct Key<'a>(PhantomData<&'a str>);

impl<'de: 'a, 'a> Visitor<'de> for Key<'a> {
    type Value = Cow<'a, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An arena that lives as long as the test process (tests only).
    fn arena() -> &'static Bump {
        Box::leak(Box::new(Bump::new()))
    }

    /// `text` read by the admission reader.
    fn parse(text: &str) -> Json<'_> {
        super::super::reader::value_of(text, arena()).expect("the reader reads it")
    }

    fn from_value(value: &Value) -> Json<'static> {
        Json::from_value(value, arena())
    }

    /// True when `s` points into `text`.
    fn borrows_from(s: &str, text: &str) -> bool {
        text.as_bytes().as_ptr_range().contains(&s.as_ptr())
    }

    #[test]
    fn a_string_without_escapes_borrows_from_the_input() {
        let text = r#"{"image":"ghcr.io/org/app"}"#;
        let v = parse(text);
        let Some(Json::String(s)) = v.get("image") else {
            panic!("not a string: {v:?}");
        };
        assert_eq!(*s, "ghcr.io/org/app");
        assert!(borrows_from(s, text));
        let Json::Object(o) = &v else { panic!() };
        assert!(borrows_from(o.members[0].0, text));
    }

    #[test]
    fn a_string_or_key_with_escapes_is_unescaped_into_the_arena() {
        let text = r#"{"a\"b":"^.*\\.sig$","c":"\u00e9\n"}"#;
        let v = parse(text);
        let Json::Object(o) = &v else { panic!() };
        assert_eq!(o.members[0].0, "a\"b");
        assert!(!borrows_from(o.members[0].0, text));
        let pattern = v.get("a\"b").and_then(Json::as_str).unwrap();
        assert_eq!(pattern, "^.*\\.sig$");
        assert!(!borrows_from(pattern, text));
        assert_eq!(v.get("c").and_then(Json::as_str), Some("é\n"));
    }

    #[test]
    fn numbers_keep_their_kind_as_in_serde_json() {
        let v = parse(r#"[600, -3, 18446744073709551615, 1.5, 1e3, 0]"#);
        let a = v.as_array().unwrap();
        assert_eq!(a[0].as_u64(), Some(600));
        assert_eq!(a[0].as_i64(), Some(600));
        assert_eq!(a[1].as_u64(), None);
        assert_eq!(a[1].as_i64(), Some(-3));
        assert_eq!(a[2].as_u64(), Some(u64::MAX));
        assert_eq!(a[2].as_i64(), None);
        assert_eq!(a[3].as_f64(), Some(1.5));
        assert_eq!(a[3].as_i64(), None);
        assert_eq!(a[4].as_f64(), Some(1000.0));
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            "[600,-3,18446744073709551615,1.5,1000.0,0]"
        );
        let as_value: Value =
            serde_json::from_str(r#"[600, -3, 18446744073709551615, 1.5, 1e3, 0]"#).unwrap();
        assert_eq!(Value::from(&v), as_value);
    }

    #[test]
    fn nested_objects_and_arrays_are_reachable_through_the_accessors() {
        let v = parse(
            r#"{"accessFrom":{"namespaceSelectors":[{"matchLabels":{"team":"a"}}]},"insecure":true,"x":null}"#,
        );
        let selectors = v
            .get("accessFrom")
            .and_then(|a| a.get("namespaceSelectors"))
            .and_then(Json::as_array)
            .unwrap();
        assert_eq!(selectors.len(), 1);
        let labels = selectors[0]
            .get("matchLabels")
            .and_then(Json::as_object)
            .unwrap();
        assert_eq!(labels.len(), 1);
        assert!(!labels.is_empty());
        assert!(labels.contains_key("team"));
        assert!(!labels.contains_key("other"));
        assert_eq!(
            labels.iter().collect::<Vec<_>>(),
            [("team", &Json::String("a"))]
        );
        assert_eq!(v.get("insecure").and_then(Json::as_bool), Some(true));
        assert!(v.get("x").unwrap().is_null());
        assert!(v.as_object().unwrap().contains_key("x"));
        assert_eq!(v.get("missing"), None);
        assert_eq!(v.get("insecure").and_then(Json::as_str), None);
        assert_eq!(Json::String("s").get("s"), None);
    }

    #[test]
    fn a_repeated_key_keeps_the_last_value_as_serde_json_does() {
        let text = r#"{"b":1,"a":2,"b":3,"c":{"z":1,"z":{"y":2}},"a":4}"#;
        let v = parse(text);
        assert_eq!(v.get("a").and_then(Json::as_u64), Some(4));
        assert_eq!(v.get("b").and_then(Json::as_u64), Some(3));
        assert_eq!(v.as_object().unwrap().len(), 3);
        assert_eq!(
            v.get("c").and_then(|c| c.get("z")),
            Some(&from_value(&json!({"y": 2})))
        );
        let as_value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(Value::from(&v), as_value);
    }

    #[test]
    fn iteration_is_in_key_order_as_with_a_value() {
        let text = r#"{"zeta":1,"Alpha":2,"beta":3,"alpha":4}"#;
        let v = parse(text);
        let keys: Vec<&str> = v.as_object().unwrap().iter().map(|(k, _)| k).collect();
        let as_value: Value = serde_json::from_str(text).unwrap();
        let value_keys: Vec<&str> = as_value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, value_keys);
        assert_eq!(keys, ["Alpha", "alpha", "beta", "zeta"]);
    }

    #[test]
    fn objects_compare_as_maps_whatever_the_key_order() {
        let a = parse(r#"{"image":"a","interval":"5m","secretRef":{"name":"x","k":[1,2]}}"#);
        let b = parse(r#"{"secretRef":{"k":[1,2],"name":"x"},"interval":"5m","image":"a"}"#);
        assert_eq!(a, b);
        let c = parse(r#"{"image":"a","interval":"5m","secretRef":{"name":"x","k":[2,1]}}"#);
        assert_ne!(a, c, "array order matters");
        let d = parse(r#"{"image":"a","interval":"5m"}"#);
        assert_ne!(a, d, "a missing member matters");
        let e = parse(r#"{"image":"a","interval":"5m","timeout":null}"#);
        assert_ne!(d, e, "a null member is not a missing one");
        // Strings from the input and from the arena with the same text are equal.
        assert_eq!(parse(r#"{"k":"v"}"#), from_value(&json!({"k": "v"})));
        assert_eq!(parse(r#"{"k":"v"}"#), parse(r#"{"\u006b":"\u0076"}"#));
    }

    #[test]
    fn serialising_gives_the_same_text_as_the_equivalent_value() {
        let text =
            r#"{"z":[true,false,null,"q\"uote",-1.25,{"b":{},"a":[]}],"a":"é","m":{"y":1,"x":2}}"#;
        let v = parse(text);
        let as_value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), as_value.to_string());
        assert_eq!(v.to_string(), as_value.to_string());
        // And the text parses back to an equal value.
        let again = serde_json::to_string(&v).unwrap();
        assert_eq!(parse(&again), v);
        assert_eq!(from_value(&as_value), v);
        assert_eq!(Value::from(&v), as_value);
    }

    #[test]
    fn a_large_unsorted_object_with_duplicates_is_sorted_once() {
        let mut text = String::from("{");
        for i in (0..5000).rev() {
            text.push_str(&format!("\"k{i}\":{i},\"k{}\":\"dup\",", i % 7));
        }
        text.push_str("\"end\":0}");
        let v = parse(&text);
        let as_value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(Value::from(&v), as_value);
        assert_eq!(v.get("k3").and_then(Json::as_str), Some("dup"));
        assert_eq!(v.get("k4999").and_then(Json::as_u64), Some(4999));
    }

    mod same_as_value {
        use super::*;
        use proptest::prelude::*;

        /// A JSON string literal for `s`: plainly escaped, or every character as `\uXXXX`.
        fn literal(s: &str, as_unicode_escapes: bool) -> String {
            if !as_unicode_escapes {
                return serde_json::to_string(s).unwrap();
            }
            let mut out = String::from("\"");
            for unit in s.encode_utf16() {
                out.push_str(&format!("\\u{unit:04x}"));
            }
            out.push('"');
            out
        }

        /// JSON text with short keys (so objects repeat keys and come in any order),
        /// escaped and plain strings, and every kind of number.
        fn text() -> impl Strategy<Value = String> {
            let key = ("[ab\"\\\\é\n]{0,2}", any::<bool>()).prop_map(|(k, u)| literal(&k, u));
            let leaf = prop_oneof![
                Just("null".to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                (-1e6f64..1e6).prop_map(|f| format!("{f:e}")),
                ("\\PC{0,6}", any::<bool>()).prop_map(|(s, u)| literal(&s, u)),
            ];
            leaf.prop_recursive(4, 48, 6, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6)
                        .prop_map(|items| format!("[{}]", items.join(","))),
                    prop::collection::vec((key.clone(), inner), 0..6).prop_map(|members| {
                        let members: Vec<String> = members
                            .into_iter()
                            .map(|(k, v)| format!("{k}:{v}"))
                            .collect();
                        format!("{{{}}}", members.join(","))
                    }),
                ]
            })
        }

        proptest! {
            #[test]
            fn parses_serialises_and_converts_as_a_value_does(t in text()) {
                let value: Value = serde_json::from_str(&t).unwrap();
                let arena = Bump::new();
                let json = super::super::super::reader::value_of(&t, &arena).unwrap();
                prop_assert_eq!(&Value::from(&json), &value);
                prop_assert_eq!(serde_json::to_string(&json).unwrap(), value.to_string());
                prop_assert_eq!(Json::from_value(&value, &arena), json);
            }
        }
    }

    #[test]
    fn non_json_text_is_not_read() {
        let arena = Bump::new();
        assert!(super::super::reader::value_of(r#"{"a":}"#, &arena).is_none());
        assert!(super::super::reader::value_of(r#"{1:2}"#, &arena).is_none());
    }
}
