//! A CronJob's next step, pure: from its schedule, what the loop remembers of it and the time
//! now, whether a run starts, which runs stop (concurrency `Replace`) and which finished runs
//! go (history limits). The rules are Kubernetes' CronJob controller's: the most recent
//! schedule time not yet run is the one that starts (at most one catch-up after downtime),
//! and only if it is within `startingDeadlineSeconds`; `Forbid` leaves it due until the
//! running one ends.

use crate::manifest::schedule::{at, most_recent, next_after};
use crate::manifest::types::{ConcurrencyPolicy, CronJobSpec};
use serde::{Deserialize, Serialize};

/// One run of a CronJob: a Job named after its schedule time (in minutes since the epoch, as
/// Kubernetes names them), or one started by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub name: String,
    /// When it was due (seconds since the epoch); when it was asked for, for a run by hand.
    pub scheduled: i64,
    #[serde(default)]
    pub manual: bool,
    /// When it finished, whether it failed, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<(i64, bool, String)>,
}

/// What the loop remembers of one CronJob, kept in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronState {
    /// When the loop first saw the CronJob: no run is due before it.
    pub since: i64,
    /// The schedule time of the last run started on schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled: Option<i64>,
    /// Its runs, oldest first: those that run and those kept by the history limits.
    #[serde(default)]
    pub runs: Vec<Run>,
}

impl CronState {
    pub fn active(&self) -> impl Iterator<Item = &Run> {
        self.runs.iter().filter(|r| r.finished.is_none())
    }
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CronStep {
    /// The schedule time of a run to start.
    pub start: Option<i64>,
    /// Runs to stop before it starts (`Replace`).
    pub stop: Vec<String>,
    /// Finished runs past the history limits.
    pub drop: Vec<String>,
    /// Why a due run does not start, when one does not.
    pub held: Option<String>,
    /// The next schedule time after now.
    pub next: Option<i64>,
}

/// The name of the run due at `scheduled`.
pub fn run_name(cron_job: &str, scheduled: i64) -> String {
    let suffix = format!("-{}", scheduled.div_euclid(60));
    let room = 52usize.saturating_sub(suffix.len());
    let base = cron_job.get(..room.min(cron_job.len())).unwrap_or(cron_job).trim_end_matches(['-', '.']);
    format!("{base}{suffix}")
}

/// Decides a CronJob's step at `now`.
pub fn step(spec: &CronJobSpec, state: &CronState, now: i64) -> CronStep {
    let mut out = CronStep { next: next_after(spec, now), ..CronStep::default() };
    out.drop = over_history(spec, state);
    let mut earliest = state.last_scheduled.unwrap_or(state.since).max(state.since);
    if let Some(deadline) = spec.starting_deadline_seconds {
        earliest = earliest.max(now - deadline);
    }
    // Only the most recent missed time runs; a CronJob that was down a year does not replay
    // the year. The search is bounded, as Kubernetes bounds it.
    let Some(due) = most_recent(spec, earliest, now) else { return out };
    if spec.suspend == Some(true) {
        out.held = Some("suspended".to_owned());
        return out;
    }
    let active: Vec<&Run> = state.active().collect();
    match spec.concurrency_policy.unwrap_or(ConcurrencyPolicy::Allow) {
        ConcurrencyPolicy::Forbid if !active.is_empty() => {
            out.held = Some(format!(
                "the run due at {} waits: {} still runs and concurrencyPolicy is Forbid",
                at(due).format("%Y-%m-%d %H:%M UTC"),
                active[0].name
            ));
            return out;
        }
        ConcurrencyPolicy::Replace => out.stop = active.iter().map(|r| r.name.clone()).collect(),
        _ => {}
    }
    out.start = Some(due);
    out
}

/// Finished runs beyond `successfulJobsHistoryLimit` and `failedJobsHistoryLimit`, oldest first.
fn over_history(spec: &CronJobSpec, state: &CronState) -> Vec<String> {
    let limit = |l: Option<i32>, default: usize| l.map_or(default, |l| usize::try_from(l).unwrap_or(0));
    let mut drop = Vec::new();
    for (failed, keep) in
        [(false, limit(spec.successful_jobs_history_limit, 3)), (true, limit(spec.failed_jobs_history_limit, 1))]
    {
        let mut finished: Vec<&Run> =
            state.runs.iter().filter(|r| r.finished.as_ref().is_some_and(|f| f.1 == failed)).collect();
        finished.sort_by_key(|r| r.scheduled);
        let over = finished.len().saturating_sub(keep);
        drop.extend(finished[..over].iter().map(|r| r.name.clone()));
    }
    drop
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::manifest::schedule::spec_for_tests as spec;
    const DAY: i64 = crate::manifest::schedule::DAY_FOR_TESTS;

    fn run(name: &str, scheduled: i64, finished: Option<bool>) -> Run {
        Run {
            name: name.into(),
            scheduled,
            manual: false,
            finished: finished.map(|f| (scheduled + 30, f, String::new())),
        }
    }

    /// (case, schedule, since, last scheduled, starting deadline, now, expected start)
    type Case<'a> = (&'a str, &'a str, i64, Option<i64>, Option<i64>, i64, Option<i64>);

    #[test]
    fn the_most_recent_missed_time_runs_within_the_deadline() {
        let cases: &[Case<'_>] = &[
            ("nothing due yet", "0 * * * *", DAY, None, None, DAY + 1800, None),
            ("due on the hour", "0 * * * *", DAY, None, None, DAY + 3600, Some(DAY + 3600)),
            ("already ran", "0 * * * *", DAY, Some(DAY + 3600), None, DAY + 3700, None),
            (
                "three missed: only the last runs",
                "0 * * * *",
                DAY,
                Some(DAY),
                None,
                DAY + 3 * 3600 + 60,
                Some(DAY + 3 * 3600),
            ),
            ("missed past the deadline", "0 * * * *", DAY, Some(DAY), Some(300), DAY + 3600 + 301, None),
            ("missed within the deadline", "0 * * * *", DAY, Some(DAY), Some(300), DAY + 3600 + 299, Some(DAY + 3600)),
            ("no time before it was seen", "0 * * * *", DAY + 3601, None, None, DAY + 3700, None),
            ("a year down, every minute", "* * * * *", DAY - 366 * 86400, None, None, DAY + 30, Some(DAY)),
        ];
        for (case, schedule, since, last, deadline, now, expected) in cases {
            let mut cron = spec(schedule);
            cron.starting_deadline_seconds = *deadline;
            let state = CronState { since: *since, last_scheduled: *last, runs: Vec::new() };
            assert_eq!(step(&cron, &state, *now).start, *expected, "{case}");
        }
    }

    #[test]
    fn runs_are_named_after_their_minute() {
        assert_eq!(run_name("nightly", DAY + 120), format!("nightly-{}", DAY / 60 + 2));
    }

    #[test]
    fn concurrency_policies_and_suspend() {
        let state = CronState { since: DAY, last_scheduled: Some(DAY), runs: vec![run("nightly-a", DAY, None)] };
        let mut cron = spec("0 * * * *");
        let now = DAY + 3600;
        let allow = step(&cron, &state, now);
        assert_eq!((allow.start, allow.stop.len()), (Some(now), 0));
        cron.concurrency_policy = Some(ConcurrencyPolicy::Forbid);
        let forbid = step(&cron, &state, now);
        assert_eq!(forbid.start, None);
        assert!(forbid.held.unwrap().contains("nightly-a still runs"));
        cron.concurrency_policy = Some(ConcurrencyPolicy::Replace);
        let replace = step(&cron, &state, now);
        assert_eq!((replace.start, replace.stop), (Some(now), vec!["nightly-a".to_owned()]));
        cron.suspend = Some(true);
        assert_eq!(step(&cron, &state, now).start, None);
    }

    #[test]
    fn history_limits_keep_the_newest_finished_runs() {
        let mut cron = spec("0 * * * *");
        cron.successful_jobs_history_limit = Some(2);
        cron.failed_jobs_history_limit = Some(0);
        let state = CronState {
            since: DAY,
            last_scheduled: Some(DAY + 4 * 3600),
            runs: vec![
                run("r1", DAY + 3600, Some(false)),
                run("r2", DAY + 2 * 3600, Some(true)),
                run("r3", DAY + 3 * 3600, Some(false)),
                run("r4", DAY + 4 * 3600, Some(false)),
                run("r5", DAY + 5 * 3600, None),
            ],
        };
        assert_eq!(step(&cron, &state, DAY + 5 * 3600 + 10).drop, vec!["r1".to_owned(), "r2".to_owned()]);
    }
}
