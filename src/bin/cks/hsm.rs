//! `cks hsm`: the instances of the key store.

use cks_pkcs11::cluster::metrics;
use cks_pkcs11::config::Config;
use cks_pkcs11::hsm::embedded::PinUser;
use cks_pkcs11::keystore::KeyStore;
use serde::Serialize;

#[derive(clap::Subcommand)]
pub enum HsmCommand {
    /// Each instance: health, keys held, and calls across every process using the store.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Bring every reachable instance up to date (copy missing keys, apply deletions).
    /// Exits non-zero if any instance stays behind.
    Sync {
        /// User PIN (or $CKS_PIN, or a prompt).
        #[arg(long)]
        pin: Option<String>,
    },
}

#[derive(Serialize)]
struct Row {
    id: String,
    kind: String,
    path: String,
    healthy: bool,
    keys: usize,
    in_flight: u64,
    ops: u64,
    errors: u64,
    state: String,
}

fn open() -> Result<(Config, KeyStore), String> {
    let cfg = Config::load().map_err(|e| e.to_string())?;
    let ks = KeyStore::open(&cfg).map_err(|e| e.to_string())?;
    Ok((cfg, ks))
}

pub fn run(cmd: &HsmCommand) -> Result<(), String> {
    match cmd {
        HsmCommand::List { json } => list(*json),
        HsmCommand::Sync { pin } => sync(pin.as_deref()),
    }
}

fn list(json: bool) -> Result<(), String> {
    let (_, ks) = open()?;
    let totals = metrics::read_all(ks.metrics_dir());
    let rows: Vec<Row> = ks
        .cluster
        .members()
        .iter()
        .map(|m| {
            let (healthy, keys, state) = match m.instance() {
                Ok(i) => match (i.probe(), i.is_initialized(), i.key_count()) {
                    (Ok(()), Ok(true), Ok(n)) => (true, n, "ACTIVE".to_string()),
                    (Ok(()), Ok(false), _) => (false, 0, "EMPTY (run cks hsm sync)".into()),
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                        (false, 0, format!("UNAVAILABLE: {}", e.msg))
                    }
                },
                Err(e) => (false, 0, format!("UNAVAILABLE: {}", e.msg)),
            };
            let t = totals.get(&m.id);
            let get = |k: &str| t.and_then(|t| t.get(k)).copied().unwrap_or(0.0) as u64;
            Row {
                id: m.id.clone(),
                kind: m.kind.to_string(),
                path: m.path.display().to_string(),
                healthy,
                keys,
                in_flight: get("cks_hsm_in_flight"),
                ops: get("cks_hsm_ops_total"),
                errors: get("cks_hsm_errors_total"),
                state,
            }
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!(
        "{:<10} {:<9} {:>6} {:>9} {:>10} {:>7}  {:<28} PATH",
        "ID", "KIND", "KEYS", "IN_FLIGHT", "OPS", "ERRORS", "STATE"
    );
    for r in &rows {
        println!(
            "{:<10} {:<9} {:>6} {:>9} {:>10} {:>7}  {:<28} {}",
            r.id, r.kind, r.keys, r.in_flight, r.ops, r.errors, r.state, r.path
        );
    }
    Ok(())
}

fn sync(pin: Option<&str>) -> Result<(), String> {
    let (_, ks) = open()?;
    let pin = crate::pin::get(pin, "CKS_PIN", "User PIN: ")?;
    ks.login(PinUser::User, pin.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut behind = 0;
    for m in ks.cluster.members() {
        eprint!("syncing {} ... ", m.id);
        let r = ks.repair(m);
        match &r.error {
            None => eprintln!(
                "ok ({}{} copied, {} deleted)",
                if r.initialised { "initialised, " } else { "" },
                r.copied,
                r.deleted
            ),
            Some(e) => {
                behind += 1;
                eprintln!("FAILED: {e}");
            }
        }
    }
    ks.logout(&[]);
    if behind > 0 {
        return Err(format!(
            "{behind} instance(s) could not be brought up to date"
        ));
    }
    Ok(())
}
