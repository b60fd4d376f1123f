//! The options of every binding, parsed once: [`EmbedOptions`] (open a local runtime),
//! [`ConnectOptions`] (connect to a server), [`SubscribeOptions`] (which events) and
//! [`ServeOptions`]. All are camelCase JSON and refuse unknown fields, so every binding
//! accepts the same names, applies the same defaults and refuses the same mistakes.

use agentvm::scheduler::SchedulerOptions;
use agentvm::{
    AgentConfig, AgentVm, Definition, Error, Limits, LlmConfig, LlmDriver, MockDriver,
    MockScenario, Provider, Result, Scheduler,
};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How to open a local runtime (`{"dataDir": ..., "llm": "mock", ...}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmbedOptions {
    /// Where the store lives; absent keeps everything in memory.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The LLM driver. Absent: from `LLM_PROVIDER` & co when that is set, else none.
    #[serde(default)]
    pub llm: Option<LlmOption>,
    /// The embedded Docker sandbox scheduler: the core's `SchedulerOptions`, parsed by the
    /// core (`SchedulerOptions::from_json`). Absent: no scheduler.
    #[serde(default)]
    pub scheduler: Option<serde_json::Value>,
    /// Input limits; each absent field keeps the core's default.
    #[serde(default)]
    pub limits: Option<LimitsOptions>,
    /// Give agents the local built-in tools (bash, files) on this machine.
    #[serde(default)]
    pub local_tools: bool,
    /// Agent definitions to register at open.
    #[serde(default)]
    pub definitions: Vec<Definition>,
    /// Output token limit per model call.
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

/// The LLM driver: a name (`"mock"`, `"mock:<scenario>"`, `"env"`, `"anthropic"`, `"openai"`)
/// or settings (`{"provider", "apiKey", "url", "model", "maxRetries", "timeoutSecs"}`). The
/// variables `LLM_PROVIDER_KEY`, `LLM_PROVIDER_URL`, ... fill what a provider name leaves out.
#[derive(Debug, Clone)]
pub enum LlmOption {
    /// A name.
    Name(String),
    /// Settings.
    Settings(LlmSettings),
}

impl<'de> Deserialize<'de> for LlmOption {
    /// A string or an object, with the object's own errors (an unknown field is named) rather
    /// than serde's "did not match any variant".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(name) => Ok(LlmOption::Name(name)),
            v @ serde_json::Value::Object(_) => serde_json::from_value(v)
                .map(LlmOption::Settings)
                .map_err(|e| D::Error::custom(format!("llm: {e}"))),
            other => Err(D::Error::custom(format!(
                "llm must be a name (\"mock\", \"env\", \"anthropic\", \"openai\") or an object with provider, apiKey, url, model; not {other}"
            ))),
        }
    }
}

/// Explicit LLM settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LlmSettings {
    /// `anthropic` or `openai` (or `mock`, `mock:<scenario>`).
    pub provider: String,
    /// The API key.
    #[serde(default, alias = "key")]
    pub api_key: Option<String>,
    /// The base URL (a compatible server, a proxy).
    #[serde(default, alias = "baseUrl")]
    pub url: Option<String>,
    /// The model used when an image names none.
    #[serde(default)]
    pub model: Option<String>,
    /// Retries of a failed request.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Header and stream-silence timeout, seconds.
    #[serde(default)]
    pub timeout_secs: Option<f64>,
}

/// Input limits (bytes); absent fields keep the core's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsOptions {
    /// Image names and session titles.
    pub max_name_bytes: Option<usize>,
    /// Descriptions.
    pub max_description_bytes: Option<usize>,
    /// System prompts.
    pub max_system_prompt_bytes: Option<usize>,
    /// A whole image config or definition as JSON.
    pub max_config_bytes: Option<usize>,
    /// One user message's content.
    pub max_content_bytes: Option<usize>,
}

/// Parses `json` as `T`, the error naming what was being read (`Invalid open options: ...`).
pub(crate) fn parse<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json).map_err(|e| Error::invalid(format!("Invalid {what}: {e}")))
}

impl EmbedOptions {
    /// Parses the JSON text of the options (empty text is the defaults).
    pub fn from_json(json: &str) -> Result<Self> {
        parse("open options", json)
    }

    /// The builder these options describe (not yet opened).
    pub(crate) fn builder(self) -> Result<agentvm::AgentVmBuilder> {
        let mut builder = AgentVm::builder();
        if let Some(dir) = self.data_dir {
            builder = builder.data_dir(dir);
        }
        if let Some(driver) = driver(self.llm.as_ref())? {
            builder = builder.llm(driver);
        }
        if let Some(limits) = self.limits {
            builder = builder.limits(limits.apply(Limits::default()));
        }
        if let Some(max_tokens) = self.max_tokens {
            builder = builder.agent_config(AgentConfig {
                max_tokens,
                ..Default::default()
            });
        }
        if self.local_tools {
            builder = builder.local_tools();
        }
        for d in self.definitions {
            builder = builder.definition(d);
        }
        if let Some(scheduler) = self.scheduler {
            let options = SchedulerOptions::from_json(scheduler)?;
            builder = builder.scheduler(Scheduler::builder().options(&options)?);
        }
        Ok(builder)
    }
}

impl LimitsOptions {
    fn apply(&self, mut limits: Limits) -> Limits {
        let set = |field: &mut usize, value: Option<usize>| {
            if let Some(v) = value {
                *field = v;
            }
        };
        set(&mut limits.max_name_bytes, self.max_name_bytes);
        set(
            &mut limits.max_description_bytes,
            self.max_description_bytes,
        );
        set(
            &mut limits.max_system_prompt_bytes,
            self.max_system_prompt_bytes,
        );
        set(&mut limits.max_config_bytes, self.max_config_bytes);
        set(&mut limits.max_content_bytes, self.max_content_bytes);
        limits
    }
}

/// The mock driver `name` (`mock`, `mock:<scenario>`) names, `None` for other names.
fn mock(name: &str) -> Option<Result<Arc<dyn LlmDriver>>> {
    if name != "mock" && !name.starts_with("mock:") {
        return None;
    }
    let scenario = if name == "mock" {
        Some(MockScenario::Default)
    } else {
        MockScenario::parse(name)
    };
    Some(match scenario {
        Some(s) => Ok(Arc::new(MockDriver::new(s)) as Arc<dyn LlmDriver>),
        None => {
            let known: Vec<&str> = MockScenario::ALL.iter().map(|s| s.name()).collect();
            Err(Error::invalid(format!(
                "unknown mock scenario in {name:?}; use mock or mock:<{}>",
                known.join("|")
            )))
        }
    })
}

/// The driver `llm` describes.
fn driver(llm: Option<&LlmOption>) -> Result<Option<Arc<dyn LlmDriver>>> {
    let settings = match llm {
        None => {
            return match std::env::var("LLM_PROVIDER") {
                Ok(p) if !p.trim().is_empty() => LlmConfig::from_env()?.driver().map(Some),
                _ => Ok(None),
            };
        }
        Some(LlmOption::Name(name)) => LlmSettings {
            provider: name.trim().to_string(),
            ..Default::default()
        },
        Some(LlmOption::Settings(s)) => s.clone(),
    };
    if let Some(m) = mock(&settings.provider) {
        return m.map(Some);
    }
    let mut config = LlmConfig::from_env()?;
    if settings.provider != "env" {
        config.provider = Provider::parse(&settings.provider).map_err(|_| {
            Error::invalid(format!(
                "llm provider is {:?}; use \"mock\", \"mock:<scenario>\", \"anthropic\", \"openai\" or \"env\"",
                settings.provider
            ))
        })?;
    }
    if settings.api_key.is_some() {
        config.api_key = settings.api_key;
    }
    if settings.url.is_some() {
        config.base_url = settings.url;
    }
    if let Some(model) = settings.model {
        config.model = Some(model);
    }
    if let Some(n) = settings.max_retries {
        config.max_retries = n;
    }
    if let Some(secs) = settings.timeout_secs {
        if !(secs.is_finite() && secs > 0.0) {
            return Err(Error::invalid(
                "llm timeoutSecs must be a number of seconds above 0",
            ));
        }
        config.timeout = Duration::from_secs_f64(secs);
    }
    config.driver().map(Some)
}

/// How to connect to an agentvm server (`{"url": "ws://host:port/ws", "token"?, "timeoutMs"?}`)
/// or to the servers of one cluster (`{"urls": ["ws://a:8080/ws", "ws://b:8080/ws"], ...}`):
/// the first that answers, in order, then the next in turn whenever the connection drops.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectOptions {
    /// `ws://host:port/ws`.
    #[serde(default)]
    pub url: Option<String>,
    /// Several servers of one cluster (one shared store), for failover; instead of `url`.
    #[serde(default)]
    pub urls: Option<Vec<String>>,
    /// A bearer token.
    #[serde(default)]
    pub token: Option<String>,
    /// Longest wait for a connection and for each response.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Parses connect options from JSON text.
pub fn parse_connect(json: &str) -> Result<ConnectOptions> {
    parse("connect options", json)
}

impl ConnectOptions {
    /// Parses the JSON text.
    pub fn from_json(json: &str) -> Result<Self> {
        parse_connect(json)
    }

    /// The URL for the core's `connect`: `url`, or empty when `urls` names the servers.
    pub(crate) fn url(&self) -> &str {
        self.url.as_deref().unwrap_or("")
    }

    /// The core's connect options.
    pub(crate) fn core(&self) -> Result<agentvm::ConnectOptions> {
        let urls = match (&self.url, &self.urls) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "Invalid connect options: give either url or urls, not both",
                ))
            }
            (None, None) => {
                return Err(Error::invalid(
                    "Invalid connect options: give url (\"ws://host:port/ws\") or urls (a list of them)",
                ))
            }
            (None, Some(urls)) if urls.is_empty() => {
                return Err(Error::invalid(
                    "Invalid connect options: urls is empty; list at least one ws:// URL",
                ))
            }
            (_, urls) => urls.clone().unwrap_or_default(),
        };
        let mut options = agentvm::ConnectOptions {
            urls,
            token: self.token.clone(),
            ..Default::default()
        };
        if let Some(ms) = self.timeout_ms {
            if ms == 0 {
                return Err(Error::invalid("timeoutMs must be above 0"));
            }
            options.request_timeout = Duration::from_millis(ms);
            options.connect_timeout = Duration::from_millis(ms);
        }
        Ok(options)
    }
}

/// Which events a subscription receives
/// (`{"sessions": [{"sessionId", "afterCursor"?}], "allSessions"?, "global"?, "queue"?}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscribeOptions {
    /// Topics (sessions, sandboxes) to join, each replayed after `afterCursor` when given.
    #[serde(default)]
    pub sessions: Vec<SessionTopic>,
    /// Every session's events (in this handle's scope).
    #[serde(default)]
    pub all_sessions: bool,
    /// The `global` topic (lifecycle events).
    #[serde(default)]
    pub global: bool,
    /// Events buffered for this subscriber before the overflow policy applies.
    #[serde(default)]
    pub queue: Option<usize>,
}

/// One topic to join.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionTopic {
    /// The session (or sandbox) id.
    pub session_id: String,
    /// Replay the events after this cursor first.
    #[serde(default)]
    pub after_cursor: Option<u64>,
}

impl SubscribeOptions {
    /// Parses the JSON text (empty text: nothing but what is joined later).
    pub fn from_json(json: &str) -> Result<Self> {
        parse("subscribe options", json)
    }
}

/// Where and how to serve (`{"addr": "127.0.0.1:0", "auth": "auto"}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServeOptions {
    /// `host:port`; port 0 picks a free one. Default `127.0.0.1:0`.
    #[serde(default)]
    pub addr: Option<String>,
    /// `auto` (tokens required off loopback), `required` or `disabled`.
    #[serde(default)]
    pub auth: Option<String>,
}

impl ServeOptions {
    /// Parses the JSON text (empty text: the defaults).
    pub fn from_json(json: &str) -> Result<Self> {
        parse("serve options", json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let e = EmbedOptions::from_json(r#"{"dataDirectory":"/tmp"}"#).unwrap_err();
        assert_eq!(e.kind(), agentvm::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("dataDirectory"), "{e}");
        let e = SubscribeOptions::from_json(r#"{"session":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("session"), "{e}");
    }

    #[test]
    fn llm_takes_a_name_or_settings() {
        let o = EmbedOptions::from_json(r#"{"llm":"mock","maxTokens":5}"#).unwrap();
        assert!(matches!(o.llm, Some(LlmOption::Name(ref n)) if n == "mock"));
        let o = EmbedOptions::from_json(r#"{"llm":{"provider":"openai","apiKey":"k"}}"#).unwrap();
        assert!(matches!(o.llm, Some(LlmOption::Settings(ref s)) if s.provider == "openai"));
        assert!(driver(Some(&LlmOption::Name("mock:nope".into()))).is_err());
        let e =
            EmbedOptions::from_json(r#"{"llm":{"provider":"openai","apikey":"k"}}"#).unwrap_err();
        assert!(e.to_string().contains("apikey"), "{e}");
        assert!(driver(Some(&LlmOption::Name("mock".into())))
            .unwrap()
            .is_some());
    }

    #[test]
    fn connect_takes_url_or_urls() {
        let o = ConnectOptions::from_json(r#"{"url":"ws://a/ws"}"#).unwrap();
        assert_eq!(o.url(), "ws://a/ws");
        assert!(o.core().unwrap().urls.is_empty());
        let o = ConnectOptions::from_json(r#"{"urls":["ws://a/ws","ws://b/ws"]}"#).unwrap();
        assert_eq!(o.url(), "");
        assert_eq!(o.core().unwrap().urls, ["ws://a/ws", "ws://b/ws"]);
        for (json, names) in [
            (r#"{"url":"ws://a/ws","urls":["ws://b/ws"]}"#, "url or urls"),
            (r#"{"urls":[]}"#, "urls is empty"),
            (r#"{"token":"t"}"#, "give url"),
        ] {
            let e = ConnectOptions::from_json(json)
                .and_then(|o| o.core())
                .unwrap_err();
            assert_eq!(e.kind(), agentvm::ErrorKind::InvalidInput, "{json}");
            assert!(e.to_string().contains(names), "{json}: {e}");
        }
        let e = ConnectOptions::from_json(r#"{"urls":"ws://a/ws"}"#).unwrap_err();
        assert_eq!(e.kind(), agentvm::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("sequence"), "{e}");
    }

    #[test]
    fn scheduler_options_are_the_cores() {
        let o = EmbedOptions::from_json(r#"{"scheduler":{"bogus":1}}"#).unwrap();
        let e = o.builder().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("Invalid scheduler options"), "{e}");
    }
}
