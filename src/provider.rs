//! Everything alive from `C_Initialize` to `C_Finalize`, in one value. Reading it is
//! lock-free (one atomic load), so no call can deadlock on it — not even a re-entrant
//! `C_Initialize` from a host's configuration loader. After `fork()` the child sees
//! the library as not initialised until it calls `C_Initialize` itself.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::keystore::HealthThread;
use crate::token::Token;
use arc_swap::ArcSwapOption;
use once_cell::sync::OnceCell;
use parking_lot::Mutex;
use pkcs11_sys::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The slot id of the key store's token.
pub const SLOT_ID: CK_SLOT_ID = 0;

pub struct Provider {
    fork_generation: u64,
    pub config: Config,
    pub token: Token,
    health: Mutex<Option<HealthThread>>,
    /// Set when a panic was caught: the state may be half-changed, so refuse work
    /// until `C_Finalize`.
    poisoned: AtomicBool,
}

static PROVIDER: ArcSwapOption<Provider> = ArcSwapOption::const_empty();
static INIT_LOCK: Mutex<()> = Mutex::new(());
/// Incremented in the child after every `fork()` (see `ffi::register_fork_handler`).
pub static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Run `f` with the live provider. The provider is borrowed through arc-swap's guard,
/// so the hot path touches no shared reference count.
pub fn with<R>(f: impl FnOnce(&Provider) -> Result<R>) -> Result<R> {
    let guard = PROVIDER.load();
    match &*guard {
        Some(p) if p.fork_generation == FORK_GENERATION.load(Ordering::Relaxed) => {
            if p.poisoned.load(Ordering::Relaxed) {
                return Err(Error::general(
                    "an internal error occurred earlier; call C_Finalize",
                ));
            }
            f(p)
        }
        _ => Err(Error::new(
            CKR_CRYPTOKI_NOT_INITIALIZED,
            "call C_Initialize first",
        )),
    }
}

/// `can_create_threads`: false when the application said `CKF_LIBRARY_CANT_CREATE_OS_THREADS`;
/// then health probes and repairs happen only at login.
pub fn initialize(can_create_threads: bool) -> Result<()> {
    let _g = INIT_LOCK.lock();
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    if let Some(p) = &*PROVIDER.load() {
        if p.fork_generation == generation {
            return Err(Error::new(
                CKR_CRYPTOKI_ALREADY_INITIALIZED,
                "already initialised",
            ));
        }
    }
    let config = Config::load().map_err(|e| {
        init_logging(None);
        tracing::error!("{e}");
        Error::new(CKR_GENERAL_ERROR, e.to_string())
    })?;
    init_logging(Some(&config));
    let token = Token::open(&config).map_err(|e| {
        tracing::error!("cannot open the key store: {e}");
        Error::new(CKR_FUNCTION_FAILED, e.msg)
    })?;
    // Deletions that fell due while no process was running happen now.
    token.keystore().run_due();
    let health = if can_create_threads {
        HealthThread::start(Arc::downgrade(token.keystore()))
    } else {
        None
    };
    let provider = Arc::new(Provider {
        fork_generation: generation,
        config,
        token,
        health: Mutex::new(health),
        poisoned: AtomicBool::new(false),
    });
    if let Some(old) = PROVIDER.swap(Some(provider)) {
        // The parent's state, inherited through fork(): its locks and database handles
        // belong to the parent. Never run its destructors here.
        std::mem::forget(old);
    }
    tracing::debug!("initialised");
    Ok(())
}

pub fn finalize() -> Result<()> {
    let _g = INIT_LOCK.lock();
    get_unpoisoned()?;
    if let Some(p) = PROVIDER.swap(None) {
        p.token.close_all_sessions();
        if let Some(mut h) = p.health.lock().take() {
            h.stop();
        }
        crate::cluster::metrics::remove(p.token.keystore().metrics_dir());
    }
    Ok(())
}

fn get_unpoisoned() -> Result<()> {
    match &*PROVIDER.load() {
        Some(p) if p.fork_generation == FORK_GENERATION.load(Ordering::Relaxed) => Ok(()),
        _ => Err(Error::new(
            CKR_CRYPTOKI_NOT_INITIALIZED,
            "call C_Initialize first",
        )),
    }
}

/// Record a caught panic.
pub fn poison() {
    if let Some(p) = &*PROVIDER.load() {
        p.poisoned.store(true, Ordering::Relaxed);
    }
}

/// `CKS_LOG` (or the configuration's `[log]`) turns logging on; by default nothing is
/// written anywhere. Installed once per process, and only if the host has no subscriber.
fn init_logging(config: Option<&Config>) {
    static DONE: OnceCell<()> = OnceCell::new();
    DONE.get_or_init(|| {
        let filter = std::env::var("CKS_LOG")
            .ok()
            .filter(|f| !f.is_empty())
            .or_else(|| config.and_then(|c| c.log.filter.clone()));
        let Some(filter) = filter else { return };
        // cryptoki (used to reach pkcs11 members) reports each mechanism type it does
        // not know as an error: noise, not a problem of ours.
        let env_filter = tracing_subscriber::EnvFilter::new(format!("{filter},cryptoki=off"));
        let file = config.and_then(|c| c.log.file.clone()).or_else(|| {
            std::env::var_os("CKS_LOG_FILE")
                .filter(|f| !f.is_empty())
                .map(Into::into)
        });
        let builder = tracing_subscriber::fmt()
            .with_env_filter(env_filter)
            .with_ansi(false);
        let _ = match file.and_then(|f| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .ok()
        }) {
            Some(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
            None => builder.with_writer(std::io::stderr).try_init(),
        };
    });
}
