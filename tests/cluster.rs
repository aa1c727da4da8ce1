//! The cluster (issue 3): several embedded HSM instances behind one token.
//!
//! Every scenario has its own key store (a temp dir with a cluster configuration) and runs
//! the module in a child process of this test binary (one module per process; the parent
//! never loads it). The parent and the child check the result with `cks hsm list --json`
//! and `cks hsm sync`, as an operator would. Each instance has a `fault_file`
//! (`<dir>/<id>.fault`): while it exists the instance answers every call with
//! `CKR_DEVICE_ERROR`, which is how these tests make an instance fail.
//!
//! The child reads its own metrics file (`<data_dir>/metrics/cks-<pid>.prom`, published
//! every second by the module's health thread) to see the module's view of an instance's
//! health (`cks_hsm_healthy`) and its counters.
//!
//! Every wait is bounded; the temp dir is removed when a scenario passes (kept, and its path
//! printed, when it fails, or always with `CKS_TEST_KEEP=1`).

mod common;

use common::{LABEL, SO_PIN, USER_PIN};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Set in a child process to the phase it runs.
const CHILD: &str = "CKS_CLUSTER_CHILD";
/// The scenario's directory, for the child.
const DIR: &str = "CKS_CLUSTER_DIR";
/// Longest a child process or a `cks` command may run.
const PROCESS_LIMIT: Duration = Duration::from_secs(180);
/// The health thread probes every second; allow for a loaded machine.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);
/// A failed instance that answers again is repaired by the next probe (once a second).
const FAILBACK_LIMIT: Duration = Duration::from_secs(5);
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const AAD: &[u8] = b"cks-cluster-test";

// ---- the scenario's key store ---------------------------------------------------------------

/// A key store in a temp dir: `cks.toml`, `data/`, and one fault file path per instance.
struct Store {
    dir: PathBuf,
    cfg: PathBuf,
    /// `[keystore] data_dir` of the configuration.
    data: PathBuf,
    ids: Vec<String>,
    /// The parent owns (and removes) the directory; a child only uses it.
    owner: bool,
}

impl Store {
    /// A new key store configuration with `n` embedded instances, `hsm1`..`hsmN`, each
    /// with its fault file; `keystore` is added to the `[keystore]` table.
    fn new(n: usize, keystore: &str) -> Store {
        let dir = common::tempdir();
        let mut text = format!(
            "[keystore]\nlabel = \"{LABEL}\"\ndata_dir = \"{}\"\n{keystore}\n\n[kdf]\nmemory_kib = 64\niterations = 1\n",
            dir.join("data").display()
        );
        let ids: Vec<String> = (1..=n).map(|i| format!("hsm{i}")).collect();
        for id in &ids {
            text.push_str(&format!(
                "\n[[hsm]]\nid = \"{id}\"\nkind = \"embedded\"\nfault_file = \"{}\"\n",
                dir.join(format!("{id}.fault")).display()
            ));
        }
        std::fs::write(dir.join("cks.toml"), text).expect("write cks.toml");
        Store::at(dir, true)
    }

    /// A directory for a key store whose configuration `cks init --hsms N` writes.
    fn empty() -> Store {
        Store::at(common::tempdir(), true)
    }

    /// The key store configured in `<dir>/cks.toml`.
    fn at(dir: PathBuf, owner: bool) -> Store {
        let mut store = Store {
            cfg: dir.join("cks.toml"),
            dir,
            data: PathBuf::new(),
            ids: Vec::new(),
            owner,
        };
        store.reload();
        store
    }

    /// Read the instance ids and the data directory from the configuration (again:
    /// `cks init` may have written it).
    fn reload(&mut self) {
        let text = std::fs::read_to_string(&self.cfg).unwrap_or_default();
        let value = |l: &str, key: &str| {
            l.strip_prefix(key).map(|v| {
                v.trim()
                    .trim_start_matches('=')
                    .trim()
                    .trim_matches('"')
                    .to_string()
            })
        };
        self.ids = text.lines().filter_map(|l| value(l, "id ")).collect();
        self.data = text
            .lines()
            .find_map(|l| value(l, "data_dir "))
            .map(PathBuf::from)
            .unwrap_or_default();
    }

    /// In a child: the parent's key store.
    fn from_env() -> Store {
        Store::at(
            PathBuf::from(std::env::var_os(DIR).expect("CKS_CLUSTER_DIR")),
            false,
        )
    }

    fn data(&self) -> PathBuf {
        self.data.clone()
    }

    fn hsm_dir(&self, id: &str) -> PathBuf {
        self.data().join("hsm").join(id)
    }

    fn fault_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.fault"))
    }

    /// Make instance `id` fail (every call: `CKR_DEVICE_ERROR`).
    fn fail(&self, id: &str) {
        std::fs::write(self.fault_path(id), b"fault").expect("create fault file");
    }

    /// Let instance `id` answer again.
    fn heal(&self, id: &str) {
        let _ = std::fs::remove_file(self.fault_path(id));
    }

    /// Run `cks --config <cfg> ARGS` (bounded in time); (exit status, stdout, stderr).
    fn cks(&self, args: &[&str], envs: &[(&str, &str)]) -> (ExitStatus, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cks"));
        cmd.arg("--config")
            .arg(&self.cfg)
            .args(args)
            .env_remove("CKS_PIN")
            .env_remove("CKS_SO_PIN")
            .envs(envs.iter().copied());
        let tag = format!("cks-{}", args.join("-"));
        bounded(cmd, &self.dir, &tag, PROCESS_LIMIT)
    }

    /// `cks hsm list --json`, parsed.
    fn list(&self) -> Vec<Row> {
        let (st, out, err) = self.cks(&["hsm", "list", "--json"], &[]);
        assert!(st.success(), "cks hsm list --json failed ({st}):\n{err}");
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("cks hsm list --json: {e}; output:\n{out}"))
    }

    /// `cks hsm sync` with the user PIN from `CKS_PIN`.
    fn sync(&self) -> (ExitStatus, String) {
        let (st, out, err) = self.cks(&["hsm", "sync"], &[("CKS_PIN", USER_PIN)]);
        (st, format!("{out}{err}"))
    }

    /// Run this scenario's test again in a child process, in phase `phase`.
    fn child(&self, test: &str, phase: &str) {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, phase)
            .env(DIR, &self.dir)
            .env("CKS_CONFIG", &self.cfg);
        let (st, out, err) = bounded(cmd, &self.dir, &format!("child-{phase}"), PROCESS_LIMIT);
        let text = format!("{out}{err}");
        assert!(
            st.success() && text.contains("CHILD-OK"),
            "child process {test} / {phase} failed ({st}):\n{text}"
        );
        // What the child measured (shown with --nocapture).
        for l in text.lines().filter(|l| l.starts_with("INFO ")) {
            eprintln!("{test}: {l}");
        }
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

/// Run `cmd` with its output in files under `dir`; kill it after `limit`.
fn bounded(
    mut cmd: Command,
    dir: &Path,
    tag: &str,
    limit: Duration,
) -> (ExitStatus, String, String) {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let out_path = dir.join(format!(".{tag}-{n}.out"));
    let err_path = dir.join(format!(".{tag}-{n}.err"));
    let out_file = std::fs::File::create(&out_path).expect("stdout file");
    let err_file = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out_file)
        .stderr(err_file)
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!("{cmd:?} did not finish within {limit:?}; stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(out_path);
    let _ = std::fs::remove_file(err_path);
    (status, out, err)
}

/// One instance as `cks hsm list --json` shows it.
use common::{hsm_row as row, HsmRow as Row};

/// Every instance healthy and holding `keys` keys.
fn assert_all_hold(rows: &[Row], ids: &[String], keys: usize) {
    assert_eq!(rows.len(), ids.len(), "{rows:#?}");
    for id in ids {
        let r = row(rows, id);
        assert!(r.healthy, "{id} is not healthy: {rows:#?}");
        assert_eq!(
            r.keys, keys,
            "{id} holds {} keys, expected {keys}: {rows:#?}",
            r.keys
        );
    }
}

/// Poll `f` every 50 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn child_phase() -> Option<String> {
    std::env::var(CHILD).ok()
}

// ---- the module, in a child process ---------------------------------------------------------

struct Module {
    p11: Pkcs11,
    slot: Slot,
    store: Store,
}

impl Module {
    /// Load and initialise the module on the parent's key store (`CKS_CONFIG` is set).
    fn load() -> Module {
        let store = Store::from_env();
        assert_eq!(
            std::env::var_os("CKS_CONFIG").as_deref(),
            Some(store.cfg.as_os_str())
        );
        let p11 = Pkcs11::new(common::module_path()).expect("load module");
        p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        let slot = p11.get_all_slots().expect("slots")[0];
        Module { p11, slot, store }
    }

    /// A fresh token with the user PIN set (`C_InitToken`, `C_InitPIN`).
    fn init_token(&self) {
        common::init_token(&self.p11, self.slot);
    }

    /// A session with the user logged in (keep it open: the login lasts while it does).
    fn login(&self) -> Session {
        let s = self.session();
        s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
            .expect("C_Login user");
        s
    }

    fn session(&self) -> Session {
        self.p11.open_rw_session(self.slot).expect("C_OpenSession")
    }

    fn metrics_file(&self) -> PathBuf {
        self.store
            .data()
            .join("metrics")
            .join(format!("cks-{}.prom", std::process::id()))
    }

    /// A value from this process's metrics file, as the module last published it.
    fn metric(&self, metric: &str, id: &str) -> Option<f64> {
        let text = std::fs::read_to_string(self.metrics_file()).ok()?;
        let prefix = format!("{metric}{{instance=\"{id}\",");
        text.lines()
            .find(|l| l.starts_with(&prefix))?
            .rsplit_once(' ')?
            .1
            .parse()
            .ok()
    }

    /// Does the module (the last metrics it published) consider `id` healthy?
    fn healthy_in_module(&self, id: &str) -> Option<bool> {
        self.metric("cks_hsm_healthy", id).map(|v| v == 1.0)
    }

    /// Has the module published its metrics since `t`? (A publication shortly after `t`
    /// may come from a health round that began before it, hence the margin.)
    fn published_since(&self, t: std::time::SystemTime) -> bool {
        std::fs::metadata(self.metrics_file())
            .and_then(|m| m.modified())
            .is_ok_and(|m| m > t + Duration::from_millis(300))
    }

    /// Wait until the module publishes, after this call, every instance as healthy.
    fn wait_all_healthy(&self) {
        let since = std::time::SystemTime::now();
        let ok = wait_for(RECOVERY_LIMIT, || {
            self.published_since(since)
                && self
                    .store
                    .ids
                    .iter()
                    .all(|id| self.healthy_in_module(id) == Some(true))
        });
        assert!(
            ok,
            "the module did not report every instance healthy within {RECOVERY_LIMIT:?}: {:?}",
            self.store
                .ids
                .iter()
                .map(|id| (id, self.healthy_in_module(id)))
                .collect::<Vec<_>>()
        );
    }

    fn finalize(self) {
        self.p11.finalize().expect("C_Finalize");
    }
}

/// The keys of a scenario: an AES-256 token key and an EC P-256 token key pair.
#[derive(Clone)]
struct Keys {
    aes: ObjectHandle,
    ec_pub: ObjectHandle,
    ec_priv: ObjectHandle,
    /// Uncompressed public point, to check signatures outside the module.
    point: Vec<u8>,
}

fn aes_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::ValueLen(32.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

fn make_aes(s: &Session, label: &str) -> cryptoki::error::Result<ObjectHandle> {
    s.generate_key(&Mechanism::AesKeyGen, &aes_template(label))
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

fn make_keys(s: &Session, tag: &str) -> Keys {
    let aes = make_aes(s, &format!("{tag}-aes")).expect("generate AES-256 token key");
    let (ec_pub, ec_priv) =
        make_ec(s, &format!("{tag}-ec")).expect("generate EC P-256 token key pair");
    Keys {
        aes,
        ec_pub,
        ec_priv,
        point: ec_point(s, ec_pub),
    }
}

fn find(s: &Session, class: ObjectClass, label: &str) -> Vec<ObjectHandle> {
    s.find_objects(&[
        Attribute::Class(class),
        Attribute::Label(label.as_bytes().to_vec()),
    ])
    .expect("C_FindObjects")
}

fn find_one(s: &Session, class: ObjectClass, label: &str) -> ObjectHandle {
    let found = find(s, class, label);
    assert_eq!(found.len(), 1, "expected one {class:?} labelled {label}");
    found[0]
}

/// The keys `make_keys(_, tag)` made, found again (another process).
fn find_keys(s: &Session, tag: &str) -> Keys {
    let ec_pub = find_one(s, ObjectClass::PUBLIC_KEY, &format!("{tag}-ec"));
    Keys {
        aes: find_one(s, ObjectClass::SECRET_KEY, &format!("{tag}-aes")),
        ec_pub,
        ec_priv: find_one(s, ObjectClass::PRIVATE_KEY, &format!("{tag}-ec")),
        point: ec_point(s, ec_pub),
    }
}

fn ec_point(s: &Session, public: ObjectHandle) -> Vec<u8> {
    let attrs = s
        .get_attributes(public, &[AttributeType::EcPoint])
        .expect("CKA_EC_POINT");
    let Some(Attribute::EcPoint(p)) = attrs.into_iter().next() else {
        panic!("no CKA_EC_POINT");
    };
    // DER OCTET STRING around the 65-byte uncompressed point, or the point itself.
    if p.len() == 67 && p[0] == 0x04 && p[1] == 65 {
        p[2..].to_vec()
    } else {
        p
    }
}

/// ECDSA P-256 with SHA-256, checked with RustCrypto (not the module).
fn verifies(point: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier;
    let Ok(vk) = p256::ecdsa::VerifyingKey::from_sec1_bytes(point) else {
        return false;
    };
    let Ok(sig) = p256::ecdsa::Signature::from_slice(sig) else {
        return false;
    };
    vk.verify(msg, &sig).is_ok()
}

fn gcm(iv: &mut [u8; 12]) -> Mechanism<'_> {
    Mechanism::AesGcm(GcmParams::new(iv, AAD, 128.into()).expect("GCM params"))
}

fn gcm_encrypt(
    s: &Session,
    key: ObjectHandle,
    plain: &[u8],
) -> cryptoki::error::Result<([u8; 12], Vec<u8>)> {
    let iv: [u8; 12] = rand::random();
    let mut buf = iv;
    let ct = s.encrypt(&gcm(&mut buf), key, plain)?;
    Ok((iv, ct))
}

fn gcm_decrypt(
    s: &Session,
    key: ObjectHandle,
    iv: [u8; 12],
    ct: &[u8],
) -> cryptoki::error::Result<Vec<u8>> {
    let mut buf = iv;
    s.decrypt(&gcm(&mut buf), key, ct)
}

/// One signature (checked outside the module) and one AES-GCM round trip.
fn use_keys(s: &Session, k: &Keys, what: &str) -> Result<(), String> {
    let msg = format!("{what}: {}", rand::random::<u64>());
    let sig = s
        .sign(&Mechanism::EcdsaSha256, k.ec_priv, msg.as_bytes())
        .map_err(|e| format!("{what}: C_Sign: {e:?}"))?;
    if !verifies(&k.point, msg.as_bytes(), &sig) {
        return Err(format!("{what}: the signature does not verify"));
    }
    s.verify(&Mechanism::EcdsaSha256, k.ec_pub, msg.as_bytes(), &sig)
        .map_err(|e| format!("{what}: C_Verify: {e:?}"))?;
    let (iv, ct) =
        gcm_encrypt(s, k.aes, msg.as_bytes()).map_err(|e| format!("{what}: C_Encrypt: {e:?}"))?;
    let back = gcm_decrypt(s, k.aes, iv, &ct).map_err(|e| format!("{what}: C_Decrypt: {e:?}"))?;
    if back != msg.as_bytes() {
        return Err(format!("{what}: AES-GCM round trip returned other bytes"));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Work {
    /// ECDSA P-256 signatures, each checked outside the module.
    Sign,
    /// AES-GCM encryptions, each decrypted again and compared.
    Encrypt,
}

/// What one load thread saw: calls made (module calls that choose an instance) and
/// failures that reached the caller.
#[derive(Default, Debug)]
struct Tally {
    rounds: u64,
    calls: u64,
    failed: u64,
    first_failures: Vec<String>,
}

/// Work on `k` in a new session until `until`.
fn load(m: &Module, k: &Keys, work: Work, until: Instant) -> Tally {
    let mut t = Tally::default();
    let s = match m.p11.open_rw_session(m.slot) {
        Ok(s) => s,
        Err(e) => {
            t.failed = 1;
            t.first_failures.push(format!("C_OpenSession: {e:?}"));
            return t;
        }
    };
    while Instant::now() < until {
        t.rounds += 1;
        let msg = format!("{work:?} round {} {}", t.rounds, rand::random::<u64>());
        let r = match work {
            Work::Sign => {
                t.calls += 1;
                match s.sign(&Mechanism::EcdsaSha256, k.ec_priv, msg.as_bytes()) {
                    Ok(sig) if verifies(&k.point, msg.as_bytes(), &sig) => Ok(()),
                    Ok(_) => Err("signature does not verify".to_string()),
                    Err(e) => Err(format!("C_Sign: {e:?}")),
                }
            }
            Work::Encrypt => {
                t.calls += 2;
                gcm_encrypt(&s, k.aes, msg.as_bytes())
                    .map_err(|e| format!("C_Encrypt: {e:?}"))
                    .and_then(|(iv, ct)| {
                        gcm_decrypt(&s, k.aes, iv, &ct).map_err(|e| format!("C_Decrypt: {e:?}"))
                    })
                    .and_then(|back| {
                        (back == msg.as_bytes())
                            .then_some(())
                            .ok_or_else(|| "decryption returned other bytes".to_string())
                    })
            }
        };
        if let Err(e) = r {
            t.failed += 1;
            if t.first_failures.len() < 10 {
                t.first_failures.push(format!("round {}: {e}", t.rounds));
            }
        }
    }
    t
}

fn is_rv(r: &cryptoki::error::Result<impl std::fmt::Debug>, rv: RvError) -> bool {
    matches!(r, Err(P11Error::Pkcs11(got, _)) if *got == rv)
}

// ---- 1. replication ------------------------------------------------------------------------

/// Keys created through PKCS#11 on a three-instance cluster are on all three: each
/// instance alone (the other two failed) serves them, and `cks hsm list` counts the two
/// keys (AES secret key, EC private key) on every instance. A session key is on none.
#[test]
fn keys_are_replicated_to_every_instance() {
    const TEST: &str = "keys_are_replicated_to_every_instance";
    if let Some(phase) = child_phase() {
        assert_eq!(phase, "create");
        let m = Module::load();
        m.init_token();
        let s = m.login();
        let k = make_keys(&s, "rep");
        // A session key: not a CMK of the store, on no instance's disk.
        s.generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::Token(false), Attribute::ValueLen(32.into())],
        )
        .expect("session AES key");
        use_keys(&s, &k, "all instances").unwrap();
        // On every instance's disk as soon as created (before any repair could copy them).
        assert_all_hold(&m.store.list(), &m.store.ids, 2);
        let ids = m.store.ids.clone();
        for only in &ids {
            for other in ids.iter().filter(|i| *i != only) {
                m.store.fail(other);
            }
            let r = use_keys(&s, &k, &format!("{only} alone"));
            for other in &ids {
                m.store.heal(other);
            }
            r.unwrap();
            m.wait_all_healthy();
        }
        drop(s);
        m.finalize();
        println!("CHILD-OK");
        return;
    }
    let store = Store::new(3, "");
    store.child(TEST, "create");
    let rows = store.list();
    assert_all_hold(&rows, &store.ids, 2);
    for r in &rows {
        assert_eq!(r.state, "ACTIVE", "{rows:#?}");
        assert_eq!(r.kind, "embedded");
        assert_eq!(Path::new(&r.path), store.hsm_dir(&r.id));
        assert!(store.hsm_dir(&r.id).join("instance.db").exists());
    }
}

// ---- 2 and 6. load balancing ---------------------------------------------------------------

/// Child of the spread tests: 4 threads × 1 s of signing and encrypting, then every
/// instance must show calls in `cks hsm list --json` (read while this process is alive:
/// its metrics file goes at C_Finalize), each at least `min_share` of all calls.
fn spread_child(min_share: f64) {
    let m = Module::load();
    m.init_token();
    let s = m.login();
    let k = make_keys(&s, "spread");
    let until = Instant::now() + Duration::from_secs(1);
    let tallies: Vec<Tally> = std::thread::scope(|sc| {
        let hs: Vec<_> = [Work::Sign, Work::Encrypt, Work::Sign, Work::Encrypt]
            .into_iter()
            .map(|w| {
                let (m, k) = (&m, &k);
                sc.spawn(move || load(m, k, w, until))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("load thread"))
            .collect()
    });
    let calls: u64 = tallies.iter().map(|t| t.calls).sum();
    for t in &tallies {
        assert_eq!(t.failed, 0, "calls failed: {t:?}");
        assert!(t.rounds > 0, "{t:?}");
    }
    // The module publishes its counters every second: wait until they include the load.
    let mut rows = Vec::new();
    let published = wait_for(Duration::from_secs(8), || {
        rows = m.store.list();
        rows.iter().map(|r| r.ops).sum::<u64>() >= calls
    });
    assert!(
        published,
        "counters never reached the {calls} calls made: {rows:#?}"
    );
    let total: u64 = rows.iter().map(|r| r.ops).sum();
    eprintln!(
        "INFO spread over {} calls: {}",
        total,
        rows.iter()
            .map(|r| format!("{}={}", r.id, r.ops))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_all_hold(&rows, &m.store.ids, 2);
    for r in &rows {
        assert!(r.ops > 0, "{} served no call: {rows:#?}", r.id);
        assert!(
            r.ops as f64 >= min_share * total as f64,
            "{} served {} of {total} calls (< {:.0}%): {rows:#?}",
            r.id,
            r.ops,
            min_share * 100.0
        );
        assert_eq!(r.errors, 0, "{rows:#?}");
    }
    drop(s);
    let metrics = m.store.data().join("metrics");
    m.finalize();
    let left: Vec<_> = std::fs::read_dir(&metrics)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left
            .iter()
            .any(|n| n.to_string_lossy() == format!("cks-{}.prom", std::process::id())),
        "C_Finalize left the metrics file: {left:?}"
    );
    println!("CHILD-OK");
}

/// Least-outstanding (the default): under a 4-thread load every instance serves calls.
#[test]
fn calls_spread_over_instances_least_outstanding() {
    const TEST: &str = "calls_spread_over_instances_least_outstanding";
    if child_phase().is_some() {
        spread_child(0.10);
        return;
    }
    let store = Store::new(3, "");
    store.child(TEST, "load");
}

/// Round-robin, set in the configuration: accepted, and it spreads calls evenly.
/// An unknown policy is refused with a message that names the line and the choices.
#[test]
fn calls_spread_over_instances_round_robin() {
    const TEST: &str = "calls_spread_over_instances_round_robin";
    if child_phase().is_some() {
        spread_child(0.25);
        return;
    }
    let store = Store::new(3, "balance = \"round_robin\"");
    store.child(TEST, "load");

    let bad = Store::new(3, "balance = \"random\"");
    let (st, _, err) = bad.cks(&["hsm", "list", "--json"], &[]);
    assert!(!st.success(), "an unknown balance policy was accepted");
    assert!(
        err.contains("line 4") && err.contains("round_robin"),
        "the error should name the line and the policies: {err}"
    );
}

// ---- 3. failover and repair ----------------------------------------------------------------

/// Two threads sign (ECDSA) and encrypt (AES-GCM) for 4.5 s; hsm2 fails at 1 s and comes
/// back at ~3 s. No call fails and every result checks out. A key created while hsm2 is
/// down reaches it once it is repaired; it then serves calls again, that key included.
#[test]
fn failover_under_load_then_repair() {
    const TEST: &str = "failover_under_load_then_repair";
    if child_phase().is_some() {
        let m = Module::load();
        m.init_token();
        let s = m.login();
        let k = make_keys(&s, "fo");
        let start = Instant::now();
        let until = start + Duration::from_millis(4500);
        let at = |ms: u64| start + Duration::from_millis(ms);
        let sleep_until = |t: Instant| {
            if let Some(d) = t.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        };
        let mut seen_down = false;
        let mut new_key = None;
        let mut healed = (Instant::now(), std::time::SystemTime::now());
        let tallies: Vec<Tally> = std::thread::scope(|sc| {
            let hs: Vec<_> = [Work::Sign, Work::Encrypt]
                .into_iter()
                .map(|w| {
                    let (m, k) = (&m, &k);
                    sc.spawn(move || load(m, k, w, until))
                })
                .collect();
            sleep_until(at(1000));
            m.store.fail("hsm2");
            sleep_until(at(1500));
            // A new key while hsm2 is down: durable on the two others (min_replicas 2).
            new_key = Some(make_aes(&s, "fo-while-down"));
            // The module must notice (a call routed there, or its health probe).
            seen_down = wait_for(Duration::from_millis(1500), || {
                m.healthy_in_module("hsm2") == Some(false)
            });
            sleep_until(at(3000));
            m.store.heal("hsm2");
            healed = (Instant::now(), std::time::SystemTime::now());
            hs.into_iter()
                .map(|h| h.join().expect("load thread"))
                .collect()
        });
        for t in &tallies {
            assert_eq!(t.failed, 0, "failures reached the caller: {t:?}");
            assert!(t.rounds >= 10, "the load barely ran: {t:?}");
        }
        eprintln!("INFO load: {tallies:?}");
        assert!(
            seen_down,
            "the module never reported hsm2 unhealthy while it failed"
        );
        let new_key = new_key
            .unwrap()
            .expect("creating a key with one of three instances down (min_replicas 2)");

        // Back: repaired (the health thread probes every second), then healthy.
        let back = wait_for(FAILBACK_LIMIT, || {
            m.published_since(healed.1) && m.healthy_in_module("hsm2") == Some(true)
        });
        assert!(back, "hsm2 did not come back within {FAILBACK_LIMIT:?}");
        eprintln!(
            "INFO hsm2 healthy again {:?} after the fault was removed",
            healed.0.elapsed()
        );
        // The key made while it was down is on it now: 3 keys everywhere.
        let rows = m.store.list();
        eprintln!(
            "INFO after repair: {}",
            rows.iter()
                .map(|r| format!("{} keys={} ops={} errors={}", r.id, r.keys, r.ops, r.errors))
                .collect::<Vec<_>>()
                .join("; ")
        );
        assert_all_hold(&rows, &m.store.ids, 3);
        // It serves calls again: its counter grows under a short load.
        let before = row(&rows, "hsm2").ops;
        let mut rows = Vec::new();
        let grew = wait_for(Duration::from_secs(8), || {
            use_keys(&s, &k, "after repair").unwrap();
            rows = m.store.list();
            row(&rows, "hsm2").ops > before
        });
        assert!(
            grew,
            "hsm2 served no call after its repair (ops {before}): {rows:#?}"
        );
        // And it holds the new key's material: with the others down it alone serves it.
        m.store.fail("hsm1");
        m.store.fail("hsm3");
        let r = gcm_encrypt(&s, new_key, b"served by hsm2")
            .and_then(|(iv, ct)| gcm_decrypt(&s, new_key, iv, &ct));
        let r2 = use_keys(&s, &k, "hsm2 alone");
        m.store.heal("hsm1");
        m.store.heal("hsm3");
        assert_eq!(r.expect("the new key on hsm2 alone"), b"served by hsm2");
        r2.unwrap();
        m.wait_all_healthy();
        drop(s);
        m.finalize();
        println!("CHILD-OK");
        return;
    }
    let store = Store::new(3, "");
    store.child(TEST, "load");
    assert!(!store.fault_path("hsm2").exists());
    assert_all_hold(&store.list(), &store.ids, 3);
}

// ---- 4. an instance's directory lost -------------------------------------------------------

/// Child phases shared by the lost-directory tests.
fn lost_dir_child(phase: &str) {
    let m = Module::load();
    match phase {
        // Process A: the keys, a ciphertext and a signature for later processes.
        "create" => {
            m.init_token();
            let s = m.login();
            let k = make_keys(&s, "lost");
            let (iv, ct) = gcm_encrypt(&s, k.aes, b"written before the loss").unwrap();
            let sig = s
                .sign(
                    &Mechanism::EcdsaSha256,
                    k.ec_priv,
                    b"signed before the loss",
                )
                .unwrap();
            let mut blob = iv.to_vec();
            blob.extend_from_slice(&ct);
            std::fs::write(m.store.dir.join("ct.bin"), blob).unwrap();
            std::fs::write(m.store.dir.join("sig.bin"), sig).unwrap();
            drop(s);
        }
        // Process B: every key still works (old ciphertext and signature included).
        "use" => {
            let s = m.login();
            let k = find_keys(&s, "lost");
            let blob = std::fs::read(m.store.dir.join("ct.bin")).unwrap();
            let iv: [u8; 12] = blob[..12].try_into().unwrap();
            let plain = gcm_decrypt(&s, k.aes, iv, &blob[12..]).expect("decrypt old ciphertext");
            assert_eq!(plain, b"written before the loss");
            let sig = std::fs::read(m.store.dir.join("sig.bin")).unwrap();
            assert!(verifies(&k.point, b"signed before the loss", &sig));
            s.verify(
                &Mechanism::EcdsaSha256,
                k.ec_pub,
                b"signed before the loss",
                &sig,
            )
            .expect("C_Verify of the old signature");
            for i in 0..20 {
                use_keys(&s, &k, &format!("after the loss #{i}")).unwrap();
            }
            drop(s);
        }
        other => panic!("unknown phase {other}"),
    }
    m.finalize();
    println!("CHILD-OK");
}

/// hsm3's directory is deleted while the store is closed. The next process logs in and
/// every key works (C_Login rebuilds hsm3 from the others); `cks hsm sync` succeeds and all
/// three instances are healthy with the same keys.
#[test]
fn lost_instance_directory_then_login_and_sync() {
    const TEST: &str = "lost_instance_directory_then_login_and_sync";
    if let Some(phase) = child_phase() {
        lost_dir_child(&phase);
        return;
    }
    let store = Store::new(3, "");
    store.child(TEST, "create");
    assert_all_hold(&store.list(), &store.ids, 2);
    std::fs::remove_dir_all(store.hsm_dir("hsm3")).unwrap();
    store.child(TEST, "use");
    let (st, out) = store.sync();
    assert!(st.success(), "cks hsm sync failed ({st}):\n{out}");
    assert_all_hold(&store.list(), &store.ids, 2);
}

/// hsm3's directory is deleted while the store is closed: before anyone logs in,
/// `cks hsm list` shows it not healthy (empty) and the others intact; `cks hsm sync`
/// rebuilds it; then a process with hsm1 and hsm2 failed from its start uses every key,
/// served by the rebuilt hsm3 alone (from its disk, as this process never held them).
#[test]
fn lost_instance_directory_rebuilt_by_sync() {
    const TEST: &str = "lost_instance_directory_rebuilt_by_sync";
    if let Some(phase) = child_phase() {
        lost_dir_child(&phase);
        return;
    }
    let store = Store::new(3, "");
    store.child(TEST, "create");
    std::fs::remove_dir_all(store.hsm_dir("hsm3")).unwrap();
    let rows = store.list();
    let r3 = row(&rows, "hsm3");
    assert!(
        !r3.healthy,
        "a lost instance must not be listed healthy: {rows:#?}"
    );
    assert_eq!(r3.keys, 0, "{rows:#?}");
    assert!(
        r3.state.starts_with("EMPTY") || r3.state.starts_with("UNAVAILABLE"),
        "{rows:#?}"
    );
    for id in ["hsm1", "hsm2"] {
        let r = row(&rows, id);
        assert!(r.healthy && r.keys == 2, "{rows:#?}");
    }
    let (st, out) = store.sync();
    assert!(st.success(), "cks hsm sync failed ({st}):\n{out}");
    assert_all_hold(&store.list(), &store.ids, 2);
    // The rebuilt instance alone.
    store.fail("hsm1");
    store.fail("hsm2");
    store.child(TEST, "use");
    store.heal("hsm1");
    store.heal("hsm2");
    assert_all_hold(&store.list(), &store.ids, 2);
}

// ---- 5. min_replicas -----------------------------------------------------------------------

/// min_replicas = 3 with hsm3 down: creating a token key (or key pair) fails with
/// CKR_DEVICE_ERROR and leaves nothing — no object to find, no key on any instance. With
/// hsm3 back (repaired) creation works; hsm3 failing just before a creation (before the
/// module notices) fails it cleanly too.
#[test]
fn creation_below_min_replicas_leaves_nothing() {
    const TEST: &str = "creation_below_min_replicas_leaves_nothing";
    if child_phase().is_some() {
        let m = Module::load();
        let s = m.login();
        let nothing_found = |label: &str| {
            let s2 = m.session();
            for class in [
                ObjectClass::SECRET_KEY,
                ObjectClass::PRIVATE_KEY,
                ObjectClass::PUBLIC_KEY,
            ] {
                assert!(find(&s, class, label).is_empty(), "{label} {class:?} found");
                assert!(
                    find(&s2, class, label).is_empty(),
                    "{label} {class:?} found"
                );
            }
        };
        let keys_on = |want: [Option<usize>; 3]| {
            let rows = m.store.list();
            for (id, want) in ["hsm1", "hsm2", "hsm3"].iter().zip(want) {
                if let Some(n) = want {
                    assert_eq!(row(&rows, id).keys, n, "{id}: {rows:#?}");
                }
            }
        };

        // hsm3 down from the start.
        let r = make_aes(&s, "short-aes");
        assert!(
            is_rv(&r, RvError::DeviceError),
            "expected CKR_DEVICE_ERROR, got {r:?}"
        );
        let r = make_ec(&s, "short-ec");
        assert!(
            is_rv(&r, RvError::DeviceError),
            "expected CKR_DEVICE_ERROR, got {r:?}"
        );
        nothing_found("short-aes");
        nothing_found("short-ec");
        keys_on([Some(0), Some(0), None]);
        assert!(!row(&m.store.list(), "hsm3").healthy);

        // hsm3 back: repaired by the health thread, then creation works everywhere.
        m.store.heal("hsm3");
        m.wait_all_healthy();
        let k = make_aes(&s, "full-aes").expect("creation with every instance healthy");
        let (iv, ct) = gcm_encrypt(&s, k, b"x").unwrap();
        assert_eq!(gcm_decrypt(&s, k, iv, &ct).unwrap(), b"x");
        keys_on([Some(1), Some(1), Some(1)]);

        // hsm3 fails again, and a creation comes before the health thread notices.
        m.store.fail("hsm3");
        let r = make_aes(&s, "late-aes");
        assert!(
            is_rv(&r, RvError::DeviceError),
            "expected CKR_DEVICE_ERROR, got {r:?}"
        );
        let r = make_ec(&s, "late-ec");
        assert!(
            is_rv(&r, RvError::DeviceError),
            "expected CKR_DEVICE_ERROR, got {r:?}"
        );
        nothing_found("late-aes");
        nothing_found("late-ec");
        keys_on([Some(1), Some(1), None]);
        m.store.heal("hsm3");
        m.wait_all_healthy();
        keys_on([Some(1), Some(1), Some(1)]);
        drop(s);
        m.finalize();
        println!("CHILD-OK");
        return;
    }
    let store = Store::new(3, "min_replicas = 3");
    // The store is made with every instance up (as `cks init` would), then hsm3 fails.
    let (st, out, err) = store.cks(
        &[
            "init", "--label", LABEL, "--so-pin", SO_PIN, "--pin", USER_PIN,
        ],
        &[],
    );
    assert!(st.success(), "cks init failed ({st}):\n{out}{err}");
    store.fail("hsm3");
    store.child(TEST, "create");
    assert_all_hold(&store.list(), &store.ids, 1);
}

// ---- deletions missed by a failed instance -------------------------------------------------

/// A token object destroyed while hsm2 is down is gone from hsm2 too once it is repaired:
/// with hsm1 and hsm3 failed, hsm2 alone serves the token's objects, and the destroyed one
/// does not come back (while the keys it holds still work).
#[test]
fn deletion_missed_by_a_failed_instance_is_applied_at_repair() {
    const TEST: &str = "deletion_missed_by_a_failed_instance_is_applied_at_repair";
    if child_phase().is_some() {
        let m = Module::load();
        m.init_token();
        let s = m.login();
        let k = make_keys(&s, "del");
        let data = |label: &str| {
            s.create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Value(b"some data".to_vec()),
            ])
            .expect("token data object")
        };
        let doomed = data("doomed");
        data("kept");
        m.store.fail("hsm2");
        // The module notices (a write to hsm2 fails, or its probe does).
        s.destroy_object(doomed).expect("destroy with hsm2 down");
        assert!(find(&s, ObjectClass::DATA, "doomed").is_empty());
        m.store.heal("hsm2");
        m.wait_all_healthy();
        // hsm2 alone.
        m.store.fail("hsm1");
        m.store.fail("hsm3");
        let s2 = m.session();
        let doomed_found = find(&s2, ObjectClass::DATA, "doomed");
        let kept_found = find(&s2, ObjectClass::DATA, "kept");
        let used = use_keys(&s2, &k, "hsm2 alone");
        m.store.heal("hsm1");
        m.store.heal("hsm3");
        assert!(
            doomed_found.is_empty(),
            "an object destroyed while hsm2 was down is back from hsm2"
        );
        assert_eq!(kept_found.len(), 1, "hsm2 lost an object it should hold");
        used.unwrap();
        m.wait_all_healthy();
        drop((s, s2));
        m.finalize();
        println!("CHILD-OK");
        return;
    }
    let store = Store::new(3, "");
    store.child(TEST, "run");
    assert_all_hold(&store.list(), &store.ids, 2);
}

// ---- a new user's way in: cks init --hsms 3 ------------------------------------------------

/// `cks --config FILE init --hsms 3` writes a three-instance configuration and initialises
/// the store; keys made through PKCS#11 land on all three; after one instance's directory
/// is lost `cks hsm list` shows it, `cks hsm sync` restores it, and all three hold the keys.
#[test]
fn init_with_three_instances_then_lose_one_and_sync() {
    const TEST: &str = "init_with_three_instances_then_lose_one_and_sync";
    if child_phase().is_some() {
        let m = Module::load();
        let s = m.login();
        let k = make_keys(&s, "init3");
        use_keys(&s, &k, "fresh store").unwrap();
        drop(s);
        m.finalize();
        println!("CHILD-OK");
        return;
    }
    let mut store = Store::empty();
    let (st, out, err) = store.cks(
        &[
            "init", "--label", LABEL, "--so-pin", SO_PIN, "--pin", USER_PIN, "--hsms", "3",
        ],
        &[],
    );
    assert!(st.success(), "cks init --hsms 3 failed ({st}):\n{out}{err}");
    store.reload();
    assert_eq!(
        store.ids,
        ["hsm1", "hsm2", "hsm3"],
        "cks init wrote {:?}",
        store.cfg
    );
    assert_all_hold(&store.list(), &store.ids, 0);
    store.child(TEST, "create");
    assert_all_hold(&store.list(), &store.ids, 2);
    std::fs::remove_dir_all(store.hsm_dir("hsm2")).unwrap();
    let rows = store.list();
    assert!(!row(&rows, "hsm2").healthy, "{rows:#?}");
    let (st, out) = store.sync();
    assert!(st.success(), "cks hsm sync failed ({st}):\n{out}");
    assert_all_hold(&store.list(), &store.ids, 2);
}
