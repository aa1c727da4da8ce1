/*
 * TDE (Oracle-style) conformance sequence against a PKCS#11 module, through the C ABI.
 *
 *   tde run    MODULE PIN STATE [THREADS] [TABLES] [ITERATIONS]
 *   tde verify MODULE PIN STATE NAME
 *
 * "run": generates a master key ORACLE.TDE.HSM.MK.<hex id> (AES-256, token, sensitive,
 * non-extractable) in the token, finds it again by label with C_FindObjects, encrypts
 * TABLES random 32-byte table keys under it with CKM_AES_CBC_PAD and CKM_AES_GCM, has
 * THREADS threads (one session each) decrypt / re-encrypt them in many small calls, then
 * rekeys (new master key, every table key re-encrypted) and writes STATE.
 * "verify": another process finds the current master key by its label (from STATE) and
 * decrypts every table key.
 *
 * Output: "PASS tde/<name>" / "FAIL tde/<name>: <reason>" lines.
 * Build: gcc -O2 -Wall -I/usr/include/p11-kit-1 -o tde tde.c -ldl -lpthread
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define MAX_TABLES 4096
#define MK_PREFIX "ORACLE.TDE.HSM.MK."

struct table {
    char name[32];
    unsigned char key[32];        /* the plaintext table key (kept to check results) */
    unsigned char cbc_iv[16];
    unsigned char cbc_ct[64];
    CK_ULONG cbc_len;
    unsigned char gcm_iv[12];
    unsigned char gcm_ct[64];
    CK_ULONG gcm_len;
};

struct state {
    char mk_label[128];
    char old_mk_label[128];
    int ntables;
    struct table t[MAX_TABLES];
};

static CK_FUNCTION_LIST_PTR F;
static CK_SLOT_ID SLOT;
static const char *PIN;
static const char *PREFIX = "tde";
static int npass, nfail;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void pass(const char *name)
{
    pthread_mutex_lock(&out_lock);
    npass++;
    printf("PASS %s/%s\n", PREFIX, name);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
}

static void fail(const char *name, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&out_lock);
    nfail++;
    printf("FAIL %s/%s: ", PREFIX, name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
}

static const char *rvname(CK_RV rv)
{
    switch (rv) {
#define R(x) case x: return #x;
    R(CKR_OK) R(CKR_HOST_MEMORY) R(CKR_SLOT_ID_INVALID) R(CKR_GENERAL_ERROR) R(CKR_FUNCTION_FAILED)
    R(CKR_ARGUMENTS_BAD) R(CKR_ATTRIBUTE_READ_ONLY) R(CKR_ATTRIBUTE_SENSITIVE)
    R(CKR_ATTRIBUTE_TYPE_INVALID) R(CKR_ATTRIBUTE_VALUE_INVALID) R(CKR_DATA_INVALID) R(CKR_DATA_LEN_RANGE)
    R(CKR_DEVICE_ERROR) R(CKR_ENCRYPTED_DATA_INVALID) R(CKR_ENCRYPTED_DATA_LEN_RANGE)
    R(CKR_FUNCTION_NOT_SUPPORTED) R(CKR_KEY_HANDLE_INVALID) R(CKR_KEY_SIZE_RANGE) R(CKR_KEY_TYPE_INCONSISTENT)
    R(CKR_KEY_FUNCTION_NOT_PERMITTED) R(CKR_KEY_NOT_WRAPPABLE) R(CKR_KEY_UNEXTRACTABLE)
    R(CKR_MECHANISM_INVALID) R(CKR_MECHANISM_PARAM_INVALID) R(CKR_OBJECT_HANDLE_INVALID)
    R(CKR_OPERATION_ACTIVE) R(CKR_OPERATION_NOT_INITIALIZED) R(CKR_PIN_INCORRECT) R(CKR_PIN_LOCKED)
    R(CKR_SESSION_HANDLE_INVALID) R(CKR_SESSION_READ_ONLY) R(CKR_TEMPLATE_INCOMPLETE)
    R(CKR_TEMPLATE_INCONSISTENT) R(CKR_TOKEN_NOT_PRESENT) R(CKR_USER_ALREADY_LOGGED_IN)
    R(CKR_USER_NOT_LOGGED_IN) R(CKR_WRAPPED_KEY_INVALID) R(CKR_WRAPPING_KEY_HANDLE_INVALID)
    R(CKR_BUFFER_TOO_SMALL) R(CKR_CRYPTOKI_NOT_INITIALIZED) R(CKR_CRYPTOKI_ALREADY_INITIALIZED)
    R(CKR_SESSION_READ_WRITE_SO_EXISTS) R(CKR_USER_TYPE_INVALID)
#undef R
    default: {
        static __thread char buf[32];
        snprintf(buf, sizeof buf, "0x%lx", (unsigned long)rv);
        return buf;
    }
    }
}

static void hex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02X", b[i]);
}

/* ------------------------------------------------------------------ module */

static int load(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fail("load-module", "dlopen: %s", dlerror());
        return -1;
    }
    CK_C_GetFunctionList gfl = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList");
    if (!gfl) {
        fail("load-module", "no C_GetFunctionList");
        return -1;
    }
    CK_RV rv = gfl(&F);
    if (rv != CKR_OK) {
        fail("load-module", "C_GetFunctionList: %s", rvname(rv));
        return -1;
    }
    return 0;
}

static CK_RV initialize(void)
{
    CK_C_INITIALIZE_ARGS args;
    memset(&args, 0, sizeof args);
    args.flags = CKF_OS_LOCKING_OK;
    return F->C_Initialize(&args);
}

static int init_and_slot(void)
{
    CK_RV rv = initialize();
    if (rv != CKR_OK) {
        fail("initialize", "C_Initialize(CKF_OS_LOCKING_OK): %s", rvname(rv));
        return -1;
    }
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    rv = F->C_GetSlotList(CK_TRUE, slots, &n);
    if (rv != CKR_OK || n == 0) {
        fail("initialize", "C_GetSlotList: %s, %lu slots", rvname(rv), (unsigned long)n);
        return -1;
    }
    SLOT = slots[0];
    return 0;
}

/* Opens an R/W session and logs the user in (already-logged-in is fine: login state is
 * shared by all sessions of the application). */
static CK_SESSION_HANDLE session(const char *check)
{
    CK_SESSION_HANDLE s;
    CK_RV rv = F->C_OpenSession(SLOT, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
    if (rv != CKR_OK) {
        fail(check, "C_OpenSession: %s", rvname(rv));
        return CK_INVALID_HANDLE;
    }
    rv = F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)PIN, strlen(PIN));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        fail(check, "C_Login: %s", rvname(rv));
        F->C_CloseSession(s);
        return CK_INVALID_HANDLE;
    }
    return s;
}

static CK_RV gen_master_key(CK_SESSION_HANDLE s, const char *label, CK_OBJECT_HANDLE *key)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_AES;
    CK_ULONG len = 32;
    CK_BBOOL t = CK_TRUE, f = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls}, {CKA_KEY_TYPE, &kt, sizeof kt}, {CKA_VALUE_LEN, &len, sizeof len},
        {CKA_TOKEN, &t, 1}, {CKA_PRIVATE, &t, 1}, {CKA_SENSITIVE, &t, 1}, {CKA_EXTRACTABLE, &f, 1},
        {CKA_ENCRYPT, &t, 1}, {CKA_DECRYPT, &t, 1}, {CKA_WRAP, &t, 1}, {CKA_UNWRAP, &t, 1},
        {CKA_LABEL, (void *)label, strlen(label)},
    };
    CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
    return F->C_GenerateKey(s, &m, tmpl, sizeof tmpl / sizeof tmpl[0], key);
}

static CK_RV find_by_label(CK_SESSION_HANDLE s, const char *label, CK_OBJECT_HANDLE *found, CK_ULONG *count)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE h[8];
    CK_RV rv = F->C_FindObjectsInit(s, tmpl, 2);
    if (rv != CKR_OK) return rv;
    *count = 0;
    /* Fetch one at a time, as Oracle does, to exercise the find cursor. */
    for (;;) {
        CK_ULONG n = 0;
        rv = F->C_FindObjects(s, h + (*count < 8 ? *count : 7), 1, &n);
        if (rv != CKR_OK || n == 0) break;
        *count += n;
    }
    CK_RV rv2 = F->C_FindObjectsFinal(s);
    if (rv == CKR_OK) rv = rv2;
    if (*count > 0) *found = h[0];
    return rv;
}

/* ------------------------------------------------------------------ ciphers */

enum { CBC, GCM };

struct op {
    CK_MECHANISM mech;
    CK_GCM_PARAMS gcm;
};

static void set_mech(struct op *o, int kind, unsigned char *iv, const char *aad)
{
    memset(o, 0, sizeof *o);
    if (kind == CBC) {
        o->mech.mechanism = CKM_AES_CBC_PAD;
        o->mech.pParameter = iv;
        o->mech.ulParameterLen = 16;
    } else {
        o->gcm.pIv = iv;
        o->gcm.ulIvLen = 12;
        o->gcm.ulIvBits = 96;
        o->gcm.pAAD = (CK_BYTE_PTR)aad;
        o->gcm.ulAADLen = aad ? strlen(aad) : 0;
        o->gcm.ulTagBits = 128;
        o->mech.mechanism = CKM_AES_GCM;
        o->mech.pParameter = &o->gcm;
        o->mech.ulParameterLen = sizeof o->gcm;
    }
}

/* Single-part C_Encrypt/C_Decrypt with the usual length query first (NULL output). */
static CK_RV crypt1(int enc, CK_SESSION_HANDLE s, int kind, CK_OBJECT_HANDLE key, unsigned char *iv,
                    const char *aad, const unsigned char *in, CK_ULONG inlen, unsigned char *out,
                    CK_ULONG *outlen)
{
    struct op o;
    set_mech(&o, kind, iv, aad);
    CK_RV rv = enc ? F->C_EncryptInit(s, &o.mech, key) : F->C_DecryptInit(s, &o.mech, key);
    if (rv != CKR_OK) return rv;
    CK_ULONG need = 0;
    rv = enc ? F->C_Encrypt(s, (CK_BYTE_PTR)in, inlen, NULL, &need)
             : F->C_Decrypt(s, (CK_BYTE_PTR)in, inlen, NULL, &need);
    if (rv != CKR_OK) return rv;
    if (need > *outlen) return CKR_BUFFER_TOO_SMALL;
    *outlen = need;
    return enc ? F->C_Encrypt(s, (CK_BYTE_PTR)in, inlen, out, outlen)
               : F->C_Decrypt(s, (CK_BYTE_PTR)in, inlen, out, outlen);
}

/* Multi-part, CHUNK bytes per C_*Update call. */
static CK_RV cryptn(int enc, CK_SESSION_HANDLE s, int kind, CK_OBJECT_HANDLE key, unsigned char *iv,
                    const char *aad, const unsigned char *in, CK_ULONG inlen, unsigned char *out,
                    CK_ULONG *outlen, CK_ULONG chunk)
{
    struct op o;
    set_mech(&o, kind, iv, aad);
    CK_RV rv = enc ? F->C_EncryptInit(s, &o.mech, key) : F->C_DecryptInit(s, &o.mech, key);
    if (rv != CKR_OK) return rv;
    CK_ULONG done = 0, cap = *outlen;
    for (CK_ULONG off = 0; off < inlen; off += chunk) {
        CK_ULONG n = inlen - off < chunk ? inlen - off : chunk;
        CK_ULONG olen = cap - done;
        rv = enc ? F->C_EncryptUpdate(s, (CK_BYTE_PTR)in + off, n, out + done, &olen)
                 : F->C_DecryptUpdate(s, (CK_BYTE_PTR)in + off, n, out + done, &olen);
        if (rv != CKR_OK) return rv;
        done += olen;
    }
    CK_ULONG olen = cap - done;
    rv = enc ? F->C_EncryptFinal(s, out + done, &olen) : F->C_DecryptFinal(s, out + done, &olen);
    if (rv != CKR_OK) return rv;
    *outlen = done + olen;
    return CKR_OK;
}

static CK_RV random_bytes(CK_SESSION_HANDLE s, unsigned char *b, CK_ULONG n)
{
    return F->C_GenerateRandom(s, b, n);
}

/* Encrypts table key t->key under MK with both mechanisms (fresh IVs). */
static CK_RV seal_table(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE mk, struct table *t, const char **what)
{
    CK_RV rv;
    if ((rv = random_bytes(s, t->cbc_iv, 16)) != CKR_OK || (rv = random_bytes(s, t->gcm_iv, 12)) != CKR_OK) {
        *what = "C_GenerateRandom";
        return rv;
    }
    t->cbc_len = sizeof t->cbc_ct;
    unsigned char iv[16];
    memcpy(iv, t->cbc_iv, 16);
    if ((rv = crypt1(1, s, CBC, mk, iv, NULL, t->key, 32, t->cbc_ct, &t->cbc_len)) != CKR_OK) {
        *what = "AES-CBC-PAD encrypt";
        return rv;
    }
    if (t->cbc_len != 48) {
        *what = "AES-CBC-PAD ciphertext length != 48";
        return CKR_GENERAL_ERROR;
    }
    t->gcm_len = sizeof t->gcm_ct;
    if ((rv = crypt1(1, s, GCM, mk, t->gcm_iv, t->name, t->key, 32, t->gcm_ct, &t->gcm_len)) != CKR_OK) {
        *what = "AES-GCM encrypt";
        return rv;
    }
    if (t->gcm_len != 48) {
        *what = "AES-GCM ciphertext length != 48";
        return CKR_GENERAL_ERROR;
    }
    return CKR_OK;
}

/* Decrypts both blobs (single- or multi-part) and compares with the table key. */
static CK_RV open_table(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE mk, const struct table *t, int multipart,
                        const char **what)
{
    unsigned char out[64], iv[16];
    CK_ULONG outlen = sizeof out;
    CK_RV rv;
    memcpy(iv, t->cbc_iv, 16);
    rv = multipart ? cryptn(0, s, CBC, mk, iv, NULL, t->cbc_ct, t->cbc_len, out, &outlen, 5)
                   : crypt1(0, s, CBC, mk, iv, NULL, t->cbc_ct, t->cbc_len, out, &outlen);
    if (rv != CKR_OK) {
        *what = multipart ? "AES-CBC-PAD multi-part decrypt" : "AES-CBC-PAD decrypt";
        return rv;
    }
    if (outlen != 32 || memcmp(out, t->key, 32) != 0) {
        *what = "AES-CBC-PAD decrypt gave a different table key";
        return CKR_GENERAL_ERROR;
    }
    unsigned char giv[12];
    memcpy(giv, t->gcm_iv, 12);
    outlen = sizeof out;
    rv = crypt1(0, s, GCM, mk, giv, t->name, t->gcm_ct, t->gcm_len, out, &outlen);
    if (rv != CKR_OK) {
        *what = "AES-GCM decrypt";
        return rv;
    }
    if (outlen != 32 || memcmp(out, t->key, 32) != 0) {
        *what = "AES-GCM decrypt gave a different table key";
        return CKR_GENERAL_ERROR;
    }
    return CKR_OK;
}

/* ------------------------------------------------------------------ threads */

struct worker {
    pthread_t th;
    int id, iterations;
    struct state *st;
    const char *mk_label;
    int errors, ops;
    char first_error[256];
};

static void *work(void *arg)
{
    struct worker *w = arg;
    CK_SESSION_HANDLE s = session("threads");
    if (s == CK_INVALID_HANDLE) {
        w->errors++;
        snprintf(w->first_error, sizeof w->first_error, "no session");
        return NULL;
    }
    CK_OBJECT_HANDLE mk = CK_INVALID_HANDLE;
    CK_ULONG n = 0;
    CK_RV rv = find_by_label(s, w->mk_label, &mk, &n);
    if (rv != CKR_OK || n != 1) {
        w->errors++;
        snprintf(w->first_error, sizeof w->first_error, "thread %d: find MK: %s, %lu found", w->id,
                 rvname(rv), (unsigned long)n);
        F->C_CloseSession(s);
        return NULL;
    }
    for (int i = 0; i < w->iterations; i++) {
        const struct table *t = &w->st->t[(w->id * 7 + i) % w->st->ntables];
        const char *what = "";
        rv = open_table(s, mk, t, i % 2, &what);
        w->ops += 2;
        if (rv == CKR_OK) {
            /* fresh encryption of the same key, decrypted again */
            struct table tmp = *t;
            rv = seal_table(s, mk, &tmp, &what);
            if (rv == CKR_OK) rv = open_table(s, mk, &tmp, (i + 1) % 2, &what);
            w->ops += 4;
        }
        if (rv != CKR_OK) {
            if (w->errors++ == 0)
                snprintf(w->first_error, sizeof w->first_error, "thread %d iteration %d table %s: %s: %s",
                         w->id, i, t->name, what, rvname(rv));
        }
    }
    F->C_CloseSession(s);
    return NULL;
}

static int run_threads(const char *name, struct state *st, const char *label, int threads, int iterations)
{
    struct worker *w = calloc(threads, sizeof *w);
    for (int i = 0; i < threads; i++) {
        w[i].id = i;
        w[i].iterations = iterations;
        w[i].st = st;
        w[i].mk_label = label;
        pthread_create(&w[i].th, NULL, work, &w[i]);
    }
    int errors = 0, ops = 0;
    const char *first = NULL;
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].th, NULL);
        errors += w[i].errors;
        ops += w[i].ops;
        if (w[i].errors && !first) first = w[i].first_error;
    }
    if (errors)
        fail(name, "%d errors in %d operations; first: %s", errors, ops, first);
    else
        pass(name);
    free(w);
    return errors ? -1 : 0;
}

/* ------------------------------------------------------------------ checks */

static int check_mk_attributes(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE mk, const char *label)
{
    CK_BBOOL sens = 0, extr = 1, asens = 0, nextr = 0, tok = 0, enc = 0, dec = 0;
    CK_ULONG vlen = 0;
    CK_KEY_TYPE kt = 0;
    char lbl[128] = {0};
    CK_ATTRIBUTE a[] = {
        {CKA_SENSITIVE, &sens, 1}, {CKA_EXTRACTABLE, &extr, 1}, {CKA_ALWAYS_SENSITIVE, &asens, 1},
        {CKA_NEVER_EXTRACTABLE, &nextr, 1}, {CKA_TOKEN, &tok, 1}, {CKA_ENCRYPT, &enc, 1},
        {CKA_DECRYPT, &dec, 1}, {CKA_VALUE_LEN, &vlen, sizeof vlen}, {CKA_KEY_TYPE, &kt, sizeof kt},
        {CKA_LABEL, lbl, sizeof lbl - 1},
    };
    CK_RV rv = F->C_GetAttributeValue(s, mk, a, sizeof a / sizeof a[0]);
    if (rv != CKR_OK) {
        fail("mk-attributes", "C_GetAttributeValue: %s", rvname(rv));
        return -1;
    }
    lbl[a[9].ulValueLen < sizeof lbl ? a[9].ulValueLen : sizeof lbl - 1] = 0;
    if (!sens || extr || !asens || !nextr || !tok || !enc || !dec || vlen != 32 || kt != CKK_AES ||
        strcmp(lbl, label) != 0) {
        fail("mk-attributes",
             "sensitive=%d extractable=%d always_sensitive=%d never_extractable=%d token=%d encrypt=%d "
             "decrypt=%d value_len=%lu key_type=0x%lx label='%s'",
             sens, extr, asens, nextr, tok, enc, dec, (unsigned long)vlen, (unsigned long)kt, lbl);
        return -1;
    }
    pass("mk-attributes");
    return 0;
}

static void check_mk_value_unreadable(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE mk)
{
    unsigned char v[64];
    CK_ATTRIBUTE a = {CKA_VALUE, v, sizeof v};
    CK_RV rv = F->C_GetAttributeValue(s, mk, &a, 1);
    if (rv == CKR_ATTRIBUTE_SENSITIVE && a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
        pass("mk-value-unreadable");
    else
        fail("mk-value-unreadable", "C_GetAttributeValue(CKA_VALUE) -> %s, ulValueLen=%ld (want "
             "CKR_ATTRIBUTE_SENSITIVE, CK_UNAVAILABLE_INFORMATION)", rvname(rv), (long)a.ulValueLen);
}

/* PKCS#11 length conventions: NULL output -> length only, operation stays active;
 * too-small buffer -> CKR_BUFFER_TOO_SMALL, operation stays active. */
static void check_length_conventions(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE mk)
{
    unsigned char iv[16] = {0}, in[40] = {1}, out[64];
    struct op o;
    set_mech(&o, CBC, iv, NULL);
    CK_RV rv = F->C_EncryptInit(s, &o.mech, mk);
    if (rv != CKR_OK) {
        fail("length-conventions", "C_EncryptInit: %s", rvname(rv));
        return;
    }
    CK_ULONG n = 0;
    rv = F->C_Encrypt(s, in, 40, NULL, &n);
    if (rv != CKR_OK || n < 48) {
        fail("length-conventions", "C_Encrypt(NULL) -> %s, length %lu (want CKR_OK, >= 48)", rvname(rv),
             (unsigned long)n);
        F->C_Encrypt(s, in, 40, out, &(CK_ULONG){sizeof out});
        return;
    }
    n = 8;
    rv = F->C_Encrypt(s, in, 40, out, &n);
    if (rv != CKR_BUFFER_TOO_SMALL || n < 48) {
        fail("length-conventions", "C_Encrypt(8-byte buffer) -> %s, length %lu (want CKR_BUFFER_TOO_SMALL, >= 48)",
             rvname(rv), (unsigned long)n);
        if (rv == CKR_BUFFER_TOO_SMALL) F->C_Encrypt(s, in, 40, out, &(CK_ULONG){sizeof out});
        return;
    }
    n = sizeof out;
    rv = F->C_Encrypt(s, in, 40, out, &n);
    if (rv != CKR_OK || n != 48) {
        fail("length-conventions", "C_Encrypt after length queries -> %s, length %lu", rvname(rv), (unsigned long)n);
        return;
    }
    /* the operation is finished now */
    n = sizeof out;
    rv = F->C_Encrypt(s, in, 40, out, &n);
    if (rv != CKR_OPERATION_NOT_INITIALIZED) {
        fail("length-conventions", "C_Encrypt after completion -> %s (want CKR_OPERATION_NOT_INITIALIZED)", rvname(rv));
        return;
    }
    pass("length-conventions");
}

static void check_gcm_tamper(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE mk, const struct table *t)
{
    unsigned char ct[64], out[64], iv[12];
    memcpy(ct, t->gcm_ct, t->gcm_len);
    memcpy(iv, t->gcm_iv, 12);
    ct[t->gcm_len - 1] ^= 0x80;
    CK_ULONG n = sizeof out;
    CK_RV rv = crypt1(0, s, GCM, mk, iv, t->name, ct, t->gcm_len, out, &n);
    /* and the wrong AAD */
    CK_ULONG n2 = sizeof out;
    memcpy(iv, t->gcm_iv, 12);
    CK_RV rv2 = crypt1(0, s, GCM, mk, iv, "other-table", t->gcm_ct, t->gcm_len, out, &n2);
    if (rv != CKR_OK && rv2 != CKR_OK)
        pass("gcm-tamper-detected");
    else
        fail("gcm-tamper-detected", "tampered tag -> %s, wrong AAD -> %s", rvname(rv), rvname(rv2));
}

/* Wrap/unwrap (CKM_AES_KEY_WRAP) of an extractable session key under the master key. */
static void check_session_key_wrap(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE mk)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_AES;
    CK_ULONG len = 32;
    CK_BBOOL t = CK_TRUE, f = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls}, {CKA_KEY_TYPE, &kt, sizeof kt}, {CKA_VALUE_LEN, &len, sizeof len},
        {CKA_TOKEN, &f, 1}, {CKA_SENSITIVE, &f, 1}, {CKA_EXTRACTABLE, &t, 1},
        {CKA_ENCRYPT, &t, 1}, {CKA_DECRYPT, &t, 1},
    };
    CK_ATTRIBUTE utmpl[] = {
        {CKA_CLASS, &cls, sizeof cls}, {CKA_KEY_TYPE, &kt, sizeof kt}, {CKA_TOKEN, &f, 1},
        {CKA_ENCRYPT, &t, 1}, {CKA_DECRYPT, &t, 1},
    };
    CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0}, kw = {CKM_AES_KEY_WRAP, NULL, 0};
    CK_OBJECT_HANDLE sk, uk;
    CK_RV rv = F->C_GenerateKey(s, &gen, tmpl, sizeof tmpl / sizeof tmpl[0], &sk);
    if (rv != CKR_OK) {
        fail("session-key-wrap-unwrap", "C_GenerateKey(session, extractable): %s", rvname(rv));
        return;
    }
    unsigned char wrapped[64];
    CK_ULONG wl = sizeof wrapped;
    rv = F->C_WrapKey(s, &kw, mk, sk, wrapped, &wl);
    if (rv != CKR_OK || wl != 40) {
        fail("session-key-wrap-unwrap", "C_WrapKey(CKM_AES_KEY_WRAP): %s, %lu bytes", rvname(rv), (unsigned long)wl);
        F->C_DestroyObject(s, sk);
        return;
    }
    rv = F->C_UnwrapKey(s, &kw, mk, wrapped, wl, utmpl, sizeof utmpl / sizeof utmpl[0], &uk);
    if (rv != CKR_OK) {
        fail("session-key-wrap-unwrap", "C_UnwrapKey(CKM_AES_KEY_WRAP): %s", rvname(rv));
        F->C_DestroyObject(s, sk);
        return;
    }
    /* both keys must encrypt identically */
    unsigned char iv1[16] = {0}, iv2[16] = {0}, pt[32] = {7}, c1[64], c2[64];
    CK_ULONG l1 = sizeof c1, l2 = sizeof c2;
    CK_RV r1 = crypt1(1, s, CBC, sk, iv1, NULL, pt, 32, c1, &l1);
    CK_RV r2 = crypt1(1, s, CBC, uk, iv2, NULL, pt, 32, c2, &l2);
    if (r1 != CKR_OK || r2 != CKR_OK || l1 != l2 || memcmp(c1, c2, l1) != 0)
        fail("session-key-wrap-unwrap", "unwrapped key differs (%s, %s)", rvname(r1), rvname(r2));
    else
        pass("session-key-wrap-unwrap");
    /* the token master key itself must not be wrappable */
    wl = sizeof wrapped;
    rv = F->C_WrapKey(s, &kw, uk, mk, wrapped, &wl);
    if (rv == CKR_KEY_UNEXTRACTABLE || rv == CKR_KEY_NOT_WRAPPABLE)
        pass("mk-not-wrappable");
    else
        fail("mk-not-wrappable", "C_WrapKey(master key) -> %s (want CKR_KEY_UNEXTRACTABLE)", rvname(rv));
    F->C_DestroyObject(s, uk);
    F->C_DestroyObject(s, sk);
}

static int write_state(const char *path, const struct state *st)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = offsetof(struct state, t) + st->ntables * sizeof(struct table);
    int ok = fwrite(st, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int read_state(const char *path, struct state *st)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t n = fread(st, 1, sizeof *st, f);
    fclose(f);
    return n >= offsetof(struct state, t) ? 0 : -1;
}

static void new_label(CK_SESSION_HANDLE s, char *label)
{
    unsigned char id[17];
    char h[64];
    random_bytes(s, id, sizeof id);
    id[0] = 0x06;
    hex(id, sizeof id, h);
    snprintf(label, 128, MK_PREFIX "%s", h);
}

static int cmd_run(const char *state_path, int threads, int ntables, int iterations)
{
    static struct state st;
    memset(&st, 0, sizeof st);
    st.ntables = ntables;
    if (init_and_slot() != 0) return 1;
    pass("initialize");

    CK_SESSION_HANDLE s = session("login");
    if (s == CK_INVALID_HANDLE) return 1;
    pass("login");

    /* 1. master key */
    new_label(s, st.mk_label);
    CK_OBJECT_HANDLE mk;
    CK_RV rv = gen_master_key(s, st.mk_label, &mk);
    if (rv != CKR_OK) {
        fail("mk-generate", "C_GenerateKey(CKM_AES_KEY_GEN, token, %s): %s", st.mk_label, rvname(rv));
        return 1;
    }
    pass("mk-generate");
    check_mk_attributes(s, mk, st.mk_label);
    check_mk_value_unreadable(s, mk);
    F->C_CloseSession(s);

    /* 2. found again by label, in a new session and after C_Finalize/C_Initialize */
    s = session("mk-find-by-label");
    if (s == CK_INVALID_HANDLE) return 1;
    CK_ULONG n = 0;
    rv = find_by_label(s, st.mk_label, &mk, &n);
    if (rv != CKR_OK || n != 1) {
        fail("mk-find-by-label", "%s, %lu objects", rvname(rv), (unsigned long)n);
        return 1;
    }
    pass("mk-find-by-label");
    CK_OBJECT_HANDLE dummy;
    rv = find_by_label(s, MK_PREFIX "0600000000000000000000000000000000", &dummy, &n);
    if (rv == CKR_OK && n == 0)
        pass("find-unknown-label-empty");
    else
        fail("find-unknown-label-empty", "%s, %lu objects", rvname(rv), (unsigned long)n);
    F->C_CloseSession(s);
    F->C_Finalize(NULL);
    rv = initialize();
    if (rv != CKR_OK) {
        fail("reinitialize", "C_Initialize after C_Finalize: %s", rvname(rv));
        return 1;
    }
    s = session("mk-find-after-reinitialize");
    if (s == CK_INVALID_HANDLE) return 1;
    rv = find_by_label(s, st.mk_label, &mk, &n);
    if (rv != CKR_OK || n != 1) {
        fail("mk-find-after-reinitialize", "%s, %lu objects", rvname(rv), (unsigned long)n);
        return 1;
    }
    pass("mk-find-after-reinitialize");

    /* 3. table keys */
    const char *what = "";
    int errors = 0;
    for (int i = 0; i < ntables && !errors; i++) {
        snprintf(st.t[i].name, sizeof st.t[i].name, "HR.TABLE_%04d", i);
        if ((rv = random_bytes(s, st.t[i].key, 32)) != CKR_OK) what = "C_GenerateRandom";
        if (rv == CKR_OK) rv = seal_table(s, mk, &st.t[i], &what);
        if (rv == CKR_OK) rv = open_table(s, mk, &st.t[i], i % 2, &what);
        if (rv != CKR_OK) {
            fail("table-keys-encrypt-decrypt", "table %d: %s: %s", i, what, rvname(rv));
            errors++;
        }
    }
    if (errors) return 1;
    pass("table-keys-encrypt-decrypt");
    check_length_conventions(s, mk);
    check_gcm_tamper(s, mk, &st.t[0]);
    check_session_key_wrap(s, mk);

    /* key use needs the user logged in (the master key is CKA_PRIVATE) */
    {
        CK_SESSION_HANDLE s2;
        CK_RV lr = F->C_Logout(s);
        rv = F->C_OpenSession(SLOT, CKF_SERIAL_SESSION, NULL, NULL, &s2);
        unsigned char iv[16] = {0};
        struct op o;
        set_mech(&o, CBC, iv, NULL);
        CK_RV er = rv == CKR_OK ? F->C_EncryptInit(s2, &o.mech, mk) : rv;
        CK_ULONG cnt = 0;
        CK_OBJECT_HANDLE fh;
        CK_RV fr = rv == CKR_OK ? find_by_label(s2, st.mk_label, &fh, &cnt) : rv;
        if (lr == CKR_OK && (er == CKR_USER_NOT_LOGGED_IN || er == CKR_KEY_HANDLE_INVALID ||
                             er == CKR_OBJECT_HANDLE_INVALID) && fr == CKR_OK && cnt == 0)
            pass("key-use-needs-login");
        else
            fail("key-use-needs-login", "C_Logout -> %s; C_EncryptInit(master key) without login -> %s; "
                 "find by label without login -> %s, %lu objects", rvname(lr), rvname(er), rvname(fr),
                 (unsigned long)cnt);
        if (rv == CKR_OK) {
            if (er == CKR_OK) {
                CK_ULONG n3 = 64;
                unsigned char b[64];
                F->C_Encrypt(s2, iv, 16, b, &n3);
            }
            F->C_CloseSession(s2);
        }
        rv = F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)PIN, strlen(PIN));
        if (rv != CKR_OK) {
            fail("relogin", "C_Login: %s", rvname(rv));
            return 1;
        }
        /* handles of private objects need not survive a logout: look the key up again */
        rv = find_by_label(s, st.mk_label, &mk, &cnt);
        if (rv != CKR_OK || cnt != 1) {
            fail("mk-find-after-relogin", "%s, %lu objects", rvname(rv), (unsigned long)cnt);
            return 1;
        }
    }

    /* 4. many small calls from several threads */
    char name[64];
    snprintf(name, sizeof name, "threads-%d-x-%d", threads, iterations);
    run_threads(name, &st, st.mk_label, threads, iterations);

    /* 5. rekey */
    strcpy(st.old_mk_label, st.mk_label);
    CK_OBJECT_HANDLE old_mk = mk, new_mk;
    new_label(s, st.mk_label);
    rv = gen_master_key(s, st.mk_label, &new_mk);
    if (rv != CKR_OK) {
        fail("rekey-generate", "C_GenerateKey: %s", rvname(rv));
        return 1;
    }
    pass("rekey-generate");
    errors = 0;
    for (int i = 0; i < ntables; i++) {
        rv = open_table(s, old_mk, &st.t[i], 0, &what);
        if (rv == CKR_OK) rv = seal_table(s, new_mk, &st.t[i], &what);
        if (rv == CKR_OK) rv = open_table(s, new_mk, &st.t[i], 1, &what);
        if (rv != CKR_OK && errors++ == 0) fail("rekey-reencrypt", "table %d: %s: %s", i, what, rvname(rv));
    }
    if (errors) return 1;
    pass("rekey-reencrypt");
    {
        unsigned char out[64], iv[12];
        CK_ULONG ol = sizeof out;
        memcpy(iv, st.t[0].gcm_iv, 12);
        rv = crypt1(0, s, GCM, old_mk, iv, st.t[0].name, st.t[0].gcm_ct, st.t[0].gcm_len, out, &ol);
        if (rv != CKR_OK)
            pass("rekey-old-mk-cannot-open-new-blobs");
        else
            fail("rekey-old-mk-cannot-open-new-blobs", "old master key decrypted a blob sealed under the new one");
    }
    CK_OBJECT_HANDLE h1, h2;
    CK_ULONG n1 = 0, n2 = 0;
    CK_RV r1 = find_by_label(s, st.old_mk_label, &h1, &n1), r2 = find_by_label(s, st.mk_label, &h2, &n2);
    if (r1 == CKR_OK && r2 == CKR_OK && n1 == 1 && n2 == 1 && h1 != h2)
        pass("rekey-both-master-keys-found");
    else
        fail("rekey-both-master-keys-found", "old: %s/%lu new: %s/%lu", rvname(r1), (unsigned long)n1,
             rvname(r2), (unsigned long)n2);
    snprintf(name, sizeof name, "threads-after-rekey-%d-x-%d", threads, iterations / 2 + 1);
    run_threads(name, &st, st.mk_label, threads, iterations / 2 + 1);

    F->C_CloseSession(s);
    rv = F->C_Finalize(NULL);
    if (rv == CKR_OK)
        pass("finalize");
    else
        fail("finalize", "C_Finalize: %s", rvname(rv));
    if (write_state(state_path, &st) != 0) {
        fail("write-state", "cannot write %s", state_path);
        return 1;
    }
    return nfail ? 1 : 0;
}

static int cmd_verify(const char *state_path, const char *name)
{
    static struct state st;
    if (read_state(state_path, &st) != 0) {
        fail(name, "cannot read %s", state_path);
        return 1;
    }
    if (init_and_slot() != 0) return 1;
    CK_SESSION_HANDLE s = session(name);
    if (s == CK_INVALID_HANDLE) return 1;
    CK_OBJECT_HANDLE mk;
    CK_ULONG n = 0;
    CK_RV rv = find_by_label(s, st.mk_label, &mk, &n);
    if (rv != CKR_OK || n != 1) {
        fail(name, "find %s: %s, %lu objects", st.mk_label, rvname(rv), (unsigned long)n);
        return 1;
    }
    const char *what = "";
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < st.ntables; i++) {
            rv = open_table(s, mk, &st.t[i], (i + round) % 2, &what);
            if (rv != CKR_OK) {
                fail(name, "round %d table %s: %s: %s", round, st.t[i].name, what, rvname(rv));
                return 1;
            }
        }
    }
    F->C_CloseSession(s);
    F->C_Finalize(NULL);
    pass(name);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 5) {
        fprintf(stderr, "usage: %s run MODULE PIN STATE [THREADS] [TABLES] [ITERATIONS]\n"
                        "       %s verify MODULE PIN STATE NAME\n", argv[0], argv[0]);
        return 2;
    }
    PIN = argv[3];
    if (load(argv[2]) != 0) return 1;
    if (strcmp(argv[1], "run") == 0) {
        int threads = argc > 5 ? atoi(argv[5]) : 8;
        int tables = argc > 6 ? atoi(argv[6]) : 64;
        int iterations = argc > 7 ? atoi(argv[7]) : 50;
        if (tables < 1 || tables > MAX_TABLES || threads < 1 || iterations < 1) return 2;
        return cmd_run(argv[4], threads, tables, iterations);
    }
    if (strcmp(argv[1], "verify") == 0 && argc > 5) return cmd_verify(argv[4], argv[5]);
    return 2;
}
