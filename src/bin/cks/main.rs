//! `cks`: set up a key store, look after its HSM instances, and benchmark any
//! PKCS#11 module. Exit codes: 0 success, 1 the operation failed, 2 bad usage.

mod audit;
mod bench;
mod demo;
mod hsm;
mod init;
mod key;
mod keystore;
mod pin;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cks",
    version,
    about = "cks: a cluster of HSM instances as one KMS-style key store",
    long_about = "cks manages a cks key store (the token that libcks_pkcs11.so serves) and \
                  benchmarks PKCS#11 modules.\n\nThe key store is found as the module finds it: \
                  --config FILE, else $CKS_CONFIG, else cks.toml in the data directory \
                  ($XDG_DATA_HOME/cks or ~/.local/share/cks), else the built-in default (two \
                  embedded instances in that directory)."
)]
struct Cli {
    /// Configuration file of the key store (default: $CKS_CONFIG, then the data directory).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create (or re-create) the key store: its token, SO and user PINs, and instances.
    Init(init::InitArgs),
    /// The HSM instances of the key store: list, sync, add, remove.
    #[command(subcommand)]
    Hsm(hsm::HsmCommand),
    /// Customer master keys: create, list, describe, enable, disable, rotate, aliases,
    /// deletion and purge.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// The key store as a whole: status, connect, disconnect.
    #[command(subcommand)]
    Keystore(keystore::KeystoreCommand),
    /// The audit log: verify its hash chains, show records.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Benchmark a PKCS#11 module (cks, SoftHSM2, a vendor's), optionally against another.
    Bench(bench::BenchArgs),
    /// Run the main job on a fresh embedded key store, step by step, through the C ABI.
    Demo(demo::DemoArgs),
}

fn main() {
    let cli = Cli::parse();
    if let Some(c) = &cli.config {
        // The library reads the same variable, so both agree on the key store.
        std::env::set_var("CKS_CONFIG", c);
    }
    let result = match &cli.command {
        Command::Init(a) => init::run(cli.config.as_deref(), a),
        Command::Hsm(c) => hsm::run(c),
        Command::Key(c) => key::run(c),
        Command::Keystore(c) => keystore::run(c),
        Command::Audit(c) => match audit::run(c) {
            Ok(code) => std::process::exit(code),
            Err(e) => Err(e),
        },
        Command::Bench(a) => bench::run(a),
        Command::Demo(a) => demo::run(a),
    };
    if let Err(e) = result {
        eprintln!("cks: {e}");
        std::process::exit(1);
    }
}
