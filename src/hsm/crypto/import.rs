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
}
