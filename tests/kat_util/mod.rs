//! Raw C ABI access to the built module for integration tests that need exact `CKR_*`
//! codes, NULL buffers and the two-call convention — things `cryptoki` hides.
//!
//! The module is loaded with `dlopen` (libc) and used through its `CK_FUNCTION_LIST`
//! (types from `pkcs11-sys`). `raw()` first brings up the process-wide context of
//! `tests/common` (fresh store, token initialised, user logged in through `cryptoki`);
//! `dlopen` of the same path yields the same library, so both share one module state.
//! `Raw::load` alone loads the function list without initialising anything (for child
//! processes that drive `C_Initialize` themselves).
#![allow(dead_code)]

use pkcs11_sys::*;
use std::ffi::{c_void, CString};
use std::marker::PhantomData;
use std::path::Path;
use std::sync::OnceLock;

pub type Rv<T> = Result<T, CK_RV>;

pub const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// Readable name of a return value (the module's own table).
pub fn name(rv: CK_RV) -> &'static str {
    cks_pkcs11::error::rv_name(rv)
}

pub fn ck(rv: CK_RV) -> Rv<()> {
    if rv == CKR_OK {
        Ok(())
    } else {
        Err(rv)
    }
}

/// Assert a result is the error `want`, with readable names on failure.
#[track_caller]
pub fn assert_rv<T: std::fmt::Debug>(got: Rv<T>, want: CK_RV, what: &str) {
    match got {
        Err(rv) if rv == want => {}
        Err(rv) => panic!("{what}: expected {}, got {}", name(want), name(rv)),
        Ok(v) => panic!("{what}: expected {}, got CKR_OK ({v:?})", name(want)),
    }
}

pub fn hex(s: &str) -> Vec<u8> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(clean).expect("hex literal")
}

/// Big-endian integer without leading zero bytes (Wycheproof often adds one).
pub fn strip(v: &[u8]) -> &[u8] {
    let n = v.iter().take_while(|b| **b == 0).count();
    &v[n.min(v.len().saturating_sub(1))..]
}

/// Left-pad (or strip) a big-endian integer to exactly `len` bytes.
pub fn fixed(v: &[u8], len: usize) -> Vec<u8> {
    let s = strip(v);
    assert!(s.len() <= len, "integer longer than {len} bytes");
    let mut out = vec![0u8; len - s.len()];
    out.extend_from_slice(s);
    out
}

// ---- templates ------------------------------------------------------------------------

/// A template whose values are owned here; `ck()` gives the C array pointing into them.
#[derive(Clone, Default, Debug)]
pub struct Tpl {
    pub items: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>,
}

impl Tpl {
    pub fn new() -> Tpl {
        Tpl::default()
    }
    pub fn bool(mut self, t: CK_ATTRIBUTE_TYPE, v: bool) -> Tpl {
        self.items.push((t, vec![v as u8]));
        self
    }
    pub fn ulong(mut self, t: CK_ATTRIBUTE_TYPE, v: CK_ULONG) -> Tpl {
        self.items.push((t, v.to_ne_bytes().to_vec()));
        self
    }
    pub fn bytes(mut self, t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Tpl {
        self.items.push((t, v.to_vec()));
        self
    }
    pub fn class(self, c: CK_OBJECT_CLASS) -> Tpl {
        self.ulong(CKA_CLASS, c)
    }
    pub fn key_type(self, k: CK_KEY_TYPE) -> Tpl {
        self.ulong(CKA_KEY_TYPE, k)
    }
    pub fn label(self, l: &str) -> Tpl {
        self.bytes(CKA_LABEL, l.as_bytes())
    }
    /// The C view. The returned attributes point into `self`.
    pub fn ck(&mut self) -> Vec<CK_ATTRIBUTE> {
        self.items
            .iter_mut()
            .map(|(t, v)| CK_ATTRIBUTE {
                type_: *t,
                pValue: if v.is_empty() {
                    std::ptr::null_mut()
                } else {
                    v.as_mut_ptr() as *mut c_void
                },
                ulValueLen: v.len() as CK_ULONG,
            })
            .collect()
    }
}

// ---- mechanisms -----------------------------------------------------------------------

/// A mechanism with its parameter bytes; pointers inside the parameter borrow `'a`.
pub struct Mech<'a> {
    pub ty: CK_MECHANISM_TYPE,
    param: Vec<u8>,
    _borrow: PhantomData<&'a [u8]>,
}

fn struct_bytes<T: Copy>(s: &T) -> Vec<u8> {
    // SAFETY: T is a plain C struct; we copy its bytes.
    unsafe { std::slice::from_raw_parts(s as *const T as *const u8, std::mem::size_of::<T>()) }
        .to_vec()
}

fn ptr(v: &[u8]) -> *mut u8 {
    if v.is_empty() {
        std::ptr::null_mut()
    } else {
        v.as_ptr() as *mut u8
    }
}

impl<'a> Mech<'a> {
    pub fn new(ty: CK_MECHANISM_TYPE) -> Mech<'a> {
        Mech {
            ty,
            param: Vec::new(),
            _borrow: PhantomData,
        }
    }
    /// A parameter given as plain bytes (an IV).
    pub fn with_bytes(ty: CK_MECHANISM_TYPE, p: &[u8]) -> Mech<'a> {
        Mech {
            ty,
            param: p.to_vec(),
            _borrow: PhantomData,
        }
    }
    pub fn gcm(iv: &'a [u8], aad: &'a [u8], tag_bits: usize) -> Mech<'a> {
        let p = CK_GCM_PARAMS {
            pIv: if iv.is_empty() {
                std::ptr::null_mut()
            } else {
                iv.as_ptr() as *mut u8
            },
            ulIvLen: iv.len() as CK_ULONG,
            ulIvBits: (iv.len() * 8) as CK_ULONG,
            pAAD: ptr(aad),
            ulAADLen: aad.len() as CK_ULONG,
            ulTagBits: tag_bits as CK_ULONG,
        };
        Mech {
            ty: CKM_AES_GCM,
            param: struct_bytes(&p),
            _borrow: PhantomData,
        }
    }
    pub fn ctr(counter_block: [u8; 16], counter_bits: CK_ULONG) -> Mech<'a> {
        let p = CK_AES_CTR_PARAMS {
            ulCounterBits: counter_bits,
            cb: counter_block,
        };
        Mech {
            ty: CKM_AES_CTR,
            param: struct_bytes(&p),
            _borrow: PhantomData,
        }
    }
    pub fn oaep(hash: CK_MECHANISM_TYPE, mgf: CK_ULONG, label: &'a [u8]) -> Mech<'a> {
        let p = CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: hash,
            mgf,
            source: CKZ_DATA_SPECIFIED,
            pSourceData: ptr(label) as *mut c_void,
            ulSourceDataLen: label.len() as CK_ULONG,
        };
        Mech {
            ty: CKM_RSA_PKCS_OAEP,
            param: struct_bytes(&p),
            _borrow: PhantomData,
        }
    }
    pub fn pss(
        ty: CK_MECHANISM_TYPE,
        hash: CK_MECHANISM_TYPE,
        mgf: CK_ULONG,
        salt: usize,
    ) -> Mech<'a> {
        let p = CK_RSA_PKCS_PSS_PARAMS {
            hashAlg: hash,
            mgf,
            sLen: salt as CK_ULONG,
        };
        Mech {
            ty,
            param: struct_bytes(&p),
            _borrow: PhantomData,
        }
    }
    pub fn ecdh(kdf: CK_ULONG, shared: &'a [u8], public: &'a [u8]) -> Mech<'a> {
        let p = CK_ECDH1_DERIVE_PARAMS {
            kdf,
            ulSharedDataLen: shared.len() as CK_ULONG,
            pSharedData: ptr(shared),
            ulPublicDataLen: public.len() as CK_ULONG,
            pPublicData: ptr(public),
        };
        Mech {
            ty: CKM_ECDH1_DERIVE,
            param: struct_bytes(&p),
            _borrow: PhantomData,
        }
    }
    pub fn ck(&self) -> CK_MECHANISM {
        CK_MECHANISM {
            mechanism: self.ty,
            pParameter: if self.param.is_empty() {
                std::ptr::null_mut()
            } else {
                self.param.as_ptr() as *mut c_void
            },
            ulParameterLen: self.param.len() as CK_ULONG,
        }
    }
}

// ---- the module -----------------------------------------------------------------------

pub struct Raw {
    pub f: &'static CK_FUNCTION_LIST,
    pub lib: *mut c_void,
}

// SAFETY: the function list is immutable and the module is thread-safe (OS locking).
unsafe impl Send for Raw {}
unsafe impl Sync for Raw {}

/// Call a function of the list: `call!(r, C_Foo(args...))`. The arguments are raw
/// pointers the caller vouches for, hence expanded inside `unsafe`.
#[macro_export]
macro_rules! call {
    ($r:expr, $name:ident ( $($a:expr),* $(,)? )) => {{
        #[allow(unused_unsafe)]
        let rv = unsafe { ($r.f.$name.expect(stringify!($name)))($($a),*) };
        rv
    }};
}

impl Raw {
    /// `dlopen` the module and fetch its function list; nothing is initialised.
    pub fn load(path: &Path) -> Raw {
        let cpath = CString::new(path.to_str().expect("utf-8 path")).expect("path");
        // SAFETY: plain dlopen/dlsym of a shared library we built.
        unsafe {
            let lib = libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            assert!(!lib.is_null(), "dlopen {} failed", path.display());
            let sym = libc::dlsym(lib, c"C_GetFunctionList".as_ptr());
            assert!(!sym.is_null(), "C_GetFunctionList not exported");
            let get: unsafe extern "C" fn(CK_FUNCTION_LIST_PTR_PTR) -> CK_RV =
                std::mem::transmute(sym);
            let mut list: CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
            assert_eq!(get(&mut list), CKR_OK, "C_GetFunctionList");
            assert!(!list.is_null());
            Raw { f: &*list, lib }
        }
    }

    /// An exported symbol of the module (e.g. `C_GetInterfaceList`).
    pub fn symbol(&self, sym: &str) -> *mut c_void {
        let c = CString::new(sym).expect("symbol");
        // SAFETY: dlsym on our handle.
        unsafe { libc::dlsym(self.lib, c.as_ptr()) }
    }

    pub fn initialize(&self) -> Rv<()> {
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: std::ptr::null_mut(),
        };
        ck(call!(
            self,
            C_Initialize(&mut args as *mut _ as *mut c_void)
        ))
    }

    pub fn finalize(&self) -> Rv<()> {
        ck(call!(self, C_Finalize(std::ptr::null_mut())))
    }

    pub fn open_session(&self, rw: bool) -> Rv<CK_SESSION_HANDLE> {
        let mut h = 0;
        let flags = CKF_SERIAL_SESSION | if rw { CKF_RW_SESSION } else { 0 };
        ck(call!(
            self,
            C_OpenSession(0, flags, std::ptr::null_mut(), None, &mut h)
        ))?;
        Ok(h)
    }

    /// A read/write session (panics on failure).
    pub fn session(&self) -> CK_SESSION_HANDLE {
        self.open_session(true).expect("C_OpenSession")
    }

    pub fn close_session(&self, h: CK_SESSION_HANDLE) -> Rv<()> {
        ck(call!(self, C_CloseSession(h)))
    }

    pub fn login(&self, h: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &str) -> Rv<()> {
        ck(call!(
            self,
            C_Login(h, user, pin.as_ptr() as *mut u8, pin.len() as CK_ULONG)
        ))
    }

    pub fn logout(&self, h: CK_SESSION_HANDLE) -> Rv<()> {
        ck(call!(self, C_Logout(h)))
    }

    pub fn token_info(&self) -> Rv<CK_TOKEN_INFO> {
        // SAFETY: CK_TOKEN_INFO is plain data.
        let mut info: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
        ck(call!(self, C_GetTokenInfo(0, &mut info)))?;
        Ok(info)
    }

    pub fn session_info(&self, h: CK_SESSION_HANDLE) -> Rv<CK_SESSION_INFO> {
        // SAFETY: CK_SESSION_INFO is plain data.
        let mut info: CK_SESSION_INFO = unsafe { std::mem::zeroed() };
        ck(call!(self, C_GetSessionInfo(h, &mut info)))?;
        Ok(info)
    }

    // ---- objects ----------------------------------------------------------------------

    pub fn create(&self, h: CK_SESSION_HANDLE, mut t: Tpl) -> Rv<CK_OBJECT_HANDLE> {
        let mut a = t.ck();
        let mut o = 0;
        ck(call!(
            self,
            C_CreateObject(h, a.as_mut_ptr(), a.len() as CK_ULONG, &mut o)
        ))?;
        Ok(o)
    }

    pub fn copy(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        mut t: Tpl,
    ) -> Rv<CK_OBJECT_HANDLE> {
        let mut a = t.ck();
        let mut o = 0;
        ck(call!(
            self,
            C_CopyObject(h, obj, a.as_mut_ptr(), a.len() as CK_ULONG, &mut o)
        ))?;
        Ok(o)
    }

    pub fn destroy(&self, h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> Rv<()> {
        ck(call!(self, C_DestroyObject(h, obj)))
    }

    /// One attribute's value by the two-call convention.
    pub fn attr(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        t: CK_ATTRIBUTE_TYPE,
    ) -> Rv<Vec<u8>> {
        let mut a = CK_ATTRIBUTE {
            type_: t,
            pValue: std::ptr::null_mut(),
            ulValueLen: 0,
        };
        ck(call!(self, C_GetAttributeValue(h, obj, &mut a, 1)))?;
        let mut buf = vec![0u8; a.ulValueLen as usize];
        a.pValue = buf.as_mut_ptr() as *mut c_void;
        ck(call!(self, C_GetAttributeValue(h, obj, &mut a, 1)))?;
        buf.truncate(a.ulValueLen as usize);
        Ok(buf)
    }

    pub fn attr_bool(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        t: CK_ATTRIBUTE_TYPE,
    ) -> Rv<bool> {
        let v = self.attr(h, obj, t)?;
        assert_eq!(
            v.len(),
            1,
            "CK_BBOOL attribute 0x{t:x} has {} bytes",
            v.len()
        );
        Ok(v[0] != 0)
    }

    pub fn set_attr(&self, h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE, mut t: Tpl) -> Rv<()> {
        let mut a = t.ck();
        ck(call!(
            self,
            C_SetAttributeValue(h, obj, a.as_mut_ptr(), a.len() as CK_ULONG)
        ))
    }

    pub fn find(&self, h: CK_SESSION_HANDLE, mut t: Tpl) -> Rv<Vec<CK_OBJECT_HANDLE>> {
        let mut a = t.ck();
        ck(call!(
            self,
            C_FindObjectsInit(h, a.as_mut_ptr(), a.len() as CK_ULONG)
        ))?;
        let mut all = Vec::new();
        loop {
            let mut buf = [0 as CK_OBJECT_HANDLE; 7];
            let mut n = 0;
            let rv = call!(self, C_FindObjects(h, buf.as_mut_ptr(), 7, &mut n));
            if rv != CKR_OK {
                let _ = call!(self, C_FindObjectsFinal(h));
                return Err(rv);
            }
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n as usize]);
        }
        ck(call!(self, C_FindObjectsFinal(h)))?;
        Ok(all)
    }

    // ---- keys -------------------------------------------------------------------------

    pub fn generate_key(&self, h: CK_SESSION_HANDLE, m: &Mech, mut t: Tpl) -> Rv<CK_OBJECT_HANDLE> {
        let mut a = t.ck();
        let mut mech = m.ck();
        let mut o = 0;
        ck(call!(
            self,
            C_GenerateKey(h, &mut mech, a.as_mut_ptr(), a.len() as CK_ULONG, &mut o)
        ))?;
        Ok(o)
    }

    pub fn generate_key_pair(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mech,
        mut public: Tpl,
        mut private: Tpl,
    ) -> Rv<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let mut pa = public.ck();
        let mut sa = private.ck();
        let mut mech = m.ck();
        let (mut p, mut s) = (0, 0);
        ck(call!(
            self,
            C_GenerateKeyPair(
                h,
                &mut mech,
                pa.as_mut_ptr(),
                pa.len() as CK_ULONG,
                sa.as_mut_ptr(),
                sa.len() as CK_ULONG,
                &mut p,
                &mut s
            )
        ))?;
        Ok((p, s))
    }

    pub fn wrap(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mech,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
    ) -> Rv<Vec<u8>> {
        let mut mech = m.ck();
        let mut len = 0;
        ck(call!(
            self,
            C_WrapKey(h, &mut mech, wrapping, key, std::ptr::null_mut(), &mut len)
        ))?;
        let mut buf = vec![0u8; len as usize];
        ck(call!(
            self,
            C_WrapKey(h, &mut mech, wrapping, key, buf.as_mut_ptr(), &mut len)
        ))?;
        buf.truncate(len as usize);
        Ok(buf)
    }

    pub fn unwrap(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mech,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        mut t: Tpl,
    ) -> Rv<CK_OBJECT_HANDLE> {
        let mut mech = m.ck();
        let mut a = t.ck();
        let mut o = 0;
        ck(call!(
            self,
            C_UnwrapKey(
                h,
                &mut mech,
                unwrapping,
                wrapped.as_ptr() as *mut u8,
                wrapped.len() as CK_ULONG,
                a.as_mut_ptr(),
                a.len() as CK_ULONG,
                &mut o
            )
        ))?;
        Ok(o)
    }

    pub fn derive(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mech,
        base: CK_OBJECT_HANDLE,
        mut t: Tpl,
    ) -> Rv<CK_OBJECT_HANDLE> {
        let mut mech = m.ck();
        let mut a = t.ck();
        let mut o = 0;
        ck(call!(
            self,
            C_DeriveKey(
                h,
                &mut mech,
                base,
                a.as_mut_ptr(),
                a.len() as CK_ULONG,
                &mut o
            )
        ))?;
        Ok(o)
    }

    // ---- key templates used everywhere ---------------------------------------------------

    /// A session AES key with a known value, usable for everything, readable.
    pub fn aes_key(&self, h: CK_SESSION_HANDLE, value: &[u8]) -> Rv<CK_OBJECT_HANDLE> {
        self.create(
            h,
            Tpl::new()
                .class(CKO_SECRET_KEY)
                .key_type(CKK_AES)
                .bool(CKA_TOKEN, false)
                .bool(CKA_SENSITIVE, false)
                .bool(CKA_EXTRACTABLE, true)
                .bool(CKA_ENCRYPT, true)
                .bool(CKA_DECRYPT, true)
                .bool(CKA_WRAP, true)
                .bool(CKA_UNWRAP, true)
                .bytes(CKA_VALUE, value),
        )
    }

    /// A session generic secret (HMAC key) with a known value, readable and wrappable.
    pub fn generic_key(&self, h: CK_SESSION_HANDLE, value: &[u8]) -> Rv<CK_OBJECT_HANDLE> {
        self.create(
            h,
            Tpl::new()
                .class(CKO_SECRET_KEY)
                .key_type(CKK_GENERIC_SECRET)
                .bool(CKA_TOKEN, false)
                .bool(CKA_SENSITIVE, false)
                .bool(CKA_EXTRACTABLE, true)
                .bool(CKA_SIGN, true)
                .bool(CKA_VERIFY, true)
                .bytes(CKA_VALUE, value),
        )
    }

    pub fn ec_public(
        &self,
        h: CK_SESSION_HANDLE,
        params: &[u8],
        point: &[u8],
    ) -> Rv<CK_OBJECT_HANDLE> {
        self.create(
            h,
            Tpl::new()
                .class(CKO_PUBLIC_KEY)
                .key_type(CKK_EC)
                .bool(CKA_TOKEN, false)
                .bool(CKA_VERIFY, true)
                .bytes(CKA_EC_PARAMS, params)
                .bytes(CKA_EC_POINT, point),
        )
    }

    pub fn ec_private(
        &self,
        h: CK_SESSION_HANDLE,
        params: &[u8],
        scalar: &[u8],
    ) -> Rv<CK_OBJECT_HANDLE> {
        self.create(
            h,
            Tpl::new()
                .class(CKO_PRIVATE_KEY)
                .key_type(CKK_EC)
                .bool(CKA_TOKEN, false)
                .bool(CKA_SIGN, true)
                .bool(CKA_DERIVE, true)
                .bytes(CKA_EC_PARAMS, params)
                .bytes(CKA_VALUE, scalar),
        )
    }

    pub fn rsa_public(&self, h: CK_SESSION_HANDLE, n: &[u8], e: &[u8]) -> Rv<CK_OBJECT_HANDLE> {
        self.create(
            h,
            Tpl::new()
                .class(CKO_PUBLIC_KEY)
                .key_type(CKK_RSA)
                .bool(CKA_TOKEN, false)
                .bool(CKA_VERIFY, true)
                .bool(CKA_ENCRYPT, true)
                .bytes(CKA_MODULUS, n)
                .bytes(CKA_PUBLIC_EXPONENT, e),
        )
    }

    pub fn rsa_private(
        &self,
        h: CK_SESSION_HANDLE,
        n: &[u8],
        e: &[u8],
        d: &[u8],
        p: &[u8],
        q: &[u8],
    ) -> Rv<CK_OBJECT_HANDLE> {
        self.create(
            h,
            Tpl::new()
                .class(CKO_PRIVATE_KEY)
                .key_type(CKK_RSA)
                .bool(CKA_TOKEN, false)
                .bool(CKA_DECRYPT, true)
                .bool(CKA_SIGN, true)
                .bytes(CKA_MODULUS, n)
                .bytes(CKA_PUBLIC_EXPONENT, e)
                .bytes(CKA_PRIVATE_EXPONENT, d)
                .bytes(CKA_PRIME_1, p)
                .bytes(CKA_PRIME_2, q),
        )
    }

    // ---- cryptographic operations (two-call convention: length, then exact buffer) -------

    pub fn encrypt_init(&self, h: CK_SESSION_HANDLE, m: &Mech, key: CK_OBJECT_HANDLE) -> Rv<()> {
        let mut mech = m.ck();
        ck(call!(self, C_EncryptInit(h, &mut mech, key)))
    }

    pub fn decrypt_init(&self, h: CK_SESSION_HANDLE, m: &Mech, key: CK_OBJECT_HANDLE) -> Rv<()> {
        let mut mech = m.ck();
        ck(call!(self, C_DecryptInit(h, &mut mech, key)))
    }

    pub fn sign_init(&self, h: CK_SESSION_HANDLE, m: &Mech, key: CK_OBJECT_HANDLE) -> Rv<()> {
        let mut mech = m.ck();
        ck(call!(self, C_SignInit(h, &mut mech, key)))
    }

    pub fn verify_init(&self, h: CK_SESSION_HANDLE, m: &Mech, key: CK_OBJECT_HANDLE) -> Rv<()> {
        let mut mech = m.ck();
        ck(call!(self, C_VerifyInit(h, &mut mech, key)))
    }

    pub fn digest_init(&self, h: CK_SESSION_HANDLE, m: &Mech) -> Rv<()> {
        let mut mech = m.ck();
        ck(call!(self, C_DigestInit(h, &mut mech)))
    }

    pub fn encrypt(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mech,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
    ) -> Rv<Vec<u8>> {
        self.encrypt_init(h, m, key)?;
        self.two_call(|o, l| {
            call!(
                self,
                C_Encrypt(h, data.as_ptr() as *mut u8, data.len() as CK_ULONG, o, l)
            )
        })
    }

    pub fn decrypt(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mech,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
    ) -> Rv<Vec<u8>> {
        self.decrypt_init(h, m, key)?;
        self.two_call(|o, l| {
            call!(
                self,
                C_Decrypt(h, data.as_ptr() as *mut u8, data.len() as CK_ULONG, o, l)
            )
        })
    }

    /// Multi-part encryption with the input cut into `chunks` (cycled) sizes.
    pub fn encrypt_multi(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mech,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
        chunks: &[usize],
    ) -> Rv<Vec<u8>> {
        self.encrypt_init(h, m, key)?;
        let mut out = Vec::new();
        for part in split(data, chunks) {
            out.extend(self.two_call(|o, l| {
                call!(
                    self,
                    C_EncryptUpdate(h, part.as_ptr() as *mut u8, part.len() as CK_ULONG, o, l)
                )
            })?);
        }
        out.extend(self.two_call(|o, l| call!(self, C_EncryptFinal(h, o, l)))?);
        Ok(out)
    }

    pub fn decrypt_multi(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mech,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
        chunks: &[usize],
    ) -> Rv<Vec<u8>> {
        self.decrypt_init(h, m, key)?;
        let mut out = Vec::new();
        for part in split(data, chunks) {
            out.extend(self.two_call(|o, l| {
                call!(
                    self,
                    C_DecryptUpdate(h, part.as_ptr() as *mut u8, part.len() as CK_ULONG, o, l)
                )
            })?);
        }
        out.extend(self.two_call(|o, l| call!(self, C_DecryptFinal(h, o, l)))?);
        Ok(out)
    }

    pub fn sign(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mech,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
    ) -> Rv<Vec<u8>> {
        self.sign_init(h, m, key)?;
        self.two_call(|o, l| {
            call!(
                self,
                C_Sign(h, data.as_ptr() as *mut u8, data.len() as CK_ULONG, o, l)
            )
        })
    }

    pub fn sign_multi(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mech,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
        chunks: &[usize],
    ) -> Rv<Vec<u8>> {
        self.sign_init(h, m, key)?;
        for part in split(data, chunks) {
            ck(call!(
                self,
                C_SignUpdate(h, part.as_ptr() as *mut u8, part.len() as CK_ULONG)
            ))?;
        }
        self.two_call(|o, l| call!(self, C_SignFinal(h, o, l)))
    }

    pub fn verify(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mech,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
        sig: &[u8],
    ) -> Rv<()> {
        self.verify_init(h, m, key)?;
        ck(call!(
            self,
            C_Verify(
                h,
                data.as_ptr() as *mut u8,
                data.len() as CK_ULONG,
                sig.as_ptr() as *mut u8,
                sig.len() as CK_ULONG
            )
        ))
    }

    pub fn verify_multi(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mech,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
        sig: &[u8],
        chunks: &[usize],
    ) -> Rv<()> {
        self.verify_init(h, m, key)?;
        for part in split(data, chunks) {
            ck(call!(
                self,
                C_VerifyUpdate(h, part.as_ptr() as *mut u8, part.len() as CK_ULONG)
            ))?;
        }
        ck(call!(
            self,
            C_VerifyFinal(h, sig.as_ptr() as *mut u8, sig.len() as CK_ULONG)
        ))
    }

    pub fn digest(&self, h: CK_SESSION_HANDLE, m: &Mech, data: &[u8]) -> Rv<Vec<u8>> {
        self.digest_init(h, m)?;
        self.two_call(|o, l| {
            call!(
                self,
                C_Digest(h, data.as_ptr() as *mut u8, data.len() as CK_ULONG, o, l)
            )
        })
    }

    pub fn digest_multi(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mech,
        data: &[u8],
        chunks: &[usize],
    ) -> Rv<Vec<u8>> {
        self.digest_init(h, m)?;
        for part in split(data, chunks) {
            ck(call!(
                self,
                C_DigestUpdate(h, part.as_ptr() as *mut u8, part.len() as CK_ULONG)
            ))?;
        }
        self.two_call(|o, l| call!(self, C_DigestFinal(h, o, l)))
    }

    /// The two-call convention: ask for the length with a NULL buffer, then call again
    /// with a buffer of exactly that size.
    pub fn two_call(&self, mut f: impl FnMut(*mut u8, *mut CK_ULONG) -> CK_RV) -> Rv<Vec<u8>> {
        let mut len: CK_ULONG = 0;
        ck(f(std::ptr::null_mut(), &mut len))?;
        let mut buf = vec![0u8; len as usize];
        // A non-NULL pointer even for an empty output, so it is not a length query.
        let mut dummy = [0u8; 1];
        let p = if buf.is_empty() {
            dummy.as_mut_ptr()
        } else {
            buf.as_mut_ptr()
        };
        ck(f(p, &mut len))?;
        assert!(
            len as usize <= buf.len(),
            "module wrote more than it announced"
        );
        buf.truncate(len as usize);
        Ok(buf)
    }
}

/// Cut `data` into pieces of the sizes in `chunks` (cycled); empty input gives one empty piece.
pub fn split<'d>(data: &'d [u8], chunks: &[usize]) -> Vec<&'d [u8]> {
    if data.is_empty() {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < data.len() {
        let n = chunks[k % chunks.len()].max(1).min(data.len() - i);
        out.push(&data[i..i + n]);
        i += n;
        k += 1;
    }
    out
}

/// The module of this process's `common::ctx()`: initialised, token ready, user logged in.
pub fn raw() -> &'static Raw {
    static RAW: OnceLock<Raw> = OnceLock::new();
    RAW.get_or_init(|| {
        let _ = crate::common::ctx();
        Raw::load(&crate::common::module_path())
    })
}

// ---- DER helpers (for openssl interop and the like) -------------------------------------

pub fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        vec![n as u8]
    } else if n < 0x100 {
        vec![0x81, n as u8]
    } else {
        vec![0x82, (n >> 8) as u8, n as u8]
    }
}

pub fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend(der_len(body.len()));
    v.extend_from_slice(body);
    v
}

/// DER INTEGER of a non-negative big-endian value.
pub fn der_uint(v: &[u8]) -> Vec<u8> {
    let s = strip(v);
    let mut body = Vec::new();
    if s.first().is_some_and(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(s);
    der(0x02, &body)
}

/// Parse a DER OCTET STRING (short or long form); `None` if `v` is not one.
pub fn parse_octet_string(v: &[u8]) -> Option<&[u8]> {
    match v {
        [0x04, n, rest @ ..] if (*n as usize) < 0x80 && *n as usize == rest.len() => Some(rest),
        [0x04, 0x81, n, rest @ ..] if *n as usize == rest.len() => Some(rest),
        _ => None,
    }
}
