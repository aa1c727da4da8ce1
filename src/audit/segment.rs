//! Segment files and the manifest.
//!
//! A process writes its own chain of segments `<host>-<pid>-<start-unix-micros>-<seq>.jsonl`
//! (`seq` 0, 1, 2, ... as it rotates). The manifest `segments.log` (append-only, shared by
//! all processes, appended under `flock`) has one line per segment created and one per
//! segment sealed (at rotation and clean close, with its record count and last hash), each
//! line carrying the hash of the previous manifest line.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::clock::{day_of, format_rfc3339_micros, now_micros, TimeText};
use super::event::{host_pid_fragment, line_hash, write_line, Batch, Hex64, LineCtx, ZERO_HASH};
use super::AuditError;

pub(crate) const MANIFEST: &str = "segments.log";
pub(crate) const SEGMENT_EXT: &str = ".jsonl";
/// Within a batch, write to the file whenever this much is buffered.
const SPILL_BYTES: usize = 1 << 20;

/// The parts of a segment file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SegmentName {
    // Field order is the sort order: chains by start time, then host, pid, seq.
    pub start_us: u64,
    pub host: String,
    pub pid: u32,
    pub seq: u64,
}

impl SegmentName {
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}-{}-{}{SEGMENT_EXT}",
            self.host, self.pid, self.start_us, self.seq
        )
    }

    /// Parses a file name; the host may itself contain '-'.
    pub fn parse(name: &str) -> Option<SegmentName> {
        let stem = name.strip_suffix(SEGMENT_EXT)?;
        let mut it = stem.rsplitn(4, '-');
        let seq = it.next()?.parse().ok()?;
        let start_us = it.next()?.parse().ok()?;
        let pid = it.next()?.parse().ok()?;
        let host = it.next()?.to_string();
        if host.is_empty() {
            return None;
        }
        let n = SegmentName {
            start_us,
            host,
            pid,
            seq,
        };
        // Only the canonical spelling (no leading zeros, '+' signs...).
        (n.file_name() == name).then_some(n)
    }

    pub fn chain(&self) -> (u64, &str, u32) {
        (self.start_us, &self.host, self.pid)
    }

    pub fn predecessor(&self) -> Option<SegmentName> {
        let seq = self.seq.checked_sub(1)?;
        Some(SegmentName {
            seq,
            ..self.clone()
        })
    }
}

/// This machine's name, made safe for a file name.
pub(crate) fn host_name() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "unknown".to_string()
    } else {
        clean
    }
}

pub(crate) fn io_err(path: &Path, e: std::io::Error) -> AuditError {
    AuditError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// One manifest line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ManifestLine {
    /// "create" | "seal"
    pub event: String,
    pub file: String,
    pub time: String,
    /// For "seal": how many records the segment holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// For "seal": the chain hash after the segment's last record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    pub prev: String,
}

/// The last complete line of a file that fits in the tail `buf` (empty when none).
fn last_line(buf: &[u8]) -> &[u8] {
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => &body[i + 1..],
        None => body,
    }
}

/// Appends a line to the manifest, chained to its current last line, under an exclusive
/// `flock` so that processes appending at once keep one chain; fsyncs it.
pub(crate) fn append_manifest(
    dir: &Path,
    event: &str,
    file: &str,
    seal: Option<(u64, &[u8; 32])>,
) -> Result<(), AuditError> {
    let path = dir.join(MANIFEST);
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io_err(&path, e.into()))?;
    let len = f.metadata().map_err(|e| io_err(&path, e))?.len();
    // Manifest lines are short; the last one is within the final 4 KiB.
    let from = len.saturating_sub(4096);
    let mut tail = Vec::new();
    f.seek(SeekFrom::Start(from))
        .and_then(|_| f.read_to_end(&mut tail))
        .map_err(|e| io_err(&path, e))?;
    let mut out = Vec::with_capacity(256);
    let prev = if tail.is_empty() {
        ZERO_HASH
    } else {
        if !tail.ends_with(b"\n") {
            // A torn line (crash mid-append): close it; verify reports it.
            out.push(b'\n');
        }
        line_hash(last_line(&tail))
    };
    let line = ManifestLine {
        event: event.to_string(),
        file: file.to_string(),
        time: format_rfc3339_micros(now_micros()),
        records: seal.map(|(n, _)| n),
        last: seal.map(|(_, h)| Hex64::new(h).as_str().to_string()),
        prev: Hex64::new(&prev).as_str().to_string(),
    };
    serde_json::to_writer(&mut out, &line)
        .map_err(|e| AuditError::Unwritable(format!("cannot encode manifest line: {e}")))?;
    out.push(b'\n');
    f.write_all(&out)
        .and_then(|_| f.sync_data())
        .map_err(|e| io_err(&path, e))?;
    if len == 0 {
        sync_dir(dir)?;
    }
    Ok(())
    // Dropping `f` closes it and releases the lock.
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// A record and its time, for tests that drive a `SegmentWriter` directly.
#[cfg(test)]
pub(crate) struct Pending {
    pub time_us: i64,
    pub event: super::Event,
}

struct OpenSegment {
    file: File,
    name: SegmentName,
    path: PathBuf,
    /// Committed (written and fsync'd) records and bytes.
    records: u64,
    bytes: u64,
    /// Bytes of the batch in progress already written (not yet fsync'd, not committed).
    unsynced: u64,
    day: i64,
    /// The predecessor this segment's first record names (rotation continuation).
    continues: Option<String>,
}

/// Writes batches of records into this process's chain of segments. Used by the writer
/// thread only.
pub(crate) struct SegmentWriter {
    dir: PathBuf,
    host: String,
    pid: u32,
    /// `,"host":"<host>","pid":<pid>`, the same in every line.
    host_pid: Vec<u8>,
    start_us: u64,
    max_bytes: u64,
    cur: Option<OpenSegment>,
    /// Seq of the next segment file to create.
    next_seq: u64,
    /// Chain hash after the last committed record (zeros before the first).
    last_hash: [u8; 32],
    buf: Vec<u8>,
    time: TimeText,
    /// Count of fsync'd batches (for group-commit statistics).
    pub syncs: u64,
    pub written: u64,
}

impl SegmentWriter {
    pub fn new(dir: &Path, max_bytes: u64) -> SegmentWriter {
        let host = host_name();
        let pid = std::process::id();
        SegmentWriter {
            dir: dir.to_path_buf(),
            host_pid: host_pid_fragment(&host, pid),
            host,
            pid,
            start_us: u64::try_from(now_micros()).unwrap_or(0),
            max_bytes: max_bytes.max(1),
            cur: None,
            next_seq: 0,
            last_hash: ZERO_HASH,
            buf: Vec::with_capacity(64 * 1024),
            time: TimeText::default(),
            syncs: 0,
            written: 0,
        }
    }

    /// Creates the next segment file and announces it in the manifest.
    fn open_segment(&mut self, day: i64) -> Result<(), AuditError> {
        let mut attempts = 0;
        loop {
            let name = SegmentName {
                start_us: self.start_us,
                host: self.host.clone(),
                pid: self.pid,
                seq: self.next_seq,
            };
            let fname = name.file_name();
            let path = self.dir.join(&fname);
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
            let file = match file {
                Ok(f) => f,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AlreadyExists
                        && self.next_seq == 0
                        && attempts < 1000 =>
                {
                    // Another log opened in the same microsecond: take the next one.
                    attempts += 1;
                    self.start_us += 1;
                    continue;
                }
                Err(e) => return Err(io_err(&path, e)),
            };
            if let Err(e) = append_manifest(&self.dir, "create", &fname, None) {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
            self.next_seq += 1;
            self.cur = Some(OpenSegment {
                file,
                continues: name.predecessor().map(|p| p.file_name()),
                name,
                path,
                records: 0,
                bytes: 0,
                unsynced: 0,
                day,
            });
            // The new name must survive a crash, not just its manifest line.
            return sync_dir(&self.dir);
        }
    }

    /// Records the current segment's final state in the manifest and closes it.
    pub fn seal(&mut self) -> Result<(), AuditError> {
        if let Some(seg) = self.cur.take() {
            append_manifest(
                &self.dir,
                "seal",
                &seg.name.file_name(),
                Some((seg.records, &self.last_hash)),
            )?;
        }
        Ok(())
    }

    /// After a failed write: cut the file back to its committed length and leave it, so
    /// the next batch starts a fresh segment continuing the chain from the last good record.
    fn abandon(&mut self) {
        if let Some(seg) = &self.cur {
            let cut = seg
                .file
                .set_len(seg.bytes)
                .and_then(|_| seg.file.sync_data());
            if cut.is_ok() {
                let _ = self.seal();
            }
        }
        self.cur = None;
    }

    /// Writes `buf` to the current segment and fsyncs it; on success the staged state is
    /// committed.
    fn commit(&mut self, staged_records: u64, staged_hash: [u8; 32]) -> Result<(), AuditError> {
        let Some(seg) = self.cur.as_mut() else {
            return if self.buf.is_empty() {
                Ok(())
            } else {
                Err(AuditError::Unwritable("no open segment".into()))
            };
        };
        if self.buf.is_empty() && seg.unsynced == 0 {
            return Ok(());
        }
        seg.file
            .write_all(&self.buf)
            .and_then(|_| seg.file.sync_data())
            .map_err(|e| io_err(&seg.path, e))?;
        self.syncs += 1;
        self.written += staged_records - seg.records;
        let from = seg.bytes & !4095;
        seg.bytes += seg.unsynced + self.buf.len() as u64;
        // The log is written once and read rarely: give its now clean pages back, so the
        // next batch reuses recently freed (cache-warm) memory instead of growing the page
        // cache with fresh pages. Whole pages only: the last, partly written page stays
        // (else the next append would read it back from disk). Only advice: a failure
        // changes nothing.
        if let Some(len) = std::num::NonZeroU64::new((seg.bytes & !4095).saturating_sub(from)) {
            let _ = rustix::fs::fadvise(&seg.file, from, Some(len), rustix::fs::Advice::DontNeed);
        }
        seg.unsynced = 0;
        seg.records = staged_records;
        self.last_hash = staged_hash;
        seg.continues = None;
        self.buf.clear();
        Ok(())
    }

    /// Writes a batch (an optional gap record first), rotating as needed, and fsyncs it.
    /// All or nothing for the part not yet committed: on error the file is cut back.
    pub fn write_records(&mut self, gap: Option<&Batch>, batch: &Batch) -> Result<(), AuditError> {
        let r = self.write_batch_inner(gap, batch);
        if r.is_err() {
            self.buf.clear();
            self.abandon();
        }
        r
    }

    /// As `write_records`, from `Event`s.
    #[cfg(test)]
    pub fn write_batch(
        &mut self,
        gap: Option<&Pending>,
        batch: &[Pending],
    ) -> Result<(), AuditError> {
        let g = gap.map(|p| {
            let mut b = Batch::default();
            b.push(p.time_us, &p.event);
            b
        });
        let mut b = Batch::default();
        for p in batch {
            b.push(p.time_us, &p.event);
        }
        self.write_records(g.as_ref(), &b)
    }

    fn write_batch_inner(&mut self, gap: Option<&Batch>, batch: &Batch) -> Result<(), AuditError> {
        self.buf.clear();
        if let Some(seg) = &self.cur {
            // Deleted under us: writing on would lose records silently. Move on to a new
            // segment continuing the chain (verify reports the missing one).
            let nlink = seg
                .file
                .metadata()
                .map_err(|e| io_err(&seg.path, e))?
                .nlink();
            if nlink == 0 {
                self.cur = None;
            }
        }
        let mut staged_records = self.cur.as_ref().map_or(0, |s| s.records);
        let mut staged_hash = self.last_hash;
        let records = gap
            .into_iter()
            .flat_map(|g| g.recs.iter().map(move |r| (g, r)))
            .chain(batch.recs.iter().map(|r| (batch, r)));
        for (b, p) in records {
            let day = day_of(p.time_us);
            let rotate = match &self.cur {
                None => true,
                Some(seg) => {
                    let size = seg.bytes + seg.unsynced + self.buf.len() as u64;
                    staged_records > 0 && (size >= self.max_bytes || day > seg.day)
                }
            };
            if rotate {
                self.commit(staged_records, staged_hash)?;
                self.seal()?;
                self.open_segment(day)?;
                staged_records = 0;
            }
            let Some(seg) = self.cur.as_ref() else {
                return Err(AuditError::Unwritable("no open segment".into()));
            };
            let start = self.buf.len();
            let ctx = LineCtx {
                seq: staged_records,
                time: self.time.of(p.time_us),
                host_pid: &self.host_pid,
                continues: if staged_records == 0 {
                    seg.continues.as_deref()
                } else {
                    None
                },
                prev: &staged_hash,
            };
            write_line(&mut self.buf, b, p, &ctx);
            staged_hash = line_hash(&self.buf[start..]);
            self.buf.push(b'\n');
            staged_records += 1;
            if self.buf.len() >= SPILL_BYTES {
                // A large batch goes out in pieces (one fsync at the end).
                if let Some(seg) = self.cur.as_mut() {
                    seg.file
                        .write_all(&self.buf)
                        .map_err(|e| io_err(&seg.path, e))?;
                    seg.unsynced += self.buf.len() as u64;
                    self.buf.clear();
                }
            }
        }
        self.commit(staged_records, staged_hash)
    }
}
