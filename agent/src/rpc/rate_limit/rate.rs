//! Rates as the config writes them (`"50/s"`, `"3000/m"`, `"10/h"`) and the
//! rate settings of one listener: `limits.rpc_rate`, `limits.rpc_burst` and
//! `limits.handshake_rate_per_ip`, each overridable in a listener's `limits`.

use std::fmt;
use std::time::Duration;

/// A number of events per unit of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per `unit`.
    pub count: u32,
    /// The unit: one second, minute or hour.
    pub unit: Duration,
}

impl Rate {
    /// Parses `"N/s"`, `"N/m"` or `"N/h"` with `N` a positive integer.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((count, unit)) = text.trim().split_once('/') else {
            return Err("no \"/unit\" after the count".to_owned());
        };
        let count: u32 = match count.trim().parse() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("not a positive count: \"{}\"", count.trim())),
        };
        let unit = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => return Err(format!("unknown unit \"{other}\"")),
        };
        Ok(Self { count, unit })
    }

    /// The time one event uses up: `unit / count`, in nanoseconds (at least 1).
    pub fn interval_ns(&self) -> u64 {
        let unit = u64::try_from(self.unit.as_nanos()).unwrap_or(u64::MAX);
        (unit / u64::from(self.count)).max(1)
    }

    /// The default burst: the rate per second, at least 1.
    pub fn default_burst(&self) -> u32 {
        let per_second = u64::from(self.count) / self.unit.as_secs().max(1);
        u32::try_from(per_second).unwrap_or(u32::MAX).max(1)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// One listener's rate limits, after its `limits` table is merged over `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimits {
    /// `rpc_rate`: RPCs per client identity; `None` is no limit.
    pub rpc_rate: Option<Rate>,
    /// `rpc_burst`: RPCs a client may send at once; `None` is the default.
    pub rpc_burst: Option<u32>,
    /// `handshake_rate_per_ip`: new connections per source IP on mTLS listeners.
    pub handshake_rate_per_ip: Option<Rate>,
}

impl RateLimits {
    /// The per-key keys of `over`, falling back to `self`'s.
    pub fn overridden_by(self, over: RateLimits) -> RateLimits {
        RateLimits {
            rpc_rate: over.rpc_rate.or(self.rpc_rate),
            rpc_burst: over.rpc_burst.or(self.rpc_burst),
            handshake_rate_per_ip: over.handshake_rate_per_ip.or(self.handshake_rate_per_ip),
        }
    }

    /// The RPC burst in effect: `rpc_burst`, else the rate per second (at least 1).
    pub fn rpc_burst(&self) -> u32 {
        self.rpc_burst
            .or(self.rpc_rate.map(|r| r.default_burst()))
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print_as_written() {
        for text in ["50/s", "3000/m", "10/h", "1/s"] {
            assert_eq!(Rate::parse(text).expect(text).to_string(), text);
        }
        assert_eq!(Rate::parse("50/s").expect("rate").interval_ns(), 20_000_000);
        for bad in ["50", "0/s", "-1/s", "x/s", "5/d", "5/", "/s", ""] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn burst_defaults_to_the_rate_per_second() {
        let limits = |rate: &str, burst| RateLimits {
            rpc_rate: Some(Rate::parse(rate).expect(rate)),
            rpc_burst: burst,
            handshake_rate_per_ip: None,
        };
        assert_eq!(limits("50/s", None).rpc_burst(), 50);
        assert_eq!(limits("3000/m", None).rpc_burst(), 50);
        assert_eq!(limits("10/h", None).rpc_burst(), 1);
        assert_eq!(limits("50/s", Some(7)).rpc_burst(), 7);
    }

    #[test]
    fn a_listener_overrides_key_by_key() {
        let global = RateLimits {
            rpc_rate: Rate::parse("50/s").ok(),
            rpc_burst: Some(100),
            handshake_rate_per_ip: Rate::parse("20/s").ok(),
        };
        let over = RateLimits {
            rpc_rate: Rate::parse("10/s").ok(),
            ..RateLimits::default()
        };
        let merged = global.overridden_by(over);
        assert_eq!(merged.rpc_rate, Rate::parse("10/s").ok());
        assert_eq!(merged.rpc_burst, Some(100));
        assert_eq!(merged.handshake_rate_per_ip, Rate::parse("20/s").ok());
    }
}
