//! Diagnostics: what validation found, where, and what to do about it.
//!
//! Every problem berth reports about a manifest is a [`Diagnostic`] naming the file, line and
//! column, the object and the field. Validation collects all of them instead of stopping at the
//! first; callers decide what an error means (for a commit: nothing is applied).
//! This module must never print or decide policy.

use serde::Serialize;
use std::fmt;

/// How bad a finding is. Ordered: a worse severity compares greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// A line and column in a file, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
    /// Which file the place is in when a tree was put together from several (a kustomize
    /// patch's values in a base's object): 0 is the tree's own file, `n` the `n`th file its
    /// builder names. Never shown; the builder turns it into a file name.
    #[serde(skip)]
    pub origin: u32,
}

impl Pos {
    /// Line 1, column 1: a whole file.
    pub const START: Pos = Pos::new(1, 1);

    pub const fn new(line: u32, column: u32) -> Pos {
        Pos { line, column, origin: 0 }
    }
}

/// One finding about the manifests of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// [`Pos::origin`] of the place, until the builder of the tree names its file.
    #[serde(skip)]
    pub origin: u32,
    /// `Kind namespace/name` of the object, when the finding belongs to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The field path inside the object, such as `spec.template.spec.containers[0].image`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
    /// What to do about it, when berth can say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(severity: Severity, file: &str, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            file: file.to_owned(),
            line: pos.line,
            column: pos.column,
            origin: pos.origin,
            object: None,
            field: None,
            message: message.into(),
            help: None,
        }
    }

    pub fn error(file: &str, pos: Pos, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, file, pos, message)
    }

    pub fn warning(file: &str, pos: Pos, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, file, pos, message)
    }

    pub fn object(mut self, object: impl Into<String>) -> Self {
        self.object = Some(object.into());
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        if !field.is_empty() {
            self.field = Some(field);
        }
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `file:line:col: error: Kind ns/name: field: message (help)`, the shape compilers use, so
    /// editors and CI annotate the right line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {severity}: ", self.file, self.line, self.column)?;
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, " ({help})")?;
        }
        Ok(())
    }
}

/// Sorts diagnostics by file and position, so output is stable whatever order checks ran in.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| (&a.file, a.line, a.column, &a.message).cmp(&(&b.file, b.line, b.column, &b.message)));
}

/// The closest candidate to `word` by edit distance (a swap of two neighbouring letters counts
/// as one edit, so `imgae` finds `image`), when it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word_lower = word.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let distance = strsim::damerau_levenshtein(&word_lower, &candidate.to_ascii_lowercase());
        let limit = (candidate.len().max(word.len()) / 3).clamp(1, 3);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let fields = ["replicas", "selector", "template", "strategy"];
        assert_eq!(suggest("replicaz", fields), Some("replicas"));
        assert_eq!(suggest("Replicas", fields), Some("replicas"));
        assert_eq!(suggest("colour", fields), None);
        // Issue 13: a transposition is one edit.
        assert_eq!(suggest("imgae", ["image", "name", "ports"]), Some("image"));
    }
}
