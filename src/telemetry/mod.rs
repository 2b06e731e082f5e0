//! Telemetry: `tracing` set-up, the Prometheus recorder and the HTTP endpoints
//! (`/metrics`, `/healthz`, `/readyz`), latency histograms exported as quantile gauges,
//! and process CPU/RSS gauges.

pub mod latency;
pub mod names;

use crate::config::{LogConfig, LogFormat};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Errors starting telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The HTTP port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Installs the global `tracing` subscriber (once; later calls are ignored).
pub fn init_tracing(cfg: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// The process-wide Prometheus handle. The first call installs the recorder; later calls
/// (several engines in one test process) share it.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then our handle renders nothing,
            // which the /metrics test would show.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Readiness, flipped by the app once everything is up, and back on shutdown.
#[derive(Default, Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    degraded: Arc<AtomicBool>,
}

impl Health {
    /// Sets readiness (the engine's lifecycle and the embedded log).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Marks the output path degraded (Kafka spooling or replaying): not ready meanwhile.
    pub fn set_degraded(&self, degraded: bool) {
        self.degraded.store(degraded, Ordering::SeqCst);
    }

    /// Whether the output path is degraded.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::SeqCst)
    }

    /// Ready: started, not stopping, and not degraded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.is_degraded()
    }
}

/// Binds the HTTP listener (so a bad address fails start-up) and returns the server future.
pub async fn serve_http(
    addr: SocketAddr,
    health: Health,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), TelemetryError> {
    use axum::{http::StatusCode, routing::get, Router};
    let handle = prometheus();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| TelemetryError::Bind { addr, source })?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let h = handle.clone();
                async move {
                    update_process_gauges();
                    h.render()
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = health.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        );
    let fut = async move {
        let mut shutdown = shutdown;
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
    };
    Ok((local, fut))
}

/// Reads RSS and CPU time of this process from /proc (Linux); no-op elsewhere.
pub fn update_process_gauges() {
    if let Some((rss, cpu)) = read_proc_self() {
        metrics::gauge!(names::PROCESS_RESIDENT_MEMORY_BYTES).set(rss as f64);
        metrics::gauge!(names::PROCESS_CPU_SECONDS_TOTAL).set(cpu);
    }
}

/// (RSS bytes, CPU seconds) of this process, from `/proc/self/status` (VmRSS) and
/// `/proc/self/stat` (utime + stime in USER_HZ ticks, which Linux fixes at 100 for /proc).
pub fn read_proc_self() -> Option<(u64, f64)> {
    read_proc(std::process::id())
}

/// (RSS bytes, CPU seconds) of process `pid` (also used by the loadgen for the engine).
pub fn read_proc(pid: u32) -> Option<(u64, f64)> {
    const USER_HZ: f64 = 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((rss_kb * 1024, (utime + stime) / USER_HZ))
}
