//! The fast engine for the asymmetric hot path: aws-lc-rs (assembly-optimised, its
//! symbols prefixed so it cannot clash with a host's OpenSSL). Keys are parsed once per
//! instance and kept (`FastKey`); every mechanism or parameter it does not cover falls
//! back to the RustCrypto implementations, which stay the reference.

use super::key::KeyMaterial;
use super::{CipherOp, SignOp, VerifyOp};
use crate::error::{Error, Result};
use crate::hsm::mechanism::{Curve, HashAlg, Mechanism};
use aws_lc_rs::encoding::{AsBigEndian, AsDer};
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use aws_lc_rs::{digest, rsa};
use pkcs11_sys::*;
use std::sync::Arc;
use zeroize::Zeroizing;

/// A key parsed for aws-lc-rs.
pub enum FastKey {
    Ec {
        curve: Curve,
        pair: Option<sig::EcdsaKeyPair>,
        public: sig::ParsedPublicKey,
    },
    Rsa {
        pair: Option<rsa::KeyPair>,
        decrypt: Option<rsa::PrivateDecryptingKey>,
        public_der: Vec<u8>,
        k: usize,
    },
}

fn native_hash(c: Curve) -> HashAlg {
    match c {
        Curve::P256 => HashAlg::Sha256,
        Curve::P384 => HashAlg::Sha384,
    }
}

fn digest_alg(h: HashAlg) -> Option<&'static digest::Algorithm> {
    match h {
        HashAlg::Sha1 => Some(&digest::SHA1_FOR_LEGACY_USE_ONLY),
        HashAlg::Sha224 => Some(&digest::SHA224),
        HashAlg::Sha256 => Some(&digest::SHA256),
        HashAlg::Sha384 => Some(&digest::SHA384),
        HashAlg::Sha512 => Some(&digest::SHA512),
    }
}

impl FastKey {
    /// Parse a key for the fast engine; `None` when it has nothing to offer for it.
    pub fn prepare(m: &KeyMaterial) -> Option<FastKey> {
        match m {
            KeyMaterial::EcPrivate(k) => {
                let curve = k.curve();
                let (signing, verifying) = ec_algs(curve);
                let pkcs8 = m.private_to_pkcs8().ok()?;
                let pair = sig::EcdsaKeyPair::from_pkcs8(signing, &pkcs8).ok()?;
                let public =
                    sig::UnparsedPublicKey::new(verifying, pair.public_key().as_ref().to_vec())
                        .parse()
                        .ok()?;
                Some(FastKey::Ec {
                    curve,
                    pair: Some(pair),
                    public,
                })
            }
            KeyMaterial::EcPublic(k) => {
                let curve = k.curve();
                let (_, verifying) = ec_algs(curve);
                let public = sig::UnparsedPublicKey::new(verifying, k.to_uncompressed())
                    .parse()
                    .ok()?;
                Some(FastKey::Ec {
                    curve,
                    pair: None,
                    public,
                })
            }
            KeyMaterial::RsaPrivate(_) => {
                let pkcs8 = m.private_to_pkcs8().ok()?;
                let pair = rsa::KeyPair::from_pkcs8(&pkcs8).ok()?;
                let decrypt = rsa::PrivateDecryptingKey::from_pkcs8(&pkcs8).ok();
                let public_der = pair.public_key().as_ref().to_vec();
                let k = pair.public_modulus_len();
                Some(FastKey::Rsa {
                    pair: Some(pair),
                    decrypt,
                    public_der,
                    k,
                })
            }
            KeyMaterial::RsaPublic(_) => {
                let enc = m.encode().ok()?;
                // Our encoding is a tag byte + PKCS#1 RSAPublicKey, what aws-lc-rs verifies with.
                let public_der = enc.get(1..)?.to_vec();
                let k = m.rsa_modulus()?.len();
                Some(FastKey::Rsa {
                    pair: None,
                    decrypt: None,
                    public_der,
                    k,
                })
            }
            _ => None,
        }
    }
}

fn ec_algs(
    c: Curve,
) -> (
    &'static sig::EcdsaSigningAlgorithm,
    &'static sig::EcdsaVerificationAlgorithm,
) {
    match c {
        Curve::P256 => (
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            &sig::ECDSA_P256_SHA256_FIXED,
        ),
        Curve::P384 => (
            &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            &sig::ECDSA_P384_SHA384_FIXED,
        ),
    }
}

fn pkcs1_encoding(h: HashAlg) -> Option<&'static sig::RsaSignatureEncoding> {
    match h {
        HashAlg::Sha256 => Some(&sig::RSA_PKCS1_SHA256),
        HashAlg::Sha384 => Some(&sig::RSA_PKCS1_SHA384),
        HashAlg::Sha512 => Some(&sig::RSA_PKCS1_SHA512),
        _ => None,
    }
}

fn pss_encoding(h: HashAlg) -> Option<&'static sig::RsaSignatureEncoding> {
    match h {
        HashAlg::Sha256 => Some(&sig::RSA_PSS_SHA256),
        HashAlg::Sha384 => Some(&sig::RSA_PSS_SHA384),
        HashAlg::Sha512 => Some(&sig::RSA_PSS_SHA512),
        _ => None,
    }
}

fn pkcs1_params(h: HashAlg) -> Option<&'static sig::RsaParameters> {
    match h {
        HashAlg::Sha256 => Some(&sig::RSA_PKCS1_2048_8192_SHA256),
        HashAlg::Sha384 => Some(&sig::RSA_PKCS1_2048_8192_SHA384),
        HashAlg::Sha512 => Some(&sig::RSA_PKCS1_2048_8192_SHA512),
        _ => None,
    }
}

fn pss_params(h: HashAlg) -> Option<&'static sig::RsaParameters> {
    match h {
        HashAlg::Sha256 => Some(&sig::RSA_PSS_2048_8192_SHA256),
        HashAlg::Sha384 => Some(&sig::RSA_PSS_2048_8192_SHA384),
        HashAlg::Sha512 => Some(&sig::RSA_PSS_2048_8192_SHA512),
        _ => None,
    }
}

/// DigestInfo prefixes (RFC 8017 §9.2 note 1) that `CKM_RSA_PKCS` signing receives.
const DIGEST_INFO: &[(HashAlg, &[u8])] = &[
    (
        HashAlg::Sha256,
        &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
    ),
    (
        HashAlg::Sha384,
        &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
    ),
    (
        HashAlg::Sha512,
        &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    ),
];

/// How a fast signature is made.
#[derive(Clone, Copy)]
enum Plan {
    /// The module hashes the message (`CKM_ECDSA_SHA256`, `CKM_SHA256_RSA_PKCS`, …).
    Hash(HashAlg, Scheme),
    /// The caller gave a hash (`CKM_ECDSA`, `CKM_RSA_PKCS` with a DigestInfo, raw PSS).
    Prehashed(HashAlg, Scheme),
}

#[derive(Clone, Copy)]
enum Scheme {
    Ecdsa,
    Pkcs1,
    Pss,
}

fn plan(mech: &Mechanism, key: &FastKey) -> Option<Plan> {
    match (mech, key) {
        (Mechanism::Ecdsa(Some(h)), FastKey::Ec { curve, .. }) if *h == native_hash(*curve) => {
            Some(Plan::Hash(*h, Scheme::Ecdsa))
        }
        (Mechanism::Ecdsa(None), FastKey::Ec { curve, .. }) => {
            Some(Plan::Prehashed(native_hash(*curve), Scheme::Ecdsa))
        }
        (Mechanism::RsaPkcsHash(h), FastKey::Rsa { .. }) if pkcs1_encoding(*h).is_some() => {
            Some(Plan::Hash(*h, Scheme::Pkcs1))
        }
        (Mechanism::RsaPkcs, FastKey::Rsa { .. }) => {
            Some(Plan::Prehashed(HashAlg::Sha256, Scheme::Pkcs1))
        }
        (Mechanism::RsaPss { params, prehashed }, FastKey::Rsa { .. })
            if params.mgf == params.hash
                && params.salt_len == params.hash.output_len()
                && pss_encoding(params.hash).is_some() =>
        {
            Some(if *prehashed {
                Plan::Prehashed(params.hash, Scheme::Pss)
            } else {
                Plan::Hash(params.hash, Scheme::Pss)
            })
        }
        _ => None,
    }
}

enum Input {
    Hashing(digest::Context),
    Buffer(Zeroizing<Vec<u8>>),
}

impl Input {
    fn new(p: Plan) -> Option<Input> {
        Some(match p {
            Plan::Hash(h, _) => Input::Hashing(digest::Context::new(digest_alg(h)?)),
            Plan::Prehashed(..) => Input::Buffer(Zeroizing::new(Vec::new())),
        })
    }

    fn update(&mut self, data: &[u8]) -> Result<()> {
        match self {
            Input::Hashing(c) => c.update(data),
            Input::Buffer(b) => {
                if b.len() + data.len() > 1024 {
                    return Err(Error::new(
                        CKR_DATA_LEN_RANGE,
                        "input too long for this mechanism",
                    ));
                }
                b.extend_from_slice(data)
            }
        }
        Ok(())
    }

    /// The digest to sign or verify, and for `CKM_RSA_PKCS` whether the input was a
    /// DigestInfo we recognise. `None`: the fast engine cannot take this input.
    fn digest(&mut self, plan: Plan) -> Option<digest::Digest> {
        match (
            std::mem::replace(self, Input::Buffer(Zeroizing::new(Vec::new()))),
            plan,
        ) {
            (Input::Hashing(c), _) => Some(c.finish()),
            (Input::Buffer(b), Plan::Prehashed(_, Scheme::Pkcs1)) => {
                DIGEST_INFO.iter().find_map(|(h, prefix)| {
                    let rest = b.strip_prefix(*prefix)?;
                    digest::Digest::import_less_safe(rest, digest_alg(*h)?).ok()
                })
            }
            (Input::Buffer(b), Plan::Prehashed(h, _)) => {
                digest::Digest::import_less_safe(&b, digest_alg(h)?).ok()
            }
            _ => None,
        }
    }

    fn buffered(&self) -> &[u8] {
        match self {
            Input::Buffer(b) => b,
            Input::Hashing(_) => &[],
        }
    }
}

struct FastSign {
    key: Arc<FastKey>,
    plan: Plan,
    input: Input,
    /// For inputs the fast engine does not take, the reference implementation
    /// (built only then: building it costs a scalar multiplication).
    fallback: Fallback,
    len: usize,
}

struct Fallback {
    mech: Mechanism,
    material: Arc<KeyMaterial>,
}

impl SignOp for FastSign {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.input.update(data)
    }

    fn sign_len(&self) -> usize {
        self.len
    }

    fn finish(&mut self) -> Result<Vec<u8>> {
        let raw = self.input.buffered().to_vec();
        let Some(d) = self.input.digest(self.plan) else {
            let mut op = super::sign(&self.fallback.mech, &self.fallback.material)?;
            op.update(&raw)?;
            return op.finish();
        };
        let failed = || Error::general("signing failed");
        match (&*self.key, self.plan) {
            (FastKey::Ec { pair: Some(p), .. }, _) => {
                Ok(p.sign_digest(&d).map_err(|_| failed())?.as_ref().to_vec())
            }
            (
                FastKey::Rsa {
                    pair: Some(p), k, ..
                },
                Plan::Hash(h, s) | Plan::Prehashed(h, s),
            ) => {
                let h = if matches!(self.plan, Plan::Prehashed(_, Scheme::Pkcs1)) {
                    hash_of(d.algorithm())
                } else {
                    h
                };
                let enc = match s {
                    Scheme::Pss => pss_encoding(h),
                    _ => pkcs1_encoding(h),
                }
                .ok_or_else(failed)?;
                let mut out = vec![0u8; *k];
                p.sign_digest(enc, &d, &mut out).map_err(|_| failed())?;
                Ok(out)
            }
            _ => Err(Error::key_type("not a private key")),
        }
    }
}

fn hash_of(a: &'static digest::Algorithm) -> HashAlg {
    if a == &digest::SHA384 {
        HashAlg::Sha384
    } else if a == &digest::SHA512 {
        HashAlg::Sha512
    } else {
        HashAlg::Sha256
    }
}

/// A fast signer for `mech`, or `None` to use the reference implementation.
pub fn signer(
    mech: &Mechanism,
    key: &Arc<FastKey>,
    material: &Arc<KeyMaterial>,
) -> Result<Option<Box<dyn SignOp>>> {
    let has_pair = matches!(
        &**key,
        FastKey::Ec { pair: Some(_), .. } | FastKey::Rsa { pair: Some(_), .. }
    );
    let (Some(plan), true) = (plan(mech, key), has_pair) else {
        return Ok(None);
    };
    let Some(input) = Input::new(plan) else {
        return Ok(None);
    };
    let len = sig_len(key);
    let fallback = Fallback {
        mech: mech.clone(),
        material: material.clone(),
    };
    Ok(Some(Box::new(FastSign {
        key: key.clone(),
        plan,
        input,
        fallback,
        len,
    })))
}

fn sig_len(key: &FastKey) -> usize {
    match key {
        FastKey::Ec { curve, .. } => 2 * curve.field_len(),
        FastKey::Rsa { k, .. } => *k,
    }
}

struct FastVerify {
    key: Arc<FastKey>,
    plan: Plan,
    input: Input,
    fallback: Fallback,
    sig_len: usize,
}

impl VerifyOp for FastVerify {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.input.update(data)
    }

    fn finish(&mut self, signature: &[u8]) -> Result<()> {
        if signature.len() != self.sig_len {
            return Err(Error::new(
                CKR_SIGNATURE_LEN_RANGE,
                "signature has the wrong length",
            ));
        }
        let raw = self.input.buffered().to_vec();
        let Some(d) = self.input.digest(self.plan) else {
            let mut op = super::verify(&self.fallback.mech, &self.fallback.material)?;
            op.update(&raw)?;
            return op.finish(signature);
        };
        let bad = || Error::new(CKR_SIGNATURE_INVALID, "signature does not verify");
        match (&*self.key, self.plan) {
            (FastKey::Ec { public, .. }, _) => {
                public.verify_digest_sig(&d, signature).map_err(|_| bad())
            }
            (FastKey::Rsa { public_der, .. }, Plan::Hash(h, s) | Plan::Prehashed(h, s)) => {
                let h = if matches!(self.plan, Plan::Prehashed(_, Scheme::Pkcs1)) {
                    hash_of(d.algorithm())
                } else {
                    h
                };
                let params = match s {
                    Scheme::Pss => pss_params(h),
                    _ => pkcs1_params(h),
                }
                .ok_or_else(bad)?;
                sig::UnparsedPublicKey::new(params, public_der)
                    .verify_digest(&d, signature)
                    .map_err(|_| bad())
            }
        }
    }
}

/// A fast verifier for `mech`, or `None` to use the reference implementation.
pub fn verifier(
    mech: &Mechanism,
    key: &Arc<FastKey>,
    material: &Arc<KeyMaterial>,
) -> Result<Option<Box<dyn VerifyOp>>> {
    let Some(plan) = plan(mech, key) else {
        return Ok(None);
    };
    let Some(input) = Input::new(plan) else {
        return Ok(None);
    };
    let sig_len = sig_len(key);
    let fallback = Fallback {
        mech: mech.clone(),
        material: material.clone(),
    };
    Ok(Some(Box::new(FastVerify {
        key: key.clone(),
        plan,
        input,
        fallback,
        sig_len,
    })))
}

struct FastDecrypt {
    key: Arc<FastKey>,
    oaep: Option<(&'static rsa::OaepAlgorithm, Vec<u8>)>,
    buf: Vec<u8>,
    k: usize,
}

impl CipherOp for FastDecrypt {
    fn update_len(&self, _input_len: usize) -> usize {
        0
    }

    fn update(&mut self, input: &[u8], _out: &mut Vec<u8>) -> Result<()> {
        if self.buf.len() + input.len() > self.k {
            return Err(Error::new(
                CKR_ENCRYPTED_DATA_LEN_RANGE,
                "ciphertext longer than the modulus",
            ));
        }
        self.buf.extend_from_slice(input);
        Ok(())
    }

    fn final_len(&self) -> usize {
        self.k
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.buf.len() != self.k {
            return Err(Error::new(
                CKR_ENCRYPTED_DATA_LEN_RANGE,
                "ciphertext must be as long as the modulus",
            ));
        }
        let FastKey::Rsa {
            decrypt: Some(dk), ..
        } = &*self.key
        else {
            return Err(Error::key_type("not an RSA private key"));
        };
        let bad = || Error::new(CKR_ENCRYPTED_DATA_INVALID, "decryption failed");
        let mut plain = Zeroizing::new(vec![0u8; self.k]);
        let n = match &self.oaep {
            Some((alg, label)) => {
                let key = rsa::OaepPrivateDecryptingKey::new(dk.clone()).map_err(|_| bad())?;
                let label = (!label.is_empty()).then_some(label.as_slice());
                key.decrypt(alg, &self.buf, &mut plain, label)
                    .map_err(|_| bad())?
                    .len()
            }
            None => {
                let key = rsa::Pkcs1PrivateDecryptingKey::new(dk.clone()).map_err(|_| bad())?;
                key.decrypt(&self.buf, &mut plain).map_err(|_| bad())?.len()
            }
        };
        out.extend_from_slice(&plain[..n]);
        Ok(())
    }
}

/// A fast RSA decryption (OAEP with one hash for both roles, or PKCS#1 v1.5).
pub fn decrypter(mech: &Mechanism, key: &Arc<FastKey>) -> Option<Box<dyn CipherOp>> {
    let FastKey::Rsa {
        decrypt: Some(_),
        k,
        ..
    } = &**key
    else {
        return None;
    };
    let oaep = match mech {
        Mechanism::RsaPkcs => None,
        Mechanism::RsaOaep { hash, mgf, label } if hash == mgf => Some((
            match hash {
                HashAlg::Sha1 => &rsa::OAEP_SHA1_MGF1SHA1,
                HashAlg::Sha256 => &rsa::OAEP_SHA256_MGF1SHA256,
                HashAlg::Sha384 => &rsa::OAEP_SHA384_MGF1SHA384,
                HashAlg::Sha512 => &rsa::OAEP_SHA512_MGF1SHA512,
                HashAlg::Sha224 => return None,
            },
            label.clone(),
        )),
        _ => return None,
    };
    Some(Box::new(FastDecrypt {
        key: key.clone(),
        oaep,
        buf: Vec::new(),
        k: *k,
    }))
}

/// EC key generation in aws-lc-rs (the result is ordinary key material).
pub fn generate_ec(curve: Curve) -> Option<KeyMaterial> {
    generate_ec_pair(curve).map(|(k, _)| k)
}

/// EC key generation returning both halves: the public point comes from aws-lc-rs,
/// which saves deriving it again.
pub fn generate_ec_pair(curve: Curve) -> Option<(KeyMaterial, KeyMaterial)> {
    let (alg, _) = ec_algs(curve);
    let pair = sig::EcdsaKeyPair::generate(alg).ok()?;
    // The raw scalar, not PKCS#8: parsing PKCS#8 would recompute the public key to check it.
    let scalar = zeroize::Zeroizing::new(pair.private_key().as_be_bytes().ok()?.as_ref().to_vec());
    let private = KeyMaterial::ec_private_from_scalar(curve, &scalar).ok()?;
    let public = KeyMaterial::ec_public_from_point(curve, pair.public_key().as_ref()).ok()?;
    Some((private, public))
}

/// RSA key generation in aws-lc-rs for the sizes and exponent it supports.
pub fn generate_rsa(bits: usize, public_exponent: &[u8]) -> Option<KeyMaterial> {
    let e = public_exponent
        .iter()
        .skip_while(|b| **b == 0)
        .copied()
        .collect::<Vec<u8>>();
    // aws-lc generates with e = 65537 only: no exponent given (the default) or 65537.
    if !(public_exponent.is_empty() || e == [1, 0, 1]) {
        return None;
    }
    let size = match bits {
        2048 => rsa::KeySize::Rsa2048,
        3072 => rsa::KeySize::Rsa3072,
        4096 => rsa::KeySize::Rsa4096,
        _ => return None,
    };
    let pair = rsa::KeyPair::generate(size).ok()?;
    let der = pair.as_der().ok()?;
    KeyMaterial::private_from_pkcs8(der.as_ref()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::mechanism::PssParams;

    fn sign_fast(mech: &Mechanism, m: &KeyMaterial, data: &[u8]) -> Vec<u8> {
        let fk = Arc::new(FastKey::prepare(m).unwrap());
        let mut op = signer(mech, &fk, &Arc::new(m.clone()))
            .unwrap()
            .expect("fast path taken");
        op.update(data).unwrap();
        op.finish().unwrap()
    }

    fn verify_ref(mech: &Mechanism, m: &KeyMaterial, data: &[u8], sig: &[u8]) -> Result<()> {
        let mut op = super::super::verify(mech, m)?;
        op.update(data)?;
        op.finish(sig)
    }

    fn verify_fast(mech: &Mechanism, m: &KeyMaterial, data: &[u8], sig: &[u8]) -> Result<()> {
        let public = m.public_material().unwrap();
        let fk = Arc::new(FastKey::prepare(&public).unwrap());
        let mut op = verifier(mech, &fk, &Arc::new(public.clone()))
            .unwrap()
            .expect("fast path taken");
        op.update(data)?;
        op.finish(sig)
    }

    /// Fast signatures verify with the reference implementation and the other way
    /// round; tampering is caught by both; PKCS#1 v1.5 (deterministic) is bit-identical.
    #[test]
    fn fast_and_reference_agree() {
        let msg = b"the quick brown fox";
        for curve in [Curve::P256, Curve::P384] {
            let k = generate_ec(curve).unwrap();
            let h = native_hash(curve);
            let mech = Mechanism::Ecdsa(Some(h));
            let s = sign_fast(&mech, &k, msg);
            verify_ref(&mech, &k, msg, &s).unwrap();
            verify_fast(&mech, &k, msg, &s).unwrap();
            assert_eq!(
                verify_fast(&mech, &k, b"other", &s).unwrap_err().rv,
                CKR_SIGNATURE_INVALID
            );
            // Raw CKM_ECDSA over a hash the caller computed.
            let d = digest::digest(digest_alg(h).unwrap(), msg);
            let raw = Mechanism::Ecdsa(None);
            let s2 = sign_fast(&raw, &k, d.as_ref());
            verify_ref(&mech, &k, msg, &s2).unwrap();
            let mut r = super::super::sign(&mech, &k).unwrap();
            r.update(msg).unwrap();
            verify_fast(&mech, &k, msg, &r.finish().unwrap()).unwrap();
        }
        let k = generate_rsa(2048, &[]).unwrap();
        for h in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
            let mech = Mechanism::RsaPkcsHash(h);
            let s = sign_fast(&mech, &k, msg);
            let mut r = super::super::sign(&mech, &k).unwrap();
            r.update(msg).unwrap();
            assert_eq!(s, r.finish().unwrap(), "PKCS#1 v1.5 is deterministic");
            verify_fast(&mech, &k, msg, &s).unwrap();
            let pss = Mechanism::RsaPss {
                params: PssParams {
                    hash: h,
                    mgf: h,
                    salt_len: h.output_len(),
                },
                prehashed: false,
            };
            let s = sign_fast(&pss, &k, msg);
            verify_ref(&pss, &k, msg, &s).unwrap();
            verify_fast(&pss, &k, msg, &s).unwrap();
            let mut bad = s.clone();
            bad[10] ^= 1;
            assert_eq!(
                verify_fast(&pss, &k, msg, &bad).unwrap_err().rv,
                CKR_SIGNATURE_INVALID
            );
        }
        // CKM_RSA_PKCS over a DigestInfo equals CKM_SHA256_RSA_PKCS.
        let d = digest::digest(&digest::SHA256, msg);
        let mut info = DIGEST_INFO[0].1.to_vec();
        info.extend_from_slice(d.as_ref());
        assert_eq!(
            sign_fast(&Mechanism::RsaPkcs, &k, &info),
            sign_fast(&Mechanism::RsaPkcsHash(HashAlg::Sha256), &k, msg)
        );
        // An input that is no DigestInfo goes to the reference implementation.
        let odd = sign_fast(&Mechanism::RsaPkcs, &k, b"not a digest info");
        verify_ref(&Mechanism::RsaPkcs, &k, b"not a digest info", &odd).unwrap();
    }

    #[test]
    fn fast_rsa_decryption_matches_reference_encryption() {
        let k = generate_rsa(2048, &[0x01, 0x00, 0x01]).unwrap();
        let fk = Arc::new(FastKey::prepare(&k).unwrap());
        for mech in [
            Mechanism::RsaPkcs,
            Mechanism::RsaOaep {
                hash: HashAlg::Sha256,
                mgf: HashAlg::Sha256,
                label: b"lbl".to_vec(),
            },
            Mechanism::RsaOaep {
                hash: HashAlg::Sha1,
                mgf: HashAlg::Sha1,
                label: Vec::new(),
            },
        ] {
            let mut e = super::super::encrypt(&mech, &k.public_material().unwrap()).unwrap();
            let mut ct = Vec::new();
            e.update(b"secret", &mut ct).unwrap();
            e.finish(&mut ct).unwrap();
            let mut d = decrypter(&mech, &fk).expect("fast path taken");
            let mut pt = Vec::new();
            d.update(&ct, &mut pt).unwrap();
            d.finish(&mut pt).unwrap();
            assert_eq!(pt, b"secret");
            ct[5] ^= 1;
            let mut d = decrypter(&mech, &fk).unwrap();
            d.update(&ct, &mut pt).unwrap();
            assert_eq!(
                d.finish(&mut pt).unwrap_err().rv,
                CKR_ENCRYPTED_DATA_INVALID
            );
        }
    }
}
