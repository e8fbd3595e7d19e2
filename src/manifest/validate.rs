//! The checks Kubernetes' API server would make, and a few berth adds.
//!
//! [`Checker`] runs the checks that need one object; it keeps the YAML tree of that object to put
//! every finding at the right line and column. [`across`] runs the checks that need every object
//! of a commit: duplicates, references to ConfigMaps and Secrets, Services that select nothing,
//! node port clashes. Both only return findings; what an error means is decided by the caller.

use super::de::push_key;
use super::types::*;
use super::yaml::{Node, Value};
use super::{Kind, Object, Resource};
use crate::diag::{Diagnostic, Pos, Severity};
use std::collections::HashMap;
use std::sync::Arc;

/// Which restart policies a pod spec may have where it is.
#[derive(Clone, Copy)]
enum Restarts {
    /// A bare Pod: any.
    Any,
    /// A workload that keeps its pods running.
    Always,
    /// A Job's pods run to completion: Never or OnFailure, written out.
    Never,
}

/// The most completions one Job may ask for: each is a pod berth tracks.
pub const MAX_COMPLETIONS: i32 = 10_000;

/// A reference from a pod spec to a ConfigMap or Secret (or one key of it) in its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub key: Option<String>,
    pub optional: bool,
    pub pos: Pos,
    pub field: String,
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    K(&'a str),
    I(usize),
}
use Seg::{I, K};

pub struct Checker<'a> {
    file: &'a str,
    object: &'a str,
    root: &'a Node,
    prefix: Vec<Seg<'static>>,
    findings: Vec<Diagnostic>,
    references: Vec<Reference>,
    anchors: Vec<(Box<str>, Pos)>,
    /// Volumes a pod's mounts may name besides its own: a StatefulSet's claim templates.
    claim_templates: Vec<String>,
    /// The pod's volumes that are claims (its own and its templates').
    claim_volumes: Vec<String>,
}

/// What checking one object found: its findings, the objects it refers to, and where the fields
/// the checks across objects point at are written.
pub struct Checked {
    pub findings: Vec<Diagnostic>,
    pub references: Vec<Reference>,
    pub anchors: Vec<(Box<str>, Pos)>,
}

impl<'a> Checker<'a> {
    pub fn new(file: &'a str, object: &'a str, root: &'a Node) -> Self {
        Checker {
            file,
            object,
            root,
            prefix: Vec::new(),
            findings: Vec::new(),
            references: Vec::new(),
            claim_templates: Vec::new(),
            claim_volumes: Vec::new(),
            anchors: Vec::new(),
        }
    }

    pub fn finish(self) -> Checked {
        Checked { findings: self.findings, references: self.references, anchors: self.anchors }
    }

    fn field(&self, last: &[Seg<'_>]) -> String {
        let mut out = String::new();
        for segment in self.prefix.iter().chain(last) {
            match segment {
                K(key) => push_key(&mut out, key),
                I(index) => out.push_str(&format!("[{index}]")),
            }
        }
        out
    }

    /// The node at the prefix plus `last`, or of its key when `key` is set: `Ok`, or `Err` with
    /// the deepest existing parent when it is missing.
    fn node_at(&self, last: &[Seg<'_>], key: bool) -> Result<&'a Node, &'a Node> {
        let segments: Vec<Seg<'_>> = self.prefix.iter().copied().chain(last.iter().copied()).collect();
        let mut node = self.root;
        for (index, segment) in segments.iter().enumerate() {
            let is_last = index + 1 == segments.len();
            let next = match (&node.value, segment) {
                (Value::Map(entries), K(name)) => entries
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(name))
                    .map(|(k, v)| if key && is_last { k } else { v }),
                (Value::Seq(items), I(i)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(next) => node = next,
                None => return Err(node),
            }
        }
        Ok(node)
    }

    /// The position of the value at the prefix plus `last`, or of its key when `key` is set;
    /// a missing node resolves to its deepest existing parent.
    fn locate(&self, last: &[Seg<'_>], key: bool) -> Pos {
        self.node_at(last, key).unwrap_or_else(|parent| parent).pos
    }

    /// Whether the mapping at the prefix plus `last` has a key other than `read`: a refused or
    /// unknown field, already reported where it is, so a missing choice there is the same
    /// mistake and is not said twice.
    fn has_other_keys(&self, last: &[Seg<'_>], read: &[&str]) -> bool {
        match self.node_at(last, false).map(|node| &node.value) {
            Ok(Value::Map(entries)) => entries.iter().any(|(k, _)| k.as_str().is_some_and(|k| !read.contains(&k))),
            _ => false,
        }
    }

    /// Keeps where `last` is written, for the checks across objects to point at.
    fn anchor(&mut self, last: &[Seg<'_>]) {
        let field = self.field(last);
        let pos = self.locate(last, true);
        self.anchors.push((field.into_boxed_str(), pos));
    }

    fn report(&mut self, severity: Severity, last: &[Seg<'_>], key: bool, message: String, help: Option<String>) {
        let pos = self.locate(last, key);
        let mut diagnostic =
            Diagnostic::new(severity, self.file, pos, message).object(self.object).field(self.field(last));
        if let Some(help) = help {
            diagnostic = diagnostic.help(help);
        }
        self.findings.push(diagnostic);
    }

    fn error(&mut self, last: &[Seg<'_>], message: impl Into<String>, help: impl Into<Option<String>>) {
        self.report(Severity::Error, last, false, message.into(), help.into());
    }

    fn error_key(&mut self, last: &[Seg<'_>], message: impl Into<String>, help: impl Into<Option<String>>) {
        self.report(Severity::Error, last, true, message.into(), help.into());
    }

    fn warn(&mut self, last: &[Seg<'_>], message: impl Into<String>, help: impl Into<Option<String>>) {
        self.report(Severity::Warning, last, false, message.into(), help.into());
    }

    fn enter(&mut self, segments: &[Seg<'static>]) {
        self.prefix.extend_from_slice(segments);
    }

    fn leave(&mut self, count: usize) {
        self.prefix.truncate(self.prefix.len() - count);
    }

    pub fn object(&mut self, object: &Object) {
        let kind = object.kind();
        self.metadata(object.metadata(), kind);
        if matches!(kind, Kind::Deployment | Kind::ReplicaSet | Kind::ReplicationController | Kind::StatefulSet) {
            self.anchor(&[K("spec"), K("replicas")]);
        }
        let namespace = object.metadata().namespace.clone().unwrap_or_default();
        match object {
            Object::Namespace(_) => {}
            Object::ConfigMap(config_map) => {
                for key in config_map.data.keys() {
                    self.data_key(&[K("data"), K(key)], key);
                }
                for (key, value) in &config_map.binary_data {
                    self.data_key(&[K("binaryData"), K(key)], key);
                    if decode_base64(value).is_none() {
                        self.error(&[K("binaryData"), K(key)], "value is not valid base64", None);
                    }
                    if config_map.data.contains_key(key) {
                        self.error_key(
                            &[K("binaryData"), K(key)],
                            format!("key `{key}` is in both data and binaryData"),
                            None,
                        );
                    }
                }
            }
            Object::Secret(secret) => {
                for (key, value) in &secret.data {
                    self.data_key(&[K("data"), K(key)], key);
                    if decode_base64(value).is_none() {
                        self.error(
                            &[K("data"), K(key)],
                            "value is not valid base64",
                            Some("put plain text under stringData instead".into()),
                        );
                    }
                }
                for key in secret.string_data.keys() {
                    self.data_key(&[K("stringData"), K(key)], key);
                }
            }
            Object::Service(service) => self.service(&service.spec),
            Object::Pod(pod) => {
                self.enter(&[K("spec")]);
                self.pod_spec(&pod.spec, &namespace, Restarts::Any);
                self.leave(1);
            }
            Object::ReplicationController(rc) => {
                self.replicas(rc.spec.replicas);
                let selector = rc.spec.selector.clone().unwrap_or_default();
                if selector.is_empty() {
                    self.error(
                        &[K("spec"), K("selector")],
                        "selector is empty and the template has no labels",
                        Some("give the template labels".into()),
                    );
                }
                self.labels(&selector, &[K("spec"), K("selector")]);
                if !matches_labels(&selector, &rc.spec.template.metadata.labels) {
                    self.selector_mismatch();
                }
                self.template(&rc.spec.template, &namespace, Restarts::Always);
            }
            Object::ReplicaSet(rs) => {
                self.replicas(rs.spec.replicas);
                self.selector(&rs.spec.selector, &rs.spec.template.metadata.labels);
                self.template(&rs.spec.template, &namespace, Restarts::Always);
            }
            Object::Deployment(deployment) => {
                let spec = &deployment.spec;
                self.replicas(spec.replicas);
                self.selector(&spec.selector, &spec.template.metadata.labels);
                self.template(&spec.template, &namespace, Restarts::Always);
                if let Some(strategy) = &spec.strategy {
                    if strategy.strategy_type == Some(DeploymentStrategyType::Recreate)
                        && strategy.rolling_update.is_some()
                    {
                        self.error(
                            &[K("spec"), K("strategy"), K("rollingUpdate")],
                            "rollingUpdate may not be set when the strategy type is Recreate",
                            None,
                        );
                    }
                    if let Some(rolling) = &strategy.rolling_update {
                        self.enter(&[K("spec"), K("strategy"), K("rollingUpdate")]);
                        self.rolling_update(rolling, spec.replicas.unwrap_or(1));
                        self.leave(3);
                    }
                }
                let deadline = spec.progress_deadline_seconds.unwrap_or(600);
                if deadline <= spec.min_ready_seconds.unwrap_or(0) {
                    self.error(
                        &[K("spec"), K("progressDeadlineSeconds")],
                        "must be greater than minReadySeconds",
                        None,
                    );
                }
                for (value, field) in
                    [(spec.min_ready_seconds, "minReadySeconds"), (spec.revision_history_limit, "revisionHistoryLimit")]
                {
                    if value.is_some_and(|v| v < 0) {
                        self.error(&[K("spec"), K(field)], "must not be negative", None);
                    }
                }
            }
            Object::Job(job) => {
                self.enter(&[K("spec")]);
                self.job(&job.spec, &namespace);
                self.leave(1);
            }
            Object::CronJob(cron_job) => self.cron_job(&cron_job.spec, &namespace),
            Object::PersistentVolumeClaim(claim) => {
                self.enter(&[K("spec")]);
                self.claim_spec(&claim.spec);
                self.leave(1);
            }
            Object::StatefulSet(stateful_set) => self.stateful_set(object.metadata(), &stateful_set.spec, &namespace),
            Object::DaemonSet(daemon_set) => {
                let spec = &daemon_set.spec;
                self.selector(&spec.selector, &spec.template.metadata.labels);
                self.template(&spec.template, &namespace, Restarts::Always);
                if let Some(rolling) = spec.update_strategy.as_ref().and_then(|s| s.rolling_update.as_ref()) {
                    self.enter(&[K("spec"), K("updateStrategy"), K("rollingUpdate")]);
                    // A DaemonSet's percentages resolve against the number of nodes; 100 stands in.
                    self.rolling_update(rolling, 100);
                    self.leave(3);
                }
            }
        }
    }

    fn stateful_set(&mut self, metadata: &ObjectMeta, spec: &StatefulSetSpec, namespace: &str) {
        // Pods are named `<name>-<ordinal>`: a DNS label, with room for the ordinal.
        if !metadata.name.is_empty() && (!is_dns_label(&metadata.name) || metadata.name.len() > 52) {
            self.error(
                &[K("metadata"), K("name")],
                format!("`{}` cannot name a StatefulSet's pods", metadata.name),
                Some("use at most 52 lowercase letters, digits and `-`: its pods are named `<name>-<ordinal>`".into()),
            );
        }
        self.replicas(spec.replicas);
        self.selector(&spec.selector, &spec.template.metadata.labels);
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (index, template) in spec.volume_claim_templates.iter().enumerate() {
            let at = [K("spec"), K("volumeClaimTemplates"), I(index)];
            let name = template.metadata.name.as_str();
            if !is_dns_label(name) {
                self.error(
                    &[at[0], at[1], at[2], K("metadata"), K("name")],
                    format!("`{name}` is not a valid claim template name"),
                    Some(DNS_LABEL_HELP.into()),
                );
            }
            if let Some(first) = names.insert(name, index) {
                self.error(
                    &[at[0], at[1], at[2], K("metadata"), K("name")],
                    format!("claim template `{name}` is declared twice"),
                    Some(format!("the first is volumeClaimTemplates[{first}]")),
                );
            }
            if spec.template.spec.volumes.iter().any(|v| v.name == name) {
                self.error(
                    &[at[0], at[1], at[2], K("metadata"), K("name")],
                    format!("the pod template also declares a volume `{name}`"),
                    Some("a claim template is the pod's volume of that name; remove one of them".into()),
                );
            }
            self.enter(&[at[0], at[1], at[2], K("spec")]);
            self.claim_spec(&template.spec);
            self.leave(4);
        }
        self.claim_templates = spec.volume_claim_templates.iter().map(|t| t.metadata.name.clone()).collect();
        self.template(&spec.template, namespace, Restarts::Always);
        self.claim_templates.clear();
        if let Some(rolling) = spec.update_strategy.as_ref().and_then(|s| s.rolling_update.as_ref()) {
            if spec.update_strategy.as_ref().and_then(|s| s.strategy_type) == Some(StatefulSetStrategyType::OnDelete) {
                self.error(
                    &[K("spec"), K("updateStrategy"), K("rollingUpdate")],
                    "rollingUpdate may not be set when the strategy type is OnDelete",
                    None,
                );
            }
            if rolling.partition.is_some_and(|p| p < 0) {
                self.error(
                    &[K("spec"), K("updateStrategy"), K("rollingUpdate"), K("partition")],
                    "must not be negative",
                    None,
                );
            }
            if let Some(max) = &rolling.max_unavailable {
                match max.scaled(spec.replicas.unwrap_or(1).max(1), false) {
                    Ok(n) if n < 1 && matches!(max, IntOrString::Int(_)) => self.error(
                        &[K("spec"), K("updateStrategy"), K("rollingUpdate"), K("maxUnavailable")],
                        "must be at least 1",
                        None,
                    ),
                    Ok(_) => {}
                    Err(problem) => self.error(
                        &[K("spec"), K("updateStrategy"), K("rollingUpdate"), K("maxUnavailable")],
                        problem,
                        None,
                    ),
                }
            }
        }
        for (value, field) in
            [(spec.min_ready_seconds, "minReadySeconds"), (spec.revision_history_limit, "revisionHistoryLimit")]
        {
            if value.is_some_and(|v| v < 0) {
                self.error(&[K("spec"), K(field)], "must not be negative", None);
            }
        }
    }

    /// A claim's spec, at the path entered: the one storage class, sizes that read.
    fn claim_spec(&mut self, spec: &PersistentVolumeClaimSpec) {
        if let Some(class) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty() && *c != "local") {
            self.error(
                &[K("storageClassName")],
                format!("berth has no storage class `{class}`"),
                Some("its one class is `local`, a volume on the node of the claim's first pod; write `local` or leave the field out".into()),
            );
        }
        let resources = spec.resources.clone().unwrap_or_default();
        for (field, values) in [("requests", &resources.requests), ("limits", &resources.limits)] {
            for (name, quantity) in values {
                if name != "storage" {
                    self.error_key(
                        &[K("resources"), K(field), K(name)],
                        format!("a claim has no resource `{name}`"),
                        Some("a claim asks for `storage`".into()),
                    );
                } else if quantity.millis() <= 0 {
                    self.error(&[K("resources"), K(field), K(name)], "must be positive", None);
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (index, mode) in spec.access_modes.iter().enumerate() {
            if !seen.insert(*mode) {
                self.error(&[K("accessModes"), I(index)], format!("{mode:?} is listed twice"), None);
            }
        }
    }

    /// A Job's spec, at the path entered (`spec`, or a CronJob's `spec.jobTemplate.spec`).
    fn job(&mut self, spec: &JobSpec, namespace: &str) {
        self.labels(&spec.template.metadata.labels, &[K("template"), K("metadata"), K("labels")]);
        self.enter(&[K("template"), K("spec")]);
        self.pod_spec(&spec.template.spec, namespace, Restarts::Never);
        self.leave(2);
        for (value, field) in [
            (spec.completions, "completions"),
            (spec.parallelism, "parallelism"),
            (spec.backoff_limit, "backoffLimit"),
            (spec.ttl_seconds_after_finished, "ttlSecondsAfterFinished"),
        ] {
            if value.is_some_and(|v| v < 0) {
                self.error(&[K(field)], "must not be negative", None);
            }
        }
        if spec.active_deadline_seconds.is_some_and(|v| v <= 0) {
            self.error(&[K("activeDeadlineSeconds")], "must be positive", None);
        }
        if spec.completion_mode == Some(CompletionMode::Indexed) && spec.completions.is_none() {
            self.error(
                &[K("completions")],
                "an Indexed Job needs completions",
                Some("set completions: each index from 0 to completions - 1 runs until it succeeds".into()),
            );
        }
        if spec.completions.is_some_and(|c| c > MAX_COMPLETIONS) {
            self.error(&[K("completions")], format!("berth runs at most {MAX_COMPLETIONS} completions per Job"), None);
        }
        let Some(policy) = &spec.pod_failure_policy else { return };
        if spec.template.spec.restart_policy != Some(RestartPolicy::Never) {
            self.error(
                &[K("podFailurePolicy")],
                "a podFailurePolicy needs restartPolicy Never",
                Some("under OnFailure a container restarts in its pod, so there is no failed pod to judge".into()),
            );
        }
        for (i, rule) in policy.rules.iter().enumerate() {
            let codes = &rule.on_exit_codes;
            let at = [K("podFailurePolicy"), K("rules"), I(i), K("onExitCodes")];
            if codes.values.is_empty() {
                self.error(&[&at[..], &[K("values")]].concat(), "needs at least one exit code", None);
            }
            if codes.operator == ExitCodeOperator::In && codes.values.contains(&0) {
                self.error(&[&at[..], &[K("values")]].concat(), "0 is success, never a failure's exit code", None);
            }
            if let Some(name) = &codes.container_name {
                if !spec
                    .template
                    .spec
                    .containers
                    .iter()
                    .chain(&spec.template.spec.init_containers)
                    .any(|c| &c.name == name)
                {
                    self.error(
                        &[&at[..], &[K("containerName")]].concat(),
                        format!("the template has no container `{name}`"),
                        None,
                    );
                }
            }
        }
    }

    fn cron_job(&mut self, spec: &CronJobSpec, namespace: &str) {
        let schedule = spec.schedule.trim();
        if schedule.starts_with("TZ=") || schedule.starts_with("CRON_TZ=") {
            self.error(
                &[K("spec"), K("schedule")],
                "a time zone in the schedule is not supported, as in Kubernetes",
                Some("write the zone in spec.timeZone".into()),
            );
        } else if let Err(e) = super::schedule::parse(schedule) {
            self.error(
                &[K("spec"), K("schedule")],
                format!("`{schedule}` is not a cron schedule: {e}"),
                Some("five fields (minute hour day-of-month month day-of-week), or @yearly, @monthly, @weekly, @daily, @hourly".into()),
            );
        }
        if let Some(zone) = &spec.time_zone {
            if zone.parse::<chrono_tz::Tz>().is_err() {
                self.error(
                    &[K("spec"), K("timeZone")],
                    format!("`{zone}` is not a time zone of the IANA database"),
                    Some("write a name such as `Europe/Berlin` or `America/New_York`".into()),
                );
            }
        }
        for (value, field) in [
            (spec.successful_jobs_history_limit, "successfulJobsHistoryLimit"),
            (spec.failed_jobs_history_limit, "failedJobsHistoryLimit"),
        ] {
            if value.is_some_and(|v| v < 0) {
                self.error(&[K("spec"), K(field)], "must not be negative", None);
            }
        }
        if spec.starting_deadline_seconds.is_some_and(|v| v < 0) {
            self.error(&[K("spec"), K("startingDeadlineSeconds")], "must not be negative", None);
        }
        self.labels(&spec.job_template.metadata.labels, &[K("spec"), K("jobTemplate"), K("metadata"), K("labels")]);
        self.enter(&[K("spec"), K("jobTemplate"), K("spec")]);
        self.job(&spec.job_template.spec, namespace);
        self.leave(3);
    }

    fn selector_mismatch(&mut self) {
        self.error(
            &[K("spec"), K("selector")],
            "selector does not match the template's labels",
            Some("every pod the workload creates must match its own selector; make spec.template.metadata.labels carry the selected labels".into()),
        );
    }

    fn metadata(&mut self, metadata: &ObjectMeta, kind: Kind) {
        let name = &metadata.name;
        let as_label = matches!(kind, Kind::Namespace | Kind::Service);
        if name.is_empty() {
            self.error(&[K("metadata"), K("name")], "name must not be empty", None);
        } else if kind == Kind::Service && !is_dns_1035_label(name) {
            // A Service's name becomes a DNS name and environment variables: Kubernetes asks
            // for a DNS-1035 label, which starts with a letter.
            self.error(
                &[K("metadata"), K("name")],
                format!("`{name}` is not a valid Service name"),
                Some(DNS_1035_HELP.into()),
            );
        } else if as_label && !is_dns_label(name) {
            self.error(
                &[K("metadata"), K("name")],
                format!("`{name}` is not a valid {kind} name"),
                Some(DNS_LABEL_HELP.into()),
            );
        } else if !as_label && !is_dns_subdomain(name) {
            self.error(
                &[K("metadata"), K("name")],
                format!("`{name}` is not a valid name"),
                Some(DNS_SUBDOMAIN_HELP.into()),
            );
        }
        if let Some(namespace) = &metadata.namespace {
            if kind == Kind::Namespace {
                self.error_key(
                    &[K("metadata"), K("namespace")],
                    "a Namespace is not itself in a namespace",
                    Some("remove metadata.namespace".into()),
                );
            } else if !is_dns_label(namespace) {
                self.error(
                    &[K("metadata"), K("namespace")],
                    format!("`{namespace}` is not a valid namespace name"),
                    Some(DNS_LABEL_HELP.into()),
                );
            }
        }
        self.labels(&metadata.labels, &[K("metadata"), K("labels")]);
        self.hooks(metadata, kind);
        for key in metadata.annotations.keys() {
            if let Err(problem) = check_qualified_name(key) {
                self.error_key(
                    &[K("metadata"), K("annotations"), K(key)],
                    format!("annotation key `{key}` is invalid: {problem}"),
                    None,
                );
            }
        }
    }

    /// A sync hook's annotation: berth runs PreSync and PostSync Jobs; what it cannot run as
    /// Argo CD would is an error, since running it as a plain object would do the wrong thing.
    fn hooks(&mut self, metadata: &ObjectMeta, kind: Kind) {
        if let Some(policy) = metadata.annotations.get(super::HOOK_POLICY_ANNOTATION) {
            if !matches!(policy.as_str(), "every-sync" | "on-change") {
                self.error(
                    &[K("metadata"), K("annotations"), K(super::HOOK_POLICY_ANNOTATION)],
                    format!("hook policy `{policy}` is not one berth knows"),
                    Some("write `every-sync` (the hook runs at every commit applied) or `on-change` (the default: at the commits that change it)".into()),
                );
            }
        }
        for annotation in super::HOOK_ANNOTATIONS {
            let Some(value) = metadata.annotations.get(annotation) else { continue };
            let at = [K("metadata"), K("annotations"), K(annotation)];
            let (hooks, other) = super::parse_hooks(value);
            if !hooks.is_empty() && kind != Kind::Job {
                self.error(
                    &at,
                    format!("berth runs sync hooks that are Jobs; this is a {kind}"),
                    Some("make the hook a Job, or remove the annotation to apply it as any object".into()),
                );
            }
            for word in other {
                self.error(
                    &at,
                    format!("`{word}` hooks are not run by berth"),
                    Some("berth runs PreSync and PostSync hooks (and Sync, as any Job); remove the hook, or make it one of those".into()),
                );
            }
        }
    }

    fn labels(&mut self, labels: &Labels, at: &[Seg<'_>]) {
        for (key, value) in labels {
            let mut path = at.to_vec();
            path.push(K(key));
            if let Err(problem) = check_qualified_name(key) {
                self.error_key(&path, format!("label key `{key}` is invalid: {problem}"), None);
            }
            if let Err(problem) = check_label_value(value) {
                self.error(&path, format!("label value `{value}` is invalid: {problem}"), None);
            }
        }
    }

    fn replicas(&mut self, replicas: Option<i32>) {
        if replicas.is_some_and(|r| r < 0) {
            self.error(&[K("spec"), K("replicas")], "replicas must not be negative", None);
        }
    }

    fn selector(&mut self, selector: &LabelSelector, template_labels: &Labels) {
        if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
            self.error(
                &[K("spec"), K("selector")],
                "selector is empty",
                Some("select the template's labels with matchLabels".into()),
            );
            return;
        }
        self.labels(&selector.match_labels, &[K("spec"), K("selector"), K("matchLabels")]);
        for (index, expression) in selector.match_expressions.iter().enumerate() {
            let at = [K("spec"), K("selector"), K("matchExpressions"), I(index)];
            if let Err(problem) = check_qualified_name(&expression.key) {
                self.error(
                    &[at[0], at[1], at[2], at[3], K("key")],
                    format!("label key `{}` is invalid: {problem}", expression.key),
                    None,
                );
            }
            let needs_values = matches!(expression.operator, SelectorOperator::In | SelectorOperator::NotIn);
            if needs_values && expression.values.is_empty() {
                self.error(&at, format!("operator {:?} needs at least one value", expression.operator), None);
            }
            if !needs_values && !expression.values.is_empty() {
                self.error(
                    &[at[0], at[1], at[2], at[3], K("values")],
                    format!("operator {:?} takes no values", expression.operator),
                    None,
                );
            }
        }
        if !selector_matches(selector, template_labels) {
            self.selector_mismatch();
        }
    }

    fn rolling_update(&mut self, rolling: &RollingUpdate, replicas: i32) {
        let mut resolved = [0, 0];
        for (slot, (value, field, round_up)) in
            [(&rolling.max_surge, "maxSurge", true), (&rolling.max_unavailable, "maxUnavailable", false)]
                .into_iter()
                .enumerate()
        {
            let Some(value) = value else { continue };
            match value.scaled(replicas.max(1), round_up) {
                Ok(n) if n < 0 => self.error(&[K(field)], "must not be negative", None),
                Ok(n) => resolved[slot] = n,
                Err(problem) => self.error(&[K(field)], problem, None),
            }
            if let IntOrString::String(text) = value {
                if text.strip_suffix('%').and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| p > 100)
                    && field == "maxUnavailable"
                {
                    self.error(&[K(field)], "must not be more than 100%", None);
                }
            }
        }
        let surge_given = rolling.max_surge.is_some();
        let unavailable_given = rolling.max_unavailable.is_some();
        if surge_given && unavailable_given && resolved == [0, 0] {
            self.error(
                &[],
                "maxSurge and maxUnavailable may not both be 0",
                Some("a rollout could never make progress; allow one of them to be at least 1".into()),
            );
        }
    }

    fn template(&mut self, template: &PodTemplateSpec, namespace: &str, restarts: Restarts) {
        self.labels(&template.metadata.labels, &[K("spec"), K("template"), K("metadata"), K("labels")]);
        self.enter(&[K("spec"), K("template"), K("spec")]);
        self.pod_spec(&template.spec, namespace, restarts);
        self.leave(3);
    }

    fn pod_spec(&mut self, spec: &PodSpec, namespace: &str, restarts: Restarts) {
        if spec.containers.is_empty() {
            self.error(&[K("containers")], "a pod needs at least one container", None);
        }
        match restarts {
            Restarts::Any => {}
            Restarts::Always if spec.restart_policy.is_some_and(|p| p != RestartPolicy::Always) => self.error(
                &[K("restartPolicy")],
                "must be Always for pods of a workload",
                Some("workloads keep their pods running; use a Job for run-once work".into()),
            ),
            Restarts::Always => {}
            Restarts::Never => {
                if !matches!(spec.restart_policy, Some(RestartPolicy::Never | RestartPolicy::OnFailure)) {
                    self.error(
                        &[K("restartPolicy")],
                        "a Job's pods need restartPolicy Never or OnFailure",
                        Some("write `restartPolicy: Never` (a failed pod is replaced) or `OnFailure` (its container restarts), as Kubernetes requires".into()),
                    );
                }
            }
        }
        if spec.termination_grace_period_seconds.is_some_and(|s| s < 0) {
            self.error(&[K("terminationGracePeriodSeconds")], "must not be negative", None);
        }
        self.labels(&spec.node_selector, &[K("nodeSelector")]);
        if let Some(context) = &spec.security_context {
            let ids = [
                ("runAsUser", context.run_as_user),
                ("runAsGroup", context.run_as_group),
                ("fsGroup", context.fs_group),
            ];
            for (field, id) in ids {
                self.id_in_range(&[K("securityContext"), K(field)], id);
            }
            for (index, id) in context.supplemental_groups.iter().enumerate() {
                self.id_in_range(&[K("securityContext"), K("supplementalGroups"), I(index)], Some(*id));
            }
        }

        self.claim_volumes = spec
            .volumes
            .iter()
            .filter(|v| v.persistent_volume_claim.is_some())
            .map(|v| v.name.clone())
            .chain(self.claim_templates.iter().cloned())
            .collect();
        let mut volume_names: HashMap<&str, usize> = HashMap::new();
        for (index, volume) in spec.volumes.iter().enumerate() {
            let at = |field| [K("volumes"), I(index), K(field)];
            if !is_dns_label(&volume.name) {
                self.error(
                    &at("name"),
                    format!("`{}` is not a valid volume name", volume.name),
                    Some(DNS_LABEL_HELP.into()),
                );
            }
            if let Some(first) = volume_names.insert(&volume.name, index) {
                self.error(
                    &at("name"),
                    format!("volume `{}` is declared twice", volume.name),
                    Some(format!("the first is volumes[{first}]")),
                );
            }
            let sources = [
                volume.empty_dir.is_some(),
                volume.host_path.is_some(),
                volume.config_map.is_some(),
                volume.secret.is_some(),
                volume.downward_api.is_some(),
                volume.persistent_volume_claim.is_some(),
            ];
            match sources.iter().filter(|s| **s).count() {
                0 => self.error(
                    &[K("volumes"), I(index)],
                    format!("volume `{}` has no source", volume.name),
                    Some(
                        "give it one of emptyDir, hostPath, configMap, secret, downwardAPI or persistentVolumeClaim"
                            .into(),
                    ),
                ),
                1 => {}
                _ => self.error(
                    &[K("volumes"), I(index)],
                    format!("volume `{}` has more than one source", volume.name),
                    None,
                ),
            }
            if let Some(host_path) = &volume.host_path {
                if !host_path.path.starts_with('/') {
                    self.error(
                        &[K("volumes"), I(index), K("hostPath"), K("path")],
                        "hostPath must be an absolute path",
                        None,
                    );
                }
            }
            if let Some(claim) = &volume.persistent_volume_claim {
                self.reference(
                    Kind::PersistentVolumeClaim,
                    namespace,
                    &claim.claim_name,
                    None,
                    false,
                    &[K("volumes"), I(index), K("persistentVolumeClaim"), K("claimName")],
                );
            }
            if let Some(config_map) = &volume.config_map {
                let optional = config_map.optional.unwrap_or(false);
                self.reference(
                    Kind::ConfigMap,
                    namespace,
                    &config_map.name,
                    None,
                    optional,
                    &[K("volumes"), I(index), K("configMap"), K("name")],
                );
                self.enter(&[K("volumes"), I(index), K("configMap")]);
                self.volume_files(config_map.default_mode, &config_map.items);
                self.leave(3);
                for (item_index, item) in config_map.items.iter().enumerate() {
                    self.reference(
                        Kind::ConfigMap,
                        namespace,
                        &config_map.name,
                        Some(&item.key),
                        optional,
                        &[K("volumes"), I(index), K("configMap"), K("items"), I(item_index), K("key")],
                    );
                }
            }
            if let Some(secret) = &volume.secret {
                let optional = secret.optional.unwrap_or(false);
                self.reference(
                    Kind::Secret,
                    namespace,
                    &secret.secret_name,
                    None,
                    optional,
                    &[K("volumes"), I(index), K("secret"), K("secretName")],
                );
                self.enter(&[K("volumes"), I(index), K("secret")]);
                self.volume_files(secret.default_mode, &secret.items);
                self.leave(3);
                for (item_index, item) in secret.items.iter().enumerate() {
                    self.reference(
                        Kind::Secret,
                        namespace,
                        &secret.secret_name,
                        Some(&item.key),
                        optional,
                        &[K("volumes"), I(index), K("secret"), K("items"), I(item_index), K("key")],
                    );
                }
            }
        }

        let all_containers: Vec<&str> = spec.all_containers().map(|c| c.name.as_str()).collect();
        for (index, volume) in spec.volumes.iter().enumerate() {
            let Some(source) = &volume.downward_api else { continue };
            self.enter(&[K("volumes"), I(index), K("downwardAPI")]);
            let paths: Vec<(&str, Option<i32>)> = source.items.iter().map(|i| (i.path.as_str(), i.mode)).collect();
            self.volume_paths(source.default_mode, &paths);
            for (item_index, item) in source.items.iter().enumerate() {
                self.downward_file(item, &[K("items"), I(item_index)], &all_containers);
            }
            self.leave(3);
        }
        let mut container_names: HashMap<&str, String> = HashMap::new();
        let mut port_names: HashMap<&str, usize> = HashMap::new();
        let lists = [("initContainers", &spec.init_containers), ("containers", &spec.containers)];
        for (list, containers) in lists {
            for (index, container) in containers.iter().enumerate() {
                if let Some(first) = container_names.insert(&container.name, format!("{list}[{index}]")) {
                    self.error(
                        &[K(list), I(index), K("name")],
                        format!("container `{}` is declared twice", container.name),
                        Some(format!("the first is {first}")),
                    );
                }
                self.enter(&[K(list), I(index)]);
                match (list, container.restart_policy) {
                    ("initContainers", Some(RestartPolicy::Always)) => {}
                    ("initContainers", Some(other)) => self.error(
                        &[K("restartPolicy")],
                        format!("an init container's restartPolicy can only be Always (a sidecar), not {other:?}"),
                        Some("leave it out for an init container that runs to its end".into()),
                    ),
                    ("initContainers", None) => self.init_container(container),
                    (_, Some(_)) => self.error(
                        &[K("restartPolicy")],
                        "restartPolicy on a container is for sidecars, which are init containers",
                        Some("move the container to initContainers with restartPolicy: Always, or leave it out".into()),
                    ),
                    (_, None) => {}
                }
                self.container(container, namespace, &volume_names, &mut port_names, &all_containers);
                self.leave(2);
            }
        }
    }

    /// What Kubernetes refuses on an init container: it runs to its end, so nothing probes it
    /// and no hook runs around it.
    fn init_container(&mut self, container: &Container) {
        let refused = [
            ("startupProbe", container.startup_probe.is_some()),
            ("livenessProbe", container.liveness_probe.is_some()),
            ("readinessProbe", container.readiness_probe.is_some()),
            ("lifecycle", container.lifecycle.is_some()),
        ];
        for (field, present) in refused {
            if present {
                self.error(
                    &[K(field)],
                    format!("an init container cannot have `{field}`: it runs to its end before the pod starts"),
                    Some("remove it, or make it a container".into()),
                );
            }
        }
    }

    /// The file paths and modes of a configMap or secret volume, as Kubernetes checks them:
    /// paths relative and inside the volume, modes within 0-0777.
    fn volume_files(&mut self, default_mode: Option<i32>, items: &[KeyToPath]) {
        let paths: Vec<(&str, Option<i32>)> = items.iter().map(|i| (i.path.as_str(), i.mode)).collect();
        self.volume_paths(default_mode, &paths);
    }

    /// One file of a downwardAPI volume: one field of the pod, or one resource of a container
    /// it names.
    fn downward_file(&mut self, item: &DownwardApiVolumeFile, at: &[Seg<'_>], containers: &[&str]) {
        let here = |field: &'static str| [at[0], at[1], K(field)];
        match (&item.field_ref, &item.resource_field_ref) {
            (Some(field), None) => {
                if let Err(message) = super::downward::PodField::parse_for_volume(&field.field_path) {
                    let path = [at[0], at[1], K("fieldRef"), K("fieldPath")];
                    self.error(&path, message, Some(format!("use one of {}", super::downward::VOLUME_FIELD_PATHS)));
                }
            }
            (None, Some(field)) => {
                let path = |name: &'static str| [at[0], at[1], K("resourceFieldRef"), K(name)];
                if let Err(message) = super::downward::ResourceField::parse(&field.resource) {
                    self.error(&path("resource"), message, None);
                }
                if let Err(message) = super::downward::divisor(field) {
                    self.error(&path("divisor"), message, Some("use 1, 1m, 1Mi or 1Gi".into()));
                }
                match field.container_name.as_deref() {
                    None => self.error(
                        &path("resource"),
                        "a downwardAPI volume's resourceFieldRef needs `containerName`",
                        Some(format!("name one of: {}", containers.join(", "))),
                    ),
                    Some(name) if !containers.contains(&name) => self.error(
                        &path("containerName"),
                        format!("this pod has no container `{name}`"),
                        Some(format!("name one of: {}", containers.join(", "))),
                    ),
                    Some(_) => {}
                }
            }
            _ => self.error(&here("path"), "set exactly one of fieldRef and resourceFieldRef", None),
        }
    }

    /// Paths and modes of a volume's files.
    fn volume_paths(&mut self, default_mode: Option<i32>, items: &[(&str, Option<i32>)]) {
        if let Some(mode) = default_mode.filter(|m| !(0..=0o777).contains(m)) {
            self.error(&[K("defaultMode")], format!("mode {} is out of range", octal(mode)), Some(MODE_HELP.into()));
        }
        let mut paths: HashMap<&str, usize> = HashMap::new();
        for (index, &(path, mode)) in items.iter().enumerate() {
            if relative_path_parts(path).is_none() {
                self.error(
                    &[K("items"), I(index), K("path")],
                    format!("`{}` is not a relative path inside the volume", path),
                    Some("write a path such as `conf/app.conf`: not absolute, no `..`, `.` or empty parts".into()),
                );
            }
            if let Some(first) = paths.insert(path, index) {
                self.error(
                    &[K("items"), I(index), K("path")],
                    format!("path `{}` is used twice", path),
                    Some(format!("the first is items[{first}]")),
                );
            }
            if let Some(mode) = mode.filter(|m| !(0..=0o777).contains(m)) {
                self.error(
                    &[K("items"), I(index), K("mode")],
                    format!("mode {} is out of range", octal(mode)),
                    Some(MODE_HELP.into()),
                );
            }
        }
    }

    /// A user or group id as Kubernetes takes it: 0 to 2147483647.
    fn id_in_range(&mut self, path: &[Seg<'_>], id: Option<i64>) {
        if let Some(id) = id.filter(|id| !(0..=i64::from(i32::MAX)).contains(id)) {
            self.error(path, format!("{id} is not a user or group id"), Some("use 0 to 2147483647".into()));
        }
    }

    fn container<'c>(
        &mut self,
        container: &'c Container,
        namespace: &str,
        volumes: &HashMap<&str, usize>,
        port_names: &mut HashMap<&'c str, usize>,
        containers: &[&str],
    ) {
        if let Some(context) = &container.security_context {
            for (field, id) in [("runAsUser", context.run_as_user), ("runAsGroup", context.run_as_group)] {
                self.id_in_range(&[K("securityContext"), K(field)], id);
            }
        }
        if !is_dns_label(&container.name) {
            self.error(
                &[K("name")],
                format!("`{}` is not a valid container name", container.name),
                Some(DNS_LABEL_HELP.into()),
            );
        }
        if container.image.trim().is_empty() || container.image.contains(char::is_whitespace) {
            self.error(
                &[K("image")],
                format!("`{}` is not a valid image reference", container.image),
                Some("write it like registry.example/team/app:1.4.2".into()),
            );
        }
        for (index, port) in container.ports.iter().enumerate() {
            if !(1..=65535).contains(&port.container_port) {
                self.error(
                    &[K("ports"), I(index), K("containerPort")],
                    format!("port {} is out of range", port.container_port),
                    Some("use 1-65535".into()),
                );
            } else if RESERVED_POD_PORTS.iter().any(|reserved| i64::from(*reserved) == i64::from(port.container_port)) {
                self.error(
                    &[K("ports"), I(index), K("containerPort")],
                    format!("port {} is kept by berth inside every pod", port.container_port),
                    Some(format!(
                        "berth's service proxy listens on {} in each pod; let the application listen on another port",
                        RESERVED_POD_PORTS.map(|p| p.to_string()).join(" and ")
                    )),
                );
            }
            if let Some(host_port) = port.host_port {
                if !(1..=65535).contains(&host_port) {
                    self.error(
                        &[K("ports"), I(index), K("hostPort")],
                        format!("port {host_port} is out of range"),
                        Some("use 1-65535".into()),
                    );
                }
            }
            if let Some(name) = &port.name {
                if !is_port_name(name) {
                    self.error(
                        &[K("ports"), I(index), K("name")],
                        format!("`{name}` is not a valid port name"),
                        Some(PORT_NAME_HELP.into()),
                    );
                }
                if port_names.insert(name, index).is_some() {
                    self.error(
                        &[K("ports"), I(index), K("name")],
                        format!("port name `{name}` is used twice in this pod"),
                        None,
                    );
                }
            }
        }
        for (index, env) in container.env.iter().enumerate() {
            if !is_env_name(&env.name) {
                self.error(
                    &[K("env"), I(index), K("name")],
                    format!("`{}` is not a valid environment variable name", env.name),
                    Some("use letters, digits, `_`, `-` and `.`, not starting with a digit".into()),
                );
            }
            match (&env.value, &env.value_from) {
                (Some(_), Some(_)) => self.error(&[K("env"), I(index)], "set value or valueFrom, not both", None),
                (_, Some(source)) if source.field_ref.is_some() || source.resource_field_ref.is_some() => {
                    let sources = [
                        source.config_map_key_ref.is_some(),
                        source.secret_key_ref.is_some(),
                        source.field_ref.is_some(),
                        source.resource_field_ref.is_some(),
                    ];
                    if sources.iter().filter(|s| **s).count() > 1 {
                        self.error(
                            &[K("env"), I(index), K("valueFrom")],
                            "set exactly one of configMapKeyRef, secretKeyRef, fieldRef and resourceFieldRef",
                            None,
                        );
                    } else if let Some(field) = &source.field_ref {
                        let at = [K("env"), I(index), K("valueFrom"), K("fieldRef")];
                        if let Some(version) = field.api_version.as_deref().filter(|v| *v != "v1") {
                            self.error(
                                &[at[0], at[1], at[2], at[3], K("apiVersion")],
                                format!("apiVersion `{version}` has no such fields"),
                                Some("use v1, or leave it out".into()),
                            );
                        }
                        if let Err(message) = super::downward::PodField::parse(&field.field_path) {
                            self.error(
                                &[at[0], at[1], at[2], at[3], K("fieldPath")],
                                message,
                                Some(format!("use one of {}", super::downward::FIELD_PATHS)),
                            );
                        }
                    } else if let Some(field) = &source.resource_field_ref {
                        let at = [K("env"), I(index), K("valueFrom"), K("resourceFieldRef")];
                        if let Err(message) = super::downward::ResourceField::parse(&field.resource) {
                            self.error(&[at[0], at[1], at[2], at[3], K("resource")], message, None);
                        }
                        if let Err(message) = super::downward::divisor(field) {
                            self.error(
                                &[at[0], at[1], at[2], at[3], K("divisor")],
                                message,
                                Some("use 1, 1m, 1Mi or 1Gi".into()),
                            );
                        }
                        if let Some(name) = field.container_name.as_deref().filter(|n| !containers.contains(n)) {
                            self.error(
                                &[at[0], at[1], at[2], at[3], K("containerName")],
                                format!("this pod has no container `{name}`"),
                                Some(format!("name one of: {}", containers.join(", "))),
                            );
                        }
                    }
                }
                (_, Some(source)) => match (&source.config_map_key_ref, &source.secret_key_ref) {
                    (Some(r), None) => self.reference(
                        Kind::ConfigMap,
                        namespace,
                        &r.name,
                        Some(&r.key),
                        r.optional.unwrap_or(false),
                        &[K("env"), I(index), K("valueFrom"), K("configMapKeyRef"), K("name")],
                    ),
                    (None, Some(r)) => self.reference(
                        Kind::Secret,
                        namespace,
                        &r.name,
                        Some(&r.key),
                        r.optional.unwrap_or(false),
                        &[K("env"), I(index), K("valueFrom"), K("secretKeyRef"), K("name")],
                    ),
                    (None, None) if self.has_other_keys(&[K("env"), I(index), K("valueFrom")], &[]) => {}
                    _ => self.error(
                        &[K("env"), I(index), K("valueFrom")],
                        "set exactly one of configMapKeyRef, secretKeyRef, fieldRef and resourceFieldRef",
                        None,
                    ),
                },
                _ => {}
            }
        }
        for (index, source) in container.env_from.iter().enumerate() {
            match (&source.config_map_ref, &source.secret_ref) {
                (Some(r), None) => self.reference(
                    Kind::ConfigMap,
                    namespace,
                    &r.name,
                    None,
                    r.optional.unwrap_or(false),
                    &[K("envFrom"), I(index), K("configMapRef"), K("name")],
                ),
                (None, Some(r)) => self.reference(
                    Kind::Secret,
                    namespace,
                    &r.name,
                    None,
                    r.optional.unwrap_or(false),
                    &[K("envFrom"), I(index), K("secretRef"), K("name")],
                ),
                (None, None) if self.has_other_keys(&[K("envFrom"), I(index)], &["prefix"]) => {}
                _ => self.error(&[K("envFrom"), I(index)], "set exactly one of configMapRef and secretRef", None),
            }
        }
        if let Some(resources) = &container.resources {
            for (section, quantities) in [("requests", &resources.requests), ("limits", &resources.limits)] {
                for (name, quantity) in quantities {
                    match name.as_str() {
                        "cpu" | "memory" => {}
                        "ephemeral-storage" | "hugepages-2Mi" | "hugepages-1Gi" => self.warn(
                            &[K("resources"), K(section), K(name)],
                            format!("resource `{name}` is accepted but not acted on by berth"),
                            None,
                        ),
                        // Extended resources (a device plugin's `nvidia.com/gpu`) are named
                        // with a domain.
                        _ if name.contains('/') => self.error(
                            &[K("resources"), K(section), K(name)],
                            format!("extended resource `{name}` is not supported by berth"),
                            Some("berth schedules cpu and memory only and passes no devices to containers; remove it, or run this workload on Kubernetes".into()),
                        ),
                        _ => self.error(
                            &[K("resources"), K(section), K(name)],
                            format!("unknown resource `{name}`"),
                            // `gpu` is not a typo of `cpu`: only longer names are.
                            Some(match crate::diag::suggest(name, ["cpu", "memory", "ephemeral-storage"]).filter(|_| name.len() > 3) {
                                Some(close) => format!("did you mean `{close}`? berth schedules cpu and memory"),
                                None => "berth schedules cpu and memory".into(),
                            }),
                        ),
                    }
                    if quantity.millis() < 0 {
                        self.error(&[K("resources"), K(section), K(name)], "must not be negative", None);
                    }
                }
            }
            for (name, request) in &resources.requests {
                if let Some(limit) = resources.limits.get(name) {
                    if request.millis() > limit.millis() {
                        self.error(
                            &[K("resources"), K("requests"), K(name)],
                            format!("request {request} is more than the limit {limit}"),
                            Some("a container cannot be promised more than it may use".into()),
                        );
                    }
                }
            }
        }
        for (field, probe) in [
            ("startupProbe", &container.startup_probe),
            ("livenessProbe", &container.liveness_probe),
            ("readinessProbe", &container.readiness_probe),
        ] {
            let Some(probe) = probe else { continue };
            self.enter(&[K(field)]);
            self.probe(probe, field != "readinessProbe", container);
            self.leave(1);
        }
        let hooks = container.lifecycle.as_ref().map(|l| [("postStart", &l.post_start), ("preStop", &l.pre_stop)]);
        for (field, hook) in hooks.into_iter().flatten() {
            let Some(hook) = hook else { continue };
            self.enter(&[K("lifecycle"), K(field)]);
            self.hook(hook, container);
            self.leave(2);
        }
        let mut mount_paths: HashMap<&str, usize> = HashMap::new();
        for (index, mount) in container.volume_mounts.iter().enumerate() {
            if !volumes.contains_key(mount.name.as_str()) && !self.claim_templates.contains(&mount.name) {
                self.error(
                    &[K("volumeMounts"), I(index), K("name")],
                    format!("no volume named `{}` in this pod", mount.name),
                    Some("declare it under volumes".into()),
                );
            }
            if mount.sub_path.as_deref().is_some_and(|p| !p.is_empty()) && self.claim_volumes.contains(&mount.name) {
                self.error(
                    &[K("volumeMounts"), I(index), K("subPath")],
                    format!("berth mounts claim volume `{}` whole; subPath is not supported on a claim", mount.name),
                    Some("mount the claim at a folder and point the application at a folder inside it (for PostgreSQL, PGDATA)".into()),
                );
            }
            if !mount.mount_path.starts_with('/') {
                self.error(&[K("volumeMounts"), I(index), K("mountPath")], "mountPath must be an absolute path", None);
            }
            if mount_paths.insert(&mount.mount_path, index).is_some() {
                self.error(
                    &[K("volumeMounts"), I(index), K("mountPath")],
                    format!("`{}` is mounted twice", mount.mount_path),
                    None,
                );
            }
            if mount.sub_path.as_deref().is_some_and(|p| !p.is_empty() && relative_path_parts(p).is_none()) {
                self.error(
                    &[K("volumeMounts"), I(index), K("subPath")],
                    "subPath must be a relative path inside the volume",
                    None,
                );
            }
        }
    }

    /// What a probe and a lifecycle hook share: the port they reach, HTTP only, a command.
    fn handler(
        &mut self,
        http_get: Option<&HttpGetAction>,
        tcp_port: Option<&IntOrString>,
        exec: Option<&ExecAction>,
        container: &Container,
        what: &str,
    ) {
        let port = http_get.map(|h| (&h.port, "httpGet")).or(tcp_port.map(|p| (p, "tcpSocket")));
        if let Some((port, handler)) = port {
            match port {
                IntOrString::Int(n) if !(1..=65535).contains(n) => self.error(
                    &[K(handler), K("port")],
                    format!("port {n} is out of range"),
                    Some("use 1-65535".into()),
                ),
                // The API server accepts this; the probe then fails at run time.
                IntOrString::String(name) if !container.ports.iter().any(|p| p.name.as_deref() == Some(name)) => self
                    .warn(
                        &[K(handler), K("port")],
                        format!("no port named `{name}` in this container: the {what} will fail"),
                        Some("name the port under ports, or give its number".into()),
                    ),
                _ => {}
            }
        }
        if let Some(http) = http_get {
            match http.scheme.as_deref() {
                None | Some("HTTP") => {}
                Some("HTTPS") => self.error(
                    &[K("httpGet"), K("scheme")],
                    format!("HTTPS {what}s are not supported yet"),
                    Some(match what {
                        "probe" => "probe the port with tcpSocket, or serve the health check over HTTP".into(),
                        _ => format!("serve the {what}'s endpoint over HTTP"),
                    }),
                ),
                Some(_) => self.error(&[K("httpGet"), K("scheme")], "scheme must be HTTP", None),
            }
        }
        if exec.is_some_and(|e| e.command.is_empty()) {
            self.error(&[K("exec"), K("command")], "command must not be empty", None);
        }
    }

    /// A lifecycle hook: exactly one of exec, httpGet and sleep.
    fn hook(&mut self, hook: &LifecycleHandler, container: &Container) {
        let handlers = [hook.exec.is_some(), hook.http_get.is_some(), hook.sleep.is_some()];
        match handlers.iter().filter(|h| **h).count() {
            // A tcpSocket hook is refused where it is written.
            0 if self.has_other_keys(&[], &["exec", "httpGet", "sleep"]) => {}
            0 => self.error(&[], "a hook needs one of exec, httpGet or sleep", None),
            1 => {}
            _ => self.error(&[], "a hook may have only one of exec, httpGet and sleep", None),
        }
        self.handler(hook.http_get.as_ref(), None, hook.exec.as_ref(), container, "hook");
        if hook.sleep.as_ref().is_some_and(|s| s.seconds < 0) {
            self.error(&[K("sleep"), K("seconds")], "must not be negative", None);
        }
    }

    fn probe(&mut self, probe: &Probe, success_must_be_one: bool, container: &Container) {
        let handlers = [probe.http_get.is_some(), probe.tcp_socket.is_some(), probe.exec.is_some()];
        match handlers.iter().filter(|h| **h).count() {
            // A grpc probe is refused where it is written.
            0 if self.has_other_keys(&[], PROBE_FIELDS) => {}
            0 => self.error(&[], "a probe needs one of httpGet, tcpSocket or exec", None),
            1 => {}
            _ => self.error(&[], "a probe may have only one of httpGet, tcpSocket and exec", None),
        }
        let tcp_port = probe.tcp_socket.as_ref().map(|t| &t.port);
        self.handler(probe.http_get.as_ref(), tcp_port, probe.exec.as_ref(), container, "probe");
        for (value, field, minimum) in [
            (probe.initial_delay_seconds, "initialDelaySeconds", 0),
            (probe.period_seconds, "periodSeconds", 1),
            (probe.timeout_seconds, "timeoutSeconds", 1),
            (probe.success_threshold, "successThreshold", 1),
            (probe.failure_threshold, "failureThreshold", 1),
        ] {
            if value.is_some_and(|v| v < minimum) {
                self.error(&[K(field)], format!("must be at least {minimum}"), None);
            }
        }
        if success_must_be_one && probe.success_threshold.is_some_and(|v| v != 1) {
            self.error(&[K("successThreshold")], "must be 1 for liveness and startup probes", None);
        }
    }

    fn service(&mut self, spec: &ServiceSpec) {
        self.anchor(&[K("spec"), K("selector")]);
        for index in 0..spec.ports.len() {
            self.anchor(&[K("spec"), K("ports"), I(index), K("targetPort")]);
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if let Some(ip) = spec.cluster_ip.as_deref() {
            if !headless && !ip.is_empty() {
                self.warn(
                    &[K("spec"), K("clusterIP")],
                    "a fixed clusterIP is not honored; berth chooses service addresses",
                    Some("remove it, or set None for a headless service".into()),
                );
            }
        }
        if headless && spec.service_type.is_some_and(|t| t != ServiceType::ClusterIP) {
            self.error(
                &[K("spec"), K("clusterIP")],
                "a headless service (clusterIP: None) must be of type ClusterIP",
                None,
            );
        }
        if spec.ports.is_empty() && !headless {
            self.error(&[K("spec"), K("ports")], "a service needs at least one port", None);
        }
        self.labels(&spec.selector, &[K("spec"), K("selector")]);
        let node_ports_allowed = matches!(spec.service_type, Some(ServiceType::NodePort | ServiceType::LoadBalancer));
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut ports: HashMap<(i32, Protocol), usize> = HashMap::new();
        for (index, port) in spec.ports.iter().enumerate() {
            let at = |field| [K("spec"), K("ports"), I(index), K(field)];
            if !(1..=65535).contains(&port.port) {
                self.error(&at("port"), format!("port {} is out of range", port.port), Some("use 1-65535".into()));
            }
            if ports.insert((port.port, port.protocol.unwrap_or(Protocol::Tcp)), index).is_some() {
                self.error(&at("port"), format!("port {} is declared twice", port.port), None);
            }
            match &port.name {
                Some(name) => {
                    if !is_dns_label(name) {
                        self.error(
                            &at("name"),
                            format!("`{name}` is not a valid port name"),
                            Some(DNS_LABEL_HELP.into()),
                        );
                    }
                    if names.insert(name, index).is_some() {
                        self.error(&at("name"), format!("port name `{name}` is used twice"), None);
                    }
                }
                None if spec.ports.len() > 1 => self.error(
                    &[K("spec"), K("ports"), I(index)],
                    "every port needs a name when a service has more than one",
                    None,
                ),
                None => {}
            }
            match &port.target_port {
                // A targetPort defaulted from port would repeat the port's own finding.
                Some(IntOrString::Int(n)) if *n == port.port => {}
                Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => {
                    self.error(&at("targetPort"), format!("port {n} is out of range"), Some("use 1-65535".into()))
                }
                Some(IntOrString::String(name)) if !is_port_name(name) => self.error(
                    &at("targetPort"),
                    format!("`{name}` is not a valid port name"),
                    Some(PORT_NAME_HELP.into()),
                ),
                _ => {}
            }
            if let Some(node_port) = port.node_port {
                if !node_ports_allowed {
                    self.error(
                        &at("nodePort"),
                        "nodePort may only be set on NodePort and LoadBalancer services",
                        Some("set `type: NodePort`, or remove nodePort".into()),
                    );
                } else if !(30000..=32767).contains(&node_port) {
                    self.error(&at("nodePort"), format!("node port {node_port} is outside 30000-32767"), None);
                }
            }
        }
    }

    fn data_key(&mut self, at: &[Seg<'_>], key: &str) {
        let valid = !key.is_empty()
            && key.len() <= 253
            && key != "."
            && key != ".."
            && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            self.error_key(
                at,
                format!("`{key}` is not a valid key"),
                Some("use letters, digits, `-`, `_` and `.`".into()),
            );
        }
    }

    fn reference(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        key: Option<&str>,
        optional: bool,
        at: &[Seg<'_>],
    ) {
        let pos = self.locate(at, false);
        let field = self.field(at);
        self.references.push(Reference {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key: key.map(str::to_owned),
            optional,
            pos,
            field,
        });
    }
}

/// A fast hasher, seeded per map so that crafted manifests cannot aim at collisions. The maps
/// below hold an entry per object of a commit; with SipHash, hashing was half of the time these
/// checks took at ten thousand objects.
type Seeded = foldhash::fast::RandomState;

/// Checks that need every object of a commit.
///
/// `unloaded` are the pod template labels of workloads that did not load (by namespace): a
/// Service that selects only those is not warned, their errors are the cause.
pub fn across(resources: &[Arc<Resource>], unloaded: &[(String, Labels)]) -> Vec<Diagnostic> {
    let mut findings = Vec::new();
    // One index by identity serves the duplicate check and every reference lookup.
    // One pass over every object builds the indexes; the later passes visit only the objects
    // that refer to others and the Services. At ten thousand objects, touching each one once
    // matters more than the hashing.
    let mut by_key: HashMap<(Kind, &str, &str), &Resource, Seeded> =
        HashMap::with_capacity_and_hasher(resources.len(), Seeded::default());
    // The pod templates, and for every label pair the templates that carry it, so that what a
    // selector matches is found without comparing it with every template.
    let mut templates: Vec<(&Labels, &PodSpec)> = Vec::new();
    let mut label_pairs: HashMap<(&str, &str, &str), Vec<usize>, Seeded> = HashMap::default();
    let mut referrers = Vec::new();
    let mut services = Vec::new();
    for resource in resources {
        let key = (resource.key.kind, resource.key.namespace.as_str(), resource.key.name.as_str());
        if let Some(first) = by_key.insert(key, resource) {
            findings.push(
                Diagnostic::error(&resource.file, resource.pos, "declared twice")
                    .object(resource.key.to_string())
                    .help(format!(
                        "it is also declared at {}:{}:{}; keep one",
                        first.file, first.pos.line, first.pos.column
                    )),
            );
            by_key.insert(key, first);
        }
        if !resource.references.is_empty() {
            referrers.push(resource);
        }
        match &resource.object {
            Object::Service(service) => services.push((resource, service)),
            object => {
                if let (Some(labels), Some(spec)) = (object.pod_labels(), object.pod_spec()) {
                    for (key, value) in labels {
                        label_pairs.entry((&resource.key.namespace, key, value)).or_default().push(templates.len());
                    }
                    templates.push((labels, spec));
                }
            }
        }
    }

    for resource in referrers {
        for reference in resource.references.iter().filter(|r| !r.optional) {
            let target = by_key.get(&(reference.kind, reference.namespace.as_str(), reference.name.as_str()));
            let diagnostic = match (target, &reference.key) {
                (None, _) => Some(
                    Diagnostic::error(
                        &resource.file,
                        reference.pos,
                        format!("{} {}/{} is not in this commit", reference.kind, reference.namespace, reference.name),
                    )
                    .help(match reference.kind {
                        Kind::PersistentVolumeClaim => {
                            "add the PersistentVolumeClaim or fix the name; a StatefulSet's pods get claims of their own from volumeClaimTemplates".to_owned()
                        }
                        kind => format!("add the {kind}, fix the name, or mark the reference `optional: true`"),
                    }),
                ),
                (Some(target), Some(key)) if !has_data_key(target, key) => {
                    let keys = data_keys(target);
                    let error = Diagnostic::error(
                        &resource.file,
                        reference.pos,
                        format!("{} {}/{} has no key `{key}`", reference.kind, reference.namespace, reference.name),
                    );
                    Some(match crate::diag::suggest(key, keys.iter().copied()) {
                        Some(close) => error.help(format!("did you mean `{close}`?")),
                        None => error.help(format!("its keys are: {}", keys.join(", "))),
                    })
                }
                _ => None,
            };
            if let Some(diagnostic) = diagnostic {
                findings.push(diagnostic.object(resource.key.to_string()).field(reference.field.clone()));
            }
        }
    }

    let mut node_ports: HashMap<i32, &Resource, Seeded> = HashMap::default();
    for (resource, service) in services {
        let selector = &service.spec.selector;
        let namespace = resource.key.namespace.as_str();
        // The templates with the rarest of the selector's pairs, then those with all of them.
        let candidates = selector
            .iter()
            .map(|(k, v)| label_pairs.get(&(namespace, k.as_str(), v.as_str())).map_or(&[][..], Vec::as_slice))
            .min_by_key(|c| c.len())
            .unwrap_or_default();
        let selected: Vec<&PodSpec> = candidates
            .iter()
            .map(|&i| templates[i])
            .filter(|(labels, _)| matches_labels(selector, labels))
            .map(|(_, spec)| spec)
            .collect();
        let selects_something = !selector.is_empty() && !selected.is_empty();
        if selector.is_empty() {
            findings.push(
                Diagnostic::warning(
                    &resource.file,
                    resource.pos_of("spec.selector"),
                    "service has no selector, so it routes to nothing",
                )
                .object(resource.key.to_string())
                .field("spec.selector"),
            );
        } else if !selects_something
            && !unloaded.iter().any(|(ns, labels)| ns == namespace && matches_labels(selector, labels))
        {
            let wanted: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            findings.push(
                Diagnostic::warning(
                    &resource.file,
                    resource.pos_of("spec.selector"),
                    format!("selector {} matches no pod template in namespace {namespace}", wanted.join(",")),
                )
                .object(resource.key.to_string())
                .field("spec.selector")
                .help("check the labels of the workload it should route to"),
            );
        }
        // berth reaches a pod on the host ports its declared container ports are published on.
        for (index, port) in service.spec.ports.iter().enumerate() {
            let target = port.target_port.clone().unwrap_or(IntOrString::Int(port.port));
            let declares = |spec: &&PodSpec| {
                spec.containers.iter().flat_map(|c| &c.ports).any(|p| match &target {
                    IntOrString::Int(n) => p.container_port == *n,
                    IntOrString::String(name) => p.name.as_deref() == Some(name.as_str()),
                })
            };
            if selects_something && !selected.iter().any(declares) {
                let help = match &target {
                    IntOrString::Int(n) => {
                        format!("add `- containerPort: {n}` under the ports of the container that serves it")
                    }
                    IntOrString::String(name) => {
                        format!("name a container port `{name}`, or give targetPort as a number the container declares")
                    }
                };
                let field = format!("spec.ports[{index}].targetPort");
                findings.push(
                    Diagnostic::warning(
                        &resource.file,
                        resource.pos_of(&field),
                        format!(
                            "port {} targets container port {target}, which no pod this service selects declares, so it reaches no pod",
                            port.port
                        ),
                    )
                    .object(resource.key.to_string())
                    .field(field)
                    .help(help),
                );
            }
        }
        for port in &service.spec.ports {
            let Some(node_port) = port.node_port else { continue };
            if let Some(other) = node_ports.insert(node_port, resource) {
                findings.push(
                    Diagnostic::error(
                        &resource.file,
                        resource.pos,
                        format!("node port {node_port} is also used by {}", other.key),
                    )
                    .object(resource.key.to_string())
                    .field("spec.ports")
                    .help(
                        "every node port must be unique on a node; pick another, or leave it out to have one allocated",
                    ),
                );
            }
        }
    }
    findings
}

/// Whether a ConfigMap or Secret holds `key`.
fn has_data_key(resource: &Resource, key: &str) -> bool {
    match &resource.object {
        Object::ConfigMap(c) => c.data.contains_key(key) || c.binary_data.contains_key(key),
        Object::Secret(_) => resource.sensitive_digests.contains_key(key),
        _ => false,
    }
}

fn data_keys(resource: &Resource) -> Vec<&str> {
    match &resource.object {
        Object::ConfigMap(c) => c.data.keys().chain(c.binary_data.keys()).map(String::as_str).collect(),
        Object::Secret(_) => resource.sensitive_digests.keys().map(String::as_str).collect(),
        _ => Vec::new(),
    }
}

/// True when every label of `selector` is in `labels` with the same value.
pub fn matches_labels(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(key, value)| labels.get(key) == Some(value))
}

/// Kubernetes' label selector semantics: matchLabels and every matchExpression must hold.
pub fn selector_matches(selector: &LabelSelector, labels: &Labels) -> bool {
    matches_labels(&selector.match_labels, labels)
        && selector.match_expressions.iter().all(|expression| {
            let value = labels.get(&expression.key);
            match expression.operator {
                SelectorOperator::In => value.is_some_and(|v| expression.values.contains(v)),
                SelectorOperator::NotIn => value.is_none_or(|v| !expression.values.contains(v)),
                SelectorOperator::Exists => value.is_some(),
                SelectorOperator::DoesNotExist => value.is_none(),
            }
        })
}

const DNS_LABEL_HELP: &str =
    "use at most 63 lowercase letters, digits and `-`, starting and ending with a letter or digit";
const DNS_SUBDOMAIN_HELP: &str =
    "use at most 253 lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit";
/// A file mode as people write it: `0440`.
fn octal(mode: i32) -> String {
    if mode < 0 { mode.to_string() } else { format!("0{mode:o}") }
}

const DNS_1035_HELP: &str =
    "use at most 63 lowercase letters, digits and `-`, starting with a letter and ending with a letter or digit";

/// The keys of a probe that are not its handler: with only these, a missing handler is the
/// mistake; with another (`grpc`, refused where it is), that one is.
const PROBE_FIELDS: &[&str] = &[
    "initialDelaySeconds",
    "periodSeconds",
    "timeoutSeconds",
    "successThreshold",
    "failureThreshold",
    "terminationGracePeriodSeconds",
];

const MODE_HELP: &str = "write a file mode from 0 to 0777, such as 0440 (octal) or 288 (decimal)";

/// Ports berth keeps on the loopback of every pod: its service proxy and its DNS answer there,
/// so an application cannot listen on them.
pub const RESERVED_POD_PORTS: [u16; 2] = [15001, 15053];

/// The folders and file name of a relative `/`-separated path that stays inside the folder it
/// is relative to; `None` for a path that is empty, absolute, or has an empty, `.` or `..` part.
pub fn relative_path_parts(path: &str) -> Option<(Vec<&str>, &str)> {
    if path.is_empty() || path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return None;
    }
    let file = parts.pop()?;
    Some((parts, file))
}

const PORT_NAME_HELP: &str = "use at most 15 lowercase letters, digits and `-`, with at least one letter";

pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A DNS-1035 label: a DNS label that starts with a letter (Kubernetes' rule for Service names).
pub fn is_dns_1035_label(name: &str) -> bool {
    is_dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase())
}

pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

fn is_port_name(name: &str) -> bool {
    name.len() <= 15 && is_dns_label(name) && !name.contains("--") && name.bytes().any(|b| b.is_ascii_lowercase())
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '_' | '-' | '.'))
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name.
fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if !is_dns_subdomain(prefix) {
            return Err("the prefix before `/` must be a DNS subdomain such as example.com".into());
        }
    }
    if name.is_empty() {
        return Err("the name part must not be empty".into());
    }
    check_label_value(name)
}

fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err("use at most 63 characters".into());
    }
    let bytes = value.as_bytes();
    let ok = bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err("use letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit".into())
    }
}

/// Decodes standard base64 (with padding, ignoring line breaks), or `None` when it is invalid.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    // The API server reads `data` as standard base64 with padding; line breaks inside a long
    // value (what `base64` prints at 76 columns) are allowed.
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(decode_base64("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode_base64("c2VjcmV0").as_deref(), Some(&b"secret"[..]));
        assert_eq!(decode_base64("not base64!"), None);
    }

    #[test]
    fn names_follow_kubernetes_rules() {
        assert!(is_dns_label("web-1"));
        assert!(!is_dns_label("Web"));
        assert!(!is_dns_label("-web"));
        assert!(is_dns_subdomain("web.shop"));
        assert!(check_qualified_name("app.kubernetes.io/name").is_ok());
        assert!(check_qualified_name("bad key").is_err());
        assert!(is_port_name("http"));
        assert!(!is_port_name("8080"));
    }
}
