//! The node's service proxy and DNS, programmed from the control plane's route table.
//!
//! Services have virtual addresses in 127.77.0.0/16 (headless services' pods in 127.78.0.0/16)
//! that exist only inside pods. In each pod's network namespace the agent installs one NAT rule
//! set (`BERTH-SERVICES`) that redirects TCP to those ranges to `127.0.0.1:15001`, and DNS to
//! `127.77.0.10:53` to `127.0.0.1:15053`, where sockets the agent opened inside the namespace
//! listen. The agent reads the original destination of each connection (`SO_ORIGINAL_DST`),
//! picks a ready endpoint round-robin, and connects to it from the node's own namespace at the
//! endpoint's node address and published host port, so the same path works between hosts. An
//! application may listen on any port, wildcard included: nothing in the pod binds the
//! service ports. NodePorts listen on the node's address and forward the same way.
//!
//! Traffic never goes through a bridge address: probes, service connections and DNS all stay
//! on loopback addresses and inside namespaces.
//!
//! Between nodes, once the node has a certificate, a connection to an endpoint on another node
//! goes through that node's tunnel: mutual TLS with both node certificates (the cluster's CA),
//! then the endpoint's host port in two bytes; the other node answers one byte (`0`: open)
//! and copies to the endpoint on its own address. A tunnel takes only nodes whose certificate
//! fingerprints the route table lists, and only ports of endpoints on its node.

use super::protocol::RouteTable;
use crate::lock;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::AbortHandle;

/// Where redirected service connections arrive inside a pod.
pub const PROXY_PORT: u16 = crate::manifest::validate::RESERVED_POD_PORTS[0];
/// Where redirected DNS queries arrive inside a pod.
pub const DNS_PORT: u16 = crate::manifest::validate::RESERVED_POD_PORTS[1];
/// The resolver address every pod is given.
pub use super::protocol::DNS_ADDRESS;
pub const CLUSTER_DOMAIN: &str = "cluster.local";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DNS_TTL: u32 = 5;
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// The route table in the shape the data path asks it.
#[derive(Debug, Default)]
struct Routes {
    version: u64,
    /// A service's virtual address and port, or a headless pod's address and container port,
    /// to the endpoints behind it.
    virtual_ports: HashMap<SocketAddrV4, Vec<SocketAddr>>,
    node_ports: HashMap<u16, Vec<SocketAddr>>,
    /// The service (`namespace/name`) behind each virtual address and NodePort, for counting.
    services: HashMap<Destination, Arc<str>>,
    /// `name.namespace` to addresses.
    names: HashMap<String, Vec<Ipv4Addr>>,
    /// Per namespace, the Kubernetes-style variables of its services.
    environment: HashMap<String, Vec<(String, String)>>,
    /// Per node address, the port of its tunnel.
    tunnels: HashMap<IpAddr, u16>,
    /// The fingerprints of the node certificates a tunnel takes.
    peers: std::collections::HashSet<String>,
    /// Every endpoint's host address and port: what a tunnel may connect to.
    endpoints: std::collections::HashSet<SocketAddr>,
}

/// Where a connection came in: a virtual address inside a pod, or a NodePort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Destination {
    Virtual(SocketAddrV4),
    NodePort(u16),
}

/// What the proxy counted for one service: connections, and those it could not forward (no
/// ready endpoint, or none answered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub connections: u64,
    pub errors: u64,
}

impl Routes {
    fn compile(table: &RouteTable) -> Routes {
        let mut routes = Routes { version: table.version, ..Routes::default() };
        for peer in &table.peers {
            if let Ok(address) = peer.address.parse::<IpAddr>() {
                routes.tunnels.insert(address, peer.port);
            }
            routes.peers.extend(peer.certificates.iter().cloned());
        }
        for service in &table.services {
            let key = format!("{}.{}", service.name, service.namespace);
            let name: Arc<str> = format!("{}/{}", service.namespace, service.name).into();
            if let Some(ip) = service.cluster_ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok()) {
                routes.names.insert(key, vec![ip]);
                for port in &service.ports {
                    let targets = endpoints_of(service, port.port);
                    let address = SocketAddrV4::new(ip, port.port);
                    routes.virtual_ports.insert(address, targets);
                    routes.services.insert(Destination::Virtual(address), name.clone());
                }
                let variables = routes.environment.entry(service.namespace.clone()).or_default();
                variables.extend(service_variables(&service.name, ip, &service.ports));
            } else {
                let mut addresses = Vec::new();
                for endpoint in &service.endpoints {
                    let Some(ip) = endpoint.pod_ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok()) else {
                        continue;
                    };
                    addresses.push(ip);
                    // Each pod by name too, as a StatefulSet's pods are known:
                    // `db-0.db.<namespace>.svc.cluster.local`.
                    routes.names.insert(format!("{}.{}.{}", endpoint.pod, service.name, service.namespace), vec![ip]);
                    for (container_port, host_port) in &endpoint.pod_ports {
                        if let Ok(host) = endpoint.host_ip.parse::<IpAddr>() {
                            let target = SocketAddr::new(host, *host_port);
                            let address = SocketAddrV4::new(ip, *container_port);
                            routes.virtual_ports.insert(address, vec![target]);
                            routes.services.insert(Destination::Virtual(address), name.clone());
                        }
                    }
                }
                routes.names.insert(key, addresses);
            }
            for port in &service.ports {
                if let Some(node_port) = port.node_port {
                    routes.node_ports.insert(node_port, endpoints_of(service, port.port));
                    routes.services.insert(Destination::NodePort(node_port), name.clone());
                }
            }
        }
        routes.endpoints = routes.virtual_ports.values().chain(routes.node_ports.values()).flatten().copied().collect();
        routes
    }
}

fn endpoints_of(service: &super::protocol::ServiceRoute, port: u16) -> Vec<SocketAddr> {
    service
        .endpoints
        .iter()
        .filter_map(|e| {
            let (_, host_port) = e.ports.iter().find(|(p, _)| *p == port)?;
            Some(SocketAddr::new(e.host_ip.parse().ok()?, *host_port))
        })
        .collect()
}

/// `WEB_SERVICE_HOST`, `WEB_SERVICE_PORT`, `WEB_PORT_80_TCP` and the rest, as Kubernetes sets
/// them for the services that exist when a container starts.
fn service_variables(name: &str, ip: Ipv4Addr, ports: &[super::protocol::RoutePort]) -> Vec<(String, String)> {
    let prefix = name.to_uppercase().replace('-', "_");
    let Some(first) = ports.first() else { return Vec::new() };
    let mut variables = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.to_string()),
        (format!("{prefix}_SERVICE_PORT"), first.port.to_string()),
        (format!("{prefix}_PORT"), format!("tcp://{ip}:{}", first.port)),
    ];
    for port in ports {
        if let Some(port_name) = &port.name {
            let port_name = port_name.to_uppercase().replace('-', "_");
            variables.push((format!("{prefix}_SERVICE_PORT_{port_name}"), port.port.to_string()));
        }
        let base = format!("{prefix}_PORT_{}_TCP", port.port);
        variables.push((base.clone(), format!("tcp://{ip}:{}", port.port)));
        variables.push((format!("{base}_PROTO"), "tcp".into()));
        variables.push((format!("{base}_PORT"), port.port.to_string()));
        variables.push((format!("{base}_ADDR"), ip.to_string()));
    }
    variables
}

/// The resolver settings a pod's sandbox gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

pub fn dns_config(namespace: &str) -> DnsConfig {
    DnsConfig {
        nameservers: vec![DNS_ADDRESS.to_string()],
        search: vec![
            format!("{namespace}.svc.{CLUSTER_DOMAIN}"),
            format!("svc.{CLUSTER_DOMAIN}"),
            CLUSTER_DOMAIN.to_owned(),
        ],
        options: vec!["ndots:5".to_owned()],
    }
}

/// Tasks that end when this is dropped.
struct Tasks(Vec<AbortHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The proxy and resolver of one node.
pub struct Mesh {
    node: String,
    /// NodePorts listen here.
    address: IpAddr,
    routes: RwLock<Arc<Routes>>,
    next: AtomicUsize,
    node_ports: Mutex<HashMap<u16, Tasks>>,
    /// Per `(namespace, pod)`: the sandbox process whose namespace is set up, and the tasks
    /// serving it.
    pods: Mutex<HashMap<(String, String), (i64, Tasks)>>,
    /// Resolvers for names outside the cluster, from the node's `/etc/resolv.conf`.
    upstream: Vec<SocketAddr>,
    /// Per service (`namespace/name`), what was forwarded, for `/metrics`.
    traffic: Mutex<HashMap<Arc<str>, Traffic>>,
    /// The TLS of tunnels to other nodes, once the node has a certificate.
    tunnel: std::sync::OnceLock<Tunnel>,
    /// Tunnels opened to other nodes, taken from them, and refused.
    tunnel_counts: [std::sync::atomic::AtomicU64; 3],
}

/// The node's side of the tunnels: how it connects to other nodes, and its own port.
struct Tunnel {
    connector: tokio_rustls::TlsConnector,
    port: u16,
    _accepting: Tasks,
}

/// What the tunnels counted since the agent started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelCounts {
    /// Connections this node tunnelled to another node.
    pub opened: u64,
    /// Tunnelled connections this node took from other nodes.
    pub accepted: u64,
    /// Connections to this node's tunnel it refused: no valid certificate, a node not in the
    /// route table, or a port that is not an endpoint's.
    pub refused: u64,
}

/// How long a tunnel's handshake may take.
const TUNNEL_HANDSHAKE: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh").field("node", &self.node).field("address", &self.address).finish_non_exhaustive()
    }
}

/// The nameservers of the node's `/etc/resolv.conf`.
pub fn host_resolvers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|address| address.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl Mesh {
    pub fn new(node: &str, address: IpAddr, upstream: Vec<SocketAddr>) -> Arc<Mesh> {
        Arc::new(Mesh {
            node: node.to_owned(),
            address,
            routes: RwLock::new(Arc::new(Routes::default())),
            next: AtomicUsize::new(0),
            node_ports: Mutex::new(HashMap::new()),
            pods: Mutex::new(HashMap::new()),
            upstream,
            traffic: Mutex::new(HashMap::new()),
            tunnel: std::sync::OnceLock::new(),
            tunnel_counts: Default::default(),
        })
    }

    /// Starts taking tunnelled traffic on the node's address (a port the system picks), and
    /// tunnels to other nodes from now on; returns the port, for the heartbeats.
    pub async fn start_tunnel(
        self: &Arc<Self>,
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<u16> {
        if let Some(tunnel) = self.tunnel.get() {
            return Ok(tunnel.port);
        }
        let listener = TcpListener::bind(SocketAddr::new(self.address, 0)).await?;
        let port = listener.local_addr()?.port();
        let mesh = self.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let task = tokio::spawn(async move { mesh.serve_tunnel(listener, acceptor).await });
        let tunnel = Tunnel {
            connector: tokio_rustls::TlsConnector::from(client),
            port,
            _accepting: Tasks(vec![task.abort_handle()]),
        };
        let _ = self.tunnel.set(tunnel);
        tracing::info!(node = %self.node, address = %self.address, port, "Taking other nodes' service traffic over mutual TLS.");
        Ok(port)
    }

    /// What the tunnels counted.
    pub fn tunnel_counts(&self) -> TunnelCounts {
        let [opened, accepted, refused] = &self.tunnel_counts;
        TunnelCounts {
            opened: opened.load(Ordering::Relaxed),
            accepted: accepted.load(Ordering::Relaxed),
            refused: refused.load(Ordering::Relaxed),
        }
    }

    async fn serve_tunnel(self: Arc<Self>, listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor) {
        loop {
            let Ok((inbound, from)) = listener.accept().await else {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            };
            let (mesh, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Err(why) = mesh.take_tunnel(inbound, acceptor).await {
                    mesh.tunnel_counts[2].fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(node = %mesh.node, %from, why, "Refused a tunnel.");
                }
            });
        }
    }

    /// One tunnelled connection from another node: checked, then copied to the endpoint.
    async fn take_tunnel(&self, inbound: TcpStream, acceptor: tokio_rustls::TlsAcceptor) -> Result<(), String> {
        let _ = inbound.set_nodelay(true);
        let mut stream = tokio::time::timeout(TUNNEL_HANDSHAKE, acceptor.accept(inbound))
            .await
            .map_err(|_| "the handshake did not finish in time".to_owned())?
            .map_err(|e| format!("the handshake failed: {e}"))?;
        let routes = self.routes();
        let presented = crate::tls::peer_fingerprint(stream.get_ref().1).unwrap_or_default();
        if !routes.peers.contains(&presented) {
            return Err(format!("certificate {presented} is no current node's"));
        }
        let mut port = [0u8; 2];
        tokio::time::timeout(TUNNEL_HANDSHAKE, stream.read_exact(&mut port))
            .await
            .map_err(|_| "no port came".to_owned())?
            .map_err(|e| e.to_string())?;
        let target = SocketAddr::new(self.address, u16::from_be_bytes(port));
        if !routes.endpoints.contains(&target) {
            let _ = stream.write_all(&[1]).await;
            return Err(format!("{target} is not an endpoint on this node"));
        }
        let mut outbound = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(outbound)) => outbound,
            _ => {
                // Refused by the endpoint, not by the tunnel: the other node tries its next one.
                let _ = stream.write_all(&[2]).await;
                return Ok(());
            }
        };
        self.tunnel_counts[1].fetch_add(1, Ordering::Relaxed);
        stream.write_all(&[0]).await.map_err(|e| e.to_string())?;
        let _ = outbound.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut stream, &mut outbound).await;
        Ok(())
    }

    /// A connection to `target` through its node's tunnel, open once that node said so.
    async fn open_tunnel(
        &self,
        tunnel: &Tunnel,
        target: SocketAddr,
        port: u16,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let socket = TcpStream::connect(SocketAddr::new(target.ip(), port)).await.map_err(|e| e.to_string())?;
        let _ = socket.set_nodelay(true);
        let name = rustls_pki_types::ServerName::IpAddress(target.ip().into());
        let mut stream = tokio::time::timeout(TUNNEL_HANDSHAKE, tunnel.connector.connect(name, socket))
            .await
            .map_err(|_| "the tunnel's handshake did not finish in time".to_owned())?
            .map_err(|e| format!("the tunnel's handshake failed: {e}"))?;
        stream.write_all(&target.port().to_be_bytes()).await.map_err(|e| e.to_string())?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await.map_err(|e| e.to_string())?;
        match answer[0] {
            0 => {
                self.tunnel_counts[0].fetch_add(1, Ordering::Relaxed);
                Ok(stream)
            }
            1 => Err(format!("the node at {} does not take {target}", target.ip())),
            _ => Err(format!("{target} refused")),
        }
    }

    /// What the proxy counted per service (`namespace/name`) since the agent started.
    pub fn traffic(&self) -> Vec<(String, Traffic)> {
        let mut traffic: Vec<(String, Traffic)> =
            lock(&self.traffic).iter().map(|(service, t)| (service.to_string(), *t)).collect();
        traffic.sort_by(|a, b| a.0.cmp(&b.0));
        traffic
    }

    /// Counts a connection to `destination` as it comes in (`failed: false`), or as not
    /// forwarded (`failed: true`).
    fn count(&self, routes: &Routes, destination: Destination, failed: bool) {
        let Some(service) = routes.services.get(&destination) else { return };
        let mut traffic = lock(&self.traffic);
        let entry = traffic.entry(service.clone()).or_default();
        if failed {
            entry.errors += 1;
        } else {
            entry.connections += 1;
        }
    }

    fn routes(&self) -> Arc<Routes> {
        self.routes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The version of the route table in use.
    pub fn version(&self) -> u64 {
        self.routes().version
    }

    /// Routes by `table` from now on: new connections see it at once; NodePorts that are no
    /// longer declared stop listening, new ones start.
    pub async fn update(self: &Arc<Self>, table: &RouteTable) {
        let routes = Arc::new(Routes::compile(table));
        tracing::debug!(
            node = %self.node,
            version = table.version,
            endpoints = ?table.services.iter().map(|s| (&s.name, s.endpoints.iter().map(|e| (&e.pod, e.ports.first())).collect::<Vec<_>>())).collect::<Vec<_>>(),
            "Routing by a new table."
        );
        let wanted: Vec<u16> = routes.node_ports.keys().copied().collect();
        *self.routes.write().unwrap_or_else(std::sync::PoisonError::into_inner) = routes;
        lock(&self.node_ports).retain(|port, _| wanted.contains(port));
        for port in wanted {
            if lock(&self.node_ports).contains_key(&port) {
                continue;
            }
            match TcpListener::bind(SocketAddr::new(self.address, port)).await {
                Ok(listener) => {
                    let mesh = self.clone();
                    let task = tokio::spawn(async move { mesh.serve_node_port(listener, port).await });
                    lock(&self.node_ports).insert(port, Tasks(vec![task.abort_handle()]));
                }
                Err(error) => tracing::warn!(
                    node = %self.node, port, %error,
                    "Node port {port} cannot listen on {}; another process holds it. Free the port; berth tries again with the next route update.",
                    self.address
                ),
            }
        }
    }

    /// The service variables a new container of `namespace` gets.
    pub fn environment(&self, namespace: &str) -> Vec<(String, String)> {
        self.routes().environment.get(namespace).cloned().unwrap_or_default()
    }

    /// Node ports listening now.
    pub fn listening_node_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = lock(&self.node_ports).keys().copied().collect();
        ports.sort_unstable();
        ports
    }

    /// Makes services reachable from the pod whose sandbox is process `pid`: installs the
    /// redirect rules in its network namespace and listens there. Does nothing when that pod
    /// and process are set up already.
    pub async fn attach(self: &Arc<Self>, namespace: &str, pod: &str, pid: i64) -> Result<(), String> {
        let key = (namespace.to_owned(), pod.to_owned());
        if lock(&self.pods).get(&key).is_some_and(|(attached, _)| *attached == pid) {
            return Ok(());
        }
        let (tcp, udp) = tokio::task::spawn_blocking(move || enter_pod(pid))
            .await
            .map_err(|e| format!("setting up service routing panicked: {e}"))??;
        let listener = TcpListener::from_std(tcp).map_err(|e| e.to_string())?;
        let socket = UdpSocket::from_std(udp).map_err(|e| e.to_string())?;
        let socket = Arc::new(socket);
        let mesh = self.clone();
        let accept = tokio::spawn(async move { mesh.serve_pod(listener).await });
        let mesh = self.clone();
        let dns = tokio::spawn(async move { mesh.serve_dns(socket).await });
        lock(&self.pods).insert(key, (pid, Tasks(vec![accept.abort_handle(), dns.abort_handle()])));
        Ok(())
    }

    /// Whether the pod's namespace is set up.
    pub fn is_attached(&self, namespace: &str, pod: &str) -> bool {
        lock(&self.pods).contains_key(&(namespace.to_owned(), pod.to_owned()))
    }

    /// Stops serving a pod that is being removed.
    pub fn detach(&self, namespace: &str, pod: &str) {
        lock(&self.pods).remove(&(namespace.to_owned(), pod.to_owned()));
    }

    async fn serve_node_port(self: Arc<Self>, listener: TcpListener, port: u16) {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                // Out of descriptors, most likely: let connections finish before accepting more.
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            };
            let routes = self.routes();
            let mesh = self.clone();
            tokio::spawn(async move {
                let destination = Destination::NodePort(port);
                mesh.count(&routes, destination, false);
                let targets = routes.node_ports.get(&port).map(Vec::as_slice).unwrap_or_default();
                if !mesh.forward(inbound, &routes, targets).await {
                    mesh.count(&routes, destination, true);
                }
            });
        }
    }

    async fn serve_pod(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                // Out of descriptors, most likely: let connections finish before accepting more.
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            };
            let mesh = self.clone();
            tokio::spawn(async move {
                let Some(original) = original_destination(&inbound) else { return };
                if original == SocketAddrV4::new(DNS_ADDRESS, 53) {
                    mesh.serve_dns_stream(inbound).await;
                    return;
                }
                let routes = mesh.routes();
                let destination = Destination::Virtual(original);
                mesh.count(&routes, destination, false);
                let targets = routes.virtual_ports.get(&original).map(Vec::as_slice).unwrap_or_default();
                if !mesh.forward(inbound, &routes, targets).await {
                    mesh.count(&routes, destination, true);
                }
            });
        }
    }

    /// Connects to one of `targets`, round-robin, trying the next when one refuses, and copies
    /// both ways until either side closes; a target on another node is reached through that
    /// node's tunnel when `routes` lists one. Without a target the connection is closed. False
    /// when no target took it.
    async fn forward(&self, mut inbound: TcpStream, routes: &Routes, targets: &[SocketAddr]) -> bool {
        if targets.is_empty() {
            tracing::debug!(node = %self.node, "No ready endpoint; closing the connection.");
            return false;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..targets.len().min(3) {
            let target = targets[(start + i) % targets.len()];
            let tunnel = self.tunnel.get().filter(|_| target.ip() != self.address);
            if let Some((tunnel, port)) = tunnel.and_then(|t| Some((t, *routes.tunnels.get(&target.ip())?))) {
                match tokio::time::timeout(CONNECT_TIMEOUT + TUNNEL_HANDSHAKE, self.open_tunnel(tunnel, target, port))
                    .await
                {
                    Ok(Ok(mut outbound)) => {
                        tracing::trace!(%target, "Forwarding through the node's tunnel.");
                        let _ = inbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return true;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%target, %error, "A tunnel did not open; trying the next endpoint.")
                    }
                    Err(_) => tracing::debug!(%target, "A tunnel did not open in time; trying the next endpoint."),
                }
                continue;
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
                Ok(Ok(mut outbound)) => {
                    tracing::trace!(%target, "Forwarding.");
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    return true;
                }
                Ok(Err(error)) => tracing::debug!(%target, %error, "An endpoint refused; trying the next."),
                Err(_) => tracing::debug!(%target, "An endpoint did not answer in time; trying the next."),
            }
        }
        false
    }

    async fn serve_dns(self: Arc<Self>, socket: Arc<UdpSocket>) {
        let mut buffer = vec![0u8; 4096];
        loop {
            let Ok((length, peer)) = socket.recv_from(&mut buffer).await else {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            };
            let query = buffer[..length].to_vec();
            let (mesh, socket) = (self.clone(), socket.clone());
            tokio::spawn(async move {
                if let Some(answer) = mesh.resolve(&query).await {
                    let _ = socket.send_to(&answer, peer).await;
                }
            });
        }
    }

    /// DNS over TCP: two-byte length, then the message; one or more per connection.
    async fn serve_dns_stream(&self, mut stream: TcpStream) {
        loop {
            let mut length = [0u8; 2];
            if stream.read_exact(&mut length).await.is_err() {
                return;
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(length))];
            if stream.read_exact(&mut query).await.is_err() {
                return;
            }
            let Some(answer) = self.resolve(&query).await else { return };
            let Ok(length) = u16::try_from(answer.len()) else { return };
            if stream.write_all(&length.to_be_bytes()).await.is_err() || stream.write_all(&answer).await.is_err() {
                return;
            }
        }
    }

    /// Answers a query for a cluster name, or relays it to the node's resolvers.
    async fn resolve(&self, query: &[u8]) -> Option<Vec<u8>> {
        if let Some(answer) = answer(&self.routes().names, query) {
            return Some(answer);
        }
        for upstream in &self.upstream {
            let bind: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
            let Ok(socket) = UdpSocket::bind(bind).await else { continue };
            if socket.send_to(query, upstream).await.is_err() {
                continue;
            }
            let mut buffer = vec![0u8; 4096];
            if let Ok(Ok((length, _))) =
                tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buffer)).await
            {
                buffer.truncate(length);
                return Some(buffer);
            }
        }
        let request = Message::from_vec(query).ok()?;
        let mut failure = Message::error_msg(request.metadata.id, request.metadata.op_code, ResponseCode::ServFail);
        failure.queries = request.queries;
        failure.to_vec().ok()
    }
}

/// The answer to a query for a name under the cluster domain, from `names` (`name.namespace`
/// to addresses); `None` for a name outside it, which goes upstream.
fn answer(names: &HashMap<String, Vec<Ipv4Addr>>, query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query || request.metadata.op_code != OpCode::Query {
        return None;
    }
    let question = request.queries.first()?;
    let name = question.name().to_lowercase().to_ascii();
    let name = name.trim_end_matches('.');
    let suffix = format!(".svc.{CLUSTER_DOMAIN}");
    let in_cluster = name == CLUSTER_DOMAIN || name.ends_with(&format!(".{CLUSTER_DOMAIN}"));
    if !in_cluster {
        return None;
    }
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.queries = request.queries.clone();
    match name.strip_suffix(&suffix).and_then(|service| names.get(service)) {
        Some(addresses) => {
            if question.query_type() == RecordType::A {
                let owner = Name::from_ascii(format!("{name}.")).ok()?;
                for ip in addresses {
                    response.answers.push(Record::from_rdata(owner.clone(), DNS_TTL, RData::A(A(*ip))));
                }
            }
        }
        None => response.metadata.response_code = ResponseCode::NXDomain,
    }
    response.to_vec().ok()
}

/// The address a redirected connection was meant for.
fn original_destination(stream: &TcpStream) -> Option<SocketAddrV4> {
    let mut address: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: SO_ORIGINAL_DST writes at most `length` bytes of a sockaddr_in into `address`.
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&raw mut address).cast(),
            &raw mut length,
        )
    };
    if result != 0 {
        return None;
    }
    Some(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr)), u16::from_be(address.sin_port)))
}

/// The NAT rules of a pod's namespace, loaded with `iptables-restore --noflush`: declaring the
/// chain empties it, so loading twice leaves one copy.
fn rules() -> String {
    format!(
        "*nat\n:BERTH-SERVICES - [0:0]\n\
         -A BERTH-SERVICES -d {DNS_ADDRESS}/32 -p udp --dport 53 -j REDIRECT --to-ports {DNS_PORT}\n\
         -A BERTH-SERVICES -d 127.77.0.0/16 -p tcp -j REDIRECT --to-ports {PROXY_PORT}\n\
         -A BERTH-SERVICES -d 127.78.0.0/16 -p tcp -j REDIRECT --to-ports {PROXY_PORT}\n\
         COMMIT\n"
    )
}

fn iptables(pid: i64, program: &str, args: &[&str], input: Option<&str>) -> Result<bool, String> {
    use std::io::Write;
    let mut command = std::process::Command::new("nsenter");
    command.arg(format!("--net=/proc/{pid}/ns/net")).arg(program).args(args);
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().map_err(|e| {
        format!(
            "running nsenter failed: {e}; berth's service routing needs nsenter (util-linux) and iptables on the node"
        )
    })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if output.status.success() {
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No such file") && stderr.contains(program) || output.status.code() == Some(127) {
        return Err(format!("{program} is missing on this node: install the iptables package"));
    }
    Ok(false)
}

/// Installs the redirect rules in the namespace of process `pid` and opens the proxy and
/// resolver sockets there. Blocking.
fn enter_pod(pid: i64) -> Result<(std::net::TcpListener, std::net::UdpSocket), String> {
    let fail = |what: &str, output: String| format!("setting up service routing in the pod failed: {what}: {output}");
    if !iptables(pid, "iptables-restore", &["--noflush"], Some(&rules()))? {
        return Err(fail("iptables-restore", "the rules were refused".into()));
    }
    if !iptables(pid, "iptables", &["-w", "-t", "nat", "-C", "OUTPUT", "-j", "BERTH-SERVICES"], None)?
        && !iptables(pid, "iptables", &["-w", "-t", "nat", "-A", "OUTPUT", "-j", "BERTH-SERVICES"], None)?
    {
        return Err(fail("iptables", "the OUTPUT jump was refused".into()));
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<(std::net::TcpListener, std::net::UdpSocket), String> {
                let namespace = std::fs::File::open(format!("/proc/{pid}/ns/net"))
                    .map_err(|e| format!("the pod's network namespace is gone: {e}"))?;
                // SAFETY: setns on a valid namespace descriptor changes only this thread, which
                // ends when the scope does; sockets keep the namespace they were made in.
                if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(fail("setns", std::io::Error::last_os_error().to_string()));
                }
                let tcp = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, PROXY_PORT)).map_err(|e| {
                    fail(
                        &format!("listening on 127.0.0.1:{PROXY_PORT}"),
                        format!("{e}; berth keeps that port for itself"),
                    )
                })?;
                let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, DNS_PORT)).map_err(|e| {
                    fail(
                        &format!("listening on 127.0.0.1:{DNS_PORT}/udp"),
                        format!("{e}; berth keeps that port for itself"),
                    )
                })?;
                tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
                udp.set_nonblocking(true).map_err(|e| e.to_string())?;
                Ok((tcp, udp))
            })
            .join()
            .unwrap_or_else(|_| Err("the routing setup thread panicked".into()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::protocol::{Endpoint, RoutePort, ServiceRoute};

    fn table() -> RouteTable {
        RouteTable {
            version: 7,
            peers: Vec::new(),
            services: vec![
                ServiceRoute {
                    namespace: "shop".into(),
                    name: "web-api".into(),
                    cluster_ip: Some("127.77.3.4".into()),
                    ports: vec![RoutePort { name: Some("http".into()), port: 80, node_port: Some(30080) }],
                    endpoints: vec![Endpoint {
                        pod: "web-1".into(),
                        node: "a".into(),
                        host_ip: "127.0.0.2".into(),
                        ports: vec![(80, 41000)],
                        pod_ip: None,
                        pod_ports: Vec::new(),
                    }],
                },
                ServiceRoute {
                    namespace: "shop".into(),
                    name: "db".into(),
                    cluster_ip: None,
                    ports: vec![RoutePort { name: None, port: 5432, node_port: None }],
                    endpoints: vec![Endpoint {
                        pod: "db-1".into(),
                        node: "b".into(),
                        host_ip: "127.0.0.3".into(),
                        ports: vec![(5432, 42000)],
                        pod_ip: Some("127.78.1.2".into()),
                        pod_ports: vec![(5432, 42000)],
                    }],
                },
            ],
        }
    }

    fn query(name: &str, record_type: RecordType) -> Vec<u8> {
        let mut message = Message::query();
        message.queries.push(hickory_proto::op::Query::query(Name::from_ascii(name).unwrap(), record_type));
        message.to_vec().unwrap()
    }

    fn addresses(answer: &[u8]) -> (ResponseCode, Vec<Ipv4Addr>) {
        let message = Message::from_vec(answer).unwrap();
        let ips = message
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        (message.metadata.response_code, ips)
    }

    #[test]
    fn compiles_virtual_ports_node_ports_names_and_variables() {
        let routes = Routes::compile(&table());
        assert_eq!(routes.version, 7);
        let vip = SocketAddrV4::new(Ipv4Addr::new(127, 77, 3, 4), 80);
        assert_eq!(routes.virtual_ports[&vip], vec!["127.0.0.2:41000".parse().unwrap()]);
        assert_eq!(routes.node_ports[&30080], vec!["127.0.0.2:41000".parse().unwrap()]);
        let pod = SocketAddrV4::new(Ipv4Addr::new(127, 78, 1, 2), 5432);
        assert_eq!(routes.virtual_ports[&pod], vec!["127.0.0.3:42000".parse().unwrap()]);
        assert_eq!(routes.names["db.shop"], vec![Ipv4Addr::new(127, 78, 1, 2)]);
        let variables: HashMap<_, _> = routes.environment["shop"].iter().cloned().collect();
        assert_eq!(variables["WEB_API_SERVICE_HOST"], "127.77.3.4");
        assert_eq!(variables["WEB_API_SERVICE_PORT"], "80");
        assert_eq!(variables["WEB_API_SERVICE_PORT_HTTP"], "80");
        assert_eq!(variables["WEB_API_PORT"], "tcp://127.77.3.4:80");
        assert_eq!(variables["WEB_API_PORT_80_TCP_ADDR"], "127.77.3.4");
        assert!(!variables.keys().any(|k| k.starts_with("DB_")), "headless services set no variables");
    }

    #[test]
    fn answers_cluster_names_and_leaves_others_upstream() {
        let routes = Routes::compile(&table());
        let answer_for = |name, t| answer(&routes.names, &query(name, t));
        let (code, ips) = addresses(&answer_for("web-api.shop.svc.cluster.local.", RecordType::A).unwrap());
        assert_eq!((code, ips), (ResponseCode::NoError, vec![Ipv4Addr::new(127, 77, 3, 4)]));
        let (code, ips) = addresses(&answer_for("WEB-API.Shop.svc.cluster.local.", RecordType::A).unwrap());
        assert_eq!((code, ips.len()), (ResponseCode::NoError, 1), "names are case-insensitive");
        let (code, ips) = addresses(&answer_for("web-api.shop.svc.cluster.local.", RecordType::AAAA).unwrap());
        assert_eq!((code, ips.len()), (ResponseCode::NoError, 0), "a known name has no IPv6 address, and exists");
        let (code, _) = addresses(&answer_for("web-api.shop.shop.svc.cluster.local.", RecordType::A).unwrap());
        assert_eq!(code, ResponseCode::NXDomain, "search-list attempts miss");
        let (_, ips) = addresses(&answer_for("db.shop.svc.cluster.local.", RecordType::A).unwrap());
        assert_eq!(ips, vec![Ipv4Addr::new(127, 78, 1, 2)], "headless names resolve to the pods");
        let (_, ips) = addresses(&answer_for("db-1.db.shop.svc.cluster.local.", RecordType::A).unwrap());
        assert_eq!(ips, vec![Ipv4Addr::new(127, 78, 1, 2)], "each pod of a headless service has a name of its own");
        let (code, _) = addresses(&answer_for("db-7.db.shop.svc.cluster.local.", RecordType::A).unwrap());
        assert_eq!(code, ResponseCode::NXDomain);
        assert!(answer_for("example.org.", RecordType::A).is_none());
    }

    #[tokio::test]
    async fn node_ports_forward_round_robin_and_skip_refusing_endpoints() {
        // Two endpoints that answer with their name, and one that refuses.
        let mut targets = Vec::new();
        for name in ["one", "two"] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            targets.push(listener.local_addr().unwrap());
            tokio::spawn(async move {
                loop {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    stream.write_all(name.as_bytes()).await.unwrap();
                }
            });
        }
        let refusing = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let endpoint = |addr: SocketAddr, pod: &str| Endpoint {
            pod: pod.into(),
            node: "a".into(),
            host_ip: addr.ip().to_string(),
            ports: vec![(80, addr.port())],
            pod_ip: None,
            pod_ports: Vec::new(),
        };
        let mut table = RouteTable {
            version: 1,
            peers: Vec::new(),
            services: vec![ServiceRoute {
                namespace: "shop".into(),
                name: "web".into(),
                cluster_ip: Some("127.77.1.1".into()),
                ports: vec![RoutePort { name: None, port: 80, node_port: Some(free) }],
                endpoints: vec![endpoint(targets[0], "one"), endpoint(refusing, "gone"), endpoint(targets[1], "two")],
            }],
        };
        let mesh = Mesh::new("a", "127.0.0.1".parse().unwrap(), Vec::new());
        mesh.update(&table).await;
        assert_eq!(mesh.listening_node_ports(), vec![free]);
        let fetch = || async move {
            let mut stream = TcpStream::connect(("127.0.0.1", free)).await.unwrap();
            let mut body = String::new();
            stream.read_to_string(&mut body).await.unwrap();
            body
        };
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..9 {
            *seen.entry(fetch().await).or_insert(0) += 1;
        }
        assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), vec!["one".to_owned(), "two".to_owned()], "{seen:?}");
        assert!(seen.values().all(|n| *n >= 3), "balanced: {seen:?}");
        assert_eq!(mesh.traffic(), vec![("shop/web".to_owned(), Traffic { connections: 9, errors: 0 })]);

        // A connection no endpoint takes is counted as an error of its service.
        table.services[0].endpoints = vec![endpoint(refusing, "gone")];
        table.version = 2;
        mesh.update(&table).await;
        assert_eq!(fetch().await, "");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while mesh.traffic() != vec![("shop/web".to_owned(), Traffic { connections: 10, errors: 1 })] {
            assert!(std::time::Instant::now() < deadline, "{:?}", mesh.traffic());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Without the service the port is free again.
        table.services.clear();
        table.version = 3;
        mesh.update(&table).await;
        assert!(mesh.listening_node_ports().is_empty());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpListener::bind(("127.0.0.1", free)).is_err() {
            assert!(std::time::Instant::now() < deadline, "node port {free} still held");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
