//! Numbers and times as a dashboard shows them: values in the panel's
//! Grafana unit (`percentunit`, `reqps`, `s`, ...) with as many digits as
//! they need, and UTC clock times for the time axis and the header.

/// `value` in Grafana's `unit`, with about three significant digits.
pub fn value(unit: &str, value: f64) -> String {
    if !value.is_finite() {
        return if value.is_nan() {
            "NaN".to_owned()
        } else if value > 0.0 {
            "+Inf".to_owned()
        } else {
            "-Inf".to_owned()
        };
    }
    match unit {
        "percentunit" => format!("{}%", number(value * 100.0)),
        "percent" => format!("{}%", number(value)),
        "reqps" => format!("{} req/s", short(value)),
        "ops" => format!("{} ops/s", short(value)),
        "s" => seconds(value),
        _ => short(value),
    }
}

/// Seconds in the largest unit that keeps the number at 1 or above.
fn seconds(value: f64) -> String {
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude == 0.0 {
        (value, "s")
    } else if magnitude < 1e-3 {
        (value * 1e6, "µs")
    } else if magnitude < 1.0 {
        (value * 1e3, "ms")
    } else if magnitude < 60.0 {
        (value, "s")
    } else if magnitude < 3600.0 {
        (value / 60.0, "min")
    } else {
        (value / 3600.0, "hour")
    };
    format!("{} {suffix}", number(scaled))
}

/// Grafana's `short`: thousands as K, millions as Mil, billions as Bil.
fn short(value: f64) -> String {
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude >= 1e9 {
        (value / 1e9, " Bil")
    } else if magnitude >= 1e6 {
        (value / 1e6, " Mil")
    } else if magnitude >= 1e3 {
        (value / 1e3, " K")
    } else {
        (value, "")
    };
    format!("{}{suffix}", number(scaled))
}

/// A number with three significant digits (none after the point from 100
/// up, at most six), trailing zeros dropped.
pub fn number(value: f64) -> String {
    let mut decimals = 0;
    let mut bound = 100.0;
    while value.abs() < bound && decimals < 6 {
        bound /= 10.0;
        decimals += 1;
    }
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    if text == "-0" { "0".to_owned() } else { text }
}

/// `HH:MM:SS` (UTC) of a Unix time in seconds.
pub fn clock(unix: f64) -> String {
    let (_, seconds) = split_days(unix);
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix time in seconds.
pub fn date_time(unix: f64) -> String {
    let (days, _) = split_days(unix);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {}", clock(unix))
}

/// Whole days since the epoch, and seconds into that day.
fn split_days(unix: f64) -> (i64, i64) {
    // A dashboard's times are whole seconds; the fraction is dropped.
    #[allow(clippy::cast_possible_truncation)]
    let seconds = unix.floor() as i64;
    (seconds.div_euclid(86_400), seconds.rem_euclid(86_400))
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Text for HTML and SVG.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_their_units() {
        assert_eq!(value("percentunit", 0.333_333), "33.3%");
        assert_eq!(value("percentunit", 0.0), "0%");
        assert_eq!(value("percentunit", 0.005), "0.5%");
        assert_eq!(value("reqps", 6.666_666), "6.67 req/s");
        assert_eq!(value("ops", 0.05), "0.05 ops/s");
        assert_eq!(value("s", 0.0042), "4.2 ms");
        assert_eq!(value("s", 0.000_25), "250 µs");
        assert_eq!(value("s", 2.5), "2.5 s");
        assert_eq!(value("short", 1.0), "1");
        assert_eq!(value("short", 12_345.0), "12.3 K");
        assert_eq!(value("", 2_500_000.0), "2.5 Mil");
        assert_eq!(value("", f64::NAN), "NaN");
        assert_eq!(value("", f64::INFINITY), "+Inf");
        assert_eq!(number(-0.000_1), "-0.0001");
        assert_eq!(number(0.000_000_01), "0");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(150.4), "150");
    }

    #[test]
    fn utc_times() {
        assert_eq!(date_time(0.0), "1970-01-01 00:00:00");
        assert_eq!(date_time(951_782_400.0), "2000-02-29 00:00:00");
        assert_eq!(date_time(1_767_225_599.9), "2025-12-31 23:59:59");
        assert_eq!(clock(3_723.0), "01:02:03");
    }
}
