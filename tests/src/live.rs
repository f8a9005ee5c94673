//! Live reconfiguration: rewrite a running agent's config file, wait for the
//! info API to report the config reload, and time how long an open
//! connection takes to be cut off after a reload.

use std::time::{Duration, Instant};

use dice_proto::info::ReloadResult;

use crate::client::status_chain;
use crate::rotation::{RELOAD_TIMEOUT, Replace, await_ok, replace};
use crate::{Agent, AgentConfig, Client};

/// How soon after a reload an open connection whose client no longer passes
/// the checks must fail its next RPC.
pub const CUT_OFF_WITHIN: Duration = Duration::from_secs(1);

/// Replaces the running agent's config file with `config`, as an editor
/// saving it would (a temp file renamed over it).
pub fn rewrite(agent: &Agent, config: &AgentConfig) {
    rewrite_text(agent, &config.to_toml());
}

/// Replaces the running agent's config file with exactly `toml`.
pub fn rewrite_text(agent: &Agent, toml: &str) {
    replace(agent.config_path(), toml.as_bytes(), Replace::Rename);
}

/// Polls the info API until `last_config_reload` satisfies `check`, within
/// [`RELOAD_TIMEOUT`], and returns it.
pub async fn await_config_reload(
    info: &Client,
    what: &str,
    check: impl Fn(&ReloadResult) -> bool,
) -> ReloadResult {
    await_ok(RELOAD_TIMEOUT, what, async || {
        let info = info.info().await.map_err(|status| status_chain(&status))?;
        match info.last_config_reload {
            Some(last) if check(&last) => Ok(last),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Rolls on `client` until an RPC fails, and returns how long after `since`
/// that was and the failure. Panics if every roll succeeds for [`RELOAD_TIMEOUT`].
pub async fn await_cut_off(client: &Client, since: Instant) -> (Duration, String) {
    await_ok(
        RELOAD_TIMEOUT,
        "the connection cut off",
        async || match client.roll().await {
            Ok(value) => Err(format!("still rolling: {value}")),
            Err(status) => Ok((since.elapsed(), status_chain(&status))),
        },
    )
    .await
}

/// Asserts that `client`'s connection is cut off within [`CUT_OFF_WITHIN`]
/// of `since`; `what` names it in the failure, with `agent`'s logs.
pub async fn assert_cut_off_in_time(client: &Client, since: Instant, what: &str, agent: &Agent) {
    let (after, error) = await_cut_off(client, since).await;
    assert!(
        after <= CUT_OFF_WITHIN,
        "{what} was cut off after {after:?} ({error})\n{}",
        agent.dump()
    );
}
