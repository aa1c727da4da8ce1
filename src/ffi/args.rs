//! Argument conversion: raw pointers and lengths in, checked Rust values out; and the
//! two output conventions (variable-length buffers, `C_GetAttributeValue`).

use crate::error::{Error, Result};
use crate::token::attribute::Template;
use crate::token::{AttrValue, Out};
use pkcs11_sys::*;
use zeroize::Zeroizing;

/// A caller's input buffer. NULL is allowed only with length 0.
///
/// # Safety
/// `p` must point to `len` readable bytes when not NULL.
pub unsafe fn bytes<'a>(p: *const CK_BYTE, len: CK_ULONG) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::args("NULL buffer with a non-zero length"));
    }
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= isize::MAX as usize);
    let len = len.ok_or_else(|| Error::args("length out of range"))?;
    Ok(std::slice::from_raw_parts(p, len))
}

/// A PIN, copied so it can be zeroized.
///
/// # Safety
/// As for `bytes`.
pub unsafe fn pin(p: *const CK_UTF8CHAR, len: CK_ULONG) -> Result<Zeroizing<Vec<u8>>> {
    Ok(Zeroizing::new(bytes(p, len)?.to_vec()))
}

/// The capacity of an output buffer: `None` when the caller asks for the length only.
///
/// # Safety
/// `len` must be NULL or point to a readable `CK_ULONG`.
pub unsafe fn out_capacity(p: *const CK_BYTE, len: CK_ULONG_PTR) -> Result<Option<usize>> {
    if len.is_null() {
        return Err(Error::args("NULL output length pointer"));
    }
    Ok(if p.is_null() {
        None
    } else {
        Some(usize::try_from(*len).unwrap_or(usize::MAX))
    })
}

/// Write a result by the two-call convention.
///
/// # Safety
/// `p` (when not NULL) must have room for the capacity the caller gave in `*len`.
pub unsafe fn write_out(out: Out, p: *mut CK_BYTE, len: CK_ULONG_PTR) -> CK_RV {
    match out {
        Out::Data(v) => {
            if !v.is_empty() {
                std::ptr::copy_nonoverlapping(v.as_ptr(), p, v.len());
            }
            *len = v.len() as CK_ULONG;
            CKR_OK
        }
        Out::Len(n) => {
            *len = n as CK_ULONG;
            CKR_OK
        }
        Out::TooSmall(n) => {
            *len = n as CK_ULONG;
            CKR_BUFFER_TOO_SMALL
        }
    }
}

/// A caller's template, values copied.
///
/// # Safety
/// `p` must point to `count` attributes whose values are readable as described.
pub unsafe fn template(p: *const CK_ATTRIBUTE, count: CK_ULONG) -> Result<Template> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(Error::args("NULL template with a non-zero count"));
    }
    let attrs = std::slice::from_raw_parts(p, count as usize);
    attrs
        .iter()
        .map(|a| {
            if a.pValue.is_null() && a.ulValueLen != 0 {
                return Err(Error::attr_value(
                    a.type_,
                    "NULL value with a non-zero length",
                ));
            }
            if a.ulValueLen == CK_UNAVAILABLE_INFORMATION {
                return Err(Error::attr_value(a.type_, "length out of range"));
            }
            Ok((
                a.type_,
                bytes(a.pValue as *const u8, a.ulValueLen)?.to_vec(),
            ))
        })
        .collect()
}

/// The attribute types a `C_GetAttributeValue` template asks for.
///
/// # Safety
/// As for `template`.
pub unsafe fn attribute_types(
    p: *const CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<Vec<CK_ATTRIBUTE_TYPE>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(Error::args("NULL template with a non-zero count"));
    }
    Ok(std::slice::from_raw_parts(p, count as usize)
        .iter()
        .map(|a| a.type_)
        .collect())
}

/// Fill a `C_GetAttributeValue` template. The five cases of PKCS#11 v2.40 §5.7:
/// 1. sensitive or unextractable: length `CK_UNAVAILABLE_INFORMATION`, `CKR_ATTRIBUTE_SENSITIVE`;
/// 2. invalid for the object: length `CK_UNAVAILABLE_INFORMATION`, `CKR_ATTRIBUTE_TYPE_INVALID`;
/// 3. `pValue` NULL: the length is returned;
/// 4. buffer large enough: the value is copied and its length returned;
/// 5. too small: length `CK_UNAVAILABLE_INFORMATION`, `CKR_BUFFER_TOO_SMALL`.
///
/// Every attribute is processed; the call returns an error if any case 1, 2 or 5 applied.
///
/// # Safety
/// As for `template`, with writable values.
pub unsafe fn fill_attributes(p: *mut CK_ATTRIBUTE, values: Vec<AttrValue>) -> CK_RV {
    let attrs = std::slice::from_raw_parts_mut(p, values.len());
    let mut rv = CKR_OK;
    for (a, v) in attrs.iter_mut().zip(values) {
        match v {
            AttrValue::Sensitive => {
                a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                rv = CKR_ATTRIBUTE_SENSITIVE;
            }
            AttrValue::Invalid => {
                a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                rv = CKR_ATTRIBUTE_TYPE_INVALID;
            }
            AttrValue::Value(v) if a.pValue.is_null() => a.ulValueLen = v.len() as CK_ULONG,
            AttrValue::Value(v) if (a.ulValueLen as usize) >= v.len() => {
                if !v.is_empty() {
                    std::ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len());
                }
                a.ulValueLen = v.len() as CK_ULONG;
            }
            AttrValue::Value(_) => {
                a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                rv = CKR_BUFFER_TOO_SMALL;
            }
        }
    }
    rv
}

/// Copy `s` into a fixed-size, blank-padded field (no NUL), cut at a character boundary.
pub fn pad(dst: &mut [CK_UTF8CHAR], s: &str) {
    dst.fill(b' ');
    let mut end = s.len().min(dst.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    dst[..end].copy_from_slice(&s.as_bytes()[..end]);
}

/// A blank-padded label as given to `C_InitToken`.
pub fn unpad(label: &[CK_UTF8CHAR]) -> String {
    String::from_utf8_lossy(label)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

/// # Safety
/// `p` must be NULL or point to a writable `T`.
pub unsafe fn out_ref<'a, T>(p: *mut T) -> Result<&'a mut T> {
    p.as_mut().ok_or_else(|| Error::args("NULL output pointer"))
}
