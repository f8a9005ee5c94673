//! The agent's own gRPC services: `api.DiceService` and the info API, and
//! the statuses the health service reports.

mod dice;
mod health;
mod info;

pub(crate) use dice::Dice;
pub(crate) use health::HealthStatus;
pub(crate) use info::{AgentState, Info};
