//! Issue 15: Kubernetes' own API types (k8s-openapi) say which fields each type berth reads has.
//! `src/manifest/kubernetes.rs` is generated from them here, so a real Kubernetes field berth
//! does not run is refused with a reason, never called an unknown field or a typo; and every
//! field berth honors, accepts or refuses is checked to be a real one.

use crate::support::check_snapshot;
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;

fn fields<T: schemars::JsonSchema>() -> BTreeSet<String> {
    let mut generator = schemars::SchemaGenerator::default();
    let schema = T::json_schema(&mut generator);
    let properties = schema.get("properties").and_then(|p| p.as_object()).expect("an object type has properties");
    properties.keys().cloned().collect()
}

/// Per type berth reads, by berth's name for it: the fields of the Kubernetes type (or types,
/// where berth reads two alike with one) it stands for.
fn kubernetes_types() -> BTreeMap<&'static str, BTreeSet<String>> {
    let both = |a: BTreeSet<String>, b: BTreeSet<String>| a.union(&b).cloned().collect::<BTreeSet<String>>();
    BTreeMap::from([
        ("Namespace", fields::<core::Namespace>()),
        ("ConfigMap", fields::<core::ConfigMap>()),
        ("Secret", fields::<core::Secret>()),
        ("Service", fields::<core::Service>()),
        ("Pod", fields::<core::Pod>()),
        ("ReplicationController", fields::<core::ReplicationController>()),
        ("ReplicaSet", fields::<apps::ReplicaSet>()),
        ("Deployment", fields::<apps::Deployment>()),
        ("DaemonSet", fields::<apps::DaemonSet>()),
        ("Job", fields::<batch::Job>()),
        ("StatefulSet", fields::<apps::StatefulSet>()),
        ("StatefulSetSpec", fields::<apps::StatefulSetSpec>()),
        ("StatefulSetUpdateStrategy", fields::<apps::StatefulSetUpdateStrategy>()),
        ("StatefulSetRollingUpdate", fields::<apps::RollingUpdateStatefulSetStrategy>()),
        ("ClaimRetentionPolicy", fields::<apps::StatefulSetPersistentVolumeClaimRetentionPolicy>()),
        ("ClaimTemplate", fields::<core::PersistentVolumeClaim>()),
        ("PersistentVolumeClaim", fields::<core::PersistentVolumeClaim>()),
        ("PersistentVolumeClaimSpec", fields::<core::PersistentVolumeClaimSpec>()),
        ("VolumeResources", fields::<core::VolumeResourceRequirements>()),
        ("PersistentVolumeClaimVolumeSource", fields::<core::PersistentVolumeClaimVolumeSource>()),
        ("CronJob", fields::<batch::CronJob>()),
        ("CronJobSpec", fields::<batch::CronJobSpec>()),
        ("JobTemplateSpec", fields::<batch::JobTemplateSpec>()),
        ("JobSpec", fields::<batch::JobSpec>()),
        ("PodFailurePolicy", fields::<batch::PodFailurePolicy>()),
        ("PodFailurePolicyRule", fields::<batch::PodFailurePolicyRule>()),
        ("PodFailurePolicyOnExitCodes", fields::<batch::PodFailurePolicyOnExitCodesRequirement>()),
        ("ObjectMeta", fields::<meta::ObjectMeta>()),
        ("TemplateMeta", fields::<meta::ObjectMeta>()),
        ("PodTemplateSpec", fields::<core::PodTemplateSpec>()),
        ("DeploymentSpec", fields::<apps::DeploymentSpec>()),
        ("ReplicaSetSpec", fields::<apps::ReplicaSetSpec>()),
        ("ReplicationControllerSpec", fields::<core::ReplicationControllerSpec>()),
        ("DaemonSetSpec", fields::<apps::DaemonSetSpec>()),
        ("DeploymentStrategy", fields::<apps::DeploymentStrategy>()),
        ("DaemonSetUpdateStrategy", fields::<apps::DaemonSetUpdateStrategy>()),
        ("RollingUpdate", both(fields::<apps::RollingUpdateDeployment>(), fields::<apps::RollingUpdateDaemonSet>())),
        ("LabelSelector", fields::<meta::LabelSelector>()),
        ("LabelSelectorRequirement", fields::<meta::LabelSelectorRequirement>()),
        ("PodSpec", fields::<core::PodSpec>()),
        ("Container", fields::<core::Container>()),
        ("PodSecurityContext", fields::<core::PodSecurityContext>()),
        ("SecurityContext", fields::<core::SecurityContext>()),
        ("Capabilities", fields::<core::Capabilities>()),
        ("SeccompProfile", fields::<core::SeccompProfile>()),
        ("Lifecycle", fields::<core::Lifecycle>()),
        ("LifecycleHandler", fields::<core::LifecycleHandler>()),
        ("SleepAction", fields::<core::SleepAction>()),
        ("EnvVar", fields::<core::EnvVar>()),
        ("EnvVarSource", fields::<core::EnvVarSource>()),
        ("KeySelector", both(fields::<core::ConfigMapKeySelector>(), fields::<core::SecretKeySelector>())),
        ("ObjectFieldSelector", fields::<core::ObjectFieldSelector>()),
        ("ResourceFieldSelector", fields::<core::ResourceFieldSelector>()),
        ("EnvFromSource", fields::<core::EnvFromSource>()),
        ("ObjectRef", both(fields::<core::ConfigMapEnvSource>(), fields::<core::SecretEnvSource>())),
        ("ContainerPort", fields::<core::ContainerPort>()),
        ("ResourceRequirements", fields::<core::ResourceRequirements>()),
        ("Probe", fields::<core::Probe>()),
        ("HttpGetAction", fields::<core::HTTPGetAction>()),
        ("HttpHeader", fields::<core::HTTPHeader>()),
        ("TcpSocketAction", fields::<core::TCPSocketAction>()),
        ("ExecAction", fields::<core::ExecAction>()),
        ("VolumeMount", fields::<core::VolumeMount>()),
        ("Volume", fields::<core::Volume>()),
        ("DownwardApiVolumeSource", fields::<core::DownwardAPIVolumeSource>()),
        ("DownwardApiVolumeFile", fields::<core::DownwardAPIVolumeFile>()),
        ("EmptyDirVolumeSource", fields::<core::EmptyDirVolumeSource>()),
        ("HostPathVolumeSource", fields::<core::HostPathVolumeSource>()),
        ("KeyToPath", fields::<core::KeyToPath>()),
        ("ConfigMapVolumeSource", fields::<core::ConfigMapVolumeSource>()),
        ("SecretVolumeSource", fields::<core::SecretVolumeSource>()),
        ("ServiceSpec", fields::<core::ServiceSpec>()),
        ("ServicePort", fields::<core::ServicePort>()),
    ])
}

fn generated() -> String {
    let mut out = String::from(
        "//! Generated from Kubernetes' API types (k8s-openapi 0.29, Kubernetes 1.37) by the test\n\
         //! `kubernetes::kubernetes_fields_are_current`; with UPDATE_EXPECT=1 it writes this file\n\
         //! again. Per type berth reads (by berth's name for it), every field Kubernetes gives it.\n\
         \n\
         #[rustfmt::skip]\n\
         pub const FIELDS: &[(&str, &[&str])] = &[\n",
    );
    for (name, fields) in kubernetes_types() {
        let quoted: Vec<String> = fields.iter().map(|f| format!("{f:?}")).collect();
        let _ = writeln!(out, "    ({name:?}, &[{}]),", quoted.join(", "));
    }
    out.push_str("];\n");
    out
}

#[test]
fn kubernetes_fields_are_current() {
    check_snapshot(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/manifest/kubernetes.rs"), &generated());
}

/// berth's honored fields per type, from its own schemas.
fn honored() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut add = |name: &str, schema: &serde_json::Value| {
        if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
            out.entry(name.to_owned()).or_default().extend(properties.keys().cloned());
        }
    };
    for (_, schema) in berth::manifest::schema::schemas() {
        add(schema["title"].as_str().unwrap(), &schema);
        for (name, definition) in schema.get("definitions").and_then(|d| d.as_object()).into_iter().flatten() {
            add(name, definition);
        }
    }
    out
}

#[test]
fn every_field_berth_knows_is_a_kubernetes_field() {
    let kubernetes = kubernetes_types();
    let mut wrong = Vec::new();
    for (name, fields) in honored() {
        let Some(real) = kubernetes.get(name.as_str()) else {
            wrong.push(format!("{name}: berth reads this type, but no Kubernetes type is named for it"));
            continue;
        };
        wrong.extend(fields.iter().filter(|f| !real.contains(*f)).map(|f| format!("{name}.{f}: honored")));
    }
    let tiers = berth::manifest::tiers::ACCEPTED.iter().map(|(s, f, _)| (s, f, "accepted"));
    for (name, field, tier) in tiers.chain(berth::manifest::tiers::REFUSED.iter().map(|(s, f, _)| (s, f, "refused"))) {
        if !kubernetes.get(name).is_some_and(|real| real.contains(*field)) {
            wrong.push(format!("{name}.{field}: {tier}"));
        }
    }
    assert!(wrong.is_empty(), "fields berth names that Kubernetes does not have:\n{}", wrong.join("\n"));
}

/// Every real field of a type berth reads has a tier: honored, accepted with a warning, or
/// refused with a reason (its own, or the one for fields berth does not run).
#[test]
fn every_kubernetes_field_has_a_tier() {
    let honored = honored();
    for (name, fields) in kubernetes_types() {
        for field in fields {
            let known = honored.get(name).is_some_and(|h| h.contains(&field))
                || berth::manifest::tiers::accepted(name, &field).is_some()
                || berth::manifest::tiers::refused(name, &field).is_some();
            assert!(known, "{name}.{field} has no tier");
        }
    }
}
