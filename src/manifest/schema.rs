//! JSON Schemas (draft-07, for yaml-language-server) and the field reference, both generated
//! from the manifest types and the tier table, so docs and editors say what the code does.
//! `schemas/` and the README's reference are checked against these by a test.

use super::Kind;
use super::tiers;
use super::types::*;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The draft-07 schema of a type.
pub fn schema_of<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft07().into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

fn kind_schema<T: JsonSchema>(kind: Kind) -> Value {
    let mut schema = schema_of::<T>();
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.insert("apiVersion".into(), json!({ "const": kind.api_version() }));
        properties.insert("kind".into(), json!({ "const": kind.name() }));
    }
    schema
}

/// The schema of every kind: `(file name, schema)`.
pub fn schemas() -> Vec<(String, Value)> {
    Kind::ALL
        .iter()
        .map(|&kind| {
            let schema = match kind {
                Kind::Namespace => kind_schema::<Namespace>(kind),
                Kind::ConfigMap => kind_schema::<ConfigMap>(kind),
                Kind::Secret => kind_schema::<Secret>(kind),
                Kind::Service => kind_schema::<Service>(kind),
                Kind::Pod => kind_schema::<Pod>(kind),
                Kind::ReplicationController => kind_schema::<ReplicationController>(kind),
                Kind::ReplicaSet => kind_schema::<ReplicaSet>(kind),
                Kind::Deployment => kind_schema::<Deployment>(kind),
                Kind::DaemonSet => kind_schema::<DaemonSet>(kind),
                Kind::Job => kind_schema::<Job>(kind),
                Kind::StatefulSet => kind_schema::<StatefulSet>(kind),
                Kind::PersistentVolumeClaim => kind_schema::<PersistentVolumeClaim>(kind),
                Kind::CronJob => kind_schema::<CronJob>(kind),
            };
            (format!("{}.json", kind.name().to_ascii_lowercase()), schema)
        })
        .collect()
}

/// The manifest reference as a markdown table: per type, its honored, accepted and refused fields.
pub fn reference_markdown() -> String {
    let mut honored: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, schema) in schemas() {
        let Some(title) = schema.get("title").and_then(Value::as_str) else { continue };
        if title == "Config" {
            continue;
        }
        collect_properties(title, &schema, &mut honored);
        if let Some(definitions) = schema.get("definitions").and_then(Value::as_object) {
            for (name, definition) in definitions {
                collect_properties(name, definition, &mut honored);
            }
        }
    }
    // Types with no honored field still have tiers to show (emptyDir's `medium`, say).
    for (name, _, _) in tiers::ACCEPTED.iter().chain(tiers::REFUSED) {
        honored.entry((*name).to_owned()).or_default();
    }
    let mut out =
        String::from("| type | honored | accepted, with a warning | refused, with the reason |\n|---|---|---|---|\n");
    let mut names: Vec<&String> = honored.keys().collect();
    let order = |name: &str| Kind::from_name(name).map_or(100, |k| k as usize);
    names.sort_by_key(|name| (order(name), name.to_string()));
    for name in names {
        let fields = &honored[name];
        let accepted: Vec<String> =
            tiers::ACCEPTED.iter().filter(|(s, _, _)| s == name).map(|(_, f, _)| format!("`{f}`")).collect();
        let mut refused: Vec<String> =
            tiers::REFUSED.iter().filter(|(s, _, _)| s == name).map(|(_, f, _)| format!("`{f}`")).collect();
        // Kubernetes' other fields of the type, refused as fields berth does not run.
        let unrun: Vec<String> = tiers::kubernetes_fields(name)
            .filter(|f| !fields.iter().any(|h| h == f) && tiers::accepted(name, f).is_none())
            .filter(|f| !tiers::REFUSED.iter().any(|(s, r, _)| s == name && r == f))
            .map(|f| format!("`{f}`"))
            .collect();
        if !unrun.is_empty() {
            refused.push(format!("not run: {}", unrun.join(", ")));
        }
        let mut honored_list: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
        if honored_list.is_empty() {
            honored_list.push("(no fields)".to_owned());
        }
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            honored_list.join(", "),
            accepted.join(", "),
            refused.join(", ")
        );
    }
    out
}

fn collect_properties(name: &str, schema: &Value, out: &mut BTreeMap<String, Vec<String>>) {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        out.entry(name.to_owned()).or_insert_with(|| properties.keys().cloned().collect());
    }
}
