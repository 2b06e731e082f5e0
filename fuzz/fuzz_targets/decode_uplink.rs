//! Fuzzes both uplink decoders and the topic classifier: any bytes must give a value or
//! an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = firewatch::ingest::decode::decode_protobuf(data);
    let _ = firewatch::ingest::decode::decode_json(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = firewatch::ingest::classify(s);
    }
});
