//! The field tiers: the one table that says which real Kubernetes fields berth accepts without
//! acting on them, and which it refuses with a reason.
//!
//! Every field of the manifest types in [`super::types`] is **honored**. A field listed in
//! [`ACCEPTED`] loads and is reported as a warning at its file:line. A field listed in [`REFUSED`]
//! is a real Kubernetes field that berth cannot run faithfully, so it is an error with the reason.
//! Any other key is an error with a suggestion. The README's manifest reference is generated from
//! this table and the types, and a test keeps the two equal.

/// `(struct, field, note)`: accepted fields, with what a user should know about them.
pub const ACCEPTED: &[(&str, &str, &str)] = &[
    ("ObjectMeta", "uid", "written by the cluster"),
    ("ObjectMeta", "resourceVersion", "written by the cluster"),
    ("ObjectMeta", "generation", "written by the cluster"),
    ("ObjectMeta", "creationTimestamp", "written by the cluster"),
    ("ObjectMeta", "deletionTimestamp", "written by the cluster"),
    ("ObjectMeta", "deletionGracePeriodSeconds", "written by the cluster"),
    ("ObjectMeta", "selfLink", "written by the cluster"),
    ("ObjectMeta", "managedFields", "written by the cluster"),
    ("ObjectMeta", "finalizers", ""),
    ("ObjectMeta", "ownerReferences", ""),
    ("ObjectMeta", "generateName", "berth needs a fixed name"),
    // A pod template's metadata is a whole ObjectMeta in Kubernetes; only labels and
    // annotations mean anything there (`kubectl create --dry-run -o yaml` prints
    // `creationTimestamp: null`).
    ("TemplateMeta", "name", "pods are named after their workload"),
    ("TemplateMeta", "namespace", "pods run in their workload's namespace"),
    ("TemplateMeta", "generateName", "pods are named after their workload"),
    ("TemplateMeta", "creationTimestamp", "written by the cluster"),
    ("TemplateMeta", "uid", "written by the cluster"),
    ("TemplateMeta", "resourceVersion", "written by the cluster"),
    ("TemplateMeta", "generation", "written by the cluster"),
    ("TemplateMeta", "deletionTimestamp", "written by the cluster"),
    ("TemplateMeta", "deletionGracePeriodSeconds", "written by the cluster"),
    ("TemplateMeta", "selfLink", "written by the cluster"),
    ("TemplateMeta", "managedFields", "written by the cluster"),
    ("TemplateMeta", "finalizers", ""),
    ("TemplateMeta", "ownerReferences", ""),
    ("Namespace", "spec", ""),
    ("Namespace", "status", "status is observed, never declared"),
    ("Pod", "status", "status is observed, never declared"),
    ("ReplicationController", "status", "status is observed, never declared"),
    ("ReplicaSet", "status", "status is observed, never declared"),
    ("Deployment", "status", "status is observed, never declared"),
    ("DaemonSet", "status", "status is observed, never declared"),
    ("Job", "status", "status is observed, never declared"),
    ("StatefulSet", "status", "status is observed, never declared"),
    ("PersistentVolumeClaim", "status", "status is observed, never declared"),
    ("ClaimTemplate", "status", "status is observed, never declared"),
    ("CronJob", "status", "status is observed, never declared"),
    ("JobSpec", "selector", "berth finds a Job's pods itself; they are never adopted"),
    ("JobSpec", "manualSelector", "berth finds a Job's pods itself; they are never adopted"),
    ("Service", "status", "status is observed, never declared"),
    ("ConfigMap", "immutable", ""),
    ("Secret", "immutable", ""),
    ("PodSpec", "serviceAccountName", "berth has no service accounts"),
    ("PodSpec", "serviceAccount", "berth has no service accounts"),
    ("PodSpec", "automountServiceAccountToken", "berth has no service accounts"),
    ("PodSpec", "imagePullSecrets", "the agent pulls with the node's Docker credentials"),
    ("PodSpec", "affinity", "berth spreads replicas across nodes and honors nodeSelector"),
    ("PodSpec", "tolerations", "berth has no taints"),
    ("PodSpec", "topologySpreadConstraints", "berth spreads replicas across nodes"),
    ("PodSpec", "priorityClassName", ""),
    ("PodSpec", "priority", ""),
    ("PodSpec", "preemptionPolicy", ""),
    ("PodSpec", "schedulerName", ""),
    ("PodSpec", "dnsPolicy", "pods resolve services through the node agent"),
    ("PodSpec", "dnsConfig", "pods resolve services through the node agent"),
    ("PodSpec", "enableServiceLinks", ""),
    ("PodSpec", "hostname", ""),
    ("PodSpec", "subdomain", ""),
    ("PodSpec", "setHostnameAsFQDN", ""),
    ("PodSpec", "hostAliases", ""),
    ("PodSpec", "activeDeadlineSeconds", ""),
    ("PodSpec", "runtimeClassName", ""),
    ("PodSpec", "overhead", ""),
    ("PodSpec", "readinessGates", ""),
    ("PodSpec", "os", ""),
    ("Container", "imagePullPolicy", "the agent pulls an image only when it is absent, as IfNotPresent does"),
    ("Container", "terminationMessagePath", ""),
    ("Container", "terminationMessagePolicy", ""),
    ("Container", "stdin", ""),
    ("Container", "stdinOnce", ""),
    ("Container", "tty", ""),
    ("Container", "resizePolicy", ""),
    ("PodSecurityContext", "fsGroupChangePolicy", "berth sets the group of the pod's volumes when it makes them"),
    ("PodSecurityContext", "supplementalGroupsPolicy", "the image's own groups are kept, as Merge does"),
    ("PodSecurityContext", "seLinuxOptions", "the engine's default SELinux labels apply"),
    ("PodSecurityContext", "seLinuxChangePolicy", "the engine's default SELinux labels apply"),
    ("PodSecurityContext", "appArmorProfile", "the engine's default AppArmor profile applies"),
    ("PodSecurityContext", "windowsOptions", "berth's nodes run Linux containers"),
    ("SecurityContext", "seLinuxOptions", "the engine's default SELinux labels apply"),
    ("SecurityContext", "appArmorProfile", "the engine's default AppArmor profile applies"),
    ("SecurityContext", "windowsOptions", "berth's nodes run Linux containers"),
    ("SecurityContext", "procMount", "/proc is masked as the engine does by default"),
    ("Lifecycle", "stopSignal", "the image's stop signal is sent"),
    ("ContainerPort", "hostIP", "ports are published on the node's address"),
    ("Probe", "terminationGracePeriodSeconds", "the pod's grace period applies"),
    ("HttpGetAction", "host", "probes connect to the pod"),
    ("VolumeMount", "mountPropagation", ""),
    ("EmptyDirVolumeSource", "medium", "emptyDir is always a Docker volume on disk"),
    ("EmptyDirVolumeSource", "sizeLimit", ""),
    ("HostPathVolumeSource", "type", "the path is bind-mounted as it is"),
    ("DeploymentSpec", "paused", ""),
    ("ServiceSpec", "sessionAffinity", ""),
    ("ServiceSpec", "sessionAffinityConfig", ""),
    ("ServiceSpec", "externalTrafficPolicy", "every node forwards to ready pods on any node"),
    ("ServiceSpec", "internalTrafficPolicy", ""),
    ("ServiceSpec", "ipFamilies", ""),
    ("ServiceSpec", "ipFamilyPolicy", ""),
    ("ServiceSpec", "clusterIPs", ""),
    ("ServiceSpec", "publishNotReadyAddresses", ""),
    ("ServiceSpec", "allocateLoadBalancerNodePorts", "LoadBalancer is served as NodePort"),
    ("ServiceSpec", "loadBalancerClass", "LoadBalancer is served as NodePort"),
    ("ServiceSpec", "loadBalancerIP", "LoadBalancer is served as NodePort"),
    ("ServiceSpec", "loadBalancerSourceRanges", "LoadBalancer is served as NodePort"),
    ("ServicePort", "appProtocol", ""),
];

/// `(struct, field, reason)`: real Kubernetes fields berth refuses, because running the object
/// without them would do something else than the author meant.
pub const REFUSED: &[(&str, &str, &str)] = &[
    ("PodSpec", "ephemeralContainers", "ephemeral containers are not supported"),
    ("PodSpec", "hostNetwork", "pods always get their own network namespace"),
    ("PodSpec", "hostPID", "pods always get their own process namespace"),
    ("PodSpec", "hostIPC", "pods always get their own IPC namespace"),
    ("PodSpec", "shareProcessNamespace", "not supported"),
    ("PodSpec", "nodeName", "berth schedules pods itself; use nodeSelector"),
    ("Container", "volumeDevices", "raw block devices are not supported"),
    ("VolumeMount", "subPathExpr", "not supported; use subPath"),
    ("VolumeMount", "recursiveReadOnly", "not supported"),
    ("Volume", "projected", "not supported; use configMap or secret volumes"),
    ("Volume", "nfs", "mount the NFS share on the node and use hostPath"),
    ("Volume", "csi", "not supported"),
    ("Volume", "ephemeral", "not supported; use emptyDir"),
    ("Probe", "grpc", "grpc probes are not supported; use httpGet, tcpSocket or exec"),
    ("ServiceSpec", "externalIPs", "not supported; use NodePort"),
    ("ServiceSpec", "externalName", "ExternalName services are not supported"),
    ("ServiceSpec", "healthCheckNodePort", "not supported"),
    ("LifecycleHandler", "tcpSocket", "Kubernetes does not run tcpSocket hooks either; use exec, httpGet or sleep"),
    ("PodSecurityContext", "sysctls", "not supported; set the sysctl on the node"),
    ("SeccompProfile", "localhostProfile", "berth's nodes keep no seccomp profiles of their own; use RuntimeDefault"),
    ("JobSpec", "backoffLimitPerIndex", "not supported; backoffLimit counts the failures of every index together"),
    ("JobSpec", "maxFailedIndexes", "not supported; backoffLimit counts the failures of every index together"),
    (
        "JobSpec",
        "podReplacementPolicy",
        "a failed pod is replaced once it has stopped, as Kubernetes' Failed policy does",
    ),
    ("JobSpec", "successPolicy", "not supported; a Job succeeds when `completions` pods (or indexes) have"),
    ("JobSpec", "managedBy", "berth runs every Job itself"),
    ("JobSpec", "scheduling", "berth places a Job's pods one by one; there is no gang scheduling"),
    ("StatefulSetSpec", "ordinals", "not supported; a StatefulSet's ordinals start at 0"),
    (
        "PersistentVolumeClaimSpec",
        "selector",
        "berth makes each claim's volume itself; there are no PersistentVolumes to select",
    ),
    (
        "PersistentVolumeClaimSpec",
        "volumeName",
        "berth makes each claim's volume itself; there are no PersistentVolumes to bind",
    ),
    ("PersistentVolumeClaimSpec", "dataSource", "not supported; a claim's volume starts empty"),
    ("PersistentVolumeClaimSpec", "dataSourceRef", "not supported; a claim's volume starts empty"),
    ("PersistentVolumeClaimSpec", "volumeAttributesClassName", "berth has one storage class, `local`"),
    ("PodFailurePolicyRule", "onPodConditions", "berth's pods have no disruption conditions; match onExitCodes"),
];

/// `(value, one value berth takes in its place, reason)`: values of Kubernetes' enumerations
/// that berth refuses, told apart by a value berth takes for the same field.
pub const REFUSED_VALUES: &[(&str, &str, &str)] = &[
    ("Block", "Filesystem", "berth's claims are folders; raw block devices are not supported"),
    ("Localhost", "RuntimeDefault", "berth's nodes keep no seccomp profiles of their own; use RuntimeDefault"),
    ("SCTP", "TCP", "berth's nodes route TCP and UDP only"),
    (
        "ExternalName",
        "ClusterIP",
        "ExternalName services are not supported: give the pods the external name in their configuration",
    ),
];

/// The reason a value of a Kubernetes enumeration is refused, where berth takes `expected`.
pub fn refused_value(value: &str, expected: &[&str]) -> Option<&'static str> {
    REFUSED_VALUES
        .iter()
        .find(|(v, sibling, _)| *v == value && expected.contains(sibling))
        .map(|(_, _, reason)| *reason)
}

/// The note for an accepted field, or `None` when the field is not in the accepted tier.
pub fn accepted(struct_name: &str, field: &str) -> Option<&'static str> {
    ACCEPTED.iter().find(|(s, f, _)| *s == struct_name && *f == field).map(|(_, _, note)| *note)
}

/// Why a Kubernetes volume source without a reason of its own in [`REFUSED`] is refused.
pub const VOLUME_SOURCE_REASON: &str = "berth's nodes mount emptyDir, hostPath, configMap, secret, downwardAPI and persistentVolumeClaim volumes; mount the storage on the node and use hostPath or a claim";

/// Why any other Kubernetes field without a tier of its own is refused.
pub const UNRUN_REASON: &str = "berth does not run this Kubernetes field; remove it to load the object";

/// The reason a real Kubernetes field is refused, or `None`. A field of Kubernetes' type
/// ([`super::kubernetes::FIELDS`]) that berth neither honors nor accepts is refused: with the
/// reason [`REFUSED`] gives it, else the one for its kind of field. `honored` are the fields of
/// berth's own type.
pub fn refused(struct_name: &str, field: &str) -> Option<&'static str> {
    if let Some((_, _, reason)) = REFUSED.iter().find(|(s, f, _)| *s == struct_name && *f == field) {
        return Some(reason);
    }
    if accepted(struct_name, field).is_some() || !kubernetes_fields(struct_name).any(|f| f == field) {
        return None;
    }
    Some(if struct_name == "Volume" { VOLUME_SOURCE_REASON } else { UNRUN_REASON })
}

/// The fields Kubernetes gives the type berth calls `struct_name`.
pub fn kubernetes_fields(struct_name: &str) -> impl Iterator<Item = &'static str> {
    let fields = super::kubernetes::FIELDS.binary_search_by(|(s, _)| (*s).cmp(struct_name)).ok();
    fields.map_or(&[][..], |i| super::kubernetes::FIELDS[i].1).iter().copied()
}

/// Kubernetes' field names of a struct, as candidates for typo suggestions.
pub fn known_fields(struct_name: &str) -> impl Iterator<Item = &'static str> + '_ {
    kubernetes_fields(struct_name)
}
