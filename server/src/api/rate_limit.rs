//! Per-client rate limiting for `/api`.
//!
//! One keyed token bucket (GCRA, from `governor`) per client IP, shared by
//! every connection, so a client cannot reset its budget by reconnecting.
//! Memory stays bounded: buckets that have refilled completely carry no
//! information and are dropped once the map grows past [`MAX_CLIENTS`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::ops::ControlFlow;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::{Code, Problem};
use crate::middleware::Around;

/// Above this many tracked clients, idle buckets are swept on the next request.
const MAX_CLIENTS: usize = 10_000;

pub struct ClientLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl std::fmt::Debug for ClientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimiter")
            .field("clients", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

impl ClientLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ),
            clock: DefaultClock::default(),
        }
    }

    /// `Ok` when `client` may proceed, else the whole seconds to wait (at least 1).
    pub fn check(&self, client: IpAddr) -> Result<(), u64> {
        if self.limiter.len() > MAX_CLIENTS {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&client).map_err(|not_until| {
            {
                let wait = not_until.wait_time_from(self.clock.now());
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            }
            .max(1)
        })
    }

    /// How many clients currently have a bucket.
    pub fn tracked_clients(&self) -> usize {
        self.limiter.len()
    }
}

/// Middleware: 429 with `Retry-After` once a client exceeds its budget. It
/// takes only the limiter, so this module depends on nothing the rest of the
/// server shares.
#[derive(Clone, Debug)]
pub struct RateLimit(pub Arc<ClientLimiter>);

impl Around for RateLimit {
    type Carry = ();

    fn before(&self, req: &mut Request) -> ControlFlow<Response, ()> {
        // Without connection info (router tests) every request shares one bucket.
        let client = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let Err(retry_after) = self.0.check(client) else {
            return ControlFlow::Continue(());
        };
        let mut response = Problem::new(
            Code::RateLimited,
            format!("too many requests; retry in {retry_after} s"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        ControlFlow::Break(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_is_allowed_then_refused_per_client() {
        let limiter = ClientLimiter::new(1, 3);
        let a = IpAddr::from([127, 0, 0, 1]);
        let b = IpAddr::from([127, 0, 0, 2]);
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
        }
        assert!(limiter.check(a).unwrap_err() >= 1);
        assert!(limiter.check(b).is_ok(), "clients have separate budgets");
        assert_eq!(limiter.tracked_clients(), 2);
    }
}
