//! Shared by the hostile_* tests: the module's raw C function list (loaded with
//! `libloading` from the same path `common::ctx()` loaded, so both see one library
//! instance and one login state), owned templates, and small raw-call helpers.
//!
//! Every raw call here passes pointers to live buffers with their true lengths, or
//! NULL: the hostility is in the values, never in lying about our own memory.
#![allow(dead_code, clippy::missing_safety_doc)]

use pkcs11_sys::*;
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

pub use cks_pkcs11::error::rv_name;

/// A handle no object or session will ever have in these tests.
pub const BOGUS: CK_ULONG = 0x7fff_0bad;
/// A length that no buffer has: used only with NULL pointers.
pub const HUGE: CK_ULONG = 1 << 40;

pub struct Raw {
    pub lib: libloading::Library,
    pub f: &'static CK_FUNCTION_LIST,
}

/// The raw function list of the module that `common::ctx()` initialised (same path,
/// so `dlopen` returns the same instance).
pub fn raw() -> &'static Raw {
    static RAW: OnceLock<Raw> = OnceLock::new();
    RAW.get_or_init(|| {
        let _ = crate::common::ctx();
        load_raw()
    })
}

/// Load the module and its function list without initialising anything.
pub fn load_raw() -> Raw {
    let path = crate::common::module_path();
    // SAFETY: loading the module under test; its initialisers are trivial.
    let lib = unsafe { libloading::Library::new(&path) }.expect("dlopen module");
    let mut fl: CK_FUNCTION_LIST_PTR = null_mut();
    // SAFETY: the symbol has the standard C_GetFunctionList signature.
    unsafe {
        let get: libloading::Symbol<unsafe extern "C" fn(CK_FUNCTION_LIST_PTR_PTR) -> CK_RV> =
            lib.get(b"C_GetFunctionList\0").expect("C_GetFunctionList");
        assert_eq!(get(&mut fl), CKR_OK);
    }
    assert!(!fl.is_null());
    // SAFETY: the module's function list is a static that outlives the process.
    let f = unsafe { &*fl };
    Raw { lib, f }
}

/// Call a function-list entry: `call!(f, C_Xxx, args...)`.
#[macro_export]
macro_rules! call {
    ($f:expr, $name:ident $(, $arg:expr)* $(,)?) => {{
        #[allow(unused_unsafe, clippy::macro_metavars_in_unsafe)]
        let rv = unsafe { ($f.$name.expect(stringify!($name)))($($arg),*) };
        rv
    }};
}

/// Assert a return value, naming both codes.
#[track_caller]
pub fn expect_rv(what: &str, got: CK_RV, want: CK_RV) {
    assert_eq!(
        got,
        want,
        "{what}: got {} (0x{got:x}), expected {}",
        rv_name(got),
        rv_name(want)
    );
}

/// Assert a return value is one of a few the spec permits.
#[track_caller]
pub fn expect_any(what: &str, got: CK_RV, allowed: &[CK_RV]) {
    assert!(
        allowed.contains(&got),
        "{what}: got {} (0x{got:x}), expected one of {:?}",
        rv_name(got),
        allowed.iter().map(|r| rv_name(*r)).collect::<Vec<_>>()
    );
}

/// A template that owns its values.
#[derive(Default)]
pub struct Tpl {
    vals: Vec<Vec<u8>>,
    types: Vec<CK_ATTRIBUTE_TYPE>,
    /// Entries whose pValue is NULL with the given length (no storage).
    nulls: Vec<(usize, CK_ULONG)>,
    attrs: Vec<CK_ATTRIBUTE>,
}

impl Tpl {
    pub fn new() -> Tpl {
        Tpl::default()
    }
    pub fn bytes(mut self, t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Tpl {
        self.types.push(t);
        self.vals.push(v.to_vec());
        self
    }
    pub fn bool(self, t: CK_ATTRIBUTE_TYPE, v: bool) -> Tpl {
        self.bytes(t, &[v as u8])
    }
    pub fn ulong(self, t: CK_ATTRIBUTE_TYPE, v: CK_ULONG) -> Tpl {
        self.bytes(t, &v.to_ne_bytes())
    }
    /// An entry with a NULL value pointer and the given length.
    pub fn null(mut self, t: CK_ATTRIBUTE_TYPE, len: CK_ULONG) -> Tpl {
        self.nulls.push((self.types.len(), len));
        self.types.push(t);
        self.vals.push(Vec::new());
        self
    }
    /// The C array (rebuilt on each call; valid while `self` lives and is not changed).
    pub fn c(&mut self) -> CK_ATTRIBUTE_PTR {
        self.attrs = self
            .types
            .iter()
            .zip(self.vals.iter_mut())
            .enumerate()
            .map(|(i, (t, v))| {
                let null = self.nulls.iter().find(|(j, _)| *j == i);
                match null {
                    Some((_, len)) => CK_ATTRIBUTE {
                        type_: *t,
                        pValue: null_mut(),
                        ulValueLen: *len,
                    },
                    None => CK_ATTRIBUTE {
                        type_: *t,
                        pValue: if v.is_empty() {
                            null_mut()
                        } else {
                            v.as_mut_ptr() as CK_VOID_PTR
                        },
                        ulValueLen: v.len() as CK_ULONG,
                    },
                }
            })
            .collect();
        if self.attrs.is_empty() {
            null_mut()
        } else {
            self.attrs.as_mut_ptr()
        }
    }
    pub fn n(&self) -> CK_ULONG {
        self.types.len() as CK_ULONG
    }
}

pub fn mech(m: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

pub fn mech_with(m: CK_MECHANISM_TYPE, param: &mut [u8]) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: param.as_mut_ptr() as CK_VOID_PTR,
        ulParameterLen: param.len() as CK_ULONG,
    }
}

/// The bytes of a plain C struct (for mechanism parameters).
pub fn struct_bytes<T: Copy>(v: &T) -> Vec<u8> {
    let n = std::mem::size_of::<T>();
    let mut out = vec![0u8; n];
    // SAFETY: T is a plain-old-data C struct; we copy exactly its size.
    unsafe { std::ptr::copy_nonoverlapping(v as *const T as *const u8, out.as_mut_ptr(), n) };
    out
}

pub fn open(f: &CK_FUNCTION_LIST, rw: bool) -> CK_SESSION_HANDLE {
    let mut h: CK_SESSION_HANDLE = 0;
    let flags = CKF_SERIAL_SESSION | if rw { CKF_RW_SESSION } else { 0 };
    expect_rv(
        "C_OpenSession",
        call!(f, C_OpenSession, 0, flags, null_mut(), None, &mut h),
        CKR_OK,
    );
    h
}

pub fn close(f: &CK_FUNCTION_LIST, h: CK_SESSION_HANDLE) {
    expect_rv("C_CloseSession", call!(f, C_CloseSession, h), CKR_OK);
}

/// Generate a secret key; returns the code and handle.
pub fn gen_secret(
    f: &CK_FUNCTION_LIST,
    h: CK_SESSION_HANDLE,
    m: CK_MECHANISM_TYPE,
    mut t: Tpl,
) -> (CK_RV, CK_OBJECT_HANDLE) {
    let mut mm = mech(m);
    let mut k = 0;
    let rv = call!(f, C_GenerateKey, h, &mut mm, t.c(), t.n(), &mut k);
    (rv, k)
}

pub fn aes_template(token: bool, len: CK_ULONG) -> Tpl {
    Tpl::new()
        .bool(CKA_TOKEN, token)
        .ulong(CKA_VALUE_LEN, len)
        .bool(CKA_ENCRYPT, true)
        .bool(CKA_DECRYPT, true)
        .bool(CKA_WRAP, true)
        .bool(CKA_UNWRAP, true)
}

/// A 32-byte AES key, token (CMK) or session.
pub fn aes_key(f: &CK_FUNCTION_LIST, h: CK_SESSION_HANDLE, token: bool) -> CK_OBJECT_HANDLE {
    let (rv, k) = gen_secret(f, h, CKM_AES_KEY_GEN, aes_template(token, 32));
    expect_rv("C_GenerateKey AES", rv, CKR_OK);
    k
}

pub const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// An EC P-256 key pair: (public, private).
pub fn ec_pair(
    f: &CK_FUNCTION_LIST,
    h: CK_SESSION_HANDLE,
    token: bool,
) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
    let mut m = mech(CKM_EC_KEY_PAIR_GEN);
    let mut pubt = Tpl::new()
        .bool(CKA_TOKEN, token)
        .bytes(CKA_EC_PARAMS, P256_OID)
        .bool(CKA_VERIFY, true);
    let mut privt = Tpl::new()
        .bool(CKA_TOKEN, token)
        .bool(CKA_SIGN, true)
        .bool(CKA_DERIVE, true);
    let (mut pk, mut sk) = (0, 0);
    let rv = call!(
        f,
        C_GenerateKeyPair,
        h,
        &mut m,
        pubt.c(),
        pubt.n(),
        privt.c(),
        privt.n(),
        &mut pk,
        &mut sk
    );
    expect_rv("C_GenerateKeyPair EC", rv, CKR_OK);
    (pk, sk)
}

/// An RSA-2048 key pair: (public, private).
pub fn rsa_pair(
    f: &CK_FUNCTION_LIST,
    h: CK_SESSION_HANDLE,
    token: bool,
) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
    let mut m = mech(CKM_RSA_PKCS_KEY_PAIR_GEN);
    let mut pubt = Tpl::new()
        .bool(CKA_TOKEN, token)
        .ulong(CKA_MODULUS_BITS, 2048)
        .bytes(CKA_PUBLIC_EXPONENT, &[1, 0, 1])
        .bool(CKA_VERIFY, true)
        .bool(CKA_ENCRYPT, true)
        .bool(CKA_WRAP, true);
    let mut privt = Tpl::new()
        .bool(CKA_TOKEN, token)
        .bool(CKA_SIGN, true)
        .bool(CKA_DECRYPT, true)
        .bool(CKA_UNWRAP, true);
    let (mut pk, mut sk) = (0, 0);
    let rv = call!(
        f,
        C_GenerateKeyPair,
        h,
        &mut m,
        pubt.c(),
        pubt.n(),
        privt.c(),
        privt.n(),
        &mut pk,
        &mut sk
    );
    expect_rv("C_GenerateKeyPair RSA", rv, CKR_OK);
    (pk, sk)
}

/// Read one attribute: (code, value if any, ulValueLen as returned).
pub fn get_attr(
    f: &CK_FUNCTION_LIST,
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    t: CK_ATTRIBUTE_TYPE,
) -> (CK_RV, Option<Vec<u8>>, CK_ULONG) {
    let mut a = CK_ATTRIBUTE {
        type_: t,
        pValue: null_mut(),
        ulValueLen: 0,
    };
    let rv = call!(f, C_GetAttributeValue, h, o, &mut a, 1);
    if rv != CKR_OK {
        return (rv, None, a.ulValueLen);
    }
    let mut buf = vec![0u8; a.ulValueLen as usize];
    a.pValue = buf.as_mut_ptr() as CK_VOID_PTR;
    let rv = call!(f, C_GetAttributeValue, h, o, &mut a, 1);
    let len = a.ulValueLen;
    if rv == CKR_OK {
        buf.truncate(len as usize);
        (rv, Some(buf), len)
    } else {
        (rv, None, len)
    }
}

pub fn get_bool(
    f: &CK_FUNCTION_LIST,
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    t: CK_ATTRIBUTE_TYPE,
) -> bool {
    let (rv, v, _) = get_attr(f, h, o, t);
    expect_rv("C_GetAttributeValue bool", rv, CKR_OK);
    v.expect("value") == [1]
}

/// Set attributes; returns the code.
pub fn set_attrs(
    f: &CK_FUNCTION_LIST,
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    mut t: Tpl,
) -> CK_RV {
    call!(f, C_SetAttributeValue, h, o, t.c(), t.n())
}

/// Every handle a search finds.
pub fn find(f: &CK_FUNCTION_LIST, h: CK_SESSION_HANDLE, mut t: Tpl) -> Vec<CK_OBJECT_HANDLE> {
    expect_rv(
        "C_FindObjectsInit",
        call!(f, C_FindObjectsInit, h, t.c(), t.n()),
        CKR_OK,
    );
    let mut out = Vec::new();
    loop {
        let mut buf = [0 as CK_OBJECT_HANDLE; 64];
        let mut n: CK_ULONG = 0;
        expect_rv(
            "C_FindObjects",
            call!(f, C_FindObjects, h, buf.as_mut_ptr(), 64, &mut n),
            CKR_OK,
        );
        out.extend_from_slice(&buf[..n as usize]);
        if n == 0 {
            break;
        }
    }
    expect_rv(
        "C_FindObjectsFinal",
        call!(f, C_FindObjectsFinal, h),
        CKR_OK,
    );
    out
}

/// Single-part encrypt or decrypt (two-call convention); returns code and output.
pub fn crypt(
    f: &CK_FUNCTION_LIST,
    h: CK_SESSION_HANDLE,
    encrypt: bool,
    input: &[u8],
) -> (CK_RV, Vec<u8>) {
    let mut len: CK_ULONG = 0;
    let run = |out: CK_BYTE_PTR, len: &mut CK_ULONG| {
        let inp = if input.is_empty() {
            null_mut()
        } else {
            input.as_ptr() as CK_BYTE_PTR
        };
        if encrypt {
            call!(f, C_Encrypt, h, inp, input.len() as CK_ULONG, out, len)
        } else {
            call!(f, C_Decrypt, h, inp, input.len() as CK_ULONG, out, len)
        }
    };
    let rv = run(null_mut(), &mut len);
    if rv != CKR_OK {
        return (rv, Vec::new());
    }
    let mut out = vec![0u8; len as usize];
    let rv = run(out.as_mut_ptr(), &mut len);
    out.truncate(len as usize);
    (rv, out)
}

/// Single-part sign; returns code and signature.
pub fn sign(f: &CK_FUNCTION_LIST, h: CK_SESSION_HANDLE, data: &[u8]) -> (CK_RV, Vec<u8>) {
    let mut len: CK_ULONG = 0;
    let d = data.as_ptr() as CK_BYTE_PTR;
    let n = data.len() as CK_ULONG;
    let rv = call!(f, C_Sign, h, d, n, null_mut(), &mut len);
    if rv != CKR_OK {
        return (rv, Vec::new());
    }
    let mut out = vec![0u8; len as usize];
    let rv = call!(f, C_Sign, h, d, n, out.as_mut_ptr(), &mut len);
    out.truncate(len as usize);
    (rv, out)
}

/// `C_WrapKey` into a buffer; returns code and wrapped bytes.
pub fn wrap(
    f: &CK_FUNCTION_LIST,
    h: CK_SESSION_HANDLE,
    m: &mut CK_MECHANISM,
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
) -> (CK_RV, Vec<u8>) {
    let mut len: CK_ULONG = 0;
    let rv = call!(f, C_WrapKey, h, m, wrapping, key, null_mut(), &mut len);
    if rv != CKR_OK {
        return (rv, Vec::new());
    }
    let mut out = vec![0u8; len as usize];
    let rv = call!(
        f,
        C_WrapKey,
        h,
        m,
        wrapping,
        key,
        out.as_mut_ptr(),
        &mut len
    );
    out.truncate(len as usize);
    (rv, out)
}

pub fn destroy(f: &CK_FUNCTION_LIST, h: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) {
    expect_rv("C_DestroyObject", call!(f, C_DestroyObject, h, o), CKR_OK);
}

pub fn null_bytes() -> CK_BYTE_PTR {
    null_mut()
}

pub fn null_ulong() -> CK_ULONG_PTR {
    null_mut()
}

pub fn null_const() -> *const u8 {
    null()
}
