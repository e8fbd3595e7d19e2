//! Manifests: from the bytes of one file to validated, defaulted objects.
//!
//! [`parse_file`] reads every document of a file into typed objects, applies Kubernetes defaults,
//! runs the checks that need only one object, and computes each object's canonical form and hash
//! (what plans compare). [`validate::across`] runs the checks that need all objects of a commit.
//! Pure: no I/O, no clock; the same bytes give the same result, which is why results can be
//! cached by Git blob id.

pub mod de;
pub mod defaults;
pub mod downward;
pub mod kinds;
pub mod kubernetes;
pub mod policy;
pub mod quantity;
pub mod schedule;
pub mod schema;
pub mod sops;
pub mod tiers;
pub mod types;
pub mod validate;
pub mod yaml;

use crate::diag::{Diagnostic, Pos};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use types::*;

/// The kinds berth runs, in the order they are applied (what others depend on first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Namespace,
    ConfigMap,
    Secret,
    Service,
    Pod,
    ReplicationController,
    ReplicaSet,
    Deployment,
    DaemonSet,
    StatefulSet,
    Job,
    CronJob,
    PersistentVolumeClaim,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::Namespace,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Service,
        Kind::Pod,
        Kind::ReplicationController,
        Kind::ReplicaSet,
        Kind::Deployment,
        Kind::DaemonSet,
        Kind::StatefulSet,
        Kind::Job,
        Kind::CronJob,
        Kind::PersistentVolumeClaim,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::Service => "Service",
            Kind::Pod => "Pod",
            Kind::ReplicationController => "ReplicationController",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Deployment => "Deployment",
            Kind::DaemonSet => "DaemonSet",
            Kind::StatefulSet => "StatefulSet",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Parses `deployment`, `deployments`, `Deployment` or a kubectl short name like `deploy`.
    pub fn from_cli(text: &str) -> Option<Kind> {
        let lower = text.to_ascii_lowercase();
        let short = match lower.as_str() {
            "ns" => Some(Kind::Namespace),
            "cm" => Some(Kind::ConfigMap),
            "svc" => Some(Kind::Service),
            "po" => Some(Kind::Pod),
            "rc" => Some(Kind::ReplicationController),
            "rs" => Some(Kind::ReplicaSet),
            "deploy" => Some(Kind::Deployment),
            "ds" => Some(Kind::DaemonSet),
            "cj" => Some(Kind::CronJob),
            "sts" => Some(Kind::StatefulSet),
            "pvc" | "pvcs" => Some(Kind::PersistentVolumeClaim),
            _ => None,
        };
        short.or_else(|| {
            Kind::ALL.into_iter().find(|kind| {
                let name = kind.name().to_ascii_lowercase();
                lower == name || lower == format!("{name}s")
            })
        })
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::ReplicaSet | Kind::Deployment | Kind::DaemonSet | Kind::StatefulSet => "apps/v1",
            Kind::Job | Kind::CronJob => "batch/v1",
            _ => "v1",
        }
    }

    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// Kinds that run pods from a template.
    pub fn is_workload(self) -> bool {
        matches!(
            self,
            Kind::Pod
                | Kind::ReplicationController
                | Kind::ReplicaSet
                | Kind::Deployment
                | Kind::DaemonSet
                | Kind::StatefulSet
                | Kind::Job
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a file that holds no Kubernetes object is told.
const NOT_A_MANIFEST: &str = "not a Kubernetes manifest (no kind)";

/// Identity of an object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// `shop/web`, or `shop` for a cluster-scoped object.
    pub fn qualified_name(&self) -> String {
        if self.namespace.is_empty() { self.name.clone() } else { format!("{}/{}", self.namespace, self.name) }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.qualified_name())
    }
}

/// A typed object of one of the kinds berth runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    Namespace(Namespace),
    ConfigMap(ConfigMap),
    Secret(Secret),
    Service(Service),
    Pod(Pod),
    ReplicationController(ReplicationController),
    ReplicaSet(ReplicaSet),
    Deployment(Deployment),
    DaemonSet(DaemonSet),
    StatefulSet(StatefulSet),
    Job(Job),
    CronJob(CronJob),
    PersistentVolumeClaim(PersistentVolumeClaim),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Secret(_) => Kind::Secret,
            Object::Service(_) => Kind::Service,
            Object::Pod(_) => Kind::Pod,
            Object::ReplicationController(_) => Kind::ReplicationController,
            Object::ReplicaSet(_) => Kind::ReplicaSet,
            Object::Deployment(_) => Kind::Deployment,
            Object::DaemonSet(_) => Kind::DaemonSet,
            Object::StatefulSet(_) => Kind::StatefulSet,
            Object::Job(_) => Kind::Job,
            Object::CronJob(_) => Kind::CronJob,
            Object::PersistentVolumeClaim(_) => Kind::PersistentVolumeClaim,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::ReplicationController(o) => &o.metadata,
            Object::ReplicaSet(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::DaemonSet(o) => &o.metadata,
            Object::StatefulSet(o) => &o.metadata,
            Object::Job(o) => &o.metadata,
            Object::CronJob(o) => &o.metadata,
            Object::PersistentVolumeClaim(o) => &o.metadata,
        }
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Namespace(o) => &mut o.metadata,
            Object::ConfigMap(o) => &mut o.metadata,
            Object::Secret(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::ReplicationController(o) => &mut o.metadata,
            Object::ReplicaSet(o) => &mut o.metadata,
            Object::Deployment(o) => &mut o.metadata,
            Object::DaemonSet(o) => &mut o.metadata,
            Object::StatefulSet(o) => &mut o.metadata,
            Object::Job(o) => &mut o.metadata,
            Object::CronJob(o) => &mut o.metadata,
            Object::PersistentVolumeClaim(o) => &mut o.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let metadata = self.metadata();
        ObjectKey {
            kind: self.kind(),
            namespace: metadata.namespace.clone().unwrap_or_default(),
            name: metadata.name.clone(),
        }
    }

    /// The pod template of a workload with replicas.
    pub fn template(&self) -> Option<&PodTemplateSpec> {
        match self {
            Object::ReplicationController(o) => Some(&o.spec.template),
            Object::ReplicaSet(o) => Some(&o.spec.template),
            Object::Deployment(o) => Some(&o.spec.template),
            Object::DaemonSet(o) => Some(&o.spec.template),
            Object::StatefulSet(o) => Some(&o.spec.template),
            Object::Job(o) => Some(&o.spec.template),
            Object::CronJob(o) => Some(&o.spec.job_template.spec.template),
            _ => None,
        }
    }

    /// The pod spec this object runs: a Pod's own, or a workload's template's.
    pub fn pod_spec(&self) -> Option<&PodSpec> {
        match self {
            Object::Pod(o) => Some(&o.spec),
            _ => self.template().map(|t| &t.spec),
        }
    }

    /// Labels of the pods this object runs.
    /// The annotations of the pods it runs.
    pub fn pod_annotations(&self) -> Option<&std::collections::BTreeMap<String, String>> {
        match self {
            Object::Pod(o) => Some(&o.metadata.annotations),
            _ => self.template().map(|t| &t.metadata.annotations),
        }
    }

    pub fn pod_labels(&self) -> Option<&Labels> {
        match self {
            Object::Pod(o) => Some(&o.metadata.labels),
            _ => self.template().map(|t| &t.metadata.labels),
        }
    }

    /// Desired replicas of a workload; `None` for DaemonSets (one per matching node) and
    /// objects that run no pods. A Pod is one replica.
    pub fn replicas(&self) -> Option<i32> {
        match self {
            Object::Pod(_) => Some(1),
            Object::ReplicationController(o) => o.spec.replicas,
            Object::ReplicaSet(o) => o.spec.replicas,
            Object::Deployment(o) => o.spec.replicas,
            Object::StatefulSet(o) => o.spec.replicas,
            _ => None,
        }
    }

    /// Reads an object back from its canonical form, as a store keeps it.
    pub fn from_canonical(kind: Kind, value: serde_json::Value) -> Result<Object, serde_json::Error> {
        Ok(match kind {
            Kind::Namespace => Object::Namespace(serde_json::from_value(value)?),
            Kind::ConfigMap => Object::ConfigMap(serde_json::from_value(value)?),
            Kind::Secret => Object::Secret(serde_json::from_value(value)?),
            Kind::Service => Object::Service(serde_json::from_value(value)?),
            Kind::Pod => Object::Pod(serde_json::from_value(value)?),
            Kind::ReplicationController => Object::ReplicationController(serde_json::from_value(value)?),
            Kind::ReplicaSet => Object::ReplicaSet(serde_json::from_value(value)?),
            Kind::Deployment => Object::Deployment(serde_json::from_value(value)?),
            Kind::DaemonSet => Object::DaemonSet(serde_json::from_value(value)?),
            Kind::StatefulSet => Object::StatefulSet(serde_json::from_value(value)?),
            Kind::Job => Object::Job(serde_json::from_value(value)?),
            Kind::CronJob => Object::CronJob(serde_json::from_value(value)?),
            Kind::PersistentVolumeClaim => Object::PersistentVolumeClaim(serde_json::from_value(value)?),
        })
    }
}

/// The fields of a Job's spec that change how its run goes, not what it runs.
pub const JOB_RUN_FIELDS: &[&str] =
    &["parallelism", "suspend", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit"];

/// What a secret value is replaced with wherever an object is shown or stored for comparison.
pub const SENSITIVE: &str = "(sensitive)";

/// One object as a commit (or a store) declares it, with what plans compare.
///
/// `repr(C)` keeps the fields that every pass over a commit reads (key, hash, file, references)
/// together at the front, ahead of the large object: with ten thousand objects, the checks
/// across objects and the planner are bound by cache misses, not by arithmetic.
#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct Resource {
    pub key: ObjectKey,
    /// Path of the file, relative to the manifest root, and the position of the object in it.
    pub file: String,
    pub pos: Pos,
    /// SHA-256 over the canonical form and every secret value digest.
    pub hash: String,
    /// A Secret's keys with a digest of each value, so that a plan can say which values changed
    /// without holding them. Never shown.
    pub sensitive_digests: BTreeMap<String, String>,
    /// ConfigMaps and Secrets this object refers to, for the checks across objects.
    pub references: Vec<validate::Reference>,
    /// The object with Kubernetes defaults applied. A Secret's values are redacted here.
    pub object: Object,
    /// The canonical JSON of `object`, compact: what a plan diffs and the store keeps. Kept as
    /// text, a third of the size of a parsed value; [`Resource::canonical_value`] parses it.
    pub canonical: Box<str>,
    /// A short, stable hash of what a pod of this object runs: a Pod's spec, or a workload's
    /// pod template with its labels and annotations. A change to it means new pods.
    pub template_hash: Box<str>,
    /// A ConfigMap's keys with a digest of each value; empty for other kinds. Last: only the
    /// controller and the planner's config comparison read it.
    pub config_digests: Option<Box<BTreeMap<String, String>>>,
    /// Where fields the checks across objects point at are written (a Service's
    /// `spec.selector`, its ports' `targetPort`); empty for a resource read from the store.
    pub anchors: Box<[(Box<str>, Pos)]>,
    /// What its pods read from ConfigMaps and Secrets; empty for kinds without pods.
    pub config_reads: Box<[ConfigRead]>,
    /// Whether a change of those values rolls it ([`RESTART_ON_CONFIG_CHANGE`]).
    restarts_on_config_change: bool,
}

/// The decoded values of one Secret. It is deliberately hard to leak: `Debug` shows only the
/// keys, and there is no `Display` and no `Serialize`. Only the controller reads the values,
/// to hand them to the agents of the pods that use them.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretData(BTreeMap<String, Vec<u8>>);

impl SecretData {
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0.get(key).map(Vec::as_slice)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretData").field("keys", &self.0.keys().collect::<Vec<_>>()).finish()
    }
}

/// The annotation that, set to `"false"`, keeps an object running after it leaves Git.
pub const PRUNE_ANNOTATION: &str = "berth.dev/prune";

/// The annotations that make a Job a sync hook: berth's, and Argo CD's read the same way.
pub const HOOK_ANNOTATIONS: [&str; 2] = ["berth.dev/hook", "argocd.argoproj.io/hook"];

/// When a hook Job runs in a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// To completion before anything else of its commit is applied.
    PreSync,
    /// Once the rest of its commit is healthy.
    PostSync,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::PreSync => "PreSync",
            Hook::PostSync => "PostSync",
        }
    }
}

/// The hooks an annotation value names (`PreSync`, `PreSync,PostSync`), and the words it holds
/// that berth does not run as hooks (`Sync` runs as any Job; `SyncFail`, `PostDelete`, `Skip`).
pub fn parse_hooks(value: &str) -> (Vec<Hook>, Vec<&str>) {
    let mut hooks = Vec::new();
    let mut other = Vec::new();
    for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "PreSync" => hooks.push(Hook::PreSync),
            "PostSync" => hooks.push(Hook::PostSync),
            "Sync" => {}
            other_word => other.push(other_word),
        }
    }
    (hooks, other)
}

/// The annotation that makes a hook Job run at every commit applied (`every-sync`), not only
/// at those that change it (`on-change`, the default).
pub const HOOK_POLICY_ANNOTATION: &str = "berth.dev/hook-policy";

impl Resource {
    /// Whether this is a hook Job that runs at every commit applied.
    pub fn runs_every_sync(&self) -> bool {
        (self.is_hook(Hook::PreSync) || self.is_hook(Hook::PostSync))
            && self.object.metadata().annotations.get(HOOK_POLICY_ANNOTATION).is_some_and(|v| v == "every-sync")
    }

    /// Whether this object is a `hook` Job of its commit.
    pub fn is_hook(&self, hook: Hook) -> bool {
        self.key.kind == Kind::Job
            && HOOK_ANNOTATIONS
                .iter()
                .filter_map(|a| self.object.metadata().annotations.get(*a))
                .any(|value| parse_hooks(value).0.contains(&hook))
    }

    /// Where `field` is written, for a finding about it: its anchor, else the object.
    pub fn pos_of(&self, field: &str) -> Pos {
        self.anchors.iter().find(|(f, _)| &**f == field).map_or(self.pos, |(_, pos)| *pos)
    }

    /// Whether the object stays when a commit no longer declares it.
    pub fn is_kept(&self) -> bool {
        self.object.metadata().annotations.get(PRUNE_ANNOTATION).is_some_and(|v| v == "false")
    }

    /// The canonical JSON as a value, for diffs.
    pub fn canonical_value(&self) -> serde_json::Value {
        // The canonical text is this serialization of `object`; building the value from the
        // typed object is faster than parsing the text again.
        serde_json::to_value(&self.object).unwrap_or(serde_json::Value::Null)
    }

    /// Builds the comparable form of a defaulted object; secret values are digested and dropped.
    pub fn new(file: &str, pos: Pos, object: Object, references: Vec<validate::Reference>) -> Resource {
        Self::split_secret(file, pos, object, references).0
    }

    /// Like [`Resource::new`], and also hands back a Secret's decoded values, apart from the
    /// resource, for the controller.
    pub fn split_secret(
        file: &str,
        pos: Pos,
        mut object: Object,
        references: Vec<validate::Reference>,
    ) -> (Resource, Option<SecretData>) {
        let mut sensitive_digests = BTreeMap::new();
        let mut values = None;
        if let Object::Secret(secret) = &mut object {
            let mut decoded = BTreeMap::new();
            for (key, value) in std::mem::take(&mut secret.data) {
                let bytes = validate::decode_base64(&value).unwrap_or_else(|| value.into_bytes());
                decoded.insert(key, bytes);
            }
            // As in Kubernetes, stringData wins over data for the same key.
            for (key, value) in std::mem::take(&mut secret.string_data) {
                decoded.insert(key, value.into_bytes());
            }
            for (key, bytes) in &decoded {
                sensitive_digests.insert(key.clone(), hex_digest(bytes));
            }
            secret.data = sensitive_digests.keys().map(|k| (k.clone(), SENSITIVE.to_owned())).collect();
            values = Some(SecretData(decoded));
        }
        (Self::from_parts(file, pos, object, sensitive_digests, references), values)
    }

    /// Rebuilds a resource from stored parts (canonical object and secret digests).
    pub fn from_parts(
        file: &str,
        pos: Pos,
        object: Object,
        sensitive_digests: BTreeMap<String, String>,
        references: Vec<validate::Reference>,
    ) -> Resource {
        // Serializing plain data types into a JSON value cannot fail: no maps with non-string
        // keys, no non-finite floats.
        let value = serde_json::to_value(&object).unwrap_or(serde_json::Value::Null);
        // What replaces a workload's pods when it changes. A Job runs again when its template or
        // what it must complete changes, not when only how it runs does (parallelism, suspend,
        // deadlines, backoffLimit, TTL): those apply to the run under way.
        let job_spec = (object.kind() == Kind::Job).then(|| {
            let mut spec = value.get("spec").cloned().unwrap_or_default();
            if let Some(spec) = spec.as_object_mut() {
                for field in JOB_RUN_FIELDS {
                    spec.remove(*field);
                }
            }
            spec
        });
        let template = match object.kind() {
            Kind::Pod => value.get("spec"),
            Kind::Job => job_spec.as_ref(),
            _ => value.pointer("/spec/template"),
        };
        let template_hash =
            hex_digest(template.unwrap_or(&serde_json::Value::Null).to_string().as_bytes())[..10].into();
        let canonical = value.to_string().into_boxed_str();
        let mut hasher = Sha256::new();
        hasher.update(canonical.as_bytes());
        for (key, digest) in &sensitive_digests {
            hasher.update(key.as_bytes());
            hasher.update([0]);
            hasher.update(digest.as_bytes());
        }
        let hash = hex(&hasher.finalize());
        // A ConfigMap's values by digest, computed once: every controller pass compares what
        // each workload reads.
        let config_digests = match &object {
            Object::ConfigMap(config_map) => Some(Box::new(
                config_map
                    .data
                    .iter()
                    .chain(&config_map.binary_data)
                    .map(|(key, value)| (key.clone(), hex_digest(value.as_bytes())))
                    .collect(),
            )),
            _ => None,
        };
        Resource {
            key: object.key(),
            file: file.to_owned(),
            pos,
            canonical,
            template_hash,
            hash,
            sensitive_digests,
            config_digests,
            references,
            anchors: Box::default(),
            config_reads: config_reads(&object),
            restarts_on_config_change: object
                .metadata()
                .annotations
                .get(RESTART_ON_CONFIG_CHANGE)
                .is_none_or(|v| v != "false"),
            object,
        }
    }
}

pub fn hex_digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// What one file holds: its objects (only those without errors) and every finding.
#[derive(Debug, Clone, Default)]
pub struct ParsedFile {
    pub resources: Vec<Arc<Resource>>,
    pub diagnostics: Vec<Diagnostic>,
    /// The values of the file's Secrets, by object.
    pub secrets: Vec<(ObjectKey, Arc<SecretData>)>,
    /// The pod template labels of the workloads that did not load, by namespace.
    pub unloaded_templates: Vec<(String, types::Labels)>,
    /// The size of the file's text.
    pub bytes: usize,
    /// The values that were encrypted in Git, for the loader to check against `berth.yaml`.
    pub encrypted: Vec<EncryptedField>,
}

/// A value of a manifest that was SOPS-encrypted: which kind of object, its key path
/// (`stringData.password`), and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedField {
    pub file: String,
    pub pos: Pos,
    pub kind: String,
    pub path: String,
}

impl EncryptedField {
    /// Whether this value may be encrypted: a Secret's `data` and `stringData`, and the fields
    /// `berth.yaml` allows (`secrets.encryptedFields`, as `KIND.FIELD`).
    pub fn allowed(&self, also: &[String]) -> bool {
        sops::may_be_encrypted(&self.kind, &self.path, also)
    }
}

/// Parses, defaults and validates every document of one file, under the default host-access
/// policy.
pub fn parse_file(file: &str, text: &str) -> ParsedFile {
    parse_file_with(file, text, &policy::Policy::default())
}

/// [`parse_file`] under the operator's host-access `policy`.
pub fn parse_file_with(file: &str, text: &str, policy: &policy::Policy) -> ParsedFile {
    parse_file_keyed(file, text, policy, None)
}

/// [`parse_file_with`], decrypting SOPS documents with `keys`. A document that does not
/// decrypt is an error of the file, and nothing of it is read.
pub fn parse_file_keyed(file: &str, text: &str, policy: &policy::Policy, keys: Option<&sops::Keys>) -> ParsedFile {
    let mut parsed = ParsedFile { bytes: text.len(), ..ParsedFile::default() };
    let documents = match yaml::parse(text) {
        Ok(documents) => documents,
        Err(error) => {
            let mut diagnostic = Diagnostic::error(file, error.pos, error.message);
            if let Some(help) = error.help {
                diagnostic = diagnostic.help(help);
            }
            parsed.diagnostics.push(diagnostic);
            return helm_template(file, text, parsed);
        }
    };
    for document in documents {
        let Some(mut root) = document.root else { continue };
        if root.value == yaml::Value::Null {
            continue;
        }
        if sops::is_encrypted(&root) {
            match decrypt_document(file, &mut root, keys) {
                Ok(fields) => parsed.encrypted.extend(fields),
                Err(diagnostic) => {
                    parsed.diagnostics.push(*diagnostic);
                    continue;
                }
            }
        }
        parse_document(file, &root, policy, &mut parsed);
    }
    helm_template(file, text, parsed)
}

/// Decrypts a SOPS document in place; what was encrypted is checked by the loader against
/// `berth.yaml` (a Secret's `data` and `stringData` always may be).
fn decrypt_document(
    file: &str,
    root: &mut yaml::Node,
    keys: Option<&sops::Keys>,
) -> Result<Vec<EncryptedField>, Box<Diagnostic>> {
    let decrypted = sops::decrypt(root, keys).map_err(|error| {
        let mut diagnostic = Diagnostic::error(file, error.pos, format!("cannot decrypt {file}: {}", error.message));
        if let Some(help) = error.help {
            diagnostic = diagnostic.help(help);
        }
        Box::new(diagnostic)
    })?;
    let kind = root.get("kind").and_then(yaml::Node::as_str).unwrap_or_default().to_owned();
    Ok(decrypted
        .paths
        .into_iter()
        .map(|path| {
            let segments: Vec<&str> = path.split('.').collect();
            EncryptedField { file: file.to_owned(), pos: root.locate(&segments), kind: kind.clone(), path }
        })
        .collect())
}

/// Parses, defaults and validates one object given as a tree (a rendered kustomization's),
/// reported as coming from `file`.
pub fn parse_node(file: &str, root: &yaml::Node, policy: &policy::Policy, parsed: &mut ParsedFile) {
    parse_document(file, root, policy, parsed);
}

/// A Helm template reads as broken YAML or as no manifest; say what it is, once.
fn helm_template(file: &str, text: &str, parsed: ParsedFile) -> ParsedFile {
    // Errors of the YAML layer and of a document's shape name no object.
    let unreadable = parsed.diagnostics.iter().any(|d| d.is_error() && d.object.is_none());
    if !(unreadable && text.contains("{{") && text.contains("}}")) {
        return parsed;
    }
    let at = Pos::START;
    ParsedFile {
        bytes: parsed.bytes,
        diagnostics: vec![
            Diagnostic::error(file, at, "Helm templates are not rendered by berth")
                .help("render them in CI into the watched path (`helm template RELEASE CHART --output-dir DIR`), or exclude this file in berth.yaml"),
        ],
        ..ParsedFile::default()
    }
}

/// A `kind: List` (`apiVersion: v1`): each of its `items` is read as a document of its own.
fn parse_list(file: &str, root: &yaml::Node, policy: &policy::Policy, parsed: &mut ParsedFile) {
    if let Some(version) = root.get("apiVersion").filter(|v| v.as_str() != Some("v1")) {
        parsed.diagnostics.push(
            Diagnostic::error(
                file,
                version.pos,
                format!("List is not served as `{}`", version.as_str().unwrap_or("?")),
            )
            .field("apiVersion")
            .help("write `apiVersion: v1`"),
        );
        return;
    }
    match root.get("items").map(|items| &items.value) {
        Some(yaml::Value::Seq(items)) => {
            for item in items {
                parse_document(file, item, policy, parsed);
            }
        }
        None | Some(yaml::Value::Null) => {}
        Some(other) => parsed.diagnostics.push(
            Diagnostic::error(
                file,
                root.get("items").map_or(root.pos, |n| n.pos),
                format!("items must be a list, found {}", other.describe()),
            )
            .field("items"),
        ),
    }
}

fn parse_document(file: &str, root: &yaml::Node, policy: &policy::Policy, parsed: &mut ParsedFile) {
    if !matches!(root.value, yaml::Value::Map(_)) {
        parsed.diagnostics.push(
            Diagnostic::error(file, root.pos, format!("a manifest must be a mapping, found {}", root.value.describe()))
                .help("start each document with apiVersion, kind and metadata"),
        );
        return;
    }
    let Some(kind_node) = root.get("kind") else {
        let diagnostic = if root.get("apiVersion").is_none() {
            // A Helm Chart.yaml or values.yaml, an application's own configuration.
            Diagnostic::error(file, root.pos, NOT_A_MANIFEST)
                .help(format!("exclude it in berth.yaml: `exclude: [\"{file}\"]`"))
        } else {
            Diagnostic::error(file, root.pos, "missing field `kind`")
                .help("say which kind of object this is, such as `kind: Deployment`")
        };
        parsed.diagnostics.push(diagnostic);
        return;
    };
    let kind_text = kind_node.as_str().unwrap_or_default();
    if kind_text == "List" {
        // What `kubectl get -o yaml` prints: the objects are its items.
        return parse_list(file, root, policy, parsed);
    }
    let api_version = root.get("apiVersion").and_then(yaml::Node::as_str).unwrap_or_default();
    if let Some(instead) = kinds::removed(api_version, kind_text) {
        let at = root.get("apiVersion").map_or(root.pos, |n| n.pos);
        parsed.diagnostics.push(
            Diagnostic::error(file, at, format!("{kind_text} is no longer served as `{api_version}`"))
                .field("apiVersion")
                .help(format!("write {instead}")),
        );
        return;
    }
    let Some(kind) = Kind::from_name(kind_text) else {
        let supported: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        let diagnostic = match kinds::tier(kind_text) {
            _ if !api_version.is_empty() && kinds::is_custom(api_version) => Diagnostic::warning(
                file,
                kind_node.pos,
                format!(
                    "{}{kind_text} ({api_version}) is skipped: berth has no controller for it",
                    kinds::CUSTOM_PREFIX
                ),
            )
            .field("kind")
            .help("set `customResources: error` in berth.yaml to refuse custom resources"),
            Some(kinds::Tier::Accepted(instead)) => Diagnostic::warning(
                file,
                kind_node.pos,
                format!("{}{kind_text}{}", kinds::ACCEPTED_PREFIX, kinds::ACCEPTED_SUFFIX),
            )
            .field("kind")
            .help(instead),
            Some(kinds::Tier::NotYet) => {
                Diagnostic::error(file, kind_node.pos, format!("kind `{kind_text}` is not supported by berth yet"))
                    .field("kind")
                    .help(format!(
                        "berth runs {}; to deploy the rest of the repository, exclude this object's file in berth.yaml: `exclude: [\"{file}\"]`",
                        supported.join(", ")
                    ))
            }
            None => {
                let error = Diagnostic::error(file, kind_node.pos, format!("unknown kind `{kind_text}`")).field("kind");
                match crate::diag::suggest(kind_text, kinds::all_names()) {
                    Some(close) => error.help(format!("did you mean `{close}`?")),
                    None => error.help(format!("berth runs {}", supported.join(", "))),
                }
            }
        };
        parsed.diagnostics.push(diagnostic);
        return;
    };
    let name = root.get("metadata").and_then(|m| m.get("name")).and_then(yaml::Node::as_str).unwrap_or("<unnamed>");
    let namespace =
        root.get("metadata").and_then(|m| m.get("namespace")).and_then(yaml::Node::as_str).unwrap_or("default");
    let label = if kind.namespaced() { format!("{kind} {namespace}/{name}") } else { format!("{kind} {name}") };

    let mut findings = Vec::new();
    match root.get("apiVersion") {
        None => findings.push(
            Diagnostic::error(file, root.pos, "missing field `apiVersion`")
                .object(&label)
                .help(format!("{kind} is served as `apiVersion: {}`", kind.api_version())),
        ),
        Some(node) if node.as_str() != Some(kind.api_version()) => findings.push(
            Diagnostic::error(file, node.pos, format!("{kind} is not served as `{}`", node.as_str().unwrap_or("?")))
                .object(&label)
                .field("apiVersion")
                .help(format!("write `apiVersion: {}`", kind.api_version())),
        ),
        Some(_) => {}
    }

    let mut context = de::Context::new(file, &label);
    if kind == Kind::Secret {
        context.hidden = &["data", "stringData"];
    }
    let object = match kind {
        Kind::Namespace => de::from_node(root, &context).map(Object::Namespace),
        Kind::ConfigMap => de::from_node(root, &context).map(Object::ConfigMap),
        Kind::Secret => de::from_node(root, &context).map(Object::Secret),
        Kind::Service => de::from_node(root, &context).map(Object::Service),
        Kind::Pod => de::from_node(root, &context).map(Object::Pod),
        Kind::ReplicationController => de::from_node(root, &context).map(Object::ReplicationController),
        Kind::ReplicaSet => de::from_node(root, &context).map(Object::ReplicaSet),
        Kind::Deployment => de::from_node(root, &context).map(Object::Deployment),
        Kind::DaemonSet => de::from_node(root, &context).map(Object::DaemonSet),
        Kind::Job => de::from_node(root, &context).map(Object::Job),
        Kind::CronJob => de::from_node(root, &context).map(Object::CronJob),
        Kind::StatefulSet => de::from_node(root, &context).map(Object::StatefulSet),
        Kind::PersistentVolumeClaim => de::from_node(root, &context).map(Object::PersistentVolumeClaim),
    };
    findings.extend(context.findings.into_inner());
    let object = match object {
        Ok(object) => Some(object),
        Err(error) => {
            findings.push(error.into_diagnostic(file, &label, root.pos));
            None
        }
    };
    if let Some(mut object) = object {
        if kind.namespaced() && object.metadata().namespace.is_none() {
            object.metadata_mut().namespace = Some("default".to_owned());
        }
        defaults::apply(&mut object);
        let mut checker = validate::Checker::new(file, &label, root);
        checker.object(&object);
        let checked = checker.finish();
        findings.extend(checked.findings);
        if kind.is_workload() {
            findings.extend(policy.check(file, &label, root));
        }
        if !findings.iter().any(Diagnostic::is_error) {
            let (mut resource, secret) = Resource::split_secret(file, root.pos, object, checked.references);
            resource.anchors = checked.anchors.into_boxed_slice();
            if let Some(secret) = secret {
                parsed.secrets.push((resource.key.clone(), Arc::new(secret)));
            }
            parsed.resources.push(Arc::new(resource));
            parsed.diagnostics.extend(findings);
            return;
        }
    }
    // A workload that did not load still says which pods it means, so a Service selecting them
    // is not also told that it matches nothing: the workload's own errors are the cause.
    if kind.is_workload() {
        let template = match kind {
            Kind::Pod => Some(root),
            _ => root.get("spec").and_then(|s| s.get("template")),
        };
        let labels = template.and_then(|t| t.get("metadata")).and_then(|m| m.get("labels"));
        if let Some(yaml::Value::Map(entries)) = labels.map(|l| &l.value) {
            let labels: types::Labels =
                entries.iter().filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned()))).collect();
            parsed.unloaded_templates.push((namespace.to_owned(), labels));
        }
    }
    parsed.diagnostics.extend(findings);
}

/// The annotation that, set to `"false"` on a workload, keeps its pods running when a value
/// they read from a ConfigMap or Secret changes; the workload is then out of sync until its
/// pods are replaced for another reason.
pub const RESTART_ON_CONFIG_CHANGE: &str = "berth.dev/restart-on-config-change";

/// One value a pod reads from a ConfigMap or Secret: which object, which key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigInput {
    pub kind: Kind,
    pub name: String,
    pub key: String,
}

impl fmt::Display for ConfigInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} key {}", self.kind, self.name, self.key)
    }
}

impl Resource {
    /// A digest of each value of a ConfigMap or Secret, by key (a Secret's values stay digests).
    pub fn value_digests(&self) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        match &self.object {
            Object::Secret(_) => &self.sensitive_digests,
            _ => self.config_digests.as_deref().unwrap_or(&NONE),
        }
    }

    /// Whether a change of the values its pods read rolls this workload (the default).
    pub fn restarts_on_config_change(&self) -> bool {
        self.restarts_on_config_change
    }

    /// Every ConfigMap and Secret value the pods of this workload read, with a digest of it
    /// (`None` for a key or object that is absent, as an optional reference may be).
    /// `digests(kind, name)` gives the digests of an object in the workload's namespace.
    /// What a pod reads is exactly what the agent resolves: a `valueFrom` key, every key of an
    /// `envFrom` source or of a volume without `items`, a volume's `items` keys.
    pub fn config_inputs<'d>(
        &'d self,
        digests: impl Fn(Kind, &str) -> Option<&'d BTreeMap<String, String>>,
    ) -> BTreeMap<ConfigInput, Option<String>> {
        let mut inputs = BTreeMap::new();
        self.each_config_input(digests, |kind, name, key, digest| {
            inputs.insert(ConfigInput { kind, name: name.to_owned(), key: key.to_owned() }, digest.map(str::to_owned));
        });
        inputs
    }

    /// [`inputs_digest`] of [`Resource::config_inputs`], without building them: the same value,
    /// at a fraction of the cost (a plan computes it for every workload on both sides).
    pub fn config_inputs_digest<'d>(
        &'d self,
        digests: impl Fn(Kind, &str) -> Option<&'d BTreeMap<String, String>>,
    ) -> Option<String> {
        let mut hasher = InputsHasher::default();
        // The reads are in (kind, name) order and each read's keys sorted: the inputs come out
        // in the order of the map, each once, with no sorting here.
        self.each_config_input(digests, |kind, name, key, digest| hasher.add(kind, name, key, digest));
        hasher.finish()
    }

    /// Calls `read(kind, name, key, digest)` for every value the pods of this workload read, in
    /// (kind, name, key) order, each once.
    fn each_config_input<'d>(
        &'d self,
        digests: impl Fn(Kind, &str) -> Option<&'d BTreeMap<String, String>>,
        mut read_value: impl FnMut(Kind, &'d str, &'d str, Option<&'d str>),
    ) {
        for read in &self.config_reads {
            let values = digests(read.kind, &read.name);
            let digest = |key: &str| values.and_then(|v| v.get(key)).map(String::as_str);
            if !read.whole {
                for key in &read.keys {
                    read_value(read.kind, &read.name, key, digest(key));
                }
                continue;
            }
            // Every key of the object, and the named keys it lacks (absent values), merged.
            let mut named = read.keys.iter().map(|k| &**k).peekable();
            for (key, value) in values.into_iter().flatten() {
                while let Some(missing) = named.next_if(|n| *n < key.as_str()) {
                    read_value(read.kind, &read.name, missing, None);
                }
                named.next_if(|n| *n == key.as_str());
                read_value(read.kind, &read.name, key, Some(value));
            }
            for missing in named {
                read_value(read.kind, &read.name, missing, None);
            }
        }
    }
}

/// What the pods of a workload read from one ConfigMap or Secret of its namespace: every key
/// (`whole`, from `envFrom` or a volume without `items`) and the keys named one by one, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRead {
    pub kind: Kind,
    pub name: Box<str>,
    pub whole: bool,
    pub keys: Box<[Box<str>]>,
}

/// What the pods of `object` read from ConfigMaps and Secrets, exactly what the agent resolves:
/// a `valueFrom` key, every key of an `envFrom` source or of a volume without `items`, a
/// volume's `items` keys. Kept in the resource, so that the many comparisons of a plan touch
/// this short list and not the whole pod spec.
fn config_reads(object: &Object) -> Box<[ConfigRead]> {
    let Some(spec) = object.pod_spec() else { return Box::default() };
    let mut reads: Vec<(Kind, &str, Option<&str>)> = Vec::new();
    for container in spec.all_containers() {
        for source in &container.env_from {
            if let Some(r) = &source.config_map_ref {
                reads.push((Kind::ConfigMap, &r.name, None));
            }
            if let Some(r) = &source.secret_ref {
                reads.push((Kind::Secret, &r.name, None));
            }
        }
        for variable in container.env.iter().filter_map(|v| v.value_from.as_ref()) {
            if let Some(r) = &variable.config_map_key_ref {
                reads.push((Kind::ConfigMap, &r.name, Some(&r.key)));
            }
            if let Some(r) = &variable.secret_key_ref {
                reads.push((Kind::Secret, &r.name, Some(&r.key)));
            }
        }
    }
    for volume in &spec.volumes {
        let (kind, name, items) = match (&volume.config_map, &volume.secret) {
            (Some(c), _) => (Kind::ConfigMap, &c.name, &c.items),
            (_, Some(s)) => (Kind::Secret, &s.secret_name, &s.items),
            _ => continue,
        };
        if items.is_empty() {
            reads.push((kind, name, None));
        }
        for item in items {
            reads.push((kind, name, Some(&item.key)));
        }
    }
    // In (kind, name) order, a whole read (`None`) before the keys of the same object.
    reads.sort_unstable();
    reads.dedup();
    let mut grouped: Vec<(Kind, &str, bool, Vec<&str>)> = Vec::new();
    for (kind, name, key) in reads {
        match grouped.last_mut() {
            Some(last) if (last.0, last.1) == (kind, name) => last.3.extend(key),
            _ => grouped.push((kind, name, key.is_none(), key.into_iter().collect())),
        }
    }
    grouped
        .into_iter()
        .map(|(kind, name, whole, keys)| ConfigRead {
            kind,
            name: name.into(),
            whole,
            keys: keys.into_iter().map(Into::into).collect(),
        })
        .collect()
}

/// An object of `resources`, which must be sorted by key (as a commit's and a plan's are).
pub fn find_sorted<'a>(
    resources: &'a [Arc<Resource>],
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Option<&'a Resource> {
    resources
        .binary_search_by(|r| (r.key.kind, r.key.namespace.as_str(), r.key.name.as_str()).cmp(&(kind, namespace, name)))
        .ok()
        .map(|index| resources[index].as_ref())
}

/// Looks up the value digests of the ConfigMaps and Secrets of one namespace in `resources`
/// (sorted by key, as a commit's are), for [`Resource::config_inputs`].
pub fn digests_in<'a>(
    resources: &'a [Arc<Resource>],
    namespace: &'a str,
) -> impl Fn(Kind, &str) -> Option<&'a BTreeMap<String, String>> + 'a {
    move |kind, name| find_sorted(resources, kind, namespace, name).map(|r| r.value_digests())
}

/// One digest of a set of config inputs, for hashes that must change when they do.
pub fn inputs_digest(inputs: &BTreeMap<ConfigInput, Option<String>>) -> String {
    digest_inputs(inputs.iter().map(|(i, d)| (i.kind, i.name.as_str(), i.key.as_str(), d.as_deref())))
}

/// The digest of inputs in their order: the bytes of `{kind}\0{name}\0{key}\0{digest or -}\n`
/// each, without building them.
fn digest_inputs<'a>(inputs: impl Iterator<Item = (Kind, &'a str, &'a str, Option<&'a str>)>) -> String {
    let mut hasher = InputsHasher::default();
    for (kind, name, key, digest) in inputs {
        hasher.add(kind, name, key, digest);
    }
    hasher.finish().unwrap_or_else(|| hex(&Sha256::new().finalize()))
}

/// [`digest_inputs`], one input at a time; `None` when there were none.
#[derive(Default)]
struct InputsHasher {
    hasher: Sha256,
    any: bool,
}

impl InputsHasher {
    fn add(&mut self, kind: Kind, name: &str, key: &str, digest: Option<&str>) {
        for part in [kind.name(), name, key] {
            self.hasher.update(part.as_bytes());
            self.hasher.update([0]);
        }
        self.hasher.update(digest.unwrap_or("-").as_bytes());
        self.hasher.update(b"\n");
        self.any = true;
    }

    fn finish(self) -> Option<String> {
        self.any.then(|| hex(&self.hasher.finalize()))
    }
}
