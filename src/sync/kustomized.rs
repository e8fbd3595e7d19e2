//! Kustomization folders in a scan: found, rendered by [`crate::kustomize`], parsed like
//! files, and reused while every file a render read is unchanged (by blob id, so an unrelated
//! change elsewhere in the commit renders nothing again).
//!
//! A folder holding a kustomization is one unit: the files under it are not read again as plain
//! manifests. A unit that another unit of the same scan uses as a base or component is not
//! deployed on its own, and a warning says so.

use crate::diag::{Diagnostic, Pos};
use crate::kustomize::{self, FILE_NAMES};
use crate::manifest::{self, ParsedFile};
use git2::{ObjectType, Oid, Repository};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The files a render reads, with the id that tells whether a file changed.
pub(super) trait Source: kustomize::Files {
    fn id(&self, path: &str) -> Option<Oid>;
}

/// The files of one commit.
pub(super) struct TreeFiles<'r> {
    pub repo: &'r Repository,
    pub tree: git2::Tree<'r>,
}

impl TreeFiles<'_> {
    fn blob(&self, path: &str) -> Option<Oid> {
        let entry = self.tree.get_path(std::path::Path::new(path)).ok()?;
        // Symlinks are not followed by a render: a link's text is not a manifest.
        (entry.kind() == Some(ObjectType::Blob) && entry.filemode() != i32::from(git2::FileMode::Link))
            .then(|| entry.id())
    }
}

impl kustomize::Files for TreeFiles<'_> {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        Some(self.repo.find_blob(self.blob(path)?).ok()?.content().to_vec())
    }

    fn is_dir(&self, path: &str) -> bool {
        path.is_empty()
            || self.tree.get_path(std::path::Path::new(path)).is_ok_and(|e| e.kind() == Some(ObjectType::Tree))
    }
}

impl Source for TreeFiles<'_> {
    fn id(&self, path: &str) -> Option<Oid> {
        self.blob(path)
    }
}

impl Source for kustomize::DirFiles {
    fn id(&self, path: &str) -> Option<Oid> {
        let bytes = kustomize::Files::read(self, path)?;
        Oid::hash_object(ObjectType::Blob, &bytes).ok()
    }
}

/// Renders kept by unit folder.
#[derive(Default)]
pub(super) struct Renders {
    cache: HashMap<String, Render>,
    pub hits: u64,
    pub renders: u64,
}

struct Render {
    /// Every file the render read, with its id then (`None`: it did not exist).
    read: Vec<(String, Option<Oid>)>,
    parsed: Arc<ParsedFile>,
    bases: BTreeSet<String>,
}

/// What the units of one scan gave.
pub(super) struct Rendered {
    pub parsed: Vec<(String, Arc<ParsedFile>)>,
    pub diagnostics: Vec<Diagnostic>,
    /// How many files the renders read.
    pub files: usize,
}

/// The topmost folders (relative to the manifest root; empty for the root itself) that hold a
/// kustomization, among the files `paths` of a scan.
pub(super) fn units<'a>(paths: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for path in paths {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        if FILE_NAMES.contains(&name) {
            dirs.insert(dir.to_owned());
        }
    }
    let all: Vec<String> = dirs.iter().cloned().collect();
    dirs.into_iter().filter(|dir| !all.iter().any(|other| other != dir && inside(dir, other))).collect()
}

/// Whether `path` is `dir` or below it (`dir` empty: everything).
pub(super) fn inside(path: &str, dir: &str) -> bool {
    dir.is_empty() || path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

fn join(dir: &str, name: &str) -> String {
    match (dir.is_empty(), name.is_empty()) {
        (true, _) => name.to_owned(),
        (_, true) => dir.to_owned(),
        _ => format!("{dir}/{name}"),
    }
}

/// A repository path as a path relative to the manifest root (`../../base/web.yaml`).
fn relative(root: &str, path: &str) -> String {
    if inside(path, root) {
        return path.strip_prefix(root).map_or(path, |p| p.trim_start_matches('/')).to_owned();
    }
    let root_parts: Vec<&str> = root.split('/').collect();
    let path_parts: Vec<&str> = path.split('/').collect();
    let common = root_parts.iter().zip(&path_parts).take_while(|(a, b)| a == b).count();
    let mut parts = vec![".."; root_parts.len() - common];
    parts.extend(&path_parts[common..]);
    parts.join("/")
}

/// Renders every unit, reusing what is unchanged, and drops the units others use as bases.
pub(super) fn render_all(
    renders: &mut Renders,
    source: &dyn Source,
    root: &str,
    units: &[String],
    policy: &manifest::policy::Policy,
    keys: Option<&manifest::sops::Keys>,
) -> Rendered {
    let mut results = Vec::new();
    for unit in units {
        let dir = join(root, unit);
        let fresh =
            renders.cache.get(&dir).is_some_and(|render| render.read.iter().all(|(path, id)| source.id(path) == *id));
        if fresh {
            renders.hits += 1;
        } else {
            renders.renders += 1;
            let render = render_unit(source, root, &dir, policy, keys);
            renders.cache.insert(dir.clone(), render);
        }
        results.push((unit.clone(), dir));
    }
    let results: Vec<(String, String, &Render)> = results
        .into_iter()
        .filter_map(|(unit, dir)| {
            let render = renders.cache.get(&dir)?;
            Some((unit, dir, render))
        })
        .collect();
    let mut rendered = Rendered { parsed: Vec::new(), diagnostics: Vec::new(), files: 0 };
    for (unit, dir, render) in &results {
        let users: Vec<&str> = results
            .iter()
            .filter(|(_, other, r)| other != dir && r.bases.contains(dir))
            .map(|(u, _, _)| u.as_str())
            .collect();
        if let Some(user) = users.first() {
            let file = kustomize::FILE_NAMES
                .iter()
                .map(|name| join(unit, name))
                .find(|path| source.id(&join(root, path)).is_some())
                .unwrap_or_else(|| join(unit, FILE_NAMES[0]));
            rendered.diagnostics.push(
                Diagnostic::warning(
                    &file,
                    Pos::START,
                    format!("`{unit}` is a base of `{user}`, so it is not deployed on its own"),
                )
                .help(format!(
                    "point berth at one environment, the usual way: its folder `{0}`, or `--subdir {0}` with a repository URL",
                    join(root, user)
                )),
            );
            continue;
        }
        rendered.files += render.read.iter().filter(|(_, id)| id.is_some()).count();
        rendered.parsed.push((join(unit, FILE_NAMES[0]), render.parsed.clone()));
    }
    rendered
}

fn render_unit(
    source: &dyn Source,
    root: &str,
    dir: &str,
    policy: &manifest::policy::Policy,
    keys: Option<&manifest::sops::Keys>,
) -> Render {
    let output = kustomize::render_keyed(source, dir, keys);
    let read = output.read.iter().map(|path| (path.clone(), source.id(path))).collect();
    let kustomization = kustomize::find(source, dir).unwrap_or_else(|| join(dir, FILE_NAMES[0]));
    // A file of the unit is named as it is; one outside it, as reached through the unit.
    let label = |file: &str| {
        let shown = relative(root, file);
        let from_unit = file.rsplit_once('/').map_or("", |(d, _)| d) == dir;
        if from_unit { shown } else { format!("{shown} (via {})", relative(root, &kustomization)) }
    };
    // A finding about a value a patch, overlay or generator put in names the file it came from.
    let place = |mut diagnostic: Diagnostic| {
        if let Some(origin) = output.origin(diagnostic.origin) {
            diagnostic.file = label(origin);
        }
        diagnostic.origin = 0;
        diagnostic
    };
    let mut parsed = ParsedFile::default();
    for diagnostic in &output.diagnostics {
        let mut diagnostic = diagnostic.clone();
        diagnostic.file = relative(root, output.origin(diagnostic.origin).unwrap_or(&diagnostic.file));
        diagnostic.origin = 0;
        parsed.diagnostics.push(diagnostic);
    }
    let parse = |object: &kustomize::Object| {
        let mut one = ParsedFile::default();
        manifest::parse_node(&label(&object.file), &object.node, policy, &mut one);
        one
    };
    for one in crate::parallel::map(output.objects.iter().collect(), parse) {
        parsed.resources.extend(one.resources);
        parsed.diagnostics.extend(one.diagnostics.into_iter().map(place));
        parsed.secrets.extend(one.secrets);
        parsed.unloaded_templates.extend(one.unloaded_templates);
    }
    Render { read, parsed: Arc::new(parsed), bases: output.bases }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_the_topmost_kustomization_folders() {
        let paths = [
            "base/kustomization.yaml",
            "base/web.yaml",
            "overlays/prod/kustomization.yml",
            "overlays/prod/sub/Kustomization",
            "plain.yaml",
        ];
        assert_eq!(units(paths.into_iter()), ["base", "overlays/prod"]);
        assert_eq!(units(["kustomization.yaml", "base/kustomization.yaml"].into_iter()), [""]);
    }

    #[test]
    fn paths_are_told_relative_to_the_root() {
        assert_eq!(relative("", "base/web.yaml"), "base/web.yaml");
        assert_eq!(relative("overlays/prod", "overlays/prod/patch.yaml"), "patch.yaml");
        assert_eq!(relative("overlays/prod", "base/web.yaml"), "../../base/web.yaml");
        assert_eq!(relative("apps/overlays/prod", "apps/base/web.yaml"), "../../base/web.yaml");
    }
}
