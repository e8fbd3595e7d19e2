//! Kubernetes defaults, applied to every object after it is read.
//!
//! A plan compares defaulted objects, so writing a default out (`replicas: 1`) or leaving it
//! implicit is no change, exactly as in Kubernetes.

use super::Object;
use super::types::*;

pub const DEFAULT_SURGE: &str = "25%";
pub const DEFAULT_UNAVAILABLE: &str = "25%";

pub fn apply(object: &mut Object) {
    match object {
        Object::Namespace(_) | Object::ConfigMap(_) => {}
        Object::PersistentVolumeClaim(claim) => claim_spec(&mut claim.spec),
        Object::StatefulSet(stateful_set) => {
            let spec = &mut stateful_set.spec;
            spec.replicas.get_or_insert(1);
            spec.min_ready_seconds.get_or_insert(0);
            spec.revision_history_limit.get_or_insert(10);
            spec.pod_management_policy.get_or_insert(PodManagementPolicy::OrderedReady);
            let strategy = spec
                .update_strategy
                .get_or_insert(StatefulSetUpdateStrategy { strategy_type: None, rolling_update: None });
            let strategy_type = *strategy.strategy_type.get_or_insert(StatefulSetStrategyType::RollingUpdate);
            if strategy_type == StatefulSetStrategyType::RollingUpdate {
                let rolling = strategy
                    .rolling_update
                    .get_or_insert(StatefulSetRollingUpdate { partition: None, max_unavailable: None });
                rolling.partition.get_or_insert(0);
                rolling.max_unavailable.get_or_insert(IntOrString::Int(1));
            }
            let retention = spec
                .persistent_volume_claim_retention_policy
                .get_or_insert(ClaimRetentionPolicy { when_deleted: None, when_scaled: None });
            retention.when_deleted.get_or_insert(ClaimRetention::Retain);
            retention.when_scaled.get_or_insert(ClaimRetention::Retain);
            for template in &mut spec.volume_claim_templates {
                claim_spec(&mut template.spec);
            }
            pod_spec(&mut spec.template.spec);
        }
        Object::Secret(secret) => {
            secret.secret_type.get_or_insert_with(|| "Opaque".to_owned());
        }
        Object::Service(service) => service_spec(&mut service.spec),
        Object::Pod(pod) => pod_spec(&mut pod.spec),
        Object::ReplicationController(rc) => {
            rc.spec.replicas.get_or_insert(1);
            rc.spec.min_ready_seconds.get_or_insert(0);
            if rc.spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
                rc.spec.selector = Some(rc.spec.template.metadata.labels.clone());
            }
            pod_spec(&mut rc.spec.template.spec);
        }
        Object::ReplicaSet(rs) => {
            rs.spec.replicas.get_or_insert(1);
            rs.spec.min_ready_seconds.get_or_insert(0);
            pod_spec(&mut rs.spec.template.spec);
        }
        Object::Deployment(deployment) => {
            let spec = &mut deployment.spec;
            spec.replicas.get_or_insert(1);
            spec.min_ready_seconds.get_or_insert(0);
            spec.progress_deadline_seconds.get_or_insert(600);
            spec.revision_history_limit.get_or_insert(10);
            let strategy =
                spec.strategy.get_or_insert(DeploymentStrategy { strategy_type: None, rolling_update: None });
            let strategy_type = *strategy.strategy_type.get_or_insert(DeploymentStrategyType::RollingUpdate);
            if strategy_type == DeploymentStrategyType::RollingUpdate {
                let rolling =
                    strategy.rolling_update.get_or_insert(RollingUpdate { max_surge: None, max_unavailable: None });
                rolling.max_surge.get_or_insert_with(|| IntOrString::String(DEFAULT_SURGE.to_owned()));
                rolling.max_unavailable.get_or_insert_with(|| IntOrString::String(DEFAULT_UNAVAILABLE.to_owned()));
            }
            pod_spec(&mut spec.template.spec);
        }
        Object::Job(job) => job_spec(&mut job.spec),
        Object::CronJob(cron_job) => {
            let spec = &mut cron_job.spec;
            spec.concurrency_policy.get_or_insert(ConcurrencyPolicy::Allow);
            spec.suspend.get_or_insert(false);
            spec.successful_jobs_history_limit.get_or_insert(3);
            spec.failed_jobs_history_limit.get_or_insert(1);
            job_spec(&mut spec.job_template.spec);
        }
        Object::DaemonSet(daemon_set) => {
            let spec = &mut daemon_set.spec;
            spec.min_ready_seconds.get_or_insert(0);
            spec.revision_history_limit.get_or_insert(10);
            let strategy = spec
                .update_strategy
                .get_or_insert(DaemonSetUpdateStrategy { strategy_type: None, rolling_update: None });
            let strategy_type = *strategy.strategy_type.get_or_insert(DaemonSetStrategyType::RollingUpdate);
            if strategy_type == DaemonSetStrategyType::RollingUpdate {
                let rolling =
                    strategy.rolling_update.get_or_insert(RollingUpdate { max_surge: None, max_unavailable: None });
                rolling.max_surge.get_or_insert(IntOrString::Int(0));
                rolling.max_unavailable.get_or_insert(IntOrString::Int(1));
            }
            pod_spec(&mut spec.template.spec);
        }
    }
}

fn claim_spec(spec: &mut PersistentVolumeClaimSpec) {
    spec.volume_mode.get_or_insert(VolumeMode::Filesystem);
}

fn job_spec(spec: &mut JobSpec) {
    // As in Kubernetes: with neither set, one pod must succeed; parallelism alone makes a work
    // queue, which completions leaves unset.
    if spec.parallelism.is_none() {
        spec.completions.get_or_insert(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode.get_or_insert(CompletionMode::NonIndexed);
    spec.suspend.get_or_insert(false);
    // A Job's restart policy has no default: Kubernetes requires it written out, and
    // validation says so.
    let restart = spec.template.spec.restart_policy;
    pod_spec(&mut spec.template.spec);
    spec.template.spec.restart_policy = restart;
}

fn pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert(RestartPolicy::Always);
    spec.termination_grace_period_seconds.get_or_insert(30);
    for container in spec.init_containers.iter_mut().chain(&mut spec.containers) {
        for port in &mut container.ports {
            port.protocol.get_or_insert(Protocol::Tcp);
        }
        for probe in [&mut container.startup_probe, &mut container.liveness_probe, &mut container.readiness_probe]
            .into_iter()
            .flatten()
        {
            probe.initial_delay_seconds.get_or_insert(0);
            probe.period_seconds.get_or_insert(10);
            probe.timeout_seconds.get_or_insert(1);
            probe.success_threshold.get_or_insert(1);
            probe.failure_threshold.get_or_insert(3);
            if let Some(http) = &mut probe.http_get {
                http.path.get_or_insert_with(|| "/".to_owned());
                http.scheme.get_or_insert_with(|| "HTTP".to_owned());
            }
        }
    }
    for volume in &mut spec.volumes {
        // A volume with only a name is an emptyDir, as in Kubernetes.
        if volume.empty_dir.is_none()
            && volume.host_path.is_none()
            && volume.config_map.is_none()
            && volume.secret.is_none()
            && volume.downward_api.is_none()
            && volume.persistent_volume_claim.is_none()
        {
            volume.empty_dir = Some(EmptyDirVolumeSource {});
        }
        if let Some(config_map) = &mut volume.config_map {
            config_map.default_mode.get_or_insert(0o644);
        }
        if let Some(downward) = &mut volume.downward_api {
            downward.default_mode.get_or_insert(0o644);
        }
        if let Some(secret) = &mut volume.secret {
            secret.default_mode.get_or_insert(0o644);
        }
    }
}

fn service_spec(spec: &mut ServiceSpec) {
    spec.service_type.get_or_insert(ServiceType::ClusterIP);
    for port in &mut spec.ports {
        port.protocol.get_or_insert(Protocol::Tcp);
        if port.target_port.is_none() {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
}
