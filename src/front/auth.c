/* auth.c — client keys at the front door: ZeroMQ CURVE on the ROUTER and
 * the PUB socket, a ZAP handler that lets in the keys of the clients file
 * (and names each connection after its key), and the role check of every
 * call against methods.def's ROLE column.
 *
 * The check is made per message by the key's name against the list as it
 * is now: a key removed by a reload (policy.reload, SIGHUP) is refused on
 * connections it already has, not only on new ones. Without
 * security.clients_file none of this runs and every client is admin. */
#include "front/front_int.h"

#include <errno.h>
#include <sys/stat.h>
#include <zmq.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01" /* fixed by ZeroMQ (RFC 27) */
#define MAX_CLIENTS 4096
#define NAME_MAX_LEN 32 /* "key:" + name fits ts_envelope_t.client */

typedef struct {
    char name[NAME_MAX_LEN + 1];
    ts_role_t role;
    uint8_t key[32];
    char z85[41];
} client_key_t;

/* A connection that made a live query, with the key it made it with: a
 * reload that takes the key out ends its live queries (the cache would
 * otherwise go on sending it query.changed). */
typedef struct watcher {
    struct watcher *next;
    char z85[41];
    char name[NAME_MAX_LEN + 1];
    size_t route_len;
    unsigned char route[]; /* its routing id */
} watcher_t;

#define WATCHER_BUCKETS 1024
/* Connections remembered at most: one that closes is not seen here, so
 * this bounds what they cost (about 100 bytes each). */
#define MAX_WATCHERS 100000

struct front_auth {
    watcher_t *watchers[WATCHER_BUCKETS];
    size_t nwatchers;
    void *zap;   /* REP: ZeroMQ asks it about each CURVE handshake */
    char public_key[41], secret_key[41]; /* the daemon's, Z85 */
    client_key_t *keys; /* the clients file as last loaded */
    size_t nkeys;
    bool loaded;        /* once: a reload that fails keeps the list */
};

/* Copies the word after the first one of line (blanks between) into out. */
static void key_value(const char *p, char *out, size_t outlen)
{
    p += strspn(p, " \t");
    size_t n = strcspn(p, " \t\r\n");
    snprintf(out, outlen, "%.*s", (int)(n < outlen ? n : outlen - 1), p);
}

static bool z85_key(const char *text)
{
    uint8_t bin[32];
    return strlen(text) == 40 && zmq_z85_decode(bin, text) != NULL;
}

int ts_curve_read_key(const char *path, char public_key[41], char secret_key[41], char *err,
                      size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read key file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[256], value[64];
    public_key[0] = '\0';
    if (secret_key)
        secret_key[0] = '\0';
    int rc = 0;
    for (int n = 1; rc == 0 && fgets(line, sizeof line, f); n++) {
        const char *p = line + strspn(line, " \t");
        if (*p == '#' || *p == '\n' || *p == '\r' || !*p)
            continue;
        /* Z85 has '#' and '=': a key is only ever the word after its name */
        bool is_public = strncmp(p, "public ", 7) == 0, is_secret = strncmp(p, "secret ", 7) == 0;
        key_value(p + 6, value, sizeof value);
        if (!is_public && !is_secret) {
            snprintf(err, errlen, "%s:%d: a line is `public KEY` or `secret KEY`", path, n);
            rc = -1;
        } else if (!z85_key(value)) {
            snprintf(err, errlen, "%s:%d: a key is 40 characters of Z85 (therasync keygen)", path,
                     n);
            rc = -1;
        } else if (is_secret && secret_key) {
            memcpy(secret_key, value, 41);
        } else if (is_public) {
            memcpy(public_key, value, 41);
        }
    }
    explicit_bzero(line, sizeof line);
    explicit_bzero(value, sizeof value);
    fclose(f);
    if (rc == 0 && secret_key && !secret_key[0]) {
        snprintf(err, errlen, "%s holds no `secret` line (a key pair from therasync keygen)",
                 path);
        rc = -1;
    }
    if (rc == 0 && secret_key && !public_key[0] && zmq_curve_public(public_key, secret_key)) {
        snprintf(err, errlen, "%s: cannot derive the public key", path);
        rc = -1;
    }
    if (rc == 0 && !public_key[0]) {
        snprintf(err, errlen, "%s holds no public key", path);
        rc = -1;
    }
    return rc;
}

/* Reads the clients file: `NAME ROLE PUBLIC-KEY` a line, # comments. All
 * or nothing: 0 with *keys set, or -1 with the first fault in err. */
static int load_keys(const char *path, client_key_t **keys, size_t *nkeys, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    client_key_t *list = NULL;
    size_t n = 0;
    char line[512];
    int rc = 0;
    for (int ln = 1; rc == 0 && fgets(line, sizeof line, f); ln++) {
        char name[64] = "", role[16] = "", key[64] = "", extra[8];
        int fields = sscanf(line, "%63s %15s %63s %7s", name, role, key, extra);
        if (fields <= 0 || name[0] == '#')
            continue;
        client_key_t k = {.role = ts_role_lookup(role, strlen(role))};
        size_t len = strlen(name);
        if (fields != 3 || len > NAME_MAX_LEN ||
            strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
                len) {
            snprintf(err, errlen, "%s:%d: a line is NAME ROLE PUBLIC-KEY, NAME 1-%d of "
                                  "[A-Za-z0-9_.-]", path, ln, NAME_MAX_LEN);
            rc = -1;
        } else if (k.role == TS_ROLE_NONE) {
            snprintf(err, errlen, "%s:%d: the role is read, write or admin", path, ln);
            rc = -1;
        } else if (strlen(key) != 40 || !zmq_z85_decode(k.key, key)) {
            snprintf(err, errlen, "%s:%d: the public key is 40 characters of Z85", path, ln);
            rc = -1;
        } else if (n == MAX_CLIENTS) {
            snprintf(err, errlen, "%s: more than %d keys", path, MAX_CLIENTS);
            rc = -1;
        }
        for (size_t i = 0; rc == 0 && i < n; i++)
            if (strcmp(list[i].name, name) == 0 || memcmp(list[i].key, k.key, 32) == 0) {
                snprintf(err, errlen, "%s:%d: the name or the key of '%s' again", path, ln,
                         list[i].name);
                rc = -1;
            }
        if (rc == 0) {
            memcpy(k.name, name, len + 1);
            memcpy(k.z85, key, 41);
            list = ts_xrealloc(list, (n + 1) * sizeof *list);
            list[n++] = k;
        }
    }
    fclose(f);
    if (rc) {
        free(list);
        return -1;
    }
    *keys = list;
    *nkeys = n;
    return 0;
}

static const client_key_t *key_by_name(const front_auth_t *a, const char *name)
{
    for (size_t i = 0; name && i < a->nkeys; i++)
        if (strcmp(a->keys[i].name, name) == 0)
            return &a->keys[i];
    return NULL;
}

static const client_key_t *key_by_key(const front_auth_t *a, const void *key)
{
    for (size_t i = 0; i < a->nkeys; i++)
        if (memcmp(a->keys[i].key, key, 32) == 0)
            return &a->keys[i];
    return NULL;
}

static watcher_t **watcher_slot(front_auth_t *a, const unsigned char *route, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ route[i]) * 0x100000001b3ull;
    watcher_t **p = &a->watchers[h % WATCHER_BUCKETS];
    while (*p && ((*p)->route_len != len || memcmp((*p)->route, route, len) != 0))
        p = &(*p)->next;
    return p;
}

/* Remembers that e's connection, with key k, made a live query. */
static void watcher_add(front_auth_t *a, const ts_envelope_t *e, const client_key_t *k)
{
    uint32_t len = 0;
    if (e->route_len < 4)
        return;
    memcpy(&len, e->route, 4);
    watcher_t **p = watcher_slot(a, e->route + 4, len);
    if (*p || a->nwatchers >= MAX_WATCHERS)
        return;
    watcher_t *w = ts_xcalloc(1, sizeof *w + len);
    memcpy(w->z85, k->z85, sizeof w->z85);
    memcpy(w->name, k->name, sizeof w->name);
    w->route_len = len;
    memcpy(w->route, e->route + 4, len);
    *p = w;
    a->nwatchers++;
}

static const client_key_t *key_by_name(const front_auth_t *a, const char *name);

/* After a reload: the live queries of connections whose key is out end
 * (the cache drops them as it does a client gone). */
static void end_revoked_watchers(front_t *self)
{
    front_auth_t *a = self->auth;
    size_t ended = 0;
    for (size_t b = 0; b < WATCHER_BUCKETS; b++) {
        for (watcher_t **p = &a->watchers[b]; *p;) {
            watcher_t *w = *p;
            const client_key_t *k = key_by_name(a, w->name);
            if (k && strcmp(k->z85, w->z85) == 0) {
                p = &w->next;
                continue;
            }
            ts_gone_t *g = ts_xmalloc(sizeof *g + w->route_len);
            g->len = w->route_len;
            memcpy(g->id, w->route, w->route_len);
            if (ts_send_GONE(self->to_cache, &g, 1))
                free(g);
            *p = w->next;
            free(w);
            a->nwatchers--;
            ended++;
        }
    }
    if (ended)
        ts_info(LOG, "live queries of %zu connections with keys taken out ended", ended);
}

int front_auth_reload(front_t *self)
{
    front_auth_t *a = self->auth;
    if (!a)
        return 0;
    client_key_t *keys;
    size_t n;
    char err[512];
    if (load_keys(self->config->security.clients_file, &keys, &n, err, sizeof err)) {
        if (a->loaded)
            ts_error(LOG, "client keys not reloaded, the old list stays: %s", err);
        else
            ts_error(LOG, "security.clients_file: %s", err);
        return -1;
    }
    free(a->keys);
    a->keys = keys;
    a->nkeys = n;
    ts_info(LOG, "client keys loaded: %zu from %s", n, self->config->security.clients_file);
    if (a->loaded)
        end_revoked_watchers(self);
    a->loaded = true;
    return 0;
}

/* One ZAP request (RFC 27): version, request id, domain, address, routing
 * id, mechanism, then the client's long-term key for CURVE. The answer
 * names the key (ZeroMQ's User-Id on every message of that connection). */
static int on_zap(ts_loop_t *loop, void *socket, void *arg)
{
    (void)loop;
    front_t *self = arg;
    zmq_msg_t frames[8];
    int n = 0;
    for (bool more = true; more;) {
        zmq_msg_t scratch, *f = n < 8 ? &frames[n] : &scratch; /* keep the first 8 */
        zmq_msg_init(f);
        if (zmq_msg_recv(f, socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(f);
            if (n == 0)
                return 0;
            break;
        }
        more = zmq_msg_more(f);
        if (f == &scratch)
            zmq_msg_close(f);
        else
            n++;
    }
    const char *status = "400", *text = "key not allowed", *user = "";
    const client_key_t *k = NULL;
    if (n >= 7 && zmq_msg_size(&frames[5]) == 5 && memcmp(zmq_msg_data(&frames[5]), "CURVE", 5) == 0 &&
        zmq_msg_size(&frames[6]) == 32 && (k = key_by_key(self->auth, zmq_msg_data(&frames[6])))) {
        status = "200";
        text = "OK";
        user = k->name;
    } else if (n >= 7) {
        char key[41] = "?";
        if (zmq_msg_size(&frames[6]) == 32)
            zmq_z85_encode(key, zmq_msg_data(&frames[6]), 32);
        ts_warn(LOG, "refused a connection with a key not in the clients file: %s", key);
    }
    /* The reply carries the request id back (frame 1); a malformed
     * request still gets an answer, or ZeroMQ would wait for it. */
    zmq_send(socket, "1.0", 3, ZMQ_SNDMORE);
    if (n >= 2)
        zmq_send(socket, zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]), ZMQ_SNDMORE);
    else
        zmq_send(socket, "", 0, ZMQ_SNDMORE);
    zmq_send(socket, status, 3, ZMQ_SNDMORE);
    zmq_send(socket, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(socket, user, strlen(user), ZMQ_SNDMORE);
    /* The key itself as metadata (ZMTP encoding), X-Key on every message:
     * a name given to another key by a reload then stops matching. */
    unsigned char meta[1 + 5 + 4 + 40] = {5, 'X', '-', 'K', 'e', 'y', 0, 0, 0, 40};
    if (k)
        memcpy(meta + 10, k->z85, 40);
    zmq_send(socket, meta, k ? sizeof meta : 0, 0);
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
    return 0;
}

int front_auth_open(front_t *self, void *zctx)
{
    const ts_config_t *c = self->config;
    if (!ts_config_curve(c))
        return 0;
    char err[512];
    if (!zmq_has("curve")) {
        ts_error(LOG, "security.clients_file is set, but this libzmq has no CURVE");
        return -1;
    }
    front_auth_t *a = self->auth = ts_xcalloc(1, sizeof *a);
    if (ts_curve_read_key(c->security.curve_secret_file, a->public_key, a->secret_key, err,
                          sizeof err)) {
        ts_error(LOG, "security.curve_secret_file: %s", err);
        return -1;
    }
    struct stat st;
    if (stat(c->security.curve_secret_file, &st) == 0 && (st.st_mode & 077))
        ts_warn(LOG, "%s, the daemon's secret key, can be read by other users (chmod 600 it)",
                c->security.curve_secret_file);
    if (front_auth_reload(self))
        return -1;
    int zero = 0;
    a->zap = zmq_socket(zctx, ZMQ_REP);
    if (!a->zap || zmq_setsockopt(a->zap, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_bind(a->zap, ZAP_ENDPOINT)) {
        ts_error(LOG, "cannot bind %s: %s", ZAP_ENDPOINT, zmq_strerror(zmq_errno()));
        return -1;
    }
    ts_loop_reader(self->loop, a->zap, on_zap, self);
    ts_info(LOG, "clients need a key (CURVE); the daemon's public key is %s", a->public_key);
    return 0;
}

int front_auth_secure(const front_t *self, void *socket)
{
    const front_auth_t *a = self->auth;
    int one = 1;
    if (!a)
        return 0;
    /* A client without a key fails the handshake (it speaks NULL);
     * one with a key is let in only by on_zap. */
    return zmq_setsockopt(socket, ZMQ_CURVE_SERVER, &one, sizeof one) ||
                   zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, a->secret_key, 40) ||
                   zmq_setsockopt(socket, ZMQ_ZAP_DOMAIN, "therasync", 9)
               ? -1
               : 0;
}

void front_auth_close(front_t *self)
{
    front_auth_t *a = self->auth;
    if (!a)
        return;
    if (a->zap)
        zmq_close(a->zap);
    for (size_t b = 0; b < WATCHER_BUCKETS; b++)
        while (a->watchers[b]) {
            watcher_t *w = a->watchers[b];
            a->watchers[b] = w->next;
            free(w);
        }
    free(a->keys);
    explicit_bzero(a, sizeof *a);
    free(a);
    self->auth = NULL;
}

/* Refuses a call, whatever it was going to answer. */
static void deny(ts_call_t *call, ts_role_t needed, const char *message)
{
    cJSON_Delete(call->err_data);
    call->err_data = cJSON_CreateObject();
    if (needed)
        cJSON_AddStringToObject(call->err_data, "role_needed", ts_role_name(needed));
    ts_call_fail(call, TS_E_UNAUTHORIZED, "%s", message);
}

bool front_auth_check(front_t *self, ts_envelope_t *e, zmq_msg_t *frame)
{
    front_auth_t *a = self->auth;
    if (!a)
        return true; /* no keys configured: everyone is admin */
    const char *user = zmq_msg_gets(frame, "User-Id"), *key = zmq_msg_gets(frame, "X-Key");
    const client_key_t *k = key_by_name(a, user);
    if (k && (!key || strcmp(key, k->z85) != 0))
        k = NULL; /* the name now belongs to another key */
    /* The audit trail names the key, not the connection. */
    snprintf(e->client, sizeof e->client, "key:%s", user && *user ? user : "?");
    bool reload = false;
    for (size_t i = 0; i < e->ncalls; i++) {
        ts_call_t *call = &e->calls[i];
        ts_role_t needed = ts_method_info(call->method)->role;
        char message[128];
        if (!k) {
            snprintf(message, sizeof message, "the key '%s' is no longer allowed",
                     user ? user : "?");
            deny(call, TS_ROLE_NONE, message);
        } else if (k->role < needed) {
            snprintf(message, sizeof message, "%s needs the %s role; the key '%s' has %s",
                     ts_method_name(call->method), ts_role_name(needed), k->name,
                     ts_role_name(k->role));
            deny(call, needed, message);
        } else if (call->method == TS_M_AUDIT && k->role < TS_ROLE_ADMIN && !call->err_code) {
            /* read and write keys see the audit of their own writes */
            if (!call->params)
                call->params = cJSON_CreateObject();
            cJSON_DeleteItemFromObjectCaseSensitive(call->params, "client");
            cJSON_AddStringToObject(call->params, "client", e->client);
        } else if (call->method == TS_M_POLICY_RELOAD && !call->err_code) {
            reload = true;
        } else if (call->method == TS_M_SUBSCRIBE && !call->err_code) {
            watcher_add(a, e, k);
        }
    }
    if (reload) /* the keys reload with the policies */
        front_auth_reload(self);
    return k != NULL;
}

bool front_auth_event_bodies(const front_t *self)
{
    return !self->auth || self->config->security.event_bodies;
}

int ts_clients_file_check(const char *path, size_t *n, char *err, size_t errlen)
{
    client_key_t *keys = NULL;
    if (load_keys(path, &keys, n, err, errlen))
        return -1;
    free(keys);
    return 0;
}
