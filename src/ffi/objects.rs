//! Object management functions (PKCS#11 v2.40 §5.7).

use super::args::{attribute_types, fill_attributes, out_ref, template};
use super::with_provider;
use crate::error::Error;
use pkcs11_sys::*;

/// # Safety
/// Template readable; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn C_CreateObject(
    h: CK_SESSION_HANDLE,
    tpl: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
    out: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with_provider("C_CreateObject", |p| {
        let t = template(tpl, count)?;
        let out = out_ref(out)?;
        *out = p.token.create_object(h, &t)?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// Template readable; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn C_CopyObject(
    h: CK_SESSION_HANDLE,
    obj: CK_OBJECT_HANDLE,
    tpl: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
    out: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with_provider("C_CopyObject", |p| {
        let t = template(tpl, count)?;
        let out = out_ref(out)?;
        *out = p.token.copy_object(h, obj, &t)?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub extern "C" fn C_DestroyObject(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> CK_RV {
    with_provider("C_DestroyObject", |p| {
        p.token.destroy_object(h, obj)?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// `size` writable.
#[no_mangle]
pub unsafe extern "C" fn C_GetObjectSize(
    h: CK_SESSION_HANDLE,
    obj: CK_OBJECT_HANDLE,
    size: CK_ULONG_PTR,
) -> CK_RV {
    with_provider("C_GetObjectSize", |p| {
        let size = out_ref(size)?;
        *size = p.token.object_size(h, obj)? as CK_ULONG;
        Ok(CKR_OK)
    })
}

/// # Safety
/// Template readable and its value buffers writable for their lengths.
#[no_mangle]
pub unsafe extern "C" fn C_GetAttributeValue(
    h: CK_SESSION_HANDLE,
    obj: CK_OBJECT_HANDLE,
    tpl: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
) -> CK_RV {
    with_provider("C_GetAttributeValue", |p| {
        let types = attribute_types(tpl, count)?;
        let values = p.token.get_attributes(h, obj, &types)?;
        Ok(fill_attributes(tpl, values))
    })
}

/// # Safety
/// Template readable.
#[no_mangle]
pub unsafe extern "C" fn C_SetAttributeValue(
    h: CK_SESSION_HANDLE,
    obj: CK_OBJECT_HANDLE,
    tpl: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
) -> CK_RV {
    with_provider("C_SetAttributeValue", |p| {
        let t = template(tpl, count)?;
        p.token.set_attributes(h, obj, &t)?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// Template readable.
#[no_mangle]
pub unsafe extern "C" fn C_FindObjectsInit(
    h: CK_SESSION_HANDLE,
    tpl: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
) -> CK_RV {
    with_provider("C_FindObjectsInit", |p| {
        let t = template(tpl, count)?;
        p.token.find_init(h, &t)?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// `out` writable for `max` handles; `found` writable.
#[no_mangle]
pub unsafe extern "C" fn C_FindObjects(
    h: CK_SESSION_HANDLE,
    out: CK_OBJECT_HANDLE_PTR,
    max: CK_ULONG,
    found: CK_ULONG_PTR,
) -> CK_RV {
    with_provider("C_FindObjects", |p| {
        let found = out_ref(found)?;
        if out.is_null() && max > 0 {
            return Err(Error::args("NULL handle buffer"));
        }
        let handles = p.token.find_next(h, max as usize)?;
        if !handles.is_empty() {
            std::ptr::copy_nonoverlapping(handles.as_ptr(), out, handles.len());
        }
        *found = handles.len() as CK_ULONG;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub extern "C" fn C_FindObjectsFinal(h: CK_SESSION_HANDLE) -> CK_RV {
    with_provider("C_FindObjectsFinal", |p| {
        p.token.find_final(h)?;
        Ok(CKR_OK)
    })
}
