//! The benchmarked operations: key set-up on a module, one call through
//! PKCS#11, and the same primitive run directly (`--raw`).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair, ParsedPublicKey, RsaKeyPair,
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED,
    ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RSA_PSS_SHA256,
};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256, Sha384};

use cryptoki::error::RvError;

use super::p11::{describe, is_rv, Module};

/// DER OID of prime256v1 / secp256r1, as CKA_EC_PARAMS.
pub const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER OID of secp384r1.
pub const P384_PARAMS: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const CBC_IV: [u8; 16] = [0x42; 16];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    AesGcmEnc64,
    AesGcmEnc4k,
    AesCbcPadDec64,
    AesKwpWrap,
    EcdsaP256Sign,
    EcdsaP256Verify,
    EcdsaP384Sign,
    EcdsaP384Verify,
    Rsa2048PkcsSign,
    Rsa2048PssSign,
    Rsa2048Verify,
    Rsa2048OaepDec,
    HmacSha256,
    FindByLabel,
    SessionOpenClose,
    KeygenAes,
    KeygenEc,
}

pub const ALL_OPS: [Op; 17] = [
    Op::AesGcmEnc64,
    Op::AesGcmEnc4k,
    Op::AesCbcPadDec64,
    Op::AesKwpWrap,
    Op::EcdsaP256Sign,
    Op::EcdsaP256Verify,
    Op::EcdsaP384Sign,
    Op::EcdsaP384Verify,
    Op::Rsa2048PkcsSign,
    Op::Rsa2048PssSign,
    Op::Rsa2048Verify,
    Op::Rsa2048OaepDec,
    Op::HmacSha256,
    Op::FindByLabel,
    Op::SessionOpenClose,
    Op::KeygenAes,
    Op::KeygenEc,
];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::AesGcmEnc64 => "aes-gcm-enc-64",
            Op::AesGcmEnc4k => "aes-gcm-enc-4k",
            Op::AesCbcPadDec64 => "aes-cbc-pad-dec-64",
            Op::AesKwpWrap => "aes-kwp-wrap",
            Op::EcdsaP256Sign => "ecdsa-p256-sign",
            Op::EcdsaP256Verify => "ecdsa-p256-verify",
            Op::EcdsaP384Sign => "ecdsa-p384-sign",
            Op::EcdsaP384Verify => "ecdsa-p384-verify",
            Op::Rsa2048PkcsSign => "rsa2048-pkcs-sign",
            Op::Rsa2048PssSign => "rsa2048-pss-sign",
            Op::Rsa2048Verify => "rsa2048-verify",
            Op::Rsa2048OaepDec => "rsa2048-oaep-dec",
            Op::HmacSha256 => "hmac-sha256",
            Op::FindByLabel => "find-by-label",
            Op::SessionOpenClose => "session-open-close",
            Op::KeygenAes => "keygen-aes",
            Op::KeygenEc => "keygen-ec",
        }
    }

    /// Whether `--raw` has a direct equivalent for this operation.
    pub fn has_raw(self) -> bool {
        !matches!(self, Op::FindByLabel | Op::SessionOpenClose)
    }
}

/// clap value parser for `--ops`.
pub fn parse_op(s: &str) -> Result<Op, String> {
    ALL_OPS
        .iter()
        .copied()
        .find(|op| op.name() == s.trim())
        .ok_or_else(|| {
            let names: Vec<&str> = ALL_OPS.iter().map(|o| o.name()).collect();
            format!("unknown op {s:?}; known: {}", names.join(", "))
        })
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Per-worker mutable state (a GCM IV counter unique per worker).
pub struct Local {
    worker: u32,
    counter: u64,
}

impl Local {
    pub fn new(worker: usize) -> Local {
        Local {
            worker: worker as u32,
            counter: 0,
        }
    }

    fn next_iv(&mut self) -> [u8; 12] {
        self.counter = self.counter.wrapping_add(1);
        let mut iv = [0u8; 12];
        iv[..4].copy_from_slice(&self.worker.to_be_bytes());
        iv[4..].copy_from_slice(&self.counter.to_be_bytes());
        iv
    }
}

// ---------------------------------------------------------------- PKCS#11

/// Everything one operation needs on one module, made once at set-up.
pub struct P11Prep {
    pub op: Op,
    key: Option<ObjectHandle>,
    other: Option<ObjectHandle>,
    input: Vec<u8>,
    sig: Vec<u8>,
    label: Vec<u8>,
    /// ECDSA through CKM_ECDSA with the hash computed on the host, for
    /// modules that do not offer CKM_ECDSA_SHA256/384 (SoftHSM2 2.6).
    prehash: bool,
    /// Said once in the report, e.g. that `prehash` is in use.
    pub note: Option<String>,
}

impl P11Prep {
    fn new(op: Op) -> P11Prep {
        P11Prep {
            op,
            key: None,
            other: None,
            input: Vec::new(),
            sig: Vec::new(),
            label: Vec::new(),
            prehash: false,
            note: None,
        }
    }
}

fn ecdsa_mech(p384: bool) -> Mechanism<'static> {
    if p384 {
        Mechanism::EcdsaSha384
    } else {
        Mechanism::EcdsaSha256
    }
}

fn host_digest(p384: bool, data: &[u8]) -> Vec<u8> {
    if p384 {
        Sha384::digest(data).to_vec()
    } else {
        Sha256::digest(data).to_vec()
    }
}

fn pss() -> Mechanism<'static> {
    Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32u64.into(),
    })
}

fn oaep() -> Mechanism<'static> {
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::empty(),
    ))
}

fn aes_template(label: &str, token: bool, extractable: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32u64.into()),
        Attribute::Token(token),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

fn ec_templates(params: &[u8], label: &str, token: bool) -> (Vec<Attribute>, Vec<Attribute>) {
    let public = vec![
        Attribute::Token(token),
        Attribute::Verify(true),
        Attribute::EcParams(params.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let private = vec![
        Attribute::Token(token),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    (public, private)
}

/// `CKA_ID` of the objects `--keys` makes.
const FILLER_ID: &[u8] = b"cks-bench-filler";

/// What kind of objects `--keys` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyKind {
    /// Private data objects (AES keys where the module refuses data objects)
    Data,
    /// AES-256 token keys (customer master keys in cks)
    Aes,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::Data => "data",
            KeyKind::Aes => "aes",
        }
    }
}

/// `--keys`, `--key-kind`, `--keep-keys`.
#[derive(Clone, Copy, Debug)]
pub struct Fillers {
    pub count: usize,
    pub kind: KeyKind,
    pub keep: bool,
}

/// The bench's objects on one module: made lazily per operation, all
/// destroyed by [`Setup::cleanup`] (except `--keep-keys` fillers).
pub struct Setup<'m> {
    module: &'m Module,
    session: Session,
    tag: String,
    created: Vec<ObjectHandle>,
    extra: Fillers,
    fillers_done: bool,
    aes: Option<(ObjectHandle, String)>,
    ec256: Option<(ObjectHandle, ObjectHandle)>,
    ec384: Option<(ObjectHandle, ObjectHandle)>,
    rsa: Option<(ObjectHandle, ObjectHandle)>,
    hmac: Option<ObjectHandle>,
    wrap_target: Option<ObjectHandle>,
}

impl<'m> Setup<'m> {
    pub fn new(module: &'m Module, extra: Fillers) -> Result<Setup<'m>, String> {
        let session = module
            .user_session()
            .map_err(|e| format!("set-up session/login: {}", describe(&e)))?;
        Ok(Setup {
            module,
            session,
            tag: format!("{:08x}", rand::random::<u32>()),
            created: Vec::new(),
            extra,
            fillers_done: false,
            aes: None,
            ec256: None,
            ec384: None,
            rsa: None,
            hmac: None,
            wrap_target: None,
        })
    }

    fn label(&self, what: &str) -> String {
        format!("cks-bench-{what}-{}", self.tag)
    }

    fn aes(&mut self) -> Result<ObjectHandle, String> {
        if let Some((h, _)) = &self.aes {
            return Ok(*h);
        }
        let label = self.label("aes");
        let h = self
            .session
            .generate_key(&Mechanism::AesKeyGen, &aes_template(&label, true, false))
            .map_err(|e| describe(&e))?;
        self.created.push(h);
        self.aes = Some((h, label));
        Ok(h)
    }

    fn ec(&mut self, p384: bool) -> Result<(ObjectHandle, ObjectHandle), String> {
        let cached = if p384 { self.ec384 } else { self.ec256 };
        if let Some(pair) = cached {
            return Ok(pair);
        }
        let (params, what): (&[u8], _) = if p384 {
            (&P384_PARAMS, "ec-p384")
        } else {
            (&P256_PARAMS, "ec-p256")
        };
        let (public, private) = ec_templates(params, &self.label(what), true);
        let (pubk, privk) = self
            .session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(|e| describe(&e))?;
        self.created.push(pubk);
        self.created.push(privk);
        if p384 {
            self.ec384 = Some((pubk, privk));
        } else {
            self.ec256 = Some((pubk, privk));
        }
        Ok((pubk, privk))
    }

    fn rsa(&mut self) -> Result<(ObjectHandle, ObjectHandle), String> {
        if let Some(pair) = self.rsa {
            return Ok(pair);
        }
        let label = self.label("rsa2048").into_bytes();
        let public = vec![
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::Encrypt(true),
            Attribute::ModulusBits(2048u64.into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            Attribute::Label(label.clone()),
        ];
        let private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(true),
            Attribute::Label(label),
        ];
        let (pubk, privk) = self
            .session
            .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
            .map_err(|e| describe(&e))?;
        self.created.push(pubk);
        self.created.push(privk);
        self.rsa = Some((pubk, privk));
        Ok((pubk, privk))
    }

    fn hmac(&mut self) -> Result<ObjectHandle, String> {
        if let Some(h) = self.hmac {
            return Ok(h);
        }
        let template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen(32u64.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Label(self.label("hmac").into_bytes()),
        ];
        let h = self
            .session
            .generate_key(&Mechanism::GenericSecretKeyGen, &template)
            .map_err(|e| describe(&e))?;
        self.created.push(h);
        self.hmac = Some(h);
        Ok(h)
    }

    /// A session AES key (extractable) to be wrapped; it lives as long as
    /// the set-up session, which stays open for the whole run.
    fn wrap_target(&mut self) -> Result<ObjectHandle, String> {
        if let Some(h) = self.wrap_target {
            return Ok(h);
        }
        let label = self.label("wrapped");
        let h = self
            .session
            .generate_key(&Mechanism::AesKeyGen, &aes_template(&label, false, true))
            .map_err(|e| describe(&e))?;
        self.created.push(h);
        self.wrap_target = Some(h);
        Ok(h)
    }

    /// `--keys N`: N extra token objects so that searches and key lookups run
    /// among many. Data objects where the module takes them (else AES keys), or
    /// AES token keys (`--key-kind aes`). With `--keep-keys` they carry one
    /// fixed `CKA_ID`, so that a later run counts them and only tops them up,
    /// and they are not destroyed at the end.
    fn fillers(&mut self, progress: &dyn Fn(usize)) -> Result<(), String> {
        if self.fillers_done {
            return Ok(());
        }
        let want = self.extra.count;
        let kind = self.extra.kind;
        let mut use_keys = kind == KeyKind::Aes;
        let (prefix, mut have) = if self.extra.keep {
            let class = if use_keys {
                ObjectClass::SECRET_KEY
            } else {
                ObjectClass::DATA
            };
            let found = self
                .session
                .find_objects(&[Attribute::Class(class), Attribute::Id(FILLER_ID.to_vec())])
                .map_err(|e| describe(&e))?;
            (format!("cks-bench-filler-{}", kind.name()), found.len())
        } else {
            (self.label("filler"), 0)
        };
        while have < want {
            if super::interrupted() {
                return Err("interrupted".to_string());
            }
            if have % 50 == 0 {
                progress(have);
            }
            let label = format!("{prefix}-{have}");
            let id = Attribute::Id(FILLER_ID.to_vec());
            let made = if use_keys {
                let mut template = aes_template(&label, true, false);
                template.push(id);
                self.session
                    .generate_key(&Mechanism::AesKeyGen, &template)
                    .map_err(|e| describe(&e))?
            } else {
                let template = vec![
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Value(random_bytes(16)),
                    id,
                ];
                match self.session.create_object(&template) {
                    Ok(h) => h,
                    Err(_) if have == 0 && !self.extra.keep => {
                        use_keys = true;
                        continue;
                    }
                    Err(e) => return Err(describe(&e)),
                }
            };
            if !self.extra.keep {
                self.created.push(made);
            }
            have += 1;
        }
        self.fillers_done = true;
        Ok(())
    }

    /// Makes the keys and inputs for `op` on this module.
    pub fn prepare(&mut self, op: Op, progress: &dyn Fn(usize)) -> Result<P11Prep, String> {
        // The extra objects come first: every operation runs among them.
        self.fillers(progress)?;
        let mut p = P11Prep::new(op);
        let d = |e: cryptoki::error::Error| describe(&e);
        match op {
            Op::AesGcmEnc64 | Op::AesGcmEnc4k => {
                p.key = Some(self.aes()?);
                p.input = random_bytes(if op == Op::AesGcmEnc64 { 64 } else { 4096 });
            }
            Op::AesCbcPadDec64 => {
                let key = self.aes()?;
                p.key = Some(key);
                let pt = random_bytes(64);
                p.input = self
                    .session
                    .encrypt(&Mechanism::AesCbcPad(CBC_IV), key, &pt)
                    .map_err(d)?;
            }
            Op::AesKwpWrap => {
                p.key = Some(self.aes()?);
                p.other = Some(self.wrap_target()?);
            }
            Op::EcdsaP256Sign | Op::EcdsaP384Sign | Op::EcdsaP256Verify | Op::EcdsaP384Verify => {
                let p384 = matches!(op, Op::EcdsaP384Sign | Op::EcdsaP384Verify);
                let (pubk, privk) = self.ec(p384)?;
                p.input = random_bytes(64);
                // A signature made once: the verify input, and the check
                // that the combined hash-and-sign mechanism is offered.
                p.sig = match self.session.sign(&ecdsa_mech(p384), privk, &p.input) {
                    Ok(sig) => sig,
                    Err(e) if is_rv(&e, RvError::MechanismInvalid) => {
                        p.prehash = true;
                        p.note = Some(format!(
                            "no {}; ran CKM_ECDSA on a host-computed {} digest",
                            if p384 {
                                "CKM_ECDSA_SHA384"
                            } else {
                                "CKM_ECDSA_SHA256"
                            },
                            if p384 { "SHA-384" } else { "SHA-256" },
                        ));
                        let digest = host_digest(p384, &p.input);
                        self.session
                            .sign(&Mechanism::Ecdsa, privk, &digest)
                            .map_err(d)?
                    }
                    Err(e) => return Err(d(e)),
                };
                let verify = matches!(op, Op::EcdsaP256Verify | Op::EcdsaP384Verify);
                p.key = Some(if verify { pubk } else { privk });
            }
            Op::Rsa2048PkcsSign | Op::Rsa2048PssSign => {
                p.key = Some(self.rsa()?.1);
                p.input = random_bytes(64);
            }
            Op::Rsa2048Verify => {
                let (pubk, privk) = self.rsa()?;
                p.input = random_bytes(64);
                p.sig = self
                    .session
                    .sign(&Mechanism::Sha256RsaPkcs, privk, &p.input)
                    .map_err(d)?;
                p.key = Some(pubk);
            }
            Op::Rsa2048OaepDec => {
                let (pubk, privk) = self.rsa()?;
                p.input = self
                    .session
                    .encrypt(&oaep(), pubk, &random_bytes(32))
                    .map_err(d)?;
                p.key = Some(privk);
            }
            Op::HmacSha256 => {
                p.key = Some(self.hmac()?);
                p.input = random_bytes(64);
            }
            Op::FindByLabel => {
                self.aes()?;
                if let Some((_, label)) = &self.aes {
                    p.label = label.as_bytes().to_vec();
                }
            }
            Op::SessionOpenClose | Op::KeygenAes | Op::KeygenEc => {
                // Nothing to set up; checks that the set-up session is alive.
                self.session.get_session_info().map_err(d)?;
            }
        }
        Ok(p)
    }

    /// Destroys every object made, newest first. Returns the failures.
    pub fn cleanup(self) -> Vec<String> {
        let mut errors = Vec::new();
        for h in self.created.iter().rev() {
            if let Err(e) = self.session.destroy_object(*h) {
                errors.push(format!(
                    "{} ({}): destroying object {h}: {}",
                    self.module.id,
                    self.module.path.display(),
                    describe(&e)
                ));
            }
        }
        errors
    }
}

/// One timed call of `prep.op` through PKCS#11 in the worker's session.
pub fn p11_call(
    prep: &P11Prep,
    session: &Session,
    module: &Module,
    local: &mut Local,
) -> Result<(), String> {
    let d = |e: cryptoki::error::Error| describe(&e);
    let key = || {
        prep.key
            .ok_or_else(|| "internal: no key prepared".to_string())
    };
    match prep.op {
        Op::AesGcmEnc64 | Op::AesGcmEnc4k => {
            let mut iv = local.next_iv();
            let params = GcmParams::new(&mut iv, &[], 128u64.into()).map_err(d)?;
            session
                .encrypt(&Mechanism::AesGcm(params), key()?, &prep.input)
                .map_err(d)?;
        }
        Op::AesCbcPadDec64 => {
            session
                .decrypt(&Mechanism::AesCbcPad(CBC_IV), key()?, &prep.input)
                .map_err(d)?;
        }
        Op::AesKwpWrap => {
            let target = prep.other.ok_or("internal: no key to wrap")?;
            session
                .wrap_key(&Mechanism::AesKeyWrapPad, key()?, target)
                .map_err(d)?;
        }
        Op::EcdsaP256Sign | Op::EcdsaP384Sign | Op::EcdsaP256Verify | Op::EcdsaP384Verify => {
            let p384 = matches!(prep.op, Op::EcdsaP384Sign | Op::EcdsaP384Verify);
            let verify = matches!(prep.op, Op::EcdsaP256Verify | Op::EcdsaP384Verify);
            let digest;
            let (mech, data) = if prep.prehash {
                digest = host_digest(p384, &prep.input);
                (Mechanism::Ecdsa, digest.as_slice())
            } else {
                (ecdsa_mech(p384), prep.input.as_slice())
            };
            if verify {
                session.verify(&mech, key()?, data, &prep.sig).map_err(d)?;
            } else {
                session.sign(&mech, key()?, data).map_err(d)?;
            }
        }
        Op::Rsa2048PkcsSign => {
            session
                .sign(&Mechanism::Sha256RsaPkcs, key()?, &prep.input)
                .map_err(d)?;
        }
        Op::Rsa2048PssSign => {
            session.sign(&pss(), key()?, &prep.input).map_err(d)?;
        }
        Op::Rsa2048Verify => session
            .verify(&Mechanism::Sha256RsaPkcs, key()?, &prep.input, &prep.sig)
            .map_err(d)?,
        Op::Rsa2048OaepDec => {
            session.decrypt(&oaep(), key()?, &prep.input).map_err(d)?;
        }
        Op::HmacSha256 => {
            session
                .sign(&Mechanism::Sha256Hmac, key()?, &prep.input)
                .map_err(d)?;
        }
        Op::FindByLabel => {
            let found = session
                .find_objects(&[Attribute::Label(prep.label.clone())])
                .map_err(d)?;
            if found.len() != 1 {
                return Err(format!(
                    "find by label found {} objects, not 1",
                    found.len()
                ));
            }
        }
        Op::SessionOpenClose => {
            let s = module.ctx.open_rw_session(module.slot).map_err(d)?;
            s.close().map_err(d)?;
        }
        Op::KeygenAes => {
            let h = session
                .generate_key(&Mechanism::AesKeyGen, &aes_template("", false, false))
                .map_err(d)?;
            session.destroy_object(h).map_err(d)?;
        }
        Op::KeygenEc => {
            let (public, private) = ec_templates(&P256_PARAMS, "", false);
            let (pubk, privk) = session
                .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
                .map_err(d)?;
            session.destroy_object(privk).map_err(d)?;
            session.destroy_object(pubk).map_err(d)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- raw

struct RawEc {
    pair: EcdsaKeyPair,
    public: ParsedPublicKey,
    sig: Vec<u8>,
}

impl RawEc {
    fn new(
        sign: &'static EcdsaSigningAlgorithm,
        verify: &'static aws_lc_rs::signature::EcdsaVerificationAlgorithm,
        rng: &SystemRandom,
        msg: &[u8],
    ) -> Result<RawEc, String> {
        let pair = EcdsaKeyPair::generate(sign).map_err(|e| format!("EC keygen: {e}"))?;
        let public = ParsedPublicKey::new(verify, pair.public_key().as_ref())
            .map_err(|e| format!("EC public key: {e}"))?;
        let sig = pair
            .sign(rng, msg)
            .map_err(|e| format!("ECDSA sign: {e}"))?
            .as_ref()
            .to_vec();
        Ok(RawEc { pair, public, sig })
    }
}

/// Keys and inputs for `--raw`: the same primitives with no PKCS#11, RSA and
/// ECDSA through aws-lc-rs, AES and HMAC through RustCrypto.
pub struct RawKeys {
    rng: SystemRandom,
    aes_key: [u8; 32],
    gcm: Aes256Gcm,
    cbc_ct: Vec<u8>,
    wrap_target: [u8; 32],
    hmac_key: [u8; 32],
    data64: Vec<u8>,
    data4k: Vec<u8>,
    ec256: RawEc,
    ec384: RawEc,
    rsa: RsaKeyPair,
    rsa_public: ParsedPublicKey,
    rsa_sig: Vec<u8>,
    oaep: OaepPrivateDecryptingKey,
    oaep_ct: Vec<u8>,
}

impl RawKeys {
    pub fn new() -> Result<RawKeys, String> {
        let rng = SystemRandom::new();
        let mut aes_key = [0u8; 32];
        let mut wrap_target = [0u8; 32];
        let mut hmac_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut aes_key);
        rand::thread_rng().fill_bytes(&mut wrap_target);
        rand::thread_rng().fill_bytes(&mut hmac_key);
        let data64 = random_bytes(64);
        let gcm = Aes256Gcm::new_from_slice(&aes_key).map_err(|e| format!("AES-GCM: {e}"))?;
        let cbc_ct = cbc::Encryptor::<aes::Aes256>::new_from_slices(&aes_key, &CBC_IV)
            .map_err(|e| format!("AES-CBC: {e}"))?
            .encrypt_padded_vec_mut::<Pkcs7>(&data64);
        let ec256 = RawEc::new(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &ECDSA_P256_SHA256_FIXED,
            &rng,
            &data64,
        )?;
        let ec384 = RawEc::new(
            &ECDSA_P384_SHA384_FIXED_SIGNING,
            &ECDSA_P384_SHA384_FIXED,
            &rng,
            &data64,
        )?;
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| format!("RSA: {e}"))?;
        let rsa_public = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, rsa.public_key())
            .map_err(|e| format!("RSA public key: {e}"))?;
        let mut rsa_sig = vec![0u8; rsa.public_modulus_len()];
        rsa.sign(&RSA_PKCS1_SHA256, &rng, &data64, &mut rsa_sig)
            .map_err(|e| format!("RSA sign: {e}"))?;
        let dec_key =
            PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(|e| format!("RSA: {e}"))?;
        let enc_key = aws_lc_rs::rsa::OaepPublicEncryptingKey::new(dec_key.public_key())
            .map_err(|e| format!("RSA OAEP: {e}"))?;
        let mut oaep_ct = vec![0u8; enc_key.ciphertext_size()];
        let n = enc_key
            .encrypt(&OAEP_SHA256_MGF1SHA256, &data64[..32], &mut oaep_ct, None)
            .map_err(|e| format!("RSA OAEP encrypt: {e}"))?
            .len();
        oaep_ct.truncate(n);
        let oaep = OaepPrivateDecryptingKey::new(dec_key).map_err(|e| format!("RSA OAEP: {e}"))?;
        Ok(RawKeys {
            rng,
            aes_key,
            gcm,
            cbc_ct,
            wrap_target,
            hmac_key,
            data4k: random_bytes(4096),
            data64,
            ec256,
            ec384,
            rsa,
            rsa_public,
            rsa_sig,
            oaep,
            oaep_ct,
        })
    }
}

/// One timed call of `op` with no PKCS#11.
pub fn raw_call(op: Op, k: &RawKeys, local: &mut Local) -> Result<(), String> {
    let fail = |what: &str| format!("{} (raw) failed: {what}", op.name());
    match op {
        Op::AesGcmEnc64 | Op::AesGcmEnc4k => {
            let iv = local.next_iv();
            let data = if op == Op::AesGcmEnc64 {
                &k.data64
            } else {
                &k.data4k
            };
            k.gcm
                .encrypt(Nonce::from_slice(&iv), data.as_slice())
                .map_err(|e| fail(&e.to_string()))?;
        }
        Op::AesCbcPadDec64 => {
            cbc::Decryptor::<aes::Aes256>::new_from_slices(&k.aes_key, &CBC_IV)
                .map_err(|e| fail(&e.to_string()))?
                .decrypt_padded_vec_mut::<Pkcs7>(&k.cbc_ct)
                .map_err(|e| fail(&e.to_string()))?;
        }
        Op::AesKwpWrap => {
            aes_kw::KekAes256::from(k.aes_key)
                .wrap_with_padding_vec(&k.wrap_target)
                .map_err(|e| fail(&e.to_string()))?;
        }
        Op::EcdsaP256Sign | Op::EcdsaP384Sign => {
            let ec = if op == Op::EcdsaP256Sign {
                &k.ec256
            } else {
                &k.ec384
            };
            ec.pair
                .sign(&k.rng, &k.data64)
                .map_err(|e| fail(&e.to_string()))?;
        }
        Op::EcdsaP256Verify | Op::EcdsaP384Verify => {
            let ec = if op == Op::EcdsaP256Verify {
                &k.ec256
            } else {
                &k.ec384
            };
            ec.public
                .verify_sig(&k.data64, &ec.sig)
                .map_err(|e| fail(&e.to_string()))?;
        }
        Op::Rsa2048PkcsSign | Op::Rsa2048PssSign => {
            let mut sig = vec![0u8; k.rsa.public_modulus_len()];
            let alg = if op == Op::Rsa2048PkcsSign {
                &RSA_PKCS1_SHA256
            } else {
                &RSA_PSS_SHA256
            };
            k.rsa
                .sign(alg, &k.rng, &k.data64, &mut sig)
                .map_err(|e| fail(&e.to_string()))?;
        }
        Op::Rsa2048Verify => {
            k.rsa_public
                .verify_sig(&k.data64, &k.rsa_sig)
                .map_err(|e| fail(&e.to_string()))?;
        }
        Op::Rsa2048OaepDec => {
            let mut out = vec![0u8; k.oaep.min_output_size()];
            k.oaep
                .decrypt(&OAEP_SHA256_MGF1SHA256, &k.oaep_ct, &mut out, None)
                .map_err(|e| fail(&e.to_string()))?;
        }
        Op::HmacSha256 => {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&k.hmac_key)
                .map_err(|e| fail(&e.to_string()))?;
            mac.update(&k.data64);
            let _tag = mac.finalize().into_bytes();
        }
        Op::KeygenAes => {
            let mut key = [0u8; 32];
            aws_lc_rs::rand::fill(&mut key).map_err(|e| fail(&e.to_string()))?;
        }
        Op::KeygenEc => {
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .map_err(|e| fail(&e.to_string()))?;
        }
        Op::FindByLabel | Op::SessionOpenClose => return Err(fail("no raw equivalent")),
    }
    Ok(())
}
