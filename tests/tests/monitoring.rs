//! The shipped alerting rules (deploy/monitoring/rules.yaml) and Grafana
//! dashboards (deploy/monitoring/dashboards/) against a real Prometheus
//! that scrapes a real operator and a real gantry-server on loopback,
//! labelled as a cluster's scrape configuration labels a pod (`namespace`,
//! and `revision` from the pod label `gantry.dev/revision`).
//!
//! `promtool test rules` proves each alert's logic on made-up series; this
//! proves the rules and panels meet the series the processes really
//! export. Every alert expression is valid and every metric it names has
//! series (a renamed metric or label would leave an alert silent forever);
//! the 5xx alert fires for the GoServer's own revision once a third of its
//! requests panic, and the others stay quiet on a healthy GoServer. Every
//! dashboard query and annotation, with its template variables filled in,
//! is valid and returns data: after a second revision is deployed, so the
//! panels comparing a revision with the one before it have two.
//!
//! The same scene, left to run for a few minutes, is the data of the
//! dashboard previews in docs/previews/ (`dashboard_preview_data`, ignored
//! here: `cargo xtask previews` runs it and renders what it writes).

mod operator_support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gantry_e2e::TestNamespace;
use gantry_e2e::operator::root;
use gantry_e2e::prometheus::{Prometheus, Target};
use gantry_e2e::server::{ServerProcess, Traffic};
use gantry_operator::crd::GoServer;
use operator_support::{Operator, create_ready};
use serde_json::{Value, json};

/// Long enough for a few scrapes and two samples in every `rate` window.
const SERIES_TIMEOUT: Duration = Duration::from_secs(90);

/// Series that exist only in a state this scene does not reach: a
/// rollback, a verification held past its deadline, a decision not yet
/// told. The rollout tests check each of them at the operator.
const AFTER_A_ROLLBACK: [&str; 3] = [
    "gantry_goserver_failed_revision_info",
    "gantry_goserver_verification_overdue",
    "gantry_goserver_decisions_untold",
];

/// A verification that passes while the revision serves anything: it
/// gives the verification panels measurements without failing the
/// revision that the 5xx alert is about.
const TRAFFIC: &str =
    r#"sum(rate(http_requests_total{namespace="${namespace}",revision="${revision}"}[10s]))"#;

/// `(alert, expression)` for every rule in the rules file.
fn alerts() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("deploy/monitoring/rules.yaml"))
        .expect("reading deploy/monitoring/rules.yaml");
    let file: Value = serde_norway::from_str(&text).expect("rules.yaml is YAML");
    let alerts: Vec<(String, String)> = file["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").iter())
        .map(|rule| {
            (
                rule["alert"].as_str().expect("an alert name").to_owned(),
                rule["expr"].as_str().expect("an expression").to_owned(),
            )
        })
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    alerts
}

/// The metric names an expression uses: Gantry's and the server's.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("gantry_") || word.starts_with("http_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names(
            "sum by (ns) (rate(http_requests_total{status=~\"5..\"}[5m])) * on (ns) gantry_goserver_revision_info > 0.005"
        ),
        BTreeSet::from([
            "gantry_goserver_revision_info".to_owned(),
            "http_requests_total".to_owned()
        ])
    );
}

/// What the tests here share: a Ready GoServer `web` under verification,
/// the operator, its pod's stand-in with traffic of which a third panics,
/// and Prometheus scraping both with the labels a cluster's scrape gives.
/// Fields drop in order: the traffic first, the namespace last.
struct Scene {
    traffic: Traffic,
    server: ServerProcess,
    operator: Operator,
    prometheus: Prometheus,
    /// The GoServer's first revision, the one `server` stands in for.
    revision: String,
    /// When the scrapes began: nothing is in Prometheus before.
    scraped_since: SystemTime,
    ns: TestNamespace,
}

async fn scene() -> Scene {
    let ns = TestNamespace::new("monitoring").await;
    let prometheus = Prometheus::start();
    let operator = Operator::start_with(&ns, &["--prometheus-url", &prometheus.url()]).await;
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "web"},
        "spec": {
            "image": "registry.example.com/web:1",
            "rollout": {"verification": {
                "warmup": "2s", "interval": "2s", "window": "10s", "minSamples": 3,
                "metrics": [{"name": "traffic", "query": TRAFFIC, "min": 0.0}],
            }},
        },
    }))
    .expect("a GoServer");
    let gs = create_ready(&ns, &gs).await;
    let revision = gs
        .status
        .and_then(|s| s.revision)
        .expect("a Ready GoServer has a revision");

    // The GoServer's pod, standing in as a loopback process, with the
    // labels a scrape of the real pod would give; and the operator.
    let server = ServerProcess::start("web", &[]);
    let scraped_since = SystemTime::now();
    prometheus.set_targets(&[
        Target::new(
            server.address(),
            &[
                ("namespace", ns.name.as_str()),
                ("revision", revision.as_str()),
            ],
        ),
        Target::new(operator.http_address(), &[("job", "gantry-operator")]),
    ]);
    // A third of the requests panic: a 5xx ratio far above the 0.5 % gate.
    let traffic = Traffic::start(server.address(), &[("/", 2), ("/debug/panic", 1)], 10);
    Scene {
        traffic,
        server,
        operator,
        prometheus,
        revision,
        scraped_since,
        ns,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_and_dashboards_meet_the_real_series() {
    let scene = scene().await;
    let Scene {
        prometheus,
        revision,
        ns,
        ..
    } = &scene;

    let alerts = alerts();
    for (alert, expr) in &alerts {
        prometheus
            .query(expr)
            .await
            .unwrap_or_else(|e| panic!("{alert}: Prometheus refuses its expression: {e:#}"));
        for name in metric_names(expr) {
            if AFTER_A_ROLLBACK.contains(&name.as_str()) {
                continue;
            }
            prometheus
                .wait_for_value(
                    &format!("count({name})"),
                    "some series",
                    SERIES_TIMEOUT,
                    |n| n > 0.0,
                )
                .await
                .unwrap_or_else(|e| panic!("{alert} uses {name}, which has no series: {e:#}"));
        }
    }

    // The 5xx alert's expression returns the GoServer, by name, for its
    // revision in force.
    let (_, error_ratio) = alerts
        .iter()
        .find(|(alert, _)| alert == "GoServerErrorRatioHigh")
        .expect("the 5xx alert");
    let ratio = prometheus
        .wait_for_value(
            &format!(
                "max by (namespace, name, revision) ({error_ratio}) \
                 and on (name) {{name=\"web\"}}"
            ),
            "a ratio above the gate",
            SERIES_TIMEOUT,
            |ratio| ratio > 0.005,
        )
        .await
        .expect("the 5xx alert's expression returns the GoServer");
    assert!(ratio < 1.0, "only a third of the requests fail: {ratio}");
    let fired = prometheus.query(error_ratio).await.expect("the 5xx alert");
    let sample = &fired["result"][0]["metric"];
    assert_eq!(sample["namespace"], ns.name.as_str(), "{fired}");
    assert_eq!(sample["name"], "web", "{fired}");
    assert_eq!(sample["revision"], revision.as_str(), "{fired}");

    // Nothing else is wrong, so nothing else fires. (`for:` durations are
    // not part of an expression: this is what the alert would hold.)
    for (alert, expr) in alerts.iter().filter(|(a, _)| a != "GoServerErrorRatioHigh") {
        let data = prometheus.query(expr).await.expect("a valid expression");
        assert_eq!(
            data["result"],
            json!([]),
            "{alert} holds on a healthy GoServer and a leading operator"
        );
    }

    // A second revision, serving beside the first, so that the panels
    // comparing a revision with the one before it have both.
    let _second = second_revision(&scene).await;
    check_dashboards(prometheus, &ns.name, "web").await;
}

/// Deploys a second revision of `web` and serves it beside the first
/// with traffic; keep what it returns.
async fn second_revision(scene: &Scene) -> (ServerProcess, Traffic) {
    let Scene {
        ns,
        prometheus,
        server: first,
        revision,
        operator,
        ..
    } = scene;
    let goservers: kube::Api<GoServer> = ns.api();
    goservers
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"image": "registry.example.com/web:2"}})),
        )
        .await
        .expect("a new image");
    let second = gantry_e2e::wait_for(
        &goservers,
        "web",
        "a second revision",
        SERIES_TIMEOUT,
        |gs| {
            gs.status
                .as_ref()
                .and_then(|s| s.revision.as_deref())
                .is_some_and(|r| r != revision)
        },
    )
    .await
    .expect("a second revision")
    .status
    .and_then(|s| s.revision)
    .expect("a revision");
    let server = ServerProcess::start("web-2", &[]);
    let mut targets = vec![Target::new(
        first.address(),
        &[
            ("namespace", ns.name.as_str()),
            ("revision", revision.as_str()),
        ],
    )];
    targets.push(Target::new(
        server.address(),
        &[
            ("namespace", ns.name.as_str()),
            ("revision", second.as_str()),
        ],
    ));
    targets.push(Target::new(
        operator.http_address(),
        &[("job", "gantry-operator")],
    ));
    prometheus.set_targets(&targets);
    let traffic = Traffic::start(server.address(), &[("/", 1)], 10);
    (server, traffic)
}

/// Panels and annotations that need an event this test does not provoke
/// (the same rollback as [`AFTER_A_ROLLBACK`], and a revision compared
/// with a baseline, whose series the operator's unit test
/// `metrics::tests::goserver_series_follow_the_cache` checks): only
/// checked to be valid queries. `(dashboard, name)`.
const DASHBOARD_AFTER_A_ROLLBACK: [(&str, &str); 2] = [
    ("GoServer", "Rollbacks"),
    ("GoServer", "Each revision against its baseline"),
];

/// The time range the dashboards are checked over, as a range query like
/// Grafana's: the whole life of this test's series, so a deploy
/// annotation (data only in the minute after a deploy) is in it however
/// slow the machine.
const DASHBOARD_RANGE: Duration = Duration::from_secs(15 * 60);
const DASHBOARD_STEP: Duration = Duration::from_secs(5);

/// `$__range` in the checked queries: the tables' `increase` over five
/// minutes reaches back before this test's series began.
const CHECK_RANGE_VARIABLE: Duration = Duration::from_secs(5 * 60);

/// The shipped dashboards as `(file stem, dashboard)`, in name order.
fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("deploy/monitoring/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("reading deploy/monitoring/dashboards")
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    files
        .iter()
        .map(|file| {
            let dashboard: Value =
                serde_json::from_str(&std::fs::read_to_string(file).expect("reading a dashboard"))
                    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()));
            let stem = file.file_stem().expect("a file name").to_string_lossy();
            (stem.into_owned(), dashboard)
        })
        .collect()
}

/// Every query of every dashboard, with its variables filled in, must be
/// accepted and return data (within a few scrapes).
async fn check_dashboards(prometheus: &Prometheus, namespace: &str, goserver: &str) {
    for (_, dashboard) in dashboards() {
        let title = dashboard["title"].as_str().expect("a title");
        for Query { name, expr, .. } in dashboard_queries(&dashboard) {
            let filled = fill(&expr, namespace, goserver, CHECK_RANGE_VARIABLE);
            if DASHBOARD_AFTER_A_ROLLBACK.contains(&(title, name.as_str())) {
                prometheus
                    .query_range(&filled, DASHBOARD_RANGE, DASHBOARD_STEP)
                    .await
                    .unwrap_or_else(|e| panic!("{title}: {name}: invalid: {e:#}"));
                continue;
            }
            gantry_e2e::wait_until(
                &format!("{title}: {name}: {filled} to return data"),
                SERIES_TIMEOUT,
                || async {
                    let data = prometheus
                        .query_range(&filled, DASHBOARD_RANGE, DASHBOARD_STEP)
                        .await
                        .map_err(|e| format!("{e:#}"))?;
                    if data["result"].as_array().is_some_and(|r| !r.is_empty()) {
                        Ok(Some(()))
                    } else {
                        Err(data.to_string())
                    }
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        }
    }
}

/// How long the first revision serves alone in the previews' data, and
/// then the second: each panel's one-minute rate windows fill, and the
/// deploy between them shows.
const PREVIEW_PHASE: Duration = Duration::from_secs(100);

/// Not a check but the data of `cargo xtask previews`: the scene above,
/// its first revision alone for a while, then the second taking the
/// traffic over (the first's stops: its pods would be gone). Every query of
/// both dashboards is then sent as Grafana sends it over the whole time
/// the series exist (panels as range queries, tables' instant queries at
/// its end, `$__range` its length), and written with the dashboard to
/// `$GANTRY_PREVIEW_DATA/<dashboard>.json` for the renderer.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the data of the dashboard previews; `cargo xtask previews` runs it"]
async fn dashboard_preview_data() {
    let out = PathBuf::from(std::env::var_os("GANTRY_PREVIEW_DATA").expect(
        "GANTRY_PREVIEW_DATA names the directory for the data; `cargo xtask previews` sets it",
    ));
    std::fs::create_dir_all(&out).expect("creating the data directory");
    let scene = scene().await;
    // The scene's time passing, on purpose: the previews show what
    // happened in it.
    tokio::time::sleep(PREVIEW_PHASE).await;
    let _second = second_revision(&scene).await;
    drop(scene.traffic);
    tokio::time::sleep(PREVIEW_PHASE).await;
    // Every panel has its data (the check waits for it).
    check_dashboards(&scene.prometheus, &scene.ns.name, "web").await;

    let end = SystemTime::now();
    let start = align_down(scene.scraped_since, DASHBOARD_STEP);
    let range = end.duration_since(start).expect("the end after the start");
    for (stem, dashboard) in dashboards() {
        let mut results = Vec::new();
        for query in dashboard_queries(&dashboard) {
            let filled = fill(&query.expr, &scene.ns.name, "web", range);
            let step = (!query.instant).then(|| query.step.unwrap_or(DASHBOARD_STEP));
            let data = match step {
                None => scene.prometheus.query_at(&filled, end).await,
                Some(step) => {
                    scene
                        .prometheus
                        .query_range_between(&filled, align_down(start, step), end, step)
                        .await
                }
            }
            .unwrap_or_else(|e| panic!("{stem}: {}: {e:#}", query.name));
            results.push(json!({
                "panel": query.panel,
                "refId": query.ref_id,
                "name": query.name,
                "expr": filled,
                "step": step.map(|s| s.as_secs()),
                "data": data,
            }));
        }
        let file = out.join(format!("{stem}.json"));
        let written = json!({
            "dashboard": dashboard,
            "variables": {"datasource": "test Prometheus", "namespace": scene.ns.name, "goserver": "web"},
            "start": unix_seconds(start),
            "end": unix_seconds(end),
            "queries": results,
        });
        std::fs::write(&file, serde_json::to_vec_pretty(&written).expect("JSON"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        println!("wrote {}", file.display());
    }
}

/// `time` rounded down to a multiple of `step` since the epoch, as Grafana
/// aligns a range query's start.
fn align_down(time: SystemTime, step: Duration) -> SystemTime {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .expect("a time after 1970")
        .as_secs();
    let step = step.as_secs().max(1);
    UNIX_EPOCH + Duration::from_secs(seconds - seconds % step)
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .expect("a time after 1970")
        .as_secs_f64()
}

/// One query of a dashboard: a panel's target or an annotation's.
struct Query {
    /// The panel's id; `None` for an annotation.
    panel: Option<i64>,
    /// The target's `refId` (a table names its value columns by it).
    ref_id: Option<String>,
    /// The panel's title or the annotation's name.
    name: String,
    expr: String,
    /// Grafana sends it as an instant query at the end of the range (a
    /// table's "Instant"), not as a range query.
    instant: bool,
    /// The annotation's own step (`"1m"`), which Grafana queries it with.
    step: Option<Duration>,
}

/// The queries of a dashboard, after checking what Grafana needs of each
/// panel: a unique id, a place on the grid, the templated datasource.
fn dashboard_queries(dashboard: &Value) -> Vec<Query> {
    let title = dashboard["title"].as_str().unwrap_or_default();
    let mut ids = BTreeSet::new();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let name = panel["title"].as_str().expect("a panel title").to_owned();
        let id = panel["id"].as_i64().expect("a panel id");
        assert!(ids.insert(id), "{title}: {name}: id reused");
        for key in ["x", "y", "w", "h"] {
            assert!(
                panel["gridPos"][key].is_i64(),
                "{title}: {name}: gridPos.{key}"
            );
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{title}: {name}"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: {name}: no query");
        for target in targets {
            queries.push(Query {
                panel: Some(id),
                ref_id: target["refId"].as_str().map(str::to_owned),
                name: name.clone(),
                expr: target["expr"].as_str().expect("an expr").to_owned(),
                instant: target["instant"] == true,
                step: None,
            });
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations")
    {
        if let Some(expr) = annotation["expr"].as_str() {
            let name = annotation["name"].as_str().expect("an annotation name");
            queries.push(Query {
                panel: None,
                ref_id: None,
                name: name.to_owned(),
                expr: expr.to_owned(),
                instant: false,
                step: annotation["step"].as_str().map(|step| {
                    interval(step).unwrap_or_else(|| panic!("{title}: {name}: step {step}"))
                }),
            });
        }
    }
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(variables.contains(&"datasource"), "{title}: {variables:?}");
    queries
}

/// A Grafana interval as dashboards write a step: `30s`, `1m`, `1h`.
fn interval(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    Some(Duration::from_secs(number.parse::<u64>().ok()? * seconds))
}

/// A query as Grafana sends it over a time range of length `range`: the
/// template variables and the built-in intervals filled in.
fn fill(expr: &str, namespace: &str, goserver: &str, range: Duration) -> String {
    expr.replace("$namespace", namespace)
        .replace("$goserver", goserver)
        .replace("$__rate_interval", "1m")
        .replace("$__range", &format!("{}s", range.as_secs()))
}

#[test]
fn dashboard_queries_are_filled_like_grafana_fills_them() {
    assert_eq!(
        fill(
            r#"rate(x{namespace="$namespace", revision=~"$goserver-[0-9a-f]{10}"}[$__rate_interval]) + increase(y[$__range])"#,
            "shop",
            "web",
            Duration::from_secs(300),
        ),
        r#"rate(x{namespace="shop", revision=~"web-[0-9a-f]{10}"}[1m]) + increase(y[300s])"#
    );
    assert_eq!(interval("1m"), Some(Duration::from_secs(60)));
    assert_eq!(interval("30s"), Some(Duration::from_secs(30)));
    assert_eq!(interval("1d"), None);
    assert_eq!(interval("m"), None);
}
