//! Per-process counters of each instance, published in the Prometheus text format that
//! node_exporter's textfile collector reads: one file per process in the key store's
//! `metrics/` directory, replaced atomically. `cks hsm list` adds them up.

use super::Cluster;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

pub fn file_for(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("cks-{pid}.prom"))
}

pub fn render(cluster: &Cluster, pid: u32) -> String {
    let mut out = String::new();
    let series: [(&str, &str, &str); 5] = [
        ("cks_hsm_healthy", "gauge", "1 if the instance serves calls"),
        ("cks_hsm_in_flight", "gauge", "calls in progress"),
        ("cks_hsm_ops_total", "counter", "calls served"),
        ("cks_hsm_errors_total", "counter", "device-level failures"),
        (
            "cks_hsm_latency_seconds_sum",
            "counter",
            "time spent in calls",
        ),
    ];
    for (name, kind, help) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for m in cluster.members() {
            let s = &m.stats;
            let v = match name {
                "cks_hsm_healthy" => (m.is_healthy() as u64) as f64,
                "cks_hsm_in_flight" => s.in_flight.load(Ordering::Relaxed) as f64,
                "cks_hsm_ops_total" => s.ops.load(Ordering::Relaxed) as f64,
                "cks_hsm_errors_total" => s.errors.load(Ordering::Relaxed) as f64,
                _ => s.latency_us.load(Ordering::Relaxed) as f64 / 1e6,
            };
            let _ = writeln!(out, "{name}{{instance=\"{}\",pid=\"{pid}\"}} {v}", m.id);
        }
    }
    out
}

/// Write this process's file (temp file + rename, so readers never see half of it).
pub fn publish(dir: &Path, cluster: &Cluster) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let pid = std::process::id();
    let tmp = dir.join(format!(".cks-{pid}.prom.tmp"));
    std::fs::write(&tmp, render(cluster, pid))?;
    std::fs::rename(tmp, file_for(dir, pid))
}

pub fn remove(dir: &Path) {
    let _ = std::fs::remove_file(file_for(dir, std::process::id()));
}

/// Totals per instance over the files of live processes (files of processes that are
/// gone are removed): instance → metric → value.
pub fn read_all(dir: &Path) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut totals: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return totals;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("cks-")
            .and_then(|r| r.strip_suffix(".prom"))
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_file(e.path());
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((lhs, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Some((metric, labels)) = lhs.split_once('{') else {
                continue;
            };
            let Some(instance) = labels
                .split(',')
                .find_map(|kv| kv.strip_prefix("instance=\""))
                .and_then(|v| v.strip_suffix('"').or(Some(v)))
                .map(|v| v.trim_end_matches(['"', '}']).to_string())
            else {
                continue;
            };
            let v: f64 = value.parse().unwrap_or(0.0);
            *totals
                .entry(instance)
                .or_default()
                .entry(metric.to_string())
                .or_default() += v;
        }
    }
    totals
}
