//! Bench results: the aligned table and the JSON document.

use serde::Serialize;

/// One measured target: a module ("A", "B") or "raw".
#[derive(Serialize, Clone)]
pub struct TargetInfo {
    pub id: String,
    pub path: Option<String>,
    pub token_label: Option<String>,
    pub library: String,
}

#[derive(Serialize, Clone)]
pub struct Row {
    pub op: String,
    pub threads: usize,
    pub module: String,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

#[derive(Serialize, Clone)]
pub struct Failure {
    pub op: String,
    pub module: String,
    pub error: String,
}

#[derive(Serialize)]
pub struct Report {
    pub modules: Vec<TargetInfo>,
    pub results: Vec<Row>,
    pub errors: Vec<Failure>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string_pretty(self).map_err(|e| format!("JSON: {e}"))
    }

    fn find(&self, op: &str, threads: usize, module: &str) -> Option<&Row> {
        self.results
            .iter()
            .find(|r| r.op == op && r.threads == threads && r.module == module)
    }

    fn failed(&self, op: &str, module: &str) -> bool {
        self.errors.iter().any(|f| f.op == op && f.module == module)
    }

    /// The human-readable table: one line per (op, threads), four columns
    /// per target, then A/x ratios of ops/s.
    pub fn to_table(&self, ops: &[String], threads: &[usize]) -> String {
        let mut out = String::new();
        for t in &self.modules {
            let place = match (&t.path, &t.token_label) {
                (Some(p), Some(l)) => format!("{p} (token {l:?})"),
                (Some(p), None) => p.clone(),
                _ => String::new(),
            };
            let line = format!("{:>4} = {place} {}", t.id, t.library);
            out.push_str(&line.replace("=  ", "= "));
            out.push('\n');
        }
        out.push('\n');

        let mut header = vec!["op".to_string(), "thr".to_string()];
        for t in &self.modules {
            for col in ["ops/s", "p50 µs", "p99 µs", "p99.9 µs"] {
                header.push(format!("{} {col}", t.id));
            }
        }
        let first = self
            .modules
            .first()
            .map(|t| t.id.clone())
            .unwrap_or_default();
        for t in self.modules.iter().skip(1) {
            header.push(format!("{first}/{}", t.id));
        }

        let mut lines = vec![header];
        for op in ops {
            for &n in threads {
                let mut line = vec![op.clone(), n.to_string()];
                for t in &self.modules {
                    match self.find(op, n, &t.id) {
                        Some(r) => {
                            line.push(format!("{:.0}", r.ops_per_sec));
                            line.push(format!("{:.1}", r.p50_us));
                            line.push(format!("{:.1}", r.p99_us));
                            line.push(format!("{:.1}", r.p999_us));
                        }
                        None => {
                            let mark = if self.failed(op, &t.id) {
                                "FAILED"
                            } else {
                                "-"
                            };
                            line.push(mark.to_string());
                            line.extend(std::iter::repeat_n("-".to_string(), 3));
                        }
                    }
                }
                let a = self.find(op, n, &first);
                for t in self.modules.iter().skip(1) {
                    let ratio = match (a, self.find(op, n, &t.id)) {
                        (Some(a), Some(b)) if b.ops_per_sec > 0.0 => {
                            format!("{:.2}", a.ops_per_sec / b.ops_per_sec)
                        }
                        _ => "-".to_string(),
                    };
                    line.push(ratio);
                }
                lines.push(line);
            }
        }

        let cols = lines.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                lines
                    .iter()
                    .filter_map(|l| l.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for line in &lines {
            let mut text = String::new();
            for (c, cell) in line.iter().enumerate() {
                let pad = widths[c].saturating_sub(cell.chars().count());
                if c == 0 {
                    text.push_str(cell);
                    text.push_str(&" ".repeat(pad));
                } else {
                    text.push_str("  ");
                    text.push_str(&" ".repeat(pad));
                    text.push_str(cell);
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        if !self.notes.is_empty() {
            out.push_str("\nnotes:\n");
            for n in &self.notes {
                out.push_str(&format!("  {n}\n"));
            }
        }
        if !self.errors.is_empty() {
            out.push_str("\nfailed:\n");
            for f in &self.errors {
                out.push_str(&format!("  {} on {}: {}\n", f.op, f.module, f.error));
            }
        }
        out
    }
}
