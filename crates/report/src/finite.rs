//! Finding a NaN or infinite number anywhere in a serializable value, with its key path.
//!
//! JSON has no NaN: serde_json writes one as `null`, which then reads back as `None` into an
//! `Option<f64>`. So the value is checked before it is written, by a serializer that only
//! looks at the numbers and remembers where it is.

use serde::ser::{self, Serialize};

/// The first NaN or ±inf in `value` (`key.path[3].field`, the number), or `None`.
pub(crate) fn first_non_finite<T: Serialize + ?Sized>(value: &T) -> Option<(String, f64)> {
    let mut audit = Audit::default();
    let _ = value.serialize(&mut audit);
    audit.found
}

#[derive(Default)]
struct Audit {
    path: String,
    found: Option<(String, f64)>,
}

impl Audit {
    /// Serialize `value` with `step` (`.key` or `[i]`) appended to the path.
    fn at<T: Serialize + ?Sized>(&mut self, step: &str, value: &T) -> Result<(), Found> {
        let len = self.path.len();
        self.path.push_str(step);
        let result = value.serialize(&mut *self);
        self.path.truncate(len);
        result
    }
}

/// The serializer's error: a non-finite number was found (or a value refused to serialize).
#[derive(Debug)]
struct Found;

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number is not finite")
    }
}

impl std::error::Error for Found {}

impl ser::Error for Found {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Found
    }
}

macro_rules! ignore {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<(), Found> { Ok(()) })*
    };
}

impl<'a> ser::Serializer for &'a mut Audit {
    type Ok = ();
    type Error = Found;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    ignore!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char,
        serialize_str: &str, serialize_bytes: &[u8], serialize_unit_struct: &'static str);

    fn serialize_f32(self, v: f32) -> Result<(), Found> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Found> {
        if v.is_finite() {
            return Ok(());
        }
        let key = self
            .path
            .strip_prefix('.')
            .unwrap_or(&self.path)
            .to_string();
        self.found = Some((key, v));
        Err(Found)
    }
    fn serialize_none(self) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Found> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Found> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Found> {
        self.at(&format!(".{variant}"), value)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>, Found> {
        Ok(Compound::new(self))
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'a>, Found> {
        Ok(Compound::new(self))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, Found> {
        Ok(Compound::new(self))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Found> {
        Ok(Compound::new(self))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a>, Found> {
        Ok(Compound::new(self))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, Found> {
        Ok(Compound::new(self))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Found> {
        Ok(Compound::new(self))
    }
}

/// A sequence, map or struct being walked: the next element's index, or the pending map key.
struct Compound<'a> {
    audit: &'a mut Audit,
    index: usize,
    key: String,
}

impl<'a> Compound<'a> {
    fn new(audit: &'a mut Audit) -> Self {
        Compound {
            audit,
            index: 0,
            key: String::new(),
        }
    }
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Found> {
        let step = format!("[{}]", self.index);
        self.index += 1;
        self.audit.at(&step, value)
    }
}

macro_rules! elements {
    ($($tr:ident :: $method:ident),*) => {
        $(impl ser::$tr for Compound<'_> {
            type Ok = ();
            type Error = Found;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Found> {
                self.element(value)
            }
            fn end(self) -> Result<(), Found> {
                Ok(())
            }
        })*
    };
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

macro_rules! fields {
    ($($tr:ident),*) => {
        $(impl ser::$tr for Compound<'_> {
            type Ok = ();
            type Error = Found;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Found> {
                self.audit.at(&format!(".{key}"), value)
            }
            fn end(self) -> Result<(), Found> {
                Ok(())
            }
        })*
    };
}

fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Found> {
        self.key = match serde_json::to_value(key) {
            Ok(serde_json::Value::String(s)) => s,
            Ok(other) => other.to_string(),
            Err(_) => "?".into(),
        };
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Found> {
        let step = format!(".{}", self.key);
        self.audit.at(&step, value)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Inner {
        ok: f64,
        maybe: Option<f64>,
    }

    #[derive(Serialize)]
    struct Outer {
        name: String,
        rows: Vec<Inner>,
        #[serde(flatten)]
        extra: BTreeMap<String, Vec<f32>>,
    }

    #[test]
    fn names_the_path_of_the_first_non_finite_number() {
        let mut v = Outer {
            name: "x".into(),
            rows: vec![
                Inner {
                    ok: 1.0,
                    maybe: None,
                },
                Inner {
                    ok: 2.0,
                    maybe: Some(0.5),
                },
            ],
            extra: BTreeMap::from([("load".to_string(), vec![0.5, 0.5])]),
        };
        assert_eq!(first_non_finite(&v), None);
        v.extra.insert("load".into(), vec![0.5, f32::NEG_INFINITY]);
        let (key, value) = first_non_finite(&v).unwrap();
        assert_eq!((key.as_str(), value), ("load[1]", f64::NEG_INFINITY));
        v.rows[1].maybe = Some(f64::NAN);
        assert_eq!(first_non_finite(&v).unwrap().0, "rows[1].maybe");
    }
}
