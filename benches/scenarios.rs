//! Long runs of the scenario harness: `cargo bench --bench scenarios` plays BERTH_SEEDS seeds
//! (default 10,000) of 200 events each, from BERTH_SEED_START (default 0), on every core, and
//! prints how many ran, how long they took and what they found.

#[path = "../tests/it/scenario_cases.rs"]
#[allow(dead_code)]
mod scenario_cases;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

fn main() {
    let seeds: u64 = std::env::var("BERTH_SEEDS").ok().and_then(|c| c.parse().ok()).unwrap_or(10_000);
    let start: u64 = std::env::var("BERTH_SEED_START").ok().and_then(|c| c.parse().ok()).unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let began = std::time::Instant::now();
    let next = AtomicU64::new(start);
    let done = AtomicU64::new(0);
    let totals = Mutex::new(scenario_cases::Stats::default());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= start + seeds || !failures.lock().unwrap().is_empty() {
                        return;
                    }
                    match scenario_cases::run_seeds(seed..seed + 1, 200) {
                        Ok(stats) => {
                            let mut totals = totals.lock().unwrap();
                            totals.steps += stats.steps;
                            totals.synced_steps += stats.synced_steps;
                            totals.commits += stats.commits;
                            totals.approvals += stats.approvals;
                        }
                        Err(failure) => failures.lock().unwrap().push(failure),
                    }
                    let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if finished % 500 == 0 {
                        println!("scenarios: {finished} seeds pass so far, {:.0?}", began.elapsed());
                    }
                }
            });
        }
    });
    let totals = totals.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    if let Some(failure) = failures.first() {
        eprintln!("scenarios: failed after {:.1?}: {failure}", began.elapsed());
        std::process::exit(1);
    }
    println!(
        "scenarios: {seeds} seeds of 200 events pass on {threads} threads in {:.1?}: {} steps, {} of them Synced, {} commits, {} approvals",
        began.elapsed(),
        totals.steps,
        totals.synced_steps,
        totals.commits,
        totals.approvals
    );
}
