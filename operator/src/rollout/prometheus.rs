//! The Prometheus client: one instant query, one value.
//!
//! A query must come back as a scalar or a vector of at most one sample;
//! an empty vector is no data (which the judge reads through the metric's
//! `noData`), and so is `NaN`. Everything else that goes wrong is a
//! [`QueryError`], which is never the application failing, of two kinds
//! ([`QueryError::is_invalid`]): the query itself is wrong (Prometheus
//! refuses it as `bad_data` or `execution`, or it gives several series or a
//! range), which will not mend by waiting; or Prometheus cannot answer now
//! (down, timing out, an HTTP error from it or a proxy), which may.
//!
//! The operator's bearer token (read from a file at every query, so a
//! rotated token is picked up) is sent only to the operator's own
//! `--prometheus-url`, never to a URL written in a `GoServer`: that would
//! hand the token to whoever wrote the `GoServer`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::Method;
use serde::Deserialize;

use super::http::HttpClient;

/// Why a query gave no measurement.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueryError {
    #[error(
        "no Prometheus URL: set spec.rollout.verification.prometheus.url or the operator's --prometheus-url"
    )]
    NoUrl,
    #[error("Prometheus at {url} could not be reached: {message}")]
    Unreachable { url: String, message: String },
    #[error("Prometheus answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("Prometheus refused the query ({kind}): {message}")]
    Invalid { kind: String, message: String },
    #[error("the query returned {0} series; aggregate it to one (for example with sum)")]
    SeveralSeries(usize),
    #[error("the query returned a range vector; it must give an instant value")]
    Range,
    #[error("unexpected answer from Prometheus: {0}")]
    Unexpected(String),
    #[error("could not read the bearer token file {path}: {message}")]
    Token { path: String, message: String },
}

impl QueryError {
    /// Whether the query is wrong as written (it will fail the same way
    /// until someone edits it), rather than Prometheus unable to answer.
    pub fn is_invalid(&self) -> bool {
        matches!(
            self,
            Self::Invalid { .. } | Self::SeveralSeries(_) | Self::Range
        )
    }
}

/// Queries Prometheus for the verification of every `GoServer`.
#[derive(Clone, Debug)]
pub struct Prometheus {
    http: HttpClient,
    /// `--prometheus-url`: the default, and the only URL the token goes to.
    default_url: Option<String>,
    token_file: Option<PathBuf>,
}

impl Prometheus {
    pub fn new(default_url: Option<String>, token_file: Option<PathBuf>) -> Self {
        Self {
            http: HttpClient::new(),
            default_url: default_url.map(|u| u.trim_end_matches('/').to_owned()),
            token_file,
        }
    }

    /// Runs `query` on the Prometheus at `url` (the default when `None`),
    /// giving up after `timeout`. `Ok(None)` is no data.
    pub async fn query(
        &self,
        url: Option<&str>,
        query: &str,
        timeout: Duration,
    ) -> Result<Option<f64>, QueryError> {
        let base = url
            .map(|u| u.trim_end_matches('/').to_owned())
            .or_else(|| self.default_url.clone())
            .ok_or(QueryError::NoUrl)?;
        let endpoint =
            url::Url::parse_with_params(&format!("{base}/api/v1/query"), &[("query", query)])
                .map_err(|e| QueryError::Unreachable {
                    url: base.clone(),
                    message: format!("not a URL: {e}"),
                })?;
        let mut authorization = None;
        if self.default_url.as_deref() == Some(base.as_str())
            && let Some(path) = &self.token_file
        {
            let token = std::fs::read_to_string(path).map_err(|e| QueryError::Token {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            authorization = Some(format!("Bearer {}", token.trim()));
        }
        let headers: Vec<(&str, &str)> = authorization
            .as_deref()
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        let (status, body) = self
            .http
            .send(Method::GET, endpoint.as_str(), &headers, None, timeout)
            .await
            .map_err(|message| QueryError::Unreachable {
                url: base.clone(),
                message,
            })?;
        let body = String::from_utf8_lossy(&body);
        parse(status.as_u16(), &body)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Scalar((f64, String)),
    Vector(Vec<Sample>),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Sample {
    value: (f64, String),
}

/// Reads an answer of the query API.
fn parse(status: u16, body: &str) -> Result<Option<f64>, QueryError> {
    let answer: Answer = serde_json::from_str(body).map_err(|_| {
        if (200..300).contains(&status) {
            QueryError::Unexpected(truncate(body))
        } else {
            QueryError::Refused {
                status,
                message: truncate(body),
            }
        }
    })?;
    if answer.status != "success" {
        let message = answer.error.unwrap_or_else(|| truncate(body));
        // Prometheus' own verdict on the query: `bad_data` (400, it does
        // not parse) and `execution` (422, it cannot be evaluated, as with
        // many-to-many matching). `timeout`, `canceled`, `unavailable` and
        // `internal` are Prometheus' trouble, not the query's.
        return Err(match answer.error_type.as_deref() {
            Some(kind @ ("bad_data" | "execution")) if matches!(status, 400 | 422) => {
                QueryError::Invalid {
                    kind: kind.to_owned(),
                    message,
                }
            }
            _ => QueryError::Refused { status, message },
        });
    }
    let value = match answer.data {
        Some(Data::Scalar((_, value))) => value,
        Some(Data::Vector(samples)) => match samples.as_slice() {
            [] => return Ok(None),
            [sample] => sample.value.1.clone(),
            several => return Err(QueryError::SeveralSeries(several.len())),
        },
        Some(Data::Matrix(_)) => return Err(QueryError::Range),
        Some(Data::String(_)) | None => return Err(QueryError::Unexpected(truncate(body))),
    };
    // Prometheus writes numbers as strings: "0.5", "NaN", "+Inf".
    let number: f64 = value
        .parse()
        .map_err(|_| QueryError::Unexpected(format!("value {value:?} is not a number")))?;
    Ok((!number.is_nan()).then_some(number))
}

fn truncate(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        text.to_owned()
    } else {
        format!("{}…", &text[..text.floor_char_boundary(MAX)])
    }
}

/// Fills a query template: `${name}` and the other variables are replaced
/// by their values, escaped for the inside of a `PromQL` string, so a value
/// can neither end the string it stands in nor add a matcher.
pub fn fill(template: &str, variables: &BTreeMap<&str, String>) -> String {
    let mut out = template.to_owned();
    for (name, value) in variables {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        out = out.replace(&format!("${{{name}}}"), &escaped);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query API on loopback that answers 0.5 and keeps the
    /// `Authorization` header of every request.
    async fn recording_api() -> (
        String,
        std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
    ) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&seen);
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let sink = std::sync::Arc::clone(&sink);
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    sink.lock().unwrap().push(auth);
                    r#"{"status":"success","data":{"resultType":"scalar","result":[1,"0.5"]}}"#
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    /// The token goes to the operator's own Prometheus, whether a
    /// `GoServer` names it or not, and never to a URL a `GoServer` wrote.
    #[tokio::test]
    async fn the_token_goes_only_to_the_operators_prometheus() {
        let (own, own_seen) = recording_api().await;
        let (other, other_seen) = recording_api().await;
        let token = tempfile_with("s3cret-token\n");
        let prometheus = Prometheus::new(Some(format!("{own}/")), Some(token.clone()));
        let timeout = Duration::from_secs(5);
        assert_eq!(
            prometheus.query(None, "up", timeout).await.unwrap(),
            Some(0.5)
        );
        assert_eq!(
            prometheus.query(Some(&own), "up", timeout).await.unwrap(),
            Some(0.5)
        );
        assert_eq!(
            prometheus.query(Some(&other), "up", timeout).await.unwrap(),
            Some(0.5)
        );
        let bearer = Some("Bearer s3cret-token".to_owned());
        assert_eq!(*own_seen.lock().unwrap(), vec![bearer.clone(), bearer]);
        assert_eq!(*other_seen.lock().unwrap(), vec![None]);
        std::fs::remove_file(token).unwrap();
    }

    fn tempfile_with(content: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "gantry-token-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn answers_become_values() {
        let vector = |result: &str| {
            format!(r#"{{"status":"success","data":{{"resultType":"vector","result":{result}}}}}"#)
        };
        assert_eq!(
            parse(200, &vector(r#"[{"metric":{},"value":[1.5,"0.25"]}]"#)).unwrap(),
            Some(0.25)
        );
        assert_eq!(parse(200, &vector("[]")).unwrap(), None);
        assert_eq!(
            parse(200, &vector(r#"[{"metric":{},"value":[1.5,"NaN"]}]"#)).unwrap(),
            None
        );
        assert_eq!(
            parse(200, &vector(r#"[{"metric":{},"value":[1.5,"+Inf"]}]"#)).unwrap(),
            Some(f64::INFINITY)
        );
        assert!(matches!(
            parse(
                200,
                &vector(
                    r#"[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]"#
                )
            ),
            Err(QueryError::SeveralSeries(2))
        ));
        assert_eq!(
            parse(
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#
            )
            .unwrap(),
            Some(3.0)
        );
    }

    /// A typo in a query is not a Prometheus outage: it was read as one,
    /// and a revision then held forever as `PrometheusUnavailable`.
    #[test]
    fn a_query_prometheus_refuses_is_invalid_not_unavailable() {
        let bad_query =
            r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        let err = parse(400, bad_query).unwrap_err();
        assert!(err.is_invalid(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "Prometheus refused the query (bad_data): parse error at char 5"
        );
        let many_to_many = r#"{"status":"error","errorType":"execution","error":"found duplicate series for the match group"}"#;
        assert!(parse(422, many_to_many).unwrap_err().is_invalid());
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse(200, matrix).unwrap_err().is_invalid());
        let several = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#;
        assert!(parse(200, several).unwrap_err().is_invalid());

        // Prometheus' own trouble, and a proxy's, is not the query's.
        let timeout = r#"{"status":"error","errorType":"timeout","error":"query timed out"}"#;
        assert!(!parse(503, timeout).unwrap_err().is_invalid());
        let internal = r#"{"status":"error","errorType":"internal","error":"oops"}"#;
        assert!(!parse(500, internal).unwrap_err().is_invalid());
        let proxied = parse(400, "<html>bad request</html>").unwrap_err();
        assert!(!proxied.is_invalid(), "{proxied:?}");
        assert!(matches!(
            parse(502, "<html>bad gateway</html>"),
            Err(QueryError::Refused { status: 502, .. })
        ));
        assert!(matches!(parse(200, "{}"), Err(QueryError::Unexpected(_))));
        assert!(!QueryError::NoUrl.is_invalid());
    }

    #[test]
    fn templates_escape_values() {
        let vars = BTreeMap::from([
            ("namespace", "web".to_owned()),
            ("revision", "hello-0123456789".to_owned()),
            ("name", r#"x"} or vector(1) or {a="\"#.to_owned()),
            ("interval", "30s".to_owned()),
        ]);
        assert_eq!(
            fill(
                r#"sum(rate(http_requests_total{namespace="${namespace}",revision="${revision}"}[${interval}]))"#,
                &vars
            ),
            r#"sum(rate(http_requests_total{namespace="web",revision="hello-0123456789"}[30s]))"#
        );
        assert_eq!(
            fill(r#"up{job="${name}"}"#, &vars),
            r#"up{job="x\"} or vector(1) or {a=\"\\"}"#
        );
        // Unknown variables are left as written.
        assert_eq!(fill("${other}", &vars), "${other}");
    }
}
