//! `api.DiceService`: rolls a fair six-sided die.

use dice_proto::api::dice_service_server::DiceService;
use dice_proto::api::{RollDieRequest, RollDieResponse};
use rand::Rng;
use tonic::{Request, Response, Status};

/// The DiceService implementation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Dice;

/// Rolls one die: uniform over 1..=6. `random_range` samples by rejection, so
/// unlike `random::<u32>() % 6` no face is more likely than another.
pub fn roll(rng: &mut impl Rng) -> i32 {
    rng.random_range(1..=6)
}

#[tonic::async_trait]
impl DiceService for Dice {
    async fn roll_die(
        &self,
        _request: Request<RollDieRequest>,
    ) -> Result<Response<RollDieResponse>, Status> {
        let value = roll(&mut rand::rng());
        Ok(Response::new(RollDieResponse { value }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pearson's chi-square statistic of `counts` against a uniform distribution.
    fn chi_square(counts: &[u64]) -> f64 {
        let total: u64 = counts.iter().sum();
        let expected = total as f64 / counts.len() as f64;
        counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum()
    }

    fn faces(rolls: usize, mut roll: impl FnMut() -> i32) -> [u64; 6] {
        let mut counts = [0u64; 6];
        for _ in 0..rolls {
            let value = roll();
            assert!((1..=6).contains(&value), "rolled {value}");
            counts[(value - 1) as usize] += 1;
        }
        counts
    }

    /// Chi-square critical value for 5 degrees of freedom at p = 1e-6: a fair
    /// die exceeds it once in a million runs.
    const CRITICAL: f64 = 35.9;
    const ROLLS: usize = 600_000;

    #[test]
    fn rolls_are_uniform() {
        let mut rng = rand::rng();
        let counts = faces(ROLLS, || roll(&mut rng));
        let statistic = chi_square(&counts);
        assert!(
            statistic < CRITICAL,
            "chi-square {statistic:.1} over {counts:?}"
        );
    }

    #[test]
    fn the_bound_catches_modulo_bias() {
        // A byte modulo 6 favours 1..=4 (43/256 each against 42/256): the test above must see it.
        // Over 4 x ROLLS rolls the expected statistic is about 290, far above the bound.
        let mut rng = rand::rng();
        let counts = faces(4 * ROLLS, || i32::from(rng.random::<u8>() % 6) + 1);
        let statistic = chi_square(&counts);
        assert!(
            statistic > CRITICAL,
            "biased die passed: chi-square {statistic:.1} over {counts:?}"
        );
    }
}
