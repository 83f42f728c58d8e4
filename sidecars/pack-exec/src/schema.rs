//! The JSON-Schema subset pack manifests use for `input_schema` and `output_schema`.
//!
//! helmdeck's packs describe their input and output with a tiny slice of JSON Schema: an object
//! with `required` and `properties.<k>.type`. We implement exactly that slice (plus the few
//! keywords that come for free with it: `type` as a list, nested `properties`, `items`,
//! `additionalProperties: false`) instead of pulling in the `jsonschema` crate, whose default-
//! features-off build still brings ~30 crates (regex engines, bignum, URI and e-mail parsers)
//! for keywords packs never use. Unsupported keywords are refused when the pack is installed,
//! so an author never believes a constraint is enforced when it is not.
//!
//! One deliberate deviation from JSON Schema: a schema without `type` but with `properties` or
//! `required` means an *object* (helmdeck's schemas never say `type: object`, and its engine
//! treats them as objects).

use serde_json::{Map, Value};

/// Keywords that describe but constrain nothing; accepted and ignored.
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
];

/// Keywords we enforce.
const SUPPORTED: &[&str] = &[
    "type",
    "required",
    "properties",
    "additionalProperties",
    "items",
];

/// The JSON types a `type` keyword can name, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Types(u8);

impl Types {
    const STRING: u8 = 1;
    const NUMBER: u8 = 2;
    const INTEGER: u8 = 4;
    const BOOLEAN: u8 = 8;
    const OBJECT: u8 = 16;
    const ARRAY: u8 = 32;
    const NULL: u8 = 64;

    fn bit(name: &str) -> Option<u8> {
        Some(match name {
            "string" => Self::STRING,
            "number" => Self::NUMBER,
            "integer" => Self::INTEGER,
            "boolean" => Self::BOOLEAN,
            "object" => Self::OBJECT,
            "array" => Self::ARRAY,
            "null" => Self::NULL,
            _ => return None,
        })
    }

    fn matches(self, value: &Value) -> bool {
        let bits = self.0;
        match value {
            Value::String(_) => bits & Self::STRING != 0,
            Value::Number(n) => {
                bits & Self::NUMBER != 0
                    || (bits & Self::INTEGER != 0
                        && (n.is_i64()
                            || n.is_u64()
                            || n.as_f64().is_some_and(|f| f.fract() == 0.0)))
            }
            Value::Bool(_) => bits & Self::BOOLEAN != 0,
            Value::Object(_) => bits & Self::OBJECT != 0,
            Value::Array(_) => bits & Self::ARRAY != 0,
            Value::Null => bits & Self::NULL != 0,
        }
    }

    fn describe(self) -> String {
        let names = [
            (Self::STRING, "string"),
            (Self::NUMBER, "number"),
            (Self::INTEGER, "integer"),
            (Self::BOOLEAN, "boolean"),
            (Self::OBJECT, "object"),
            (Self::ARRAY, "array"),
            (Self::NULL, "null"),
        ];
        names
            .iter()
            .filter(|(b, _)| self.0 & b != 0)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// A compiled schema, checked once at install and applied on every call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    types: Option<Types>,
    required: Vec<String>,
    properties: Vec<(String, Schema)>,
    additional_properties: bool,
    items: Option<Box<Schema>>,
}

impl Schema {
    /// Compile `value`; the error names the offending keyword by its path under `at`.
    pub fn compile(value: &Value, at: &str) -> Result<Schema, String> {
        let obj = match value {
            Value::Object(obj) => obj,
            Value::Bool(true) => return Ok(Schema::any()),
            other => {
                return Err(format!(
                    "{at}: a schema must be an object, not {}",
                    kind(other)
                ))
            }
        };
        for key in obj.keys() {
            if !SUPPORTED.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
                return Err(format!(
                    "{at}: unsupported schema keyword `{key}` (supported: {}; annotations: {})",
                    SUPPORTED.join(", "),
                    ANNOTATIONS.join(", ")
                ));
            }
        }
        let mut schema = Schema::any();
        if let Some(t) = obj.get("type") {
            schema.types = Some(compile_types(t, &format!("{at}.type"))?);
        }
        if let Some(req) = obj.get("required") {
            let list = req
                .as_array()
                .ok_or_else(|| format!("{at}.required: must be an array of strings"))?;
            for (i, item) in list.iter().enumerate() {
                let name = item
                    .as_str()
                    .ok_or_else(|| format!("{at}.required[{i}]: must be a string"))?;
                schema.required.push(name.to_string());
            }
        }
        if let Some(props) = obj.get("properties") {
            let map = props
                .as_object()
                .ok_or_else(|| format!("{at}.properties: must be an object"))?;
            for (name, sub) in map {
                let compiled = Schema::compile(sub, &format!("{at}.properties.{name}"))?;
                schema.properties.push((name.clone(), compiled));
            }
        }
        if let Some(add) = obj.get("additionalProperties") {
            schema.additional_properties = add.as_bool().ok_or_else(|| {
                format!("{at}.additionalProperties: only `true` or `false` is supported")
            })?;
        }
        if let Some(items) = obj.get("items") {
            schema.items = Some(Box::new(Schema::compile(items, &format!("{at}.items"))?));
        }
        // helmdeck's schemas omit `type: object`; `properties`/`required` alone mean an object.
        if schema.types.is_none() && (!schema.required.is_empty() || !schema.properties.is_empty())
        {
            schema.types = Some(Types(Types::OBJECT));
        }
        Ok(schema)
    }

    /// A schema every value satisfies (`{}` or an absent schema).
    pub fn any() -> Schema {
        Schema {
            additional_properties: true,
            ..Schema::default()
        }
    }

    /// Check `value`; the error says where and what, e.g. "at `text`: expected string, got number".
    pub fn validate(&self, value: &Value) -> Result<(), String> {
        self.check(value, &mut String::new())
    }

    fn check(&self, value: &Value, path: &mut String) -> Result<(), String> {
        if let Some(types) = self.types {
            if !types.matches(value) {
                return Err(format!(
                    "at `{}`: expected {}, got {}",
                    shown(path),
                    types.describe(),
                    kind(value)
                ));
            }
        }
        if let Value::Object(map) = value {
            self.check_object(map, path)?;
        }
        if let (Some(items), Value::Array(list)) = (&self.items, value) {
            for (i, item) in list.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                items.check(item, path)?;
                path.truncate(len);
            }
        }
        Ok(())
    }

    fn check_object(&self, map: &Map<String, Value>, path: &mut String) -> Result<(), String> {
        for name in &self.required {
            if !map.contains_key(name) {
                return Err(format!(
                    "at `{}`: missing required property `{name}`",
                    shown(path)
                ));
            }
        }
        for (name, sub) in &self.properties {
            if let Some(v) = map.get(name) {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
                sub.check(v, path)?;
                path.truncate(len);
            }
        }
        if !self.additional_properties {
            if let Some(extra) = map
                .keys()
                .find(|k| !self.properties.iter().any(|(n, _)| n == *k))
            {
                return Err(format!(
                    "at `{}`: property `{extra}` is not allowed",
                    shown(path)
                ));
            }
        }
        Ok(())
    }
}

fn compile_types(value: &Value, at: &str) -> Result<Types, String> {
    let one = |v: &Value| -> Result<u8, String> {
        v.as_str().and_then(Types::bit).ok_or_else(|| {
            format!(
                "{at}: `{v}` is not one of string, number, integer, boolean, object, array, null"
            )
        })
    };
    match value {
        Value::Array(list) if !list.is_empty() => {
            let mut bits = 0;
            for v in list {
                bits |= one(v)?;
            }
            Ok(Types(bits))
        }
        other => Ok(Types(one(other)?)),
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() {
        "(root)"
    } else {
        path
    }
}

/// The JSON type name of `value`, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::Null => "null",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> Schema {
        Schema::compile(&v, "s").unwrap()
    }

    #[test]
    fn helmdeck_basic_schema() {
        let s = schema(
            json!({"required":["text"],"properties":{"text":{"type":"string","description":"x"}}}),
        );
        assert!(s.validate(&json!({"text":"hi","extra":1})).is_ok());
        let e = s.validate(&json!({})).unwrap_err();
        assert!(e.contains("missing required property `text`"), "{e}");
        let e = s.validate(&json!({"text":3})).unwrap_err();
        assert!(e.contains("at `text`: expected string, got number"), "{e}");
        // properties/required without a type means an object
        assert!(s.validate(&json!([1])).is_err());
    }

    #[test]
    fn integer_number_null_and_lists() {
        let s = schema(json!({"type":"object","properties":{
            "n":{"type":"integer"},"f":{"type":"number"},"z":{"type":["string","null"]},
            "a":{"type":"array","items":{"type":"boolean"}}}}));
        assert!(s
            .validate(&json!({"n":3,"f":1.5,"z":null,"a":[true]}))
            .is_ok());
        assert!(s.validate(&json!({"n":3.0})).is_ok());
        assert!(s.validate(&json!({"n":3.5})).is_err());
        assert!(s.validate(&json!({"f":2})).is_ok());
        let e = s.validate(&json!({"a":[true, 1]})).unwrap_err();
        assert!(e.contains("a[1]"), "{e}");
    }

    #[test]
    fn additional_properties_false() {
        let s = schema(json!({"properties":{"a":{}},"additionalProperties":false}));
        assert!(s.validate(&json!({"a":1})).is_ok());
        assert!(s
            .validate(&json!({"b":1}))
            .unwrap_err()
            .contains("`b` is not allowed"));
    }

    #[test]
    fn unsupported_keywords_are_refused_at_compile() {
        let e = Schema::compile(
            &json!({"properties":{"t":{"type":"string","minLength":3}}}),
            "input_schema",
        )
        .unwrap_err();
        assert!(
            e.contains("input_schema.properties.t") && e.contains("minLength"),
            "{e}"
        );
        let e = Schema::compile(&json!({"type":"text"}), "o").unwrap_err();
        assert!(e.contains("o.type"), "{e}");
    }

    #[test]
    fn empty_schema_accepts_anything() {
        let s = schema(json!({}));
        assert!(s.validate(&json!(5)).is_ok());
        assert!(s.validate(&json!({"x":[]})).is_ok());
    }
}
