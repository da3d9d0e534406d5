//! Durations in Go's notation (`30s`, `5m`, `1h30m`, `250ms`, `1.5h`), the
//! form Kubernetes users write everywhere, read by kube's own
//! [`kube::core::Duration`] (Go's `time.ParseDuration` grammar). The CRD's
//! pattern ([`crate::crd::DURATION_PATTERN`]) admits a part of that grammar:
//! unsigned, units `ms`, `s`, `m` and `h`; a sign is refused here too.

use std::time::Duration;

/// Parses a duration such as `1h30m`; the error says what is wrong.
pub fn parse(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    if text.starts_with(['-', '+']) {
        return Err(format!("{text:?}: a duration here has no sign"));
    }
    text.parse::<kube::core::Duration>()
        .map(Duration::from)
        .map_err(|e| format!("{text:?}: {e}"))
}

/// `parse`, or `fallback` when the text cannot be read (the schema has
/// already refused such text, so this only guards against old objects).
pub fn or(text: &str, fallback: Duration) -> Duration {
    parse(text).unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parser this module had before it used kube's: kept as the
    /// reference that kube's reads every duration the schema admits alike.
    fn own_parser(text: &str) -> Result<Duration, String> {
        if text.is_empty() {
            return Err("empty duration".to_owned());
        }
        let mut total = 0.0_f64;
        let mut rest = text;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| format!("{text:?}: a number needs a unit"))?;
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
                return Err(format!("{text:?}: unknown unit"));
            };
            total += value * seconds;
            rest = &after[unit.len()..];
        }
        Duration::try_from_secs_f64(total).map_err(|e| format!("{text:?}: {e}"))
    }

    /// Every duration of one to three parts the CRD's pattern
    /// (`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`) admits, over numbers with and
    /// without fractions and every unit: both parsers agree to the
    /// millisecond (the old one summed seconds in floating point).
    #[test]
    fn kube_reads_every_duration_the_schema_admits_as_the_old_parser_did() {
        let numbers = [
            "0", "1", "5", "30", "90", "250", "1.5", "0.25", "2.75", "10.125",
        ];
        let units = ["ms", "s", "m", "h"];
        let parts: Vec<String> = numbers
            .iter()
            .flat_map(|n| units.iter().map(move |u| format!("{n}{u}")))
            .collect();
        let mut samples: Vec<String> = parts.clone();
        for a in &parts {
            for b in parts.iter().step_by(3) {
                samples.push(format!("{a}{b}"));
            }
        }
        samples.extend(
            ["1h30m", "1m30s500ms", "2h45m10s", "1.5h0.5m", "0h0m0s0ms"].map(str::to_owned),
        );
        for text in &samples {
            let ours = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let reference = own_parser(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(ours.as_millis(), reference.as_millis(), "{text}");
        }
        assert!(samples.len() > 500, "{}", samples.len());
    }

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
        for bad in ["", "30", "5d", "m", "1..5s", "-5s", "+5s"] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
    }
}
