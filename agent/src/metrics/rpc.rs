//! The RPC series, recorded through handles each worker thread caches.

use std::cell::RefCell;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tonic::Code;

use super::{MethodLabels, RpcLabels};
use crate::log::code_name;

/// The most methods a worker thread keeps metric handles for.
const MAX_CACHED_SERIES: usize = 64;

/// gRPC status codes: 0 (`Ok`) to 16 (`Unauthenticated`).
const CODES: usize = 17;

/// A series' counter and latency histogram.
type Series = (Counter, Histogram);

/// A method's series, by status code.
type MethodSeries = (Box<str>, [Option<Series>; CODES]);

thread_local! {
    /// Handles to the metric series this thread has used, by method and code:
    /// looking one up in the registry's families takes their locks and a
    /// `String` per label; after the first RPC of a kind this takes neither.
    /// A list, searched in order: a service has a handful of methods, and
    /// comparing a few short strings is cheaper than hashing one.
    static SERIES: RefCell<Vec<MethodSeries>> = const { RefCell::new(Vec::new()) };
}

/// Counts one RPC of `method` that ended with `code` and took `seconds`.
pub fn record_rpc(method: &str, code: Code, seconds: f64) {
    // Paths of no service are labelled as one, so a peer cannot grow the label set.
    let method = if code == Code::Unimplemented {
        "other"
    } else {
        method
    };
    let slot = (code as usize).min(CODES - 1);
    SERIES.with_borrow_mut(|cache| {
        let cached = cache.iter().position(|(known, _)| **known == *method);
        if let Some(Some((rpcs, duration))) = cached.map(|at| &cache[at].1[slot]) {
            rpcs.inc();
            duration.observe(seconds);
            return;
        }
        let metrics = super::metrics();
        let rpcs = metrics
            .rpcs
            .get_or_create(&RpcLabels {
                method: method.to_owned(),
                code: code_name(code).to_owned(),
            })
            .clone();
        let duration = metrics
            .rpc_duration
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .clone();
        rpcs.inc();
        duration.observe(seconds);
        if let Some(at) = cached {
            cache[at].1[slot] = Some((rpcs, duration));
        } else if cache.len() < MAX_CACHED_SERIES {
            let mut codes: [Option<Series>; CODES] = Default::default();
            codes[slot] = Some((rpcs, duration));
            cache.push((Box::from(method), codes));
        }
    });
}
