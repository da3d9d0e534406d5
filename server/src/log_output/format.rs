//! Log lines as JSON: the event format and the span fields; see the
//! [parent module](super).

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::io;
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::access_log::{self, RequestFields};

/// The JSON event format; see the module documentation.
#[derive(Debug, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The line is made in a `String` of this thread's, not through
        // `writer` (a `dyn fmt::Write`): each of the line's few dozen small
        // writes is then a plain append, and the line goes to `writer` in
        // one. Taken out rather than borrowed, so that a field's `Debug`
        // that logs (formatting a line inside this one) gets a fresh one.
        thread_local! {
            static LINE: Cell<String> = const { Cell::new(String::new()) };
        }
        let mut line = LINE.take();
        line.clear();
        let result = format_line(ctx, &mut line, event).and_then(|()| writer.write_str(&line));
        LINE.set(line);
        result
    }
}

/// The JSON line for `event`, written to `writer`.
fn format_line<S, N>(
    ctx: &FmtContext<'_, S, N>,
    writer: &mut String,
    event: &Event<'_>,
) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let normalized = event.normalized_metadata();
    let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
    writer.write_str("{\"timestamp\":\"")?;
    write_timestamp(writer, unix_now())?;
    writer.write_str("\",\"level\":\"")?;
    writer.write_str(meta.level().as_str())?;
    writer.write_char('"')?;
    let mut fields = Fields {
        out: writer,
        result: Ok(()),
        comma: true,
    };
    event.record(&mut fields);
    fields.result?;
    writer.write_str(",\"target\":")?;
    json_str(writer, meta.target())?;
    // The request's fields come first, as the outermost span would.
    let mut spans = access_log::with_current(|request| {
        writer.write_str(",\"spans\":[")?;
        request_object(writer, request)
    })
    .transpose()?
    .is_some();
    let current = event
        .parent()
        .and_then(|id| ctx.span(id))
        .or_else(|| ctx.lookup_current());
    if current.is_some() {
        if !spans {
            writer.write_str(",\"spans\":[")?;
        }
        if let Some(leaf) = ctx.lookup_current() {
            for span in leaf.scope().from_root() {
                if spans {
                    writer.write_char(',')?;
                }
                spans = true;
                let extensions = span.extensions();
                let rendered = extensions
                    .get::<FormattedFields<N>>()
                    .map_or("", |f| f.fields.as_str());
                // `{"a":1}` becomes `{"a":1,"name":"request"}`.
                match rendered.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                    Some(inner) if !inner.trim().is_empty() => {
                        write!(writer, "{{{inner},\"name\":")?;
                    }
                    _ => writer.write_str("{\"name\":")?,
                }
                json_str(writer, span.name())?;
                writer.write_char('}')?;
            }
        }
    }
    if spans {
        writer.write_char(']')?;
    }
    writer.write_str("}\n")
}

/// A request's fields as the object a span named `request` with them would
/// be.
fn request_object(out: &mut impl fmt::Write, request: &RequestFields) -> fmt::Result {
    out.write_str("{\"method\":")?;
    json_str(out, request.method.as_str())?;
    out.write_str(",\"route\":")?;
    json_str(out, request.route)?;
    out.write_str(",\"trace_id\":")?;
    json_str(out, request.trace_id())?;
    out.write_str(",\"request_id\":")?;
    json_str(out, request.request_id())?;
    out.write_str(",\"name\":\"request\"}")
}

/// The time since the Unix epoch.
fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Writes `since_epoch` as RFC 3339 in UTC with microseconds
/// (`2026-12-03T13:16:05.468892Z`), the text tracing-subscriber's
/// `SystemTime` writes. The date and time of day change once a second, so
/// each thread formats them once a second and then only the microseconds.
fn write_timestamp(out: &mut impl fmt::Write, since_epoch: Duration) -> fmt::Result {
    thread_local! {
        static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
    }
    let secs = since_epoch.as_secs();
    let prefix = SECOND.with(|cached| {
        let (at, text) = cached.get();
        if at == secs {
            return Ok(text);
        }
        let time = i64::try_from(secs)
            .ok()
            .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
            .ok_or(fmt::Error)?;
        let mut text = [0; 20];
        io::Write::write_fmt(
            &mut &mut text[..],
            format_args!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                time.year(),
                u8::from(time.month()),
                time.day(),
                time.hour(),
                time.minute(),
                time.second()
            ),
        )
        .map_err(|_| fmt::Error)?;
        cached.set((secs, text));
        Ok(text)
    })?;
    // Only ASCII was written.
    out.write_str(std::str::from_utf8(&prefix).map_err(|_| fmt::Error)?)?;
    write_decimal(out, u64::from(since_epoch.subsec_micros()), 6, false)?;
    out.write_char('Z')
}

/// `value` in decimal, with leading zeros to at least `width` digits and a
/// `-` first when `negative`, without the formatting machinery's padding
/// and width handling.
fn write_decimal(
    out: &mut impl fmt::Write,
    value: u64,
    width: usize,
    negative: bool,
) -> fmt::Result {
    let mut digits = [b'0'; 21];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    // u64 has at most 20 digits; the `-` needs one place more.
    at = at.min(digits.len() - width.min(20));
    if negative {
        at -= 1;
        digits[at] = b'-';
    }
    // Only ASCII digits and a sign were written.
    out.write_str(std::str::from_utf8(&digits[at..]).map_err(|_| fmt::Error)?)
}

/// A span's fields as a JSON object, the text tracing-subscriber's
/// `JsonFields` makes, written directly: `JsonFields` builds a
/// `serde_json` map of the fields, each value its own allocation, and then
/// serializes it, for every request's span (about 5 % of the CPU a request
/// to `/` cost). Fields recorded after the span opened, which is rare, are
/// merged into the object as `JsonFields` merges them.
#[derive(Debug, Default)]
pub struct JsonSpanFields;

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        writer.write_char('{')?;
        let mut visitor = Fields {
            out: &mut writer,
            result: Ok(()),
            comma: false,
        };
        fields.record(&mut visitor);
        visitor.result?;
        writer.write_char('}')
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let mut added = String::new();
        self.format_fields(Writer::new(&mut added), fields)?;
        let parse = |text: &str| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
                .map_err(|_| fmt::Error)
        };
        let mut merged = if current.fields.is_empty() {
            serde_json::Map::new()
        } else {
            parse(&current.fields)?
        };
        merged.extend(parse(&added)?);
        current.fields = serde_json::to_string(&merged).map_err(|_| fmt::Error)?;
        Ok(())
    }
}

/// Writes fields as `"name":value` pairs, each after a comma unless it is
/// the first of an object, values as tracing-serde writes them (numbers,
/// booleans, strings; anything else by its `Debug` text).
struct Fields<'a, W: fmt::Write> {
    out: &'a mut W,
    result: fmt::Result,
    /// Whether a comma goes before the next pair.
    comma: bool,
}

impl<W: fmt::Write> Fields<'_, W> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            let comma = std::mem::replace(&mut self.comma, true);
            self.result = (|| {
                if comma {
                    self.out.write_char(',')?;
                }
                json_str(self.out, field.name())?;
                self.out.write_char(':')?;
                value(self.out)
            })();
        }
    }
}

impl<W: fmt::Write> Visit for Fields<'_, W> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |out| match serde_json::Number::from_f64(value) {
            Some(n) => write!(out, "{n}"),
            None => out.write_str("null"),
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| {
            write_decimal(out, value.unsigned_abs(), 1, value < 0)
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write_decimal(out, value, 1, false));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| json_str(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `s` as a JSON string.
fn json_str(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(s)?;
    out.write_char('"')
}

/// Whether any byte of `s` must be escaped in a JSON string. Most text
/// needs none; checking every byte without stopping at the first that
/// does, and without a branch per byte, lets the compiler check many at
/// once.
#[allow(
    clippy::needless_bitwise_bool,
    reason = "no branch per byte, so that the loop is vectorized"
)]
fn needs_escape(s: &str) -> bool {
    s.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// Escapes what it is given for the inside of a JSON string.
struct Escaped<'a, W: fmt::Write + ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !needs_escape(s) {
            return self.0.write_str(s);
        }
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[test]
    fn strings_are_escaped_as_json() {
        let mut out = String::new();
        json_str(&mut out, "a\"b\\c\nd\u{1}é").unwrap();
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn integers_are_written_as_display_writes_them() {
        for value in [0, 1, 9, 10, 200, 4_294_967_296, i64::MAX, -1, -10, i64::MIN] {
            let mut out = String::new();
            write_decimal(&mut out, value.unsigned_abs(), 1, value < 0).unwrap();
            assert_eq!(out, value.to_string());
        }
        let mut out = String::new();
        write_decimal(&mut out, u64::MAX, 1, false).unwrap();
        assert_eq!(out, u64::MAX.to_string());
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let format = |since_epoch: Duration| {
            let mut out = String::new();
            write_timestamp(&mut out, since_epoch).unwrap();
            out
        };
        let t = Duration::new(1_764_768_965, 468_892_999);
        assert_eq!(format(t), "2025-12-03T13:36:05.468892Z");
        // The second's text is cached: the next second, and a time before
        // it, are formatted again.
        assert_eq!(
            format(t + Duration::from_secs(1)),
            "2025-12-03T13:36:06.468892Z"
        );
        assert_eq!(
            format(Duration::new(951_782_400, 7_000)),
            "2000-02-29T00:00:00.000007Z"
        );
        assert_eq!(format(Duration::ZERO), "1970-01-01T00:00:00.000000Z");
        // The shape of tracing-subscriber's clock, which cannot be given a
        // time to compare with.
        let mut theirs = String::new();
        tracing_subscriber::fmt::time::FormatTime::format_time(
            &tracing_subscriber::fmt::time::SystemTime,
            &mut Writer::new(&mut theirs),
        )
        .unwrap();
        let ours = format(unix_now());
        assert_eq!(ours.len(), theirs.len(), "{ours} {theirs}");
        for text in [&ours, &theirs] {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .unwrap();
        }
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// The lines tracing-subscriber's JSON format writes with this
    /// server's settings, or [`JsonLines`]'s, parsed, without timestamps.
    fn lines(ours: bool) -> Vec<serde_json::Value> {
        capture(ours, || {
            tracing::info!(version = "0.1.0", otlp = false, "starting");
            let span = tracing::error_span!(
                "request",
                method = "GET",
                route = "/api/v1/users/{id}",
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                request_id = "a \"quoted\" id",
                user = tracing::field::Empty,
                latency_ms = 0.5,
                ok = true,
                attempt = -2_i64,
                list = ?vec!["a"],
            );
            let _entered = span.enter();
            let inner = tracing::info_span!("inner");
            let _inner = inner.enter();
            tracing::info!(status = 200_u16, latency_ms = 0.41, "request finished");
            // Recorded after the span opened: merged into its object.
            span.record("user", "u\n1");
            span.record("ok", false);
            tracing::info!("recorded");
            tracing::error!(
                status = 500_u16,
                latency_ms = 1.0,
                error = "database error: disk I/O error\n(line 2)",
                attempt = -1_i64,
                list = ?vec![1, 2],
                "request failed"
            );
        })
    }

    /// The lines `log` logs, through [`JsonLines`] or tracing-subscriber's
    /// JSON format, parsed, without timestamps.
    fn capture(ours: bool, log: impl FnOnce()) -> Vec<serde_json::Value> {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::{Layer, Registry};

        let buffer = Buffer::default();
        let layer = if ours {
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonSpanFields)
                .event_format(JsonLines)
                .with_writer(buffer.clone())
                .boxed()
        } else {
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .with_writer(buffer.clone())
                .boxed()
        };
        tracing::subscriber::with_default(Registry::default().with(layer), log);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
                let timestamp = value["timestamp"].as_str().unwrap();
                assert!(
                    time::OffsetDateTime::parse(
                        timestamp,
                        &time::format_description::well_known::Rfc3339
                    )
                    .is_ok()
                );
                value.as_object_mut().unwrap().remove("timestamp");
                value
            })
            .collect()
    }

    #[test]
    fn lines_have_the_fields_tracing_subscribers_json_gives() {
        let ours = lines(true);
        assert_eq!(ours.len(), 4);
        assert_eq!(ours, lines(false));
        assert!(ours[0].get("spans").is_none());
        assert_eq!(ours[1]["spans"][1], serde_json::json!({"name": "inner"}));
        assert_eq!(ours[3]["spans"][0]["user"], "u\n1");
        assert_eq!(ours[3]["spans"][0]["ok"], false);
    }

    /// A request's fields from the access log are the span named `request`
    /// that tracing-subscriber would show, outermost, before the spans
    /// opened inside the request.
    #[test]
    fn request_fields_are_the_outermost_span() {
        let trace_id =
            opentelemetry::trace::TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        let request_id = "a \"quoted\"\tid";
        let body = || {
            tracing::info!("inside");
            let inner = tracing::info_span!("inner", user = 7);
            let _inner = inner.enter();
            tracing::info!(status = 200_u16, latency_ms = 0.41, "request finished");
        };
        let ours = capture(true, || {
            tracing::info!("outside");
            let fields = RequestFields {
                method: axum::http::Method::PATCH,
                route: "/api/v1/users/{id}",
                trace_id: Some(trace_id.into()),
                request_id: Some(axum::http::HeaderValue::from_static(request_id)),
            };
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(fields.scope(async { body() }));
        });
        let theirs = capture(false, || {
            tracing::info!("outside");
            let span = tracing::error_span!(
                "request",
                method = "PATCH",
                route = "/api/v1/users/{id}",
                trace_id = %trace_id,
                request_id,
            );
            span.in_scope(body);
        });
        assert_eq!(ours.len(), 3);
        assert_eq!(ours, theirs);
        assert!(ours[0].get("spans").is_none());
        assert_eq!(ours[1]["spans"].as_array().map(Vec::len), Some(1));
        assert_eq!(ours[2]["spans"][0]["request_id"], request_id);
        assert_eq!(
            ours[2]["spans"][1],
            serde_json::json!({"name": "inner", "user": 7})
        );
    }
}
