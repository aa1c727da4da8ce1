//! Unit tests: round trip, tampering, rotation, concurrency, failures.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::segment::{Pending, SegmentName, SegmentWriter};
use super::tests_tamper::rotated_log;
use super::*;

pub(super) fn ev(i: u64) -> Event {
    Event {
        op: "sign",
        session: Some(7),
        user: Some("user"),
        mechanism: Some("CKM_ECDSA".into()),
        key_id: Some(format!("key-{}", i % 3).into()),
        key_version: Some(2),
        instance: Some(format!("hsm-{}", i % 2).into()),
        result: "CKR_OK",
        latency_us: Some(55),
        reason: None,
        detail: Some(json!({ "i": i })),
    }
}

pub(super) fn cfg(dir: &Path, d: Durability, max: u64) -> AuditConfig {
    AuditConfig {
        dir: dir.to_path_buf(),
        durability: d,
        max_segment_bytes: max,
    }
}

/// Writes `n` records and closes the log (sealing its last segment).
pub(super) fn write_log(dir: &Path, n: u64, max: u64) {
    let log = AuditLog::open(&cfg(dir, Durability::Batch, max)).unwrap();
    for i in 0..n {
        log.record(ev(i)).unwrap();
    }
    log.flush().unwrap();
}

pub(super) fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(SegmentName, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let n = SegmentName::parse(p.file_name()?.to_str()?)?;
            Some((n, p))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

pub(super) fn lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

pub(super) fn write_lines(p: &Path, ls: &[String]) {
    let mut s = ls.join("\n");
    s.push('\n');
    fs::write(p, s).unwrap();
}

/// The problems, asserting there is at least one and printing them for the test log.
pub(super) fn problems(dir: &Path) -> Vec<Problem> {
    let rep = verify(dir);
    assert!(!rep.is_intact(), "tampering not detected");
    eprintln!("{}", render_report(dir, &rep));
    rep.problems
}

pub(super) fn has(ps: &[Problem], file: &Path, line: Option<u64>, words: &str) -> bool {
    ps.iter()
        .any(|p| p.file == file && p.line == line && p.what.contains(words))
}

pub(super) fn intact(dir: &Path) -> VerifyReport {
    let rep = verify(dir);
    assert!(rep.is_intact(), "{}", render_report(dir, &rep));
    rep
}

#[test]
fn clean_log_verifies_and_reads_back() {
    let d = tempfile::tempdir().unwrap();
    {
        let log = AuditLog::open(&cfg(d.path(), Durability::Batch, 1 << 20)).unwrap();
        for i in 0..100 {
            log.record(ev(i)).unwrap();
        }
    } // drop: flush and seal
    let rep = intact(d.path());
    assert_eq!((rep.segments, rep.records), (1, 100));
    assert!(rep.open_segments.is_empty(), "closed log is sealed");
    let recs = read_records(d.path()).unwrap();
    assert_eq!(recs.len(), 100);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["seq"], json!(i));
        assert_eq!(r["detail"]["i"], json!(i));
        assert_eq!(r["pid"], json!(std::process::id()));
        for k in [
            "time",
            "host",
            "session",
            "user",
            "op",
            "mechanism",
            "key_id",
            "key_version",
            "instance",
            "result",
            "latency_us",
            "reason",
            "detail",
            "prev",
        ] {
            assert!(r.get(k).is_some(), "field {k} missing");
        }
    }
    assert_eq!(recs[0]["prev"], json!("0".repeat(64)));
    assert_eq!(recs[3]["instance"], json!("hsm-1"));
    let t = recs[0]["time"].as_str().unwrap();
    assert!(t.ends_with('Z') && t.len() == 27, "{t}");
    // Files are private.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&segments(d.path())[0])
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn dir_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("a/audit");
    drop(AuditLog::open(&cfg(&dir, Durability::Batch, 1 << 20)).unwrap());
    let mode = fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn rotation_by_size_keeps_the_chain() {
    let d = tempfile::tempdir().unwrap();
    let segs = rotated_log(d.path());
    let rep = intact(d.path());
    assert_eq!(rep.records, 300);
    assert_eq!(rep.segments, segs.len());
    for w in segs.windows(2) {
        let first = &lines(&w[1])[0];
        let v: serde_json::Value = serde_json::from_str(first).unwrap();
        let pred = w[0].file_name().unwrap().to_str().unwrap();
        assert_eq!(v["continues"], json!(pred));
        let last = lines(&w[0]).pop().unwrap();
        assert_eq!(
            v["prev"],
            json!(hex::encode(super::event::line_hash(last.as_bytes())))
        );
        assert!(fs::metadata(&w[0]).unwrap().len() <= 4096 + 600);
    }
    let recs = read_records(d.path()).unwrap();
    let is: Vec<u64> = recs
        .iter()
        .map(|r| r["detail"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(is, (0..300).collect::<Vec<_>>());
}

#[test]
fn rotation_at_utc_midnight() {
    let d = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::new(d.path(), 1 << 20);
    let midnight = 20_000 * super::clock::MICROS_PER_DAY;
    let batch: Vec<Pending> = (0..10)
        .map(|i| Pending {
            time_us: midnight - 5_000_000 + i * 1_000_000,
            event: ev(i as u64),
        })
        .collect();
    w.write_batch(None, &batch).unwrap();
    w.seal().unwrap();
    let segs = segments(d.path());
    assert_eq!(segs.len(), 2);
    assert_eq!(lines(&segs[0]).len(), 5);
    assert!(lines(&segs[1])[0].contains("T00:00:00.000000Z"));
    assert_eq!(intact(d.path()).records, 10);
}

#[test]
fn eight_threads_verify_clean() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&cfg(d.path(), Durability::Batch, 64 * 1024)).unwrap();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let log = &log;
            s.spawn(move || {
                for i in 0..500 {
                    log.record(ev(t * 1000 + i)).unwrap();
                }
            });
        }
    });
    log.flush().unwrap();
    assert_eq!(log.stats().written, 4000);
    drop(log);
    let rep = intact(d.path());
    assert_eq!(rep.records, 4000);
    // Each thread's records are in its own order.
    let mut last = [None::<u64>; 8];
    for r in read_records(d.path()).unwrap() {
        let i = r["detail"]["i"].as_u64().unwrap();
        let t = (i / 1000) as usize;
        assert!(last[t] < Some(i));
        last[t] = Some(i);
    }
}

#[test]
fn sync_mode_group_commits_and_verifies() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&cfg(d.path(), Durability::Sync, 1 << 20)).unwrap();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let log = &log;
            s.spawn(move || {
                for i in 0..50 {
                    log.record(ev(t * 1000 + i)).unwrap();
                }
            });
        }
    });
    let st = log.stats();
    eprintln!("sync: {st:?}");
    assert_eq!(st.written, 400);
    assert!(st.syncs < st.written, "no group commit: {st:?}");
    drop(log);
    assert_eq!(intact(d.path()).records, 400);
}

#[test]
fn off_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("audit");
    let log = AuditLog::open(&cfg(&dir, Durability::Off, 1 << 20)).unwrap();
    for i in 0..10 {
        log.record(ev(i)).unwrap();
    }
    log.flush().unwrap();
    log.health().unwrap();
    drop(log);
    assert!(!dir.exists());
}

/// Makes `dir` unusable by putting a regular file in its place (works as root, unlike
/// chmod). Returns a guard that restores a fresh directory.
fn break_dir(dir: &Path) {
    fs::remove_dir_all(dir).unwrap();
    fs::write(dir, b"not a directory").unwrap();
}

fn fix_dir(dir: &Path) {
    fs::remove_file(dir).unwrap();
    fs::create_dir(dir).unwrap();
}

#[test]
fn unwritable_dir_sync_fails_the_record() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("audit");
    let log = AuditLog::open(&cfg(&dir, Durability::Sync, 1 << 20)).unwrap();
    break_dir(&dir);
    let e = log.record(ev(1)).unwrap_err();
    assert!(matches!(e, AuditError::Io { .. }), "{e}");
    assert!(log.health().is_err());
    let ck: crate::error::Error = e.into();
    assert_eq!(ck.rv, pkcs11_sys::CKR_FUNCTION_FAILED);
    fix_dir(&dir);
    log.record(ev(2)).unwrap();
    log.health().unwrap();
    drop(log);
    let recs = read_records(&dir).unwrap();
    assert_eq!(
        recs.len(),
        1,
        "the failed record was not written, no gap: the op failed"
    );
    assert_eq!(recs[0]["detail"]["i"], json!(2));
    intact(&dir);
}

#[test]
fn unwritable_dir_batch_reports_via_health_and_documents_the_gap() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("audit");
    let log = AuditLog::open(&cfg(&dir, Durability::Batch, 1 << 20)).unwrap();
    break_dir(&dir);
    log.record(ev(1)).unwrap(); // returns at once
    log.record(ev(2)).unwrap();
    let e = log.flush().unwrap_err();
    assert!(matches!(e, AuditError::Lost { count: 2, .. }), "{e}");
    assert!(log.health().is_err());
    assert_eq!(log.stats().lost, 2);
    fix_dir(&dir);
    log.record(ev(3)).unwrap();
    log.flush().unwrap();
    log.health().unwrap();
    drop(log);
    let recs = read_records(&dir).unwrap();
    let ops: Vec<&str> = recs.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["audit_gap", "sign"]);
    assert_eq!(recs[0]["detail"]["lost"], json!(2));
    assert!(recs[0]["reason"]
        .as_str()
        .unwrap()
        .contains("2 audit record(s)"));
    assert_eq!(recs[1]["detail"]["i"], json!(3));
    intact(&dir);
}

#[test]
fn segment_deleted_while_open_moves_on_and_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&cfg(d.path(), Durability::Batch, 1 << 20)).unwrap();
    log.record(ev(0)).unwrap();
    log.flush().unwrap();
    let gone = segments(d.path())[0].clone();
    fs::remove_file(&gone).unwrap();
    log.record(ev(1)).unwrap();
    log.flush().unwrap();
    drop(log);
    let segs = segments(d.path());
    assert_eq!(segs.len(), 1);
    assert_eq!(read_records(d.path()).unwrap()[0]["detail"]["i"], json!(1));
    let ps = problems(d.path());
    assert!(has(&ps, &gone, None, "missing"), "{ps:?}");
    assert!(has(&ps, &segs[0], Some(1), "missing"), "{ps:?}");
}

#[test]
fn health_recovers_without_new_records() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("audit");
    let log = AuditLog::open(&cfg(&dir, Durability::Batch, 1 << 20)).unwrap();
    break_dir(&dir);
    log.record(ev(1)).unwrap();
    assert!(log.flush().is_err());
    fix_dir(&dir);
    // The writer retries the gap record on its own.
    let t0 = std::time::Instant::now();
    while log.health().is_err() {
        assert!(t0.elapsed().as_secs() < 10, "health never recovered");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(log);
    let recs = read_records(&dir).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["op"], json!("audit_gap"));
}

#[test]
fn segment_names_parse_canonically() {
    let n = SegmentName::parse("web-01.example-4242-1700000000000000-3.jsonl").unwrap();
    assert_eq!((n.host.as_str(), n.pid, n.seq), ("web-01.example", 4242, 3));
    assert_eq!(
        n.file_name(),
        "web-01.example-4242-1700000000000000-3.jsonl"
    );
    for bad in [
        "a-1-2-03.jsonl",
        "a-1-2.jsonl",
        "-1-2-3.jsonl",
        "a-1-2-3.json",
        "a-x-2-3.jsonl",
    ] {
        assert_eq!(SegmentName::parse(bad), None, "{bad}");
    }
}

#[test]
fn show_filter_and_commands() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 30, 1 << 20);
    let recs = read_records(d.path()).unwrap();
    let f = ShowFilter::new(Some("key-1"), None, Some("sign")).unwrap();
    let hits: Vec<&serde_json::Value> = recs.iter().filter(|v| f.matches(v)).collect();
    assert_eq!(hits.len(), 10);
    let table = render_table(&hits);
    assert!(table.starts_with("TIME"));
    assert!(table.contains("key-1 v2") && table.contains("hsm-") && table.contains("55us"));
    assert!(!ShowFilter::new(None, None, Some("login"))
        .unwrap()
        .matches(&recs[0]));
    let t = recs[10]["time"].as_str().unwrap();
    let since = ShowFilter::new(None, Some(t), None).unwrap();
    let expect = recs
        .iter()
        .filter(|v| v["time"].as_str().unwrap() >= t)
        .count();
    assert!(expect >= 20);
    assert_eq!(recs.iter().filter(|v| since.matches(v)).count(), expect);
    let future = ShowFilter::new(None, Some("2999-01-01"), None).unwrap();
    assert!(!recs.iter().any(|v| future.matches(v)));
    assert!(ShowFilter::new(None, Some("last tuesday"), None).is_err());
    assert_eq!(show_command(d.path(), None, Some("bad"), None, false), 2);
    assert_eq!(
        show_command(d.path(), Some("key-2"), Some("2000-01-01"), None, true),
        0
    );
    assert_eq!(verify_command(d.path(), false), 0);
    let seg = &segments(d.path())[0];
    let mut ls = lines(seg);
    ls[3] = ls[3].replace("\"session\":7", "\"session\":8");
    write_lines(seg, &ls);
    assert_eq!(verify_command(d.path(), true), 1);
    assert_eq!(verify_command(&d.path().join("nope"), false), 1);
}

#[test]
fn empty_dir_is_intact() {
    let d = tempfile::tempdir().unwrap();
    let rep = intact(d.path());
    assert_eq!((rep.segments, rep.records), (0, 0));
}

#[test]
fn config_serde_and_defaults() {
    let c: AuditConfig = serde_json::from_value(json!({ "dir": "/x" })).unwrap();
    assert_eq!(c.durability, Durability::Batch);
    assert_eq!(c.max_segment_bytes, 64 * 1024 * 1024);
    let c: AuditConfig = serde_json::from_value(json!({ "durability": "sync" })).unwrap();
    assert_eq!(c.durability, Durability::Sync);
    assert!(serde_json::from_value::<AuditConfig>(json!({ "durability": "fast" })).is_err());
    assert_eq!("off".parse::<Durability>().unwrap(), Durability::Off);
    assert!(
        AuditLog::open(&AuditConfig::default()).is_err(),
        "empty dir rejected"
    );
}

#[test]
fn bench_runs() {
    for d in [Durability::Off, Durability::Batch, Durability::Sync] {
        let ops = bench_record(d, 2, 200).unwrap();
        assert!(ops > 0.0, "{d}: {ops}");
    }
}

#[test]
fn large_batch_is_written_in_pieces_and_rotates() {
    let d = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::new(d.path(), 1_500_000);
    let now = super::clock::now_micros();
    let batch: Vec<Pending> = (0..12_000)
        .map(|i| Pending {
            time_us: now,
            event: ev(i),
        })
        .collect();
    w.write_batch(None, &batch).unwrap();
    w.seal().unwrap();
    assert_eq!(w.written, 12_000);
    let segs = segments(d.path());
    assert!(segs.len() >= 2, "{segs:?}");
    assert_eq!(intact(d.path()).records, 12_000);
}

#[test]
fn verify_while_writing_is_clean() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&cfg(d.path(), Durability::Batch, 8 * 1024)).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                log.record(ev(i)).unwrap();
                i += 1;
                if i % 20 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        });
        for _ in 0..8 {
            std::thread::sleep(std::time::Duration::from_millis(60));
            let rep = verify(d.path());
            stop.store(!rep.is_intact(), std::sync::atomic::Ordering::Relaxed);
            assert!(rep.is_intact(), "{}", render_report(d.path(), &rep));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    drop(log);
    intact(d.path());
}

#[test]
fn line_being_appended_is_not_reported_but_a_torn_one_is() {
    let d = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::new(d.path(), 1 << 20);
    let now = super::clock::now_micros();
    let batch: Vec<Pending> = (0..11)
        .map(|i| Pending {
            time_us: now,
            event: ev(i),
        })
        .collect();
    w.write_batch(None, &batch).unwrap(); // not sealed: an open segment
    let seg = segments(d.path())[0].clone();
    let full = fs::read(&seg).unwrap();
    let half = &full[..full.len() - 100];
    // A writer caught mid-append: the line completes while verify looks.
    fs::write(&seg, half).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            fs::write(&seg, &full).unwrap();
        });
        let rep = verify(d.path());
        assert!(rep.is_intact(), "{}", render_report(d.path(), &rep));
        assert_eq!(rep.records, 11);
    });
    // A line that stays torn (a crash mid-write) is reported.
    fs::write(&seg, half).unwrap();
    let ps = problems(d.path());
    assert!(has(&ps, &seg, Some(11), "torn tail"), "{ps:?}");
}
