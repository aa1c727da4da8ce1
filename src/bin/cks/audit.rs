//! `cks audit`: check and read the key store's audit log.

use cks_pkcs11::audit;
use cks_pkcs11::config::Config;
use cks_pkcs11::keystore::KeyStore;

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Check every segment and hash chain. Exit 0 when all is intact, 1 otherwise,
    /// naming the file and line of each problem.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Print records, oldest first.
    Show {
        /// Only uses of this key (id, ARN or alias).
        #[arg(long)]
        key: Option<String>,
        /// Only records at or after this time (RFC 3339, or YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Only this operation (sign, encrypt, login, key_state, purge, …).
        #[arg(long)]
        op: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// Returns the exit code.
pub fn run(cmd: &AuditCommand) -> Result<i32, String> {
    let cfg = Config::load().map_err(|e| e.to_string())?;
    let dir = cfg.audit_dir();
    Ok(match cmd {
        AuditCommand::Verify { json } => audit::verify_command(&dir, *json),
        AuditCommand::Show {
            key,
            since,
            op,
            json,
        } => {
            // An alias or ARN names a key id; the log records key ids.
            let key_id = match key {
                Some(k) => Some(resolve(&cfg, k)?),
                None => None,
            };
            audit::show_command(
                &dir,
                key_id.as_deref(),
                since.as_deref(),
                op.as_deref(),
                *json,
            )
        }
    })
}

fn resolve(cfg: &Config, name: &str) -> Result<String, String> {
    if uuid::Uuid::parse_str(name).is_ok() {
        return Ok(name.to_string());
    }
    let ks = KeyStore::open(cfg).map_err(|e| e.to_string())?;
    ks.resolve(name)
        .map(|c| c.id.to_string())
        .map_err(|e| e.msg.to_string())
}
