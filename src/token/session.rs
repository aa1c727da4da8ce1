//! Sessions and the state of their active operation, including the spec's two-call
//! convention for output buffers:
//! "If pBuf is NULL_PTR, then all that the function does is return (in *pulBufLen) a
//! number of bytes which would suffice to hold the cryptographic output ... If pBuf is
//! not NULL_PTR and *pulBufLen is too small, CKR_BUFFER_TOO_SMALL is returned" and the
//! operation stays active so the call can be repeated with a bigger buffer.

use crate::audit::{AuditLog, Event};
use crate::error::{rv_name, Error, Result};
use crate::hsm::crypto::{CipherOp, DigestOp, SignOp, VerifyOp};
use pkcs11_sys::*;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// The answer to a call that produces output.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    /// The output; the caller's buffer holds it.
    Data(Vec<u8>),
    /// Length query (NULL buffer): this many bytes suffice.
    Len(usize),
    /// The buffer is too small; this many bytes are needed. The operation stays active.
    TooSmall(usize),
}

impl Out {
    /// Deliver `data` into a buffer of `cap` bytes (`None`: length query).
    pub fn deliver(data: Vec<u8>, cap: Option<usize>) -> (Out, Option<Vec<u8>>) {
        match cap {
            None => (Out::Len(data.len()), Some(data)),
            Some(c) if c < data.len() => (Out::TooSmall(data.len()), Some(data)),
            Some(_) => (Out::Data(data), None),
        }
    }

    fn bound(len: usize, cap: Option<usize>) -> Option<Out> {
        match cap {
            None => Some(Out::Len(len)),
            Some(c) if c < len => Some(Out::TooSmall(len)),
            Some(_) => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Encrypt,
    Decrypt,
    Sign,
    Verify,
    Digest,
}

pub enum OpState {
    Cipher(Box<dyn CipherOp>),
    Sign(Box<dyn SignOp>),
    Verify(Box<dyn VerifyOp>),
    Digest(Box<dyn DigestOp>),
}

pub struct Operation {
    pub kind: OpKind,
    pub state: OpState,
    pub key: Option<Uuid>,
    /// The instance serving the operation (a multi-part operation stays on it).
    pub lease: Option<crate::cluster::Lease>,
    /// The audit record written when the operation ends.
    pub audit: Option<OpAudit>,
    /// Multi-part calls have begun: the single-part function may no longer be used.
    updated: bool,
    /// Output computed but not yet delivered (length query or too small a buffer).
    pending: Option<Vec<u8>>,
}

pub struct Session {
    pub handle: CK_SESSION_HANDLE,
    pub rw: bool,
    pub op: Option<Operation>,
    /// Remaining results of an active `C_FindObjects` search.
    pub find: Option<std::collections::VecDeque<CK_OBJECT_HANDLE>>,
    audit: Arc<AuditLog>,
}

/// What the audit record of a key use says, gathered when the operation begins.
pub struct OpAudit {
    pub op: &'static str,
    pub mechanism: &'static str,
    pub key_id: Option<crate::audit::KeyRef>,
    pub version: Option<u32>,
    pub instance: Option<&'static str>,
    pub user: &'static str,
    pub start: Instant,
}

impl OpAudit {
    pub fn event(
        self,
        session: CK_SESSION_HANDLE,
        result: std::result::Result<(), &Error>,
    ) -> Event {
        self.event_at(session, result, Instant::now())
    }

    /// The record of an operation that ended at `end`.
    pub fn event_at(
        self,
        session: CK_SESSION_HANDLE,
        result: std::result::Result<(), &Error>,
        end: Instant,
    ) -> Event {
        Event {
            op: self.op,
            session: Some(session),
            user: Some(self.user),
            mechanism: Some(self.mechanism.into()),
            key_id: self.key_id,
            key_version: self.version,
            instance: self.instance.map(std::borrow::Cow::Borrowed),
            result: match result {
                Ok(()) => "CKR_OK",
                Err(e) => rv_name(e.rv),
            },
            latency_us: Some(end.saturating_duration_since(self.start).as_micros() as u64),
            reason: result.err().map(|e| e.msg.to_string()),
            detail: None,
        }
    }
}

fn not_initialized() -> Error {
    Error::new(
        CKR_OPERATION_NOT_INITIALIZED,
        "no such operation is active in this session",
    )
}

fn wrong_state() -> Error {
    Error::general("operation state does not match its kind")
}

impl Session {
    pub fn new(handle: CK_SESSION_HANDLE, rw: bool, audit: Arc<AuditLog>) -> Session {
        Session {
            handle,
            rw,
            op: None,
            find: None,
            audit,
        }
    }

    pub fn begin(
        &mut self,
        kind: OpKind,
        state: OpState,
        key: Option<Uuid>,
        lease: Option<crate::cluster::Lease>,
        audit: Option<OpAudit>,
    ) -> Result<()> {
        if self.op.is_some() {
            return Err(Error::new(
                CKR_OPERATION_ACTIVE,
                "another operation is active",
            ));
        }
        self.op = Some(Operation {
            kind,
            state,
            key,
            lease,
            audit,
            updated: false,
            pending: None,
        });
        Ok(())
    }

    pub fn ensure_idle(&self) -> Result<()> {
        if self.op.is_some() {
            return Err(Error::new(
                CKR_OPERATION_ACTIVE,
                "another operation is active",
            ));
        }
        Ok(())
    }

    /// Cancel the active operation of `kind` (PKCS#11 3.0: `C_xxxInit` with a NULL mechanism).
    pub fn cancel(&mut self, kind: OpKind) {
        if self.op.as_ref().is_some_and(|o| o.kind == kind) {
            self.op = None;
        }
    }

    pub fn active_key(&self, kind: OpKind) -> Option<Uuid> {
        self.op
            .as_ref()
            .filter(|o| o.kind == kind)
            .and_then(|o| o.key)
    }

    /// Run `f` on the active operation of `kind`; any error but a short buffer ends it,
    /// as does `f` reporting that the operation is complete.
    fn with_op<T>(
        &mut self,
        kind: OpKind,
        f: impl FnOnce(&mut Operation) -> Result<(T, bool)>,
    ) -> Result<T> {
        let op = match self.op.as_mut() {
            Some(op) if op.kind == kind => op,
            _ => return Err(not_initialized()),
        };
        let result = f(op);
        let (done, outcome) = match &result {
            Ok((_, done)) => (*done, Ok(())),
            Err(e) => (true, Err(e)),
        };
        if done {
            // One clock read ends both the member's lease and the audit record's latency.
            let end = Instant::now();
            let (audit, lease) = self.op.take().map_or((None, None), |o| (o.audit, o.lease));
            if let Some(l) = lease {
                l.end_at(end);
            }
            if let Some(a) =
                audit.filter(|_| self.audit.durability() != crate::audit::Durability::Off)
            {
                // With `sync` durability an operation whose record cannot be written fails.
                self.audit
                    .record(a.event_at(self.handle, outcome, end))
                    .map_err(Error::from)?;
            }
        }
        result.map(|(v, _)| v)
    }

    /// Hand out pending output; the operation is complete once it is delivered.
    fn deliver_pending(op: &mut Operation, cap: Option<usize>) -> Option<(Out, bool)> {
        let data = op.pending.take()?;
        let (out, keep) = Out::deliver(data, cap);
        op.pending = keep;
        let done = matches!(out, Out::Data(_));
        Some((out, done))
    }

    /// `C_Encrypt` / `C_Decrypt`.
    pub fn cipher_once(&mut self, kind: OpKind, input: &[u8], cap: Option<usize>) -> Result<Out> {
        self.with_op(kind, |op| {
            if let Some(r) = Self::deliver_pending(op, cap) {
                return Ok(r);
            }
            if op.updated {
                return Err(Error::new(
                    CKR_OPERATION_ACTIVE,
                    "a multi-part operation is in progress; finish it with the Final function",
                ));
            }
            let OpState::Cipher(c) = &mut op.state else {
                return Err(wrong_state());
            };
            // Room for padding or a tag too: one allocation for the whole output.
            let mut out = Vec::with_capacity(c.update_len(input.len()).max(input.len()) + 32);
            c.update(input, &mut out)?;
            c.finish(&mut out)?;
            op.pending = Some(out);
            Ok(Self::deliver_pending(op, cap).unwrap_or((Out::Len(0), true)))
        })
    }

    /// `C_EncryptUpdate` / `C_DecryptUpdate`.
    pub fn cipher_update(&mut self, kind: OpKind, input: &[u8], cap: Option<usize>) -> Result<Out> {
        self.with_op(kind, |op| {
            let OpState::Cipher(c) = &mut op.state else {
                return Err(wrong_state());
            };
            let bound = c.update_len(input.len());
            if let Some(short) = Out::bound(bound, cap) {
                return Ok((short, false));
            }
            op.updated = true;
            let mut out = Vec::with_capacity(bound);
            c.update(input, &mut out)?;
            Ok((Out::Data(out), false))
        })
    }

    /// `C_EncryptFinal` / `C_DecryptFinal`.
    pub fn cipher_final(&mut self, kind: OpKind, cap: Option<usize>) -> Result<Out> {
        self.with_op(kind, |op| {
            if let Some(r) = Self::deliver_pending(op, cap) {
                return Ok(r);
            }
            let OpState::Cipher(c) = &mut op.state else {
                return Err(wrong_state());
            };
            let mut out = Vec::with_capacity(c.final_len());
            c.finish(&mut out)?;
            op.pending = Some(out);
            Ok(Self::deliver_pending(op, cap).unwrap_or((Out::Len(0), true)))
        })
    }

    /// `C_Sign` (`data` is everything) and `C_SignFinal` (`data` is `None`).
    pub fn sign(&mut self, data: Option<&[u8]>, cap: Option<usize>) -> Result<Out> {
        self.with_op(OpKind::Sign, |op| {
            if let Some(r) = Self::deliver_pending(op, cap) {
                return Ok(r);
            }
            if data.is_some() && op.updated {
                return Err(Error::new(CKR_OPERATION_ACTIVE, "finish with C_SignFinal"));
            }
            let OpState::Sign(s) = &mut op.state else {
                return Err(wrong_state());
            };
            if let Some(short) = Out::bound(s.sign_len(), cap) {
                return Ok((short, false));
            }
            if let Some(d) = data {
                s.update(d)?;
            }
            Ok((Out::Data(s.finish()?), true))
        })
    }

    pub fn sign_update(&mut self, data: &[u8]) -> Result<()> {
        self.with_op(OpKind::Sign, |op| {
            let OpState::Sign(s) = &mut op.state else {
                return Err(wrong_state());
            };
            op.updated = true;
            s.update(data).map(|_| ((), false))
        })
    }

    /// `C_Verify` (`data` is everything) and `C_VerifyFinal` (`data` is `None`).
    pub fn verify(&mut self, data: Option<&[u8]>, signature: &[u8]) -> Result<()> {
        self.with_op(OpKind::Verify, |op| {
            if data.is_some() && op.updated {
                return Err(Error::new(
                    CKR_OPERATION_ACTIVE,
                    "finish with C_VerifyFinal",
                ));
            }
            let OpState::Verify(v) = &mut op.state else {
                return Err(wrong_state());
            };
            if let Some(d) = data {
                v.update(d)?;
            }
            v.finish(signature).map(|_| ((), true))
        })
    }

    pub fn verify_update(&mut self, data: &[u8]) -> Result<()> {
        self.with_op(OpKind::Verify, |op| {
            let OpState::Verify(v) = &mut op.state else {
                return Err(wrong_state());
            };
            op.updated = true;
            v.update(data).map(|_| ((), false))
        })
    }

    /// `C_Digest` (`data` is everything) and `C_DigestFinal` (`data` is `None`).
    pub fn digest(&mut self, data: Option<&[u8]>, cap: Option<usize>) -> Result<Out> {
        self.with_op(OpKind::Digest, |op| {
            if data.is_some() && op.updated {
                return Err(Error::new(
                    CKR_OPERATION_ACTIVE,
                    "finish with C_DigestFinal",
                ));
            }
            let OpState::Digest(d) = &mut op.state else {
                return Err(wrong_state());
            };
            if let Some(short) = Out::bound(d.output_len(), cap) {
                return Ok((short, false));
            }
            if let Some(x) = data {
                d.update(x);
            }
            Ok((Out::Data(d.finish()), true))
        })
    }

    pub fn digest_update(&mut self, data: &[u8]) -> Result<()> {
        self.with_op(OpKind::Digest, |op| {
            let OpState::Digest(d) = &mut op.state else {
                return Err(wrong_state());
            };
            op.updated = true;
            d.update(data);
            Ok(((), false))
        })
    }
}
