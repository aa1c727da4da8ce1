//! `CK_MECHANISM` and its parameter structs → `Mechanism`. A parameter of the wrong
//! size is `CKR_MECHANISM_PARAM_INVALID`; nothing is read beyond `ulParameterLen`.

use super::args::bytes;
use crate::error::{Error, Result};
use crate::hsm::mechanism::{EcKdf, HashAlg, Mechanism, PssParams};
use pkcs11_sys::*;
use std::mem::size_of;

/// # Safety
/// `p` must be NULL or point to a `CK_MECHANISM` whose parameter is readable for
/// `ulParameterLen` bytes.
pub unsafe fn parse(p: *const CK_MECHANISM) -> Result<(Mechanism, CK_MECHANISM_TYPE)> {
    let m = p.as_ref().ok_or_else(|| Error::args("NULL mechanism"))?;
    let param = bytes(m.pParameter as *const u8, m.ulParameterLen)
        .map_err(|_| Error::mech_param("NULL parameter with a non-zero length"))?;
    let t = m.mechanism;
    let mech = match t {
        CKM_AES_KEY_GEN => Mechanism::AesKeyGen,
        CKM_GENERIC_SECRET_KEY_GEN => Mechanism::GenericSecretKeyGen,
        CKM_EC_KEY_PAIR_GEN => Mechanism::EcKeyPairGen,
        CKM_RSA_PKCS_KEY_PAIR_GEN => Mechanism::RsaKeyPairGen,
        CKM_AES_ECB => Mechanism::AesEcb,
        CKM_AES_CBC => Mechanism::AesCbc { iv: iv16(param)? },
        CKM_AES_CBC_PAD => Mechanism::AesCbcPad { iv: iv16(param)? },
        CKM_AES_CTR => {
            let p: CK_AES_CTR_PARAMS = read_struct(param)?;
            Mechanism::AesCtr {
                counter_block: p.cb,
                counter_bits: small(p.ulCounterBits, "ulCounterBits")?,
            }
        }
        CKM_AES_GCM => gcm(param)?,
        CKM_AES_KEY_WRAP => Mechanism::AesKeyWrap {
            iv: match param.len() {
                0 => None,
                8 => param.try_into().ok(),
                _ => return Err(Error::mech_param("AES key wrap IV must be 8 bytes")),
            },
        },
        CKM_AES_KEY_WRAP_PAD => Mechanism::AesKeyWrapPad {
            iv: match param.len() {
                0 => None,
                4 => param.try_into().ok(),
                _ => {
                    return Err(Error::mech_param(
                        "AES key wrap with padding IV must be 4 bytes",
                    ))
                }
            },
        },
        CKM_ECDSA => Mechanism::Ecdsa(None),
        CKM_ECDSA_SHA1 => Mechanism::Ecdsa(Some(HashAlg::Sha1)),
        CKM_ECDSA_SHA224 => Mechanism::Ecdsa(Some(HashAlg::Sha224)),
        CKM_ECDSA_SHA256 => Mechanism::Ecdsa(Some(HashAlg::Sha256)),
        CKM_ECDSA_SHA384 => Mechanism::Ecdsa(Some(HashAlg::Sha384)),
        CKM_ECDSA_SHA512 => Mechanism::Ecdsa(Some(HashAlg::Sha512)),
        CKM_ECDH1_DERIVE => ecdh(param)?,
        CKM_RSA_PKCS => Mechanism::RsaPkcs,
        CKM_SHA1_RSA_PKCS => Mechanism::RsaPkcsHash(HashAlg::Sha1),
        CKM_SHA224_RSA_PKCS => Mechanism::RsaPkcsHash(HashAlg::Sha224),
        CKM_SHA256_RSA_PKCS => Mechanism::RsaPkcsHash(HashAlg::Sha256),
        CKM_SHA384_RSA_PKCS => Mechanism::RsaPkcsHash(HashAlg::Sha384),
        CKM_SHA512_RSA_PKCS => Mechanism::RsaPkcsHash(HashAlg::Sha512),
        CKM_RSA_PKCS_PSS => pss(param, None)?,
        CKM_SHA1_RSA_PKCS_PSS => pss(param, Some(HashAlg::Sha1))?,
        CKM_SHA224_RSA_PKCS_PSS => pss(param, Some(HashAlg::Sha224))?,
        CKM_SHA256_RSA_PKCS_PSS => pss(param, Some(HashAlg::Sha256))?,
        CKM_SHA384_RSA_PKCS_PSS => pss(param, Some(HashAlg::Sha384))?,
        CKM_SHA512_RSA_PKCS_PSS => pss(param, Some(HashAlg::Sha512))?,
        CKM_RSA_PKCS_OAEP => oaep(param)?,
        crate::token::mechanisms::CKM_CKS_ENVELOPE => Mechanism::CksEnvelope {
            aad: param.to_vec(),
        },
        CKM_SHA_1 => Mechanism::Digest(HashAlg::Sha1),
        CKM_SHA224 => Mechanism::Digest(HashAlg::Sha224),
        CKM_SHA256 => Mechanism::Digest(HashAlg::Sha256),
        CKM_SHA384 => Mechanism::Digest(HashAlg::Sha384),
        CKM_SHA512 => Mechanism::Digest(HashAlg::Sha512),
        CKM_SHA_1_HMAC => Mechanism::Hmac(HashAlg::Sha1),
        CKM_SHA224_HMAC => Mechanism::Hmac(HashAlg::Sha224),
        CKM_SHA256_HMAC => Mechanism::Hmac(HashAlg::Sha256),
        CKM_SHA384_HMAC => Mechanism::Hmac(HashAlg::Sha384),
        CKM_SHA512_HMAC => Mechanism::Hmac(HashAlg::Sha512),
        _ => {
            return Err(Error::mech_invalid(format!(
                "mechanism 0x{t:x} is not supported"
            )))
        }
    };
    Ok((mech, t))
}

/// A parameter struct of exactly the right size, read without alignment assumptions.
unsafe fn read_struct<T: Copy>(param: &[u8]) -> Result<T> {
    if param.len() != size_of::<T>() {
        return Err(Error::mech_param(format!(
            "parameter is {} bytes, expected {}",
            param.len(),
            size_of::<T>()
        )));
    }
    Ok(std::ptr::read_unaligned(param.as_ptr() as *const T))
}

/// A bit count from a parameter struct; out of `u32` range is invalid, not truncated.
fn small(v: CK_ULONG, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::mech_param(format!("{what} out of range")))
}

fn iv16(param: &[u8]) -> Result<[u8; 16]> {
    param
        .try_into()
        .map_err(|_| Error::mech_param("the IV must be 16 bytes"))
}

/// `CK_GCM_PARAMS`; also the layout without `ulIvBits` that some v2.40 headers had.
unsafe fn gcm(param: &[u8]) -> Result<Mechanism> {
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct GcmNoIvBits {
        p_iv: CK_BYTE_PTR,
        iv_len: CK_ULONG,
        p_aad: CK_BYTE_PTR,
        aad_len: CK_ULONG,
        tag_bits: CK_ULONG,
    }
    let (p_iv, iv_len, p_aad, aad_len, tag_bits) = if param.len() == size_of::<CK_GCM_PARAMS>() {
        let p: CK_GCM_PARAMS = read_struct(param)?;
        (p.pIv, p.ulIvLen, p.pAAD, p.ulAADLen, p.ulTagBits)
    } else {
        let p: GcmNoIvBits = read_struct(param)?;
        (p.p_iv, p.iv_len, p.p_aad, p.aad_len, p.tag_bits)
    };
    let iv = bytes(p_iv, iv_len).map_err(|_| Error::mech_param("NULL GCM IV"))?;
    let aad = bytes(p_aad, aad_len).map_err(|_| Error::mech_param("NULL GCM AAD"))?;
    if iv.is_empty() {
        return Err(Error::mech_param("GCM needs an IV"));
    }
    Ok(Mechanism::AesGcm {
        iv: iv.to_vec(),
        aad: aad.to_vec(),
        tag_bits: small(tag_bits, "ulTagBits")?,
    })
}

unsafe fn ecdh(param: &[u8]) -> Result<Mechanism> {
    let p: CK_ECDH1_DERIVE_PARAMS = read_struct(param)?;
    let kdf = match p.kdf {
        CKD_NULL => EcKdf::Null,
        CKD_SHA1_KDF => EcKdf::X963(HashAlg::Sha1),
        CKD_SHA224_KDF => EcKdf::X963(HashAlg::Sha224),
        CKD_SHA256_KDF => EcKdf::X963(HashAlg::Sha256),
        CKD_SHA384_KDF => EcKdf::X963(HashAlg::Sha384),
        CKD_SHA512_KDF => EcKdf::X963(HashAlg::Sha512),
        _ => return Err(Error::mech_param("unsupported ECDH KDF")),
    };
    let shared = bytes(p.pSharedData, p.ulSharedDataLen)
        .map_err(|_| Error::mech_param("NULL shared data"))?;
    let public = bytes(p.pPublicData, p.ulPublicDataLen)
        .map_err(|_| Error::mech_param("NULL public data"))?;
    if kdf == EcKdf::Null && !shared.is_empty() {
        return Err(Error::mech_param("CKD_NULL takes no shared data"));
    }
    if public.is_empty() {
        return Err(Error::mech_param(
            "ECDH needs the other party's public point",
        ));
    }
    Ok(Mechanism::Ecdh1Derive {
        kdf,
        shared_data: shared.to_vec(),
        public_data: public.to_vec(),
    })
}

fn hash_of(m: CK_MECHANISM_TYPE) -> Result<HashAlg> {
    Ok(match m {
        CKM_SHA_1 => HashAlg::Sha1,
        CKM_SHA224 => HashAlg::Sha224,
        CKM_SHA256 => HashAlg::Sha256,
        CKM_SHA384 => HashAlg::Sha384,
        CKM_SHA512 => HashAlg::Sha512,
        _ => return Err(Error::mech_param("unsupported hash")),
    })
}

fn mgf_of(m: CK_RSA_PKCS_MGF_TYPE) -> Result<HashAlg> {
    Ok(match m {
        CKG_MGF1_SHA1 => HashAlg::Sha1,
        CKG_MGF1_SHA224 => HashAlg::Sha224,
        CKG_MGF1_SHA256 => HashAlg::Sha256,
        CKG_MGF1_SHA384 => HashAlg::Sha384,
        CKG_MGF1_SHA512 => HashAlg::Sha512,
        _ => return Err(Error::mech_param("unsupported MGF")),
    })
}

/// `CK_RSA_PKCS_PSS_PARAMS`; `mech_hash` is the hash a `CKM_SHAxxx_RSA_PKCS_PSS` implies.
unsafe fn pss(param: &[u8], mech_hash: Option<HashAlg>) -> Result<Mechanism> {
    let params = if param.is_empty() {
        // The spec requires parameters; default sensibly for callers that omit them.
        let hash =
            mech_hash.ok_or_else(|| Error::mech_param("CKM_RSA_PKCS_PSS needs parameters"))?;
        PssParams {
            hash,
            mgf: hash,
            salt_len: hash.output_len(),
        }
    } else {
        let p: CK_RSA_PKCS_PSS_PARAMS = read_struct(param)?;
        let hash = hash_of(p.hashAlg)?;
        if mech_hash.is_some_and(|h| h != hash) {
            return Err(Error::mech_param("hashAlg contradicts the mechanism"));
        }
        PssParams {
            hash,
            mgf: mgf_of(p.mgf)?,
            salt_len: p.sLen as usize,
        }
    };
    Ok(Mechanism::RsaPss {
        params,
        prehashed: mech_hash.is_none(),
    })
}

unsafe fn oaep(param: &[u8]) -> Result<Mechanism> {
    if param.is_empty() {
        return Ok(Mechanism::RsaOaep {
            hash: HashAlg::Sha1,
            mgf: HashAlg::Sha1,
            label: Vec::new(),
        });
    }
    let p: CK_RSA_PKCS_OAEP_PARAMS = read_struct(param)?;
    let label = match p.source {
        0 => &[][..],
        CKZ_DATA_SPECIFIED => bytes(p.pSourceData as *const u8, p.ulSourceDataLen)
            .map_err(|_| Error::mech_param("NULL OAEP source data"))?,
        _ => return Err(Error::mech_param("unsupported OAEP source")),
    };
    Ok(Mechanism::RsaOaep {
        hash: hash_of(p.hashAlg)?,
        mgf: mgf_of(p.mgf)?,
        label: label.to_vec(),
    })
}
