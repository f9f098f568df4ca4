/* therasyncd — the engine daemon: starts the actors, waits for signals.
 *
 * Start order follows the data: persist (opens and locks the data dir),
 * store (loads the durable state), front door (accepts requests), and with
 * --api the API actor (HTTP) and the sync actor (docs/SYNC.md). Stop order
 * is the reverse, so in-flight calls are finished and flushed. */
#include "admin.h"
#include "therasync/api.h"
#include "therasync/config.h"
#include "therasync/cache.h"
#include "therasync/front.h"
#include "therasync/log.h"
#include "therasync/persist.h"
#include "therasync/store.h"
#include "therasync/sync.h"
#include "therasync/util.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#define LOG "therasyncd"
/* How long the actors before persist may take, together, to stop working
 * after SIGTERM; persist then gets as long again. An actor still busy after
 * that (the store inside a policy call with a huge instruction budget) is
 * left behind and the process exits with status 1: a stop is bounded. */
#define STOP_GRACE_MS 5000

/* systemd readiness (sd_notify protocol): one datagram to $NOTIFY_SOCKET. */
static void notify_systemd(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    memcpy(addr.sun_path, path, len);
    if (addr.sun_path[0] == '@')
        addr.sun_path[0] = '\0'; /* abstract namespace */
    socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len) < 0)
        ts_warn(LOG, "cannot notify systemd: %s", strerror(errno));
    close(fd);
}

/* Half of $WATCHDOG_USEC in ms when systemd's watchdog is on for this
 * process ($WATCHDOG_PID unset or ours), else 0. */
static long watchdog_ms(void)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    if (!usec || (pid && strtol(pid, NULL, 10) != (long)getpid()))
        return 0;
    long long us = strtoll(usec, NULL, 10);
    return us > 0 ? (long)(us / 2000 > 0 ? us / 2000 : 1) : 0;
}

/* Reads the client secret from a file (first line, trailing whitespace cut).
 * Returns a malloc'd string, or NULL (logged). */
static char *read_secret_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        ts_error(LOG, "cannot read auth.client_secret_file %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[1024];
    char *line = fgets(buf, sizeof buf, f);
    fclose(f);
    if (!line) {
        ts_error(LOG, "auth.client_secret_file %s is empty", path);
        return NULL;
    }
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        buf[--n] = '\0';
    char *secret = strdup(buf);
    memset(buf, 0, sizeof buf);
    return secret;
}

/* Starts the API actor for config.api_url. NULL on failure (logged). */
static ts_actor_t *start_api(void *zctx, const ts_config_t *config, const char *endpoint)
{
    char *secret = NULL;
    if (config->auth.client_secret_file && !(secret = read_secret_file(config->auth.client_secret_file)))
        return NULL;
    size_t len = strlen(config->api_url);
    char *base = strndup(config->api_url, len && config->api_url[len - 1] == '/' ? len - 1 : len);
    ts_api_opts_t opts = {
        .base_url = base,
        .token_url = config->auth.token_url,
        .client_id = config->auth.client_id,
        .client_secret = secret ? secret : config->auth.client_secret,
        .endpoint = endpoint,
    };
    ts_actor_t *api = base ? ts_api_start(zctx, &opts) : NULL;
    if (secret) {
        memset(secret, 0, strlen(secret));
        free(secret);
    }
    free(base);
    return api;
}

/* --check-config: what a start would load besides the data, checked, and
 * nothing started. 0 when all of it is right, else 1 (a line for each
 * fault on stderr). */
static int check_config(const ts_config_t *config)
{
    char err[2048] = "", summary[4200] = "";
    int faults = 0;
    if (ts_store_check_policies(config, summary, sizeof summary, err, sizeof err) == 0)
        printf("policies: %s\n", summary);
    else
        fprintf(stderr, "therasyncd: %s\n", err), faults++;
    if (ts_config_curve(config)) {
        char pub[41], sec[41];
        size_t n = 0;
        if (ts_curve_read_key(config->security.curve_secret_file, pub, sec, err, sizeof err) ||
            ts_clients_file_check(config->security.clients_file, &n, err, sizeof err))
            fprintf(stderr, "therasyncd: security: %s\n", err), faults++;
        else
            printf("client keys: %zu in %s\n", n, config->security.clients_file);
        explicit_bzero(sec, sizeof sec);
    }
    bool sealed = false;
    if (ts_persist_check_key(config, &sealed, err, sizeof err))
        fprintf(stderr, "therasyncd: %s\n", err), faults++;
    else
        printf("encryption at rest: %s\n", sealed ? "key readable" : "none (no key)");
    if (config->auth.client_secret_file) {
        FILE *f = fopen(config->auth.client_secret_file, "r");
        if (!f)
            fprintf(stderr, "therasyncd: auth.client_secret_file %s: %s\n",
                    config->auth.client_secret_file, strerror(errno)), faults++;
        else
            fclose(f);
    }
    printf("data: %s, endpoint: %s, events: %s, api: %s\n", config->data_dir, config->endpoint,
           config->events, config->api_url ? config->api_url : "none (standalone)");
    printf("%s\n", faults ? "config: NOT OK" : "config: OK");
    return faults ? 1 : 0;
}

int main(int argc, char **argv)
{
    ts_config_t config;
    ts_oom_hooks_install();
    /* Health data and secrets: files it makes are its user's alone, and a
     * crash leaves no core file with tokens, the client secret or
     * documents in it. (PR_SET_DUMPABLE 0 would also stop same-user
     * ptrace, but makes /proc/PID root's, which the bench and operators'
     * tools read.) */
    umask(077);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    ts_config_init(&config);
    char err[1024] = "";
    int rc = ts_config_parse_args(&config, argc, argv, err, sizeof err);
    if (rc) {
        if (rc < 0)
            fprintf(stderr, "therasyncd: %s\n", err);
        ts_config_free(&config);
        return rc < 0 ? 2 : 0;
    }
    if (config.check_only) {
        ts_log_set_level(TS_LOG_WARN); /* its own lines say what was loaded */
        rc = check_config(&config);
        ts_config_free(&config);
        return rc;
    }
    ts_log_set_level(config.log_level);
    if (config.insecure && !ts_config_curve(&config) &&
        (!ts_endpoint_is_local(config.endpoint) || !ts_endpoint_is_local(config.events)))
        ts_warn(LOG, "INSECURE: %s / %s can be reached from other hosts and clients are not "
                     "authenticated: anyone who reaches them can read and write every record",
                config.endpoint, config.events);
    /* Blocks of 2 MiB and more (the document tables) always get their own
     * mapping and go back to the system when freed; glibc would otherwise
     * raise the threshold after the first such free and keep them in the
     * heap, which shows as resident memory on a million-document start.
     * (Only for a build without jemalloc, `make MALLOC=`; jemalloc maps
     * large blocks on its own.) */
    mallopt(M_MMAP_THRESHOLD, 2 * 1024 * 1024);

    /* Signals are taken by this thread alone, with sigwait. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    void *zctx = zmq_ctx_new();
    ts_actor_t *persist = NULL, *store = NULL, *cache = NULL, *front = NULL, *api = NULL,
               *api_feed = NULL, *sync = NULL;
    ts_front_args_t front_args = {.config = &config};
    ts_admin_t *admin = NULL;
    char admin_bound[64] = "off";
    int exit_code = 1;
    if (!zctx)
        goto done;
    zmq_ctx_set(zctx, ZMQ_BLOCKY, 0);
    /* First, so that /healthz and /readyz answer while the data dir is
     * recovered (readyz says 503 until the engine is ready). */
    if (config.admin && !(admin = ts_admin_start(zctx, &config, admin_bound, sizeof admin_bound)))
        goto done;
    if (!(persist = ts_persist_start(zctx, &config))) {
        ts_error(LOG, "cannot start: the data dir %s is not usable (see above)", config.data_dir);
        goto done;
    }
    if (!(cache = ts_cache_start(zctx, &config))) { /* before the store, which tells it things */
        ts_error(LOG, "cannot start the cache (see above)");
        goto done;
    }
    if (!(store = ts_store_start(zctx, &config))) {
        ts_error(LOG, "cannot start the store (see above)");
        goto done;
    }
    if (!(front = ts_front_start(zctx, &front_args))) {
        ts_error(LOG, "cannot start the front door (see above)");
        goto done;
    }
    if (config.api_url) {
        if (!(api = start_api(zctx, &config, TS_INPROC_API)) ||
            !(api_feed = start_api(zctx, &config, TS_INPROC_API_FEED))) {
            ts_error(LOG, "cannot start the API client for %s (see above)", config.api_url);
            goto done;
        }
        if (!(sync = ts_sync_start(zctx, &config))) {
            ts_error(LOG, "cannot start the sync actor (see above)");
            goto done;
        }
    }
    ts_admin_set_ready(admin);
    ts_info(LOG, "ready endpoint=%s events=%s api=%s data=%s admin=%s", front_args.endpoint,
            front_args.events, config.api_url ? config.api_url : "none", config.data_dir,
            admin_bound);
    notify_systemd("READY=1\nSTATUS=serving");

    /* systemd's watchdog (WatchdogSec=): WATCHDOG=1 at half the interval it
     * gives. It is sent by this thread, so it proves the process is not
     * hung and still takes signals; the actors answer for themselves
     * (a stuck policy call is bounded by the policy watchdog). */
    long wd_ms = watchdog_ms();
    for (;;) {
        struct timespec ts = {wd_ms / 1000, (wd_ms % 1000) * 1000000L};
        int sig = wd_ms > 0 ? sigtimedwait(&signals, NULL, &ts) : sigwaitinfo(&signals, NULL);
        if (sig < 0) {
            if (errno == EAGAIN)
                notify_systemd("WATCHDOG=1");
            continue;
        }
        if (sig == SIGHUP) {
            ts_info(LOG, "SIGHUP: reloading policies and client keys");
            char state[80];
            snprintf(state, sizeof state, "RELOADING=1\nMONOTONIC_USEC=%lld", (long long)ts_mono_us());
            notify_systemd(state);
            /* Queued to the actors, which reload in turn; a refused reload
             * keeps the old policies and is logged (`therasync policy reload`
             * waits for the answer and says whether it loaded). */
            if (ts_actor_command(store, "RELOAD"))
                ts_error(LOG, "cannot ask the store to reload policies");
            if (ts_actor_command(front, "RELOAD"))
                ts_error(LOG, "cannot ask the front door to reload client keys");
            notify_systemd("READY=1\nSTATUS=serving (reload asked by SIGHUP)");
            continue;
        }
        if (sig == SIGTERM || sig == SIGINT) {
            ts_info(LOG, "%s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
    }
    notify_systemd("STOPPING=1\nSTATUS=stopping");
    exit_code = 0;
done:;
    /* Not ready from the first moment of the stop; its socket closes
     * before the context ends. */
    ts_admin_stop(&admin);
    /* A backup being copied is abandoned, not waited for: its client gets
     * the reason, and no PATH.partial is left behind. */
    if (persist && ts_actor_command(persist, "STOPPING"))
        ts_warn(LOG, "cannot tell persist the engine is stopping");
    /* Every actor stops working first (the front door after answering what
     * it has in flight), then each frees what is still queued for it and
     * exits: no message is ever sent to an inbox that is already closed. */
    ts_actor_t **actors[] = {&sync, &api_feed, &api, &front, &cache, &store, &persist};
    size_t nactors = sizeof actors / sizeof *actors;
    bool stuck[sizeof actors / sizeof *actors] = {false}, any_stuck = false;
    int64_t deadline = ts_mono_us() + STOP_GRACE_MS * 1000;
    for (size_t i = 0; i < nactors; i++) {
        /* persist, last, gets a grace of its own to write out what reached it */
        if (actors[i] == &persist)
            deadline = ts_mono_us() + STOP_GRACE_MS * 1000;
        int64_t left = (deadline - ts_mono_us()) / 1000;
        if (ts_actor_stop_within(*actors[i], left > 0 ? (int)left : 0) != 0) {
            ts_error(LOG, "the %s did not stop within %d s (a thread stuck in a long call, e.g. "
                          "a policy); leaving it behind",
                     ts_actor_name(*actors[i]), STOP_GRACE_MS / 1000);
            stuck[i] = any_stuck = true;
        }
    }
    if (any_stuck) {
        /* A stuck thread may still use its sockets and state: free nothing
         * of it and skip zmq_ctx_term (which would wait for it). What
         * persist had received is written; a write that never reached it
         * was never answered either, so nothing promised is lost. */
        for (size_t i = 0; i < nactors; i++)
            if (!stuck[i])
                ts_actor_destroy(actors[i]);
        ts_error(LOG, "stopped without waiting for the stuck thread (exit 1)");
        fflush(stderr);
        _exit(1);
    }
    for (size_t i = 0; i < nactors; i++)
        ts_actor_destroy(actors[i]);
    if (zctx)
        zmq_ctx_term(zctx);
    if (exit_code == 0) {
        /* What the run cost, for operators and benchmarks alike. */
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        ts_info(LOG, "stopped (CPU %.2f s user, %.2f s system; peak RSS %ld MiB)",
                (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
                (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, ru.ru_maxrss / 1024);
    }
    ts_config_free(&config);
    return exit_code;
}
