//! Renders a [`Plan`] for people (text, markdown) and for tools (JSON).
//!
//! Text follows terraform's shape: a summary line, the risks, then one block per changed object
//! with a unified diff, colored when `color` is set. Markdown is for a pull-request comment:
//! summary table, risks first, one collapsible diff per object. JSON is the plan itself, whose
//! fields are documented in the README and kept stable.

use super::{Action, Plan, RiskLevel};
use serde_json::Value;
use std::fmt::Write;

const RESET: &str = "\x1b[0m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";

fn paint(text: &str, style: &str, color: bool) -> String {
    if color { format!("{style}{text}{RESET}") } else { text.to_owned() }
}

pub fn summary_line(plan: &Plan) -> String {
    let s = plan.summary;
    format!("Plan: {} to create, {} to update, {} to delete, {} unchanged.", s.create, s.update, s.delete, s.unchanged)
}

fn short(revision: &str) -> &str {
    if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) { &revision[..7] } else { revision }
}

fn heading(plan: &Plan) -> String {
    let side = |revision: &str, title: &str| {
        if title.is_empty() { short(revision).to_owned() } else { format!("{} ({title})", short(revision)) }
    };
    format!("{} → {}", side(&plan.from, &plan.from_title), side(&plan.to, &plan.to_title))
}

fn action_word(action: Action) -> (&'static str, &'static str) {
    match action {
        Action::Create => ("+ create", GREEN),
        Action::Update => ("~ update", YELLOW),
        Action::Delete => ("- delete", RED),
        Action::Unchanged => ("  unchanged", ""),
    }
}

fn level_word(level: RiskLevel) -> &'static str {
    match level {
        RiskLevel::High => "high",
        RiskLevel::Medium => "medium",
        RiskLevel::Low => "low",
    }
}

pub fn text(plan: &Plan, color: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "berth plan: {}", heading(plan));
    let _ = writeln!(out, "{}", paint(&summary_line(plan), BOLD, color));
    if !plan.refusals.is_empty() {
        let _ = writeln!(out, "\nRefused (nothing of this plan is applied):");
        for refusal in &plan.refusals {
            let _ = writeln!(out, "  {} {refusal}", paint("error ", RED, color));
        }
    }
    if !plan.risks.is_empty() {
        let _ = writeln!(out, "\nRisks:");
        for risk in &plan.risks {
            let style = if risk.level == RiskLevel::High { RED } else { YELLOW };
            let _ = writeln!(
                out,
                "  {} {}: {}",
                paint(&format!("{:<6}", level_word(risk.level)), style, color),
                risk.object,
                risk.message
            );
        }
    }
    for change in plan.changes.iter().filter(|c| c.action != Action::Unchanged) {
        let (word, style) = if change.kept { ("= keep", CYAN) } else { action_word(change.action) };
        let place = if change.action == Action::Delete {
            format!("was {}:{}", change.file, change.line)
        } else {
            format!("{}:{}", change.file, change.line)
        };
        let hook = change.hook.map(|h| format!(" [{h} hook]")).unwrap_or_default();
        let _ = writeln!(out, "\n{} {}{hook} ({place})", paint(word, style, color), change.key());
        if !change.fields.is_empty() {
            let _ = writeln!(out, "    changed: {}", change.fields.join(", "));
        }
        if let Some(rollout) = &change.rollout {
            let _ = writeln!(out, "    rollout: {}", rollout.description);
        }
        if let Some(forecast) = forecast_of(plan, change) {
            let _ = writeln!(out, "    {forecast}");
        }
        if let Some(back) = fallback(plan, change) {
            let _ =
                writeln!(out, "    if the rollout fails: back to the pod template of commit {}", short(&back.commit));
        }
        if !change.config_changes.is_empty() {
            let verb = if change.config_held {
                "keeps its pods (berth.dev/restart-on-config-change: \"false\") although"
            } else {
                "rolls because"
            };
            let _ = writeln!(out, "    {verb} {}", change.config_changes.join(", "));
        }
        if let Some(restored) = &change.restores {
            let _ =
                writeln!(out, "    restores the spec of commit {} \"{}\"", short(&restored.commit), restored.message);
        }
        for line in change.diff.lines() {
            let style = match line.as_bytes().first() {
                Some(b'+') => GREEN,
                Some(b'-') => RED,
                Some(b'@') => CYAN,
                _ => "",
            };
            let line = if style.is_empty() { line.to_owned() } else { paint(line, style, color) };
            let _ = writeln!(out, "    {line}");
        }
    }
    for held in &plan.held {
        let _ = writeln!(
            out,
            "\n{} {} {}/{} at commit {}: {}",
            paint("= held", CYAN, color),
            held.kind.name(),
            held.namespace,
            held.name,
            short(&held.commit),
            held.reason
        );
    }
    out
}

/// Where the scheduler would place the first pods of a change, in words: `first pods on n1
/// (2), n2 (1)`, and the pods no node fits.
fn forecast_of(plan: &Plan, change: &super::Change) -> Option<String> {
    let forecast = plan
        .placements
        .iter()
        .find(|f| f.kind == change.kind && f.namespace == change.namespace && f.name == change.name)?;
    let mut parts = Vec::new();
    if !forecast.nodes.is_empty() {
        let nodes: Vec<String> = forecast.nodes.iter().map(|(node, pods)| format!("{node} ({pods})")).collect();
        parts.push(format!("first pods on {}", nodes.join(", ")));
    }
    parts.extend(forecast.pending.iter().cloned());
    Some(parts.join("; "))
}

/// Where a changed workload goes back to if its rollout fails, as its step says.
fn fallback<'p>(plan: &'p Plan, change: &super::Change) -> Option<&'p super::Fallback> {
    let step = plan
        .steps
        .iter()
        .find(|s| s.kind == change.kind && s.namespace == change.namespace && s.name == change.name)?;
    step.on_failure.as_ref().filter(|_| step.action == super::StepAction::Roll)
}

pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let s = plan.summary;
    let _ = writeln!(out, "### berth plan: {}\n", heading(plan).replace('|', "\\|"));
    let _ = writeln!(out, "**{}**\n", summary_line(plan));
    let _ = writeln!(
        out,
        "| create | update | delete | unchanged |\n|---:|---:|---:|---:|\n| {} | {} | {} | {} |\n",
        s.create, s.update, s.delete, s.unchanged
    );
    if !plan.refusals.is_empty() {
        let _ = writeln!(out, "#### Refused: nothing of this plan is applied\n");
        for refusal in &plan.refusals {
            let _ = writeln!(out, "- {refusal}");
        }
        out.push('\n');
    }
    if !plan.risks.is_empty() {
        let _ = writeln!(out, "#### Risks\n");
        for risk in &plan.risks {
            let _ = writeln!(out, "- **{}** `{}`: {}", level_word(risk.level), risk.object, risk.message);
        }
        out.push('\n');
    }
    let changed: Vec<_> = plan.changes.iter().filter(|c| c.action != Action::Unchanged).collect();
    if !changed.is_empty() {
        let _ = writeln!(out, "#### Changes\n");
    }
    for change in changed {
        let (word, _) = if change.kept { ("= keep", CYAN) } else { action_word(change.action) };
        let hook = change.hook.map(|h| format!(" <b>{h} hook</b>")).unwrap_or_default();
        let mut summary = format!("<code>{}</code> {}{hook}", word.trim(), change.key());
        if let Some(rollout) = &change.rollout {
            let _ = write!(summary, ": {}", rollout.description);
        }
        if let Some(forecast) = forecast_of(plan, change) {
            let _ = write!(summary, "; {forecast}");
        }
        if let Some(back) = fallback(plan, change) {
            let _ = write!(summary, "; if it fails, back to commit {}", short(&back.commit));
        }
        if !change.config_changes.is_empty() {
            let verb = if change.config_held { "; keeps its pods although" } else { "; rolls because" };
            let _ = write!(summary, "{verb} {}", change.config_changes.join(", "));
        }
        if let Some(restored) = &change.restores {
            let _ =
                write!(summary, "; restores the spec of commit {} \"{}\"", short(&restored.commit), restored.message);
        }
        let _ = writeln!(
            out,
            "<details><summary>{}</summary>\n",
            escape_html(&summary).replace("&lt;code&gt;", "<code>").replace("&lt;/code&gt;", "</code>")
        );
        let declared = if change.action == Action::Delete { "Was declared in" } else { "Declared in" };
        let _ = writeln!(out, "{declared} `{}:{}`.", change.file, change.line);
        if !change.fields.is_empty() {
            let fields: Vec<String> = change.fields.iter().map(|f| format!("`{f}`")).collect();
            let _ = writeln!(out, "Changed: {}.", fields.join(", "));
        }
        let _ = writeln!(out, "\n```diff\n{}```\n</details>\n", change.diff);
    }
    out
}

pub fn json(plan: &Plan) -> String {
    // A plan is plain data with string keys; serializing it cannot fail.
    let mut value = serde_json::to_value(plan).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("planDigest".into(), digest(plan).into());
    }
    serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
}

/// The name of a plan: the SHA-256 of its compact JSON. Approving a digest approves exactly
/// that plan; a plan made again differs in its digest as soon as it differs at all.
///
/// The scheduler's forecast (`placements`) is not part of it: nodes come and go between the
/// review and the approval, and each batch is placed when it starts.
pub fn digest(plan: &Plan) -> String {
    if plan.placements.is_empty() {
        return crate::manifest::hex_digest(&serde_json::to_vec(plan).unwrap_or_default());
    }
    let program = Plan { placements: Vec::new(), ..plan.clone() };
    crate::manifest::hex_digest(&serde_json::to_vec(&program).unwrap_or_default())
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The diff of a whole text added (`+`) or removed (`-`), in unified form, without running a
/// diff algorithm over it.
pub fn whole(sign: char, text: &str) -> String {
    let lines = text.lines().count();
    let mut out = String::with_capacity(text.len() + lines * 2 + 24);
    let _ = if sign == '+' { writeln!(out, "@@ -0,0 +1,{lines} @@") } else { writeln!(out, "@@ -1,{lines} +0,0 @@") };
    for line in text.lines() {
        out.push(sign);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A unified diff of two texts, without file headers; empty when they are equal.
pub fn diff(old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    let diff = similar::TextDiff::from_lines(old, new);
    let mut out = String::new();
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        let _ = write!(out, "{hunk}");
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// A canonical object as YAML, the way a reviewer reads a manifest. Deterministic: keys keep
/// their canonical order, strings are quoted only when YAML would read them as something else.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    emit(value, 0, &mut out);
    out
}

fn emit(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                let _ = write!(out, "{:indent$}{}:", "", scalar_text(key));
                emit_child(item, indent, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                let _ = write!(out, "{:indent$}-", "");
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // The first key shares the dash's line, like hand-written YAML.
                        let mut nested = String::new();
                        emit(item, indent + 2, &mut nested);
                        out.push(' ');
                        out.push_str(&nested[indent + 2..]);
                    }
                    _ => emit_child(item, indent, out),
                }
            }
        }
        scalar => {
            let _ = writeln!(out, "{:indent$}{}", "", inline(scalar));
        }
    }
}

fn emit_child(item: &Value, indent: usize, out: &mut String) {
    match item {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            emit(item, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            emit(item, indent + 2, out);
        }
        Value::String(text) if text.contains('\n') => {
            out.push_str(if text.ends_with('\n') { " |\n" } else { " |-\n" });
            for line in text.lines() {
                if line.is_empty() {
                    out.push('\n');
                } else {
                    let _ = writeln!(out, "{:width$}{line}", "", width = indent + 2);
                }
            }
        }
        scalar => {
            let _ = writeln!(out, " {}", inline(scalar));
        }
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_text(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn scalar_text(text: &str) -> String {
    let plain_safe = !text.is_empty()
        && !matches!(
            text,
            "true"
                | "false"
                | "null"
                | "~"
                | "True"
                | "False"
                | "Null"
                | "NULL"
                | "TRUE"
                | "FALSE"
                | "yes"
                | "no"
                | "on"
                | "off"
        )
        && text.parse::<f64>().is_err()
        && !text.starts_with(|c: char| c.is_whitespace() || "-?:,[]{}#&*!|>'\"%@`".contains(c))
        && !text.ends_with(char::is_whitespace)
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.ends_with(':')
        && !text.chars().any(char::is_control);
    if plain_safe { text.to_owned() } else { serde_json::to_string(text).unwrap_or_default() }
}
