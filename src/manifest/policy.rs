//! The operator's host-access policy: what a committed manifest may ask of a node. It comes
//! from the server's own configuration (`--policy FILE`), never from the watched repository,
//! so a committer cannot relax it. Checked on the manifest as written (the positioned tree),
//! so every refusal points at the line and field as written, and a missing field at the
//! container or pod that lacks it.

use super::yaml::{Node, Value};
use crate::diag::{Diagnostic, Pos};
use serde::Deserialize;

/// Host paths no manifest may mount under the default policy: the engine's socket and the
/// folders that hold the host's own configuration, devices, kernel interfaces and engine state.
pub const DENIED_HOST_PATHS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/berth",
];

/// The capabilities a Docker container has by default; adding any other is refused.
pub const DOCKER_DEFAULT_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The one capability of Docker's default set that Kubernetes' Baseline standard does not let a
/// container add.
const NOT_IN_BASELINE: &str = "NET_RAW";

/// A level after Kubernetes' Pod Security Standards; each level refuses all that the ones
/// before it refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// hostPath outside the denied folders; no privileged containers, no added capabilities
    /// beyond Docker's default set.
    #[default]
    Default,
    /// Also no hostPath volumes, no host ports, no seccomp `Unconfined` and no added
    /// capability outside the Baseline list, as the Baseline standard says.
    Baseline,
    /// Also, as the Restricted standard says: every container runs as a non-root user
    /// (`runAsNonRoot: true`, no `runAsUser: 0`), with `allowPrivilegeEscalation: false`,
    /// `capabilities.drop: [ALL]` (adding back only NET_BIND_SERVICE) and the RuntimeDefault
    /// seccomp profile.
    Restricted,
}

/// The policy file, as an operator writes it. Unknown keys are errors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub level: Option<String>,
    #[serde(default)]
    pub host_path: HostPathRules,
}

/// Rules for hostPath volumes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPathRules {
    /// When given, a hostPath must lie under one of these.
    #[serde(default)]
    pub allowed_prefixes: Option<Vec<String>>,
    /// Paths let through although a denied folder holds them (a CI runner's engine socket).
    #[serde(default)]
    pub allow: Vec<String>,
    /// More paths to deny, with everything under them.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// The policy in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub level: Level,
    pub allowed_prefixes: Option<Vec<String>>,
    pub allow: Vec<String>,
    pub denied: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            level: Level::Default,
            allowed_prefixes: None,
            allow: Vec::new(),
            denied: DENIED_HOST_PATHS.iter().map(|p| (*p).to_owned()).collect(),
        }
    }
}

impl Policy {
    /// Reads a policy file; `what` names it in errors, which give the line and the field.
    pub fn parse(what: &str, text: &str) -> Result<Policy, String> {
        let documents = super::yaml::parse(text).map_err(|e| format!("{what}:{}: {}", e.pos.line, e.message))?;
        let file = match documents.into_iter().find_map(|d| d.root) {
            None => PolicyFile::default(),
            Some(root) => {
                let context = super::de::Context::new(what, "the policy");
                let file = super::de::from_node::<PolicyFile>(&root, &context)
                    .map_err(|e| e.into_diagnostic(what, "the policy", root.pos).to_string())?;
                if let Some(first) = context.findings.into_inner().into_iter().find(Diagnostic::is_error) {
                    return Err(first.to_string());
                }
                file
            }
        };
        let level = match file.level.as_deref() {
            None | Some("default") => Level::Default,
            Some("baseline") => Level::Baseline,
            Some("restricted") => Level::Restricted,
            Some(other) => {
                return Err(format!("{what}: unknown level `{other}`; write `default`, `baseline` or `restricted`"));
            }
        };
        let mut policy = Policy { level, ..Policy::default() };
        for (field, paths) in [
            ("hostPath.allow", &file.host_path.allow),
            ("hostPath.deny", &file.host_path.deny),
            ("hostPath.allowedPrefixes", file.host_path.allowed_prefixes.as_ref().unwrap_or(&Vec::new())),
        ] {
            if let Some(bad) = paths.iter().find(|p| normalize(p).is_none()) {
                return Err(format!("{what}: {field}: `{bad}` is not an absolute path without `..`"));
            }
        }
        let normalized = |paths: &[String]| paths.iter().filter_map(|p| normalize(p)).collect::<Vec<_>>();
        policy.allow = normalized(&file.host_path.allow);
        policy.denied.extend(normalized(&file.host_path.deny));
        policy.allowed_prefixes = file.host_path.allowed_prefixes.as_deref().map(normalized);
        Ok(policy)
    }

    /// Denies berth's own state folders too (the server's and the agent's).
    pub fn deny_state_folder(&mut self, folder: &std::path::Path) {
        if let Some(path) = folder.to_str().and_then(normalize) {
            self.denied.push(path);
        }
    }

    /// Why a hostPath is refused, or `None` when it may be mounted.
    pub fn host_path_refusal(&self, path: &str) -> Option<String> {
        if self.level >= Level::Baseline {
            return Some(format!("the policy's level `{}` allows no hostPath volumes", self.level.name()));
        }
        let Some(path) = normalize(path) else {
            return Some("write an absolute path without `..`".into());
        };
        if self.allow.contains(&path) {
            return None;
        }
        // A denied path itself, a folder in one ("/" only as itself), or a folder holding one.
        let exact = self.denied.iter().find(|denied| **denied == path);
        let inside = || self.denied.iter().find(|denied| denied.as_str() != "/" && within(&path, denied));
        let holds = || self.denied.iter().find(|denied| within(denied, &path));
        if exact.is_some() {
            return Some(format!("{path} is denied by the host-access policy: it gives a container the host itself"));
        }
        if let Some(denied) = inside() {
            return Some(format!("{path} lies in {denied}, which the host-access policy denies"));
        }
        if let Some(denied) = holds() {
            return Some(format!("{path} holds {denied}, which the host-access policy denies"));
        }
        match &self.allowed_prefixes {
            Some(prefixes) if !prefixes.iter().any(|p| within(&path, p)) => {
                Some(format!("{path} is outside the hostPath prefixes the policy allows ({})", prefixes.join(", ")))
            }
            _ => None,
        }
    }

    /// The policy's findings for one object (`root`, its tree), labelled `object`.
    pub fn check(&self, file: &str, object: &str, root: &Node) -> Vec<Diagnostic> {
        let mut findings = Vec::new();
        let (spec, at) = match root.get("kind").and_then(Node::as_str) {
            Some("Pod") => (root.get("spec"), "spec"),
            _ => (root.get("spec").and_then(|s| s.get("template")).and_then(|t| t.get("spec")), "spec.template.spec"),
        };
        let Some(spec) = spec else { return findings };
        let mut refuse = |pos: Pos, field: String, message: String, help: &str| {
            findings.push(Diagnostic::error(file, pos, message).object(object).field(field).help(help));
        };
        for (index, volume) in items(spec.get("volumes")) {
            let Some(path) = volume.get("hostPath").and_then(|h| h.get("path")) else { continue };
            let Some(text) = path.as_str() else { continue };
            if let Some(why) = self.host_path_refusal(text) {
                refuse(
                    path.pos,
                    format!("{at}.volumes[{index}].hostPath.path"),
                    why,
                    "mount a folder made for this workload (say /srv/NAME), or have the operator allow it in the server's --policy file",
                );
            }
        }
        let pod_context = spec.get("securityContext");
        let pod_field =
            |field: &str| pod_context.and_then(|c| c.get(field)).filter(|n| !matches!(n.value, Value::Null));
        if self.level >= Level::Baseline {
            self.check_seccomp(pod_field("seccompProfile"), &format!("{at}.securityContext"), &mut refuse);
        }
        if self.level >= Level::Restricted
            && let Some(user) = pod_field("runAsUser")
            && matches!(user.value, Value::Int(0))
        {
            refuse(
                user.pos,
                format!("{at}.securityContext.runAsUser"),
                "the policy's level `restricted` allows no container to run as user 0 (root)".into(),
                "set a non-zero runAsUser",
            );
        }
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            for (index, container) in items(spec.get(list)) {
                let here = format!("{at}.{list}[{index}]");
                let context = container.get("securityContext");
                let field = |name: &str| context.and_then(|c| c.get(name)).filter(|n| !matches!(n.value, Value::Null));
                if let Some(privileged) = field("privileged")
                    && matches!(privileged.value, Value::Bool(true))
                {
                    refuse(
                        privileged.pos,
                        format!("{here}.securityContext.privileged"),
                        "privileged containers are refused by the host-access policy: one owns the host".into(),
                        "remove it; add only the capability the container needs, if Docker's default set lacks it the operator must allow it",
                    );
                }
                let capabilities = field("capabilities");
                let added = capabilities.and_then(|c| c.get("add"));
                for (cap_index, capability) in items(added) {
                    let Some(name) = capability.as_str() else { continue };
                    let bare = name.trim_start_matches("CAP_").to_ascii_uppercase();
                    let refusal = if !DOCKER_DEFAULT_CAPABILITIES.contains(&bare.as_str()) {
                        Some(format!(
                            "capability {bare} is beyond Docker's default set, which the host-access policy refuses"
                        ))
                    } else if self.level >= Level::Restricted && bare != "NET_BIND_SERVICE" {
                        Some(format!(
                            "the policy's level `restricted` lets a container add back only NET_BIND_SERVICE, not {bare}"
                        ))
                    } else if self.level >= Level::Baseline && bare == NOT_IN_BASELINE {
                        Some(format!("the policy's level `{}` allows no capability {bare}", self.level.name()))
                    } else {
                        None
                    };
                    if let Some(message) = refusal {
                        refuse(
                            capability.pos,
                            format!("{here}.securityContext.capabilities.add[{cap_index}]"),
                            message,
                            "remove it",
                        );
                    }
                }
                if self.level >= Level::Baseline {
                    for (port_index, port) in items(container.get("ports")) {
                        if let Some(host_port) = port.get("hostPort").filter(|p| !matches!(p.value, Value::Null)) {
                            refuse(
                                host_port.pos,
                                format!("{here}.ports[{port_index}].hostPort"),
                                format!("the policy's level `{}` allows no host ports", self.level.name()),
                                "remove it and reach the pod through a Service",
                            );
                        }
                    }
                    self.check_seccomp(field("seccompProfile"), &format!("{here}.securityContext"), &mut refuse);
                }
                if self.level >= Level::Restricted {
                    self.check_restricted(container, &here, at, pod_field, &mut refuse);
                }
            }
        }
        // A pod-level value every container inherits is one finding, not one per container.
        let mut seen = std::collections::HashSet::new();
        findings.retain(|finding| seen.insert(finding.to_string()));
        findings
    }

    /// Baseline: a seccomp profile, where one is given, is not `Unconfined`.
    fn check_seccomp(&self, profile: Option<&Node>, at: &str, refuse: &mut impl FnMut(Pos, String, String, &str)) {
        let Some(kind) = profile.and_then(|p| p.get("type")) else { return };
        if kind.as_str() == Some("Unconfined") {
            refuse(
                kind.pos,
                format!("{at}.seccompProfile.type"),
                format!("the policy's level `{}` allows no container without a seccomp profile", self.level.name()),
                "write RuntimeDefault, the engine's default profile",
            );
        }
    }

    /// Restricted, for one container: what it must say of itself, or its pod for it.
    fn check_restricted<'n>(
        &self,
        container: &'n Node,
        here: &str,
        pod_at: &str,
        pod_field: impl Fn(&str) -> Option<&'n Node>,
        refuse: &mut impl FnMut(Pos, String, String, &str),
    ) {
        let context = container.get("securityContext").filter(|c| !matches!(c.value, Value::Null));
        let field = |name: &str| context.and_then(|c| c.get(name)).filter(|n| !matches!(n.value, Value::Null));
        let is =
            |node: Option<&Node>, value: bool| node.is_some_and(|n| matches!(n.value, Value::Bool(b) if b == value));
        // Where a missing field is reported: the container's securityContext, else the container.
        let missing_at = context.map_or(container.pos, |c| c.pos);
        let context_at = format!("{here}.securityContext");
        match field("allowPrivilegeEscalation") {
            Some(node) if is(Some(node), false) => {}
            found => refuse(
                found.map_or(missing_at, |n| n.pos),
                format!("{context_at}.allowPrivilegeEscalation"),
                "the policy's level `restricted` needs allowPrivilegeEscalation: false".into(),
                "add `allowPrivilegeEscalation: false` to the container's securityContext",
            ),
        }
        // Said false by the container, or by its pod for it, or said nowhere.
        let non_root = match field("runAsNonRoot") {
            Some(own) => (!is(Some(own), true)).then(|| (own.pos, format!("{context_at}.runAsNonRoot"))),
            None => match pod_field("runAsNonRoot") {
                Some(pod) if is(Some(pod), true) => None,
                Some(pod) => Some((pod.pos, format!("{pod_at}.securityContext.runAsNonRoot"))),
                None => Some((missing_at, format!("{context_at}.runAsNonRoot"))),
            },
        };
        if let Some((pos, field)) = non_root {
            refuse(
                pos,
                field,
                "the policy's level `restricted` needs runAsNonRoot: true, on the container or its pod".into(),
                "add `runAsNonRoot: true` to the pod's securityContext (and a runAsUser if the image names no non-root user)",
            );
        }
        if let Some(user) = field("runAsUser").filter(|u| matches!(u.value, Value::Int(0))) {
            refuse(
                user.pos,
                format!("{context_at}.runAsUser"),
                "the policy's level `restricted` allows no container to run as user 0 (root)".into(),
                "set a non-zero runAsUser",
            );
        }
        // `Unconfined` was refused already, as Baseline refuses it.
        let profile = field("seccompProfile").or_else(|| pod_field("seccompProfile"));
        let profile_type = profile.and_then(|p| p.get("type")).and_then(Node::as_str);
        if !matches!(profile_type, Some("RuntimeDefault" | "Unconfined")) {
            refuse(
                field("seccompProfile").map_or(missing_at, |n| n.pos),
                format!("{context_at}.seccompProfile"),
                "the policy's level `restricted` needs the RuntimeDefault seccomp profile, on the container or its pod"
                    .into(),
                "add `seccompProfile: {type: RuntimeDefault}` to the pod's securityContext",
            );
        }
        let drop = field("capabilities").and_then(|c| c.get("drop"));
        if !items(drop).any(|(_, d)| d.as_str().is_some_and(|name| name.eq_ignore_ascii_case("ALL"))) {
            refuse(
                drop.map_or(missing_at, |d| d.pos),
                format!("{context_at}.capabilities.drop"),
                "the policy's level `restricted` needs every capability dropped (`drop: [ALL]`)".into(),
                "add `capabilities: {drop: [ALL]}` to the container's securityContext",
            );
        }
    }
}

impl Level {
    /// The level as the policy file writes it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Default => "default",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// The items of a sequence node, with their index; nothing for anything else.
fn items(node: Option<&Node>) -> impl Iterator<Item = (usize, &Node)> {
    let items: &[Node] = match node.map(|n| &n.value) {
        Some(Value::Seq(items)) => items,
        _ => &[],
    };
    items.iter().enumerate()
}

/// An absolute path with `.`, empty and trailing components removed; `None` when it is not
/// absolute or climbs with `..` (which the node would resolve where the manifest cannot see).
pub fn normalize(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => parts.push(part),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Whether `path` is `folder` or lies in it (both normalized).
pub fn within(path: &str, folder: &str) -> bool {
    folder == "/" || path == folder || path.strip_prefix(folder).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_are_judged_by_the_denied_folders_they_touch() {
        let policy = Policy::default();
        for (path, allowed) in [
            ("/srv/data", true),
            ("/tmp/cache", true),
            ("/home/app", true),
            ("/var/run/docker.sock", false),
            ("/run/docker.sock", false),
            ("/", false),
            ("//", false),
            ("/etc", false),
            ("/etc/", false),
            ("/etc/ssl/certs", false),
            ("/./etc", false),
            ("/srv/../etc", false),
            ("srv", false),
            // A folder that holds a denied one gives it to the container.
            ("/var", false),
            ("/var/lib", false),
            ("/var/log", true),
            ("/proc/1/root", false),
            ("/etcetera", true),
        ] {
            assert_eq!(
                policy.host_path_refusal(path).is_none(),
                allowed,
                "{path}: {:?}",
                policy.host_path_refusal(path)
            );
        }
    }

    #[test]
    fn the_policy_file_allows_denies_and_restricts() {
        let policy = Policy::parse(
            "policy.yaml",
            "hostPath:\n  allow: [/var/run/docker.sock]\n  deny: [/srv/secret]\n  allowedPrefixes: [/srv]\n",
        )
        .unwrap();
        assert_eq!(policy.host_path_refusal("/var/run/docker.sock"), None);
        assert!(policy.host_path_refusal("/var/run").is_some());
        assert!(policy.host_path_refusal("/srv/secret/x").is_some());
        assert!(policy.host_path_refusal("/srv/data").is_none());
        assert!(policy.host_path_refusal("/opt/data").unwrap().contains("outside the hostPath prefixes"));
        let baseline = Policy::parse("p", "level: baseline\n").unwrap();
        assert!(baseline.host_path_refusal("/srv/data").is_some());
        for (text, error) in [
            ("hostpath: {}\n", "unknown field"),
            ("level: strict\n", "unknown level"),
            ("hostPath:\n  allow: [relative]\n", "not an absolute path"),
            ("hostPath:\n  deny: [/srv/../etc]\n", "not an absolute path"),
        ] {
            let refused = Policy::parse("policy.yaml", text).unwrap_err();
            assert!(refused.contains(error) && refused.starts_with("policy.yaml"), "{text}: {refused}");
        }
    }

    fn findings(policy: &Policy, manifest: &str) -> Vec<String> {
        let documents = crate::manifest::yaml::parse(manifest).unwrap();
        let root = documents.into_iter().find_map(|d| d.root).unwrap();
        policy.check("app.yaml", "Deployment/web", &root).iter().map(ToString::to_string).collect()
    }

    const RESTRICTED_POD: &str = "kind: Deployment
spec:
  template:
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: 1000
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: web
          image: app:1
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
";

    /// Issue 14: the Restricted standard, checked on the manifest as written, each refusal at
    /// its field, or at the container that lacks it.
    #[test]
    fn the_restricted_level_asks_what_kubernetes_restricted_asks() {
        let restricted = Policy::parse("policy.yaml", "level: restricted\n").unwrap();
        assert_eq!(findings(&restricted, RESTRICTED_POD), Vec::<String>::new());
        assert_eq!(findings(&Policy::default(), RESTRICTED_POD), Vec::<String>::new());
        for (from, to, expected) in [
            (
                "allowPrivilegeEscalation: false",
                "allowPrivilegeEscalation: true",
                ":13:39: error: Deployment/web: spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation",
            ),
            (
                "            allowPrivilegeEscalation: false\n",
                "",
                ":13:13: error: Deployment/web: spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation",
            ),
            (
                "        runAsNonRoot: true\n",
                "",
                "containers[0].securityContext.runAsNonRoot: the policy's level `restricted` needs runAsNonRoot: true",
            ),
            (
                "runAsUser: 1000",
                "runAsUser: 0",
                "spec.template.spec.securityContext.runAsUser: the policy's level `restricted` allows no container to run as user 0",
            ),
            (
                "        seccompProfile: {type: RuntimeDefault}\n",
                "",
                "containers[0].securityContext.seccompProfile: the policy's level `restricted` needs the RuntimeDefault",
            ),
            (
                "{type: RuntimeDefault}",
                "{type: Unconfined}",
                "spec.template.spec.securityContext.seccompProfile.type: the policy's level `restricted` allows no container without a seccomp profile",
            ),
            (
                "drop: [ALL]",
                "drop: [NET_RAW]",
                "capabilities.drop: the policy's level `restricted` needs every capability dropped",
            ),
            (
                "add: [NET_BIND_SERVICE]",
                "add: [CHOWN]",
                "capabilities.add[0]: the policy's level `restricted` lets a container add back only NET_BIND_SERVICE, not CHOWN",
            ),
        ] {
            let manifest = RESTRICTED_POD.replace(from, to);
            assert_ne!(manifest, RESTRICTED_POD, "{from}");
            let found = findings(&restricted, &manifest);
            assert!(found.len() == 1 && found[0].contains(expected), "{from} -> {to}: {found:#?}");
        }
        // The pod's `runAsNonRoot: false` is one finding at the pod's field, however many
        // containers inherit it.
        let two = RESTRICTED_POD.replace("runAsNonRoot: true", "runAsNonRoot: false")
            + "        - name: side\n          image: app:1\n          securityContext:\n            allowPrivilegeEscalation: false\n            capabilities: {drop: [ALL]}\n";
        let found = findings(&restricted, &two);
        assert!(
            found.len() == 1
                && found[0].contains(":6:23: error: Deployment/web: spec.template.spec.securityContext.runAsNonRoot"),
            "{found:#?}"
        );
        // A container without any securityContext is told each thing it lacks, at itself.
        let bare = "kind: Pod\nspec:\n  containers:\n    - name: web\n      image: app:1\n";
        let found = findings(&restricted, bare);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found.iter().all(|f| f.contains("app.yaml:4:7: error")), "{found:#?}");
    }

    #[test]
    fn the_baseline_level_refuses_unconfined_seccomp_and_net_raw() {
        let baseline = Policy::parse("policy.yaml", "level: baseline\n").unwrap();
        let pod = "kind: Pod\nspec:\n  containers:\n    - name: web\n      image: app:1\n      securityContext:\n        seccompProfile: {type: Unconfined}\n        capabilities: {add: [NET_RAW, CHOWN]}\n";
        let found = findings(&baseline, pod);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].contains("capabilities.add[0]: the policy's level `baseline` allows no capability NET_RAW"),
            "{found:#?}"
        );
        assert!(
            found[1].contains(
                "seccompProfile.type: the policy's level `baseline` allows no container without a seccomp profile"
            ),
            "{found:#?}"
        );
        assert_eq!(findings(&Policy::default(), pod), Vec::<String>::new());
    }
}
