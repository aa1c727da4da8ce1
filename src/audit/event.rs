//! What is recorded: the configuration, the `Event` callers hand in, and the exact
//! JSON line written for it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

use super::AuditError;

/// How hard `AuditLog::record` works to put a record on disk before returning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Nothing is recorded.
    Off,
    /// `record` returns at once; the writer thread writes and fsyncs within 100 ms.
    #[default]
    Batch,
    /// `record` returns once its record is fsync'd (group commit across threads).
    Sync,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Off => "off",
            Durability::Batch => "batch",
            Durability::Sync => "sync",
        })
    }
}

impl std::str::FromStr for Durability {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<Self, AuditError> {
        match s {
            "off" => Ok(Durability::Off),
            "batch" => Ok(Durability::Batch),
            "sync" => Ok(Durability::Sync),
            other => Err(AuditError::Config(format!(
                "durability must be off, batch or sync, not {other:?}"
            ))),
        }
    }
}

pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

fn default_max_segment_bytes() -> u64 {
    DEFAULT_MAX_SEGMENT_BYTES
}

/// The `[audit]` section of the configuration. An empty `dir` means "not set": the
/// caller fills it in (for example `<key store>/audit`) before `AuditLog::open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    /// A segment file is rotated once it holds this many bytes (and at each UTC midnight).
    #[serde(default = "default_max_segment_bytes")]
    pub max_segment_bytes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            dir: PathBuf::new(),
            durability: Durability::Batch,
            max_segment_bytes: DEFAULT_MAX_SEGMENT_BYTES,
        }
    }
}

impl AuditConfig {
    pub fn new(dir: impl Into<PathBuf>, durability: Durability) -> AuditConfig {
        AuditConfig {
            dir: dir.into(),
            durability,
            ..AuditConfig::default()
        }
    }
}

/// One audit record as the caller describes it. `host`, `pid`, `time`, `seq` and the
/// chain fields are added by the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    /// "encrypt_init", "encrypt", "sign", "login", "key_create", "key_state", "purge", ...
    pub op: &'static str,
    pub session: Option<u64>,
    /// "user" | "so" | "public"
    pub user: Option<&'static str>,
    /// e.g. "CKM_AES_GCM"
    pub mechanism: Option<std::borrow::Cow<'static, str>>,
    /// CMK id (UUID string); shared, so the hot path does not copy it.
    pub key_id: Option<std::sync::Arc<str>>,
    pub key_version: Option<u32>,
    /// The HSM instance that served the operation.
    pub instance: Option<std::sync::Arc<str>>,
    /// "CKR_OK", "CKR_PIN_INCORRECT", ...
    pub result: &'static str,
    pub latency_us: Option<u64>,
    /// Why: for failures and administrative actions.
    pub reason: Option<String>,
    /// Structured extras, e.g. a purge proof.
    pub detail: Option<serde_json::Value>,
}

impl Event {
    pub fn new(op: &'static str, result: &'static str) -> Event {
        Event {
            op,
            result,
            ..Event::default()
        }
    }
}

/// The JSON line, in field order. `prev` comes last; the chain hash covers every byte
/// of the line (without its terminating newline).
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    time: &'a str,
    host: &'a str,
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    continues: Option<&'a str>,
    session: Option<u64>,
    user: Option<&'a str>,
    op: &'a str,
    mechanism: Option<&'a str>,
    key_id: Option<&'a str>,
    key_version: Option<u32>,
    instance: Option<&'a str>,
    result: &'a str,
    latency_us: Option<u64>,
    reason: Option<&'a str>,
    detail: Option<&'a serde_json::Value>,
    prev: &'a str,
}

/// Where a line sits in its chain.
pub(crate) struct LineCtx<'a> {
    pub seq: u64,
    pub time: &'a str,
    pub host: &'a str,
    pub pid: u32,
    pub continues: Option<&'a str>,
    pub prev: &'a [u8; 32],
}

/// Appends the record's line (without newline) to `out`.
pub(crate) fn write_line(
    out: &mut Vec<u8>,
    e: &Event,
    ctx: &LineCtx<'_>,
) -> Result<(), AuditError> {
    let prev = Hex64::new(ctx.prev);
    let line = Line {
        seq: ctx.seq,
        time: ctx.time,
        host: ctx.host,
        pid: ctx.pid,
        continues: ctx.continues,
        session: e.session,
        user: e.user,
        op: e.op,
        mechanism: e.mechanism.as_deref(),
        key_id: e.key_id.as_deref(),
        key_version: e.key_version,
        instance: e.instance.as_deref(),
        result: e.result,
        latency_us: e.latency_us,
        reason: e.reason.as_deref(),
        detail: e.detail.as_ref(),
        prev: prev.as_str(),
    };
    serde_json::to_writer(out, &line)
        .map_err(|err| AuditError::Unwritable(format!("cannot encode record: {err}")))
}

pub(crate) fn line_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

pub(crate) const ZERO_HASH: [u8; 32] = [0; 32];

/// A SHA-256 hash in lower-case hex, without allocating.
pub(crate) struct Hex64([u8; 64]);

impl Hex64 {
    pub fn new(h: &[u8; 32]) -> Hex64 {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in h.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 15)];
        }
        Hex64(out)
    }

    pub fn as_str(&self) -> &str {
        // Always ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}
