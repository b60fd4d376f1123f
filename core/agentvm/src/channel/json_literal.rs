//! A value's JSON text and that text as a JSON string literal, written in one serialization.
//!
//! The Channel frames an event as `"__payload":"<its JSON, escaped>"`, and the replay log and
//! every binding want the plain JSON. Serializing with serde_json and escaping the result walks
//! the text twice more; here one serializer writes both texts as it goes. Everything JSON
//! writes as is (punctuation, numbers, strings that need no escape) goes to both unchanged;
//! only what differs is written differently: a string's quotes (`"` in the JSON, `\"` in the
//! literal) and its escapes (`\n`, then `\\n`). Strings are checked eight bytes at a time
//! (`codec::any_needs_escape`), where serde_json looks at every byte.
//!
//! The output is byte for byte serde_json's compact JSON and [`escape`]
//! of it (tests compare them on any value). What this serializer does not write itself — map
//! keys other than strings and integers, serde_json's raw values — is an error, and
//! [`to_json_and_literal`] then falls back to serde_json and the escaper.

use super::codec::{any_needs_escape, escape, escape_into};
use serde::ser::{self, Serialize};
use serde_json::ser::{CompactFormatter, Formatter};
use serde_json::Error;

type Result<T> = std::result::Result<T, Error>;

/// serde_json's name for its raw values, which only it can write.
const RAW_VALUE: &str = "$serde_json::private::RawValue";

/// `value`'s compact JSON, and that JSON as a JSON string literal (quotes included): what
/// `serde_json::to_string(value)` writes and [`escape`] of that. `capacity`: the JSON's
/// expected length.
pub fn to_json_and_literal<T: Serialize + ?Sized>(
    value: &T,
    capacity: usize,
) -> Result<(String, String)> {
    let mut out = Out {
        json: Vec::with_capacity(capacity),
        literal: Vec::with_capacity(capacity + capacity / 4 + 2),
    };
    out.literal.push(b'"');
    if value.serialize(Ser(&mut out)).is_err() {
        // Something only serde_json writes (or a real error, which it then reports).
        let json = serde_json::to_string(value)?;
        let literal = escape(&json);
        return Ok((json, literal));
    }
    out.literal.push(b'"');
    // Both are UTF-8: whole strings were copied, and only ASCII was added between them.
    let json = String::from_utf8(out.json).map_err(ser::Error::custom)?;
    let literal = String::from_utf8(out.literal).map_err(ser::Error::custom)?;
    Ok((json, literal))
}

/// The two texts being written.
struct Out {
    json: Vec<u8>,
    literal: Vec<u8>,
}

impl Out {
    /// Bytes that read the same in both.
    #[inline]
    fn both(&mut self, bytes: &[u8]) {
        self.json.extend_from_slice(bytes);
        self.literal.extend_from_slice(bytes);
    }

    #[inline]
    fn quote(&mut self) {
        self.json.push(b'"');
        self.literal.extend_from_slice(b"\\\"");
    }

    /// `s` as a JSON string in the JSON, and that string escaped again in the literal.
    #[inline]
    fn string(&mut self, s: &str) {
        let bytes = s.as_bytes();
        if !any_needs_escape(bytes) {
            // The usual case (names, ids, most text): copied as is into both.
            self.json.reserve(bytes.len() + 2);
            self.json.push(b'"');
            self.json.extend_from_slice(bytes);
            self.json.push(b'"');
            self.literal.reserve(bytes.len() + 4);
            self.literal.extend_from_slice(b"\\\"");
            self.literal.extend_from_slice(bytes);
            self.literal.extend_from_slice(b"\\\"");
            return;
        }
        self.quote();
        let start = self.json.len();
        escape_into(&mut self.json, bytes);
        escape_into(&mut self.literal, &self.json[start..]);
        self.quote();
    }

    /// What `write` (serde_json's formatter, for numbers) puts in the JSON, copied to the
    /// literal.
    #[inline]
    fn formatted(&mut self, write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> Result<()> {
        let start = self.json.len();
        write(&mut self.json).map_err(Error::io)?;
        let (json, literal) = (&self.json, &mut self.literal);
        literal.extend_from_slice(&json[start..]);
        Ok(())
    }
}

/// The serializer: serde_json's compact format, into both texts.
struct Ser<'a>(&'a mut Out);

/// An array or object being written; `variant` when it is the value of an enum variant's
/// `{"<variant>": …}`, which its end closes too.
struct Compound<'a> {
    out: &'a mut Out,
    /// Nothing written yet (no comma before the next element).
    first: bool,
    /// `[]` or `{}` already written for a length of zero, as serde_json does.
    empty: bool,
    variant: bool,
}

impl<'a> Compound<'a> {
    fn open(out: &'a mut Out, open: u8, close: u8, len: Option<usize>, variant: bool) -> Self {
        out.both(&[open]);
        let empty = len == Some(0);
        if empty {
            out.both(&[close]);
        }
        Compound {
            out,
            first: true,
            empty,
            variant,
        }
    }

    #[inline]
    fn comma(&mut self) {
        if !std::mem::replace(&mut self.first, false) {
            self.out.both(b",");
        }
    }

    fn close(self, close: u8) -> Result<()> {
        if !self.empty {
            self.out.both(&[close]);
        }
        if self.variant {
            self.out.both(b"}");
        }
        Ok(())
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.comma();
        value.serialize(Ser(self.out))
    }

    fn entry<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<()> {
        self.comma();
        self.out.string(key);
        self.out.both(b":");
        value.serialize(Ser(self.out))
    }
}

/// `{"<variant>":` before an enum variant's value.
fn variant_key(out: &mut Out, variant: &str) {
    out.both(b"{");
    out.string(variant);
    out.both(b":");
}

fn unsupported(what: &str) -> Error {
    ser::Error::custom(format!("{what} is left to serde_json"))
}

/// The narrower integers, written as the 64-bit ones.
macro_rules! widened_ints {
    () => {
        fn serialize_i8(self, v: i8) -> Result<()> {
            self.serialize_i64(i64::from(v))
        }
        fn serialize_i16(self, v: i16) -> Result<()> {
            self.serialize_i64(i64::from(v))
        }
        fn serialize_i32(self, v: i32) -> Result<()> {
            self.serialize_i64(i64::from(v))
        }
        fn serialize_u8(self, v: u8) -> Result<()> {
            self.serialize_u64(u64::from(v))
        }
        fn serialize_u16(self, v: u16) -> Result<()> {
            self.serialize_u64(u64::from(v))
        }
        fn serialize_u32(self, v: u32) -> Result<()> {
            self.serialize_u64(u64::from(v))
        }
    };
}

impl<'a> ser::Serializer for Ser<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.0.both(if v { b"true" } else { b"false" });
        Ok(())
    }
    widened_ints!();
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.0.formatted(|w| CompactFormatter.write_i64(w, v))
    }
    fn serialize_i128(self, v: i128) -> Result<()> {
        self.0.formatted(|w| CompactFormatter.write_i128(w, v))
    }
    fn serialize_u64(self, v: u64) -> Result<()> {
        self.0.formatted(|w| CompactFormatter.write_u64(w, v))
    }
    fn serialize_u128(self, v: u128) -> Result<()> {
        self.0.formatted(|w| CompactFormatter.write_u128(w, v))
    }
    fn serialize_f32(self, v: f32) -> Result<()> {
        if !v.is_finite() {
            return self.serialize_unit();
        }
        self.0.formatted(|w| CompactFormatter.write_f32(w, v))
    }
    fn serialize_f64(self, v: f64) -> Result<()> {
        if !v.is_finite() {
            return self.serialize_unit();
        }
        self.0.formatted(|w| CompactFormatter.write_f64(w, v))
    }
    fn serialize_char(self, v: char) -> Result<()> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        self.0.string(v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        use ser::SerializeSeq;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.serialize_element(b)?;
        }
        seq.end()
    }
    fn serialize_none(self) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        self.0.both(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<()> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<()> {
        variant_key(self.0, variant);
        value.serialize(Ser(&mut *self.0))?;
        self.0.both(b"}");
        Ok(())
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'a>> {
        Ok(Compound::open(self.0, b'[', b']', len, false))
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Compound<'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a>> {
        variant_key(self.0, variant);
        Ok(Compound::open(self.0, b'[', b']', Some(len), true))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'a>> {
        Ok(Compound::open(self.0, b'{', b'}', len, false))
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Compound<'a>> {
        if name == RAW_VALUE {
            return Err(unsupported("a raw value"));
        }
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a>> {
        variant_key(self.0, variant);
        Ok(Compound::open(self.0, b'{', b'}', Some(len), true))
    }
}

/// The array-like compounds: each element after a comma, `]` at the end.
macro_rules! array_like {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
                self.element(value)
            }
            fn end(self) -> Result<()> {
                self.close(b']')
            }
        }
    )*};
}

array_like!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.comma();
        key.serialize(Key(self.out))?;
        self.out.both(b":");
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        value.serialize(Ser(self.out))
    }
    fn end(self) -> Result<()> {
        self.close(b'}')
    }
}

/// The object-like compounds with named fields: `"<key>":<value>` after a comma, `}` at the end.
macro_rules! struct_like {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<()> {
                self.entry(key, value)
            }
            fn end(self) -> Result<()> {
                self.close(b'}')
            }
        }
    )*};
}

struct_like!(SerializeStruct, SerializeStructVariant);

/// A map key: strings, and integers quoted as serde_json quotes them; any other key is left
/// to serde_json.
struct Key<'a>(&'a mut Out);

impl Key<'_> {
    fn quoted(self, write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> Result<()> {
        self.0.quote();
        self.0.formatted(write)?;
        self.0.quote();
        Ok(())
    }
}

impl ser::Serializer for Key<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = ser::Impossible<(), Error>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fn serialize_str(self, v: &str) -> Result<()> {
        self.0.string(v);
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<()> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(self)
    }
    widened_ints!();
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.quoted(|w| CompactFormatter.write_i64(w, v))
    }
    fn serialize_u64(self, v: u64) -> Result<()> {
        self.quoted(|w| CompactFormatter.write_u64(w, v))
    }
    fn serialize_bool(self, _: bool) -> Result<()> {
        Err(unsupported("a bool key"))
    }
    fn serialize_f32(self, _: f32) -> Result<()> {
        Err(unsupported("a float key"))
    }
    fn serialize_f64(self, _: f64) -> Result<()> {
        Err(unsupported("a float key"))
    }
    fn serialize_char(self, _: char) -> Result<()> {
        Err(unsupported("a char key"))
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<()> {
        Err(unsupported("a bytes key"))
    }
    fn serialize_none(self) -> Result<()> {
        Err(unsupported("a none key"))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<()> {
        Err(unsupported("an option key"))
    }
    fn serialize_unit(self) -> Result<()> {
        Err(unsupported("a unit key"))
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<()> {
        Err(unsupported("a unit key"))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<()> {
        Err(unsupported("a variant key"))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(unsupported("a sequence key"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple> {
        Err(unsupported("a tuple key"))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        Err(unsupported("a tuple key"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(unsupported("a variant key"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap> {
        Err(unsupported("a map key"))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct> {
        Err(unsupported("a struct key"))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(unsupported("a variant key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::collections::{BTreeMap, HashMap};

    /// Both texts are what serde_json and the escaper write.
    fn agrees<T: Serialize + ?Sized>(value: &T) {
        let (text, literal) = to_json_and_literal(value, 16).expect("serializes");
        let expected = serde_json::to_string(value).expect("serializes");
        assert_eq!(text, expected);
        assert_eq!(literal, escape(&expected), "{expected}");
    }

    #[test]
    fn values_agree() {
        let every_control: String = (0u8..0x20).map(char::from).collect();
        agrees(&json!({
            "type": "text_delta",
            "data": {"text": "a \"quoted\" \\ back\\slash / tab\there\r\nline"},
            "controls": every_control,
            "unicode": "héllo — 日本語 🎉 \u{2028}\u{7f}",
            "numbers": [0, -1, 1.5, -0.0, 1e300, f64::MIN_POSITIVE, u64::MAX, i64::MIN],
            "nested": {"empty": {}, "list": [], "null": null, "yes": true, "no": false},
            "key \"with\" quotes\n": "value",
        }));
        agrees(&json!("just a \"string\""));
        agrees(&json!(42));
        agrees(&json!([[], {}, [[]], [{}]]));
    }

    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Shapes {
        unit: (),
        unit_struct: UnitStruct,
        newtype: Newtype,
        tuple: (u8, i8, u16, i16, u32, i32, u64, i64, u128, i128),
        tuple_struct: TupleStruct,
        floats: (f32, f32, f64, f64, f64),
        chars: (char, char, char),
        #[serde(with = "serde_bytes_as_seq")]
        bytes: Vec<u8>,
        option: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<String>,
        enums: Vec<Shape>,
        int_keys: BTreeMap<u64, String>,
        signed_keys: BTreeMap<i32, String>,
        variant_keys: BTreeMap<Kind, String>,
        empty_struct: Empty,
        all_skipped: AllSkipped,
    }
    #[derive(serde::Serialize)]
    struct UnitStruct;
    #[derive(serde::Serialize)]
    struct Newtype(String);
    #[derive(serde::Serialize)]
    struct TupleStruct(u8, String);
    #[derive(serde::Serialize)]
    struct Empty {}
    #[derive(serde::Serialize)]
    struct AllSkipped {
        #[serde(skip_serializing_if = "Option::is_none")]
        a: Option<u8>,
    }
    #[derive(serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
    enum Kind {
        First,
        Second,
    }
    #[derive(serde::Serialize)]
    #[allow(dead_code)]
    enum Shape {
        Unit,
        Newtype(String),
        Tuple(u8, String),
        EmptyTuple(),
        Struct { a: u8, b: String },
        EmptyStruct {},
    }
    #[derive(serde::Serialize)]
    #[serde(tag = "type", content = "data", rename_all = "snake_case")]
    enum Adjacent {
        TextDelta { text: String },
        Done,
    }
    #[derive(serde::Serialize)]
    #[serde(tag = "kind")]
    enum Internal {
        A { x: Vec<u8> },
    }
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum Untagged {
        S(String),
        N(f64),
    }
    mod serde_bytes_as_seq {
        pub(super) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
    }

    #[test]
    fn every_serde_shape_agrees() {
        agrees(&Shapes {
            unit: (),
            unit_struct: UnitStruct,
            newtype: Newtype("n\"t".into()),
            tuple: (
                u8::MAX,
                i8::MIN,
                u16::MAX,
                i16::MIN,
                u32::MAX,
                i32::MIN,
                u64::MAX,
                i64::MIN,
                u128::MAX,
                i128::MIN,
            ),
            tuple_struct: TupleStruct(7, "\u{1}".into()),
            floats: (1.1, f32::NAN, f64::INFINITY, 0.1 + 0.2, -1e-7),
            chars: ('a', '"', '\n'),
            bytes: vec![0, 34, 255],
            option: None,
            skipped: None,
            enums: vec![
                Shape::Unit,
                Shape::Newtype("x\\y".into()),
                Shape::Tuple(1, "t".into()),
                Shape::EmptyTuple(),
                Shape::Struct {
                    a: 2,
                    b: "\"b\"".into(),
                },
                Shape::EmptyStruct {},
            ],
            int_keys: [(1, "one".into()), (u64::MAX, "max".into())].into(),
            signed_keys: [(-5, "neg".into())].into(),
            variant_keys: [(Kind::First, "1".into()), (Kind::Second, "2".into())].into(),
            empty_struct: Empty {},
            all_skipped: AllSkipped { a: None },
        });
        agrees(&Adjacent::TextDelta {
            text: "chunk \"42\"\n".into(),
        });
        agrees(&Adjacent::Done);
        agrees(&Internal::A { x: vec![1, 2] });
        agrees(&[Untagged::S("s".into()), Untagged::N(2.5)]);
        let map: HashMap<String, Option<Vec<Value>>> =
            [("k".to_string(), Some(vec![json!(null), json!("v")]))].into();
        agrees(&map);
    }

    #[test]
    fn what_serde_json_alone_writes_is_left_to_it() {
        let raw =
            serde_json::value::RawValue::from_string(r#"{"a": "b\"c\n", "d": [1, 2]}"#.into())
                .expect("valid JSON");
        #[derive(serde::Serialize)]
        struct WithRaw<'a> {
            before: u8,
            raw: &'a serde_json::value::RawValue,
        }
        agrees(&WithRaw {
            before: 1,
            raw: &raw,
        });
        let bool_keys: BTreeMap<bool, u8> = [(false, 0), (true, 1)].into();
        agrees(&bool_keys);
        // A key serde_json refuses is still an error.
        let seq_keys: BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        assert!(to_json_and_literal(&seq_keys, 0).is_err());
        assert!(serde_json::to_string(&seq_keys).is_err());
    }

    #[test]
    fn events_agree() {
        use crate::model::{Event, EventContext, EventPayload};
        let event = Event::new(
            EventPayload::TextDelta {
                text: "chunk \"42\"\n".into(),
            },
            Some(EventContext {
                session_id: Some("sess_1".into()),
                agent_id: Some("agent \u{7}".into()),
                ..Default::default()
            }),
        );
        agrees(&event);
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = "\\PC*|[\\x00-\\x7f]*";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map(text, inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn any_value_agrees(value in any_value()) {
            let (text, literal) = to_json_and_literal(&value, 0).expect("serializes");
            let expected = serde_json::to_string(&value).expect("serializes");
            proptest::prop_assert_eq!(&text, &expected);
            proptest::prop_assert_eq!(literal, escape(&expected));
        }
    }
}
