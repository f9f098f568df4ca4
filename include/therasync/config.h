/* config.h — the daemon's settings: defaults, a Lua config file, flags.
 * Flags win over the file; the file wins over defaults. */
#ifndef THERASYNC_CONFIG_H
#define THERASYNC_CONFIG_H

#include "therasync/log.h"

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#define TS_MAX_COLLECTIONS 16

typedef struct {
    char *data_dir;          /* --data, default ./var */
    char *endpoint;          /* --endpoint, default tcp://127.0.0.1:7410 */
    char *events;            /* --events, default tcp://127.0.0.1:7411 */
    char *api_url;           /* --api; NULL = standalone */
    char *policies_dir;      /* --policies; NULL = shipped policies */
    char *admin;             /* --admin HOST:PORT, loopback only: HTTP /metrics, /healthz,
                                /readyz (docs/OPERATIONS.md); NULL = off */
    ts_log_level_t log_level;
    bool durability_relaxed; /* durability = "relaxed": synchronous=NORMAL */
    bool check_only;         /* --check-config: validate config and policies, then exit */
    bool insecure;           /* --insecure: endpoints beyond loopback without
                                client keys (refused otherwise) */
    size_t max_request_bytes;/* default 1 MiB */
    size_t max_inflight;     /* calls in the pipeline before `busy` */
    long long max_db_bytes;  /* 0 = unlimited; beyond it writes fail cleanly */
    char *collections[TS_MAX_COLLECTIONS];
    size_t ncollections;
    struct {
        char *client_id, *client_secret, *client_secret_file, *token_url;
    } auth;
    struct {
        size_t memory_bytes;
        long instruction_budget;
    } lua;
    struct {                 /* encryption at rest (SECURITY.md) */
        char *key_file;      /* security.encryption_key_file; NULL: $CREDENTIALS_DIRECTORY/therasync.key
                                if there, else the store is plain */
    } storage;
    struct {                 /* the sync actor (docs/SYNC.md) */
        int concurrency;     /* push requests in flight at once; default 32 */
        int batch_size;      /* writes per POST /v1/_batch; 128 (0 or 1: one request each) */
        int stuck_after;     /* failed rounds before a document's head counts as stuck; 8 */
        int poll_interval_ms;/* periodic polling, the feed's last resort; 5000 */
        int digest_interval_s;/* consistency check period; 300 (0 = only on `sync`) */
        int digest_soon_s;   /* a check this soon after a reconnect or a feed gap; 3 (0 = no) */
        int offline_after;   /* consecutive timeouts/resets before offline (refused: at once); 3 */
        int answer_timeout_ms;/* a write unanswered this long makes the connection offline; 10000 */
    } sync;
    struct {                 /* the cache actor (docs/CACHE.md) */
        long long max_bytes; /* memoized answers, least recently used out first; 64 MiB */
        int max_subscriptions;        /* live queries of one connection; 1,000 */
        int max_subscriptions_total;  /* of all connections; 100,000 */
    } cache;
    struct {                 /* on-demand collections (docs/CACHE.md), by collection index */
        bool on;             /* not replicated in full: read through the cache */
        int fresh_ms;        /* served without a request; 30000 */
        int max_stale_ms;    /* served stale (and refreshed) up to this age; 600000 */
        int gc_ms;           /* not read this long: forgotten by the cache; 300000 */
    } ondemand[TS_MAX_COLLECTIONS];
    struct {                 /* client keys (docs/FRONT_DOOR.md, Authentication) */
        char *curve_secret_file; /* the daemon's CURVE key pair (therasync keygen) */
        char *clients_file;  /* the keys allowed in: `NAME ROLE PUBLIC-KEY` a line */
        bool event_bodies;   /* events keep their doc (default: without, with keys) */
    } security;
    cJSON *clinic;           /* the config's `clinic` table, for policies' ctx.config */
} ts_config_t;

/* Fills defaults. */
void ts_config_init(ts_config_t *config);
void ts_config_free(ts_config_t *config);
/* Reads a Lua config file (plain assignments; see docs/CONFIG.md).
 * Returns 0, or -1 with a message in err. */
int ts_config_load(ts_config_t *config, const char *path, char *err, size_t errlen);
/* Applies the daemon's flags. Returns 0 to go on, 1 when --help/--version
 * was printed, -1 on a usage error (message in err). */
int ts_config_parse_args(ts_config_t *config, int argc, char **argv, char *err, size_t errlen);
/* Whether clients must present a key listed in security.clients_file
 * (ZeroMQ CURVE on the front door and the event socket). */
bool ts_config_curve(const ts_config_t *config);
/* Whether a ZeroMQ endpoint is reachable from this host only: ipc://,
 * inproc://, or tcp:// on 127.0.0.1 / localhost / [::1]. */
bool ts_endpoint_is_local(const char *endpoint);
/* Splits an admin address, HOST:PORT with HOST 127.0.0.1, localhost or
 * [::1], into an IPv4/IPv6 loopback choice and a port (0: any free one).
 * 0, or -1 with a message in err. */
int ts_admin_addr(const char *addr, bool *ipv6, unsigned *port, char *err, size_t errlen);

/* Index of a collection name, or -1. */
int ts_config_collection(const ts_config_t *config, const char *name);
/* The same for the len bytes at name (which hold no NUL). */
int ts_config_collection_len(const ts_config_t *config, const char *name, size_t len);

#endif
