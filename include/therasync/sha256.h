/* sha256.h — SHA-256 (FIPS 180-4), incremental and one-shot.
 *
 * Used for the Clinic API digest (`GET /v1/{coll}/digest`): both the reference
 * server and the engine compute the same hash over `id:version:content\n`
 * lines (content: ts_json_content_sha256 of the body, therasync/json.h). */
#ifndef THERASYNC_SHA256_H
#define THERASYNC_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];     /* chaining state */
    uint64_t total;    /* bytes hashed so far */
    uint8_t block[64]; /* pending partial block */
    size_t used;       /* bytes in block */
} ts_sha256_t;

void ts_sha256_init(ts_sha256_t *ctx);
void ts_sha256_update(ts_sha256_t *ctx, const void *data, size_t len);
/* Writes the 32-byte digest; ctx must be re-initialised before reuse. */
void ts_sha256_final(ts_sha256_t *ctx, uint8_t out[32]);
/* One-shot: lowercase hex digest of data into hex (64 chars + NUL). */
void ts_sha256_hex(const void *data, size_t len, char hex[65]);
/* Lowercase hex of a 32-byte digest (64 chars + NUL). */
void ts_sha256_to_hex(const uint8_t digest[32], char hex[65]);

#endif
