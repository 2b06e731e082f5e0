//! Resource use of the engine process (`--engine-pid`), sampled from /proc during the run.

use crate::report::EngineUsage;
use firewatch::telemetry::read_proc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the peak RSS is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// A running sampler of one process.
pub struct EngineProbe {
    pid: u32,
    started: Instant,
    cpu_at_start: f64,
    peak_rss: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl EngineProbe {
    /// Starts sampling `pid`; fails when /proc has no such process.
    pub fn start(pid: u32) -> anyhow::Result<EngineProbe> {
        let Some((rss, cpu)) = read_proc(pid) else {
            anyhow::bail!("--engine-pid {pid}: no such process (or /proc unreadable)");
        };
        let peak_rss = Arc::new(AtomicU64::new(rss));
        let peak = peak_rss.clone();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            loop {
                every.tick().await;
                if let Some((rss, _)) = read_proc(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
            }
        });
        Ok(EngineProbe {
            pid,
            started: Instant::now(),
            cpu_at_start: cpu,
            peak_rss,
            task,
        })
    }

    /// Stops sampling and summarises; `None` when the process is gone.
    pub fn finish(self) -> Option<EngineUsage> {
        self.task.abort();
        let (rss, cpu) = read_proc(self.pid)?;
        let peak = self.peak_rss.load(Ordering::Relaxed).max(rss);
        let wall = self.started.elapsed().as_secs_f64();
        let cpu_seconds = (cpu - self.cpu_at_start).max(0.0);
        let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
        Some(EngineUsage {
            pid: self.pid,
            rss_mb: mb(rss),
            peak_rss_mb: mb(peak),
            cpu_seconds,
            avg_cores: if wall > 0.0 { cpu_seconds / wall } else { 0.0 },
        })
    }
}
