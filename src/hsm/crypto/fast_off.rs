//! Built without the `aws-lc` feature: no fast engine; RustCrypto does everything.
//! Same interface as `fast.rs`, every function declining.

use super::key::KeyMaterial;
use super::{CipherOp, SignOp, VerifyOp};
use crate::error::Result;
use crate::hsm::mechanism::{Curve, Mechanism};
use std::sync::Arc;

pub enum FastKey {}

impl FastKey {
    pub fn prepare(_m: &KeyMaterial) -> Option<FastKey> {
        None
    }
}

pub fn signer(
    _m: &Mechanism,
    _k: &Arc<FastKey>,
    _mat: &Arc<KeyMaterial>,
) -> Result<Option<Box<dyn SignOp>>> {
    Ok(None)
}

pub fn verifier(
    _m: &Mechanism,
    _k: &Arc<FastKey>,
    _mat: &Arc<KeyMaterial>,
) -> Result<Option<Box<dyn VerifyOp>>> {
    Ok(None)
}

pub fn decrypter(_m: &Mechanism, _k: &Arc<FastKey>) -> Option<Box<dyn CipherOp>> {
    None
}

pub fn generate_ec(_c: Curve) -> Option<KeyMaterial> {
    None
}

pub fn generate_ec_pair(_c: Curve) -> Option<(KeyMaterial, KeyMaterial)> {
    None
}

pub fn generate_rsa(_bits: usize, _e: &[u8]) -> Option<KeyMaterial> {
    None
}
