//! Durations in Go's notation (`30s`, `5m`, `1h30m`, `250ms`, `1.5h`), the
//! form Kubernetes users write everywhere. The CRD's pattern
//! ([`crate::crd::DURATION_PATTERN`]) admits exactly what [`parse`] reads.

use std::time::Duration;

/// Parses a duration such as `1h30m`; the error says what is wrong.
pub fn parse(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?}: a number needs a unit (ms, s, m, h)"))?;
        let (number, after) = rest.split_at(number_len);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?}: {number:?} is not a number"))?;
        let (unit, seconds) = if after.starts_with("ms") {
            ("ms", 0.001)
        } else if after.starts_with('s') {
            ("s", 1.0)
        } else if after.starts_with('m') {
            ("m", 60.0)
        } else if after.starts_with('h') {
            ("h", 3600.0)
        } else {
            return Err(format!("{text:?}: unknown unit (use ms, s, m or h)"));
        };
        total += value * seconds;
        rest = &after[unit.len()..];
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("{text:?}: {e}"))
}

/// `parse`, or `fallback` when the text cannot be read (the schema has
/// already refused such text, so this only guards against old objects).
pub fn or(text: &str, fallback: Duration) -> Duration {
    parse(text).unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let cases = [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("250ms", 250),
            ("1.5h", 5_400_000),
            ("0s", 0),
            ("1m30s500ms", 90_500),
        ];
        for (text, ms) in cases {
            assert_eq!(parse(text), Ok(Duration::from_millis(ms)), "{text}");
        }
        for bad in ["", "30", "5d", "m", "1..5s", "-5s"] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
    }
}
