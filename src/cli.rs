//! The command-line tools besides `run`: `tail` (the embedded log as JSON lines),
//! `registry generate` (a synthetic city plus its credentials file).

use crate::auth::{credentials_line, Role};
use crate::eventlog::{LogReader, Record, StartAt};
use crate::pipeline::chain::{ChainError, ChainHeads};
use crate::registry::{generate, GenerateOptions, Registry};
use crate::sink::Topic;
use firewatch_proto::{
    AlarmRecord, CoverageRecord, DeadLetterRecord, DispatchRecord, IncidentRecord,
    InsuranceTimelineRecord, PointStatusRecord, RiskRecord, TroubleRecord,
};
use prost::Message;
use rand::SeedableRng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors of the tools.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Unknown topic name.
    #[error("unknown topic {0:?}; topics: {1}")]
    UnknownTopic(String, String),
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] crate::eventlog::LogError),
    /// Writing output failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The insurance timeline does not verify.
    #[error("insurance timeline does not verify: {0}")]
    Chain(#[from] ChainError),
    /// A timeline record is not a valid protobuf.
    #[error("fw.insurance.timeline offset {0}: undecodable record")]
    Undecodable(u64),
}

/// What `verify-chain` checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainReport {
    /// Records verified.
    pub records: u64,
    /// Distinct policies.
    pub policies: usize,
}

/// Re-computes every hash and link of `fw.insurance.timeline` under `dir`.
pub fn verify_chain(dir: &Path) -> Result<ChainReport, CliError> {
    let mut reader = LogReader::open(dir, Topic::InsuranceTimeline.name(), StartAt::Beginning)?;
    let mut heads = ChainHeads::default();
    let mut records = 0;
    while let Some(r) = reader.next()? {
        let rec = InsuranceTimelineRecord::decode(r.value.as_slice())
            .map_err(|_| CliError::Undecodable(r.offset))?;
        heads.verify_next(&rec, r.offset)?;
        records += 1;
    }
    Ok(ChainReport {
        records,
        policies: heads.len(),
    })
}

/// A record's value as JSON, decoded by the topic's schema.
pub fn value_json(topic: Topic, value: &[u8]) -> serde_json::Value {
    fn j<M: Message + Default + serde::Serialize>(v: &[u8]) -> serde_json::Value {
        match M::decode(v) {
            Ok(m) => serde_json::to_value(m).unwrap_or(serde_json::Value::Null),
            Err(e) => serde_json::json!({ "undecodable": e.to_string() }),
        }
    }
    match topic {
        Topic::Alarms => j::<AlarmRecord>(value),
        Topic::Incidents => j::<IncidentRecord>(value),
        Topic::Dispatch => j::<DispatchRecord>(value),
        Topic::PointStatus => j::<PointStatusRecord>(value),
        Topic::Troubles => j::<TroubleRecord>(value),
        Topic::InsuranceTimeline => j::<InsuranceTimelineRecord>(value),
        Topic::InsuranceRisk => j::<RiskRecord>(value),
        Topic::Coverage => j::<CoverageRecord>(value),
        Topic::DeadLetter => j::<DeadLetterRecord>(value),
    }
}

/// One log record as a JSON line.
pub fn record_json(topic: Topic, r: &Record) -> serde_json::Value {
    serde_json::json!({
        "topic": topic.name(),
        "offset": r.offset,
        "timestamp_ms": r.timestamp_ms,
        "key": String::from_utf8_lossy(&r.key),
        "value": value_json(topic, &r.value),
    })
}

/// Options of `firewatch tail`.
pub struct TailOptions {
    /// Log directory.
    pub dir: PathBuf,
    /// Topic name.
    pub topic: String,
    /// Start at offset 0 instead of the last `last` records.
    pub from_beginning: bool,
    /// Without --from-beginning: how many of the latest records to print first.
    pub last: u64,
    /// Keep printing new records.
    pub follow: bool,
}

/// Runs `firewatch tail`, writing JSON lines to `out`.
pub fn tail(opts: &TailOptions, out: &mut impl Write) -> Result<(), CliError> {
    let topic = Topic::from_name(&opts.topic).ok_or_else(|| {
        let all: Vec<&str> = Topic::ALL.iter().map(|t| t.name()).collect();
        CliError::UnknownTopic(opts.topic.clone(), all.join(", "))
    })?;
    let start = if opts.from_beginning {
        StartAt::Beginning
    } else {
        // Find the end, then step back `last` records.
        let end = LogReader::open(&opts.dir, topic.name(), StartAt::End)?.next_offset();
        StartAt::Offset(end.saturating_sub(opts.last))
    };
    let mut reader = LogReader::open(&opts.dir, topic.name(), start)?;
    loop {
        while let Some(r) = reader.next()? {
            writeln!(out, "{}", record_json(topic, &r))?;
        }
        out.flush()?;
        if !opts.follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes a synthetic registry to `out` and its credentials (every gateway, and
/// `station-{id}` for every station, all with `secret`) to `credentials`.
pub fn generate_registry(
    points: usize,
    seed: u64,
    out: &Path,
    credentials: &Path,
    secret: &str,
) -> anyhow::Result<Registry> {
    let reg = generate(&GenerateOptions { points, seed });
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    reg.write_csv(&mut w)?;
    w.flush()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut c = std::io::BufWriter::new(std::fs::File::create(credentials)?);
    writeln!(
        c,
        "# firewatch credentials: username,role,sha256:<salt>:<digest>"
    )?;
    for g in 0..reg.gateway_count() as u32 {
        writeln!(
            c,
            "{}",
            credentials_line(reg.gateway_id(g), Role::Gateway, secret, &mut rng)
        )?;
    }
    let mut stations: Vec<u32> = (0..reg.len() as u32).map(|i| reg.info(i).station).collect();
    stations.sort_unstable();
    stations.dedup();
    for s in stations {
        writeln!(
            c,
            "{}",
            credentials_line(&format!("station-{s}"), Role::Station, secret, &mut rng)
        )?;
    }
    c.flush()?;
    Ok(reg)
}
