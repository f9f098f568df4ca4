/* auth.c — token table: a fixed array of hash buckets under a rwlock.
 * Expired access tokens are swept when the table grows past a bound. */
#include "auth.h"

#include "control.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#define NBUCKETS 4096
#define SWEEP_AT 10000 /* sweep expired tokens once this many are stored */

typedef struct token {
    struct token *next;
    char text[65];      /* 64 hex chars */
    bool refresh;       /* refresh token (never expires) or access token */
    int64_t expires_ms; /* wall clock; access tokens only */
} token_t;

static struct {
    pthread_rwlock_t lock;
    token_t *buckets[NBUCKETS];
    size_t count;
    char *client_id;
    char *client_secret;
    int ttl_s;
} A = {.lock = PTHREAD_RWLOCK_INITIALIZER};

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h % NBUCKETS;
}

int ca_auth_init(const char *client_id, const char *client_secret, int token_ttl_s)
{
    A.client_id = strdup(client_id);
    A.client_secret = strdup(client_secret);
    A.ttl_s = token_ttl_s;
    return A.client_id && A.client_secret ? 0 : -1;
}

void ca_auth_shutdown(void)
{
    for (size_t i = 0; i < NBUCKETS; i++) {
        while (A.buckets[i]) {
            token_t *t = A.buckets[i];
            A.buckets[i] = t->next;
            free(t);
        }
    }
    A.count = 0;
    free(A.client_id);
    free(A.client_secret);
    A.client_id = A.client_secret = NULL;
}

/* Drops expired access tokens; caller holds the write lock. */
static void sweep(int64_t now)
{
    for (size_t i = 0; i < NBUCKETS; i++) {
        token_t **p = &A.buckets[i];
        while (*p) {
            if (!(*p)->refresh && (*p)->expires_ms <= now) {
                token_t *dead = *p;
                *p = dead->next;
                free(dead);
                A.count--;
            } else {
                p = &(*p)->next;
            }
        }
    }
}

/* Creates and stores a new token; copies its text to out. 0 or -1. */
static int issue(bool refresh, char out[65])
{
    uint8_t raw[32];
    if (getrandom(raw, sizeof raw, 0) != sizeof raw)
        return -1;
    token_t *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        t->text[2 * i] = hex[raw[i] >> 4];
        t->text[2 * i + 1] = hex[raw[i] & 15];
    }
    t->refresh = refresh;
    int64_t now = ts_wall_ms();
    t->expires_ms = now + (int64_t)A.ttl_s * 1000;
    memcpy(out, t->text, 65);
    pthread_rwlock_wrlock(&A.lock);
    if (A.count >= SWEEP_AT)
        sweep(now);
    uint32_t b = hash(t->text);
    t->next = A.buckets[b];
    A.buckets[b] = t;
    A.count++;
    pthread_rwlock_unlock(&A.lock);
    return 0;
}

/* 1 when text is a stored token of the given kind that is still valid. */
static int lookup(const char *text, size_t len, bool refresh)
{
    if (len != 64)
        return 0;
    char key[65];
    memcpy(key, text, 64);
    key[64] = '\0';
    int64_t now = ts_wall_ms();
    int found = 0;
    pthread_rwlock_rdlock(&A.lock);
    for (token_t *t = A.buckets[hash(key)]; t; t = t->next) {
        if (t->refresh == refresh && memcmp(t->text, key, 64) == 0) {
            found = refresh || t->expires_ms > now;
            break;
        }
    }
    pthread_rwlock_unlock(&A.lock);
    return found;
}

int ca_auth_check(const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return -1;
    const char *tok = authorization + 7;
    while (*tok == ' ')
        tok++;
    size_t len = strlen(tok);
    while (len && tok[len - 1] == ' ')
        len--;
    return lookup(tok, len, false) ? 0 : -1;
}

/* Decodes application/x-www-form-urlencoded text in place; returns length. */
static size_t form_decode(char *s, size_t len)
{
    size_t o = 0;
    int hi, lo;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '+') {
            s[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < len && (hi = ts_hex_value(s[i + 1])) >= 0 &&
                   (lo = ts_hex_value(s[i + 2])) >= 0) {
            s[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            s[o++] = s[i];
        }
    }
    s[o] = '\0';
    return o;
}

/* Finds key in a form body; returns a malloc'd decoded value or NULL. */
static char *form_get(const char *body, size_t len, const char *key)
{
    size_t klen = strlen(key);
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && body[end] != '&')
            end++;
        if (end - i > klen && memcmp(body + i, key, klen) == 0 && body[i + klen] == '=') {
            size_t vlen = end - i - klen - 1;
            char *v = malloc(vlen + 1);
            if (!v)
                return NULL;
            memcpy(v, body + i + klen + 1, vlen);
            form_decode(v, vlen);
            return v;
        }
        i = end + 1;
    }
    return NULL;
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Parses "Basic base64(id:secret)" into malloc'd id and secret (each
 * form-decoded, RFC 6749 §2.3.1). 0, or -1 when the header is not Basic. */
static int basic_credentials(const char *authorization, char **id, char **secret)
{
    if (!authorization || strncasecmp(authorization, "Basic ", 6) != 0)
        return -1;
    const char *p = authorization + 6;
    while (*p == ' ')
        p++;
    size_t n = strlen(p);
    char *out = malloc(n + 1);
    if (!out)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && p[i] != '='; i++) {
        int v = b64val(p[i]);
        if (v < 0) {
            free(out);
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)(acc >> bits & 0xff);
        }
    }
    out[o] = '\0';
    char *colon = memchr(out, ':', o);
    if (!colon) {
        free(out);
        return -1;
    }
    *colon = '\0';
    *id = strdup(out);
    *secret = strdup(colon + 1);
    free(out);
    if (!*id || !*secret) {
        free(*id);
        free(*secret);
        return -1;
    }
    form_decode(*id, strlen(*id));
    form_decode(*secret, strlen(*secret));
    return 0;
}

/* Compares without an early exit, so timing does not reveal the secret. */
static bool same_secret(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned diff = (unsigned)(la ^ lb);
    for (size_t i = 0; i < la && i < lb; i++)
        diff |= (unsigned)(a[i] ^ b[i]);
    return diff == 0;
}

/* Appends the token answer for a fresh access token and the refresh token. */
static int token_answer(const char *refresh, ts_buf_t *out, int *status)
{
    char access[65];
    if (issue(false, access) < 0) {
        *status = 500;
        return ts_buf_puts(out, "{\"error\":\"server_error\"}");
    }
    atomic_fetch_add(&ca_stats.tokens_issued, 1);
    *status = 200;
    return ts_buf_printf(out,
                         "{\"access_token\":\"%s\",\"token_type\":\"Bearer\",\"expires_in\":%d,"
                         "\"refresh_token\":\"%s\"}",
                         access, A.ttl_s, refresh);
}

int ca_auth_token(const char *body, size_t len, const char *authorization, int *status,
                  ts_buf_t *out)
{
    char *grant = form_get(body, len, "grant_type");
    char *id = NULL, *secret = NULL;
    int rc;
    if (basic_credentials(authorization, &id, &secret) < 0) {
        id = form_get(body, len, "client_id");
        secret = form_get(body, len, "client_secret");
    }
    bool client_ok =
        id && secret && same_secret(id, A.client_id) && same_secret(secret, A.client_secret);
    if (!grant) {
        *status = 400;
        rc = ts_buf_puts(out, "{\"error\":\"invalid_request\","
                              "\"error_description\":\"grant_type is required\"}");
    } else if (!client_ok) {
        *status = 401;
        rc = ts_buf_puts(out, "{\"error\":\"invalid_client\"}");
    } else if (strcmp(grant, "client_credentials") == 0) {
        char refresh[65];
        if (issue(true, refresh) < 0) {
            *status = 500;
            rc = ts_buf_puts(out, "{\"error\":\"server_error\"}");
        } else {
            rc = token_answer(refresh, out, status);
        }
    } else if (strcmp(grant, "refresh_token") == 0) {
        char *given = form_get(body, len, "refresh_token");
        if (!given || !lookup(given, strlen(given), true)) {
            *status = 400;
            rc = ts_buf_puts(out, "{\"error\":\"invalid_grant\"}");
        } else {
            rc = token_answer(given, out, status);
        }
        free(given);
    } else {
        *status = 400;
        rc = ts_buf_puts(out, "{\"error\":\"unsupported_grant_type\"}");
    }
    free(grant);
    free(id);
    free(secret);
    return rc;
}
