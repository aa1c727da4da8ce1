//! Crash consistency (issue 9): a loop that creates keys and changes their states is
//! `kill -9`-ed at random points, many times; after each restart every acknowledged key
//! exists and works on every instance, nothing half-made is visible, and the audit chain
//! verifies.
//!
//! One key store (three embedded instances, `[audit] durability = "sync"`, short deletion
//! windows so that scheduled deletions are also purged while the loop runs) serves every
//! round. Processes:
//! - the *worker* (this test binary re-run as a child, in its own process group) loads the
//!   module, logs in and loops: generate an AES-256 token key, encrypt a known plaintext;
//!   now and then generate an EC P-256 token key pair, disable or enable an older key with
//!   `cks key disable/enable`, or `C_DestroyObject` an older key (a scheduled deletion).
//!   Before each action it appends a `try-…` line to the acknowledgement log and, once the
//!   call returned success, an acknowledgement line (append + fsync): an acknowledged action
//!   happened; a tried but unacknowledged one may or may not have;
//! - the parent starts the worker, waits a random 50–400 ms and kills the whole process
//!   group with SIGKILL (the worker and any `cks` it is running), then checks:
//!   - a *checker* (this binary again) on the normal configuration — what an application
//!     sees at the first restart — and, after `cks hsm sync`, one checker per instance
//!     (a configuration naming only that instance): every acknowledged key is found by its
//!     label exactly once (an EC key: its private and its public half), carries its key id,
//!     is in an allowed state, and works (decrypts its acknowledged ciphertext, encrypts and
//!     decrypts, signs and verifies) or is refused as its state demands; every visible
//!     object is a complete, registered key that the worker at least tried to make;
//!   - `cks hsm list --json`: every instance healthy, all holding the same number of keys;
//!   - `cks key list --json`: the last acknowledged state holds, acknowledged deletions are
//!     `PendingDeletion` or purged, a purged key never comes back, no unknown key;
//!   - `cks audit verify --json` reports the log intact, and `cks audit show --json` holds a
//!     record of every acknowledged action.
//!
//! At the end every disabled key is enabled and a last check decrypts every acknowledged
//! ciphertext. A summary (rounds, kills, keys acknowledged, problems) is printed; every
//! problem found is listed and fails the test. The temp dir is removed when the test passes
//! (kept and printed when it fails, or always with `CKS_TEST_KEEP=1`).

mod common;

use common::{LABEL, SO_PIN, USER_PIN};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// This test's name: children re-run exactly it.
const TEST: &str = "kill_9_loop_keeps_acknowledged_keys_and_audit";
/// Set in a child to `worker` or `checker`.
const ROLE: &str = "CKS_CRASH_ROLE";
/// The key store directory, for a child.
const DIR: &str = "CKS_CRASH_DIR";
/// The worker's round number (labels are unique across rounds).
const ROUND: &str = "CKS_CRASH_ROUND";
/// The checker's name for what it checks (`restart`, `hsm2`, `final`...).
const VIEW: &str = "CKS_CRASH_VIEW";

const INSTANCES: [&str; 3] = ["hsm1", "hsm2", "hsm3"];
/// Kill rounds; fewer if the loop runs out of `LOOP_BUDGET` (but at least `MIN_ROUNDS`).
const ROUNDS: usize = 15;
const MIN_ROUNDS: usize = 5;
const LOOP_BUDGET: Duration = Duration::from_secs(60);
/// How long the worker runs before it is killed: a random point in this range (ms).
const KILL_AFTER_MS: std::ops::Range<u64> = 50..400;
/// Longest a checker or a `cks` command may run.
const PROCESS_LIMIT: Duration = Duration::from_secs(120);
/// A worker that is never killed stops by itself after this long.
const WORKER_LIMIT: Duration = Duration::from_secs(30);

const PLAIN: &[u8] = b"crash consistency: a known plaintext";
const AAD: &[u8] = b"cks-crash";
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// include/cks_pkcs11.h
const CKA_CKS_KEY_ID: u64 = 0xC34B_0001;
const CKA_CKS_KEY_STATE: u64 = 0xC34B_0003;

// ---- the acknowledgement log ------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Aes,
    Ec,
}

/// A key's state as the checks see it; `Absent`: not there (never made, or purged).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
enum State {
    Enabled,
    Disabled,
    PendingDeletion,
    Absent,
}

impl State {
    fn parse(s: &str) -> Option<State> {
        Some(match s {
            "Enabled" => State::Enabled,
            "Disabled" => State::Disabled,
            "PendingDeletion" => State::PendingDeletion,
            _ => return None,
        })
    }

    fn from_code(code: u64) -> Option<State> {
        Some(match code {
            0 => State::Enabled,
            1 => State::Disabled,
            2 => State::PendingDeletion,
            _ => return None,
        })
    }
}

/// What the acknowledgement log says about one key (by label).
#[derive(Clone, Debug)]
struct KeyRec {
    kind: Kind,
    label: String,
    /// The key id, once `C_Generate*` returned (the creation is acknowledged).
    id: Option<String>,
    /// An acknowledged GCM ciphertext of `PLAIN`: (iv, ciphertext).
    ct: Option<(Vec<u8>, Vec<u8>)>,
    /// The last acknowledged state.
    state: State,
    /// A change tried but never acknowledged (the process was killed): it may have happened.
    unsure: Option<State>,
    /// Acknowledged state changes (for the audit check).
    changes: Vec<State>,
}

impl KeyRec {
    fn acked(&self) -> bool {
        self.id.is_some()
    }

    /// The states the key may be in now.
    fn allowed(&self) -> BTreeSet<State> {
        let mut v = BTreeSet::new();
        if !self.acked() {
            // Creation not acknowledged: not there, or there in full.
            v.insert(State::Absent);
            v.insert(State::Enabled);
            return v;
        }
        v.insert(self.state);
        v.extend(self.unsure);
        if v.contains(&State::PendingDeletion) {
            v.insert(State::Absent);
        }
        v
    }

    /// May the worker change this key (acknowledged, nothing uncertain, not deleted)?
    fn changeable(&self) -> bool {
        self.kind == Kind::Aes
            && self.acked()
            && self.unsure.is_none()
            && self.state != State::PendingDeletion
    }
}

#[derive(Default, Debug)]
struct Model {
    keys: BTreeMap<String, KeyRec>,
    /// Worker processes started (`start` lines).
    starts: usize,
}

impl Model {
    /// Reads the log; a last line without newline is an unfinished (unacknowledged) write.
    fn load(path: &Path) -> Model {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut m = Model::default();
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        for line in complete.lines() {
            m.apply(line);
        }
        m
    }

    fn apply(&mut self, line: &str) {
        let w: Vec<&str> = line.split(' ').collect();
        match w.as_slice() {
            ["start", ..] => self.starts += 1,
            ["try-create", kind, label] => {
                let kind = if *kind == "ec" { Kind::Ec } else { Kind::Aes };
                self.keys.insert(
                    label.to_string(),
                    KeyRec {
                        kind,
                        label: label.to_string(),
                        id: None,
                        ct: None,
                        state: State::Enabled,
                        unsure: None,
                        changes: Vec::new(),
                    },
                );
            }
            ["create", _, label, id] => {
                if let Some(k) = self.keys.get_mut(*label) {
                    k.id = Some(id.to_string());
                }
            }
            ["ct", label, iv, ct] => {
                if let Some(k) = self.keys.get_mut(*label) {
                    k.ct = Some((unhex(iv), unhex(ct)));
                }
            }
            ["try-state", label, s] => {
                if let Some(k) = self.keys.get_mut(*label) {
                    k.unsure = State::parse(s);
                }
            }
            ["state", label, s] => {
                if let (Some(k), Some(s)) = (self.keys.get_mut(*label), State::parse(s)) {
                    k.state = s;
                    k.unsure = None;
                    k.changes.push(s);
                }
            }
            ["try-delete", label] => {
                if let Some(k) = self.keys.get_mut(*label) {
                    k.unsure = Some(State::PendingDeletion);
                }
            }
            ["delete", label] => {
                if let Some(k) = self.keys.get_mut(*label) {
                    k.state = State::PendingDeletion;
                    k.unsure = None;
                    k.changes.push(State::PendingDeletion);
                }
            }
            _ => {}
        }
    }
}

/// The acknowledgement log, for appending: every line is written whole and fsync'd.
struct AckLog {
    file: File,
}

impl AckLog {
    /// Opens the log; an unfinished last line (a process killed mid-write) is cut off so
    /// that the next line starts on its own.
    fn open(path: &Path) -> AckLog {
        let text = std::fs::read(path).unwrap_or_default();
        let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the acknowledgement log");
        if keep != text.len() {
            file.set_len(keep as u64).expect("cut the unfinished line");
        }
        AckLog { file }
    }

    fn write(&mut self, line: &str) {
        self.file
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| self.file.sync_data())
            .expect("write the acknowledgement log");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

// ---- paths and processes ----------------------------------------------------------------------

/// `target/release/cks`, next to the module.
fn cks_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join("cks");
    assert!(p.exists(), "cks not found at {}", p.display());
    p
}

fn cfg_path(dir: &Path) -> PathBuf {
    dir.join("cks.toml")
}

/// A configuration that names only instance `id` (same data directory and audit log).
fn instance_cfg_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("only-{id}.toml"))
}

fn acks_path(dir: &Path) -> PathBuf {
    dir.join("acks.log")
}

fn write_configs(dir: &Path) {
    let data = dir.join("data");
    let head = |hsms: &[&str]| {
        let mut t = format!(
            "[keystore]\nlabel = \"{LABEL}\"\ndata_dir = \"{}\"\nmin_pending_days = 0.0001\n\
             default_pending_days = 0.0001\n\n[kdf]\nmemory_kib = 64\niterations = 1\n\n\
             [audit]\ndurability = \"sync\"\n",
            data.display()
        );
        for id in hsms {
            t.push_str(&format!(
                "\n[[hsm]]\nid = \"{id}\"\nkind = \"embedded\"\npath = \"{}\"\n",
                data.join("hsm").join(id).display()
            ));
        }
        t
    };
    std::fs::write(cfg_path(dir), head(&INSTANCES)).expect("write cks.toml");
    for id in INSTANCES {
        std::fs::write(instance_cfg_path(dir, id), head(&[id])).expect("write instance config");
    }
}

/// Output of a finished process.
struct Out {
    ok: bool,
    status: String,
    stdout: String,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        format!(
            "{}\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(4000);
    let start = (start..s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    &s[start..]
}

/// Runs `cmd` to its end (killed after `PROCESS_LIMIT`), output through files in `logs`.
fn run(mut cmd: Command, logs: &Path, tag: &str) -> Out {
    let out_p = logs.join(format!("{tag}.out"));
    let err_p = logs.join(format!("{tag}.err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_p).expect("stdout file"))
        .stderr(File::create(&err_p).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {tag}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break format!("{s}");
        }
        if start.elapsed() > PROCESS_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break format!("killed after {PROCESS_LIMIT:?} (hung)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let ok = status == "exit status: 0";
    Out {
        ok,
        status,
        stdout: std::fs::read_to_string(&out_p).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_p).unwrap_or_default(),
    }
}

/// `cks --config CFG ARGS`.
fn cks(cfg: &Path, args: &[&str], pin: bool, logs: &Path, tag: &str) -> Out {
    let mut cmd = Command::new(cks_bin());
    cmd.arg("--config")
        .arg(cfg)
        .args(args)
        .env_remove("CKS_SO_PIN")
        .env_remove("CKS_CONFIG");
    if pin {
        cmd.env("CKS_PIN", USER_PIN);
    } else {
        cmd.env_remove("CKS_PIN");
    }
    run(cmd, logs, tag)
}

/// This test binary again, as a `role` child.
fn child_cmd(role: &str, dir: &Path, cfg: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .env("CKS_CONFIG", cfg)
        .env_remove("CKS_LOG");
    cmd
}

// ---- the test ---------------------------------------------------------------------------------

#[test]
fn kill_9_loop_keeps_acknowledged_keys_and_audit() {
    match std::env::var(ROLE).as_deref() {
        Ok("worker") => return worker(),
        Ok("checker") => return checker(),
        _ => {}
    }
    let dir = common::tempdir();
    let mut keep = Keep {
        dir: dir.clone(),
        passed: false,
    };
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    write_configs(&dir);
    let cfg = cfg_path(&dir);
    let init = cks(
        &cfg,
        &[
            "init", "--label", LABEL, "--so-pin", SO_PIN, "--pin", USER_PIN,
        ],
        false,
        &logs,
        "init",
    );
    assert!(init.ok, "cks init failed: {}", init.text());

    let seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    eprintln!(
        "crash consistency: key store {}, seed {seed}",
        dir.display()
    );

    let mut problems = Problems::default();
    let mut purged: HashSet<String> = HashSet::new();
    let mut kills = 0;
    let mut early_exits = 0;
    let started = Instant::now();
    let mut rounds = 0;
    for round in 0..ROUNDS {
        if round >= MIN_ROUNDS && started.elapsed() > LOOP_BUDGET {
            break;
        }
        rounds += 1;
        problems.round = round;
        let before = Model::load(&acks_path(&dir));
        let wait = rng.gen_range(KILL_AFTER_MS);
        let (killed, worker_out) = run_worker(&dir, &logs, round, Duration::from_millis(wait));
        if killed {
            kills += 1;
        } else {
            early_exits += 1;
            problems.add(format!(
                "the worker ended before it was killed (it loops until killed): {worker_out}"
            ));
        }
        let model = Model::load(&acks_path(&dir));
        let new_acks = model.keys.values().filter(|k| k.acked()).count()
            - before.keys.values().filter(|k| k.acked()).count();
        eprintln!(
            "round {round}: killed after {wait} ms; {new_acks} key(s) acknowledged this round, \
             {} in all",
            model.keys.values().filter(|k| k.acked()).count()
        );
        check_round(&dir, &logs, &model, &mut purged, &mut problems, round);
    }

    // The end: every disabled key enabled again, then every acknowledged ciphertext must
    // decrypt.
    problems.round = rounds;
    let model = Model::load(&acks_path(&dir));
    let listed = key_list(&cfg, &logs, "final-list", &mut problems);
    let mut acks = AckLog::open(&acks_path(&dir));
    for k in model.keys.values() {
        let disabled = listed
            .iter()
            .find(|v| lists_key(v, k))
            .is_some_and(|v| v["state"] == "Disabled");
        if disabled {
            let alias = format!("alias/{}", k.label);
            acks.write(&format!("try-state {} Enabled", k.label));
            let o = cks(
                &cfg,
                &["key", "enable", &alias],
                false,
                &logs,
                &format!("final-enable-{}", k.label),
            );
            if o.ok {
                acks.write(&format!("state {} Enabled", k.label));
            } else {
                problems.add(format!("cks key enable {alias} failed: {}", o.text()));
            }
        }
    }
    drop(acks);
    let model = Model::load(&acks_path(&dir));
    run_checker(&dir, &logs, &cfg, "final", &mut problems);
    check_audit(&dir, &logs, &model, &mut problems);

    let acked: Vec<&KeyRec> = model.keys.values().filter(|k| k.acked()).collect();
    let count = |f: &dyn Fn(&KeyRec) -> bool| model.keys.values().filter(|k| f(k)).count();
    eprintln!(
        "crash consistency summary: {rounds} rounds in {:.1} s, {kills} kills ({early_exits} \
         early exits), {} worker starts; keys acknowledged: {} ({} AES, {} EC pairs), {} \
         created but never acknowledged; state changes acknowledged: {}, deletions \
         acknowledged: {}, changes left uncertain by a kill: {}; purged keys seen: {}; \
         problems: {}",
        started.elapsed().as_secs_f64(),
        model.starts,
        acked.len(),
        acked.iter().filter(|k| k.kind == Kind::Aes).count(),
        acked.iter().filter(|k| k.kind == Kind::Ec).count(),
        count(&|k| !k.acked()),
        acked
            .iter()
            .flat_map(|k| &k.changes)
            .filter(|s| **s != State::PendingDeletion)
            .count(),
        acked
            .iter()
            .flat_map(|k| &k.changes)
            .filter(|s| **s == State::PendingDeletion)
            .count(),
        count(&|k| k.unsure.is_some()),
        purged.len(),
        problems.list.len(),
    );
    assert!(
        acked.len() >= 5,
        "the worker acknowledged only {} keys in {rounds} rounds: the loop did not run",
        acked.len()
    );
    assert!(
        problems.list.is_empty(),
        "crash consistency: {} problem(s) (key store kept at {}):\n{}",
        problems.list.len(),
        dir.display(),
        problems.render()
    );
    keep.passed = true;
}

/// Removes the key store unless the test failed (or `CKS_TEST_KEEP` is set).
struct Keep {
    dir: PathBuf,
    passed: bool,
}

impl Drop for Keep {
    fn drop(&mut self) {
        if self.passed && std::env::var_os("CKS_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept the key store {}", self.dir.display());
        }
    }
}

/// Problems found: each once, with the round it was first seen in, how often it was seen
/// and by which views (checker configurations) — the same fault seen through every
/// instance is one entry.
#[derive(Default)]
struct Problems {
    round: usize,
    list: Vec<Problem>,
}

struct Problem {
    round: usize,
    what: String,
    views: BTreeSet<String>,
    seen: usize,
}

impl Problems {
    fn add(&mut self, what: String) {
        self.add_seen("", what);
    }

    fn add_seen(&mut self, view: &str, what: String) {
        let p = match self.list.iter().position(|p| p.what == what) {
            Some(i) => &mut self.list[i],
            None => {
                eprintln!("PROBLEM (round {}): {what}", self.round);
                self.list.push(Problem {
                    round: self.round,
                    what,
                    views: BTreeSet::new(),
                    seen: 0,
                });
                self.list.last_mut().expect("just pushed")
            }
        };
        p.seen += 1;
        if !view.is_empty() {
            p.views.insert(view.to_string());
        }
    }

    fn render(&self) -> String {
        self.list
            .iter()
            .map(|p| {
                let views = if p.views.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", through {}",
                        p.views.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                };
                format!(
                    "- from round {} (seen {}x{views}): {}\n",
                    p.round, p.seen, p.what
                )
            })
            .collect()
    }
}

/// Starts the worker in its own process group and kills the group with SIGKILL after
/// `after`; (whether it was still running when killed, its output if it was not).
fn run_worker(dir: &Path, logs: &Path, round: usize, after: Duration) -> (bool, String) {
    let out_p = logs.join(format!("worker-{round}.out"));
    let mut cmd = child_cmd("worker", dir, &cfg_path(dir));
    cmd.env(ROUND, round.to_string())
        .stdin(Stdio::null())
        .stdout(File::create(&out_p).expect("worker log"))
        .stderr(Stdio::from(
            File::options()
                .append(true)
                .open(&out_p)
                .expect("worker log"),
        ))
        .process_group(0);
    let mut child: Child = cmd.spawn().expect("spawn the worker");
    let pgid = child.id() as libc::pid_t;
    std::thread::sleep(after);
    let running = child.try_wait().expect("try_wait").is_none();
    // SAFETY: kill(2) on the process group this test created; no memory involved.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let status = child.wait().expect("wait for the worker");
    // The `cks` the worker may have been running is in the group too: wait until the whole
    // group is gone (bounded; an orphan is reaped by init).
    let t = Instant::now();
    // SAFETY: as above, signal 0 only asks whether the group still exists.
    while unsafe { libc::kill(-pgid, 0) } == 0 && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let text = std::fs::read_to_string(&out_p).unwrap_or_default();
    (running, format!("{status}\n{}", tail(&text)))
}

/// Every check after one kill.
fn check_round(
    dir: &Path,
    logs: &Path,
    model: &Model,
    purged: &mut HashSet<String>,
    problems: &mut Problems,
    round: usize,
) {
    let cfg = cfg_path(dir);
    // What an application sees at the restart (before anything is synchronised).
    run_checker(dir, logs, &cfg, &format!("restart-{round}"), problems);

    // Every instance brought up to date, then each must hold the same keys.
    let sync = cks(&cfg, &["hsm", "sync"], true, logs, &format!("sync-{round}"));
    if !sync.ok {
        problems.add(format!("cks hsm sync failed after a kill: {}", sync.text()));
    }
    let list = cks(
        &cfg,
        &["hsm", "list", "--json"],
        false,
        logs,
        &format!("hsm-list-{round}"),
    );
    let rows: Vec<Value> = serde_json::from_str(&list.stdout).unwrap_or_default();
    if !list.ok || rows.len() != INSTANCES.len() {
        problems.add(format!("cks hsm list --json: {}", list.text()));
    }
    let mut counts = BTreeMap::new();
    for r in &rows {
        let id = r["id"].as_str().unwrap_or("?").to_string();
        if r["healthy"] != true {
            problems.add(format!(
                "instance {id} not healthy after the kill and `cks hsm sync`: {}",
                r["state"]
            ));
        }
        counts.insert(id, r["keys"].as_u64().unwrap_or(0));
    }
    let distinct: BTreeSet<u64> = counts.values().copied().collect();
    if distinct.len() > 1 {
        problems.add(format!(
            "instances diverge after `cks hsm sync`: keys held {counts:?}"
        ));
    }

    // The key states (`cks key list` carries out due deletions first).
    let listed = key_list(&cfg, logs, &format!("key-list-{round}"), problems);
    check_states(model, &listed, purged, problems);

    // Each instance on its own.
    for id in INSTANCES {
        let view = format!("{id}-{round}");
        let held = run_checker(dir, logs, &instance_cfg_path(dir, id), &view, problems);
        if let (Some(held), Some(n)) = (held, counts.get(id)) {
            // Deletions falling due between the two looks can only lower the count.
            if held > *n {
                problems.add(format!(
                    "{id}: its checker sees {held} secret/private keys, cks hsm list said {n}"
                ));
            }
        }
    }

    check_audit(dir, logs, model, problems);
}

/// `cks key list --json`, parsed.
fn key_list(cfg: &Path, logs: &Path, tag: &str, problems: &mut Problems) -> Vec<Value> {
    let o = cks(cfg, &["key", "list", "--json"], false, logs, tag);
    match serde_json::from_str::<Vec<Value>>(&o.stdout) {
        Ok(v) if o.ok => v,
        _ => {
            problems.add(format!("cks key list --json failed: {}", o.text()));
            Vec::new()
        }
    }
}

fn lists_key(v: &Value, k: &KeyRec) -> bool {
    let alias = format!("alias/{}", k.label);
    k.id.as_deref().is_some_and(|id| v["id"] == id)
        || v["aliases"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == alias.as_str()))
}

/// The states `cks key list` shows against what was acknowledged.
fn check_states(
    model: &Model,
    listed: &[Value],
    purged: &mut HashSet<String>,
    problems: &mut Problems,
) {
    let mut known = vec![false; listed.len()];
    for k in model.keys.values() {
        let hits: Vec<usize> = (0..listed.len())
            .filter(|&i| lists_key(&listed[i], k))
            .collect();
        for &i in &hits {
            known[i] = true;
        }
        if hits.len() > 1 {
            problems.add(format!(
                "{}: {} keys in cks key list (one expected)",
                k.label,
                hits.len()
            ));
        }
        let seen = match hits.first() {
            None => State::Absent,
            Some(&i) => match listed[i]["state"].as_str().and_then(State::parse) {
                Some(s) => s,
                None => {
                    problems.add(format!(
                        "{}: cks key list shows state {}",
                        k.label, listed[i]["state"]
                    ));
                    continue;
                }
            },
        };
        if !k.allowed().contains(&seen) {
            problems.add(format!(
                "{} ({}): cks key list shows {seen:?}; allowed by what was acknowledged: {:?}",
                k.label,
                describe_acks(k),
                k.allowed()
            ));
        }
        if let Some(id) = &k.id {
            if seen == State::Absent && k.allowed().contains(&State::PendingDeletion) {
                purged.insert(id.clone());
            } else if seen != State::Absent && purged.contains(id) {
                problems.add(format!(
                    "{} ({id}): purged earlier, back in cks key list as {seen:?}",
                    k.label
                ));
            }
        }
    }
    for (i, v) in listed.iter().enumerate() {
        if !known[i] {
            problems.add(format!(
                "cks key list shows a key the worker never tried to make: {v}"
            ));
        }
    }
}

fn describe_acks(k: &KeyRec) -> String {
    let mut s = if k.acked() {
        "created".to_string()
    } else {
        "creation not acknowledged".to_string()
    };
    for c in &k.changes {
        s.push_str(&format!(", then {c:?}"));
    }
    if let Some(u) = k.unsure {
        s.push_str(&format!(", then {u:?} tried (killed before acknowledged)"));
    }
    s
}

/// `cks audit verify --json` must find the log intact; `cks audit show --json` must hold a
/// record of every acknowledged action.
fn check_audit(dir: &Path, logs: &Path, model: &Model, problems: &mut Problems) {
    let cfg = cfg_path(dir);
    let v = cks(
        &cfg,
        &["audit", "verify", "--json"],
        false,
        logs,
        "audit-verify",
    );
    let rep: Value = serde_json::from_str(&v.stdout).unwrap_or(Value::Null);
    if !v.ok || rep.is_null() {
        let listed: Vec<String> = rep["problems"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        format!(
                            "{}:{}: {}",
                            p["file"].as_str().unwrap_or("?"),
                            p["line"],
                            p["what"].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        problems.add(format!(
            "cks audit verify after kill -9 reports the log not intact ({}): {}",
            v.status,
            if listed.is_empty() {
                v.text()
            } else {
                listed.join(" | ")
            }
        ));
    }

    let show = cks(
        &cfg,
        &["audit", "show", "--json"],
        false,
        logs,
        "audit-show",
    );
    if !show.ok {
        problems.add(format!("cks audit show --json failed: {}", show.text()));
        return;
    }
    let records: Vec<Value> = show
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ok = |r: &Value, op: &str| r["op"] == op && r["result"] == "CKR_OK";
    let mut created = HashSet::new();
    let mut changes: HashMap<(String, State), usize> = HashMap::new();
    for r in &records {
        let Some(id) = r["key_id"].as_str() else {
            continue;
        };
        if ok(r, "key_create") {
            created.insert(id.to_string());
        }
        let reason = r["reason"].as_str().unwrap_or("");
        if ok(r, "key_state") {
            for s in [State::Enabled, State::Disabled] {
                if reason.starts_with(&format!("state {s:?},")) {
                    *changes.entry((id.to_string(), s)).or_default() += 1;
                }
            }
        }
        if ok(r, "key_delete") {
            *changes
                .entry((id.to_string(), State::PendingDeletion))
                .or_default() += 1;
        }
    }
    for k in model.keys.values() {
        let Some(id) = &k.id else { continue };
        if !created.contains(id) {
            problems.add(format!(
                "{} ({id}): acknowledged creation has no key_create audit record",
                k.label
            ));
        }
        for s in [State::Enabled, State::Disabled, State::PendingDeletion] {
            let acked = k.changes.iter().filter(|c| **c == s).count();
            let recorded = changes.get(&(id.clone(), s)).copied().unwrap_or(0);
            if recorded < acked {
                problems.add(format!(
                    "{} ({id}): {acked} acknowledged change(s) to {s:?}, {recorded} audit \
                     record(s)",
                    k.label
                ));
            }
        }
    }
}

/// Runs a checker on `cfg`; its problems are added; the secret/private keys it saw.
fn run_checker(
    dir: &Path,
    logs: &Path,
    cfg: &Path,
    view: &str,
    problems: &mut Problems,
) -> Option<u64> {
    let mut cmd = child_cmd("checker", dir, cfg);
    cmd.env(VIEW, view);
    let o = run(cmd, logs, &format!("checker-{view}"));
    let text = format!("{}{}", o.stdout, o.stderr);
    let view_name = view.rsplit_once('-').map_or(view, |(v, _)| v);
    for l in text.lines() {
        if let Some(p) = l.strip_prefix("PROBLEM ") {
            problems.add_seen(view_name, p.to_string());
        }
    }
    if !o.ok || !text.contains("CHECK-DONE") {
        problems.add_seen(view_name, format!("the checker failed: {}", o.text()));
        return None;
    }
    text.lines()
        .find_map(|l| l.strip_prefix("HELD "))
        .and_then(|n| n.trim().parse().ok())
}

// ---- the worker -------------------------------------------------------------------------------

fn worker() {
    let dir = PathBuf::from(std::env::var_os(DIR).expect("CKS_CRASH_DIR"));
    let round: usize = std::env::var(ROUND)
        .ok()
        .and_then(|r| r.parse().ok())
        .expect("CKS_CRASH_ROUND");
    let mut model = Model::load(&acks_path(&dir));
    let mut acks = AckLog::open(&acks_path(&dir));
    acks.write(&format!("start {round} {}", std::process::id()));
    let cfg = cfg_path(&dir);
    let pkcs11 = Pkcs11::new(common::module_path()).expect("load module");
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = pkcs11.get_slots_with_token().expect("slots")[0];
    let s = pkcs11.open_rw_session(slot).expect("session");
    s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
        .expect("user login");
    let mut rng = rand::thread_rng();
    let log = |model: &mut Model, acks: &mut AckLog, line: String| {
        acks.write(&line);
        model.apply(&line);
    };
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < WORKER_LIMIT {
        let label = format!("crash-{round}-{n}");
        if n % 4 == 3 {
            log(&mut model, &mut acks, format!("try-create ec {label}"));
            let (_, private) = make_ec(&s, &label).expect("C_GenerateKeyPair");
            let id = key_id(&s, private);
            log(&mut model, &mut acks, format!("create ec {label} {id}"));
        } else {
            log(&mut model, &mut acks, format!("try-create aes {label}"));
            let key = make_aes(&s, &label).expect("C_GenerateKey");
            let id = key_id(&s, key);
            log(&mut model, &mut acks, format!("create aes {label} {id}"));
            let (iv, ct) = gcm_encrypt(&s, key, PLAIN).expect("encrypt with the new key");
            log(
                &mut model,
                &mut acks,
                format!("ct {label} {} {}", hex(&iv), hex(&ct)),
            );
        }
        let older: Vec<String> = model
            .keys
            .values()
            .filter(|k| k.changeable() && k.label != label)
            .map(|k| k.label.clone())
            .collect();
        if n % 3 == 1 && !older.is_empty() {
            // Disable an enabled key or enable a disabled one, with the CLI.
            let k = &older[rng.gen_range(0..older.len())];
            let to = match model.keys[k].state {
                State::Enabled => State::Disabled,
                _ => State::Enabled,
            };
            log(&mut model, &mut acks, format!("try-state {k} {to:?}"));
            let verb = if to == State::Enabled {
                "enable"
            } else {
                "disable"
            };
            let out = Command::new(cks_bin())
                .arg("--config")
                .arg(&cfg)
                .args(["key", verb, &format!("alias/{k}")])
                .output()
                .expect("run cks");
            assert!(
                out.status.success(),
                "cks key {verb} alias/{k} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            log(&mut model, &mut acks, format!("state {k} {to:?}"));
        }
        if n % 5 == 4 && older.len() > 2 {
            // C_DestroyObject on a key schedules its deletion.
            let k = older[rng.gen_range(0..older.len())].clone();
            if model.keys[&k].changeable() {
                let found = s
                    .find_objects(&[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::Label(k.as_bytes().to_vec()),
                    ])
                    .expect("C_FindObjects");
                assert_eq!(found.len(), 1, "{k}: one key expected, found {found:?}");
                log(&mut model, &mut acks, format!("try-delete {k}"));
                s.destroy_object(found[0]).expect("C_DestroyObject");
                log(&mut model, &mut acks, format!("delete {k}"));
            }
        }
        n += 1;
    }
    println!("WORKER-DONE after {n} iterations (never killed)");
}

fn make_aes(s: &Session, label: &str) -> cryptoki::error::Result<ObjectHandle> {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::ValueLen(32.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
    )
}

fn make_ec(s: &Session, label: &str) -> cryptoki::error::Result<(ObjectHandle, ObjectHandle)> {
    s.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::EcParams(P256_OID.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
        &[
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Sign(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
    )
}

fn vendor(s: &Session, h: ObjectHandle, t: u64) -> Result<Vec<u8>, P11Error> {
    match s
        .get_attributes(h, &[AttributeType::VendorDefined(t)])?
        .as_slice()
    {
        [Attribute::VendorDefined((_, v))] => Ok(v.clone()),
        _ => Ok(Vec::new()),
    }
}

fn key_id(s: &Session, h: ObjectHandle) -> String {
    String::from_utf8(vendor(s, h, CKA_CKS_KEY_ID).expect("CKA_CKS_KEY_ID")).expect("UTF-8")
}

fn gcm(iv: &mut [u8]) -> Mechanism<'_> {
    Mechanism::AesGcm(GcmParams::new(iv, AAD, 128.into()).expect("GCM parameters"))
}

fn gcm_encrypt(
    s: &Session,
    key: ObjectHandle,
    plain: &[u8],
) -> Result<([u8; 12], Vec<u8>), P11Error> {
    let iv: [u8; 12] = rand::random();
    let mut buf = iv;
    Ok((iv, s.encrypt(&gcm(&mut buf), key, plain)?))
}

fn gcm_decrypt(s: &Session, key: ObjectHandle, iv: &[u8], ct: &[u8]) -> Result<Vec<u8>, P11Error> {
    let mut buf = iv.to_vec();
    s.decrypt(&gcm(&mut buf), key, ct)
}

fn rv(e: &P11Error) -> Option<RvError> {
    match e {
        P11Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

// ---- the checker ------------------------------------------------------------------------------

/// One visible object.
struct Obj {
    handle: ObjectHandle,
    class: ObjectClass,
    key_id: String,
    /// `CKA_CKS_KEY_STATE`: `None` when the object belongs to no key (no CMK record).
    state: Option<u64>,
}

impl Obj {
    fn describe(objs: &[&Obj]) -> String {
        let d: Vec<String> = objs
            .iter()
            .map(|o| format!("{} key id {:?} state {:?}", o.class, o.key_id, o.state))
            .collect();
        format!("[{}]", d.join("; "))
    }
}

fn checker() {
    let dir = PathBuf::from(std::env::var_os(DIR).expect("CKS_CRASH_DIR"));
    let model = Model::load(&acks_path(&dir));
    let pkcs11 = Pkcs11::new(common::module_path()).expect("load module");
    if let Err(e) = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        println!("PROBLEM C_Initialize failed after the kill: {e}");
        println!("CHECK-DONE");
        return;
    }
    let slot = match pkcs11.get_slots_with_token() {
        Ok(v) if !v.is_empty() => v[0],
        other => {
            println!("PROBLEM no token after the kill: {other:?}");
            println!("CHECK-DONE");
            return;
        }
    };
    let s = pkcs11.open_rw_session(slot).expect("session");
    if let Err(e) = s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))) {
        println!("PROBLEM user login failed after the kill: {e}");
        println!("CHECK-DONE");
        return;
    }
    let mut c = Checker {
        s,
        problems: Vec::new(),
    };
    c.run(&model);
    for p in &c.problems {
        println!("PROBLEM {p}");
    }
    println!("CHECK-DONE");
}

struct Checker {
    s: Session,
    problems: Vec<String>,
}

impl Checker {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    fn run(&mut self, model: &Model) {
        let handles = match self.s.find_objects(&[]) {
            Ok(h) => h,
            Err(e) => return self.problem(format!("C_FindObjects failed: {e}")),
        };
        let mut by_label: BTreeMap<String, Vec<Obj>> = BTreeMap::new();
        let mut held = 0u64;
        for h in handles {
            let attrs = self
                .s
                .get_attributes(h, &[AttributeType::Class, AttributeType::Label]);
            let (mut class, mut label) = (None, String::new());
            match attrs {
                Ok(attrs) => {
                    for a in attrs {
                        match a {
                            Attribute::Class(c) => class = Some(c),
                            Attribute::Label(l) => label = String::from_utf8_lossy(&l).into(),
                            _ => {}
                        }
                    }
                }
                // Purged while we looked (a deletion falling due): gone is gone.
                Err(e) if rv(&e) == Some(RvError::ObjectHandleInvalid) => continue,
                Err(e) => {
                    self.problem(format!("object {h}: C_GetAttributeValue failed: {e}"));
                    continue;
                }
            }
            let Some(class) = class else {
                self.problem(format!("object {h} ({label}) has no CKA_CLASS"));
                continue;
            };
            if class == ObjectClass::SECRET_KEY || class == ObjectClass::PRIVATE_KEY {
                held += 1;
            }
            let key_id = vendor(&self.s, h, CKA_CKS_KEY_ID)
                .map(|v| String::from_utf8_lossy(&v).to_string())
                .unwrap_or_default();
            let state = vendor(&self.s, h, CKA_CKS_KEY_STATE)
                .ok()
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map(u64::from_ne_bytes);
            by_label.entry(label).or_default().push(Obj {
                handle: h,
                class,
                key_id,
                state,
            });
        }
        println!("HELD {held}");
        let mut checked = 0;
        for k in model.keys.values() {
            let objs = by_label.remove(&k.label).unwrap_or_default();
            self.check_key(k, &objs);
            checked += 1;
        }
        for (label, objs) in by_label {
            self.problem(format!(
                "{} object(s) labelled {label:?} that the worker never tried to make: {}",
                objs.len(),
                Obj::describe(&objs.iter().collect::<Vec<_>>())
            ));
        }
        println!("INFO checked {checked} keys");
    }

    fn check_key(&mut self, k: &KeyRec, objs: &[Obj]) {
        let what = format!("{} ({})", k.label, describe_acks(k));
        let of = |c: ObjectClass| objs.iter().filter(|o| o.class == c).collect::<Vec<_>>();
        let (main, public) = match k.kind {
            Kind::Aes => (of(ObjectClass::SECRET_KEY), Vec::new()),
            Kind::Ec => (of(ObjectClass::PRIVATE_KEY), of(ObjectClass::PUBLIC_KEY)),
        };
        let all: Vec<&Obj> = objs.iter().collect();
        if main.len() + public.len() != objs.len() {
            self.problem(format!(
                "{what}: objects of an unexpected class: {}",
                Obj::describe(&all)
            ));
        }
        if main.len() > 1 || public.len() > 1 {
            return self.problem(format!(
                "{what}: found more than once (duplicates): {}",
                Obj::describe(&all)
            ));
        }
        if k.kind == Kind::Ec && main.len() != public.len() {
            let used = match main.first() {
                Some(o) => format!("; the private half {}", self.try_use(k.kind, o.handle)),
                None => String::new(),
            };
            return self.problem(format!(
                "{what}: half-made key pair visible: {} private, {} public object(s): {}{used}",
                main.len(),
                public.len(),
                Obj::describe(&all)
            ));
        }
        let allowed = k.allowed();
        let Some(key) = main.first() else {
            if !allowed.contains(&State::Absent) {
                self.problem(format!("{what}: LOST — not found by its label"));
            }
            return;
        };
        for o in main.iter().chain(&public) {
            if let Some(id) = &k.id {
                if &o.key_id != id {
                    self.problem(format!(
                        "{what}: object {:?} carries key id {:?}, acknowledged {id}",
                        o.class, o.key_id
                    ));
                }
            }
        }
        let state = match key.state {
            Some(code) => match State::from_code(code) {
                Some(s) => s,
                None => {
                    return self.problem(format!("{what}: CKA_CKS_KEY_STATE is {code}"));
                }
            },
            None => {
                return self.problem(format!(
                    "{what}: half-made key visible: the object (key id {:?}) belongs to no \
                     key (no key record; CKA_CKS_KEY_STATE empty), so `cks key list` does not \
                     show it and no state applies to it; the key {}",
                    key.key_id,
                    self.try_use(k.kind, key.handle)
                ));
            }
        };
        if let Some(p) = public.first() {
            if p.state != key.state {
                self.problem(format!(
                    "{what}: public half state {:?}, private half {:?}",
                    p.state, key.state
                ));
            }
        }
        if !allowed.contains(&state) {
            self.problem(format!(
                "{what}: state {state:?}; allowed by what was acknowledged: {allowed:?}"
            ));
        }
        let gone = allowed.contains(&State::Absent);
        match (k.kind, state) {
            (Kind::Aes, State::Enabled) => self.aes_works(&what, k, key.handle, gone),
            (Kind::Ec, State::Enabled) => {
                let public = public.first().map(|p| p.handle);
                self.ec_works(&what, key.handle, public, gone)
            }
            (_, _) => self.refused(&what, k, key.handle),
        }
    }

    /// Whether a key that should not be usable is: encrypt (AES) or sign (EC private key).
    fn try_use(&self, kind: Kind, h: ObjectHandle) -> String {
        let used = match kind {
            Kind::Aes => gcm_encrypt(&self.s, h, b"x").map(|_| ()),
            Kind::Ec => self.s.sign(&Mechanism::EcdsaSha256, h, b"x").map(|_| ()),
        };
        match used {
            Ok(()) => "works (no key state is checked)".to_string(),
            Err(e) => format!("is refused ({e})"),
        }
    }

    /// Tolerates a key purged while we look (only for one whose deletion may be due).
    fn failed(&mut self, what: &str, op: &str, e: &P11Error, gone: bool) {
        let vanished = matches!(
            rv(e),
            Some(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid)
        );
        if !(gone && vanished) {
            self.problem(format!("{what}: {op} failed: {e}"));
        }
    }

    fn aes_works(&mut self, what: &str, k: &KeyRec, h: ObjectHandle, gone: bool) {
        if let Some((iv, ct)) = &k.ct {
            match gcm_decrypt(&self.s, h, iv, ct) {
                Ok(p) if p == PLAIN => {}
                Ok(p) => self.problem(format!(
                    "{what}: the acknowledged ciphertext decrypts to {:?}",
                    String::from_utf8_lossy(&p)
                )),
                Err(e) => self.failed(what, "decrypting the acknowledged ciphertext", &e, gone),
            }
        }
        match gcm_encrypt(&self.s, h, b"fresh") {
            Ok((iv, ct)) => match gcm_decrypt(&self.s, h, &iv, &ct) {
                Ok(p) if p == b"fresh" => {}
                Ok(_) => self.problem(format!("{what}: encrypt/decrypt round trip differs")),
                Err(e) => self.failed(what, "decrypt (round trip)", &e, gone),
            },
            Err(e) => self.failed(what, "encrypt", &e, gone),
        }
    }

    fn ec_works(
        &mut self,
        what: &str,
        private: ObjectHandle,
        public: Option<ObjectHandle>,
        gone: bool,
    ) {
        let msg = what.as_bytes();
        match self.s.sign(&Mechanism::EcdsaSha256, private, msg) {
            Ok(sig) => {
                if let Some(p) = public {
                    if let Err(e) = self.s.verify(&Mechanism::EcdsaSha256, p, msg, &sig) {
                        self.failed(what, "verifying with the public half", &e, gone);
                    }
                }
            }
            Err(e) => self.failed(what, "sign", &e, gone),
        }
    }

    /// A disabled or pending-deletion key must refuse use.
    fn refused(&mut self, what: &str, k: &KeyRec, h: ObjectHandle) {
        let r = match k.kind {
            Kind::Aes => match &k.ct {
                Some((iv, ct)) => gcm_decrypt(&self.s, h, iv, ct).map(|_| ()),
                None => gcm_encrypt(&self.s, h, b"x").map(|_| ()),
            },
            Kind::Ec => self.s.sign(&Mechanism::EcdsaSha256, h, b"x").map(|_| ()),
        };
        match r {
            Ok(()) => self.problem(format!("{what}: a key that is not enabled was used")),
            Err(e) => {
                let fine = matches!(
                    rv(&e),
                    Some(
                        RvError::KeyFunctionNotPermitted
                            | RvError::ObjectHandleInvalid
                            | RvError::KeyHandleInvalid
                    )
                );
                if !fine {
                    self.problem(format!(
                        "{what}: refused with {e}, not CKR_KEY_FUNCTION_NOT_PERMITTED"
                    ));
                }
            }
        }
    }
}
