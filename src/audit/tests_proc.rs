//! Tests with child processes: this test binary re-runs itself with `--exact` on
//! `child_entry`, which does nothing unless the environment tells it what to write.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;

use super::tests::ev;
use super::*;

const ENV_DIR: &str = "CKS_AUDIT_TEST_CHILD_DIR";
const ENV_MODE: &str = "CKS_AUDIT_TEST_CHILD_MODE";

fn child_test_name() -> String {
    let path = module_path!();
    let inner = path.split_once("::").map_or(path, |(_, rest)| rest);
    format!("{inner}::child_entry")
}

fn child(dir: &Path, mode: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        &child_test_name(),
        "--exact",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(ENV_DIR, dir)
    .env(ENV_MODE, mode)
    .stdout(Stdio::piped());
    c
}

/// The child: `batch:N` writes N records (rotating every 16 KiB); `sync:N` writes N records
/// with `Sync`, printing `acked i` after each returns.
#[test]
fn child_entry() {
    let (Ok(dir), Ok(mode)) = (std::env::var(ENV_DIR), std::env::var(ENV_MODE)) else {
        return; // an ordinary test run
    };
    let (kind, n) = mode.split_once(':').unwrap();
    let n: u64 = n.parse().unwrap();
    let durability = kind.parse::<Durability>().unwrap();
    let cfg = AuditConfig {
        dir: dir.into(),
        durability,
        max_segment_bytes: 16 * 1024,
    };
    let log = AuditLog::open(&cfg).unwrap();
    for i in 0..n {
        log.record(ev(i)).unwrap();
        if durability == Durability::Sync {
            println!("acked {i}");
        }
    }
}

#[test]
fn two_processes_write_at_once() {
    let d = tempfile::tempdir().unwrap();
    let kids: Vec<_> = (0..2)
        .map(|_| child(d.path(), "batch:3000").spawn().unwrap())
        .collect();
    // And this process, at the same time.
    let log = AuditLog::open(&AuditConfig {
        dir: d.path().to_path_buf(),
        durability: Durability::Batch,
        max_segment_bytes: 16 * 1024,
    })
    .unwrap();
    for i in 0..1000 {
        log.record(ev(i)).unwrap();
    }
    drop(log);
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let rep = verify(d.path());
    assert!(rep.is_intact(), "{}", render_report(d.path(), &rep));
    assert_eq!(rep.records, 7000);
    assert!(rep.segments > 3, "rotations expected");
    assert!(rep.open_segments.is_empty(), "all closed cleanly");
    let pids: BTreeSet<u64> = read_records(d.path())
        .unwrap()
        .iter()
        .map(|r| r["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 3);
}

#[test]
fn sync_survives_kill_9() {
    let d = tempfile::tempdir().unwrap();
    let mut kid = child(d.path(), "sync:1000000").spawn().unwrap();
    let mut out = BufReader::new(kid.stdout.take().unwrap());
    let mut acked = BTreeSet::new();
    let mut line = String::new();
    while acked.len() < 300 {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
        if let Some(i) = line.trim().strip_prefix("acked ") {
            acked.insert(i.parse::<u64>().unwrap());
        }
    }
    kid.kill().unwrap(); // SIGKILL
                         // Acks already in the pipe count too.
    for l in out.lines() {
        if let Some(i) = l.unwrap().trim().strip_prefix("acked ") {
            acked.insert(i.parse::<u64>().unwrap());
        }
    }
    kid.wait().unwrap();
    let last_acked = *acked.iter().next_back().unwrap();
    let recs = read_records(d.path()).unwrap();
    let on_disk: BTreeSet<u64> = recs
        .iter()
        .map(|r| r["detail"]["i"].as_u64().unwrap())
        .collect();
    let missing: Vec<&u64> = acked.difference(&on_disk).collect();
    assert!(
        missing.is_empty(),
        "{} acked but not on disk, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        on_disk.iter().copied().collect::<Vec<_>>(),
        (0..on_disk.len() as u64).collect::<Vec<_>>()
    );
    assert!(on_disk.len() as u64 > last_acked);
    let rep = verify(d.path());
    eprintln!(
        "{} acked (last {last_acked}); {}",
        acked.len(),
        render_report(d.path(), &rep)
    );
    // The only tolerable problem: a torn tail after the last acknowledged record.
    assert!(recs.iter().all(|r| r["op"] == json!("sign")));
    // Every acked record is a complete line (read_records reads only those, checked above).
    // The only tolerable problem is a torn tail: the end of the newest, unsealed segment,
    // so necessarily after every acked record.
    for p in &rep.problems {
        assert!(p.what.starts_with("torn tail"), "{p:?}");
        assert_eq!(Some(&p.file), rep.open_segments.first(), "{p:?}");
    }
    assert_eq!(
        rep.open_segments.len(),
        1,
        "killed: the last segment is not sealed"
    );
}
