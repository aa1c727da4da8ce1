//! Micro-benchmark of the hot path, for `cks bench`.

use std::path::Path;
use std::sync::Barrier;
use std::time::Instant;

use super::clock::now_micros;
use super::{AuditConfig, AuditError, AuditLog, Durability, Event};

/// `record` calls per second for `n` records in total spread over `threads` threads, each
/// building a typical signing record, into a fresh directory under the system temp dir
/// (removed afterwards). Times the `record` calls only (what an operation pays); the
/// final flush is not timed.
pub fn bench_record(durability: Durability, threads: usize, n: u64) -> Result<f64, AuditError> {
    let dir = std::env::temp_dir().join(format!(
        "cks-audit-bench-{}-{}",
        std::process::id(),
        now_micros()
    ));
    let r = bench_record_in(&dir, durability, threads, n);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// As `bench_record`, in `dir` (for example on the disk the real log uses); the records
/// are left there.
pub fn bench_record_in(
    dir: &Path,
    durability: Durability,
    threads: usize,
    n: u64,
) -> Result<f64, AuditError> {
    let threads = threads.max(1);
    let log = AuditLog::open(&AuditConfig::new(dir, durability))?;
    let per = n / threads as u64;
    let barrier = Barrier::new(threads + 1);
    let (elapsed, res) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (log, barrier) = (&log, &barrier);
                s.spawn(move || -> Result<(), AuditError> {
                    barrier.wait();
                    for i in 0..per {
                        log.record(Event {
                            op: "sign",
                            session: Some(t as u64 + 1),
                            user: Some("user"),
                            mechanism: Some("CKM_ECDSA".into()),
                            key_id: Some("5f0c6c2e-8d0e-4c55-9a3e-0b1d2f3a4b5c".into()),
                            key_version: Some(1),
                            instance: Some("hsm-1".into()),
                            result: "CKR_OK",
                            latency_us: Some(40 + i % 7),
                            reason: None,
                            detail: None,
                        })?;
                    }
                    Ok(())
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        let mut res = Ok(());
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => res = Err(e),
                Err(_) => res = Err(AuditError::Unwritable("benchmark thread panicked".into())),
            }
        }
        (t0.elapsed(), res)
    });
    res?;
    log.flush()?;
    let total = per * threads as u64;
    Ok(total as f64 / elapsed.as_secs_f64().max(1e-9))
}
