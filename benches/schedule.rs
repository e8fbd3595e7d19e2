//! The scheduler alone: 100,000 pods of 1,000 workloads placed onto 1,000 nodes with labels,
//! in one pass and in batches (as a controller places pods over time). Reports placements per
//! second, median of several runs. The whole-system figure over simulated nodes speaking the
//! agent protocol belongs to the control-plane benchmark.

use berth::nodes::protocol::Resources;
use berth::plan::schedule::{NodeInfo, Placement, PodRequest, schedule};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let runs = if quick { 3 } else { 7 };
    let nodes: Vec<NodeInfo> = (0..1000)
        .map(|i| NodeInfo {
            name: format!("node-{i:04}"),
            ready: i % 97 != 0,
            labels: BTreeMap::from([
                ("zone".to_owned(), format!("z{}", i % 3)),
                ("disk".to_owned(), if i % 2 == 0 { "ssd" } else { "hdd" }.to_owned()),
            ]),
            allocatable: Resources { cpu_millis: 64_000, memory_bytes: 256 << 30 },
        })
        .collect();
    let pods: Vec<PodRequest> = (0..100_000)
        .map(|i| {
            let workload = i % 1000;
            let mut selector = BTreeMap::new();
            if workload % 4 == 0 {
                selector.insert("disk".to_owned(), "ssd".to_owned());
            }
            PodRequest {
                pod: format!("w{workload}-{i}"),
                workload: format!("w{workload}"),
                requests: Resources {
                    cpu_millis: 100 + (i % 5) as u64 * 50,
                    memory_bytes: (128 + (i % 7) as u64 * 64) << 20,
                },
                node_selector: selector,
                pinned: None,
            }
        })
        .collect();

    let mut one_pass = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let placed = schedule(&nodes, &[], &pods);
        one_pass.push(start.elapsed());
        let unschedulable = placed.iter().filter(|(_, p)| matches!(p, Placement::Unschedulable(_))).count();
        assert_eq!(unschedulable, 0, "the synthetic cluster has room for every pod");
    }
    report("100,000 pods onto 1,000 nodes, one pass", one_pass, pods.len());

    // In batches of 1,000 with everything placed before counted as running.
    let mut batched = Vec::new();
    for _ in 0..runs {
        let mut running: Vec<(PodRequest, String)> = Vec::with_capacity(pods.len());
        let mut elapsed = Duration::ZERO;
        for batch in pods.chunks(1000) {
            let start = Instant::now();
            let placed = schedule(&nodes, &running, batch);
            elapsed += start.elapsed();
            for (pod, (_, placement)) in batch.iter().zip(placed) {
                if let Placement::Node(node) = placement {
                    running.push((pod.clone(), node));
                }
            }
        }
        batched.push(elapsed);
    }
    report("100,000 pods onto 1,000 nodes, batches of 1,000", batched, pods.len());
}

fn report(name: &str, mut samples: Vec<Duration>, pods: usize) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let rate = pods as f64 / median.as_secs_f64();
    println!(
        "{name:<52} median {:>8.1} ms  {rate:>10.0} placements/s  goal 10000/s  ratio {:.1}",
        median.as_secs_f64() * 1e3,
        rate / 10_000.0
    );
}
