//! Resource usage on a node: each container's CPU and memory, read from its cgroup, and the
//! node's, read from `/proc`. A reading is cumulative CPU time and the memory in use now; the
//! [`Sampler`] turns two readings into a rate. The engine's streaming stats call blocks about a
//! second per container, so the files are read directly; `runtime::ContainerRuntime::usage`
//! falls back to the engine's one-shot stats where the cgroup is not where Docker puts it.

use super::protocol::{ContainerUsage, NodeUsage, PodUsage};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One container's or the node's usage at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reading {
    /// CPU time used since the container (or the node) started, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, without the page cache the kernel can take back (the working set, what
    /// kubectl top shows).
    pub memory_bytes: u64,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where Docker puts a container's cgroup, under each driver and cgroup version.
fn cgroup_dirs(id: &str) -> [(PathBuf, PathBuf, bool); 4] {
    let root = Path::new(CGROUP_ROOT);
    let scope = format!("docker-{id}.scope");
    [
        // cgroup v1, cgroupfs driver.
        (root.join("cpuacct/docker").join(id), root.join("memory/docker").join(id), false),
        // cgroup v1, systemd driver.
        (root.join("cpuacct/system.slice").join(&scope), root.join("memory/system.slice").join(&scope), false),
        // cgroup v2, systemd driver.
        (root.join("system.slice").join(&scope), root.join("system.slice").join(&scope), true),
        // cgroup v2, cgroupfs driver.
        (root.join("docker").join(id), root.join("docker").join(id), true),
    ]
}

/// A running container's usage from its cgroup files; `None` when they are not where Docker
/// puts them (another driver, a rootless engine) or the container is gone.
pub fn read_cgroup(id: &str) -> Option<Reading> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    cgroup_dirs(id).into_iter().find_map(|(cpu, memory, v2)| {
        if v2 {
            let stat = std::fs::read_to_string(cpu.join("cpu.stat")).ok()?;
            let usage_us = stat_value(&stat, "usage_usec")?;
            let current = read_number(&memory.join("memory.current"))?;
            let memory_stat = std::fs::read_to_string(memory.join("memory.stat")).unwrap_or_default();
            let inactive = stat_value(&memory_stat, "inactive_file").unwrap_or(0);
            Some(Reading { cpu_ns: usage_us.saturating_mul(1000), memory_bytes: current.saturating_sub(inactive) })
        } else {
            let cpu_ns = read_number(&cpu.join("cpuacct.usage"))?;
            let usage = read_number(&memory.join("memory.usage_in_bytes"))?;
            let memory_stat = std::fs::read_to_string(memory.join("memory.stat")).unwrap_or_default();
            let inactive = stat_value(&memory_stat, "total_inactive_file").unwrap_or(0);
            Some(Reading { cpu_ns, memory_bytes: usage.saturating_sub(inactive) })
        }
    })
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a `key value` per line file (`cpu.stat`, `memory.stat`).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        if name == key { value.trim().parse().ok() } else { None }
    })
}

/// The node's usage: CPU time of every core but idle and iowait (from `/proc/stat`, in
/// nanoseconds), and memory in use (`MemTotal - MemAvailable` of `/proc/meminfo`).
pub fn read_node() -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    node_reading(&stat, &meminfo, clock_ticks())
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

fn node_reading(stat: &str, meminfo: &str, ticks_per_second: u64) -> Option<Reading> {
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = cpu.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = fields.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4 && *i < 8).map(|(_, v)| v).sum();
    let kib = |key: &str| {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
    };
    let used = kib("MemTotal")?.saturating_sub(kib("MemAvailable")?);
    Some(Reading {
        cpu_ns: busy.saturating_mul(1_000_000_000 / ticks_per_second.max(1)),
        memory_bytes: used.saturating_mul(1024),
    })
}

/// Seconds since the Unix epoch, for `NodeUsage::sampled_at`.
pub fn epoch_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// One container of this node's pods, as the sampler sees it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub reading: Reading,
}

/// Turns readings into rates: each container's CPU over the time since its last reading (a
/// container seen for the first time has no rate yet and is left out), memory as read.
#[derive(Default)]
pub struct Sampler {
    containers: HashMap<String, (Reading, Instant)>,
    node: Option<(Reading, Instant)>,
}

impl Sampler {
    /// The node's usage from this sample's readings, taken at `at`; `sampled_at` is the wall
    /// clock (seconds since the epoch).
    pub fn sample(&mut self, node: Option<Reading>, containers: Vec<Seen>, at: Instant, sampled_at: i64) -> NodeUsage {
        let rate = |before: &(Reading, Instant), now: &Reading| {
            let elapsed = at.saturating_duration_since(before.1).as_nanos();
            let used = u128::from(now.cpu_ns.saturating_sub(before.0.cpu_ns));
            u64::try_from((used * 1000).checked_div(elapsed)?).ok()
        };
        let mut usage = NodeUsage { sampled_at, ..NodeUsage::default() };
        if let Some(reading) = node {
            if let Some(cpu) = self.node.as_ref().and_then(|before| rate(before, &reading)) {
                usage.cpu_millis = Some(cpu);
            }
            usage.memory_bytes = Some(reading.memory_bytes);
            if let Some((_, before)) = self.node {
                usage.window_ms = u64::try_from(at.saturating_duration_since(before).as_millis()).unwrap_or(u64::MAX);
            }
            self.node = Some((reading, at));
        }
        let mut pods: BTreeMap<(String, String), Vec<ContainerUsage>> = BTreeMap::new();
        let mut kept = HashMap::with_capacity(containers.len());
        for seen in containers {
            if let Some(cpu) = self.containers.get(&seen.id).and_then(|before| rate(before, &seen.reading)) {
                pods.entry((seen.namespace, seen.pod)).or_default().push(ContainerUsage {
                    name: seen.container,
                    cpu_millis: cpu,
                    cpu_ns: seen.reading.cpu_ns,
                    memory_bytes: seen.reading.memory_bytes,
                });
            }
            kept.insert(seen.id, (seen.reading, at));
        }
        // Containers that are gone are forgotten.
        self.containers = kept;
        usage.pods = pods
            .into_iter()
            .map(|((namespace, pod), mut containers)| {
                containers.sort_by(|a, b| a.name.cmp(&b.name));
                PodUsage { namespace, pod, containers }
            })
            .collect();
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_node_reading_counts_busy_time_and_memory_in_use() {
        let stat = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        let meminfo = "MemTotal:       2048 kB\nMemFree:         512 kB\nMemAvailable:   1024 kB\n";
        let reading = node_reading(stat, meminfo, 100).unwrap();
        // user + nice + system + irq + softirq + steal = 160 ticks of 10 ms.
        assert_eq!(reading.cpu_ns, 160 * 10_000_000);
        assert_eq!(reading.memory_bytes, 1024 * 1024);
        assert_eq!(node_reading("intr 1\n", meminfo, 100), None);
        assert_eq!(stat_value("usage_usec 42\nuser_usec 40\n", "user_usec"), Some(40));
        assert_eq!(stat_value("total_inactive_file 7\n", "inactive_file"), None);
    }

    #[test]
    fn a_rate_needs_two_readings_and_a_gone_container_is_forgotten() {
        let seen = |id: &str, cpu_ns: u64| Seen {
            id: id.into(),
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: id.into(),
            reading: Reading { cpu_ns, memory_bytes: 10 << 20 },
        };
        let mut sampler = Sampler::default();
        let start = Instant::now();
        let first = sampler.sample(None, vec![seen("a", 1_000_000_000)], start, 100);
        assert!(first.pods.is_empty(), "no rate from one reading: {first:?}");
        // One core for two seconds: 1000m; a second container is new.
        let later = start + Duration::from_secs(2);
        let second = sampler.sample(None, vec![seen("a", 3_000_000_000), seen("b", 5)], later, 102);
        assert_eq!(second.pods.len(), 1);
        assert_eq!(
            second.pods[0].containers,
            vec![ContainerUsage { name: "a".into(), cpu_millis: 1000, cpu_ns: 3_000_000_000, memory_bytes: 10 << 20 }]
        );
        // "a" is gone, then comes back (a new container with the same id cannot, but a sampler
        // must not keep what it no longer sees).
        let third = sampler.sample(None, vec![seen("b", 5)], later + Duration::from_secs(2), 104);
        assert_eq!(third.pods[0].containers[0].cpu_millis, 0);
        let fourth = sampler.sample(None, vec![seen("a", 9)], later + Duration::from_secs(4), 106);
        assert!(fourth.pods.is_empty(), "{fourth:?}");
    }
}
