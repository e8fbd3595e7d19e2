//! Issue 13: the loader fuzzed over random YAML and hostile mutations of valid manifests (see
//! `fuzz_cases.rs`). The test runs a bounded number of cases (`BERTH_FUZZ_CASES`, default
//! 10,000 of each kind); `cargo bench --bench fuzz` runs long campaigns.

#[path = "fuzz_cases.rs"]
pub mod fuzz_cases;

#[test]
fn the_loader_survives_random_and_mutated_manifests() {
    let cases = std::env::var("BERTH_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(10_000);
    let report = fuzz_cases::run(cases).unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(report.cases, 2 * cases, "every case ran");
    assert!(report.slowest < fuzz_cases::LIMIT);
}
