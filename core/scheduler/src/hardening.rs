//! The hardened container of a sandbox, as a pure function of the sandbox and its template:
//! labels (instance, sandbox, template, owner, expiry), `--cap-drop ALL`, no-new-privileges, a
//! non-root user where the image allows, pids, memory with swap equal to it, a cpu quota,
//! optionally a read-only root, and the network (none, a named bridge, or the internal
//! network of an allowlist template).

use super::sandbox::Sandbox;
use super::template::{SecurityPolicy, Template};
use bollard::models::{ContainerCreateBody, HostConfig};
use std::collections::HashMap;

/// Label keys on every sandbox container.
pub(crate) mod labels {
    /// The scheduler (store) that owns the container.
    pub(crate) const INSTANCE: &str = "agentvm.instance";
    /// The sandbox id.
    pub(crate) const SANDBOX: &str = "agentvm.sandbox";
    /// The template id.
    pub(crate) const TEMPLATE: &str = "agentvm.template";
    /// The owner (agentvm container id), when there is one.
    pub(crate) const OWNER: &str = "agentvm.owner";
    /// When the sandbox expires, ms since the epoch (`0`: a warm sandbox, not started yet).
    pub(crate) const EXPIRES_AT: &str = "agentvm.expires-at";
    /// `true` on warm-pool containers.
    pub(crate) const WARM: &str = "agentvm.warm";
}

/// The keep-alive command when a template gives none: busybox and coreutils both accept it.
const KEEP_ALIVE: [&str; 2] = ["sleep", "2147483647"];

/// Picks the user: the template's, else the image's `agentvm.sandbox-user` label, else its
/// non-root `USER`, else nobody (`65534:65534`), unless the template allows root.
pub(crate) fn resolve_user(
    policy: &SecurityPolicy,
    image_labels: Option<&HashMap<String, String>>,
    image_user: Option<&str>,
) -> String {
    if let Some(u) = &policy.user {
        return u.clone();
    }
    if let Some(u) = image_labels.and_then(|l| l.get("agentvm.sandbox-user")) {
        if !u.is_empty() {
            return u.clone();
        }
    }
    if let Some(u) = image_user {
        let name = u.split(':').next().unwrap_or("");
        if !u.is_empty() && name != "root" && name != "0" {
            return u.to_string();
        }
    }
    if policy.allow_root {
        "0:0".to_string()
    } else {
        "65534:65534".to_string()
    }
}

/// The container for `sandbox` from `template`: labelled, hardened and limited. Pure.
pub(crate) fn container_body(
    sandbox: &Sandbox,
    template: &Template,
    instance: &str,
) -> ContainerCreateBody {
    let spec = &template.spec;
    let sec = &spec.security;
    let mut labels = HashMap::new();
    labels.insert(labels::INSTANCE.to_string(), instance.to_string());
    labels.insert(labels::SANDBOX.to_string(), sandbox.id.clone());
    labels.insert(labels::TEMPLATE.to_string(), sandbox.template_id.clone());
    labels.insert(
        labels::EXPIRES_AT.to_string(),
        sandbox.expires_at.to_string(),
    );
    if let Some(o) = &sandbox.owner {
        labels.insert(labels::OWNER.to_string(), o.clone());
    }
    if sandbox.warm {
        labels.insert(labels::WARM.to_string(), "true".to_string());
    }
    let mut env: Vec<String> = sandbox
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.push(format!("AGENTVM_SANDBOX_ID={}", sandbox.id));
    let r = &sandbox.resources;
    // Admission caps memory at i64::MAX bytes; the clamp keeps a value that slipped past it
    // from wrapping negative.
    let memory = i64::try_from(r.memory_mb)
        .unwrap_or(i64::MAX)
        .saturating_mul(1024 * 1024);
    let mut tmpfs = HashMap::new();
    let mut storage_opt = HashMap::new();
    let mut volumes = Vec::new();
    if sec.read_only_root {
        let size = r.disk_mb.unwrap_or(64);
        tmpfs.insert(
            "/tmp".to_string(),
            format!("rw,nosuid,nodev,size={size}m,mode=1777"),
        );
        if sandbox.workdir != "/tmp" {
            // A volume, not a tmpfs: Docker's archive API (files) reaches volumes only.
            volumes.push(sandbox.workdir.clone());
        }
    } else if let Some(disk) = r.disk_mb {
        storage_opt.insert("size".to_string(), format!("{disk}M"));
    }
    let (entrypoint, cmd) = match &spec.command {
        Some(c) => (c.clone(), Vec::new()),
        None => (
            vec![KEEP_ALIVE[0].to_string()],
            vec![KEEP_ALIVE[1].to_string()],
        ),
    };
    let network_mode = super::egress::network_of(instance, template);
    ContainerCreateBody {
        image: Some(sandbox.docker_image.clone()),
        entrypoint: Some(entrypoint),
        cmd: Some(cmd),
        user: Some(sandbox.user.clone()),
        env: Some(env),
        working_dir: Some(sandbox.workdir.clone()),
        labels: Some(labels),
        hostname: Some(sandbox.id.replace('_', "-")),
        volumes: (!volumes.is_empty()).then_some(volumes),
        host_config: Some(HostConfig {
            // tini as PID 1 reaps the orphans a killed exec leaves behind.
            init: Some(true),
            cap_drop: Some(vec!["ALL".to_string()]),
            cap_add: (!sec.cap_add.is_empty()).then(|| sec.cap_add.clone()),
            security_opt: sec
                .no_new_privileges
                .then(|| vec!["no-new-privileges=true".to_string()]),
            pids_limit: Some(i64::from(r.pids_limit)),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some((r.cpu_cores * 1e9).round() as i64),
            readonly_rootfs: Some(sec.read_only_root),
            network_mode: Some(network_mode),
            tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
            storage_opt: (!storage_opt.is_empty()).then_some(storage_opt),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::SandboxStatus;
    use crate::template::TemplateSpec;
    use crate::template::{resolve, SandboxRequest};

    fn sandbox() -> Sandbox {
        let t = Template {
            id: "t".into(),
            spec: TemplateSpec::new("t", "img:1"),
            created_at: 0,
            updated_at: 0,
        };
        let plan = resolve(&t, &SandboxRequest::new("t")).unwrap();
        Sandbox {
            id: "sbx_1".into(),
            template_id: "t".into(),
            docker_image: "img:1".into(),
            node_id: "n".into(),
            docker_container_id: None,
            docker_container_name: "agentvm-sbx_1".into(),
            status: SandboxStatus::Creating,
            resources: plan.resources,
            env: plan.env,
            user: "1000:1000".into(),
            uid_gid: None,
            workdir: plan.workdir,
            network: "none".into(),
            read_only_root: false,
            owner: Some("user-alice".into()),
            warm: false,
            lifetime_s: 60,
            idle_timeout_s: None,
            idle_action: Default::default(),
            expires_at: 99,
            paused_at: None,
            resumed_at: None,
            created_at: 0,
            ready_at: None,
            last_activity_at: 0,
            executor_url: None,
            termination: None,
        }
    }

    #[test]
    fn the_container_is_labelled_hardened_and_limited() {
        let s = sandbox();
        let t = Template {
            id: "t".into(),
            spec: TemplateSpec::new("t", "img:1"),
            created_at: 0,
            updated_at: 0,
        };
        let b = container_body(&s, &t, "sched_x");
        let l = b.labels.unwrap();
        assert_eq!(l[labels::SANDBOX], "sbx_1");
        assert_eq!(l[labels::OWNER], "user-alice");
        assert_eq!(l[labels::TEMPLATE], "t");
        assert_eq!(l[labels::EXPIRES_AT], "99");
        assert_eq!(l[labels::INSTANCE], "sched_x");
        let h = b.host_config.unwrap();
        assert_eq!(h.cap_drop.unwrap(), ["ALL"]);
        assert_eq!(h.security_opt.unwrap(), ["no-new-privileges=true"]);
        assert_eq!(h.memory, h.memory_swap);
        assert_eq!(h.memory, Some(512 * 1024 * 1024));
        assert_eq!(h.nano_cpus, Some(1_000_000_000));
        assert_eq!(h.pids_limit, Some(256));
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(h.init, Some(true));
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
    }

    #[test]
    fn users_prefer_template_then_label_then_image_then_nobody() {
        let mut p = SecurityPolicy::default();
        let mut labels = HashMap::new();
        assert_eq!(resolve_user(&p, None, None), "65534:65534");
        assert_eq!(resolve_user(&p, None, Some("root")), "65534:65534");
        assert_eq!(resolve_user(&p, None, Some("app")), "app");
        labels.insert("agentvm.sandbox-user".to_string(), "sandbox".to_string());
        assert_eq!(resolve_user(&p, Some(&labels), Some("app")), "sandbox");
        p.user = Some("42:42".into());
        assert_eq!(resolve_user(&p, Some(&labels), Some("app")), "42:42");
        let p = SecurityPolicy {
            allow_root: true,
            ..Default::default()
        };
        assert_eq!(resolve_user(&p, None, None), "0:0");
    }
}
