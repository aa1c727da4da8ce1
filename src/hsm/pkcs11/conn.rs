//! Reaching a PKCS#11 module: one loaded, initialised copy per module per process, the
//! token found by label or serial, and a pool of read/write sessions logged in once.

use crate::error::{Error, Result};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use pkcs11_sys::*;
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use uuid::Uuid;
use zeroize::Zeroizing;

/// Where a PIN is read from (never the configuration file itself).
#[derive(Clone, Debug)]
pub enum PinSource {
    Env(String),
    File(PathBuf),
}

impl PinSource {
    pub fn read(&self, instance: &str, what: &str) -> Result<Zeroizing<String>> {
        let pin = match self {
            PinSource::Env(var) => Zeroizing::new(std::env::var(var).map_err(|_| {
                Error::device(format!(
                    "instance {instance}: the {what} is not set (environment variable {var})"
                ))
            })?),
            PinSource::File(path) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    Error::device(format!(
                        "instance {instance}: cannot read the {what} from {}: {e}",
                        path.display()
                    ))
                })?);
                Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_string())
            }
        };
        Ok(pin)
    }
}

/// Which token of the module.
#[derive(Clone, Debug)]
pub enum TokenRef {
    Label(String),
    Serial(String),
}

impl std::fmt::Display for TokenRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenRef::Label(l) => write!(f, "token labelled {l:?}"),
            TokenRef::Serial(s) => write!(f, "token with serial {s:?}"),
        }
    }
}

/// Modules loaded by this process. A module is initialised once per process, however
/// many members use it (two tokens of one SoftHSM2, say).
/// Each module and the process that initialised it (0: none). A child process after
/// fork() must initialise a module again before using it.
static MODULES: Lazy<Mutex<HashMap<PathBuf, Loaded>>> = Lazy::new(Default::default);

struct Loaded {
    pkcs11: Pkcs11,
    /// The process that initialised it (0: none).
    by: u32,
    gate: Gate,
}

/// Every call into a module holds its gate shared; initialising the module again holds
/// it exclusively. (C_Finalize while other threads are inside the module is undefined:
/// p11-kit's client aborts the process.)
pub type Gate = std::sync::Arc<parking_lot::RwLock<()>>;

/// Members using each module. A module is initialised again (to reconnect) only
/// when one member uses it: doing so ends every other user's sessions.
static MODULE_USERS: Lazy<Mutex<HashMap<PathBuf, HashSet<String>>>> = Lazy::new(Default::default);

pub fn register_user(path: &Path, instance: &str) {
    MODULE_USERS
        .lock()
        .entry(path.to_path_buf())
        .or_default()
        .insert(instance.to_string());
}

/// PINs a token refused, remembered so that retries (the health probe runs every
/// second) cannot lock the token's PIN: only a changed PIN is tried again.
static REFUSED_PINS: Lazy<Mutex<HashSet<[u8; 32]>>> = Lazy::new(Default::default);

fn pin_fingerprint(module: &Path, token: &TokenRef, pin: &str) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(module.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(token.to_string().as_bytes());
    h.update([0]);
    h.update(pin.as_bytes());
    h.finalize().into()
}

fn module(instance: &str, path: &Path, reinitialise: bool) -> Result<(Pkcs11, Gate)> {
    let mut modules = MODULES.lock();
    let me = std::process::id();
    if let Some(l) = modules.get_mut(path) {
        let shared = MODULE_USERS.lock().get(path).is_some_and(|u| u.len() > 1);
        if l.by == me && (!reinitialise || shared) {
            return Ok((l.pkcs11.clone(), l.gate.clone()));
        }
        // A module whose far end went away (p11-kit's client after its server
        // restarted) connects again only when initialised again: once no call is
        // inside it.
        let _alone = l.gate.write();
        if l.by == me {
            let _ = l.pkcs11.clone().finalize();
        }
        l.by = 0;
        initialise(instance, path, &l.pkcs11)?;
        l.by = me;
        return Ok((l.pkcs11.clone(), l.gate.clone()));
    }
    if !path.exists() {
        return Err(Error::device(format!(
            "instance {instance}: module {} not found",
            path.display()
        )));
    }
    let m = Pkcs11::new(path).map_err(|e| {
        Error::device(format!(
            "instance {instance}: cannot load module {}: {e}",
            path.display()
        ))
    })?;
    initialise(instance, path, &m)?;
    let gate = Gate::default();
    modules.insert(
        path.to_path_buf(),
        Loaded {
            pkcs11: m.clone(),
            by: me,
            gate: gate.clone(),
        },
    );
    Ok((m, gate))
}

fn initialise(instance: &str, path: &Path, m: &Pkcs11) -> Result<()> {
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(Error::device(format!(
            "instance {instance}: module {} failed to initialise: {e}",
            path.display()
        ))),
    }
}

/// A live connection to the member's token.
pub struct Conn {
    pub pkcs11: Pkcs11,
    pub slot: Slot,
    idle: Mutex<Vec<Session>>,
    /// Backend handles of keys by object id (valid for this connection only).
    pub handles: Mutex<HashMap<Uuid, ObjectHandle>>,
    /// Mechanisms the module offers for the token (as it reports them: p11-kit's
    /// remoting leaves out those its RPC cannot carry).
    pub mechanisms: HashSet<CK_MECHANISM_TYPE>,
    pub gate: Gate,
}

impl Drop for Conn {
    /// Closing the pooled sessions calls into the module.
    fn drop(&mut self) {
        let _in = self.gate.read_recursive();
        self.idle.get_mut().clear();
    }
}

/// Most sessions kept open while idle; more are opened under load and closed after.
const MAX_IDLE: usize = 16;

impl Conn {
    pub fn open(
        instance: &str,
        path: &Path,
        token: &TokenRef,
        pin: &PinSource,
        reinitialise: bool,
    ) -> Result<Conn> {
        let (pkcs11, gate) = module(instance, path, reinitialise)?;
        let _in = gate.read_recursive();
        let slot = find_slot(instance, &pkcs11, token)?;
        let mechanisms = pkcs11
            .get_mechanism_list(slot)
            .map_err(|e| backend_error(instance, "C_GetMechanismList", e))?
            .into_iter()
            .map(CK_MECHANISM_TYPE::from)
            .collect();
        let conn = Conn {
            pkcs11,
            slot,
            idle: Mutex::new(Vec::new()),
            handles: Mutex::new(HashMap::new()),
            mechanisms,
            gate: gate.clone(),
        };
        let s = conn.open_session(instance)?;
        let pin = pin.read(instance, "user PIN")?;
        let fp = pin_fingerprint(path, token, &pin);
        if REFUSED_PINS.lock().contains(&fp) {
            return Err(Error::device(format!(
                "instance {instance}: wrong PIN for the {token} (refused before; not tried \
                 again until the PIN changes)"
            )));
        }
        match s.login(UserType::User, Some(&AuthPin::new(pin.as_str().into()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(rv @ (RvError::PinIncorrect | RvError::PinLocked), _)) => {
                REFUSED_PINS.lock().insert(fp);
                return Err(Error::device(format!(
                    "instance {instance}: wrong PIN for the {token} ({})",
                    rv_name(rv)
                )));
            }
            Err(e) => {
                return Err(Error::device(format!(
                    "instance {instance}: login to the {token} failed: {e}"
                )))
            }
        }
        conn.idle.lock().push(s);
        Ok(conn)
    }

    fn open_session(&self, instance: &str) -> Result<Session> {
        self.pkcs11
            .open_rw_session(self.slot)
            .map_err(|e| backend_error(instance, "C_OpenSession", e))
    }

    /// A session of the pool (or a new one: login is per token, so it is logged in).
    pub fn take(&self, instance: &str) -> Result<Session> {
        if let Some(s) = self.idle.lock().pop() {
            return Ok(s);
        }
        self.open_session(instance)
    }

    pub fn give_back(&self, s: Session) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(s);
        } else {
            drop(idle);
            self.discard(s);
        }
    }

    /// Close a session (inside the gate: closing calls into the module).
    pub fn discard(&self, s: Session) {
        let _in = self.gate.read_recursive();
        drop(s);
    }

    /// Log in as the token's SO for `f` (the user is logged out meanwhile: a token has
    /// one login state per application), then as the user again.
    pub fn as_so<T>(
        &self,
        instance: &str,
        so_pin: &str,
        user_pin: &str,
        f: impl FnOnce(&Session) -> Result<T>,
    ) -> Result<T> {
        let _in = self.gate.read_recursive();
        let s = self.take(instance)?;
        let _ = s.logout();
        s.login(UserType::So, Some(&AuthPin::new(so_pin.into())))
            .map_err(|e| {
                Error::device(format!(
                    "instance {instance}: SO login failed ({e}); the domain key can only be \
                     installed by the token's SO"
                ))
            })?;
        let r = f(&s);
        let _ = s.logout();
        s.login(UserType::User, Some(&AuthPin::new(user_pin.into())))
            .map_err(|e| backend_error(instance, "C_Login", e))?;
        self.give_back(s);
        r
    }
}

fn find_slot(instance: &str, pkcs11: &Pkcs11, token: &TokenRef) -> Result<Slot> {
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| backend_error(instance, "C_GetSlotList", e))?;
    let mut seen = Vec::new();
    for slot in slots {
        let Ok(info) = pkcs11.get_token_info(slot) else {
            continue;
        };
        let label = info.label().trim_end().to_string();
        let serial = info.serial_number().trim_end().to_string();
        let hit = match token {
            TokenRef::Label(l) => label == *l,
            TokenRef::Serial(s) => serial == *s,
        };
        if hit {
            return Ok(slot);
        }
        seen.push(format!("{label:?} (serial {serial})"));
    }
    Err(Error::device(format!(
        "instance {instance}: no {token} (the module has: {})",
        if seen.is_empty() {
            "no token".to_string()
        } else {
            seen.join(", ")
        }
    )))
}

/// Backend errors that mean the sessions are gone (the backend restarted, the
/// connection dropped): worth one reconnect and a retry.
pub fn sessions_vanished(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::CryptokiNotInitialized
                | RvError::UserNotLoggedIn
                | RvError::GeneralError,
            _
        )
    )
}

/// A backend error as ours: the caller's mistakes keep their code; anything about the
/// device becomes `CKR_DEVICE_ERROR` (the cluster moves the call elsewhere).
pub fn backend_error(instance: &str, what: &str, e: CkError) -> Error {
    let rv = match &e {
        // Backends answer some bad requests with CKR_GENERAL_ERROR (SoftHSM2 does for an
        // empty ciphertext); it still fails after a reconnect, so it is the request's,
        // and a device really gone is found by the health probe.
        CkError::Pkcs11(RvError::GeneralError, _) => CKR_FUNCTION_FAILED,
        CkError::Pkcs11(rv, _) => caller_rv(*rv).unwrap_or(CKR_DEVICE_ERROR),
        _ => CKR_DEVICE_ERROR,
    };
    Error::new(rv, format!("instance {instance}: {what}: {e}"))
}

/// Return codes that describe the request rather than the device.
fn caller_rv(rv: RvError) -> Option<CK_RV> {
    Some(match rv {
        RvError::SignatureInvalid => CKR_SIGNATURE_INVALID,
        RvError::SignatureLenRange => CKR_SIGNATURE_LEN_RANGE,
        RvError::EncryptedDataInvalid => CKR_ENCRYPTED_DATA_INVALID,
        RvError::EncryptedDataLenRange => CKR_ENCRYPTED_DATA_LEN_RANGE,
        RvError::DataInvalid => CKR_DATA_INVALID,
        RvError::DataLenRange => CKR_DATA_LEN_RANGE,
        RvError::KeyHandleInvalid => CKR_KEY_HANDLE_INVALID,
        RvError::MechanismInvalid => CKR_MECHANISM_INVALID,
        RvError::MechanismParamInvalid => CKR_MECHANISM_PARAM_INVALID,
        RvError::KeyTypeInconsistent => CKR_KEY_TYPE_INCONSISTENT,
        RvError::KeyFunctionNotPermitted => CKR_KEY_FUNCTION_NOT_PERMITTED,
        RvError::KeySizeRange => CKR_KEY_SIZE_RANGE,
        RvError::KeyNotWrappable => CKR_KEY_NOT_WRAPPABLE,
        RvError::KeyUnextractable => CKR_KEY_UNEXTRACTABLE,
        RvError::WrappedKeyInvalid => CKR_WRAPPED_KEY_INVALID,
        RvError::WrappedKeyLenRange => CKR_WRAPPED_KEY_LEN_RANGE,
        RvError::TemplateInconsistent => CKR_TEMPLATE_INCONSISTENT,
        RvError::TemplateIncomplete => CKR_TEMPLATE_INCOMPLETE,
        RvError::AttributeValueInvalid => CKR_ATTRIBUTE_VALUE_INVALID,
        RvError::AttributeSensitive => CKR_ATTRIBUTE_SENSITIVE,
        RvError::CurveNotSupported => CKR_CURVE_NOT_SUPPORTED,
        RvError::DomainParamsInvalid => CKR_DOMAIN_PARAMS_INVALID,
        RvError::FunctionNotSupported => CKR_FUNCTION_NOT_SUPPORTED,
        _ => return None,
    })
}

fn rv_name(rv: RvError) -> &'static str {
    match rv {
        RvError::PinIncorrect => "CKR_PIN_INCORRECT",
        RvError::PinLocked => "CKR_PIN_LOCKED",
        _ => "refused",
    }
}

/// The value of one attribute (`None` if the object lacks it or hides it).
pub fn attribute(
    s: &Session,
    h: ObjectHandle,
    t: cryptoki::object::AttributeType,
) -> Option<Attribute> {
    s.get_attributes(h, &[t]).ok()?.into_iter().next()
}
