//! `cks hsm`: the instances of the key store — list, sync, add, remove.

use cks_pkcs11::audit::ops;
use cks_pkcs11::cluster::{metrics, Member};
use cks_pkcs11::config::{default_data_dir, Config, HsmConfig};
use cks_pkcs11::hsm::embedded::PinUser;
use cks_pkcs11::hsm::AnyInstance;
use cks_pkcs11::keystore::KeyStore;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;
use zeroize::Zeroizing;

/// How a running process learns of a membership change.
const RESTART_NOTE: &str = "processes already using the key store read the configuration at \
                            C_Initialize: they pick up the change at their next start";

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
    /// Add an instance: append an [[hsm]] entry to the configuration, then bring the new
    /// instance up to date (the keys it lacks are copied in, wrapped under the domain key).
    ///
    /// The entry goes to the configuration file in use (--config, $CKS_CONFIG, or cks.toml
    /// in the data directory); with the built-in default, that file is written with the
    /// default instances plus the new one. An id or directory already in use is refused.
    /// If the new instance cannot be brought up to date, the command exits non-zero and
    /// the entry stays: `cks hsm sync` finishes the job later.
    ///
    /// Processes already using the key store read the configuration at C_Initialize:
    /// they pick up the new instance at their next start.
    Add {
        /// Id of the new instance (letters, digits, '-', '_'); must be unused.
        #[arg(long)]
        id: String,
        /// Kind of instance.
        #[arg(long, value_enum, default_value = "embedded")]
        kind: KindArg,
        /// Directory of an embedded instance (default: <data_dir>/hsm/<ID>); must not
        /// be another instance's.
        #[arg(long, value_name = "DIR")]
        path: Option<PathBuf>,
        /// User PIN (or $CKS_PIN, or a prompt); not needed before `cks init`.
        #[arg(long)]
        pin: Option<String>,
        #[command(flatten)]
        pkcs11: Pkcs11Args,
    },
    /// Remove an instance from the configuration. Refused if it would take away the last
    /// healthy copy of any key (or key metadata), or the last instance.
    ///
    /// Every token object the instance holds must also be on another healthy instance
    /// (run `cks hsm sync` first if one lags behind). The [[hsm]] entry is removed from
    /// the configuration file, the rest of which is kept as it is. The instance's
    /// directory stays on disk unless --force-data.
    ///
    /// Processes already using the key store read the configuration at C_Initialize:
    /// they keep using the instance until their next start.
    Remove {
        /// Id of the instance to remove.
        id: String,
        /// Also delete the instance's directory (default: it is left on disk).
        #[arg(long)]
        force_data: bool,
        /// User PIN (or $CKS_PIN; never prompted for). Optional: with it, the other
        /// instances are first brought up to date, as `cks hsm sync` would.
        #[arg(long)]
        pin: Option<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    /// Software instance in its own directory.
    Embedded,
    /// A token of any PKCS#11 module (a vendor HSM's library, SoftHSM2, p11-kit's client).
    Pkcs11,
}

/// Where a `--kind pkcs11` instance is. Its token's SO PIN is needed once, to install
/// the domain key as a trusted key: put it where --so-pin-env/--so-pin-file say for
/// this command, and take it away afterwards.
#[derive(clap::Args, Default, Clone)]
pub struct Pkcs11Args {
    /// The PKCS#11 module (shared library).
    #[arg(long, value_name = "PATH")]
    module: Option<PathBuf>,
    /// The token, by label.
    #[arg(long)]
    token_label: Option<String>,
    /// The token, by serial number.
    #[arg(long)]
    token_serial: Option<String>,
    /// Environment variable holding the token's user PIN.
    #[arg(long, value_name = "VAR")]
    pin_env: Option<String>,
    /// File holding the token's user PIN.
    #[arg(long, value_name = "FILE")]
    pin_file: Option<PathBuf>,
    /// Environment variable holding the token's SO PIN.
    #[arg(long, value_name = "VAR")]
    so_pin_env: Option<String>,
    /// File holding the token's SO PIN.
    #[arg(long, value_name = "FILE")]
    so_pin_file: Option<PathBuf>,
    /// Let the instance take copies of keys as values over its module's channel when
    /// it cannot unwrap (p11-kit's remoting carries no key-wrap mechanism).
    #[arg(long)]
    accept_plaintext_keys: bool,
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
        HsmCommand::Add {
            id,
            kind,
            path,
            pin,
            pkcs11,
        } => {
            let p = (*kind == KindArg::Pkcs11).then_some(pkcs11);
            if p.is_none() && pkcs11.module.is_some() {
                return Err("--module and the other token options need --kind pkcs11".into());
            }
            add(id, path.as_deref(), p, pin.as_deref())
        }
        HsmCommand::Remove {
            id,
            force_data,
            pin,
        } => remove(id, *force_data, pin.as_deref()),
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
                path: m.location(),
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

// ---- add ------------------------------------------------------------------------------------

fn add(
    id: &str,
    path: Option<&Path>,
    pkcs11: Option<&Pkcs11Args>,
    pin: Option<&str>,
) -> Result<(), String> {
    let file = Config::path();
    let cfg = Config::load().map_err(|e| e.to_string())?;
    if cfg.hsms.iter().any(|h| h.id == id) {
        return Err(format!(
            "refused: {} already has an instance {id:?}",
            describe_source(file.as_deref())
        ));
    }
    let path = match path {
        Some(p) => {
            if p.to_str().is_none() {
                return Err(format!("--path {}: expected a UTF-8 path", p.display()));
            }
            Some(std::path::absolute(p).map_err(|e| format!("--path {}: {e}", p.display()))?)
        }
        None => None,
    };
    if pkcs11.is_some() && path.is_some() {
        return Err("--path is for embedded instances".into());
    }
    let entry = new_entry(id, path.as_deref(), pkcs11)?;
    if pkcs11.is_some() {
        return add_pkcs11(file.as_deref(), &cfg, &entry, pin);
    }
    let dir = cfg.hsm_dir(&entry);
    if let Some(h) = cfg.hsms.iter().find(|h| same_dir(&cfg.hsm_dir(h), &dir)) {
        return Err(format!(
            "refused: {} is already the directory of instance {}",
            dir.display(),
            h.id
        ));
    }
    if same_dir(&dir, &cfg.data_dir()) || dir.join("keystore.db").exists() {
        return Err(format!(
            "refused: {} is a key store's own directory; give the instance a directory of its own",
            dir.display()
        ));
    }
    // The new text, validated (an id the configuration refuses is refused here).
    let edit = edit_config(file.as_deref(), &cfg, Change::Add(&entry))?;

    // Check the PIN before anything changes.
    let pin = checked_pin(&cfg, pin)?;

    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("{}: {e}; nothing changed", dir.display()))?;
    edit.write()?;
    println!(
        "added instance {id} (embedded, {}) to {}",
        dir.display(),
        edit.target.display()
    );
    record_membership(
        ops::INSTANCE_ADD,
        id,
        format!("embedded, {}", dir.display()),
    )?;
    if let Some(note) = &edit.note {
        println!("note: {note}");
    }
    let Some(pin) = pin else {
        println!("the key store is not initialised yet: `cks init` sets up {id} with the others");
        println!("{RESTART_NOTE}");
        return Ok(());
    };
    let result = bring_up_to_date(id, &pin);
    println!("{RESTART_NOTE}");
    result
}

/// An audit record of a membership change, written once the configuration has it.
fn record_membership(op: &'static str, id: &str, what: String) -> Result<(), String> {
    let cfg = Config::load().map_err(|e| e.to_string())?;
    let ks = KeyStore::open(&cfg).map_err(|e| e.to_string())?;
    let mut e = cks_pkcs11::audit::Event::new(op, "CKR_OK");
    e.instance = Some(id.to_string().into());
    e.reason = Some(what);
    ks.audit.record(e).map_err(|e| {
        format!("the configuration changed, but its audit record could not be written: {e}")
    })
}

/// The user PIN, checked before anything changes (`None`: the key store is not
/// initialised yet, so no PIN exists).
fn checked_pin(cfg: &Config, pin: Option<&str>) -> Result<Option<Zeroizing<String>>, String> {
    let ks = KeyStore::open(cfg).map_err(|e| e.to_string())?;
    if ks.token_record().map_err(|e| e.to_string())?.is_none() {
        return Ok(None);
    }
    let pin = crate::pin::get(pin, "CKS_PIN", "User PIN: ")?;
    ks.login(PinUser::User, pin.as_bytes())
        .map_err(|e| format!("{e}; nothing changed"))?;
    ks.logout(&[]);
    Ok(Some(pin))
}

/// `cks hsm add --kind pkcs11`: check that the token answers, write the entry, then
/// bring the instance up to date (which installs the domain key: the ceremony).
fn add_pkcs11(
    file: Option<&Path>,
    cfg: &Config,
    entry: &HsmConfig,
    pin: Option<&str>,
) -> Result<(), String> {
    let edit = edit_config(file, cfg, Change::Add(entry))?;
    // The token must answer (module, token, PIN) before the configuration changes.
    cks_pkcs11::hsm::pkcs11::Pkcs11Instance::open(entry)
        .map_err(|e| format!("{}; nothing changed", e.msg))?;
    let pin = checked_pin(cfg, pin)?;
    edit.write()?;
    let module = entry
        .module
        .as_deref()
        .map(|m| m.display().to_string())
        .unwrap_or_default();
    println!(
        "added instance {} (pkcs11, {module}) to {}",
        entry.id,
        edit.target.display()
    );
    record_membership(ops::INSTANCE_ADD, &entry.id, format!("pkcs11, {module}"))?;
    let Some(pin) = pin else {
        println!(
            "the key store is not initialised yet: `cks init` sets up {} with the others",
            entry.id
        );
        println!("{RESTART_NOTE}");
        return Ok(());
    };
    let result = bring_up_to_date(&entry.id, &pin);
    println!("{RESTART_NOTE}");
    result
}

/// Re-open the key store with the new configuration and repair the new member.
fn bring_up_to_date(id: &str, pin: &Zeroizing<String>) -> Result<(), String> {
    let later = |e: String| {
        format!(
            "{id} is in the configuration but could not be brought up to date: {e}\n\
             the entry stays; `cks hsm sync` finishes the job once that is fixed"
        )
    };
    let cfg = Config::load().map_err(|e| later(e.to_string()))?;
    let ks = KeyStore::open(&cfg).map_err(|e| later(e.to_string()))?;
    let member = ks
        .cluster
        .members()
        .iter()
        .find(|m| m.id == id)
        .cloned()
        .ok_or_else(|| later("it is not in the configuration read back".into()))?;
    let before_init = member
        .instance()
        .and_then(|i| i.is_initialized())
        .unwrap_or(false);
    let before: HashSet<Uuid> = member
        .instance()
        .and_then(|i| i.object_ids())
        .unwrap_or_default()
        .into_iter()
        .collect();
    eprint!("bringing {id} up to date (copying in the keys it lacks, domain-wrapped) ... ");
    // Logging in repairs members that are empty or behind; the explicit repair reports.
    let report = match ks.login(PinUser::User, pin.as_bytes()) {
        Ok(()) => ks.repair(&member),
        Err(e) => {
            eprintln!("FAILED");
            return Err(later(e.to_string()));
        }
    };
    let after = member.instance().and_then(|i| i.object_ids());
    let keys = member.instance().and_then(|i| i.key_count());
    ks.logout(&[]);
    if let Some(e) = report.error {
        eprintln!("FAILED");
        return Err(later(if before_init {
            format!(
                "{e} (its directory already held an initialised instance; one of another \
                 key store cannot join this one)"
            )
        } else {
            e
        }));
    }
    let after: HashSet<Uuid> = after
        .map_err(|e| later(e.to_string()))?
        .into_iter()
        .collect();
    eprintln!(
        "ok ({}{} object(s) copied, {} deleted)",
        if !before_init { "initialised, " } else { "" },
        after.difference(&before).count(),
        before.difference(&after).count()
    );
    let others: Vec<String> = ks
        .cluster
        .members()
        .iter()
        .filter(|m| m.id != id && m.is_healthy())
        .filter_map(|m| {
            let n = m.instance().and_then(|i| i.key_count()).ok()?;
            Some(format!("{} {n}", m.id))
        })
        .collect();
    println!(
        "{id} is up to date: it holds {} key(s) (other healthy instances: {})",
        keys.map_err(|e| later(e.to_string()))?,
        if others.is_empty() {
            "none".to_string()
        } else {
            others.join(", ")
        }
    );
    Ok(())
}

// ---- remove ---------------------------------------------------------------------------------

fn remove(id: &str, force_data: bool, pin: Option<&str>) -> Result<(), String> {
    let file = Config::path();
    let cfg = Config::load().map_err(|e| e.to_string())?;
    let Some(entry) = cfg.hsms.iter().find(|h| h.id == id).cloned() else {
        return Err(format!(
            "{} has no instance {id:?} (it has: {})",
            describe_source(file.as_deref()),
            cfg.hsms
                .iter()
                .map(|h| h.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if cfg.hsms.len() == 1 {
        return Err(format!(
            "refused: {id} is the last instance of the key store; add another one first \
             (`cks hsm add`)"
        ));
    }
    if let Some(n) = cfg.keystore.min_replicas {
        if n >= cfg.hsms.len() {
            return Err(format!(
                "refused: keystore.min_replicas = {n} needs {n} instances; lower it in {} first",
                describe_source(file.as_deref())
            ));
        }
    }
    if force_data && entry.kind == cks_pkcs11::config::HsmKind::Pkcs11 {
        return Err(format!(
            "--force-data is for embedded instances; {id}'s objects stay on its token \
             (labels cks:*, cks-*), to be removed with the token's own tools"
        ));
    }
    let dir = cfg.hsm_dir(&entry);
    if force_data {
        check_deletable(&cfg, &entry, &dir)?;
    }
    let edit = edit_config(file.as_deref(), &cfg, Change::Remove(id))?;

    let ks = KeyStore::open(&cfg).map_err(|e| e.to_string())?;
    let pin = match pin {
        Some(p) => Some(Zeroizing::new(p.to_string())),
        None => std::env::var("CKS_PIN")
            .ok()
            .filter(|p| !p.is_empty())
            .map(Zeroizing::new),
    };
    if let Some(pin) = &pin {
        // The other instances are brought up to date first: that can make the removal
        // possible.
        ks.login(PinUser::User, pin.as_bytes())
            .map_err(|e| format!("{e}; nothing changed"))?;
        for m in ks.cluster.members().iter().filter(|m| m.id != id) {
            if reachable(m).is_err() {
                continue;
            }
            eprint!("syncing {} ... ", m.id);
            let r = ks.repair(m);
            match &r.error {
                None => eprintln!("ok ({} copied, {} deleted)", r.copied, r.deleted),
                Some(e) => eprintln!("FAILED: {e}"),
            }
        }
    }
    let checked = check_copies(&ks, id);
    ks.logout(&[]);
    let readable = checked?;
    drop(ks);
    if force_data && !readable {
        return Err(format!(
            "refused: {id} cannot be read, so what it holds cannot be checked against the \
             other instances; --force-data would delete it unchecked. Remove it without \
             --force-data (its directory {} stays) and delete the directory yourself if \
             nothing in it is needed",
            dir.display()
        ));
    }

    edit.write()?;
    println!("removed instance {id} from {}", edit.target.display());
    record_membership(
        ops::INSTANCE_REMOVE,
        id,
        format!("from {}", edit.target.display()),
    )?;
    if let Some(note) = &edit.note {
        println!("note: {note}");
    }
    if force_data {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| {
                format!(
                    "{id} is no longer in the configuration, but its directory {} could not \
                     be deleted: {e}",
                    dir.display()
                )
            })?;
            println!("deleted its directory {} (--force-data)", dir.display());
        } else {
            println!("its directory {} did not exist", dir.display());
        }
    } else {
        println!(
            "its directory {} is left on disk (delete it yourself, or remove with --force-data)",
            dir.display()
        );
    }
    println!("{RESTART_NOTE}");
    Ok(())
}

/// The instance, if it answers.
fn reachable(m: &Member) -> Result<Arc<AnyInstance>, String> {
    let i = m.instance().map_err(|e| e.msg.to_string())?;
    i.probe().map_err(|e| e.msg.to_string())?;
    Ok(i)
}

/// Refuse if `id` holds a token object, or the newest metadata of a key, that no other
/// healthy instance holds, or if no other healthy, initialised instance would remain.
/// Returns whether `id` could be read at all.
fn check_copies(ks: &KeyStore, id: &str) -> Result<bool, String> {
    let members = ks.cluster.members();
    let target = members
        .iter()
        .find(|m| m.id == id)
        .ok_or_else(|| format!("no instance {id}"))?;
    let initialised = ks.token_record().map_err(|e| e.to_string())?.is_some();
    let others: Vec<(String, Arc<AnyInstance>)> = members
        .iter()
        .filter(|m| m.id != id && m.is_healthy())
        .filter_map(|m| Some((m.id.clone(), reachable(m).ok()?)))
        .filter(|(_, i)| !initialised || i.is_initialized().unwrap_or(false))
        .collect();
    let names = |v: &[(String, Arc<AnyInstance>)]| {
        v.iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let held = reachable(target).and_then(|i| {
        let objects = i.object_ids().map_err(|e| e.msg.to_string())?;
        let cmks = i.load_cmks().map_err(|e| e.msg.to_string())?;
        Ok((objects, cmks))
    });
    let no_other = || {
        Err(format!(
            "refused: removing {id} would leave no healthy instance (none of the others \
             answers); bring one back (`cks hsm sync`) or add one (`cks hsm add`) first"
        ))
    };
    let (objects, cmks) = match held {
        Ok(x) => x,
        Err(_) if initialised && others.is_empty() => return no_other(),
        Err(e) => {
            println!("{id} cannot be read ({e}): it holds no healthy copy of any key");
            return Ok(false);
        }
    };
    let tombstones: HashSet<Uuid> = ks
        .tombstones()
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    let live: Vec<Uuid> = objects
        .into_iter()
        .filter(|u| !tombstones.contains(u))
        .collect();
    let only_here: Vec<Uuid> = live
        .iter()
        .copied()
        .filter(|u| {
            !others
                .iter()
                .any(|(_, i)| i.has_object(*u).unwrap_or(false))
        })
        .collect();
    let mut newest: HashMap<Uuid, u64> = HashMap::new();
    for (_, i) in &others {
        for (k, g, _) in i.load_cmks().unwrap_or_default() {
            let e = newest.entry(k).or_insert(g);
            *e = (*e).max(g);
        }
    }
    let meta_only_here: Vec<Uuid> = cmks
        .iter()
        .filter(|(k, g, _)| !tombstones.contains(k) && newest.get(k).is_none_or(|n| n < g))
        .map(|(k, _, _)| *k)
        .collect();
    if !only_here.is_empty() || !meta_only_here.is_empty() {
        let list = |v: &[Uuid]| {
            let mut s: Vec<String> = v.iter().take(5).map(Uuid::to_string).collect();
            if v.len() > 5 {
                s.push(format!("and {} more", v.len() - 5));
            }
            s.join(", ")
        };
        let mut what = Vec::new();
        if !only_here.is_empty() {
            what.push(format!(
                "{} token object(s) no other healthy instance holds ({})",
                only_here.len(),
                list(&only_here)
            ));
        }
        if !meta_only_here.is_empty() {
            what.push(format!(
                "the newest metadata of {} key(s) ({})",
                meta_only_here.len(),
                list(&meta_only_here)
            ));
        }
        return Err(format!(
            "refused: {id} holds the last healthy copy of {} (healthy instances besides it: \
             {}). Bring another instance up to date first (`cks hsm sync`, or `cks hsm \
             add`), then remove {id}",
            what.join(" and "),
            if others.is_empty() {
                "none".to_string()
            } else {
                names(&others)
            }
        ));
    }
    if initialised && others.is_empty() {
        return no_other();
    }
    println!(
        "{id}: every token object it holds ({}) is also on a healthy instance ({})",
        live.len(),
        names(&others)
    );
    Ok(true)
}

/// `--force-data` deletes an instance's directory, never more than that.
fn check_deletable(cfg: &Config, entry: &HsmConfig, dir: &Path) -> Result<(), String> {
    let refuse = |why: String| {
        Err(format!(
            "refused: --force-data would delete {} ({why}); remove without --force-data",
            dir.display()
        ))
    };
    let d = norm(dir);
    if dir.join("keystore.db").exists() || norm(&cfg.data_dir()).starts_with(&d) {
        return refuse("it holds the key store itself".into());
    }
    for h in cfg.hsms.iter().filter(|h| h.id != entry.id) {
        if norm(&cfg.hsm_dir(h)).starts_with(&d) {
            return refuse(format!("it holds instance {}", h.id));
        }
    }
    if dir.exists() && !dir.join("instance.db").exists() {
        return refuse("it does not look like an instance directory: no instance.db".into());
    }
    Ok(())
}

// ---- the configuration file -----------------------------------------------------------------

enum Change<'a> {
    Add(&'a HsmConfig),
    Remove(&'a str),
}

/// A validated new text of the configuration file.
struct Edit {
    target: PathBuf,
    text: String,
    /// Said to the user: a file written afresh, or comments lost.
    note: Option<String>,
}

impl Edit {
    /// Replace the file in one step (write a temporary file, then rename it).
    fn write(&self) -> Result<(), String> {
        let real = std::fs::canonicalize(&self.target).unwrap_or_else(|_| self.target.clone());
        let dir = real.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cks.toml".into());
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| {
            std::fs::write(&tmp, &self.text)?;
            if let Ok(m) = std::fs::metadata(&real) {
                std::fs::set_permissions(&tmp, m.permissions())?;
            }
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &real)
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write {}: {e}; nothing changed", real.display())
        })
    }
}

fn describe_source(file: Option<&Path>) -> String {
    match file {
        Some(f) => format!("the configuration {}", f.display()),
        None => "the built-in default configuration".into(),
    }
}

/// What identifies an [[hsm]] entry, to check an edited file.
type Sig = (String, Option<PathBuf>, Option<PathBuf>);

fn sig(h: &HsmConfig) -> Sig {
    (h.id.clone(), h.path.clone(), h.fault_file.clone())
}

fn edit_config(file: Option<&Path>, cfg: &Config, change: Change) -> Result<Edit, String> {
    let mut expected: Vec<HsmConfig> = cfg.hsms.clone();
    match &change {
        Change::Add(h) => expected.push((*h).clone()),
        Change::Remove(id) => expected.retain(|h| h.id != *id),
    }
    let target = file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_data_dir().join("cks.toml"));
    let check = |text: &str| -> Result<(), String> {
        let parsed = Config::parse(text, &target).map_err(|e| e.to_string())?;
        let got: Vec<Sig> = parsed.hsms.iter().map(sig).collect();
        let want: Vec<Sig> = expected.iter().map(sig).collect();
        if got != want {
            return Err(format!(
                "editing {} went wrong (instances {:?}, expected {:?}); nothing changed",
                target.display(),
                got.iter().map(|s| &s.0).collect::<Vec<_>>(),
                want.iter().map(|s| &s.0).collect::<Vec<_>>()
            ));
        }
        Ok(())
    };
    let Some(file) = file else {
        let text = full_text(cfg, &expected);
        check(&text)?;
        return Ok(Edit {
            note: Some(format!(
                "there was no configuration file (the built-in default); wrote {} with \
                 instances {}",
                target.display(),
                expected
                    .iter()
                    .map(|h| h.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            target,
            text,
        });
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    // In place, keeping everything else (comments included).
    let in_place = match &change {
        Change::Add(h) => Some(append_entry(&text, h)),
        Change::Remove(id) => remove_entry(&text, id),
    };
    if let Some(t) = in_place {
        if check(&t).is_ok() {
            return Ok(Edit {
                target,
                text: t,
                note: None,
            });
        }
    }
    // A layout the line-based edit does not follow: edit the parsed document instead.
    let t = edit_parsed(&text, &change).map_err(|e| format!("{}: {e}", file.display()))?;
    check(&t)?;
    Ok(Edit {
        target,
        text: t,
        note: Some(format!(
            "{} was rewritten from its parsed form: its comments and layout were not kept",
            file.display()
        )),
    })
}

/// A new embedded instance's entry (fields not given take their defaults).
fn new_entry(
    id: &str,
    path: Option<&Path>,
    pkcs11: Option<&Pkcs11Args>,
) -> Result<HsmConfig, String> {
    let mut t = toml::Table::new();
    t.insert("id".into(), toml::Value::String(id.into()));
    let kind = if pkcs11.is_some() {
        "pkcs11"
    } else {
        "embedded"
    };
    t.insert("kind".into(), toml::Value::String(kind.into()));
    if let Some(p) = pkcs11 {
        let s = |v: &str| toml::Value::String(v.to_string());
        let f = |v: &Path| toml::Value::String(v.to_string_lossy().into_owned());
        let module = p.module.as_deref().ok_or("--kind pkcs11 needs --module")?;
        t.insert("module".into(), f(module));
        for (k, v) in [
            ("token_label", p.token_label.as_deref().map(s)),
            ("token_serial", p.token_serial.as_deref().map(s)),
            ("pin_env", p.pin_env.as_deref().map(s)),
            ("pin_file", p.pin_file.as_deref().map(f)),
            ("so_pin_env", p.so_pin_env.as_deref().map(s)),
            ("so_pin_file", p.so_pin_file.as_deref().map(f)),
        ] {
            if let Some(v) = v {
                t.insert(k.into(), v);
            }
        }
        if p.accept_plaintext_keys {
            t.insert("accept_plaintext_keys".into(), toml::Value::Boolean(true));
        }
    }
    if let Some(p) = path {
        t.insert(
            "path".into(),
            toml::Value::String(p.to_string_lossy().into_owned()),
        );
    }
    toml::Value::Table(t)
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn path_str(p: &Path) -> String {
    toml_str(&p.to_string_lossy())
}

fn entry_text(h: &HsmConfig) -> String {
    let kind = match h.kind {
        cks_pkcs11::config::HsmKind::Embedded => "embedded",
        cks_pkcs11::config::HsmKind::Pkcs11 => "pkcs11",
    };
    let mut t = format!("\n[[hsm]]\nid = {}\nkind = \"{kind}\"\n", toml_str(&h.id));
    if let Some(p) = &h.path {
        t.push_str(&format!("path = {}\n", path_str(p)));
    }
    for (k, v) in [
        ("module", h.module.as_deref().map(path_str)),
        ("token_label", h.token_label.as_deref().map(toml_str)),
        ("token_serial", h.token_serial.as_deref().map(toml_str)),
        ("pin_env", h.pin_env.as_deref().map(toml_str)),
        ("pin_file", h.pin_file.as_deref().map(path_str)),
        ("so_pin_env", h.so_pin_env.as_deref().map(toml_str)),
        ("so_pin_file", h.so_pin_file.as_deref().map(path_str)),
    ] {
        if let Some(v) = v {
            t.push_str(&format!("{k} = {v}\n"));
        }
    }
    if h.accept_plaintext_keys == Some(true) {
        t.push_str("accept_plaintext_keys = true\n");
    }
    if let Some(p) = &h.fault_file {
        t.push_str(&format!("fault_file = {}\n", path_str(p)));
    }
    t
}

/// A configuration file for what was the built-in default, with `hsms`.
fn full_text(cfg: &Config, hsms: &[HsmConfig]) -> String {
    let mut t = format!(
        "# cks key store: the built-in default configuration, written by `cks hsm`\n\
         [keystore]\nlabel = {}\ndata_dir = {}\n",
        toml_str(&cfg.keystore.label),
        path_str(&cfg.data_dir())
    );
    for h in hsms {
        t.push_str(&entry_text(h));
    }
    t
}

fn append_entry(text: &str, h: &HsmConfig) -> String {
    let mut t = text.to_string();
    if !t.is_empty() && !t.ends_with('\n') {
        t.push('\n');
    }
    t.push_str(&entry_text(h));
    t
}

/// Remove the `[[hsm]]` table whose id is `id`, line by line: from its header to its
/// last key (comments and blank lines after it stay, as they may belong to what follows).
/// `None` if no such table was found this way.
fn remove_entry(text: &str, id: &str) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let is_header = |l: &str| l.trim_start().starts_with('[');
    let is_hsm_header = |l: &str| {
        let t: String = l
            .split('#')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        t == "[[hsm]]"
    };
    let blank_or_comment = |l: &str| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    };
    let mut i = 0;
    while i < lines.len() {
        if !is_hsm_header(lines[i]) {
            i += 1;
            continue;
        }
        let end = (i + 1..lines.len())
            .find(|&j| is_header(lines[j]))
            .unwrap_or(lines.len());
        let table: toml::Table = lines[i..end].concat().parse().ok()?;
        let this = table.get("hsm")?.as_array()?.first()?.get("id")?.as_str()?;
        if this == id {
            let mut last = end;
            while last > i + 1 && blank_or_comment(lines[last - 1]) {
                last -= 1;
            }
            // Comment lines right above the header describe it.
            let mut start = i;
            while start > 0 && lines[start - 1].trim_start().starts_with('#') {
                start -= 1;
            }
            if start > 0 && lines[start - 1].trim().is_empty() {
                start -= 1;
            }
            return Some(lines[..start].concat() + &lines[last..].concat());
        }
        i = end;
    }
    None
}

/// The change made on the parsed document (comments and layout are lost).
fn edit_parsed(text: &str, change: &Change) -> Result<String, String> {
    let mut doc: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let hsms = doc
        .entry("hsm")
        .or_insert_with(|| toml::Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or("`hsm` is not an array of tables")?;
    match change {
        Change::Add(h) => {
            let mut t = toml::Table::new();
            t.insert("id".into(), toml::Value::String(h.id.clone()));
            t.insert("kind".into(), toml::Value::String("embedded".into()));
            if let Some(p) = &h.path {
                t.insert(
                    "path".into(),
                    toml::Value::String(p.to_string_lossy().into_owned()),
                );
            }
            hsms.push(toml::Value::Table(t));
        }
        Change::Remove(id) => {
            hsms.retain(|v| v.get("id").and_then(|v| v.as_str()) != Some(id));
        }
    }
    toml::to_string(&doc).map_err(|e| e.to_string())
}

/// The same directory? (Resolved where it exists, made absolute where it does not.)
fn same_dir(a: &Path, b: &Path) -> bool {
    norm(a) == norm(b)
}

fn norm(p: &Path) -> PathBuf {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> HsmConfig {
        new_entry(id, None, None).unwrap()
    }

    const TEXT: &str = "# my key store\n[keystore]\nlabel = \"x\"\n\n[[hsm]]\nid = \"a\"\n\
                        kind = \"embedded\"\n\n# the second one\n[[hsm]]\nid = \"b\"\n\
                        kind = \"embedded\" # inline\n\n[kdf]\nmemory_kib = 64\n";

    #[test]
    fn remove_keeps_the_rest() {
        let t = remove_entry(TEXT, "a").unwrap();
        assert_eq!(
            t,
            "# my key store\n[keystore]\nlabel = \"x\"\n\n# the second one\n[[hsm]]\n\
             id = \"b\"\nkind = \"embedded\" # inline\n\n[kdf]\nmemory_kib = 64\n"
        );
        let t = remove_entry(TEXT, "b").unwrap();
        assert_eq!(
            t,
            "# my key store\n[keystore]\nlabel = \"x\"\n\n[[hsm]]\nid = \"a\"\n\
             kind = \"embedded\"\n\n[kdf]\nmemory_kib = 64\n"
        );
        assert!(remove_entry(TEXT, "c").is_none());
    }

    #[test]
    fn append_and_parsed_edit() {
        let t = append_entry(TEXT, &entry("c"));
        let cfg = Config::parse(&t, Path::new("c.toml")).unwrap();
        assert_eq!(cfg.hsms.len(), 3);
        assert_eq!(cfg.kdf.memory_kib, 64);
        let t = edit_parsed(
            "hsm = [{ id = \"a\", kind = \"embedded\" }, { id = \"b\", kind = \"embedded\" }]\n",
            &Change::Remove("a"),
        )
        .unwrap();
        let cfg = Config::parse(&t, Path::new("c.toml")).unwrap();
        assert_eq!(cfg.hsms.len(), 1);
        assert_eq!(cfg.hsms[0].id, "b");
    }
}
