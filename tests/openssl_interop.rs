//! Interoperability with the `openssl` command line: signatures made by the module
//! verify in OpenSSL with the public key exported from the module's attributes, and
//! ciphertexts made by OpenSSL decrypt in the module (and back).
// The shared `call!` macro (tests/kat_util) expands raw-pointer arguments in `unsafe`.
#![allow(clippy::macro_metavars_in_unsafe)]

mod common;
#[macro_use]
mod kat_util;

use kat_util::{der, der_uint, hex, parse_octet_string, raw, strip, Mech, Tpl, P256_OID};
use pkcs11_sys::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const RSA_ENCRYPTION_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

/// Run openssl; returns (success, stdout+stderr).
fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command line is needed for these tests");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ok(args: &[&str]) -> String {
    let (success, text) = openssl(args);
    assert!(success, "openssl {args:?} failed:\n{text}");
    text
}

fn dir() -> PathBuf {
    common::tempdir()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p.to_str().unwrap().to_string()
}

fn bit_string(v: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8];
    body.extend_from_slice(v);
    der(0x03, &body)
}

/// SubjectPublicKeyInfo DER -> PEM file via openssl (which also checks it).
fn spki_pem(dir: &Path, spki: &[u8]) -> String {
    let der_path = write(dir, "pub.der", spki);
    let pem = dir.join("pub.pem").to_str().unwrap().to_string();
    ok(&[
        "pkey", "-pubin", "-inform", "DER", "-in", &der_path, "-out", &pem,
    ]);
    pem
}

/// ECDSA-Sig-Value DER from the PKCS#11 r||s form.
fn ecdsa_der(rs: &[u8]) -> Vec<u8> {
    let (r, s) = rs.split_at(rs.len() / 2);
    let mut body = der_uint(r);
    body.extend(der_uint(s));
    der(0x30, &body)
}

/// r||s (each `n` bytes) from an ECDSA-Sig-Value DER (short-form lengths suffice for P-256).
fn ecdsa_raw(sig: &[u8], n: usize) -> Vec<u8> {
    assert_eq!(sig[0], 0x30);
    let mut i = 2;
    let mut out = Vec::new();
    for _ in 0..2 {
        assert_eq!(sig[i], 0x02);
        let len = sig[i + 1] as usize;
        out.extend(kat_util::fixed(&sig[i + 2..i + 2 + len], n));
        i += 2 + len;
    }
    out
}

#[test]
fn ecdsa_p256_signature_verifies_in_openssl() {
    let r = raw();
    let s = r.session();
    let (public, private) = r
        .generate_key_pair(
            s,
            &Mech::new(CKM_EC_KEY_PAIR_GEN),
            Tpl::new()
                .bool(CKA_TOKEN, true)
                .bytes(CKA_EC_PARAMS, P256_OID),
            Tpl::new().bool(CKA_TOKEN, true).label("interop-ec"),
        )
        .unwrap();
    let point_attr = r.attr(s, public, CKA_EC_POINT).unwrap();
    let point = parse_octet_string(&point_attr).expect("CKA_EC_POINT is a DER OCTET STRING");
    assert_eq!(point.len(), 65);
    assert_eq!(point[0], 0x04);
    let mut alg = EC_PUBLIC_KEY_OID.to_vec();
    alg.extend_from_slice(P256_OID);
    let mut spki = der(0x30, &alg);
    spki.extend(bit_string(point));
    let spki = der(0x30, &spki);

    let d = dir();
    let pem = spki_pem(&d, &spki);
    let msg = b"a message signed inside the key store".repeat(7);
    let msg_path = write(&d, "msg", &msg);
    for i in 0..4 {
        let rs = r
            .sign(s, &Mech::new(CKM_ECDSA_SHA256), private, &msg)
            .unwrap();
        assert_eq!(rs.len(), 64);
        let sig = write(&d, "sig.der", &ecdsa_der(&rs));
        let text = ok(&[
            "dgst",
            "-sha256",
            "-verify",
            &pem,
            "-signature",
            &sig,
            &msg_path,
        ]);
        assert!(text.contains("Verified OK"), "{text}");
        // The verification really checks something: a different message fails.
        if i == 0 {
            let other = write(&d, "other", b"another message");
            let (good, text) = openssl(&[
                "dgst",
                "-sha256",
                "-verify",
                &pem,
                "-signature",
                &sig,
                &other,
            ]);
            assert!(
                !good,
                "openssl accepted a signature over another message: {text}"
            );
        }
    }
    // CKM_ECDSA over a hash computed outside gives a signature openssl accepts too.
    let digest = r.digest(s, &Mech::new(CKM_SHA256), &msg).unwrap();
    let rs = r.sign(s, &Mech::new(CKM_ECDSA), private, &digest).unwrap();
    let sig = write(&d, "sig2.der", &ecdsa_der(&rs));
    ok(&[
        "dgst",
        "-sha256",
        "-verify",
        &pem,
        "-signature",
        &sig,
        &msg_path,
    ]);
}

#[test]
fn openssl_ecdsa_signature_verifies_in_the_module() {
    let r = raw();
    let s = r.session();
    let d = dir();
    let key = d.join("ec.pem").to_str().unwrap().to_string();
    ok(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &key,
    ]);
    let pub_der = d.join("ecpub.der").to_str().unwrap().to_string();
    ok(&[
        "ec", "-in", &key, "-pubout", "-outform", "DER", "-out", &pub_der,
    ]);
    let spki = std::fs::read(&pub_der).unwrap();
    let point = &spki[spki.len() - 65..];
    let public = r.ec_public(s, P256_OID, &der(0x04, point)).unwrap();
    let msg = b"signed by openssl".to_vec();
    let msg_path = write(&d, "msg", &msg);
    let sig_path = d.join("sig").to_str().unwrap().to_string();
    ok(&[
        "dgst", "-sha256", "-sign", &key, "-out", &sig_path, &msg_path,
    ]);
    let rs = ecdsa_raw(&std::fs::read(&sig_path).unwrap(), 32);
    r.verify(s, &Mech::new(CKM_ECDSA_SHA256), public, &msg, &rs)
        .unwrap();
    assert_eq!(
        r.verify(
            s,
            &Mech::new(CKM_ECDSA_SHA256),
            public,
            b"signed by opensslX",
            &rs
        ),
        Err(CKR_SIGNATURE_INVALID)
    );
}

/// A module-generated RSA-2048 token key pair and its public key as a PEM file.
fn rsa_pair(label: &str, d: &Path) -> (u64, u64, String) {
    let r = raw();
    let s = r.session();
    let (public, private) = r
        .generate_key_pair(
            s,
            &Mech::new(CKM_RSA_PKCS_KEY_PAIR_GEN),
            Tpl::new()
                .bool(CKA_TOKEN, true)
                .ulong(CKA_MODULUS_BITS, 2048)
                .bytes(CKA_PUBLIC_EXPONENT, &[1, 0, 1]),
            Tpl::new().bool(CKA_TOKEN, true).label(label),
        )
        .unwrap();
    let n = r.attr(s, public, CKA_MODULUS).unwrap();
    let e = r.attr(s, public, CKA_PUBLIC_EXPONENT).unwrap();
    assert_eq!(strip(&n).len(), 256);
    assert_eq!(
        r.attr(s, private, CKA_MODULUS).unwrap(),
        n,
        "both halves carry the modulus"
    );
    let mut rsa_key = der_uint(&n);
    rsa_key.extend(der_uint(&e));
    let rsa_key = der(0x30, &rsa_key);
    let mut alg = RSA_ENCRYPTION_OID.to_vec();
    alg.extend_from_slice(&[0x05, 0x00]);
    let mut spki = der(0x30, &alg);
    spki.extend(bit_string(&rsa_key));
    let pem = spki_pem(d, &der(0x30, &spki));
    (public, private, pem)
}

#[test]
fn rsa_pkcs1_and_pss_signatures_verify_in_openssl() {
    let r = raw();
    let s = r.session();
    let d = dir();
    let (_, private, pem) = rsa_pair("interop-rsa-sig", &d);
    let msg = b"RSA signature interop".to_vec();
    let msg_path = write(&d, "msg", &msg);
    let other = write(&d, "other", b"something else");

    let sig = r
        .sign(s, &Mech::new(CKM_SHA256_RSA_PKCS), private, &msg)
        .unwrap();
    assert_eq!(sig.len(), 256);
    let sig_path = write(&d, "sig", &sig);
    ok(&[
        "dgst",
        "-sha256",
        "-verify",
        &pem,
        "-signature",
        &sig_path,
        &msg_path,
    ]);
    assert!(
        !openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            &pem,
            "-signature",
            &sig_path,
            &other
        ])
        .0
    );
    // PKCS#1 v1.5 is deterministic: OpenSSL's own verify-recover gives the DigestInfo.
    let rec = d.join("rec").to_str().unwrap().to_string();
    ok(&[
        "pkeyutl",
        "-verifyrecover",
        "-pubin",
        "-inkey",
        &pem,
        "-in",
        &sig_path,
        "-out",
        &rec,
    ]);
    let digest = r.digest(s, &Mech::new(CKM_SHA256), &msg).unwrap();
    let mut digest_info = hex("3031300d060960864801650304020105000420");
    digest_info.extend(&digest);
    assert_eq!(std::fs::read(&rec).unwrap(), digest_info);

    let pss = Mech::pss(CKM_SHA256_RSA_PKCS_PSS, CKM_SHA256, CKG_MGF1_SHA256, 32);
    let sig = r.sign(s, &pss, private, &msg).unwrap();
    let sig_path = write(&d, "sig-pss", &sig);
    let pss_opts = [
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:32",
        "-sigopt",
        "rsa_mgf1_md:sha256",
    ];
    let mut args = vec!["dgst", "-sha256"];
    args.extend(pss_opts);
    args.extend(["-verify", &pem, "-signature", &sig_path]);
    ok(&[args.clone(), vec![msg_path.as_str()]].concat());
    assert!(!openssl(&[args, vec![other.as_str()]].concat()).0);
}

#[test]
fn openssl_rsa_oaep_ciphertext_decrypts_in_the_module() {
    let r = raw();
    let s = r.session();
    let d = dir();
    let (public, private, pem) = rsa_pair("interop-rsa-oaep", &d);
    let secret = b"a 32-byte data key for OAEP....".to_vec();
    let pt = write(&d, "pt", &secret);
    for (md, hash, mgf) in [
        ("sha256", CKM_SHA256, CKG_MGF1_SHA256),
        ("sha1", CKM_SHA_1, CKG_MGF1_SHA1),
    ] {
        let ct = d.join(format!("ct-{md}")).to_str().unwrap().to_string();
        let md_opt = format!("rsa_oaep_md:{md}");
        let mgf_opt = format!("rsa_mgf1_md:{md}");
        ok(&[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            &pem,
            "-in",
            &pt,
            "-out",
            &ct,
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            &md_opt,
            "-pkeyopt",
            &mgf_opt,
        ]);
        let ct_bytes = std::fs::read(&ct).unwrap();
        let m = Mech::oaep(hash, mgf, &[]);
        assert_eq!(
            r.decrypt(s, &m, private, &ct_bytes).unwrap(),
            secret,
            "OAEP {md}"
        );
        // The other direction: the module encrypts with the public key, openssl cannot
        // decrypt (no private key) — but the module can, and the ciphertext is fresh.
        let c2 = r.encrypt(s, &m, public, &secret).unwrap();
        assert_ne!(c2, ct_bytes);
        assert_eq!(r.decrypt(s, &m, private, &c2).unwrap(), secret);
        let mut bad = ct_bytes.clone();
        bad[100] ^= 1;
        assert_eq!(
            r.decrypt(s, &m, private, &bad),
            Err(CKR_ENCRYPTED_DATA_INVALID)
        );
    }
    // A label given to openssl must be given to the module too.
    let ct = d.join("ct-label").to_str().unwrap().to_string();
    ok(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        &pem,
        "-in",
        &pt,
        "-out",
        &ct,
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
        "-pkeyopt",
        "rsa_oaep_label:6c6162656c",
    ]);
    let ct_bytes = std::fs::read(&ct).unwrap();
    let with_label = Mech::oaep(CKM_SHA256, CKG_MGF1_SHA256, b"label");
    assert_eq!(
        r.decrypt(s, &with_label, private, &ct_bytes).unwrap(),
        secret
    );
    let no_label = Mech::oaep(CKM_SHA256, CKG_MGF1_SHA256, &[]);
    assert_eq!(
        r.decrypt(s, &no_label, private, &ct_bytes),
        Err(CKR_ENCRYPTED_DATA_INVALID)
    );
}

#[test]
fn openssl_aes_256_cbc_ciphertext_decrypts_in_the_module() {
    let r = raw();
    let s = r.session();
    let d = dir();
    let key = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
    let iv = hex("000102030405060708090a0b0c0d0e0f");
    let k = r.aes_key(s, &key).unwrap();
    let m = Mech::with_bytes(CKM_AES_CBC_PAD, &iv);
    for len in [0usize, 1, 15, 16, 17, 100, 4096] {
        let pt: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let pt_path = write(&d, "pt", &pt);
        let ct_path = d.join("ct").to_str().unwrap().to_string();
        ok(&[
            "enc",
            "-aes-256-cbc",
            "-K",
            &hex::encode(&key),
            "-iv",
            &hex::encode(&iv),
            "-in",
            &pt_path,
            "-out",
            &ct_path,
        ]);
        let ct = std::fs::read(&ct_path).unwrap();
        assert_eq!(ct.len(), (len / 16 + 1) * 16);
        assert_eq!(r.decrypt(s, &m, k, &ct).unwrap(), pt, "{len} bytes");
        assert_eq!(
            r.decrypt_multi(s, &m, k, &ct, &[7, 16, 1]).unwrap(),
            pt,
            "{len} bytes multi-part"
        );
        // And back: the module's ciphertext is OpenSSL's, and OpenSSL decrypts it.
        let mine = r.encrypt(s, &m, k, &pt).unwrap();
        assert_eq!(mine, ct);
        let mine_path = write(&d, "mine", &mine);
        let out = d.join("out").to_str().unwrap().to_string();
        ok(&[
            "enc",
            "-d",
            "-aes-256-cbc",
            "-K",
            &hex::encode(&key),
            "-iv",
            &hex::encode(&iv),
            "-in",
            &mine_path,
            "-out",
            &out,
        ]);
        assert_eq!(std::fs::read(&out).unwrap(), pt);
    }
    let _ = call!(r, C_CloseSession(s));
}
