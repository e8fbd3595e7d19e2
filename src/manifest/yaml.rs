//! A YAML document tree that remembers where every node came from.
//!
//! Built from `saphyr-parser` events with hard limits, so that hostile input ends in an error
//! within milliseconds: nesting depth, the number of nodes that aliases may expand to (the
//! "billion laughs" bomb), file size. Duplicate mapping keys are errors, as the YAML spec says.
//! Plain scalars resolve by the YAML 1.2 core schema. This module knows nothing of Kubernetes.

use crate::diag::Pos;
use saphyr_parser::{Event, Parser, ScalarStyle};
use std::collections::{HashMap, HashSet};

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Mappings and sequences nested deeper than this are refused.
pub const MAX_DEPTH: usize = 64;
/// The most nodes one file may hold once aliases are expanded.
pub const MAX_NODES: usize = 250_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// What a person calls this kind of value in an error message.
    pub fn describe(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value under `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows `path` (mapping keys, or list indexes written as decimal numbers) as far as it
    /// exists; returns the deepest node reached and how many segments were followed.
    fn walk(&self, path: &[&str]) -> (&Node, usize) {
        let mut node = self;
        for (depth, segment) in path.iter().enumerate() {
            let next = match &node.value {
                Value::Map(_) => node.get(segment),
                Value::Seq(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(next) => node = next,
                None => return (node, depth),
            }
        }
        (node, path.len())
    }

    /// The position of the deepest node that exists along `path`. A finding about a field that
    /// is missing points at the object that should hold it.
    pub fn locate(&self, path: &[&str]) -> Pos {
        self.walk(path).0.pos
    }

    /// The position of a mapping key along `path` (the last segment names the key), for findings
    /// about a key itself.
    pub fn locate_key(&self, path: &[&str]) -> Pos {
        let Some((last, parents)) = path.split_last() else {
            return self.pos;
        };
        let (node, depth) = self.walk(parents);
        match &node.value {
            Value::Map(entries) if depth == parents.len() => {
                entries.iter().find(|(k, _)| k.as_str() == Some(last)).map_or(node.pos, |(k, _)| k.pos)
            }
            _ => node.pos,
        }
    }
}

/// One `---`-separated document of a file; `root` is `None` for an empty document.
#[derive(Debug, Clone)]
pub struct Document {
    pub pos: Pos,
    pub root: Option<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
    pub help: Option<String>,
}

impl YamlError {
    fn new(pos: Pos, message: impl Into<String>) -> Self {
        YamlError { pos, message: message.into(), help: None }
    }

    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

fn pos_of(marker: &saphyr_parser::Marker) -> Pos {
    // saphyr-parser counts lines from 1 and columns from 0.
    Pos::new(marker.line() as u32, marker.col() as u32 + 1)
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        keys: Option<HashSet<String>>,
    },
}

/// Parses every document of a file.
pub fn parse(text: &str) -> Result<Vec<Document>, YamlError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(YamlError::new(
            Pos::START,
            format!("file is {} bytes, larger than the limit of {MAX_FILE_BYTES} bytes", text.len()),
        )
        .help("split it into several files"));
    }
    // A UTF-8 byte-order mark, as some Windows editors write, is not content.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut documents = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    let mut node_count = 0usize;
    let mut document: Option<Document> = None;

    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            // The scanner has its own depth limit for flow collections, which it meets first.
            let message = if e.info().contains("recursion limit") {
                "nesting is too deep".to_owned()
            } else {
                format!("invalid YAML: {}", e.info())
            };
            YamlError::new(pos_of(e.marker()), message)
        })?;
        let pos = pos_of(&span.start);
        let finished: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                document = Some(Document { pos, root: None });
                anchors.clear();
                None
            }
            Event::DocumentEnd => {
                if let Some(done) = document.take() {
                    documents.push(done);
                }
                None
            }
            Event::Alias(id) => {
                let Some((node, size)) = anchors.get(&id) else {
                    return Err(YamlError::new(pos, "alias refers to an unknown anchor"));
                };
                node_count += size;
                if node_count > MAX_NODES {
                    return Err(YamlError::new(
                        pos,
                        format!("aliases expand this file to more than {MAX_NODES} nodes"),
                    )
                    .help("a YAML alias bomb is refused; write the values out"));
                }
                Some((Node { pos, value: node.value.clone() }, 0))
            }
            Event::Scalar(text, style, anchor, tag) => {
                node_count += 1;
                let forced_string = tag.as_ref().is_some_and(|t| t.handle == "!!" && t.suffix == "str");
                let value = if style == ScalarStyle::Plain && !forced_string {
                    resolve_plain(&text)
                } else {
                    Value::Str(text.into_owned())
                };
                Some((Node { pos, value }, anchor))
            }
            Event::SequenceStart(anchor, _) => {
                node_count += 1;
                if stack.len() >= MAX_DEPTH {
                    return Err(YamlError::new(pos, format!("nesting is deeper than {MAX_DEPTH} levels")));
                }
                stack.push(Frame::Seq { pos, anchor, items: Vec::new() });
                None
            }
            Event::MappingStart(anchor, _) => {
                node_count += 1;
                if stack.len() >= MAX_DEPTH {
                    return Err(YamlError::new(pos, format!("nesting is deeper than {MAX_DEPTH} levels")));
                }
                stack.push(Frame::Map { pos, anchor, entries: Vec::new(), pending_key: None, keys: None });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { pos, anchor, items }) => Some((Node { pos, value: Value::Seq(items) }, anchor)),
                _ => return Err(YamlError::new(pos, "invalid YAML: unbalanced sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map { pos, anchor, entries, .. }) => {
                    Some((Node { pos, value: Value::Map(merge_keys(entries)?) }, anchor))
                }
                _ => return Err(YamlError::new(pos, "invalid YAML: unbalanced mapping")),
            },
        };
        if node_count > MAX_NODES {
            return Err(YamlError::new(pos, format!("the file has more than {MAX_NODES} nodes"))
                .help("split it into several files"));
        }
        let Some((node, anchor)) = finished else { continue };
        if anchor != 0 {
            anchors.insert(anchor, (node.clone(), count_nodes(&node)));
        }
        match stack.last_mut() {
            None => {
                // An empty document parses as a null scalar; both are "no object here".
                if let Some(document) = document.as_mut().filter(|_| node.value != Value::Null) {
                    document.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, pending_key, keys, .. }) => match pending_key.take() {
                None => {
                    let Some(key) = node.as_str().map(str::to_owned).or_else(|| scalar_key(&node.value)) else {
                        return Err(YamlError::new(node.pos, "mapping keys must be strings"));
                    };
                    let duplicate = match keys {
                        Some(keys) => !keys.insert(key.clone()),
                        None => entries.iter().any(|(k, _)| k.as_str() == Some(key.as_str())),
                    };
                    if duplicate {
                        let first = entries.iter().find(|(k, _)| k.as_str() == Some(key.as_str())).map(|(k, _)| k.pos);
                        let mut error = YamlError::new(node.pos, format!("duplicate key `{key}`"));
                        if let Some(first) = first {
                            error = error.help(format!(
                                "first defined at line {}:{}; remove one of them",
                                first.line, first.column
                            ));
                        }
                        return Err(error);
                    }
                    if keys.is_none() && entries.len() >= 32 {
                        *keys = Some(
                            entries
                                .iter()
                                .filter_map(|(k, _)| k.as_str().map(str::to_owned))
                                .chain([key.clone()])
                                .collect(),
                        );
                    }
                    *pending_key = Some(Node { pos: node.pos, value: Value::Str(key) });
                }
                Some(key) => entries.push((key, node)),
            },
        }
    }
    if let Some(done) = document.take() {
        documents.push(done);
    }
    Ok(documents)
}

/// Applies YAML merge keys (`<<: *base`, or `<<: [*a, *b]`), as kubectl reads them: the
/// entries of the merged mappings that the mapping does not set itself, earlier ones first.
fn merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, YamlError> {
    if !entries.iter().any(|(k, _)| k.as_str() == Some("<<")) {
        return Ok(entries);
    }
    type Entries = Vec<(Node, Node)>;
    let (merges, mut own): (Entries, Entries) = entries.into_iter().partition(|(k, _)| k.as_str() == Some("<<"));
    for (key, value) in merges {
        let sources: Vec<Node> = match value.value {
            Value::Map(_) => vec![value],
            Value::Seq(items) => items,
            _ => {
                return Err(YamlError::new(key.pos, "a merge key (`<<`) takes a mapping or a list of mappings")
                    .help("write `<<: *anchor` with an anchor on a mapping"));
            }
        };
        for source in sources {
            let Value::Map(merged) = source.value else {
                return Err(YamlError::new(source.pos, "a merge key (`<<`) takes a mapping or a list of mappings"));
            };
            for (merged_key, merged_value) in merged {
                if !own.iter().any(|(k, _)| k.as_str().is_some() && k.as_str() == merged_key.as_str()) {
                    own.push((merged_key, merged_value));
                }
            }
        }
    }
    Ok(own)
}

/// Plain scalars used as keys (`80:` or `true:`) are compared as the text they were written as.
fn scalar_key(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

fn count_nodes(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|(k, v)| count_nodes(k) + count_nodes(v)).sum::<usize>(),
        _ => 1,
    }
}

/// The YAML 1.2 core schema for plain (unquoted) scalars, with YAML 1.1's octal integers.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let bytes = text.as_bytes();
    let digits_start = usize::from(matches!(bytes[0], b'-' | b'+'));
    if bytes.len() > digits_start && bytes[digits_start..].iter().all(u8::is_ascii_digit) {
        // Kubernetes reads manifests as YAML 1.1, where a leading zero means octal: a file
        // mode written `0440` is 288, as kubectl reads it, not four hundred and forty.
        let digits = &text[digits_start..];
        if digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            if let Ok(i) = i64::from_str_radix(digits, 8) {
                return Value::Int(if bytes[0] == b'-' { -i } else { i });
            }
        }
        if let Ok(i) = text.parse::<i64>() {
            return Value::Int(i);
        }
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Int(i);
        }
    }
    if let Some(octal) = text.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(octal, 8) {
            return Value::Int(i);
        }
    }
    let looks_numeric = bytes[digits_start..].first().is_some_and(|b| b.is_ascii_digit() || *b == b'.')
        && bytes.iter().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_numeric {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(text.to_owned())
}

/// The tree as YAML text, block style, strings quoted where a plain scalar would read
/// differently.
pub fn emit(node: &Node) -> String {
    let mut out = String::new();
    emit_into(node, 0, &mut out);
    out
}

fn emit_into(node: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match &node.value {
        Value::Map(entries) if !entries.is_empty() => {
            for (key, value) in entries {
                out.push_str(&pad);
                out.push_str(&scalar(key));
                out.push(':');
                emit_child(value, indent, out);
            }
        }
        Value::Seq(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                match &item.value {
                    Value::Map(entries) if !entries.is_empty() => {
                        // The first key on the dash's line, the rest under it.
                        let mut nested = String::new();
                        emit_into(item, indent + 2, &mut nested);
                        out.push(' ');
                        out.push_str(nested.trim_start());
                    }
                    _ => emit_child(item, indent, out),
                }
            }
        }
        _ => {
            out.push_str(&pad);
            out.push_str(&scalar(node));
            out.push('\n');
        }
    }
}

fn emit_child(value: &Node, indent: usize, out: &mut String) {
    match &value.value {
        Value::Map(entries) if !entries.is_empty() => {
            out.push('\n');
            emit_into(value, indent + 2, out);
        }
        Value::Seq(items) if !items.is_empty() => {
            out.push('\n');
            emit_into(value, indent, out);
        }
        _ => {
            out.push(' ');
            out.push_str(&scalar(value));
            out.push('\n');
        }
    }
}

fn scalar(node: &Node) -> String {
    match &node.value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        // A float keeps its point (`2.0`), so it reads back as a float, not an integer.
        Value::Float(f) if f.is_nan() => ".nan".to_owned(),
        Value::Float(f) if f.is_infinite() => if *f > 0.0 { ".inf" } else { "-.inf" }.to_owned(),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => {
            let plain = !s.is_empty()
                && parse(s).ok().and_then(|docs| docs.into_iter().next()?.root).map(|n| n.value)
                    == Some(Value::Str(s.clone()))
                && !s.contains(['\n', '#', '\'', '"'])
                && !s.starts_with([' ', '-', '?', ':', '[', '{', '!', '&', '*', '|', '>', '%', '@', '`'])
                && !s.ends_with(' ')
                && !s.contains(": ")
                && !matches!(s.to_ascii_lowercase().as_str(), "yes" | "no" | "on" | "off" | "y" | "n");
            if plain { s.clone() } else { serde_json::Value::String(s.clone()).to_string() }
        }
        Value::Seq(_) => "[]".to_owned(),
        Value::Map(_) => "{}".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let docs = parse("a: 1\nb:\n  c: x\n").unwrap();
        let root = docs[0].root.as_ref().unwrap();
        assert_eq!(root.get("b").unwrap().get("c").unwrap().pos, Pos::new(3, 6));
        assert_eq!(root.locate_key(&["b", "c"]), Pos::new(3, 3));
    }

    /// Issue 15: merge keys and a byte-order mark, as kubectl reads them.
    #[test]
    fn merge_keys_and_a_byte_order_mark() {
        let text = "\u{feff}base: &base {a: 1, b: 2}\nx:\n  <<: *base\n  b: 3\ny:\n  <<: [{c: 4}, {c: 5, d: 6}]\n";
        let docs = parse(text).unwrap();
        let root = docs[0].root.as_ref().unwrap();
        let x = root.get("x").unwrap();
        assert_eq!(x.get("a").unwrap().value, Value::Int(1));
        assert_eq!(x.get("b").unwrap().value, Value::Int(3), "the mapping's own key wins");
        let y = root.get("y").unwrap();
        assert_eq!(y.get("c").unwrap().value, Value::Int(4), "earlier merged mappings win");
        assert_eq!(y.get("d").unwrap().value, Value::Int(6));
        assert!(x.get("<<").is_none());
        assert_eq!(root.pos, Pos::START);
        assert!(parse("a:\n  <<: 3\n").unwrap_err().message.contains("merge key"));
    }

    /// Issue 13: `0440` is a file mode in octal, as Kubernetes' YAML 1.1 reads it.
    #[test]
    fn leading_zero_integers_are_octal() {
        let docs = parse("[0440, 0o440, 288, 0, -010, 08, 0x1F]").unwrap();
        let Value::Seq(items) = &docs[0].root.as_ref().unwrap().value else { panic!("not a list") };
        let values: Vec<&Value> = items.iter().map(|n| &n.value).collect();
        assert_eq!(
            values,
            [
                &Value::Int(0o440),
                &Value::Int(0o440),
                &Value::Int(288),
                &Value::Int(0),
                &Value::Int(-8),
                &Value::Int(8),
                &Value::Int(31)
            ]
        );
    }

    #[test]
    fn resolves_core_schema_scalars() {
        let docs = parse("[1, -2, 1.5, true, ~, '3', abc, 1e3, 0x1F, 10.0.0.1]").unwrap();
        let Value::Seq(items) = &docs[0].root.as_ref().unwrap().value else { panic!() };
        let values: Vec<&Value> = items.iter().map(|n| &n.value).collect();
        assert_eq!(
            values,
            [
                &Value::Int(1),
                &Value::Int(-2),
                &Value::Float(1.5),
                &Value::Bool(true),
                &Value::Null,
                &Value::Str("3".into()),
                &Value::Str("abc".into()),
                &Value::Float(1000.0),
                &Value::Int(31),
                &Value::Str("10.0.0.1".into()),
            ]
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let error = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(error.pos, Pos::new(3, 1));
        assert_eq!(error.message, "duplicate key `a`");
    }

    #[test]
    fn documents_are_split() {
        let docs = parse("a: 1\n---\n# only a comment\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 3);
        assert!(docs[1].root.is_none());
        assert_eq!(docs[2].pos.line, 4);
    }
}
