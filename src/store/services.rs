//! Service addresses and node ports, in the store: chosen once, kept while the service is
//! declared, freed when it goes.

use super::{Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The range node ports come from, as in Kubernetes.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// What a declared service needs allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceWants {
    pub namespace: String,
    pub name: String,
    /// A headless service gets no virtual address.
    pub headless: bool,
    /// For NodePort and LoadBalancer services: each service port with the node port the
    /// manifest gives, if any.
    pub node_ports: Vec<(u16, Option<u16>)>,
}

/// The addresses of every declared service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocations {
    pub cluster_ips: BTreeMap<(String, String), Ipv4Addr>,
    /// By namespace, name and service port.
    pub node_ports: BTreeMap<(String, String, u16), u16>,
}

pub use crate::nodes::protocol::DNS_ADDRESS;

/// Keeps what is still wanted, frees the rest, and chooses what is missing. A node port a
/// manifest names is honored; a service that held it by allocation gets another. New choices
/// start from a hash of the name, so the same manifests get the same addresses on a new
/// control plane.
pub fn allocate(existing: &Allocations, wanted: &[ServiceWants]) -> Allocations {
    let mut out = Allocations::default();
    let named: BTreeSet<u16> = wanted.iter().flat_map(|w| w.node_ports.iter().filter_map(|(_, n)| *n)).collect();
    for service in wanted {
        let key = (service.namespace.clone(), service.name.clone());
        if !service.headless
            && let Some(ip) = existing.cluster_ips.get(&key)
        {
            out.cluster_ips.insert(key.clone(), *ip);
        }
        for (port, given) in &service.node_ports {
            let port_key = (service.namespace.clone(), service.name.clone(), *port);
            match (given, existing.node_ports.get(&port_key)) {
                (Some(given), _) => {
                    out.node_ports.insert(port_key, *given);
                }
                (None, Some(kept)) if !named.contains(kept) => {
                    out.node_ports.insert(port_key, *kept);
                }
                _ => {}
            }
        }
    }
    let mut used_ips: BTreeSet<Ipv4Addr> = out.cluster_ips.values().copied().collect();
    let mut used_ports: BTreeSet<u16> = out.node_ports.values().copied().chain(named.iter().copied()).collect();
    for service in wanted {
        let key = (service.namespace.clone(), service.name.clone());
        let seed = seed(&format!("{}/{}", service.namespace, service.name));
        if !service.headless && !out.cluster_ips.contains_key(&key) {
            // 127.77.1.0 and up; 127.77.0.0/24 is kept for the node's own addresses (DNS).
            let span = 65536 - 256;
            let free = (0..span)
                .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 77, 1, 0)) + ((seed + i) % span) as u32))
                .find(|ip| !used_ips.contains(ip) && ip.octets()[3] != 0 && ip.octets()[3] != 255);
            if let Some(ip) = free {
                used_ips.insert(ip);
                out.cluster_ips.insert(key.clone(), ip);
            }
        }
        for (port, _) in &service.node_ports {
            let port_key = (service.namespace.clone(), service.name.clone(), *port);
            if out.node_ports.contains_key(&port_key) {
                continue;
            }
            let span = u64::from(NODE_PORTS.end() - NODE_PORTS.start()) + 1;
            let start = seed + u64::from(*port);
            let free =
                (0..span).map(|i| NODE_PORTS.start() + ((start + i) % span) as u16).find(|p| !used_ports.contains(p));
            if let Some(node_port) = free {
                used_ports.insert(node_port);
                out.node_ports.insert(port_key, node_port);
            }
        }
    }
    out
}

fn seed(name: &str) -> u64 {
    let digest = crate::manifest::hex_digest(name.as_bytes());
    u64::from_str_radix(&digest[..12], 16).unwrap_or(0)
}

impl Store {
    /// The addresses of the declared services, chosen and kept in one transaction; those of
    /// services no longer declared are freed.
    pub async fn allocate_services(&self, wanted: &[ServiceWants]) -> Result<Allocations, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let mut existing = Allocations::default();
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT namespace, name, cluster_ip FROM service_addresses")
                .fetch_all(&mut *transaction)
                .await?;
        for (namespace, name, ip) in rows {
            if let Ok(ip) = ip.parse() {
                existing.cluster_ips.insert((namespace, name), ip);
            }
        }
        let rows: Vec<(i64, String, String, i64)> =
            sqlx::query_as("SELECT node_port, namespace, name, port FROM node_ports")
                .fetch_all(&mut *transaction)
                .await?;
        for (node_port, namespace, name, port) in rows {
            if let (Ok(node_port), Ok(port)) = (u16::try_from(node_port), u16::try_from(port)) {
                existing.node_ports.insert((namespace, name, port), node_port);
            }
        }
        let allocated = allocate(&existing, wanted);
        if allocated != existing {
            sqlx::query("DELETE FROM service_addresses").execute(&mut *transaction).await?;
            sqlx::query("DELETE FROM node_ports").execute(&mut *transaction).await?;
            for ((namespace, name), ip) in &allocated.cluster_ips {
                sqlx::query("INSERT INTO service_addresses (namespace, name, cluster_ip) VALUES (?, ?, ?)")
                    .bind(namespace)
                    .bind(name)
                    .bind(ip.to_string())
                    .execute(&mut *transaction)
                    .await?;
            }
            for ((namespace, name, port), node_port) in &allocated.node_ports {
                sqlx::query("INSERT INTO node_ports (node_port, namespace, name, port) VALUES (?, ?, ?, ?)")
                    .bind(i64::from(*node_port))
                    .bind(namespace)
                    .bind(name)
                    .bind(i64::from(*port))
                    .execute(&mut *transaction)
                    .await?;
            }
        }
        transaction.commit().await?;
        Ok(allocated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wants(name: &str, headless: bool, node_ports: &[(u16, Option<u16>)]) -> ServiceWants {
        ServiceWants { namespace: "shop".into(), name: name.into(), headless, node_ports: node_ports.to_vec() }
    }

    #[test]
    fn keeps_what_is_in_use_and_frees_the_rest() {
        let first = allocate(&Allocations::default(), &[wants("web", false, &[(80, None)]), wants("db", true, &[])]);
        let web_ip = first.cluster_ips[&("shop".into(), "web".into())];
        let web_port = first.node_ports[&("shop".into(), "web".into(), 80)];
        assert!(NODE_PORTS.contains(&web_port));
        assert_eq!(web_ip.octets()[..2], [127, 77]);
        assert_ne!(web_ip.octets()[2], 0, "127.77.0.0/24 is kept for the node");
        assert!(!first.cluster_ips.contains_key(&("shop".into(), "db".into())), "headless gets no address");

        // Another service arrives: the first keeps its address and port.
        let second = allocate(&first, &[wants("web", false, &[(80, None)]), wants("api", false, &[(80, None)])]);
        assert_eq!(second.cluster_ips[&("shop".into(), "web".into())], web_ip);
        assert_eq!(second.node_ports[&("shop".into(), "web".into(), 80)], web_port);
        assert_ne!(second.node_ports[&("shop".into(), "api".into(), 80)], web_port);

        // A manifest that names web's port takes it; web moves.
        let third =
            allocate(&second, &[wants("web", false, &[(80, None)]), wants("api", false, &[(80, Some(web_port))])]);
        assert_eq!(third.node_ports[&("shop".into(), "api".into(), 80)], web_port);
        assert_ne!(third.node_ports[&("shop".into(), "web".into(), 80)], web_port);

        // Gone from Git: freed.
        let fourth = allocate(&third, &[]);
        assert_eq!(fourth, Allocations::default());
    }

    #[test]
    fn fills_the_range_without_repeats() {
        let many: Vec<ServiceWants> = (0..3000).map(|i| wants(&format!("s{i}"), false, &[(80, None)])).collect();
        let allocated = allocate(&Allocations::default(), &many);
        let ports: BTreeSet<u16> = allocated.node_ports.values().copied().collect();
        assert_eq!(ports.len(), NODE_PORTS.len(), "every node port once, then none left");
        let ips: BTreeSet<Ipv4Addr> = allocated.cluster_ips.values().copied().collect();
        assert_eq!(ips.len(), 3000);
    }
}
