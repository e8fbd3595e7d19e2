//! The control loop's decisions (`server::decide`), table-driven: what becomes of a head and of
//! an approval, and what a pass's summary says of the commit being applied. Commits come from a
//! real Git repository; the decisions are pure, so no store and no nodes take part.

use crate::support::TestRepo;
use berth::apply::controller::{ReconcileSummary, Targets, WorkloadStatus};
use berth::apply::pods::{Sources, revision_hash};
use berth::manifest::{Kind, ObjectKey};
use berth::plan::{self, State, render};
use berth::server::decide::{self, Adopt, Approval, Decision, Event, Memory, Planned, Seen};
use berth::store::{Change, Outcome, Pin, Revision, SyncOutcome, SyncRecord};
use berth::sync::{Loaded, Loader};
use std::sync::Arc;

const NOW: i64 = 1_767_225_600;

fn deployment(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n        - name: {name}\n          image: {image}\n"
    )
}

/// Four commits: `web` at v1, `web` at v2, the same under a manual policy, and a broken one.
struct Commits {
    v1: Arc<Loaded>,
    v2: Arc<Loaded>,
    manual: Arc<Loaded>,
    broken: Arc<Loaded>,
    _repo: TestRepo,
}

fn commits() -> Commits {
    let mut repo = TestRepo::new();
    repo.write("web.yaml", &deployment("web", "web:1"));
    let v1 = repo.commit("web v1");
    repo.write("web.yaml", &deployment("web", "web:2"));
    let v2 = repo.commit("web v2");
    repo.write("berth.yaml", "sync:\n  policy: manual\n");
    let manual = repo.commit("manual policy");
    repo.write("web.yaml", "kind: Deployment\nmetadata: [\n");
    let broken = repo.commit("broken");
    let mut loader = Loader::open(repo.path()).expect("open");
    let mut load = |sha: &str| loader.load(sha).expect("load");
    Commits { v1: load(&v1), v2: load(&v2), manual: load(&manual), broken: load(&broken), _repo: repo }
}

/// The plan from `applied` (nothing, when `None`) to `commit`, as the loop reads it.
fn planned(commit: &Loaded, applied: Option<&Loaded>) -> Planned {
    let observed = match applied {
        Some(applied) => applied.state(),
        None => State::new("nothing applied", String::new(), Vec::new()),
    };
    Planned { plan: plan::plan(&commit.state(), &observed), index: 7, kept: Vec::new() }
}

fn record(commit: &Loaded, outcome: SyncOutcome) -> SyncRecord {
    SyncRecord {
        commit: commit.commit.clone(),
        seen_at: NOW - 60,
        outcome,
        reason: "waits: the sync policy is manual".into(),
        state_index: 3,
        approved_at: None,
        finished_at: None,
        plan_text: String::new(),
        plan_json: "{}".into(),
    }
}

/// The memory of a loop applying `commit` (head there too), its sync record at `outcome`.
fn applying(commit: &Arc<Loaded>, outcome: SyncOutcome) -> Memory {
    Memory {
        head: Some(commit.commit.sha.clone()),
        desired: Some(commit.clone()),
        sync_outcome: Some(outcome),
        ..Memory::default()
    }
}

fn seen(head: &Arc<Loaded>) -> Seen {
    Seen {
        now: NOW,
        head: head.commit.clone(),
        commit: Some(head.clone()),
        record: None,
        previous: None,
        approval: None,
        planned: None,
        pins: Vec::new(),
    }
}

/// A decision in a line per change, in order, for the tables below.
fn changes(decision: &Decision) -> Vec<String> {
    decision
        .changes
        .iter()
        .map(|change| match change {
            Change::Commit { commit, .. } => format!("commit {}", &commit.sha[..7]),
            Change::AddSync(record) => format!("record {} {:?}", &record.commit.sha[..7], record.outcome),
            Change::Replan { commit, .. } => format!("replan {}", &commit[..7]),
            Change::SyncOutcome { commit, outcome, .. } => format!("outcome {} {outcome:?}", &commit[..7]),
            Change::Approve { commit, .. } => format!("approve {}", &commit[..7]),
            Change::AddRevision(revision) => format!("revision {} {}", revision.key.name, revision.outcome.as_str()),
            Change::FinishRevision { key, outcome, .. } => format!("verdict {} {}", key.name, outcome.as_str()),
            Change::DropPinsNotAt(commit) => format!("unpin not {}", &commit[..7]),
            Change::SetControl(key, value) => format!("set {key} {}", &value[..value.len().min(7)]),
            Change::ClearControl(key) => format!("clear {key}"),
            Change::Applied { commit, resources, .. } => format!("applied {} {}", &commit.sha[..7], resources.len()),
        })
        .collect()
}

fn short(commit: &Loaded) -> String {
    commit.commit.sha[..7].to_owned()
}

fn adopted(decision: &Decision) -> Option<String> {
    decision.adopt.as_ref().map(|Adopt { commit, .. }| short(commit))
}

#[test]
fn what_becomes_of_a_head_and_an_approval() {
    let c = commits();
    let (v1, v2, manual, broken) = (short(&c.v1), short(&c.v2), short(&c.manual), short(&c.broken));
    let pin = |head: &Loaded| Pin {
        key: ObjectKey { kind: Kind::Deployment, namespace: "default".into(), name: "web".into() },
        commit: c.v1.commit.sha.clone(),
        head: head.commit.sha.clone(),
        pinned_at: NOW - 10,
    };
    let manual_plan = planned(&c.manual, Some(&c.v2));
    let digest = render::digest(&manual_plan.plan);

    struct Case {
        name: &'static str,
        memory: Memory,
        seen: Seen,
        changes: Vec<String>,
        adopted: Option<String>,
        waiting: Option<Option<bool>>,
        failed: bool,
    }
    let cases = vec![
        Case {
            name: "a first valid head under the auto policy is recorded and adopted",
            memory: Memory::default(),
            seen: Seen { planned: Some(planned(&c.v1, None)), ..seen(&c.v1) },
            changes: vec![
                format!("commit {v1}"),
                format!("record {v1} Progressing"),
                "revision web progressing".into(),
                format!("set desired_commit {v1}"),
            ],
            adopted: Some(v1.clone()),
            waiting: None,
            failed: false,
        },
        Case {
            name: "a new head supersedes the unfinished one and lifts its pins",
            memory: applying(&c.v1, SyncOutcome::Progressing),
            seen: Seen { planned: Some(planned(&c.v2, Some(&c.v1))), pins: vec![pin(&c.v1)], ..seen(&c.v2) },
            changes: vec![
                format!("commit {v2}"),
                format!("record {v2} Progressing"),
                format!("outcome {v1} Superseded"),
                "revision web progressing".into(),
                format!("unpin not {v2}"),
                format!("set desired_commit {v2}"),
            ],
            adopted: Some(v2.clone()),
            waiting: None,
            failed: false,
        },
        Case {
            name: "a head under the manual policy waits with its plan",
            memory: applying(&c.v2, SyncOutcome::Synced),
            seen: Seen { planned: Some(planned(&c.manual, Some(&c.v2))), ..seen(&c.manual) },
            changes: vec![format!("commit {manual}"), format!("record {manual} Waiting")],
            adopted: None,
            waiting: Some(Some(true)),
            failed: false,
        },
        Case {
            name: "a head already waiting (a restart) waits on, and is not planned again",
            memory: Memory { head: None, ..applying(&c.v2, SyncOutcome::Synced) },
            seen: Seen { record: Some(record(&c.manual, SyncOutcome::Waiting)), ..seen(&c.manual) },
            changes: vec![format!("commit {manual}")],
            adopted: None,
            waiting: Some(Some(true)),
            failed: false,
        },
        Case {
            name: "a broken head is recorded failed and changes nothing else",
            memory: Memory { head: Some(c.manual.commit.sha.clone()), ..applying(&c.v2, SyncOutcome::Synced) },
            seen: Seen {
                previous: Some(record(&c.manual, SyncOutcome::Waiting)),
                pins: vec![pin(&c.v2)],
                ..seen(&c.broken)
            },
            changes: vec![
                format!("commit {broken}"),
                format!("outcome {manual} Superseded"),
                format!("record {broken} Failed"),
            ],
            adopted: None,
            waiting: None,
            failed: true,
        },
        Case {
            name: "an approval naming the plan as it is now adopts its commit",
            memory: Memory { head: Some(c.manual.commit.sha.clone()), ..applying(&c.v2, SyncOutcome::Synced) },
            seen: Seen {
                planned: Some(planned(&c.manual, Some(&c.v2))),
                approval: Some(Approval { commit: c.manual.commit.sha.clone(), digest: Some(digest.clone()) }),
                ..seen(&c.manual)
            },
            changes: vec![
                "revision web progressing".into(),
                format!("set desired_commit {manual}"),
                "clear approved_commit".into(),
            ],
            adopted: Some(manual.clone()),
            waiting: Some(None),
            failed: false,
        },
        Case {
            name: "an approval of another plan is dropped and the commit planned again",
            memory: Memory { head: Some(c.manual.commit.sha.clone()), ..applying(&c.v2, SyncOutcome::Synced) },
            seen: Seen {
                planned: Some(planned(&c.manual, Some(&c.v1))),
                approval: Some(Approval { commit: c.manual.commit.sha.clone(), digest: Some(digest.clone()) }),
                ..seen(&c.manual)
            },
            changes: vec![format!("replan {manual}"), "clear approved_commit".into()],
            adopted: None,
            waiting: None,
            failed: false,
        },
        Case {
            name: "an approval of a commit that is no longer the head is superseded",
            memory: applying(&c.v2, SyncOutcome::Synced),
            seen: Seen {
                approval: Some(Approval { commit: c.manual.commit.sha.clone(), digest: Some(digest) }),
                commit: None,
                ..seen(&c.v2)
            },
            changes: vec![format!("outcome {manual} Superseded"), "clear approved_commit".into()],
            adopted: None,
            waiting: None,
            failed: false,
        },
        Case {
            name: "the head being applied changes nothing",
            memory: applying(&c.v2, SyncOutcome::Progressing),
            seen: Seen { commit: None, pins: vec![pin(&c.v1)], ..seen(&c.v2) },
            changes: vec![],
            adopted: None,
            waiting: None,
            failed: false,
        },
    ];
    for case in cases {
        let decision = decide::commits(&case.seen, &case.memory);
        assert_eq!(changes(&decision), case.changes, "{}", case.name);
        assert_eq!(adopted(&decision), case.adopted, "{}", case.name);
        assert_eq!(decision.waiting.as_ref().map(|w| w.as_ref().map(|r| !r.is_empty())), case.waiting, "{}", case.name);
        assert_eq!(decision.failed.is_some(), case.failed, "{}", case.name);
        // Pins hold only while the commit they were made at is applied.
        let applying = decision.adopt.as_ref().map(|a| &a.commit).or(case.memory.desired.as_ref());
        for pin in decision.pins.iter().flatten() {
            assert_eq!(Some(&pin.head), applying.map(|c| &c.commit.sha), "{}", case.name);
        }
    }
}

#[test]
fn an_adopted_commit_runs_its_plans_steps_and_a_failed_spec_is_not_retried() {
    let c = commits();
    let key = ObjectKey { kind: Kind::Deployment, namespace: "default".into(), name: "web".into() };
    let planned = planned(&c.v2, Some(&c.v1));
    let steps = planned.plan.steps.clone();
    // web's v2 spec failed, then v1 came back: adopting v2 again records it failed at once.
    let mut memory = applying(&c.v1, SyncOutcome::Synced);
    let sources = Sources::new(&c.v2.resources, &c.v2.secrets);
    let spec = revision_hash(c.v2.resources.iter().find(|r| r.key == key).expect("web"), &sources);
    memory.revisions.insert(
        key.clone(),
        vec![
            Revision {
                key: key.clone(),
                commit: c.v2.commit.clone(),
                spec_hash: spec,
                started_at: NOW - 600,
                finished_at: Some(NOW - 300),
                outcome: Outcome::Failed,
                reason: "its pods crash-loop".into(),
            },
            Revision {
                key: key.clone(),
                commit: c.v1.commit.clone(),
                spec_hash: revision_hash(
                    c.v1.resources.iter().find(|r| r.key == key).expect("web"),
                    &Sources::new(&c.v1.resources, &c.v1.secrets),
                ),
                started_at: NOW - 300,
                finished_at: Some(NOW - 200),
                outcome: Outcome::Healthy,
                reason: String::new(),
            },
        ],
    );
    let decision = decide::commits(&Seen { planned: Some(planned), ..seen(&c.v2) }, &memory);
    assert!(changes(&decision).contains(&"revision web failed".to_owned()), "{:?}", changes(&decision));
    let adopt = decision.adopt.as_ref().expect("adopted");
    assert_eq!(adopt.program, steps);
    memory.apply(decision);
    assert_eq!(memory.desired.as_ref().map(|d| short(d)), Some(short(&c.v2)));
    assert_eq!(memory.program, steps);
    assert_eq!(memory.revisions[&key].last().map(|r| r.outcome), Some(Outcome::Failed));
    assert_eq!(memory.sync_outcome, Some(SyncOutcome::Progressing));
}

fn summary(key: &ObjectKey, complete: bool, failure: Option<&str>) -> ReconcileSummary {
    ReconcileSummary {
        workloads: vec![WorkloadStatus {
            key: key.clone(),
            replicas: Some(2),
            updated: 1,
            available: 1,
            total: 2,
            complete,
            unschedulable: Vec::new(),
            revision: String::new(),
            failure: failure.map(str::to_owned),
            stale_config: Vec::new(),
            terminating: 0,
            job: None,
            waiting: None,
        }],
        cron_jobs: Vec::new(),
        nodes_changed: 0,
        ready_nodes: 1,
        pruning: 0,
    }
}

#[test]
fn a_pass_is_judged_by_what_the_nodes_run() {
    let c = commits();
    let v2 = short(&c.v2);
    let key = ObjectKey { kind: Kind::Deployment, namespace: "default".into(), name: "web".into() };
    let rolling = |started_at: i64| Revision {
        key: key.clone(),
        commit: c.v2.commit.clone(),
        spec_hash: "spec".into(),
        started_at,
        finished_at: None,
        outcome: Outcome::Progressing,
        reason: String::new(),
    };
    let targets = Targets::default();
    type Case<'a> = (&'a str, i64, ReconcileSummary, Vec<String>, Vec<Event>);
    let cases: Vec<Case<'_>> = vec![
        (
            "complete: healthy, Synced, and the applied objects recorded",
            NOW,
            summary(&key, true, None),
            vec!["verdict web healthy".into(), format!("outcome {v2} Synced"), format!("applied {v2} 1")],
            vec![
                Event::RolloutFinished { outcome: Outcome::Healthy, seconds: 0 },
                Event::Finished(SyncOutcome::Synced),
                Event::Synced { commit: v2.clone(), committed_at: c.v2.commit.time },
            ],
        ),
        ("rolling within its deadline: nothing", NOW - 600, summary(&key, false, None), vec![], vec![]),
        (
            "crash-looping: failed and Degraded",
            NOW,
            summary(&key, false, Some("container web exited with code 1")),
            vec!["verdict web failed".into(), format!("outcome {v2} Degraded")],
            vec![
                Event::RolloutFailed {
                    workload: key.clone(),
                    commit: v2.clone(),
                    reason: "its pods crash-loop: container web exited with code 1".into(),
                },
                Event::RolloutFinished { outcome: Outcome::Failed, seconds: 0 },
                Event::Finished(SyncOutcome::Degraded),
            ],
        ),
        (
            "past the progress deadline: failed and Degraded",
            NOW - 601,
            summary(&key, false, None),
            vec!["verdict web failed".into(), format!("outcome {v2} Degraded")],
            vec![],
        ),
        (
            "waiting for PreSync hooks past the deadline: not judged, Progressing",
            NOW - 6000,
            {
                let mut waiting = summary(&key, false, None);
                waiting.workloads[0].waiting = Some("waits for the PreSync hook Job default/migrate".into());
                waiting
            },
            vec![],
            vec![],
        ),
    ];
    for (name, started_at, summary, expected, events) in cases {
        let mut memory = applying(&c.v2, SyncOutcome::Progressing);
        memory.revisions.insert(key.clone(), vec![rolling(started_at)]);
        let decision = decide::judge(&memory, &c.v2, &targets, &summary, NOW);
        assert_eq!(changes(&decision), expected, "{name}");
        if !events.is_empty() {
            assert_eq!(decision.events, events, "{name}");
        }
        memory.apply(decision);
        // Judged once: the same summary again changes nothing.
        let again = decide::judge(&memory, &c.v2, &targets, &summary, NOW);
        assert_eq!(changes(&again), Vec::<String>::new(), "{name}, judged again");
    }
}
