//! The only place that reads the wall clock. Pipeline logic takes `now` as an argument;
//! threads call these at batch boundaries and pass the value down.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
