//! The boundary: JSON values (what the wire protocol and the serde types speak) to and from
//! plain Python objects (dict, list, str, int, float, bool, None).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::collections::HashMap;
/// JSON text (a batch of events from embed) as Python objects, built while reading: no
/// intermediate value tree. Object keys and short strings repeat across the events of a batch
/// (`type`, `context`, ids, `text_delta`...): each distinct one becomes one Python str, shared.
pub(crate) fn parse<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    use serde::de::DeserializeSeed;
    let strings = RefCell::new(HashMap::new());
    let mut de = serde_json::Deserializer::from_str(text);
    let value = PySeed {
        py,
        strings: &strings,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v))
    .map_err(|e| {
        crate::error::to_py(agentvm_embed::agentvm::Error::Internal(format!(
            "reading agentvm's JSON: {e}"
        )))
    })?;
    Ok(value)
}

/// Strings longer than this are not shared (they are message text, rarely repeated).
const SHARED_STRING_MAX: usize = 64;

/// The Python strs made so far in one `parse`, by their text.
type Strings<'de, 'py> = RefCell<HashMap<&'de str, Bound<'py, PyString>>>;

/// The Python str for `v`: shared when it is short and seen before in this parse.
fn shared_str<'de, 'py>(
    py: Python<'py>,
    strings: &Strings<'de, 'py>,
    v: &'de str,
) -> Bound<'py, PyString> {
    if v.len() > SHARED_STRING_MAX {
        return PyString::new(py, v);
    }
    strings
        .borrow_mut()
        .entry(v)
        .or_insert_with(|| PyString::new(py, v))
        .clone()
}

/// Reads one JSON value into a Python object.
#[derive(Clone, Copy)]
struct PySeed<'a, 'de, 'py> {
    py: Python<'py>,
    strings: &'a Strings<'de, 'py>,
}

fn de_err<E: serde::de::Error>(e: PyErr) -> E {
    E::custom(e)
}

impl<'de, 'py> serde::de::DeserializeSeed<'de> for PySeed<'_, 'de, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'py> serde::de::Visitor<'de> for PySeed<'_, 'de, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.py, v).to_owned().into_any())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        v.into_pyobject(self.py)
            .map(Bound::into_any)
            .map_err(|e| de_err(e.into()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        v.into_pyobject(self.py)
            .map(Bound::into_any)
            .map_err(|e| de_err(e.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(PyFloat::new(self.py, v).into_any())
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(shared_str(self.py, self.strings, v).into_any())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.py, v).into_any())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.py.None().into_bound(self.py))
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let list = PyList::empty(self.py);
        while let Some(item) = seq.next_element_seed(self)? {
            list.append(item).map_err(de_err)?;
        }
        Ok(list.into_any())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.py);
        while let Some(key) = map.next_key_seed(KeySeed(self))? {
            let value = map.next_value_seed(self)?;
            dict.set_item(key, value).map_err(de_err)?;
        }
        Ok(dict.into_any())
    }
}

/// Reads an object's key as a (shared) Python str.
struct KeySeed<'a, 'de, 'py>(PySeed<'a, 'de, 'py>);

impl<'de, 'py> serde::de::DeserializeSeed<'de> for KeySeed<'_, 'de, 'py> {
    type Value = Bound<'py, PyString>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'py> serde::de::Visitor<'de> for KeySeed<'_, 'de, 'py> {
    type Value = Bound<'py, PyString>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(shared_str(self.0.py, self.0.strings, v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.0.py, v))
    }
}

/// A command's response as Python objects: its `data` only (what the caller asked for),
/// built straight from the response without its envelope.
pub(crate) fn response_data<'py>(
    py: Python<'py>,
    response: &agentvm_embed::agentvm::Response,
) -> PyResult<Bound<'py, PyAny>> {
    agentvm_embed::serialize_response_data(response, PySer { py }).map_err(|e| e.0)
}

/// Checks that a value converts to JSON and back unchanged (used by tests of the boundary).
#[pyfunction]
pub(crate) fn _json_round_trip<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let v = from_py(value)?;
    let text = serde_json::to_string(&v).map_err(|e| PyTypeError::new_err(e.to_string()))?;
    parse(py, &text)
}

/// A Python object as a JSON value. Dict keys must be strings; tuples count as lists.
pub(crate) fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_str()?.to_owned()));
    }
    // bool before int: Python's bool is an int.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.cast::<PyInt>().is_ok() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        return Ok(Value::from(obj.extract::<u64>()?));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| PyTypeError::new_err("NaN and infinity are not JSON numbers"));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = k
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err("JSON object keys must be str"))?;
            map.insert(key.to_str()?.to_owned(), from_py(&v)?);
        }
        return Ok(Value::Object(map));
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return l
            .iter()
            .map(|v| from_py(&v))
            .collect::<PyResult<_>>()
            .map(Value::Array);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return t
            .iter()
            .map(|v| from_py(&v))
            .collect::<PyResult<_>>()
            .map(Value::Array);
    }
    Err(PyTypeError::new_err(format!(
        "cannot send a {} as JSON: use dict, list, str, int, float, bool or None",
        obj.get_type().name()?
    )))
}

/// A serde type as a Python object directly, without an intermediate JSON value (the hot
/// path of responses and events: no per-key `String` or map allocations).
pub(crate) fn serialize<'py, T: serde::Serialize + ?Sized>(
    py: Python<'py>,
    value: &T,
) -> PyResult<Bound<'py, PyAny>> {
    value.serialize(PySer { py }).map_err(|e| e.0)
}

/// A serde error carrying the Python exception.
#[derive(Debug)]
pub(crate) struct SerError(PyErr);

impl std::fmt::Display for SerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SerError {}

impl serde::ser::Error for SerError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        SerError(PyTypeError::new_err(msg.to_string()))
    }
}

impl From<std::convert::Infallible> for SerError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

impl From<PyErr> for SerError {
    fn from(e: PyErr) -> Self {
        SerError(e)
    }
}

/// The serializer into Python objects.
#[derive(Clone, Copy)]
struct PySer<'py> {
    py: Python<'py>,
}

/// Builds a list (sequences, tuples).
struct SeqSer<'py> {
    py: Python<'py>,
    list: Bound<'py, PyList>,
    /// For tuple variants: `{variant: [...]}`.
    variant: Option<&'static str>,
}

/// Builds a dict (maps, structs).
struct MapSer<'py> {
    py: Python<'py>,
    dict: Bound<'py, PyDict>,
    key: Option<Bound<'py, PyAny>>,
    /// For struct variants: `{variant: {...}}`.
    variant: Option<&'static str>,
}

fn wrap_variant<'py>(
    py: Python<'py>,
    variant: Option<&'static str>,
    value: Bound<'py, PyAny>,
) -> Result<Bound<'py, PyAny>, SerError> {
    match variant {
        None => Ok(value),
        Some(v) => {
            let d = PyDict::new(py);
            d.set_item(v, value)?;
            Ok(d.into_any())
        }
    }
}

impl<'py> serde::Serializer for PySer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = SerError;
    type SerializeSeq = SeqSer<'py>;
    type SerializeTuple = SeqSer<'py>;
    type SerializeTupleStruct = SeqSer<'py>;
    type SerializeTupleVariant = SeqSer<'py>;
    type SerializeMap = MapSer<'py>;
    type SerializeStruct = MapSer<'py>;
    type SerializeStructVariant = MapSer<'py>;

    fn serialize_bool(self, v: bool) -> Result<Self::Ok, SerError> {
        Ok(PyBool::new(self.py, v).to_owned().into_any())
    }
    fn serialize_i8(self, v: i8) -> Result<Self::Ok, SerError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<Self::Ok, SerError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<Self::Ok, SerError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<Self::Ok, SerError> {
        Ok(v.into_pyobject(self.py)?.into_any())
    }
    fn serialize_u8(self, v: u8) -> Result<Self::Ok, SerError> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<Self::Ok, SerError> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<Self::Ok, SerError> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<Self::Ok, SerError> {
        Ok(v.into_pyobject(self.py)?.into_any())
    }
    fn serialize_f32(self, v: f32) -> Result<Self::Ok, SerError> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Self::Ok, SerError> {
        Ok(PyFloat::new(self.py, v).into_any())
    }
    fn serialize_char(self, v: char) -> Result<Self::Ok, SerError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<Self::Ok, SerError> {
        Ok(PyString::new(self.py, v).into_any())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Self::Ok, SerError> {
        let list = PyList::empty(self.py);
        for b in v {
            list.append(*b)?;
        }
        Ok(list.into_any())
    }
    fn serialize_none(self) -> Result<Self::Ok, SerError> {
        Ok(self.py.None().into_bound(self.py))
    }
    fn serialize_some<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Self::Ok, SerError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Self::Ok, SerError> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Self::Ok, SerError> {
        self.serialize_none()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Self::Ok, SerError> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: serde::Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Self::Ok, SerError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: serde::Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Self::Ok, SerError> {
        let inner = value.serialize(self)?;
        wrap_variant(self.py, Some(variant), inner)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<SeqSer<'py>, SerError> {
        Ok(SeqSer {
            py: self.py,
            list: PyList::empty(self.py),
            variant: None,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer<'py>, SerError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqSer<'py>, SerError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<SeqSer<'py>, SerError> {
        Ok(SeqSer {
            py: self.py,
            list: PyList::empty(self.py),
            variant: Some(variant),
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapSer<'py>, SerError> {
        Ok(MapSer {
            py: self.py,
            dict: PyDict::new(self.py),
            key: None,
            variant: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapSer<'py>, SerError> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<MapSer<'py>, SerError> {
        Ok(MapSer {
            py: self.py,
            dict: PyDict::new(self.py),
            key: None,
            variant: Some(variant),
        })
    }
}

impl<'py> SeqSer<'py> {
    fn push<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        self.list.append(value.serialize(PySer { py: self.py })?)?;
        Ok(())
    }
    fn done(self) -> Result<Bound<'py, PyAny>, SerError> {
        wrap_variant(self.py, self.variant, self.list.into_any())
    }
}

impl<'py> serde::ser::SerializeSeq for SeqSer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = SerError;
    fn serialize_element<T: serde::Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), SerError> {
        self.push(value)
    }
    fn end(self) -> Result<Self::Ok, SerError> {
        self.done()
    }
}

impl<'py> serde::ser::SerializeTuple for SeqSer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = SerError;
    fn serialize_element<T: serde::Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), SerError> {
        self.push(value)
    }
    fn end(self) -> Result<Self::Ok, SerError> {
        self.done()
    }
}

impl<'py> serde::ser::SerializeTupleStruct for SeqSer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = SerError;
    fn serialize_field<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        self.push(value)
    }
    fn end(self) -> Result<Self::Ok, SerError> {
        self.done()
    }
}

impl<'py> serde::ser::SerializeTupleVariant for SeqSer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = SerError;
    fn serialize_field<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        self.push(value)
    }
    fn end(self) -> Result<Self::Ok, SerError> {
        self.done()
    }
}

impl<'py> MapSer<'py> {
    fn field<T: serde::Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), SerError> {
        self.dict
            .set_item(key, value.serialize(PySer { py: self.py })?)?;
        Ok(())
    }
    fn done(self) -> Result<Bound<'py, PyAny>, SerError> {
        wrap_variant(self.py, self.variant, self.dict.into_any())
    }
}

impl<'py> serde::ser::SerializeMap for MapSer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = SerError;
    fn serialize_key<T: serde::Serialize + ?Sized>(&mut self, key: &T) -> Result<(), SerError> {
        self.key = Some(key.serialize(PySer { py: self.py })?);
        Ok(())
    }
    fn serialize_value<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| SerError(PyTypeError::new_err("a map value without a key")))?;
        self.dict
            .set_item(key, value.serialize(PySer { py: self.py })?)?;
        Ok(())
    }
    fn end(self) -> Result<Self::Ok, SerError> {
        self.done()
    }
}

impl<'py> serde::ser::SerializeStruct for MapSer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = SerError;
    fn serialize_field<T: serde::Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), SerError> {
        self.field(key, value)
    }
    fn end(self) -> Result<Self::Ok, SerError> {
        self.done()
    }
}

impl<'py> serde::ser::SerializeStructVariant for MapSer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = SerError;
    fn serialize_field<T: serde::Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), SerError> {
        self.field(key, value)
    }
    fn end(self) -> Result<Self::Ok, SerError> {
        self.done()
    }
}
