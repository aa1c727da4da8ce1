//! `cks audit verify` and `cks audit show`, as functions the `cks` binary calls.
//! These print to stdout/stderr; the rest of the audit module never prints.

use std::path::Path;

use serde_json::Value;

use super::clock::parse_time;
use super::verify::{read_records, verify, VerifyReport};

/// Prints the report (human or JSON); 0 when the log is intact, 1 otherwise.
pub fn verify_command(dir: &Path, json: bool) -> i32 {
    let rep = verify(dir);
    if json {
        match serde_json::to_string_pretty(&rep) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("cannot encode the report: {e}");
                return 1;
            }
        }
    } else {
        print!("{}", render_report(dir, &rep));
    }
    i32::from(!rep.is_intact())
}

pub fn render_report(dir: &Path, rep: &VerifyReport) -> String {
    let mut out = format!(
        "audit log {}: {} segment(s), {} record(s)\n",
        dir.display(),
        rep.segments,
        rep.records
    );
    for p in &rep.problems {
        match p.line {
            Some(l) => out.push_str(&format!("  {}:{l}: {}\n", p.file.display(), p.what)),
            None => out.push_str(&format!("  {}: {}\n", p.file.display(), p.what)),
        }
    }
    for p in &rep.open_segments {
        out.push_str(&format!(
            "  note: {} is still open (its last records are not yet sealed)\n",
            p.display()
        ));
    }
    if rep.is_intact() {
        out.push_str("intact\n");
    } else {
        out.push_str(&format!("NOT INTACT: {} problem(s)\n", rep.problems.len()));
    }
    out
}

/// The show filter: `key` matches `key_id` exactly, `since` is RFC 3339 or `YYYY-MM-DD`
/// (UTC), `op` matches exactly.
#[derive(Debug, Clone, Default)]
pub struct ShowFilter {
    pub key: Option<String>,
    pub since_us: Option<i64>,
    pub op: Option<String>,
}

impl ShowFilter {
    pub fn new(
        key: Option<&str>,
        since: Option<&str>,
        op: Option<&str>,
    ) -> Result<ShowFilter, String> {
        let since_us = match since {
            None => None,
            Some(s) => Some(parse_time(s).ok_or_else(|| {
                format!("--since {s:?}: expected RFC 3339 (2024-05-01T12:00:00Z) or a date (2024-05-01)")
            })?),
        };
        Ok(ShowFilter {
            key: key.map(str::to_string),
            since_us,
            op: op.map(str::to_string),
        })
    }

    pub fn matches(&self, v: &Value) -> bool {
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        if let Some(k) = &self.key {
            if s("key_id") != Some(k.as_str()) {
                return false;
            }
        }
        if let Some(op) = &self.op {
            if s("op") != Some(op.as_str()) {
                return false;
            }
        }
        if let Some(t0) = self.since_us {
            match s("time").and_then(parse_time) {
                Some(t) if t >= t0 => {}
                _ => return false,
            }
        }
        true
    }
}

fn cell(v: &Value, k: &str) -> String {
    match v.get(k) {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

pub fn render_table(records: &[&Value]) -> String {
    let rows: Vec<[String; 6]> = records
        .iter()
        .map(|v| {
            let key = match (
                v.get("key_id").and_then(Value::as_str),
                v.get("key_version").and_then(Value::as_u64),
            ) {
                (Some(k), Some(ver)) => format!("{k} v{ver}"),
                (Some(k), None) => k.to_string(),
                _ => "-".to_string(),
            };
            let latency = match v.get("latency_us").and_then(Value::as_u64) {
                Some(us) => format!("{us}us"),
                None => "-".to_string(),
            };
            [
                cell(v, "time"),
                cell(v, "op"),
                key,
                cell(v, "instance"),
                cell(v, "result"),
                latency,
            ]
        })
        .collect();
    let head = ["TIME", "OP", "KEY", "INSTANCE", "RESULT", "LATENCY"];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&head);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}

/// Prints the matching records: a table, or (with `json`) one JSON record per line.
/// 0 on success (even with no match), 1 if the log cannot be read, 2 for a bad `since`.
pub fn show_command(
    dir: &Path,
    key: Option<&str>,
    since: Option<&str>,
    op: Option<&str>,
    json: bool,
) -> i32 {
    let filter = match ShowFilter::new(key, since, op) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let records = match read_records(dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let hits: Vec<&Value> = records.iter().filter(|v| filter.matches(v)).collect();
    if json {
        for v in hits {
            println!("{v}");
        }
    } else {
        print!("{}", render_table(&hits));
    }
    0
}
