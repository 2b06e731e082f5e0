//! The embedded-log sink thread: group commit of every record that arrives, fsync per
//! policy, then the acks of the batches those records completed.

use super::acks::{AckPublisher, AckReleaser};
use super::{SinkMsg, Topic};
use crate::config::FsyncPolicy;
use crate::eventlog::{EventLog, LogError};
use crate::telemetry::{names, Health};
use std::time::{Duration, Instant};

/// Errors that stop the sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The log could not be opened.
    #[error("embedded log: {0}")]
    Log(#[from] LogError),
}

/// The sink thread's state.
pub struct EmbeddedSink {
    log: EventLog,
    fsync: FsyncPolicy,
    max_batch_records: usize,
    rx: crossbeam_channel::Receiver<SinkMsg>,
    acks: AckReleaser,
    health: Health,
}

impl EmbeddedSink {
    /// A sink over an opened log.
    pub fn new(
        log: EventLog,
        fsync: FsyncPolicy,
        max_batch_records: usize,
        rx: crossbeam_channel::Receiver<SinkMsg>,
        acks: Box<dyn AckPublisher>,
        health: Health,
        shards: usize,
    ) -> Self {
        EmbeddedSink {
            log,
            fsync,
            max_batch_records,
            rx,
            acks: AckReleaser::new(acks, shards),
            health,
        }
    }

    /// Runs until every sender is gone, then flushes and syncs the log.
    pub fn run(mut self) -> EventLog {
        let mut last_export = Instant::now();
        loop {
            let first = match self.rx.recv_timeout(Duration::from_millis(500)) {
                Ok(m) => m,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    self.acks.export();
                    last_export = Instant::now();
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            let mut n = first.records.len();
            let mut batch = vec![first];
            while n < self.max_batch_records {
                match self.rx.try_recv() {
                    Ok(m) => {
                        n += m.records.len();
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
            metrics::gauge!(names::SINK_QUEUE_DEPTH).set(self.rx.len() as f64);
            self.write_durably(&batch);
            self.acks.release(batch);
            if last_export.elapsed() >= Duration::from_secs(1) {
                self.acks.export();
                last_export = Instant::now();
            }
        }
        self.acks.export();
        if let Err(e) = self.log.flush(true) {
            tracing::error!(error = %e, "final log flush failed");
        }
        self.log
    }

    /// Appends and flushes; on I/O failure keeps retrying (acks stay held, back-pressure
    /// builds upstream) and reports not-ready until the disk recovers.
    fn write_durably(&mut self, batch: &[SinkMsg]) {
        let mut per_topic = [0u64; Topic::ALL.len()];
        let before = self.log.bytes_appended();
        for m in batch {
            for r in &m.records {
                let mut backoff = Duration::from_millis(50);
                while let Err(e) = self.log.append(r.topic.name(), r.ts_ms, &r.key, &r.value) {
                    self.io_failure(&e, &mut backoff);
                }
                per_topic[r.topic as usize] += 1;
            }
        }
        let sync = self.fsync == FsyncPolicy::Batch;
        let mut backoff = Duration::from_millis(50);
        while let Err(e) = self.log.flush(sync) {
            self.io_failure(&e, &mut backoff);
        }
        if !self.health.is_ready() {
            tracing::info!("embedded log writable again");
            self.health.set_ready(true);
        }
        if sync {
            metrics::counter!(names::SINK_FSYNCS_TOTAL).increment(1);
        }
        metrics::counter!(names::SINK_WRITTEN_BYTES_TOTAL)
            .increment(self.log.bytes_appended() - before);
        for t in Topic::ALL {
            let c = per_topic[t as usize];
            if c > 0 {
                metrics::counter!(names::SINK_RECORDS_TOTAL, "topic" => t.name()).increment(c);
            }
        }
    }

    fn io_failure(&mut self, e: &LogError, backoff: &mut Duration) {
        metrics::counter!(names::SINK_ERRORS_TOTAL).increment(1);
        tracing::error!(error = %e, "embedded log write failed; holding acks and retrying");
        self.health.set_ready(false);
        std::thread::sleep(*backoff);
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
    }
}
