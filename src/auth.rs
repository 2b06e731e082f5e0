//! Gateway and station credentials: a CSV file of `username,role,hash` lines where `hash` is
//! `sha256:<salt hex>:<digest hex>` and digest = SHA-256(salt ‖ secret).
//!
//! Secrets are machine-generated, high-entropy device keys, so a salted SHA-256 (constant-time
//! compared) is the right cost: a reconnect storm of 10,000 gateways verifies in milliseconds,
//! where a password KDF would take minutes. The file never holds a secret in plain text.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The secret that `firewatch registry generate` uses unless told otherwise. For demos and
/// tests only; production credentials files are made with `--secret` or by provisioning.
pub const DEV_SECRET: &str = "firewatch-dev";

/// Who may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A gateway: publishes on `fw/v1/gw/{username}/…`.
    Gateway,
    /// A station console: publishes on `fw/v1/station/{id}/cmd`; username `station-{id}`.
    Station,
}

/// An authenticated identity, shared by every packet of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The MQTT username (gateway id, or `station-{id}`).
    pub username: Arc<str>,
    /// Its role.
    pub role: Role,
}

/// Errors reading a credentials file.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("cannot read credentials {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("credentials {path} line {line}: {detail}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        detail: String,
    },
}

struct Entry {
    role: Role,
    salt: Vec<u8>,
    digest: [u8; 32],
}

/// The loaded credentials.
#[derive(Default)]
pub struct Credentials {
    entries: HashMap<String, Entry>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("entries", &self.entries.len())
            .finish()
    }
}

fn digest(salt: &[u8], secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret);
    h.finalize().into()
}

/// Hashes `secret` with a fresh random salt, in the file's `sha256:salt:digest` form.
pub fn hash_secret(secret: &str, rng: &mut impl RngCore) -> String {
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut salt);
    format!(
        "sha256:{}:{}",
        hex::encode(salt),
        hex::encode(digest(&salt, secret.as_bytes()))
    )
}

/// One line of a credentials file.
pub fn credentials_line(
    username: &str,
    role: Role,
    secret: &str,
    rng: &mut impl RngCore,
) -> String {
    let role = match role {
        Role::Gateway => "gateway",
        Role::Station => "station",
    };
    format!("{username},{role},{}", hash_secret(secret, rng))
}

impl Credentials {
    /// Loads a credentials file.
    pub fn load(path: &Path) -> Result<Credentials, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses credentials text (`#` comments and blank lines allowed).
    pub fn parse(text: &str, origin: &str) -> Result<Credentials, AuthError> {
        let mut entries = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |detail: String| AuthError::Line {
                path: origin.into(),
                line: i + 1,
                detail,
            };
            let mut f = line.split(',');
            let (Some(user), Some(role), Some(hash), None) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                return Err(err("expected `username,role,hash`".into()));
            };
            let role = match role {
                "gateway" => Role::Gateway,
                "station" => Role::Station,
                other => return Err(err(format!("unknown role {other:?} (gateway|station)"))),
            };
            if user.is_empty()
                || !user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err(format!("username {user:?} must be [A-Za-z0-9_-]+")));
            }
            if role == Role::Station && station_id_of(user).is_none() {
                return Err(err(format!(
                    "station username {user:?} must be station-<id>"
                )));
            }
            let parts: Vec<&str> = hash.split(':').collect();
            let (salt, dig) = match parts.as_slice() {
                ["sha256", salt, dig] => (hex::decode(salt), hex::decode(dig)),
                _ => return Err(err("hash must be sha256:<salt hex>:<digest hex>".into())),
            };
            let (Ok(salt), Ok(dig)) = (salt, dig) else {
                return Err(err("hash has invalid hex".into()));
            };
            let Ok(digest) = <[u8; 32]>::try_from(dig.as_slice()) else {
                return Err(err("digest must be 32 bytes".into()));
            };
            if entries
                .insert(user.to_string(), Entry { role, salt, digest })
                .is_some()
            {
                return Err(err(format!("duplicate username {user:?}")));
            }
        }
        Ok(Credentials { entries })
    }

    /// Checks a username and password; `None` when unknown or wrong.
    pub fn verify(&self, username: &str, password: &[u8]) -> Option<Identity> {
        let e = self.entries.get(username)?;
        let ok: bool = digest(&e.salt, password).ct_eq(&e.digest).into();
        ok.then(|| Identity {
            username: Arc::from(username),
            role: e.role,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no one can connect.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The station id of a `station-{id}` username.
pub fn station_id_of(username: &str) -> Option<u32> {
    username.strip_prefix("station-")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_right_secret_only() {
        let mut rng = rand::thread_rng();
        let text = format!(
            "# comment\n{}\n{}\n",
            credentials_line("gw-1", Role::Gateway, "s3cret", &mut rng),
            credentials_line("station-4", Role::Station, "other", &mut rng)
        );
        let c = Credentials::parse(&text, "t").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.verify("gw-1", b"s3cret").unwrap().role, Role::Gateway);
        assert!(c.verify("gw-1", b"s3cres").is_none());
        assert!(c.verify("gw-2", b"s3cret").is_none());
        assert_eq!(c.verify("station-4", b"other").unwrap().role, Role::Station);
        assert!(!text.contains("s3cret"));
    }

    #[test]
    fn bad_lines_name_the_line() {
        for bad in [
            "gw-1,gateway",
            "gw-1,admin,sha256:00:00",
            "gw 1,gateway,sha256:00:00",
            "gw-1,gateway,md5:00:00",
            "gw-1,gateway,sha256:zz:00",
            "station-x,station,sha256:00:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            let e = Credentials::parse(&format!("\n{bad}\n"), "f").unwrap_err().to_string();
            assert!(e.contains("line 2"), "{bad}: {e}");
        }
    }
}
