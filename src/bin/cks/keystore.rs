//! `cks keystore`: the key store as a whole — status, connect, disconnect.

use crate::key::{explain, open};
use serde::Serialize;

#[derive(clap::Subcommand)]
#[command(after_help = "\
A disconnected key store shows no token to any application: C_GetSlotList(tokenPresent)
lists no slot and calls on the token fail with CKR_TOKEN_NOT_PRESENT, within a second, in
every running process. Key material and metadata stay as they are; `connect` restores the
token. Keys show the state Unavailable meanwhile.

Exit codes: 0 success, 1 failed, 2 bad usage.")]
pub enum KeystoreCommand {
    /// Label, id, connection, instances and number of keys.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Make the token absent for every application (key material untouched).
    Disconnect,
    /// Make the token present again.
    Connect,
}

#[derive(Serialize)]
struct Status {
    label: String,
    /// The key store id (the token's serial number); ARNs carry it.
    id: String,
    initialized: bool,
    connected: bool,
    instances_healthy: usize,
    instances_total: usize,
    keys: usize,
    data_dir: String,
}

pub fn run(cmd: &KeystoreCommand) -> Result<(), String> {
    crate::key::default_sigpipe();
    match cmd {
        KeystoreCommand::Status { json } => status(*json),
        KeystoreCommand::Disconnect => {
            let (_, ks) = open()?;
            ks.set_connected(false).map_err(|e| explain(&e))?;
            println!(
                "key store disconnected: applications see no token until `cks keystore connect`"
            );
            Ok(())
        }
        KeystoreCommand::Connect => {
            let (_, ks) = open()?;
            ks.set_connected(true).map_err(|e| explain(&e))?;
            println!("key store connected");
            Ok(())
        }
    }
}

fn status(json: bool) -> Result<(), String> {
    let (cfg, ks) = open()?;
    let record = ks.token_record().map_err(|e| explain(&e))?;
    let members = ks.cluster.members();
    let healthy = members
        .iter()
        .filter(|m| {
            m.instance()
                .and_then(|i| {
                    i.probe()?;
                    i.is_initialized()
                })
                .unwrap_or(false)
        })
        .count();
    let keys = ks.with_cmks(|r| r.len()).map_err(|e| explain(&e))?;
    let s = Status {
        label: record
            .as_ref()
            .map(|r| r.label.clone())
            .unwrap_or_else(|| cfg.keystore.label.clone()),
        id: record
            .as_ref()
            .map(|r| r.serial.clone())
            .unwrap_or_default(),
        initialized: record.is_some(),
        connected: ks.is_connected(),
        instances_healthy: healthy,
        instances_total: members.len(),
        keys,
        data_dir: cfg.data_dir().display().to_string(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!("Label:       {}", s.label);
    println!(
        "Id:          {}",
        if s.initialized {
            s.id.as_str()
        } else {
            "- (not initialised: run `cks init`)"
        }
    );
    println!(
        "Connection:  {}",
        if s.connected {
            "CONNECTED"
        } else {
            "DISCONNECTED (run `cks keystore connect`)"
        }
    );
    println!(
        "Instances:   {}/{} healthy{}",
        s.instances_healthy,
        s.instances_total,
        if s.instances_healthy < s.instances_total {
            " (see `cks hsm list`)"
        } else {
            ""
        }
    );
    println!("Keys:        {}", s.keys);
    println!("Data:        {}", s.data_dir);
    Ok(())
}
