//! Loading a PKCS#11 module through cryptoki, finding its slot, logging in,
//! and naming PKCS#11 errors by their `CKR_` codes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::Attribute;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// `CKR_ATTRIBUTE_SENSITIVE`-style name of a PKCS#11 return value.
pub fn rv_name(rv: &RvError) -> String {
    match rv {
        RvError::VendorDefined(v) => format!("CKR_VENDOR_DEFINED(0x{v:08x})"),
        RvError::UnknownErrorCode(v) => format!("CKR_0x{v:08x}"),
        other => {
            // cryptoki's variants are the CKR_ names in CamelCase.
            let camel = format!("{other:?}");
            let mut out = String::from("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
    }
}

/// A cryptoki error as "C_Function: CKR_CODE" (or cryptoki's own text).
pub fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("C_{f:?}: {}", rv_name(rv)),
        other => other.to_string(),
    }
}

/// True if the error is the given PKCS#11 return value.
pub fn is_rv(e: &CkError, rv: RvError) -> bool {
    matches!(e, CkError::Pkcs11(got, _) if *got == rv)
}

/// Loads a module and calls C_Initialize with OS locking.
/// Returns the context and whether this call initialised it (false when the
/// same library was already initialised in this process).
pub fn load_module(path: &Path) -> Result<(Pkcs11, bool), String> {
    let ctx = Pkcs11::new(path).map_err(|e| format!("loading {}: {e}", path.display()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => Ok((ctx, true)),
        Err(e) if is_rv(&e, RvError::CryptokiAlreadyInitialized) => Ok((ctx, false)),
        Err(e) => Err(format!("{}: {}", path.display(), describe(&e))),
    }
}

/// The slot whose token has the given label, or else the first slot with an
/// initialized token. Returns the slot and its token label.
pub fn find_slot(ctx: &Pkcs11, slot_label: Option<&str>) -> Result<(Slot, String), String> {
    let slots = ctx.get_slots_with_token().map_err(|e| describe(&e))?;
    let mut seen = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let label = info.label().trim().to_string();
        let wanted = match slot_label {
            Some(l) => l == label,
            None => info.token_initialized(),
        };
        if wanted {
            return Ok((slot, label));
        }
        seen.push(label);
    }
    Err(match slot_label {
        Some(l) => format!("no token labelled {l:?} (tokens: {seen:?})"),
        None => "no slot with an initialized token".to_string(),
    })
}

/// A loaded module with a chosen slot and the user PIN.
pub struct Module {
    /// Short id used in tables and JSON ("A", "B").
    pub id: String,
    pub path: PathBuf,
    pub ctx: Pkcs11,
    pub slot: Slot,
    pub token_label: String,
    /// Library manufacturer and description from C_GetInfo.
    pub library: String,
    pin: AuthPin,
    initialized_here: bool,
    /// Time of loading the library and C_Initialize.
    init_time: Duration,
    /// This process's resident memory before the library was loaded.
    rss_before: Option<u64>,
}

/// This process's resident memory (`VmRSS` in /proc/self/status), in bytes.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What opening the token cost: the figures behind "opening the store and logging
/// in", measured once per module before anything else is made.
pub struct Startup {
    pub init: Duration,
    pub login: Duration,
    pub first_find: Duration,
    pub objects: usize,
    pub rss_growth: Option<u64>,
    /// The session that logged in: kept open so that the login stays (closing the
    /// last session logs out).
    pub _session: Session,
}

impl Startup {
    pub fn describe(&self) -> String {
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
        let mut s = format!(
            "start-up: C_Initialize {}, C_OpenSession + C_Login {}, first C_FindObjects {} \
             (the token then shows {} objects)",
            ms(self.init),
            ms(self.login),
            ms(self.first_find),
            self.objects
        );
        if let Some(b) = self.rss_growth {
            s.push_str(&format!(
                "; resident memory +{:.1} MiB from loading the library to here",
                b as f64 / (1024.0 * 1024.0)
            ));
        }
        s
    }
}

impl Module {
    pub fn open(
        id: &str,
        path: &Path,
        slot_label: Option<&str>,
        pin: &str,
    ) -> Result<Module, String> {
        let rss_before = rss_bytes();
        let t0 = Instant::now();
        let (ctx, initialized_here) = load_module(path)?;
        let init_time = t0.elapsed();
        let (slot, token_label) = match find_slot(&ctx, slot_label) {
            Ok(found) => found,
            Err(e) => {
                if initialized_here {
                    let _ = ctx.finalize();
                }
                return Err(format!("{}: {e}", path.display()));
            }
        };
        let library = match ctx.get_library_info() {
            Ok(info) => format!(
                "{} {} {}",
                info.manufacturer_id().trim(),
                info.library_description().trim(),
                info.library_version()
            ),
            Err(_) => String::new(),
        };
        Ok(Module {
            id: id.to_string(),
            path: path.to_path_buf(),
            ctx,
            slot,
            token_label,
            library,
            pin: AuthPin::from(pin.to_string()),
            initialized_here,
            init_time,
            rss_before,
        })
    }

    /// Log in and search once (a module may read its objects then), timed; and how
    /// much resident memory the module took from loading until then. Call before any
    /// other session of this module.
    pub fn startup(&self) -> Result<Startup, String> {
        let t0 = Instant::now();
        let session = self
            .user_session()
            .map_err(|e| format!("session/login: {}", describe(&e)))?;
        let login = t0.elapsed();
        let t1 = Instant::now();
        let label = Attribute::Label(b"cks-bench-no-such-label".to_vec());
        session
            .find_objects(&[label])
            .map_err(|e| format!("first search: {}", describe(&e)))?;
        let first_find = t1.elapsed();
        let rss_growth = match (self.rss_before, rss_bytes()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let found = session
            .find_objects(&[])
            .map_err(|e| format!("listing the objects: {}", describe(&e)))?;
        Ok(Startup {
            init: self.init_time,
            login,
            first_find,
            objects: found.len(),
            rss_growth,
            _session: session,
        })
    }

    /// Opens an RW session and logs the user in (already logged in is fine:
    /// login state is per application).
    pub fn user_session(&self) -> Result<Session, CkError> {
        let session = self.ctx.open_rw_session(self.slot)?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) => Ok(session),
            Err(e) if is_rv(&e, RvError::UserAlreadyLoggedIn) => Ok(session),
            Err(e) => Err(e),
        }
    }

    /// C_Finalize, if this module was initialised by us.
    pub fn finalize(self) {
        if self.initialized_here {
            if let Err(e) = self.ctx.finalize() {
                eprintln!("warning: {}: {}", self.path.display(), describe(&e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            rv_name(&RvError::AttributeSensitive),
            "CKR_ATTRIBUTE_SENSITIVE"
        );
        assert_eq!(
            rv_name(&RvError::UserAlreadyLoggedIn),
            "CKR_USER_ALREADY_LOGGED_IN"
        );
    }
}
