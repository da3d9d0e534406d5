//! Per-client rate limiting for `/api`.
//!
//! One keyed token bucket (GCRA, from `governor`) per client IP, shared by
//! every connection, so a client cannot reset its budget by reconnecting.
//!
//! Memory stays bounded: buckets that have refilled completely carry no
//! information, and a sweep drops them once the map holds more than
//! [`MAX_CLIENTS`]. Neither the sweep nor the map's size is paid for on
//! every request: the map is a `DashMap`, whose size locks every shard and
//! whose sweep visits every entry, so doing either per request let a client
//! with many addresses (or many clients at once) make each request cost the
//! whole map. The map is looked at once every [`CHECKS_PER_LOOK`] requests,
//! or, after a sweep that kept many buckets, once every as many requests as
//! it kept; one request at a time does it, the others go on. A sweep's
//! cost is thus spread over at least as many requests as it visited
//! buckets, and between two looks the map grows by at most the requests
//! in between: while fewer than [`CHECKS_PER_LOOK`] buckets are still in
//! use at each sweep, it never holds more than
//! `MAX_CLIENTS + CHECKS_PER_LOOK` buckets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::error::{Code, Problem};
use crate::middleware::Around;

/// Above this many tracked clients, a look at the map sweeps idle buckets.
const MAX_CLIENTS: usize = 10_000;

/// Requests between two looks at the map's size, at least.
const CHECKS_PER_LOOK: u64 = 1_024;

/// [`ClientLimiter::next_look`] while one request is looking at the map.
const LOOKING: u64 = u64::MAX;

/// One token bucket per client address.
type Buckets<C> =
    RateLimiter<IpAddr, DashMapStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The per-client token buckets, and when to look at their number next.
pub struct ClientLimiter<C: Clock = DefaultClock> {
    limiter: Buckets<C>,
    clock: C,
    /// Requests checked so far.
    checks: AtomicU64,
    /// The value of `checks` at which the map is next looked at, or
    /// [`LOOKING`] while a request does so.
    next_look: AtomicU64,
    /// Passes over the whole map (a size taken, a sweep): what the looks
    /// are rationed to keep rare; tests count them.
    scans: AtomicU64,
}

impl<C: Clock> std::fmt::Debug for ClientLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimiter")
            .field("clients", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

impl ClientLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self::with_clock(per_second, burst, DefaultClock::default())
    }
}

impl<C: Clock + Clone> ClientLimiter<C> {
    fn with_clock(per_second: u32, burst: u32, clock: C) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::dashmap_with_clock(
                Quota::per_second(per_second).allow_burst(burst),
                clock.clone(),
            ),
            clock,
            checks: AtomicU64::new(0),
            next_look: AtomicU64::new(CHECKS_PER_LOOK),
            scans: AtomicU64::new(0),
        }
    }

    /// `Ok` when `client` may proceed, else the whole seconds to wait (at least 1).
    pub fn check(&self, client: IpAddr) -> Result<(), u64> {
        let checked = self.checks.fetch_add(1, Ordering::Relaxed);
        let due = self.next_look.load(Ordering::Acquire);
        // Only the request that swaps the due count for `LOOKING` looks.
        if checked >= due
            && self
                .next_look
                .compare_exchange(due, LOOKING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let wait = self.look();
            self.next_look
                .store(checked.saturating_add(wait), Ordering::Release);
        }
        self.limiter.check_key(&client).map_err(|not_until| {
            {
                let wait = not_until.wait_time_from(self.clock.now());
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            }
            .max(1)
        })
    }

    /// Sweeps idle buckets if there are more than [`MAX_CLIENTS`];
    /// returns how many requests to wait before the next look.
    fn look(&self) -> u64 {
        let tracked = self.scan(Buckets::len);
        if tracked <= MAX_CLIENTS {
            return CHECKS_PER_LOOK;
        }
        self.scan(Buckets::retain_recent);
        let kept = self.scan(Buckets::len);
        // Buckets still in use: wait as many requests as the sweep visited
        // before visiting them again.
        u64::try_from(kept).map_or(u64::MAX, |kept| kept.max(CHECKS_PER_LOOK))
    }

    /// `pass` over the whole map, counted.
    fn scan<R>(&self, pass: impl FnOnce(&Buckets<C>) -> R) -> R {
        self.scans.fetch_add(1, Ordering::Relaxed);
        pass(&self.limiter)
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
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

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

    /// Distinct addresses from a counter: IPv6, so there are enough.
    fn client(n: u64) -> IpAddr {
        IpAddr::from(u128::from(n).to_be_bytes())
    }

    /// More clients than [`MAX_CLIENTS`], all within their refill time:
    /// a sweep frees nothing, so sweeping on every request scanned the
    /// whole map each time. A look takes at most three passes (size, sweep,
    /// size) and comes at most once every [`CHECKS_PER_LOOK`] requests.
    #[test]
    fn many_active_clients_do_not_make_every_request_scan_the_map() {
        let limiter = ClientLimiter::with_clock(1, 10, FakeRelativeClock::default());
        let active = u64::try_from(MAX_CLIENTS).unwrap() + 1_000;
        for n in 0..active {
            assert!(limiter.check(client(n)).is_ok());
        }
        assert!(limiter.tracked_clients() > MAX_CLIENTS);
        let before = limiter.scans.load(Ordering::Relaxed);
        let requests = 20_000;
        for n in 0..requests {
            assert!(limiter.check(client(n % active)).is_ok());
        }
        let scans = limiter.scans.load(Ordering::Relaxed) - before;
        assert!(
            scans <= 3 * (requests / CHECKS_PER_LOOK + 1),
            "{scans} scans of the whole map for {requests} requests"
        );
    }

    /// A stream of clients that each send once and go away: the map fills
    /// past [`MAX_CLIENTS`], is swept, and never holds more than the
    /// requests between two looks on top.
    #[test]
    fn idle_clients_are_dropped_and_memory_stays_bounded() {
        let clock = FakeRelativeClock::default();
        let limiter = ClientLimiter::with_clock(1, 1, clock.clone());
        let mut most = 0;
        for n in 0..100_000 {
            assert!(limiter.check(client(n)).is_ok());
            // One request a millisecond: a bucket has refilled a second later.
            clock.advance(Duration::from_millis(1));
            most = most.max(limiter.tracked_clients());
        }
        assert!(most > MAX_CLIENTS, "the map never needed a sweep: {most}");
        let bound = MAX_CLIENTS + usize::try_from(CHECKS_PER_LOOK).unwrap();
        assert!(most <= bound, "{most} clients tracked, more than {bound}");
        assert!(limiter.tracked_clients() <= bound);
    }
}
