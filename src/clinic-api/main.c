/* main.c — clinic-api: the reference Clinic API v1 server (docs/CLINIC_API.md).
 * Parses flags, opens the store, starts the feed timer and the HTTP server,
 * then waits for SIGTERM/SIGINT and stops cleanly (exit 0). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
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
          "  --client-secret SECRET  OAuth2 client secret (default dev-secret); for development:\n"
          "                          it shows in ps, use --client-secret-file or the\n"
          "                          environment variable CLINIC_API_CLIENT_SECRET instead\n"
          "  --client-secret-file PATH  read the client secret from PATH (first line)\n"
          "  --token-ttl SECONDS     access token lifetime (default 3600)\n"
          "  --refresh-ttl SECONDS   refresh token lifetime (default 86400)\n"
          "  --max-tokens N          tokens kept per kind; more evict the oldest (default 100000)\n"
          "  --header-timeout S      a request's headers must arrive within S seconds of the\n"
          "                          connection or the previous answer (default 10; 0: none)\n"
          "  --max-conns-per-ip N    open connections per client address (default 256; 0: no cap)\n"
          "  --max-connections N     open connections in all (default 4000)\n"
          "  --collections a,b       served collections (default sessions,consultations,patients)\n"
          "  --demo-patients N       create the demo patients pat-0001..pat-N (invented data) in\n"
          "                          patients, once (a restart with the flag adds nothing)\n"
          "  --no-control            disable /_control/* (fault injection and stats)\n"
          "  --no-batch              disable POST /v1/_batch (404, like a server without it)\n"
          "  --no-stream             disable GET /v1/changes/stream (404: clients long-poll)\n"
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

/* The first line of path, without its line end: the client secret. NULL
 * (said on stderr) when it cannot be read, is empty or holds a NUL. */
static char *read_secret_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "clinic-api: cannot read --client-secret-file %s: %s\n", path,
                strerror(errno));
        return NULL;
    }
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *eol = memchr(buf, '\n', n);
    if (eol)
        n = (size_t)(eol - buf);
    if (n && buf[n - 1] == '\r')
        n--;
    char *secret = NULL;
    if (n == 0 || memchr(buf, '\0', n))
        fprintf(stderr, "clinic-api: --client-secret-file %s: %s\n", path,
                n ? "the secret holds a NUL" : "no secret on its first line");
    else
        secret = ts_memdup(buf, n);
    explicit_bzero(buf, sizeof buf);
    return secret;
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
    umask(077); /* its database holds the clinic's records: its user's alone */
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
        O_NOSTREAM,
        O_STRICT_IDEM,
        O_CSECRET_FILE,
        O_REFRESH_TTL,
        O_MAX_TOKENS,
        O_HEADER_TIMEOUT,
        O_PER_IP,
        O_MAX_CONNS,
        O_DEMO_PATIENTS
    };
    static const struct option opts[] = {{"listen", required_argument, 0, O_LISTEN},
                                         {"db", required_argument, 0, O_DB},
                                         {"client-id", required_argument, 0, O_CID},
                                         {"client-secret", required_argument, 0, O_CSECRET},
                                         {"client-secret-file", required_argument, 0,
                                          O_CSECRET_FILE},
                                         {"refresh-ttl", required_argument, 0, O_REFRESH_TTL},
                                         {"max-tokens", required_argument, 0, O_MAX_TOKENS},
                                         {"header-timeout", required_argument, 0,
                                          O_HEADER_TIMEOUT},
                                         {"max-conns-per-ip", required_argument, 0, O_PER_IP},
                                         {"max-connections", required_argument, 0, O_MAX_CONNS},
                                         {"token-ttl", required_argument, 0, O_TTL},
                                         {"collections", required_argument, 0, O_COLLS},
                                         {"demo-patients", required_argument, 0, O_DEMO_PATIENTS},
                                         {"no-control", no_argument, 0, O_NOCTL},
                                         {"no-batch", no_argument, 0, O_NOBATCH},
                                         {"no-stream", no_argument, 0, O_NOSTREAM},
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
    const char *client_id = "therasync", *client_secret = NULL, *secret_file = NULL;
    const char *collections = "sessions,consultations,patients";
    int64_t ttl = 3600, refresh_ttl = 86400, max_tokens = 100000, hb = 15000, max_poll = 30, v;
    int64_t header_timeout = 10, per_ip = 256, max_conns = 4000, demo_patients = 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t threads = cpus > 0 ? cpus : 2;
    bool control = true, batch = true, stream = true, strict_idempotency = false;
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
        case O_CSECRET_FILE:
            secret_file = optarg;
            break;
        case O_TTL:
            bad = flag_int("--token-ttl", optarg, 1, 86400 * 365, &ttl);
            break;
        case O_REFRESH_TTL:
            bad = flag_int("--refresh-ttl", optarg, 1, 86400 * 365, &refresh_ttl);
            break;
        case O_MAX_TOKENS:
            bad = flag_int("--max-tokens", optarg, 1, 10000000, &max_tokens);
            break;
        case O_HEADER_TIMEOUT:
            bad = flag_int("--header-timeout", optarg, 0, 3600, &header_timeout);
            break;
        case O_PER_IP:
            bad = flag_int("--max-conns-per-ip", optarg, 0, 100000, &per_ip);
            break;
        case O_MAX_CONNS:
            bad = flag_int("--max-connections", optarg, 1, 100000, &max_conns);
            break;
        case O_COLLS:
            collections = optarg;
            break;
        case O_DEMO_PATIENTS:
            bad = flag_int("--demo-patients", optarg, 0, 9999, &demo_patients);
            break;
        case O_NOCTL:
            control = false;
            break;
        case O_NOBATCH:
            batch = false;
            break;
        case O_NOSTREAM:
            stream = false;
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

    /* The secret: a flag (development: ps shows it), a file, the environment. */
    char *secret = NULL;
    if (client_secret && secret_file) {
        fprintf(stderr, "clinic-api: give --client-secret or --client-secret-file, not both\n");
        return 2;
    }
    if (secret_file) {
        if (!(secret = read_secret_file(secret_file)))
            return 2;
    } else {
        const char *env = getenv("CLINIC_API_CLIENT_SECRET");
        secret = strdup(client_secret ? client_secret : env && *env ? env : "dev-secret");
        if (!secret)
            return 1;
    }

    /* --listen HOST:PORT */
    char host[64];
    const char *colon = strrchr(listen, ':');
    int64_t port;
    if (!colon || (size_t)(colon - listen) >= sizeof host || colon == listen ||
        flag_int("--listen port", colon + 1, 0, 65535, &port) < 0) {
        fprintf(stderr, "clinic-api: --listen wants HOST:PORT, got '%s'\n", listen);
        free(secret);
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
                            .stream = stream,
                            .strict_idempotency = strict_idempotency,
                            .heartbeat_ms = (int)hb,
                            .max_poll_s = (int)max_poll,
                            .threads = (int)threads,
                            .header_timeout_s = (int)header_timeout,
                            .per_ip_limit = (int)per_ip,
                            .max_connections = (int)max_conns};
    if (parse_collections(collections, &cfg.collections, &cfg.ncollections) < 0) {
        fprintf(stderr, "clinic-api: --collections wants a,b with names of [A-Za-z0-9_-]\n");
        free(secret);
        return 2;
    }
    bool has_patients = false;
    for (int i = 0; i < cfg.ncollections; i++)
        has_patients |= strcmp(cfg.collections[i], "patients") == 0;
    if (demo_patients > 0 && !has_patients) {
        fprintf(stderr, "clinic-api: --demo-patients needs patients among --collections\n");
        free(secret);
        for (int i = 0; i < cfg.ncollections; i++)
            free(cfg.collections[i]);
        free(cfg.collections);
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
    if (demo_patients > 0) {
        int made = ca_db_seed_patients(db, "patients", (int)demo_patients);
        if (made < 0) {
            ts_error(MOD, "cannot create the demo patients");
            goto out;
        }
        ts_info(MOD, "demo patients: %d created, %d there already", made,
                (int)demo_patients - made);
    }
    if (ca_auth_init(client_id, secret, (int)ttl, (int)refresh_ttl, (size_t)max_tokens) < 0 ||
        ca_feed_start(ca_db_head(db)) < 0)
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
    explicit_bzero(secret, strlen(secret));
    free(secret);
    for (int i = 0; i < cfg.ncollections; i++)
        free(cfg.collections[i]);
    free(cfg.collections);
    if (rc == 0)
        ts_info(MOD, "stopped");
    return rc;
}
