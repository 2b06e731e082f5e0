//! Fuzzes the embedded log's recovery and reader: arbitrary bytes as a segment file must
//! open (truncating what is not a valid record) and read back without a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = std::env::temp_dir().join(format!("fw-fuzz-{}", std::process::id())).canonicalize().or_else(|_| {
        let d = std::env::temp_dir().join(format!("fw-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).map(|_| d)
    }) else {
        return;
    };
    let topic = dir.join("fw.alarms");
    let _ = std::fs::remove_dir_all(&topic);
    if std::fs::create_dir_all(&topic).is_err() {
        return;
    }
    if std::fs::write(topic.join(format!("{:020}.log", 0)), data).is_err() {
        return;
    }
    if let Ok(mut log) = firewatch::eventlog::EventLog::open(&dir, 1 << 20) {
        let _ = log.append("fw.alarms", 1, b"k", b"v");
        let _ = log.flush(false);
    }
    let _ = firewatch::eventlog::LogReader::read_all(&dir, "fw.alarms");
});
