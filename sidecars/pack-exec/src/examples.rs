//! A manifest's `examples` (helmdeck's: `name`, `input`, `expected_output_subset`) as the
//! install-time self-test runs them (`self_test=true`): each input is called like any call and
//! the output must contain the expected subset.
//!
//! Subset: an expected object's keys must all be in the output with subset values (other
//! keys may be there too); arrays and scalars must be equal.

use serde_json::Value;

/// One example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// `name`, else `#<index>`.
    pub name: String,
    /// `input` (an object).
    pub input: Value,
    /// `expected_output_subset`, when given.
    pub expected: Option<Value>,
}

/// The examples of a manifest (`None`: there are none); a malformed list names the entry.
pub fn parse(examples: Option<&Value>) -> Result<Vec<Example>, String> {
    let Some(value) = examples else {
        return Ok(Vec::new());
    };
    let Some(list) = value.as_array() else {
        return Err("examples: must be a list".to_string());
    };
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            let name = match e.get("name") {
                Some(Value::String(n)) => n.clone(),
                None => format!("#{i}"),
                Some(_) => return Err(format!("examples[{i}].name: must be a string")),
            };
            let input = e
                .get("input")
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default()));
            if !input.is_object() {
                return Err(format!("examples[{i}].input: must be an object"));
            }
            Ok(Example {
                name,
                input,
                expected: e.get("expected_output_subset").cloned(),
            })
        })
        .collect()
}

/// Where `actual` does not contain `expected`, as `path: what` (`None`: it does). `path` names
/// the value being compared (`output`, then `output.text`, `output.items[1]`).
pub fn difference(expected: &Value, actual: &Value, path: &str) -> Option<String> {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => want.iter().find_map(|(k, v)| {
            let here = format!("{path}.{k}");
            match got.get(k) {
                Some(g) => difference(v, g, &here),
                None => Some(format!("{here} is missing, expected {}", short(v))),
            }
        }),
        _ if expected == actual => None,
        _ => Some(format!(
            "{path} is {}, expected {}",
            short(actual),
            short(expected)
        )),
    }
}

/// A value for a message, cut at 200 characters.
fn short(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subsets_allow_extra_keys_and_name_the_first_difference() {
        let out = json!({"text": "HELLO", "len": 5, "meta": {"a": 1, "b": 2}});
        assert_eq!(difference(&json!({"text": "HELLO"}), &out, "output"), None);
        assert_eq!(difference(&json!({"meta": {"b": 2}}), &out, "output"), None);
        assert_eq!(
            difference(&json!({"text": "hello"}), &out, "output").unwrap(),
            "output.text is \"HELLO\", expected \"hello\""
        );
        assert_eq!(
            difference(&json!({"meta": {"c": 3}}), &out, "output").unwrap(),
            "output.meta.c is missing, expected 3"
        );
        assert!(
            difference(&json!([1]), &json!([1, 2]), "output").is_some(),
            "arrays are equal or not"
        );
    }

    #[test]
    fn examples_parse_with_names_or_indexes_and_bad_shapes_are_named() {
        let list = parse(Some(&json!([
            {"name": "short", "input": {"text": "a"}, "expected_output_subset": {"text": "A"}},
            {"input": {}}
        ])))
        .unwrap();
        assert_eq!(list[0].name, "short");
        assert_eq!(list[1].name, "#1");
        assert_eq!(list[1].expected, None);
        assert!(parse(None).unwrap().is_empty());
        assert!(parse(Some(&json!({"a": 1}))).unwrap_err().contains("list"));
        assert!(parse(Some(&json!([{"input": 3}])))
            .unwrap_err()
            .contains("examples[0].input"));
    }
}
