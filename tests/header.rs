//! include/cks_pkcs11.h compiles against the system's pkcs11.h and agrees with the
//! constants the module uses.

use cks_pkcs11::token::policy::*;
use std::process::Command;

#[test]
fn vendor_header_compiles_and_matches() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("h.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include "cks_pkcs11.h"
int main(void) {
    printf("%lx %lx %lx %lx %lx %lx %lx %lx\n",
        CKA_CKS_KEY_ID, CKA_CKS_ARN, CKA_CKS_KEY_STATE, CKA_CKS_KEY_SPEC,
        CKA_CKS_KEY_USAGE, CKA_CKS_KEY_VERSION, CKA_CKS_CREATION_DATE, CKA_CKS_DELETION_DATE);
    return 0;
}
"#,
    )
    .unwrap();
    let exe = dir.path().join("h");
    let cc = Command::new("cc")
        .args(["-Wall", "-Werror", "-I/usr/include/p11-kit-1"])
        .arg(format!("-I{root}/include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("cc");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = Command::new(&exe).output().unwrap();
    let expected = [
        CKA_CKS_KEY_ID,
        CKA_CKS_ARN,
        CKA_CKS_KEY_STATE,
        CKA_CKS_KEY_SPEC,
        CKA_CKS_KEY_USAGE,
        CKA_CKS_KEY_VERSION,
        CKA_CKS_CREATION_DATE,
        CKA_CKS_DELETION_DATE,
    ]
    .iter()
    .map(|v| format!("{v:x}"))
    .collect::<Vec<_>>()
    .join(" ");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
}
