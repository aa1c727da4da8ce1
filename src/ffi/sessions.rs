//! Session management functions (PKCS#11 v2.40 §5.6).

use super::args::{out_ref, pin};
use super::{check_slot, with_provider};
use crate::error::Error;
use crate::provider::SLOT_ID;
use pkcs11_sys::*;

/// # Safety
/// `out` must point to a writable session handle.
#[no_mangle]
pub unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _app: CK_VOID_PTR,
    _notify: CK_NOTIFY,
    out: CK_SESSION_HANDLE_PTR,
) -> CK_RV {
    with_provider("C_OpenSession", |p| {
        check_slot(slot)?;
        let out = out_ref(out)?;
        *out = p.token.open_session(flags)?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub extern "C" fn C_CloseSession(h: CK_SESSION_HANDLE) -> CK_RV {
    with_provider("C_CloseSession", |p| {
        p.token.close_session(h)?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    with_provider("C_CloseAllSessions", |p| {
        check_slot(slot)?;
        p.token.close_all_sessions();
        Ok(CKR_OK)
    })
}

/// # Safety
/// `info` must point to a writable `CK_SESSION_INFO`.
#[no_mangle]
pub unsafe extern "C" fn C_GetSessionInfo(
    h: CK_SESSION_HANDLE,
    info: CK_SESSION_INFO_PTR,
) -> CK_RV {
    with_provider("C_GetSessionInfo", |p| {
        let out = out_ref(info)?;
        let (state, flags) = p.token.session_state(h)?;
        out.slotID = SLOT_ID;
        out.state = state;
        out.flags = flags;
        out.ulDeviceError = 0;
        Ok(CKR_OK)
    })
}

/// # Safety
/// PIN readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn C_Login(
    h: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    p_pin: CK_UTF8CHAR_PTR,
    len: CK_ULONG,
) -> CK_RV {
    with_provider("C_Login", |p| {
        let pin = pin(p_pin, len)?;
        p.token.login(h, user, &pin)?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub extern "C" fn C_Logout(h: CK_SESSION_HANDLE) -> CK_RV {
    with_provider("C_Logout", |p| {
        p.token.logout(h)?;
        Ok(CKR_OK)
    })
}

/// Operation state cannot be saved: it may hold key schedules.
#[no_mangle]
pub extern "C" fn C_GetOperationState(
    h: CK_SESSION_HANDLE,
    _state: CK_BYTE_PTR,
    _len: CK_ULONG_PTR,
) -> CK_RV {
    with_provider("C_GetOperationState", |p| {
        p.token.session(h)?;
        Err(Error::new(
            CKR_FUNCTION_NOT_SUPPORTED,
            "operation state is not exportable",
        ))
    })
}

#[no_mangle]
pub extern "C" fn C_SetOperationState(
    h: CK_SESSION_HANDLE,
    _state: CK_BYTE_PTR,
    _len: CK_ULONG,
    _enc: CK_OBJECT_HANDLE,
    _auth: CK_OBJECT_HANDLE,
) -> CK_RV {
    with_provider("C_SetOperationState", |p| {
        p.token.session(h)?;
        Err(Error::new(
            CKR_FUNCTION_NOT_SUPPORTED,
            "operation state is not importable",
        ))
    })
}

/// Legacy parallel-function management: "CKR_FUNCTION_NOT_PARALLEL" as v2.40 says.
#[no_mangle]
pub extern "C" fn C_GetFunctionStatus(h: CK_SESSION_HANDLE) -> CK_RV {
    with_provider("C_GetFunctionStatus", |p| {
        p.token.session(h)?;
        Ok(CKR_FUNCTION_NOT_PARALLEL)
    })
}

#[no_mangle]
pub extern "C" fn C_CancelFunction(h: CK_SESSION_HANDLE) -> CK_RV {
    with_provider("C_CancelFunction", |p| {
        p.token.session(h)?;
        Ok(CKR_FUNCTION_NOT_PARALLEL)
    })
}
