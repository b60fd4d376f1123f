//! Templates (image, default limits, env, network, security, warm pool size) and the requests
//! that create sandboxes from them. Validation and resolution are pure: what cannot be
//! enforced is refused here with a clear error, never dropped silently.

use super::sandbox::{IdleAction, Resources};
use crate::error::{Error, Result};
use crate::ids::validate_id;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The runtime type every template and node uses today.
pub const DOCKER: &str = "docker";

/// Capabilities a template may add back after `--cap-drop ALL`. Anything else (SYS_ADMIN,
/// NET_ADMIN, ...) would let a sandbox escape or reach what it must not, and is refused.
pub const ALLOWED_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "NET_BIND_SERVICE",
];

/// A sandbox's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum NetworkPolicy {
    /// No network at all (the default).
    #[default]
    None,
    /// A named Docker bridge network, created on the node on first use.
    Bridge {
        /// The network's name.
        name: String,
        /// No route outside the bridge (Docker's `--internal`).
        #[serde(default)]
        internal: bool,
    },
    /// Outbound HTTP and HTTPS only to listed hosts, through the node's egress proxy: the
    /// sandbox joins an internal network whose only way out is that proxy (docs/sandboxes.md,
    /// *Egress*). Needs a node whose Docker engine runs on agentvm's own host.
    Allowlist {
        /// Host patterns: `api.example.com`, `*.example.com` (subdomains only), an IP
        /// address; each optionally with `:port` (see [`super::egress`]).
        hosts: Vec<String>,
    },
}

/// A secret the egress proxy adds to a sandbox's requests for one host (an API key as an
/// `Authorization` header), so the sandbox can use the API without ever holding the key: it
/// is in no environment variable or file of the sandbox. Needs an `allowlist` network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credential {
    /// The host whose requests get the header: a pattern as in the allowlist
    /// (`api.example.com`, `*.example.com`, optionally `:port`).
    pub host: String,
    /// The header's name (`Authorization`); it replaces any header of that name the sandbox
    /// sent.
    pub header: String,
    /// The header's value: the secret. Given on create and update, kept encrypted, never
    /// returned (responses leave it out). On update, an empty value keeps the stored one of
    /// the same host and header.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// The most credentials one template may hold.
pub const MAX_CREDENTIALS: usize = 64;

/// The longest credential value, bytes.
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// Headers a credential may not set: they frame the request or belong to the proxy.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
    "expect",
];

impl Credential {
    /// Refuses what cannot be sent as a header for a valid host pattern; the value may be
    /// empty here (an update keeping the stored one).
    pub fn validate(&self) -> Result<()> {
        super::egress::HostPattern::parse(&self.host)?;
        let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.header.is_empty() || !self.header.chars().all(tchar) {
            return Err(Error::invalid(format!(
                "credential header {:?} is not a header name",
                self.header
            )));
        }
        let lower = self.header.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(Error::invalid(format!(
                "credential header {} cannot be set: it frames the request or belongs to the proxy",
                self.header
            )));
        }
        if self.value.len() > MAX_CREDENTIAL_BYTES {
            return Err(Error::invalid(format!(
                "the credential for {} {} is longer than {MAX_CREDENTIAL_BYTES} bytes",
                self.host, self.header
            )));
        }
        if self
            .value
            .chars()
            .any(|c| c == '\r' || c == '\n' || c == '\0')
        {
            return Err(Error::invalid(format!(
                "the credential for {} {} contains a line break or NUL",
                self.host, self.header
            )));
        }
        Ok(())
    }
}

/// How a sandbox's container is locked down. `--cap-drop ALL` is always applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityPolicy {
    /// The user to run as. `None`: the image's `agentvm.sandbox-user` label, else its
    /// non-root `USER`, else `65534:65534` (nobody).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Allow running as root when nothing else is configured (still without capabilities).
    #[serde(default)]
    pub allow_root: bool,
    /// Mount the root filesystem read-only; /tmp becomes a tmpfs and the workdir a volume.
    #[serde(default)]
    pub read_only_root: bool,
    /// Capabilities added back after dropping all; only [`ALLOWED_CAPABILITIES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// `no-new-privileges`: setuid binaries cannot raise privileges. On by default.
    #[serde(default = "yes")]
    pub no_new_privileges: bool,
    /// `pids.max` of the container.
    #[serde(default = "default_pids")]
    pub pids_limit: u32,
}

fn yes() -> bool {
    true
}

fn default_pids() -> u32 {
    256
}

impl Default for SecurityPolicy {
    fn default() -> Self {
        SecurityPolicy {
            user: None,
            allow_root: false,
            read_only_root: false,
            cap_add: Vec::new(),
            no_new_privileges: true,
            pids_limit: default_pids(),
        }
    }
}

/// What a template is made of; the input of create and update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateSpec {
    /// Display name.
    pub name: String,
    /// The Docker image (`repo:tag`); it must be present on the nodes (agentvm never pulls).
    #[serde(rename = "image")]
    pub docker_image: String,
    /// Always `docker` today; anything else is refused.
    #[serde(default = "docker")]
    pub runtime_type: String,
    /// Cpu quota, cores.
    #[serde(default = "one")]
    pub default_cpu_cores: f64,
    /// Memory (and memory+swap) limit, MiB.
    #[serde(default = "default_memory")]
    pub default_memory_mb: u64,
    /// Disk limit, MiB (tmpfs sizes with a read-only root; a storage quota otherwise, which
    /// only some Docker storage drivers enforce: refused where it cannot be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_disk_mb: Option<u64>,
    /// Longest life of a sandbox, seconds.
    #[serde(default = "default_timeout")]
    pub default_timeout_s: u64,
    /// Idle timeout, seconds; `None`: only the lifetime applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<u64>,
    /// What happens to a sandbox idle past its idle timeout: `terminate` (the default) or
    /// `pause` (the next exec or file operation resumes it).
    #[serde(default, skip_serializing_if = "IdleAction::is_terminate")]
    pub idle_action: IdleAction,
    /// Environment of every sandbox.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The network.
    #[serde(default)]
    pub network: NetworkPolicy,
    /// Secrets the egress proxy adds to requests for their hosts (needs an `allowlist`
    /// network); values are never returned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Credential>,
    /// The lock-down.
    #[serde(default)]
    pub security: SecurityPolicy,
    /// Working directory of execs and files; `/tmp` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The container's long-running command; `sleep` forever when unset (the image's own
    /// command would usually exit at once without a terminal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Pre-started sandboxes kept ready for claims.
    #[serde(default)]
    pub warm_pool_size: u32,
}

fn docker() -> String {
    DOCKER.to_string()
}
fn one() -> f64 {
    1.0
}
fn default_memory() -> u64 {
    512
}
fn default_timeout() -> u64 {
    3600
}

impl TemplateSpec {
    /// A spec with defaults for everything but the name and image.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        TemplateSpec {
            name: name.into(),
            docker_image: image.into(),
            runtime_type: docker(),
            default_cpu_cores: one(),
            default_memory_mb: default_memory(),
            default_disk_mb: None,
            default_timeout_s: default_timeout(),
            idle_timeout_s: None,
            idle_action: IdleAction::Terminate,
            env: BTreeMap::new(),
            network: NetworkPolicy::None,
            credentials: Vec::new(),
            security: SecurityPolicy::default(),
            workdir: None,
            command: None,
            warm_pool_size: 0,
        }
    }

    /// Refuses what agentvm cannot enforce or does not support.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::invalid("template name must not be empty"));
        }
        if self.docker_image.trim().is_empty() || self.docker_image.chars().any(char::is_whitespace)
        {
            return Err(Error::invalid(format!(
                "template image {:?} is not an image reference",
                self.docker_image
            )));
        }
        if self.runtime_type != DOCKER {
            return Err(Error::invalid(format!(
                "runtime type {:?} is not supported; only \"docker\" is",
                self.runtime_type
            )));
        }
        validate_resources(
            self.default_cpu_cores,
            self.default_memory_mb,
            self.security.pids_limit,
            ["defaultCpuCores", "defaultMemoryMb"],
        )?;
        validate_disk("defaultDiskMb", self.default_disk_mb)?;
        validate_lifetime("defaultTimeoutS", self.default_timeout_s)?;
        if self.idle_timeout_s == Some(0) {
            return Err(Error::invalid("idleTimeoutS must be at least 1 second"));
        }
        validate_env(&self.env)?;
        match &self.network {
            NetworkPolicy::None => {}
            NetworkPolicy::Bridge { name, .. } => {
                let ok = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !ok || matches!(name.as_str(), "host" | "none" | "bridge" | "default") {
                    return Err(Error::invalid(format!(
                        "network name {name:?} is not allowed: use letters, digits, '-', '_' or '.', not a Docker built-in"
                    )));
                }
            }
            NetworkPolicy::Allowlist { hosts } => {
                super::egress::Allowlist::parse(hosts)?;
            }
        }
        if !self.credentials.is_empty() && !matches!(self.network, NetworkPolicy::Allowlist { .. })
        {
            return Err(Error::invalid(
                "credentials need an \"allowlist\" network: the egress proxy adds them to requests",
            ));
        }
        if self.credentials.len() > MAX_CREDENTIALS {
            return Err(Error::invalid(format!(
                "a template holds at most {MAX_CREDENTIALS} credentials"
            )));
        }
        for c in &self.credentials {
            c.validate()?;
        }
        for cap in &self.security.cap_add {
            let c = cap.trim_start_matches("CAP_").to_ascii_uppercase();
            if !ALLOWED_CAPABILITIES.contains(&c.as_str()) {
                return Err(Error::invalid(format!(
                    "capability {cap} is not allowed in sandboxes; allowed: {}",
                    ALLOWED_CAPABILITIES.join(", ")
                )));
            }
        }
        if let Some(w) = &self.workdir {
            if !w.starts_with('/') {
                return Err(Error::invalid(format!(
                    "workdir {w:?} must be an absolute path"
                )));
            }
        }
        if matches!(&self.command, Some(c) if c.is_empty()) {
            return Err(Error::invalid("command must not be empty when given"));
        }
        Ok(())
    }
}

/// The most cpu a sandbox may ask for, cores: Docker takes nano-cpus as an `i64`, and
/// placement counts millicores in a `u64`; one million cores is far beyond any node.
pub const MAX_CPU_CORES: f64 = 1_000_000.0;

/// The most memory or disk a sandbox may ask for, MiB: Docker takes bytes as an `i64`, so
/// anything above `i64::MAX` bytes would wrap; placement sums these in a `u64`.
pub const MAX_MB: u64 = (i64::MAX as u64) >> 20;

fn validate_resources(cpu: f64, memory_mb: u64, pids: u32, names: [&str; 2]) -> Result<()> {
    let [cpu_name, memory_name] = names;
    if !cpu.is_finite() || cpu < 0.01 {
        return Err(Error::invalid(format!(
            "cpu of {cpu} cores is not allowed; at least 0.01"
        )));
    }
    if cpu > MAX_CPU_CORES {
        return Err(Error::invalid(format!(
            "{cpu_name} of {cpu} cores is too large; at most {MAX_CPU_CORES}"
        )));
    }
    if memory_mb < 6 {
        return Err(Error::invalid(format!(
            "memory of {memory_mb} MiB is not allowed; Docker needs at least 6 MiB"
        )));
    }
    if memory_mb > MAX_MB {
        return Err(Error::invalid(format!(
            "{memory_name} of {memory_mb} MiB is too large; at most {MAX_MB} MiB (i64 bytes)"
        )));
    }
    if pids < 8 {
        return Err(Error::invalid(format!(
            "a pids limit of {pids} is too small to run a shell; at least 8"
        )));
    }
    Ok(())
}

fn validate_disk(name: &str, disk_mb: Option<u64>) -> Result<()> {
    match disk_mb {
        Some(d) if d > MAX_MB => Err(Error::invalid(format!(
            "{name} of {d} MiB is too large; at most {MAX_MB} MiB (i64 bytes)"
        ))),
        _ => Ok(()),
    }
}

fn validate_env(env: &BTreeMap<String, String>) -> Result<()> {
    for k in env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(Error::invalid(format!(
                "environment variable name {k:?} is not allowed"
            )));
        }
        if k.starts_with("AGENTVM_") {
            return Err(Error::invalid(format!(
                "environment variable {k} is reserved for agentvm"
            )));
        }
    }
    if env.values().any(|v| v.contains('\0')) {
        return Err(Error::invalid("environment values must not contain NUL"));
    }
    Ok(())
}

/// A stored template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Template {
    /// Caller-chosen id (`python-basic`); sandboxes name it.
    pub id: String,
    /// Everything else.
    #[serde(flatten)]
    pub spec: TemplateSpec,
    /// When it was created, ms.
    pub created_at: i64,
    /// When it last changed, ms.
    pub updated_at: i64,
}

impl Template {
    /// The template as clients see it: credential values left out (they are secrets; only
    /// the egress proxy uses them).
    pub fn redacted(mut self) -> Template {
        for c in &mut self.spec.credentials {
            c.value.clear();
        }
        self
    }
}

/// Checks a template id (the generic id rules, plus characters safe in Docker labels).
pub fn validate_template_id(id: &str) -> Result<()> {
    validate_id("template id", id)?;
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Error::invalid(format!(
            "template id {id:?} may only contain letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

/// The longest lifetime (or extension) a sandbox may be given: 30 days.
pub const MAX_LIFETIME_S: u64 = 30 * 24 * 3600;

/// Refuses a lifetime of 0 or longer than [`MAX_LIFETIME_S`], naming the field.
pub fn validate_lifetime(field: &str, seconds: u64) -> Result<()> {
    if seconds == 0 {
        return Err(Error::invalid(format!("{field} must be at least 1 second")));
    }
    if seconds > MAX_LIFETIME_S {
        return Err(Error::invalid(format!(
            "{field} is {seconds} seconds; the longest allowed is {MAX_LIFETIME_S} (30 days)"
        )));
    }
    Ok(())
}

/// A request for a sandbox. Everything but the template is optional and overrides its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxRequest {
    /// The template.
    pub template_id: String,
    /// The agentvm container that owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Cpu, cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<f64>,
    /// Memory, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Disk, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
    /// Extra environment, over the template's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Lifetime, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Idle timeout, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<u64>,
    /// Place on this node only (it must be schedulable and have room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

impl SandboxRequest {
    /// A request for `template_id` with its defaults.
    pub fn new(template_id: impl Into<String>) -> Self {
        SandboxRequest {
            template_id: template_id.into(),
            ..Default::default()
        }
    }

    /// Whether a warm-pool sandbox (created with the template's defaults) can serve it.
    pub fn fits_warm_pool(&self) -> bool {
        self.cpu_cores.is_none()
            && self.memory_mb.is_none()
            && self.disk_mb.is_none()
            && self.env.is_empty()
            && self.node_id.is_none()
    }
}

/// A request resolved against its template: exactly what the container gets.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxPlan {
    /// The limits.
    pub resources: Resources,
    /// Template env overlaid with the request's.
    pub env: BTreeMap<String, String>,
    /// Lifetime, seconds.
    pub lifetime_s: u64,
    /// Idle timeout, seconds.
    pub idle_timeout_s: Option<u64>,
    /// What the idle sweep does.
    pub idle_action: IdleAction,
    /// Working directory.
    pub workdir: String,
}

/// Resolves `request` against `template`, refusing invalid or unsupported values.
pub fn resolve(template: &Template, request: &SandboxRequest) -> Result<SandboxPlan> {
    let spec = &template.spec;
    let cpu = request.cpu_cores.unwrap_or(spec.default_cpu_cores);
    let memory = request.memory_mb.unwrap_or(spec.default_memory_mb);
    validate_resources(
        cpu,
        memory,
        spec.security.pids_limit,
        ["cpuCores", "memoryMb"],
    )?;
    validate_disk("diskMb", request.disk_mb)?;
    validate_env(&request.env)?;
    let lifetime = request.timeout_s.unwrap_or(spec.default_timeout_s);
    validate_lifetime("timeoutS", lifetime)?;
    let idle = request.idle_timeout_s.or(spec.idle_timeout_s);
    if idle == Some(0) {
        return Err(Error::invalid("idleTimeoutS must be at least 1 second"));
    }
    let mut env = spec.env.clone();
    env.extend(request.env.clone());
    Ok(SandboxPlan {
        resources: Resources {
            cpu_cores: cpu,
            memory_mb: memory,
            disk_mb: request.disk_mb.or(spec.default_disk_mb),
            pids_limit: spec.security.pids_limit,
        },
        env,
        lifetime_s: lifetime,
        idle_timeout_s: idle,
        idle_action: spec.idle_action,
        workdir: spec.workdir.clone().unwrap_or_else(|| "/tmp".to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(spec: TemplateSpec) -> Template {
        Template {
            id: "t".into(),
            spec,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn unsupported_options_are_refused_clearly() {
        let mut s = TemplateSpec::new("t", "img");
        s.runtime_type = "firecracker".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not supported"));
        let mut s = TemplateSpec::new("t", "img");
        s.network = NetworkPolicy::Allowlist {
            hosts: vec!["example.org".into(), "*.example.com:443".into()],
        };
        assert!(s.validate().is_ok());
        s.network = NetworkPolicy::Allowlist {
            hosts: vec!["*.com".into()],
        };
        assert!(s.validate().unwrap_err().to_string().contains("allowlist"));
        let mut s = TemplateSpec::new("t", "img");
        s.security.cap_add = vec!["SYS_ADMIN".into()];
        assert!(s.validate().unwrap_err().to_string().contains("SYS_ADMIN"));
        let mut s = TemplateSpec::new("t", "img");
        s.network = NetworkPolicy::Bridge {
            name: "host".into(),
            internal: false,
        };
        assert!(s.validate().is_err());
        assert!(TemplateSpec::new("t", "img").validate().is_ok());
    }

    #[test]
    fn unknown_json_fields_are_refused() {
        let e = serde_json::from_value::<TemplateSpec>(
            serde_json::json!({"name":"t","image":"i","gpus":1}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `gpus`"), "{e}");
        let e = serde_json::from_value::<SandboxRequest>(
            serde_json::json!({"templateId":"t","privileged":true}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `privileged`"), "{e}");
    }

    #[test]
    fn sizes_that_would_overflow_are_refused_naming_the_field() {
        let t = template(TemplateSpec::new("t", "img"));
        let refused = |r: SandboxRequest| resolve(&t, &r).unwrap_err();
        let mut r = SandboxRequest::new("t");
        r.memory_mb = Some(u64::MAX);
        let e = refused(r);
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("memoryMb of 18446744073709551615 MiB is too large"),
            "{e}"
        );
        let mut r = SandboxRequest::new("t");
        r.memory_mb = Some(MAX_MB + 1);
        assert!(refused(r).to_string().contains("memoryMb"));
        let mut r = SandboxRequest::new("t");
        r.memory_mb = Some(MAX_MB);
        assert!(resolve(&t, &r).is_ok());
        let mut r = SandboxRequest::new("t");
        r.cpu_cores = Some(1e300);
        assert!(refused(r).to_string().starts_with("cpuCores of"));
        let mut r = SandboxRequest::new("t");
        r.disk_mb = Some(u64::MAX);
        assert!(refused(r).to_string().starts_with("diskMb of"));
        let mut s = TemplateSpec::new("t", "img");
        s.default_memory_mb = u64::MAX;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("defaultMemoryMb of"));
    }

    #[test]
    fn lifetimes_of_zero_or_past_thirty_days_are_refused() {
        let t = template(TemplateSpec::new("b", "busybox:latest"));
        let mut r = SandboxRequest::new("t");
        r.timeout_s = Some(0);
        assert!(resolve(&t, &r)
            .unwrap_err()
            .to_string()
            .contains("timeoutS must be at least 1"));
        r.timeout_s = Some(MAX_LIFETIME_S + 1);
        let e = resolve(&t, &r).unwrap_err();
        assert!(e.to_string().contains("longest allowed"), "{e}");
        r.timeout_s = Some(MAX_LIFETIME_S);
        assert_eq!(resolve(&t, &r).unwrap().lifetime_s, MAX_LIFETIME_S);
        let mut spec = TemplateSpec::new("b", "busybox:latest");
        spec.idle_action = IdleAction::Pause;
        let plan = resolve(&template(spec), &SandboxRequest::new("t")).unwrap();
        assert_eq!(plan.idle_action, IdleAction::Pause);
    }

    #[test]
    fn requests_override_template_defaults() {
        let mut spec = TemplateSpec::new("t", "img");
        spec.env.insert("A".into(), "1".into());
        spec.idle_timeout_s = Some(30);
        let t = template(spec);
        let mut r = SandboxRequest::new("t");
        r.memory_mb = Some(128);
        r.env.insert("B".into(), "2".into());
        let plan = resolve(&t, &r).unwrap();
        assert_eq!(plan.resources.memory_mb, 128);
        assert_eq!(plan.resources.cpu_cores, 1.0);
        assert_eq!(plan.env.len(), 2);
        assert_eq!(plan.idle_timeout_s, Some(30));
        assert_eq!(plan.workdir, "/tmp");
        assert!(!r.fits_warm_pool());
        assert!(SandboxRequest::new("t").fits_warm_pool());
    }

    #[test]
    fn reserved_and_bad_values_are_refused() {
        let t = template(TemplateSpec::new("t", "img"));
        let mut r = SandboxRequest::new("t");
        r.env.insert("AGENTVM_EXEC_ID".into(), "x".into());
        assert!(resolve(&t, &r)
            .unwrap_err()
            .to_string()
            .contains("reserved"));
        let mut r = SandboxRequest::new("t");
        r.cpu_cores = Some(0.0);
        assert!(resolve(&t, &r).is_err());
        assert!(validate_template_id("python-basic").is_ok());
        assert!(validate_template_id("a b").is_err());
    }
}
