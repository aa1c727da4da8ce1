//! External HSM instances (`kind = "pkcs11"`): SoftHSM2 tokens, and a remote SoftHSM2 token
//! served by `p11-kit server` and reached through p11-kit's client module, as members of a
//! cks cluster next to an embedded instance.
//!
//! Every scenario has its own temp dir: a SoftHSM2 configuration with its tokens
//! (`softhsm/`), the cks configuration (`cks.toml`, cheap KDF, `[log]` to `cks.log`), the
//! key store's data, and for the remote scenario the p11-kit socket. The parent drives `cks`
//! and `pkcs11-tool` as an operator would. The cks module runs in child processes of this
//! test binary: what a module reads (`CKS_CONFIG`, `SOFTHSM2_CONF`, `P11_KIT_SERVER_ADDRESS`,
//! the backend PINs) must be in the environment before `C_Initialize`, and a process
//! initialises a module once. Backend tokens are looked at directly only from other
//! processes: `pkcs11-tool`, or a child that loads SoftHSM2 itself through cryptoki.
//!
//! Without SoftHSM2, `softhsm2-util`, `pkcs11-tool` (or, for the remote scenario, `p11-kit`)
//! a test prints SKIPPED and passes — unless `CI=true`, where it fails.
//!
//! Every wait is bounded; every p11-kit server a test starts is killed when it ends. The temp
//! dir is removed when a scenario passes (kept, and its path printed, when it fails, or
//! always with `CKS_TEST_KEEP=1`).

mod common;

use common::softhsm::{self, Out, P11KitServer, SoftHsm, ToolObject, SOFT_PIN, SOFT_SO_PIN};
use common::{hsm_row as row, HsmRow as Row, LABEL, SO_PIN, USER_PIN};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Set in a child process to the phase it runs.
const CHILD: &str = "CKS_EXT_CHILD";
/// The scenario's directory, for the child.
const DIR: &str = "CKS_EXT_DIR";
/// For the "inspect" phase: the SoftHSM token to look at.
const TOKEN: &str = "CKS_EXT_TOKEN";
/// Longest a child process or a command may run.
const LIMIT: Duration = Duration::from_secs(120);
/// The health thread probes once a second; allow for a loaded machine.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const AAD: &[u8] = b"cks-external-hsm-test";
/// The domain key's label on a pkcs11 member.
const DOMAIN_KEY: &str = "cks-domain-key";

// ---- the scenario --------------------------------------------------------------------------

/// A key store whose members are configured by the test, with its own SoftHSM2 tokens.
struct Scenario {
    dir: PathBuf,
    cfg: PathBuf,
    /// The parent's SoftHSM2 configuration (a child only inherits `SOFTHSM2_CONF`).
    soft: Option<SoftHsm>,
    /// What every process that opens the key store needs in its environment.
    envs: Vec<(String, String)>,
    /// Instance ids, in configuration order.
    ids: Vec<String>,
    /// The parent owns (and removes) the directory; a child only uses it.
    owner: bool,
}

/// An embedded member.
fn embedded(id: &str) -> String {
    format!("[[hsm]]\nid = \"{id}\"\nkind = \"embedded\"\n")
}

/// The environment variable holding member `id`'s backend PIN (`so`: its SO PIN).
fn pin_var(id: &str, so: bool) -> String {
    let id = id.to_ascii_uppercase().replace('-', "_");
    if so {
        format!("CKS_{id}_SO_PIN")
    } else {
        format!("CKS_{id}_PIN")
    }
}

impl Scenario {
    /// A new temp dir with a SoftHSM2 configuration (no tokens yet, no cks configuration).
    fn create() -> Scenario {
        let dir = common::tempdir();
        let soft = SoftHsm::new(&dir.join("softhsm"));
        let (k, v) = soft.env();
        Scenario {
            cfg: dir.join("cks.toml"),
            dir,
            envs: vec![(k.to_string(), v)],
            soft: Some(soft),
            ids: Vec::new(),
            owner: true,
        }
    }

    /// In a child: the parent's scenario (its environment is inherited).
    fn from_env() -> Scenario {
        let dir = PathBuf::from(std::env::var_os(DIR).expect("CKS_EXT_DIR"));
        let mut sc = Scenario {
            cfg: dir.join("cks.toml"),
            dir,
            soft: None,
            envs: Vec::new(),
            ids: Vec::new(),
            owner: false,
        };
        sc.read_ids();
        sc
    }

    fn soft(&self) -> &SoftHsm {
        self.soft
            .as_ref()
            .expect("the parent's SoftHSM configuration")
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("cks.log")
    }

    /// Set (or replace) a variable of every later process's environment.
    fn set_env(&mut self, key: &str, value: &str) {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.to_string(), value.to_string()));
    }

    /// A pkcs11 member whose backend PINs come from environment variables (`pin_env`,
    /// `so_pin_env`); `select` chooses the token (`token_label = ...` or
    /// `token_serial = ...`) and may add more keys.
    fn member_env(&mut self, id: &str, module: &Path, select: &str) -> String {
        let (pin, so) = (pin_var(id, false), pin_var(id, true));
        self.set_env(&pin, SOFT_PIN);
        self.set_env(&so, SOFT_SO_PIN);
        format!(
            "[[hsm]]\nid = \"{id}\"\nkind = \"pkcs11\"\nmodule = \"{}\"\n{select}\n\
             pin_env = \"{pin}\"\nso_pin_env = \"{so}\"\n",
            module.display()
        )
    }

    /// A pkcs11 member whose backend PINs are in files (`pin_file`, `so_pin_file`).
    fn member_file(&self, id: &str, module: &Path, select: &str) -> String {
        let pin = self.dir.join(format!("{id}.pin"));
        let so = self.dir.join(format!("{id}.so-pin"));
        std::fs::write(&pin, format!("{SOFT_PIN}\n")).expect("write PIN file");
        std::fs::write(&so, format!("{SOFT_SO_PIN}\n")).expect("write SO PIN file");
        format!(
            "[[hsm]]\nid = \"{id}\"\nkind = \"pkcs11\"\nmodule = \"{}\"\n{select}\n\
             pin_file = \"{}\"\nso_pin_file = \"{}\"\n",
            module.display(),
            pin.display(),
            so.display()
        )
    }

    /// Write `cks.toml` with these members.
    fn write_config(&mut self, members: &[String]) {
        let mut text = format!(
            "[keystore]\nlabel = \"{LABEL}\"\ndata_dir = \"{}\"\n\n[kdf]\nmemory_kib = 64\n\
             iterations = 1\n\n[log]\nfilter = \"warn\"\nfile = \"{}\"\n",
            self.data().display(),
            self.log_path().display()
        );
        for m in members {
            text.push('\n');
            text.push_str(m);
        }
        std::fs::write(&self.cfg, text).expect("write cks.toml");
        self.read_ids();
    }

    fn read_ids(&mut self) {
        let text = std::fs::read_to_string(&self.cfg).unwrap_or_default();
        self.ids = text
            .lines()
            .filter_map(|l| l.strip_prefix("id = "))
            .map(|v| v.trim().trim_matches('"').to_string())
            .collect();
    }

    /// `cks --config <cfg> ARGS` with the scenario's environment (no cks PINs from ours).
    fn cks_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cks"));
        cmd.arg("--config")
            .arg(&self.cfg)
            .args(args)
            .env_remove("CKS_PIN")
            .env_remove("CKS_SO_PIN")
            .env_remove("CKS_LOG")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .envs(envs.iter().copied());
        softhsm::bounded(cmd, &self.dir, LIMIT)
    }

    fn cks(&self, args: &[&str]) -> Out {
        self.cks_env(args, &[])
    }

    /// `cks init`: the token, both PINs, and the domain key in every pkcs11 member.
    fn init(&self) {
        let o = self.cks(&[
            "init", "--label", LABEL, "--so-pin", SO_PIN, "--pin", USER_PIN,
        ]);
        assert!(o.ok(), "cks init failed ({}):\n{}", o.status, o.text());
    }

    /// `cks hsm list --json`, parsed.
    fn list(&self) -> Vec<Row> {
        let o = self.cks(&["hsm", "list", "--json"]);
        assert!(
            o.ok(),
            "cks hsm list --json failed ({}):\n{}",
            o.status,
            o.text()
        );
        serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("cks hsm list --json: {e}; output:\n{}", o.text()))
    }

    fn child_cmd(&self, test: &str, phase: &str, extra: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, phase)
            .env(DIR, &self.dir)
            .env("CKS_CONFIG", &self.cfg)
            .env_remove("CKS_LOG")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().copied());
        cmd
    }

    /// Run this scenario's test again in a child process, in phase `phase`.
    fn child(&self, test: &str, phase: &str, extra: &[(&str, &str)]) -> String {
        let o = softhsm::bounded(self.child_cmd(test, phase, extra), &self.dir, LIMIT);
        let text = o.text();
        assert!(
            o.ok() && o.stdout.contains("CHILD-OK"),
            "child process {test} / {phase} failed ({}):\n{text}",
            o.status
        );
        for l in info_lines(&text) {
            eprintln!("{test}/{phase}: {l}");
        }
        text
    }

    /// Start a child that runs while the parent acts (see `Running`).
    fn spawn_child(&self, test: &str, phase: &str) -> Running {
        let out = self.dir.join(format!(".child-{phase}.out"));
        let err = self.dir.join(format!(".child-{phase}.err"));
        let child = self
            .child_cmd(test, phase, &[])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("child stdout"))
            .stderr(std::fs::File::create(&err).expect("child stderr"))
            .spawn()
            .expect("spawn child");
        Running {
            child: Some(child),
            out,
            err,
            start: Instant::now(),
            what: format!("{test} / {phase}"),
        }
    }

    /// Leave a marker for the other process.
    fn mark(&self, name: &str) {
        std::fs::write(self.dir.join(format!("marker-{name}")), b"").expect("marker");
    }

    fn marked(&self, name: &str) -> bool {
        self.dir.join(format!("marker-{name}")).exists()
    }
}

impl Drop for Scenario {
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

/// A child process running while the parent acts; killed if the parent gives up.
struct Running {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
    start: Instant,
    what: String,
}

impl Running {
    fn output(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(&self.out).unwrap_or_default(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// Wait until `cond` holds; fail if the child ends first or `limit` passes.
    fn wait(&mut self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if cond() {
                return;
            }
            let child = self.child.as_mut().expect("child running");
            if let Some(st) = child.try_wait().expect("wait child") {
                panic!(
                    "child {} ended ({st}) before {what}:\n{}",
                    self.what,
                    self.output()
                );
            }
            if start.elapsed() >= limit {
                let stacks = stacks(child.id());
                panic!(
                    "child {}: no {what} within {limit:?}:\n{}\n{stacks}",
                    self.what,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the child to end (at most `LIMIT` from its start); its output.
    fn finish(mut self) -> String {
        let mut child = self.child.take().expect("child running");
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait child") {
                break st;
            }
            if self.start.elapsed() > LIMIT {
                let stacks = stacks(child.id());
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "child {} did not finish within {LIMIT:?}:\n{}\n{stacks}",
                    self.what,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = self.output();
        assert!(
            status.success() && text.contains("CHILD-OK"),
            "child {} failed ({status}):\n{text}",
            self.what
        );
        for l in info_lines(&text) {
            eprintln!("{}: {l}", self.what);
        }
        text
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
    }
}

/// The threads' stacks of a hung process, if gdb is installed (for the failure message).
fn stacks(pid: u32) -> String {
    if !softhsm::on_path("gdb") {
        return String::new();
    }
    let mut cmd = Command::new("gdb");
    cmd.args([
        "-p",
        &pid.to_string(),
        "-batch",
        "-ex",
        "thread apply all bt",
    ]);
    let dir = std::env::temp_dir();
    let o = softhsm::bounded(cmd, &dir, Duration::from_secs(60));
    format!("stacks of the hung child (gdb):\n{}", o.stdout)
}

/// Every listed instance healthy and holding `keys` keys.
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

/// What a child reported ("INFO ..." anywhere on a line: libtest may print first).
fn info_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter_map(|l| l.find("INFO ").map(|i| &l[i..]))
}

fn child_phase() -> Option<String> {
    std::env::var(CHILD).ok()
}

/// The cks key objects (`cks:<uuid>` secret and private keys) among a token's objects;
/// checks that each label names a UUID and CKA_ID is that UUID's 16 bytes.
fn cks_keys(objs: &[ToolObject]) -> Vec<ToolObject> {
    let keys: Vec<ToolObject> = objs
        .iter()
        .filter(|o| o.is_key() && o.label.starts_with("cks:"))
        .cloned()
        .collect();
    for k in &keys {
        let uuid = uuid::Uuid::parse_str(&k.label["cks:".len()..])
            .unwrap_or_else(|e| panic!("label {:?} does not name a UUID: {e}", k.label));
        assert_eq!(
            k.id.to_ascii_lowercase(),
            hex::encode(uuid.as_bytes()),
            "CKA_ID of {} is not its UUID: {k:#?}",
            k.label
        );
    }
    keys
}

fn sorted_labels(objs: &[ToolObject]) -> Vec<String> {
    let mut v: Vec<String> = objs.iter().map(|o| o.label.clone()).collect();
    v.sort();
    v
}

// ---- the cks module, in a child process ------------------------------------------------------

struct Module {
    p11: Pkcs11,
    slot: Slot,
    sc: Scenario,
}

impl Module {
    /// Load and initialise the cks module on the parent's key store.
    fn load() -> Module {
        let sc = Scenario::from_env();
        let p11 = Pkcs11::new(common::module_path()).expect("load the cks module");
        p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        let slot = p11.get_all_slots().expect("C_GetSlotList")[0];
        Module { p11, slot, sc }
    }

    /// A session with the user logged in (the login lasts while it is open).
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
        self.sc
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

    /// Has the module published its metrics since `t` (with a margin for a health round
    /// that began before it)?
    fn published_since(&self, t: SystemTime) -> bool {
        std::fs::metadata(self.metrics_file())
            .and_then(|m| m.modified())
            .is_ok_and(|m| m > t + Duration::from_millis(300))
    }

    fn finalize(self) {
        self.p11.finalize().expect("C_Finalize");
    }
}

fn make_aes(s: &Session, label: &str) -> cryptoki::error::Result<ObjectHandle> {
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
}

/// An EC P-256 token key pair.
#[derive(Clone)]
struct Ec {
    public: ObjectHandle,
    private: ObjectHandle,
    /// Uncompressed point, to check signatures outside the module.
    point: Vec<u8>,
}

fn make_ec(s: &Session, label: &str) -> Ec {
    let (public, private) = s
        .generate_key_pair(
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
        .expect("generate an EC P-256 token key pair");
    let attrs = s
        .get_attributes(public, &[AttributeType::EcPoint])
        .expect("CKA_EC_POINT");
    let Some(Attribute::EcPoint(p)) = attrs.into_iter().next() else {
        panic!("no CKA_EC_POINT");
    };
    // DER OCTET STRING around the 65-byte uncompressed point, or the point itself.
    let point = if p.len() == 67 && p[0] == 0x04 && p[1] == 65 {
        p[2..].to_vec()
    } else {
        p
    };
    Ec {
        public,
        private,
        point,
    }
}

/// An RSA-2048 token key pair.
#[derive(Clone)]
struct Rsa {
    public: ObjectHandle,
    private: ObjectHandle,
    n: Vec<u8>,
    e: Vec<u8>,
}

fn make_rsa(s: &Session, label: &str) -> Rsa {
    let (public, private) = s
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
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
        .expect("generate an RSA-2048 token key pair");
    let attrs = s
        .get_attributes(
            public,
            &[AttributeType::Modulus, AttributeType::PublicExponent],
        )
        .expect("CKA_MODULUS, CKA_PUBLIC_EXPONENT");
    let (mut n, mut e) = (Vec::new(), Vec::new());
    for a in attrs {
        match a {
            Attribute::Modulus(v) => n = v,
            Attribute::PublicExponent(v) => e = v,
            _ => {}
        }
    }
    assert_eq!(n.len(), 256, "RSA-2048 modulus");
    Rsa {
        public,
        private,
        n,
        e,
    }
}

/// ECDSA P-256 with SHA-256, checked with RustCrypto (not the module).
fn ec_verifies(point: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier;
    let Ok(vk) = p256::ecdsa::VerifyingKey::from_sec1_bytes(point) else {
        return false;
    };
    let Ok(sig) = p256::ecdsa::Signature::from_slice(sig) else {
        return false;
    };
    vk.verify(msg, &sig).is_ok()
}

/// RSA PKCS#1 v1.5 with SHA-256, checked with RustCrypto (not the module).
fn rsa_verifies(k: &Rsa, msg: &[u8], sig: &[u8]) -> bool {
    use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
    use sha2::{Digest, Sha256};
    let Ok(pk) = RsaPublicKey::new(BigUint::from_bytes_be(&k.n), BigUint::from_bytes_be(&k.e))
    else {
        return false;
    };
    pk.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(msg), sig)
        .is_ok()
}

fn gcm(iv: &mut [u8; 12]) -> Mechanism<'_> {
    Mechanism::AesGcm(GcmParams::new(iv, AAD, 128.into()).expect("GCM params"))
}

/// AES-GCM encryption and decryption, compared.
fn gcm_round_trip(s: &Session, key: ObjectHandle, msg: &[u8]) -> Result<(), String> {
    let iv: [u8; 12] = rand::random();
    let mut buf = iv;
    let ct = s
        .encrypt(&gcm(&mut buf), key, msg)
        .map_err(|e| format!("C_Encrypt: {e:?}"))?;
    let mut buf = iv;
    let back = s
        .decrypt(&gcm(&mut buf), key, &ct)
        .map_err(|e| format!("C_Decrypt: {e:?}"))?;
    if back != msg {
        return Err("AES-GCM round trip returned other bytes".into());
    }
    Ok(())
}

/// One ECDSA signature (C_SignInit + C_Sign), checked outside the module.
fn ec_sign(s: &Session, k: &Ec, msg: &[u8]) -> Result<Vec<u8>, String> {
    let sig = s
        .sign(&Mechanism::EcdsaSha256, k.private, msg)
        .map_err(|e| format!("C_Sign (ECDSA): {e:?}"))?;
    if !ec_verifies(&k.point, msg, &sig) {
        return Err("the ECDSA signature does not verify".into());
    }
    Ok(sig)
}

/// One RSA PKCS#1 v1.5 signature, checked outside the module.
fn rsa_sign(s: &Session, k: &Rsa, msg: &[u8]) -> Result<Vec<u8>, String> {
    let sig = s
        .sign(&Mechanism::Sha256RsaPkcs, k.private, msg)
        .map_err(|e| format!("C_Sign (RSA): {e:?}"))?;
    if !rsa_verifies(k, msg, &sig) {
        return Err("the RSA signature does not verify".into());
    }
    Ok(sig)
}

#[derive(Clone, Copy, Debug)]
enum Work {
    EcSign,
    RsaSign,
    Gcm,
}

/// What one load thread saw: rounds, module calls that choose an instance, and failures
/// that reached the caller.
#[derive(Default, Debug)]
struct Tally {
    rounds: u64,
    calls: u64,
    failed: u64,
    first_failures: Vec<String>,
}

/// The keys a load thread may use.
struct LoadKeys<'a> {
    ec: &'a Ec,
    rsa: Option<&'a Rsa>,
    aes: Option<ObjectHandle>,
}

/// `work` in a session of its own until `stop` is set.
fn load(m: &Module, k: &LoadKeys<'_>, work: Work, stop: &AtomicBool) -> Tally {
    let mut t = Tally::default();
    let s = match m.p11.open_rw_session(m.slot) {
        Ok(s) => s,
        Err(e) => {
            t.failed = 1;
            t.first_failures.push(format!("C_OpenSession: {e:?}"));
            return t;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        t.rounds += 1;
        let msg = format!("{work:?} round {} {}", t.rounds, rand::random::<u64>());
        let r = match work {
            Work::EcSign => {
                t.calls += 1;
                ec_sign(&s, k.ec, msg.as_bytes()).map(drop)
            }
            Work::RsaSign => {
                t.calls += 1;
                rsa_sign(&s, k.rsa.expect("RSA key"), msg.as_bytes()).map(drop)
            }
            Work::Gcm => {
                t.calls += 2;
                gcm_round_trip(&s, k.aes.expect("AES key"), msg.as_bytes())
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

fn is_rv<T: std::fmt::Debug>(r: &cryptoki::error::Result<T>, rv: RvError) -> bool {
    matches!(r, Err(P11Error::Pkcs11(got, _)) if *got == rv)
}

// ---- SoftHSM2 itself, in a child process -------------------------------------------------------

/// SoftHSM2 loaded in this (child) process, logged in on token `label`.
fn softhsm_session(label: &str, user: UserType, pin: &str) -> (Pkcs11, Session) {
    let module = softhsm::softhsm_module().expect("SoftHSM2");
    let p11 = Pkcs11::new(module).expect("load SoftHSM2");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("SoftHSM2 C_Initialize");
    let slot = p11
        .get_slots_with_token()
        .expect("SoftHSM2 slots")
        .into_iter()
        .find(|s| p11.get_token_info(*s).is_ok_and(|i| i.label() == label))
        .unwrap_or_else(|| panic!("no SoftHSM2 token labelled {label}"));
    let s = p11.open_rw_session(slot).expect("SoftHSM2 C_OpenSession");
    s.login(user, Some(&AuthPin::new(pin.into())))
        .expect("SoftHSM2 C_Login");
    (p11, s)
}

fn bool_attr(s: &Session, h: ObjectHandle, t: AttributeType) -> Option<bool> {
    let attrs = s.get_attributes(h, &[t]).ok()?;
    attrs.into_iter().find_map(|a| match a {
        Attribute::Token(v)
        | Attribute::Private(v)
        | Attribute::Sensitive(v)
        | Attribute::Extractable(v)
        | Attribute::WrapWithTrusted(v)
        | Attribute::Trusted(v) => Some(v),
        _ => None,
    })
}

fn label_of(s: &Session, h: ObjectHandle) -> String {
    match s.get_attributes(h, &[AttributeType::Label]).ok().as_deref() {
        Some([Attribute::Label(l)]) => String::from_utf8_lossy(l).into_owned(),
        _ => String::new(),
    }
}

/// An AES-256 session key of the backend user's own, able to wrap.
fn own_wrapping_key(s: &Session) -> ObjectHandle {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(false),
            Attribute::ValueLen(32.into()),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(true),
            Attribute::Label(b"not-trusted".to_vec()),
        ],
    )
    .expect("generate an ordinary AES wrapping key on the backend token")
}

/// The attribute that holds a key's secret: CKA_VALUE, or CKA_PRIVATE_EXPONENT for RSA.
fn secret_attr(s: &Session, h: ObjectHandle) -> AttributeType {
    match s
        .get_attributes(h, &[AttributeType::KeyType])
        .ok()
        .as_deref()
    {
        Some([Attribute::KeyType(KeyType::RSA)]) => AttributeType::PrivateExponent,
        _ => AttributeType::Value,
    }
}

/// Child phase "inspect": with the backend token's own user PIN, what can be done to the
/// cks keys on it? Each is a `cks:<uuid>` key, sensitive, extractable only under a trusted
/// key; its value cannot be read, it cannot be wrapped with an ordinary key, and
/// CKA_WRAP_WITH_TRUSTED cannot be turned off. The domain key is trusted and sensitive.
fn inspect_backend_token(token: &str) {
    let (p11, s) = softhsm_session(token, UserType::User, SOFT_PIN);
    let mut keys = Vec::new();
    for class in [ObjectClass::SECRET_KEY, ObjectClass::PRIVATE_KEY] {
        for h in s
            .find_objects(&[Attribute::Class(class)])
            .expect("C_FindObjects")
        {
            let label = label_of(&s, h);
            if label.starts_with("cks:") {
                keys.push((class, h, label));
            }
        }
    }
    assert!(!keys.is_empty(), "no cks:<uuid> key on token {token}");
    let own = own_wrapping_key(&s);
    for (class, h, label) in &keys {
        let uuid = uuid::Uuid::parse_str(&label["cks:".len()..])
            .unwrap_or_else(|e| panic!("{token}: label {label:?} is not cks:<uuid>: {e}"));
        match s.get_attributes(*h, &[AttributeType::Id]).ok().as_deref() {
            Some([Attribute::Id(id)]) => assert_eq!(id, uuid.as_bytes(), "{token}: {label} CKA_ID"),
            other => panic!("{token}: {label}: CKA_ID {other:?}"),
        }
        for (t, want) in [
            (AttributeType::Token, true),
            (AttributeType::Private, true),
            (AttributeType::Sensitive, true),
            (AttributeType::Extractable, true),
            (AttributeType::WrapWithTrusted, true),
        ] {
            assert_eq!(
                bool_attr(&s, *h, t),
                Some(want),
                "{token}: {class:?} {label}: {t:?}"
            );
        }
        let secret = secret_attr(&s, *h);
        let info = s
            .get_attribute_info(*h, &[secret])
            .expect("C_GetAttributeValue");
        assert!(
            matches!(info.as_slice(), [AttributeInfo::Sensitive]),
            "{token}: {label}: reading {secret:?} must fail with CKR_ATTRIBUTE_SENSITIVE, got {info:?}"
        );
        let r = s.wrap_key(&Mechanism::AesKeyWrapPad, own, *h);
        assert!(
            is_rv(&r, RvError::KeyNotWrappable),
            "{token}: C_WrapKey(CKM_AES_KEY_WRAP_PAD) of {label} with an ordinary key must \
             fail with CKR_KEY_NOT_WRAPPABLE, got {r:?}"
        );
        let r = s.update_attributes(*h, &[Attribute::WrapWithTrusted(false)]);
        assert!(
            is_rv(&r, RvError::AttributeReadOnly),
            "{token}: turning CKA_WRAP_WITH_TRUSTED off on {label} must fail with \
             CKR_ATTRIBUTE_READ_ONLY, got {r:?}"
        );
        let r = s.update_attributes(*h, &[Attribute::Sensitive(false)]);
        assert!(
            r.is_err(),
            "{token}: CKA_SENSITIVE of {label} could be turned off"
        );
        let r = s.wrap_key(&Mechanism::AesKeyWrapPad, own, *h);
        assert!(
            is_rv(&r, RvError::KeyNotWrappable),
            "{token}: {label} became wrappable: {r:?}"
        );
    }
    let domain = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(DOMAIN_KEY.as_bytes().to_vec()),
        ])
        .expect("C_FindObjects");
    assert_eq!(domain.len(), 1, "{token}: one {DOMAIN_KEY} expected");
    for (t, want) in [
        (AttributeType::Token, true),
        (AttributeType::Trusted, true),
        (AttributeType::Sensitive, true),
        (AttributeType::Extractable, false),
        (AttributeType::Private, false),
    ] {
        assert_eq!(
            bool_attr(&s, domain[0], t),
            Some(want),
            "{token}: {DOMAIN_KEY}: {t:?}"
        );
    }
    let info = s
        .get_attribute_info(domain[0], &[AttributeType::Value])
        .expect("C_GetAttributeValue");
    assert!(
        matches!(info.as_slice(), [AttributeInfo::Sensitive]),
        "{token}: the domain key's value: {info:?}"
    );
    let data = s
        .find_objects(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(b"cks".to_vec()),
        ])
        .expect("C_FindObjects");
    assert!(
        !data.is_empty(),
        "{token}: no CKO_DATA object with CKA_APPLICATION \"cks\""
    );
    println!(
        "INFO {token}: {} cks keys checked, {} cks data objects",
        keys.len(),
        data.len()
    );
    drop(s);
    p11.finalize().expect("SoftHSM2 C_Finalize");
}

// ---- 0. what cks relies on in SoftHSM2 --------------------------------------------------------

/// Child of `softhsm_enforces_wrap_with_trusted`: SoftHSM2 alone, no cks.
fn softhsm_selfcheck(token: &str) {
    // The SO makes a trusted wrapping key (only the SO may set CKA_TRUSTED; the SO cannot
    // make private objects).
    let (p11, so) = softhsm_session(token, UserType::So, SOFT_SO_PIN);
    so.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Trusted(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::ValueLen(32.into()),
            Attribute::Label(b"trusted".to_vec()),
        ],
    )
    .expect("the SO generates a trusted AES key");
    so.logout().expect("SO logout");
    drop(so);
    let slot = p11
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|s| p11.get_token_info(*s).is_ok_and(|i| i.label() == token))
        .expect("token");
    let s = p11.open_rw_session(slot).expect("session");
    s.login(UserType::User, Some(&AuthPin::new(SOFT_PIN.into())))
        .expect("user login");
    let trusted = s
        .find_objects(&[Attribute::Label(b"trusted".to_vec())])
        .expect("find")[0];
    assert_eq!(bool_attr(&s, trusted, AttributeType::Trusted), Some(true));
    let key = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                Attribute::WrapWithTrusted(true),
                Attribute::ValueLen(32.into()),
                Attribute::Label(b"cks:guarded".to_vec()),
            ],
        )
        .expect("a key wrappable only with a trusted key");
    let own = own_wrapping_key(&s);
    let r = s.wrap_key(&Mechanism::AesKeyWrapPad, own, key);
    assert!(
        is_rv(&r, RvError::KeyNotWrappable),
        "SoftHSM2 wrapped a CKA_WRAP_WITH_TRUSTED key with an untrusted key: {r:?}"
    );
    let r = s.update_attributes(key, &[Attribute::WrapWithTrusted(false)]);
    assert!(is_rv(&r, RvError::AttributeReadOnly), "{r:?}");
    let info = s
        .get_attribute_info(key, &[AttributeType::Value])
        .expect("C_GetAttributeValue");
    assert!(
        matches!(info.as_slice(), [AttributeInfo::Sensitive]),
        "{info:?}"
    );
    let blob = s
        .wrap_key(&Mechanism::AesKeyWrapPad, trusted, key)
        .expect("wrapping with the trusted key works");
    assert!(blob.len() >= 40, "{}", blob.len());
    // For the record (not asserted: SoftHSM2's policy, not cks's): can the backend user
    // unwrap that blob with the trusted key into a key whose value it can read?
    let r = s.unwrap_key(
        &Mechanism::AesKeyWrapPad,
        trusted,
        &blob,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ],
    );
    match r {
        Ok(h) => println!(
            "INFO SoftHSM2: unwrap with the trusted key into a non-sensitive key works; \
             its value readable: {:?}",
            s.get_attribute_info(h, &[AttributeType::Value])
        ),
        Err(e) => println!("INFO SoftHSM2: unwrap into a non-sensitive key refused: {e:?}"),
    }
    drop(s);
    p11.finalize().expect("C_Finalize");
}

/// SoftHSM2 (the backend of the other scenarios) enforces what cks relies on: a key with
/// CKA_WRAP_WITH_TRUSTED cannot be wrapped with an untrusted key (CKR_KEY_NOT_WRAPPABLE),
/// the flag cannot be turned off, its value is sensitive; the SO-made trusted key wraps it.
#[test]
fn softhsm_enforces_wrap_with_trusted() {
    const TEST: &str = "softhsm_enforces_wrap_with_trusted";
    if child_phase().is_some() {
        softhsm_selfcheck(&std::env::var(TOKEN).expect("token"));
        println!("CHILD-OK");
        return;
    }
    if !softhsm::tools_present(TEST, false) {
        return;
    }
    let sc = Scenario::create();
    sc.soft().init_token("check");
    sc.child(TEST, "selfcheck", &[(TOKEN, "check")]);
}

// ---- 1. a mixed cluster ---------------------------------------------------------------------

/// Child phase "mixed": keys through the cks token, on all three members; crypto checked
/// outside the module; a four-thread load that both kinds of member serve.
fn mixed_child() {
    let m = Module::load();
    let s = m.login();
    let aes = make_aes(&s, "mx-aes").expect("generate an AES-256 token key");
    let ec = make_ec(&s, "mx-ec");
    let rsa = make_rsa(&s, "mx-rsa");
    // On every member as soon as created: AES secret key, EC and RSA private keys.
    assert_all_hold(&m.sc.list(), &m.sc.ids, 3);

    gcm_round_trip(&s, aes, b"mixed cluster").unwrap();
    let msg = b"signed by a mixed cluster";
    let sig = ec_sign(&s, &ec, msg).unwrap();
    s.verify(&Mechanism::EcdsaSha256, ec.public, msg, &sig)
        .expect("C_Verify (ECDSA)");
    let sig = rsa_sign(&s, &rsa, msg).unwrap();
    s.verify(&Mechanism::Sha256RsaPkcs, rsa.public, msg, &sig)
        .expect("C_Verify (RSA)");

    let keys = LoadKeys {
        ec: &ec,
        rsa: Some(&rsa),
        aes: Some(aes),
    };
    let stop = AtomicBool::new(false);
    let tallies: Vec<Tally> = std::thread::scope(|sc| {
        let hs: Vec<_> = [Work::EcSign, Work::Gcm, Work::RsaSign, Work::EcSign]
            .into_iter()
            .map(|w| {
                let (m, keys, stop) = (&m, &keys, &stop);
                sc.spawn(move || load(m, keys, w, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        hs.into_iter()
            .map(|h| h.join().expect("load thread"))
            .collect()
    });
    for t in &tallies {
        assert_eq!(t.failed, 0, "calls failed: {t:?}");
        assert!(t.rounds > 0, "{t:?}");
    }
    let calls: u64 = tallies.iter().map(|t| t.calls).sum();
    // The module publishes its counters every second: wait until they include the load.
    let mut rows = Vec::new();
    let published = wait_for(Duration::from_secs(8), || {
        rows = m.sc.list();
        rows.iter().map(|r| r.ops).sum::<u64>() >= calls
    });
    assert!(
        published,
        "counters never reached the {calls} calls made: {rows:#?}"
    );
    println!(
        "INFO {calls} calls; served: {}",
        rows.iter()
            .map(|r| format!("{}({})={}", r.id, r.kind, r.ops))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // Both kinds serve: every member took calls, none failed.
    for r in &rows {
        assert!(r.ops > 0, "{} ({}) served no call: {rows:#?}", r.id, r.kind);
        assert_eq!(r.errors, 0, "{rows:#?}");
    }
    drop(s);
    m.finalize();
    println!("CHILD-OK");
}

/// Two SoftHSM2 tokens (one chosen by label with backend PINs from the environment, one by
/// serial number with PINs from files) and an embedded instance. `cks init` installs the
/// domain key in each token; an AES-256 key, an EC P-256 pair and an RSA-2048 pair made
/// through the cks token are on all three members (`cks hsm list`; `pkcs11-tool -O` shows
/// the same `cks:<uuid>` keys on both tokens); AES-GCM, ECDSA and RSA signatures work and
/// check out, and under load both kinds of member serve (`hsm list` counters, audit
/// records). With the backend token's own user PIN, the keys cannot be read
/// (`pkcs11-tool --read-object`; CKR_ATTRIBUTE_SENSITIVE) nor wrapped with an ordinary key
/// (CKR_KEY_NOT_WRAPPABLE).
#[test]
fn mixed_cluster_replicates_serves_and_keeps_backend_keys_sensitive() {
    const TEST: &str = "mixed_cluster_replicates_serves_and_keeps_backend_keys_sensitive";
    if let Some(phase) = child_phase() {
        match phase.as_str() {
            "mixed" => mixed_child(),
            "inspect" => {
                inspect_backend_token(&std::env::var(TOKEN).expect("token"));
                println!("CHILD-OK");
            }
            other => panic!("unknown phase {other}"),
        }
        return;
    }
    if !softhsm::tools_present(TEST, false) {
        return;
    }
    let mut sc = Scenario::create();
    sc.soft().init_token("soft1");
    sc.soft().init_token("soft2");
    let serial2 = sc.soft().serial("soft2");
    let module = sc.soft().module.clone();
    let m1 = sc.member_env(
        "soft1",
        &module,
        "token_label = \"soft1\"\nmax_in_flight = 8",
    );
    let m2 = sc.member_file("soft2", &module, &format!("token_serial = \"{serial2}\""));
    sc.write_config(&[embedded("hsm1"), m1, m2]);
    sc.init();

    // The domain key is on each token; no key yet.
    for t in ["soft1", "soft2"] {
        let objs = sc.soft().objects(t);
        let domain: Vec<_> = objs.iter().filter(|o| o.label == DOMAIN_KEY).collect();
        assert!(
            domain.len() == 1 && domain[0].is_secret_key(),
            "{t}: expected one secret key {DOMAIN_KEY}: {objs:#?}"
        );
        assert!(
            cks_keys(&objs).is_empty(),
            "{t}: keys before any: {objs:#?}"
        );
    }
    let rows = sc.list();
    assert_all_hold(&rows, &sc.ids, 0);
    assert_eq!(row(&rows, "hsm1").kind, "embedded");
    assert_eq!(row(&rows, "soft1").kind, "pkcs11");
    assert_eq!(row(&rows, "soft2").kind, "pkcs11");

    sc.child(TEST, "mixed", &[]);
    let rows = sc.list();
    assert_all_hold(&rows, &sc.ids, 3);

    // The same three keys on both tokens, as pkcs11-tool sees them.
    let k1 = cks_keys(&sc.soft().objects("soft1"));
    let k2 = cks_keys(&sc.soft().objects("soft2"));
    assert_eq!(
        (
            k1.iter().filter(|o| o.is_secret_key()).count(),
            k1.iter().filter(|o| o.is_private_key()).count()
        ),
        (1, 2),
        "soft1: expected one secret and two private cks keys: {k1:#?}"
    );
    assert_eq!(
        sorted_labels(&k1),
        sorted_labels(&k2),
        "soft1 and soft2 hold different keys"
    );

    // pkcs11-tool with the backend user PIN cannot read the AES key's value.
    let aes = k1.iter().find(|o| o.is_secret_key()).expect("AES key");
    let out = sc.dir.join("stolen.bin");
    let o = sc.soft().tool(&[
        "--token-label",
        "soft1",
        "--login",
        "--pin",
        SOFT_PIN,
        "--read-object",
        "--type",
        "secrkey",
        "--label",
        &aes.label,
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    let stolen = std::fs::read(&out).unwrap_or_default();
    assert!(
        !o.ok() && stolen.is_empty(),
        "pkcs11-tool read the value of {} ({} bytes):\n{}",
        aes.label,
        stolen.len(),
        o.text()
    );
    assert!(
        o.text().contains("CKR_ATTRIBUTE_SENSITIVE"),
        "pkcs11-tool --read-object failed for another reason:\n{}",
        o.text()
    );

    // Directly on each token (SoftHSM2 loaded by a child): sensitive, not wrappable.
    for t in ["soft1", "soft2"] {
        sc.child(TEST, "inspect", &[(TOKEN, t)]);
    }

    // The audit log names the members that served: both kinds.
    let o = sc.cks(&["audit", "show", "--json"]);
    assert!(o.ok(), "cks audit show --json:\n{}", o.text());
    let mut served = std::collections::BTreeMap::<String, usize>::new();
    for line in o.stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("audit record {line:?}: {e}"));
        if let Some(i) = v.get("instance").and_then(|i| i.as_str()) {
            *served.entry(i.to_string()).or_default() += 1;
        }
    }
    eprintln!("{TEST}: audit records per instance: {served:?}");
    assert!(
        served.contains_key("hsm1"),
        "no record served by hsm1: {served:?}"
    );
    assert!(
        served.contains_key("soft1") || served.contains_key("soft2"),
        "no record served by a SoftHSM member: {served:?}"
    );
    let o = sc.cks(&["audit", "verify"]);
    assert!(o.ok(), "cks audit verify:\n{}", o.text());
}

// ---- 2. a remote member killed under load ------------------------------------------------------

/// Child phase "load" of the remote scenario; the parent kills and restarts the p11-kit
/// server when the markers say so.
fn remote_load_child() {
    let m = Module::load();
    let s = m.login();
    let aes = make_aes(&s, "rm-aes").expect("generate an AES-256 token key");
    let ec = make_ec(&s, "rm-ec");
    assert_all_hold(&m.sc.list(), &m.sc.ids, 2);
    let keys = LoadKeys {
        ec: &ec,
        rsa: None,
        aes: None,
    };
    let stop = AtomicBool::new(false);
    let wait_mark = |name: &str| {
        assert!(
            wait_for(Duration::from_secs(30), || m.sc.marked(name)),
            "the parent never marked {name}"
        );
    };
    let mut seen_down = false;
    let mut back = None;
    let mut new_key = None;
    let mut ops_soft3 = (0, 0);
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let hs: Vec<_> = [Work::EcSign, Work::EcSign]
            .into_iter()
            .map(|w| {
                let (m, keys, stop) = (&m, &keys, &stop);
                scope.spawn(move || load(m, keys, w, stop))
            })
            .collect();
        // soft3 is serving when its server dies.
        let serving = wait_for(Duration::from_secs(5), || {
            m.metric("cks_hsm_ops_total", "soft3").unwrap_or(0.0) > 0.0
        });
        assert!(serving, "soft3 served no call before its server was killed");
        m.sc.mark("loading");
        wait_mark("killed");
        // A key while soft3 is gone: durable on hsm1 and soft2 (min_replicas 2).
        new_key = Some(make_aes(&s, "rm-while-down"));
        seen_down = wait_for(Duration::from_secs(5), || {
            m.healthy_in_module("soft3") == Some(false)
        });
        std::thread::sleep(Duration::from_millis(500));
        println!(
            "INFO soft3 during the outage: errors={:?} ops={:?}",
            m.metric("cks_hsm_errors_total", "soft3"),
            m.metric("cks_hsm_ops_total", "soft3")
        );
        m.sc.mark("made");
        wait_mark("restarted");
        let restarted = (Instant::now(), SystemTime::now());
        if wait_for(RECOVERY_LIMIT, || {
            m.published_since(restarted.1) && m.healthy_in_module("soft3") == Some(true)
        }) {
            back = Some(restarted.0.elapsed());
        }
        ops_soft3.0 = m.metric("cks_hsm_ops_total", "soft3").unwrap_or(0.0) as u64;
        // More load with soft3 back.
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        hs.into_iter()
            .map(|h| h.join().expect("load thread"))
            .collect()
    });
    println!("INFO load: {tallies:?}");
    for t in &tallies {
        assert_eq!(t.failed, 0, "failures reached the caller: {t:?}");
        assert!(t.rounds >= 10, "the load barely ran: {t:?}");
    }
    assert!(
        seen_down,
        "the module never reported soft3 unhealthy while its server was dead"
    );
    let back = back.unwrap_or_else(|| {
        panic!("soft3 was not healthy again within {RECOVERY_LIMIT:?} of the server's restart")
    });
    println!("INFO soft3 healthy again {back:?} after the server restarted");
    let new_key = new_key
        .expect("made")
        .expect("creating a key while the remote member is down (min_replicas 2)");
    gcm_round_trip(&s, new_key, b"made while soft3 was down").unwrap();
    gcm_round_trip(&s, aes, b"made before").unwrap();
    // Repaired: the key made during the outage is on soft3 too.
    let rows = m.sc.list();
    std::thread::sleep(Duration::from_millis(1100));
    ops_soft3.1 = m.metric("cks_hsm_ops_total", "soft3").unwrap_or(0.0) as u64;
    println!(
        "INFO after repair: {}; soft3 ops {} -> {} under the last load",
        rows.iter()
            .map(|r| format!("{} keys={} ops={} errors={}", r.id, r.keys, r.ops, r.errors))
            .collect::<Vec<_>>()
            .join("; "),
        ops_soft3.0,
        ops_soft3.1
    );
    assert_all_hold(&rows, &m.sc.ids, 3);
    drop(s);
    m.finalize();
    println!("CHILD-OK");
}

/// An embedded instance, a local SoftHSM2 token, and a SoftHSM2 token served by
/// `p11-kit server` (the member loads p11-kit-client.so). Two threads sign with an EC key;
/// the server (and its connection processes) is SIGKILLed: no error reaches the caller. A
/// key made during the outage works; the server restarts on the same socket, the member is
/// healthy again within 10 s, and the key made meanwhile is on its token.
#[test]
fn remote_member_killed_under_load_fails_over_and_is_repaired() {
    const TEST: &str = "remote_member_killed_under_load_fails_over_and_is_repaired";
    if child_phase().is_some() {
        remote_load_child();
        return;
    }
    if !softhsm::tools_present(TEST, true) {
        return;
    }
    let mut sc = Scenario::create();
    sc.soft().init_token("soft2");
    sc.soft().init_token("soft3");
    let sock = sc.dir.join("p11kit.sock");
    let mut server = P11KitServer::start(sc.soft(), "soft3", &sock);
    sc.set_env("P11_KIT_SERVER_ADDRESS", &P11KitServer::address(&sock));
    let module = sc.soft().module.clone();
    let client = softhsm::p11kit_client().expect("p11-kit-client.so");
    let m2 = sc.member_env("soft2", &module, "token_label = \"soft2\"");
    // p11-kit 0.24's RPC carries no key-wrap mechanism: the remote member takes copies
    // of keys as values over the (local) socket.
    let m3 = sc.member_env(
        "soft3",
        &client,
        "token_label = \"soft3\"\naccept_plaintext_keys = true",
    );
    sc.write_config(&[embedded("hsm1"), m2, m3]);
    sc.init();
    let rows = sc.list();
    assert_all_hold(&rows, &sc.ids, 0);
    assert_eq!(row(&rows, "soft3").kind, "pkcs11");

    let mut child = sc.spawn_child(TEST, "load");
    child.wait("the load", LIMIT, || sc.marked("loading"));
    std::thread::sleep(Duration::from_secs(1));
    server.kill();
    sc.mark("killed");
    child.wait(
        "a key made during the outage",
        Duration::from_secs(30),
        || sc.marked("made"),
    );
    let server = P11KitServer::start(sc.soft(), "soft3", &sock);
    sc.mark("restarted");
    child.finish();

    let rows = sc.list();
    assert_all_hold(&rows, &sc.ids, 3);
    // On the tokens themselves (SoftHSM2 directly, not through p11-kit).
    let k2 = cks_keys(&sc.soft().objects("soft2"));
    let k3 = cks_keys(&sc.soft().objects("soft3"));
    assert_eq!(k3.len(), 3, "soft3: {k3:#?}");
    assert_eq!(
        sorted_labels(&k2),
        sorted_labels(&k3),
        "the remote token misses keys the local one holds"
    );
    drop(server);
}

// ---- 3. a degraded start ----------------------------------------------------------------------

/// For the "degraded" child: the phase's tag, and how many keys the good members hold
/// after it.
const TAG: &str = "CKS_EXT_TAG";
const KEYS: &str = "CKS_EXT_KEYS";

/// Child phase "degraded": the key store opens with `member2` broken; keys are made and
/// used on the two good members.
fn degraded_child() {
    let tag = std::env::var(TAG).expect("tag");
    let keys: usize = std::env::var(KEYS).expect("keys").parse().expect("number");
    let m = Module::load();
    let s = m.login();
    let aes = make_aes(&s, &format!("{tag}-aes"))
        .unwrap_or_else(|e| panic!("generate an AES-256 token key ({tag}): {e:?}"));
    let ec = make_ec(&s, &format!("{tag}-ec"));
    for i in 0..20 {
        let msg = format!("{tag} #{i}");
        ec_sign(&s, &ec, msg.as_bytes()).unwrap();
        gcm_round_trip(&s, aes, msg.as_bytes()).unwrap();
    }
    let sig = ec_sign(&s, &ec, b"verified by the module").unwrap();
    s.verify(
        &Mechanism::EcdsaSha256,
        ec.public,
        b"verified by the module",
        &sig,
    )
    .expect("C_Verify");
    let rows = m.sc.list();
    for id in ["hsm1", "soft1"] {
        let r = row(&rows, id);
        assert!(r.healthy && r.keys == keys, "{id}: {rows:#?}");
    }
    assert!(!row(&rows, "member2").healthy, "{rows:#?}");
    drop(s);
    m.finalize();
    println!("CHILD-OK");
}

/// An embedded instance and two SoftHSM2 tokens, initialised while all worked. Then, in
/// turn, `member2` gets a wrong backend PIN, a module path that does not exist, and a
/// token label no token has. Each time the key store still opens: `cks hsm list` shows
/// `member2` unhealthy, the log names it and the cause, and keys are made and used on the
/// other two (a majority). With the configuration fixed, `cks hsm sync` brings it up to
/// date.
#[test]
fn degraded_start_reports_a_broken_member_and_the_rest_serve() {
    const TEST: &str = "degraded_start_reports_a_broken_member_and_the_rest_serve";
    if child_phase().is_some() {
        degraded_child();
        return;
    }
    if !softhsm::tools_present(TEST, false) {
        return;
    }
    let mut sc = Scenario::create();
    for t in ["soft1", "soft2"] {
        sc.soft().init_token(t);
    }
    let module = sc.soft().module.clone();
    let hsm1 = embedded("hsm1");
    let soft1 = sc.member_env("soft1", &module, "token_label = \"soft1\"");
    let member2 = sc.member_env("member2", &module, "token_label = \"soft2\"");
    sc.write_config(&[hsm1.clone(), soft1.clone(), member2.clone()]);
    sc.init();
    assert_all_hold(&sc.list(), &sc.ids, 0);

    let pin = pin_var("member2", false);
    let missing = sc.dir.join("no-such-dir/libmissing-pkcs11.so");
    let no_module = sc.member_env("member2", &missing, "token_label = \"soft2\"");
    let no_token = sc.member_env("member2", &module, "token_label = \"no-such-token\"");
    let cases = [
        (
            "wrong-pin",
            member2.clone(),
            "wrong-pin-9999",
            &["wrong pin", "pin_incorrect", "pin incorrect"][..],
        ),
        (
            "no-module",
            no_module,
            SOFT_PIN,
            &["not found", "no such file"][..],
        ),
        (
            "no-token",
            no_token,
            SOFT_PIN,
            &["no token labelled", "no token"][..],
        ),
    ];
    for (n, (tag, broken, pin_value, causes)) in cases.iter().enumerate() {
        sc.write_config(&[hsm1.clone(), soft1.clone(), broken.clone()]);
        sc.set_env(&pin, pin_value);
        let rows = sc.list();
        eprintln!(
            "{TEST}/{tag}: {}",
            rows.iter()
                .map(|r| format!("{}: healthy={} {}", r.id, r.healthy, r.state))
                .collect::<Vec<_>>()
                .join("; ")
        );
        for id in ["hsm1", "soft1"] {
            assert!(row(&rows, id).healthy, "{tag}: {id}: {rows:#?}");
        }
        assert!(
            !row(&rows, "member2").healthy,
            "{tag}: member2 listed healthy: {rows:#?}"
        );

        let _ = std::fs::remove_file(sc.log_path());
        let keys = (2 * (n + 1)).to_string();
        sc.child(TEST, "degraded", &[(TAG, tag), (KEYS, &keys)]);
        let log = std::fs::read_to_string(sc.log_path()).unwrap_or_default();
        let named = log.lines().any(|l| {
            let lower = l.to_ascii_lowercase();
            l.contains("member2") && causes.iter().any(|c| lower.contains(c))
        });
        assert!(
            named,
            "{tag}: no log line names member2 and the cause ({causes:?}); {}:\n{log}",
            sc.log_path().display()
        );
    }

    // Fixed: sync copies the six keys to member2.
    sc.write_config(&[hsm1, soft1, member2]);
    sc.set_env(&pin, SOFT_PIN);
    let o = sc.cks_env(&["hsm", "sync"], &[("CKS_PIN", USER_PIN)]);
    assert!(o.ok(), "cks hsm sync after the fix:\n{}", o.text());
    assert_all_hold(&sc.list(), &sc.ids, 6);
    let k1 = cks_keys(&sc.soft().objects("soft1"));
    let k2 = cks_keys(&sc.soft().objects("soft2"));
    assert_eq!(k2.len(), 6, "soft2 after the sync: {k2:#?}");
    assert_eq!(sorted_labels(&k1), sorted_labels(&k2));
}
