//! General-purpose, slot and token functions (PKCS#11 v2.40 §5.4–5.5).

use super::args::{out_capacity, out_ref, pad, pin, unpad};
use super::{check_slot, guard, register_fork_handler, with_provider};
use crate::error::Error;
use crate::provider::{self, SLOT_ID};
use crate::token::mechanisms::{self, MECHANISMS};
use pkcs11_sys::*;

const MANUFACTURER: &str = "cks";

fn version() -> CK_VERSION {
    let minor = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0);
    let major = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0);
    CK_VERSION { major, minor }
}

/// # Safety
/// `args` must be NULL or point to a `CK_C_INITIALIZE_ARGS`.
#[no_mangle]
pub unsafe extern "C" fn C_Initialize(args: CK_VOID_PTR) -> CK_RV {
    guard("C_Initialize", || {
        register_fork_handler();
        let mut can_create_threads = true;
        if let Some(a) = (args as *const CK_C_INITIALIZE_ARGS).as_ref() {
            can_create_threads = a.flags & CKF_LIBRARY_CANT_CREATE_OS_THREADS == 0;
            if !a.pReserved.is_null() {
                return Err(Error::args("pReserved must be NULL"));
            }
            let given = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            if given.iter().any(|g| *g) && !given.iter().all(|g| *g) {
                return Err(Error::args("give all four mutex functions or none"));
            }
            // Mutex functions without CKF_OS_LOCKING_OK: we only lock with the OS's
            // primitives, so we cannot honour the application's.
            if given[0] && a.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(Error::new(CKR_CANT_LOCK, "only OS locking is supported"));
            }
        }
        provider::initialize(can_create_threads)?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// `reserved` must be NULL.
#[no_mangle]
pub unsafe extern "C" fn C_Finalize(reserved: CK_VOID_PTR) -> CK_RV {
    guard("C_Finalize", || {
        if !reserved.is_null() {
            return Err(Error::args("pReserved must be NULL"));
        }
        provider::finalize()?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// `info` must point to a writable `CK_INFO`.
#[no_mangle]
pub unsafe extern "C" fn C_GetInfo(info: CK_INFO_PTR) -> CK_RV {
    with_provider("C_GetInfo", |_| {
        let info = out_ref(info)?;
        info.cryptokiVersion = CK_VERSION {
            major: 2,
            minor: 40,
        };
        pad(&mut info.manufacturerID, MANUFACTURER);
        info.flags = 0;
        pad(&mut info.libraryDescription, "cks custom key store");
        info.libraryVersion = version();
        Ok(CKR_OK)
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_GetSlotList(
    token_present: CK_BBOOL,
    list: CK_SLOT_ID_PTR,
    count: CK_ULONG_PTR,
) -> CK_RV {
    with_provider("C_GetSlotList", |p| {
        if count.is_null() {
            return Err(Error::args("NULL count"));
        }
        // A disconnected key store leaves its slot empty.
        let n: CK_ULONG = if token_present != 0 && p.token.check_present().is_err() {
            0
        } else {
            1
        };
        if list.is_null() || n == 0 {
            *count = n;
            return Ok(CKR_OK);
        }
        if *count < n {
            *count = n;
            return Ok(CKR_BUFFER_TOO_SMALL);
        }
        *list = SLOT_ID;
        *count = n;
        Ok(CKR_OK)
    })
}

/// # Safety
/// `info` must point to a writable `CK_SLOT_INFO`.
#[no_mangle]
pub unsafe extern "C" fn C_GetSlotInfo(slot: CK_SLOT_ID, info: CK_SLOT_INFO_PTR) -> CK_RV {
    with_provider("C_GetSlotInfo", |p| {
        check_slot(slot)?;
        let info = out_ref(info)?;
        pad(
            &mut info.slotDescription,
            &format!("cks key store {}", p.config.keystore.label),
        );
        pad(&mut info.manufacturerID, MANUFACTURER);
        info.flags = if p.token.check_present().is_ok() {
            CKF_TOKEN_PRESENT
        } else {
            0
        };
        info.hardwareVersion = version();
        info.firmwareVersion = version();
        Ok(CKR_OK)
    })
}

/// # Safety
/// `info` must point to a writable `CK_TOKEN_INFO`.
#[no_mangle]
pub unsafe extern "C" fn C_GetTokenInfo(slot: CK_SLOT_ID, info: CK_TOKEN_INFO_PTR) -> CK_RV {
    with_provider("C_GetTokenInfo", |p| {
        check_slot(slot)?;
        let out = out_ref(info)?;
        let t = p.token.info()?;
        pad(&mut out.label, &t.label);
        pad(&mut out.manufacturerID, MANUFACTURER);
        pad(&mut out.model, "cks cluster");
        pad(&mut out.serialNumber, &t.serial);
        out.flags = t.flags;
        out.ulMaxSessionCount = CK_EFFECTIVELY_INFINITE;
        out.ulSessionCount = t.session_count as CK_ULONG;
        out.ulMaxRwSessionCount = CK_EFFECTIVELY_INFINITE;
        out.ulRwSessionCount = t.rw_session_count as CK_ULONG;
        out.ulMaxPinLen = crate::token::MAX_PIN_LEN as CK_ULONG;
        out.ulMinPinLen = crate::token::MIN_PIN_LEN as CK_ULONG;
        out.ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
        out.ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
        out.ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
        out.ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
        out.hardwareVersion = version();
        out.firmwareVersion = version();
        // No clock on the token: the field is blank (CKF_CLOCK_ON_TOKEN is not set).
        out.utcTime = [b' '; 16];
        Ok(CKR_OK)
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_GetMechanismList(
    slot: CK_SLOT_ID,
    list: CK_MECHANISM_TYPE_PTR,
    count: CK_ULONG_PTR,
) -> CK_RV {
    with_provider("C_GetMechanismList", |_| {
        check_slot(slot)?;
        let cap = out_capacity(list as *const u8, count)?;
        let n = MECHANISMS.len();
        match cap {
            None => {
                *count = n as CK_ULONG;
                Ok(CKR_OK)
            }
            Some(c) if c < n => {
                *count = n as CK_ULONG;
                Ok(CKR_BUFFER_TOO_SMALL)
            }
            Some(_) => {
                let out = std::slice::from_raw_parts_mut(list, n);
                for (o, m) in out.iter_mut().zip(MECHANISMS) {
                    *o = m.mech;
                }
                *count = n as CK_ULONG;
                Ok(CKR_OK)
            }
        }
    })
}

/// # Safety
/// `info` must point to a writable `CK_MECHANISM_INFO`.
#[no_mangle]
pub unsafe extern "C" fn C_GetMechanismInfo(
    slot: CK_SLOT_ID,
    mech: CK_MECHANISM_TYPE,
    info: CK_MECHANISM_INFO_PTR,
) -> CK_RV {
    with_provider("C_GetMechanismInfo", |_| {
        check_slot(slot)?;
        let out = out_ref(info)?;
        let m = mechanisms::info(mech)
            .ok_or_else(|| Error::mech_invalid(format!("mechanism 0x{mech:x} is not supported")))?;
        out.ulMinKeySize = m.min;
        out.ulMaxKeySize = m.max;
        out.flags = m.flags;
        Ok(CKR_OK)
    })
}

/// # Safety
/// `so_pin` readable for `len` bytes; `label` 32 readable bytes.
#[no_mangle]
pub unsafe extern "C" fn C_InitToken(
    slot: CK_SLOT_ID,
    so_pin: CK_UTF8CHAR_PTR,
    len: CK_ULONG,
    label: CK_UTF8CHAR_PTR,
) -> CK_RV {
    with_provider("C_InitToken", |p| {
        check_slot(slot)?;
        let so_pin = pin(so_pin, len)?;
        if label.is_null() {
            return Err(Error::args("NULL label"));
        }
        let label = unpad(std::slice::from_raw_parts(label, 32));
        p.token.init_token(&so_pin, &label)?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// `new_pin` readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn C_InitPIN(
    h: CK_SESSION_HANDLE,
    new_pin: CK_UTF8CHAR_PTR,
    len: CK_ULONG,
) -> CK_RV {
    with_provider("C_InitPIN", |p| {
        let new_pin = pin(new_pin, len)?;
        p.token.init_pin(h, &new_pin)?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// PINs readable for their lengths.
#[no_mangle]
pub unsafe extern "C" fn C_SetPIN(
    h: CK_SESSION_HANDLE,
    old: CK_UTF8CHAR_PTR,
    old_len: CK_ULONG,
    new: CK_UTF8CHAR_PTR,
    new_len: CK_ULONG,
) -> CK_RV {
    with_provider("C_SetPIN", |p| {
        let old = pin(old, old_len)?;
        let new = pin(new, new_len)?;
        p.token.set_pin(h, &old, &new)?;
        Ok(CKR_OK)
    })
}

/// Slot events never happen: the token is always in its slot.
///
/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_WaitForSlotEvent(
    flags: CK_FLAGS,
    slot: CK_SLOT_ID_PTR,
    reserved: CK_VOID_PTR,
) -> CK_RV {
    with_provider("C_WaitForSlotEvent", |_| {
        if !reserved.is_null() || slot.is_null() {
            return Err(Error::args("bad arguments"));
        }
        if flags & CKF_DONT_BLOCK != 0 {
            return Ok(CKR_NO_EVENT);
        }
        Ok(CKR_FUNCTION_NOT_SUPPORTED)
    })
}
