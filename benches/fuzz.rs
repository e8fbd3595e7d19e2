//! Long fuzz campaigns for the loader: `cargo bench --bench fuzz` (BERTH_FUZZ_CASES cases of
//! each kind of input, default 100,000). Prints the counts, the time and the slowest input.

#[path = "../tests/it/fuzz_cases.rs"]
mod fuzz_cases;

fn main() {
    let cases = std::env::var("BERTH_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(100_000);
    let started = std::time::Instant::now();
    match fuzz_cases::run(cases) {
        Ok(report) => println!(
            "fuzz: {} inputs clean in {:.1?} (slowest {:.1?}; limit {:?})",
            report.cases,
            started.elapsed(),
            report.slowest,
            fuzz_cases::LIMIT
        ),
        Err(failure) => {
            eprintln!("fuzz: failed after {:.1?}: {failure}", started.elapsed());
            std::process::exit(1);
        }
    }
}
