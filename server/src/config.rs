//! Server configuration, read once at start from the environment.
//!
//! Every setting is an environment variable; every secret may instead be read
//! from the file named by `<NAME>_FILE` (a mounted Kubernetes secret). Parsing
//! collects *every* problem before failing, so an operator fixing a broken
//! deployment sees the whole list at once rather than one error per restart.
//! Secret values are [`SecretString`]s: `Debug` shows `[REDACTED]`, there is
//! no `Display`, the memory is zeroed on drop, and every read is an
//! `expose_secret()` call that a search finds.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// The log verbosity, one of the four levels the project documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }
}

/// How log lines are written: JSON for collectors, text for a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// The validated configuration. Built by [`Config::from_env`].
#[derive(Clone, Debug)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    /// May carry a password, hence a secret; log it with [`Config::database_kind`].
    pub database_url: SecretString,
    pub static_dir: PathBuf,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    /// Bearer tokens accepted on `/api`. Empty means the API refuses everyone:
    /// an unconfigured server must not be an open one.
    pub api_tokens: Vec<SecretString>,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub request_timeout: Duration,
    /// How long a client may take to send a request's headers, from its
    /// first byte (or, on a kept-alive connection, from the previous
    /// response). Without it a client that sends half a request and stops
    /// holds a connection, and a file descriptor, for as long as it likes.
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog. Keeps the
    /// server below its file-descriptor limit, so a flood of connections
    /// delays new ones instead of failing every `accept` and starving probes.
    pub max_connections: usize,
    pub body_limit: usize,
    /// Retries after the first failed connection attempt (backoff 1, 2, 4, 8, 16 s, ...).
    pub db_connect_retries: u32,
    /// Time between readiness turning off and the listener closing, so load
    /// balancers stop sending new requests before the server stops taking them.
    pub shutdown_delay: Duration,
    /// How long in-flight requests get to finish once the listener is closed.
    pub shutdown_grace: Duration,
    pub otlp_endpoint: Option<String>,
    /// Test-only routes under `/debug` (a panicking and a slow handler) used by
    /// the black-box tests; never enable them in production.
    pub debug_routes: bool,
}

/// Every problem found in the environment, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Reads variables, and the files `*_FILE` variables point to, collecting problems.
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
}

impl Reader<'_> {
    fn plain(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.is_empty())
    }

    /// A secret from `NAME` or from the file named by `NAME_FILE`, never both.
    fn secret(&mut self, name: &str) -> Option<SecretString> {
        let file_var = format!("{name}_FILE");
        match (self.plain(name), self.plain(&file_var)) {
            (Some(_), Some(_)) => {
                self.problems
                    .push(format!("{name} and {file_var} are both set; use one"));
                None
            }
            (Some(v), None) => Some(SecretString::from(v)),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                // Secret files usually end in a newline that is no part of the value.
                Ok(content) => Some(SecretString::from(content.trim_end_matches(['\n', '\r']))),
                Err(err) => {
                    self.problems
                        .push(format!("{file_var}: cannot read {path}: {err}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// A plain setting parsed by `parse`, or `default` when unset.
    fn parsed<T>(
        &mut self,
        name: &str,
        default: T,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> T {
        let Some(raw) = self.plain(name) else {
            return default;
        };
        if let Some(v) = parse(raw.trim()) {
            v
        } else {
            self.problems
                .push(format!("{name}={raw:?} is not {expected}"));
            default
        }
    }
}

/// Whether a duration setting may be zero.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Positive {
    Yes,
    No,
}

impl Reader<'_> {
    /// A duration setting, `default_s` seconds when unset.
    fn duration(&mut self, name: &str, default_s: u64, positive: Positive) -> Duration {
        let expected = if positive == Positive::Yes {
            "a positive duration such as 10s or 500ms"
        } else {
            "a duration such as 5s or 500ms"
        };
        self.parsed(name, Duration::from_secs(default_s), expected, |s| {
            parse_duration(s).filter(|d| positive == Positive::No || !d.is_zero())
        })
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process
    /// environment.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = Reader {
            lookup,
            problems: Vec::new(),
        };
        let host = r.parsed("HOST", IpAddr::from([0, 0, 0, 0]), "an IP address", |s| {
            s.parse().ok()
        });
        let port = r.parsed("PORT", 8080, "a port number (0..65535)", |s| s.parse().ok());
        let database_url = r
            .secret("DATABASE_URL")
            .unwrap_or_else(|| SecretString::from("sqlite://data/gantry.db"));
        if !is_supported_database(database_url.expose_secret()) {
            r.problems.push(
                "DATABASE_URL must start with sqlite: or postgres:// (or postgresql://)".to_owned(),
            );
        }
        let static_dir =
            PathBuf::from(r.plain("STATIC_DIR").unwrap_or_else(|| "public".to_owned()));
        let log_level = r.parsed(
            "LOG_LEVEL",
            LogLevel::Info,
            "one of error, warn, info, debug",
            parse_log_level,
        );
        let log_format = r.parsed(
            "LOG_FORMAT",
            LogFormat::Json,
            "json or text",
            parse_log_format,
        );
        let api_tokens = read_tokens(&mut r);
        let positive = |s: &str| s.parse::<u32>().ok().filter(|n| *n > 0);
        let rate_limit_per_second =
            r.parsed("RATE_LIMIT_PER_SECOND", 50, "a positive integer", positive);
        let rate_limit_burst = r.parsed("RATE_LIMIT_BURST", 100, "a positive integer", positive);
        let request_timeout = r.duration("REQUEST_TIMEOUT", 10, Positive::Yes);
        let header_read_timeout = r.duration("HEADER_READ_TIMEOUT", 10, Positive::Yes);
        let max_connections = r.parsed(
            "MAX_CONNECTIONS",
            512,
            "an integer from 1 to 1000000",
            |s| s.parse().ok().filter(|n| (1..=1_000_000).contains(n)),
        );
        let body_limit = r.parsed(
            "BODY_LIMIT",
            1024 * 1024,
            "a positive size such as 1MiB, 512KiB or 65536",
            |s| parse_size(s).filter(|n| *n > 0),
        );
        let db_connect_retries =
            r.parsed("DB_CONNECT_RETRIES", 5, "an integer from 0 to 20", |s| {
                s.parse().ok().filter(|n| *n <= 20)
            });
        let shutdown_delay = r.duration("SHUTDOWN_DELAY", 5, Positive::No);
        let shutdown_grace = r.duration("SHUTDOWN_GRACE", 25, Positive::No);
        let otlp_endpoint = r.plain("OTEL_EXPORTER_OTLP_ENDPOINT");
        if let Some(endpoint) = &otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            r.problems.push(format!(
                "OTEL_EXPORTER_OTLP_ENDPOINT={endpoint:?} is not an http:// or https:// URL"
            ));
        }
        let debug_routes = r.parsed("DEBUG_ROUTES", false, "true or false", parse_bool);

        if !r.problems.is_empty() {
            return Err(ConfigError {
                problems: r.problems,
            });
        }
        Ok(Self {
            host,
            port,
            database_url,
            static_dir,
            log_level,
            log_format,
            api_tokens,
            rate_limit_per_second,
            rate_limit_burst,
            request_timeout,
            header_read_timeout,
            max_connections,
            body_limit,
            db_connect_retries,
            shutdown_delay,
            shutdown_grace,
            otlp_endpoint,
            debug_routes,
        })
    }

    /// The database kind for log lines, which must not show credentials.
    pub fn database_kind(&self) -> &'static str {
        if self.database_url.expose_secret().starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgres"
        }
    }
}

/// `API_TOKENS`: comma-separated, blanks ignored, printable ASCII only.
fn read_tokens(r: &mut Reader<'_>) -> Vec<SecretString> {
    let tokens: Vec<SecretString> = r
        .secret("API_TOKENS")
        .map(|all| {
            all.expose_secret()
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(SecretString::from)
                .collect()
        })
        .unwrap_or_default();
    if tokens
        .iter()
        .any(|t| !t.expose_secret().bytes().all(|b| b.is_ascii_graphic()))
    {
        r.problems
            .push("API_TOKENS: a token contains spaces or non-ASCII characters".to_owned());
    }
    tokens
}

fn parse_log_level(s: &str) -> Option<LogLevel> {
    match s.to_ascii_lowercase().as_str() {
        "error" => Some(LogLevel::Error),
        "warn" | "warning" => Some(LogLevel::Warn),
        "info" => Some(LogLevel::Info),
        "debug" => Some(LogLevel::Debug),
        _ => None,
    }
}

fn parse_log_format(s: &str) -> Option<LogFormat> {
    match s.to_ascii_lowercase().as_str() {
        "json" => Some(LogFormat::Json),
        "text" => Some(LogFormat::Text),
        _ => None,
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn is_supported_database(url: &str) -> bool {
    url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A duration in humantime's notation (`500ms`, `10s`, `2m`, `1h30m`,
/// `1min 30s`); a bare number is seconds, as it was before humantime parsed
/// the rest, so existing deployments keep their meaning.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().map(Duration::from_secs);
    }
    humantime::parse_duration(s).ok()
}

/// `65536`, `64KiB`, `1MiB`, `1GiB`, or the decimal `KB`, `MB`, `GB`.
pub fn parse_size(s: &str) -> Option<usize> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: usize = number.parse().ok()?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(&move |name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_documented_table() {
        let c = config(&[]).unwrap();
        assert_eq!(c.host.to_string(), "0.0.0.0");
        assert_eq!(c.port, 8080);
        assert_eq!(c.database_url.expose_secret(), "sqlite://data/gantry.db");
        assert_eq!(c.static_dir, PathBuf::from("public"));
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.api_tokens.is_empty());
        assert_eq!((c.rate_limit_per_second, c.rate_limit_burst), (50, 100));
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.max_connections, 512);
        assert_eq!(c.body_limit, 1 << 20);
        assert_eq!(c.db_connect_retries, 5);
        assert_eq!(c.shutdown_delay, Duration::from_secs(5));
        assert_eq!(c.shutdown_grace, Duration::from_secs(25));
        assert_eq!(c.otlp_endpoint, None);
        assert!(!c.debug_routes);
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let err = config(&[
            ("PORT", "eighty"),
            ("LOG_LEVEL", "loud"),
            ("BODY_LIMIT", "1 lot"),
            ("REQUEST_TIMEOUT", "0s"),
            ("DATABASE_URL", "mysql://x"),
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 5, "{err}");
        let text = err.to_string();
        for name in [
            "PORT",
            "LOG_LEVEL",
            "BODY_LIMIT",
            "REQUEST_TIMEOUT",
            "DATABASE_URL",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }

    #[test]
    fn secrets_come_from_files_and_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "alpha, beta\n").unwrap();
        let c = config(&[("API_TOKENS_FILE", path.to_str().unwrap())]).unwrap();
        let tokens: Vec<&str> = c
            .api_tokens
            .iter()
            .map(ExposeSecret::expose_secret)
            .collect();
        assert_eq!(tokens, ["alpha", "beta"]);
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("alpha") && !debug.contains("beta"),
            "{debug}"
        );
    }

    #[test]
    fn a_secret_set_twice_or_unreadable_is_a_problem() {
        let err = config(&[("API_TOKENS", "a"), ("API_TOKENS_FILE", "/nonexistent")]).unwrap_err();
        assert!(err.problems[0].contains("both set"));
        let err = config(&[("DATABASE_URL_FILE", "/nonexistent/db-url")]).unwrap_err();
        assert!(err.problems[0].contains("cannot read"));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_mins(2)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1min 30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("10 s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("ten"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("5 fortnights"), None);
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("64KiB"), Some(64 << 10));
        assert_eq!(parse_size("2MB"), Some(2_000_000));
        assert_eq!(parse_size("-1"), None);
    }
}
