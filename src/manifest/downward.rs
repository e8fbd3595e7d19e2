//! The downward API: what `env[].valueFrom.fieldRef` and `resourceFieldRef` name, read and
//! turned into values as Kubernetes does. Pure: the pod's facts come in, strings go out.

use super::types::{Container, ResourceFieldSelector};

/// A field of a pod that `fieldRef.fieldPath` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodField {
    Name,
    Namespace,
    Uid,
    Label(String),
    Annotation(String),
    /// Every label, a `key="value"` line each: a downwardAPI volume's file only.
    Labels,
    /// Every annotation, likewise.
    Annotations,
    /// Known once the pod is placed: the node's name.
    NodeName,
    /// Known once the pod is placed: the node's address (`status.hostIP`, and `status.podIP`,
    /// since pods are reached through their node).
    NodeAddress,
}

/// The fieldPaths berth fills, for error messages.
pub const FIELD_PATHS: &str = "metadata.name, metadata.namespace, metadata.uid, metadata.labels['KEY'], \
     metadata.annotations['KEY'], spec.nodeName, status.hostIP, status.podIP";

/// The fieldPaths a downwardAPI volume's file may name.
pub const VOLUME_FIELD_PATHS: &str = "metadata.name, metadata.namespace, metadata.uid, metadata.labels, \
     metadata.annotations, metadata.labels['KEY'], metadata.annotations['KEY']";

impl PodField {
    /// A fieldPath of a downwardAPI volume's file: the pod's metadata only, as in Kubernetes.
    pub fn parse_for_volume(path: &str) -> Result<PodField, String> {
        match path {
            "metadata.labels" => Ok(PodField::Labels),
            "metadata.annotations" => Ok(PodField::Annotations),
            _ => match PodField::parse(path)? {
                field if field.is_node() => {
                    Err(format!("a downwardAPI volume has no `{path}`; read it with an env fieldRef"))
                }
                field => Ok(field),
            },
        }
    }

    pub fn parse(path: &str) -> Result<PodField, String> {
        let keyed = |prefix: &str| {
            let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
            (!key.is_empty() && !key.contains('\'')).then(|| key.to_owned())
        };
        Ok(match path {
            "metadata.name" => PodField::Name,
            "metadata.namespace" => PodField::Namespace,
            "metadata.uid" => PodField::Uid,
            "spec.nodeName" => PodField::NodeName,
            "status.hostIP" | "status.podIP" => PodField::NodeAddress,
            "spec.serviceAccountName" => {
                return Err("berth has no service accounts, so `spec.serviceAccountName` has no value".into());
            }
            "metadata.labels" | "metadata.annotations" => {
                return Err(format!("`{path}` as a whole is a file of the downwardAPI volume, not one variable"));
            }
            _ => {
                if let Some(key) = keyed("metadata.labels['") {
                    PodField::Label(key)
                } else if let Some(key) = keyed("metadata.annotations['") {
                    PodField::Annotation(key)
                } else {
                    return Err(format!("`{path}` is not a field berth fills"));
                }
            }
        })
    }

    /// Whether the value is the node's, known only once the pod is placed.
    pub fn is_node(&self) -> bool {
        matches!(self, PodField::NodeName | PodField::NodeAddress)
    }
}

/// Labels or annotations as a downwardAPI volume's file holds them: `key="value"` lines, by
/// key, the value quoted.
pub fn pairs_file(pairs: &std::collections::BTreeMap<String, String>) -> String {
    pairs.iter().map(|(key, value)| format!("{key}={value:?}\n")).collect()
}

/// A container resource that `resourceFieldRef.resource` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceField {
    CpuRequest,
    CpuLimit,
    MemoryRequest,
    MemoryLimit,
}

impl ResourceField {
    pub fn parse(resource: &str) -> Result<ResourceField, String> {
        Ok(match resource {
            "requests.cpu" => ResourceField::CpuRequest,
            "limits.cpu" => ResourceField::CpuLimit,
            "requests.memory" => ResourceField::MemoryRequest,
            "limits.memory" => ResourceField::MemoryLimit,
            other => {
                return Err(format!(
                    "`{other}` is not a resource berth fills; use requests.cpu, limits.cpu, requests.memory or limits.memory"
                ));
            }
        })
    }

    fn is_cpu(self) -> bool {
        matches!(self, ResourceField::CpuRequest | ResourceField::CpuLimit)
    }

    /// The container's value in millicores or in thousandths of a byte (`Quantity::millis`);
    /// `None` for a limit that is not set (the node's allocatable stands for it).
    fn of(self, container: &Container) -> Option<i128> {
        let resources = container.resources.as_ref();
        let (map, key) = match self {
            ResourceField::CpuRequest => (resources.map(|r| &r.requests), "cpu"),
            ResourceField::CpuLimit => (resources.map(|r| &r.limits), "cpu"),
            ResourceField::MemoryRequest => (resources.map(|r| &r.requests), "memory"),
            ResourceField::MemoryLimit => (resources.map(|r| &r.limits), "memory"),
        };
        match map.and_then(|m| m.get(key)) {
            Some(quantity) => Some(quantity.millis()),
            // A request that is not set is 0 (or the limit, as Kubernetes defaults it).
            None if matches!(self, ResourceField::CpuRequest | ResourceField::MemoryRequest) => {
                let limit = if self.is_cpu() { ResourceField::CpuLimit } else { ResourceField::MemoryLimit };
                Some(limit.of(container).unwrap_or(0))
            }
            None => None,
        }
    }
}

/// The divisor of a resourceFieldRef in `Quantity::millis`, 1 (one core, one byte) by default;
/// an error for one that is not positive.
pub fn divisor(selector: &ResourceFieldSelector) -> Result<i128, String> {
    match &selector.divisor {
        None => Ok(1000),
        Some(q) if q.millis() > 0 => Ok(q.millis()),
        Some(q) => Err(format!("divisor `{}` must be more than 0", q.as_str())),
    }
}

/// A resourceFieldRef's value for `container`, as Kubernetes writes it: the amount divided by
/// the divisor, rounded up. `allocatable` (millicores, bytes) stands for a limit that is not
/// set; `None` when that is needed and not known yet (before placement).
pub fn resource_value(
    field: ResourceField,
    container: &Container,
    divisor: i128,
    allocatable: Option<(u64, u64)>,
) -> Option<String> {
    let amount = match field.of(container) {
        Some(amount) => amount,
        None => {
            let (cpu_millis, memory_bytes) = allocatable?;
            if field.is_cpu() { i128::from(cpu_millis) } else { i128::from(memory_bytes) * 1000 }
        }
    };
    let value = (amount + divisor - 1).div_euclid(divisor.max(1));
    Some(value.max(0).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::quantity::Quantity;
    use crate::manifest::types::ResourceRequirements;

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let map = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), Quantity::parse(v).unwrap())).collect()
        };
        let mut container: Container =
            serde_json::from_value(serde_json::json!({"name": "app", "image": "app:1"})).unwrap();
        container.resources = Some(ResourceRequirements { requests: map(requests), limits: map(limits) });
        container
    }

    #[test]
    fn field_paths_read_as_kubernetes_names_them() {
        assert_eq!(PodField::parse("metadata.name"), Ok(PodField::Name));
        assert_eq!(PodField::parse("status.podIP"), Ok(PodField::NodeAddress));
        assert_eq!(
            PodField::parse("metadata.labels['app.kubernetes.io/name']"),
            Ok(PodField::Label("app.kubernetes.io/name".into()))
        );
        assert_eq!(PodField::parse("metadata.annotations['a']"), Ok(PodField::Annotation("a".into())));
        assert!(PodField::parse("metadata.labels['']").is_err());
        assert!(PodField::parse("spec.serviceAccountName").unwrap_err().contains("service accounts"));
        assert!(PodField::parse("status.phase").unwrap_err().contains("not a field berth fills"));
        assert!(PodField::NodeName.is_node() && !PodField::Uid.is_node());
        assert_eq!(PodField::parse_for_volume("metadata.labels"), Ok(PodField::Labels));
        assert!(PodField::parse_for_volume("status.podIP").unwrap_err().contains("env fieldRef"));
        let labels =
            [("b".to_owned(), "say \"hi\"".to_owned()), ("a".to_owned(), "1".to_owned())].into_iter().collect();
        assert_eq!(pairs_file(&labels), "a=\"1\"\nb=\"say \\\"hi\\\"\"\n");
    }

    #[test]
    fn resource_values_divide_and_round_up() {
        let c = container(&[("cpu", "250m"), ("memory", "64Mi")], &[("cpu", "1500m")]);
        let value = |field, divisor: &str| {
            resource_value(field, &c, Quantity::parse(divisor).unwrap().millis(), Some((2000, 4 << 30)))
        };
        assert_eq!(value(ResourceField::CpuRequest, "1").as_deref(), Some("1"), "250m is 1 core, rounded up");
        assert_eq!(value(ResourceField::CpuRequest, "1m").as_deref(), Some("250"));
        assert_eq!(value(ResourceField::CpuLimit, "1").as_deref(), Some("2"));
        assert_eq!(value(ResourceField::MemoryRequest, "1Mi").as_deref(), Some("64"));
        assert_eq!(value(ResourceField::MemoryRequest, "1").as_deref(), Some((64u64 << 20).to_string().as_str()));
        // No memory limit: the node's allocatable; unknown before placement.
        assert_eq!(value(ResourceField::MemoryLimit, "1Gi").as_deref(), Some("4"));
        assert_eq!(resource_value(ResourceField::MemoryLimit, &c, 1000, None), None);
        // No cpu request but a limit: the request is the limit.
        let limited = container(&[], &[("cpu", "2")]);
        assert_eq!(resource_value(ResourceField::CpuRequest, &limited, 1, None).as_deref(), Some("2000"));
        assert!(ResourceField::parse("limits.ephemeral-storage").unwrap_err().contains("not a resource"));
    }
}
