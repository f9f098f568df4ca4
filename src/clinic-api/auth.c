/* auth.c — token table: hash buckets under a rwlock, plus one queue per
 * kind in issue order. All tokens of a kind live equally long, so each queue
 * is in expiry order too: an issue drops the expired tokens at the queue
 * heads (each token once: amortized O(1)) and, at the cap, the oldest one of
 * its kind. */
#include "auth.h"

#include "control.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#define NBUCKETS 65536 /* a power of two; about 1.5 tokens per bucket at the default cap */

typedef struct token {
    struct token *hnext, **hpprev; /* hash chain */
    struct token *qnext;           /* its kind's queue, oldest first */
    char text[65];                 /* 64 hex chars */
    bool refresh;                  /* refresh token or access token */
    int64_t expires_ms;            /* monotonic clock */
} token_t;

typedef struct {
    token_t *head, *tail;
    size_t count;
} queue_t;

static struct {
    pthread_rwlock_t lock;
    token_t *buckets[NBUCKETS];
    queue_t queues[2]; /* [0] access, [1] refresh */
    char *client_id;
    char *client_secret;
    int ttl_s, refresh_ttl_s;
    size_t max_tokens; /* per kind */
} A = {.lock = PTHREAD_RWLOCK_INITIALIZER};

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h & (NBUCKETS - 1);
}

static int64_t now_ms(void)
{
    return ts_mono_us() / 1000;
}

int ca_auth_init(const char *client_id, const char *client_secret, int token_ttl_s,
                 int refresh_ttl_s, size_t max_tokens)
{
    A.client_id = strdup(client_id);
    A.client_secret = strdup(client_secret);
    A.ttl_s = token_ttl_s;
    A.refresh_ttl_s = refresh_ttl_s;
    A.max_tokens = max_tokens ? max_tokens : 1;
    return A.client_id && A.client_secret ? 0 : -1;
}

void ca_auth_shutdown(void)
{
    for (int k = 0; k < 2; k++) {
        while (A.queues[k].head) {
            token_t *t = A.queues[k].head;
            A.queues[k].head = t->qnext;
            explicit_bzero(t, sizeof *t);
            free(t);
        }
        A.queues[k] = (queue_t){0};
    }
    memset(A.buckets, 0, sizeof A.buckets);
    if (A.client_secret)
        explicit_bzero(A.client_secret, strlen(A.client_secret));
    free(A.client_id);
    free(A.client_secret);
    A.client_id = A.client_secret = NULL;
}

/* Removes the oldest token of queue q; caller holds the write lock. */
static void drop_oldest(queue_t *q)
{
    token_t *t = q->head;
    q->head = t->qnext;
    if (!q->head)
        q->tail = NULL;
    q->count--;
    *t->hpprev = t->hnext;
    if (t->hnext)
        t->hnext->hpprev = t->hpprev;
    explicit_bzero(t, sizeof *t);
    free(t);
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
    memcpy(out, t->text, 65);
    uint32_t b = hash(t->text);
    pthread_rwlock_wrlock(&A.lock);
    /* The clock is read under the lock, so each queue stays in expiry order. */
    int64_t now = now_ms();
    t->expires_ms = now + (int64_t)(refresh ? A.refresh_ttl_s : A.ttl_s) * 1000;
    for (int k = 0; k < 2; k++)
        while (A.queues[k].head && A.queues[k].head->expires_ms <= now)
            drop_oldest(&A.queues[k]);
    queue_t *q = &A.queues[refresh];
    if (q->count >= A.max_tokens)
        drop_oldest(q); /* the cap: the oldest of its kind goes (401 / invalid_grant) */
    t->hnext = A.buckets[b];
    if (t->hnext)
        t->hnext->hpprev = &t->hnext;
    t->hpprev = &A.buckets[b];
    A.buckets[b] = t;
    if (q->tail)
        q->tail->qnext = t;
    else
        q->head = t;
    q->tail = t;
    q->count++;
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
    int64_t now = now_ms();
    int found = 0;
    uint32_t b = hash(key);
    pthread_rwlock_rdlock(&A.lock);
    for (token_t *t = A.buckets[b]; t; t = t->hnext) {
        if (t->refresh == refresh && memcmp(t->text, key, 64) == 0) {
            found = t->expires_ms > now;
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

/* Finds key in a form body; returns a malloc'd decoded value or NULL. A
 * value that decodes to a NUL (%00) sets *nul: C strings would cut it there,
 * and "dev-secret%00x" must not pass for "dev-secret". */
static char *form_get(const char *body, size_t len, const char *key, bool *nul)
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
            if (memchr(v, '\0', form_decode(v, vlen)))
                *nul = true;
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
 * form-decoded, RFC 6749 §2.3.1). 0; -1 when the header is not Basic; 1
 * when the credentials hold a NUL (refused: see form_get). */
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
    if (memchr(out, '\0', o)) {
        free(out);
        return 1;
    }
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
    bool nul = memchr(*id, '\0', form_decode(*id, strlen(*id))) ||
               memchr(*secret, '\0', form_decode(*secret, strlen(*secret)));
    return nul ? 1 : 0;
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
    bool nul = false;
    char *grant = form_get(body, len, "grant_type", &nul);
    char *id = NULL, *secret = NULL;
    int rc, basic = basic_credentials(authorization, &id, &secret);
    if (basic < 0) {
        id = form_get(body, len, "client_id", &nul);
        secret = form_get(body, len, "client_secret", &nul);
    }
    bool client_ok = basic <= 0 && id && secret && same_secret(id, A.client_id) &&
                     same_secret(secret, A.client_secret);
    if (nul) {
        *status = 400;
        rc = ts_buf_puts(out, "{\"error\":\"invalid_request\","
                              "\"error_description\":\"form values must not contain NUL\"}");
    } else if (!grant) {
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
        char *given = form_get(body, len, "refresh_token", &nul);
        if (!given || nul || !lookup(given, strlen(given), true)) {
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
