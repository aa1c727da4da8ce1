//! The C ABI: every exported `C_*` function and the function lists. The only module
//! with `unsafe`. Each export is a shell: check and convert arguments (`args`,
//! `mechanism`), call one method of the token, map the result to a `CK_RV`. Every
//! export runs inside `guard`, so no panic crosses into the host program.

mod args;
pub mod attribute_array;
mod crypto;
mod general;
mod keys;
mod mechanism;
mod objects;
mod sessions;

use crate::error::{rv_name, Error, Result};
use crate::provider::{self, Provider};
use pkcs11_sys::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Run the body of an export: errors become their `CK_RV`, panics `CKR_GENERAL_ERROR`.
fn guard(name: &'static str, f: impl FnOnce() -> Result<CK_RV>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(rv)) => rv,
        Ok(Err(e)) => {
            tracing::debug!(function = name, rv = rv_name(e.rv), "{}", e.msg);
            e.rv
        }
        Err(_) => {
            provider::poison();
            tracing::error!(function = name, "internal error (panic caught)");
            CKR_GENERAL_ERROR
        }
    }
}

/// The body of an export that needs the initialised library.
fn with_provider(name: &'static str, f: impl FnOnce(&Provider) -> Result<CK_RV>) -> CK_RV {
    guard(name, || provider::with(f))
}

fn check_slot(slot: CK_SLOT_ID) -> Result<()> {
    if slot != provider::SLOT_ID {
        return Err(Error::new(CKR_SLOT_ID_INVALID, format!("no slot {slot}")));
    }
    Ok(())
}

/// Ask the C library to tell us about fork(): the child then sees the library as not
/// initialised until it calls `C_Initialize` again.
fn register_fork_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn in_child() {
        provider::FORK_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only increments an atomic (async-signal-safe).
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
}

/// `Sync` wrapper: the lists are immutable and live for the whole program.
#[repr(transparent)]
struct Shared<T>(T);
// SAFETY: the wrapped values are never mutated; their raw pointers point to statics.
unsafe impl<T> Sync for Shared<T> {}

static FUNCTION_LIST: Shared<CK_FUNCTION_LIST> = Shared(CK_FUNCTION_LIST {
    version: CK_VERSION {
        major: 2,
        minor: 40,
    },
    C_Initialize: Some(general::C_Initialize),
    C_Finalize: Some(general::C_Finalize),
    C_GetInfo: Some(general::C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(general::C_GetSlotList),
    C_GetSlotInfo: Some(general::C_GetSlotInfo),
    C_GetTokenInfo: Some(general::C_GetTokenInfo),
    C_GetMechanismList: Some(general::C_GetMechanismList),
    C_GetMechanismInfo: Some(general::C_GetMechanismInfo),
    C_InitToken: Some(general::C_InitToken),
    C_InitPIN: Some(general::C_InitPIN),
    C_SetPIN: Some(general::C_SetPIN),
    C_OpenSession: Some(sessions::C_OpenSession),
    C_CloseSession: Some(sessions::C_CloseSession),
    C_CloseAllSessions: Some(sessions::C_CloseAllSessions),
    C_GetSessionInfo: Some(sessions::C_GetSessionInfo),
    C_GetOperationState: Some(sessions::C_GetOperationState),
    C_SetOperationState: Some(sessions::C_SetOperationState),
    C_Login: Some(sessions::C_Login),
    C_Logout: Some(sessions::C_Logout),
    C_CreateObject: Some(objects::C_CreateObject),
    C_CopyObject: Some(objects::C_CopyObject),
    C_DestroyObject: Some(objects::C_DestroyObject),
    C_GetObjectSize: Some(objects::C_GetObjectSize),
    C_GetAttributeValue: Some(objects::C_GetAttributeValue),
    C_SetAttributeValue: Some(objects::C_SetAttributeValue),
    C_FindObjectsInit: Some(objects::C_FindObjectsInit),
    C_FindObjects: Some(objects::C_FindObjects),
    C_FindObjectsFinal: Some(objects::C_FindObjectsFinal),
    C_EncryptInit: Some(crypto::C_EncryptInit),
    C_Encrypt: Some(crypto::C_Encrypt),
    C_EncryptUpdate: Some(crypto::C_EncryptUpdate),
    C_EncryptFinal: Some(crypto::C_EncryptFinal),
    C_DecryptInit: Some(crypto::C_DecryptInit),
    C_Decrypt: Some(crypto::C_Decrypt),
    C_DecryptUpdate: Some(crypto::C_DecryptUpdate),
    C_DecryptFinal: Some(crypto::C_DecryptFinal),
    C_DigestInit: Some(crypto::C_DigestInit),
    C_Digest: Some(crypto::C_Digest),
    C_DigestUpdate: Some(crypto::C_DigestUpdate),
    C_DigestKey: Some(crypto::C_DigestKey),
    C_DigestFinal: Some(crypto::C_DigestFinal),
    C_SignInit: Some(crypto::C_SignInit),
    C_Sign: Some(crypto::C_Sign),
    C_SignUpdate: Some(crypto::C_SignUpdate),
    C_SignFinal: Some(crypto::C_SignFinal),
    C_SignRecoverInit: Some(crypto::C_SignRecoverInit),
    C_SignRecover: Some(crypto::C_SignRecover),
    C_VerifyInit: Some(crypto::C_VerifyInit),
    C_Verify: Some(crypto::C_Verify),
    C_VerifyUpdate: Some(crypto::C_VerifyUpdate),
    C_VerifyFinal: Some(crypto::C_VerifyFinal),
    C_VerifyRecoverInit: Some(crypto::C_VerifyRecoverInit),
    C_VerifyRecover: Some(crypto::C_VerifyRecover),
    C_DigestEncryptUpdate: Some(crypto::C_DigestEncryptUpdate),
    C_DecryptDigestUpdate: Some(crypto::C_DecryptDigestUpdate),
    C_SignEncryptUpdate: Some(crypto::C_SignEncryptUpdate),
    C_DecryptVerifyUpdate: Some(crypto::C_DecryptVerifyUpdate),
    C_GenerateKey: Some(keys::C_GenerateKey),
    C_GenerateKeyPair: Some(keys::C_GenerateKeyPair),
    C_WrapKey: Some(keys::C_WrapKey),
    C_UnwrapKey: Some(keys::C_UnwrapKey),
    C_DeriveKey: Some(keys::C_DeriveKey),
    C_SeedRandom: Some(keys::C_SeedRandom),
    C_GenerateRandom: Some(keys::C_GenerateRandom),
    C_GetFunctionStatus: Some(sessions::C_GetFunctionStatus),
    C_CancelFunction: Some(sessions::C_CancelFunction),
    C_WaitForSlotEvent: Some(general::C_WaitForSlotEvent),
});

const INTERFACE_NAME: &[u8] = b"PKCS 11\0";

static INTERFACE: Shared<CK_INTERFACE> = Shared(CK_INTERFACE {
    pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_CHAR,
    pFunctionList: &FUNCTION_LIST.0 as *const CK_FUNCTION_LIST as *mut std::ffi::c_void,
    flags: 0,
});

/// # Safety
/// `pp` must be NULL or point to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(pp: CK_FUNCTION_LIST_PTR_PTR) -> CK_RV {
    guard("C_GetFunctionList", || {
        if pp.is_null() {
            return Err(Error::args("NULL function list pointer"));
        }
        register_fork_handler();
        *pp = &FUNCTION_LIST.0 as *const CK_FUNCTION_LIST as CK_FUNCTION_LIST_PTR;
        Ok(CKR_OK)
    })
}

/// PKCS#11 3.0: the interfaces offered — one, "PKCS 11" version 2.40.
///
/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_GetInterfaceList(list: *mut CK_INTERFACE, count: CK_ULONG_PTR) -> CK_RV {
    guard("C_GetInterfaceList", || {
        if count.is_null() {
            return Err(Error::args("NULL count"));
        }
        register_fork_handler();
        if list.is_null() {
            *count = 1;
            return Ok(CKR_OK);
        }
        if *count < 1 {
            *count = 1;
            return Ok(CKR_BUFFER_TOO_SMALL);
        }
        *list = INTERFACE.0;
        *count = 1;
        Ok(CKR_OK)
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_GetInterface(
    name: *mut CK_UTF8CHAR,
    version: *mut CK_VERSION,
    pp: *mut *mut CK_INTERFACE,
    _flags: CK_FLAGS,
) -> CK_RV {
    guard("C_GetInterface", || {
        if pp.is_null() {
            return Err(Error::args("NULL interface pointer"));
        }
        register_fork_handler();
        if !name.is_null() {
            let wanted = std::ffi::CStr::from_ptr(name as *const std::ffi::c_char);
            if wanted.to_bytes_with_nul() != INTERFACE_NAME {
                return Err(Error::args("only the \"PKCS 11\" interface is offered"));
            }
        }
        if !version.is_null() && ((*version).major, (*version).minor) != (2, 40) {
            return Err(Error::args("only interface version 2.40 is offered"));
        }
        *pp = &INTERFACE.0 as *const CK_INTERFACE as *mut CK_INTERFACE;
        Ok(CKR_OK)
    })
}
