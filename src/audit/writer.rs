//! `AuditLog`: the hot path hands records to a writer thread through a mutex-protected
//! `Batch` that the writer swaps out; the lock is never held during I/O.
//!
//! Per record the calling thread only copies the record's few strings into the batch (no
//! allocation once the batch has grown, no reference counts handed to another thread) and
//! wakes the writer once per batch; the writer encodes, hashes and writes.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::clock::now_micros;
use super::event::{AuditConfig, Batch, Durability, Event, MAX_ARENA_BYTES};
use super::segment::{io_err, SegmentWriter};
use super::AuditError;

/// Batch mode: the writer writes at most this long after the first waiting record.
const BATCH_INTERVAL: Duration = Duration::from_millis(50);
/// Batch mode: wake the writer early once this many records wait (at a million records a
/// second, every 16 ms: the writer works in few, large batches, each one fsync).
const EARLY_WAKE: usize = 16 * 1024;
/// Beyond this many waiting records, `record` blocks until the writer catches up.
const MAX_PENDING: usize = 256 * 1024;
/// While records have been lost, retry writing the gap record this often.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Sync failure ranges kept for waiters to find theirs.
const MAX_FAILURES: usize = 4096;

/// Counters for `cks status` and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuditStats {
    /// Records written and fsync'd.
    pub written: u64,
    /// fsync'd batches (with group commit, fewer than records).
    pub syncs: u64,
    /// Records that could not be written (batch mode), in total.
    pub lost: u64,
}

struct Queue {
    pending: Batch,
    /// When `pending` last became non-empty.
    first_at: Option<Instant>,
    /// Tickets are handed out in push order; `next_ticket` is the next one.
    next_ticket: u64,
    /// Every ticket below `done` has been written or has failed.
    done: u64,
    /// Sync mode: ticket ranges `[lo, hi)` whose write failed, with the error.
    failures: Vec<(u64, u64, AuditError)>,
    /// The error of the most recent write attempt, if it failed.
    last_error: Option<AuditError>,
    /// Batch mode: records lost and not yet documented by an `audit_gap` record.
    unreported_lost: u64,
    /// Time of the first of those lost records (the gap record carries it).
    lost_since_us: i64,
    urgent: bool,
    shutdown: bool,
    writer_gone: bool,
    stats: AuditStats,
}

struct Shared {
    durability: Durability,
    q: Mutex<Queue>,
    /// The writer waits here for work.
    work: Condvar,
    /// Sync callers, flushers and blocked producers wait here for progress.
    progress: Condvar,
}

/// The audit log of this process. `Send + Sync`; share it in an `Arc`.
pub struct AuditLog {
    shared: Option<Arc<Shared>>,
    /// The process that opened the log: after `fork` the child has no writer thread.
    pid: u32,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field(
                "durability",
                &self
                    .shared
                    .as_ref()
                    .map_or(Durability::Off, |s| s.durability),
            )
            .finish()
    }
}

fn create_dir(dir: &std::path::Path) -> Result<(), AuditError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() {
        return Err(AuditError::Config("audit directory is not set".into()));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(dir, e))?;
    if !dir.is_dir() {
        return Err(AuditError::Config(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    Ok(())
}

impl AuditLog {
    /// Creates the directory (0700) and starts the writer thread. Segment files are created
    /// when the first record is written. With `Durability::Off` nothing is touched.
    pub fn open(cfg: &AuditConfig) -> Result<AuditLog, AuditError> {
        if cfg.durability == Durability::Off {
            return Ok(AuditLog {
                shared: None,
                pid: std::process::id(),
                writer: Mutex::new(None),
            });
        }
        create_dir(&cfg.dir)?;
        let shared = Arc::new(Shared {
            durability: cfg.durability,
            q: Mutex::new(Queue {
                pending: Batch::with_capacity(1024),
                first_at: None,
                next_ticket: 0,
                done: 0,
                failures: Vec::new(),
                last_error: None,
                unreported_lost: 0,
                lost_since_us: 0,
                urgent: false,
                shutdown: false,
                writer_gone: false,
                stats: AuditStats::default(),
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
        });
        let seg = SegmentWriter::new(&cfg.dir, cfg.max_segment_bytes);
        let s2 = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("cks-audit".into())
            .spawn(move || writer_main(&s2, seg))
            .map_err(|e| AuditError::Unwritable(format!("cannot start writer thread: {e}")))?;
        Ok(AuditLog {
            shared: Some(shared),
            pid: std::process::id(),
            writer: Mutex::new(Some(handle)),
        })
    }

    pub fn durability(&self) -> Durability {
        self.shared
            .as_ref()
            .map_or(Durability::Off, |s| s.durability)
    }

    /// Hands a record to the writer. `Sync`: returns once it is fsync'd, or `Err` if it
    /// could not be written (the caller then fails the operation). `Batch`: returns at
    /// once (blocking only if the writer is more than 256 Ki records behind); write errors
    /// show in `health()`. `Off`: does nothing.
    pub fn record(&self, event: Event) -> Result<(), AuditError> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        // Sync waits on the writer thread, which a forked child does not have.
        if sh.durability == Durability::Sync && std::process::id() != self.pid {
            return Err(AuditError::WriterStopped);
        }
        let mut q = sh.q.lock();
        if q.writer_gone {
            return Err(AuditError::WriterStopped);
        }
        let full = |q: &Queue| {
            q.pending.len() >= MAX_PENDING || q.pending.arena_bytes() >= MAX_ARENA_BYTES
        };
        if full(&q) {
            // About to block on the writer (a rare, slow path): make sure there is one.
            if std::process::id() != self.pid {
                return Err(AuditError::WriterStopped);
            }
            while full(&q) && !q.writer_gone {
                sh.progress.wait(&mut q);
            }
        }
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        // The time is taken under the lock so that a segment's records are in time order.
        q.pending.push(now_micros(), &event);
        if sh.durability == Durability::Batch {
            let n = q.pending.len();
            if n == 1 {
                // Once per batch: a forked child has no writer; records would pile up.
                if std::process::id() != self.pid {
                    q.pending.clear();
                    q.next_ticket -= 1;
                    return Err(AuditError::WriterStopped);
                }
                q.first_at = Some(Instant::now());
                sh.work.notify_one();
            } else if n == EARLY_WAKE {
                sh.work.notify_one();
            }
            drop(q);
            // The event's `Arc`s and strings are released here, outside the lock.
            drop(event);
            return Ok(());
        }
        drop(event);
        // Sync: ask for a write now and wait for ours to be done (group commit: whoever
        // is queued while the writer fsyncs goes out in the next batch together).
        q.urgent = true;
        sh.work.notify_one();
        while q.done <= ticket && !q.writer_gone {
            sh.progress.wait(&mut q);
        }
        if q.done <= ticket {
            return Err(AuditError::WriterStopped);
        }
        match q
            .failures
            .iter()
            .rev()
            .find(|(lo, hi, _)| (*lo..*hi).contains(&ticket))
        {
            Some((_, _, e)) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// `Err` while the log cannot be written, and (batch mode) until records lost to a
    /// failure have been documented by an `audit_gap` record in the log.
    pub fn health(&self) -> Result<(), AuditError> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        let q = sh.q.lock();
        health_of(&q)
    }

    /// Waits until everything recorded so far has been written (or has failed), then
    /// reports `health()`.
    pub fn flush(&self) -> Result<(), AuditError> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        if std::process::id() != self.pid {
            return Err(AuditError::WriterStopped);
        }
        let mut q = sh.q.lock();
        let target = q.next_ticket;
        if q.done < target {
            q.urgent = true;
            sh.work.notify_one();
        }
        while q.done < target && !q.writer_gone {
            sh.progress.wait(&mut q);
        }
        if q.done < target {
            return Err(AuditError::WriterStopped);
        }
        health_of(&q)
    }

    pub fn stats(&self) -> AuditStats {
        self.shared
            .as_ref()
            .map_or(AuditStats::default(), |s| s.q.lock().stats)
    }
}

fn health_of(q: &Queue) -> Result<(), AuditError> {
    if let Some(e) = &q.last_error {
        if q.unreported_lost > 0 {
            return Err(AuditError::Lost {
                count: q.unreported_lost,
                last_error: e.to_string(),
            });
        }
        return Err(e.clone());
    }
    if q.writer_gone {
        return Err(AuditError::WriterStopped);
    }
    Ok(())
}

impl Drop for AuditLog {
    /// Writes what is queued, seals the current segment and joins the writer.
    fn drop(&mut self) {
        if let Some(sh) = &self.shared {
            sh.q.lock().shutdown = true;
            sh.work.notify_one();
        }
        if let Some(h) = self.writer.get_mut().take() {
            // In a forked child the writer thread does not exist: joining would hang.
            if std::process::id() == self.pid {
                let _ = h.join();
            }
        }
    }
}

/// Marks the writer gone however it ends, so no caller waits forever.
struct GoneGuard<'a>(&'a Shared);

impl Drop for GoneGuard<'_> {
    fn drop(&mut self) {
        let mut q = self.0.q.lock();
        q.writer_gone = true;
        if q.last_error.is_none() && !q.shutdown {
            q.last_error = Some(AuditError::WriterStopped);
        }
        drop(q);
        self.0.progress.notify_all();
    }
}

fn writer_main(sh: &Shared, mut seg: SegmentWriter) {
    let _guard = GoneGuard(sh);
    let mut batch = Batch::with_capacity(1024);
    loop {
        let mut q = sh.q.lock();
        loop {
            if q.shutdown || q.urgent || q.pending.len() >= EARLY_WAKE {
                break;
            }
            if !q.pending.is_empty() && q.first_at.is_none() {
                q.first_at = Some(Instant::now());
            }
            match (q.first_at, q.unreported_lost > 0) {
                (Some(first), _) if !q.pending.is_empty() => {
                    let deadline = first + BATCH_INTERVAL;
                    if Instant::now() >= deadline {
                        break;
                    }
                    sh.work.wait_until(&mut q, deadline);
                }
                (_, true) => {
                    // Nothing queued but a gap to document: retry now and then.
                    if sh.work.wait_for(&mut q, RETRY_INTERVAL).timed_out() {
                        break;
                    }
                }
                _ => sh.work.wait(&mut q),
            }
        }
        q.urgent = false;
        q.first_at = None;
        std::mem::swap(&mut q.pending, &mut batch);
        let lo = q.done;
        let hi = q.next_ticket;
        let shutdown = q.shutdown;
        let lost = q.unreported_lost;
        let gap_error = q.last_error.as_ref().map(|e| e.to_string());
        let lost_since = q.lost_since_us;
        drop(q);
        sh.progress.notify_all(); // producers blocked on a full queue

        let gap = (lost > 0).then(|| gap_record(lost, lost_since, gap_error.as_deref()));
        let before = seg.written;
        let result = if batch.is_empty() && gap.is_none() {
            Ok(())
        } else {
            seg.write_records(gap.as_ref(), &batch)
        };
        // A failed batch may still have committed its first records (before a rotation).
        let committed = seg.written - before;
        let gap_written = gap.is_some() && committed > 0;
        let batch_committed = committed - u64::from(gap_written);

        let mut q = sh.q.lock();
        q.stats.written = seg.written;
        q.stats.syncs = seg.syncs;
        if gap_written {
            q.unreported_lost -= lost;
        }
        match result {
            Ok(()) => q.last_error = None,
            Err(e) => {
                let failed = usize::try_from(batch_committed)
                    .ok()
                    .and_then(|n| batch.recs.get(n..))
                    .unwrap_or(&[]);
                if sh.durability == Durability::Sync {
                    note_failure(&mut q.failures, lo + batch_committed, hi, &e);
                } else if let Some(first) = failed.first() {
                    if q.unreported_lost == 0 {
                        q.lost_since_us = first.time_us;
                    }
                    q.unreported_lost += failed.len() as u64;
                    q.stats.lost += failed.len() as u64;
                }
                q.last_error = Some(e);
            }
        }
        q.done = hi;
        let finished = shutdown && q.pending.is_empty();
        drop(q);
        sh.progress.notify_all();
        batch.clear();
        batch.shrink(MAX_PENDING / 4); // after a backlog, give the memory back
        if finished {
            // A clean close pins the segment's end in the manifest.
            let _ = seg.seal();
            return;
        }
    }
}

fn note_failure(failures: &mut Vec<(u64, u64, AuditError)>, lo: u64, hi: u64, e: &AuditError) {
    if lo == hi {
        return;
    }
    if let Some(last) = failures.last_mut() {
        if last.1 == lo && last.2 == *e {
            last.1 = hi;
            return;
        }
    }
    if failures.len() >= MAX_FAILURES {
        failures.remove(0);
    }
    failures.push((lo, hi, e.clone()));
}

/// Documents lost records; dated at the first of them, so it sorts before later records.
fn gap_record(lost: u64, since_us: i64, error: Option<&str>) -> Batch {
    let mut e = Event::new(super::ops::AUDIT_GAP, "CKR_FUNCTION_FAILED");
    e.reason = Some(format!(
        "{lost} audit record(s) could not be written: {}",
        error.unwrap_or("unknown error")
    ));
    e.detail = Some(serde_json::json!({ "lost": lost }));
    let mut b = Batch::default();
    b.push(since_us, &e);
    b
}
