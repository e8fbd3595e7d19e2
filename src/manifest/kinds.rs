//! Every built-in Kubernetes kind, in its tier: what berth does with an object of that kind.
//!
//! Kinds berth runs are [`super::Kind`]. The others are here, so that a real repository loads:
//! kinds that have no meaning on berth's nodes are accepted and not acted on (one warning per
//! kind says what berth does instead), kinds berth will run later say so, and removed API
//! versions say what replaces them. A kind from an API group Kubernetes does not serve is a
//! custom resource: skipped with a warning, or an error when `berth.yaml` asks for that.
//! Pure data and lookups; no I/O.

/// What berth does with an object of a kind it does not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Loads and is not acted on; the note says what berth does instead.
    Accepted(&'static str),
    /// berth will run it later: an error naming the kind.
    NotYet,
}

/// `(kind, tier)` for the built-in kinds berth does not run.
pub const OTHER_KINDS: &[(&str, Tier)] = &[
    ("ServiceAccount", Tier::Accepted("berth has no service accounts; pods get no API token")),
    ("Role", Tier::Accepted("berth has no Kubernetes API to authorize; its own roles are API tokens")),
    ("ClusterRole", Tier::Accepted("berth has no Kubernetes API to authorize; its own roles are API tokens")),
    ("RoleBinding", Tier::Accepted("berth has no Kubernetes API to authorize; its own roles are API tokens")),
    ("ClusterRoleBinding", Tier::Accepted("berth has no Kubernetes API to authorize; its own roles are API tokens")),
    ("PodDisruptionBudget", Tier::Accepted("berth rolls within maxUnavailable and evicts nothing voluntarily")),
    ("NetworkPolicy", Tier::Accepted("berth does not filter traffic between pods")),
    ("PriorityClass", Tier::Accepted("berth does not preempt pods")),
    ("StorageClass", Tier::Accepted("berth's one storage class is the node's local volumes")),
    ("LimitRange", Tier::Accepted("berth applies no namespace defaults for requests and limits")),
    ("ResourceQuota", Tier::Accepted("berth enforces no namespace quotas")),
    ("RuntimeClass", Tier::Accepted("pods run on the node's Docker engine")),
    ("CustomResourceDefinition", Tier::Accepted("berth serves no custom resources")),
    ("APIService", Tier::Accepted("berth serves no aggregated APIs")),
    ("ValidatingWebhookConfiguration", Tier::Accepted("berth calls no admission webhooks")),
    ("MutatingWebhookConfiguration", Tier::Accepted("berth calls no admission webhooks")),
    ("ValidatingAdmissionPolicy", Tier::Accepted("berth runs no admission policies")),
    ("ValidatingAdmissionPolicyBinding", Tier::Accepted("berth runs no admission policies")),
    ("MutatingAdmissionPolicy", Tier::Accepted("berth runs no admission policies")),
    ("MutatingAdmissionPolicyBinding", Tier::Accepted("berth runs no admission policies")),
    ("FlowSchema", Tier::Accepted("berth's API has no priority and fairness")),
    ("PriorityLevelConfiguration", Tier::Accepted("berth's API has no priority and fairness")),
    ("CSIDriver", Tier::Accepted("berth uses no CSI drivers")),
    ("CSINode", Tier::Accepted("berth uses no CSI drivers")),
    ("CSIStorageCapacity", Tier::Accepted("berth uses no CSI drivers")),
    ("VolumeAttachment", Tier::Accepted("berth uses no CSI drivers")),
    ("VolumeAttributesClass", Tier::Accepted("berth uses no CSI drivers")),
    ("CertificateSigningRequest", Tier::Accepted("berth issues node certificates itself")),
    ("ClusterTrustBundle", Tier::Accepted("berth issues node certificates itself")),
    ("Endpoints", Tier::Accepted("berth finds a Service's endpoints from its selector")),
    ("EndpointSlice", Tier::Accepted("berth finds a Service's endpoints from its selector")),
    ("Event", Tier::Accepted("events are observed, never declared")),
    ("Lease", Tier::Accepted("leases are written by controllers, never declared")),
    ("ControllerRevision", Tier::Accepted("berth keeps revisions by commit")),
    ("ComponentStatus", Tier::Accepted("written by the cluster")),
    ("Node", Tier::Accepted("berth's nodes join with `berth agent`")),
    ("Binding", Tier::Accepted("berth schedules pods itself")),
    ("IPAddress", Tier::Accepted("berth allocates service addresses itself")),
    ("ServiceCIDR", Tier::Accepted("berth allocates service addresses itself")),
    ("DeviceClass", Tier::Accepted("berth does not allocate devices")),
    ("ResourceClaim", Tier::Accepted("berth does not allocate devices")),
    ("ResourceClaimTemplate", Tier::Accepted("berth does not allocate devices")),
    ("ResourceSlice", Tier::Accepted("berth does not allocate devices")),
    ("HorizontalPodAutoscaler", Tier::NotYet),
    ("Ingress", Tier::NotYet),
    ("IngressClass", Tier::NotYet),
    ("PersistentVolume", Tier::NotYet),
    ("PodTemplate", Tier::NotYet),
];

/// `(apiVersion, kind or "*", what to write instead)`: API versions Kubernetes removed.
pub const REMOVED: &[(&str, &str, &str)] = &[
    ("extensions/v1beta1", "Deployment", "apps/v1 (removed in Kubernetes 1.16)"),
    ("extensions/v1beta1", "DaemonSet", "apps/v1 (removed in Kubernetes 1.16)"),
    ("extensions/v1beta1", "ReplicaSet", "apps/v1 (removed in Kubernetes 1.16)"),
    ("extensions/v1beta1", "Ingress", "networking.k8s.io/v1 (removed in Kubernetes 1.22)"),
    ("extensions/v1beta1", "NetworkPolicy", "networking.k8s.io/v1 (removed in Kubernetes 1.16)"),
    (
        "extensions/v1beta1",
        "PodSecurityPolicy",
        "Pod Security Admission labels on the namespace (removed in Kubernetes 1.25)",
    ),
    (
        "policy/v1beta1",
        "PodSecurityPolicy",
        "Pod Security Admission labels on the namespace (removed in Kubernetes 1.25)",
    ),
    ("apps/v1beta1", "*", "apps/v1 (removed in Kubernetes 1.16)"),
    ("apps/v1beta2", "*", "apps/v1 (removed in Kubernetes 1.16)"),
    ("policy/v1beta1", "PodDisruptionBudget", "policy/v1 (removed in Kubernetes 1.25)"),
    ("batch/v1beta1", "CronJob", "batch/v1 (removed in Kubernetes 1.25)"),
    ("autoscaling/v2beta1", "*", "autoscaling/v2 (removed in Kubernetes 1.25)"),
    ("autoscaling/v2beta2", "*", "autoscaling/v2 (removed in Kubernetes 1.26)"),
    ("networking.k8s.io/v1beta1", "*", "networking.k8s.io/v1 (removed in Kubernetes 1.22)"),
    ("rbac.authorization.k8s.io/v1beta1", "*", "rbac.authorization.k8s.io/v1 (removed in Kubernetes 1.22)"),
    ("apiextensions.k8s.io/v1beta1", "*", "apiextensions.k8s.io/v1 (removed in Kubernetes 1.22)"),
];

/// The API groups Kubernetes itself serves; a kind from any other group is a custom resource.
pub const BUILT_IN_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "extensions",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "node.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "certificates.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "resource.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "internal.apiserver.k8s.io",
    "storagemigration.k8s.io",
];

/// The start of the warning for an accepted kind; the loader keeps one per kind.
pub const ACCEPTED_PREFIX: &str = "kind `";
pub const ACCEPTED_SUFFIX: &str = "` is accepted but not acted on by berth";
/// The start of the warning for a custom resource; `berth.yaml` can make it an error.
pub const CUSTOM_PREFIX: &str = "custom resource ";

/// The tier of a built-in kind berth does not run.
pub fn tier(kind: &str) -> Option<Tier> {
    OTHER_KINDS.iter().find(|(name, _)| *name == kind).map(|(_, tier)| *tier)
}

/// What replaces a removed `apiVersion` of `kind`, if it was removed.
pub fn removed(api_version: &str, kind: &str) -> Option<&'static str> {
    REMOVED
        .iter()
        .find(|(version, k, _)| *version == api_version && (*k == kind || *k == "*"))
        .map(|(_, _, instead)| *instead)
}

/// The API group of an `apiVersion` (`apps/v1` is `apps`, `v1` is the core group).
pub fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// Whether an `apiVersion` belongs to a group Kubernetes does not serve itself.
pub fn is_custom(api_version: &str) -> bool {
    !BUILT_IN_GROUPS.contains(&group(api_version))
}

/// Every kind name Kubernetes serves, for typo suggestions.
pub fn all_names() -> impl Iterator<Item = &'static str> {
    super::Kind::ALL.iter().map(|k| k.name()).chain(OTHER_KINDS.iter().map(|(name, _)| *name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_removed_versions() {
        assert!(!is_custom("v1") && !is_custom("apps/v1") && !is_custom("networking.k8s.io/v1"));
        assert!(is_custom("monitoring.coreos.com/v1") && is_custom("argoproj.io/v1alpha1"));
        assert_eq!(removed("extensions/v1beta1", "Deployment"), Some("apps/v1 (removed in Kubernetes 1.16)"));
        assert!(removed("apps/v1beta2", "StatefulSet").is_some());
        assert_eq!(removed("apps/v1", "Deployment"), None);
        assert_eq!(tier("ServiceAccount").map(|t| matches!(t, Tier::Accepted(_))), Some(true));
        assert_eq!(tier("PersistentVolume"), Some(Tier::NotYet));
        assert_eq!(tier("StatefulSet"), None, "berth runs StatefulSets");
    }
}
