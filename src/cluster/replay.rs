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
    /// Finish on another healthy member: `make` builds the operation there, `run`
    /// feeds it the input and finishes it.
    fn elsewhere<O, T>(
        &mut self,
        failure: Error,
        make: impl Fn(&AnyInstance, Uuid, &Mechanism) -> Result<O>,
        run: impl Fn(&mut O, &[u8]) -> Result<T>,
    ) -> Result<T> {
        if !failure.is_device_failure() {
            return Err(failure);
        }
        let failed = &self.members[self.served];
        failed.set_healthy(false, &failure.msg);
        let mut last = failure;
        for (i, m) in self.members.iter().enumerate() {
            if i == self.served || !m.is_healthy() {
                continue;
            }
            let attempt = m.with_instance(|inst| {
                let mut op = make(inst, self.uid, &self.mech)?;
                run(&mut op, &self.input)
            });
            match attempt {
                Ok(v) => {
                    tracing::info!(from = %failed.id, to = %m.id, "operation finished on another instance");
                    return Ok(v);
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
            Err(e) => self.replay.elsewhere(
                e,
                |i, uid, mech| i.signer(uid, mech),
                |op, input| {
                    op.update(input)?;
                    op.finish()
                },
            ),
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
            Err(e) => self.replay.elsewhere(
                e,
                |i, uid, mech| i.verifier(uid, mech),
                |op, input| {
                    op.update(input)?;
                    op.finish(signature)
                },
            ),
            ok => ok,
        }
    }
}

/// Remote ciphers give all their output at the end, so a replay repeats nothing the
/// caller has already received.
pub struct ReplayCipher {
    pub(super) op: Box<dyn CipherOp>,
    pub(super) encrypt: bool,
    pub(super) replay: Replay,
}

impl CipherOp for ReplayCipher {
    fn update_len(&self, input_len: usize) -> usize {
        self.op.update_len(input_len)
    }
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.replay.input.extend_from_slice(input);
        self.op.update(input, out)
    }
    fn final_len(&self) -> usize {
        self.op.final_len()
    }
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        match self.op.finish(out) {
            Err(e) => {
                let encrypt = self.encrypt;
                let rest = self.replay.elsewhere(
                    e,
                    |i, uid, mech| i.cipher(uid, mech, encrypt),
                    |op, input| {
                        let mut all = Vec::new();
                        op.update(input, &mut all)?;
                        op.finish(&mut all)?;
                        Ok(all)
                    },
                )?;
                out.extend_from_slice(&rest);
                Ok(())
            }
            ok => ok,
        }
    }
}
