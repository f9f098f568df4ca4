/* auth.h — the OAuth2 token endpoint (RFC 6749 §4.4 client credentials and
 * §6 refresh) and bearer-token checks.
 *
 * Tokens are 256 random bits (getrandom) in hex, kept in memory only: a
 * restart invalidates them, and clients are expected to fetch new ones on 401.
 * Access tokens expire after token_ttl_s, refresh tokens after refresh_ttl_s
 * (not rotated: a refresh answers with the same one). At most max_tokens of
 * each kind are kept; one more evicts the oldest of its kind. */
#ifndef CLINIC_API_AUTH_H
#define CLINIC_API_AUTH_H

#include <stddef.h>

#include "therasync/util.h"

/* Returns 0, or -1 when memory ran out. Copies the strings. */
int ca_auth_init(const char *client_id, const char *client_secret, int token_ttl_s,
                 int refresh_ttl_s, size_t max_tokens);
void ca_auth_shutdown(void);

/* Checks an Authorization header value ("Bearer TOKEN"). 0 when the token
 * is a live access token, -1 otherwise (missing, unknown or expired). */
int ca_auth_check(const char *authorization);

/* Handles POST /oauth/token: form body plus optional Authorization (Basic).
 * Sets *status (200, 400 or 401) and appends the JSON answer to out. A
 * form value or Basic credential holding a NUL is refused (400
 * invalid_request, 401 invalid_client).
 * Returns 0, or -1 when memory ran out. */
int ca_auth_token(const char *body, size_t len, const char *authorization, int *status,
                  ts_buf_t *out);

#endif
