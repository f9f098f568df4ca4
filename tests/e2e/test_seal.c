/* test_seal.c — encryption at rest (SECURITY.md): with a key, notes never
 * reach the database files in the clear, and come back intact after kill
 * -9; a wrong or missing key stops the start; `therasync rekey` moves the
 * store to a new key, and a kill -9 at any point of it leaves a store that
 * one of the two keys opens whole. */
#include "../support/clinic.h"
#include "../support/engine.h"
#include "../support/run.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* A distinct string in every note, searched for in the files' bytes. */
static char marker[64];

static void new_marker(void)
{
    snprintf(marker, sizeof marker, "PHQ9-note-%d-%lld", (int)getpid(), now_ms());
}

/* dir/name: 32 random bytes, mode 0600. path gets it. */
static void make_key(const char *dir, const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", dir, name);
    unsigned char key[32];
    FILE *r = fopen("/dev/urandom", "rb");
    cr_assert(r && fread(key, 1, 32, r) == 32);
    fclose(r);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(fd >= 0 && write(fd, key, 32) == 32);
    close(fd);
}

/* dir/name: a config naming key_file. path gets it. */
static void make_config(const char *dir, const char *name, const char *key_file, char *path,
                        size_t size)
{
    snprintf(path, size, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "security = { encryption_key_file = \"%s\" }\n", key_file);
    fclose(f);
}

/* Two keys in dir, k1 and k2 (paths of KEY_PATH bytes), and a config
 * naming each: c1, c2. */
#define KEY_PATH 4300
static void two_keys(const char *dir, char *k1, char *k2, char *c1, char *c2)
{
    make_key(dir, "k1", k1, KEY_PATH);
    make_key(dir, "k2", k2, KEY_PATH);
    make_config(dir, "c1.lua", k1, c1, KEY_PATH);
    make_config(dir, "c2.lua", k2, c2, KEY_PATH);
}

/* Daemon flags: free-form documents, and config when not NULL. */
static const char *const *flags(const char *config)
{
    static char pol[4200], cfg[4200];
    static const char *args[5];
    snprintf(pol, sizeof pol, "%s", ts_source_path("tests/fixtures/policies/permissive"));
    args[0] = "--policies";
    args[1] = pol;
    args[2] = config ? "--config" : NULL;
    snprintf(cfg, sizeof cfg, "%s", config ? config : "");
    args[3] = config ? cfg : NULL;
    args[4] = NULL;
    return args;
}

/* Whether therasync.db or therasync.db-wal in data holds text. */
static bool files_hold(const char *data, const char *text)
{
    static const char *const names[] = {"therasync.db", "therasync.db-wal"};
    bool found = false;
    for (size_t i = 0; i < 2 && !found; i++) {
        char path[4300];
        snprintf(path, sizeof path, "%s/%s", data, names[i]);
        size_t n;
        char *bytes = ts_file_bytes(path, &n);
        found = bytes && memmem(bytes, n, text, strlen(text)) != NULL;
        free(bytes);
    }
    return found;
}

static void note_of(int i, int rev, char *out, size_t size)
{
    snprintf(out, size, "%s doc %d rev %d: patient reports low mood, sleep 4h", marker, i, rev);
}

/* Creates docs s<from>..s<from+n-1> (notes: note_of(i, 0)) with up to 64
 * in flight; returns how many were acknowledged. */
static int write_docs(ts_engine_t *e, int from, int n)
{
    int sent = 0, acked = 0, inflight = 0;
    long long end = now_ms() + 120000;
    while ((sent < n || inflight) && now_ms() < end) {
        while (sent < n && inflight < 64) {
            char note[160], req[512];
            int i = from + sent;
            note_of(i, 0, note, sizeof note);
            snprintf(req, sizeof req,
                     "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"create\",\"params\":{"
                     "\"collection\":\"sessions\",\"doc\":{\"id\":\"s%06d\",\"notes\":\"%s\"}}}",
                     i, i, note);
            if (zmq_send(e->dealer, req, strlen(req), 0) < 0)
                return acked;
            sent++, inflight++;
        }
        zmq_pollitem_t item = {e->dealer, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 1000) <= 0)
            continue;
        char reply[4096];
        int len = zmq_recv(e->dealer, reply, sizeof reply - 1, 0);
        if (len < 0)
            continue;
        reply[len < (int)sizeof reply - 1 ? len : (int)sizeof reply - 1] = '\0';
        inflight--;
        acked += strstr(reply, "\"result\"") != NULL;
    }
    return acked;
}

/* How many of docs s<0..n-1> the engine has, with the note of revision rev
 * (a doc with another note fails the test). */
static int docs_intact(ts_engine_t *e, int n, int rev)
{
    cJSON *items = ts_query_all(e,
                                "{\"collection\":\"sessions\",\"selector\":{\"where\":{},"
                                "\"order_by\":[\"id\",\"asc\"]}}",
                                1000, 1000, NULL);
    cr_assert_not_null(items, "the pages of the dump");
    int good = 0;
    cJSON *doc;
    cJSON_ArrayForEach(doc, items)
    {
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(doc, "id"));
        const char *notes = cJSON_GetStringValue(cJSON_GetObjectItem(doc, "notes"));
        int64_t i = -1;
        cr_assert(id && id[0] == 's' && ts_parse_i64(id + 1, &i) == 0 && i >= 0 && i < n);
        char want[160];
        note_of((int)i, rev, want, sizeof want);
        cr_assert(notes && strcmp(notes, want) == 0, "%s: notes \"%s\", not \"%s\"", id,
                  notes ? notes : "(none)", want);
        good++;
    }
    cJSON_Delete(items);
    return good;
}

/* Starts therasyncd on e's data dir with flags that must make it refuse:
 * its log says needle and it exits non-zero. */
static void start_refused(ts_engine_t *e, const char *const *args, const char *needle)
{
    const char *all[16] = {"--data", e->data, "--endpoint", e->endpoint, "--events", e->events};
    int n = 6;
    for (int i = 0; args[i] && n < 15; i++)
        all[n++] = args[i];
    all[n] = NULL;
    ts_proc_t p;
    cr_assert_eq(ts_proc_spawn(&p, e->dir, "therasyncd", all), 0);
    int code = ts_proc_wait_exit(&p, 10000);
    cr_assert(code != 0 && code != -1, "exit %d: the start must fail", code);
    char line[1024];
    cr_assert_eq(ts_proc_wait_line(&p, needle, 1000, line, sizeof line), 0,
                 "no \"%s\" in %s", needle, p.log_path);
}

/* therasync rekey on data; its exit code, stderr into err when not NULL. */
static int rekey(const char *data, const char *old_key, const char *new_key, ts_buf_t *err)
{
    const char *args[] = {"rekey", "--data", data, "--new-key", new_key,
                          old_key ? "--old-key" : NULL, old_key, NULL};
    return ts_run("therasync", args, NULL, 60000, NULL, err);
}

/* Control: the search finds a plain store's notes, so it can fail. Then,
 * with a key, synced with clinic-api (confirmed bodies, audit lines, the
 * cursor all written): the notes are in neither file, after the writes,
 * after kill -9, after a restart and a clean stop; and every value is
 * intact after the kill. */
Test(seal, notes_never_reach_the_files_and_survive_kill_9, .timeout = 180)
{
    new_marker();
    ts_engine_t plain;
    cr_assert_eq(ts_engine_start(&plain, flags(NULL)), 0);
    cr_assert_eq(write_docs(&plain, 0, 10), 10);
    cr_assert(files_hold(plain.data, marker), "control: a plain store shows its notes");
    ts_engine_destroy(&plain);

    ts_clinic_t api;
    cr_assert_eq(ts_clinic_start(&api, NULL), 0);
    char key[4300], cfg[4300], lua[4400];
    make_key(api.dir, "store.key", key, sizeof key);
    snprintf(lua, sizeof lua, "security = { encryption_key_file = \"%s\" }\n", key);
    make_config(api.dir, "seal.lua", key, cfg, sizeof cfg);
    ts_engine_t e;
    cr_assert_eq(ts_engine_start_synced(&e, &api, lua), 0);
    const int n = 300;
    cr_assert_eq(write_docs(&e, 0, n), n);
    bool drained = false; /* confirmed: the bodies are in docs, the cursor in meta */
    for (long long end = now_ms() + 60000; !drained && now_ms() < end;) {
        cJSON *s = ts_rpc(&e, "status", NULL);
        drained = cJSON_GetObjectItem(ts_rpc_result(s), "pending")->valueint == 0;
        cJSON_Delete(s);
        if (!drained)
            usleep(50000);
    }
    cr_assert(drained, "the writes were confirmed (log %s)", e.proc.log_path);
    cr_assert(!files_hold(e.data, marker), "a note in the clear after the writes");
    ts_engine_kill(&e);
    cr_assert(!files_hold(e.data, marker), "a note in the clear after kill -9");
    const char *const *f = flags(cfg);
    const char *args[] = {"--api", api.url, f[0], f[1], f[2], f[3], NULL};
    cr_assert_eq(ts_engine_restart(&e, args), 0, "restart with the key (log %s)",
                 e.proc.log_path);
    cr_assert_eq(docs_intact(&e, n, 0), n, "every value after kill -9");
    cJSON *a = ts_rpc(&e, "audit", "{\"collection\":\"sessions\",\"id\":\"s000007\"}");
    cr_assert_gt(cJSON_GetArraySize(cJSON_GetObjectItem(ts_rpc_result(a), "entries")), 1,
                 "the audit trail reads back");
    cJSON_Delete(a);
    cr_assert_eq(ts_engine_stop(&e), 0);
    cr_assert(!files_hold(e.data, marker), "a note in the clear after a clean stop");
    ts_engine_destroy(&e);
    ts_clinic_destroy(&api);
}

/* A wrong key, no key, a key file others can read: each stops the start
 * with a clear message and a non-zero exit, and changes nothing; the key
 * as a systemd credential opens it. */
Test(seal, wrong_or_missing_key_refuses_to_start, .timeout = 120)
{
    new_marker();
    char *dir = ts_tmpdir("ts-seal");
    char k1[KEY_PATH], k2[KEY_PATH], c1[KEY_PATH], c2[KEY_PATH];
    two_keys(dir, k1, k2, c1, c2);
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, flags(c1)), 0);
    cr_assert_eq(write_docs(&e, 0, 50), 50);
    cr_assert_eq(ts_engine_stop(&e), 0);

    start_refused(&e, flags(c2), "wrong key: this store is sealed with key id");
    start_refused(&e, flags(NULL), "this store is encrypted");
    chmod(k1, 0644);
    start_refused(&e, flags(c1), "can be read or written by other users");
    chmod(k1, 0600);

    /* the credential, as systemd passes it */
    char creds[4300], cred[4400];
    snprintf(creds, sizeof creds, "%s/creds", dir);
    cr_assert_eq(mkdir(creds, 0700), 0);
    snprintf(cred, sizeof cred, "%s/therasync.key", creds);
    cr_assert_eq(link(k1, cred), 0);
    setenv("CREDENTIALS_DIRECTORY", creds, 1);
    int started = ts_engine_restart(&e, flags(NULL));
    unsetenv("CREDENTIALS_DIRECTORY");
    cr_assert_eq(started, 0, "the credential opens it (log %s)", e.proc.log_path);
    cr_assert_eq(docs_intact(&e, 50, 0), 50, "nothing lost to the refused starts");
    cr_assert_eq(ts_engine_stop(&e), 0);
    ts_engine_destroy(&e);
    ts_rmtree(dir);
    free(dir);
}

/* A plain store started with a key is sealed whole, its old plain values
 * gone from the files. */
Test(seal, plain_store_started_with_a_key_is_sealed, .timeout = 120)
{
    new_marker();
    char *dir = ts_tmpdir("ts-seal");
    char k1[4300], c1[4300];
    make_key(dir, "k1", k1, sizeof k1);
    make_config(dir, "c1.lua", k1, c1, sizeof c1);
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, flags(NULL)), 0);
    cr_assert_eq(write_docs(&e, 0, 200), 200);
    ts_engine_kill(&e); /* the notes stay in the WAL */
    cr_assert(files_hold(e.data, marker), "control: the plain store shows its notes");
    cr_assert_eq(ts_engine_restart(&e, flags(c1)), 0, "log %s", e.proc.log_path);
    cr_assert(!files_hold(e.data, marker), "a plain note left in the files after sealing");
    cr_assert_eq(docs_intact(&e, 200, 0), 200);
    cr_assert_eq(ts_engine_stop(&e), 0);
    start_refused(&e, flags(NULL), "this store is encrypted");
    ts_engine_destroy(&e);
    ts_rmtree(dir);
    free(dir);
}

/* A sealed store's backup stays sealed through `therasync restore`: the
 * command names its key, the restored database holds no note in clear,
 * the wrong key is refused and the right one opens every document. */
Test(seal, a_sealed_backup_restored_opens_with_its_key_only, .timeout = 120)
{
    new_marker();
    char *dir = ts_tmpdir("ts-seal");
    char k1[KEY_PATH], k2[KEY_PATH], c1[KEY_PATH], c2[KEY_PATH], backup[4400], params[4500];
    two_keys(dir, k1, k2, c1, c2);
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, flags(c1)), 0);
    cr_assert_eq(write_docs(&e, 0, 100), 100);
    snprintf(backup, sizeof backup, "%s/b.db", dir);
    snprintf(params, sizeof params, "{\"path\":\"%s\"}", backup);
    cJSON *r = ts_rpc(&e, "backup", params);
    cr_assert_not_null(ts_rpc_result(r));
    cJSON_Delete(r);
    cr_assert_eq(write_docs(&e, 100, 10), 10); /* after the backup: not in it */
    ts_engine_kill(&e);

    /* standalone, its 110 writes were never sent: restored over only with --force */
    const char *args[] = {"restore", "--data", e.data, "--force", backup, NULL};
    ts_buf_t out = {0};
    cr_assert_eq(ts_run("therasync", args, NULL, 60000, &out, &out), 0, "%s", out.data);
    cr_assert(strstr(out.data, "110 writes never sent"), "%s", out.data);
    cr_assert(strstr(out.data, "sealed, key id ") && strstr(out.data, "needs that key"), "%s",
              out.data);
    cr_assert(!files_hold(e.data, marker), "a note in clear in the restored database");
    start_refused(&e, flags(c2), "wrong key: this store is sealed with key id");
    cr_assert_eq(ts_engine_restart(&e, flags(c1)), 0, "log %s", e.proc.log_path);
    cr_assert_eq(docs_intact(&e, 100, 0), 100);
    cJSON *gone = ts_rpc(&e, "get", "{\"collection\":\"sessions\",\"id\":\"s000100\"}");
    cr_assert_eq(ts_rpc_error_code(gone), -32001, "a write made after the backup");
    cJSON_Delete(gone);
    cr_assert_eq(ts_engine_stop(&e), 0);
    ts_buf_free(&out);
    ts_engine_destroy(&e);
    ts_rmtree(dir);
    free(dir);
}

/* rekey: refused while the daemon runs and with a wrong old key (the
 * store unchanged); then the new key opens the store and the old one is
 * refused; a second run says it is done. */
Test(seal, rekey_then_only_the_new_key_opens, .timeout = 120)
{
    new_marker();
    char *dir = ts_tmpdir("ts-seal");
    char k1[KEY_PATH], k2[KEY_PATH], k3[KEY_PATH], c1[KEY_PATH], c2[KEY_PATH];
    two_keys(dir, k1, k2, c1, c2);
    make_key(dir, "k3", k3, sizeof k3);
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, flags(c1)), 0);
    cr_assert_eq(write_docs(&e, 0, 100), 100);
    ts_buf_t err = {0};
    cr_assert_neq(rekey(e.data, k1, k2, &err), 0, "rekey while the daemon runs");
    cr_assert(err.data && strstr(err.data, "stop therasyncd first"), "%s", err.data);
    ts_engine_kill(&e);
    ts_buf_reset(&err);
    cr_assert_eq(rekey(e.data, k3, k2, &err), 1, "rekey with a wrong old key");
    cr_assert(err.data && strstr(err.data, "wrong key"), "%s", err.data);
    ts_buf_reset(&err);
    cr_assert_eq(rekey(e.data, k1, k2, &err), 0, "%s", err.data ? err.data : "");
    cr_assert_eq(rekey(e.data, k1, k2, NULL), 0, "a second run is a no-op");
    cr_assert(!files_hold(e.data, marker));
    start_refused(&e, flags(c1), "wrong key: this store is sealed with key id");
    cr_assert_eq(ts_engine_restart(&e, flags(c2)), 0, "log %s", e.proc.log_path);
    cr_assert_eq(docs_intact(&e, 100, 0), 100);
    cr_assert_eq(ts_engine_stop(&e), 0);
    ts_buf_free(&err);
    ts_engine_destroy(&e);
    ts_rmtree(dir);
    free(dir);
}

/* kill -9 of rekey at random times through its run, back and forth between
 * two keys: after each, one of the keys opens the store and every
 * acknowledged value is there. */
Test(seal, kill_9_during_rekey_loses_nothing, .timeout = 300)
{
    new_marker();
    srand((unsigned)time(NULL));
    char *dir = ts_tmpdir("ts-seal");
    char keys[2][4300], cfgs[2][4300];
    make_key(dir, "k0", keys[0], sizeof keys[0]);
    make_key(dir, "k1", keys[1], sizeof keys[1]);
    make_config(dir, "c0.lua", keys[0], cfgs[0], sizeof cfgs[0]);
    make_config(dir, "c1.lua", keys[1], cfgs[1], sizeof cfgs[1]);
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, flags(cfgs[0])), 0);
    const int n = 30000;
    cr_assert_eq(write_docs(&e, 0, n), n);
    cr_assert_eq(ts_engine_stop(&e), 0);
    /* One whole run, timed: the kills fall within 1.5 times it. */
    long long t0 = now_ms();
    cr_assert_eq(rekey(e.data, keys[0], keys[1], NULL), 0);
    long long took = now_ms() - t0 + 1;
    int cur = 1, opened_by[2] = {0, 0};
    for (int round = 0; round < 12; round++) {
        int next = !cur;
        const char *args[] = {"rekey", "--data", e.data, "--old-key", keys[cur],
                              "--new-key", keys[next], NULL};
        ts_proc_t p;
        cr_assert_eq(ts_proc_spawn(&p, dir, "therasync", args), 0);
        usleep((useconds_t)(rand() % (took * 1500)));
        kill(p.pid, SIGKILL);
        ts_proc_stop(&p, 5000); /* reaps it */
        if (ts_engine_restart(&e, flags(cfgs[next])) == 0) {
            cur = next;
        } else {
            cr_assert_eq(ts_engine_restart(&e, flags(cfgs[cur])), 0,
                         "round %d: neither key opens the store (log %s)", round, e.proc.log_path);
        }
        opened_by[cur == next ? 1 : 0]++;
        cr_assert_eq(docs_intact(&e, n, 0), n, "round %d: every acknowledged value", round);
        cr_assert_eq(ts_engine_stop(&e), 0);
    }
    cr_log_info("rekey (%lld ms whole) killed 12 times: %d left under the old key, %d under "
                "the new", took, opened_by[0], opened_by[1]);
    ts_engine_destroy(&e);
    ts_rmtree(dir);
    free(dir);
}
