//! PINs for the command line: `--pin`, the environment, or a prompt without echo.

use zeroize::Zeroizing;

pub fn get(given: Option<&str>, env: &str, prompt: &str) -> Result<Zeroizing<String>, String> {
    if let Some(p) = given {
        return Ok(Zeroizing::new(p.to_string()));
    }
    if let Ok(p) = std::env::var(env) {
        if !p.is_empty() {
            return Ok(Zeroizing::new(p));
        }
    }
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .map_err(|e| format!("no PIN given (use --pin or {env}) and cannot prompt: {e}"))
}
