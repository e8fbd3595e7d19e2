//! What a container runs as: the pod's and the container's `securityContext`, resolved into
//! the engine's settings ([`Security`]) the way the kubelet resolves them, with the
//! `runAsNonRoot` check. Pure: the image's own user is handed in by the caller, which asks the
//! engine only when [`needs_image_user`] says so.
//!
//! It must never weaken what the manifest asks: a check it cannot make (an image user that is
//! a name, not a number) refuses the container rather than guessing.

use super::runtime::Security;
use crate::manifest::types::{Container, PodSecurityContext, SeccompProfileType, SecurityContext};

/// Whether resolving `container` needs the image's user: to check `runAsNonRoot` without a
/// `runAsUser`, or to give a `runAsGroup` to the image's user.
pub fn needs_image_user(pod: Option<&PodSecurityContext>, container: &Container) -> bool {
    let own = container.security_context.as_ref();
    let (user, group) = ids(pod, own);
    user.is_none() && (non_root(pod, own) || group.is_some())
}

/// The user and group ids asked for: the container's own, else its pod's.
fn ids(pod: Option<&PodSecurityContext>, own: Option<&SecurityContext>) -> (Option<i64>, Option<i64>) {
    let user = own.and_then(|c| c.run_as_user).or_else(|| pod.and_then(|p| p.run_as_user));
    let group = own.and_then(|c| c.run_as_group).or_else(|| pod.and_then(|p| p.run_as_group));
    (user, group)
}

fn non_root(pod: Option<&PodSecurityContext>, own: Option<&SecurityContext>) -> bool {
    own.and_then(|c| c.run_as_non_root).or_else(|| pod.and_then(|p| p.run_as_non_root)).unwrap_or(false)
}

/// The engine's settings for `container`, or why it must not start. `image_user` is the
/// image's `USER` (`name`, `uid` or `uid:gid`), `None` when it names none (root).
pub fn resolve(
    pod: Option<&PodSecurityContext>,
    container: &Container,
    image_user: Option<&str>,
) -> Result<Security, String> {
    let own = container.security_context.as_ref();
    let (user, group) = ids(pod, own);
    for (field, id) in [("runAsUser", user), ("runAsGroup", group)] {
        if id.is_some_and(|id| !(0..=i64::from(u32::MAX)).contains(&id)) {
            return Err(format!("{field} {} is not a user or group id", id.unwrap_or_default()));
        }
    }
    let image_user = image_user.filter(|u| !u.is_empty());
    let image_uid = image_user.map(|u| u.split_once(':').map_or(u, |(uid, _)| uid));
    if non_root(pod, own) {
        match (user, image_uid) {
            (Some(0), _) => {
                return Err("runAsNonRoot is set but runAsUser is 0 (root); set a non-zero runAsUser".into());
            }
            (Some(_), _) => {}
            (None, None) => {
                return Err(format!(
                    "runAsNonRoot is set and image {} runs as root (it names no user); set runAsUser to a non-zero id",
                    container.image
                ));
            }
            (None, Some(uid)) => match uid.parse::<u32>() {
                Ok(0) => {
                    return Err(format!(
                        "runAsNonRoot is set and image {} runs as root (user {uid}); set runAsUser to a non-zero id",
                        container.image
                    ));
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "runAsNonRoot is set and image {} names its user `{uid}`, not a number, so berth cannot verify it is not root; set runAsUser",
                        container.image
                    ));
                }
            },
        }
    }
    let user = match (user, group) {
        (Some(user), Some(group)) => Some(format!("{user}:{group}")),
        (Some(user), None) => Some(user.to_string()),
        (None, Some(group)) => Some(format!("{}:{group}", image_uid.unwrap_or("0"))),
        (None, None) => None,
    };
    let mut groups: Vec<String> = Vec::new();
    if let Some(pod) = pod {
        for id in pod.fs_group.iter().chain(&pod.supplemental_groups) {
            if !(0..=i64::from(u32::MAX)).contains(id) {
                return Err(format!("group {id} (fsGroup or supplementalGroups) is not a group id"));
            }
            let id = id.to_string();
            if !groups.contains(&id) {
                groups.push(id);
            }
        }
    }
    let seccomp = own
        .and_then(|c| c.seccomp_profile.as_ref())
        .or_else(|| pod.and_then(|p| p.seccomp_profile.as_ref()))
        .map(|p| p.profile_type);
    let capabilities = own.and_then(|c| c.capabilities.as_ref());
    Ok(Security {
        user,
        groups,
        read_only_root: own.and_then(|c| c.read_only_root_filesystem).unwrap_or(false),
        capabilities_added: capabilities.map(|c| c.add.clone()).unwrap_or_default(),
        capabilities_dropped: capabilities.map(|c| c.drop.clone()).unwrap_or_default(),
        no_new_privileges: own.and_then(|c| c.allow_privilege_escalation) == Some(false),
        seccomp_unconfined: seccomp == Some(SeccompProfileType::Unconfined),
        privileged: own.and_then(|c| c.privileged).unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::types::{Capabilities, SeccompProfile};

    fn container(context: Option<SecurityContext>) -> Container {
        Container {
            name: "web".into(),
            image: "app:1".into(),
            command: Vec::new(),
            args: Vec::new(),
            working_dir: None,
            env: Vec::new(),
            env_from: Vec::new(),
            ports: Vec::new(),
            resources: None,
            startup_probe: None,
            liveness_probe: None,
            readiness_probe: None,
            volume_mounts: Vec::new(),
            security_context: context,
            lifecycle: None,
            restart_policy: None,
        }
    }

    fn pod(user: Option<i64>, non_root: Option<bool>) -> PodSecurityContext {
        PodSecurityContext { run_as_user: user, run_as_non_root: non_root, ..Default::default() }
    }

    /// Kubernetes' rules: the container's field wins over the pod's; runAsNonRoot refuses a
    /// user 0, an image without a user or with user 0, and an image user that is a name.
    #[test]
    fn the_user_and_the_non_root_check() {
        let own = |user: Option<i64>, non_root: Option<bool>| {
            Some(SecurityContext { run_as_user: user, run_as_non_root: non_root, ..Default::default() })
        };
        for (pod_context, container_context, image_user, expected) in [
            (None, None, None, Ok(None)),
            (Some(pod(Some(1000), None)), None, None, Ok(Some("1000"))),
            (Some(pod(Some(1000), None)), own(Some(2000), None), None, Ok(Some("2000"))),
            (Some(pod(None, Some(true))), None, Some("1000"), Ok(None)),
            (Some(pod(None, Some(true))), None, Some("1000:1000"), Ok(None)),
            (Some(pod(None, Some(true))), None, None, Err("names no user")),
            (Some(pod(None, Some(true))), None, Some("0"), Err("runs as root (user 0)")),
            (Some(pod(None, Some(true))), None, Some("nobody"), Err("not a number")),
            (Some(pod(None, Some(true))), own(Some(0), None), None, Err("runAsUser is 0")),
            (Some(pod(Some(0), Some(true))), own(Some(1000), None), None, Ok(Some("1000"))),
            // The container may lift the pod's check.
            (Some(pod(None, Some(true))), own(None, Some(false)), None, Ok(None)),
            (None, own(None, Some(true)), Some("app"), Err("not a number")),
            (None, own(Some(-1), None), None, Err("not a user or group id")),
        ] {
            let container = container(container_context);
            let resolved = resolve(pod_context.as_ref(), &container, image_user);
            match expected {
                Ok(user) => {
                    assert_eq!(resolved.as_ref().map(|s| s.user.as_deref()), Ok(user), "{pod_context:?} {container:?}")
                }
                Err(part) => assert!(
                    resolved.as_ref().is_err_and(|e| e.contains(part)),
                    "{pod_context:?} {container:?}: {resolved:?}, expected {part}"
                ),
            }
        }
    }

    #[test]
    fn a_group_goes_with_the_image_user_and_fs_group_joins_every_container() {
        let with_group = PodSecurityContext {
            run_as_group: Some(3000),
            fs_group: Some(2000),
            supplemental_groups: vec![2000, 4000],
            ..Default::default()
        };
        let plain = container(None);
        assert!(needs_image_user(Some(&with_group), &plain));
        let resolved = resolve(Some(&with_group), &plain, Some("1000")).unwrap();
        assert_eq!(resolved.user.as_deref(), Some("1000:3000"));
        assert_eq!(resolved.groups, ["2000", "4000"]);
        assert_eq!(resolve(Some(&with_group), &plain, None).unwrap().user.as_deref(), Some("0:3000"));
        let with_user = PodSecurityContext { run_as_user: Some(1), ..with_group.clone() };
        assert!(!needs_image_user(Some(&with_user), &plain));
        assert_eq!(resolve(Some(&with_user), &plain, None).unwrap().user.as_deref(), Some("1:3000"));
    }

    #[test]
    fn the_container_context_maps_to_the_engine() {
        let hardened = container(Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { add: vec!["NET_BIND_SERVICE".into()], drop: vec!["ALL".into()] }),
            seccomp_profile: Some(SeccompProfile { profile_type: SeccompProfileType::RuntimeDefault }),
            ..Default::default()
        }));
        let pod_unconfined = PodSecurityContext {
            seccomp_profile: Some(SeccompProfile { profile_type: SeccompProfileType::Unconfined }),
            ..Default::default()
        };
        let resolved = resolve(Some(&pod_unconfined), &hardened, None).unwrap();
        assert!(resolved.read_only_root && resolved.no_new_privileges && !resolved.privileged);
        assert_eq!(resolved.capabilities_added, ["NET_BIND_SERVICE"]);
        assert_eq!(resolved.capabilities_dropped, ["ALL"]);
        assert!(!resolved.seccomp_unconfined, "the container's RuntimeDefault wins over the pod's Unconfined");
        assert!(resolve(Some(&pod_unconfined), &container(None), None).unwrap().seccomp_unconfined);
        assert_eq!(resolve(None, &container(None), None).unwrap(), Security::default());
    }
}
