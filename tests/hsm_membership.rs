//! `cks hsm add` and `cks hsm remove` (issue 3): changing the instances of a key store.
//!
//! Every scenario has its own key store in a temp dir (cheap KDF; each instance with a
//! `fault_file`, `<dir>/<id>.fault`: while it exists the instance fails). The parent drives
//! `cks` as an operator would; where keys are made or used through PKCS#11, a child
//! process of this test binary loads the module (one module per process), so every use
//! reads the configuration afresh at `C_Initialize`.

mod common;

use common::{LABEL, SO_PIN, USER_PIN};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in a child process to the phase it runs.
const CHILD: &str = "CKS_MEMBERSHIP_CHILD";
/// The scenario's directory, for the child.
const DIR: &str = "CKS_MEMBERSHIP_DIR";
/// Longest a child process or a `cks` command may run.
const LIMIT: Duration = Duration::from_secs(180);
const AAD: &[u8] = b"cks-membership-test";
const SECRET: &[u8] = b"made while every instance was up";
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// A comment the configuration edits must keep.
const COMMENT: &str = "# membership test: keep this comment";

// ---- the scenario's key store ---------------------------------------------------------------

struct Store {
    dir: PathBuf,
    cfg: PathBuf,
    owner: bool,
}

/// What a `cks` command did.
struct Out {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl Store {
    /// A key store with instances `hsm1`..`hsmN` (each with its fault file); `keystore`
    /// goes into the `[keystore]` table. Not initialised yet.
    fn new(n: usize, keystore: &str) -> Store {
        let dir = common::tempdir();
        let mut text = format!(
            "{COMMENT}\n[keystore]\nlabel = \"{LABEL}\"\ndata_dir = \"{}\"\n{keystore}\n\n\
             [kdf]\nmemory_kib = 64\niterations = 1\n",
            dir.join("data").display()
        );
        for i in 1..=n {
            text.push_str(&format!(
                "\n[[hsm]]\nid = \"hsm{i}\"\nkind = \"embedded\"\nfault_file = \"{}\"\n",
                dir.join(format!("hsm{i}.fault")).display()
            ));
        }
        let cfg = dir.join("cks.toml");
        std::fs::write(&cfg, text).expect("write cks.toml");
        Store {
            dir,
            cfg,
            owner: true,
        }
    }

    /// `new`, then `cks init` (token, SO PIN, user PIN).
    fn initialised(n: usize, keystore: &str) -> Store {
        let s = Store::new(n, keystore);
        let o = s.cks(&[
            "init", "--label", LABEL, "--so-pin", SO_PIN, "--pin", USER_PIN,
        ]);
        assert!(o.ok, "cks init failed:\n{}", o.text());
        s
    }

    /// In a child: the parent's key store.
    fn from_env() -> Store {
        let dir = PathBuf::from(std::env::var_os(DIR).expect("CKS_MEMBERSHIP_DIR"));
        Store {
            cfg: dir.join("cks.toml"),
            dir,
            owner: false,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn config_text(&self) -> String {
        std::fs::read_to_string(&self.cfg).expect("read cks.toml")
    }

    /// The instance ids the configuration lists, in order.
    fn config_ids(&self) -> Vec<String> {
        let t: toml::Table = self.config_text().parse().expect("cks.toml parses");
        t.get("hsm")
            .and_then(|h| h.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.get("id")?.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn fail(&self, id: &str) {
        std::fs::write(self.dir.join(format!("{id}.fault")), b"fault").expect("fault file");
    }

    fn heal(&self, id: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{id}.fault")));
    }

    /// `cks --config <cfg> ARGS`, without PINs in the environment, bounded in time.
    fn cks(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cks"));
        cmd.arg("--config")
            .arg(&self.cfg)
            .args(args)
            .env_remove("CKS_PIN")
            .env_remove("CKS_SO_PIN");
        bounded(cmd, &self.dir)
    }

    /// `cks hsm list --json`, parsed.
    fn list(&self) -> Vec<Row> {
        let o = self.cks(&["hsm", "list", "--json"]);
        assert!(o.ok, "cks hsm list --json failed:\n{}", o.text());
        serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("cks hsm list --json: {e}; output:\n{}", o.stdout))
    }

    /// `cks key create --spec AES_256 --alias alias/NAME`.
    fn kms_key(&self, name: &str) {
        let alias = format!("alias/{name}");
        let o = self.cks(&[
            "key", "create", "--spec", "AES_256", "--alias", &alias, "--json", "--pin", USER_PIN,
        ]);
        assert!(o.ok, "cks key create failed:\n{}", o.text());
    }

    /// Run this scenario's test again in a child process, in phase `phase`.
    fn child(&self, test: &str, phase: &str) {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, phase)
            .env(DIR, &self.dir)
            .env("CKS_CONFIG", &self.cfg);
        let o = bounded(cmd, &self.dir);
        assert!(
            o.ok && o.stdout.contains("CHILD-OK"),
            "child process {test} / {phase} failed:\n{}",
            o.text()
        );
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        if std::thread::panicking() || std::env::var_os("CKS_TEST_KEEP").is_some() {
            eprintln!("kept the scenario's directory {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Run `cmd` with its output in files under `dir`; kill it after `LIMIT`.
fn bounded(mut cmd: Command, dir: &Path) -> Out {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let out_path = dir.join(format!(".out-{n}"));
    let err_path = dir.join(format!(".err-{n}"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(out_path);
    let _ = std::fs::remove_file(err_path);
    Out {
        ok: status.success(),
        code: status.code(),
        stdout,
        stderr,
    }
}

/// One instance as `cks hsm list --json` shows it.
use common::{hsm_row as row, HsmRow as Row};

/// Exactly the instances `ids`, each healthy and holding `keys` keys.
fn assert_all_hold(rows: &[Row], ids: &[&str], keys: usize) {
    let got: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got, ids, "{rows:#?}");
    for id in ids {
        let r = row(rows, id);
        assert!(r.healthy, "{id} is not healthy: {rows:#?}");
        assert_eq!(r.keys, keys, "{id} holds {} keys: {rows:#?}", r.keys);
    }
}

fn assert_refused(o: &Out, what: &str, words: &str) {
    assert!(
        !o.ok && o.code == Some(1),
        "{what} was not refused (exit {:?}):\n{}",
        o.code,
        o.text()
    );
    assert!(
        o.stderr.contains(words),
        "{what}: expected {words:?} in the message:\n{}",
        o.text()
    );
}

fn child_phase() -> Option<String> {
    std::env::var(CHILD).ok()
}

// ---- PKCS#11, in a child process ------------------------------------------------------------

fn module() -> (Pkcs11, Session) {
    let p11 = Pkcs11::new(common::module_path()).expect("load module");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p11.get_all_slots().expect("slots")[0];
    let s = p11.open_rw_session(slot).expect("C_OpenSession");
    s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
        .expect("C_Login user");
    (p11, s)
}

fn gcm(iv: &mut [u8; 12]) -> Mechanism<'_> {
    Mechanism::AesGcm(GcmParams::new(iv, AAD, 128.into()).expect("GCM params"))
}

fn find_one(s: &Session, class: ObjectClass, label: &str) -> ObjectHandle {
    let found = s
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .expect("C_FindObjects");
    assert_eq!(found.len(), 1, "expected one {class:?} labelled {label}");
    found[0]
}

fn ec_point(s: &Session, public: ObjectHandle) -> Vec<u8> {
    let attrs = s
        .get_attributes(public, &[AttributeType::EcPoint])
        .expect("CKA_EC_POINT");
    let Some(Attribute::EcPoint(p)) = attrs.into_iter().next() else {
        panic!("no CKA_EC_POINT");
    };
    if p.len() == 67 && p[0] == 0x04 && p[1] == 65 {
        p[2..].to_vec()
    } else {
        p
    }
}

fn make_aes(s: &Session, label: &str) -> ObjectHandle {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::ValueLen(32.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
    )
    .expect("generate AES-256 token key")
}

/// Child phase "make": an AES-256 key and an EC P-256 pair, and a ciphertext made now.
fn make_keys(store: &Store) {
    let (p11, s) = module();
    let aes = make_aes(&s, "m-aes");
    s.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Token(true),
            Attribute::EcParams(P256_OID.to_vec()),
            Attribute::Verify(true),
            Attribute::Label(b"m-ec".to_vec()),
        ],
        &[
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Sign(true),
            Attribute::Label(b"m-ec".to_vec()),
        ],
    )
    .expect("generate EC P-256 token key pair");
    let iv: [u8; 12] = rand::random();
    let mut buf = iv;
    let ct = s.encrypt(&gcm(&mut buf), aes, SECRET).expect("C_Encrypt");
    std::fs::write(store.dir.join("ct.bin"), [&iv[..], &ct].concat()).expect("write ct.bin");
    drop(s);
    p11.finalize().expect("C_Finalize");
}

/// Child phase "use": decrypt the ciphertext made before, sign (checked outside the
/// module), and an encryption round trip.
fn use_keys(store: &Store) {
    let (p11, s) = module();
    let aes = find_one(&s, ObjectClass::SECRET_KEY, "m-aes");
    let ec_priv = find_one(&s, ObjectClass::PRIVATE_KEY, "m-ec");
    let point = ec_point(&s, find_one(&s, ObjectClass::PUBLIC_KEY, "m-ec"));
    let blob = std::fs::read(store.dir.join("ct.bin")).expect("read ct.bin");
    let mut iv: [u8; 12] = blob[..12].try_into().expect("iv");
    let plain = s
        .decrypt(&gcm(&mut iv), aes, &blob[12..])
        .expect("C_Decrypt of the earlier ciphertext");
    assert_eq!(plain, SECRET);
    let msg = b"signed by the new instance alone";
    let sig = s
        .sign(&Mechanism::EcdsaSha256, ec_priv, msg)
        .expect("C_Sign");
    {
        use p256::ecdsa::signature::Verifier;
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).expect("EC point");
        let sig = p256::ecdsa::Signature::from_slice(&sig).expect("signature");
        vk.verify(msg, &sig).expect("the signature verifies");
    }
    let mut iv: [u8; 12] = rand::random();
    let iv0 = iv;
    let ct = s.encrypt(&gcm(&mut iv), aes, msg).expect("C_Encrypt");
    let mut iv = iv0;
    assert_eq!(s.decrypt(&gcm(&mut iv), aes, &ct).expect("C_Decrypt"), msg);
    drop(s);
    p11.finalize().expect("C_Finalize");
}

fn run_child_phase(phase: &str) {
    let store = Store::from_env();
    match phase {
        "make" => make_keys(&store),
        "use" => use_keys(&store),
        other => panic!("unknown phase {other}"),
    }
    println!("CHILD-OK");
}

// ---- the scenarios ---------------------------------------------------------------------------

/// Two instances with keys; `hsm add --id hsm3` copies every key in; with hsm1 and hsm2
/// failed, a fresh process decrypts and signs with hsm3 alone.
#[test]
fn add_brings_the_new_instance_up_to_date_and_it_serves_alone() {
    const TEST: &str = "add_brings_the_new_instance_up_to_date_and_it_serves_alone";
    if let Some(phase) = child_phase() {
        return run_child_phase(&phase);
    }
    let store = Store::initialised(2, "");
    store.child(TEST, "make");
    store.kms_key("kms-one");
    // AES + EC private key + the KMS key's version.
    assert_all_hold(&store.list(), &["hsm1", "hsm2"], 3);

    let o = store.cks(&["hsm", "add", "--id", "hsm3", "--pin", USER_PIN]);
    assert!(o.ok, "cks hsm add failed:\n{}", o.text());
    assert!(o.stdout.contains("hsm3 is up to date"), "{}", o.text());
    assert!(
        o.text().contains("copied"),
        "no progress shown:\n{}",
        o.text()
    );
    assert!(
        o.stdout.contains("next start"),
        "running processes not mentioned:\n{}",
        o.text()
    );
    assert_eq!(store.config_ids(), ["hsm1", "hsm2", "hsm3"]);
    assert!(store.config_text().starts_with(COMMENT), "comment lost");
    let audit = store.cks(&["audit", "show", "--op", "instance_add", "--json"]);
    assert!(
        audit.ok && audit.stdout.contains("\"instance\":\"hsm3\""),
        "no audit record of the addition:\n{}",
        audit.text()
    );
    let rows = store.list();
    assert_all_hold(&rows, &["hsm1", "hsm2", "hsm3"], 3);
    assert_eq!(
        PathBuf::from(&row(&rows, "hsm3").path),
        store.data().join("hsm").join("hsm3")
    );

    store.fail("hsm1");
    store.fail("hsm2");
    let rows = store.list();
    assert!(!row(&rows, "hsm1").healthy && !row(&rows, "hsm2").healthy);
    assert!(row(&rows, "hsm3").healthy, "{rows:#?}");
    store.child(TEST, "use");
    store.heal("hsm1");
    store.heal("hsm2");
}

/// The instance holding the last healthy copy cannot be removed — also when another
/// instance answers but lags behind — while a failed one can; afterwards the
/// configuration and `hsm list` show the rest. `--force-data` deletes the directory,
/// else it stays.
#[test]
fn remove_refuses_the_last_healthy_copy_and_keeps_the_rest() {
    let store = Store::initialised(3, "");
    store.kms_key("everywhere");
    assert_all_hold(&store.list(), &["hsm1", "hsm2", "hsm3"], 1);
    let before = store.config_text();

    // hsm2 and hsm3 failed: hsm1 holds the last healthy copy.
    store.fail("hsm2");
    store.fail("hsm3");
    let o = store.cks(&["hsm", "remove", "hsm1"]);
    assert_refused(&o, "removing the healthy hsm1", "last healthy copy");
    let o = store.cks(&["hsm", "remove", "hsm1", "--force-data"]);
    assert_refused(&o, "removing the healthy hsm1", "last healthy copy");
    assert_eq!(
        store.config_text(),
        before,
        "a refusal changed the configuration"
    );
    assert!(store.data().join("hsm/hsm1/instance.db").exists());

    // A key made while hsm3 was down: hsm3 answers again but is not synced, hsm2 fails.
    // hsm1 still holds the last healthy copy of that key.
    store.heal("hsm2");
    store.kms_key("not-on-hsm3");
    store.heal("hsm3");
    store.fail("hsm2");
    let rows = store.list();
    assert_eq!((row(&rows, "hsm1").keys, row(&rows, "hsm3").keys), (2, 1));
    let o = store.cks(&["hsm", "remove", "hsm1"]);
    assert_refused(&o, "removing hsm1 while hsm3 lags", "last healthy copy");
    assert!(o.stderr.contains("cks hsm sync"), "{}", o.text());
    assert_eq!(
        store.config_text(),
        before,
        "a refusal changed the configuration"
    );

    // With the PIN the other instances are synced first: then hsm1 may go (its
    // directory stays).
    let o = store.cks(&["hsm", "remove", "hsm1", "--pin", USER_PIN]);
    assert!(
        o.ok,
        "removing hsm1 after the sync was refused:\n{}",
        o.text()
    );
    assert!(o.stdout.contains("left on disk"), "{}", o.text());
    assert!(
        store.data().join("hsm/hsm1").is_dir(),
        "hsm1's directory is gone"
    );
    assert_eq!(store.config_ids(), ["hsm2", "hsm3"]);
    let audit = store.cks(&["audit", "show", "--op", "instance_remove", "--json"]);
    assert!(
        audit.ok && audit.stdout.contains("\"instance\":\"hsm1\""),
        "no audit record of the removal:\n{}",
        audit.text()
    );

    // hsm2 (failed) holds copies, but hsm3 holds them too and is healthy: allowed.
    let o = store.cks(&["hsm", "remove", "hsm2"]);
    assert!(o.ok, "removing the failed hsm2 was refused:\n{}", o.text());
    assert_eq!(store.config_ids(), ["hsm3"]);
    let text = store.config_text();
    assert!(
        text.starts_with(COMMENT) && text.contains("[kdf]"),
        "{text}"
    );
    assert!(
        !text.contains("hsm1") && !text.contains("\"hsm2\""),
        "{text}"
    );
    assert_all_hold(&store.list(), &["hsm3"], 2);
    store.heal("hsm2");

    // A new instance in a directory of its own; then hsm3 goes with its directory.
    let elsewhere = store.dir.join("elsewhere/hsm4");
    let o = store.cks(&[
        "hsm",
        "add",
        "--id",
        "hsm4",
        "--path",
        elsewhere.to_str().expect("utf-8"),
        "--pin",
        USER_PIN,
    ]);
    assert!(o.ok, "cks hsm add --path failed:\n{}", o.text());
    let rows = store.list();
    assert_all_hold(&rows, &["hsm3", "hsm4"], 2);
    assert_eq!(PathBuf::from(&row(&rows, "hsm4").path), elsewhere);
    let o = store.cks(&["hsm", "remove", "hsm3", "--force-data"]);
    assert!(o.ok, "removing hsm3 was refused:\n{}", o.text());
    assert!(o.stdout.contains("deleted its directory"), "{}", o.text());
    assert!(
        !store.data().join("hsm/hsm3").exists(),
        "hsm3's directory stayed"
    );
    assert_eq!(store.config_ids(), ["hsm4"]);
    assert_all_hold(&store.list(), &["hsm4"], 2);
}

/// The last instance cannot be removed; a duplicate id or directory cannot be added;
/// an unknown id cannot be removed. None of these changes the configuration.
#[test]
fn refusals_leave_the_configuration_alone() {
    let store = Store::initialised(1, "");
    store.kms_key("k");
    let before = store.config_text();

    let o = store.cks(&["hsm", "remove", "hsm1"]);
    assert_refused(&o, "removing the last instance", "last instance");
    let o = store.cks(&["hsm", "remove", "hsm1", "--force-data"]);
    assert_refused(&o, "removing the last instance", "last instance");
    let o = store.cks(&["hsm", "add", "--id", "hsm1", "--pin", USER_PIN]);
    assert_refused(&o, "a duplicate id", "already has an instance \"hsm1\"");
    let dup = store.data().join("hsm/hsm1");
    let o = store.cks(&[
        "hsm",
        "add",
        "--id",
        "other",
        "--path",
        dup.to_str().expect("utf-8"),
        "--pin",
        USER_PIN,
    ]);
    assert_refused(
        &o,
        "a duplicate directory",
        "already the directory of instance hsm1",
    );
    let o = store.cks(&["hsm", "add", "--id", "bad id", "--pin", USER_PIN]);
    assert_refused(&o, "an invalid id", "expected letters, digits");
    let o = store.cks(&["hsm", "add", "--id", "hsm2", "--pin", "wrong-pin"]);
    assert_refused(&o, "a wrong PIN", "nothing changed");
    let o = store.cks(&["hsm", "remove", "hsm9"]);
    assert_refused(&o, "an unknown id", "no instance \"hsm9\"");

    assert_eq!(
        store.config_text(),
        before,
        "a refusal changed the configuration"
    );
    assert!(!store.data().join("hsm/hsm2").exists());
    assert_all_hold(&store.list(), &["hsm1"], 1);
}

/// With no configuration file (the built-in default), `hsm add` writes cks.toml in the
/// data directory with the default instances plus the new one, and says so.
#[test]
fn add_to_the_builtin_default_writes_a_configuration() {
    let home = common::tempdir();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cks"));
        cmd.args(args)
            .env_remove("CKS_CONFIG")
            .env_remove("CKS_PIN")
            .env_remove("CKS_SO_PIN")
            .env("XDG_DATA_HOME", &home)
            .env("HOME", &home);
        bounded(cmd, &home)
    };
    let o = run(&["init", "--so-pin", SO_PIN, "--pin", USER_PIN]);
    assert!(o.ok, "cks init:\n{}", o.text());
    let file = home.join("cks/cks.toml");
    assert!(!file.exists(), "init wrote a configuration");
    let o = run(&["hsm", "add", "--id", "hsm3", "--pin", USER_PIN]);
    assert!(o.ok, "cks hsm add:\n{}", o.text());
    assert!(
        o.stdout.contains("no configuration file") && o.stdout.contains("wrote"),
        "{}",
        o.text()
    );
    let text = std::fs::read_to_string(&file).expect("cks.toml written");
    for id in ["hsm1", "hsm2", "hsm3"] {
        assert!(text.contains(&format!("id = \"{id}\"")), "{text}");
    }
    let o = run(&["hsm", "list", "--json"]);
    assert!(o.ok, "{}", o.text());
    let rows: Vec<Row> = serde_json::from_str(&o.stdout).expect("json");
    assert_all_hold(&rows, &["hsm1", "hsm2", "hsm3"], 0);
    let _ = std::fs::remove_dir_all(&home);
}

/// An instance that cannot be brought up to date (here: a directory that belongs to
/// another key store) stays in the configuration, and the command says how to finish.
#[test]
fn add_that_cannot_be_completed_keeps_the_entry() {
    let store = Store::initialised(2, "");
    store.kms_key("k");
    let other = Store::initialised(1, "");
    let foreign = other.data().join("hsm/hsm1");
    let o = store.cks(&[
        "hsm",
        "add",
        "--id",
        "foreign",
        "--path",
        foreign.to_str().expect("utf-8"),
        "--pin",
        USER_PIN,
    ]);
    assert_refused(&o, "adding another key store's instance", "cks hsm sync");
    assert!(o.stderr.contains("entry stays"), "{}", o.text());
    assert_eq!(store.config_ids(), ["hsm1", "hsm2", "foreign"]);
    let rows = store.list();
    assert_eq!(row(&rows, "foreign").keys, 0, "{rows:#?}");
    let o = store.cks(&["hsm", "sync", "--pin", USER_PIN]);
    assert!(
        !o.ok,
        "sync brought a foreign instance up to date:\n{}",
        o.text()
    );
    // It holds none of this store's keys: it can go again; its directory stays.
    let o = store.cks(&["hsm", "remove", "foreign"]);
    assert!(o.ok, "removing it was refused:\n{}", o.text());
    assert!(foreign.join("instance.db").exists());
    assert_eq!(store.config_ids(), ["hsm1", "hsm2"]);
    assert_all_hold(&store.list(), &["hsm1", "hsm2"], 1);
}
