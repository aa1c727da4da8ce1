//! cks: a PKCS#11 module that turns a cluster of HSM instances into a KMS-style custom
//! key store. See DESIGN.md in the project's shared notes for the vocabulary and layers:
//!
//! - `ffi`: the C ABI (the only module with `unsafe`);
//! - `token`: PKCS#11 semantics — sessions, objects, the attribute policy;
//! - `hsm`: HSM instances and their cryptography;
//! - `config`, `provider`, `error`: configuration, the state alive between
//!   `C_Initialize` and `C_Finalize`, and the one error type.

#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod audit;
pub mod cluster;
pub mod config;
pub mod error;
#[allow(unsafe_code)]
pub mod ffi;
pub mod hsm;
pub mod keystore;
pub mod kms;
pub mod provider;
pub mod read_mostly;
pub mod token;
