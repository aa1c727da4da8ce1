//! `verify`: checks every segment, every chain and the manifest; `read_records`.
//!
//! What is checked, and how each tampering shows:
//! - each line is a JSON record whose `seq` counts from 0 and whose `prev` is the SHA-256
//!   of the previous line's exact bytes (edit → the next line's `prev` no longer matches,
//!   reported at the edited line; delete/insert/swap → `seq` and `prev` mismatches);
//! - a segment's first record has `prev` = 64 zeros when it starts a chain, or names its
//!   predecessor (`continues`) and carries the hash of the predecessor's last line;
//! - `segments.log` (itself a hash chain) lists every segment created: a listed file that
//!   is missing (deleted/renamed) or a present file not listed (renamed/copied) is reported;
//! - a segment sealed in the manifest (rotation or clean close) must still hold exactly the
//!   sealed record count ending in the sealed hash (catches removal of its last records);
//! - a final line without newline is a *torn tail* and is reported as a problem. A torn
//!   tail only arises from a crash or power loss mid-write; in `sync` mode records are
//!   acknowledged only after fsync, so an acknowledged record is never in a torn tail.
//!
//! Limit: the newest segment of a running (or crashed) process has no seal yet, so its
//! last records could be removed, or its very last record edited, without a trace: such
//! segments are listed in `open_segments`. A hash chain without a secret detects edits;
//! it cannot stop someone who rewrites every hash after the edit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::clock::parse_time;
use super::event::{line_hash, Hex64, ZERO_HASH};
use super::segment::{io_err, ManifestLine, SegmentName, MANIFEST, SEGMENT_EXT};
use super::AuditError;

/// Something wrong in the log. `line` is 1-based (a record's `seq` is `line - 1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub what: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub segments: usize,
    pub records: u64,
    pub problems: Vec<Problem>,
    /// Segments whose end is not pinned by a seal or a successor (a process still writing,
    /// or one that ended without closing the log). Not a problem in itself.
    pub open_segments: Vec<PathBuf>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One complete line of a file, or the torn remainder.
struct Lines<'a> {
    complete: Vec<&'a [u8]>,
    torn: Option<&'a [u8]>,
}

fn split_lines(data: &[u8]) -> Lines<'_> {
    let mut complete: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    // `split` yields a last piece after the final '\n' (empty when the file ends in one).
    let last = complete.pop().unwrap_or_default();
    Lines {
        complete,
        torn: (!last.is_empty()).then_some(last),
    }
}

struct SegScan {
    name: SegmentName,
    path: PathBuf,
    lines: u64,
    first_prev: Option<String>,
    first_continues: Option<String>,
    has_first: bool,
    last_hash: Option<[u8; 32]>,
}

#[derive(Default)]
struct Manifest {
    exists: bool,
    /// file → manifest line number of its "create"
    created: BTreeMap<String, u64>,
    /// file → (line, records, last)
    sealed: HashMap<String, (u64, Option<u64>, Option<String>)>,
}

struct Reporter<'a> {
    rep: &'a mut VerifyReport,
    /// Whether a problem found could be a writer caught mid-way (a segment being
    /// created, a line being appended) rather than damage.
    transient: bool,
}

impl Reporter<'_> {
    fn add(&mut self, file: &Path, line: Option<u64>, what: impl Into<String>) {
        self.rep.problems.push(Problem {
            file: file.to_path_buf(),
            line,
            what: what.into(),
        });
    }

    fn add_transient(&mut self, file: &Path, line: Option<u64>, what: impl Into<String>) {
        self.transient = true;
        self.add(file, line, what);
    }
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn scan_manifest(dir: &Path, r: &mut Reporter<'_>) -> Manifest {
    let path = dir.join(MANIFEST);
    let mut m = Manifest::default();
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return m,
        Err(e) => {
            r.add_transient(&path, None, format!("cannot read: {e}"));
            return m;
        }
    };
    m.exists = true;
    let lines = split_lines(&data);
    let mut prev = ZERO_HASH;
    for (i, raw) in lines.complete.iter().enumerate() {
        let ln = i as u64 + 1;
        let parsed: Option<ManifestLine> = serde_json::from_slice(raw).ok();
        match parsed {
            None => r.add(
                &path,
                Some(ln),
                "not a valid manifest line (altered or torn)",
            ),
            Some(l) => {
                if l.prev != Hex64::new(&prev).as_str() {
                    r.add(
                        &path,
                        Some(ln),
                        "manifest chain break: prev does not match the hash of the line before \
                         (a manifest line was altered, removed or inserted)",
                    );
                }
                match l.event.as_str() {
                    "create" => {
                        if m.created.insert(l.file.clone(), ln).is_some() {
                            r.add(&path, Some(ln), format!("{} is listed twice", l.file));
                        }
                    }
                    "seal" => {
                        if !m.created.contains_key(&l.file) {
                            r.add(&path, Some(ln), format!("{} sealed before created", l.file));
                        }
                        if m.sealed
                            .insert(l.file.clone(), (ln, l.records, l.last))
                            .is_some()
                        {
                            r.add(&path, Some(ln), format!("{} sealed twice", l.file));
                        }
                    }
                    other => r.add(&path, Some(ln), format!("unknown manifest event {other:?}")),
                }
            }
        }
        prev = line_hash(raw);
    }
    if let Some(t) = lines.torn {
        r.add_transient(
            &path,
            Some(lines.complete.len() as u64 + 1),
            format!("torn tail: last line ({} bytes) has no newline", t.len()),
        );
    }
    m
}

fn scan_segment(path: &Path, name: SegmentName, r: &mut Reporter<'_>) -> Option<SegScan> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) => {
            r.add_transient(path, None, format!("cannot read: {e}"));
            return None;
        }
    };
    let lines = split_lines(&data);
    let mut s = SegScan {
        name,
        path: path.to_path_buf(),
        lines: lines.complete.len() as u64,
        first_prev: None,
        first_continues: None,
        has_first: false,
        last_hash: None,
    };
    let mut issues: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut note = |ln: u64, what: String| issues.entry(ln).or_default().push(what);
    let mut expected_seq: u64 = 0;
    let mut prev_hash: Option<[u8; 32]> = None;
    let pid = u64::from(s.name.pid);
    for (i, raw) in lines.complete.iter().enumerate() {
        let ln = i as u64 + 1;
        let hash = line_hash(raw);
        let v: Option<Value> = serde_json::from_slice(raw).ok().filter(Value::is_object);
        let Some(v) = v else {
            note(ln, "not a valid JSON record (altered or torn)".into());
            expected_seq += 1;
            prev_hash = Some(hash);
            continue;
        };
        if i == 0 {
            s.has_first = true;
            s.first_prev = str_field(&v, "prev").map(str::to_string);
            s.first_continues = str_field(&v, "continues").map(str::to_string);
        } else if v.get("continues").is_some() {
            note(
                ln,
                "`continues` on a record that does not start a segment".into(),
            );
        }
        let seq = v.get("seq").and_then(Value::as_u64);
        let seq_ok = seq == Some(expected_seq);
        if !seq_ok {
            note(
                ln,
                format!(
                    "seq is {}, expected {expected_seq}: a record was removed, inserted or \
                     reordered here",
                    seq.map_or("missing".to_string(), |n| n.to_string())
                ),
            );
        }
        expected_seq = seq.map_or(expected_seq, |n| n.saturating_add(1).max(expected_seq));
        if let Some(ph) = prev_hash {
            if str_field(&v, "prev") != Some(Hex64::new(&ph).as_str()) {
                if seq_ok {
                    note(
                        ln - 1,
                        format!("record altered: its hash does not match the `prev` of line {ln}"),
                    );
                } else {
                    note(
                        ln,
                        format!("chain break: `prev` does not match line {}", ln - 1),
                    );
                }
            }
        }
        if str_field(&v, "host") != Some(s.name.host.as_str())
            || v.get("pid").and_then(Value::as_u64) != Some(pid)
        {
            note(
                ln,
                "host/pid do not match the file name (record moved from another segment)".into(),
            );
        }
        let time_ok = str_field(&v, "time").and_then(parse_time).is_some();
        if !time_ok || str_field(&v, "op").is_none() || str_field(&v, "result").is_none() {
            note(ln, "missing or malformed time/op/result".into());
        }
        prev_hash = Some(hash);
    }
    s.last_hash = prev_hash;
    for (ln, whats) in issues {
        r.add(path, Some(ln), whats.join("; "));
    }
    if let Some(t) = lines.torn {
        r.add_transient(
            path,
            Some(s.lines + 1),
            format!(
                "torn tail: last line ({} bytes) has no newline (write interrupted by a crash, \
                 or the file was truncated)",
                t.len()
            ),
        );
    }
    Some(s)
}

/// Lists the segment files of `dir` in chain order; other `.jsonl` names are reported.
fn list_segments(
    dir: &Path,
    r: Option<&mut Reporter<'_>>,
) -> Result<Vec<(SegmentName, PathBuf)>, AuditError> {
    let rd = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    let mut segs = Vec::new();
    let mut odd = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| io_err(dir, e))?;
        let fname = ent.file_name().to_string_lossy().into_owned();
        if !fname.ends_with(SEGMENT_EXT) {
            continue;
        }
        match SegmentName::parse(&fname) {
            Some(n) => segs.push((n, ent.path())),
            None => odd.push(ent.path()),
        }
    }
    if let Some(r) = r {
        for p in odd {
            r.add(
                &p,
                None,
                "not a segment name and not listed in segments.log (renamed or inserted)",
            );
        }
    }
    segs.sort();
    Ok(segs)
}

/// Checks every segment and chain in `dir`. Safe to run while processes write: when a
/// problem could be a writer caught mid-way (a torn last line, a segment created but not
/// yet in the manifest), the check is repeated after 250 ms and only problems found both
/// times are reported.
pub fn verify(dir: &Path) -> VerifyReport {
    let (first, transient) = verify_once(dir);
    if !transient {
        return first;
    }
    std::thread::sleep(std::time::Duration::from_millis(250));
    let (mut second, _) = verify_once(dir);
    second.problems.retain(|p| first.problems.contains(p));
    second
}

fn verify_once(dir: &Path) -> (VerifyReport, bool) {
    let mut rep = VerifyReport::default();
    let mut r = Reporter {
        rep: &mut rep,
        transient: false,
    };
    let segs = match list_segments(dir, Some(&mut r)) {
        Ok(s) => s,
        Err(e) => {
            r.add(dir, None, format!("cannot list the audit directory: {e}"));
            return (rep, false);
        }
    };
    let manifest = scan_manifest(dir, &mut r);
    let mpath = dir.join(MANIFEST);
    if !manifest.exists && !segs.is_empty() {
        r.add_transient(&mpath, None, "segments.log is missing");
    }
    let mut scans: Vec<SegScan> = Vec::new();
    for (name, path) in segs {
        if let Some(s) = scan_segment(&path, name, &mut r) {
            scans.push(s);
        }
    }
    let present: HashSet<String> = scans.iter().map(|s| s.name.file_name()).collect();
    for (file, ln) in &manifest.created {
        if !present.contains(file) {
            r.add_transient(
                &dir.join(file),
                None,
                format!("listed in segments.log (line {ln}) but missing: deleted or renamed"),
            );
        }
    }
    let mut carry = ZERO_HASH;
    for (i, s) in scans.iter().enumerate() {
        let fname = s.name.file_name();
        // An empty unlisted segment is what a writer killed between creating its file
        // and listing it leaves: it holds no record, so nothing was lost or added.
        let empty = std::fs::metadata(&s.path)
            .map(|m| m.len() == 0)
            .unwrap_or(false);
        if manifest.exists && !manifest.created.contains_key(&fname) && !empty {
            r.add_transient(
                &s.path,
                None,
                "not listed in segments.log: renamed, copied or inserted",
            );
        }
        let starts_chain = i == 0 || scans[i - 1].name.chain() != s.name.chain();
        if starts_chain {
            carry = ZERO_HASH;
        }
        let pred = s.name.predecessor();
        let pred_present = !starts_chain && pred.as_ref() == Some(&scans[i - 1].name);
        if s.has_first {
            match &pred {
                None => {
                    if s.first_continues.is_some() {
                        r.add(&s.path, Some(1), "first segment of a chain has `continues`");
                    }
                }
                Some(p) => {
                    let pname = p.file_name();
                    if s.first_continues.as_deref() != Some(pname.as_str()) {
                        r.add(
                            &s.path,
                            Some(1),
                            format!(
                                "should continue {pname}, but `continues` is {:?}",
                                s.first_continues
                            ),
                        );
                    }
                    if !pred_present {
                        r.add(
                            &s.path,
                            Some(1),
                            format!("continues {pname}, which is missing"),
                        );
                    }
                }
            }
            if (pred.is_none() || pred_present)
                && s.first_prev.as_deref() != Some(Hex64::new(&carry).as_str())
            {
                r.add(
                    &s.path,
                    Some(1),
                    "chain break at the segment start: `prev` does not match the end of the \
                     previous segment (or 64 zeros for a new chain)",
                );
            }
        }
        if let Some(h) = s.last_hash {
            carry = h;
        }
        let has_successor = scans
            .get(i + 1)
            .is_some_and(|n| n.name.chain() == s.name.chain());
        let carry_hex = Hex64::new(&carry);
        if let Some((ln, records, last)) = manifest.sealed.get(&fname) {
            if *records != Some(s.lines) || last.as_deref() != Some(carry_hex.as_str()) {
                r.add(
                    &s.path,
                    (s.lines > 0).then_some(s.lines),
                    format!(
                        "does not match its seal (segments.log line {ln}: {} records): \
                         records at the end were removed, added or altered",
                        records.map_or("?".to_string(), |n| n.to_string())
                    ),
                );
            }
        } else if !has_successor {
            r.rep.open_segments.push(s.path.clone());
        }
    }
    let transient = r.transient;
    rep.segments = scans.len();
    rep.records = scans.iter().map(|s| s.lines).sum();
    (rep, transient)
}

/// Every record of every segment (unparseable lines skipped; `verify` reports them), in time
/// order across segments (ties in chain order).
pub fn read_records(dir: &Path) -> Result<Vec<Value>, AuditError> {
    let mut out = Vec::new();
    for (_, path) in list_segments(dir, None)? {
        let data = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        for raw in split_lines(&data).complete {
            if let Ok(v) = serde_json::from_slice::<Value>(raw) {
                if v.is_object() {
                    out.push(v);
                }
            }
        }
    }
    // Fixed-width UTC times sort as strings.
    out.sort_by(|a, b| str_field(a, "time").cmp(&str_field(b, "time")));
    Ok(out)
}
