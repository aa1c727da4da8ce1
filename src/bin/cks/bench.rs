//! `cks bench`: throughput and latency of a PKCS#11 module driven through its
//! C ABI (via cryptoki), optionally against a second module (`--vs`) and
//! against the bare primitives (`--raw`).
//!
//! Each target (module A, module B, raw) has its own pool of worker threads;
//! a PKCS#11 worker opens one RW session and logs in once. For every op and
//! thread count the targets take turns in rounds of about half a second
//! (A B raw A B raw ...), so machine noise hits all of them alike. Each call's
//! latency goes into a per-worker HDR histogram; ops/s is calls per second of
//! round wall time.

mod ops;
pub(crate) mod p11;
mod report;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::Scope;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use ops::{Local, Op, P11Prep, RawKeys, Setup, ALL_OPS};
use p11::{describe, Module};
use report::{Failure, Report, Row, TargetInfo};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// PKCS#11 module to measure (A)
    #[arg(long)]
    pub module: PathBuf,
    /// Token label of the slot to use (default: first slot with an initialized token)
    #[arg(long)]
    pub slot_label: Option<String>,
    /// User PIN
    #[arg(long, env = "CKS_PIN", hide_env_values = true)]
    pub pin: String,
    /// Thread counts to measure, e.g. 1,2,4
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<usize>,
    /// Measured seconds per op, thread count and target
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Operations to run, comma separated (default: all)
    #[arg(long, value_delimiter = ',', value_parser = ops::parse_op)]
    pub ops: Vec<Op>,
    /// Print one JSON document on stdout instead of the table
    #[arg(long)]
    pub json: bool,
    /// A second PKCS#11 module (B) to compare against, in the same process
    #[arg(long)]
    pub vs: Option<PathBuf>,
    /// Token label of B's slot
    #[arg(long)]
    pub vs_slot_label: Option<String>,
    /// User PIN for B (default: the same as --pin)
    #[arg(long, env = "CKS_VS_PIN", hide_env_values = true)]
    pub vs_pin: Option<String>,
    /// Also run the primitives directly (aws-lc-rs, RustCrypto), no PKCS#11
    #[arg(long)]
    pub raw: bool,
    /// cks configuration for A (sets CKS_CONFIG before A is initialised)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// cks configuration for B. With `--vs` naming the same library as `--module`, a
    /// private copy of the library is loaded for B, so one run compares two
    /// configurations of cks side by side (e.g. audit off against batch)
    #[arg(long, value_name = "FILE")]
    pub vs_config: Option<PathBuf>,
    /// Extra token objects to create first, for find-by-label among many
    #[arg(long, default_value_t = 0)]
    pub keys: usize,
    /// What the `--keys` objects are: `data` (private data objects where the module
    /// takes them, else AES keys) or `aes` (AES-256 token keys: customer master keys
    /// in cks)
    #[arg(long, value_enum, default_value = "data")]
    pub key_kind: ops::KeyKind,
    /// Leave the `--keys` objects in place when the run ends, and count those a
    /// previous run left (same kind, same module): a throwaway key store is filled
    /// once and measured many times (`--keys 100000 --keep-keys`)
    #[arg(long)]
    pub keep_keys: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

/// True once Ctrl-C was pressed.
pub(crate) fn interrupted() -> bool {
    STOP.load(Ordering::Relaxed)
}

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
    // A second Ctrl-C ends the process the usual way.
    // SAFETY: signal() is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

fn install_sigint() {
    let handler = on_sigint as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic and calls signal().
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

fn progress(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r{msg:<79}");
    let _ = err.flush();
}

fn clear_progress() {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r{:<79}\r", "");
    let _ = err.flush();
}

// ---------------------------------------------------------------- workers

enum Job {
    P11(P11Prep),
    Raw(Op),
}

enum Cmd {
    /// Loop until `until`; a new `gen` resets the histogram and warms up.
    Run {
        job: Arc<Job>,
        gen: u64,
        until: Instant,
    },
    /// Send back the histogram of the current `gen`.
    Finish,
}

enum Reply {
    Round {
        count: u64,
        end: Instant,
        err: Option<String>,
    },
    Hist(Result<Box<Histogram<u64>>, String>),
}

struct Pool {
    tx: Vec<Sender<Cmd>>,
    rx: Receiver<Reply>,
}

fn new_histogram() -> Result<Histogram<u64>, String> {
    // 1 ns .. 1000 s, 3 significant figures.
    Histogram::new_with_bounds(1, 1_000_000_000_000, 3).map_err(|e| format!("histogram: {e}"))
}

fn worker_loop(
    idx: usize,
    rx: Receiver<Cmd>,
    tx: Sender<Reply>,
    mut call: impl FnMut(&Job, &mut Local) -> Result<(), String>,
) {
    let mut hist = new_histogram();
    let mut local = Local::new(idx);
    let mut current = u64::MAX;
    while let Ok(cmd) = rx.recv() {
        let reply = match (cmd, hist.as_mut()) {
            (Cmd::Finish, Ok(h)) => Reply::Hist(Ok(Box::new(h.clone()))),
            (Cmd::Finish, Err(e)) => Reply::Hist(Err(e.clone())),
            (_, Err(e)) => Reply::Round {
                count: 0,
                end: Instant::now(),
                err: Some(e.clone()),
            },
            (Cmd::Run { job, gen, until }, Ok(h)) => {
                if gen != current {
                    current = gen;
                    h.reset();
                    // One untimed call: warms up and checks the op works.
                    if let Err(e) = call(&job, &mut local) {
                        let _ = tx.send(Reply::Round {
                            count: 0,
                            end: Instant::now(),
                            err: Some(e),
                        });
                        continue;
                    }
                }
                let mut count = 0u64;
                loop {
                    let t0 = Instant::now();
                    if t0 >= until {
                        break Reply::Round {
                            count,
                            end: t0,
                            err: None,
                        };
                    }
                    if let Err(e) = call(&job, &mut local) {
                        break Reply::Round {
                            count,
                            end: Instant::now(),
                            err: Some(e),
                        };
                    }
                    let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    h.saturating_record(ns.max(1));
                    count += 1;
                }
            }
        };
        if tx.send(reply).is_err() {
            break;
        }
    }
}

fn spawn_p11_pool<'s, 'e>(scope: &'s Scope<'s, 'e>, module: &'e Module, n: usize) -> Pool {
    let (reply_tx, rx) = mpsc::channel();
    let mut tx = Vec::new();
    for idx in 0..n {
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let reply_tx = reply_tx.clone();
        scope.spawn(move || {
            let session = module
                .user_session()
                .map_err(|e| format!("worker session/login: {}", describe(&e)));
            worker_loop(idx, cmd_rx, reply_tx, |job, local| match (&session, job) {
                (Ok(s), Job::P11(p)) => ops::p11_call(p, s, module, local),
                (Err(e), _) => Err(e.clone()),
                (Ok(_), Job::Raw(_)) => Err("internal: raw job on a module".to_string()),
            });
        });
        tx.push(cmd_tx);
    }
    Pool { tx, rx }
}

fn spawn_raw_pool<'s, 'e>(scope: &'s Scope<'s, 'e>, keys: &'e RawKeys, n: usize) -> Pool {
    let (reply_tx, rx) = mpsc::channel();
    let mut tx = Vec::new();
    for idx in 0..n {
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let reply_tx = reply_tx.clone();
        scope.spawn(move || {
            worker_loop(idx, cmd_rx, reply_tx, |job, local| match job {
                Job::Raw(op) => ops::raw_call(*op, keys, local),
                Job::P11(_) => Err("internal: module job on raw".to_string()),
            });
        });
        tx.push(cmd_tx);
    }
    Pool { tx, rx }
}

// ---------------------------------------------------------------- coordinator

struct Target {
    id: String,
    /// Index into the modules and set-ups, or None for raw.
    module: Option<usize>,
    /// Name for messages: "A (/path/to/module.so)".
    name: String,
    pool: Pool,
}

impl Target {
    /// One round of `n` workers; returns (calls, wall time).
    fn round(
        &self,
        job: &Arc<Job>,
        gen: u64,
        n: usize,
        len: Duration,
    ) -> Result<(u64, Duration), String> {
        let start = Instant::now();
        let until = start + len;
        for tx in &self.pool.tx[..n] {
            let cmd = Cmd::Run {
                job: Arc::clone(job),
                gen,
                until,
            };
            tx.send(cmd)
                .map_err(|_| "worker thread is gone".to_string())?;
        }
        let (mut count, mut last, mut err) = (0u64, start, None);
        for _ in 0..n {
            match self.pool.rx.recv_timeout(len + Duration::from_secs(300)) {
                Ok(Reply::Round {
                    count: c,
                    end,
                    err: e,
                }) => {
                    count += c;
                    last = last.max(end);
                    if err.is_none() {
                        err = e;
                    }
                }
                Ok(Reply::Hist(_)) => {}
                Err(_) => return Err("worker did not answer".to_string()),
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok((count, last - start)),
        }
    }

    /// Merged histogram of the first `n` workers.
    fn histogram(&self, n: usize) -> Result<Histogram<u64>, String> {
        let mut total = new_histogram()?;
        for tx in &self.pool.tx[..n] {
            tx.send(Cmd::Finish)
                .map_err(|_| "worker thread is gone".to_string())?;
        }
        for _ in 0..n {
            match self.pool.rx.recv_timeout(Duration::from_secs(60)) {
                Ok(Reply::Hist(h)) => {
                    total.add(*h?).map_err(|e| format!("histogram: {e}"))?;
                }
                Ok(Reply::Round { .. }) => {}
                Err(_) => return Err("worker did not answer".to_string()),
            }
        }
        Ok(total)
    }
}

fn fail(report: &mut Report, op: Op, target: &Target, error: String) {
    clear_progress();
    eprintln!("error: {} on {}: {error}", op.name(), target.name);
    report.errors.push(Failure {
        op: op.name().to_string(),
        module: target.id.clone(),
        error,
    });
}

struct Plan<'a> {
    ops: &'a [Op],
    threads: &'a [usize],
    rounds: usize,
    round_len: Duration,
}

fn measure(
    plan: &Plan,
    modules: &[Module],
    setups: &mut [Setup],
    raw: Option<&RawKeys>,
    report: &mut Report,
) {
    let max_threads = plan.threads.iter().copied().max().unwrap_or(1);
    std::thread::scope(|scope| {
        let mut targets = Vec::new();
        for (i, m) in modules.iter().enumerate() {
            targets.push(Target {
                id: m.id.clone(),
                module: Some(i),
                name: format!("{} ({})", m.id, m.path.display()),
                pool: spawn_p11_pool(scope, m, max_threads),
            });
        }
        if let Some(keys) = raw {
            targets.push(Target {
                id: "raw".to_string(),
                module: None,
                name: "raw".to_string(),
                pool: spawn_raw_pool(scope, keys, max_threads),
            });
        }
        let mut gen = 0u64;
        'ops: for &op in plan.ops {
            let mut jobs: Vec<Option<Arc<Job>>> = Vec::new();
            for t in &targets {
                let job = match t.module {
                    Some(i) => {
                        progress(&format!("{}: set-up on {}", op.name(), t.id));
                        let show = |n: usize| {
                            progress(&format!("{}: creating objects on {}: {n}", op.name(), t.id))
                        };
                        match setups[i].prepare(op, &show) {
                            Ok(p) => {
                                if let Some(note) = &p.note {
                                    report
                                        .notes
                                        .push(format!("{} on {}: {note}", op.name(), t.id));
                                }
                                Some(Arc::new(Job::P11(p)))
                            }
                            Err(e) => {
                                fail(report, op, t, format!("set-up: {e}"));
                                None
                            }
                        }
                    }
                    None if op.has_raw() => Some(Arc::new(Job::Raw(op))),
                    None => None,
                };
                jobs.push(job);
            }
            for &n in plan.threads {
                let mut acc = vec![(0u64, Duration::ZERO); targets.len()];
                let gens: Vec<u64> = targets
                    .iter()
                    .map(|_| {
                        gen += 1;
                        gen
                    })
                    .collect();
                for r in 0..plan.rounds {
                    for (ti, t) in targets.iter().enumerate() {
                        if interrupted() {
                            break 'ops;
                        }
                        let Some(job) = jobs[ti].clone() else {
                            continue;
                        };
                        progress(&format!(
                            "{} threads={n} {} round {}/{}",
                            op.name(),
                            t.id,
                            r + 1,
                            plan.rounds
                        ));
                        match t.round(&job, gens[ti], n, plan.round_len) {
                            Ok((count, wall)) => {
                                acc[ti].0 += count;
                                acc[ti].1 += wall;
                            }
                            Err(e) => {
                                fail(report, op, t, e);
                                jobs[ti] = None;
                            }
                        }
                    }
                }
                for (ti, t) in targets.iter().enumerate() {
                    if jobs[ti].is_none() {
                        continue;
                    }
                    let h = match t.histogram(n) {
                        Ok(h) => h,
                        Err(e) => {
                            fail(report, op, t, e);
                            jobs[ti] = None;
                            continue;
                        }
                    };
                    let (count, wall) = acc[ti];
                    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
                    report.results.push(Row {
                        op: op.name().to_string(),
                        threads: n,
                        module: t.id.clone(),
                        ops_per_sec: count as f64 / wall.as_secs_f64().max(1e-9),
                        p50_us: us(0.5),
                        p99_us: us(0.99),
                        p999_us: us(0.999),
                    });
                }
            }
        }
    });
}

fn with_setups(
    plan: &Plan,
    extra: ops::Fillers,
    modules: &[Module],
    raw: Option<&RawKeys>,
    report: &mut Report,
) -> Result<(), String> {
    let mut setups = Vec::new();
    let mut result = Ok(());
    for m in modules {
        match Setup::new(m, extra) {
            Ok(s) => setups.push(s),
            Err(e) => {
                result = Err(format!("{} ({}): {e}", m.id, m.path.display()));
                break;
            }
        }
    }
    if result.is_ok() {
        measure(plan, modules, &mut setups, raw, report);
    }
    progress("destroying the bench's objects");
    for s in setups {
        for e in s.cleanup() {
            clear_progress();
            eprintln!("warning: {e}");
        }
    }
    result
}

fn finalize_all(modules: Vec<Module>) {
    for m in modules.into_iter().rev() {
        m.finalize();
    }
}

pub fn run(args: &BenchArgs) -> Result<(), String> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err("--seconds must be a positive number".to_string());
    }
    if args.threads.is_empty() || args.threads.contains(&0) {
        return Err("--threads must list positive thread counts".to_string());
    }
    let ops: Vec<Op> = if args.ops.is_empty() {
        ALL_OPS.to_vec()
    } else {
        args.ops.clone()
    };
    let rounds = ((args.seconds / 0.5).round() as usize).max(1);
    let plan = Plan {
        ops: &ops,
        threads: &args.threads,
        rounds,
        round_len: Duration::from_secs_f64(args.seconds / rounds as f64),
    };
    install_sigint();

    if let Some(c) = &args.config {
        std::env::set_var("CKS_CONFIG", c);
    }
    let mut modules = vec![Module::open(
        "A",
        &args.module,
        args.slot_label.as_deref(),
        &args.pin,
    )?];
    if let Some(vs) = &args.vs {
        let pin = args.vs_pin.as_deref().unwrap_or(&args.pin);
        let mut vs = vs.clone();
        let mut _copy = None;
        if let Some(c) = &args.vs_config {
            // The module reads CKS_CONFIG when it is initialised.
            std::env::set_var("CKS_CONFIG", c);
            let same = std::fs::canonicalize(&vs).ok() == std::fs::canonicalize(&args.module).ok();
            if same {
                // dlopen of the same file gives the same (already initialised) library;
                // a copy under another name is a second, independent one.
                let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
                let copy = dir.path().join("libcks_pkcs11_b.so");
                std::fs::copy(&vs, &copy).map_err(|e| format!("copying {}: {e}", vs.display()))?;
                vs = copy;
                _copy = Some(dir);
            }
        }
        match Module::open("B", &vs, args.vs_slot_label.as_deref(), pin) {
            Ok(m) => modules.push(m),
            Err(e) => {
                finalize_all(modules);
                return Err(e);
            }
        }
    }
    // Log in and search once on each module, timed, before anything is made.
    let mut startups = Vec::new();
    for m in &modules {
        progress(&format!("{}: logging in", m.id));
        match m.startup() {
            Ok(s) => startups.push(s),
            Err(e) => {
                let e = format!("{} ({}): {e}", m.id, m.path.display());
                drop(startups);
                finalize_all(modules);
                return Err(e);
            }
        }
    }
    let raw = if args.raw {
        progress("making the raw keys");
        match RawKeys::new() {
            Ok(k) => Some(k),
            Err(e) => {
                drop(startups);
                finalize_all(modules);
                return Err(e);
            }
        }
    } else {
        None
    };

    let mut infos: Vec<TargetInfo> = modules
        .iter()
        .map(|m| TargetInfo {
            id: m.id.clone(),
            path: Some(m.path.display().to_string()),
            token_label: Some(m.token_label.clone()),
            library: m.library.clone(),
        })
        .collect();
    if raw.is_some() {
        infos.push(TargetInfo {
            id: "raw".to_string(),
            path: None,
            token_label: None,
            library: "aws-lc-rs (RSA, ECDSA) + RustCrypto (AES, HMAC), no PKCS#11".to_string(),
        });
    }
    let mut report = Report {
        modules: infos,
        results: Vec::new(),
        errors: Vec::new(),
        notes: startups
            .iter()
            .zip(&modules)
            .map(|(s, m)| format!("{}: {}", m.id, s.describe()))
            .collect(),
    };
    let extra = ops::Fillers {
        count: args.keys,
        kind: args.key_kind,
        keep: args.keep_keys,
    };
    let outcome = with_setups(&plan, extra, &modules, raw.as_ref(), &mut report);
    drop(startups);
    finalize_all(modules);
    clear_progress();

    if outcome.is_err() && report.results.is_empty() {
        // Set-up failed before anything was measured.
    } else if args.json {
        println!("{}", report.to_json()?);
    } else {
        let names: Vec<String> = ops.iter().map(|o| o.name().to_string()).collect();
        print!("{}", report.to_table(&names, &args.threads));
    }
    outcome?;
    if interrupted() {
        return Err("interrupted".to_string());
    }
    if !report.errors.is_empty() {
        return Err(format!("{} operation(s) failed", report.errors.len()));
    }
    Ok(())
}
