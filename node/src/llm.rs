//! The LLM driver named by `open({llm})`.

use crate::error::invalid;
use crate::runtime::OpenOptions;
use crate::settle::CoreResult;
use agentvm::{LlmConfig, LlmDriver, MockDriver, MockScenario, Provider};
use std::sync::Arc;
use std::time::Duration;

/// The driver for `options.llm`, `None` when it is unset.
pub(crate) fn driver(options: &OpenOptions) -> CoreResult<Option<Arc<dyn LlmDriver>>> {
    let Some(name) = options.llm.as_deref().map(str::trim) else {
        return Ok(None);
    };
    if name == "mock" || name.starts_with("mock:") {
        let scenario = match name {
            "mock" => Some(MockScenario::Default),
            _ => MockScenario::parse(name),
        };
        let scenario = scenario.ok_or_else(|| {
            let known: Vec<&str> = MockScenario::ALL.iter().map(|s| s.name()).collect();
            invalid(format!(
                "unknown mock scenario in {name:?}; use mock or mock:<{}>",
                known.join("|")
            ))
        })?;
        let mut mock = MockDriver::new(scenario);
        if let Some(ms) = options.mock_delta_delay_ms {
            mock = mock.with_delta_delay(Duration::from_millis(ms.into()));
        }
        return Ok(Some(Arc::new(mock)));
    }
    let mut config = LlmConfig::from_env()?;
    if name != "env" {
        config.provider = Provider::parse(name).map_err(|_| {
            invalid(format!(
                "llm is {name:?}; use \"mock\", \"mock:<scenario>\", \"anthropic\", \"openai\" or \"env\""
            ))
        })?;
    }
    if let Some(key) = &options.api_key {
        config.api_key = Some(key.clone());
    }
    if let Some(url) = &options.base_url {
        config.base_url = Some(url.clone());
    }
    if let Some(model) = &options.model {
        config.model = model.clone();
    }
    config.driver().map(Some)
}
