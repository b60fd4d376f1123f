//! The schema read as types: the small part of JSON Schema that the document uses (objects,
//! unions, literals, arrays, maps), which the Python and TypeScript writers both print.
//! Anything else is an error naming where it is, never a silent `Any`.

use crate::document::{ref_name, DEFS};
use serde_json::Value;

/// A type, as a field or an alias has it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    /// Any JSON value (a `serde_json::Value` in Rust).
    Any,
    /// A string.
    Str,
    /// An integer.
    Int,
    /// A number.
    Float,
    /// `true` or `false`.
    Bool,
    /// `null`.
    Null,
    /// One string value.
    Literal(String),
    /// A named type of the document.
    Ref(String),
    /// A list.
    Array(Box<Ty>),
    /// A fixed-length list.
    Tuple(Vec<Ty>),
    /// An object with string keys and values of one type.
    Map(Box<Ty>),
    /// One of several types.
    Union(Vec<Ty>),
}

impl Ty {
    /// The union without `null`, and whether `null` was in it.
    pub fn split_null(&self) -> (Ty, bool) {
        match self {
            Ty::Union(items) if items.contains(&Ty::Null) => {
                let rest: Vec<Ty> = items.iter().filter(|t| **t != Ty::Null).cloned().collect();
                (Ty::union(rest), true)
            }
            Ty::Null => (Ty::Null, true),
            other => (other.clone(), false),
        }
    }

    /// The union of `items`, nested unions flattened and repeats dropped; one item is itself.
    pub fn union(items: Vec<Ty>) -> Ty {
        let mut flat: Vec<Ty> = Vec::new();
        for item in items {
            match item {
                Ty::Union(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        let mut unique: Vec<Ty> = Vec::new();
        for t in flat {
            if !unique.contains(&t) {
                unique.push(t);
            }
        }
        if unique.len() == 1 {
            unique.remove(0)
        } else {
            Ty::Union(unique)
        }
    }
}

/// A field of an object type.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The JSON key.
    pub name: String,
    /// Its type.
    pub ty: Ty,
    /// Whether the key is always there.
    pub required: bool,
    /// Its documentation.
    pub doc: Option<String>,
}

/// What a named type is.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// An object with these fields (a TypedDict, an interface).
    Object(Vec<Field>),
    /// Another name for a type (a union, a literal union, a reference).
    Alias(Ty),
}

/// A named type of the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Def {
    /// Its name.
    pub name: String,
    /// Its documentation.
    pub doc: Option<String>,
    /// Its shape.
    pub shape: Shape,
}

/// One command of `x-commands`.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandTypes {
    /// The command's name (`image_get`).
    pub name: String,
    /// Its documentation.
    pub doc: Option<String>,
    /// The request's wire type (`image_get_request`).
    pub request_type: String,
    /// The response's wire type.
    pub response_type: String,
    /// The type of the request's data.
    pub request: String,
    /// The type of the response's data.
    pub response: String,
}

/// The whole document, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Protocol {
    /// Every named type, sorted by name (`Command` and `Response` left out: the languages
    /// reach commands through `commands`).
    pub defs: Vec<Def>,
    /// Every command, sorted by name.
    pub commands: Vec<CommandTypes>,
    /// Every event type with the name of its type, sorted.
    pub events: Vec<(String, String)>,
}

/// Definitions only for validating whole frames; the generated types use `x-commands`.
const NOT_GENERATED: &[&str] = &["Command", "Response"];

/// Reads the document made by [`crate::document::document`].
pub fn read(document: &Value) -> Result<Protocol, String> {
    let defs_map = document
        .get("$defs")
        .and_then(Value::as_object)
        .ok_or("the schema has no $defs")?;
    let mut defs = Vec::new();
    for (name, schema) in defs_map {
        if NOT_GENERATED.contains(&name.as_str()) {
            continue;
        }
        defs.push(read_def(name, schema)?);
    }
    defs.sort_by(|a, b| a.name.cmp(&b.name));

    let mut commands = Vec::new();
    for (name, c) in document
        .get("x-commands")
        .and_then(Value::as_object)
        .ok_or("the schema has no x-commands")?
    {
        let text = |key: &str| -> Result<String, String> {
            c.get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("x-commands.{name} has no {key}"))
        };
        let named = |key: &str| -> Result<String, String> {
            c.get(key)
                .and_then(ref_name)
                .map(str::to_string)
                .ok_or_else(|| format!("x-commands.{name}.{key} is not a $ref"))
        };
        commands.push(CommandTypes {
            name: name.clone(),
            doc: c
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            request_type: text("requestType")?,
            response_type: text("responseType")?,
            request: named("request")?,
            response: named("response")?,
        });
    }
    commands.sort_by(|a, b| a.name.cmp(&b.name));

    let mut events = Vec::new();
    for (type_name, schema) in document
        .get("x-events")
        .and_then(Value::as_object)
        .ok_or("the schema has no x-events")?
    {
        let name = ref_name(schema).ok_or_else(|| format!("x-events.{type_name} is not a $ref"))?;
        events.push((type_name.clone(), name.to_string()));
    }
    events.sort();

    let known: Vec<&str> = defs_map.keys().map(String::as_str).collect();
    for def in &defs {
        check_refs(def, &known)?;
    }
    Ok(Protocol {
        defs,
        commands,
        events,
    })
}

fn doc(schema: &Value) -> Option<String> {
    schema
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn read_def(name: &str, schema: &Value) -> Result<Def, String> {
    let is_object = schema.get("type").and_then(Value::as_str) == Some("object")
        && schema.get("oneOf").is_none()
        && schema.get("anyOf").is_none();
    let map_values = schema
        .get("additionalProperties")
        .filter(|a| a.is_object() || *a == &Value::Bool(true));
    let shape = if is_object && (schema.get("properties").is_some() || map_values.is_none()) {
        if map_values.is_some() {
            return Err(format!(
                "{name}: an object with both properties and additionalProperties"
            ));
        }
        Shape::Object(read_fields(name, schema)?)
    } else {
        Shape::Alias(read_ty(schema, name)?)
    };
    Ok(Def {
        name: name.to_string(),
        doc: doc(schema),
        shape,
    })
}

fn read_fields(name: &str, schema: &Value) -> Result<Vec<Field>, String> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields = Vec::new();
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (key, property) in properties {
            fields.push(Field {
                name: key.clone(),
                ty: read_ty(property, &format!("{name}.{key}"))?,
                required: required.contains(&key.as_str()),
                doc: doc(property),
            });
        }
    }
    Ok(fields)
}

/// Keys that only annotate (documentation, defaults, number formats) or constrain values
/// without changing their type.
const ANNOTATIONS: &[&str] = &[
    "description",
    "default",
    "format",
    "minimum",
    "maximum",
    "title",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "minItems",
    "maxItems",
    "additionalProperties",
];

fn read_ty(schema: &Value, at: &str) -> Result<Ty, String> {
    let map = match schema {
        Value::Bool(true) => return Ok(Ty::Any),
        Value::Object(map) => map,
        other => return Err(format!("{at}: unsupported schema {other}")),
    };
    if let Some(name) = ref_name(schema) {
        return Ok(Ty::Ref(name.to_string()));
    }
    if let Some(r) = map.get("$ref") {
        return Err(format!("{at}: reference {r} is not into {DEFS}"));
    }
    if let Some(c) = map.get("const") {
        return match c {
            Value::String(s) => Ok(Ty::Literal(s.clone())),
            other => Err(format!("{at}: unsupported const {other}")),
        };
    }
    if let Some(values) = map.get("enum").and_then(Value::as_array) {
        let mut items = Vec::new();
        for v in values {
            items.push(match v {
                Value::String(s) => Ty::Literal(s.clone()),
                Value::Null => Ty::Null,
                other => return Err(format!("{at}: unsupported enum value {other}")),
            });
        }
        return Ok(Ty::union(items));
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(items) = map.get(key).and_then(Value::as_array) {
            let mut tys = Vec::new();
            for (i, item) in items.iter().enumerate() {
                tys.push(read_ty(item, &format!("{at}.{key}[{i}]"))?);
            }
            return Ok(Ty::union(tys));
        }
    }
    if let Some(items) = map.get("allOf").and_then(Value::as_array) {
        if let [only] = items.as_slice() {
            return read_ty(only, at);
        }
        return Err(format!("{at}: allOf with {} schemas", items.len()));
    }
    let types: Vec<&str> = match map.get("type") {
        None => {
            let unknown: Vec<&String> = map
                .keys()
                .filter(|k| !ANNOTATIONS.contains(&k.as_str()))
                .collect();
            if unknown.is_empty() {
                return Ok(Ty::Any);
            }
            return Err(format!("{at}: unsupported keywords {unknown:?}"));
        }
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        Some(other) => return Err(format!("{at}: unsupported type {other}")),
    };
    let mut tys = Vec::new();
    for t in types {
        tys.push(match t {
            "string" => Ty::Str,
            "integer" => Ty::Int,
            "number" => Ty::Float,
            "boolean" => Ty::Bool,
            "null" => Ty::Null,
            "array" => {
                if let Some(prefix) = map.get("prefixItems").and_then(Value::as_array) {
                    let mut items = Vec::new();
                    for (i, item) in prefix.iter().enumerate() {
                        items.push(read_ty(item, &format!("{at}[{i}]"))?);
                    }
                    Ty::Tuple(items)
                } else if let Some(items) = map.get("items") {
                    Ty::Array(Box::new(read_ty(items, &format!("{at}[]"))?))
                } else {
                    Ty::Array(Box::new(Ty::Any))
                }
            }
            "object" => {
                if map
                    .get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|p| !p.is_empty())
                {
                    return Err(format!(
                        "{at}: an object type without a name (name it in document.rs)"
                    ));
                }
                match map.get("additionalProperties") {
                    Some(values @ Value::Object(_)) => {
                        Ty::Map(Box::new(read_ty(values, &format!("{at}{{}}"))?))
                    }
                    _ => Ty::Map(Box::new(Ty::Any)),
                }
            }
            other => return Err(format!("{at}: unsupported type {other:?}")),
        });
    }
    Ok(Ty::union(tys))
}

fn check_refs(def: &Def, known: &[&str]) -> Result<(), String> {
    fn walk(ty: &Ty, known: &[&str], at: &str) -> Result<(), String> {
        match ty {
            Ty::Ref(name) if !known.contains(&name.as_str()) => {
                Err(format!("{at}: refers to unknown type {name}"))
            }
            Ty::Array(t) | Ty::Map(t) => walk(t, known, at),
            Ty::Tuple(ts) | Ty::Union(ts) => ts.iter().try_for_each(|t| walk(t, known, at)),
            _ => Ok(()),
        }
    }
    match &def.shape {
        Shape::Object(fields) => fields
            .iter()
            .try_for_each(|f| walk(&f.ty, known, &format!("{}.{}", def.name, f.name))),
        Shape::Alias(ty) => walk(ty, known, &def.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemars_shapes_read_as_types() {
        let option_ref = json!({"anyOf": [{"$ref": "#/$defs/Foo"}, {"type": "null"}]});
        assert_eq!(
            read_ty(&option_ref, "x"),
            Ok(Ty::Union(vec![Ty::Ref("Foo".into()), Ty::Null]))
        );
        let nullable = json!({"type": ["array", "null"], "items": {"type": "string"}});
        assert_eq!(
            read_ty(&nullable, "x"),
            Ok(Ty::Union(vec![Ty::Array(Box::new(Ty::Str)), Ty::Null]))
        );
        let pair =
            json!({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "integer"}]});
        assert_eq!(read_ty(&pair, "x"), Ok(Ty::Tuple(vec![Ty::Int, Ty::Int])));
        let map = json!({"type": "object", "additionalProperties": {"type": "string"}});
        assert_eq!(read_ty(&map, "x"), Ok(Ty::Map(Box::new(Ty::Str))));
        assert_eq!(read_ty(&json!(true), "x"), Ok(Ty::Any));
        assert_eq!(
            read_ty(&json!({"description": "anything"}), "x"),
            Ok(Ty::Any)
        );
        let literals =
            json!({"oneOf": [{"type": "string", "const": "a"}, {"type": "string", "const": "b"}]});
        assert_eq!(
            read_ty(&literals, "x"),
            Ok(Ty::Union(vec![
                Ty::Literal("a".into()),
                Ty::Literal("b".into())
            ]))
        );
    }

    #[test]
    fn what_cannot_be_printed_is_an_error_naming_where() {
        let inline = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let e = read_ty(&inline, "Foo.bar").unwrap_err();
        assert!(
            e.starts_with("Foo.bar: an object type without a name"),
            "{e}"
        );
        let e = read_ty(&json!({"not": {"type": "string"}}), "Foo.baz").unwrap_err();
        assert!(e.contains("Foo.baz") && e.contains("not"), "{e}");
        let e = read_ty(&json!({"$ref": "other.json#/Foo"}), "Foo.ext").unwrap_err();
        assert!(e.contains("Foo.ext"), "{e}");
    }

    #[test]
    fn objects_keep_which_keys_are_required() {
        let def = read_def(
            "Foo",
            &json!({
                "type": "object",
                "description": "A foo.",
                "properties": {"a": {"type": "string"}, "b": {"type": "integer", "description": "B."}},
                "required": ["a"],
            }),
        )
        .expect("reads");
        assert_eq!(def.doc.as_deref(), Some("A foo."));
        let Shape::Object(fields) = def.shape else {
            panic!("an object")
        };
        assert_eq!(
            fields,
            vec![
                Field {
                    name: "a".into(),
                    ty: Ty::Str,
                    required: true,
                    doc: None
                },
                Field {
                    name: "b".into(),
                    ty: Ty::Int,
                    required: false,
                    doc: Some("B.".into())
                },
            ]
        );
        let empty = read_def(
            "Empty",
            &json!({"type": "object", "additionalProperties": false}),
        )
        .expect("reads");
        assert_eq!(empty.shape, Shape::Object(vec![]));
    }
}
