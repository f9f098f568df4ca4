/* seal.c — encryption at rest (SECURITY.md, "Encryption at rest").
 *
 * With a key, every column that can hold health data or a token is sealed
 * with XChaCha20-Poly1305: docs.body, outbox.body, outbox_pack.records,
 * audit.reason (a server's message can quote a document) and the feed
 * cursor in meta. Ids, versions, seqs, times, ops and collection names stay
 * clear: recovery orders and indexes by them without the key.
 *
 * A sealed value is a BLOB: 0x01, a 24-byte nonce, the ciphertext and its
 * 16-byte tag. Its associated data is the row's identity (persist_seal_ad),
 * so a sealed value moved to another row, or a document's body moved to
 * another version, does not open. The nonce is a per-process random prefix
 * (16 bytes) and a counter: no syscall per value, no repeat.
 *
 * A store is all plain or all sealed: meta holds `key_id` and `key_check`
 * (a known value sealed under the key) once it is sealed. A plain store
 * started with a key is sealed in one transaction at start; `therasync
 * rekey` re-seals a stopped store under a new key, also in one transaction,
 * so after a crash at any point one of the two keys opens all of it. */
#include "persist/persist_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#define SEAL_VERSION 1
#define NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TAG_BYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
#define SEAL_OVERHEAD (1 + NONCE_BYTES + TAG_BYTES)
#define KEY_CHECK "therasync key check 1"

struct ts_seal {
    unsigned char *key;  /* sodium_malloc'd: mlock'd, MADV_DONTDUMP, zeroed on free */
    unsigned char prefix[16];
    uint64_t counter;    /* one thread uses a key (persist's, or rekey's) */
    char id[33];         /* hex of a keyed hash: names the key in messages and meta */
};

void persist_seal_free(ts_seal_t *k)
{
    if (!k)
        return;
    sodium_free(k->key); /* zeroes it */
    free(k);
}

const char *persist_seal_id(const ts_seal_t *k)
{
    return k->id;
}

/* Reads a key file: 32 bytes, or 64 hex digits (and a newline). private:
 * refuse a file others can read (a systemd credential is the service's). */
static ts_seal_t *load_key(const char *path, bool private, char *err, size_t errlen)
{
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium cannot start");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        snprintf(err, errlen, "cannot read the key file %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if (private && (st.st_mode & 077)) {
        snprintf(err, errlen, "the key file %s can be read or written by other users (mode %04o): "
                              "chmod 600 it", path, (unsigned)(st.st_mode & 07777));
        close(fd);
        return NULL;
    }
    ts_seal_t *k = ts_xcalloc(1, sizeof *k);
    unsigned char *raw = sodium_malloc(80);
    k->key = sodium_malloc(crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
    ssize_t n = raw && k->key ? read(fd, raw, 80) : -1;
    close(fd);
    size_t len = n > 0 ? (size_t)n : 0;
    while (len && (raw[len - 1] == '\n' || raw[len - 1] == '\r' || raw[len - 1] == ' '))
        len--;
    size_t got = 0;
    int rc = -1;
    if (n == 32) {
        memcpy(k->key, raw, 32);
        rc = 0;
    } else if (n > 0 && n < 80 && len == 64 &&
               sodium_hex2bin(k->key, 32, (const char *)raw, 64, NULL, &got, NULL) == 0 &&
               got == 32) {
        rc = 0;
    }
    sodium_free(raw);
    if (rc) {
        snprintf(err, errlen, "the key file %s must hold 32 bytes, or 64 hex digits "
                              "(head -c 32 /dev/urandom > FILE)", path);
        persist_seal_free(k);
        return NULL;
    }
    unsigned char id[16];
    crypto_generichash(id, sizeof id, (const unsigned char *)"therasync key id", 16, k->key, 32);
    sodium_bin2hex(k->id, sizeof k->id, id, sizeof id);
    randombytes_buf(k->prefix, sizeof k->prefix);
    return k;
}

/* The key the config names: security.encryption_key_file, else the systemd credential
 * therasync.key when there is one. 0 with *out NULL: no key. -1: err. */
int persist_seal_load(const ts_config_t *config, ts_seal_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (config->storage.key_file)
        return (*out = load_key(config->storage.key_file, true, err, errlen)) ? 0 : -1;
    const char *creds = getenv("CREDENTIALS_DIRECTORY");
    char path[4096];
    if (!creds || !*creds ||
        snprintf(path, sizeof path, "%s/therasync.key", creds) >= (int)sizeof path ||
        access(path, F_OK))
        return 0;
    return (*out = load_key(path, false, err, errlen)) ? 0 : -1;
}

/* The associated data of a sealed value: what names its row. */
void persist_seal_ad(ts_buf_t *ad, const char *tag, const char *a, const char *b, int64_t n)
{
    ts_buf_reset(ad);
    ts_buf_append(ad, tag, strlen(tag) + 1);
    ts_buf_append(ad, a ? a : "", strlen(a ? a : "") + 1);
    ts_buf_append(ad, b ? b : "", strlen(b ? b : "") + 1);
    ts_buf_append(ad, &n, sizeof n);
}

/* plain sealed into out (replacing what it held). 0, or -1 (no memory). */
static int seal(ts_seal_t *k, const void *plain, size_t len, const ts_buf_t *ad, ts_buf_t *out)
{
    ts_buf_reset(out);
    if (ts_buf_reserve(out, len + SEAL_OVERHEAD))
        return -1;
    unsigned char *p = (unsigned char *)out->data;
    p[0] = SEAL_VERSION;
    memcpy(p + 1, k->prefix, 16);
    k->counter++;
    memcpy(p + 17, &k->counter, 8);
    unsigned long long clen;
    crypto_aead_xchacha20poly1305_ietf_encrypt(p + 1 + NONCE_BYTES, &clen, plain, len,
                                               (const unsigned char *)ad->data, ad->len, NULL,
                                               p + 1, k->key);
    out->len = 1 + NONCE_BYTES + (size_t)clen;
    out->data[out->len] = '\0';
    return 0;
}

/* sealed opened into out (NUL-terminated). 0, or -1: not sealed under this
 * key for this row (or damaged). */
static int unseal(const ts_seal_t *k, const void *sealed, size_t len, const ts_buf_t *ad,
                  ts_buf_t *out)
{
    const unsigned char *p = sealed;
    ts_buf_reset(out);
    if (!p || len < SEAL_OVERHEAD || p[0] != SEAL_VERSION || ts_buf_reserve(out, len))
        return -1;
    unsigned long long plen;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt((unsigned char *)out->data, &plen, NULL,
                                                   p + 1 + NONCE_BYTES, len - 1 - NONCE_BYTES,
                                                   (const unsigned char *)ad->data, ad->len,
                                                   p + 1, k->key))
        return -1;
    out->len = (size_t)plen;
    out->data[out->len] = '\0';
    return 0;
}

int persist_seal_open(const ts_seal_t *k, const void *sealed, size_t len, const ts_buf_t *ad,
                      ts_buf_t *out)
{
    return unseal(k, sealed, len, ad, out);
}

int persist_bind_value(persist_t *self, sqlite3_stmt *s, int i, const char *tag, const char *a,
                       const char *b, int64_t n, const char *value, size_t len, bool blob)
{
    if (!value)
        return sqlite3_bind_null(s, i) == SQLITE_OK ? 0 : -1;
    if (!self->seal)
        return (blob ? sqlite3_bind_blob(s, i, value, (int)len, SQLITE_STATIC)
                     : sqlite3_bind_text(s, i, value, (int)len, SQLITE_STATIC)) == SQLITE_OK
                   ? 0 : -1;
    persist_seal_ad(&self->ad, tag, a, b, n);
    if (seal(self->seal, value, len, &self->ad, &self->sealed))
        return -1;
    return sqlite3_bind_blob(s, i, self->sealed.data, (int)self->sealed.len, SQLITE_STATIC) ==
                   SQLITE_OK ? 0 : -1;
}

int persist_column_value(persist_t *self, sqlite3_stmt *s, int col, const char *tag,
                         const char *a, const char *b, int64_t n, ts_buf_t *out,
                         const char **value, size_t *len)
{
    int type = sqlite3_column_type(s, col);
    *value = NULL;
    *len = 0;
    if (type == SQLITE_NULL)
        return 0;
    if (!self->seal) {
        *value = type == SQLITE_BLOB ? sqlite3_column_blob(s, col)
                                     : (const char *)sqlite3_column_text(s, col);
        *len = (size_t)sqlite3_column_bytes(s, col); /* after the pointer */
        return 0;
    }
    if (type != SQLITE_BLOB) /* a plain value in a sealed store: not ours */
        return -1;
    const void *sealed = sqlite3_column_blob(s, col);
    persist_seal_ad(&self->ad, tag, a, b, n);
    if (unseal(self->seal, sealed, (size_t)sqlite3_column_bytes(s, col), &self->ad, out))
        return -1;
    *value = out->data;
    *len = out->len;
    return 0;
}

/* ---- the whole store under a key ---- */

typedef struct {
    ts_seal_t *from, *to; /* from NULL: the values are plain */
    ts_buf_t ad, plain, sealed;
} reseal_t;

/* SQL ts_reseal(tag, a, b, n, value): value re-sealed from one key to the
 * other. An error aborts the statement, and so the transaction. */
static void reseal_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    reseal_t *r = sqlite3_user_data(ctx);
    if (sqlite3_value_type(argv[4]) == SQLITE_NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    persist_seal_ad(&r->ad, (const char *)sqlite3_value_text(argv[0]),
                    (const char *)sqlite3_value_text(argv[1]),
                    (const char *)sqlite3_value_text(argv[2]), sqlite3_value_int64(argv[3]));
    const void *value = sqlite3_value_blob(argv[4]);
    size_t len = (size_t)sqlite3_value_bytes(argv[4]);
    if (r->from) {
        if (unseal(r->from, value, len, &r->ad, &r->plain)) {
            sqlite3_result_error(ctx, "a sealed value does not open (damaged or moved row)", -1);
            return;
        }
        value = r->plain.data;
        len = r->plain.len;
    }
    if (seal(r->to, value, len, &r->ad, &r->sealed)) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    sqlite3_result_blob(ctx, r->sealed.data, (int)r->sealed.len, SQLITE_TRANSIENT);
}

static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    snprintf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
}

/* Every sealed column re-sealed from `from` (NULL: plain) to `to`, and the
 * key check, in one transaction: a crash leaves the store all under one of
 * the two. Freed space is zeroed (secure_delete) and the WAL truncated
 * after, so the old values are in neither file. 0, or -1 with err. */
static int reseal_store(sqlite3 *db, ts_seal_t *from, ts_seal_t *to, char *err, size_t errlen)
{
    reseal_t r = {.from = from, .to = to};
    sqlite3_stmt *check = NULL;
    int rc = -1;
    if (sqlite3_create_function(db, "ts_reseal", 5, SQLITE_UTF8, &r, reseal_fn, NULL, NULL) ||
        exec(db, "PRAGMA secure_delete=ON", err, errlen) ||
        exec(db, "BEGIN IMMEDIATE", err, errlen))
        goto done;
    if (exec(db,
             "UPDATE docs SET body = ts_reseal('docs', coll, doc_id, version, body) "
             "  WHERE body IS NOT NULL;"
             "UPDATE outbox SET body = ts_reseal('outbox', coll, doc_id, seq, body) "
             "  WHERE body IS NOT NULL;"
             "UPDATE outbox_pack SET records = ts_reseal('pack', '', '', first_seq, records);"
             "UPDATE audit SET reason = ts_reseal('audit', coll, doc_id, 0, reason) "
             "  WHERE reason IS NOT NULL;"
             "UPDATE meta SET value = ts_reseal('meta', key, '', 0, value) WHERE key = 'cursor';",
             err, errlen))
        goto rollback;
    persist_seal_ad(&r.ad, "meta", "key_check", "", 0);
    if (seal(to, KEY_CHECK, strlen(KEY_CHECK), &r.ad, &r.sealed) ||
        sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO meta(key, value) VALUES('key_id', ?1), "
                               "('key_check', ?2)", -1, &check, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
        goto rollback;
    }
    sqlite3_bind_text(check, 1, to->id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(check, 2, r.sealed.data, (int)r.sealed.len, SQLITE_STATIC);
    if (sqlite3_step(check) != SQLITE_DONE) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
        goto rollback;
    }
    if (exec(db, "COMMIT", err, errlen))
        goto rollback;
    rc = 0;
    /* The old values out of the WAL (the database's freed cells are zeroed). */
    if (sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL) != SQLITE_OK)
        ts_warn(LOG, "after sealing: the WAL was not truncated (%s); it goes at the next "
                     "checkpoint", sqlite3_errmsg(db));
    goto done;
rollback:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
done:
    sqlite3_finalize(check);
    sqlite3_exec(db, "PRAGMA secure_delete=OFF", NULL, NULL, NULL);
    sqlite3_create_function(db, "ts_reseal", 5, SQLITE_UTF8, NULL, NULL, NULL, NULL);
    ts_buf_free(&r.ad);
    ts_buf_free(&r.plain);
    ts_buf_free(&r.sealed);
    return rc;
}

int persist_store_key(sqlite3 *db, char *id, size_t idlen)
{
    sqlite3_stmt *s;
    int rc = -1;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'key_id'", -1, &s, NULL) !=
        SQLITE_OK)
        return -1;
    int step = sqlite3_step(s);
    if (step == SQLITE_DONE)
        rc = 0;
    else if (step == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(s, 0);
        snprintf(id, idlen, "%s", text ? text : "?");
        rc = 1;
    }
    sqlite3_finalize(s);
    return rc;
}

/* Whether k opens the store's key check. */
static bool key_opens(sqlite3 *db, ts_seal_t *k)
{
    sqlite3_stmt *s;
    bool ok = false;
    ts_buf_t ad = {0}, out = {0};
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'key_check'", -1, &s, NULL) ==
            SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) == SQLITE_BLOB) {
        persist_seal_ad(&ad, "meta", "key_check", "", 0);
        ok = unseal(k, sqlite3_column_blob(s, 0), (size_t)sqlite3_column_bytes(s, 0), &ad,
                    &out) == 0 &&
             out.len == strlen(KEY_CHECK) && memcmp(out.data, KEY_CHECK, out.len) == 0;
    }
    sqlite3_finalize(s);
    ts_buf_free(&ad);
    ts_buf_free(&out);
    return ok;
}

/* Says why key k (from where) cannot open a store sealed under id. */
static void wrong_key(char *err, size_t errlen, const char *id, const ts_seal_t *k,
                      const char *where)
{
    if (strcmp(id, k->id) == 0)
        snprintf(err, errlen, "the key check of this store (key id %s) does not open with %s "
                              "although its id matches: the meta table is damaged", id, where);
    else
        snprintf(err, errlen, "wrong key: this store is sealed with key id %s, and %s has key "
                              "id %s (after an interrupted `therasync rekey`, the other key "
                              "opens it)", id, where, k->id);
}

int persist_open_key(persist_t *self)
{
    char err[512], id[80];
    const char *where = self->config->storage.key_file ? self->config->storage.key_file
                                                       : "the credential therasync.key";
    if (persist_seal_load(self->config, &self->seal, err, sizeof err)) {
        ts_error(LOG, "%s; refusing to start", err);
        return -1;
    }
    int sealed = persist_store_key(self->db, id, sizeof id);
    if (sealed < 0) {
        ts_error(LOG, "cannot read the store's key check: %s", sqlite3_errmsg(self->db));
        return -1;
    }
    if (sealed && !self->seal) {
        ts_error(LOG, "this store is encrypted (key id %s) but no key was given: set "
                      "security.encryption_key_file in the config, or pass the systemd credential "
                      "therasync.key; refusing to start", id);
        return -1;
    }
    if (sealed && !key_opens(self->db, self->seal)) {
        wrong_key(err, sizeof err, id, self->seal, where);
        ts_error(LOG, "%s; refusing to start", err);
        return -1;
    }
    if (!sealed && self->seal) {
        ts_info(LOG, "a key was given for a plain store: sealing every value with key id %s",
                self->seal->id);
        if (reseal_store(self->db, NULL, self->seal, err, sizeof err)) {
            ts_error(LOG, "cannot seal the store: %s; it is left plain; refusing to start", err);
            return -1;
        }
    }
    if (self->seal)
        ts_info(LOG, "store encrypted at rest (key id %s)", self->seal->id);
    return 0;
}

/* ---- therasync rekey ---- */

int ts_persist_rekey(const char *data_dir, const char *old_key_file, const char *new_key_file,
                     char *err, size_t errlen)
{
    /* No core file with the keys in it. */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    ts_config_t config = {.data_dir = (char *)data_dir};
    persist_t p = {.config = &config, .lock_fd = -1};
    ts_seal_t *from = NULL, *to = NULL;
    char path[4096], id[80];
    int rc = -1;
    if (snprintf(path, sizeof path, "%s/therasync.db", data_dir) >= (int)sizeof path ||
        access(path, F_OK)) {
        snprintf(err, errlen, "no store at %s (no therasync.db there)", data_dir);
        return -1;
    }
    if ((old_key_file && !(from = load_key(old_key_file, true, err, errlen))) ||
        !(to = load_key(new_key_file, true, err, errlen)))
        goto done;
    /* The daemon's own lock: refuses while it runs (its message says so). */
    if (persist_lock_data_dir(&p)) {
        snprintf(err, errlen, "cannot lock the data dir %s: stop therasyncd first (see above)",
                 data_dir);
        goto done;
    }
    if (sqlite3_open_v2(path, &p.db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        exec(p.db, "PRAGMA journal_mode=WAL", err, errlen) ||
        exec(p.db, "PRAGMA synchronous=FULL", err, errlen)) {
        if (p.db && !*err)
            snprintf(err, errlen, "cannot open %s: %s", path, sqlite3_errmsg(p.db));
        goto done;
    }
    sqlite3_busy_timeout(p.db, 5000);
    int version = persist_pragma_int(&p, "PRAGMA user_version");
    if (version != TS_SCHEMA_VERSION) {
        snprintf(err, errlen, "the store's schema is %d, this therasync's is %d: start "
                              "therasyncd once on it (with its key) first", version,
                 TS_SCHEMA_VERSION);
        goto done;
    }
    int sealed = persist_store_key(p.db, id, sizeof id);
    if (sealed < 0) {
        snprintf(err, errlen, "cannot read the store's key check: %s", sqlite3_errmsg(p.db));
        goto done;
    }
    if (sealed && key_opens(p.db, to)) { /* done before: a re-run after a crash */
        printf("the store is sealed with the new key already (key id %s); nothing to do\n",
               to->id);
        rc = 0;
        goto done;
    }
    if (sealed && !from) {
        snprintf(err, errlen, "this store is encrypted (key id %s): give its key with --key",
                 id);
        goto done;
    }
    if (sealed && !key_opens(p.db, from)) {
        wrong_key(err, errlen, id, from, old_key_file);
        goto done;
    }
    if (!sealed && from) {
        snprintf(err, errlen, "this store is plain: leave out --key to seal it with --new-key");
        goto done;
    }
    if (reseal_store(p.db, sealed ? from : NULL, to, err, errlen))
        goto done;
    printf("re-sealed the store at %s: key id %s -> %s\n", data_dir, sealed ? id : "(plain)",
           to->id);
    rc = 0;
done:
    if (p.db)
        sqlite3_close_v2(p.db);
    if (p.lock_fd >= 0)
        close(p.lock_fd);
    persist_seal_free(from);
    persist_seal_free(to);
    return rc;
}

int ts_persist_check_key(const ts_config_t *config, bool *sealed, char *err, size_t errlen)
{
    ts_seal_t *k = NULL;
    if (persist_seal_load(config, &k, err, errlen))
        return -1;
    *sealed = k != NULL;
    persist_seal_free(k);
    return 0;
}
