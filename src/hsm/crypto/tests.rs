//! Known-answer tests (NIST, RFC), multi-part equivalence and error codes.
//! Wycheproof suites are in `tests_wycheproof.rs`; RSA and key tests in `tests_keys.rs`.

use super::*;
use crate::hsm::mechanism::{Curve, EcKdf, HashAlg, Mechanism};
use hex_literal::hex;
use pkcs11_sys::*;
use rand::Rng;
use zeroize::Zeroizing;

/// (key, data, [HMAC-SHA256, HMAC-SHA384, HMAC-SHA512])
type HmacCase<'a> = (&'a [u8], &'a [u8], [&'a [u8]; 3]);
/// (mechanism, key-encryption key, key, wrapped key)
type WrapCase<'a> = (&'a Mechanism, &'a [u8], &'a [u8], &'a [u8]);

pub(crate) fn secret(b: &[u8]) -> KeyMaterial {
    KeyMaterial::Secret(Zeroizing::new(b.to_vec()))
}

pub(crate) fn rv<T>(r: Result<T>) -> CK_RV {
    match r {
        Ok(_) => CKR_OK,
        Err(e) => e.rv,
    }
}

pub(crate) fn enc_all(m: &Mechanism, k: &KeyMaterial, d: &[u8]) -> Result<Vec<u8>> {
    let mut op = encrypt(m, k)?;
    let mut out = Vec::new();
    op.update(d, &mut out)?;
    op.finish(&mut out)?;
    Ok(out)
}

pub(crate) fn dec_all(m: &Mechanism, k: &KeyMaterial, d: &[u8]) -> Result<Vec<u8>> {
    let mut op = decrypt(m, k)?;
    let mut out = Vec::new();
    op.update(d, &mut out)?;
    op.finish(&mut out)?;
    Ok(out)
}

pub(crate) fn sign_all(m: &Mechanism, k: &KeyMaterial, d: &[u8]) -> Result<Vec<u8>> {
    let mut op = sign(m, k)?;
    op.update(d)?;
    let n = op.sign_len();
    let s = op.finish()?;
    assert_eq!(s.len(), n, "sign_len is exact");
    Ok(s)
}

pub(crate) fn verify_all(m: &Mechanism, k: &KeyMaterial, d: &[u8], s: &[u8]) -> Result<()> {
    let mut op = verify(m, k)?;
    op.update(d)?;
    op.finish(s)
}

/// Feed `data` in random chunks (empty ones too), checking the length contract at
/// each step: update output == update_len (every mechanism here is exact in update),
/// final output <= final_len, and == when `exact_final`.
pub(crate) fn chunked(op: &mut dyn CipherOp, data: &[u8], exact_final: bool) -> Result<Vec<u8>> {
    let mut rng = rand::thread_rng();
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = rng.gen_range(0..=rest.len().min(40));
        let (now, later) = rest.split_at(n);
        let bound = op.update_len(n);
        let before = out.len();
        op.update(now, &mut out)?;
        assert_eq!(out.len() - before, bound, "update_len exact");
        rest = later;
    }
    let bound = op.final_len();
    let before = out.len();
    op.finish(&mut out)?;
    let got = out.len() - before;
    assert!(got <= bound, "final output {got} > final_len {bound}");
    if exact_final {
        assert_eq!(got, bound, "final_len exact");
    }
    Ok(out)
}

// ---------- digests and HMAC ----------

#[test]
fn sha_fips180_abc() {
    let cases: [(HashAlg, &[u8]); 5] = [
        (HashAlg::Sha1, &hex!("a9993e364706816aba3e25717850c26c9cd0d89d")),
        (HashAlg::Sha224, &hex!("23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7")),
        (HashAlg::Sha256, &hex!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")),
        (HashAlg::Sha384, &hex!("cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7")),
        (HashAlg::Sha512, &hex!("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")),
    ];
    for (h, want) in cases {
        let mut d = digest(h);
        assert_eq!(d.output_len(), h.output_len());
        d.update(b"a");
        d.update(b"");
        d.update(b"bc");
        assert_eq!(d.finish(), want, "{h:?}");
    }
}

#[test]
fn hmac_rfc4231() {
    let key7 = [0xaau8; 131];
    let cases: [HmacCase; 6] = [
        (&[0x0b; 20], b"Hi There", [
            &hex!("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            &hex!("afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6"),
            &hex!("87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"),
        ]),
        (b"Jefe", b"what do ya want for nothing?", [
            &hex!("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
            &hex!("af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649"),
            &hex!("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"),
        ]),
        (&[0xaa; 20], &[0xdd; 50], [
            &hex!("773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
            &hex!("88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b2a5ab39dc13814b94e3ab6e101a34f27"),
            &hex!("fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb"),
        ]),
        (&hex!("0102030405060708090a0b0c0d0e0f10111213141516171819"), &[0xcd; 50], [
            &hex!("82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
            &hex!("3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e6801dd23c4a7d679ccf8a386c674cffb"),
            &hex!("b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3dba91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd"),
        ]),
        (&key7, b"Test Using Larger Than Block-Size Key - Hash Key First", [
            &hex!("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
            &hex!("4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952"),
            &hex!("80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598"),
        ]),
        (&key7, b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.", [
            &hex!("9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
            &hex!("6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5a678cc31e799176d3860e6110c46523e"),
            &hex!("e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58"),
        ]),
    ];
    for (key, data, macs) in cases {
        let k = secret(key);
        for (h, want) in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512]
            .into_iter()
            .zip(macs)
        {
            let m = Mechanism::Hmac(h);
            // split the data in two to exercise multi-part
            let mut op = sign(&m, &k).unwrap();
            let (a, b) = data.split_at(data.len() / 3);
            op.update(a).unwrap();
            op.update(b).unwrap();
            assert_eq!(op.sign_len(), want.len());
            assert_eq!(op.finish().unwrap(), want, "{h:?}");
            verify_all(&m, &k, data, want).unwrap();
            let mut bad = want.to_vec();
            bad[0] ^= 1;
            assert_eq!(rv(verify_all(&m, &k, data, &bad)), CKR_SIGNATURE_INVALID);
            assert_eq!(
                rv(verify_all(&m, &k, data, &want[1..])),
                CKR_SIGNATURE_LEN_RANGE
            );
        }
    }
}

#[test]
fn hmac_errors() {
    let m = Mechanism::Hmac(HashAlg::Sha256);
    assert_eq!(rv(sign(&m, &secret(&[]))), CKR_KEY_SIZE_RANGE);
    assert_eq!(
        rv(sign(&m, &generate_ec(Curve::P256))),
        CKR_KEY_TYPE_INCONSISTENT
    );
    assert_eq!(
        rv(verify(&m, &generate_ec(Curve::P256))),
        CKR_KEY_TYPE_INCONSISTENT
    );
    // SHA-1 / SHA-224 work and have their lengths
    assert_eq!(
        sign_all(&Mechanism::Hmac(HashAlg::Sha1), &secret(b"k"), b"x")
            .unwrap()
            .len(),
        20
    );
    assert_eq!(
        sign_all(&Mechanism::Hmac(HashAlg::Sha224), &secret(b"k"), b"x")
            .unwrap()
            .len(),
        28
    );
}

// ---------- AES block modes: SP 800-38A ----------

const SP_PT: [u8; 64] = hex!("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710");
const K128: [u8; 16] = hex!("2b7e151628aed2a6abf7158809cf4f3c");
const K256: [u8; 32] = hex!("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
const IV: [u8; 16] = hex!("000102030405060708090a0b0c0d0e0f");
const CTR0: [u8; 16] = hex!("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");

fn sp800_38a() -> Vec<(Mechanism, &'static [u8], Vec<u8>)> {
    vec![
        (Mechanism::AesEcb, &K128, hex!("3ad77bb40d7a3660a89ecaf32466ef97f5d3d58503b9699de785895a96fdbaaf43b1cd7f598ece23881b00e3ed0306887b0c785e27e8ad3f8223207104725dd4").to_vec()),
        (Mechanism::AesEcb, &K256, hex!("f3eed1bdb5d2a03c064b5a7e3db181f8591ccb10d410ed26dc5ba74a31362870b6ed21b99ca6f4f9f153e7b1beafed1d23304b7a39f9f3ff067d8d8f9e24ecc7").to_vec()),
        (Mechanism::AesCbc { iv: IV }, &K128, hex!("7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b273bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7").to_vec()),
        (Mechanism::AesCbc { iv: IV }, &K256, hex!("f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b").to_vec()),
        (Mechanism::AesCtr { counter_block: CTR0, counter_bits: 128 }, &K128, hex!("874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee").to_vec()),
        (Mechanism::AesCtr { counter_block: CTR0, counter_bits: 32 }, &K256, hex!("601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c52b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6").to_vec()),
    ]
}

#[test]
fn aes_sp800_38a_known_answers() {
    for (m, key, ct) in sp800_38a() {
        let k = secret(key);
        assert_eq!(enc_all(&m, &k, &SP_PT).unwrap(), ct, "{m:?}");
        assert_eq!(dec_all(&m, &k, &ct).unwrap(), SP_PT, "{m:?}");
        for _ in 0..20 {
            let mut e = encrypt(&m, &k).unwrap();
            assert_eq!(
                chunked(e.as_mut(), &SP_PT, true).unwrap(),
                ct,
                "{m:?} chunked"
            );
            let mut d = decrypt(&m, &k).unwrap();
            assert_eq!(
                chunked(d.as_mut(), &ct, true).unwrap(),
                SP_PT,
                "{m:?} chunked"
            );
        }
    }
    // CTR streams: any length, output as it comes.
    let m = Mechanism::AesCtr {
        counter_block: CTR0,
        counter_bits: 128,
    };
    let ct = enc_all(&m, &secret(&K128), &SP_PT[..37]).unwrap();
    assert_eq!(ct, sp800_38a()[4].2[..37]);
}

#[test]
fn aes_ctr_counter_width() {
    let k = secret(&K128);
    let mut block = [0x11u8; 16];
    block[15] = 0xfe;
    let m = Mechanism::AesCtr {
        counter_block: block,
        counter_bits: 8,
    };
    // two blocks are left before the 8-bit counter wraps: ..fe, ..ff
    let ks = enc_all(&m, &k, &[0u8; 32]).unwrap();
    let mut expect_in = block.to_vec();
    let mut b2 = block;
    b2[15] = 0xff;
    expect_in.extend_from_slice(&b2);
    assert_eq!(ks, enc_all(&Mechanism::AesEcb, &k, &expect_in).unwrap());
    assert_eq!(rv(enc_all(&m, &k, &[0u8; 33])), CKR_DATA_LEN_RANGE);
    // streaming: the error comes on the update that would wrap, nothing output for it
    let mut op = encrypt(&m, &k).unwrap();
    let mut out = Vec::new();
    op.update(&[0u8; 20], &mut out).unwrap();
    op.update(&[0u8; 12], &mut out).unwrap();
    assert_eq!(out.len(), 32);
    assert_eq!(rv(op.update(&[0u8; 1], &mut out)), CKR_DATA_LEN_RANGE);
    assert_eq!(out.len(), 32);
    // the counter's carry stays inside the counter bits: 16 bits at ..00ffff -> ..000000 is a wrap,
    // but with 24 bits ..00ffff -> ..010000 and the byte above is untouched
    let mut b = [0u8; 16];
    b[13] = 0x00;
    b[14] = 0xff;
    b[15] = 0xff;
    b[12] = 0x77;
    let m16 = Mechanism::AesCtr {
        counter_block: b,
        counter_bits: 16,
    };
    assert_eq!(rv(enc_all(&m16, &k, &[0u8; 17])), CKR_DATA_LEN_RANGE);
    let m24 = Mechanism::AesCtr {
        counter_block: b,
        counter_bits: 24,
    };
    let ks = enc_all(&m24, &k, &[0u8; 32]).unwrap();
    let mut next = b;
    next[13] = 0x01;
    next[14] = 0;
    next[15] = 0;
    let mut blocks = b.to_vec();
    blocks.extend_from_slice(&next);
    assert_eq!(ks, enc_all(&Mechanism::AesEcb, &k, &blocks).unwrap());
    for bits in [0u32, 129] {
        let m = Mechanism::AesCtr {
            counter_block: b,
            counter_bits: bits,
        };
        assert_eq!(rv(encrypt(&m, &k)), CKR_MECHANISM_PARAM_INVALID);
    }
}

#[test]
fn aes_block_mode_errors() {
    let k = secret(&K128);
    for m in [Mechanism::AesEcb, Mechanism::AesCbc { iv: IV }] {
        assert_eq!(rv(enc_all(&m, &k, &[0u8; 15])), CKR_DATA_LEN_RANGE);
        assert_eq!(rv(enc_all(&m, &k, &[0u8; 33])), CKR_DATA_LEN_RANGE);
        assert_eq!(
            rv(dec_all(&m, &k, &[0u8; 17])),
            CKR_ENCRYPTED_DATA_LEN_RANGE
        );
        assert_eq!(enc_all(&m, &k, &[]).unwrap(), Vec::<u8>::new());
    }
    let m = Mechanism::AesEcb;
    assert_eq!(rv(encrypt(&m, &secret(&[0u8; 15]))), CKR_KEY_SIZE_RANGE);
    assert_eq!(rv(encrypt(&m, &secret(&[0u8; 64]))), CKR_KEY_SIZE_RANGE);
    assert_eq!(
        rv(decrypt(&m, &generate_ec(Curve::P256))),
        CKR_KEY_TYPE_INCONSISTENT
    );
    assert!(enc_all(&m, &secret(&[0u8; 24]), &[0u8; 16]).is_ok());
    // not cipher mechanisms
    assert_eq!(
        rv(encrypt(&Mechanism::Hmac(HashAlg::Sha256), &k)),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        rv(decrypt(&Mechanism::AesKeyWrap { iv: None }, &k)),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(rv(sign(&Mechanism::AesEcb, &k)), CKR_MECHANISM_INVALID);
    assert_eq!(
        rv(verify(&Mechanism::Digest(HashAlg::Sha1), &k)),
        CKR_MECHANISM_INVALID
    );
}

#[test]
fn aes_cbc_pad() {
    let k = secret(&K256);
    let m = Mechanism::AesCbcPad { iv: IV };
    let plain = Mechanism::AesCbc { iv: IV };
    for len in 0..=48usize {
        let data: Vec<u8> = (0..len as u8).collect();
        let ct = enc_all(&m, &k, &data).unwrap();
        // = CBC over the PKCS#7-padded data
        let pad = 16 - len % 16;
        let mut padded = data.clone();
        padded.resize(len + pad, pad as u8);
        assert_eq!(ct, enc_all(&plain, &k, &padded).unwrap(), "len {len}");
        assert_eq!(dec_all(&m, &k, &ct).unwrap(), data);
        let mut e = encrypt(&m, &k).unwrap();
        assert_eq!(chunked(e.as_mut(), &data, true).unwrap(), ct);
        let mut d = decrypt(&m, &k).unwrap();
        assert_eq!(chunked(d.as_mut(), &ct, false).unwrap(), data);
    }
    // decryption keeps the last whole block back
    let ct = enc_all(&m, &k, &[7u8; 20]).unwrap();
    let mut d = decrypt(&m, &k).unwrap();
    assert_eq!(d.update_len(32), 16);
    let mut out = Vec::new();
    d.update(&ct, &mut out).unwrap();
    assert_eq!(out.len(), 16);
    assert!(d.final_len() >= 4);
    d.finish(&mut out).unwrap();
    assert_eq!(out, [7u8; 20]);
    // bad padding
    let mut bad = ct.clone();
    bad[31] ^= 0x5a; // last block's plaintext is garbage now
    assert_eq!(rv(dec_all(&m, &k, &bad)), CKR_ENCRYPTED_DATA_INVALID);
    for pad_block in [[0u8; 16], [17u8; 16], {
        let mut b = [4u8; 16];
        b[13] = 3;
        b
    }] {
        let c = enc_all(&plain, &k, &pad_block).unwrap();
        assert_eq!(rv(dec_all(&m, &k, &c)), CKR_ENCRYPTED_DATA_INVALID);
    }
    let c = enc_all(&plain, &k, &[16u8; 16]).unwrap();
    assert_eq!(dec_all(&m, &k, &c).unwrap(), Vec::<u8>::new());
    // lengths
    assert_eq!(rv(dec_all(&m, &k, &[])), CKR_ENCRYPTED_DATA_LEN_RANGE);
    assert_eq!(rv(dec_all(&m, &k, &ct[..31])), CKR_ENCRYPTED_DATA_LEN_RANGE);
}

// ---------- AES-GCM ----------

#[test]
fn aes_gcm_spec_cases() {
    let zero = secret(&[0u8; 16]);
    let m = Mechanism::AesGcm {
        iv: vec![0u8; 12],
        aad: vec![],
        tag_bits: 128,
    };
    assert_eq!(
        enc_all(&m, &zero, &[]).unwrap(),
        hex!("58e2fccefa7e3061367f1d57a4e7455a")
    );
    let ct = enc_all(&m, &zero, &[0u8; 16]).unwrap();
    assert_eq!(
        ct,
        hex!("0388dace60b6a392f328c2b971b2fe78ab6e47d42cec13bdf53a67b21257bddf")
    );
    assert_eq!(dec_all(&m, &zero, &ct).unwrap(), [0u8; 16]);
    // truncated tags are prefixes of the full tag
    let m12 = Mechanism::AesGcm {
        iv: vec![0u8; 12],
        aad: vec![],
        tag_bits: 96,
    };
    assert_eq!(enc_all(&m12, &zero, &[0u8; 16]).unwrap(), ct[..28]);
}

#[test]
fn aes_gcm_generic_matches_aes_gcm_crate() {
    let mut rng = rand::thread_rng();
    for key_len in [16, 24, 32] {
        for _ in 0..10 {
            let key: Vec<u8> = (0..key_len).map(|_| rng.gen()).collect();
            let iv: [u8; 12] = rng.gen();
            let aad: Vec<u8> = (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect();
            let pt: Vec<u8> = (0..rng.gen_range(0..70)).map(|_| rng.gen()).collect();
            let m = Mechanism::AesGcm {
                iv: iv.to_vec(),
                aad: aad.clone(),
                tag_bits: 128,
            };
            let c = enc_all(&m, &secret(&key), &pt).unwrap();
            let mut mine = pt.clone();
            let tag = super::aes::gcm_generic_seal(&key, &iv, &aad, &mut mine, 16);
            mine.extend_from_slice(&tag);
            assert_eq!(c, mine);
        }
    }
}

#[test]
fn aes_gcm_streaming_and_errors() {
    let k = secret(&K128);
    let mut rng = rand::thread_rng();
    for iv_len in [1usize, 8, 12, 16, 60, 256] {
        for tag_bits in [96u32, 104, 112, 120, 128] {
            let iv: Vec<u8> = (0..iv_len).map(|_| rng.gen()).collect();
            let m = Mechanism::AesGcm {
                iv,
                aad: b"header".to_vec(),
                tag_bits,
            };
            let pt: Vec<u8> = (0..rng.gen_range(0..100)).map(|_| rng.gen()).collect();
            let ct = enc_all(&m, &k, &pt).unwrap();
            assert_eq!(ct.len(), pt.len() + tag_bits as usize / 8);
            let mut e = encrypt(&m, &k).unwrap();
            assert_eq!(chunked(e.as_mut(), &pt, true).unwrap(), ct);
            let mut d = decrypt(&m, &k).unwrap();
            assert_eq!(chunked(d.as_mut(), &ct, true).unwrap(), pt);
            // any flipped bit is caught, and nothing is released
            let mut bad = ct.clone();
            let i = rng.gen_range(0..bad.len());
            bad[i] ^= 1 << rng.gen_range(0..8);
            let mut d = decrypt(&m, &k).unwrap();
            let mut out = Vec::new();
            d.update(&bad, &mut out).unwrap();
            assert_eq!(rv(d.finish(&mut out)), CKR_ENCRYPTED_DATA_INVALID);
            assert!(out.is_empty());
            assert_eq!(
                rv(dec_all(&m, &k, &ct[..tag_bits as usize / 8 - 1])),
                CKR_ENCRYPTED_DATA_LEN_RANGE
            );
        }
    }
    for (iv_len, tag_bits) in [
        (12usize, 88u32),
        (12, 100),
        (12, 136),
        (12, 64),
        (0, 128),
        (65_537, 128),
    ] {
        let m = Mechanism::AesGcm {
            iv: vec![1; iv_len],
            aad: vec![],
            tag_bits,
        };
        assert_eq!(
            rv(encrypt(&m, &k)),
            CKR_MECHANISM_PARAM_INVALID,
            "{iv_len} {tag_bits}"
        );
        assert_eq!(rv(decrypt(&m, &k)), CKR_MECHANISM_PARAM_INVALID);
    }
    // different AAD -> tag mismatch
    let m1 = Mechanism::AesGcm {
        iv: vec![1; 12],
        aad: b"a".to_vec(),
        tag_bits: 128,
    };
    let m2 = Mechanism::AesGcm {
        iv: vec![1; 12],
        aad: b"b".to_vec(),
        tag_bits: 128,
    };
    let ct = enc_all(&m1, &k, b"hello").unwrap();
    assert_eq!(rv(dec_all(&m2, &k, &ct)), CKR_ENCRYPTED_DATA_INVALID);
}

// ---------- key wrap: RFC 3394, RFC 5649 ----------

#[test]
fn aes_key_wrap_rfc3394_rfc5649() {
    let kw = Mechanism::AesKeyWrap { iv: None };
    let kwp = Mechanism::AesKeyWrapPad { iv: None };
    let cases: [WrapCase; 4] = [
        (
            &kw,
            &hex!("000102030405060708090A0B0C0D0E0F"),
            &hex!("00112233445566778899AABBCCDDEEFF"),
            &hex!("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"),
        ),
        (
            &kw,
            &hex!("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"),
            &hex!("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F"),
            &hex!(
                "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"
            ),
        ),
        (
            &kwp,
            &hex!("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"),
            &hex!("c37b7e6492584340bed12207808941155068f738"),
            &hex!("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"),
        ),
        (
            &kwp,
            &hex!("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"),
            &hex!("466f7250617369"),
            &hex!("afbeb0f07dfbf5419200f2ccb50bb24f"),
        ),
    ];
    for (m, kek, key, wrapped) in cases {
        let kek = secret(kek);
        assert_eq!(wrap(m, &kek, key).unwrap(), wrapped);
        assert_eq!(&unwrap(m, &kek, wrapped).unwrap()[..], key);
        let mut bad = wrapped.to_vec();
        bad[3] ^= 0x10;
        assert_eq!(rv(unwrap(m, &kek, &bad)), CKR_WRAPPED_KEY_INVALID);
    }
    // the default IVs given explicitly are fine, others are not supported
    let kek = secret(&[9u8; 16]);
    let default_kw = Mechanism::AesKeyWrap {
        iv: Some([0xA6; 8]),
    };
    let default_kwp = Mechanism::AesKeyWrapPad {
        iv: Some([0xA6, 0x59, 0x59, 0xA6]),
    };
    assert_eq!(
        wrap(&default_kw, &kek, &[1; 16]).unwrap(),
        wrap(&kw, &kek, &[1; 16]).unwrap()
    );
    assert_eq!(
        wrap(&default_kwp, &kek, &[1; 5]).unwrap(),
        wrap(&kwp, &kek, &[1; 5]).unwrap()
    );
    for m in [
        Mechanism::AesKeyWrap { iv: Some([1; 8]) },
        Mechanism::AesKeyWrapPad { iv: Some([1; 4]) },
    ] {
        assert_eq!(rv(wrap(&m, &kek, &[1; 16])), CKR_MECHANISM_PARAM_INVALID);
        assert_eq!(rv(unwrap(&m, &kek, &[1; 24])), CKR_MECHANISM_PARAM_INVALID);
    }
    // payload sizes
    for len in [0usize, 8, 20, 23] {
        assert_eq!(
            rv(wrap(&kw, &kek, &vec![1; len])),
            CKR_KEY_SIZE_RANGE,
            "{len}"
        );
    }
    assert_eq!(rv(wrap(&kwp, &kek, &[])), CKR_KEY_SIZE_RANGE);
    for len in 1..=40usize {
        let w = wrap(&kwp, &kek, &vec![3; len]).unwrap();
        assert_eq!(w.len(), len.div_ceil(8) * 8 + 8);
        assert_eq!(&unwrap(&kwp, &kek, &w).unwrap()[..], &vec![3; len][..]);
    }
    // wrapped lengths
    for len in [0usize, 8, 16, 20, 25] {
        assert_eq!(
            rv(unwrap(&kw, &kek, &vec![1; len])),
            CKR_WRAPPED_KEY_LEN_RANGE,
            "{len}"
        );
    }
    for len in [0usize, 8, 15, 17] {
        assert_eq!(
            rv(unwrap(&kwp, &kek, &vec![1; len])),
            CKR_WRAPPED_KEY_LEN_RANGE,
            "{len}"
        );
    }
    // the wrapping key
    let ec = generate_ec(Curve::P256);
    assert_eq!(
        rv(wrap(&kw, &ec, &[1; 16])),
        CKR_WRAPPING_KEY_TYPE_INCONSISTENT
    );
    assert_eq!(
        rv(unwrap(&kw, &ec, &[1; 24])),
        CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT
    );
    assert_eq!(
        rv(wrap(&kwp, &secret(&[1; 17]), &[1; 16])),
        CKR_WRAPPING_KEY_SIZE_RANGE
    );
    assert_eq!(
        rv(unwrap(&kwp, &secret(&[1; 17]), &[1; 24])),
        CKR_UNWRAPPING_KEY_SIZE_RANGE
    );
    assert_eq!(
        rv(wrap(&Mechanism::AesEcb, &kek, &[1; 16])),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        rv(unwrap(
            &Mechanism::AesCtr {
                counter_block: [0; 16],
                counter_bits: 32
            },
            &kek,
            &[1; 16]
        )),
        CKR_MECHANISM_INVALID
    );
}

#[test]
fn wrap_with_gcm_and_cbc_pad() {
    let kek = secret(&K256);
    let gcm = Mechanism::AesGcm {
        iv: vec![5; 12],
        aad: b"wrap".to_vec(),
        tag_bits: 128,
    };
    let cbc = Mechanism::AesCbcPad { iv: IV };
    let payload = [0x42u8; 32];
    for m in [&gcm, &cbc] {
        let w = wrap(m, &kek, &payload).unwrap();
        assert_eq!(w, enc_all(m, &kek, &payload).unwrap());
        assert_eq!(&unwrap(m, &kek, &w).unwrap()[..], &payload);
    }
    let mut w = wrap(&gcm, &kek, &payload).unwrap();
    w[0] ^= 1;
    assert_eq!(rv(unwrap(&gcm, &kek, &w)), CKR_WRAPPED_KEY_INVALID);
    assert_eq!(rv(unwrap(&gcm, &kek, &w[..10])), CKR_WRAPPED_KEY_LEN_RANGE);
    let w = wrap(&cbc, &kek, &payload).unwrap();
    assert_eq!(w.len(), 48);
    assert_eq!(rv(unwrap(&cbc, &kek, &w[..40])), CKR_WRAPPED_KEY_LEN_RANGE);
    // a last block whose padding is wrong
    let garbage = enc_all(&Mechanism::AesCbc { iv: IV }, &kek, &[0u8; 32]).unwrap();
    assert_eq!(rv(unwrap(&cbc, &kek, &garbage)), CKR_WRAPPED_KEY_INVALID);
    assert_eq!(
        rv(wrap(&gcm, &secret(&[1; 20]), &payload)),
        CKR_WRAPPING_KEY_SIZE_RANGE
    );
}

// ---------- ECDH and the X9.63 KDF ----------

#[test]
fn x963_kdf_known_answers() {
    // NIST CAVS ansx963_2001, SHA-256
    let z = hex!("96c05619d56c328ab95fe84b18264b08725b85e33fd34f08");
    assert_eq!(
        &super::ec::x963_kdf(HashAlg::Sha256, &z, &[], 16)[..],
        hex!("443024c3dae66b95e6f5670601558f71")
    );
    let z = hex!("22518b10e70f2a3f243810ae3254139efbee04aa57c7af7d");
    let info = hex!("75eef81aa3041e33b80971203d2c0c52");
    assert_eq!(
        &super::ec::x963_kdf(HashAlg::Sha256, &z, &info, 128)[..],
        hex!("c498af77161cc59f2962b9a713e2b215152d139766ce34a776df11866a69bf2e52a13d9c7c6fc878c50c5ea0bc7b00e0da2447cfd874f6cf92f30d0097111485500c90c3af8b487872d04685d14c8d1dc8d7fa08beb0ce0ababc11f0bd496269142d43525a78e5bc79a17f59676a5706dc54d54d4d1f0bd7e386128ec26afc21")
    );
}

#[test]
fn ecdh_derive_agreement_and_errors() {
    for curve in [Curve::P256, Curve::P384] {
        let f = curve.field_len();
        let a = generate_ec(curve);
        let b = generate_ec(curve);
        let pa = a.ec_point().unwrap();
        let pb = b.ec_point().unwrap();
        let zab = ecdh_derive(&a, EcKdf::Null, &[], &pb, f).unwrap();
        let zba = ecdh_derive(&b, EcKdf::Null, &[], &pa, f).unwrap();
        assert_eq!(zab, zba);
        // truncation removes bytes from the leading end
        let short = ecdh_derive(&a, EcKdf::Null, &[], &pb, 16).unwrap();
        assert_eq!(&short[..], &zab[f - 16..]);
        // DER OCTET STRING-wrapped point, and compressed point
        let mut der = vec![0x04, pb.len() as u8];
        der.extend_from_slice(&pb);
        assert_eq!(ecdh_derive(&a, EcKdf::Null, &[], &der, f).unwrap(), zab);
        let mut comp = vec![0x02 | (pb[pb.len() - 1] & 1)];
        comp.extend_from_slice(&pb[1..=f]);
        assert_eq!(ecdh_derive(&a, EcKdf::Null, &[], &comp, f).unwrap(), zab);
        // X9.63
        let kdf = ecdh_derive(&a, EcKdf::X963(HashAlg::Sha256), b"info", &pb, 40).unwrap();
        assert_eq!(kdf, super::ec::x963_kdf(HashAlg::Sha256, &zab, b"info", 40));
        assert_eq!(
            ecdh_derive(&b, EcKdf::X963(HashAlg::Sha256), b"info", &pa, 40).unwrap(),
            kdf
        );
        // errors
        assert_eq!(
            rv(ecdh_derive(&a, EcKdf::Null, &[], &pb, f + 1)),
            CKR_KEY_SIZE_RANGE
        );
        assert_eq!(
            rv(ecdh_derive(&a, EcKdf::Null, &[], &pb, 0)),
            CKR_KEY_SIZE_RANGE
        );
        assert_eq!(
            rv(ecdh_derive(&a, EcKdf::Null, b"x", &pb, f)),
            CKR_MECHANISM_PARAM_INVALID
        );
        let mut off = pb.clone();
        off[5] ^= 1;
        assert_eq!(
            rv(ecdh_derive(&a, EcKdf::Null, &[], &off, f)),
            CKR_MECHANISM_PARAM_INVALID
        );
        assert_eq!(
            rv(ecdh_derive(&a, EcKdf::Null, &[], &[], f)),
            CKR_MECHANISM_PARAM_INVALID
        );
        assert_eq!(
            rv(ecdh_derive(&a, EcKdf::Null, &[], &[4], f)),
            CKR_MECHANISM_PARAM_INVALID
        );
        assert_eq!(
            rv(ecdh_derive(
                &a.public_material().unwrap(),
                EcKdf::Null,
                &[],
                &pb,
                f
            )),
            CKR_KEY_TYPE_INCONSISTENT
        );
        assert_eq!(
            rv(ecdh_derive(&secret(&[1; 32]), EcKdf::Null, &[], &pb, f)),
            CKR_KEY_TYPE_INCONSISTENT
        );
    }
    // a point of the other curve
    let a = generate_ec(Curve::P256);
    let other = generate_ec(Curve::P384).ec_point().unwrap();
    assert_eq!(
        rv(ecdh_derive(&a, EcKdf::Null, &[], &other, 32)),
        CKR_MECHANISM_PARAM_INVALID
    );
}

// ---------- ECDSA ----------

#[test]
fn ecdsa_sign_verify() {
    for curve in [Curve::P256, Curve::P384] {
        let f = curve.field_len();
        let k = generate_ec(curve);
        let p = k.public_material().unwrap();
        for h in [
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ] {
            let m = Mechanism::Ecdsa(Some(h));
            let mut op = sign(&m, &k).unwrap();
            op.update(b"hello ").unwrap();
            op.update(b"world").unwrap();
            let s = op.finish().unwrap();
            assert_eq!(s.len(), 2 * f);
            verify_all(&m, &p, b"hello world", &s).unwrap();
            verify_all(&m, &k, b"hello world", &s).unwrap();
            // CKM_ECDSA over the hash verifies the same signature
            let hash = super::digest::hash(h, b"hello world");
            verify_all(&Mechanism::Ecdsa(None), &p, &hash, &s).unwrap();
            assert_eq!(
                rv(verify_all(&m, &p, b"hello worle", &s)),
                CKR_SIGNATURE_INVALID
            );
        }
        let raw = Mechanism::Ecdsa(None);
        // short input: left-padded; long input: truncated to the field
        let s = sign_all(&raw, &k, &[0x55; 20]).unwrap();
        let mut padded = vec![0u8; f - 20];
        padded.extend_from_slice(&[0x55; 20]);
        verify_all(&raw, &p, &padded, &s).unwrap();
        let long: Vec<u8> = (0..100u8).collect();
        let s = sign_all(&raw, &k, &long).unwrap();
        verify_all(&raw, &p, &long[..f], &s).unwrap();
        assert_eq!(
            rv(verify_all(&raw, &p, &long[1..], &s)),
            CKR_SIGNATURE_INVALID
        );
        // lengths and garbage
        assert_eq!(
            rv(verify_all(&raw, &p, &long, &s[1..])),
            CKR_SIGNATURE_LEN_RANGE
        );
        assert_eq!(
            rv(verify_all(&raw, &p, &long, &[])),
            CKR_SIGNATURE_LEN_RANGE
        );
        assert_eq!(
            rv(verify_all(&raw, &p, &long, &vec![0u8; 2 * f])),
            CKR_SIGNATURE_INVALID
        );
        assert_eq!(
            rv(verify_all(&raw, &p, &long, &vec![0xffu8; 2 * f])),
            CKR_SIGNATURE_INVALID
        );
        assert_eq!(rv(sign_all(&raw, &k, &[0u8; 2000])), CKR_DATA_LEN_RANGE);
        // keys
        assert_eq!(rv(sign(&raw, &p)), CKR_KEY_TYPE_INCONSISTENT);
        assert_eq!(rv(sign(&raw, &secret(&[1; 32]))), CKR_KEY_TYPE_INCONSISTENT);
        assert_eq!(
            rv(verify(&raw, &secret(&[1; 32]))),
            CKR_KEY_TYPE_INCONSISTENT
        );
    }
}
