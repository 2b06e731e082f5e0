//! The engine's Prometheus endpoint (`--metrics-url`): a tiny HTTP/1.1 GET over a tokio
//! `TcpStream`, a parser for the text format, and a sampler that scrapes every second.

use crate::report::{EngineMetrics, MetricsSample};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the sampler scrapes.
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
/// Limit of one scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response read.
const MAX_RESPONSE: usize = 16 << 20;

/// Engine resident memory, bytes.
pub const RSS: &str = "firewatch_process_resident_memory_bytes";
/// Engine CPU seconds.
pub const CPU: &str = "firewatch_process_cpu_seconds_total";
/// Heartbeats superseded in the router under overload.
pub const SHED: &str = "firewatch_pipeline_shed_events_total";
/// Broker messages ingest never saw.
pub const LOST: &str = "firewatch_ingest_lost_messages_total";
/// Rejected input, by reason.
pub const REJECTS: &str = "firewatch_deadletter_rejects_total";
/// Dead letters not written because of the per-gateway rate limit.
pub const SUPPRESSED: &str = "firewatch_deadletter_suppressed_total";
/// Events ingest accepted.
pub const EVENTS: &str = "firewatch_ingest_events_total";
/// Uplink acks the engine published.
pub const ACKS: &str = "firewatch_sink_acks_total";

/// A parsed `http://host:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `host:port` (port 80 when absent).
    pub authority: String,
    /// Host header value.
    pub host: String,
    /// Path with query, at least `/`.
    pub path: String,
}

/// Parses a plain-HTTP URL.
pub fn parse_url(url: &str) -> anyhow::Result<Url> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--metrics-url {url:?}: only http:// URLs are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    anyhow::ensure!(!host.is_empty(), "--metrics-url {url:?}: no host");
    let authority = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok(Url {
        authority,
        host: host.to_string(),
        path: path.to_string(),
    })
}

/// GETs `url` and returns the body of a 200 response.
pub async fn get(url: &Url) -> anyhow::Result<String> {
    tokio::time::timeout(SCRAPE_TIMEOUT, get_inner(url))
        .await
        .map_err(|_| anyhow::anyhow!("GET {}{}: timed out", url.host, url.path))?
}

async fn get_inner(url: &Url) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(&url.authority).await?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    (&mut s)
        .take(MAX_RESPONSE as u64)
        .read_to_end(&mut buf)
        .await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("GET {}: malformed HTTP response", url.path))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    anyhow::ensure!(status == "200", "GET {}: HTTP status {status}", url.path);
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok(if chunked {
        dechunk(body)
    } else {
        body.to_string()
    })
}

/// Decodes a chunked body (best effort: stops at the first malformed chunk).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            out.push_str(rest.get(..n.min(rest.len())).unwrap_or(""));
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The figures loadgen uses from one scrape.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Values {
    /// Resident memory, bytes.
    pub rss_bytes: f64,
    /// CPU seconds since the engine started.
    pub cpu_seconds: f64,
    /// Shed (superseded) heartbeats.
    pub shed_events: f64,
    /// Lost broker messages.
    pub lost_messages: f64,
    /// Dead-letter rejects, all reasons.
    pub deadletter_rejects: f64,
    /// Dead-letter rejects by `reason` label.
    pub deadletter_by_reason: BTreeMap<String, f64>,
    /// Dead letters suppressed by the rate limit.
    pub deadletter_suppressed: f64,
    /// Events accepted by ingest.
    pub ingest_events: f64,
    /// Acks published.
    pub acks_published: f64,
}

impl Values {
    /// Picks the figures out of Prometheus text.
    pub fn parse(text: &str) -> Values {
        let mut v = Values::default();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            match name {
                RSS => v.rss_bytes += value,
                CPU => v.cpu_seconds += value,
                SHED => v.shed_events += value,
                LOST => v.lost_messages += value,
                SUPPRESSED => v.deadletter_suppressed += value,
                EVENTS => v.ingest_events += value,
                ACKS => v.acks_published += value,
                REJECTS => {
                    v.deadletter_rejects += value;
                    let reason = label(labels, "reason").unwrap_or("unknown");
                    *v.deadletter_by_reason
                        .entry(reason.to_string())
                        .or_default() += value;
                }
                _ => {}
            }
        }
        v
    }
}

/// Seconds from `origin` to `at`, negative when `at` is earlier.
fn signed_secs(at: Instant, origin: Instant) -> f64 {
    if at >= origin {
        (at - origin).as_secs_f64()
    } else {
        -(origin - at).as_secs_f64()
    }
}

/// The value of label `key` in `{a="x",b="y"}`.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let inner = labels.strip_prefix('{')?.strip_suffix('}')?;
    inner.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// A sampler scraping every second from the start of the run.
pub struct MetricsProbe {
    url: Url,
    started: Instant,
    first: Values,
    samples: Arc<Mutex<Vec<MetricsSample>>>,
    task: JoinHandle<()>,
}

impl MetricsProbe {
    /// Scrapes once (failing when the endpoint does not answer), then every second;
    /// sample times are seconds since `origin`.
    pub async fn start(url: &str, origin: Instant) -> anyhow::Result<MetricsProbe> {
        let url = parse_url(url)?;
        let first = Values::parse(
            &get(&url)
                .await
                .map_err(|e| anyhow::anyhow!("--metrics-url: {e:#}"))?,
        );
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let url = url.clone();
            let samples = samples.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(SCRAPE_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    every.tick().await;
                    if let Ok(text) = get(&url).await {
                        let v = Values::parse(&text);
                        let s = MetricsSample {
                            t: signed_secs(Instant::now(), origin),
                            rss_mb: v.rss_bytes / (1024.0 * 1024.0),
                            cpu_seconds: v.cpu_seconds,
                            shed_events: v.shed_events,
                            lost_messages: v.lost_messages,
                            deadletter_rejects: v.deadletter_rejects,
                        };
                        samples.lock().expect("metrics samples lock").push(s);
                    }
                }
            })
        };
        Ok(MetricsProbe {
            url,
            started: Instant::now(),
            first,
            samples,
            task,
        })
    }

    /// Scrapes a last time and summarises the run; `None` when the endpoint is gone.
    pub async fn finish(self) -> Option<EngineMetrics> {
        self.task.abort();
        let last = Values::parse(&get(&self.url).await.ok()?);
        let wall = self.started.elapsed().as_secs_f64();
        let samples = std::mem::take(&mut *self.samples.lock().expect("metrics samples lock"));
        let mb = |b: f64| b / (1024.0 * 1024.0);
        let peak = samples
            .iter()
            .map(|s| s.rss_mb)
            .fold(mb(last.rss_bytes).max(mb(self.first.rss_bytes)), f64::max);
        let cpu = (last.cpu_seconds - self.first.cpu_seconds).max(0.0);
        let delta = |a: f64, b: f64| (b - a).max(0.0);
        let mut by_reason = BTreeMap::new();
        for (r, n) in &last.deadletter_by_reason {
            let d = delta(
                self.first
                    .deadletter_by_reason
                    .get(r)
                    .copied()
                    .unwrap_or(0.0),
                *n,
            );
            if d > 0.0 {
                by_reason.insert(r.clone(), d as u64);
            }
        }
        Some(EngineMetrics {
            url: format!("http://{}{}", self.url.host, self.url.path),
            rss_mb: mb(last.rss_bytes),
            peak_rss_mb: peak,
            cpu_seconds: cpu,
            avg_cores: if wall > 0.0 { cpu / wall } else { 0.0 },
            shed_events: delta(self.first.shed_events, last.shed_events) as u64,
            lost_messages: delta(self.first.lost_messages, last.lost_messages) as u64,
            deadletter_rejects: delta(self.first.deadletter_rejects, last.deadletter_rejects)
                as u64,
            deadletter_by_reason: by_reason,
            deadletter_suppressed: delta(
                self.first.deadletter_suppressed,
                last.deadletter_suppressed,
            ) as u64,
            ingest_events: delta(self.first.ingest_events, last.ingest_events) as u64,
            acks_published: delta(self.first.acks_published, last.acks_published) as u64,
            samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:9900/metrics").unwrap();
        assert_eq!(u.authority, "127.0.0.1:9900");
        assert_eq!(u.path, "/metrics");
        assert_eq!(parse_url("http://h").unwrap().authority, "h:80");
        assert!(parse_url("https://h/metrics").is_err());
    }

    #[test]
    fn parses_prometheus_text() {
        let text = "# TYPE x counter\n\
            firewatch_process_resident_memory_bytes 1048576\n\
            firewatch_process_cpu_seconds_total 2.5\n\
            firewatch_deadletter_rejects_total{reason=\"decode_error\"} 3\n\
            firewatch_deadletter_rejects_total{reason=\"oversize\"} 2\n\
            firewatch_pipeline_shed_events_total{shard=\"0\"} 4\n\
            firewatch_pipeline_shed_events_total{shard=\"1\"} 1\n";
        let v = Values::parse(text);
        assert_eq!(v.rss_bytes, 1048576.0);
        assert_eq!(v.cpu_seconds, 2.5);
        assert_eq!(v.deadletter_rejects, 5.0);
        assert_eq!(v.deadletter_by_reason["oversize"], 2.0);
        assert_eq!(v.shed_events, 5.0);
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
