//! The compose model → YAML, through `serde_norway` (never a string template).
//!
//! Two things make a plain YAML dump unsafe for compose, and both are handled here on the
//! serialized tree, so every field is covered at once (env values, command arguments, anything
//! added to the model later):
//!
//! - **Interpolation.** Compose expands `$VAR` and `${VAR}` in every value. A bottle's strings
//!   are literal, so every `$` in every string value is written `$$` (compose's escape, turned
//!   back into one `$`). The model itself stays unescaped for backends that bypass compose.
//! - **YAML 1.1.** `serde_norway` quotes strings that YAML 1.2's core schema would read as
//!   something else (`true`, `1.5`, `null`), but docker-compose v1 reads the file with PyYAML,
//!   which implements YAML 1.1: there `yes`, `on`, `Off`, `1_000`, `0b11`, `2001-12-14` and —
//!   worst — `1000:59` (a base-60 integer: 60059) are not strings. Such scalars are forced
//!   into single quotes: each is swapped for a unique plain placeholder before emitting and the
//!   placeholder replaced by the single-quoted scalar after. Quoting them is also correct
//!   YAML 1.2 (compose v2), so one output serves both.
//!
//! Newlines, leading indicators (`-`, `#`, `*`, ...), `: ` and the like are the emitter's job.

use std::sync::LazyLock;

use regex::Regex;
use serde_norway::{Mapping, Value};

use crate::model::Project;

/// First line of every rendered file.
pub const HEADER: &str =
    "# Rendered by bottle-compose from a bottle manifest; edit the manifest, not this file.\n";

/// Serialize a project to compose YAML: every `$` escaped, every YAML 1.1 look-alike quoted.
pub fn to_yaml(project: &Project) -> Result<String, serde_norway::Error> {
    let mut tree = serde_norway::to_value(project)?;
    escape_dollars_in(&mut tree);
    let prefix = unused_prefix(&tree);
    let mut quoted = Vec::new();
    let tree = swap_ambiguous(tree, &prefix, &mut quoted);
    let mut text = serde_norway::to_string(&tree)?;
    // Each placeholder ends with `__`, so none is a substring of another.
    for (i, original) in quoted.iter().enumerate() {
        let placeholder = placeholder(&prefix, i);
        let single_quoted = format!("'{}'", original.replace('\'', "''"));
        text = text.replacen(&placeholder, &single_quoted, 1);
    }
    Ok(format!("{HEADER}{text}"))
}

/// Compose's escape for a literal string: `$` → `$$`.
pub fn escape_dollars(s: &str) -> String {
    s.replace('$', "$$")
}

fn escape_dollars_in(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('$') => *s = escape_dollars(s),
        Value::Sequence(items) => items.iter_mut().for_each(escape_dollars_in),
        Value::Mapping(map) => map.values_mut().for_each(escape_dollars_in),
        Value::Tagged(t) => escape_dollars_in(&mut t.value),
        _ => {}
    }
}

/// Whether PyYAML (YAML 1.1) would resolve this plain scalar to something other than a
/// string. The patterns are PyYAML's implicit resolvers (`yaml/resolver.py`).
pub fn is_yaml11_non_string(s: &str) -> bool {
    static RESOLVERS: LazyLock<Regex> = LazyLock::new(|| {
        let patterns = [
            // bool
            r"yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF",
            // float
            r"[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
            // int
            r"[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+",
            // merge, null, value
            r"<<|~|null|Null|NULL|=",
            // timestamp
            r"[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)?",
        ];
        let joined = patterns.map(|p| format!("(?:{p})")).join("|");
        // Constant patterns (not input), exercised by the unit tests below.
        Regex::new(&format!("^(?:{joined})$")).expect("PyYAML resolver patterns compile")
    });
    s.is_empty() || RESOLVERS.is_match(s)
}

fn placeholder(prefix: &str, i: usize) -> String {
    format!("{prefix}{i}__")
}

/// A placeholder prefix that occurs in no string of the tree (plain-scalar safe).
fn unused_prefix(tree: &Value) -> String {
    let mut all = String::new();
    collect_strings(tree, &mut all);
    (0..)
        .map(|n| format!("__bottle_quote_{n}_"))
        .find(|p| !all.contains(p.as_str()))
        .unwrap_or_default()
}

fn collect_strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Sequence(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Mapping(map) => map.iter().for_each(|(k, v)| {
            collect_strings(k, out);
            collect_strings(v, out);
        }),
        Value::Tagged(t) => collect_strings(&t.value, out),
        _ => {}
    }
}

/// Replace every YAML 1.1 look-alike string (keys included) by a placeholder, remembering the
/// original in `quoted[i]`.
fn swap_ambiguous(v: Value, prefix: &str, quoted: &mut Vec<String>) -> Value {
    match v {
        Value::String(s) if is_yaml11_non_string(&s) => {
            quoted.push(s);
            Value::String(placeholder(prefix, quoted.len() - 1))
        }
        Value::Sequence(items) => Value::Sequence(
            items
                .into_iter()
                .map(|i| swap_ambiguous(i, prefix, quoted))
                .collect(),
        ),
        Value::Mapping(map) => {
            let mut out = Mapping::with_capacity(map.len());
            for (k, v) in map {
                let k = swap_ambiguous(k, prefix, quoted);
                let v = swap_ambiguous(v, prefix, quoted);
                out.insert(k, v);
            }
            Value::Mapping(out)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_are_doubled() {
        assert_eq!(escape_dollars("a${HOME}b $$ $"), "a$${HOME}b $$$$ $$");
    }

    #[test]
    fn dollar_escape_reaches_nested_values_not_keys() {
        let mut v: Value = serde_norway::from_str("a$: [x$, {k: $y}]").unwrap();
        escape_dollars_in(&mut v);
        assert_eq!(
            serde_norway::to_string(&v).unwrap().trim(),
            "a$:\n- x$$\n- k: $$y"
        );
    }

    #[test]
    fn yaml11_look_alikes_are_recognised() {
        for s in [
            "",
            "yes",
            "No",
            "ON",
            "off",
            "true",
            "~",
            "null",
            "=",
            "<<",
            "0755",
            "0x1F",
            "0b101",
            "1_000",
            "-12",
            "+3",
            "1.5",
            "1.5e+3",
            ".5",
            ".inf",
            "-.Inf",
            ".NaN",
            "1000:59",
            "1:20",
            "1:20.5",
            "2001-12-14",
            "2001-12-14t21:59:43.10-05:00",
        ] {
            assert!(is_yaml11_non_string(s), "{s:?} should be quoted");
        }
        for s in [
            "y",
            "n",
            "yesno",
            "example",
            "1.5e3x",
            "127.0.0.1::9000",
            "10s",
            "a:b",
            "0o17",
            "1e3",
            "65534:65534",
            "1000:1000",
            "/tmp",
            "ALL",
            "sidecars",
        ] {
            assert!(!is_yaml11_non_string(s), "{s:?} should stay plain");
        }
    }

    #[test]
    fn look_alikes_come_out_single_quoted_and_round_trip() {
        let mut map = Mapping::new();
        for (k, v) in [
            ("ON", "yes"),
            ("user", "1000:59"),
            ("q", "it's 0755"),
            ("d", "0755"),
        ] {
            map.insert(Value::String(k.into()), Value::String(v.into()));
        }
        let prefix = unused_prefix(&Value::Mapping(map.clone()));
        let mut quoted = Vec::new();
        let swapped = swap_ambiguous(Value::Mapping(map.clone()), &prefix, &mut quoted);
        let mut text = serde_norway::to_string(&swapped).unwrap();
        for (i, o) in quoted.iter().enumerate() {
            text = text.replacen(
                &placeholder(&prefix, i),
                &format!("'{}'", o.replace('\'', "''")),
                1,
            );
        }
        assert!(text.contains("'ON': 'yes'"), "{text}");
        assert!(text.contains("user: '1000:59'"), "{text}");
        let back: Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(back, Value::Mapping(map));
    }

    #[test]
    fn placeholder_prefix_avoids_existing_strings() {
        let v = Value::String("__bottle_quote_0_ and __bottle_quote_1_".into());
        assert_eq!(unused_prefix(&v), "__bottle_quote_2_");
    }
}
