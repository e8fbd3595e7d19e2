//! Deserializes manifest types from a positioned YAML tree.
//!
//! serde hands a struct's deserializer the list of its fields, so this one checks every mapping
//! key against them as it goes: a known field is read, a field of the accepted tier (real
//! Kubernetes fields berth does not act on, see [`super::tiers`]) becomes a warning, anything
//! else an error with a suggestion. Unknown fields do not stop the walk, so one pass reports all
//! of them. A type error does stop it and carries the position and field path of the node.

use super::tiers;
use super::yaml::{Node, Value};
use crate::diag::{self, Diagnostic, Pos};
use serde::de::{self, DeserializeSeed, Error as _, IntoDeserializer, Visitor};
use std::cell::RefCell;
use std::fmt;

/// Where a deserialization runs: the file and object named in findings, and the findings so far.
pub struct Context<'a> {
    pub file: &'a str,
    pub object: &'a str,
    pub findings: RefCell<Vec<Diagnostic>>,
    /// The top-level fields whose values no finding may quote (a Secret's `data` and
    /// `stringData`): a type error there says `(value hidden)` instead.
    pub hidden: &'static [&'static str],
}

impl<'a> Context<'a> {
    pub fn new(file: &'a str, object: &'a str) -> Self {
        Context { file, object, findings: RefCell::new(Vec::new()), hidden: &[] }
    }
}

/// What findings say instead of a value they must not quote.
pub const HIDDEN: &str = "(value hidden)";

/// A field path as a chain of borrowed segments, rendered only when a finding needs it.
#[derive(Clone, Copy)]
pub struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    segment: Segment<'a>,
}

#[derive(Clone, Copy)]
enum Segment<'a> {
    Root,
    Key(&'a str),
    Index(usize),
}

impl Path<'static> {
    pub const ROOT: Path<'static> = Path { parent: None, segment: Segment::Root };
}

impl<'a> Path<'a> {
    /// The first key of the path: the top-level field it is under.
    fn top(&self) -> Option<&'a str> {
        let mut cursor = self;
        let mut top = None;
        loop {
            if let Segment::Key(key) = cursor.segment {
                top = Some(key);
            }
            match cursor.parent {
                Some(parent) => cursor = parent,
                None => return top,
            }
        }
    }

    fn key(&'a self, key: &'a str) -> Path<'a> {
        Path { parent: Some(self), segment: Segment::Key(key) }
    }

    fn index(&'a self, index: usize) -> Path<'a> {
        Path { parent: Some(self), segment: Segment::Index(index) }
    }

    pub fn render(&self) -> String {
        let mut segments = Vec::new();
        let mut cursor = Some(self);
        while let Some(path) = cursor {
            segments.push(path.segment);
            cursor = path.parent;
        }
        let mut out = String::new();
        for segment in segments.iter().rev() {
            match segment {
                Segment::Root => {}
                Segment::Key(key) => push_key(&mut out, key),
                Segment::Index(index) => out.push_str(&format!("[{index}]")),
            }
        }
        out
    }
}

/// Appends a mapping key to a rendered field path: `a.b`, or `a["app.kubernetes.io/name"]` for
/// keys that are not plain identifiers.
pub fn push_key(out: &mut String, key: &str) {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(key);
    } else {
        out.push_str(&format!("[{key:?}]"));
    }
}

/// A type error, or any error a visitor raised, located at the innermost node it came from.
#[derive(Debug)]
pub struct DeError {
    pub message: String,
    pub help: Option<String>,
    pub pos: Option<Pos>,
    pub field: Option<String>,
}

impl DeError {
    fn with_help(message: impl Into<String>, help: impl Into<String>) -> Self {
        DeError { message: message.into(), help: Some(help.into()), pos: None, field: None }
    }

    fn locate(mut self, pos: Pos, path: &Path<'_>) -> Self {
        if self.pos.is_none() {
            self.pos = Some(pos);
            self.field = Some(path.render());
        }
        self
    }

    pub fn into_diagnostic(self, file: &str, object: &str, fallback: Pos) -> Diagnostic {
        let mut diagnostic = Diagnostic::error(file, self.pos.unwrap_or(fallback), self.message)
            .object(object)
            .field(self.field.unwrap_or_default());
        if let Some(help) = self.help {
            diagnostic = diagnostic.help(help);
        }
        diagnostic
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError { message: msg.to_string(), help: None, pos: None, field: None }
    }

    /// A value Kubernetes has that berth refuses says why; any other names what is allowed.
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let allowed = || expected.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ");
        match tiers::refused_value(variant, expected) {
            Some(reason) => DeError {
                message: format!("`{variant}` is not supported by berth"),
                help: Some(format!("{reason}; berth takes {}", allowed())),
                pos: None,
                field: None,
            },
            None => DeError {
                message: format!("unknown value `{variant}`"),
                help: Some(match diag::suggest(variant, expected.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`? expected one of {}", allowed()),
                    None => format!("expected one of {}", allowed()),
                }),
                pos: None,
                field: None,
            },
        }
    }
}

/// Deserializes `T` from `node`; unknown and accepted fields land in `context.findings`.
pub fn from_node<T: de::DeserializeOwned>(node: &Node, context: &Context<'_>) -> Result<T, DeError> {
    T::deserialize(NodeDeserializer { node, path: &Path::ROOT, context })
}

struct NodeDeserializer<'a> {
    node: &'a Node,
    path: &'a Path<'a>,
    context: &'a Context<'a>,
}

impl NodeDeserializer<'_> {
    /// Whether this node's value must not appear in a finding.
    fn hidden(&self) -> bool {
        !self.context.hidden.is_empty() && self.path.top().is_some_and(|top| self.context.hidden.contains(&top))
    }

    fn scalar_text(&self) -> Option<String> {
        if self.hidden() {
            return Some(HIDDEN.to_owned());
        }
        match &self.node.value {
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    fn wrong_type(&self, expected: &str) -> DeError {
        DeError::custom(format!("expected {expected}, found {}", self.node.value.describe()))
    }
}

macro_rules! forward_to_any {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.deserialize_any(visitor)
        })*
    };
}

macro_rules! numbers {
    ($($method:ident)* => $kind:ident) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.$kind(visitor)
        })*
    };
}

impl NodeDeserializer<'_> {
    fn integer<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Str(s) if s.trim().parse::<i64>().is_ok() && self.hidden() => Err(DeError::with_help(
                format!("expected an integer, found a string {HIDDEN}"),
                "write it without quotes",
            )),
            Value::Str(s) if s.trim().parse::<i64>().is_ok() => Err(DeError::with_help(
                format!("expected an integer, found the string \"{s}\""),
                format!("write {} without quotes", s.trim()),
            )),
            _ => Err(self.wrong_type("an integer")),
        }
        .map_err(|e| e.locate(self.node.pos, self.path))
    }

    fn number<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            _ => Err(self.wrong_type("a number")),
        }
        .map_err(|e| e.locate(self.node.pos, self.path))
    }
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => {
                visitor.visit_seq(SeqAccess { items: items.iter().enumerate(), path: self.path, context: self.context })
            }
            Value::Map(entries) => visitor.visit_map(MapAccess::generic(entries, self.path, self.context)),
        };
        result.map_err(|e| e.locate(self.node.pos, self.path))
    }

    forward_to_any! {
        deserialize_char deserialize_bytes deserialize_byte_buf deserialize_identifier
    }

    numbers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128 => integer
    }

    numbers! { deserialize_f32 deserialize_f64 => number }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Str(s) if matches!(s.as_str(), "true" | "false") && !self.hidden() => {
                Err(DeError::with_help("expected a boolean, found a string", format!("write {s} without quotes")))
            }
            _ => Err(self.wrong_type("a boolean (true or false)")),
        }
        .map_err(|e| e.locate(self.node.pos, self.path))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) => visitor.visit_str(s),
            _ => match self.scalar_text() {
                Some(text) if text == HIDDEN => Err(DeError::with_help(
                    format!("expected a string, found {} {HIDDEN}", self.node.value.describe()),
                    "quote the value",
                )),
                Some(text) => Err(DeError::with_help(
                    format!("expected a string, found {} `{text}`", self.node.value.describe()),
                    format!("quote the value: \"{text}\""),
                )),
                None => Err(self.wrong_type("a string")),
            },
        }
        .map_err(|e| e.locate(self.node.pos, self.path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => {
                visitor.visit_seq(SeqAccess { items: items.iter().enumerate(), path: self.path, context: self.context })
            }
            // `env:` with nothing after it is an empty list, as kubectl reads it.
            Value::Null => {
                visitor.visit_seq(SeqAccess { items: [].iter().enumerate(), path: self.path, context: self.context })
            }
            _ => Err(self.wrong_type("a list")),
        }
        .map_err(|e| e.locate(self.node.pos, self.path))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => visitor.visit_map(MapAccess::generic(entries, self.path, self.context)),
            Value::Null => visitor.visit_map(MapAccess::generic(&[], self.path, self.context)),
            _ => Err(self.wrong_type("a mapping")),
        }
        .map_err(|e| e.locate(self.node.pos, self.path))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => visitor.visit_map(MapAccess {
                entries: entries.iter(),
                current: None,
                known: Some((name, fields)),
                path: self.path,
                context: self.context,
            }),
            _ => Err(self.wrong_type("a mapping")),
        }
        .map_err(|e| e.locate(self.node.pos, self.path))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(_) if self.hidden() => Err(DeError::custom(format!("expected one of {}", variants.join(", ")))),
            Value::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()).map_err(|mut e: DeError| {
                if let Some(close) = diag::suggest(s, variants.iter().copied()) {
                    e.help = Some(format!("did you mean `{close}`?"));
                }
                e
            }),
            _ => Err(self.wrong_type(&format!("one of {}", variants.join(", ")))),
        }
        .map_err(|e| e.locate(self.node.pos, self.path))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct SeqAccess<'a, I> {
    items: I,
    path: &'a Path<'a>,
    context: &'a Context<'a>,
}

impl<'de, 'a, I: Iterator<Item = (usize, &'a Node)>> de::SeqAccess<'de> for SeqAccess<'a, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        let Some((index, node)) = self.items.next() else { return Ok(None) };
        let path = self.path.index(index);
        seed.deserialize(NodeDeserializer { node, path: &path, context: self.context }).map(Some)
    }
}

struct MapAccess<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    current: Option<&'a (Node, Node)>,
    /// For a struct: its name (to look up the accepted tier) and its fields.
    known: Option<(&'static str, &'static [&'static str])>,
    path: &'a Path<'a>,
    context: &'a Context<'a>,
}

impl<'a> MapAccess<'a> {
    fn generic(entries: &'a [(Node, Node)], path: &'a Path<'a>, context: &'a Context<'a>) -> Self {
        MapAccess { entries: entries.iter(), current: None, known: None, path, context }
    }

    /// Reports a key that is not a field of the struct being read, and says whether to skip it.
    fn skip_unknown(&self, key: &Node) -> bool {
        let Some((struct_name, fields)) = self.known else { return false };
        let Some(name) = key.as_str() else { return false };
        if fields.contains(&name) {
            return false;
        }
        let field = {
            let mut rendered = self.path.render();
            push_key(&mut rendered, name);
            rendered
        };
        let diagnostic = if let Some(note) = tiers::accepted(struct_name, name) {
            let warning =
                Diagnostic::warning(self.context.file, key.pos, "field is accepted but not acted on by berth")
                    .object(self.context.object)
                    .field(field);
            if note.is_empty() { warning } else { warning.help(note) }
        } else if let Some(reason) = tiers::refused(struct_name, name) {
            let what = if struct_name == "Volume" { "volume source" } else { "field" };
            Diagnostic::error(self.context.file, key.pos, format!("{what} `{name}` is not supported by berth"))
                .object(self.context.object)
                .field(field)
                .help(reason)
        } else {
            let candidates = fields.iter().copied().chain(tiers::known_fields(struct_name));
            let error = Diagnostic::error(self.context.file, key.pos, format!("unknown field `{name}`"))
                .object(self.context.object)
                .field(field);
            match diag::suggest(name, candidates) {
                Some(close) => error.help(format!("did you mean `{close}`?")),
                None => error.help(format!("{struct_name} has the fields: {}", fields.join(", "))),
            }
        };
        self.context.findings.borrow_mut().push(diagnostic);
        true
    }
}

impl<'de> de::MapAccess<'de> for MapAccess<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        loop {
            let Some(entry) = self.entries.next() else { return Ok(None) };
            if self.skip_unknown(&entry.0) {
                continue;
            }
            self.current = Some(entry);
            let key_path = self.path.key(entry.0.as_str().unwrap_or_default());
            return seed
                .deserialize(NodeDeserializer { node: &entry.0, path: &key_path, context: self.context })
                .map(Some);
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.current.take() else {
            return Err(DeError::custom("value requested before its key"));
        };
        let path = self.path.key(key.as_str().unwrap_or_default());
        seed.deserialize(NodeDeserializer { node: value, path: &path, context: self.context })
    }
}
