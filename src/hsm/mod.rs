//! HSM instances: where key material lives and cryptography happens. Nothing here
//! knows of CMKs or PKCS#11 sessions. Two kinds: `embedded` (software, in process) and
//! `pkcs11` (any PKCS#11 module: a vendor HSM's library, SoftHSM2, p11-kit's client).

pub mod crypto;
pub mod embedded;
pub mod mechanism;
pub mod pkcs11;

use crate::error::Result;
use crypto::{CipherOp, KeyMaterial, SignOp, VerifyOp};
use embedded::seal::InstanceKey;
pub use embedded::StoredObject;
use mechanism::{Curve, EcKdf, Mechanism};
use std::sync::Arc;
use uuid::Uuid;
use zeroize::Zeroizing;

/// A key to generate inside an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySpec {
    /// AES key of this many bytes.
    Aes(usize),
    /// Generic secret (HMAC) key of this many bytes.
    GenericSecret(usize),
    Ec(Curve),
    Rsa {
        bits: usize,
        public_exponent: Vec<u8>,
    },
}

impl KeySpec {
    /// Generate the key in software (the embedded instance; session keys): the key and,
    /// for a pair, its public half. The generator's own public point is used: deriving it
    /// again from the private key (in RustCrypto) cost 20 times the generation itself.
    pub fn generate(&self) -> Result<(KeyMaterial, Option<KeyMaterial>)> {
        Ok(match self {
            KeySpec::Aes(n) | KeySpec::GenericSecret(n) => (crypto::generate_secret(*n), None),
            KeySpec::Ec(c) => {
                let (k, public) = crypto::generate_ec_pair(*c);
                let public = public.or_else(|| k.public_material());
                (k, public)
            }
            KeySpec::Rsa {
                bits,
                public_exponent,
            } => {
                let k = crypto::generate_rsa(*bits, public_exponent)?;
                let public = k.public_material();
                (k, public)
            }
        })
    }
}

/// The final attributes of a key being generated, from its public half (if any).
pub type AttrsOf<'a> = &'a dyn Fn(Option<&KeyMaterial>) -> Result<Vec<u8>>;

/// What the cluster asks of any instance.
pub trait Instance: Send + Sync {
    fn id(&self) -> &str;
    fn kind(&self) -> &'static str;
    /// Calls cross a process or network boundary and can fail part-way (the cluster
    /// keeps what it needs to replay them elsewhere).
    fn is_remote(&self) -> bool {
        false
    }
    /// Is the device there and answering?
    fn probe(&self) -> Result<()>;
    fn is_initialized(&self) -> Result<bool>;
    /// Make this instance a member of a key store: no objects, and the domain key.
    fn initialize(&self, keystore_key: &InstanceKey, domain_key: &[u8]) -> Result<()>;
    /// Open the instance's secrets (at login).
    fn unlock(&self, keystore_key: &InstanceKey) -> Result<()>;
    fn is_unlocked(&self) -> bool;
    /// The domain key in plaintext, to seed a new member (embedded instances only).
    fn domain_key(&self) -> Result<Zeroizing<Vec<u8>>>;
    /// Forget token keys' secrets (at logout).
    fn lock(&self, token_uids: &[Uuid]);
    /// Changes whenever the stored objects change.
    fn data_version(&self) -> Result<i64>;
    fn load_objects(&self) -> Result<Vec<StoredObject>>;
    /// Each stored object's attributes, without its material (what the token lists).
    fn load_attrs(&self) -> Result<Vec<(Uuid, Vec<u8>)>> {
        Ok(self
            .load_objects()?
            .into_iter()
            .map(|o| (o.uid, o.attrs))
            .collect())
    }
    /// The attributes of those of the objects `uids` that this instance holds.
    fn load_attrs_of(&self, uids: &[Uuid]) -> Result<Vec<(Uuid, Vec<u8>)>> {
        let want: std::collections::HashSet<&Uuid> = uids.iter().collect();
        Ok(self
            .load_attrs()?
            .into_iter()
            .filter(|(u, _)| want.contains(u))
            .collect())
    }
    /// Keep a CMK record unless one of the same or a higher generation is there.
    fn put_cmk(&self, id: Uuid, generation: u64, meta: &[u8]) -> Result<bool>;
    fn load_cmks(&self) -> Result<Vec<(Uuid, u64, Vec<u8>)>>;
    /// The id and generation of every CMK record, without the records.
    fn cmk_generations(&self) -> Result<Vec<(Uuid, u64)>> {
        Ok(self
            .load_cmks()?
            .into_iter()
            .map(|(id, g, _)| (id, g))
            .collect())
    }
    /// The records of those of the CMKs `ids` that this instance holds.
    fn load_cmks_of(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, u64, Vec<u8>)>> {
        let want: std::collections::HashSet<&Uuid> = ids.iter().collect();
        Ok(self
            .load_cmks()?
            .into_iter()
            .filter(|(id, _, _)| want.contains(id))
            .collect())
    }
    fn delete_cmk(&self, id: Uuid) -> Result<()>;
    fn has_object(&self, uid: Uuid) -> Result<bool>;
    /// How many customer master keys (secret and private keys) the instance holds.
    fn key_count(&self) -> Result<usize>;
    fn object_ids(&self) -> Result<Vec<Uuid>>;
    /// Keep a new object with material given by the caller (public keys, session keys,
    /// objects without material).
    fn put_object(
        &self,
        uid: Uuid,
        attrs: Vec<u8>,
        material: Option<KeyMaterial>,
        persistent: bool,
    ) -> Result<()>;
    /// Generate a token key inside the instance and keep it with the attributes `attrs`
    /// computes; returns the public half of a key pair.
    fn generate(&self, uid: Uuid, spec: &KeySpec, attrs: AttrsOf) -> Result<Option<KeyMaterial>>;
    /// A copy of a stored object for another member: secret material wrapped under the
    /// domain key (AES key wrap with padding; a secret key's value or a private key's
    /// PKCS#8).
    fn export(&self, uid: Uuid) -> Result<StoredObject>;
    fn import(&self, obj: StoredObject) -> Result<()>;
    /// Can `export` wrap keys under the domain key? (A module reached through p11-kit's
    /// remoting cannot: its RPC carries no AES key-wrap mechanism.)
    fn can_export(&self) -> bool {
        true
    }
    /// An object with its key material in plaintext, for a member that cannot unwrap
    /// (only an in-process instance, whose material is in this process anyway, gives it).
    fn export_plain(&self, _uid: Uuid) -> Result<(StoredObject, Arc<KeyMaterial>)> {
        Err(crate::error::Error::new(
            pkcs11_sys::CKR_KEY_UNEXTRACTABLE,
            format!("instance {} gives out no plaintext key", self.id()),
        ))
    }
    /// Take in an object whose key material comes in plaintext (see `export_plain`).
    fn import_plain(&self, _obj: StoredObject, _material: &KeyMaterial) -> Result<()> {
        Err(crate::error::Error::new(
            pkcs11_sys::CKR_MECHANISM_INVALID,
            format!("instance {} takes no plaintext key", self.id()),
        ))
    }
    fn update_attrs(&self, uid: Uuid, attrs: &[u8]) -> Result<()>;
    fn destroy(&self, uid: Uuid, persistent: bool) -> Result<()>;
    /// Keep a session key's material (memory only).
    fn put_session_material(&self, uid: Uuid, m: Arc<KeyMaterial>);
    /// Key material the process may hold: session keys, public keys, and on embedded
    /// instances every key.
    fn material(&self, uid: Uuid) -> Result<Arc<KeyMaterial>>;
    fn cipher(&self, uid: Uuid, mech: &Mechanism, encrypt: bool) -> Result<Box<dyn CipherOp>>;
    fn signer(&self, uid: Uuid, mech: &Mechanism) -> Result<Box<dyn SignOp>>;
    fn verifier(&self, uid: Uuid, mech: &Mechanism) -> Result<Box<dyn VerifyOp>>;
    /// Wrap the key `target` (its value or PKCS#8) under `wrapping`.
    fn wrap(&self, mech: &Mechanism, wrapping: Uuid, target: Uuid) -> Result<Vec<u8>>;
    /// Unwrap a secret key's value (`private == false`) or a private key's PKCS#8.
    fn unwrap(
        &self,
        mech: &Mechanism,
        unwrapping: Uuid,
        wrapped: &[u8],
        private: bool,
    ) -> Result<KeyMaterial>;
    /// ECDH with the private key `base`: the derived secret of `len` bytes.
    fn ecdh_derive(
        &self,
        base: Uuid,
        kdf: EcKdf,
        shared_data: &[u8],
        public_data: &[u8],
        len: usize,
    ) -> Result<Zeroizing<Vec<u8>>>;
}

/// One instance of either kind (sized, so that members can swap it without a lock).
// Always behind an `Arc`: boxing the embedded variant would only add an indirection to
// every call on the hot path.
#[allow(clippy::large_enum_variant)]
pub enum AnyInstance {
    Embedded(embedded::EmbeddedInstance),
    Pkcs11(pkcs11::Pkcs11Instance),
}

impl std::ops::Deref for AnyInstance {
    type Target = dyn Instance;
    fn deref(&self) -> &(dyn Instance + 'static) {
        match self {
            AnyInstance::Embedded(i) => i,
            AnyInstance::Pkcs11(i) => i,
        }
    }
}

/// The form secret material takes inside a domain-key wrap between instances: a
/// secret key's value or a private key's PKCS#8 — what `C_WrapKey` produces, so that
/// any two instances, of any kinds, understand each other.
pub(crate) fn wire_payload(m: &KeyMaterial) -> Result<Zeroizing<Vec<u8>>> {
    match m {
        KeyMaterial::Secret(v) => Ok(Zeroizing::new(v.to_vec())),
        m if m.is_private() => m.private_to_pkcs8(),
        _ => Err(crate::error::Error::general(
            "public material is not wrapped",
        )),
    }
}

/// The material of an unwrapped wire payload; `attrs` (the object's) say its class.
pub(crate) fn from_wire_payload(attrs: &[u8], plain: Zeroizing<Vec<u8>>) -> Result<KeyMaterial> {
    let attrs = crate::token::attribute::Attributes::decode(attrs)?;
    if attrs.class() == pkcs11_sys::CKO_PRIVATE_KEY {
        KeyMaterial::private_from_pkcs8(der_sequence(&plain))
    } else {
        Ok(KeyMaterial::Secret(plain))
    }
}

/// The DER SEQUENCE at the start of `b`, without what follows it (some HSMs pad a
/// wrapped PKCS#8 to a multiple of 8 bytes before wrapping it).
fn der_sequence(b: &[u8]) -> &[u8] {
    let total = match b {
        [0x30, n, ..] if *n < 0x80 => 2 + *n as usize,
        [0x30, 0x81, n, ..] => 3 + *n as usize,
        [0x30, 0x82, hi, lo, ..] => 4 + ((*hi as usize) << 8 | *lo as usize),
        _ => b.len(),
    };
    &b[..total.min(b.len())]
}

/// Copy the object `uid` from one member to another: wrapped under the domain key, or,
/// where the target cannot unwrap and accepts it, as plaintext from an in-process source.
pub fn copy_object(src: &AnyInstance, dst: &AnyInstance, uid: Uuid) -> Result<()> {
    use pkcs11_sys::CKR_MECHANISM_INVALID;
    let wrapped = src.export(uid).and_then(|obj| dst.import(obj));
    match wrapped {
        Err(e) if e.rv == CKR_MECHANISM_INVALID => match src.export_plain(uid) {
            Ok((obj, material)) => dst.import_plain(obj, &material),
            Err(_) => Err(e),
        },
        r => r,
    }
}
