//! CronJob schedules: Kubernetes' cron syntax (five fields, or `@hourly` and the like),
//! evaluated in an IANA time zone. Pure; the controller's use of it is `apply::cron`.

use super::types::CronJobSpec;
use chrono::{DateTime, TimeZone as _, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A schedule as Kubernetes reads it: five fields, or a nickname such as `@hourly`.
pub fn parse(schedule: &str) -> Result<Cron, String> {
    let schedule = schedule.trim();
    if schedule.starts_with("@every") || schedule.eq_ignore_ascii_case("@reboot") {
        return Err(format!("`{schedule}` is not a schedule Kubernetes takes"));
    }
    if !schedule.starts_with('@') && schedule.split_whitespace().count() != 5 {
        return Err("it needs five fields".to_owned());
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| e.to_string())
}

pub fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, 0).single().unwrap_or_default()
}

/// The schedule times in `(after, until]`, newest last, at most `limit` of them, read in
/// the CronJob's time zone.
pub fn times_between(spec: &CronJobSpec, after: i64, until: i64, limit: usize) -> Vec<i64> {
    let Ok(cron) = parse(&spec.schedule) else { return Vec::new() };
    let zone: chrono_tz::Tz = spec.time_zone.as_deref().and_then(|z| z.parse().ok()).unwrap_or(chrono_tz::UTC);
    let start = at(after).with_timezone(&zone);
    cron.iter_after(start).map(|t| t.timestamp()).take_while(|t| *t <= until).take(limit).collect()
}

/// The next schedule time after `now`.
pub fn next_after(spec: &CronJobSpec, now: i64) -> Option<i64> {
    times_between(spec, now, i64::MAX, 1).first().copied()
}

/// The most recent schedule time in `(after, now]`.
pub fn most_recent(spec: &CronJobSpec, after: i64, now: i64) -> Option<i64> {
    let cron = parse(&spec.schedule).ok()?;
    let zone: chrono_tz::Tz = spec.time_zone.as_deref().and_then(|z| z.parse().ok()).unwrap_or(chrono_tz::UTC);
    let latest = cron.find_previous_occurrence(&at(now).with_timezone(&zone), true).ok()?.timestamp();
    (latest > after).then_some(latest)
}

/// A CronJob spec on `schedule`, for tests.
#[cfg(test)]
pub(crate) fn spec_for_tests(schedule: &str) -> CronJobSpec {
    serde_json::from_value(serde_json::json!({
        "schedule": schedule,
        "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "main", "image": "x"}]
        }}}}
    }))
    .unwrap()
}

/// 2026-12-05 00:00:00 UTC, for tests.
#[cfg(test)]
pub(crate) const DAY_FOR_TESTS: i64 = 1_796_428_800;

#[cfg(test)]
mod tests {
    use super::*;

    use spec_for_tests as spec;
    const DAY: i64 = DAY_FOR_TESTS;

    #[test]
    fn schedules_read_as_kubernetes_reads_them() {
        assert!(parse("0 3 * * *").is_ok());
        assert!(parse("@hourly").is_ok());
        assert!(parse("*/15 9-17 * * MON-FRI").is_ok());
        assert!(parse("0 0 3 * * *").is_err(), "six fields");
        assert!(parse("61 * * * *").is_err());
        assert!(parse("@every 5m").is_err());
        let hourly = spec("@hourly");
        assert_eq!(times_between(&hourly, DAY, DAY + 3 * 3600, 10), vec![DAY + 3600, DAY + 7200, DAY + 10800]);
        let mut berlin = spec("0 3 * * *");
        berlin.time_zone = Some("Europe/Berlin".into());
        // 03:00 in Berlin in December is 02:00 UTC.
        assert_eq!(next_after(&berlin, DAY), Some(DAY + 2 * 3600));
    }

    /// The most recent due time is the last of every due time, found one by one, in any zone.
    #[test]
    fn the_most_recent_time_is_the_last_of_all_times() {
        use proptest::prelude::*;
        let schedules = ["*/7 * * * *", "0 */3 * * *", "15 4 * * MON", "@hourly", "30 2 29 2 *"];
        let zones = [None, Some("Europe/Berlin"), Some("America/New_York"), Some("Asia/Kolkata")];
        let config = proptest::test_runner::Config { cases: 128, ..Default::default() };
        let strategy = (0..schedules.len(), 0..zones.len(), 0i64..40 * 86_400, 0i64..3 * 86_400);
        assert!(schedules.iter().all(|s| parse(s).is_ok()));
        let found = std::cell::Cell::new(0);
        proptest::test_runner::TestRunner::new(config)
            .run(&strategy, |(schedule, zone, offset, span)| {
                let mut spec = spec(schedules[schedule]);
                spec.time_zone = zones[zone].map(str::to_owned);
                let after = DAY + offset;
                let now = after + span;
                let all = times_between(&spec, after, now, 10_000);
                found.set(found.get() + usize::from(!all.is_empty()));
                prop_assert_eq!(most_recent(&spec, after, now), all.last().copied());
                Ok(())
            })
            .unwrap();
        assert!(found.get() > 32, "most cases have a due time: {}", found.get());
    }
}
