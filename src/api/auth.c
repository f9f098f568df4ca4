/* auth.c — the OAuth2 token of the API actor.
 *
 * One shared fetch at a time (client credentials, or the refresh grant
 * once a refresh token came): calls wait for it in WAIT_TOKEN and start
 * when it is there; when it fails, each waiting call counts one failed
 * attempt. The token's header line is shared by the calls that send it
 * (auth_t, reference counted) and wiped with its last reference. */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

void api_auth_drop(auth_t **a)
{
    if (*a && --(*a)->refs == 0) {
        explicit_bzero((*a)->line, strlen((*a)->line));
        free(*a);
    }
    *a = NULL;
}

bool api_retry_unauthorized(api_t *self, call_t *c, ts_api_error_t error)
{
    if (error != TS_API_UNAUTHORIZED || !self->opts.client_id || c->refreshed)
        return false;
    /* One refresh per request; requests that got 401 with the same token
     * share one fetch (the first drops the token, the rest wait). */
    c->refreshed = true;
    c->res->token_refreshes++;
    api_easy_put(self, c->easy);
    c->easy = NULL;
    if (c->token_gen == self->token_gen)
        api_auth_drop(&self->auth);
    api_start(self, c);
    return true;
}

static void token_fail(api_t *self, ts_api_error_t error, long status, const char *why,
                       bool unreachable)
{
    ts_warn(LOG, "token request failed: %s (status %ld)%s%s", ts_api_error_name(error), status,
            why ? ": " : "", why ? why : "");
    /* Every waiting call counts this as one failed attempt; a token
     * endpoint refused at the connect (or not resolved) says, as for any
     * attempt, that the server is not there. */
    call_t *next;
    for (call_t *c = self->lists[C_WAIT_TOKEN].head; c; c = next) {
        next = c->next;
        c->res->unreachable = unreachable;
        if (c->req->stream) {
            if (ts_api_error_retryable(error)) {
                c->failed_connects++;
                int64_t delay =
                    api_backoff_ms(self, self->opts.stream_backoff_base_ms,
                                   self->opts.stream_backoff_cap_ms, c->failed_connects);
                api_stream_state(self, c, TS_API_STREAM_DROPPED, error, status, delay);
                api_backoff(self, c, delay);
            } else {
                api_stream_state(self, c, TS_API_STREAM_REFUSED, error, status, 0);
                api_finish(self, c, error, status, why);
            }
            continue;
        }
        c->res->attempts++;
        if (ts_api_error_retryable(error) && c->res->attempts < c->max_attempts &&
            !(unreachable && c->req->unreachable_final))
            api_backoff(self, c,
                        api_backoff_ms(self, self->opts.backoff_base_ms, self->opts.backoff_cap_ms,
                                       c->res->attempts));
        else
            api_finish(self, c, error, status, why ? why : "token request failed");
    }
    api_pump(self);
}

/* The token answer's body (small: 64 KiB at most). */
static size_t on_token_body(char *data, size_t size, size_t n, void *arg)
{
    ts_buf_t *b = arg;
    size_t len = size * n;
    if (b->len + len > 65536)
        return 0;
    ts_buf_append(b, data, len);
    return len;
}

static int form_add(api_t *self, ts_buf_t *b, const char *key, const char *value)
{
    char *esc = curl_easy_escape(self->token_easy, value ? value : "", 0);
    if (!esc)
        return -1;
    int rc = ts_buf_printf(b, "%s%s=%s", b->len ? "&" : "", key, esc);
    curl_free(esc);
    return rc;
}

/* Starts the shared token fetch unless one is running. */
void api_ensure_token(api_t *self)
{
    if (self->token_easy)
        return;
    self->token_easy = api_easy_get(self);
    if (!self->token_easy) {
        token_fail(self, TS_API_INTERNAL, 0, "out of memory", false);
        return;
    }
    self->token_refresh_grant = self->refresh_token != NULL;
    ts_buf_t form = {0};
    int rc = form_add(self, &form, "grant_type",
                      self->refresh_token ? "refresh_token" : "client_credentials");
    if (self->refresh_token)
        rc |= form_add(self, &form, "refresh_token", self->refresh_token);
    rc |= form_add(self, &form, "client_id", self->opts.client_id);
    rc |= form_add(self, &form, "client_secret", self->opts.client_secret);
    if (rc || form.len >= sizeof self->token_form) {
        ts_buf_free(&form);
        CURL *e = self->token_easy;
        self->token_easy = NULL;
        api_easy_put(self, e);
        token_fail(self, TS_API_INTERNAL, 0, "token form too large", false);
        return;
    }
    memcpy(self->token_form, form.data, form.len + 1);
    explicit_bzero(form.data, form.len);
    ts_buf_free(&form);
    ts_buf_reset(&self->token_body);
    CURL *e = self->token_easy;
    api_easy_use(self, e, self->opts.token_url, self->opts.timeout_ms);
    curl_easy_setopt(e, CURLOPT_PRIVATE, NULL);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, self->token_form);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(self->token_form));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, NULL);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, NULL);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);
    ts_debug(LOG, "token request (%s grant)",
             self->token_refresh_grant ? "refresh_token" : "client_credentials");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_token_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &self->token_body);
    if (curl_multi_add_handle(self->multi, e) != CURLM_OK) {
        self->token_easy = NULL;
        api_easy_put(self, e);
        token_fail(self, TS_API_INTERNAL, 0, "curl_multi_add_handle", false);
    }
}

void api_token_done(api_t *self, CURLcode rc)
{
    CURL *e = self->token_easy;
    self->token_easy = NULL;
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    api_easy_put(self, e);
    explicit_bzero(self->token_form, sizeof self->token_form);
    cJSON *j = rc == CURLE_OK && status == 200
                   ? cJSON_ParseWithLength(self->token_body.data, self->token_body.len)
                   : NULL;
    if (self->token_body.data)
        explicit_bzero(self->token_body.data, self->token_body.len);
    ts_buf_reset(&self->token_body);
    const cJSON *access = cJSON_GetObjectItemCaseSensitive(j, "access_token");
    if (cJSON_IsString(access) && *access->valuestring) {
        static const char prefix[] = "Authorization: Bearer ";
        size_t len = strlen(access->valuestring);
        api_auth_drop(&self->auth);
        self->auth = ts_xmalloc(sizeof *self->auth + sizeof prefix + len);
        self->auth->refs = 1;
        memcpy(self->auth->line, prefix, sizeof prefix - 1);
        memcpy(self->auth->line + sizeof prefix - 1, access->valuestring, len + 1);
        explicit_bzero(access->valuestring, len);
        const cJSON *refresh = cJSON_GetObjectItemCaseSensitive(j, "refresh_token");
        if (cJSON_IsString(refresh) && *refresh->valuestring) {
            free(self->refresh_token);
            self->refresh_token = ts_xstrdup(refresh->valuestring);
        }
        const cJSON *exp = cJSON_GetObjectItemCaseSensitive(j, "expires_in");
        int expires_in = cJSON_IsNumber(exp) ? exp->valueint : -1;
        cJSON_Delete(j);
        self->token_gen++;
        ts_info(LOG, "token obtained (expires in %d s)", expires_in);
        while (self->lists[C_WAIT_TOKEN].head)
            api_begin_attempt(self, self->lists[C_WAIT_TOKEN].head);
        return;
    }
    cJSON_Delete(j);
    if (self->token_refresh_grant && (status == 400 || status == 401)) {
        /* The refresh token is no good: start over with the client's credentials. */
        free(self->refresh_token);
        self->refresh_token = NULL;
        api_ensure_token(self);
        return;
    }
    ts_api_error_t error;
    if (status == 400 || status == 401)
        error = TS_API_UNAUTHORIZED;
    else if (rc == CURLE_OK && status == 200)
        error = TS_API_BAD_RESPONSE;
    else {
        call_t probe = {0};
        const char *why;
        error = api_classify(&probe, rc, status, &why);
        if (error == TS_API_OK)
            error = TS_API_BAD_RESPONSE;
    }
    token_fail(self, error, status, error == TS_API_BAD_RESPONSE ? "bad token answer" : NULL,
               rc != CURLE_OK && api_unreachable(rc));
}
