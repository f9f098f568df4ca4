/* main.c — clinic-api: the reference Clinic API v1 server (docs/CLINIC_API.md).
 * Parses flags, opens the store, starts the feed timer and the HTTP server,
 * then waits for SIGTERM/SIGINT and stops cleanly (exit 0). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "control.h"
#include "db.h"
#include "feed.h"
#include "http.h"
#include "therasync/log.h"

#define MOD "clinic-api"

static void usage(FILE *out)
{
    fputs("usage: clinic-api [options]\n"
          "  --listen HOST:PORT      bind address (default 127.0.0.1:8080; port 0 picks one)\n"
          "  --db FILE               SQLite database (default ./clinic-api.db)\n"
          "  --client-id ID          OAuth2 client id (default therasync)\n"
          "  --client-secret SECRET  OAuth2 client secret (default dev-secret)\n"
          "  --token-ttl SECONDS     access token lifetime (default 3600)\n"
          "  --collections a,b       served collections (default sessions,consultations)\n"
          "  --no-control            disable /_control/* (fault injection and stats)\n"
          "  --no-batch              disable POST /v1/_batch (404, like a server without it)\n"
          "  --strict-idempotency    a retried key must repeat If-Match too (default: method,\n"
          "                          path and body identify the request)\n"
          "  --heartbeat-ms MS       event stream heartbeat (default 15000)\n"
          "  --max-poll S            cap of /v1/changes?timeout= (default 30)\n"
          "  --threads N             HTTP worker threads (default: CPUs)\n"
          "  --fail-rate R           share of requests answered with --fail-status (0..1)\n"
          "  --fail-status N         status of injected failures (default 503)\n"
          "  --retry-after S         Retry-After on injected 429/503 (default 1)\n"
          "  --latency-ms MS         delay added to every request\n"
          "  --answer-latency-ms MS  delay between a write's commit and its answer\n"
          "  --drop-rate R           share of requests closed without an answer (0..1)\n"
          "  --offline               close every request unanswered (until /_control clears it)\n"
          "  --log-level LEVEL       error|warn|info|debug (default info)\n"
          "  --help, --version\n",
          out);
}

/* Strict number flags: the whole text, within [lo, hi]. */
static int flag_int(const char *name, const char *text, int64_t lo, int64_t hi, int64_t *out)
{
    if (ts_parse_i64(text, out) < 0 || *out < lo || *out > hi) {
        fprintf(stderr, "clinic-api: %s wants an integer in [%lld, %lld], got '%s'\n", name,
                (long long)lo, (long long)hi, text);
        return -1;
    }
    return 0;
}

static int flag_rate(const char *name, const char *text, double *out)
{
    char *end;
    *out = strtod(text, &end);
    if (*end || end == text || !(*out >= 0 && *out <= 1)) {
        fprintf(stderr, "clinic-api: %s wants a number in [0, 1], got '%s'\n", name, text);
        return -1;
    }
    return 0;
}

/* Splits "a,b" into a NULL-free array of names (each a valid id). */
static int parse_collections(const char *text, char ***out, int *n)
{
    char *copy = strdup(text), *save = NULL;
    if (!copy)
        return -1;
    *n = 0;
    *out = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!ts_valid_id(tok, strlen(tok)) || strcmp(tok, "changes") == 0 ||
            strcmp(tok, "_batch") == 0) {
            fprintf(stderr, "clinic-api: bad collection name '%s'\n", tok);
            free(copy);
            return -1;
        }
        char **grown = realloc(*out, sizeof **out * (size_t)(*n + 1));
        if (!grown || !(grown[*n] = strdup(tok))) {
            free(grown ? grown : *out);
            free(copy);
            return -1;
        }
        *out = grown;
        (*n)++;
    }
    free(copy);
    return *n > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    enum {
        O_LISTEN = 256,
        O_DB,
        O_CID,
        O_CSECRET,
        O_TTL,
        O_COLLS,
        O_NOCTL,
        O_HB,
        O_POLL,
        O_THREADS,
        O_FRATE,
        O_FSTATUS,
        O_RETRY,
        O_LAT,
        O_ANSWER_LAT,
        O_DROP,
        O_OFFLINE,
        O_LOG,
        O_HELP,
        O_VERSION,
        O_NOBATCH,
        O_STRICT_IDEM
    };
    static const struct option opts[] = {{"listen", required_argument, 0, O_LISTEN},
                                         {"db", required_argument, 0, O_DB},
                                         {"client-id", required_argument, 0, O_CID},
                                         {"client-secret", required_argument, 0, O_CSECRET},
                                         {"token-ttl", required_argument, 0, O_TTL},
                                         {"collections", required_argument, 0, O_COLLS},
                                         {"no-control", no_argument, 0, O_NOCTL},
                                         {"no-batch", no_argument, 0, O_NOBATCH},
                                         {"strict-idempotency", no_argument, 0, O_STRICT_IDEM},
                                         {"heartbeat-ms", required_argument, 0, O_HB},
                                         {"max-poll", required_argument, 0, O_POLL},
                                         {"threads", required_argument, 0, O_THREADS},
                                         {"fail-rate", required_argument, 0, O_FRATE},
                                         {"fail-status", required_argument, 0, O_FSTATUS},
                                         {"retry-after", required_argument, 0, O_RETRY},
                                         {"latency-ms", required_argument, 0, O_LAT},
                                         {"answer-latency-ms", required_argument, 0, O_ANSWER_LAT},
                                         {"drop-rate", required_argument, 0, O_DROP},
                                         {"offline", no_argument, 0, O_OFFLINE},
                                         {"log-level", required_argument, 0, O_LOG},
                                         {"help", no_argument, 0, O_HELP},
                                         {"version", no_argument, 0, O_VERSION},
                                         {0, 0, 0, 0}};
    const char *listen = "127.0.0.1:8080", *db_path = "./clinic-api.db";
    const char *client_id = "therasync", *client_secret = "dev-secret";
    const char *collections = "sessions,consultations";
    int64_t ttl = 3600, hb = 15000, max_poll = 30, v;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t threads = cpus > 0 ? cpus : 2;
    bool control = true, batch = true, strict_idempotency = false;
    ca_faults_t faults;
    ca_faults_defaults(&faults);
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        switch (o) {
        case O_LISTEN:
            listen = optarg;
            break;
        case O_DB:
            db_path = optarg;
            break;
        case O_CID:
            client_id = optarg;
            break;
        case O_CSECRET:
            client_secret = optarg;
            break;
        case O_TTL:
            bad = flag_int("--token-ttl", optarg, 1, 86400 * 365, &ttl);
            break;
        case O_COLLS:
            collections = optarg;
            break;
        case O_NOCTL:
            control = false;
            break;
        case O_NOBATCH:
            batch = false;
            break;
        case O_STRICT_IDEM:
            strict_idempotency = true;
            break;
        case O_HB:
            bad = flag_int("--heartbeat-ms", optarg, 10, 3600000, &hb);
            break;
        case O_POLL:
            bad = flag_int("--max-poll", optarg, 0, 3600, &max_poll);
            break;
        case O_THREADS:
            bad = flag_int("--threads", optarg, 1, 256, &threads);
            break;
        case O_FRATE:
            bad = flag_rate("--fail-rate", optarg, &faults.fail_rate);
            break;
        case O_FSTATUS:
            bad = flag_int("--fail-status", optarg, 400, 599, &v);
            faults.status = (int)v;
            break;
        case O_RETRY:
            bad = flag_int("--retry-after", optarg, 0, 86400, &v);
            faults.retry_after = (int)v;
            break;
        case O_LAT:
            bad = flag_int("--latency-ms", optarg, 0, 600000, &v);
            faults.latency_ms = (int)v;
            break;
        case O_ANSWER_LAT:
            bad = flag_int("--answer-latency-ms", optarg, 0, 600000, &v);
            faults.answer_latency_ms = (int)v;
            break;
        case O_DROP:
            bad = flag_rate("--drop-rate", optarg, &faults.drop_rate);
            break;
        case O_OFFLINE:
            faults.offline = true;
            break;
        case O_LOG: {
            ts_log_level_t lvl;
            if ((bad = ts_log_parse_level(optarg, &lvl)) == 0)
                ts_log_set_level(lvl);
            else
                fprintf(stderr, "clinic-api: --log-level wants error|warn|info|debug\n");
            break;
        }
        case O_HELP:
            usage(stdout);
            return 0;
        case O_VERSION:
            printf("clinic-api %s\n", TS_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "clinic-api: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }

    /* --listen HOST:PORT */
    char host[64];
    const char *colon = strrchr(listen, ':');
    int64_t port;
    if (!colon || (size_t)(colon - listen) >= sizeof host || colon == listen ||
        flag_int("--listen port", colon + 1, 0, 65535, &port) < 0) {
        fprintf(stderr, "clinic-api: --listen wants HOST:PORT, got '%s'\n", listen);
        return 2;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");

    ca_http_config_t cfg = {.host = host,
                            .port = (uint16_t)port,
                            .control = control,
                            .batch = batch,
                            .strict_idempotency = strict_idempotency,
                            .heartbeat_ms = (int)hb,
                            .max_poll_s = (int)max_poll,
                            .threads = (int)threads};
    if (parse_collections(collections, &cfg.collections, &cfg.ncollections) < 0) {
        fprintf(stderr, "clinic-api: --collections wants a,b with names of [A-Za-z0-9_-]\n");
        return 2;
    }
    ca_faults_set(&faults);

    /* Signals are taken synchronously by this thread; the others never see them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    ca_http_t *http = NULL;
    ca_db_t *db = ca_db_open(db_path);
    if (!db)
        goto out;
    cfg.db = db;
    if (ca_auth_init(client_id, client_secret, (int)ttl) < 0 || ca_feed_start(ca_db_head(db)) < 0)
        goto out;
    http = ca_http_start(&cfg);
    if (!http)
        goto out;
    ts_info(MOD, "listening on %s:%u", host, (unsigned)ca_http_port(http));
    int sig = 0;
    sigwait(&sigs, &sig);
    ts_info(MOD, "signal %d: stopping", sig);
    rc = 0;
out:
    ca_http_stop(&http);
    ca_feed_stop();
    ca_db_close(&db);
    ca_auth_shutdown();
    for (int i = 0; i < cfg.ncollections; i++)
        free(cfg.collections[i]);
    free(cfg.collections);
    if (rc == 0)
        ts_info(MOD, "stopped");
    return rc;
}
