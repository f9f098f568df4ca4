/* db.c — the document store: schema, prepared statements, and the write
 * path (idempotency check, If-Match, merge patch, cursor) in one transaction. */
#include "db.h"

#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "therasync/json.h"
#include "therasync/log.h"
#include "therasync/sha256.h"

#define MOD "db"

struct ca_db {
    sqlite3 *sql;
    pthread_mutex_t lock; /* guards sql, the statements and head */
    int64_t head;         /* latest cursor handed out */
    sqlite3_stmt *get, *upsert, *idem_get, *idem_put, *begin, *commit, *rollback;
    /* Reads of what is committed (GETs, the change feed, digests) go through
     * a connection of their own: in WAL mode they never wait for the
     * writer's transactions, which hold `lock` back to back under load and
     * left the change streams far behind. */
    sqlite3 *rsql;
    pthread_mutex_t rlock; /* guards rsql and its statements */
    sqlite3_stmt *rget, *feed_coll, *feed_all, *digest, *scan;
};

static const char SCHEMA[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "PRAGMA cache_size=-65536;"
    "PRAGMA wal_autocheckpoint=4000;"
    "PRAGMA mmap_size=268435456;"
    "CREATE TABLE IF NOT EXISTS docs("
    "  coll TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,"
    "  deleted INTEGER NOT NULL, cursor INTEGER NOT NULL, body TEXT NOT NULL,"
    "  PRIMARY KEY (coll, id));"
    "CREATE UNIQUE INDEX IF NOT EXISTS docs_cursor ON docs(cursor);"
    "CREATE INDEX IF NOT EXISTS docs_coll_cursor ON docs(coll, cursor);"
    "CREATE TABLE IF NOT EXISTS idempotency("
    "  key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status INTEGER NOT NULL,"
    "  body TEXT NOT NULL, created_ms INTEGER NOT NULL);";

static int prepare_on(sqlite3 *sql, sqlite3_stmt **st, const char *text)
{
    if (sqlite3_prepare_v3(sql, text, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK) {
        ts_error(MOD, "prepare failed: %s", sqlite3_errmsg(sql));
        return -1;
    }
    return 0;
}

static int prepare(ca_db_t *db, sqlite3_stmt **st, const char *text)
{
    return prepare_on(db->sql, st, text);
}

ca_db_t *ca_db_open(const char *path)
{
    ca_db_t *db = calloc(1, sizeof *db);
    if (!db)
        return NULL;
    pthread_mutex_init(&db->lock, NULL);
    pthread_mutex_init(&db->rlock, NULL);
    /* No memory statistics: they take a global mutex on every allocation
     * (before SQLite's first use only; later a no-op). */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (sqlite3_open_v2(path, &db->sql,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        ts_error(MOD, "cannot open %s: %s", path, db->sql ? sqlite3_errmsg(db->sql) : "no memory");
        goto err;
    }
    sqlite3_busy_timeout(db->sql, 5000);
    char *msg = NULL;
    if (sqlite3_exec(db->sql, SCHEMA, NULL, NULL, &msg) != SQLITE_OK) {
        ts_error(MOD, "schema on %s: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        goto err;
    }
    if (prepare(db, &db->get, "SELECT version, deleted, body FROM docs WHERE coll=?1 AND id=?2") ||
        prepare(db, &db->upsert,
                "INSERT INTO docs(coll, id, version, deleted, cursor, body)"
                " VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(coll, id) DO UPDATE SET"
                " version=excluded.version, deleted=excluded.deleted,"
                " cursor=excluded.cursor, body=excluded.body") ||
        prepare(db, &db->idem_get,
                "SELECT fingerprint, status, body FROM idempotency WHERE key=?1") ||
        prepare(db, &db->idem_put,
                "INSERT INTO idempotency(key, fingerprint, status, body, created_ms)"
                " VALUES(?1, ?2, ?3, ?4, ?5)") ||
        prepare(db, &db->begin, "BEGIN IMMEDIATE") || prepare(db, &db->commit, "COMMIT") ||
        prepare(db, &db->rollback, "ROLLBACK"))
        goto err;
    if (sqlite3_open_v2(path, &db->rsql, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(db->rsql, "PRAGMA cache_size=-65536; PRAGMA mmap_size=268435456;", NULL,
                     NULL, NULL) != SQLITE_OK ||
        prepare_on(db->rsql, &db->rget,
                   "SELECT version, deleted, body FROM docs WHERE coll=?1 AND id=?2") ||
        prepare_on(db->rsql, &db->feed_coll,
                   "SELECT cursor, coll, body FROM docs WHERE coll=?1 AND cursor>?2"
                   " ORDER BY cursor LIMIT ?3") ||
        prepare_on(db->rsql, &db->feed_all,
                   "SELECT cursor, coll, body FROM docs WHERE cursor>?1 ORDER BY cursor LIMIT ?2") ||
        prepare_on(db->rsql, &db->digest,
                   "SELECT id, version, body FROM docs WHERE coll=?1 AND deleted=0 ORDER BY id") ||
        prepare_on(db->rsql, &db->scan,
                   "SELECT id, body FROM docs WHERE coll=?1 AND id>?2 AND deleted=0 ORDER BY id")) {
        ts_error(MOD, "cannot open %s for reading: %s", path,
                 db->rsql ? sqlite3_errmsg(db->rsql) : "no memory");
        goto err;
    }
    sqlite3_busy_timeout(db->rsql, 5000);
    sqlite3_stmt *st;
    if (prepare(db, &st, "SELECT COALESCE(MAX(cursor), 0) FROM docs"))
        goto err;
    if (sqlite3_step(st) == SQLITE_ROW)
        db->head = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return db;
err:
    ca_db_close(&db);
    return NULL;
}

void ca_db_close(ca_db_t **dbp)
{
    ca_db_t *db = *dbp;
    if (!db)
        return;
    sqlite3_stmt *all[] = {db->get,    db->upsert, db->idem_get,  db->idem_put, db->begin,
                           db->commit, db->rollback, db->rget,    db->feed_coll, db->feed_all,
                           db->digest, db->scan};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sqlite3_finalize(all[i]);
    sqlite3_close(db->rsql);
    sqlite3_close(db->sql);
    pthread_mutex_destroy(&db->rlock);
    pthread_mutex_destroy(&db->lock);
    free(db);
    *dbp = NULL;
}

int64_t ca_db_head(ca_db_t *db)
{
    pthread_mutex_lock(&db->lock);
    int64_t h = db->head;
    pthread_mutex_unlock(&db->lock);
    return h;
}

/* Runs a statement that returns no rows; SQLITE_DONE expected. */
static int exec_stmt(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int ca_db_feed(ca_db_t *db, const char *coll, int64_t since, int limit, ca_feed_fmt_t fmt,
               ts_buf_t *out, int64_t *last, bool *more)
{
    int n = 0, rc = 0;
    *last = since;
    *more = false;
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = coll ? db->feed_coll : db->feed_all;
    int i = 1;
    if (coll)
        sqlite3_bind_text(st, i++, coll, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, i++, since);
    sqlite3_bind_int(st, i, limit + 1);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == limit) {
            *more = true;
            break;
        }
        int64_t cur = sqlite3_column_int64(st, 0);
        const char *c = (const char *)sqlite3_column_text(st, 1);
        const char *body = (const char *)sqlite3_column_text(st, 2);
        int blen = sqlite3_column_bytes(st, 2);
        if (fmt == CA_FEED_ITEMS) {
            rc |= n ? ts_buf_puts(out, ",") : 0;
            rc |= ts_buf_append(out, body, (size_t)blen);
        } else if (fmt == CA_FEED_CHANGES) {
            rc |= ts_buf_printf(out, "%s{\"collection\":\"%s\",\"doc\":", n ? "," : "", c);
            rc |= ts_buf_append(out, body, (size_t)blen);
            rc |= ts_buf_puts(out, "}");
        } else {
            rc |= ts_buf_printf(out, "id: %" PRId64 "\ndata: {\"collection\":\"%s\",\"doc\":", cur,
                                c);
            rc |= ts_buf_append(out, body, (size_t)blen);
            rc |= ts_buf_puts(out, "}\n\n");
        }
        *last = cur;
        n++;
    }
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        ts_error(MOD, "feed: %s", sqlite3_errmsg(db->rsql));
        rc = -1;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    pthread_mutex_unlock(&db->rlock);
    return rc ? -1 : n;
}

int ca_db_get(ca_db_t *db, const char *coll, const char *id, ts_buf_t *out, int64_t *version)
{
    int found = 0;
    pthread_mutex_lock(&db->rlock);
    sqlite3_bind_text(db->rget, 1, coll, -1, SQLITE_STATIC);
    sqlite3_bind_text(db->rget, 2, id, -1, SQLITE_STATIC);
    int step = sqlite3_step(db->rget);
    if (step == SQLITE_ROW && sqlite3_column_int(db->rget, 1) == 0) {
        if (version)
            *version = sqlite3_column_int64(db->rget, 0);
        found = ts_buf_append(out, sqlite3_column_text(db->rget, 2),
                              (size_t)sqlite3_column_bytes(db->rget, 2)) < 0
                    ? -1
                    : 1;
    } else if (step != SQLITE_ROW && step != SQLITE_DONE) {
        found = -1;
    }
    sqlite3_reset(db->rget);
    pthread_mutex_unlock(&db->rlock);
    return found;
}

int ca_db_scan(ca_db_t *db, const char *coll, const char *after_id, ca_scan_fn fn, void *ctx)
{
    pthread_mutex_lock(&db->rlock);
    sqlite3_bind_text(db->scan, 1, coll, -1, SQLITE_STATIC);
    sqlite3_bind_text(db->scan, 2, after_id, -1, SQLITE_STATIC);
    int step;
    while ((step = sqlite3_step(db->scan)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(db->scan, 0);
        const char *body = (const char *)sqlite3_column_text(db->scan, 1);
        if (fn(ctx, id, body, (size_t)sqlite3_column_bytes(db->scan, 1))) {
            step = SQLITE_DONE;
            break;
        }
    }
    if (step != SQLITE_DONE)
        ts_error(MOD, "scan: %s", sqlite3_errmsg(db->rsql));
    sqlite3_reset(db->scan);
    sqlite3_clear_bindings(db->scan);
    pthread_mutex_unlock(&db->rlock);
    return step == SQLITE_DONE ? 0 : -1;
}

int ca_db_digest(ca_db_t *db, const char *coll, bool content, ts_buf_t *out)
{
    ts_sha256_t h;
    ts_sha256_init(&h);
    int64_t count = 0;
    int rc = 0;
    ts_buf_t line = {0};
    pthread_mutex_lock(&db->rlock);
    sqlite3_bind_text(db->digest, 1, coll, -1, SQLITE_STATIC);
    int step;
    while ((step = sqlite3_step(db->digest)) == SQLITE_ROW) {
        ts_buf_reset(&line);
        rc |= ts_buf_printf(&line, "%s:%" PRId64, (const char *)sqlite3_column_text(db->digest, 0),
                            (int64_t)sqlite3_column_int64(db->digest, 1));
        if (content) { /* parsed and printed again: the stored text's spelling does not count */
            uint8_t sum[32];
            char hex[65];
            rc |= ts_json_text_content_sha256((const char *)sqlite3_column_text(db->digest, 2),
                                              (size_t)sqlite3_column_bytes(db->digest, 2), sum);
            ts_sha256_to_hex(sum, hex);
            rc |= ts_buf_printf(&line, ":%s", hex);
        }
        rc |= ts_buf_puts(&line, "\n");
        if (rc)
            break;
        ts_sha256_update(&h, line.data, line.len);
        count++;
    }
    sqlite3_reset(db->digest);
    pthread_mutex_unlock(&db->rlock);
    ts_buf_free(&line);
    if (rc || step != SQLITE_DONE)
        return -1;
    uint8_t d[32];
    char hex[65];
    ts_sha256_final(&h, d);
    ts_sha256_to_hex(d, hex);
    return ts_buf_printf(out, "{\"count\":%" PRId64 ",\"hash\":\"%s\",\"form\":\"%s\"}", count,
                         hex, content ? "content" : "version");
}

int ca_db_hand_fix(ca_db_t *db, const char *coll, const char *id, cJSON *doc, ts_buf_t *out)
{
    pthread_mutex_lock(&db->lock); /* the writer's connection, between its batches */
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->sql,
                                "UPDATE docs SET body=?3 WHERE coll=?1 AND id=?2 AND deleted=0",
                                -1, &st, NULL) == SQLITE_OK ? 0 : -1;
    int64_t version = 0;
    char *body = NULL;
    if (rc == 0) {
        sqlite3_stmt *get = db->get;
        sqlite3_bind_text(get, 1, coll, -1, SQLITE_STATIC);
        sqlite3_bind_text(get, 2, id, -1, SQLITE_STATIC);
        int found = sqlite3_step(get) == SQLITE_ROW && !sqlite3_column_int(get, 1);
        version = found ? sqlite3_column_int64(get, 0) : 0;
        sqlite3_reset(get);
        sqlite3_clear_bindings(get);
        if (found) {
            body = ca_doc_render(doc, id, version, false);
            doc = NULL;
            rc = body ? 0 : -1;
        } else {
            rc = 0;
        }
    }
    if (rc == 0 && body) {
        sqlite3_bind_text(st, 1, coll, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, body, -1, SQLITE_STATIC);
        rc = sqlite3_step(st) != SQLITE_DONE ? -1 : sqlite3_changes(db->sql) ? 1 : 0;
        if (rc == 1)
            rc = ts_buf_puts(out, body) ? -1 : 1;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    free(body);
    cJSON_Delete(doc);
    return rc;
}

/* ---- documents -------------------------------------------------------- */

static int add_error(ts_buf_t *errors, int *n, const char *field, const char *message)
{
    (*n)++;
    if (errors->len)
        ts_buf_puts(errors, ",");
    ts_buf_puts(errors, "{\"field\":");
    ts_buf_json_string(errors, field, strlen(field));
    ts_buf_puts(errors, ",\"message\":");
    ts_buf_json_string(errors, message, strlen(message));
    return ts_buf_puts(errors, "}");
}

bool ca_json_count(const cJSON *v, int64_t *out)
{
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 9007199254740991.0) ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return false;
    *out = (int64_t)v->valuedouble;
    return true;
}

int ca_doc_check(const cJSON *doc, const char *path_id, ts_buf_t *errors)
{
    int n = 0;
    if (!cJSON_IsObject(doc)) {
        add_error(errors, &n, "", "a document must be a JSON object");
        return n;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "id");
    if (id) {
        if (!cJSON_IsString(id) || !ts_valid_id(id->valuestring, strlen(id->valuestring)))
            add_error(errors, &n, "id", "must be a string of 1-64 characters [A-Za-z0-9_-]");
        else if (path_id && strcmp(id->valuestring, path_id) != 0)
            add_error(errors, &n, "id", "cannot be changed");
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "version");
    int64_t version;
    if (v && !cJSON_IsNull(v) && !ca_json_count(v, &version))
        add_error(errors, &n, "version", "must be a non-negative integer (assigned by the server)");
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(doc, "updated_at");
    if (u && !cJSON_IsNull(u) && !cJSON_IsString(u))
        add_error(errors, &n, "updated_at", "must be an RFC 3339 string (assigned by the server)");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(doc, "deleted");
    if (d && !cJSON_IsNull(d) && !cJSON_IsBool(d))
        add_error(errors, &n, "deleted", "must be a boolean");
    else if (cJSON_IsTrue(d))
        add_error(errors, &n, "deleted", "use DELETE to delete a document");
    return n;
}

int ca_doc_numbers(const cJSON *doc, ts_buf_t *errors)
{
    if (!ts_json_overflow(doc, NULL)) /* the usual case: one walk, no names */
        return 0;
    int n = 0;
    ts_buf_t path = {0};
    ts_json_overflow(doc, &path);
    add_error(errors, &n, path.data ? path.data : "",
              "a number too large for JSON (it would not read back)");
    ts_buf_free(&path);
    return n;
}

char *ca_doc_render(cJSON *src, const char *id, int64_t version, bool tombstone)
{
    char now[32];
    ts_rfc3339(ts_wall_ms(), now);
    cJSON *out = cJSON_CreateObject();
    char *text = NULL;
    if (!out || !cJSON_AddStringToObject(out, "id", id) ||
        !cJSON_AddNumberToObject(out, "version", (double)version) ||
        !cJSON_AddStringToObject(out, "updated_at", now))
        goto done;
    if (tombstone) {
        if (!cJSON_AddTrueToObject(out, "deleted"))
            goto done;
    } else if (src) {
        static const char *reserved[] = {"id", "version", "updated_at", "deleted"};
        for (size_t i = 0; i < 4; i++)
            cJSON_DeleteItemFromObjectCaseSensitive(src, reserved[i]);
        while (src->child) {
            cJSON *item = cJSON_DetachItemViaPointer(src, src->child);
            if (!cJSON_AddItemToObject(out, item->string, item)) {
                cJSON_Delete(item);
                goto done;
            }
        }
    }
    text = cJSON_PrintUnformatted(out);
done:
    cJSON_Delete(out);
    cJSON_Delete(src);
    return text;
}

char *ca_doc_render_text(const char *text, size_t len, const char *id, int64_t version)
{
    static const char *reserved[] = {"version", "updated_at", "deleted"};
    const char *v;
    size_t vn, idn = strlen(id);
    if (len < 2 || text[0] != '{')
        return NULL;
    for (size_t i = 0; i < 3; i++)
        if (ts_json_text_field(text, len, reserved[i], strlen(reserved[i]), &v, &vn))
            return NULL;
    const char *rest; /* what follows the id member: "," or "}" onwards */
    if (ts_json_text_field(text, len, "id", 2, &v, &vn)) {
        if (v != text + 6 || vn != idn + 2 || memcmp(v + 1, id, idn) != 0)
            return NULL; /* not first, or another id: the tree knows */
        rest = v + vn;
    } else {
        rest = NULL;
    }
    char now[32];
    ts_rfc3339(ts_wall_ms(), now);
    ts_buf_t b = {0};
    int rc = ts_buf_reserve(&b, len + idn + 80);
    rc |= ts_buf_puts(&b, "{\"id\":");
    rc |= ts_buf_json_string(&b, id, idn);
    rc |= ts_buf_printf(&b, ",\"version\":%" PRId64 ",\"updated_at\":\"%s\"", version, now);
    if (rest)
        rc |= ts_buf_append(&b, rest, len - (size_t)(rest - text));
    else if (text[1] == '}')
        rc |= ts_buf_puts(&b, "}");
    else
        rc |= ts_buf_puts(&b, ",") | ts_buf_append(&b, text + 1, len - 1);
    if (rc) {
        ts_buf_free(&b);
        return NULL;
    }
    return ts_buf_take(&b, NULL);
}

/* Returns true when the stored version does not satisfy If-Match. */
static bool stale(const ca_write_t *w, int64_t version)
{
    return w->has_if_match && w->if_match >= 0 && w->if_match != version;
}

static void conflict(ca_reply_t *r, const char *current)
{
    r->status = 409;
    ts_buf_printf(&r->body, "{\"error\":\"conflict\",\"current\":%s}", current);
}

/* The decision part of a write; the caller holds the lock and an open
 * transaction. Sets r (status, body) and, when something is to be stored,
 * *body_out (malloc'd) with *version_out and *tomb_out. Returns 0 or -1. */
static int decide(ca_db_t *db, const ca_write_t *w, ca_reply_t *r, char **body_out,
                  int64_t *version_out, bool *tomb_out)
{
    sqlite3_bind_text(db->get, 1, w->coll, -1, SQLITE_STATIC);
    sqlite3_bind_text(db->get, 2, w->id, -1, SQLITE_STATIC);
    int step = sqlite3_step(db->get);
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        sqlite3_reset(db->get);
        return -1;
    }
    bool exists = step == SQLITE_ROW;
    int64_t version = exists ? sqlite3_column_int64(db->get, 0) : 0;
    bool deleted = exists && sqlite3_column_int(db->get, 1);
    char *current = exists ? strdup((const char *)sqlite3_column_text(db->get, 2)) : NULL;
    sqlite3_reset(db->get);
    if (exists && !current)
        return -1;
    bool live = exists && !deleted;
    int rc = 0;
    *body_out = NULL;
    *tomb_out = false;
    *version_out = version + 1; /* a re-created id continues after its tombstone */

    if (w->op == CA_OP_CREATE) {
        if (live) {
            conflict(r, current);
        } else if (!exists && w->rendered) {
            *body_out = strdup(w->rendered);
            rc = *body_out ? 0 : -1;
            r->status = 201;
        } else {
            cJSON *copy = cJSON_Duplicate(w->doc, 1);
            *body_out = copy ? ca_doc_render(copy, w->id, *version_out, false) : NULL;
            rc = *body_out ? 0 : -1;
            r->status = 201;
        }
    } else if (!live) {
        r->status = 404;
        ts_buf_puts(&r->body, "{\"error\":\"not_found\"}");
    } else if (stale(w, version)) {
        conflict(r, current);
    } else if (w->op == CA_OP_DELETE) {
        *body_out = ca_doc_render(NULL, w->id, *version_out, true);
        *tomb_out = true;
        rc = *body_out ? 0 : -1;
        r->status = 204;
    } else {
        cJSON *merged = ts_json_merge_patch(cJSON_Parse(current), w->doc);
        ts_buf_t errors = {0};
        if (!merged) {
            rc = -1;
        } else if (ca_doc_check(merged, w->id, &errors) > 0) {
            r->status = 422;
            ts_buf_printf(&r->body, "{\"errors\":[%s]}", errors.data);
            cJSON_Delete(merged);
        } else {
            *body_out = ca_doc_render(merged, w->id, *version_out, false);
            rc = *body_out ? 0 : -1;
            r->status = 200;
        }
        ts_buf_free(&errors);
    }
    if (*body_out && !*tomb_out && rc == 0)
        ts_buf_puts(&r->body, *body_out);
    free(current);
    return rc;
}

/* Looks the key up; 1 when answered from the table (replay or mismatch). */
static int replay(ca_db_t *db, const ca_write_t *w, ca_reply_t *r)
{
    sqlite3_bind_text(db->idem_get, 1, w->idem_key, -1, SQLITE_STATIC);
    int found = 0;
    if (sqlite3_step(db->idem_get) == SQLITE_ROW) {
        found = 1;
        if (strcmp((const char *)sqlite3_column_text(db->idem_get, 0), w->fingerprint) == 0) {
            r->status = sqlite3_column_int(db->idem_get, 1);
            ts_buf_append(&r->body, sqlite3_column_text(db->idem_get, 2),
                          (size_t)sqlite3_column_bytes(db->idem_get, 2));
            r->replayed = true;
            atomic_fetch_add(&ca_stats.idempotent_replays, 1);
        } else {
            r->status = 422;
            atomic_fetch_add(&ca_stats.idempotency_mismatches, 1);
            ts_buf_puts(&r->body, "{\"errors\":[{\"field\":\"Idempotency-Key\",\"message\":"
                                  "\"this key was used for a different request\"}]}");
        }
    }
    sqlite3_reset(db->idem_get);
    return found;
}

/* Applies one write inside the open transaction. Sets *cursor when a
 * document row was written. Returns 0, or -1 on a storage error. */
static int apply_one(ca_db_t *db, const ca_write_t *w, ca_reply_t *r, int64_t *cursor)
{
    char *body = NULL;
    int64_t version = 0;
    bool tomb = false;
    *cursor = 0;
    ts_buf_reset(&r->body);
    r->status = 500;
    r->replayed = false;
    if (w->idem_key && replay(db, w, r))
        return 0;
    if (decide(db, w, r, &body, &version, &tomb) < 0)
        goto fail;
    if (body) {
        *cursor = db->head + 1;
        sqlite3_stmt *st = db->upsert;
        sqlite3_bind_text(st, 1, w->coll, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, w->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, version);
        sqlite3_bind_int(st, 4, tomb);
        sqlite3_bind_int64(st, 5, *cursor);
        sqlite3_bind_text(st, 6, body, -1, SQLITE_STATIC);
        if (exec_stmt(st) < 0)
            goto fail;
        db->head = *cursor; /* later writes of the batch see it; undone on rollback */
    }
    if (w->idem_key) {
        sqlite3_stmt *st = db->idem_put;
        sqlite3_bind_text(st, 1, w->idem_key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, w->fingerprint, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, r->status);
        sqlite3_bind_text(st, 4, r->body.data ? r->body.data : "", (int)r->body.len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, ts_wall_ms());
        if (exec_stmt(st) < 0)
            goto fail;
    }
    free(body);
    return 0;
fail:
    ts_error(MOD, "write %s/%s failed: %s", w->coll, w->id, sqlite3_errmsg(db->sql));
    free(body);
    return -1;
}

static void storage_error(ca_reply_t *r)
{
    ts_buf_reset(&r->body);
    r->status = 500;
    r->cursor = 0;
    r->replayed = false;
    ts_buf_puts(&r->body, "{\"error\":\"storage_error\"}");
}

/* Runs writes [0, n) in one transaction; caller holds the lock. 0 or -1 (all
 * rolled back, head restored). */
static int batch_txn(ca_db_t *db, const ca_write_t *const *ws, ca_reply_t *const *rs, size_t n)
{
    int64_t head0 = db->head;
    if (exec_stmt(db->begin) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (apply_one(db, ws[i], rs[i], &rs[i]->cursor) < 0)
            goto rollback;
    }
    if (exec_stmt(db->commit) < 0)
        goto rollback;
    atomic_fetch_add(&ca_stats.commits, 1);
    for (size_t i = 0; i < n; i++)
        if (rs[i]->cursor)
            atomic_fetch_add(&ca_stats.applied_writes, 1);
    return 0;
rollback:
    exec_stmt(db->rollback);
    db->head = head0;
    for (size_t i = 0; i < n; i++) {
        if (rs[i]->replayed)
            atomic_fetch_sub(&ca_stats.idempotent_replays, 1);
        storage_error(rs[i]);
    }
    return -1;
}

int64_t ca_db_write_batch(ca_db_t *db, const ca_write_t *const *ws, ca_reply_t *const *rs, size_t n)
{
    pthread_mutex_lock(&db->lock);
    if (batch_txn(db, ws, rs, n) < 0 && n > 1) {
        /* One bad write must not fail its neighbours: retry one by one. */
        for (size_t i = 0; i < n; i++)
            batch_txn(db, ws + i, rs + i, 1);
    }
    int64_t head = db->head;
    pthread_mutex_unlock(&db->lock);
    return head;
}

int ca_db_write(ca_db_t *db, const ca_write_t *w, ca_reply_t *r)
{
    ca_db_write_batch(db, &w, &r, 1);
    return r->status == 500 ? -1 : 0;
}

/* ---- demo data ---------------------------------------------------------- */

int ca_db_seed_patients(ca_db_t *db, const char *coll, int n)
{
    /* Invented names; phone numbers in 555-0100..0199, reserved for fiction. */
    static const char *first[] = {"Alex", "Sam", "Robin", "Kim", "Jo", "Max", "Lee", "Noa"};
    static const char *last[] = {"Example", "Sample", "Testperson", "Placeholder", "Demo"};
    enum { CHUNK = 500 };
    ca_write_t ws[CHUNK];
    ca_reply_t rs[CHUNK];
    const ca_write_t *wp[CHUNK];
    ca_reply_t *rp[CHUNK];
    char ids[CHUNK][16], keys[CHUNK][32];
    int created = 0;
    for (int base = 0; base < n; base += CHUNK) {
        int m = n - base < CHUNK ? n - base : CHUNK;
        for (int j = 0; j < m; j++) {
            int i = base + j + 1;
            snprintf(ids[j], sizeof ids[j], "pat-%04d", i);
            snprintf(keys[j], sizeof keys[j], "demo-seed:%s", ids[j]);
            char name[64], dob[16], phone[24];
            snprintf(name, sizeof name, "%s %s", first[i % 8], last[i % 5]);
            snprintf(dob, sizeof dob, "%04d-%02d-%02d", 1950 + i % 50, 1 + i % 12, 1 + i % 28);
            snprintf(phone, sizeof phone, "+1-555-01%02d", i % 100);
            cJSON *doc = cJSON_CreateObject();
            if (!doc || !cJSON_AddStringToObject(doc, "name", name) ||
                !cJSON_AddStringToObject(doc, "date_of_birth", dob) ||
                !cJSON_AddStringToObject(doc, "phone", phone)) {
                cJSON_Delete(doc);
                for (int k = 0; k < j; k++) {
                    free((void *)ws[k].rendered);
                    cJSON_Delete((cJSON *)ws[k].doc);
                }
                return -1;
            }
            ws[j] = (ca_write_t){.op = CA_OP_CREATE,
                                 .coll = coll,
                                 .id = ids[j],
                                 .doc = doc, /* for an id whose tombstone is there */
                                 .rendered = ca_doc_render(cJSON_Duplicate(doc, 1), ids[j], 1,
                                                           false),
                                 .idem_key = keys[j],
                                 .fingerprint = "demo-seed"};
            rs[j] = (ca_reply_t){0};
            wp[j] = &ws[j];
            rp[j] = &rs[j];
        }
        ca_db_write_batch(db, wp, rp, (size_t)m);
        int failed = 0;
        for (int j = 0; j < m; j++) {
            created += rs[j].status == 201 && !rs[j].replayed;
            failed |= rs[j].status == 500 || !ws[j].rendered;
            free((void *)ws[j].rendered);
            cJSON_Delete((cJSON *)ws[j].doc);
            ts_buf_free(&rs[j].body);
        }
        if (failed)
            return -1;
    }
    return created;
}
