//! From a workload to the pods that run it: names, spec hashes, and assignments with their
//! environment and volume files resolved from the commit's ConfigMaps and Secrets.
//!
//! Pure. A pod's name is the workload's name, a short hash of its pod template and an ordinal
//! (`web-5d41402abc-0`), so the set of pods a revision wants is known without remembering
//! random names, and a new template means new pods, as a rollout needs.

use crate::manifest::downward::{self, PodField, ResourceField};
use crate::manifest::types::{ConfigMap, KeyToPath, PodSpec};
use crate::manifest::{Kind, Object, ObjectKey, Resource, SecretData, validate};
use crate::nodes::protocol::{NodeEnv, NodeTarget, NodeValue, PodAssignment};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The ConfigMaps and Secrets of a commit, by namespace and name, to resolve references from.
#[derive(Debug, Default)]
pub struct Sources<'a> {
    config_maps: BTreeMap<(&'a str, &'a str), &'a ConfigMap>,
    secrets: BTreeMap<(&'a str, &'a str), &'a SecretData>,
    /// The commit's objects, for the digests of the values a pod reads.
    resources: &'a [Arc<Resource>],
}

impl<'a> Sources<'a> {
    pub fn new(resources: &'a [Arc<Resource>], secrets: &'a BTreeMap<ObjectKey, Arc<SecretData>>) -> Sources<'a> {
        let mut sources = Sources { resources, ..Sources::default() };
        for resource in resources {
            if let Object::ConfigMap(config_map) = &resource.object {
                sources.config_maps.insert((&resource.key.namespace, &resource.key.name), config_map);
            }
        }
        for (key, data) in secrets {
            sources.secrets.insert((&key.namespace, &key.name), data.as_ref());
        }
        sources
    }

    /// Every key of a ConfigMap with its bytes: `data` as text, `binaryData` decoded.
    fn config_map_entries(&self, namespace: &str, name: &str) -> Option<Vec<(String, Vec<u8>)>> {
        let config_map = self.config_maps.get(&(namespace, name))?;
        let mut entries: Vec<(String, Vec<u8>)> =
            config_map.data.iter().map(|(k, v)| (k.clone(), v.as_bytes().to_vec())).collect();
        for (key, value) in &config_map.binary_data {
            entries.push((key.clone(), validate::decode_base64(value).unwrap_or_default()));
        }
        entries.sort();
        Some(entries)
    }

    fn secret_entries(&self, namespace: &str, name: &str) -> Option<Vec<(String, Vec<u8>)>> {
        let secret = self.secrets.get(&(namespace, name))?;
        Some(secret.iter().map(|(k, v)| (k.to_owned(), v.to_vec())).collect())
    }
}

pub use crate::plan::rollout::template_hash;

/// [`crate::plan::rollout::rollout_hash`] over the commit `sources` come from.
pub fn rollout_hash(resource: &Resource, sources: &Sources<'_>) -> String {
    crate::plan::rollout::rollout_hash(resource, sources.resources)
}

/// What tells a workload's revisions apart: its [`rollout_hash`], as Kubernetes keys
/// ReplicaSets by pod-template-hash. A change of replicas or of the rollout strategy is no
/// revision: a failed template is not tried again because it is scaled, and a rollback never
/// lands on a commit that differs only in replicas.
pub fn revision_hash(resource: &Resource, sources: &Sources<'_>) -> String {
    rollout_hash(resource, sources)
}

/// [`crate::plan::rollout::config_hash`] over the commit `sources` come from.
pub fn config_hash(resource: &Resource, sources: &Sources<'_>) -> Option<String> {
    crate::plan::rollout::config_hash(resource, sources.resources)
}

/// The name of replica `ordinal` of a workload's template revision; always a DNS label.
pub fn pod_name(workload: &str, template_hash: &str, ordinal: usize) -> String {
    let suffix = format!("-{template_hash}-{ordinal}");
    let room = 63usize.saturating_sub(suffix.len());
    let base = workload.get(..room.min(workload.len())).unwrap_or(workload).trim_end_matches(['-', '.']);
    format!("{base}{suffix}").replace('.', "-")
}

/// The name of a DaemonSet's pod on `node`: stable while the node exists, whatever others join.
pub fn daemon_pod_name(workload: &str, template_hash: &str, node: &str) -> String {
    let node_hash = &crate::manifest::hex_digest(node.as_bytes())[..6];
    let suffix = format!("-{template_hash}-{node_hash}");
    let room = 63usize.saturating_sub(suffix.len());
    let base = workload.get(..room.min(workload.len())).unwrap_or(workload).trim_end_matches(['-', '.']);
    format!("{base}{suffix}").replace('.', "-")
}

/// Which replica of a workload: by ordinal, or a DaemonSet's on a node. A Pod has one, its own.
#[derive(Debug, Clone, Copy)]
pub enum Replica<'a> {
    Ordinal(usize),
    OnNode(&'a str),
    /// A Job's pod: an Indexed Job's index, and the attempt.
    Job(super::job::Start),
}

/// The assignment of one replica of a workload (or of a Pod), references resolved. An error
/// names a reference that cannot be resolved; validation makes that rare (an optional reference
/// that is absent is simply skipped, as in Kubernetes).
pub fn assignment(
    resource: &Resource,
    revision: &str,
    replica: Replica<'_>,
    sources: &Sources<'_>,
) -> Result<PodAssignment, String> {
    let spec: &PodSpec = resource.object.pod_spec().ok_or_else(|| format!("{} runs no pods", resource.key))?;
    let namespace = resource.key.namespace.as_str();
    let config = config_hash(resource, sources);
    let hash = crate::plan::rollout::rollout_hash_of(resource, config.as_deref());
    let pod = match (resource.key.kind, replica) {
        (Kind::Pod, _) => resource.key.name.clone(),
        (Kind::StatefulSet, Replica::Ordinal(ordinal)) => super::stateful::pod_name(&resource.key.name, ordinal),
        (_, Replica::OnNode(node)) => daemon_pod_name(&resource.key.name, &hash, node),
        (_, Replica::Ordinal(ordinal)) => pod_name(&resource.key.name, &hash, ordinal),
        (_, Replica::Job(start)) => match start.index {
            Some(index) => pod_name(&resource.key.name, &format!("{hash}-{index}"), start.attempt),
            None => pod_name(&resource.key.name, &hash, start.attempt),
        },
    };

    let uid = {
        let mut bytes = [0u8; 8];
        rand::fill(&mut bytes);
        hex::encode(bytes)
    };
    let facts = PodFacts { resource, spec, pod: &pod, namespace, uid: &uid };
    let mut env = BTreeMap::new();
    let mut node_env = Vec::new();
    let mut secret_env = BTreeMap::new();
    for container in spec.all_containers() {
        let mut values: Vec<(String, String)> = Vec::new();
        let mut secret_names: Vec<String> = Vec::new();
        for source in &container.env_from {
            let prefix = source.prefix.clone().unwrap_or_default();
            let (entries, optional, what) = match (&source.config_map_ref, &source.secret_ref) {
                (Some(r), _) => (
                    sources.config_map_entries(namespace, &r.name),
                    r.optional.unwrap_or(false),
                    format!("ConfigMap {namespace}/{}", r.name),
                ),
                (_, Some(r)) => (
                    sources.secret_entries(namespace, &r.name),
                    r.optional.unwrap_or(false),
                    format!("Secret {namespace}/{}", r.name),
                ),
                _ => continue,
            };
            match entries {
                Some(entries) => {
                    for (key, value) in entries {
                        if source.secret_ref.is_some() {
                            secret_names.push(format!("{prefix}{key}"));
                        }
                        values.push((format!("{prefix}{key}"), String::from_utf8_lossy(&value).into_owned()));
                    }
                }
                None if optional => {}
                None => return Err(format!("{what} is not in the commit")),
            }
        }
        for variable in &container.env {
            if let Some(value) = &variable.value {
                values.push((variable.name.clone(), value.clone()));
                continue;
            }
            let Some(from) = &variable.value_from else {
                values.push((variable.name.clone(), String::new()));
                continue;
            };
            let target = || NodeTarget::Env { container: container.name.clone(), index: values.len() };
            let value = match (&from.field_ref, &from.resource_field_ref) {
                (Some(field), _) => {
                    let field = PodField::parse(&field.field_path)?;
                    facts.field(&field, target(), &mut node_env)
                }
                (_, Some(selector)) => {
                    let name = selector.container_name.as_deref().unwrap_or(&container.name);
                    facts.resource(selector, name, target(), &mut node_env)?
                }
                _ => None,
            };
            if let Some(value) = value {
                values.push((variable.name.clone(), value));
                continue;
            }
            let (entries, selector, kind) = match (&from.config_map_key_ref, &from.secret_key_ref) {
                (Some(r), _) => (sources.config_map_entries(namespace, &r.name), r, "ConfigMap"),
                (_, Some(r)) => (sources.secret_entries(namespace, &r.name), r, "Secret"),
                _ => continue,
            };
            let found =
                entries.and_then(|entries| entries.into_iter().find(|(k, _)| *k == selector.key).map(|(_, v)| v));
            match found {
                Some(bytes) => {
                    if kind == "Secret" {
                        secret_names.push(variable.name.clone());
                    }
                    values.push((variable.name.clone(), String::from_utf8_lossy(&bytes).into_owned()))
                }
                None if selector.optional.unwrap_or(false) => {}
                None => return Err(format!("{kind} {namespace}/{} has no key {}", selector.name, selector.key)),
            }
        }
        // An Indexed Job's pod knows its index, in every container; a variable of the same
        // name in the manifest wins, as in Kubernetes.
        if let Replica::Job(super::job::Start { index: Some(index), .. }) = replica {
            values.insert(0, ("JOB_COMPLETION_INDEX".to_owned(), index.to_string()));
        }
        env.insert(container.name.clone(), values);
        if !secret_names.is_empty() {
            secret_env.insert(container.name.clone(), secret_names);
        }
    }

    let mut files = BTreeMap::new();
    for volume in &spec.volumes {
        if let Some(source) = &volume.downward_api {
            let mut contents = BTreeMap::new();
            for item in &source.items {
                let target = || NodeTarget::File { volume: volume.name.clone(), path: item.path.clone() };
                let value = match (&item.field_ref, &item.resource_field_ref) {
                    (Some(field), _) => {
                        let field = PodField::parse_for_volume(&field.field_path)?;
                        facts.field(&field, target(), &mut node_env)
                    }
                    (_, Some(selector)) => {
                        let name = selector.container_name.as_deref().unwrap_or_default();
                        facts.resource(selector, name, target(), &mut node_env)?
                    }
                    _ => None,
                };
                contents.insert(item.path.clone(), value.unwrap_or_default().into_bytes());
            }
            files.insert(volume.name.clone(), contents);
            continue;
        }
        let (entries, items, optional, what) = match (&volume.config_map, &volume.secret) {
            (Some(c), _) => (
                sources.config_map_entries(namespace, &c.name),
                &c.items,
                c.optional.unwrap_or(false),
                format!("ConfigMap {namespace}/{}", c.name),
            ),
            (_, Some(s)) => (
                sources.secret_entries(namespace, &s.secret_name),
                &s.items,
                s.optional.unwrap_or(false),
                format!("Secret {namespace}/{}", s.secret_name),
            ),
            _ => continue,
        };
        let Some(entries) = entries else {
            if optional {
                files.insert(volume.name.clone(), BTreeMap::new());
                continue;
            }
            return Err(format!("{what} is not in the commit"));
        };
        files.insert(volume.name.clone(), select_items(entries, items, &what)?);
    }

    let spec = with_claims(resource, spec, &pod);
    Ok(PodAssignment {
        pod,
        namespace: namespace.to_owned(),
        workload_kind: resource.key.kind,
        workload_name: resource.key.name.clone(),
        revision: revision.to_owned(),
        spec_hash: hash,
        config_hash: config.unwrap_or_default(),
        uid,
        spec,
        env,
        files,
        secret_env,
        node_env,
    })
}

/// The pod's spec with a StatefulSet's claim templates as its volumes: the volume of template
/// `data` of pod `db-0` is the claim `data-db-0`, as in Kubernetes.
fn with_claims(resource: &Resource, spec: &PodSpec, pod: &str) -> PodSpec {
    let mut spec = spec.clone();
    if let Object::StatefulSet(stateful_set) = &resource.object {
        for template in &stateful_set.spec.volume_claim_templates {
            spec.volumes.push(crate::manifest::types::Volume {
                name: template.metadata.name.clone(),
                empty_dir: None,
                host_path: None,
                config_map: None,
                secret: None,
                downward_api: None,
                persistent_volume_claim: Some(crate::manifest::types::PersistentVolumeClaimVolumeSource {
                    claim_name: super::stateful::claim_name(&template.metadata.name, pod),
                    read_only: None,
                }),
            });
        }
    }
    spec
}

/// The claims a pod's volumes name.
pub fn claims_of(pod: &PodAssignment) -> impl Iterator<Item = &str> {
    pod.spec.volumes.iter().filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.as_str()))
}

/// What the downward API reads of a pod being made.
struct PodFacts<'a> {
    resource: &'a Resource,
    spec: &'a PodSpec,
    pod: &'a str,
    namespace: &'a str,
    uid: &'a str,
}

impl PodFacts<'_> {
    /// A field's value; a node's field is left empty and recorded for `place`.
    fn field(&self, field: &PodField, target: NodeTarget, node_env: &mut Vec<NodeEnv>) -> Option<String> {
        let labels = || self.resource.object.pod_labels().cloned().unwrap_or_default();
        let annotations = || self.resource.object.pod_annotations().cloned().unwrap_or_default();
        Some(match field {
            PodField::Name => self.pod.to_owned(),
            PodField::Namespace => self.namespace.to_owned(),
            PodField::Uid => self.uid.to_owned(),
            PodField::Label(key) => labels().remove(key).unwrap_or_default(),
            PodField::Annotation(key) => annotations().remove(key).unwrap_or_default(),
            PodField::Labels => downward::pairs_file(&labels()),
            PodField::Annotations => downward::pairs_file(&annotations()),
            PodField::NodeName | PodField::NodeAddress => {
                let value = if *field == PodField::NodeName { NodeValue::Name } else { NodeValue::Address };
                node_env.push(NodeEnv { target, value });
                String::new()
            }
        })
    }

    /// A resource of container `name`; one that is the node's (a limit not set) is left empty
    /// and recorded for `place`.
    fn resource(
        &self,
        selector: &crate::manifest::types::ResourceFieldSelector,
        name: &str,
        target: NodeTarget,
        node_env: &mut Vec<NodeEnv>,
    ) -> Result<Option<String>, String> {
        let field = ResourceField::parse(&selector.resource)?;
        let divisor = downward::divisor(selector)?;
        let of = self
            .spec
            .all_containers()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("resourceFieldRef names no container `{name}` of this pod"))?;
        Ok(Some(match downward::resource_value(field, of, divisor, None) {
            Some(value) => value,
            None => {
                node_env.push(NodeEnv {
                    target,
                    value: NodeValue::Resource { field, container: name.to_owned(), divisor },
                });
                String::new()
            }
        }))
    }
}

/// Fills what of `pod` is its node's (variables, downwardAPI files), once it is placed on the
/// node `name` with `address` and `allocatable` (millicores, bytes).
pub fn place(pod: &mut PodAssignment, name: &str, address: &str, allocatable: (u64, u64)) {
    for NodeEnv { target, value } in std::mem::take(&mut pod.node_env) {
        let filled = match value {
            NodeValue::Name => name.to_owned(),
            NodeValue::Address => address.to_owned(),
            NodeValue::Resource { field, container: of, divisor } => pod
                .spec
                .all_containers()
                .find(|c| c.name == of)
                .and_then(|c| downward::resource_value(field, c, divisor, Some(allocatable)))
                .unwrap_or_default(),
        };
        match target {
            NodeTarget::Env { container, index } => {
                if let Some(entry) = pod.env.get_mut(&container).and_then(|values| values.get_mut(index)) {
                    entry.1 = filled;
                }
            }
            NodeTarget::File { volume, path } => {
                pod.files.entry(volume).or_default().insert(path, filled.into_bytes());
            }
        }
    }
}

/// A volume's files: every key as a file of its name, or only the `items`, at their paths.
fn select_items(
    entries: Vec<(String, Vec<u8>)>,
    items: &[KeyToPath],
    what: &str,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    if items.is_empty() {
        return Ok(entries.into_iter().collect());
    }
    let mut files = BTreeMap::new();
    for item in items {
        let bytes = entries
            .iter()
            .find(|(k, _)| *k == item.key)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("{what} has no key {}", item.key))?;
        files.insert(item.path.clone(), bytes);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_file;

    const MANIFESTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {LOG_LEVEL: debug, GREETING: hi, app.conf: "port = 80\n"}
binaryData: {logo.bin: AAEC}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: shop}
data: {password: aHVudGVyMg==}
stringData: {token: t0k3n}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - name: api
          image: registry.example/api:1
          envFrom:
            - configMapRef: {name: settings}
              prefix: CFG_
          env:
            - {name: GREETING, value: hello}
            - name: PASSWORD
              valueFrom: {secretKeyRef: {name: creds, key: password}}
            - name: MAYBE
              valueFrom: {secretKeyRef: {name: absent, key: x, optional: true}}
      volumes:
        - name: config
          configMap: {name: settings, items: [{key: app.conf, path: conf/app.conf}, {key: logo.bin, path: logo.bin}]}
        - name: secret
          secret: {secretName: creds}
"#;

    #[test]
    fn assignments_carry_resolved_env_and_files() {
        let parsed = parse_file("app.yaml", MANIFESTS);
        assert!(parsed.diagnostics.iter().all(|d| !d.is_error()), "{:?}", parsed.diagnostics);
        let secrets: BTreeMap<ObjectKey, Arc<SecretData>> = parsed.secrets.iter().cloned().collect();
        assert_eq!(format!("{:?}", secrets.values().next().unwrap()), r#"SecretData { keys: ["password", "token"] }"#);
        let sources = Sources::new(&parsed.resources, &secrets);
        let deployment = parsed.resources.iter().find(|r| r.key.kind == Kind::Deployment).unwrap();
        let first = assignment(deployment, "abc", Replica::Ordinal(0), &sources).unwrap();
        let second = assignment(deployment, "abc", Replica::Ordinal(1), &sources).unwrap();
        assert_eq!(first.spec_hash, second.spec_hash);
        assert_eq!(first.pod, format!("api-{}-0", first.spec_hash));
        assert_eq!(second.pod, format!("api-{}-1", first.spec_hash));
        let env = &first.env["api"];
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["CFG_GREETING", "CFG_LOG_LEVEL", "CFG_app.conf", "CFG_logo.bin", "GREETING", "PASSWORD"]);
        assert_eq!(env.iter().find(|(k, _)| k == "PASSWORD").unwrap().1, "hunter2");
        assert_eq!(first.files["config"]["conf/app.conf"], b"port = 80\n");
        assert_eq!(first.files["config"]["logo.bin"], [0u8, 1, 2]);
        assert_eq!(first.files["secret"]["token"], b"t0k3n");
        assert_eq!(first.files["secret"]["password"], b"hunter2");
    }

    #[test]
    fn a_new_template_means_new_pod_names() {
        let parsed = parse_file("app.yaml", MANIFESTS);
        let changed = parse_file("app.yaml", &MANIFESTS.replace("api:1", "api:2"));
        let scaled = parse_file("app.yaml", &MANIFESTS.replace("replicas: 2", "replicas: 5"));
        let hash = |p: &crate::manifest::ParsedFile| {
            template_hash(p.resources.iter().find(|r| r.key.kind == Kind::Deployment).unwrap())
        };
        assert_ne!(hash(&parsed), hash(&changed), "a new image is a new template");
        assert_eq!(hash(&parsed), hash(&scaled), "scaling keeps the template");
        let long = "a".repeat(70);
        let name = pod_name(&long, "0123456789", 12);
        assert!(validate::is_dns_label(&name), "{name}");
    }
}
