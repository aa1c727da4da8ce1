//! Private keys given as their components (`C_CreateObject` of a session key): an EC
//! scalar, or RSA's n, e, d, p and q.

use super::key::{EcPrivate, KeyMaterial, RSA_MAX_BITS, RSA_MIN_BITS};
use crate::error::{Error, Result};
use crate::hsm::mechanism::Curve;
use ::rsa::BigUint;
use pkcs11_sys::*;

impl KeyMaterial {
    pub fn ec_private_from_scalar(curve: Curve, scalar: &[u8]) -> Result<KeyMaterial> {
        let bad = || Error::attr_value(CKA_VALUE, "not a valid private scalar for the curve");
        // Left-pad short encodings (leading zero bytes may be dropped by callers).
        let n = curve.field_len();
        if scalar.is_empty() || scalar.len() > n {
            return Err(bad());
        }
        let mut padded = zeroize::Zeroizing::new(vec![0u8; n]);
        padded[n - scalar.len()..].copy_from_slice(scalar);
        Ok(KeyMaterial::EcPrivate(match curve {
            Curve::P256 => {
                EcPrivate::P256(p256::SecretKey::from_slice(&padded).map_err(|_| bad())?)
            }
            Curve::P384 => {
                EcPrivate::P384(p384::SecretKey::from_slice(&padded).map_err(|_| bad())?)
            }
        }))
    }

    pub fn rsa_private_from_components(
        n: &[u8],
        e: &[u8],
        d: &[u8],
        p: &[u8],
        q: &[u8],
    ) -> Result<KeyMaterial> {
        let bad = |why: &str| Error::attr_value(CKA_MODULUS, why);
        let n = BigUint::from_bytes_be(n);
        let bits = n.bits();
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(bad("modulus size out of range"));
        }
        let key = ::rsa::RsaPrivateKey::from_components(
            n,
            BigUint::from_bytes_be(e),
            BigUint::from_bytes_be(d),
            vec![BigUint::from_bytes_be(p), BigUint::from_bytes_be(q)],
        )
        .map_err(|_| bad("inconsistent RSA components"))?;
        key.validate()
            .map_err(|_| bad("inconsistent RSA components"))?;
        Ok(KeyMaterial::RsaPrivate(Box::new(key)))
    }

    /// A private key's component as PKCS#11 names it (EC `CKA_VALUE`, RSA
    /// `CKA_PRIVATE_EXPONENT`, primes, CRT exponents and coefficient), big-endian. Only
    /// for keys the policy lets the caller read (session keys, not sensitive).
    pub fn private_component(&self, t: CK_ATTRIBUTE_TYPE) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        use ::rsa::traits::PrivateKeyParts;
        let z = |v: Vec<u8>| Some(zeroize::Zeroizing::new(v));
        match (self, t) {
            (KeyMaterial::EcPrivate(EcPrivate::P256(k)), CKA_VALUE) => z(k.to_bytes().to_vec()),
            (KeyMaterial::EcPrivate(EcPrivate::P384(k)), CKA_VALUE) => z(k.to_bytes().to_vec()),
            (KeyMaterial::RsaPrivate(k), CKA_PRIVATE_EXPONENT) => z(k.d().to_bytes_be()),
            (KeyMaterial::RsaPrivate(k), CKA_PRIME_1) => z(k.primes().first()?.to_bytes_be()),
            (KeyMaterial::RsaPrivate(k), CKA_PRIME_2) => z(k.primes().get(1)?.to_bytes_be()),
            (KeyMaterial::RsaPrivate(k), CKA_EXPONENT_1) => z(k.dp()?.to_bytes_be()),
            (KeyMaterial::RsaPrivate(k), CKA_EXPONENT_2) => z(k.dq()?.to_bytes_be()),
            (KeyMaterial::RsaPrivate(k), CKA_COEFFICIENT) => z(k.crt_coefficient()?.to_bytes_be()),
            _ => None,
        }
    }
}
