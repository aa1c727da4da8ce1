//! The fuzz targets of fuzz/ (cargo-fuzz) as bounded property tests, so that CI runs
//! them without cargo-fuzz: the same harnesses (fuzz/harness.rs) over inputs from a
//! seeded generator — random bytes and mutations of valid seeds. A crash found by
//! `cargo fuzz` is added here as a regression case (see `regressions`).
//!
//! `CKS_FUZZ_CASES=N` scales the number of cases (default 1: a few seconds in all).

#[path = "../fuzz/harness.rs"]
mod harness;

use cks_pkcs11::hsm::crypto::{self, KeyMaterial};
use cks_pkcs11::hsm::mechanism::Curve;
use cks_pkcs11::token::attribute::Attributes;
use pkcs11_sys::*;

/// xorshift64*: deterministic, so a failure names its case and seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// A mutation of `seed`: byte flips, truncation, extension, splices of random bytes.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..1 + self.below(4) {
            match self.below(5) {
                0 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] ^= 1 << self.below(8);
                }
                1 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] = self.next() as u8;
                }
                2 => {
                    let n = self.below(v.len() + 1);
                    v.truncate(n);
                }
                3 => {
                    let n = self.below(16);
                    let extra = self.bytes(n);
                    let i = self.below(v.len() + 1);
                    v.splice(i..i, extra);
                }
                _ => {
                    if !v.is_empty() {
                        let i = self.below(v.len());
                        let j = i + self.below(v.len() - i);
                        v.drain(i..j);
                    }
                }
            }
        }
        v
    }
}

fn scale() -> usize {
    std::env::var("CKS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Run `f` on `n` inputs; a panic names the case and its bytes.
fn run(name: &str, n: usize, seed: u64, mut gen: impl FnMut(&mut Rng) -> Vec<u8>, f: fn(&[u8])) {
    let mut rng = Rng(seed);
    for i in 0..n * scale() {
        let input = gen(&mut rng);
        if let Err(e) = std::panic::catch_unwind(|| f(&input)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "{name}: case {i} (seed {seed}) failed: {msg}\ninput: {}",
                hex::encode(&input)
            );
        }
    }
}

#[test]
fn fuzz_template_policy() {
    run(
        "template",
        30_000,
        1,
        |r| {
            let n = r.below(200);
            r.bytes(n)
        },
        harness::template,
    );
}

#[test]
fn fuzz_config_parser() {
    let seeds = [
        "[keystore]\nlabel = \"cks\"\ndata_dir = \"/tmp/x\"\nmax_pin_attempts = 3\n[kdf]\nmemory_kib = 64\niterations = 1\n\n[[hsm]]\nid = \"hsm1\"\nkind = \"embedded\"\n\n[[hsm]]\nid = \"hsm2\"\nkind = \"embedded\"\npath = \"/tmp/y\"\n",
        "[log]\nfilter = \"debug\"\nfile = \"/tmp/log\"\n[[hsm]]\nid=\"a\"\nkind=\"embedded\"\n",
        "[keystore]\nlabel = \"\u{00e9}\u{00e9}\u{00e9}\"\n[[hsm]]\nid = \"\u{1F600}\"\nkind = \"embedded\"\n",
    ];
    run(
        "config",
        4_000,
        2,
        |r| {
            let s = seeds[r.below(seeds.len())].as_bytes();
            if r.below(10) == 0 {
                let n = r.below(300);
                r.bytes(n)
            } else {
                r.mutate(s)
            }
        },
        harness::config,
    );
}

#[test]
fn fuzz_stored_object_decoders() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    let mut a = Attributes::new();
    a.set_ulong(CKA_CLASS, CKO_SECRET_KEY);
    a.set_bool(CKA_TOKEN, true);
    a.set(CKA_LABEL, b"label".to_vec());
    seeds.push(a.encode().unwrap());
    seeds.push(crypto::generate_secret(32).encode().unwrap().to_vec());
    let ec = crypto::generate_ec(Curve::P256);
    seeds.push(ec.encode().unwrap().to_vec());
    seeds.push(ec.public_material().unwrap().encode().unwrap().to_vec());
    let ec384 = crypto::generate_ec(Curve::P384);
    seeds.push(ec384.encode().unwrap().to_vec());
    seeds.push(ec384.public_material().unwrap().encode().unwrap().to_vec());
    let rsa = crypto::generate_rsa(2048, &[1, 0, 1]).unwrap();
    seeds.push(rsa.encode().unwrap().to_vec());
    seeds.push(rsa.public_material().unwrap().encode().unwrap().to_vec());
    for s in &seeds {
        harness::stored_object(s);
    }
    assert!(matches!(
        KeyMaterial::decode(&seeds[1]),
        Ok(KeyMaterial::Secret(_))
    ));
    run(
        "stored_object",
        20_000,
        3,
        |r| {
            if r.below(8) == 0 {
                let n = r.below(120);
                r.bytes(n)
            } else {
                let s = &seeds[r.below(seeds.len())];
                r.mutate(s)
            }
        },
        harness::stored_object,
    );
}

#[test]
fn fuzz_mechanism_parameters_through_the_c_abi() {
    run(
        "mechanism_params",
        2_500,
        4,
        |r| {
            let n = r.below(260);
            r.bytes(n)
        },
        harness::mechanism_params,
    );
}

/// Inputs that once crashed or misbehaved under `cargo fuzz`: kept forever.
#[test]
fn regressions() {
    type Case<'a> = (&'a str, fn(&[u8]), &'a [u8]);
    let cases: &[Case] = &[
        // (target, harness, input): none found so far.
        (
            "config",
            harness::config,
            b"[keystore]\nlabel = \"\xc3\xa9\"\n[",
        ),
        (
            "stored_object",
            harness::stored_object,
            &[0x02, 0x30, 0x82, 0xff, 0xff],
        ),
        ("template", harness::template, &[4, 1, 3, 1, 0, 0]),
    ];
    for (name, f, input) in cases {
        println!("regression {name}: {}", hex::encode(input));
        f(input);
    }
}
