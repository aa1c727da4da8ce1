//! Operations on a remote member that can be finished elsewhere. A remote instance
//! (a PKCS#11 backend, perhaps across the network) can fail between `C_SignInit` and
//! `C_Sign`; the input seen so far is kept, and if finishing fails on the device the
//! operation is made again on another healthy member and the input replayed, so the
//! caller sees no error. Operations on in-process members are not wrapped.

use super::Member;
use crate::error::{Error, Result};
use crate::hsm::crypto::{CipherOp, SignOp, VerifyOp};
use crate::hsm::mechanism::Mechanism;
use crate::hsm::AnyInstance;
use std::sync::Arc;
use uuid::Uuid;

/// What is needed to make the operation again on another member.
pub struct Replay {
    pub(super) members: Vec<Arc<Member>>,
    pub(super) served: usize,
    pub(super) uid: Uuid,
    pub(super) mech: Mechanism,
    /// May be plaintext (encryption): wiped when the operation ends.
    pub(super) input: zeroize::Zeroizing<Vec<u8>>,
}

impl Replay {
    /// After `failure`, make the operation again on another healthy member (which then
    /// serves it). Only device failures move; others are the caller's.
    fn remake<O>(
        &mut self,
        failure: Error,
        make: impl Fn(&AnyInstance, Uuid, &Mechanism) -> Result<O>,
    ) -> Result<O> {
        if !failure.is_device_failure() {
            return Err(failure);
        }
        let failed = self.members[self.served].clone();
        failed
            .stats
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        failed.set_healthy(false, &failure.msg);
        let mut last = failure;
        for (i, m) in self.members.iter().enumerate() {
            if i == self.served || !m.is_healthy() {
                continue;
            }
            match m.with_instance(|inst| make(inst, self.uid, &self.mech)) {
                Ok(op) => {
                    tracing::info!(from = %failed.id, to = %m.id, "operation moved to another instance");
                    self.served = i;
                    return Ok(op);
                }
                Err(e) if e.is_device_failure() => {
                    m.set_healthy(false, &e.msg);
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(
            pkcs11_sys::CKR_DEVICE_REMOVED,
            format!("the instance serving the operation failed: {}", last.msg),
        ))
    }
}

pub struct ReplaySign {
    pub(super) op: Box<dyn SignOp>,
    pub(super) replay: Replay,
}

impl SignOp for ReplaySign {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.replay.input.extend_from_slice(data);
        self.op.update(data)
    }
    fn sign_len(&self) -> usize {
        self.op.sign_len()
    }
    fn finish(&mut self) -> Result<Vec<u8>> {
        match self.op.finish() {
            Err(e) => {
                let mut op = self.replay.remake(e, |i, uid, mech| i.signer(uid, mech))?;
                op.update(&self.replay.input)?;
                op.finish()
            }
            ok => ok,
        }
    }
}

pub struct ReplayVerify {
    pub(super) op: Box<dyn VerifyOp>,
    pub(super) replay: Replay,
}

impl VerifyOp for ReplayVerify {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.replay.input.extend_from_slice(data);
        self.op.update(data)
    }
    fn finish(&mut self, signature: &[u8]) -> Result<()> {
        match self.op.finish(signature) {
            Err(e) => {
                let mut op = self
                    .replay
                    .remake(e, |i, uid, mech| i.verifier(uid, mech))?;
                op.update(&self.replay.input)?;
                op.finish(signature)
            }
            ok => ok,
        }
    }
}

/// The ciphers that run remotely are deterministic for a given key and parameters
/// (ECB, CBC, GCM with its IV, RSA decryption): made again elsewhere and fed the same
/// input, an operation gives the same output, of which what the caller already has is
/// skipped.
pub struct ReplayCipher {
    pub(super) op: Box<dyn CipherOp>,
    pub(super) encrypt: bool,
    pub(super) replay: Replay,
    /// Output already handed to the caller.
    pub(super) delivered: usize,
}

impl ReplayCipher {
    /// Move to another member after `e`: the new operation is fed everything so far,
    /// and what it outputs beyond `delivered` is returned.
    fn recover(&mut self, e: Error, finish: bool) -> Result<Vec<u8>> {
        let encrypt = self.encrypt;
        let mut op = self
            .replay
            .remake(e, |i, uid, mech| i.cipher(uid, mech, encrypt))?;
        let mut all = Vec::new();
        op.update(&self.replay.input, &mut all)?;
        if finish {
            op.finish(&mut all)?;
        }
        self.op = op;
        let rest = all.get(self.delivered..).unwrap_or_default().to_vec();
        self.delivered = all.len();
        Ok(rest)
    }
}

impl CipherOp for ReplayCipher {
    fn update_len(&self, input_len: usize) -> usize {
        self.op.update_len(input_len)
    }
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.replay.input.extend_from_slice(input);
        let before = out.len();
        match self.op.update(input, out) {
            Ok(()) => {
                self.delivered += out.len() - before;
                Ok(())
            }
            Err(e) => {
                out.truncate(before);
                let rest = self.recover(e, false)?;
                out.extend_from_slice(&rest);
                Ok(())
            }
        }
    }
    fn final_len(&self) -> usize {
        self.op.final_len()
    }
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let before = out.len();
        match self.op.finish(out) {
            Ok(()) => Ok(()),
            Err(e) => {
                out.truncate(before);
                let rest = self.recover(e, true)?;
                out.extend_from_slice(&rest);
                Ok(())
            }
        }
    }
}
