//! `cks init`: create the key store, as `pkcs11-tool --init-token` and `--init-pin` would.

use cks_pkcs11::config::{default_data_dir, Config};
use cks_pkcs11::hsm::embedded::PinUser;
use cks_pkcs11::keystore::KeyStore;
use std::path::Path;

#[derive(clap::Args)]
pub struct InitArgs {
    /// Token label (up to 32 bytes).
    #[arg(long, default_value = "cks")]
    label: String,
    /// Security officer PIN (or $CKS_SO_PIN, or a prompt).
    #[arg(long)]
    so_pin: Option<String>,
    /// User PIN (or $CKS_PIN, or a prompt).
    #[arg(long)]
    pin: Option<String>,
    /// Number of embedded HSM instances. Writes a configuration file (the --config FILE,
    /// else cks.toml in the data directory) unless it exists already.
    #[arg(long)]
    hsms: Option<usize>,
}

pub fn run(config: Option<&Path>, a: &InitArgs) -> Result<(), String> {
    let path = config.map(Path::to_path_buf).or_else(Config::path);
    if let Some(n) = a.hsms {
        if n == 0 || n > 16 {
            return Err("--hsms: expected 1 to 16".into());
        }
        let target = path
            .clone()
            .unwrap_or_else(|| default_data_dir().join("cks.toml"));
        if target.exists() {
            let existing = Config::from_file(&target).map_err(|e| e.to_string())?;
            if existing.hsms.len() != n {
                return Err(format!(
                    "{} already lists {} instances; edit it or use `cks hsm add`",
                    target.display(),
                    existing.hsms.len()
                ));
            }
        } else {
            write_config(&target, &a.label, n)?;
            println!("wrote {}", target.display());
        }
        std::env::set_var("CKS_CONFIG", &target);
    }
    let cfg = Config::load().map_err(|e| e.to_string())?;
    let so_pin = crate::pin::get(a.so_pin.as_deref(), "CKS_SO_PIN", "SO PIN: ")?;
    let pin = crate::pin::get(a.pin.as_deref(), "CKS_PIN", "User PIN: ")?;
    let ks = KeyStore::open(&cfg).map_err(|e| e.to_string())?;
    ks.init_token(so_pin.as_bytes(), &a.label)
        .map_err(|e| e.to_string())?;
    ks.login(PinUser::So, so_pin.as_bytes())
        .map_err(|e| e.to_string())?;
    ks.init_user_pin(pin.as_bytes())
        .map_err(|e| e.to_string())?;
    ks.logout(&[]);
    let mut failed = 0;
    for m in ks.cluster.members() {
        if m.is_healthy() {
            println!("  {:<12} {:<9} ready", m.id, m.kind);
        } else {
            failed += 1;
            println!(
                "  {:<12} {:<9} NOT READY: {}",
                m.id,
                m.kind,
                m.trouble().unwrap_or_else(|| "unavailable".into())
            );
        }
    }
    println!(
        "key store \"{}\" initialised in {} with {} instance(s){}",
        a.label,
        cfg.data_dir().display(),
        cfg.hsms.len(),
        if failed > 0 {
            format!("; {failed} not ready: fix them, then run `cks hsm sync`")
        } else {
            String::new()
        }
    );
    Ok(())
}

fn write_config(target: &Path, label: &str, n: usize) -> Result<(), String> {
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let data_dir = if target.parent() == Some(default_data_dir().as_path()) {
        default_data_dir()
    } else {
        dir.join(format!("{label}-data"))
    };
    let mut text = format!(
        "# cks key store, written by `cks init`\n[keystore]\nlabel = \"{label}\"\ndata_dir = \"{}\"\n",
        data_dir.display()
    );
    for i in 1..=n {
        text.push_str(&format!(
            "\n[[hsm]]\nid = \"hsm{i}\"\nkind = \"embedded\"\n"
        ));
    }
    std::fs::write(target, text).map_err(|e| format!("{}: {e}", target.display()))
}
