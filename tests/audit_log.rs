//! The audit log through the crate's public API, as `cks` and the token layer use it.

use std::fs;
use std::sync::Arc;

use cks_pkcs11::audit::{
    ops, read_records, show_command, verify, verify_command, AuditConfig, AuditLog, Durability,
    Event,
};
use serde_json::json;

fn use_event(op: &'static str, i: u64) -> Event {
    Event {
        op,
        session: Some(i),
        user: Some("user"),
        mechanism: Some("CKM_AES_GCM".into()),
        key_id: Some("0b6f3f3e-2a8e-4f0e-9a51-3c1d2e4f5a6b".into()),
        key_version: Some(3),
        instance: Some(format!("inst-{}", i % 3).into()),
        result: "CKR_OK",
        latency_us: Some(120),
        reason: None,
        detail: None,
    }
}

#[test]
fn every_op_kind_is_recorded_with_its_instance_and_verifies() {
    let d = tempfile::tempdir().unwrap();
    let log = Arc::new(AuditLog::open(&AuditConfig::new(d.path(), Durability::Sync)).unwrap());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for (i, op) in ops::ALL.iter().enumerate() {
                    log.record(use_event(op, t * 100 + i as u64)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut failed = Event::new(ops::LOGIN, "CKR_PIN_INCORRECT");
    failed.user = Some("so");
    failed.reason = Some("wrong PIN (2 tries left)".into());
    log.record(failed).unwrap();
    let mut purge = Event::new(ops::PURGE, "CKR_OK");
    purge.key_id = Some("k".into());
    purge.detail = Some(json!({ "instances": ["inst-0", "inst-1"], "proof": "ab12" }));
    log.record(purge).unwrap();
    log.flush().unwrap();
    log.health().unwrap();
    drop(log);

    let rep = verify(d.path());
    assert!(rep.is_intact(), "{:?}", rep.problems);
    let n = ops::ALL.len() as u64 * 4 + 2;
    assert_eq!(rep.records, n);
    let recs = read_records(d.path()).unwrap();
    for op in ops::ALL {
        let mine: Vec<_> = recs
            .iter()
            .filter(|r| r["op"] == json!(op) && r["session"].is_u64())
            .collect();
        assert_eq!(mine.len(), 4, "{op}");
        for r in mine {
            let session = r["session"].as_u64().unwrap();
            assert_eq!(
                r["instance"],
                json!(format!("inst-{}", session % 3)),
                "{op}"
            );
        }
    }
    let login = recs
        .iter()
        .find(|r| r["result"] == json!("CKR_PIN_INCORRECT"))
        .unwrap();
    assert_eq!(login["user"], json!("so"));
    assert!(login["reason"].as_str().unwrap().contains("wrong PIN"));
    let purge = recs.iter().find(|r| r["key_id"] == json!("k")).unwrap();
    assert_eq!(purge["detail"]["proof"], json!("ab12"));

    assert_eq!(verify_command(d.path(), false), 0);
    assert_eq!(
        show_command(d.path(), Some("k"), None, Some("purge"), false),
        0
    );
}

#[test]
fn editing_one_byte_makes_verify_fail_naming_the_record() {
    let d = tempfile::tempdir().unwrap();
    {
        let log = AuditLog::open(&AuditConfig::new(d.path(), Durability::Batch)).unwrap();
        for i in 0..20 {
            log.record(use_event(ops::SIGN, i)).unwrap();
        }
    }
    let seg = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .unwrap();
    let text = fs::read_to_string(&seg).unwrap();
    let line7_at = text.match_indices('\n').nth(5).unwrap().0 + 1;
    let pos = line7_at + text[line7_at..].find("inst-").unwrap() + 5;
    let mut bytes = text.into_bytes();
    bytes[pos] = b'9';
    fs::write(&seg, bytes).unwrap();
    let rep = verify(d.path());
    assert!(
        rep.problems
            .iter()
            .any(|p| p.file == seg && p.line == Some(7)),
        "{:?}",
        rep.problems
    );
    assert_eq!(verify_command(d.path(), true), 1);
}
