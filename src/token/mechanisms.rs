//! The mechanism table: what `C_GetMechanismList`/`C_GetMechanismInfo` report, and
//! which functions and key types each mechanism serves. Truthful: every entry here
//! is implemented, with the key sizes it really accepts.

use pkcs11_sys::*;

pub struct MechInfo {
    pub mech: CK_MECHANISM_TYPE,
    pub min: CK_ULONG,
    pub max: CK_ULONG,
    pub flags: CK_FLAGS,
    /// Key types the mechanism works with (empty: none needed).
    pub key_types: &'static [CK_KEY_TYPE],
}

const EC: CK_FLAGS = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;
const AES: &[CK_KEY_TYPE] = &[CKK_AES];
const RSA: &[CK_KEY_TYPE] = &[CKK_RSA];
const ECK: &[CK_KEY_TYPE] = &[CKK_EC];
const MAC: &[CK_KEY_TYPE] = &[
    CKK_GENERIC_SECRET,
    CKK_SHA_1_HMAC,
    CKK_SHA224_HMAC,
    CKK_SHA256_HMAC,
    CKK_SHA384_HMAC,
    CKK_SHA512_HMAC,
];
const ENC: CK_FLAGS = CKF_ENCRYPT | CKF_DECRYPT;
const SV: CK_FLAGS = CKF_SIGN | CKF_VERIFY;
const WU: CK_FLAGS = CKF_WRAP | CKF_UNWRAP;

const fn m(
    mech: CK_MECHANISM_TYPE,
    min: CK_ULONG,
    max: CK_ULONG,
    flags: CK_FLAGS,
    key_types: &'static [CK_KEY_TYPE],
) -> MechInfo {
    MechInfo {
        mech,
        min,
        max,
        flags,
        key_types,
    }
}

/// Key sizes: AES in bytes, RSA/EC/generic secrets in bits (as PKCS#11 v2.40 says).
/// Vendor mechanism: KMS-style envelope encryption (include/cks_pkcs11.h).
pub const CKM_CKS_ENVELOPE: CK_MECHANISM_TYPE = 0xC34B_0001;

pub static MECHANISMS: &[MechInfo] = &[
    m(CKM_AES_KEY_GEN, 16, 32, CKF_GENERATE, &[]),
    m(CKM_AES_ECB, 16, 32, ENC, AES),
    m(CKM_AES_CBC, 16, 32, ENC, AES),
    m(CKM_AES_CBC_PAD, 16, 32, ENC | WU, AES),
    m(CKM_AES_CTR, 16, 32, ENC, AES),
    m(CKM_AES_GCM, 16, 32, ENC | WU, AES),
    m(CKM_AES_KEY_WRAP, 16, 32, WU, AES),
    m(CKM_CKS_ENVELOPE, 16, 32, ENC, AES),
    m(CKM_AES_KEY_WRAP_PAD, 16, 32, WU, AES),
    m(
        CKM_EC_KEY_PAIR_GEN,
        256,
        384,
        CKF_GENERATE_KEY_PAIR | EC,
        &[],
    ),
    m(CKM_ECDSA, 256, 384, SV | EC, ECK),
    m(CKM_ECDSA_SHA1, 256, 384, SV | EC, ECK),
    m(CKM_ECDSA_SHA224, 256, 384, SV | EC, ECK),
    m(CKM_ECDSA_SHA256, 256, 384, SV | EC, ECK),
    m(CKM_ECDSA_SHA384, 256, 384, SV | EC, ECK),
    m(CKM_ECDSA_SHA512, 256, 384, SV | EC, ECK),
    m(CKM_ECDH1_DERIVE, 256, 384, CKF_DERIVE | EC, ECK),
    m(
        CKM_RSA_PKCS_KEY_PAIR_GEN,
        2048,
        4096,
        CKF_GENERATE_KEY_PAIR,
        &[],
    ),
    m(CKM_RSA_PKCS, 2048, 4096, ENC | SV | WU, RSA),
    m(CKM_SHA1_RSA_PKCS, 2048, 4096, SV, RSA),
    m(CKM_SHA224_RSA_PKCS, 2048, 4096, SV, RSA),
    m(CKM_SHA256_RSA_PKCS, 2048, 4096, SV, RSA),
    m(CKM_SHA384_RSA_PKCS, 2048, 4096, SV, RSA),
    m(CKM_SHA512_RSA_PKCS, 2048, 4096, SV, RSA),
    m(CKM_RSA_PKCS_PSS, 2048, 4096, SV, RSA),
    m(CKM_SHA1_RSA_PKCS_PSS, 2048, 4096, SV, RSA),
    m(CKM_SHA224_RSA_PKCS_PSS, 2048, 4096, SV, RSA),
    m(CKM_SHA256_RSA_PKCS_PSS, 2048, 4096, SV, RSA),
    m(CKM_SHA384_RSA_PKCS_PSS, 2048, 4096, SV, RSA),
    m(CKM_SHA512_RSA_PKCS_PSS, 2048, 4096, SV, RSA),
    m(CKM_RSA_PKCS_OAEP, 2048, 4096, ENC | WU, RSA),
    m(CKM_SHA_1, 0, 0, CKF_DIGEST, &[]),
    m(CKM_SHA224, 0, 0, CKF_DIGEST, &[]),
    m(CKM_SHA256, 0, 0, CKF_DIGEST, &[]),
    m(CKM_SHA384, 0, 0, CKF_DIGEST, &[]),
    m(CKM_SHA512, 0, 0, CKF_DIGEST, &[]),
    m(CKM_GENERIC_SECRET_KEY_GEN, 8, 4096, CKF_GENERATE, &[]),
    m(CKM_SHA_1_HMAC, 8, 4096, SV, MAC),
    m(CKM_SHA224_HMAC, 8, 4096, SV, MAC),
    m(CKM_SHA256_HMAC, 8, 4096, SV, MAC),
    m(CKM_SHA384_HMAC, 8, 4096, SV, MAC),
    m(CKM_SHA512_HMAC, 8, 4096, SV, MAC),
];

pub fn info(mech: CK_MECHANISM_TYPE) -> Option<&'static MechInfo> {
    MECHANISMS.iter().find(|i| i.mech == mech)
}

/// The `CKM_*` name of a mechanism, for logs and audit records.
pub fn name(mech: CK_MECHANISM_TYPE) -> &'static str {
    match mech {
        CKM_AES_KEY_GEN => "CKM_AES_KEY_GEN",
        CKM_AES_ECB => "CKM_AES_ECB",
        CKM_AES_CBC => "CKM_AES_CBC",
        CKM_AES_CBC_PAD => "CKM_AES_CBC_PAD",
        CKM_AES_CTR => "CKM_AES_CTR",
        CKM_AES_GCM => "CKM_AES_GCM",
        CKM_AES_KEY_WRAP => "CKM_AES_KEY_WRAP",
        CKM_AES_KEY_WRAP_PAD => "CKM_AES_KEY_WRAP_PAD",
        CKM_EC_KEY_PAIR_GEN => "CKM_EC_KEY_PAIR_GEN",
        CKM_ECDSA => "CKM_ECDSA",
        CKM_ECDSA_SHA1 => "CKM_ECDSA_SHA1",
        CKM_ECDSA_SHA224 => "CKM_ECDSA_SHA224",
        CKM_ECDSA_SHA256 => "CKM_ECDSA_SHA256",
        CKM_ECDSA_SHA384 => "CKM_ECDSA_SHA384",
        CKM_ECDSA_SHA512 => "CKM_ECDSA_SHA512",
        CKM_ECDH1_DERIVE => "CKM_ECDH1_DERIVE",
        CKM_RSA_PKCS_KEY_PAIR_GEN => "CKM_RSA_PKCS_KEY_PAIR_GEN",
        CKM_RSA_PKCS => "CKM_RSA_PKCS",
        CKM_SHA1_RSA_PKCS => "CKM_SHA1_RSA_PKCS",
        CKM_SHA224_RSA_PKCS => "CKM_SHA224_RSA_PKCS",
        CKM_SHA256_RSA_PKCS => "CKM_SHA256_RSA_PKCS",
        CKM_SHA384_RSA_PKCS => "CKM_SHA384_RSA_PKCS",
        CKM_SHA512_RSA_PKCS => "CKM_SHA512_RSA_PKCS",
        CKM_RSA_PKCS_PSS => "CKM_RSA_PKCS_PSS",
        CKM_SHA1_RSA_PKCS_PSS => "CKM_SHA1_RSA_PKCS_PSS",
        CKM_SHA224_RSA_PKCS_PSS => "CKM_SHA224_RSA_PKCS_PSS",
        CKM_SHA256_RSA_PKCS_PSS => "CKM_SHA256_RSA_PKCS_PSS",
        CKM_SHA384_RSA_PKCS_PSS => "CKM_SHA384_RSA_PKCS_PSS",
        CKM_SHA512_RSA_PKCS_PSS => "CKM_SHA512_RSA_PKCS_PSS",
        CKM_RSA_PKCS_OAEP => "CKM_RSA_PKCS_OAEP",
        CKM_CKS_ENVELOPE => "CKM_CKS_ENVELOPE",
        CKM_SHA_1 => "CKM_SHA_1",
        CKM_SHA224 => "CKM_SHA224",
        CKM_SHA256 => "CKM_SHA256",
        CKM_SHA384 => "CKM_SHA384",
        CKM_SHA512 => "CKM_SHA512",
        CKM_GENERIC_SECRET_KEY_GEN => "CKM_GENERIC_SECRET_KEY_GEN",
        CKM_SHA_1_HMAC => "CKM_SHA_1_HMAC",
        CKM_SHA224_HMAC => "CKM_SHA224_HMAC",
        CKM_SHA256_HMAC => "CKM_SHA256_HMAC",
        CKM_SHA384_HMAC => "CKM_SHA384_HMAC",
        CKM_SHA512_HMAC => "CKM_SHA512_HMAC",
        _ => "CKM_VENDOR_DEFINED",
    }
}
