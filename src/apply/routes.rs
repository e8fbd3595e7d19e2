//! The route table: for every service, the ready pods that serve it, addressed by node address
//! and published host port, so that any node's proxy can reach them. Pure: the controller hands
//! it the services, the allocated addresses and what the nodes report.

use crate::manifest::quantity::IntOrString;
use crate::manifest::types::{Labels, Protocol, Service, ServiceType};
use crate::manifest::{Object, Resource};
use crate::nodes::protocol::{Endpoint, PodAssignment, PodStatus, RoutePort, ServiceRoute};
use crate::store::{Allocations, ServiceWants};
use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;

/// A pod that runs on a Ready node, with what its node reports.
pub struct RoutedPod<'a> {
    pub node: &'a str,
    pub host_ip: &'a str,
    pub pod: &'a PodAssignment,
    pub labels: &'a Labels,
    pub status: &'a PodStatus,
}

fn services(resources: &[impl AsRef<Resource>]) -> impl Iterator<Item = (&Resource, &Service)> {
    resources.iter().filter_map(|r| match &r.as_ref().object {
        Object::Service(service) => Some((r.as_ref(), service)),
        _ => None,
    })
}

pub fn is_headless(service: &Service) -> bool {
    service.spec.cluster_ip.as_deref() == Some("None")
}

fn has_node_ports(service: &Service) -> bool {
    matches!(service.spec.service_type, Some(ServiceType::NodePort | ServiceType::LoadBalancer))
}

/// What the declared services need allocated.
pub fn wants(resources: &[impl AsRef<Resource>]) -> Vec<ServiceWants> {
    services(resources)
        .map(|(resource, service)| ServiceWants {
            namespace: resource.key.namespace.clone(),
            name: resource.key.name.clone(),
            headless: is_headless(service),
            node_ports: if has_node_ports(service) {
                tcp_ports(service).map(|p| (port(p.port), p.node_port.and_then(|n| u16::try_from(n).ok()))).collect()
            } else {
                Vec::new()
            },
        })
        .collect()
}

fn port(number: i32) -> u16 {
    u16::try_from(number).unwrap_or(0)
}

fn tcp_ports(service: &Service) -> impl Iterator<Item = &crate::manifest::types::ServicePort> {
    service.spec.ports.iter().filter(|p| p.protocol.unwrap_or(Protocol::Tcp) == Protocol::Tcp)
}

/// The container port a service port targets on `pod`: a number, a named container port, or
/// the service port itself.
fn target_port(target: Option<&IntOrString>, service_port: u16, pod: &PodAssignment) -> Option<u16> {
    match target {
        None => Some(service_port),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(name)) => pod
            .spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// A headless service's address for a pod: from a hash of its name, the next free one in
/// 127.78.0.0/16, so it stays the same while the pod lives.
fn pod_ip(namespace: &str, pod: &str, taken: &mut BTreeSet<Ipv4Addr>) -> Ipv4Addr {
    let digest = crate::manifest::hex_digest(format!("{namespace}/{pod}").as_bytes());
    let seed = u32::from_str_radix(&digest[..8], 16).unwrap_or(0);
    let base = u32::from(Ipv4Addr::new(127, 78, 0, 0));
    for i in 0..65536u32 {
        let ip = Ipv4Addr::from(base + (seed.wrapping_add(i) % 65536));
        if ip.octets()[3] != 0 && ip.octets()[3] != 255 && taken.insert(ip) {
            return ip;
        }
    }
    Ipv4Addr::new(127, 78, 0, 1)
}

/// Every service with its ready endpoints. Pods in `leaving` (about to stop) are left out, as
/// are pods that are not ready; `pods` holds only pods of Ready nodes.
pub fn build(
    resources: &[impl AsRef<Resource>],
    allocations: &Allocations,
    pods: &[RoutedPod<'_>],
    leaving: &HashSet<(String, String)>,
) -> Vec<ServiceRoute> {
    let mut taken = BTreeSet::new();
    let mut routes = Vec::new();
    for (resource, service) in services(resources) {
        let (namespace, name) = (&resource.key.namespace, &resource.key.name);
        let headless = is_headless(service);
        let selector = &service.spec.selector;
        let ports: Vec<RoutePort> = tcp_ports(service)
            .map(|p| RoutePort {
                name: p.name.clone(),
                port: port(p.port),
                node_port: allocations.node_ports.get(&(namespace.clone(), name.clone(), port(p.port))).copied(),
            })
            .collect();
        let mut endpoints = Vec::new();
        for routed in pods {
            let pod = routed.pod;
            if &pod.namespace != namespace
                || selector.is_empty()
                || !selector.iter().all(|(k, v)| routed.labels.get(k) == Some(v))
                || !routed.status.ready
                || leaving.contains(&(pod.namespace.clone(), pod.pod.clone()))
            {
                continue;
            }
            let published = |container_port: u16| {
                routed
                    .status
                    .host_ports
                    .iter()
                    .find(|h| h.container_port == container_port && h.protocol == Protocol::Tcp && h.host_port != 0)
                    .map(|h| h.host_port)
            };
            let endpoint_ports: Vec<(u16, u16)> = tcp_ports(service)
                .filter_map(|p| {
                    let target = target_port(p.target_port.as_ref(), port(p.port), pod)?;
                    Some((port(p.port), published(target)?))
                })
                .collect();
            let pod_ports: Vec<(u16, u16)> = if headless {
                routed
                    .status
                    .host_ports
                    .iter()
                    .filter(|h| h.protocol == Protocol::Tcp && h.host_port != 0)
                    .map(|h| (h.container_port, h.host_port))
                    .collect()
            } else {
                Vec::new()
            };
            if endpoint_ports.is_empty() && pod_ports.is_empty() {
                continue;
            }
            endpoints.push(Endpoint {
                pod: pod.pod.clone(),
                node: routed.node.to_owned(),
                host_ip: routed.host_ip.to_owned(),
                ports: endpoint_ports,
                pod_ip: headless.then(|| pod_ip(namespace, &pod.pod, &mut taken).to_string()),
                pod_ports,
            });
        }
        endpoints.sort_by(|a, b| (&a.node, &a.pod).cmp(&(&b.node, &b.pod)));
        routes.push(ServiceRoute {
            namespace: namespace.clone(),
            name: name.clone(),
            cluster_ip: if headless {
                None
            } else {
                allocations.cluster_ips.get(&(namespace.clone(), name.clone())).map(ToString::to_string)
            },
            ports,
            endpoints,
        });
    }
    routes
}
