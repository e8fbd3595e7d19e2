//! Patches on the positioned tree: strategic merge (with Kubernetes' patch-merge keys for the
//! kinds berth knows) and JSON 6902. Values a patch puts in keep their own positions, origin
//! included (see [`crate::diag::Pos::origin`]): a finding about a patched value points at the
//! patch that set it.

use super::tree;
use crate::manifest::yaml::{Node, Value};

/// The key that identifies items of the list `field`, as Kubernetes' types declare it
/// (`patchMergeKey`); `None` for lists a patch replaces whole. `parent` is the field that holds
/// the list's mapping, which tells a container's ports from a Service's.
fn merge_key(parent: &str, field: &str) -> Option<&'static str> {
    Some(match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" if parent == "containers" || parent == "initContainers" => "containerPort",
        "ports" => "port",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "conditions" => "type",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

/// Applies a strategic-merge patch to `target`. `parent` and `field` name where `target` sits.
pub fn strategic_merge(target: &mut Node, patch: &Node) -> Result<(), String> {
    merge_map(target, patch, "")
}

fn merge_map(target: &mut Node, patch: &Node, field: &str) -> Result<(), String> {
    let Value::Map(patch_entries) = &patch.value else {
        *target = patch.clone();
        return Ok(());
    };
    if patch.get("$patch").and_then(Node::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        tree::remove(&mut replaced, "$patch");
        *target = replaced;
        return Ok(());
    }
    if !matches!(target.value, Value::Map(_)) {
        let pos = target.pos;
        *target = tree::map(pos);
    }
    for (key, value) in patch_entries {
        let Some(name) = key.as_str() else { continue };
        if name == "$patch" || name.starts_with("$setElementOrder/") || name == "$retainKeys" {
            continue;
        }
        if let Some(list) = name.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(existing), Value::Seq(gone)) = (tree::get_mut(target, list), &value.value) {
                if let Value::Seq(items) = &mut existing.value {
                    items.retain(|item| !gone.iter().any(|g| g.value == item.value));
                }
            }
            continue;
        }
        if value.value == Value::Null || value.get("$patch").and_then(Node::as_str) == Some("delete") {
            tree::remove(target, name);
            continue;
        }
        match tree::get_mut(target, name) {
            Some(existing) => match (&mut existing.value, &value.value) {
                (Value::Map(_), Value::Map(_)) => merge_map(existing, value, name)?,
                (Value::Seq(_), Value::Seq(_)) => merge_list(existing, value, field, name)?,
                _ => *existing = without_directives(value),
            },
            None => tree::set(target, name, without_directives(value)),
        }
    }
    Ok(())
}

/// A patch value with its `$patch` directives removed, for where there is nothing to merge into.
fn without_directives(node: &Node) -> Node {
    let mut node = node.clone();
    match &mut node.value {
        Value::Map(entries) => {
            entries.retain(|(k, _)| !k.as_str().is_some_and(|k| k.starts_with('$')));
            for (_, v) in entries.iter_mut() {
                *v = without_directives(v);
            }
        }
        Value::Seq(items) => {
            items.retain(|item| item.get("$patch").is_none());
            for item in items.iter_mut() {
                *item = without_directives(item);
            }
        }
        _ => {}
    }
    node
}

fn merge_list(target: &mut Node, patch: &Node, parent: &str, field: &str) -> Result<(), String> {
    let Value::Seq(patch_items) = &patch.value else { return Ok(()) };
    let replace_all = patch_items.iter().any(|item| item.get("$patch").and_then(Node::as_str) == Some("replace"));
    let Some(key) = merge_key(parent, field).filter(|_| !replace_all) else {
        *target = without_directives(patch);
        return Ok(());
    };
    let Value::Seq(items) = &mut target.value else { return Ok(()) };
    for patch_item in patch_items {
        let Some(wanted) = patch_item.get(key).and_then(tree::scalar_text) else {
            return Err(format!("an item of `{field}` in the patch has no `{key}`, which identifies it"));
        };
        let found = items.iter().position(|item| item.get(key).and_then(tree::scalar_text).as_deref() == Some(&wanted));
        let delete = patch_item.get("$patch").and_then(Node::as_str) == Some("delete");
        match (found, delete) {
            (Some(index), true) => {
                items.remove(index);
            }
            (None, true) => {}
            (Some(index), false) => merge_map(&mut items[index], patch_item, field)?,
            (None, false) => items.push(without_directives(patch_item)),
        }
    }
    Ok(())
}

/// One JSON 6902 operation.
struct Operation {
    op: String,
    path: Vec<String>,
    from: Option<Vec<String>>,
    value: Option<Node>,
}

fn pointer(text: &str) -> Result<Vec<String>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = text.strip_prefix('/') else {
        return Err(format!("path `{text}` must start with `/`"));
    };
    Ok(rest.split('/').map(|s| s.replace("~1", "/").replace("~0", "~")).collect())
}

fn operations(patch: &Node) -> Result<Vec<Operation>, String> {
    let Value::Seq(items) = &patch.value else {
        return Err("a JSON 6902 patch must be a list of operations".to_owned());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |name: &str| item.get(name).and_then(Node::as_str);
            let op = field("op").ok_or(format!("operation {i} has no `op`"))?.to_owned();
            let path = pointer(field("path").ok_or(format!("operation {i} has no `path`"))?)?;
            let from = field("from").map(pointer).transpose()?;
            let value = item.get("value").cloned();
            if matches!(op.as_str(), "add" | "replace" | "test") && value.is_none() {
                return Err(format!("operation {i} (`{op}`) has no `value`"));
            }
            if matches!(op.as_str(), "move" | "copy") && from.is_none() {
                return Err(format!("operation {i} (`{op}`) has no `from`"));
            }
            if !matches!(op.as_str(), "add" | "remove" | "replace" | "move" | "copy" | "test") {
                return Err(format!("operation {i} has op `{op}`; write add, remove, replace, move, copy or test"));
            }
            Ok(Operation { op, path, from, value })
        })
        .collect()
}

/// Applies a JSON 6902 patch (RFC 6902) to `target`.
pub fn json6902(target: &mut Node, patch: &Node) -> Result<(), String> {
    // Copies can double an object at each step; nothing else a patch does can grow it past
    // the patch's own size. Their growth is counted as they go.
    let mut size = None;
    for op in operations(patch)? {
        let shown = format!("/{}", op.path.join("/"));
        match op.op.as_str() {
            "add" => add(target, &op.path, op.value.unwrap_or_else(|| tree::map(target.pos)))?,
            "remove" => {
                take(target, &op.path)?;
            }
            "replace" => {
                let slot = find_mut(target, &op.path).ok_or(format!("replace: `{shown}` does not exist"))?;
                *slot = op.value.unwrap_or_else(|| tree::map(slot.pos));
            }
            "move" => {
                let value = take(target, op.from.as_deref().unwrap_or_default())?;
                add(target, &op.path, value)?;
            }
            "copy" => {
                let from = op.from.unwrap_or_default();
                let value = find_mut(target, &from).ok_or(format!("copy: `/{}` does not exist", from.join("/")))?;
                let value = value.clone();
                let total = *size.get_or_insert_with(|| tree::count(target)) + tree::count(&value);
                if total > crate::manifest::yaml::MAX_NODES {
                    return Err(format!(
                        "copy: the copies make the object more than {} nodes large",
                        crate::manifest::yaml::MAX_NODES
                    ));
                }
                size = Some(total);
                add(target, &op.path, value)?;
            }
            "test" => {
                let found = find_mut(target, &op.path).ok_or(format!("test: `{shown}` does not exist"))?;
                let wanted = op.value.unwrap_or_else(|| tree::map(found.pos));
                if tree::to_json_sorted(found) != tree::to_json_sorted(&wanted) {
                    return Err(format!("test: `{shown}` is not the value the patch expects"));
                }
            }
            _ => unreachable!("operations() admits only the six operations"),
        }
    }
    Ok(())
}

fn find_mut<'a>(node: &'a mut Node, path: &[String]) -> Option<&'a mut Node> {
    let mut node = node;
    for segment in path {
        node = match &mut node.value {
            Value::Map(entries) => entries.iter_mut().find(|(k, _)| k.as_str() == Some(segment)).map(|(_, v)| v)?,
            Value::Seq(items) => items.get_mut(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn add(target: &mut Node, path: &[String], value: Node) -> Result<(), String> {
    let shown = format!("/{}", path.join("/"));
    let Some((last, parents)) = path.split_last() else {
        *target = value;
        return Ok(());
    };
    let parent = find_mut(target, parents).ok_or(format!("add: the parent of `{shown}` does not exist"))?;
    match &mut parent.value {
        Value::Map(_) => tree::set(parent, last, value),
        Value::Seq(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or(format!("add: `{shown}` is not an index of the list (it has {} items)", items.len()))?
            };
            items.insert(index, value);
        }
        _ => return Err(format!("add: the parent of `{shown}` is not a mapping or a list")),
    }
    Ok(())
}

fn take(target: &mut Node, path: &[String]) -> Result<Node, String> {
    let shown = format!("/{}", path.join("/"));
    let (last, parents) = path.split_last().ok_or("cannot remove the whole object".to_owned())?;
    let parent = find_mut(target, parents).ok_or(format!("remove: `{shown}` does not exist"))?;
    match &mut parent.value {
        Value::Map(_) => tree::remove(parent, last).ok_or(format!("remove: `{shown}` does not exist")),
        Value::Seq(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err(format!("remove: `{shown}` is not an index of the list")),
        },
        _ => Err(format!("remove: `{shown}` does not exist")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml;

    fn parse(text: &str) -> Node {
        yaml::parse(text).unwrap().remove(0).root.unwrap()
    }

    fn merged(base: &str, patch: &str) -> serde_json::Value {
        let mut base = parse(base);
        strategic_merge(&mut base, &parse(patch)).unwrap();
        tree::to_json_sorted(&base)
    }

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let out = merged(
            "spec: {containers: [{name: web, image: a, env: [{name: A, value: '1'}]}, {name: side, image: s}]}",
            "spec: {containers: [{name: web, image: b, env: [{name: B, value: '2'}]}]}",
        );
        assert_eq!(
            out,
            serde_json::json!({"spec": {"containers": [
                {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "image": "b", "name": "web"},
                {"image": "s", "name": "side"}
            ]}})
        );
    }

    #[test]
    fn directives_delete_and_replace() {
        let out = merged(
            "spec: {containers: [{name: web}, {name: side}], args: [a, b], selector: {a: '1', b: '2'}}",
            "spec: {containers: [{name: side, $patch: delete}], args: [c], selector: {$patch: replace, c: '3'}}",
        );
        assert_eq!(
            out,
            serde_json::json!({"spec": {"args": ["c"], "containers": [{"name": "web"}], "selector": {"c": "3"}}})
        );
        let out = merged("a: {b: 1, c: 2}", "a: {b: null}");
        assert_eq!(out, serde_json::json!({"a": {"c": 2}}));
    }

    #[test]
    fn json_patch_adds_replaces_and_removes_on_lists() {
        let mut node = parse("spec: {containers: [{name: web, args: [a]}]}");
        let patch = parse(
            "- {op: add, path: /spec/containers/0/args/-, value: b}\n- {op: replace, path: /spec/containers/0/name, value: app}\n- {op: add, path: /spec/replicas, value: 3}\n- {op: remove, path: /spec/containers/0/args/0}\n- {op: test, path: /spec/replicas, value: 3}",
        );
        json6902(&mut node, &patch).unwrap();
        assert_eq!(
            tree::to_json_sorted(&node),
            serde_json::json!({"spec": {"containers": [{"args": ["b"], "name": "app"}], "replicas": 3}})
        );
        let bad = parse("- {op: replace, path: /spec/nothing, value: 1}");
        assert!(json6902(&mut node, &bad).unwrap_err().contains("/spec/nothing"));
    }
}
