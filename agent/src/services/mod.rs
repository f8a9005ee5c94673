//! The agent's own gRPC services: `api.DiceService` and the info API.

mod dice;
mod info;

pub(crate) use dice::Dice;
pub(crate) use info::{AgentState, Info};
