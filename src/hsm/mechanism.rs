//! Mechanisms as typed values: the vocabulary between the token and an HSM instance.
//! The C ABI parses `CK_MECHANISM` (with its parameter struct) into one of these;
//! nothing below the C ABI sees a raw parameter pointer.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha224 => 28,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    /// Size of a field element / scalar in bytes.
    pub fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

/// Key derivation function applied to an ECDH shared secret (`CK_EC_KDF_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcKdf {
    /// `CKD_NULL`: the raw shared secret (x coordinate).
    Null,
    /// `CKD_SHAxxx_KDF`: ANSI X9.63 KDF with the given hash.
    X963(HashAlg),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PssParams {
    /// The hash of the message (`hashAlg` of `CK_RSA_PKCS_PSS_PARAMS`).
    pub hash: HashAlg,
    pub mgf: HashAlg,
    pub salt_len: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mechanism {
    // key generation
    AesKeyGen,
    GenericSecretKeyGen,
    EcKeyPairGen,
    RsaKeyPairGen,
    // AES
    AesEcb,
    AesCbc {
        iv: [u8; 16],
    },
    AesCbcPad {
        iv: [u8; 16],
    },
    /// `CK_AES_CTR_PARAMS`: counter block and how many of its low bits are the counter.
    AesCtr {
        counter_block: [u8; 16],
        counter_bits: u32,
    },
    AesGcm {
        iv: Vec<u8>,
        aad: Vec<u8>,
        tag_bits: u32,
    },
    /// RFC 3394. `iv` is the optional 8-byte alternative initial value.
    AesKeyWrap {
        iv: Option<[u8; 8]>,
    },
    /// RFC 5649. `iv` is the optional 4-byte alternative initial value.
    AesKeyWrapPad {
        iv: Option<[u8; 4]>,
    },
    // EC
    /// `CKM_ECDSA` (data is a hash, `None`) or `CKM_ECDSA_SHAxxx`.
    Ecdsa(Option<HashAlg>),
    Ecdh1Derive {
        kdf: EcKdf,
        shared_data: Vec<u8>,
        public_data: Vec<u8>,
    },
    // RSA
    /// `CKM_RSA_PKCS`: raw PKCS#1 v1.5 (sign: data is the DigestInfo; encrypt/decrypt).
    RsaPkcs,
    /// `CKM_SHAxxx_RSA_PKCS`.
    RsaPkcsHash(HashAlg),
    /// `CKM_RSA_PKCS_PSS` (`prehashed == true`: the data is already the hash) and
    /// `CKM_SHAxxx_RSA_PKCS_PSS` (`prehashed == false`: the module hashes the message).
    RsaPss {
        params: PssParams,
        prehashed: bool,
    },
    RsaOaep {
        hash: HashAlg,
        mgf: HashAlg,
        label: Vec<u8>,
    },
    /// `CKM_CKS_ENVELOPE`: KMS-style envelope encryption under a key's current version
    /// (see `kms::envelope`); the parameter is additional authenticated data.
    CksEnvelope {
        aad: Vec<u8>,
    },
    // digests and MACs
    Digest(HashAlg),
    Hmac(HashAlg),
}
