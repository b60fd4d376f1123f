//! Which LLM provider a runtime talks to, read from the environment (DESIGN.md §5).
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `LLM_PROVIDER` | `anthropic`, `openai` or `mock` | `anthropic` |
//! | `LLM_PROVIDER_KEY` (alias `LLM_API_KEY`) | the API key | none; required for `anthropic` |
//! | `LLM_PROVIDER_URL` | the base URL (`/v1` is added unless it ends with it) | the provider's public API |
//! | `LLM_PROVIDER_MODEL` | the model when an image names none | anthropic: `claude-sonnet-4-20250514`; openai: the first model the server's `/v1/models` lists |
//! | `LLM_MAX_RETRIES` | retries of a failed request | 2 |
//! | `LLM_TIMEOUT_SECS` | wait for response headers, and longest silence in a stream | 600 |
//!
//! An image's `model` overrides `LLM_PROVIDER_MODEL` for its agents: drivers always send the
//! request's model.

use super::anthropic::{self, AnthropicDriver};
use super::http::HttpSettings;
use super::mock::{MockDriver, MockScenario};
use super::openai::{self, OpenAiDriver};
use super::retry::RetryPolicy;
use super::LlmDriver;
use crate::error::{Error, Result};
use std::sync::Arc;
use std::time::Duration;

/// The Anthropic model used when neither the environment nor the image names one.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-20250514";

/// An LLM provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// The Anthropic Messages API.
    Anthropic,
    /// OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp, Ollama).
    OpenAi,
    /// The scripted mock driver.
    Mock,
}

impl Provider {
    /// Parses `anthropic`, `openai` or `mock` (case-insensitive).
    pub fn parse(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "anthropic" => Ok(Provider::Anthropic),
            "openai" => Ok(Provider::OpenAi),
            "mock" => Ok(Provider::Mock),
            other => Err(Error::invalid(format!(
                "LLM_PROVIDER is '{other}'; use anthropic, openai or mock"
            ))),
        }
    }
}

/// How to build the runtime's LLM driver.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    /// Which API.
    pub provider: Provider,
    /// The API key.
    pub api_key: Option<String>,
    /// The base URL; `None` is the provider's public API.
    pub base_url: Option<String>,
    /// The model used when an image names none; `None`: the provider's default (Anthropic:
    /// [`DEFAULT_MODEL`]; an OpenAI-compatible server: the first model its `/v1/models`
    /// lists, asked at the first turn — never another provider's model name).
    pub model: Option<String>,
    /// Retries of a failed request.
    pub max_retries: u32,
    /// How long to wait for response headers, and the longest silence inside a stream.
    pub timeout: Duration,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            provider: Provider::Anthropic,
            api_key: None,
            base_url: None,
            model: None,
            max_retries: RetryPolicy::default().max_retries,
            timeout: Duration::from_secs(600),
        }
    }
}

impl LlmConfig {
    /// Reads the process environment (see the module documentation).
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `var`, for callers with their own environment (and tests).
    /// Empty values count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut config = LlmConfig::default();
        if let Some(p) = get("LLM_PROVIDER") {
            config.provider = Provider::parse(&p)?;
        }
        config.api_key = get("LLM_PROVIDER_KEY").or_else(|| get("LLM_API_KEY"));
        config.base_url = get("LLM_PROVIDER_URL");
        if let Some(m) = get("LLM_PROVIDER_MODEL") {
            config.model = Some(m);
        }
        if let Some(n) = get("LLM_MAX_RETRIES") {
            config.max_retries = n.parse().map_err(|_| {
                Error::invalid(format!(
                    "LLM_MAX_RETRIES is '{n}'; use a whole number such as 2"
                ))
            })?;
        }
        if let Some(s) = get("LLM_TIMEOUT_SECS") {
            let secs: f64 = s
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s > 0.0)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "LLM_TIMEOUT_SECS is '{s}'; use a number of seconds above 0"
                    ))
                })?;
            config.timeout = Duration::from_secs_f64(secs);
        }
        Ok(config)
    }

    /// The HTTP settings of this configuration.
    pub fn http_settings(&self) -> HttpSettings {
        let default_url = match self.provider {
            Provider::OpenAi => openai::DEFAULT_URL,
            _ => anthropic::DEFAULT_URL,
        };
        let mut s = HttpSettings::new(
            self.base_url.clone().unwrap_or_else(|| default_url.into()),
            self.api_key.clone(),
        );
        s.retry.max_retries = self.max_retries;
        s.timeout = self.timeout;
        s
    }

    /// Builds the driver. `InvalidInput` when the configuration cannot work: the Anthropic
    /// API without a key, or a URL that is not http(s).
    pub fn driver(&self) -> Result<Arc<dyn LlmDriver>> {
        if let Some(url) = &self.base_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(Error::invalid(format!(
                    "LLM_PROVIDER_URL is '{url}'; it must start with http:// or https://"
                )));
            }
        }
        Ok(match self.provider {
            Provider::Mock => Arc::new(MockDriver::new(
                self.model
                    .as_deref()
                    .and_then(MockScenario::parse)
                    .unwrap_or(MockScenario::Default),
            )),
            Provider::Anthropic => {
                if self.api_key.is_none() {
                    return Err(Error::invalid(
                        "LLM_PROVIDER is anthropic but no API key is set: set LLM_PROVIDER_KEY \
                         (or LLM_API_KEY); for a local server that checks no key, any value works",
                    ));
                }
                Arc::new(AnthropicDriver::new(
                    self.http_settings(),
                    self.model.clone().unwrap_or_else(|| DEFAULT_MODEL.into()),
                )?)
            }
            Provider::OpenAi => {
                // No model: the driver asks the server's /v1/models at the first turn.
                Arc::new(OpenAiDriver::new(
                    self.http_settings(),
                    self.model.clone().unwrap_or_default(),
                )?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<LlmConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LlmConfig::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_and_aliases() {
        let c = config(&[]).unwrap();
        assert_eq!(c.provider, Provider::Anthropic);
        assert_eq!(c.model, None);
        assert_eq!(c.max_retries, 2);
        let c = config(&[("LLM_API_KEY", "k1")]).unwrap();
        assert_eq!(c.api_key.as_deref(), Some("k1"));
        let c = config(&[("LLM_API_KEY", "k1"), ("LLM_PROVIDER_KEY", "k2")]).unwrap();
        assert_eq!(c.api_key.as_deref(), Some("k2"));
        let c = config(&[
            ("LLM_PROVIDER", "OpenAI"),
            ("LLM_PROVIDER_URL", "http://127.0.0.1:11434/v1"),
            ("LLM_PROVIDER_MODEL", "llama3.2"),
            ("LLM_MAX_RETRIES", "0"),
            ("LLM_TIMEOUT_SECS", "2.5"),
        ])
        .unwrap();
        assert_eq!(c.provider, Provider::OpenAi);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(
            c.http_settings().endpoint("chat/completions"),
            "http://127.0.0.1:11434/v1/chat/completions"
        );
        let d = c.driver().unwrap();
        assert_eq!((d.name(), d.default_model()), ("openai", "llama3.2"));
    }

    #[test]
    fn clear_errors_for_configurations_that_cannot_work() {
        let e = config(&[]).unwrap().driver().err().unwrap();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("LLM_PROVIDER_KEY"), "{e}");
        let e = config(&[("LLM_PROVIDER", "gemini")]).unwrap_err();
        assert!(e.to_string().contains("anthropic, openai or mock"), "{e}");
        assert!(config(&[("LLM_MAX_RETRIES", "many")]).is_err());
        assert!(config(&[("LLM_TIMEOUT_SECS", "0")]).is_err());
        let e = config(&[
            ("LLM_PROVIDER", "openai"),
            ("LLM_PROVIDER_URL", "localhost:8080"),
        ])
        .unwrap()
        .driver()
        .err()
        .unwrap();
        assert!(e.to_string().contains("http://"), "{e}");
    }

    #[test]
    fn anthropic_and_mock_drivers() {
        let d = config(&[("LLM_PROVIDER_KEY", "sk")])
            .unwrap()
            .driver()
            .unwrap();
        assert_eq!((d.name(), d.default_model()), ("anthropic", DEFAULT_MODEL));
        let d = config(&[
            ("LLM_PROVIDER", "mock"),
            ("LLM_PROVIDER_MODEL", "long-stream"),
        ])
        .unwrap()
        .driver()
        .unwrap();
        assert_eq!(d.name(), "mock");
    }
}
