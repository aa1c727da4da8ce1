/*
 * cks_pkcs11.h - vendor-defined constants of the cks PKCS#11 module.
 *
 * Include after, or instead of, the standard PKCS#11 header. On Debian/Ubuntu the
 * standard header comes with p11-kit (libp11-kit-dev):
 *     cc -I/usr/include/p11-kit-1 -Iinclude app.c
 *
 * Vendor attributes describe a key as a customer master key (CMK). They are read-only
 * and readable with C_GetAttributeValue on every key object of the token.
 */
#ifndef CKS_PKCS11_H
#define CKS_PKCS11_H

#include <p11-kit/pkcs11.h>

/* Base of cks's vendor range: CKA_VENDOR_DEFINED | 'C' 'K' << 16. */
#define CKA_CKS_BASE            (CKA_VENDOR_DEFINED | 0x434B0000UL)

/* The CMK's key id, a UUID as text (e.g. "1b4e28ba-2fa1-11d2-883f-0016d3cca427"). */
#define CKA_CKS_KEY_ID          (CKA_CKS_BASE + 0x01UL)
/* The CMK's ARN-like name, text. */
#define CKA_CKS_ARN             (CKA_CKS_BASE + 0x02UL)
/* Key state, a CK_ULONG: one of CKS_KEY_STATE_*. */
#define CKA_CKS_KEY_STATE       (CKA_CKS_BASE + 0x03UL)
/* Key spec, text: "AES_256", "ECC_NIST_P256", "ECC_NIST_P384", "RSA_2048",
 * "RSA_3072", "RSA_4096", "HMAC_256". */
#define CKA_CKS_KEY_SPEC        (CKA_CKS_BASE + 0x04UL)
/* Key usage, text: "ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC", "WRAP_UNWRAP". */
#define CKA_CKS_KEY_USAGE       (CKA_CKS_BASE + 0x05UL)
/* Version of the key material this object holds, a CK_ULONG (1 for the first). */
#define CKA_CKS_KEY_VERSION     (CKA_CKS_BASE + 0x06UL)
/* Creation and scheduled deletion dates, text (RFC 3339, UTC); deletion is empty
 * unless a deletion is scheduled. */
#define CKA_CKS_CREATION_DATE   (CKA_CKS_BASE + 0x07UL)
#define CKA_CKS_DELETION_DATE   (CKA_CKS_BASE + 0x08UL)

/* Vendor mechanism: KMS-style envelope encryption with a token AES key (a CMK).
 * C_Encrypt uses the key's current version; the ciphertext names it:
 *   "CKS1" | version (4 bytes, big-endian) | key id (16 bytes) | IV (12) | ciphertext | tag (16)
 * C_Decrypt reads the version from the ciphertext, so data encrypted before a rotation
 * decrypts with no bookkeeping. The optional mechanism parameter is AAD (any bytes). */
#define CKM_CKS_ENVELOPE        (CKM_VENDOR_DEFINED | 0x434B0001UL)

/* Values of CKA_CKS_KEY_STATE. */
#define CKS_KEY_STATE_ENABLED           0UL
#define CKS_KEY_STATE_DISABLED          1UL
#define CKS_KEY_STATE_PENDING_DELETION  2UL
#define CKS_KEY_STATE_UNAVAILABLE       3UL

#endif /* CKS_PKCS11_H */
