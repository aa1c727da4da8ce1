//! HSM instances: where key material lives and cryptography happens. Nothing here
//! knows of CMKs or PKCS#11 sessions.

pub mod crypto;
pub mod embedded;
pub mod mechanism;
