//! The service proxy's figures, over loopback:
//! - latency it adds: request/response round trips (64 bytes each way) on kept-open
//!   connections at a fixed rate, straight to a backend and through a node's NodePort, at 1,000
//!   and 10,000 requests a second; p50 and p99 of each and the difference;
//! - CPU it spends: the proxy runs alone on one thread, whose CPU time is read before and after
//!   each run, per 1,000 requests a second;
//! - the same for a new connection per request, at 1,000 a second;
//! - all of it again between two nodes (127.0.0.1 and 127.0.0.2): the NodePort on one node,
//!   the backend on the other, through the tunnel the nodes speak mutual TLS over; the CPU is
//!   both nodes' proxies.
//!
//! `cargo bench --bench proxy`. The time from a pod turning unready to no new connections
//! reaching it is measured with real processes by `cargo bench --bench control -- unready`.

use berth::nodes::protocol::{Endpoint, RoutePort, RouteTable, ServiceRoute, TunnelPeer};
use berth::nodes::proxy::Mesh;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MESSAGE: usize = 64;
const RUN: Duration = Duration::from_secs(3);

/// An echo server: reads 64 bytes, writes them back, until the peer closes. It shares the
/// client's thread, so that on two cores the proxy has one to itself, as it would beside
/// services that are not all busy at once.
async fn backend(ip: [u8; 4]) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from((ip, 0))).await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut buffer = [0u8; MESSAGE];
                while stream.read_exact(&mut buffer).await.is_ok() {
                    if stream.write_all(&buffer).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

/// The CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Two nodes' certificates from one CA, and the tunnels of their proxies: each mesh starts its
/// tunnel; the peers to put in the route table.
async fn tunnels(meshes: &[(&str, &std::sync::Arc<Mesh>, std::net::IpAddr)]) -> Vec<TunnelPeer> {
    let folder = tempfile::tempdir().unwrap();
    let ca = berth::tls::Authority::load_or_create(folder.path()).unwrap();
    let mut peers = Vec::new();
    for (name, mesh, address) in meshes {
        let (key, public) = berth::tls::NodeIdentity::new_key().unwrap();
        let issued = ca.certify_node(name, Some(*address), &public, Duration::from_secs(3600)).unwrap();
        let identity = std::sync::Arc::new(berth::tls::NodeIdentity::default());
        identity.set(&issued.pem, &key).unwrap();
        let (server, client) = berth::tls::tunnel_configs(ca.pem(), identity).unwrap();
        let port = mesh.start_tunnel(server, client).await.unwrap();
        peers.push(TunnelPeer {
            node: (*name).to_owned(),
            address: address.to_string(),
            port,
            certificates: vec![issued.fingerprint],
        });
    }
    peers
}

/// A node's proxy on a thread of its own with a NodePort to `target`; returns the port and a
/// way to ask for the thread's CPU time. With `tunnelled`, a second node at `target`'s address
/// runs its proxy on the same thread, and the first reaches `target` through its tunnel.
fn proxy(target: SocketAddr, tunnelled: bool) -> (u16, mpsc::Sender<mpsc::Sender<Duration>>) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (ask_tx, ask_rx) = mpsc::channel::<mpsc::Sender<Duration>>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let node_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mesh = Mesh::new("bench", "127.0.0.1".parse().unwrap(), Vec::new());
            let other = Mesh::new("other", target.ip(), Vec::new());
            let peers = if tunnelled {
                tunnels(&[("bench", &mesh, "127.0.0.1".parse().unwrap()), ("other", &other, target.ip())]).await
            } else {
                Vec::new()
            };
            let table = RouteTable {
                version: 1,
                peers,
                services: vec![ServiceRoute {
                    namespace: "bench".into(),
                    name: "echo".into(),
                    cluster_ip: Some("127.77.1.1".into()),
                    ports: vec![RoutePort { name: None, port: 80, node_port: Some(node_port) }],
                    endpoints: vec![Endpoint {
                        pod: "echo-0".into(),
                        node: "bench".into(),
                        host_ip: target.ip().to_string(),
                        ports: vec![(80, target.port())],
                        pod_ip: None,
                        pod_ports: Vec::new(),
                    }],
                }],
            };
            mesh.update(&table).await;
            if tunnelled {
                other.update(&table).await;
            }
            ready_tx.send(node_port).unwrap();
            loop {
                // Answer CPU questions from this thread, between serving connections.
                match ask_rx.try_recv() {
                    Ok(reply) => reply.send(thread_cpu()).unwrap(),
                    Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => {}
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    });
    (ready_rx.recv().unwrap(), ask_tx)
}

fn cpu_of(ask: &mpsc::Sender<mpsc::Sender<Duration>>) -> Duration {
    let (tx, rx) = mpsc::channel();
    ask.send(tx).unwrap();
    rx.recv().unwrap()
}

/// Round trips at `rate` a second for `RUN` over `connections` kept-open connections (or a new
/// connection per request); the latencies.
async fn drive(address: SocketAddr, rate: u32, connections: u32, reconnect: bool) -> Vec<Duration> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut ticks = tokio::time::interval(Duration::from_secs(1) * connections / rate);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut stream = None;
            let end = Instant::now() + RUN;
            let message = [7u8; MESSAGE];
            let mut answer = [0u8; MESSAGE];
            while Instant::now() < end {
                ticks.tick().await;
                let start = Instant::now();
                if reconnect || stream.is_none() {
                    let connected = TcpStream::connect(address).await.unwrap();
                    connected.set_nodelay(true).unwrap();
                    stream = Some(connected);
                }
                let connection = stream.as_mut().unwrap();
                connection.write_all(&message).await.unwrap();
                connection.read_exact(&mut answer).await.unwrap();
                latencies.push(start.elapsed());
            }
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(latencies) = tasks.join_next().await {
        all.extend(latencies.unwrap());
    }
    all.sort();
    // The first requests of each connection warm caches; keep the steady state.
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let local = backend([127, 0, 0, 1]).await;
        let remote = backend([127, 0, 0, 2]).await;
        let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
        let cases = [
            ("one node", local, false, (1_000, 4, false)),
            ("one node", local, false, (10_000, 10, false)),
            ("one node", local, false, (1_000, 4, true)),
            ("two nodes, mutual TLS", remote, true, (1_000, 4, false)),
            ("two nodes, mutual TLS", remote, true, (10_000, 10, false)),
            ("two nodes, mutual TLS", remote, true, (1_000, 4, true)),
        ];
        for (nodes, target, tunnelled, (rate, connections, reconnect)) in cases {
            if only.as_deref().is_some_and(|o| (o == "tls") != tunnelled) {
                continue;
            }
            let (node_port, ask) = proxy(target, tunnelled);
            let proxied: SocketAddr = ([127, 0, 0, 1], node_port).into();
            // Alternate direct and proxied runs; report medians over the rounds.
            let mut added = Vec::new();
            let mut rows = Vec::new();
            let mut cpu_per_1k = Vec::new();
            for _ in 0..ROUNDS {
                let direct = drive(target, rate, connections, reconnect).await;
                let before = cpu_of(&ask);
                let started = Instant::now();
                let through = drive(proxied, rate, connections, reconnect).await;
                let cpu = cpu_of(&ask) - before;
                let seconds = started.elapsed().as_secs_f64();
                let achieved = through.len() as f64 / seconds;
                cpu_per_1k.push(cpu.as_secs_f64() / seconds / (achieved / 1000.0));
                let (d99, t99) = (us(percentile(&direct, 0.99)), us(percentile(&through, 0.99)));
                added.push(t99 - d99);
                rows.push((us(percentile(&direct, 0.5)), d99, us(percentile(&through, 0.5)), t99, achieved));
            }
            let median = |values: &mut Vec<f64>| {
                values.sort_by(f64::total_cmp);
                values[values.len() / 2]
            };
            let kind = if reconnect { "new connection per request" } else { "kept-open connections" };
            for (d50, d99, t50, t99, achieved) in &rows {
                println!(
                    "proxy ({nodes}): {rate} req/s, {kind}: direct p50 {d50:.0} us p99 {d99:.0} us; proxied p50 {t50:.0} us p99 {t99:.0} us; {achieved:.0} req/s"
                );
            }
            println!(
                "proxy ({nodes}): {rate} req/s, {kind}: adds p99 median {:.0} us over {ROUNDS} rounds (goal <= 300 us); proxy CPU median {:.3} core per 1,000 req/s (goal <= 0.1)",
                median(&mut added),
                median(&mut cpu_per_1k),
            );
        }
    });
}

const ROUNDS: usize = 5;
