//! Fuzz harnesses shared by the cargo-fuzz targets (fuzz/fuzz_targets/*.rs) and the
//! bounded plain-`cargo test` run (tests/hostile_fuzz.rs). Each takes arbitrary bytes,
//! turns them into input the module's public API accepts — building C structures
//! *safely* (every pointer the harness passes points to a live buffer at least as long
//! as the length passed with it, or is NULL) — and asserts invariants besides "no
//! crash": the attribute policy never yields a weak CMK, decoders round-trip.
#![allow(dead_code, clippy::missing_safety_doc)]

use cks_pkcs11::config::Config;
use cks_pkcs11::hsm::crypto::KeyMaterial;
use cks_pkcs11::token::attribute::{Attributes, Template};
use cks_pkcs11::token::policy::{self, Creation, Readable};
use pkcs11_sys::*;
use std::ptr::null_mut;
use std::sync::OnceLock;

/// A cursor over the fuzz input; reads past the end give zeros.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
    pub fn ulong(&mut self) -> CK_ULONG {
        let b = self.take(8);
        let mut a = [0u8; 8];
        a[..b.len()].copy_from_slice(&b);
        CK_ULONG::from_le_bytes(a)
    }
    /// A "length-ish" value: mostly small, sometimes boundary or huge.
    pub fn len(&mut self) -> CK_ULONG {
        match self.u8() {
            0..=199 => (self.u8() % 80) as CK_ULONG,
            200..=219 => [0, 1, 7, 8, 15, 16, 31, 32, 33, 48, 64, 65][self.u8() as usize % 12],
            220..=239 => 1 << (self.u8() % 64),
            _ => self.ulong(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const ATTRS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_VALUE,
    CKA_VALUE_LEN,
    CKA_KEY_TYPE,
    CKA_ID,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_COPYABLE,
    CKA_MODIFIABLE,
    CKA_DESTROYABLE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_DERIVE,
    CKA_LOCAL,
    CKA_KEY_GEN_MECHANISM,
    CKA_TRUSTED,
    CKA_WRAP_WITH_TRUSTED,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_ALLOWED_MECHANISMS,
    CKA_CERTIFICATE_TYPE,
    CKA_CHECK_VALUE,
    0xC34B_0001,
    0xC34B_0003,
];

fn attr_type(b: &mut Bytes) -> CK_ATTRIBUTE_TYPE {
    let sel = b.u8();
    if sel < 240 {
        ATTRS[sel as usize % ATTRS.len()]
    } else {
        b.ulong()
    }
}

/// A value that is usually well-formed for its type and sometimes not.
fn attr_value(b: &mut Bytes, t: CK_ATTRIBUTE_TYPE) -> Vec<u8> {
    let mode = b.u8();
    let bool_like = matches!(
        t,
        CKA_TOKEN
            | CKA_PRIVATE
            | CKA_SENSITIVE
            | CKA_EXTRACTABLE
            | CKA_ALWAYS_SENSITIVE
            | CKA_NEVER_EXTRACTABLE
            | CKA_COPYABLE
            | CKA_MODIFIABLE
            | CKA_DESTROYABLE
            | CKA_ENCRYPT
            | CKA_DECRYPT
            | CKA_SIGN
            | CKA_VERIFY
            | CKA_WRAP
            | CKA_UNWRAP
            | CKA_DERIVE
            | CKA_LOCAL
            | CKA_TRUSTED
            | CKA_WRAP_WITH_TRUSTED
    );
    let ulong_like = matches!(
        t,
        CKA_CLASS
            | CKA_VALUE_LEN
            | CKA_KEY_TYPE
            | CKA_MODULUS_BITS
            | CKA_KEY_GEN_MECHANISM
            | CKA_CERTIFICATE_TYPE
    );
    match mode % 4 {
        0 | 1 if bool_like => vec![b.u8() % 2],
        0 | 1 if ulong_like => (b.u8() as CK_ULONG % 8).to_ne_bytes().to_vec(),
        _ => {
            let n = (b.u8() % 70) as usize;
            b.take(n)
        }
    }
}

pub fn template_from(b: &mut Bytes) -> Template {
    let n = b.u8() % 12;
    (0..n)
        .map(|_| {
            let t = attr_type(b);
            (t, attr_value(b, t))
        })
        .collect()
}

/// Attribute policy: bytes -> templates -> `check_template_shape`, `build`, `modify`,
/// `copy`, `read`. Invariant: no path yields a token secret/private key that is not a
/// CMK in full (sensitive, unextractable, uncopyable, always/never flags), nor a
/// readable secret component of one.
pub fn template(data: &[u8]) {
    let mut b = Bytes(data);
    let class = match b.u8() % 6 {
        0 => CKO_DATA,
        1 => CKO_CERTIFICATE,
        2 => CKO_PUBLIC_KEY,
        3 => CKO_PRIVATE_KEY,
        4 => CKO_SECRET_KEY,
        _ => b.ulong(),
    };
    let mode = b.u8();
    let creation = match mode % 3 {
        0 => Creation::Create,
        1 => Creation::Generate,
        _ => Creation::Import,
    };
    let so = mode & 0x80 != 0;
    let key_type = [CKK_AES, CKK_EC, CKK_RSA, CKK_GENERIC_SECRET][(mode as usize >> 2) % 4];
    let t1 = template_from(&mut b);
    let t2 = template_from(&mut b);
    let _ = policy::check_template_shape(class, &t1);
    let defaults = if matches!(class, CKO_PUBLIC_KEY | CKO_PRIVATE_KEY | CKO_SECRET_KEY) {
        policy::key_defaults(class, key_type)
    } else {
        policy::storage_defaults(class)
    };
    let Ok(attrs) = policy::build(class, &t1, defaults, creation, so) else {
        return;
    };
    check_cmk(&attrs, "build");
    if policy::is_cmk(&attrs) {
        assert_eq!(
            creation,
            Creation::Generate,
            "a CMK made other than by generation"
        );
    }
    if let Ok(next) = policy::modify(&attrs, &t2, so) {
        check_cmk(&next, "modify");
        if policy::is_cmk(&attrs) {
            assert!(policy::is_cmk(&next), "modify turned a CMK into a non-CMK");
        }
    }
    if let Ok(copied) = policy::copy(&attrs, &t2, so) {
        assert!(!policy::is_cmk(&attrs), "a CMK was copied");
        assert!(!policy::is_cmk(&copied), "a copy became a CMK");
    }
}

fn check_cmk(a: &Attributes, what: &str) {
    if !policy::is_cmk(a) {
        return;
    }
    for (t, want) in [
        (CKA_SENSITIVE, true),
        (CKA_EXTRACTABLE, false),
        (CKA_ALWAYS_SENSITIVE, true),
        (CKA_NEVER_EXTRACTABLE, true),
        (CKA_COPYABLE, false),
    ] {
        assert_eq!(
            a.flag(t),
            want,
            "{what}: CMK with attribute 0x{t:x} = {}",
            !want
        );
    }
    for t in [
        CKA_VALUE,
        CKA_PRIVATE_EXPONENT,
        CKA_PRIME_1,
        CKA_PRIME_2,
        CKA_EXPONENT_1,
        CKA_EXPONENT_2,
        CKA_COEFFICIENT,
    ] {
        if policy::is_secret_component(a.class(), t) {
            assert!(
                matches!(policy::read(a, t), Readable::Sensitive),
                "{what}: a CMK's 0x{t:x} is readable"
            );
        }
    }
}

/// The configuration parser: any text gives a `Config` or an error that names the file.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = std::path::Path::new("/fuzz/cks.toml");
    match Config::parse(&text, path) {
        Ok(cfg) => {
            let _ = cfg.data_dir();
            for h in &cfg.hsms {
                let _ = cfg.hsm_dir(h);
            }
        }
        Err(e) => assert!(e.to_string().contains("/fuzz/cks.toml"), "{e}"),
    }
}

/// The stored-object decoders: never panic; what decodes re-encodes to something that
/// decodes to the same value.
pub fn stored_object(data: &[u8]) {
    if let Ok(a) = Attributes::decode(data) {
        let again = Attributes::decode(&a.encode().expect("encode")).expect("re-decode");
        assert_eq!(a, again);
    }
    if let Ok(k) = KeyMaterial::decode(data) {
        let enc = k.encode().expect("encode");
        let k2 = KeyMaterial::decode(&enc).expect("re-decode");
        assert_eq!(&*k2.encode().expect("encode"), &*enc);
    }
}

// ---- mechanism parameters through the C ABI ---------------------------------------------

pub struct Module {
    pub f: &'static CK_FUNCTION_LIST,
    pub s: CK_SESSION_HANDLE,
    pub aes: CK_OBJECT_HANDLE,
    pub ec_priv: CK_OBJECT_HANDLE,
    pub rsa_priv: CK_OBJECT_HANDLE,
    pub rsa_pub: CK_OBJECT_HANDLE,
    pub hmac: CK_OBJECT_HANDLE,
}

macro_rules! c {
    ($f:expr, $name:ident $(, $arg:expr)* $(,)?) => {{
        #[allow(unused_unsafe)]
        let rv = unsafe { ($f.$name.expect(stringify!($name)))($($arg),*) };
        rv
    }};
}

fn ok(what: &str, rv: CK_RV) {
    assert_eq!(rv, CKR_OK, "{what}: 0x{rv:x}");
}

struct Attrs {
    vals: Vec<Vec<u8>>,
    attrs: Vec<CK_ATTRIBUTE>,
}

fn attrs(list: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Attrs {
    let mut a = Attrs {
        vals: list.iter().map(|(_, v)| v.clone()).collect(),
        attrs: Vec::new(),
    };
    a.attrs = list
        .iter()
        .zip(a.vals.iter_mut())
        .map(|((t, _), v)| CK_ATTRIBUTE {
            type_: *t,
            pValue: v.as_mut_ptr() as CK_VOID_PTR,
            ulValueLen: v.len() as CK_ULONG,
        })
        .collect();
    a
}

fn b(v: bool) -> Vec<u8> {
    vec![v as u8]
}

fn ul(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// The statically linked module, initialised once on a throwaway store, with a user
/// logged in and one key of each kind.
pub fn module() -> &'static Module {
    static M: OnceLock<Module> = OnceLock::new();
    M.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cks-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fuzz dir");
        let cfg = dir.join("cks.toml");
        std::fs::write(
            &cfg,
            format!(
                "[keystore]\nlabel = \"fuzz\"\ndata_dir = \"{}\"\n[kdf]\nmemory_kib = 64\niterations = 1\n\n[[hsm]]\nid = \"hsm1\"\nkind = \"embedded\"\n",
                dir.join("data").display()
            ),
        )
        .expect("config");
        std::env::set_var("CKS_CONFIG", &cfg);
        let mut fl: CK_FUNCTION_LIST_PTR = null_mut();
        // SAFETY: a valid out pointer.
        ok("C_GetFunctionList", unsafe { cks_pkcs11::ffi::C_GetFunctionList(&mut fl) });
        // SAFETY: the module's function list is a static.
        let f: &'static CK_FUNCTION_LIST = unsafe { &*fl };
        ok("C_Initialize", c!(f, C_Initialize, null_mut()));
        let mut so = b"so-pin-fuzz".to_vec();
        let mut user = b"user-pin-fuzz".to_vec();
        let mut label = [b' '; 32];
        ok("C_InitToken", c!(f, C_InitToken, 0, so.as_mut_ptr(), so.len() as CK_ULONG, label.as_mut_ptr()));
        let mut s = 0;
        ok("C_OpenSession", c!(f, C_OpenSession, 0, CKF_SERIAL_SESSION | CKF_RW_SESSION, null_mut(), None, &mut s));
        ok("SO login", c!(f, C_Login, s, CKU_SO, so.as_mut_ptr(), so.len() as CK_ULONG));
        ok("C_InitPIN", c!(f, C_InitPIN, s, user.as_mut_ptr(), user.len() as CK_ULONG));
        ok("C_Logout", c!(f, C_Logout, s));
        ok("user login", c!(f, C_Login, s, CKU_USER, user.as_mut_ptr(), user.len() as CK_ULONG));
        let gen = |m: CK_MECHANISM_TYPE, t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]| {
            let mut mm = CK_MECHANISM { mechanism: m, pParameter: null_mut(), ulParameterLen: 0 };
            let mut a = attrs(t);
            let mut k = 0;
            ok("C_GenerateKey", c!(f, C_GenerateKey, s, &mut mm, a.attrs.as_mut_ptr(), a.attrs.len() as CK_ULONG, &mut k));
            k
        };
        let pair = |m: CK_MECHANISM_TYPE, pt: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)], st: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]| {
            let mut mm = CK_MECHANISM { mechanism: m, pParameter: null_mut(), ulParameterLen: 0 };
            let mut a = attrs(pt);
            let mut c = attrs(st);
            let (mut p, mut k) = (0, 0);
            ok(
                "C_GenerateKeyPair",
                c!(f, C_GenerateKeyPair, s, &mut mm, a.attrs.as_mut_ptr(), a.attrs.len() as CK_ULONG, c.attrs.as_mut_ptr(), c.attrs.len() as CK_ULONG, &mut p, &mut k),
            );
            (p, k)
        };
        let aes = gen(
            CKM_AES_KEY_GEN,
            &[(CKA_VALUE_LEN, ul(32)), (CKA_ENCRYPT, b(true)), (CKA_DECRYPT, b(true)), (CKA_WRAP, b(true)), (CKA_UNWRAP, b(true))],
        );
        let hmac = gen(CKM_GENERIC_SECRET_KEY_GEN, &[(CKA_VALUE_LEN, ul(32)), (CKA_SIGN, b(true)), (CKA_VERIFY, b(true))]);
        let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        let (_, ec_priv) = pair(CKM_EC_KEY_PAIR_GEN, &[(CKA_EC_PARAMS, p256)], &[(CKA_DERIVE, b(true)), (CKA_SIGN, b(true))]);
        let (rsa_pub, rsa_priv) = pair(
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            &[(CKA_MODULUS_BITS, ul(2048)), (CKA_ENCRYPT, b(true))],
            &[(CKA_SIGN, b(true)), (CKA_DECRYPT, b(true))],
        );
        Module { f, s, aes, ec_priv, rsa_priv, rsa_pub, hmac }
    })
}

const MECHS: &[CK_MECHANISM_TYPE] = &[
    CKM_AES_GCM,
    CKM_AES_CTR,
    CKM_AES_CBC,
    CKM_AES_CBC_PAD,
    CKM_AES_ECB,
    CKM_AES_KEY_WRAP,
    CKM_AES_KEY_WRAP_PAD,
    CKM_RSA_PKCS_PSS,
    CKM_SHA256_RSA_PKCS_PSS,
    CKM_SHA384_RSA_PKCS_PSS,
    CKM_RSA_PKCS_OAEP,
    CKM_ECDH1_DERIVE,
    CKM_SHA256_HMAC,
    CKM_ECDSA,
    CKM_RSA_PKCS,
];

/// Mechanism parameters through the C ABI: bytes -> a parameter struct (fields from
/// the input, pointers into harness-owned buffers or NULL, the struct itself possibly
/// truncated or padded) -> `C_EncryptInit`/`C_DecryptInit`/`C_SignInit`/`C_DeriveKey`
/// with a real key, then one operation. Every answer is a defined `CK_RV`.
pub fn mechanism_params(data: &[u8]) {
    let m = module();
    let f = m.f;
    let mut b = Bytes(data);
    let mech = MECHS[b.u8() as usize % MECHS.len()];
    // Buffers the struct's pointers may point into (their true lengths bound the lengths
    // the harness passes with them).
    let mut buf1 = b.take(80);
    buf1.resize(80, 0);
    let mut buf2 = b.take(80);
    buf2.resize(80, 0);
    let ptr_len = |b: &mut Bytes, buf: &mut Vec<u8>| -> (*mut u8, CK_ULONG) {
        match b.u8() % 4 {
            0 => (null_mut(), 0),
            1 => (null_mut(), b.len()), // NULL with any length
            _ => (buf.as_mut_ptr(), b.len() % (buf.len() as CK_ULONG + 1)),
        }
    };
    let (p1, l1) = ptr_len(&mut b, &mut buf1);
    let (p2, l2) = ptr_len(&mut b, &mut buf2);
    let mut param: Vec<u8> = match mech {
        CKM_AES_GCM => struct_bytes(&CK_GCM_PARAMS {
            pIv: p1,
            ulIvLen: l1,
            ulIvBits: b.len(),
            pAAD: p2,
            ulAADLen: l2,
            ulTagBits: b.len(),
        }),
        CKM_AES_CTR => {
            let mut cb = [0u8; 16];
            cb.copy_from_slice(&buf1[..16]);
            struct_bytes(&CK_AES_CTR_PARAMS {
                ulCounterBits: b.len(),
                cb,
            })
        }
        CKM_RSA_PKCS_PSS | CKM_SHA256_RSA_PKCS_PSS | CKM_SHA384_RSA_PKCS_PSS => {
            struct_bytes(&CK_RSA_PKCS_PSS_PARAMS {
                hashAlg: [CKM_SHA_1, CKM_SHA256, CKM_SHA384, CKM_SHA512, b.ulong()]
                    [b.u8() as usize % 5],
                mgf: [CKG_MGF1_SHA1, CKG_MGF1_SHA256, CKG_MGF1_SHA384, b.ulong()]
                    [b.u8() as usize % 4],
                sLen: b.len(),
            })
        }
        CKM_RSA_PKCS_OAEP => struct_bytes(&CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: [CKM_SHA_1, CKM_SHA256, b.ulong()][b.u8() as usize % 3],
            mgf: [CKG_MGF1_SHA1, CKG_MGF1_SHA256, b.ulong()][b.u8() as usize % 3],
            source: [0, CKZ_DATA_SPECIFIED, b.ulong()][b.u8() as usize % 3],
            pSourceData: p1 as CK_VOID_PTR,
            ulSourceDataLen: l1,
        }),
        CKM_ECDH1_DERIVE => {
            // Often a real point (the generator), so derivation gets past the parse.
            let (pp, pl) = if b.u8() % 2 == 0 {
                buf2[0] = 0x04;
                buf2[1..65].copy_from_slice(&P256_G);
                (buf2.as_mut_ptr(), 65)
            } else {
                (p2, l2)
            };
            struct_bytes(&CK_ECDH1_DERIVE_PARAMS {
                kdf: [
                    CKD_NULL,
                    CKD_SHA1_KDF,
                    CKD_SHA256_KDF,
                    CKD_SHA512_KDF,
                    b.ulong(),
                ][b.u8() as usize % 5],
                ulSharedDataLen: l1,
                pSharedData: p1,
                ulPublicDataLen: pl,
                pPublicData: pp,
            })
        }
        _ => {
            let n = (b.u8() % 40) as usize;
            b.take(n)
        }
    };
    // Truncate or pad the struct; maybe place it at an odd address.
    match b.u8() % 4 {
        0 => {
            let n = param.len().saturating_sub(1 + b.u8() as usize % 16);
            param.truncate(n)
        }
        1 => {
            let n = param.len() + 1 + b.u8() as usize % 16;
            param.resize(n, 0)
        }
        _ => {}
    }
    let offset = (b.u8() % 2) as usize;
    let mut holder = vec![0u8; offset];
    holder.extend_from_slice(&param);
    let (pp, pl) = if b.u8() % 16 == 0 {
        (null_mut(), b.len()) // NULL parameter, any length
    } else if holder.len() > offset {
        (
            holder[offset..].as_mut_ptr() as CK_VOID_PTR,
            (holder.len() - offset) as CK_ULONG,
        )
    } else {
        (null_mut(), 0)
    };
    let mut mm = CK_MECHANISM {
        mechanism: mech,
        pParameter: pp,
        ulParameterLen: pl,
    };
    let s = m.s;
    let mut input = b.take(64);
    let mut out = vec![0u8; 1024];
    let mut out_len: CK_ULONG = out.len() as CK_ULONG;
    let ip = if input.is_empty() {
        null_mut()
    } else {
        input.as_mut_ptr()
    };
    let il = input.len() as CK_ULONG;
    match mech {
        CKM_ECDH1_DERIVE => {
            let mut t = attrs(&[
                (CKA_CLASS, ul(CKO_SECRET_KEY)),
                (CKA_KEY_TYPE, ul(CKK_GENERIC_SECRET)),
                (CKA_VALUE_LEN, ul(1 + b.u8() as CK_ULONG % 64)),
            ]);
            let mut k = 0;
            let rv = c!(
                f,
                C_DeriveKey,
                s,
                &mut mm,
                m.ec_priv,
                t.attrs.as_mut_ptr(),
                3,
                &mut k
            );
            if rv == CKR_OK {
                ok("destroy derived key", c!(f, C_DestroyObject, s, k));
            }
        }
        CKM_SHA256_HMAC
        | CKM_ECDSA
        | CKM_RSA_PKCS_PSS
        | CKM_SHA256_RSA_PKCS_PSS
        | CKM_SHA384_RSA_PKCS_PSS => {
            let key = match mech {
                CKM_SHA256_HMAC => m.hmac,
                CKM_ECDSA => m.ec_priv,
                _ => m.rsa_priv,
            };
            if c!(f, C_SignInit, s, &mut mm, key) == CKR_OK {
                let _ = c!(f, C_Sign, s, ip, il, out.as_mut_ptr(), &mut out_len);
            }
            c!(f, C_SignInit, s, null_mut(), key);
        }
        _ => {
            let key = match mech {
                CKM_RSA_PKCS_OAEP | CKM_RSA_PKCS => m.rsa_pub,
                _ => m.aes,
            };
            let decrypt = b.u8() % 2 == 1;
            let dkey = if key == m.rsa_pub { m.rsa_priv } else { key };
            if decrypt {
                if c!(f, C_DecryptInit, s, &mut mm, dkey) == CKR_OK {
                    let _ = c!(f, C_Decrypt, s, ip, il, out.as_mut_ptr(), &mut out_len);
                }
                c!(f, C_DecryptInit, s, null_mut(), dkey);
            } else {
                if c!(f, C_EncryptInit, s, &mut mm, key) == CKR_OK {
                    let _ = c!(f, C_Encrypt, s, ip, il, out.as_mut_ptr(), &mut out_len);
                }
                c!(f, C_EncryptInit, s, null_mut(), key);
            }
        }
    }
    // The session is still usable: the module did not end up in a poisoned state.
    let mut r = [0u8; 4];
    ok(
        "C_GenerateRandom after the case",
        c!(f, C_GenerateRandom, s, r.as_mut_ptr(), 4),
    );
}

/// The P-256 generator, x || y.
const P256_G: [u8; 64] = [
    0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2,
    0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96,
    0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16,
    0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
];

fn struct_bytes<T: Copy>(v: &T) -> Vec<u8> {
    let n = std::mem::size_of::<T>();
    let mut out = vec![0u8; n];
    // SAFETY: T is a plain C struct; exactly its size is copied.
    unsafe { std::ptr::copy_nonoverlapping(v as *const T as *const u8, out.as_mut_ptr(), n) };
    out
}
