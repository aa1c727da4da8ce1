//! The audit log: one hash-chained JSON Lines record per key use and per administrative
//! action, written off the hot path by a writer thread. See `verify` for what is checked.
//!
//! Layout of the audit directory (0700; files 0600):
//! - `<host>-<pid>-<start-unix-micros>-<seq>.jsonl`: a process's segments; `seq` counts
//!   rotations (by size, and at each UTC midnight). Each process writes only its own.
//! - `segments.log`: the manifest, one line per segment created or sealed, hash-chained.

mod cli;
mod clock;
mod event;
pub mod ops;
mod segment;
mod verify;
mod writer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_proc;
#[cfg(test)]
mod tests_tamper;

use std::path::PathBuf;

pub use cli::{render_report, render_table, show_command, verify_command, ShowFilter};
pub use event::{AuditConfig, Durability, Event, KeyRef, DEFAULT_MAX_SEGMENT_BYTES};
pub use verify::{read_records, verify, Problem, VerifyReport};
pub use writer::{AuditLog, AuditStats};

mod bench;
pub use bench::{bench_record, bench_record_in};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {}: {msg}", path.display())]
    Io { path: PathBuf, msg: String },
    #[error("audit log cannot be written: {0}")]
    Unwritable(String),
    #[error("audit log: {count} record(s) could not be written ({last_error})")]
    Lost { count: u64, last_error: String },
    #[error("audit log writer has stopped")]
    WriterStopped,
    #[error("audit configuration: {0}")]
    Config(String),
}

/// An operation that cannot be audited fails with `CKR_FUNCTION_FAILED` (not a device
/// error: retrying on another HSM instance would not help).
impl From<AuditError> for crate::error::Error {
    fn from(e: AuditError) -> Self {
        crate::error::Error::new(pkcs11_sys::CKR_FUNCTION_FAILED, e.to_string())
    }
}
