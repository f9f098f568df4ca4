/* fuzz_clinic_auth.c — clinic-api's token endpoint (src/clinic-api/auth.c)
 * on any request: its form decoding (application/x-www-form-urlencoded)
 * and Basic credentials (base64, then form-decoded).
 *
 * Input: the Authorization header, a newline, the form body (no newline:
 * no header). Held: a JSON answer, status 200/400/401 only, and a 200 only
 * for the right client: then the credentials given decode to exactly the
 * client's id and secret (a reference decoder here, so "secret%00x" or a
 * prefix cannot pass), and the access token answered is live for
 * ca_auth_check. */
#include "fuzz.h"

#include "clinic-api/auth.h"

#include <strings.h>

#define CLIENT_ID "fuzz-client"
#define CLIENT_SECRET "fuzz-secret"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    FUZZ_CHECK(ca_auth_init(CLIENT_ID, CLIENT_SECRET, 60, 600, 4) == 0, "init");
    return 0;
}

/* The form value of key in body (first one), %XX and + decoded; -1 when
 * absent, else its length into out (up to cap). */
static long form_value(const char *body, size_t len, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i <= len;) {
        const char *amp = memchr(body + i, '&', len - i);
        size_t end = amp ? (size_t)(amp - body) : len;
        if (end - i > klen && memcmp(body + i, key, klen) == 0 && body[i + klen] == '=') {
            size_t o = 0;
            for (size_t k = i + klen + 1; k < end && o < cap; k++) {
                int hi, lo;
                if (body[k] == '+')
                    out[o++] = ' ';
                else if (body[k] == '%' && k + 2 < end && (hi = ts_hex_value(body[k + 1])) >= 0 &&
                         (lo = ts_hex_value(body[k + 2])) >= 0)
                    out[o++] = (char)(hi << 4 | lo), k += 2;
                else
                    out[o++] = body[k];
            }
            return (long)o;
        }
        if (!amp)
            break;
        i = end + 1;
    }
    return -1;
}

static bool is(const char *got, long n, const char *want)
{
    return n == (long)strlen(want) && memcmp(got, want, (size_t)n) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nl = memchr(data, '\n', size);
    char *header = NULL;
    const char *body = (const char *)data;
    size_t blen = size;
    if (nl) {
        size_t hlen = (size_t)(nl - (const char *)data);
        header = malloc(hlen + 1);
        memcpy(header, data, hlen);
        header[hlen] = '\0'; /* a header is a C string: it ends at a NUL */
        body = nl + 1;
        blen = size - hlen - 1;
    }
    char *copy = malloc(blen ? blen : 1); /* exactly blen bytes, for ASan */
    memcpy(copy, body, blen);
    ts_buf_t out = {0};
    int status = 0;
    FUZZ_CHECK(ca_auth_token(copy, blen, header, &status, &out) == 0, "out of memory");
    FUZZ_CHECK(status == 200 || status == 400 || status == 401, "status %d", status);
    cJSON *answer = fuzz_parse(out.data, out.len);
    FUZZ_CHECK(cJSON_IsObject(answer), "answer %s", out.data);
    if (status == 200) {
        char v[256];
        bool basic = header && strncasecmp(header, "Basic ", 6) == 0;
        if (!basic) { /* the form's credentials (a Basic header has its own decoding) */
            long n = form_value(copy, blen, "client_id", v, sizeof v);
            FUZZ_CHECK(is(v, n, CLIENT_ID), "200 for client_id %.*s", (int)(n > 0 ? n : 0), v);
            n = form_value(copy, blen, "client_secret", v, sizeof v);
            FUZZ_CHECK(is(v, n, CLIENT_SECRET), "200 for a secret %.*s", (int)(n > 0 ? n : 0),
                       v);
        }
        long n = form_value(copy, blen, "grant_type", v, sizeof v);
        FUZZ_CHECK(is(v, n, "client_credentials"), "200 for grant_type %.*s",
                   (int)(n > 0 ? n : 0), v);
        const char *token = ts_json_string(answer, "access_token");
        FUZZ_CHECK(token && strlen(token) == 64, "no access token: %s", out.data);
        char bearer[80];
        snprintf(bearer, sizeof bearer, "Bearer %s", token);
        FUZZ_CHECK(ca_auth_check(bearer) == 0, "the token answered is not live");
    }
    (void)ca_auth_check(header);
    cJSON_Delete(answer);
    ts_buf_free(&out);
    free(copy);
    free(header);
    return 0;
}
