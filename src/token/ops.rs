//! Cryptographic operations of a session: `C_xxxInit` binds a key and a mechanism on
//! the instance; the following calls run on the session's operation state.

use super::mechanisms;
use super::session::{OpAudit, OpKind, OpState, Out};
use super::{Login, Token};
use crate::audit::ops;
use crate::error::{Error, Result};
use crate::hsm::crypto;
use crate::hsm::mechanism::Mechanism;
use pkcs11_sys::*;
use std::time::Instant;

impl Token {
    /// `C_EncryptInit`, `C_DecryptInit`, `C_SignInit`, `C_VerifyInit`.
    /// A `None` mechanism cancels the active operation (PKCS#11 3.0).
    pub fn op_init(
        &self,
        h: CK_SESSION_HANDLE,
        kind: OpKind,
        mech: Option<(&Mechanism, CK_MECHANISM_TYPE)>,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let s = self.session(h)?;
        let Some((mech, mech_type)) = mech else {
            s.lock().cancel(kind);
            return Ok(());
        };
        s.lock().ensure_idle()?;
        let function = match kind {
            OpKind::Encrypt => CKF_ENCRYPT,
            OpKind::Decrypt => CKF_DECRYPT,
            OpKind::Sign => CKF_SIGN,
            OpKind::Verify => CKF_VERIFY,
            OpKind::Digest => CKF_DIGEST,
        };
        let op_name = match kind {
            OpKind::Encrypt => ops::ENCRYPT,
            OpKind::Decrypt => ops::DECRYPT,
            OpKind::Sign => ops::SIGN,
            _ => ops::VERIFY,
        };
        let start = Instant::now();
        let user = self.audit_user();
        let bound = self
            .key_for_version(key, mech_type, function)
            .and_then(|(obj, version)| {
                let cluster = &self.keystore().cluster;
                let uid = obj.uid;
                if let Mechanism::CksEnvelope { aad } = mech {
                    return self.envelope(kind, &obj, aad).map(|(state, v)| {
                        let (_, lease) = cluster.run(|_| Ok(()))?;
                        Ok((obj, Some(v.unwrap_or(version.unwrap_or(0))), state, lease))
                    })?;
                }
                let (state, lease) = match kind {
                    OpKind::Encrypt => {
                        let (op, l) = cluster.cipher(uid, mech, true)?;
                        (OpState::Cipher(op), l)
                    }
                    OpKind::Decrypt => {
                        let (op, l) = cluster.cipher(uid, mech, false)?;
                        (OpState::Cipher(op), l)
                    }
                    OpKind::Sign => {
                        let (op, l) = cluster.signer(uid, mech)?;
                        (OpState::Sign(op), l)
                    }
                    OpKind::Verify => {
                        let (op, l) = cluster.verifier(uid, mech)?;
                        (OpState::Verify(op), l)
                    }
                    OpKind::Digest => return Err(Error::mech_invalid("use C_DigestInit")),
                };
                Ok((obj, version, state, lease))
            });
        let (obj, version, state, lease) = match bound {
            Ok(b) => b,
            Err(e) => {
                // A refused key use is recorded too (disabled key, no login, wrong key…).
                let audit = OpAudit {
                    op: op_name,
                    mechanism: mechanisms::name(mech_type),
                    key_id: None,
                    version: None,
                    instance: None,
                    user,
                    start,
                };
                let mut ev = audit.event(h, Err(&e));
                ev.reason = Some(format!("init refused: {}", e.msg));
                self.keystore().audit.record(ev).map_err(Error::from)?;
                return Err(e);
            }
        };
        let audit = OpAudit {
            op: op_name,
            mechanism: mechanisms::name(mech_type),
            key_id: obj.key_id.clone(),
            version,
            instance: Some(lease.member_name()),
            user,
            start,
        };
        let result = s
            .lock()
            .begin(kind, state, Some(obj.uid), Some(lease), Some(audit));
        result
    }

    /// `CKM_CKS_ENVELOPE` on a customer master key: encryption under its current version
    /// (whichever version's object was named), decryption under the version the
    /// ciphertext names.
    fn envelope(
        &self,
        kind: OpKind,
        obj: &super::objects::Object,
        aad: &[u8],
    ) -> Result<(OpState, Option<u32>)> {
        let (cmk, _) = self.keystore().cmk_of(obj.uid)?.ok_or_else(|| {
            Error::key_type("envelope encryption needs a customer master key (a token key)")
        })?;
        match kind {
            OpKind::Encrypt => {
                let (op, v, object) = crate::kms::envelope::encrypter(self.keystore(), &cmk, aad)?;
                self.keystore()
                    .check_use(object, crate::kms::lifecycle::Use::Protect)?;
                Ok((OpState::Cipher(op), Some(v)))
            }
            OpKind::Decrypt => Ok((
                OpState::Cipher(crate::kms::envelope::decrypter(
                    self.keystore().clone(),
                    cmk,
                    aad,
                )),
                None,
            )),
            _ => Err(Error::mech_invalid(
                "CKM_CKS_ENVELOPE encrypts and decrypts",
            )),
        }
    }

    /// End the active operation of `kind` after a bad argument (nothing is recorded).
    pub fn abort(&self, h: CK_SESSION_HANDLE, kind: OpKind) {
        if let Ok(s) = self.session(h) {
            s.lock().cancel(kind);
        }
    }

    pub(super) fn audit_user(&self) -> &'static str {
        match self.login_state() {
            Login::User => "user",
            Login::So => "so",
            Login::Public => "public",
        }
    }

    pub fn digest_init(&self, h: CK_SESSION_HANDLE, mech: Option<&Mechanism>) -> Result<()> {
        let s = self.session(h)?;
        let mut s = s.lock();
        match mech {
            None => {
                s.cancel(OpKind::Digest);
                Ok(())
            }
            Some(Mechanism::Digest(alg)) => s.begin(
                OpKind::Digest,
                OpState::Digest(crypto::digest(*alg)),
                None,
                None,
                None,
            ),
            Some(_) => Err(Error::mech_invalid("not a digest mechanism")),
        }
    }

    pub fn cipher(
        &self,
        h: CK_SESSION_HANDLE,
        kind: OpKind,
        input: &[u8],
        cap: Option<usize>,
    ) -> Result<Out> {
        self.session_in_progress(h)?
            .lock()
            .cipher_once(kind, input, cap)
    }

    pub fn cipher_update(
        &self,
        h: CK_SESSION_HANDLE,
        kind: OpKind,
        input: &[u8],
        cap: Option<usize>,
    ) -> Result<Out> {
        self.session_in_progress(h)?
            .lock()
            .cipher_update(kind, input, cap)
    }

    pub fn cipher_final(
        &self,
        h: CK_SESSION_HANDLE,
        kind: OpKind,
        cap: Option<usize>,
    ) -> Result<Out> {
        self.session_in_progress(h)?.lock().cipher_final(kind, cap)
    }

    pub fn sign(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        cap: Option<usize>,
    ) -> Result<Out> {
        self.session_in_progress(h)?.lock().sign(data, cap)
    }

    pub fn sign_update(&self, h: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        self.session_in_progress(h)?.lock().sign_update(data)
    }

    pub fn verify(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        signature: &[u8],
    ) -> Result<()> {
        self.session_in_progress(h)?.lock().verify(data, signature)
    }

    pub fn verify_update(&self, h: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        self.session_in_progress(h)?.lock().verify_update(data)
    }

    pub fn digest(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        cap: Option<usize>,
    ) -> Result<Out> {
        self.session_in_progress(h)?.lock().digest(data, cap)
    }

    pub fn digest_update(&self, h: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        self.session_in_progress(h)?.lock().digest_update(data)
    }

    /// `C_DigestKey`: only a secret key whose value the caller could read anyway.
    pub fn digest_key(&self, h: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> Result<()> {
        let s = self.session(h)?;
        let obj = self
            .object(key)
            .map_err(|e| Error::new(CKR_KEY_HANDLE_INVALID, e.msg))?;
        let value = match super::policy::read(&obj.attrs, CKA_VALUE) {
            super::policy::Readable::Material => {
                super::keys::material_component(self.keystore(), &obj, CKA_VALUE)?
            }
            _ => None,
        };
        let value =
            value.ok_or_else(|| Error::new(CKR_KEY_INDIGESTIBLE, "key value is sensitive"))?;
        let result = s.lock().digest_update(&value);
        result
    }

    pub fn random(&self, h: CK_SESSION_HANDLE, buf: &mut [u8]) -> Result<()> {
        self.session(h)?;
        crypto::random_bytes(buf);
        Ok(())
    }
}
