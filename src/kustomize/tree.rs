//! Small edits on the positioned YAML tree, for the renderer: reading and setting fields by
//! path, and the JSON form kustomize's content hash is computed over.

use crate::diag::Pos;
use crate::manifest::yaml::{Node, Value};

pub fn string(pos: Pos, text: &str) -> Node {
    Node { pos, value: Value::Str(text.to_owned()) }
}

pub fn map(pos: Pos) -> Node {
    Node { pos, value: Value::Map(Vec::new()) }
}

/// The value under `key` of a mapping, for editing.
pub fn get_mut<'a>(node: &'a mut Node, key: &str) -> Option<&'a mut Node> {
    match &mut node.value {
        Value::Map(entries) => entries.iter_mut().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
        _ => None,
    }
}

/// Sets `key` of a mapping to `value`, in place when it exists, else at the end.
pub fn set(node: &mut Node, key: &str, value: Node) {
    if let Value::Map(entries) = &mut node.value {
        match entries.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
            Some((_, old)) => *old = value,
            None => entries.push((string(value.pos, key), value)),
        }
    }
}

pub fn remove(node: &mut Node, key: &str) -> Option<Node> {
    match &mut node.value {
        Value::Map(entries) => {
            let index = entries.iter().position(|(k, _)| k.as_str() == Some(key))?;
            Some(entries.remove(index).1)
        }
        _ => None,
    }
}

/// The mapping under `path`, made (as empty mappings) where it is missing or null when
/// `create`; `None` when something on the way is not a mapping.
pub fn walk_mut<'a>(node: &'a mut Node, path: &[&str], create: bool) -> Option<&'a mut Node> {
    let mut node = node;
    for segment in path {
        if !matches!(node.value, Value::Map(_)) {
            return None;
        }
        let missing = get(node, segment).is_none_or(|n| n.value == Value::Null);
        if missing {
            if !create {
                return None;
            }
            let pos = node.pos;
            set(node, segment, map(pos));
        }
        node = get_mut(node, segment)?;
    }
    Some(node)
}

pub fn get<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    node.get(key)
}

pub fn path<'a>(node: &'a Node, path: &[&str]) -> Option<&'a Node> {
    path.iter().try_fold(node, |node, segment| node.get(segment))
}

pub fn str_at<'a>(node: &'a Node, keys: &[&str]) -> Option<&'a str> {
    path(node, keys).and_then(Node::as_str)
}

/// Text of a scalar as YAML wrote it (numbers and booleans too).
pub fn scalar_text(node: &Node) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// How many nodes `node` holds, itself included.
pub fn count(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(count).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| count(k) + count(v)).sum(),
        _ => 0,
    }
}

/// Marks every node of `node` as from file number `origin` (see [`Pos::origin`]).
pub fn stamp_origin(node: &mut Node, origin: u32) {
    node.pos.origin = origin;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|item| stamp_origin(item, origin)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            stamp_origin(k, origin);
            stamp_origin(v, origin)
        }),
        _ => {}
    }
}

/// Gives every node of `node` the position `pos`, origin included.
pub fn restamp(node: &mut Node, pos: Pos) {
    node.pos = pos;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|item| restamp(item, pos)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            restamp(k, pos);
            restamp(v, pos)
        }),
        _ => {}
    }
}

/// The tree as JSON, keys sorted at every level (as Go's encoder writes maps).
pub fn to_json_sorted(node: &Node) -> serde_json::Value {
    match &node.value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Str(s) => serde_json::Value::String(s.clone()),
        Value::Seq(items) => serde_json::Value::Array(items.iter().map(to_json_sorted).collect()),
        Value::Map(entries) => {
            let sorted: std::collections::BTreeMap<String, serde_json::Value> =
                entries.iter().filter_map(|(k, v)| Some((scalar_text(k)?, to_json_sorted(v)))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
    }
}

/// A JSON value as a positioned tree, every node at `pos`.
pub fn from_json(value: &serde_json::Value, pos: Pos) -> Node {
    let value = match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or_default()),
        },
        serde_json::Value::String(s) => Value::Str(s.clone()),
        serde_json::Value::Array(items) => Value::Seq(items.iter().map(|i| from_json(i, pos)).collect()),
        serde_json::Value::Object(entries) => {
            Value::Map(entries.iter().map(|(k, v)| (string(pos, k), from_json(v, pos))).collect())
        }
    };
    Node { pos, value }
}

/// JSON text as Go's `encoding/json` writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped.
pub fn go_json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml;

    fn parse(text: &str) -> Node {
        yaml::parse(text).unwrap().remove(0).root.unwrap()
    }

    #[test]
    fn emitted_yaml_reads_back_as_the_same_tree() {
        let text = "a: 1\nb:\n  - x: \"true\"\n    y: [1, 2]\n  - plain\n  - \"with: colon\"\nc: {}\nd: []\ne: \"\"\nf: \"line\\nbreak\"\ng: \"0755\"\n";
        let node = parse(text);
        let again = parse(&yaml::emit(&node));
        assert_eq!(to_json_sorted(&node), to_json_sorted(&again), "{}", yaml::emit(&node));
    }

    #[test]
    fn go_json_escapes_what_go_escapes() {
        let value = serde_json::json!({"b": "<a&b>", "a": 1});
        assert_eq!(go_json(&value), r#"{"b":"\u003ca\u0026b\u003e","a":1}"#);
    }
}
