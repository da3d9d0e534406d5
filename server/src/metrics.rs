//! Prometheus metrics: request count, latency histogram, in-flight gauge,
//! and the count of requests cancelled before their response.
//!
//! Labels are low-cardinality by construction: the route is the *matched
//! pattern* (`/api/v1/users/{id}`), never the raw path, unmatched requests
//! share one label, and unusual methods fold into `OTHER`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::middleware::Around;

/// The latency histogram's upper bounds, in seconds: the E24 series
/// (twenty-four a decade, each about 10 % above the last) from 100 µs to
/// 10 s, 121 buckets. Fine enough that a shift of 5 % or more moves an
/// interpolated quantile by about as much for medians from 0.3 ms to 150 ms
/// (the tests below measure that; below 100 µs every answer falls in the
/// first bucket), where the usual `0.001, 0.0025, 0.005, ...` puts a
/// whole millisecond's worth of answers in one bucket and reads the same
/// p95 for two revisions 10 % apart. The cost is series: 121 per route and
/// method. The Go peers in bench/ use the same bounds.
pub const DURATION_BUCKETS: [f64; 121] = [
    0.000_1, 0.000_11, 0.000_12, 0.000_13, 0.000_15, 0.000_16, 0.000_18, 0.000_2, 0.000_22,
    0.000_24, 0.000_27, 0.000_3, 0.000_33, 0.000_36, 0.000_39, 0.000_43, 0.000_47, 0.000_51,
    0.000_56, 0.000_62, 0.000_68, 0.000_75, 0.000_82, 0.000_91, 0.001, 0.001_1, 0.001_2, 0.001_3,
    0.001_5, 0.001_6, 0.001_8, 0.002, 0.002_2, 0.002_4, 0.002_7, 0.003, 0.003_3, 0.003_6, 0.003_9,
    0.004_3, 0.004_7, 0.005_1, 0.005_6, 0.006_2, 0.006_8, 0.007_5, 0.008_2, 0.009_1, 0.01, 0.011,
    0.012, 0.013, 0.015, 0.016, 0.018, 0.02, 0.022, 0.024, 0.027, 0.03, 0.033, 0.036, 0.039, 0.043,
    0.047, 0.051, 0.056, 0.062, 0.068, 0.075, 0.082, 0.091, 0.1, 0.11, 0.12, 0.13, 0.15, 0.16,
    0.18, 0.2, 0.22, 0.24, 0.27, 0.3, 0.33, 0.36, 0.39, 0.43, 0.47, 0.51, 0.56, 0.62, 0.68, 0.75,
    0.82, 0.91, 1.0, 1.1, 1.2, 1.3, 1.5, 1.6, 1.8, 2.0, 2.2, 2.4, 2.7, 3.0, 3.3, 3.6, 3.9, 4.3,
    4.7, 5.1, 5.6, 6.2, 6.8, 7.5, 8.2, 9.1, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

/// The server's registry and the handles the middleware updates.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    in_flight: Gauge,
    cancelled: Family<RouteLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        // prometheus-client appends `_total` to counters.
        registry.register("http_requests", "HTTP requests served", requests.clone());
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(DURATION_BUCKETS)
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response headers",
            duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "Requests being served",
            in_flight.clone(),
        );
        // Apart from `http_requests_total`, which counts responses: a
        // cancelled request has none, and its status in the access log
        // (499) is not one a client saw.
        let cancelled = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_requests_cancelled",
            "HTTP requests dropped before their response was ready: the client closed the connection, or the shutdown grace period ended",
            cancelled.clone(),
        );
        // The revision is not repeated here: the scrape adds it from the
        // pod label `gantry.dev/revision`.
        let build = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        build
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        if crate::allocations::count().is_some() {
            registry.register_collector(Box::new(Allocations));
        }
        registry.register(
            "gantry_server_build_info",
            "1, labelled with the version of this gantry-server build",
            build,
        );
        Self {
            registry,
            requests,
            duration,
            in_flight,
            cancelled,
        }
    }

    /// Requests being served now, read from the gauge `/metrics` shows.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// The `OpenMetrics` text exposition, which Prometheus scrapes natively.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// `gantry_server_allocations_total`, read at each scrape from the counter
/// given to [`crate::allocations::count_with`] (only the benchmark's
/// counting build has one).
#[derive(Debug)]
struct Allocations;

impl prometheus_client::collector::Collector for Allocations {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let Some(count) = crate::allocations::count() else {
            return Ok(());
        };
        let counter = prometheus_client::metrics::counter::ConstCounter::new(count);
        let metric = encoder.encode_descriptor(
            "gantry_server_allocations",
            "Heap allocations (and reallocations) since the process started",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

/// The route label for a request: its [`matched_route`]; anything
/// unmatched shares one label, `unmatched`.
pub fn route_label(matched: Option<&MatchedPath>, path: &str) -> &'static str {
    matched_route(matched, path).unwrap_or("unmatched")
}

/// The route a request matched: the matched pattern; every file under
/// `/static/` is one route (the file service is nested, so axum records no
/// pattern for it); `None` when no route matched. The trace takes it as it
/// is (an unmatched request's span has no route), the log and the metrics
/// as [`route_label`].
///
/// A `&'static str`, so that the span, the trace and both metrics take it
/// without copying it on every request: each matched pattern is copied
/// once, the first time it is seen, and kept. The patterns are the
/// router's own, a fixed set, so what is kept is bounded by the routes.
pub fn matched_route(matched: Option<&MatchedPath>, path: &str) -> Option<&'static str> {
    match matched.map(MatchedPath::as_str) {
        Some(pattern) => Some(intern(pattern)),
        None if path.starts_with("/static/") => Some("/static/*"),
        None => None,
    }
}

/// `{method} {route}`, the name of a request's span, kept once per pair
/// like the patterns themselves ([`matched_route`]): methods are the few of
/// [`method_label`] and routes the router's.
pub fn span_name(method: &'static str, route: &'static str) -> &'static str {
    type Names = BTreeMap<(&'static str, &'static str), &'static str>;
    static NAMES: std::sync::RwLock<Names> = std::sync::RwLock::new(BTreeMap::new());
    let key = (method, route);
    if let Some(kept) = NAMES
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
    {
        return kept;
    }
    NAMES
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(key)
        .or_insert_with(|| Box::leak(format!("{method} {route}").into_boxed_str()))
}

/// The one kept copy of a route pattern.
fn intern(pattern: &str) -> &'static str {
    static PATTERNS: std::sync::RwLock<BTreeSet<&'static str>> =
        std::sync::RwLock::new(BTreeSet::new());
    // A poisoned lock still holds a valid set: nothing panics while
    // holding it but a failed allocation.
    if let Some(kept) = PATTERNS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(pattern)
    {
        return kept;
    }
    let mut patterns = PATTERNS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(kept) = patterns.get(pattern) {
        return kept;
    }
    let kept: &'static str = Box::leak(pattern.to_owned().into_boxed_str());
    patterns.insert(kept);
    kept
}

/// The method label: the standard methods by name, any other as `OTHER`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Middleware: counts and times every request.
#[derive(Clone, Debug)]
pub struct Track(pub Arc<Metrics>);

/// What [`Track`] carries from a request to its response. Dropped, it
/// takes the request off the in-flight gauge, and counts it as cancelled
/// when no response came: the request future was dropped mid-way.
pub struct Started {
    metrics: Arc<Metrics>,
    labels: RouteLabels,
    start: Instant,
    answered: bool,
}

impl Drop for Started {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        if !self.answered {
            self.metrics.cancelled.get_or_create(&self.labels).inc();
        }
    }
}

impl Around for Track {
    type Carry = Started;

    fn before(&self, req: &mut Request) -> ControlFlow<Response, Started> {
        let metrics = &self.0;
        metrics.in_flight.inc();
        ControlFlow::Continue(Started {
            metrics: Arc::clone(metrics),
            labels: RouteLabels {
                method: method_label(req.method()),
                route: route_label(req.extensions().get::<MatchedPath>(), req.uri().path()),
            },
            start: Instant::now(),
            answered: false,
        })
    }

    fn after(mut started: Started, response: Response) -> Response {
        started.answered = true;
        let Started {
            metrics,
            labels,
            start,
            ..
        } = &started;
        metrics
            .duration
            .get_or_create(labels)
            .observe(start.elapsed().as_secs_f64());
        metrics
            .requests
            .get_or_create(&RequestLabels {
                method: labels.method,
                route: labels.route,
                status: response.status().as_u16(),
            })
            .inc();
        response
    }
}

#[cfg(test)]
mod tests {
    use super::{DURATION_BUCKETS, intern, matched_route, route_label, span_name};

    /// The `q` quantile of `values` as Prometheus' `histogram_quantile`
    /// estimates it from `bounds`: the bucket holding the rank, linearly
    /// interpolated between its bounds.
    #[allow(clippy::cast_precision_loss)] // counts of a test's few values
    fn histogram_quantile(q: f64, bounds: &[f64], values: &[f64]) -> f64 {
        let counts: Vec<usize> = bounds
            .iter()
            .map(|b| values.iter().filter(|v| *v <= b).count())
            .collect();
        let rank = q * values.len() as f64;
        let i = counts
            .iter()
            .position(|c| *c as f64 >= rank)
            .expect("inside the buckets");
        let (lower, below) = if i == 0 {
            (0.0, 0)
        } else {
            (bounds[i - 1], counts[i - 1])
        };
        let share = (rank - below as f64) / (counts[i] - below) as f64;
        lower + (bounds[i] - lower) * share
    }

    /// Latencies spread like a server's: `n` values from `median / 2` to
    /// `median * 3`, denser near the median.
    fn latencies(median: f64, n: u32) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let u = (f64::from(i) + 0.5) / f64::from(n);
                // A log-spread around the median, skewed to the slow side.
                median * (u * 1.8 - 0.7).exp2().max(0.5)
            })
            .collect()
    }

    #[test]
    fn the_go_peers_keep_the_same_buckets() {
        for peer in ["ginfull", "gintuned"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../bench/{peer}/main.go"));
            let text = std::fs::read_to_string(&path).unwrap();
            let start = text.find("var durationBuckets = []float64{").unwrap();
            let body = &text[start..];
            let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
            let go: Vec<f64> = body
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| v.parse().unwrap())
                .collect();
            assert_eq!(go, DURATION_BUCKETS.to_vec(), "{peer}");
        }
    }

    #[test]
    fn the_buckets_tell_a_ten_percent_shift_apart() {
        for median in [0.0003, 0.001, 0.004, 0.02, 0.15] {
            let base = latencies(median, 2000);
            let p95 = histogram_quantile(0.95, &DURATION_BUCKETS, &base);
            for shift in [1.05, 1.1, 1.25, 1.5] {
                let slower: Vec<f64> = base.iter().map(|v| v * shift).collect();
                let seen = histogram_quantile(0.95, &DURATION_BUCKETS, &slower) / p95;
                // The shift read off the buckets is within a fifth of the
                // true one (at +10 %: between +8 % and +12 %; at +5 %,
                // between +4 % and +6 %).
                assert!(
                    (seen - shift).abs() <= (shift - 1.0) / 5.0,
                    "median {median}: a shift of {shift} reads {seen}"
                );
            }
        }
    }

    #[test]
    fn a_route_pattern_is_kept_once() {
        let first = intern(&String::from("/api/v1/users/{id}"));
        let again = intern(&String::from("/api/v1/users/{id}"));
        assert_eq!(first, "/api/v1/users/{id}");
        assert!(std::ptr::eq(first, again), "the same copy both times");
        assert!(!std::ptr::eq(first, intern("/healthz")));
    }

    #[test]
    fn a_span_name_is_kept_once() {
        let route = intern("/api/v1/users/{id}");
        let first = span_name("GET", route);
        assert_eq!(first, "GET /api/v1/users/{id}");
        assert!(std::ptr::eq(first, span_name("GET", route)));
        assert_eq!(span_name("PATCH", route), "PATCH /api/v1/users/{id}");
    }

    #[test]
    fn unmatched_paths_share_labels() {
        assert_eq!(route_label(None, "/static/app.css"), "/static/*");
        assert_eq!(route_label(None, "/no/such/page"), "unmatched");
        assert_eq!(matched_route(None, "/static/app.css"), Some("/static/*"));
        assert_eq!(matched_route(None, "/no/such/page"), None);
    }
}
