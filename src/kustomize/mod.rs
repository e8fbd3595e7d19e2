//! Kustomize, rendered by berth: a folder holding a `kustomization.yaml` becomes the objects
//! `kustomize build` would print, as positioned YAML trees ready for the manifest parser.
//!
//! Pure over a [`Files`] view of one commit (or the work tree): no shelling out, no network.
//! Paths are repository paths (`base/web.yaml`); `resources` may name anything inside the
//! repository, other file references (patches, generator files) only what is inside the
//! kustomization's own folder, as kustomize's default load restriction says. Every object keeps
//! the positions of the file it was declared in; a value a patch put in takes the position of
//! the place it was put. What is rendered depends only on the files read, which
//! [`Output::read`] lists, so a render can be reused while those files are unchanged.
//!
//! Order of work in one kustomization, as kustomize has it: resources (bases rendered first),
//! components, generators, then patchesStrategicMerge, patches, namespace, namePrefix,
//! nameSuffix, labels, annotations, patchesJson6902, replicas, images, replacements. At the top,
//! generated names get their content hash, then references to renamed objects are rewritten.

pub mod patch;
pub mod tree;

use crate::diag::{self, Diagnostic, Pos};
use crate::manifest::yaml::{self, Node, Value};
use base64::Engine as _;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

/// The names a kustomization file may have, in the order kustomize looks for them.
pub const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Bases deeper than this are refused (a guard, not a limit anyone meets).
const MAX_DEPTH: usize = 32;
/// The most objects one render may accumulate, counting every base each time it is included:
/// a repository listing a base many times over, at many levels, ends in an error, not a hang.
pub const MAX_OBJECTS: usize = 200_000;

/// The files of one commit or work tree, by repository path.
pub trait Files {
    /// The bytes of the file at `path`; `None` when there is no such file.
    fn read(&self, path: &str) -> Option<Vec<u8>>;
    fn is_dir(&self, path: &str) -> bool;
}

/// The files of a folder on disk (a work tree) under `top`, never past it nor into `.git`.
/// `top` must be canonical.
pub struct DirFiles {
    pub top: PathBuf,
}

impl DirFiles {
    fn real(&self, path: &str) -> Option<PathBuf> {
        let real = std::fs::canonicalize(self.top.join(path)).ok()?;
        let hidden = real.strip_prefix(&self.top).ok()?.components().any(|c| c.as_os_str() == ".git");
        (!hidden).then_some(real)
    }
}

impl Files for DirFiles {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        let real = self.real(path).filter(|p| p.is_file())?;
        std::fs::read(real).ok()
    }

    fn is_dir(&self, path: &str) -> bool {
        self.real(path).is_some_and(|p| p.is_dir())
    }
}

/// One rendered object.
#[derive(Debug, Clone)]
pub struct Object {
    /// The repository path of the file that declared it (a generator's: its kustomization).
    pub file: String,
    pub node: Node,
    /// Every name it had, first to last.
    names: Vec<String>,
    /// A generated object whose name takes its content hash.
    hash: bool,
}

impl Object {
    fn kind(&self) -> &str {
        tree::str_at(&self.node, &["kind"]).unwrap_or_default()
    }

    fn name(&self) -> &str {
        tree::str_at(&self.node, &["metadata", "name"]).unwrap_or_default()
    }

    fn namespace(&self) -> &str {
        tree::str_at(&self.node, &["metadata", "namespace"]).unwrap_or_default()
    }

    fn had_name(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    fn rename(&mut self, name: String) {
        if let Some(meta) = tree::walk_mut(&mut self.node, &["metadata"], true) {
            let pos = meta.get("name").map_or(meta.pos, |n| n.pos);
            tree::set(meta, "name", tree::string(pos, &name));
        }
        self.names.push(name);
    }

    fn id(&self) -> String {
        let namespace = self.namespace();
        if namespace.is_empty() {
            format!("{} {}", self.kind(), self.name())
        } else {
            format!("{} {namespace}/{}", self.kind(), self.name())
        }
    }
}

/// What rendering a kustomization gave.
#[derive(Debug, Default)]
pub struct Output {
    pub objects: Vec<Object>,
    /// Findings, by repository path.
    pub diagnostics: Vec<Diagnostic>,
    /// Every file read, for reuse while they are unchanged.
    pub read: BTreeSet<String>,
    /// Folders rendered as bases or components of this one.
    pub bases: BTreeSet<String>,
    /// The files the rendered trees were read from: a node whose [`Pos::origin`] is `n` came
    /// from `origins[n - 1]`, so a finding about a patched value points at the patch.
    pub origins: Vec<String>,
}

impl Output {
    /// The file of origin number `origin` (see [`Pos::origin`]), when it is one.
    pub fn origin(&self, origin: u32) -> Option<&str> {
        let index = usize::try_from(origin).ok()?.checked_sub(1)?;
        self.origins.get(index).map(String::as_str)
    }
}

/// The kustomization file of folder `dir`, if it has one.
pub fn find(files: &dyn Files, dir: &str) -> Option<String> {
    FILE_NAMES.iter().map(|name| join(dir, name)).find(|path| files.read(path).is_some())
}

/// Renders the kustomization in folder `dir` (a repository path; empty for the top).
pub fn render(files: &dyn Files, dir: &str) -> Output {
    render_keyed(files, dir, None)
}

/// [`render`], decrypting SOPS-encrypted resource files with `keys` as they are read, before
/// any transformation (which would break their MAC).
pub fn render_keyed(files: &dyn Files, dir: &str, keys: Option<&crate::manifest::sops::Keys>) -> Output {
    let mut renderer = Renderer {
        keys,
        files,
        out: Output::default(),
        stack: Vec::new(),
        parsed: HashMap::new(),
        bases: HashMap::new(),
        accumulated: 0,
        origin_ids: HashMap::new(),
    };
    let objects = renderer.kustomization(dir, false, Vec::new(), None).unwrap_or_default();
    let mut objects = objects;
    add_hashes(&mut objects);
    fix_references(&mut objects);
    renderer.out.objects = objects;
    renderer.out
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_owned() } else { format!("{dir}/{name}") }
}

/// `a/b/../c` as `a/c`; `None` when it climbs out of the repository.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

fn is_remote(reference: &str) -> bool {
    reference.contains("://")
        || reference.contains("?ref=")
        || reference.starts_with("git@")
        || ["github.com/", "gitlab.com/", "bitbucket.org/"].iter().any(|host| reference.starts_with(host))
}

/// Fields of a kustomization, and what berth says of those it does not render.
const FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "resources",
    "bases",
    "components",
    "namespace",
    "namePrefix",
    "nameSuffix",
    "commonLabels",
    "labels",
    "commonAnnotations",
    "images",
    "replicas",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "patches",
    "patchesStrategicMerge",
    "patchesJson6902",
    "replacements",
    "buildMetadata",
    "sortOptions",
];

fn refused(field: &str) -> Option<(&'static str, &'static str)> {
    Some(match field {
        "helmCharts" | "helmChartInflationGenerator" | "helmGlobals" => (
            "Helm charts are not rendered by berth",
            "render the chart in CI (`helm template`) and commit the output as a resource",
        ),
        "vars" => ("`vars` is deprecated in kustomize and not rendered by berth", "write `replacements` instead"),
        "generators" | "transformers" | "validators" => (
            "kustomize plugins are not run by berth",
            "use the built-in fields (patches, replacements, generators of ConfigMaps and Secrets)",
        ),
        "openapi" | "configurations" | "crds" => (
            "custom kustomize configurations are not read by berth",
            "berth knows the fields of the kinds it runs; remove the field",
        ),
        _ => return None,
    })
}

/// Which objects a patch or replacement applies to.
#[derive(Debug, Default)]
struct Selector {
    group: Option<String>,
    version: Option<String>,
    kind: Option<String>,
    name: Option<regex::Regex>,
    namespace: Option<regex::Regex>,
    labels: Vec<crate::server::api::Requirement>,
    annotations: Vec<crate::server::api::Requirement>,
}

impl Selector {
    fn matches(&self, object: &Object) -> bool {
        let api_version = tree::str_at(&object.node, &["apiVersion"]).unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let labels = string_map(object.node.get("metadata").and_then(|m| m.get("labels")));
        let annotations = string_map(object.node.get("metadata").and_then(|m| m.get("annotations")));
        self.group.as_deref().is_none_or(|g| g == group)
            && self.version.as_deref().is_none_or(|v| v == version)
            && self.kind.as_deref().is_none_or(|k| k == object.kind())
            && self.name.as_ref().is_none_or(|re| object.names.iter().any(|n| re.is_match(n)))
            && self.namespace.as_ref().is_none_or(|re| re.is_match(object.namespace()))
            && self.labels.iter().all(|r| r.holds(&labels))
            && self.annotations.iter().all(|r| r.holds(&annotations))
    }
}

fn string_map(node: Option<&Node>) -> BTreeMap<String, String> {
    match node.map(|n| &n.value) {
        Some(Value::Map(entries)) => {
            entries.iter().filter_map(|(k, v)| Some((tree::scalar_text(k)?, tree::scalar_text(v)?))).collect()
        }
        _ => BTreeMap::new(),
    }
}

struct Renderer<'a> {
    files: &'a dyn Files,
    /// The age identities SOPS-encrypted resources are decrypted with.
    keys: Option<&'a crate::manifest::sops::Keys>,
    out: Output,
    stack: Vec<String>,
    /// Resource files parsed ahead, on every core, by path.
    parsed: HashMap<String, Result<Vec<Node>, yaml::YamlError>>,
    /// Bases already rendered in this render, by folder: a base included twice is rendered once.
    bases: HashMap<String, Option<Vec<Object>>>,
    /// Objects accumulated so far, every inclusion counted.
    accumulated: usize,
    /// The number of each file in `out.origins`.
    origin_ids: HashMap<String, u32>,
}

/// Where a finding about one kustomization points.
#[derive(Clone)]
struct At {
    file: String,
    dir: String,
}

impl Renderer<'_> {
    /// The origin number of file `path`, given on first sight.
    fn origin(&mut self, path: &str) -> u32 {
        if let Some(id) = self.origin_ids.get(path) {
            return *id;
        }
        self.out.origins.push(path.to_owned());
        let id = u32::try_from(self.out.origins.len()).unwrap_or(u32::MAX);
        self.origin_ids.insert(path.to_owned(), id);
        id
    }

    fn error(&mut self, at: &At, pos: Pos, field: &str, message: impl Into<String>, help: Option<&str>) {
        let mut diagnostic = Diagnostic::error(&at.file, pos, message).field(field);
        if let Some(help) = help {
            diagnostic = diagnostic.help(help);
        }
        self.out.diagnostics.push(diagnostic);
    }

    fn read(&mut self, path: &str) -> Option<Vec<u8>> {
        let bytes = self.files.read(path);
        self.out.read.insert(path.to_owned());
        bytes
    }

    /// Renders one kustomization (or component, onto `objects`). `None` after an error that
    /// leaves nothing to render.
    fn kustomization(
        &mut self,
        dir: &str,
        component: bool,
        mut objects: Vec<Object>,
        from: Option<(&At, Pos)>,
    ) -> Option<Vec<Object>> {
        let Some(file) = FILE_NAMES.iter().map(|name| join(dir, name)).find(|path| self.read(path).is_some()) else {
            let message = format!("`{dir}` has no kustomization.yaml");
            match from {
                Some((at, pos)) => self.error(
                    at,
                    pos,
                    if component { "components" } else { "resources" },
                    message,
                    Some("a folder named in a kustomization must hold a kustomization.yaml"),
                ),
                None => self.out.diagnostics.push(Diagnostic::error(dir, Pos::START, message)),
            }
            return None;
        };
        let at = At { file: file.clone(), dir: dir.to_owned() };
        if self.stack.contains(&dir.to_owned()) || self.stack.len() > MAX_DEPTH {
            let (from_at, pos) = from.map_or((at.clone(), Pos::START), |(a, p)| (a.clone(), p));
            self.error(
                &from_at,
                pos,
                "resources",
                format!("`{dir}` is its own base (through {})", self.stack.join(" -> ")),
                Some("a kustomization may not include itself"),
            );
            return None;
        }
        let root = self.parse_yaml(&at.file, &at)?.into_iter().next();
        let Some(root) = root.filter(|r| matches!(r.value, Value::Map(_))) else {
            self.error(&at, Pos::START, "", "a kustomization must be a mapping", None);
            return None;
        };
        let kind = root.get("kind").and_then(Node::as_str).unwrap_or("Kustomization");
        match (component, kind) {
            (false, "Kustomization") | (true, "Component") => {}
            (component, kind) => {
                let (message, help) = match (component, kind) {
                    (false, "Component") => (
                        "a Component is not rendered on its own".to_owned(),
                        "name its folder under `components` of a kustomization",
                    ),
                    (true, _) => (
                        format!("`{dir}` is named as a component, but its kind is {kind}"),
                        "write `kind: Component` and `apiVersion: kustomize.config.k8s.io/v1alpha1`",
                    ),
                    (false, other) => (format!("a kustomization file has kind {other}"), "write `kind: Kustomization`"),
                };
                let pos = root.locate(&["kind"]);
                self.error(&at, pos, "kind", message, Some(help));
                return None;
            }
        }
        let errors = self.out.diagnostics.iter().filter(|d| d.is_error()).count();
        if let Value::Map(entries) = &root.value {
            for (key, _) in entries {
                let Some(name) = key.as_str() else { continue };
                if FIELDS.contains(&name) {
                    continue;
                }
                match refused(name) {
                    Some((message, help)) => self.error(&at, key.pos, name, message, Some(help)),
                    None => {
                        let help = diag::suggest(name, FIELDS.iter().copied()).map(|s| format!("did you mean `{s}`?"));
                        self.error(
                            &at,
                            key.pos,
                            name,
                            format!("unknown kustomization field `{name}`"),
                            help.as_deref(),
                        );
                    }
                }
            }
        }
        self.stack.push(dir.to_owned());
        self.parse_ahead(&at, &root);
        for field in ["resources", "bases"] {
            for (reference, pos) in self.strings(&root, field, &at) {
                self.resource(&at, &reference, pos, field, &mut objects);
            }
        }
        for (reference, pos) in self.strings(&root, "components", &at) {
            if is_remote(&reference) {
                self.error(
                    &at,
                    pos,
                    "components",
                    format!("remote component `{reference}` is not fetched by berth"),
                    Some("vendor it into the repository"),
                );
                continue;
            }
            let Some(path) = self.resolve(&at, &reference, pos, "components", false) else { continue };
            self.out.bases.insert(path.clone());
            let before = std::mem::take(&mut objects);
            match self.kustomization(&path, true, before.clone(), Some((&at, pos))) {
                Some(after) => objects = after,
                None => objects = before,
            }
        }
        self.stack.pop();
        if self.duplicates(&at, &root, "resources", &objects) {
            return None;
        }
        let options = root.get("generatorOptions");
        self.generate(&at, &root, "configMapGenerator", options, &mut objects);
        self.generate(&at, &root, "secretGenerator", options, &mut objects);
        if self.duplicates(&at, &root, "configMapGenerator", &objects) {
            return None;
        }
        self.transform(&at, &root, &mut objects);
        let failed = self.out.diagnostics.iter().filter(|d| d.is_error()).count() > errors;
        if failed { None } else { Some(objects) }
    }

    /// Reads the resource files a kustomization names and parses them on every core, before
    /// they are taken in order: parsing is most of a render's work.
    fn parse_ahead(&mut self, at: &At, root: &Node) {
        let mut texts = Vec::new();
        for field in ["resources", "bases"] {
            let Some(Value::Seq(items)) = root.get(field).map(|n| &n.value) else { continue };
            for reference in items.iter().filter_map(Node::as_str) {
                let Some(path) = normalize(&join(&at.dir, reference)) else { continue };
                if is_remote(reference) || reference.starts_with('/') || self.parsed.contains_key(&path) {
                    continue;
                }
                if let Some(text) = self.files.read(&path).and_then(|bytes| String::from_utf8(bytes).ok()) {
                    texts.push((path, text));
                }
            }
        }
        let texts: Vec<_> = texts.into_iter().map(|(path, text)| (self.origin(&path), path, text)).collect();
        let keys = self.keys;
        let parse = |(origin, path, text): (u32, String, String)| {
            let parsed = parse_documents(&text, origin, &path, keys);
            (path, parsed)
        };
        for (path, parsed) in crate::parallel::map(texts, parse) {
            self.parsed.insert(path, parsed);
        }
    }

    fn parse_yaml(&mut self, path: &str, at: &At) -> Option<Vec<Node>> {
        let parsed = match self.parsed.remove(path) {
            Some(parsed) => {
                self.out.read.insert(path.to_owned());
                parsed
            }
            None => {
                let bytes = self.read(path)?;
                let Ok(text) = String::from_utf8(bytes) else {
                    self.error(at, Pos::START, "", format!("`{path}` is not UTF-8 text"), None);
                    return None;
                };
                parse_documents(&text, self.origin(path), path, self.keys)
            }
        };
        match parsed {
            Ok(nodes) => Some(nodes),
            Err(error) => {
                let mut diagnostic = Diagnostic::error(path, error.pos, error.message);
                if let Some(help) = error.help {
                    diagnostic = diagnostic.help(help);
                }
                self.out.diagnostics.push(diagnostic);
                None
            }
        }
    }

    /// A list of strings under `field`, each with its position.
    fn strings(&mut self, root: &Node, field: &str, at: &At) -> Vec<(String, Pos)> {
        match root.get(field).map(|n| (&n.value, n.pos)) {
            None | Some((Value::Null, _)) => Vec::new(),
            Some((Value::Seq(items), _)) => items
                .iter()
                .filter_map(|item| match tree::scalar_text(item) {
                    Some(text) => Some((text, item.pos)),
                    None => {
                        self.error(at, item.pos, field, format!("each item of `{field}` must be a string"), None);
                        None
                    }
                })
                .collect(),
            Some((other, pos)) => {
                let message = format!("`{field}` must be a list, found {}", other.describe());
                self.error(at, pos, field, message, None);
                Vec::new()
            }
        }
    }

    /// Resolves `reference` against the kustomization's folder. `resources` may reach anywhere in
    /// the repository; other references stay inside the folder.
    fn resolve(&mut self, at: &At, reference: &str, pos: Pos, field: &str, restricted: bool) -> Option<String> {
        if reference.starts_with('/') {
            self.error(
                at,
                pos,
                field,
                format!("`{reference}` is an absolute path"),
                Some("write a path relative to the kustomization's folder"),
            );
            return None;
        }
        let Some(path) = normalize(&join(&at.dir, reference)) else {
            self.error(
                at,
                pos,
                field,
                format!("`{reference}` is outside the repository"),
                Some("keep bases and files inside the repository"),
            );
            return None;
        };
        let inside = at.dir.is_empty() || path == at.dir || path.starts_with(&format!("{}/", at.dir));
        if restricted && !inside {
            self.error(
                at,
                pos,
                field,
                format!("`{reference}` is outside the kustomization's folder `{}`", at.dir),
                Some("kustomize's load restriction: patches and generator files must be inside the kustomization's folder; move the file, or make the folder a base"),
            );
            return None;
        }
        Some(path)
    }

    fn resource(&mut self, at: &At, reference: &str, pos: Pos, field: &str, objects: &mut Vec<Object>) {
        if is_remote(reference) {
            self.error(
                at,
                pos,
                field,
                format!("remote base `{reference}` is not fetched by berth"),
                Some("vendor the base into the repository and name its folder"),
            );
            return;
        }
        let Some(path) = self.resolve(at, reference, pos, field, false) else { return };
        let mut added = Vec::new();
        if self.files.is_dir(&path) {
            self.out.bases.insert(path.clone());
            let rendered = match self.bases.get(&path) {
                Some(rendered) => rendered.clone(),
                None => {
                    let rendered = self.kustomization(&path, false, Vec::new(), Some((at, pos)));
                    self.bases.insert(path.clone(), rendered.clone());
                    rendered
                }
            };
            match rendered {
                Some(rendered) => added = rendered,
                None => return,
            }
        } else {
            if !self.parsed.contains_key(&path) && self.files.read(&path).is_none() {
                self.read(&path);
                self.error(
                    at,
                    pos,
                    field,
                    format!("`{reference}` does not exist"),
                    Some("name a file or a folder of the repository, relative to the kustomization's folder"),
                );
                return;
            }
            let Some(documents) = self.parse_yaml(&path, at) else { return };
            for node in documents {
                self.document(at, &path, node, pos, &mut added);
            }
        }
        self.accumulated += added.len();
        if self.accumulated > MAX_OBJECTS {
            self.error(
                at,
                pos,
                field,
                format!("the render passes {MAX_OBJECTS} objects here, counting every base each time it is included"),
                Some("include each base once"),
            );
            return;
        }
        objects.extend(added);
    }

    fn document(&mut self, at: &At, path: &str, node: Node, pos: Pos, added: &mut Vec<Object>) {
        match node.get("kind").and_then(Node::as_str) {
            Some("Kustomization" | "Component") => {
                self.error(
                    at,
                    pos,
                    "resources",
                    format!("`{path}` is a kustomization, not a resource"),
                    Some("name its folder instead"),
                );
                return;
            }
            Some("List") => {
                if let Some(Value::Seq(items)) = node.get("items").map(|n| &n.value) {
                    for item in items {
                        self.document(at, path, item.clone(), pos, added);
                    }
                }
                return;
            }
            _ => {}
        }
        let name = tree::str_at(&node, &["metadata", "name"]).unwrap_or_default().to_owned();
        added.push(Object { file: path.to_owned(), node, names: vec![name], hash: false });
    }

    /// Adds `object`; [`Renderer::duplicates`] refuses a second object with the same identity.
    fn add(&mut self, object: Object, objects: &mut Vec<Object>) {
        objects.push(object);
    }

    /// One error per object declared twice among `objects`, at `field` of the kustomization.
    fn duplicates(&mut self, at: &At, root: &Node, field: &str, objects: &[Object]) -> bool {
        let mut seen: HashMap<(String, String, String), &str> = HashMap::new();
        let mut found = false;
        for object in objects.iter().filter(|o| !o.name().is_empty()) {
            let key = (object.kind().to_owned(), object.namespace().to_owned(), object.name().to_owned());
            if let Some(first) = seen.insert(key, &object.file) {
                let message = format!("{} is declared twice: in {first} and in {}", object.id(), object.file);
                let pos = root.locate_key(&[field]);
                self.error(at, pos, field, message, Some("keep one of them, or change it with a patch"));
                found = true;
            }
        }
        found
    }

    fn generate(&mut self, at: &At, root: &Node, field: &str, options: Option<&Node>, objects: &mut Vec<Object>) {
        let Some(list) = root.get(field) else { return };
        let Value::Seq(entries) = &list.value else {
            if list.value != Value::Null {
                self.error(at, list.pos, field, format!("`{field}` must be a list"), None);
            }
            return;
        };
        let secret = field == "secretGenerator";
        for entry in entries {
            if let Some(object) = self.generated(at, entry, field, secret, options) {
                self.place_generated(at, entry, field, object, objects);
            }
        }
    }

    fn generated(
        &mut self,
        at: &At,
        entry: &Node,
        field: &str,
        secret: bool,
        options: Option<&Node>,
    ) -> Option<Object> {
        const KEYS: &[&str] = &["name", "namespace", "behavior", "files", "literals", "envs", "env", "options", "type"];
        if let Value::Map(keys) = &entry.value {
            for (key, _) in keys {
                let name = key.as_str().unwrap_or_default();
                if !KEYS.contains(&name) || (name == "type" && !secret) {
                    self.error(at, key.pos, field, format!("unknown generator field `{name}`"), None);
                    return None;
                }
            }
        } else {
            self.error(at, entry.pos, field, "each generator must be a mapping", None);
            return None;
        }
        let Some(name) = entry.get("name").and_then(Node::as_str) else {
            self.error(at, entry.pos, field, "a generator needs a `name`", None);
            return None;
        };
        let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut put = |this: &mut Self, key: String, value: Vec<u8>, pos: Pos| {
            if data.insert(key.clone(), value).is_some() {
                this.error(at, pos, field, format!("key `{key}` is set twice in {name}"), None);
            }
        };
        for (literal, pos) in self.strings(entry, "literals", at) {
            let Some((key, value)) = literal.split_once('=') else {
                self.error(at, pos, field, format!("literal `{literal}` is not `KEY=VALUE`"), None);
                continue;
            };
            let value = unquote(value);
            put(self, key.to_owned(), value.as_bytes().to_vec(), pos);
        }
        for (source, pos) in self.strings(entry, "files", at) {
            let (key, reference) = match source.split_once('=') {
                Some((key, path)) => (key.to_owned(), path.to_owned()),
                None => (source.rsplit('/').next().unwrap_or(&source).to_owned(), source.clone()),
            };
            let Some(path) = self.resolve(at, &reference, pos, field, true) else { continue };
            match self.read(&path) {
                Some(bytes) => put(self, key, bytes, pos),
                None => self.error(at, pos, field, format!("`{reference}` does not exist"), None),
            }
        }
        let mut envs = self.strings(entry, "envs", at);
        envs.extend(self.strings(entry, "env", at));
        for (reference, pos) in envs {
            let Some(path) = self.resolve(at, &reference, pos, field, true) else { continue };
            let Some(bytes) = self.read(&path) else {
                self.error(at, pos, field, format!("`{reference}` does not exist"), None);
                continue;
            };
            for (number, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
                let line = line.trim_start();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match line.split_once('=') {
                    Some((key, value)) => put(self, key.trim().to_owned(), value.as_bytes().to_vec(), pos),
                    None => self.error(
                        at,
                        pos,
                        field,
                        format!("line {} of `{reference}` is not `KEY=VALUE`", number + 1),
                        Some("berth does not read values from its own environment"),
                    ),
                }
            }
        }
        let pos = entry.pos;
        let option = |key: &str| {
            [options, entry.get("options")].into_iter().flatten().filter_map(|o| o.get(key)).collect::<Vec<_>>()
        };
        let disable = option("disableNameSuffixHash").iter().any(|n| n.value == Value::Bool(true));
        let immutable = option("immutable").iter().any(|n| n.value == Value::Bool(true));
        let mut labels = BTreeMap::new();
        for node in option("labels") {
            labels.extend(string_map(Some(node)));
        }
        let mut annotations = BTreeMap::new();
        for node in option("annotations") {
            annotations.extend(string_map(Some(node)));
        }
        let mut node = tree::map(pos);
        tree::set(&mut node, "apiVersion", tree::string(pos, "v1"));
        tree::set(&mut node, "kind", tree::string(pos, if secret { "Secret" } else { "ConfigMap" }));
        let mut meta = tree::map(pos);
        tree::set(&mut meta, "name", tree::string(pos, name));
        if let Some(namespace) = entry.get("namespace").and_then(Node::as_str) {
            tree::set(&mut meta, "namespace", tree::string(pos, namespace));
        }
        for (key, map) in [("labels", &labels), ("annotations", &annotations)] {
            if !map.is_empty() {
                let mut node = tree::map(pos);
                for (k, v) in map {
                    tree::set(&mut node, k, tree::string(pos, v));
                }
                tree::set(&mut meta, key, node);
            }
        }
        tree::set(&mut node, "metadata", meta);
        if secret {
            let kind = entry.get("type").and_then(Node::as_str).unwrap_or("Opaque");
            tree::set(&mut node, "type", tree::string(pos, kind));
        }
        let engine = base64::engine::general_purpose::STANDARD;
        let mut text = tree::map(pos);
        let mut binary = tree::map(pos);
        for (key, value) in data {
            match (secret, String::from_utf8(value)) {
                (false, Ok(value)) => tree::set(&mut text, &key, tree::string(pos, &value)),
                (true, Ok(value)) => tree::set(&mut text, &key, tree::string(pos, &engine.encode(value))),
                (true, Err(e)) => tree::set(&mut text, &key, tree::string(pos, &engine.encode(e.into_bytes()))),
                (false, Err(e)) => tree::set(&mut binary, &key, tree::string(pos, &engine.encode(e.into_bytes()))),
            }
        }
        if !matches!(&binary.value, Value::Map(e) if e.is_empty()) {
            tree::set(&mut node, "binaryData", binary);
        }
        if !matches!(&text.value, Value::Map(e) if e.is_empty()) {
            tree::set(&mut node, "data", text);
        }
        if immutable {
            tree::set(&mut node, "immutable", Node { pos, value: Value::Bool(true) });
        }
        Some(Object { file: at.file.clone(), node, names: vec![name.to_owned()], hash: !disable })
    }

    fn place_generated(&mut self, at: &At, entry: &Node, field: &str, object: Object, objects: &mut Vec<Object>) {
        let behavior = entry.get("behavior").and_then(Node::as_str).unwrap_or("create");
        if behavior == "create" {
            self.add(object, objects);
            return;
        }
        if behavior != "merge" && behavior != "replace" {
            let pos = entry.locate(&["behavior"]);
            self.error(at, pos, field, format!("behavior `{behavior}` is not one of create, merge, replace"), None);
            return;
        }
        let namespace = entry.get("namespace").and_then(Node::as_str);
        let Some(existing) = objects.iter_mut().find(|o| {
            o.kind() == object.kind() && o.had_name(object.name()) && namespace.is_none_or(|ns| ns == o.namespace())
        }) else {
            let message =
                format!("behavior `{behavior}` needs an existing {} {} from a base", object.kind(), object.name());
            self.error(
                at,
                entry.pos,
                field,
                message,
                Some("write `behavior: create`, or name the base that declares it"),
            );
            return;
        };
        for key in ["data", "binaryData"] {
            let new = object.node.get(key).cloned();
            if behavior == "replace" {
                tree::remove(&mut existing.node, key);
            }
            if let Some(new) = new {
                match tree::walk_mut(&mut existing.node, &[key], true) {
                    Some(old) => {
                        if let Value::Map(entries) = new.value {
                            for (k, v) in entries {
                                tree::set(old, k.as_str().unwrap_or_default(), v);
                            }
                        }
                    }
                    None => tree::set(&mut existing.node, key, new),
                }
            }
        }
        for key in ["labels", "annotations"] {
            if let Some(Value::Map(entries)) = tree::path(&object.node, &["metadata", key]).map(|n| n.value.clone()) {
                if let Some(old) = tree::walk_mut(&mut existing.node, &["metadata", key], true) {
                    for (k, v) in entries {
                        tree::set(old, k.as_str().unwrap_or_default(), v);
                    }
                }
            }
        }
        existing.hash = object.hash;
    }

    fn transform(&mut self, at: &At, root: &Node, objects: &mut [Object]) {
        self.strategic_merge_list(at, root, objects);
        self.patches(at, root, objects);
        if let Some(namespace) = root.get("namespace").and_then(Node::as_str) {
            for object in objects.iter_mut().filter(|o| namespaced(o.kind())) {
                if let Some(meta) = tree::walk_mut(&mut object.node, &["metadata"], true) {
                    let pos = meta.get("namespace").map_or(root.locate(&["namespace"]), |n| n.pos);
                    tree::set(meta, "namespace", tree::string(pos, namespace));
                }
            }
        }
        let prefix = root.get("namePrefix").and_then(Node::as_str).unwrap_or_default();
        let suffix = root.get("nameSuffix").and_then(Node::as_str).unwrap_or_default();
        if !prefix.is_empty() || !suffix.is_empty() {
            for object in objects.iter_mut().filter(|o| o.kind() != "CustomResourceDefinition") {
                let name = format!("{prefix}{}{suffix}", object.name());
                object.rename(name);
            }
        }
        self.labels(at, root, objects);
        let annotations = string_map(root.get("commonAnnotations"));
        if !annotations.is_empty() {
            let pos = root.locate(&["commonAnnotations"]);
            for object in objects.iter_mut() {
                let mut paths = vec![vec!["metadata", "annotations"]];
                paths.extend(templates(object.kind()).iter().map(|t| [*t, &["metadata", "annotations"][..]].concat()));
                for path in paths {
                    put_all(&mut object.node, &path, &annotations, pos);
                }
            }
        }
        self.json_patches(at, root, objects);
        self.replicas(at, root, objects);
        self.images(at, root, objects);
        self.replacements(at, root, objects);
    }

    fn labels(&mut self, at: &At, root: &Node, objects: &mut [Object]) {
        let mut sets: Vec<(BTreeMap<String, String>, bool, bool, Pos)> = Vec::new();
        if let Some(common) = root.get("commonLabels") {
            sets.push((string_map(Some(common)), true, true, common.pos));
        }
        if let Some(list) = root.get("labels") {
            let Value::Seq(items) = &list.value else {
                self.error(
                    at,
                    list.pos,
                    "labels",
                    "`labels` must be a list of {pairs, includeSelectors, includeTemplates}",
                    None,
                );
                return;
            };
            for item in items {
                let flag = |key: &str| item.get(key).is_some_and(|n| n.value == Value::Bool(true));
                let selectors = flag("includeSelectors");
                if item.get("fields").is_some() {
                    self.error(
                        at,
                        item.pos,
                        "labels",
                        "`labels[].fields` is not rendered by berth",
                        Some("label the fields with a patch"),
                    );
                }
                sets.push((string_map(item.get("pairs")), selectors, selectors || flag("includeTemplates"), item.pos));
            }
        }
        for (pairs, selectors, templated, pos) in sets {
            if pairs.is_empty() {
                continue;
            }
            for object in objects.iter_mut() {
                let kind = object.kind().to_owned();
                put_all(&mut object.node, &["metadata", "labels"], &pairs, pos);
                if templated {
                    for template in templates(&kind) {
                        put_all(&mut object.node, &[*template, &["metadata", "labels"][..]].concat(), &pairs, pos);
                    }
                }
                if selectors {
                    if let Some(selector) = selector_path(&kind) {
                        put_all(&mut object.node, selector, &pairs, pos);
                    }
                }
            }
        }
    }

    /// `patchesStrategicMerge`: file paths or inline YAML, each document naming its target.
    fn strategic_merge_list(&mut self, at: &At, root: &Node, objects: &mut [Object]) {
        let field = "patchesStrategicMerge";
        for (text, pos) in self.strings(root, field, at) {
            let Some(documents) = self.patch_documents(at, &text, pos, field) else { continue };
            for document in documents {
                self.strategic_merge(at, pos, field, &document, None, objects);
            }
        }
    }

    /// The documents of a patch given as a path or inline.
    fn patch_documents(&mut self, at: &At, text: &str, pos: Pos, field: &str) -> Option<Vec<Node>> {
        let inline = text.contains('\n') || text.trim_start().starts_with(['[', '{', '-']);
        if !inline {
            let path = self.resolve(at, text, pos, field, true)?;
            if self.files.read(&path).is_none() {
                self.read(&path);
                self.error(at, pos, field, format!("patch file `{text}` does not exist"), None);
                return None;
            }
            return self.parse_yaml(&path, at);
        }
        match yaml::parse(text) {
            Ok(documents) => {
                let mut nodes: Vec<Node> =
                    documents.into_iter().filter_map(|d| d.root).filter(|n| n.value != Value::Null).collect();
                // An inline patch's positions count from its own first line: point at the entry.
                nodes.iter_mut().for_each(|n| tree::restamp(n, pos));
                Some(nodes)
            }
            Err(error) => {
                self.error(at, pos, field, format!("the inline patch is not YAML: {}", error.message), None);
                None
            }
        }
    }

    fn strategic_merge(
        &mut self,
        at: &At,
        pos: Pos,
        field: &str,
        patch: &Node,
        selector: Option<&Selector>,
        objects: &mut [Object],
    ) {
        let kind = patch.get("kind").and_then(Node::as_str).unwrap_or_default().to_owned();
        let name = tree::str_at(patch, &["metadata", "name"]).unwrap_or_default().to_owned();
        let namespace = tree::str_at(patch, &["metadata", "namespace"]).map(str::to_owned);
        if selector.is_none() && (kind.is_empty() || name.is_empty()) {
            self.error(
                at,
                pos,
                field,
                "a strategic-merge patch without `target` needs `kind` and `metadata.name`",
                None,
            );
            return;
        }
        let mut body = patch.clone();
        tree::remove(&mut body, "apiVersion");
        tree::remove(&mut body, "kind");
        if let Some(meta) = tree::get_mut(&mut body, "metadata") {
            tree::remove(meta, "name");
            tree::remove(meta, "namespace");
        }
        let mut matched = 0;
        for object in objects.iter_mut() {
            let hit = match selector {
                Some(selector) => selector.matches(object),
                None => {
                    object.kind() == kind
                        && object.had_name(&name)
                        && namespace.as_deref().is_none_or(|ns| ns == object.namespace())
                }
            };
            if !hit {
                continue;
            }
            matched += 1;
            if let Err(message) = patch::strategic_merge(&mut object.node, &body) {
                let id = object.id();
                self.error(at, pos, field, format!("patching {id}: {message}"), None);
            }
        }
        if matched == 0 {
            match selector {
                Some(_) => self.no_target(at, pos, field),
                None => self.error(
                    at,
                    pos,
                    field,
                    format!("the patch for {kind} {name} matches no object of this kustomization"),
                    Some("check the kind and name against the resources and bases it includes"),
                ),
            }
        }
    }

    /// A patch whose target selects nothing does nothing, as in kustomize; say so, since it is
    /// often a typo.
    fn no_target(&mut self, at: &At, pos: Pos, field: &str) {
        self.out.diagnostics.push(
            Diagnostic::warning(&at.file, pos, "the patch's target matches no object of this kustomization")
                .field(field)
                .help("check the target's kind, name and selectors against the resources and bases it includes"),
        );
    }

    fn selector(&mut self, at: &At, node: &Node, field: &str) -> Option<Selector> {
        let text = |key: &str| node.get(key).and_then(tree::scalar_text);
        let regex = |this: &mut Self, key: &str| -> Result<Option<regex::Regex>, ()> {
            let Some(pattern) = text(key) else { return Ok(None) };
            regex::Regex::new(&format!("^(?:{pattern})$")).map(Some).map_err(|e| {
                let pos = node.locate(&[key]);
                this.error(at, pos, field, format!("target {key} `{pattern}` is not a regular expression: {e}"), None);
            })
        };
        let name = regex(self, "name").ok()?;
        let namespace = regex(self, "namespace").ok()?;
        let requirements = |this: &mut Self, key: &str| -> Result<Vec<_>, ()> {
            let Some(selector) = text(key) else { return Ok(Vec::new()) };
            crate::server::api::parse_selector(&selector).map_err(|message| {
                let pos = node.locate(&[key]);
                this.error(at, pos, field, message, None);
            })
        };
        let labels = requirements(self, "labelSelector").ok()?;
        let annotations = requirements(self, "annotationSelector").ok()?;
        Some(Selector {
            group: text("group"),
            version: text("version"),
            kind: text("kind"),
            name,
            namespace,
            labels,
            annotations,
        })
    }

    /// `patches`: strategic merge or JSON 6902, by path or inline, with an optional target.
    fn patches(&mut self, at: &At, root: &Node, objects: &mut [Object]) {
        let field = "patches";
        let Some(list) = root.get(field) else { return };
        let Value::Seq(entries) = &list.value else {
            self.error(at, list.pos, field, "`patches` must be a list of {path or patch, target}", None);
            return;
        };
        for entry in entries {
            let pos = entry.pos;
            let source = match (entry.get("path").and_then(Node::as_str), entry.get("patch").and_then(Node::as_str)) {
                (Some(path), None) => path.to_owned(),
                (None, Some(inline)) => format!("{inline}\n"),
                _ => {
                    self.error(at, pos, field, "each patch needs exactly one of `path` and `patch`", None);
                    continue;
                }
            };
            let selector = match entry.get("target") {
                Some(target) => match self.selector(at, target, field) {
                    Some(selector) => Some(selector),
                    None => continue,
                },
                None => None,
            };
            let Some(documents) = self.patch_documents(at, &source, pos, field) else { continue };
            if let [document] = documents.as_slice() {
                if matches!(document.value, Value::Seq(_)) {
                    match &selector {
                        Some(selector) => self.json_patch(at, pos, field, document, selector, objects),
                        None => self.error(at, pos, field, "a JSON 6902 patch needs a `target`", None),
                    }
                    continue;
                }
            }
            for document in &documents {
                self.strategic_merge(at, pos, field, document, selector.as_ref(), objects);
            }
        }
    }

    fn json_patch(
        &mut self,
        at: &At,
        pos: Pos,
        field: &str,
        patch: &Node,
        selector: &Selector,
        objects: &mut [Object],
    ) {
        let mut matched = 0;
        for object in objects.iter_mut().filter(|o| selector.matches(o)) {
            matched += 1;
            let before = object.name().to_owned();
            if let Err(message) = patch::json6902(&mut object.node, patch) {
                let id = object.id();
                self.error(at, pos, field, format!("patching {id}: {message}"), None);
            } else if object.name() != before {
                let name = object.name().to_owned();
                object.names.push(name);
            }
        }
        if matched == 0 {
            self.no_target(at, pos, field);
        }
    }

    fn json_patches(&mut self, at: &At, root: &Node, objects: &mut [Object]) {
        let field = "patchesJson6902";
        let Some(Value::Seq(entries)) = root.get(field).map(|n| &n.value) else { return };
        for entry in entries {
            let pos = entry.pos;
            let Some(target) = entry.get("target") else {
                self.error(at, pos, field, "each JSON 6902 patch needs a `target`", None);
                continue;
            };
            let Some(selector) = self.selector(at, target, field) else { continue };
            let source = match (entry.get("path").and_then(Node::as_str), entry.get("patch").and_then(Node::as_str)) {
                (Some(path), None) => path.to_owned(),
                (None, Some(inline)) => format!("{inline}\n"),
                _ => {
                    self.error(at, pos, field, "each patch needs exactly one of `path` and `patch`", None);
                    continue;
                }
            };
            let Some(documents) = self.patch_documents(at, &source, pos, field) else { continue };
            match documents.as_slice() {
                [document] => self.json_patch(at, pos, field, document, &selector, objects),
                _ => self.error(at, pos, field, "a JSON 6902 patch is one list of operations", None),
            }
        }
    }

    fn replicas(&mut self, at: &At, root: &Node, objects: &mut [Object]) {
        let Some(Value::Seq(entries)) = root.get("replicas").map(|n| &n.value) else { return };
        for entry in entries {
            let name = entry.get("name").and_then(Node::as_str);
            let count = entry.get("count").map(|n| n.value.clone());
            let (Some(name), Some(Value::Int(count))) = (name, count) else {
                self.error(at, entry.pos, "replicas", "each item needs `name` and a whole number `count`", None);
                continue;
            };
            let pos = entry.locate(&["count"]);
            for object in objects.iter_mut().filter(|o| o.had_name(name)) {
                if matches!(object.kind(), "Deployment" | "ReplicaSet" | "ReplicationController" | "StatefulSet") {
                    if let Some(spec) = tree::walk_mut(&mut object.node, &["spec"], true) {
                        tree::set(spec, "replicas", Node { pos, value: Value::Int(count) });
                    }
                }
            }
        }
    }

    fn images(&mut self, at: &At, root: &Node, objects: &mut [Object]) {
        let Some(Value::Seq(entries)) = root.get("images").map(|n| &n.value) else { return };
        for entry in entries {
            let text = |key: &str| entry.get(key).and_then(tree::scalar_text);
            let Some(name) = text("name") else {
                self.error(at, entry.pos, "images", "each image needs the `name` it replaces", None);
                continue;
            };
            let (new_name, new_tag, digest) = (text("newName"), text("newTag"), text("digest"));
            let pos = entry.pos;
            for object in objects.iter_mut() {
                for spec in pod_specs(object.kind()) {
                    let Some(spec) = tree::walk_mut(&mut object.node, spec, false) else { continue };
                    for list in ["initContainers", "containers"] {
                        let Some(Value::Seq(containers)) = tree::get_mut(spec, list).map(|n| &mut n.value) else {
                            continue;
                        };
                        for container in containers {
                            let Some(image) = container.get("image").and_then(Node::as_str) else { continue };
                            let (repository, tag, hash) = split_image(image);
                            if repository != name {
                                continue;
                            }
                            let repository = new_name.clone().unwrap_or_else(|| repository.to_owned());
                            let image = match (&digest, &new_tag) {
                                (Some(digest), _) => format!("{repository}@{digest}"),
                                (None, Some(tag)) => format!("{repository}:{tag}"),
                                (None, None) => match (tag, hash) {
                                    (_, Some(hash)) => format!("{repository}@{hash}"),
                                    (Some(tag), None) => format!("{repository}:{tag}"),
                                    (None, None) => repository,
                                },
                            };
                            let at_pos = container.get("image").map_or(pos, |n| n.pos);
                            tree::set(container, "image", tree::string(at_pos, &image));
                        }
                    }
                }
            }
        }
    }

    fn replacements(&mut self, at: &At, root: &Node, objects: &mut [Object]) {
        let field = "replacements";
        let Some(list) = root.get(field) else { return };
        let Value::Seq(entries) = &list.value else {
            self.error(at, list.pos, field, "`replacements` must be a list", None);
            return;
        };
        let mut all = Vec::new();
        for entry in entries {
            match entry.get("path").and_then(Node::as_str) {
                Some(path) => {
                    let Some(documents) = self.patch_documents(at, path, entry.pos, field) else { continue };
                    for document in documents {
                        match document.value {
                            Value::Seq(items) => all.extend(items.into_iter().map(|i| (i, entry.pos))),
                            _ => all.push((document, entry.pos)),
                        }
                    }
                }
                None => all.push((entry.clone(), entry.pos)),
            }
        }
        // The first failure ends the replacements, as in kustomize: later ones would work on
        // objects left half-changed.
        for (replacement, pos) in all {
            if let Err(message) = self.replacement(at, &replacement, objects) {
                self.error(at, pos, field, message, None);
                return;
            }
        }
    }

    fn replacement(&mut self, at: &At, replacement: &Node, objects: &mut [Object]) -> Result<(), String> {
        let field = "replacements";
        let source = replacement.get("source").ok_or("a replacement needs a `source`")?;
        let selector = self.selector(at, source, field).ok_or("its source selector is not valid")?;
        let sources: Vec<&Object> = objects.iter().filter(|o| selector.matches(o)).collect();
        let object = match sources.as_slice() {
            [one] => *one,
            [] => return Err("its source matches no object".to_owned()),
            more => return Err(format!("its source matches {} objects; it must match one", more.len())),
        };
        let path = source.get("fieldPath").and_then(Node::as_str).unwrap_or("metadata.name");
        let found = field_path::find(&object.node, path)?;
        let mut value = found.first().map(|n| (*n).clone()).ok_or(format!("the source has no `{path}`"))?;
        if let Some(options) = source.get("options") {
            if let Some(delimiter) = options.get("delimiter").and_then(Node::as_str) {
                let text = tree::scalar_text(&value).unwrap_or_default();
                let index = options.get("index").and_then(|n| tree::scalar_text(n)?.parse::<usize>().ok()).unwrap_or(0);
                let part = text.split(delimiter).nth(index).ok_or(format!("`{text}` has no part {index}"))?;
                value = tree::string(value.pos, part);
            }
        }
        let Some(Value::Seq(targets)) = replacement.get("targets").map(|n| &n.value) else {
            return Err("a replacement needs `targets`".to_owned());
        };
        for target in targets {
            let select = target.get("select").ok_or("each target needs `select`")?;
            let selector = self.selector(at, select, field).ok_or("a target selector is not valid")?;
            let mut rejects = Vec::new();
            if let Some(Value::Seq(items)) = target.get("reject").map(|n| &n.value) {
                for item in items {
                    rejects.push(self.selector(at, item, field).ok_or("a reject selector is not valid")?);
                }
            }
            let options = target.get("options");
            let create = options.and_then(|o| o.get("create")).is_some_and(|n| n.value == Value::Bool(true));
            let delimiter = options.and_then(|o| o.get("delimiter")).and_then(Node::as_str);
            let index = options.and_then(|o| o.get("index")).and_then(|n| tree::scalar_text(n)?.parse::<usize>().ok());
            let Some(Value::Seq(paths)) = target.get("fieldPaths").map(|n| &n.value) else {
                return Err("each target needs `fieldPaths`".to_owned());
            };
            let value_size = tree::count(&value);
            for object in objects.iter_mut().filter(|o| selector.matches(o) && !rejects.iter().any(|r| r.matches(o))) {
                for path in paths.iter().filter_map(Node::as_str) {
                    // Checked before the value goes in, so that no object ever holds more.
                    if tree::count(&object.node) + value_size > yaml::MAX_NODES {
                        return Err(format!(
                            "the replacement makes {} more than the limit of {} nodes",
                            object.id(),
                            yaml::MAX_NODES
                        ));
                    }
                    field_path::replace(
                        &mut object.node,
                        path,
                        &value,
                        create,
                        delimiter.map(|d| (d, index.unwrap_or(0))),
                    )?;
                }
                let name = object.name().to_owned();
                if !object.had_name(&name) {
                    object.names.push(name);
                }
            }
        }
        Ok(())
    }
}

/// The non-empty documents of a YAML text, every node marked as from file number `origin`;
/// SOPS-encrypted documents decrypted with `keys`.
fn parse_documents(
    text: &str,
    origin: u32,
    path: &str,
    keys: Option<&crate::manifest::sops::Keys>,
) -> Result<Vec<Node>, yaml::YamlError> {
    let documents = yaml::parse(text)?;
    let mut nodes: Vec<Node> =
        documents.into_iter().filter_map(|d| d.root).filter(|n| n.value != Value::Null).collect();
    for node in nodes.iter_mut().filter(|n| crate::manifest::sops::is_encrypted(n)) {
        crate::manifest::sops::decrypt_manifest(node, keys).map_err(|error| yaml::YamlError {
            pos: error.pos,
            message: format!("cannot decrypt {path}: {}", error.message),
            help: error.help,
        })?;
    }
    nodes.iter_mut().for_each(|node| tree::stamp_origin(node, origin));
    Ok(nodes)
}

/// A literal's value with one pair of surrounding quotes removed, as kustomize reads it.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// `repo/name:tag@sha256:...` as repository, tag and digest.
fn split_image(image: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[slash..].rfind(':') {
        Some(colon) => (&rest[..slash + colon], Some(&rest[slash + colon + 1..]), digest),
        None => (rest, None, digest),
    }
}

fn put_all(node: &mut Node, path: &[&str], pairs: &BTreeMap<String, String>, pos: Pos) {
    if let Some(map) = tree::walk_mut(node, path, true) {
        for (key, value) in pairs {
            tree::set(map, key, tree::string(pos, value));
        }
    }
}

/// Kinds that have no namespace.
fn namespaced(kind: &str) -> bool {
    !matches!(
        kind,
        "Namespace"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "CustomResourceDefinition"
            | "PersistentVolume"
            | "StorageClass"
            | "PriorityClass"
            | "IngressClass"
            | "RuntimeClass"
            | "Node"
            | "APIService"
            | "ValidatingWebhookConfiguration"
            | "MutatingWebhookConfiguration"
            | "CSIDriver"
    )
}

/// Where a kind keeps its pod template(s).
fn templates(kind: &str) -> &'static [&'static [&'static str]] {
    match kind {
        "Deployment" | "ReplicaSet" | "ReplicationController" | "DaemonSet" | "StatefulSet" | "Job" => {
            &[&["spec", "template"]]
        }
        "CronJob" => &[&["spec", "jobTemplate", "spec", "template"]],
        _ => &[],
    }
}

/// Where a kind keeps the pod spec(s) it runs.
fn pod_specs(kind: &str) -> &'static [&'static [&'static str]] {
    match kind {
        "Pod" => &[&["spec"]],
        "Deployment" | "ReplicaSet" | "ReplicationController" | "DaemonSet" | "StatefulSet" | "Job" => {
            &[&["spec", "template", "spec"]]
        }
        "CronJob" => &[&["spec", "jobTemplate", "spec", "template", "spec"]],
        _ => &[],
    }
}

/// Where common labels go as selectors.
fn selector_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Service" | "ReplicationController" => Some(&["spec", "selector"]),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => Some(&["spec", "selector", "matchLabels"]),
        _ => None,
    }
}

/// Kustomize's content hash of a generated ConfigMap or Secret: ten characters of the SHA-256
/// of its JSON encoding, with letters swapped in for look-alike digits and vowels.
pub fn content_hash(node: &Node) -> String {
    let kind = tree::str_at(node, &["kind"]).unwrap_or_default();
    let value = |key: &str| node.get(key).map_or(serde_json::Value::String(String::new()), tree::to_json_sorted);
    let mut encoded = serde_json::Map::new();
    // Keys in sorted order, as Go's encoder writes a map. The name is empty when kustomize hashes
    // (two generators with the same data get the same suffix, whatever their names).
    let name = "";
    let extra = if kind == "Secret" { "stringData" } else { "binaryData" };
    let mut fields: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    fields.insert("kind", serde_json::Value::String(kind.to_owned()));
    fields.insert("name", serde_json::Value::String(name.to_owned()));
    fields.insert("data", value("data"));
    if matches!(node.get(extra).map(|n| &n.value), Some(Value::Map(_))) {
        fields.insert(extra, value(extra));
    }
    if kind == "Secret" {
        fields.insert("type", node.get("type").map_or(serde_json::Value::String(String::new()), tree::to_json_sorted));
    }
    for (key, value) in fields {
        encoded.insert(key.to_owned(), value);
    }
    let digest = crate::manifest::hex_digest(tree::go_json(&serde_json::Value::Object(encoded)).as_bytes());
    digest[..10]
        .chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

fn add_hashes(objects: &mut [Object]) {
    for object in objects.iter_mut().filter(|o| o.hash) {
        let name = format!("{}-{}", object.name(), content_hash(&object.node));
        object.rename(name);
    }
}

/// The fields that name another object, by the kind they name, under a pod spec.
const POD_REFERENCES: &[(&str, &[&str])] = &[
    ("ConfigMap", &["volumes", "*", "configMap", "name"]),
    ("ConfigMap", &["volumes", "*", "projected", "sources", "*", "configMap", "name"]),
    ("ConfigMap", &["containers", "*", "env", "*", "valueFrom", "configMapKeyRef", "name"]),
    ("ConfigMap", &["containers", "*", "envFrom", "*", "configMapRef", "name"]),
    ("ConfigMap", &["initContainers", "*", "env", "*", "valueFrom", "configMapKeyRef", "name"]),
    ("ConfigMap", &["initContainers", "*", "envFrom", "*", "configMapRef", "name"]),
    ("Secret", &["volumes", "*", "secret", "secretName"]),
    ("Secret", &["volumes", "*", "projected", "sources", "*", "secret", "name"]),
    ("Secret", &["containers", "*", "env", "*", "valueFrom", "secretKeyRef", "name"]),
    ("Secret", &["containers", "*", "envFrom", "*", "secretRef", "name"]),
    ("Secret", &["initContainers", "*", "env", "*", "valueFrom", "secretKeyRef", "name"]),
    ("Secret", &["initContainers", "*", "envFrom", "*", "secretRef", "name"]),
    ("Secret", &["imagePullSecrets", "*", "name"]),
    ("ServiceAccount", &["serviceAccountName"]),
    ("PersistentVolumeClaim", &["volumes", "*", "persistentVolumeClaim", "claimName"]),
];

/// Rewrites every reference to an object that was renamed (prefix, suffix, content hash) to
/// its final name, as kustomize's name-reference transformer does.
fn fix_references(objects: &mut [Object]) {
    struct Renamed {
        kind: String,
        namespace: String,
        names: Vec<String>,
        current: String,
    }
    let renamed: Vec<Renamed> = objects
        .iter()
        .filter(|o| o.names.len() > 1)
        .map(|o| Renamed {
            kind: o.kind().to_owned(),
            namespace: o.namespace().to_owned(),
            names: o.names.clone(),
            current: o.name().to_owned(),
        })
        .collect();
    if renamed.is_empty() {
        return;
    }
    let new_name = |kind: &str, namespace: &str, old: &str| -> Option<String> {
        let candidates: Vec<&Renamed> =
            renamed.iter().filter(|r| r.kind == kind && r.current != old && r.names.iter().any(|n| n == old)).collect();
        candidates
            .iter()
            .find(|r| r.namespace == namespace)
            .or(if candidates.len() == 1 { candidates.first() } else { None })
            .map(|r| r.current.clone())
    };
    for object in objects.iter_mut() {
        let namespace = object.namespace().to_owned();
        let kind = object.kind().to_owned();
        for spec in pod_specs(&kind) {
            let Some(spec) = tree::walk_mut(&mut object.node, spec, false) else { continue };
            for (target, path) in POD_REFERENCES {
                each_at(spec, path, &mut |node| {
                    if let Some(name) = node.as_str().and_then(|old| new_name(target, &namespace, old)) {
                        node.value = Value::Str(name);
                    }
                });
            }
        }
        let service_refs: &[&[&str]] = match kind.as_str() {
            "StatefulSet" => &[&["spec", "serviceName"]],
            "Ingress" => &[
                &["spec", "defaultBackend", "service", "name"],
                &["spec", "rules", "*", "http", "paths", "*", "backend", "service", "name"],
            ],
            _ => &[],
        };
        for path in service_refs {
            each_at(&mut object.node, path, &mut |node| {
                if let Some(name) = node.as_str().and_then(|old| new_name("Service", &namespace, old)) {
                    node.value = Value::Str(name);
                }
            });
        }
    }
}

/// Calls `f` on every node along `path`, where `*` is every item of a list.
fn each_at(node: &mut Node, path: &[&str], f: &mut dyn FnMut(&mut Node)) {
    let Some((first, rest)) = path.split_first() else {
        f(node);
        return;
    };
    if *first == "*" {
        if let Value::Seq(items) = &mut node.value {
            for item in items {
                each_at(item, rest, f);
            }
        }
    } else if let Some(next) = tree::get_mut(node, first) {
        each_at(next, rest, f);
    }
}

/// Kustomize's field paths for replacements: `spec.template.spec.containers.[name=web].image`,
/// with `[key=value]` choosing list items, a number choosing one by index and `*` all.
mod field_path {
    use super::tree;
    use crate::manifest::yaml::{Node, Value};

    fn segments(path: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut current = String::new();
        let mut depth = 0;
        for c in path.chars() {
            match c {
                '[' => {
                    depth += 1;
                    current.push(c)
                }
                ']' => {
                    depth -= 1;
                    current.push(c)
                }
                '.' if depth == 0 => out.push(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        out.push(current);
        out.into_iter().filter(|s| !s.is_empty()).collect()
    }

    fn matches_item(segment: &str, index: usize, item: &Node) -> bool {
        if segment == "*" {
            return true;
        }
        if let Some(inner) = segment.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            return match inner.split_once('=') {
                Some((key, value)) => item.get(key).and_then(tree::scalar_text).as_deref() == Some(value),
                None => false,
            };
        }
        segment.parse::<usize>() == Ok(index)
    }

    pub fn find<'a>(node: &'a Node, path: &str) -> Result<Vec<&'a Node>, String> {
        let mut nodes = vec![node];
        for segment in segments(path) {
            let mut next = Vec::new();
            for node in nodes {
                match &node.value {
                    Value::Seq(items) => next.extend(
                        items
                            .iter()
                            .enumerate()
                            .filter(|(i, item)| matches_item(&segment, *i, item))
                            .map(|(_, item)| item),
                    ),
                    Value::Map(_) => next.extend(node.get(&segment)),
                    _ => {}
                }
            }
            nodes = next;
        }
        Ok(nodes)
    }

    pub fn replace(
        node: &mut Node,
        path: &str,
        value: &Node,
        create: bool,
        delimiter: Option<(&str, usize)>,
    ) -> Result<(), String> {
        let segments = segments(path);
        set(node, &segments, value, create, delimiter, path)
    }

    fn set(
        node: &mut Node,
        segments: &[String],
        value: &Node,
        create: bool,
        delimiter: Option<(&str, usize)>,
        path: &str,
    ) -> Result<(), String> {
        let Some((first, rest)) = segments.split_first() else {
            let pos = node.pos;
            let mut new = value.clone();
            if let Some((delimiter, index)) = delimiter {
                let old = tree::scalar_text(node).unwrap_or_default();
                let mut parts: Vec<String> = old.split(delimiter).map(str::to_owned).collect();
                let part = tree::scalar_text(value).unwrap_or_default();
                match parts.get_mut(index) {
                    Some(slot) => *slot = part,
                    None => parts.push(part),
                }
                new = tree::string(pos, &parts.join(delimiter));
            }
            // A whole value keeps the place it was copied from: its source object's file.
            *node = new;
            return Ok(());
        };
        match &mut node.value {
            Value::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if matches_item(first, i, item) {
                        set(item, rest, value, create, delimiter, path)?;
                    }
                }
                Ok(())
            }
            Value::Map(_) => {
                if node.get(first).is_none() {
                    if !create {
                        return Ok(());
                    }
                    let pos = node.pos;
                    tree::set(node, first, tree::map(pos));
                }
                let next = tree::get_mut(node, first).ok_or(format!("`{path}` cannot be set"))?;
                set(next, rest, value, create, delimiter, path)
            }
            Value::Null if create => {
                node.value = Value::Map(Vec::new());
                set(node, segments, value, create, delimiter, path)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_matches_kustomize() {
        // kustomize's own test (api/krusty/disablenamesuffix_test.go): a Secret generated from
        // DB_USERNAME=admin and DB_PASSWORD=somepw is `yeshash-82c2g5f8f6`.
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: yeshash}\ntype: Opaque\ndata: {DB_PASSWORD: c29tZXB3, DB_USERNAME: YWRtaW4=}\n";
        let node = yaml::parse(text).unwrap().remove(0).root.unwrap();
        assert_eq!(content_hash(&node), "82c2g5f8f6");
        // The same test's ConfigMap from the same literals: `foo-literalConfigMap-bar-g5f6t456f5`.
        let text =
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {DB_USERNAME: admin, DB_PASSWORD: somepw}\n";
        let node = yaml::parse(text).unwrap().remove(0).root.unwrap();
        assert_eq!(content_hash(&node), "g5f6t456f5");
    }

    #[test]
    fn images_split_into_repository_tag_and_digest() {
        assert_eq!(split_image("nginx"), ("nginx", None, None));
        assert_eq!(split_image("nginx:1.25"), ("nginx", Some("1.25"), None));
        assert_eq!(split_image("reg:5000/a/b:1@sha256:x"), ("reg:5000/a/b", Some("1"), Some("sha256:x")));
        assert_eq!(split_image("reg:5000/a/b"), ("reg:5000/a/b", None, None));
    }

    #[test]
    fn paths_stay_inside_the_repository() {
        assert_eq!(normalize("overlays/prod/../../base").as_deref(), Some("base"));
        assert_eq!(normalize("a/../../b"), None);
    }
}
