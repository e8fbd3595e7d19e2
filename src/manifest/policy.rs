//! The operator's host-access policy: what a committed manifest may ask of a node. It comes
//! from the server's own configuration (`--policy FILE`), never from the watched repository,
//! so a committer cannot relax it. Checked on the manifest as written (the positioned tree),
//! because most of what it looks at (`securityContext`) is a field berth accepts without
//! acting on.

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

/// A level after Kubernetes' Pod Security Standards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// hostPath outside the denied folders; no privileged containers, no added capabilities.
    #[default]
    Default,
    /// Also no hostPath volumes and no host ports, as the Baseline standard says.
    Baseline,
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
            Some("restricted") => {
                return Err(format!(
                    "{what}: level `restricted` needs berth to apply securityContext (runAsNonRoot, allowPrivilegeEscalation, seccomp), which it does not yet; use `baseline`"
                ));
            }
            Some(other) => return Err(format!("{what}: unknown level `{other}`; write `default` or `baseline`")),
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
        if self.level == Level::Baseline {
            return Some("the policy's level `baseline` allows no hostPath volumes".into());
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
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            for (index, container) in items(spec.get(list)) {
                let here = format!("{at}.{list}[{index}]");
                let context = container.get("securityContext");
                if let Some(privileged) = context.and_then(|c| c.get("privileged"))
                    && matches!(privileged.value, Value::Bool(true))
                {
                    refuse(
                        privileged.pos,
                        format!("{here}.securityContext.privileged"),
                        "privileged containers are refused by the host-access policy: one owns the host".into(),
                        "remove it; add only the capability the container needs, if Docker's default set lacks it the operator must allow it",
                    );
                }
                let added = context.and_then(|c| c.get("capabilities")).and_then(|c| c.get("add"));
                for (cap_index, capability) in items(added) {
                    let Some(name) = capability.as_str() else { continue };
                    let bare = name.trim_start_matches("CAP_").to_ascii_uppercase();
                    if !DOCKER_DEFAULT_CAPABILITIES.contains(&bare.as_str()) {
                        refuse(
                            capability.pos,
                            format!("{here}.securityContext.capabilities.add[{cap_index}]"),
                            format!(
                                "capability {bare} is beyond Docker's default set, which the host-access policy refuses"
                            ),
                            "remove it",
                        );
                    }
                }
                if self.level == Level::Baseline {
                    for (port_index, port) in items(container.get("ports")) {
                        if let Some(host_port) = port.get("hostPort").filter(|p| !matches!(p.value, Value::Null)) {
                            refuse(
                                host_port.pos,
                                format!("{here}.ports[{port_index}].hostPort"),
                                "the policy's level `baseline` allows no host ports".into(),
                                "remove it and reach the pod through a Service",
                            );
                        }
                    }
                }
            }
        }
        findings
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
            ("level: restricted\n", "does not yet"),
            ("level: strict\n", "unknown level"),
            ("hostPath:\n  allow: [relative]\n", "not an absolute path"),
            ("hostPath:\n  deny: [/srv/../etc]\n", "not an absolute path"),
        ] {
            let refused = Policy::parse("policy.yaml", text).unwrap_err();
            assert!(refused.contains(error) && refused.starts_with("policy.yaml"), "{text}: {refused}");
        }
    }
}
