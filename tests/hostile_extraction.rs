//! The extraction catalogue (issue 9): named attempts to get a CMK's key material, or
//! an extractable copy of a CMK, through every door PKCS#11 offers. Each attempt is its
//! own test and asserts the precise `CKR_*` it must be refused with. Where an attempt
//! legitimately succeeds (ECDH with a chosen public key yields a *fresh* shared secret)
//! the test proves the result is not, and does not contain, the CMK's material.
//!
//! The CMKs' true bytes are learnt the way only the owner of the PIN could: by opening
//! the embedded instance's store with the user PIN through the crate's own code. They
//! are then searched for in everything an attacker can see.

mod common;
#[macro_use]
mod hostile_support;

use cks_pkcs11::config::Config;
use cks_pkcs11::hsm::crypto::{EcPrivate, KeyMaterial};
use cks_pkcs11::hsm::embedded::PinUser;
use cks_pkcs11::keystore::KeyStore;
use cks_pkcs11::token::attribute::Attributes;
use cks_pkcs11::token::policy::CKA_CKS_KEY_ID;
use hostile_support::*;
use pkcs11_sys::*;
use rsa::traits::PrivateKeyParts;
use std::ptr::null_mut;
use std::sync::OnceLock;

/// The victims (CMKs) and the attacker's own keys, made once per process.
struct Fx {
    f: &'static CK_FUNCTION_LIST,
    aes: CK_OBJECT_HANDLE,
    hmac: CK_OBJECT_HANDLE,
    ec_pub: CK_OBJECT_HANDLE,
    ec: CK_OBJECT_HANDLE,
    rsa: CK_OBJECT_HANDLE,
    /// The attacker's wrapping keys: a session AES key and a token AES key (itself a CMK).
    wrap_session: CK_OBJECT_HANDLE,
    wrap_token: CK_OBJECT_HANDLE,
    /// RSA public keys to wrap with: of a session pair and of a token pair.
    rsa_wrap_session: CK_OBJECT_HANDLE,
    rsa_wrap_token: CK_OBJECT_HANDLE,
    /// An extractable session key: shows each wrapping set-up works when allowed.
    extractable: CK_OBJECT_HANDLE,
    /// The true material of the victims, from the store opened with the PIN.
    truth: Truth,
}

struct Truth {
    aes: Vec<u8>,
    hmac: Vec<u8>,
    ec_scalar: Vec<u8>,
    /// d, p, q, dp, dq, qinv.
    rsa_parts: Vec<(&'static str, Vec<u8>)>,
    /// The cluster's domain key (as each instance holds it).
    domain_keys: Vec<Vec<u8>>,
}

impl Truth {
    /// Every secret byte string an attacker must never see.
    fn all(&self) -> Vec<(&'static str, &[u8])> {
        let mut v: Vec<(&'static str, &[u8])> = vec![
            ("AES CMK value", &self.aes),
            ("HMAC CMK value", &self.hmac),
            ("EC CMK scalar", &self.ec_scalar),
        ];
        for (n, b) in &self.rsa_parts {
            v.push((n, b));
        }
        for d in &self.domain_keys {
            v.push(("domain key", d));
        }
        v
    }
}

/// `haystack` contains any 16-byte window of `secret`.
fn leaks(haystack: &[u8], secret: &[u8]) -> bool {
    let w = 16.min(secret.len());
    secret
        .windows(w)
        .step_by(8)
        .any(|win| haystack.windows(w).any(|h| h == win))
}

fn assert_no_secret(what: &str, data: &[u8], t: &Truth) {
    for (name, s) in t.all() {
        assert!(!leaks(data, s), "{what} contains bytes of the {name}");
    }
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let f = raw().f;
        let s = open(f, true);
        let aes = aes_key(f, s, true);
        let (rv, hmac) = gen_secret(
            f,
            s,
            CKM_GENERIC_SECRET_KEY_GEN,
            Tpl::new()
                .bool(CKA_TOKEN, true)
                .ulong(CKA_VALUE_LEN, 32)
                .bool(CKA_SIGN, true)
                .bool(CKA_VERIFY, true),
        );
        expect_rv("HMAC CMK", rv, CKR_OK);
        let (ec_pub, ec) = ec_pair(f, s, true);
        let (_, rsa) = rsa_pair(f, s, true);
        let wrap_session = aes_key(f, s, false);
        let wrap_token = aes_key(f, s, true);
        let (rsa_wrap_session, _) = rsa_pair(f, s, false);
        let (rsa_wrap_token, _) = rsa_pair(f, s, true);
        let (rv, extractable) = gen_secret(
            f,
            s,
            CKM_AES_KEY_GEN,
            Tpl::new()
                .ulong(CKA_VALUE_LEN, 32)
                .bool(CKA_EXTRACTABLE, true),
        );
        expect_rv("extractable session key", rv, CKR_OK);

        // The truth, as only the PIN holder could learn it: the key store opened with
        // the user PIN through the crate's own code.
        let c = common::ctx();
        let cfg = Config::from_file(&c.dir.join("cks.toml")).expect("config");
        let ks = KeyStore::open(&cfg).expect("open key store");
        ks.login(PinUser::User, common::USER_PIN.as_bytes())
            .expect("login to the key store");
        let stored = ks.cluster.load_objects().expect("stored objects");
        let material = |o| {
            let (rv, id, _) = get_attr(f, s, o, CKA_CKS_KEY_ID);
            expect_rv("CKA_CKS_KEY_ID", rv, CKR_OK);
            let id = id.unwrap();
            let (_, class, _) = get_attr(f, s, o, CKA_CLASS);
            let class = class.unwrap();
            // The stored object with this key id and class (the key id may name a CMK
            // rather than the object itself).
            let uid = stored
                .iter()
                .find(|so| {
                    Attributes::decode(&so.attrs).is_ok_and(|a| {
                        a.get(CKA_CKS_KEY_ID) == Some(&id[..])
                            && a.get(CKA_CLASS) == Some(&class[..])
                    })
                })
                .map(|so| so.uid)
                .expect("stored object of the key");
            ks.cluster.material(uid).expect("material")
        };
        let secret = |o| match &*material(o) {
            KeyMaterial::Secret(v) => v.to_vec(),
            other => panic!("not a secret: {other:?}"),
        };
        let domain_keys: Vec<Vec<u8>> = ks
            .cluster
            .members()
            .iter()
            .filter_map(|m| m.instance().ok()?.domain_key().ok())
            .map(|k| k.to_vec())
            .collect();
        let truth_aes = secret(aes);
        let truth_hmac = secret(hmac);
        assert_eq!((truth_aes.len(), truth_hmac.len()), (32, 32));
        let ec_scalar = match &*material(ec) {
            KeyMaterial::EcPrivate(EcPrivate::P256(k)) => k.to_bytes().to_vec(),
            other => panic!("not a P-256 key: {other:?}"),
        };
        let rsa_parts = match &*material(rsa) {
            KeyMaterial::RsaPrivate(k) => vec![
                ("RSA private exponent", k.d().to_bytes_be()),
                ("RSA prime 1", k.primes()[0].to_bytes_be()),
                ("RSA prime 2", k.primes()[1].to_bytes_be()),
                ("RSA exponent 1", k.dp().unwrap().to_bytes_be()),
                ("RSA exponent 2", k.dq().unwrap().to_bytes_be()),
                (
                    "RSA coefficient",
                    k.crt_coefficient().unwrap().to_bytes_be(),
                ),
            ],
            other => panic!("not an RSA key: {other:?}"),
        };
        // `s` stays open: the session keys above live in it.
        Fx {
            f,
            aes,
            hmac,
            ec_pub,
            ec,
            rsa,
            wrap_session,
            wrap_token,
            rsa_wrap_session,
            rsa_wrap_token,
            extractable,
            truth: Truth {
                aes: truth_aes,
                hmac: truth_hmac,
                ec_scalar,
                rsa_parts,
                domain_keys,
            },
        }
    })
}

/// A fresh R/W session for one attempt.
fn sess() -> (&'static Fx, CK_SESSION_HANDLE) {
    let x = fx();
    (x, open(x.f, true))
}

// ---- 1. reading key material ------------------------------------------------------------

/// Ask for a sensitive attribute three ways: length query, a huge real buffer, and in
/// the middle of a template with a readable attribute. Each must be
/// CKR_ATTRIBUTE_SENSITIVE with length CK_UNAVAILABLE_INFORMATION, and the buffer
/// must stay untouched.
fn refuse_read(pick: fn(&Fx) -> CK_OBJECT_HANDLE, t: CK_ATTRIBUTE_TYPE) {
    let (x, s) = sess();
    let o = pick(x);
    let f = x.f;
    let mut a = CK_ATTRIBUTE {
        type_: t,
        pValue: null_mut(),
        ulValueLen: 0,
    };
    expect_rv(
        "length query",
        call!(f, C_GetAttributeValue, s, o, &mut a, 1),
        CKR_ATTRIBUTE_SENSITIVE,
    );
    assert_eq!(a.ulValueLen, CK_UNAVAILABLE_INFORMATION);
    let mut big = vec![0xeeu8; 1 << 16];
    let mut attrs = [
        CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: null_mut(),
            ulValueLen: 0,
        },
        CK_ATTRIBUTE {
            type_: t,
            pValue: big.as_mut_ptr() as CK_VOID_PTR,
            ulValueLen: big.len() as CK_ULONG,
        },
    ];
    expect_rv(
        "read into a 64 KiB buffer",
        call!(f, C_GetAttributeValue, s, o, attrs.as_mut_ptr(), 2),
        CKR_ATTRIBUTE_SENSITIVE,
    );
    assert_eq!(attrs[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_ne!(attrs[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert!(big.iter().all(|b| *b == 0xee), "the buffer was written to");
    close(f, s);
}

macro_rules! refuse_read {
    ($name:ident, $key:ident, $attr:expr) => {
        #[test]
        fn $name() {
            refuse_read(|x| x.$key, $attr);
        }
    };
}

refuse_read!(read_value_of_aes_cmk, aes, CKA_VALUE);
refuse_read!(read_value_of_hmac_cmk, hmac, CKA_VALUE);
refuse_read!(read_ec_private_value, ec, CKA_VALUE);
refuse_read!(read_rsa_private_exponent, rsa, CKA_PRIVATE_EXPONENT);
refuse_read!(read_rsa_prime_1, rsa, CKA_PRIME_1);
refuse_read!(read_rsa_prime_2, rsa, CKA_PRIME_2);
refuse_read!(read_rsa_exponent_1, rsa, CKA_EXPONENT_1);
refuse_read!(read_rsa_exponent_2, rsa, CKA_EXPONENT_2);
refuse_read!(read_rsa_coefficient, rsa, CKA_COEFFICIENT);

/// Every attribute type a caller can name (standard range and the module's vendor
/// range), read with whatever length the module announces, and the object size:
/// nothing readable holds a byte of any CMK.
#[test]
fn every_readable_attribute_and_object_size_hold_no_key_bytes() {
    let (x, s) = sess();
    let f = x.f;
    let mut types: Vec<CK_ATTRIBUTE_TYPE> = (0..0x700).collect();
    types.extend([0x4000_0211, 0x4000_0212, 0x4000_0600]);
    types.extend(0xC34B_0000..0xC34B_0010);
    let mut readable = 0;
    for o in [x.aes, x.hmac, x.ec, x.ec_pub, x.rsa] {
        for &t in &types {
            let (rv, v, _) = get_attr(f, s, o, t);
            if let Some(v) = v {
                readable += 1;
                assert_no_secret(&format!("attribute 0x{t:x} of object {o}"), &v, &x.truth);
            } else {
                expect_any(
                    &format!("attribute 0x{t:x}"),
                    rv,
                    &[CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_SENSITIVE],
                );
            }
        }
        let mut size: CK_ULONG = 0;
        let rv = call!(f, C_GetObjectSize, s, o, &mut size);
        // The size may be withheld (CKR_INFORMATION_SENSITIVE) but never be absurd.
        expect_any("C_GetObjectSize", rv, &[CKR_OK, CKR_INFORMATION_SENSITIVE]);
        assert!(size < 1 << 20);
    }
    assert!(readable > 50, "only {readable} attributes were readable");
    close(f, s);
}

/// C_FindObjects as an oracle: a template with the CMK's true value must not match it
/// (that would let an attacker confirm guesses).
#[test]
fn find_objects_by_true_key_value_is_no_oracle() {
    let (x, s) = sess();
    let f = x.f;
    for (what, attr, val, victim) in [
        ("AES value", CKA_VALUE, x.truth.aes.clone(), x.aes),
        ("HMAC value", CKA_VALUE, x.truth.hmac.clone(), x.hmac),
        ("EC scalar", CKA_VALUE, x.truth.ec_scalar.clone(), x.ec),
        (
            "RSA private exponent",
            CKA_PRIVATE_EXPONENT,
            x.truth.rsa_parts[0].1.clone(),
            x.rsa,
        ),
    ] {
        let found = find(f, s, Tpl::new().bytes(attr, &val));
        assert!(
            !found.contains(&victim),
            "searching by the {what} finds the CMK"
        );
    }
    close(f, s);
}

// ---- 2. weakening the flags -------------------------------------------------------------

fn refuse_set(pick: fn(&Fx) -> CK_OBJECT_HANDLE, t: CK_ATTRIBUTE_TYPE, v: bool) {
    let (x, s) = sess();
    let o = pick(x);
    let before = get_bool(x.f, s, o, t);
    expect_rv(
        "C_SetAttributeValue",
        set_attrs(x.f, s, o, Tpl::new().bool(t, v)),
        CKR_ATTRIBUTE_READ_ONLY,
    );
    assert_eq!(get_bool(x.f, s, o, t), before, "attribute changed anyway");
    assert!(get_bool(x.f, s, o, CKA_SENSITIVE));
    assert!(!get_bool(x.f, s, o, CKA_EXTRACTABLE));
    close(x.f, s);
}

macro_rules! refuse_set {
    ($name:ident, $key:ident, $attr:expr, $v:expr) => {
        #[test]
        fn $name() {
            refuse_set(|x| x.$key, $attr, $v);
        }
    };
}

refuse_set!(set_sensitive_false_on_aes_cmk, aes, CKA_SENSITIVE, false);
refuse_set!(set_extractable_true_on_aes_cmk, aes, CKA_EXTRACTABLE, true);
refuse_set!(
    set_always_sensitive_false_on_aes_cmk,
    aes,
    CKA_ALWAYS_SENSITIVE,
    false
);
refuse_set!(
    set_never_extractable_false_on_aes_cmk,
    aes,
    CKA_NEVER_EXTRACTABLE,
    false
);
refuse_set!(set_copyable_true_on_aes_cmk, aes, CKA_COPYABLE, true);
refuse_set!(set_token_false_on_aes_cmk, aes, CKA_TOKEN, false);
refuse_set!(set_private_false_on_aes_cmk, aes, CKA_PRIVATE, false);
refuse_set!(set_sensitive_false_on_ec_cmk, ec, CKA_SENSITIVE, false);
refuse_set!(set_extractable_true_on_ec_cmk, ec, CKA_EXTRACTABLE, true);
refuse_set!(set_extractable_true_on_rsa_cmk, rsa, CKA_EXTRACTABLE, true);
refuse_set!(set_sensitive_false_on_hmac_cmk, hmac, CKA_SENSITIVE, false);

/// Replacing a CMK's material with bytes the attacker knows.
#[test]
fn set_cka_value_of_aes_cmk_to_known_bytes() {
    let (x, s) = sess();
    expect_rv(
        "C_SetAttributeValue CKA_VALUE",
        set_attrs(x.f, s, x.aes, Tpl::new().bytes(CKA_VALUE, &[0u8; 32])),
        CKR_ATTRIBUTE_READ_ONLY,
    );
    close(x.f, s);
}

// ---- 3. copies ----------------------------------------------------------------------------

fn refuse_copy(pick: fn(&Fx) -> CK_OBJECT_HANDLE, t: fn() -> Tpl) {
    let (x, s) = sess();
    let mut t = t();
    let mut out = 0;
    expect_rv(
        "C_CopyObject",
        call!(x.f, C_CopyObject, s, pick(x), t.c(), t.n(), &mut out),
        CKR_ACTION_PROHIBITED,
    );
    close(x.f, s);
}

macro_rules! refuse_copy {
    ($name:ident, $key:ident, $tpl:expr) => {
        #[test]
        fn $name() {
            refuse_copy(|x| x.$key, || $tpl);
        }
    };
}

refuse_copy!(copy_aes_cmk_plain, aes, Tpl::new());
refuse_copy!(
    copy_aes_cmk_as_session_key,
    aes,
    Tpl::new().bool(CKA_TOKEN, false)
);
refuse_copy!(
    copy_aes_cmk_not_sensitive,
    aes,
    Tpl::new().bool(CKA_SENSITIVE, false)
);
refuse_copy!(
    copy_aes_cmk_extractable,
    aes,
    Tpl::new().bool(CKA_EXTRACTABLE, true)
);
refuse_copy!(
    copy_aes_cmk_as_extractable_session_key,
    aes,
    Tpl::new()
        .bool(CKA_TOKEN, false)
        .bool(CKA_SENSITIVE, false)
        .bool(CKA_EXTRACTABLE, true)
);
refuse_copy!(
    copy_ec_cmk_extractable,
    ec,
    Tpl::new()
        .bool(CKA_TOKEN, false)
        .bool(CKA_EXTRACTABLE, true)
);
refuse_copy!(
    copy_rsa_cmk_not_sensitive,
    rsa,
    Tpl::new().bool(CKA_TOKEN, false).bool(CKA_SENSITIVE, false)
);

// ---- 4. wrapping --------------------------------------------------------------------------

/// Wrap each CMK with `wrapping` and mechanism `m`: always CKR_KEY_UNEXTRACTABLE. The
/// same set-up wraps an extractable session key, so the refusal is the policy's.
fn refuse_wrap(m: CK_MECHANISM_TYPE, param: Vec<u8>, wrappers: &[(&str, CK_OBJECT_HANDLE)]) {
    let (x, s) = sess();
    for (wname, w) in wrappers {
        let mut p = param.clone();
        let mut mm = if p.is_empty() {
            mech(m)
        } else {
            mech_with(m, &mut p)
        };
        let (rv, blob) = wrap(x.f, s, &mut mm, *w, x.extractable);
        expect_rv(
            &format!("control: wrap an extractable key with {wname}"),
            rv,
            CKR_OK,
        );
        assert!(!blob.is_empty());
        for (vname, victim) in [
            ("AES CMK", x.aes),
            ("HMAC CMK", x.hmac),
            ("EC CMK", x.ec),
            ("RSA CMK", x.rsa),
        ] {
            let (rv, blob) = wrap(x.f, s, &mut mm, *w, victim);
            expect_rv(
                &format!("wrap the {vname} with the {wname}"),
                rv,
                CKR_KEY_UNEXTRACTABLE,
            );
            assert!(blob.is_empty());
        }
    }
    close(x.f, s);
}

fn aes_wrappers(x: &Fx) -> Vec<(&'static str, CK_OBJECT_HANDLE)> {
    vec![
        ("attacker's session AES key", x.wrap_session),
        ("attacker's token AES key", x.wrap_token),
    ]
}

fn rsa_wrappers(x: &Fx) -> Vec<(&'static str, CK_OBJECT_HANDLE)> {
    vec![
        ("attacker's session RSA public key", x.rsa_wrap_session),
        ("attacker's token RSA public key", x.rsa_wrap_token),
    ]
}

#[test]
fn wrap_cmks_with_aes_key_wrap() {
    refuse_wrap(CKM_AES_KEY_WRAP, vec![], &aes_wrappers(fx()));
}

#[test]
fn wrap_cmks_with_aes_key_wrap_pad() {
    refuse_wrap(CKM_AES_KEY_WRAP_PAD, vec![], &aes_wrappers(fx()));
}

#[test]
fn wrap_cmks_with_aes_gcm() {
    static IV: [u8; 12] = [9; 12];
    let p = CK_GCM_PARAMS {
        pIv: IV.as_ptr() as CK_BYTE_PTR,
        ulIvLen: 12,
        ulIvBits: 96,
        pAAD: null_mut(),
        ulAADLen: 0,
        ulTagBits: 128,
    };
    refuse_wrap(CKM_AES_GCM, struct_bytes(&p), &aes_wrappers(fx()));
}

#[test]
fn wrap_cmks_with_aes_cbc_pad() {
    refuse_wrap(CKM_AES_CBC_PAD, vec![3u8; 16], &aes_wrappers(fx()));
}

#[test]
fn wrap_cmks_with_rsa_pkcs() {
    refuse_wrap(CKM_RSA_PKCS, vec![], &rsa_wrappers(fx()));
}

#[test]
fn wrap_cmks_with_rsa_pkcs_oaep() {
    let p = CK_RSA_PKCS_OAEP_PARAMS {
        hashAlg: CKM_SHA256,
        mgf: CKG_MGF1_SHA256,
        source: CKZ_DATA_SPECIFIED,
        pSourceData: null_mut(),
        ulSourceDataLen: 0,
    };
    refuse_wrap(CKM_RSA_PKCS_OAEP, struct_bytes(&p), &rsa_wrappers(fx()));
}

/// A CMK that may wrap (CKA_WRAP) wrapping itself.
#[test]
fn wrap_aes_cmk_with_itself() {
    let (x, s) = sess();
    let mut m = mech(CKM_AES_KEY_WRAP_PAD);
    let (rv, _) = wrap(x.f, s, &mut m, x.aes, x.aes);
    expect_rv("wrap the CMK with itself", rv, CKR_KEY_UNEXTRACTABLE);
    close(x.f, s);
}

/// The domain key (the cluster's wrapping key) must not be reachable as an object; if
/// any token secret key that can wrap is visible, it cannot wrap a CMK either.
#[test]
fn wrap_cmks_with_every_visible_token_wrapping_key() {
    let (x, s) = sess();
    let wrappers = find(
        x.f,
        s,
        Tpl::new()
            .ulong(CKA_CLASS, CKO_SECRET_KEY)
            .bool(CKA_TOKEN, true)
            .bool(CKA_WRAP, true),
    );
    assert!(wrappers.contains(&x.wrap_token));
    for w in wrappers {
        assert!(get_bool(x.f, s, w, CKA_SENSITIVE));
        assert!(!get_bool(x.f, s, w, CKA_EXTRACTABLE));
        for m in [CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD] {
            let mut mm = mech(m);
            for victim in [x.aes, x.hmac, x.ec, x.rsa] {
                let (rv, _) = wrap(x.f, s, &mut mm, w, victim);
                expect_rv("wrap a CMK", rv, CKR_KEY_UNEXTRACTABLE);
            }
        }
    }
    close(x.f, s);
}

// ---- 5. derivation ------------------------------------------------------------------------

fn ecdh_params(kdf: CK_EC_KDF_TYPE, public: &mut [u8]) -> Vec<u8> {
    let p = CK_ECDH1_DERIVE_PARAMS {
        kdf,
        ulSharedDataLen: 0,
        pSharedData: null_mut(),
        ulPublicDataLen: public.len() as CK_ULONG,
        pPublicData: public.as_mut_ptr(),
    };
    struct_bytes(&p)
}

/// ECDH on the EC CMK with `public`; a readable session secret of `len` bytes.
fn derive(
    x: &Fx,
    s: CK_SESSION_HANDLE,
    kdf: CK_EC_KDF_TYPE,
    public: &[u8],
    mut t: Tpl,
) -> (CK_RV, CK_OBJECT_HANDLE) {
    let mut pt = public.to_vec();
    let mut pb = ecdh_params(kdf, &mut pt);
    let mut m = mech_with(CKM_ECDH1_DERIVE, &mut pb);
    let mut out = 0;
    let rv = call!(x.f, C_DeriveKey, s, &mut m, x.ec, t.c(), t.n(), &mut out);
    (rv, out)
}

fn readable_secret(len: CK_ULONG) -> Tpl {
    Tpl::new()
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET)
        .ulong(CKA_VALUE_LEN, len)
        .bool(CKA_SENSITIVE, false)
        .bool(CKA_EXTRACTABLE, true)
}

fn cmk_point(x: &Fx, s: CK_SESSION_HANDLE) -> Vec<u8> {
    let (rv, v, _) = get_attr(x.f, s, x.ec_pub, CKA_EC_POINT);
    expect_rv("CKA_EC_POINT", rv, CKR_OK);
    let v = v.unwrap();
    assert_eq!(
        (v[0], v[1], v.len()),
        (0x04, 65, 67),
        "DER OCTET STRING of a P-256 point"
    );
    v[2..].to_vec()
}

fn scalar(x: &Fx) -> p256::NonZeroScalar {
    let sk = p256::SecretKey::from_slice(&x.truth.ec_scalar).unwrap();
    sk.to_nonzero_scalar()
}

/// ECDH of the CMK with a public point, computed here from the true scalar.
fn expected_shared(x: &Fx, point: &[u8]) -> Vec<u8> {
    let p = p256::PublicKey::from_sec1_bytes(point).unwrap();
    let z = p256::ecdh::diffie_hellman(scalar(x), p.as_affine());
    z.raw_secret_bytes().to_vec()
}

fn read_value(x: &Fx, s: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> Vec<u8> {
    let (rv, v, _) = get_attr(x.f, s, o, CKA_VALUE);
    expect_rv("CKA_VALUE of the derived session key", rv, CKR_OK);
    v.unwrap()
}

/// ECDH with the CMK's own public point: d·(d·G). Allowed (a fresh shared secret), and
/// it is not the scalar.
#[test]
fn ecdh_with_the_cmks_own_public_point() {
    let (x, s) = sess();
    let point = cmk_point(x, s);
    let (rv, k) = derive(x, s, CKD_NULL, &point, readable_secret(32));
    expect_rv("derive", rv, CKR_OK);
    let z = read_value(x, s, k);
    assert_eq!(z, expected_shared(x, &point));
    assert_ne!(z, x.truth.ec_scalar);
    assert_no_secret("the derived secret", &z, &x.truth);
    close(x.f, s);
}

/// ECDH with a public key the attacker chose: the result is what the attacker can
/// compute alone from the CMK's public key — never the scalar.
#[test]
fn ecdh_with_an_attacker_chosen_public_key() {
    let (x, s) = sess();
    let mine = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let my_point = mine.public_key().to_sec1_bytes();
    let (rv, k) = derive(x, s, CKD_NULL, &my_point, readable_secret(32));
    expect_rv("derive", rv, CKR_OK);
    let z = read_value(x, s, k);
    let cmk_pub = p256::PublicKey::from_sec1_bytes(&cmk_point(x, s)).unwrap();
    let mine_z = p256::ecdh::diffie_hellman(mine.to_nonzero_scalar(), cmk_pub.as_affine());
    assert_eq!(z, mine_z.raw_secret_bytes().to_vec());
    assert_no_secret("the derived secret", &z, &x.truth);
    close(x.f, s);
}

/// ECDH with the generator G: x(d·G) is the CMK's public x-coordinate, nothing more.
#[test]
fn ecdh_with_the_generator_point() {
    let (x, s) = sess();
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let g = p256::AffinePoint::GENERATOR.to_encoded_point(false);
    let (rv, k) = derive(x, s, CKD_NULL, g.as_bytes(), readable_secret(32));
    expect_rv("derive", rv, CKR_OK);
    let z = read_value(x, s, k);
    assert_eq!(z, cmk_point(x, s)[1..33].to_vec(), "x(d·G) is the public x");
    assert_no_secret("the derived secret", &z, &x.truth);
    close(x.f, s);
}

/// Points off the curve, the identity, a point of another curve: refused before any
/// scalar multiplication (no invalid-curve attack).
#[test]
fn ecdh_with_invalid_points() {
    let (x, s) = sess();
    let mut off = cmk_point(x, s);
    off[64] ^= 1;
    let zero = [&[0x04u8][..], &[0u8; 64]].concat();
    use p384::elliptic_curve::sec1::ToEncodedPoint;
    let p384g = p384::AffinePoint::GENERATOR.to_encoded_point(false);
    let mut compressed_bad = vec![0x02u8];
    compressed_bad.extend([0xffu8; 32]);
    for (what, pt) in [
        ("a point off the curve", off),
        ("the point at infinity / zero", zero),
        ("the P-384 generator", p384g.as_bytes().to_vec()),
        ("a compressed x beyond the field", compressed_bad),
        ("a lone 0x00 (SEC1 identity)", vec![0u8]),
    ] {
        let (rv, _) = derive(x, s, CKD_NULL, &pt, readable_secret(32));
        expect_rv(
            &format!("ECDH with {what}"),
            rv,
            CKR_MECHANISM_PARAM_INVALID,
        );
    }
    close(x.f, s);
}

/// Asking CKD_NULL for more bytes than the shared secret has: refused, never padded
/// with anything else.
#[test]
fn ecdh_asking_for_more_than_the_shared_secret() {
    let (x, s) = sess();
    let point = cmk_point(x, s);
    for len in [33, 64, 1 << 20] {
        let (rv, _) = derive(x, s, CKD_NULL, &point, readable_secret(len));
        expect_any(
            &format!("CKD_NULL for {len} bytes"),
            rv,
            &[
                CKR_KEY_SIZE_RANGE,
                CKR_TEMPLATE_INCONSISTENT,
                CKR_ATTRIBUTE_VALUE_INVALID,
            ],
        );
    }
    // With a KDF, long outputs are a hash stream: still no scalar inside.
    let (rv, k) = derive(x, s, CKD_SHA256_KDF, &point, readable_secret(256));
    if rv == CKR_OK {
        let v = read_value(x, s, k);
        assert_no_secret("KDF output", &v, &x.truth);
    } else {
        expect_any("SHA256 KDF for 256 bytes", rv, &[CKR_KEY_SIZE_RANGE]);
    }
    close(x.f, s);
}

/// Deriving straight into a token key (the derived key would be a CMK it could control).
#[test]
fn ecdh_into_a_token_key() {
    let (x, s) = sess();
    let point = cmk_point(x, s);
    let (rv, _) = derive(
        x,
        s,
        CKD_NULL,
        &point,
        Tpl::new()
            .ulong(CKA_CLASS, CKO_SECRET_KEY)
            .ulong(CKA_KEY_TYPE, CKK_AES)
            .ulong(CKA_VALUE_LEN, 32)
            .bool(CKA_TOKEN, true),
    );
    expect_rv("derive into a token key", rv, CKR_TEMPLATE_INCONSISTENT);
    close(x.f, s);
}

/// Deriving from a key that is not EC (the AES CMK) or with the public half.
#[test]
fn derive_from_non_ec_keys() {
    let (x, s) = sess();
    let point = cmk_point(x, s);
    for (what, base, want) in [
        ("the AES CMK", x.aes, CKR_KEY_TYPE_INCONSISTENT),
        ("the EC public key", x.ec_pub, CKR_KEY_TYPE_INCONSISTENT),
    ] {
        let mut pt = point.clone();
        let mut pb = ecdh_params(CKD_NULL, &mut pt);
        let mut m = mech_with(CKM_ECDH1_DERIVE, &mut pb);
        let mut t = readable_secret(16);
        let mut out = 0;
        let rv = call!(x.f, C_DeriveKey, s, &mut m, base, t.c(), t.n(), &mut out);
        expect_rv(&format!("derive from {what}"), rv, want);
    }
    close(x.f, s);
}

// ---- 6. unwrap, import, copy into the token ----------------------------------------------

/// An attacker's session AES key with a value the attacker knows.
fn known_session_key(x: &Fx, s: CK_SESSION_HANDLE, value: &[u8]) -> CK_OBJECT_HANDLE {
    let mut t = Tpl::new()
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .ulong(CKA_KEY_TYPE, CKK_AES)
        .bytes(CKA_VALUE, value)
        .bool(CKA_WRAP, true)
        .bool(CKA_UNWRAP, true)
        .bool(CKA_ENCRYPT, true)
        .bool(CKA_EXTRACTABLE, true);
    let mut o = 0;
    expect_rv(
        "C_CreateObject session key",
        call!(x.f, C_CreateObject, s, t.c(), t.n(), &mut o),
        CKR_OK,
    );
    o
}

/// A blob the attacker forged (AES key wrap with padding of known bytes under a known
/// key), unwrapped as a token key: a CMK with known material would be a backdoor.
#[test]
fn unwrap_a_forged_blob_as_a_token_key() {
    let (x, s) = sess();
    let kek = known_session_key(x, s, &[0x11; 32]);
    let known = known_session_key(x, s, &[0x22; 32]);
    let mut m = mech(CKM_AES_KEY_WRAP_PAD);
    let (rv, blob) = wrap(x.f, s, &mut m, kek, known);
    expect_rv("forge the blob", rv, CKR_OK);
    for (what, extra) in [
        ("token key", Tpl::new().bool(CKA_TOKEN, true)),
        (
            "token key dressed as a CMK",
            Tpl::new()
                .bool(CKA_TOKEN, true)
                .bool(CKA_SENSITIVE, true)
                .bool(CKA_EXTRACTABLE, false),
        ),
    ] {
        let mut t = extra
            .ulong(CKA_CLASS, CKO_SECRET_KEY)
            .ulong(CKA_KEY_TYPE, CKK_AES);
        let mut b = blob.clone();
        let mut o = 0;
        let rv = call!(
            x.f,
            C_UnwrapKey,
            s,
            &mut m,
            kek,
            b.as_mut_ptr(),
            b.len() as CK_ULONG,
            t.c(),
            t.n(),
            &mut o
        );
        expect_rv(
            &format!("unwrap as a {what}"),
            rv,
            CKR_TEMPLATE_INCONSISTENT,
        );
    }
    // As a session key it is fine — and it is the attacker's own key, not a CMK.
    let mut t = Tpl::new()
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .ulong(CKA_KEY_TYPE, CKK_AES)
        .bool(CKA_SENSITIVE, false);
    let mut o = 0;
    let mut b = blob.clone();
    let rv = call!(
        x.f,
        C_UnwrapKey,
        s,
        &mut m,
        kek,
        b.as_mut_ptr(),
        b.len() as CK_ULONG,
        t.c(),
        t.n(),
        &mut o
    );
    expect_rv("unwrap as a session key", rv, CKR_OK);
    assert_eq!(read_value(x, s, o), vec![0x22; 32]);
    assert!(!get_bool(x.f, s, o, CKA_TOKEN));
    // …and that session key cannot be promoted to a token key by copying.
    let mut ct = Tpl::new().bool(CKA_TOKEN, true);
    let mut c = 0;
    expect_rv(
        "copy the unwrapped key into the token",
        call!(x.f, C_CopyObject, s, o, ct.c(), ct.n(), &mut c),
        CKR_TEMPLATE_INCONSISTENT,
    );
    close(x.f, s);
}

/// Importing known material as token keys with C_CreateObject.
#[test]
fn create_token_keys_from_known_material() {
    let (x, s) = sess();
    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let tpls = vec![
        (
            "AES token key",
            Tpl::new()
                .ulong(CKA_CLASS, CKO_SECRET_KEY)
                .ulong(CKA_KEY_TYPE, CKK_AES)
                .bytes(CKA_VALUE, &[7; 32])
                .bool(CKA_TOKEN, true),
        ),
        (
            "EC token private key",
            Tpl::new()
                .ulong(CKA_CLASS, CKO_PRIVATE_KEY)
                .ulong(CKA_KEY_TYPE, CKK_EC)
                .bytes(CKA_EC_PARAMS, P256_OID)
                .bytes(CKA_VALUE, &sk.to_bytes())
                .bool(CKA_TOKEN, true),
        ),
    ];
    for (what, mut t) in tpls {
        let mut o = 0;
        expect_rv(
            what,
            call!(x.f, C_CreateObject, s, t.c(), t.n(), &mut o),
            CKR_TEMPLATE_INCONSISTENT,
        );
    }
    close(x.f, s);
}

/// Generating a token key that is born extractable or not sensitive.
#[test]
fn generate_extractable_or_readable_token_keys() {
    let (x, s) = sess();
    for (what, t) in [
        (
            "SENSITIVE=FALSE",
            aes_template(true, 32).bool(CKA_SENSITIVE, false),
        ),
        (
            "EXTRACTABLE=TRUE",
            aes_template(true, 32).bool(CKA_EXTRACTABLE, true),
        ),
        (
            "COPYABLE=TRUE",
            aes_template(true, 32).bool(CKA_COPYABLE, true),
        ),
    ] {
        let (rv, _) = gen_secret(x.f, s, CKM_AES_KEY_GEN, t);
        expect_rv(what, rv, CKR_ATTRIBUTE_VALUE_INVALID);
    }
    for (what, a, v) in [
        ("private SENSITIVE=FALSE", CKA_SENSITIVE, false),
        ("private EXTRACTABLE=TRUE", CKA_EXTRACTABLE, true),
    ] {
        let mut m = mech(CKM_EC_KEY_PAIR_GEN);
        let mut pt = Tpl::new()
            .bool(CKA_TOKEN, true)
            .bytes(CKA_EC_PARAMS, P256_OID);
        let mut st = Tpl::new().bool(CKA_TOKEN, true).bool(a, v);
        let (mut p, mut k) = (0, 0);
        let rv = call!(
            x.f,
            C_GenerateKeyPair,
            s,
            &mut m,
            pt.c(),
            pt.n(),
            st.c(),
            st.n(),
            &mut p,
            &mut k
        );
        expect_rv(what, rv, CKR_ATTRIBUTE_VALUE_INVALID);
    }
    close(x.f, s);
}

// ---- 7. digests ---------------------------------------------------------------------------

fn refuse_digest_key(pick: fn(&Fx) -> CK_OBJECT_HANDLE) {
    let (x, s) = sess();
    let mut m = mech(CKM_SHA256);
    expect_rv("C_DigestInit", call!(x.f, C_DigestInit, s, &mut m), CKR_OK);
    expect_rv(
        "C_DigestKey",
        call!(x.f, C_DigestKey, s, pick(x)),
        CKR_KEY_INDIGESTIBLE,
    );
    close(x.f, s);
}

#[test]
fn digest_key_of_aes_cmk() {
    refuse_digest_key(|x| x.aes);
}

#[test]
fn digest_key_of_hmac_cmk() {
    refuse_digest_key(|x| x.hmac);
}

// ---- 8. session objects -------------------------------------------------------------------

/// A handle of an object that belonged to a closed session names nothing afterwards —
/// not even a later object.
#[test]
fn handle_of_a_closed_sessions_object() {
    let x = fx();
    let f = x.f;
    let s1 = open(f, true);
    let s2 = open(f, true);
    let (rv, k) = gen_secret(f, s2, CKM_AES_KEY_GEN, Tpl::new().ulong(CKA_VALUE_LEN, 32));
    expect_rv("session key in s2", rv, CKR_OK);
    close(f, s2);
    let (rv, _, _) = get_attr(f, s1, k, CKA_LABEL);
    expect_rv(
        "read the closed session's key",
        rv,
        CKR_OBJECT_HANDLE_INVALID,
    );
    let mut m = mech(CKM_AES_ECB);
    expect_rv(
        "encrypt with it",
        call!(f, C_EncryptInit, s1, &mut m, k),
        CKR_KEY_HANDLE_INVALID,
    );
    let mut wm = mech(CKM_AES_KEY_WRAP_PAD);
    let (rv, _) = wrap(f, s1, &mut wm, x.wrap_session, k);
    expect_rv("wrap it", rv, CKR_KEY_HANDLE_INVALID);
    let fresh = aes_key(f, s1, false);
    assert_ne!(fresh, k, "handles are not reused");
    close(f, s1);
}

// ---- 9. other processes, the SO, and the files ---------------------------------------------

const CHILD: &str = "CKS_HOSTILE_EXTRACTION_CHILD";

/// In a child process on the same store: try every handle with every way to use or read
/// a key, as `who` ("so" logs in as the SO, "none" does not log in).
fn child_attack(who: &str) {
    let r = load_raw();
    let f = r.f;
    expect_rv("C_Initialize", call!(f, C_Initialize, null_mut()), CKR_OK);
    let s = open(f, true);
    if who == "so" {
        let mut pin = common::SO_PIN.as_bytes().to_vec();
        expect_rv(
            "SO login",
            call!(
                f,
                C_Login,
                s,
                CKU_SO,
                pin.as_mut_ptr(),
                pin.len() as CK_ULONG
            ),
            CKR_OK,
        );
    }
    let secret_keys = find(f, s, Tpl::new().ulong(CKA_CLASS, CKO_SECRET_KEY));
    let private_keys = find(f, s, Tpl::new().ulong(CKA_CLASS, CKO_PRIVATE_KEY));
    assert!(
        secret_keys.is_empty() && private_keys.is_empty(),
        "{who}: private objects are visible: {secret_keys:?} {private_keys:?}"
    );
    let public = find(f, s, Tpl::new());
    assert!(!public.is_empty(), "{who}: public keys should be visible");
    let mut handles: Vec<CK_OBJECT_HANDLE> = (0..400).collect();
    handles.extend(public);
    let mut used = 0;
    for h in handles {
        for t in [CKA_VALUE, CKA_PRIVATE_EXPONENT, CKA_PRIME_1] {
            let (rv, v, _) = get_attr(f, s, h, t);
            if let Some(v) = v {
                // Public objects have no secret material; a data value may be readable.
                assert!(v.len() < 4096 && rv == CKR_OK);
            }
        }
        for (m, kind) in [
            (CKM_AES_ECB, 0),
            (CKM_ECDSA, 1),
            (CKM_SHA256_HMAC, 1),
            (CKM_SHA256_RSA_PKCS, 1),
            (CKM_RSA_PKCS, 2),
        ] {
            let mut mm = mech(m);
            let rv = match kind {
                0 => call!(f, C_EncryptInit, s, &mut mm, h),
                1 => call!(f, C_SignInit, s, &mut mm, h),
                _ => call!(f, C_DecryptInit, s, &mut mm, h),
            };
            if rv == CKR_OK {
                used += 1;
                call!(f, C_EncryptInit, s, null_mut(), h);
                call!(f, C_SignInit, s, null_mut(), h);
                call!(f, C_DecryptInit, s, null_mut(), h);
            }
        }
        let mut wm = mech(CKM_AES_KEY_WRAP_PAD);
        let (rv, _) = wrap(f, s, &mut wm, h, h);
        assert_ne!(rv, CKR_OK, "{who}: wrapped something");
        assert_ne!(
            set_attrs(f, s, h, Tpl::new().bool(CKA_SENSITIVE, false)),
            CKR_OK,
            "{who}: weakened a key"
        );
    }
    assert_eq!(used, 0, "{who}: a private key was usable");
    let (rv, _) = gen_secret(f, s, CKM_AES_KEY_GEN, Tpl::new().ulong(CKA_VALUE_LEN, 16));
    expect_rv(&format!("{who}: C_GenerateKey"), rv, CKR_USER_NOT_LOGGED_IN);
    expect_rv("C_Finalize", call!(f, C_Finalize, null_mut()), CKR_OK);
    println!("CHILD-OK");
}

fn run_attack_child(test: &str, who: &str) {
    if let Ok(w) = std::env::var(CHILD) {
        child_attack(&w);
        return;
    }
    let _ = fx(); // the victims exist
    let cfg = common::ctx().dir.join("cks.toml");
    let (ok, out) = common::run_child(test, &[(CHILD, who), ("CKS_CONFIG", cfg.to_str().unwrap())]);
    assert!(ok && out.contains("CHILD-OK"), "child failed:\n{out}");
}

/// The SO logs in (in another process on the same store) and tries to read and use keys.
#[test]
fn so_login_cannot_see_use_or_read_keys() {
    run_attack_child("so_login_cannot_see_use_or_read_keys", "so");
}

/// A second process on the same store, without any login.
#[test]
fn second_process_without_login() {
    run_attack_child("second_process_without_login", "none");
}

/// The instance's files on disk hold no CMK bytes (key material is sealed).
#[test]
fn instance_files_hold_no_key_bytes() {
    let x = fx();
    let dir = common::ctx().dir.join("data");
    let mut files = 0;
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                // SQLite journals and the metrics file come and go while the token works.
                let data = match std::fs::read(&p) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    r => r.unwrap(),
                };
                assert_no_secret(&p.display().to_string(), &data, &x.truth);
                files += 1;
            }
        }
    }
    assert!(files >= 2, "no instance files found");
    // The search itself works: it finds a secret in a copy of itself.
    assert!(leaks(
        &[&b"xx"[..], &x.truth.aes, b"yy"].concat(),
        &x.truth.aes
    ));
    assert!(
        !x.truth.domain_keys.is_empty(),
        "the domain key was not learnt"
    );
}
