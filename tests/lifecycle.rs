//! The KMS key lifecycle (issue 5), as a user and an application see it: `cks key …` and
//! `cks keystore …` commands against a key store of two embedded instances, and the
//! module loaded through cryptoki in a separate, already-running process.
//!
//! Every scenario has its own key store (a temp dir, a cheap KDF, a short minimum
//! deletion window). Scenarios that load the module run in a child process of this test
//! binary (one module per process; `CKS_CONFIG` is read by `C_Initialize`); the child runs
//! `cks` commands itself, so every change it observes comes from another process. Every
//! wait is bounded.

mod common;

use common::{LABEL, SO_PIN, USER_PIN};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Set in a child process to the name of the scenario it runs.
const CHILD: &str = "CKS_LIFECYCLE_CHILD";
const CKS: &str = env!("CARGO_BIN_EXE_cks");
/// Longest a `cks` command or a child process may run.
const PROCESS_LIMIT: Duration = Duration::from_secs(240);
/// A change made by `cks` must reach a running process within a second; allow a little
/// for a loaded machine.
const PROPAGATION: Duration = Duration::from_millis(1500);
/// `keystore.min_pending_days` of the test stores: 0.00002 days = 1.7 s (rounded up to 2).
const MIN_DAYS: &str = "0.00002";

const CKA_CKS_KEY_ID: u64 = 0xC34B_0001;
const CKA_CKS_ARN: u64 = 0xC34B_0002;
const CKA_CKS_KEY_STATE: u64 = 0xC34B_0003;
const CKA_CKS_KEY_SPEC: u64 = 0xC34B_0004;
const CKA_CKS_KEY_USAGE: u64 = 0xC34B_0005;
const CKA_CKS_KEY_VERSION: u64 = 0xC34B_0006;
const CKA_CKS_CREATION_DATE: u64 = 0xC34B_0007;
const CKA_CKS_DELETION_DATE: u64 = 0xC34B_0008;

const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

// ---- processes ----------------------------------------------------------------------------

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run a command to its end (killed after PROCESS_LIMIT), collecting its output.
fn run_limited(mut cmd: Command) -> Out {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > PROCESS_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran longer than {PROCESS_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

// ---- the scenario's key store ---------------------------------------------------------------

/// A key store of two embedded instances in a temp dir, initialised with `cks init`.
struct Store {
    dir: PathBuf,
    cfg: PathBuf,
    /// The parent owns the directory: removed when the scenario passes, kept (for a
    /// look) when it fails.
    owner: bool,
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.owner && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else if self.owner {
            eprintln!("key store kept in {}", self.dir.display());
        }
    }
}

impl Store {
    fn new() -> Store {
        let dir = common::tempdir();
        let cfg = dir.join("cks.toml");
        std::fs::write(
            &cfg,
            format!(
                "[keystore]\nlabel = \"{LABEL}\"\ndata_dir = \"{}\"\nmin_pending_days = {MIN_DAYS}\n\
                 default_pending_days = 1.0\n\n[kdf]\nmemory_kib = 64\niterations = 1\n\n\
                 [[hsm]]\nid = \"hsm1\"\nkind = \"embedded\"\n\n[[hsm]]\nid = \"hsm2\"\nkind = \"embedded\"\n",
                dir.join("data").display()
            ),
        )
        .expect("write cks.toml");
        let s = Store {
            dir,
            cfg,
            owner: true,
        };
        s.ok(&[
            "init", "--label", LABEL, "--so-pin", SO_PIN, "--pin", USER_PIN,
        ]);
        s
    }

    /// In a child: the parent's key store.
    fn from_env() -> Store {
        let cfg = PathBuf::from(std::env::var("CKS_CONFIG").expect("CKS_CONFIG in the child"));
        Store {
            dir: cfg.parent().expect("dir").to_path_buf(),
            cfg,
            owner: false,
        }
    }

    fn cks(&self, args: &[&str]) -> Out {
        let mut c = Command::new(CKS);
        c.args(args)
            .env("CKS_CONFIG", &self.cfg)
            .env("CKS_PIN", USER_PIN)
            .env_remove("CKS_LOG");
        run_limited(c)
    }

    /// A command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.cks(args);
        assert_eq!(o.code, 0, "cks {args:?} failed:\n{o}");
        o.stdout
    }

    /// A command that must fail with this exit code; its stderr.
    fn fails(&self, code: i32, args: &[&str]) -> String {
        let o = self.cks(args);
        assert_eq!(o.code, code, "cks {args:?} must exit {code}:\n{o}");
        assert!(
            !o.stderr.trim().is_empty(),
            "cks {args:?}: no message:\n{o}"
        );
        o.stderr
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("cks {args:?}: not JSON ({e}):\n{out}"))
    }

    fn describe(&self, key: &str) -> Value {
        self.json(&["key", "describe", key, "--json"])
    }

    fn state(&self, key: &str) -> String {
        self.describe(key)["state"]
            .as_str()
            .expect("state")
            .to_string()
    }

    fn create(&self, spec: &str, alias: Option<&str>) -> Value {
        let mut args = vec!["key", "create", "--spec", spec, "--json"];
        if let Some(a) = alias {
            args.extend(["--alias", a]);
        }
        let k = self.json(&args);
        check_key_shape(&k);
        k
    }

    fn keys(&self) -> Vec<Value> {
        self.json(&["key", "list", "--json"])
            .as_array()
            .expect("key list --json is an array")
            .clone()
    }

    /// `cks hsm list --json`: keys held by each instance.
    fn instance_keys(&self) -> Vec<(String, u64)> {
        self.json(&["hsm", "list", "--json"])
            .as_array()
            .expect("array")
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().expect("id").to_string(),
                    r["keys"].as_u64().expect("keys"),
                )
            })
            .collect()
    }

    /// Run `scenario` (a test of this binary) in a child process against this store.
    fn in_child(&self, scenario: &str) {
        let mut c = Command::new(std::env::current_exe().expect("exe"));
        c.args([scenario, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, scenario)
            .env("CKS_CONFIG", &self.cfg)
            .env("CKS_PIN", USER_PIN);
        let o = run_limited(c);
        assert!(
            o.code == 0 && o.stdout.contains("1 passed"),
            "child {scenario} failed (key store in {}):\n{o}",
            self.dir.display()
        );
    }
}

/// The JSON contract of a key.
fn check_key_shape(k: &Value) {
    for f in [
        "id",
        "arn",
        "aliases",
        "description",
        "spec",
        "usage",
        "state",
        "versions",
        "current_version",
        "created",
        "deletion_date",
        "rotation_days",
    ] {
        assert!(k.get(f).is_some(), "key JSON lacks {f:?}: {k}");
    }
    let id = k["id"].as_str().expect("id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "id is no UUID: {id}");
    assert!(k["arn"]
        .as_str()
        .expect("arn")
        .ends_with(&format!(":key/{id}")));
    assert!(k["aliases"].is_array());
    assert!(k["versions"].as_array().is_some_and(|v| !v.is_empty()));
    assert!(k["created"].as_str().expect("created").ends_with('Z'));
}

/// Which role this process plays for `scenario`: `true` in its child.
fn is_child(scenario: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|v| v == scenario)
}

// ---- cryptoki helpers (children only) -------------------------------------------------------

struct Module {
    pkcs11: Pkcs11,
    slot: cryptoki::slot::Slot,
}

impl Module {
    fn load() -> Module {
        let pkcs11 = Pkcs11::new(common::module_path()).expect("load module");
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        let slot = pkcs11.get_slots_with_token().expect("slots")[0];
        Module { pkcs11, slot }
    }

    /// A read/write session with the user logged in (login is per token: later sessions
    /// share it).
    fn login(&self) -> Session {
        let s = self.pkcs11.open_rw_session(self.slot).expect("session");
        s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
            .expect("user login");
        s
    }

    fn session(&self) -> Session {
        self.pkcs11.open_rw_session(self.slot).expect("session")
    }
}

fn rv(e: &P11Error) -> Option<RvError> {
    match e {
        P11Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

fn find(s: &Session, template: &[Attribute]) -> Vec<ObjectHandle> {
    s.find_objects(template).expect("C_FindObjects")
}

fn one(s: &Session, template: &[Attribute]) -> ObjectHandle {
    let found = find(s, template);
    assert_eq!(found.len(), 1, "expected one object for {template:?}");
    found[0]
}

fn vendor(s: &Session, h: ObjectHandle, t: u64) -> Vec<u8> {
    let attrs = s
        .get_attributes(h, &[AttributeType::VendorDefined(t)])
        .expect("C_GetAttributeValue");
    match attrs.as_slice() {
        [Attribute::VendorDefined((_, v))] => v.clone(),
        other => panic!("vendor attribute 0x{t:x}: {other:?}"),
    }
}

fn vendor_text(s: &Session, h: ObjectHandle, t: u64) -> String {
    String::from_utf8(vendor(s, h, t)).expect("UTF-8")
}

fn vendor_ulong(s: &Session, h: ObjectHandle, t: u64) -> u64 {
    let v = vendor(s, h, t);
    u64::from_ne_bytes(
        v.as_slice()
            .try_into()
            .unwrap_or_else(|_| panic!("attribute 0x{t:x} of {h}: {v:?} is no CK_ULONG")),
    )
}

fn cka_id(s: &Session, h: ObjectHandle) -> Vec<u8> {
    match s
        .get_attributes(h, &[AttributeType::Id])
        .expect("CKA_ID")
        .as_slice()
    {
        [Attribute::Id(v)] => v.clone(),
        other => panic!("CKA_ID: {other:?}"),
    }
}

fn label(s: &Session, h: ObjectHandle) -> String {
    match s
        .get_attributes(h, &[AttributeType::Label])
        .expect("CKA_LABEL")
        .as_slice()
    {
        [Attribute::Label(v)] => String::from_utf8_lossy(v).to_string(),
        other => panic!("CKA_LABEL: {other:?}"),
    }
}

fn gcm_encrypt(
    s: &Session,
    key: ObjectHandle,
    plain: &[u8],
) -> Result<([u8; 12], Vec<u8>), P11Error> {
    let iv: [u8; 12] = rand::random();
    let mut buf = iv;
    let m = Mechanism::AesGcm(GcmParams::new(&mut buf, b"aad", 128.into()).expect("GCM"));
    Ok((iv, s.encrypt(&m, key, plain)?))
}

fn gcm_decrypt(
    s: &Session,
    key: ObjectHandle,
    iv: [u8; 12],
    ct: &[u8],
) -> Result<Vec<u8>, P11Error> {
    let mut buf = iv;
    let m = Mechanism::AesGcm(GcmParams::new(&mut buf, b"aad", 128.into()).expect("GCM"));
    s.decrypt(&m, key, ct)
}

/// Poll `f` until it is true or `limit` passes; how long it took.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- 1. state transitions -------------------------------------------------------------------

#[test]
fn every_state_transition_allowed_and_refused() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let st = Store::new();
    let k = st.create("AES_256", Some("alias/states"));
    assert_eq!(k["state"], "Enabled");
    assert_eq!(k["deletion_date"], Value::Null);
    let id = k["id"].as_str().expect("id").to_string();
    let arn = k["arn"].as_str().expect("arn").to_string();
    // Keys are named by id, ARN or alias alike.
    for name in [id.as_str(), arn.as_str(), "alias/states"] {
        assert_eq!(st.describe(name)["id"], id.as_str());
    }

    // From Enabled.
    st.ok(&["key", "enable", &id]);
    assert_eq!(st.state(&id), "Enabled");
    st.fails(1, &["key", "cancel-deletion", &id]);
    assert_eq!(st.state(&id), "Enabled");
    st.ok(&["key", "disable", &arn]);
    assert_eq!(st.state(&id), "Disabled");

    // From Disabled.
    st.ok(&["key", "disable", &id]);
    assert_eq!(st.state(&id), "Disabled");
    st.fails(1, &["key", "cancel-deletion", &id]);
    st.fails(1, &["key", "rotate", &id]);
    assert_eq!(st.describe(&id)["current_version"], 1);
    st.ok(&["key", "enable", "alias/states"]);
    assert_eq!(st.state(&id), "Enabled");

    // Enabled → PendingDeletion, and everything refused from there but cancel.
    st.ok(&["key", "schedule-deletion", &id, "--days", "1"]);
    let d = st.describe(&id);
    assert_eq!(d["state"], "PendingDeletion");
    assert!(d["deletion_date"].is_string(), "{d}");
    st.fails(1, &["key", "enable", &id]);
    st.fails(1, &["key", "disable", &id]);
    st.fails(1, &["key", "schedule-deletion", &id, "--days", "2"]);
    st.fails(1, &["key", "rotate", &id]);
    let after = st.describe(&id);
    assert_eq!(after["state"], "PendingDeletion");
    assert_eq!(
        after["deletion_date"], d["deletion_date"],
        "refusals changed nothing"
    );

    // Cancel leaves the key Disabled, without a deletion date.
    st.ok(&["key", "cancel-deletion", &id]);
    let d = st.describe(&id);
    assert_eq!(d["state"], "Disabled");
    assert_eq!(d["deletion_date"], Value::Null);

    // Disabled → PendingDeletion (default window) → cancel → Disabled → enable.
    st.ok(&["key", "schedule-deletion", &id]);
    assert_eq!(st.state(&id), "PendingDeletion");
    st.ok(&["key", "cancel-deletion", &id]);
    assert_eq!(st.state(&id), "Disabled");
    st.ok(&["key", "enable", &id]);
    assert_eq!(st.state(&id), "Enabled");

    // Bad usage exits 2; a key that does not exist exits 1.
    st.fails(2, &["key", "schedule-deletion", &id, "--days", "31"]);
    st.fails(2, &["key", "schedule-deletion", &id, "--days", "0.000001"]);
    st.fails(2, &["key", "purge", &id]);
    st.fails(2, &["key", "create", "--spec", "AES_128"]);
    st.fails(
        2,
        &[
            "key",
            "create",
            "--spec",
            "ECC_NIST_P256",
            "--usage",
            "ENCRYPT_DECRYPT",
        ],
    );
    st.fails(2, &["key", "rotation", &id]);
    st.fails(2, &["key", "frobnicate", &id]);
    let msg = st.fails(1, &["key", "disable", "alias/nothing-here"]);
    assert!(
        msg.contains("cks key list"),
        "the error says what to do: {msg}"
    );
    st.fails(
        1,
        &["key", "describe", "00000000-0000-4000-8000-000000000000"],
    );
    assert_eq!(st.state(&id), "Enabled");

    // Rotation period on and off.
    let out = st.ok(&["key", "rotation", &id, "--days", "90"]);
    assert!(out.contains("90"), "{out}");
    assert_eq!(st.describe(&id)["rotation_days"], 90);
    st.ok(&["key", "rotation", &id, "--off"]);
    assert_eq!(st.describe(&id)["rotation_days"], Value::Null);
}

// ---- 2. a disabled key is refused in a running process --------------------------------------

#[test]
fn disabled_key_refused_in_running_process() {
    const NAME: &str = "disabled_key_refused_in_running_process";
    if is_child(NAME) {
        return disabled_key_child();
    }
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let st = Store::new();
    st.create("ECC_NIST_P256", Some("alias/signer"));
    st.in_child(NAME);
    assert_eq!(st.state("alias/signer"), "Enabled");
}

enum Signed {
    Ok(Instant),
    Refused(Instant, Option<RvError>),
}

fn disabled_key_child() {
    let st = Store::from_env();
    let m = Arc::new(Module::load());
    let _login = m.login();
    // The signer: its own session, signing in a loop until told to stop.
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let signer = {
        let (m, stop) = (m.clone(), stop.clone());
        std::thread::spawn(move || {
            let s = m.session();
            let key = one(
                &s,
                &[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Label(b"alias/signer".to_vec()),
                ],
            );
            let digest = [7u8; 32];
            while !stop.load(Ordering::Relaxed) {
                let r = match s.sign(&Mechanism::Ecdsa, key, &digest) {
                    Ok(sig) if sig.len() == 64 => Signed::Ok(Instant::now()),
                    Ok(sig) => panic!("signature of {} bytes", sig.len()),
                    Err(e) => Signed::Refused(Instant::now(), rv(&e)),
                };
                if tx.send(r).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // The signer works.
    match rx
        .recv_timeout(Duration::from_secs(30))
        .expect("first signature")
    {
        Signed::Ok(_) => {}
        Signed::Refused(_, e) => panic!("signing refused before the key was disabled: {e:?}"),
    }

    // Disabled from outside: refused within PROPAGATION of the command's return.
    st.ok(&["key", "disable", "alias/signer"]);
    let disabled_at = Instant::now();
    let refused_at = loop {
        match rx
            .recv_timeout(PROPAGATION * 4)
            .expect("the signer answers")
        {
            Signed::Ok(t) => assert!(
                t.duration_since(disabled_at) <= PROPAGATION,
                "still signing {:?} after `cks key disable`",
                t.duration_since(disabled_at)
            ),
            Signed::Refused(t, e) => {
                assert_eq!(e, Some(RvError::KeyFunctionNotPermitted), "wrong refusal");
                break t;
            }
        }
    };
    let lag = refused_at.saturating_duration_since(disabled_at);
    println!("disable seen after {lag:?}");
    assert!(
        lag <= PROPAGATION,
        "disable took {lag:?} to reach the running process"
    );
    // It stays refused (a few more attempts) — until enabled.
    for _ in 0..5 {
        match rx.recv_timeout(Duration::from_secs(5)).expect("signer") {
            Signed::Refused(_, e) => assert_eq!(e, Some(RvError::KeyFunctionNotPermitted)),
            Signed::Ok(_) => panic!("a disabled key signed"),
        }
    }

    st.ok(&["key", "enable", "alias/signer"]);
    let enabled_at = Instant::now();
    let ok_at = loop {
        match rx
            .recv_timeout(PROPAGATION * 4)
            .expect("the signer answers")
        {
            Signed::Ok(t) => break t,
            Signed::Refused(t, e) => {
                assert_eq!(e, Some(RvError::KeyFunctionNotPermitted));
                assert!(
                    t.duration_since(enabled_at) <= PROPAGATION,
                    "still refused {:?} after `cks key enable`",
                    t.duration_since(enabled_at)
                );
            }
        }
    };
    let lag = ok_at.saturating_duration_since(enabled_at);
    println!("enable seen after {lag:?}");
    assert!(lag <= PROPAGATION, "enable took {lag:?}");
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    signer.join().expect("signer thread");
}

// ---- 3. rotation ----------------------------------------------------------------------------

#[test]
fn rotation_keeps_old_versions_decrypting() {
    const NAME: &str = "rotation_keeps_old_versions_decrypting";
    if is_child(NAME) {
        return rotation_child();
    }
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let st = Store::new();
    let k = st.create("AES_256", Some("alias/rot"));
    assert_eq!(k["current_version"], 1);
    st.in_child(NAME);
    let d = st.describe("alias/rot");
    assert_eq!(d["current_version"], 3);
    let versions: Vec<u64> = d["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_u64().expect("version"))
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
}

fn rotation_child() {
    let st = Store::from_env();
    let key_id = st.describe("alias/rot")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let m = Module::load();
    let s = m.login();
    let by_label = || {
        one(
            &s,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(b"alias/rot".to_vec()),
            ],
        )
    };
    let mut ciphertexts = Vec::new();
    for version in 1..=3u64 {
        if version > 1 {
            let out = st.ok(&["key", "rotate", "alias/rot"]);
            assert!(out.contains(&format!("version {version}")), "{out}");
        }
        // The label finds the newest version only.
        let h = by_label();
        assert_eq!(vendor_ulong(&s, h, CKA_CKS_KEY_VERSION), version);
        assert_eq!(vendor_text(&s, h, CKA_CKS_KEY_ID), key_id);
        let plain = format!("secret under version {version}").into_bytes();
        let (iv, ct) = gcm_encrypt(&s, h, &plain).expect("the newest version encrypts");
        ciphertexts.push((version, iv, ct, plain));
    }

    // Every version is its own object with the same CKA_ID and key id.
    let uuid = uuid::Uuid::parse_str(&key_id).expect("uuid");
    let by_id = find(
        &s,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Id(uuid.as_bytes().to_vec()),
        ],
    );
    assert_eq!(by_id.len(), 3, "one object per version, found by CKA_ID");
    assert_eq!(
        vendor_ulong(&s, by_id[0], CKA_CKS_KEY_VERSION),
        3,
        "the current version is found first (tools use the first match)"
    );
    let by_key_id = find(
        &s,
        &[Attribute::VendorDefined((
            AttributeType::VendorDefined(CKA_CKS_KEY_ID),
            key_id.as_bytes().to_vec(),
        ))],
    );
    assert_eq!(
        by_key_id.len(),
        3,
        "one object per version, found by CKA_CKS_KEY_ID"
    );
    let mut versions: Vec<(u64, ObjectHandle)> = by_id
        .iter()
        .map(|h| (vendor_ulong(&s, *h, CKA_CKS_KEY_VERSION), *h))
        .collect();
    versions.sort_by_key(|v| v.0);
    assert_eq!(
        versions.iter().map(|v| v.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    // Each ciphertext decrypts with the version that made it.
    for (version, iv, ct, plain) in &ciphertexts {
        let h = versions[(*version - 1) as usize].1;
        let got = gcm_decrypt(&s, h, *iv, ct)
            .unwrap_or_else(|e| panic!("version {version} no longer decrypts: {e}"));
        assert_eq!(&got, plain);
        // …and not with another version's key (the versions are different material).
        let other = versions[(*version % 3) as usize].1;
        assert!(gcm_decrypt(&s, other, *iv, ct).is_err());
    }
    // Older versions only decrypt.
    for (version, h) in &versions[..2] {
        let e = gcm_encrypt(&s, *h, b"new data").expect_err("an old version encrypted");
        assert_eq!(
            rv(&e),
            Some(RvError::KeyFunctionNotPermitted),
            "version {version}: {e}"
        );
        assert!(
            label(&s, *h).starts_with("alias/rot#v"),
            "old labels step aside"
        );
    }
    assert_eq!(label(&s, versions[2].1), "alias/rot");
}

// ---- 4. scheduled deletion when due -----------------------------------------------------------

#[test]
fn scheduled_deletion_runs_when_due_on_every_instance() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let st = Store::new();
    let k = st.create("AES_256", Some("alias/short-lived"));
    let id = k["id"].as_str().expect("id").to_string();
    let before = st.instance_keys();
    assert_eq!(before.len(), 2);
    assert!(
        before.iter().all(|(_, n)| *n == 1),
        "key on both instances: {before:?}"
    );

    st.ok(&["key", "schedule-deletion", &id, "--days", MIN_DAYS]);
    let d = st.describe(&id);
    assert_eq!(d["state"], "PendingDeletion");
    assert!(d["deletion_date"].is_string());
    // Not yet due: still there on both instances.
    assert_eq!(st.instance_keys(), before);

    std::thread::sleep(Duration::from_millis(3200));
    // The next command carries out the deletion that is due.
    let o = st.cks(&["key", "list", "--json"]);
    assert_eq!(o.code, 0, "{o}");
    assert!(o.stderr.contains(&id), "the deletion is reported: {o}");
    let keys: Value = serde_json::from_str(&o.stdout).expect("JSON");
    assert_eq!(keys.as_array().map(Vec::len), Some(0), "{keys}");
    let after = st.instance_keys();
    assert!(
        after.iter().all(|(_, n)| *n == 0),
        "material gone everywhere: {after:?}"
    );
    st.fails(1, &["key", "describe", &id]);
    st.fails(1, &["key", "describe", "alias/short-lived"]);
}

// ---- 5. purge with proof ----------------------------------------------------------------------

#[test]
fn purge_proves_every_instance_is_empty() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let st = Store::new();
    let k = st.create("ECC_NIST_P256", Some("alias/doomed"));
    let keep = st.create("AES_256", Some("alias/keeper"));
    let id = k["id"].as_str().expect("id").to_string();
    assert!(st.instance_keys().iter().all(|(_, n)| *n == 2));

    // Refused without --yes, and nothing happens.
    let msg = st.fails(2, &["key", "purge", "alias/doomed", "--json"]);
    assert!(msg.contains("--yes"), "{msg}");
    assert_eq!(st.state(&id), "Enabled");

    let proof = st.json(&["key", "purge", "alias/doomed", "--yes", "--json"]);
    assert_eq!(proof["key_id"], id.as_str(), "{proof}");
    assert_eq!(proof["complete"], true, "{proof}");
    assert_eq!(
        proof["objects"].as_array().map(Vec::len),
        Some(2),
        "private and public half"
    );
    let instances = proof["instances"].as_array().expect("instances");
    let mut names: Vec<&str> = instances
        .iter()
        .map(|i| i["instance"].as_str().expect("instance"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, vec!["hsm1", "hsm2"], "every instance asked");
    for i in instances {
        assert_eq!(i["remaining"], 0, "{i}");
        assert_eq!(i["metadata_remaining"], false, "{i}");
        assert_eq!(i["error"], Value::Null, "{i}");
        assert!(i["checked_at"].is_string());
    }

    // Gone from the list and from both instances; the other key is untouched.
    let keys = st.keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["id"], keep["id"]);
    assert!(st.instance_keys().iter().all(|(_, n)| *n == 1));
    st.fails(1, &["key", "describe", &id]);
    st.fails(1, &["key", "purge", &id, "--yes"]);

    // The human form prints the proof too.
    let out = st.ok(&["key", "purge", "alias/keeper", "--yes"]);
    assert!(
        out.contains("hsm1") && out.contains("hsm2") && out.contains("complete: yes"),
        "{out}"
    );
    assert!(st.instance_keys().iter().all(|(_, n)| *n == 0));
}

// ---- 6. disconnect ---------------------------------------------------------------------------

#[test]
fn disconnect_is_seen_by_a_running_process() {
    const NAME: &str = "disconnect_is_seen_by_a_running_process";
    if is_child(NAME) {
        return disconnect_child();
    }
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let st = Store::new();
    st.create("AES_256", Some("alias/present"));
    st.in_child(NAME);
    let status = st.json(&["keystore", "status", "--json"]);
    assert_eq!(status["connected"], true, "{status}");
}

fn disconnect_child() {
    let st = Store::from_env();
    let m = Module::load();
    let s = m.login();
    let present = || {
        let key = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"alias/present".to_vec()),
        ];
        (
            m.pkcs11
                .get_slots_with_token()
                .expect("C_GetSlotList")
                .len(),
            s.find_objects(&key).map(|v| v.len()).map_err(|e| rv(&e)),
        )
    };
    assert_eq!(present(), (1, Ok(1)));
    let status = st.json(&["keystore", "status", "--json"]);
    assert_eq!(status["connected"], true);
    assert_eq!(status["instances_healthy"], 2);
    assert_eq!(status["instances_total"], 2);
    assert_eq!(status["keys"], 1);

    st.ok(&["keystore", "disconnect"]);
    let lag = within(PROPAGATION, || {
        present() == (0, Err(Some(RvError::TokenNotPresent)))
    })
    .unwrap_or_else(|| panic!("still present after {PROPAGATION:?}: {:?}", present()));
    println!("disconnect seen after {lag:?}");
    // The slot itself stays; only its token is absent.
    assert_eq!(m.pkcs11.get_all_slots().expect("slots").len(), 1);
    let e = m
        .pkcs11
        .get_token_info(m.slot)
        .expect_err("token info while absent");
    assert_eq!(rv(&e), Some(RvError::TokenNotPresent));
    let status = st.json(&["keystore", "status", "--json"]);
    assert_eq!(status["connected"], false);
    assert_eq!(st.state("alias/present"), "Unavailable");

    st.ok(&["keystore", "connect"]);
    let lag = within(PROPAGATION, || present() == (1, Ok(1)))
        .unwrap_or_else(|| panic!("still absent after {PROPAGATION:?}: {:?}", present()));
    println!("connect seen after {lag:?}");
    // The session and login survived; the key works again.
    let h = one(&s, &[Attribute::Label(b"alias/present".to_vec())]);
    let (iv, ct) = gcm_encrypt(&s, h, b"back").expect("encrypt after connect");
    assert_eq!(gcm_decrypt(&s, h, iv, &ct).expect("decrypt"), b"back");
    assert_eq!(st.state("alias/present"), "Enabled");
}

// ---- 7. aliases ------------------------------------------------------------------------------

#[test]
fn aliases_are_unique_and_move_only_on_request() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let st = Store::new();
    let a = st.create("AES_256", Some("alias/shared"));
    let a_id = a["id"].as_str().expect("id").to_string();
    assert_eq!(a["aliases"], serde_json::json!(["alias/shared"]));

    // A second key cannot take the alias: refused, and no key is made.
    let msg = st.fails(
        1,
        &[
            "key",
            "create",
            "--spec",
            "AES_256",
            "--alias",
            "alias/shared",
        ],
    );
    assert!(
        msg.contains(&a_id) && msg.contains("cks key alias"),
        "{msg}"
    );
    assert_eq!(st.keys().len(), 1, "a refused create leaves no key behind");
    // A malformed alias is bad usage.
    st.fails(
        2,
        &["key", "create", "--spec", "AES_256", "--alias", "alias/a b"],
    );
    st.fails(
        2,
        &["key", "create", "--spec", "AES_256", "--alias", "alias/"],
    );

    // Moving it is explicit.
    let b = st.create("AES_256", None);
    let b_id = b["id"].as_str().expect("id").to_string();
    assert_eq!(b["aliases"], serde_json::json!([]));
    let out = st.ok(&["key", "alias", &b_id, "alias/shared"]);
    assert!(out.contains("moved"), "{out}");
    assert_eq!(st.describe(&a_id)["aliases"], serde_json::json!([]));
    assert_eq!(
        st.describe(&b_id)["aliases"],
        serde_json::json!(["alias/shared"])
    );
    assert_eq!(st.describe("alias/shared")["id"], b_id.as_str());
    // Exactly one key has it.
    let holders = st
        .keys()
        .iter()
        .filter(|k| {
            k["aliases"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "alias/shared"))
        })
        .count();
    assert_eq!(holders, 1);

    // A key may have several aliases; unalias removes one.
    st.ok(&["key", "alias", "alias/shared", "alias/second"]);
    assert_eq!(
        st.describe(&b_id)["aliases"],
        serde_json::json!(["alias/shared", "alias/second"])
    );
    st.ok(&["key", "unalias", "alias/shared"]);
    assert_eq!(
        st.describe(&b_id)["aliases"],
        serde_json::json!(["alias/second"])
    );
    st.fails(1, &["key", "describe", "alias/shared"]);
    st.fails(1, &["key", "unalias", "alias/shared"]);
    // Now free, the alias can be given at creation again.
    let c = st.create("HMAC_256", Some("alias/shared"));
    assert_eq!(c["usage"], "GENERATE_VERIFY_MAC");
    assert_eq!(c["aliases"], serde_json::json!(["alias/shared"]));
}

// ---- 8. vendor attributes ----------------------------------------------------------------------

#[test]
fn vendor_attributes_and_caller_cka_id() {
    const NAME: &str = "vendor_attributes_and_caller_cka_id";
    if is_child(NAME) {
        return vendor_child();
    }
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let st = Store::new();
    st.in_child(NAME);
    // Keys made through PKCS#11 are full CMKs that cks lists.
    let keys = st.keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in &keys {
        check_key_shape(k);
    }
}

fn vendor_child() {
    let st = Store::from_env();
    let m = Module::load();
    let s = m.login();
    let caller_id = vec![0xAB, 0xCD];
    let (pub_h, priv_h) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::EcParams(P256_OID.to_vec()),
                Attribute::Id(caller_id.clone()),
                Attribute::Label(b"vendor-ec".to_vec()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Id(caller_id.clone()),
                Attribute::Label(b"vendor-ec".to_vec()),
            ],
        )
        .expect("C_GenerateKeyPair");

    // The label became an alias; cks sees the key as a CMK.
    let d = st.describe("alias/vendor-ec");
    check_key_shape(&d);
    let id = d["id"].as_str().expect("id").to_string();
    for h in [priv_h, pub_h] {
        assert_eq!(cka_id(&s, h), caller_id, "the caller's CKA_ID is kept");
        assert_eq!(label(&s, h), "vendor-ec");
        assert_eq!(vendor_text(&s, h, CKA_CKS_KEY_ID), id);
        assert_eq!(
            vendor_text(&s, h, CKA_CKS_ARN),
            d["arn"].as_str().expect("arn")
        );
        assert_eq!(vendor_ulong(&s, h, CKA_CKS_KEY_STATE), 0, "Enabled");
        assert_eq!(vendor_text(&s, h, CKA_CKS_KEY_SPEC), "ECC_NIST_P256");
        assert_eq!(vendor_text(&s, h, CKA_CKS_KEY_USAGE), "SIGN_VERIFY");
        assert_eq!(vendor_ulong(&s, h, CKA_CKS_KEY_VERSION), 1);
        assert_eq!(
            vendor_text(&s, h, CKA_CKS_CREATION_DATE),
            d["created"].as_str().expect("created")
        );
        assert_eq!(vendor_text(&s, h, CKA_CKS_DELETION_DATE), "");
    }
    assert_eq!(d["spec"], "ECC_NIST_P256");
    assert_eq!(d["usage"], "SIGN_VERIFY");
    // The caller's CKA_ID finds both halves.
    assert_eq!(find(&s, &[Attribute::Id(caller_id.clone())]).len(), 2);

    // State changes made by cks show in the vendor attributes within a second.
    let state = |want: u64| {
        within(PROPAGATION, || {
            vendor_ulong(&s, priv_h, CKA_CKS_KEY_STATE) == want
        })
        .is_some()
    };
    st.ok(&["key", "disable", &id]);
    assert!(state(1), "Disabled");
    st.ok(&["key", "enable", &id]);
    assert!(state(0), "Enabled");
    st.ok(&["key", "schedule-deletion", &id, "--days", "1"]);
    assert!(state(2), "PendingDeletion");
    let when = st.describe(&id)["deletion_date"]
        .as_str()
        .expect("deletion date")
        .to_string();
    assert_eq!(vendor_text(&s, priv_h, CKA_CKS_DELETION_DATE), when);
    assert_eq!(vendor_text(&s, pub_h, CKA_CKS_DELETION_DATE), when);
    st.ok(&["key", "cancel-deletion", &id]);
    assert!(state(1), "cancel leaves it Disabled");
    assert_eq!(vendor_text(&s, priv_h, CKA_CKS_DELETION_DATE), "");
    st.ok(&["key", "enable", &id]);
    assert!(state(0));

    // Without a CKA_ID from the caller, CKA_ID is the key id; usage follows the flags.
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Label(b"vendor-kek".to_vec()),
            ],
        )
        .expect("C_GenerateKey");
    let aes_id = vendor_text(&s, aes, CKA_CKS_KEY_ID);
    let uuid = uuid::Uuid::parse_str(&aes_id).expect("key id is a UUID");
    assert_eq!(cka_id(&s, aes), uuid.as_bytes().to_vec());
    assert_eq!(vendor_text(&s, aes, CKA_CKS_KEY_SPEC), "AES_256");
    assert_eq!(vendor_text(&s, aes, CKA_CKS_KEY_USAGE), "WRAP_UNWRAP");
    let d = st.describe("alias/vendor-kek");
    assert_eq!(d["id"], aes_id.as_str());
    assert_eq!(d["usage"], "WRAP_UNWRAP");
}
