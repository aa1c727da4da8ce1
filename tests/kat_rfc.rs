//! Published known answers through the C ABI: FIPS 180-4 digests, RFC 4231 HMAC,
//! NIST SP 800-38A AES-ECB/CBC/CTR (F.1, F.2, F.5), RFC 3394 AES key wrap (§4.1–4.6)
//! and RFC 5649 key wrap with padding (§6). Every multi-part variant (updates in odd
//! chunk sizes) must give the single-part answer.
// The shared `call!` macro (tests/kat_util) expands raw-pointer arguments in `unsafe`.
#![allow(clippy::macro_metavars_in_unsafe)]

mod common;
#[macro_use]
mod kat_util;

use kat_util::{hex, name, raw, Mech, Tpl};
use pkcs11_sys::*;

/// Odd chunkings used for every multi-part check.
const CHUNKINGS: &[&[usize]] = &[&[1], &[3, 5], &[7], &[13, 1, 17], &[15], &[16], &[33]];

// ---- digests (FIPS 180-4 / the NIST examples) -----------------------------------------------

const ABC_448: &[u8] = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";

struct DigestKat {
    mech: CK_MECHANISM_TYPE,
    abc: &'static str,
    empty: &'static str,
    abc448: &'static str,
    million_a: &'static str,
}

const DIGESTS: &[DigestKat] = &[
    DigestKat {
        mech: CKM_SHA_1,
        abc: "a9993e364706816aba3e25717850c26c9cd0d89d",
        empty: "da39a3ee5e6b4b0d3255bfef95601890afd80709",
        abc448: "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
        million_a: "34aa973cd4c4daa4f61eeb2bdbad27316534016f",
    },
    DigestKat {
        mech: CKM_SHA224,
        abc: "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7",
        empty: "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f",
        abc448: "75388b16512776cc5dba5da1fd890150b0c6455cb4f58b1952522525",
        million_a: "20794655980c91d8bbb4c1ea97618a4bf03f42581948b2ee4ee7ad67",
    },
    DigestKat {
        mech: CKM_SHA256,
        abc: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        empty: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        abc448: "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        million_a: "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
    },
    DigestKat {
        mech: CKM_SHA384,
        abc: "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
        empty: "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b",
        abc448: "3391fdddfc8dc7393707a65b1b4709397cf8b1d162af05abfe8f450de5f36bc6b0455a8520bc4e6f5fe95b1fe3c8452b",
        million_a: "9d0e1809716474cb086e834e310a4a1ced149e9c00f248527972cec5704c2a5b07b8b3dc38ecc4ebae97ddd87f3d8985",
    },
    DigestKat {
        mech: CKM_SHA512,
        abc: "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        empty: "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
        abc448: "204a8fc6dda82f0a0ced7beb8e08a41657c16ef468b228a8279be331a703c33596fd15c13b1b07f9aa1d3bea57789ca031ad85c7a71dd70354ec631238ca3445",
        million_a: "e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973ebde0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b",
    },
];

#[test]
fn fips180_digests() {
    let r = raw();
    let s = r.session();
    let million_a = vec![b'a'; 1_000_000];
    for k in DIGESTS {
        let m = Mech::new(k.mech);
        for (msg, want) in [
            (&b"abc"[..], k.abc),
            (&b""[..], k.empty),
            (ABC_448, k.abc448),
        ] {
            let want = hex(want);
            assert_eq!(
                r.digest(s, &m, msg).unwrap(),
                want,
                "mech 0x{:x} single-part",
                k.mech
            );
            for c in CHUNKINGS {
                assert_eq!(
                    r.digest_multi(s, &m, msg, c).unwrap(),
                    want,
                    "mech 0x{:x} multi-part {c:?}",
                    k.mech
                );
            }
        }
        let want = hex(k.million_a);
        assert_eq!(
            r.digest(s, &m, &million_a).unwrap(),
            want,
            "one million 'a'"
        );
        assert_eq!(
            r.digest_multi(s, &m, &million_a, &[999, 4097, 1]).unwrap(),
            want,
            "one million 'a' multi-part"
        );
    }
}

// ---- HMAC (RFC 4231) ----------------------------------------------------------------------

struct HmacKat {
    key: Vec<u8>,
    data: Vec<u8>,
    /// SHA-224, SHA-256, SHA-384, SHA-512.
    macs: [&'static str; 4],
    /// Test case 5 compares only the first 128 bits.
    truncate: Option<usize>,
}

fn rfc4231() -> Vec<HmacKat> {
    vec![
        HmacKat {
            key: vec![0x0b; 20],
            data: b"Hi There".to_vec(),
            macs: [
                "896fb1128abbdf196832107cd49df33f47b4b1169912ba4f53684b22",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
                "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
            ],
            truncate: None,
        },
        HmacKat {
            key: b"Jefe".to_vec(),
            data: b"what do ya want for nothing?".to_vec(),
            macs: [
                "a30e01098bc6dbbf45690f3a7e9e6d0f8bbea2a39e6148008fd05e44",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            ],
            truncate: None,
        },
        HmacKat {
            key: vec![0xaa; 20],
            data: vec![0xdd; 50],
            macs: [
                "7fb3cb3588c6c1f6ffa9694d7d6ad2649365b0c1f65d69d1ec8333ea",
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
                "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b2a5ab39dc13814b94e3ab6e101a34f27",
                "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb",
            ],
            truncate: None,
        },
        HmacKat {
            key: (1..=25).collect(),
            data: vec![0xcd; 50],
            macs: [
                "6c11506874013cac6a2abc1bb382627cec6a90d86efc012de7afec5a",
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
                "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e6801dd23c4a7d679ccf8a386c674cffb",
                "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3dba91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd",
            ],
            truncate: None,
        },
        HmacKat {
            key: vec![0x0c; 20],
            data: b"Test With Truncation".to_vec(),
            macs: [
                "0e2aea68a90c8d37c988bcdb9fca6fa8",
                "a3b6167473100ee06e0c796c2955552b",
                "3abf34c3503b2a23a46efc619baef897",
                "415fad6271580a531d4179bc891d87a6",
            ],
            truncate: Some(16),
        },
        HmacKat {
            key: vec![0xaa; 131],
            data: b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            macs: [
                "95e9a0db962095adaebe9b2d6f0dbce2d499f112f2d2b7273fa6870e",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
                "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952",
                "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
            ],
            truncate: None,
        },
        HmacKat {
            key: vec![0xaa; 131],
            data: b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
            macs: [
                "3a854166ac5d9f023f54d517d0b39dbd946770db9c2b95c9f6f565d1",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
                "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5a678cc31e799176d3860e6110c46523e",
                "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58",
            ],
            truncate: None,
        },
    ]
}

#[test]
fn rfc4231_hmac() {
    let r = raw();
    let s = r.session();
    let mechs = [
        CKM_SHA224_HMAC,
        CKM_SHA256_HMAC,
        CKM_SHA384_HMAC,
        CKM_SHA512_HMAC,
    ];
    for (i, case) in rfc4231().iter().enumerate() {
        let key = r.generic_key(s, &case.key).unwrap();
        for (mech, want) in mechs.iter().zip(case.macs) {
            let m = Mech::new(*mech);
            let want = hex(want);
            let cut = |v: Vec<u8>| match case.truncate {
                Some(n) => v[..n].to_vec(),
                None => v,
            };
            let single = r.sign(s, &m, key, &case.data).unwrap();
            assert_eq!(
                cut(single.clone()),
                want,
                "RFC 4231 test case {} mech 0x{mech:x}",
                i + 1
            );
            for c in CHUNKINGS {
                assert_eq!(
                    r.sign_multi(s, &m, key, &case.data, c).unwrap(),
                    single,
                    "test case {} multi-part {c:?}",
                    i + 1
                );
                r.verify_multi(s, &m, key, &case.data, &single, c).unwrap();
            }
            r.verify(s, &m, key, &case.data, &single).unwrap();
            if case.truncate.is_none() {
                let mut bad = single.clone();
                bad[0] ^= 0x80;
                assert_eq!(
                    r.verify(s, &m, key, &case.data, &bad),
                    Err(CKR_SIGNATURE_INVALID)
                );
            }
        }
    }
}

// ---- AES modes (NIST SP 800-38A) ------------------------------------------------------------

const SP800_38A_PT: &str = "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
                            30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710";
const KEY128: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const KEY192: &str = "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b";
const KEY256: &str = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
const CBC_IV: &str = "000102030405060708090a0b0c0d0e0f";
const CTR_BLOCK: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/// (mode, key, ciphertext) of SP 800-38A F.1.1/F.1.3/F.1.5, F.2.1/F.2.3/F.2.5, F.5.1/F.5.3/F.5.5.
const SP800_38A: &[(&str, &str, &str)] = &[
    ("ECB", KEY128, "3ad77bb40d7a3660a89ecaf32466ef97 f5d3d58503b9699de785895a96fdbaaf 43b1cd7f598ece23881b00e3ed030688 7b0c785e27e8ad3f8223207104725dd4"),
    ("ECB", KEY192, "bd334f1d6e45f25ff712a214571fa5cc 974104846d0ad3ad7734ecb3ecee4eef ef7afd2270e2e60adce0ba2face6444e 9a4b41ba738d6c72fb16691603c18e0e"),
    ("ECB", KEY256, "f3eed1bdb5d2a03c064b5a7e3db181f8 591ccb10d410ed26dc5ba74a31362870 b6ed21b99ca6f4f9f153e7b1beafed1d 23304b7a39f9f3ff067d8d8f9e24ecc7"),
    ("CBC", KEY128, "7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2 73bed6b8e3c1743b7116e69e22229516 3ff1caa1681fac09120eca307586e1a7"),
    ("CBC", KEY192, "4f021db243bc633d7178183a9fa071e8 b4d9ada9ad7dedf4e5e738763f69145a 571b242012fb7ae07fa9baac3df102e0 08b0e27988598881d920a9e64f5615cd"),
    ("CBC", KEY256, "f58c4c04d6e5f1ba779eabfb5f7bfbd6 9cfc4e967edb808d679f777bc6702c7d 39f23369a9d9bacfa530e26304231461 b2eb05e2c39be9fcda6c19078c6a9d1b"),
    ("CTR", KEY128, "874d6191b620e3261bef6864990db6ce 9806f66b7970fdff8617187bb9fffdff 5ae4df3edbd5d35e5b4f09020db03eab 1e031dda2fbe03d1792170a0f3009cee"),
    ("CTR", KEY192, "1abc932417521ca24f2b0459fe7e6e0b 090339ec0aa6faefd5ccc2c6f4ce8e94 1e36b26bd1ebc670d1bd1d665620abf7 4f78a7f6d29809585a97daec58c6b050"),
    ("CTR", KEY256, "601ec313775789a5b7a7f504bbf3d228 f443e3ca4d62b59aca84e990cacaf5c5 2b0930daa23de94ce87017ba2d84988d dfc9c58db67aada613c2dd08457941a6"),
];

fn mode_mech(mode: &str) -> Mech<'static> {
    match mode {
        "ECB" => Mech::new(CKM_AES_ECB),
        "CBC" => Mech::with_bytes(CKM_AES_CBC, &hex(CBC_IV)),
        "CBC_PAD" => Mech::with_bytes(CKM_AES_CBC_PAD, &hex(CBC_IV)),
        "CTR" => Mech::ctr(hex(CTR_BLOCK).try_into().unwrap(), 128),
        _ => unreachable!(),
    }
}

#[test]
fn sp800_38a_aes_ecb_cbc_ctr() {
    let r = raw();
    let s = r.session();
    let pt = hex(SP800_38A_PT);
    for (mode, key, ct) in SP800_38A {
        let ct = hex(ct);
        let key_bytes = hex(key);
        let what = format!("{mode}-AES-{}", key_bytes.len() * 8);
        let key = r.aes_key(s, &key_bytes).unwrap();
        let m = mode_mech(mode);
        assert_eq!(r.encrypt(s, &m, key, &pt).unwrap(), ct, "{what}: encrypt");
        assert_eq!(r.decrypt(s, &m, key, &ct).unwrap(), pt, "{what}: decrypt");
        for c in CHUNKINGS {
            assert_eq!(
                r.encrypt_multi(s, &m, key, &pt, c).unwrap(),
                ct,
                "{what}: multi-part encrypt {c:?}"
            );
            assert_eq!(
                r.decrypt_multi(s, &m, key, &ct, c).unwrap(),
                pt,
                "{what}: multi-part decrypt {c:?}"
            );
        }
        // CTR is a stream mode: any prefix encrypts to the prefix of the ciphertext.
        if *mode == "CTR" {
            for n in [1usize, 15, 17, 33, 63] {
                assert_eq!(
                    r.encrypt(s, &m, key, &pt[..n]).unwrap(),
                    ct[..n],
                    "{what}: CTR prefix {n}"
                );
                assert_eq!(
                    r.encrypt_multi(s, &m, key, &pt[..n], &[5]).unwrap(),
                    ct[..n]
                );
            }
        } else {
            // Block modes without padding refuse a partial block.
            let got = r.encrypt(s, &m, key, &pt[..17]);
            assert_eq!(
                got.map_err(name),
                Err(name(CKR_DATA_LEN_RANGE)),
                "{what}: 17 bytes"
            );
            let got = r.decrypt(s, &m, key, &ct[..17]);
            assert_eq!(
                got.map_err(name),
                Err(name(CKR_ENCRYPTED_DATA_LEN_RANGE)),
                "{what}: 17 bytes"
            );
        }
        r.destroy(s, key).unwrap();
    }
}

/// CBC_PAD (PKCS#7 padding): the SP 800-38A CBC answer followed by one block of padding.
#[test]
fn aes_cbc_pad_known_answers() {
    let r = raw();
    let s = r.session();
    let key = r.aes_key(s, &hex(KEY128)).unwrap();
    let m = mode_mech("CBC_PAD");
    let pt = hex(SP800_38A_PT);
    let ct = hex(
        "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2
                  73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7
                  8cb82807230e1321d3fae00d18cc2012",
    );
    let abc_ct = hex("f327e7290b9b923d29d949db2c9f75cc");
    for (p, c) in [(&pt, &ct), (&b"abc".to_vec(), &abc_ct)] {
        assert_eq!(&r.encrypt(s, &m, key, p).unwrap(), c);
        assert_eq!(&r.decrypt(s, &m, key, c).unwrap(), p);
        for ch in CHUNKINGS {
            assert_eq!(
                &r.encrypt_multi(s, &m, key, p, ch).unwrap(),
                c,
                "multi-part {ch:?}"
            );
            assert_eq!(
                &r.decrypt_multi(s, &m, key, c, ch).unwrap(),
                p,
                "multi-part {ch:?}"
            );
        }
    }
    // A ciphertext that is not whole blocks, and one with bad padding.
    assert_eq!(
        r.decrypt(s, &m, key, &ct[..20]),
        Err(CKR_ENCRYPTED_DATA_LEN_RANGE)
    );
    assert_eq!(
        r.decrypt(s, &m, key, &ct[..64]),
        Err(CKR_ENCRYPTED_DATA_INVALID),
        "the last SP 800-38A block is not valid padding"
    );
}

// ---- AES key wrap (RFC 3394) and with padding (RFC 5649) ---------------------------------------

const KEK128: &str = "000102030405060708090A0B0C0D0E0F";
const KEK192: &str = "000102030405060708090A0B0C0D0E0F1011121314151617";
const KEK256: &str = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";

/// (section, KEK, key data, ciphertext)
const RFC3394: &[(&str, &str, &str, &str)] = &[
    (
        "4.1",
        KEK128,
        "00112233445566778899AABBCCDDEEFF",
        "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5",
    ),
    (
        "4.2",
        KEK192,
        "00112233445566778899AABBCCDDEEFF",
        "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D",
    ),
    (
        "4.3",
        KEK256,
        "00112233445566778899AABBCCDDEEFF",
        "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7",
    ),
    (
        "4.4",
        KEK192,
        "00112233445566778899AABBCCDDEEFF0001020304050607",
        "031D33264E15D33268F24EC260743EDCE1C6C7DDEE725A936BA814915C6762D2",
    ),
    (
        "4.5",
        KEK256,
        "00112233445566778899AABBCCDDEEFF0001020304050607",
        "A8F9BC1612C68B3FF6E6F4FBE30E71E4769C8B80A32CB8958CD5D17D6B254DA1",
    ),
    (
        "4.6",
        KEK256,
        "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
        "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21",
    ),
];

/// RFC 5649 §6.
const RFC5649_KEK: &str = "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8";
const RFC5649: &[(&str, &str)] = &[
    (
        "c37b7e6492584340bed12207808941155068f738",
        "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
    ),
    ("466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"),
];

/// Wrap an imported, extractable session key (AES when its length is an AES key length,
/// else a generic secret) and compare with the published answer; unwrap it back.
fn wrap_kat(mech: CK_MECHANISM_TYPE, what: &str, kek: &[u8], data: &[u8], want: &[u8]) {
    let r = raw();
    let s = r.session();
    let m = Mech::new(mech);
    let kek = r.aes_key(s, kek).unwrap();
    let target = if matches!(data.len(), 16 | 24 | 32) {
        r.aes_key(s, data).unwrap()
    } else {
        r.generic_key(s, data).unwrap()
    };
    assert_eq!(r.wrap(s, &m, kek, target).unwrap(), want, "{what}: wrap");
    // Two-call convention on C_WrapKey: a buffer one byte short.
    let mut mech = m.ck();
    let mut len = (want.len() - 1) as CK_ULONG;
    let mut buf = vec![0u8; want.len()];
    let rv = call!(
        r,
        C_WrapKey(s, &mut mech, kek, target, buf.as_mut_ptr(), &mut len)
    );
    assert_eq!(
        rv,
        CKR_BUFFER_TOO_SMALL,
        "{what}: short buffer gives {}",
        name(rv)
    );
    assert_eq!(len as usize, want.len());
    let key_type = if matches!(data.len(), 16 | 24 | 32) {
        CKK_AES
    } else {
        CKK_GENERIC_SECRET
    };
    let back = r
        .unwrap(
            s,
            &m,
            kek,
            want,
            Tpl::new()
                .class(CKO_SECRET_KEY)
                .key_type(key_type)
                .bool(CKA_TOKEN, false)
                .bool(CKA_SENSITIVE, false)
                .bool(CKA_EXTRACTABLE, true),
        )
        .unwrap();
    assert_eq!(r.attr(s, back, CKA_VALUE).unwrap(), data, "{what}: unwrap");
    // One flipped bit anywhere makes the integrity check fail.
    let mut bad = want.to_vec();
    bad[want.len() / 2] ^= 1;
    let got = r.unwrap(
        s,
        &m,
        kek,
        &bad,
        Tpl::new()
            .class(CKO_SECRET_KEY)
            .key_type(key_type)
            .bool(CKA_TOKEN, false),
    );
    assert_eq!(
        got.map_err(name),
        Err(name(CKR_WRAPPED_KEY_INVALID)),
        "{what}: tampered"
    );
    r.close_session(s).unwrap();
}

#[test]
fn rfc3394_aes_key_wrap() {
    for (section, kek, data, ct) in RFC3394 {
        wrap_kat(
            CKM_AES_KEY_WRAP,
            &format!("RFC 3394 §{section}"),
            &hex(kek),
            &hex(data),
            &hex(ct),
        );
    }
}

#[test]
fn rfc5649_aes_key_wrap_pad() {
    for (data, ct) in RFC5649 {
        wrap_kat(
            CKM_AES_KEY_WRAP_PAD,
            &format!("RFC 5649 §6 ({} bytes)", data.len() / 2),
            &hex(RFC5649_KEK),
            &hex(data),
            &hex(ct),
        );
    }
}
