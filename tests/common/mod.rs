//! Shared helpers for integration tests: they load the built module through `cryptoki`
//! exactly as an application would.
//!
//! One process can initialise the module once, and login state is per process, so each
//! test binary (each file in tests/) gets ONE key store: `ctx()` initialises it on first
//! use, initialises the token, sets the user PIN and logs the user in for good (a
//! session is kept open so the login lasts). Tests that need other login states, PIN
//! failures or a second process spawn a child process (see `run_child`).
#![allow(dead_code)]

pub mod softhsm;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const SO_PIN: &str = "so-pin-1234";
pub const USER_PIN: &str = "user-pin-1234";
pub const LABEL: &str = "cks-test";

/// The built module: next to the test binary's `deps` directory.
pub fn module_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join("libcks_pkcs11.so");
    assert!(p.exists(), "built module not found at {}", p.display());
    p
}

/// Write a configuration for a fresh key store under `dir` (cheap KDF for tests).
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let cfg = dir.join("cks.toml");
    std::fs::write(
        &cfg,
        format!(
            "[keystore]\nlabel = \"{LABEL}\"\ndata_dir = \"{}\"\n{extra}\n[kdf]\nmemory_kib = 64\niterations = 1\n\n[[hsm]]\nid = \"hsm1\"\nkind = \"embedded\"\n",
            dir.join("data").display()
        ),
    )
    .expect("write config");
    cfg
}

pub struct Ctx {
    pub pkcs11: Pkcs11,
    pub slot: Slot,
    pub dir: PathBuf,
    /// Keeps the login alive for the whole process.
    _keeper: std::sync::Mutex<Session>,
}

impl Ctx {
    /// A new read/write session (the user is already logged in).
    pub fn session(&self) -> Session {
        self.pkcs11
            .open_rw_session(self.slot)
            .expect("open session")
    }
}

/// The process-wide initialised module with a fresh, initialised token and the user
/// logged in. `CKS_CONFIG` is set before the module is initialised.
pub fn ctx() -> &'static Ctx {
    static CTX: OnceLock<Ctx> = OnceLock::new();
    CTX.get_or_init(|| {
        let dir = tempdir();
        let cfg = write_config(&dir, "");
        std::env::set_var("CKS_CONFIG", &cfg);
        let pkcs11 = Pkcs11::new(module_path()).expect("load module");
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        let slot = pkcs11.get_all_slots().expect("slots")[0];
        init_token(&pkcs11, slot);
        let keeper = pkcs11.open_rw_session(slot).expect("session");
        keeper
            .login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
            .expect("user login");
        Ctx {
            pkcs11,
            slot,
            dir,
            _keeper: std::sync::Mutex::new(keeper),
        }
    })
}

/// `C_InitToken` + SO login + `C_InitPIN`, as pkcs11-tool does.
pub fn init_token(pkcs11: &Pkcs11, slot: Slot) {
    pkcs11
        .init_token(slot, &AuthPin::new(SO_PIN.into()), LABEL)
        .expect("C_InitToken");
    let s = pkcs11.open_rw_session(slot).expect("session");
    s.login(UserType::So, Some(&AuthPin::new(SO_PIN.into())))
        .expect("SO login");
    s.init_pin(&AuthPin::new(USER_PIN.into()))
        .expect("C_InitPIN");
    s.logout().expect("logout");
}

/// A fresh directory under the system temp dir, kept for the life of the process.
pub fn tempdir() -> PathBuf {
    let d = tempfile::Builder::new()
        .prefix("cks-test-")
        .tempdir()
        .expect("tempdir");
    d.keep()
}

/// Run this test binary again as a child process running only `test_name`, with
/// `envs` set; returns (success, stdout+stderr). The child decides what to do by
/// reading an env var such as `CKS_TEST_CHILD`.
pub fn run_child(test_name: &str, envs: &[(&str, &str)]) -> (bool, String) {
    let exe = std::env::current_exe().expect("exe");
    let out = std::process::Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .envs(envs.iter().copied())
        .output()
        .expect("spawn child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// One instance as `cks hsm list --json` prints it.
#[derive(Debug, serde::Deserialize)]
pub struct HsmRow {
    pub id: String,
    pub kind: String,
    pub path: String,
    pub healthy: bool,
    pub keys: usize,
    pub in_flight: u64,
    pub ops: u64,
    pub errors: u64,
    pub state: String,
}

/// The row of instance `id`.
pub fn hsm_row<'a>(rows: &'a [HsmRow], id: &str) -> &'a HsmRow {
    rows.iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no instance {id} in {rows:#?}"))
}
