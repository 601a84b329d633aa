//! The access log (`--access-log`, off by default): one line per request, in JSON or the Common
//! Log Format, on stdout. A thread writes the lines, so a slow or blocked stdout never slows a
//! request: past [`ACCESS_LOG_BUFFER`] lines behind, lines are dropped and counted in
//! `portier_access_log_dropped_total`.
//!
//! Never written: any request or response header (so no `Authorization`, `Cookie` or token
//! header), and the query string — tokens, OAuth codes and signed-URL signatures travel there —
//! so the path is logged without it.

use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Version};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::cli::AccessLogFormat;

/// Lines waiting for the writer thread before new ones are dropped (about 4 MiB at 250 bytes a
/// line: a few seconds of a busy node's traffic while stdout is stalled).
pub const ACCESS_LOG_BUFFER: usize = 16 * 1024;

/// What is known about a request when it arrives; only built when the access log is on.
#[derive(Debug)]
pub struct Pending {
    pub time: SystemTime,
    pub entry: &'static str,
    pub client: IpAddr,
    pub method: Method,
    pub host: String,
    /// The path the client sent, without the query.
    pub path: String,
    pub version: Version,
    /// The backend address dialled, once picked.
    pub address: Option<String>,
}

/// One finished request.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub entry: &'static str,
    pub client: IpAddr,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub protocol: &'static str,
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    pub route: Option<&'a str>,
    pub backend: Option<&'a str>,
    pub backend_address: Option<&'a str>,
    #[serde(rename = "upstream_ms", serialize_with = "opt_millis")]
    pub upstream: Option<Duration>,
}

impl Pending {
    pub fn record<'a>(
        &'a self,
        status: u16,
        bytes: u64,
        duration: Duration,
        route: Option<&'a str>,
        backend: Option<&'a str>,
        upstream: Option<Duration>,
    ) -> Record<'a> {
        Record {
            time: self.time,
            entry: self.entry,
            client: self.client,
            method: self.method.as_str(),
            host: &self.host,
            path: &self.path,
            protocol: protocol(self.version),
            status,
            bytes,
            duration,
            route,
            backend,
            backend_address: self.address.as_deref(),
            upstream,
        }
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*time))
}

fn round_millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round_millis(*d))
}

fn opt_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(round_millis(*d)),
        None => s.serialize_none(),
    }
}

/// The JSON line (snake_case keys, like portier's JSON logs), newline included.
pub fn json_line(record: &Record<'_>) -> String {
    let mut line = serde_json::to_string(record).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    line.push('\n');
    line
}

/// Common Log Format, then the host, route id, backend address (quoted, `-` when none), the
/// duration and the upstream duration in milliseconds:
///
/// `10.0.0.1 - - [22/Nov/2025:04:25:00 +0000] "GET /k8s/ HTTP/1.1" 200 1234 "node" "ns/dash#0.0" "10.1.2.3:8443" 12ms 11ms`
pub fn common_line(record: &Record<'_>) -> String {
    let quoted = |value: Option<&str>| match value {
        Some(v) => format!("\"{}\"", clf_escape(v)),
        None => "\"-\"".to_string(),
    };
    let bytes = if record.bytes == 0 { "-".to_string() } else { record.bytes.to_string() };
    let upstream = record.upstream.map(|d| format!("{}ms", d.as_millis())).unwrap_or_else(|| "-".into());
    format!(
        "{} - - [{}] \"{} {} {}\" {} {} {} {} {} {}ms {}\n",
        record.client,
        clf_time(record.time),
        clf_escape(record.method),
        clf_escape(record.path),
        record.protocol,
        record.status,
        bytes,
        quoted(Some(record.host)),
        quoted(record.route),
        quoted(record.backend_address),
        record.duration.as_millis(),
        upstream,
    )
}

/// Quotes, backslashes, control and non-ASCII bytes as `\xHH`, as Apache does: a client cannot
/// forge a field or a line.
fn clf_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `22/Nov/2025:04:25:00 +0000` (UTC).
fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let month = MONTHS.get(month.saturating_sub(1) as usize).copied().unwrap_or("Jan");
    format!("{day:02}/{month}/{year}:{:02}:{:02}:{:02} +0000", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), proleptic Gregorian (H. Hinnant).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

enum Message {
    Line(String),
    Flush(SyncSender<()>),
}

/// The access log's sending side; the writer thread ends when it is dropped.
pub struct AccessLog {
    format: AccessLogFormat,
    lines: SyncSender<Message>,
    dropped: Counter,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").field("format", &self.format).finish()
    }
}

impl AccessLog {
    /// Lines to stdout.
    pub fn stdout(format: AccessLogFormat, dropped: Counter) -> Result<Self, String> {
        Self::with_writer(format, Box::new(std::io::stdout()), dropped)
    }

    /// Lines to `out`, from a thread of their own.
    pub fn with_writer(format: AccessLogFormat, out: Box<dyn Write + Send>, dropped: Counter) -> Result<Self, String> {
        let (lines, rx) = sync_channel(ACCESS_LOG_BUFFER);
        std::thread::Builder::new()
            .name("portier-access-log".into())
            .spawn(move || write_lines(rx, out))
            .map_err(|e| format!("--access-log: cannot start the writer thread: {e}"))?;
        Ok(Self { format, lines, dropped })
    }

    pub fn log(&self, record: &Record<'_>) {
        let line = match self.format {
            AccessLogFormat::Json => json_line(record),
            AccessLogFormat::Common => common_line(record),
        };
        if self.lines.try_send(Message::Line(line)).is_err() {
            self.dropped.inc();
        }
    }

    /// Waits (up to `within`) until the lines logged so far are written out. False on timeout.
    pub fn flush(&self, within: Duration) -> bool {
        let (ack, done) = sync_channel(1);
        let deadline = std::time::Instant::now() + within;
        let mut message = Message::Flush(ack);
        loop {
            match self.lines.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                    message = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).is_ok()
    }
}

fn write_lines(rx: Receiver<Message>, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut failed = false;
    let mut report = |result: std::io::Result<()>| {
        if let Err(e) = result {
            if !failed {
                tracing::warn!(error = %e, "cannot write the access log to stdout; lines are lost until it works again");
            }
            failed = true;
        } else {
            failed = false;
        }
    };
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Write what is queued, then flush once: one syscall per burst, not per line.
        while let Some(message) = next {
            match message {
                Message::Line(line) => report(out.write_all(line.as_bytes())),
                Message::Flush(ack) => {
                    report(out.flush());
                    let _ = ack.try_send(());
                }
            }
            next = rx.try_recv().ok();
        }
        report(out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn pending() -> Pending {
        Pending {
            time: UNIX_EPOCH + Duration::from_millis(1_763_785_500_123),
            entry: "https",
            client: "10.0.0.1".parse().unwrap(),
            method: Method::GET,
            host: "node".into(),
            path: "/k8s/\"x\"".into(),
            version: Version::HTTP_11,
            address: Some("10.1.2.3:8443".into()),
        }
    }

    #[test]
    fn json_line_has_every_field() {
        let p = pending();
        let record = p.record(200, 1234, Duration::from_micros(12_345), Some("ns/dash#0.0"), Some("ns/dash:443"), None);
        let line = json_line(&record);
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2025-11-22T04:25:00.123Z");
        assert_eq!(v["entry"], "https");
        assert_eq!(v["client"], "10.0.0.1");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["host"], "node");
        assert_eq!(v["path"], "/k8s/\"x\"");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 1234);
        assert_eq!(v["duration_ms"], 12.345);
        assert_eq!(v["route"], "ns/dash#0.0");
        assert_eq!(v["backend"], "ns/dash:443");
        assert_eq!(v["backend_address"], "10.1.2.3:8443");
        assert!(v["upstream_ms"].is_null());
    }

    #[test]
    fn common_line_escapes_what_a_client_controls() {
        let mut p = pending();
        p.host = "evil\" 200 0 \"x\n".into();
        let record = p.record(404, 0, Duration::from_millis(3), None, None, Some(Duration::from_millis(2)));
        assert_eq!(
            common_line(&record),
            "10.0.0.1 - - [22/Nov/2025:04:25:00 +0000] \"GET /k8s/\\x22x\\x22 HTTP/1.1\" 404 - \"evil\\x22 200 0 \\x22x\\x0a\" \"-\" \"10.1.2.3:8443\" 3ms 2ms\n"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(clf_time(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723)), "29/Feb/2000:01:02:03 +0000");
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_reach_the_writer_in_order_and_flush_waits_for_them() {
        let sink = Sink::default();
        let log = AccessLog::with_writer(AccessLogFormat::Json, Box::new(sink.clone()), Counter::default()).unwrap();
        let p = pending();
        for status in [200, 201, 202] {
            log.log(&p.record(status, 1, Duration::ZERO, None, None, None));
        }
        assert!(log.flush(Duration::from_secs(5)));
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let statuses: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["status"].as_u64().unwrap())
            .collect();
        assert_eq!(statuses, vec![200, 201, 202]);
    }
}
