//! The `op` names of audit records, so that every caller spells them the same way.
//! `cks audit show --op NAME` matches these exactly.

// Key use: the `C_*Init` that binds a key, and the operation's completion.
pub const ENCRYPT_INIT: &str = "encrypt_init";
pub const ENCRYPT: &str = "encrypt";
pub const DECRYPT_INIT: &str = "decrypt_init";
pub const DECRYPT: &str = "decrypt";
pub const SIGN_INIT: &str = "sign_init";
/// Also MAC generation (HMAC, CMAC): the mechanism tells them apart.
pub const SIGN: &str = "sign";
pub const VERIFY_INIT: &str = "verify_init";
/// Also MAC verification.
pub const VERIFY: &str = "verify";
pub const WRAP: &str = "wrap";
pub const UNWRAP: &str = "unwrap";
pub const DERIVE: &str = "derive";

// Administrative actions.
pub const LOGIN: &str = "login";
pub const LOGOUT: &str = "logout";
pub const INIT_PIN: &str = "init_pin";
pub const SET_PIN: &str = "set_pin";
pub const KEY_CREATE: &str = "key_create";
/// A key's state changed (enabled, disabled, pending deletion...): `reason` says to what.
pub const KEY_STATE: &str = "key_state";
pub const KEY_ROTATE: &str = "key_rotate";
pub const KEY_DELETE: &str = "key_delete";
/// Key material destroyed on every instance; `detail` carries the proof.
pub const PURGE: &str = "purge";
pub const CONNECT: &str = "connect";
pub const DISCONNECT: &str = "disconnect";
pub const INSTANCE_HEALTH: &str = "instance_health";
pub const INSTANCE_REPAIR: &str = "instance_repair";
/// An instance joined or left the key store's configuration (`cks hsm add|remove`).
pub const INSTANCE_ADD: &str = "instance_add";
pub const INSTANCE_REMOVE: &str = "instance_remove";

/// Written by the log itself after records were lost (batch mode, write failures).
pub const AUDIT_GAP: &str = "audit_gap";

/// Every name above.
pub const ALL: &[&str] = &[
    ENCRYPT_INIT,
    ENCRYPT,
    DECRYPT_INIT,
    DECRYPT,
    SIGN_INIT,
    SIGN,
    VERIFY_INIT,
    VERIFY,
    WRAP,
    UNWRAP,
    DERIVE,
    LOGIN,
    LOGOUT,
    INIT_PIN,
    SET_PIN,
    KEY_CREATE,
    KEY_STATE,
    KEY_ROTATE,
    KEY_DELETE,
    PURGE,
    CONNECT,
    DISCONNECT,
    INSTANCE_HEALTH,
    INSTANCE_REPAIR,
    INSTANCE_ADD,
    INSTANCE_REMOVE,
    AUDIT_GAP,
];
