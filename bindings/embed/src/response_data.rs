//! A response's `data` written by any serde serializer without the `{"type", "data"}`
//! envelope around it: what every binding hands back, built straight from the typed
//! response (JSON text for C and Node, Python objects for Python) instead of writing the
//! envelope and cutting it off again.

use agentvm::Response;
use serde::ser::{self, Error as _, Impossible, Serialize, SerializeStruct, Serializer};

/// Serializes `response`'s `data` alone with `serializer`. A response without data (none has
/// any today) is `null`.
pub fn serialize_response_data<S: Serializer>(
    response: &Response,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    response.serialize(DataOnly(serializer))
}

/// The serializer a response is handed: serde writes an adjacently tagged enum as a struct
/// with the fields `type` and `data`; only `data` reaches the wrapped serializer.
struct DataOnly<S>(S);

/// The fields of the envelope, with the wrapped serializer until `data` takes it.
struct DataField<S: Serializer> {
    serializer: Option<S>,
    out: Option<S::Ok>,
}

impl<S: Serializer> SerializeStruct for DataField<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), S::Error> {
        if key == "data" {
            if let Some(s) = self.serializer.take() {
                self.out = Some(value.serialize(s)?);
            }
        }
        Ok(())
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        match (self.out, self.serializer) {
            (Some(out), _) => Ok(out),
            (None, Some(s)) => s.serialize_unit(),
            (None, None) => Err(S::Error::custom("a response's data was not written")),
        }
    }
}

fn not_an_envelope<E: ser::Error>() -> E {
    E::custom("a response serializes as a {type, data} struct")
}

impl<S: Serializer> Serializer for DataOnly<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Impossible<S::Ok, S::Error>;
    type SerializeTuple = Impossible<S::Ok, S::Error>;
    type SerializeTupleStruct = Impossible<S::Ok, S::Error>;
    type SerializeTupleVariant = Impossible<S::Ok, S::Error>;
    type SerializeMap = Impossible<S::Ok, S::Error>;
    type SerializeStruct = DataField<S>;
    type SerializeStructVariant = Impossible<S::Ok, S::Error>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<DataField<S>, S::Error> {
        Ok(DataField {
            serializer: Some(self.0),
            out: None,
        })
    }

    fn serialize_bool(self, _: bool) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_i8(self, _: i8) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_i16(self, _: i16) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_i32(self, _: i32) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_i64(self, _: i64) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_u8(self, _: u8) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_u16(self, _: u16) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_u32(self, _: u32) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_u64(self, _: u64) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_f32(self, _: f32) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_f64(self, _: f64) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_char(self, _: char) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_str(self, _: &str) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Err(not_an_envelope())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        Err(not_an_envelope())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_alone_is_what_the_envelope_carries() {
        let response = Response::ContainerList(agentvm::ContainerListResponse {
            container_ids: vec!["a".into(), "b\"c".into()],
        });
        let mut text = Vec::new();
        serialize_response_data(&response, &mut serde_json::Serializer::new(&mut text)).unwrap();
        let whole = serde_json::to_value(&response).unwrap();
        let data: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(data, whole["data"]);
        assert_eq!(data, serde_json::json!({"containerIds": ["a", "b\"c"]}));
        // Through a serializer other than serde_json's writer: the same value.
        let value = serialize_response_data(&response, serde_json::value::Serializer).unwrap();
        assert_eq!(value, whole["data"]);
    }
}
