/* main.c — therasync: the command-line client of therasyncd.
 *
 * Parses the command line, sends one JSON-RPC request (or subscribes to the
 * events, for `watch`), prints the result. Exit codes: 0 ok, 1 error reply,
 * 2 usage, 3 engine unreachable within --timeout. */
#include "cli.h"
#include "therasync/policy_tools.h"

#include "therasync/json.h"
#include "therasync/persist.h"
#include "therasync/util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define DEFAULT_ENDPOINT "tcp://127.0.0.1:7410"
#define DEFAULT_EVENTS "tcp://127.0.0.1:7411"
#define DEFAULT_TIMEOUT_MS 5000
#define MAX_INPUT_BYTES (64u << 20) /* a document file or stdin; the engine's limit is lower */
#define MAX_ARGS 64

static const char usage_text[] =
    "usage: therasync [--endpoint ZMQ] [--key FILE --server-key FILE] [--timeout MS] [--json]\n"
    "                 COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  call METHOD [JSON-PARAMS]               any JSON-RPC method\n"
    "  create COLLECTION JSON|@FILE|-          create a document\n"
    "  get COLLECTION ID\n"
    "  update COLLECTION ID PATCH-JSON [--base-version N]   RFC 7396 merge patch\n"
    "  delete COLLECTION ID\n"
    "  query COLLECTION SELECTOR [PARAMS-JSON] SELECTOR: a selector name, or JSON\n"
    "                                          such as {\"where\":{\"status\":\"scheduled\"},\n"
    "                                          \"order_by\":[\"scheduled_at\",\"asc\"],\"limit\":20}\n"
    "  live COLLECTION SELECTOR [PARAMS-JSON] [--mode diff|full] [--count N] [--for SECONDS]\n"
    "                                          a live query: its result, then every change\n"
    "  top [--interval MS] [--count N] [--for SECONDS]\n"
    "                                          the engine at a glance, redrawn every second:\n"
    "                                          calls/s and latency by method, sync, cache\n"
    "  status                                  engine status\n"
    "  watch [TOPIC...] [--events ZMQ] [--count N] [--for SECONDS]\n"
    "                                          print events until Ctrl-C (topics: doc.sessions,\n"
    "                                          mutation, conflict, sync, policy; none = all)\n"
    "  audit [--collection C] [--id ID] [--since T] [--until T] [--event E] [--limit N]\n"
    "        [--jsonl]                         the audit trail; --jsonl: every entry of the\n"
    "                                          range, one JSON line each (an export)\n"
    "  cancel MUTATION                         drop a mutation not yet sent\n"
    "  backup PATH                             the daemon copies its database to PATH\n"
    "                                          (new file, 0600; docs/OPERATIONS.md)\n"
    "  sync                                    one push+pull round\n"
    "  ping\n"
    "  policy reload|info                      reload the policies / show what is loaded\n"
    "  policy test DIR | policy check DIR      run *_test.lua files / load-check a directory\n"
    "  keygen [PATH/NAME]                      a CURVE key pair: PATH/NAME.key (secret) and\n"
    "                                          PATH/NAME.pub, mode 0600, and the clients-file\n"
    "                                          line; without NAME, printed only\n"
    "  rekey --data DIR [--old-key FILE] --new-key FILE\n"
    "                                          re-seal a stopped daemon's store under a new\n"
    "                                          key (--old-key: its key now; none: seal a\n"
    "                                          plain store); see SECURITY.md\n"
    "  restore --data DIR [--force] BACKUP     put a backup in place as a stopped daemon's\n"
    "                                          database, checked first; the one it replaces\n"
    "                                          is kept beside it (docs/OPERATIONS.md);\n"
    "                                          refused while that one holds writes never\n"
    "                                          sent, unless --force\n"
    "\n"
    "options:\n"
    "  --endpoint ZMQ   front door (default " DEFAULT_ENDPOINT ", or $THERASYNC_ENDPOINT)\n"
    "  --events ZMQ     event socket for watch (default " DEFAULT_EVENTS
    ", or $THERASYNC_EVENTS)\n"
    "  --key FILE       this client's key pair, for a daemon that wants keys (or\n"
    "                   $THERASYNC_KEY; docs/FRONT_DOOR.md, Authentication)\n"
    "  --server-key FILE  the daemon's public key (or $THERASYNC_SERVER_KEY)\n"
    "  --timeout MS     give up after MS milliseconds without an answer (default 5000)\n"
    "  --json           print the raw JSON result (for scripts)\n"
    "  --help, --version\n"
    "\n"
    "exit codes: 0 ok, 1 error reply, 2 usage, 3 engine unreachable\n";

/* Everything the command line said. */
typedef struct {
    const char *endpoint;
    const char *events;
    const char *key;        /* --key: this client's key pair */
    const char *server_key; /* --server-key: the daemon's public key */
    int timeout_ms;
    bool json;
    bool has_base_version;
    int64_t base_version;
    const char *collection; /* audit --collection */
    const char *id;         /* audit --id */
    const char *since;      /* audit --since */
    const char *until;      /* audit --until */
    const char *event;      /* audit --event */
    bool jsonl;             /* audit --jsonl: every entry, one JSON line each */
    bool force;             /* restore --force: over writes never sent */
    bool has_limit;
    int64_t limit;   /* audit --limit */
    int64_t count;   /* watch --count, 0 = unbounded */
    int64_t for_s;   /* watch --for, 0 = unbounded */
    int64_t interval_ms; /* top --interval (default 1000) */
    const char *mode;/* live --mode */
    const char *data, *old_key, *new_key; /* rekey --data, --old-key, --new-key (files, never keys) */
    const char *args[MAX_ARGS]; /* command and its positional arguments */
    int nargs;
} opts_t;

static int usage_error(const char *fmt, const char *what)
{
    fprintf(stderr, "therasync: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, "\n(see therasync --help)\n");
    return CLI_EXIT_USAGE;
}

static int parse_int_opt(const char *name, const char *text, int64_t min, int64_t *value)
{
    if (ts_parse_i64(text, value) || *value < min)
        return usage_error("bad number for %s", name);
    return 0;
}

/* Options may appear anywhere; "--" ends them. Returns -1 to exit 0 (help,
 * version), CLI_EXIT_USAGE, or 0. */
static int parse_args(int argc, char **argv, opts_t *o)
{
    const char *env = getenv("THERASYNC_ENDPOINT");
    o->endpoint = env && *env ? env : DEFAULT_ENDPOINT;
    env = getenv("THERASYNC_EVENTS");
    o->events = env && *env ? env : DEFAULT_EVENTS;
    env = getenv("THERASYNC_KEY");
    o->key = env && *env ? env : NULL;
    env = getenv("THERASYNC_SERVER_KEY");
    o->server_key = env && *env ? env : NULL;
    o->timeout_ms = DEFAULT_TIMEOUT_MS;
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options_done || a[0] != '-' || a[1] != '-' || strcmp(a, "-") == 0) {
            if (o->nargs == MAX_ARGS)
                return usage_error("%s", "too many arguments");
            o->args[o->nargs++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = true;
            continue;
        }
        if (strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            return -1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("therasync %s\n", TS_VERSION);
            return -1;
        }
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (strcmp(a, "--jsonl") == 0) {
            o->jsonl = true;
            continue;
        }
        if (strcmp(a, "--force") == 0) {
            o->force = true;
            continue;
        }
        /* Options with a value: --name VALUE or --name=VALUE. */
        static const char *const valued[] = {"--endpoint", "--events", "--timeout",
                                             "--base-version", "--collection", "--id",
                                             "--since", "--limit", "--count", "--for", "--interval",
                                             "--mode", "--until", "--event", "--key",
                                             "--server-key", "--data", "--old-key", "--new-key", NULL};
        const char *eq = strchr(a, '=');
        size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
        int k = 0;
        while (valued[k] && !(strlen(valued[k]) == name_len && strncmp(a, valued[k], name_len) == 0))
            k++;
        if (!valued[k])
            return usage_error("unknown option %s", a);
        const char *name = valued[k], *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc)
                return usage_error("%s needs a value", name);
            v = argv[++i];
        }
        int64_t n = 0;
        if (strcmp(name, "--endpoint") == 0) {
            o->endpoint = v;
        } else if (strcmp(name, "--events") == 0) {
            o->events = v;
        } else if (strcmp(name, "--key") == 0) {
            o->key = v;
        } else if (strcmp(name, "--server-key") == 0) {
            o->server_key = v;
        } else if (strcmp(name, "--timeout") == 0) {
            if (parse_int_opt(name, v, 1, &n) || n > 24 * 3600 * 1000)
                return CLI_EXIT_USAGE;
            o->timeout_ms = (int)n;
        } else if (strcmp(name, "--base-version") == 0) {
            if (parse_int_opt(name, v, 0, &o->base_version))
                return CLI_EXIT_USAGE;
            o->has_base_version = true;
        } else if (strcmp(name, "--collection") == 0) {
            o->collection = v;
        } else if (strcmp(name, "--id") == 0) {
            o->id = v;
        } else if (strcmp(name, "--since") == 0) {
            o->since = v;
        } else if (strcmp(name, "--until") == 0) {
            o->until = v;
        } else if (strcmp(name, "--event") == 0) {
            o->event = v;
        } else if (strcmp(name, "--limit") == 0) {
            if (parse_int_opt(name, v, 0, &o->limit))
                return CLI_EXIT_USAGE;
            o->has_limit = true;
        } else if (strcmp(name, "--interval") == 0) {
            if (parse_int_opt(name, v, 50, &o->interval_ms))
                return CLI_EXIT_USAGE;
            if (o->interval_ms > 3600000)
                return usage_error("%s", "--interval is 50 to 3600000 ms");
        } else if (strcmp(name, "--count") == 0) {
            if (parse_int_opt(name, v, 1, &o->count))
                return CLI_EXIT_USAGE;
        } else if (strcmp(name, "--for") == 0) {
            if (parse_int_opt(name, v, 1, &o->for_s))
                return CLI_EXIT_USAGE;
        } else if (strcmp(name, "--data") == 0) {
            o->data = v;
        } else if (strcmp(name, "--old-key") == 0) {
            o->old_key = v;
        } else if (strcmp(name, "--new-key") == 0) {
            o->new_key = v;
        } else if (strcmp(name, "--mode") == 0) {
            if (strcmp(v, "diff") && strcmp(v, "full"))
                return usage_error("--mode is diff or full, not %s", v);
            o->mode = v;
        }
    }
    return 0;
}

/* Reads a whole file ("-" = stdin) into buf; 0 or -1 (message printed). */
static int read_input(const char *path, ts_buf_t *buf)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "therasync: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    char chunk[65536];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (buf->len + n > MAX_INPUT_BYTES || ts_buf_append(buf, chunk, n)) {
            fprintf(stderr, "therasync: %s is too large\n", path);
            rc = -1;
            break;
        }
    }
    if (ferror(f)) {
        fprintf(stderr, "therasync: cannot read %s\n", path);
        rc = -1;
    }
    if (f != stdin)
        fclose(f);
    return rc;
}

/* Parses a JSON argument: literal text, @FILE or - (stdin) when allow_file. */
static cJSON *json_arg(const char *what, const char *text, bool allow_file)
{
    ts_buf_t buf = {0};
    if (allow_file && (text[0] == '@' || strcmp(text, "-") == 0)) {
        if (read_input(text[0] == '@' ? text + 1 : text, &buf)) {
            ts_buf_free(&buf);
            return NULL;
        }
        text = buf.data ? buf.data : "";
    }
    cJSON *json = cJSON_Parse(text);
    if (!json)
        fprintf(stderr, "therasync: %s is not valid JSON\n", what);
    ts_buf_free(&buf);
    return json;
}

/* ---- commands ---- */

typedef struct {
    opts_t *o;
    cli_rpc_t *rpc;
} cmd_ctx_t;

/* Result printers: one per command's result shape. */
typedef void (*printer_fn)(const cJSON *result);

static void print_doc_result(const cJSON *r)
{
    cli_print_doc(stdout, cJSON_GetObjectItemCaseSensitive(r, "doc"));
    cli_print_sync(stdout, cJSON_GetObjectItemCaseSensitive(r, "sync"));
}

static void print_delete_result(const cJSON *r)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(r, "id");
    printf("deleted %s\n", cJSON_IsString(id) ? id->valuestring : "?");
    cli_print_sync(stdout, cJSON_GetObjectItemCaseSensitive(r, "sync"));
}

static void print_query_result(const cJSON *r)
{
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(r, "items");
    cli_print_items(stdout, items);
    const cJSON *stale = cJSON_GetObjectItemCaseSensitive(r, "stale");
    const cJSON *cursor = cJSON_GetObjectItemCaseSensitive(r, "cursor");
    fprintf(stderr, "(%d item%s%s", cJSON_GetArraySize(items),
            cJSON_GetArraySize(items) == 1 ? "" : "s", cJSON_IsTrue(stale) ? ", stale" : "");
    if (cursor && !cJSON_IsNull(cursor)) {
        char *text = cJSON_PrintUnformatted(cursor);
        fprintf(stderr, ", cursor %s", text ? text : "?");
        cJSON_free(text);
    }
    fprintf(stderr, ")\n");
}

static void print_kv_result(const cJSON *r)
{
    cli_print_kv(stdout, r);
}

static void print_audit_result(const cJSON *r)
{
    cli_print_audit(stdout, cJSON_GetObjectItemCaseSensitive(r, "entries"));
}

static void print_cancel_result(const cJSON *r)
{
    printf("cancelled: %s\n", cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "cancelled")) ? "true" : "false");
    const cJSON *doc = cJSON_GetObjectItemCaseSensitive(r, "doc");
    if (doc && !cJSON_IsNull(doc))
        cli_print_doc(stdout, doc);
}

static void print_any_result(const cJSON *r)
{
    if (cJSON_IsString(r))
        printf("%s\n", r->valuestring);
    else
        cli_print_doc(stdout, r);
}

/* Sends one request and prints its answer. Takes ownership of params. */
/* Calls method (params taken); CLI_EXIT_OK with *response holding a
 * result (caller deletes), else the exit code, the reason printed. */
static int rpc_result(cmd_ctx_t *c, const char *method, cJSON *params, cJSON **response)
{
    int rc = cli_rpc_call(c->rpc, method, params, response);
    cJSON_Delete(params);
    if (rc == CLI_EXIT_UNREACHABLE)
        fprintf(stderr, "therasync: no answer from %s within %d ms (is therasyncd running?)\n",
                c->o->endpoint, c->o->timeout_ms);
    if (rc != CLI_EXIT_OK)
        return rc;
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(*response, "error");
    if (error) {
        cli_print_error(error);
        if (c->o->json)
            cli_print_compact(stdout, error);
        cJSON_Delete(*response);
        *response = NULL;
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}

/* A response's result, as --json or print has it. */
static const cJSON *print_result(cmd_ctx_t *c, const cJSON *response, printer_fn print)
{
    const cJSON *result = cJSON_GetObjectItemCaseSensitive(response, "result");
    if (c->o->json)
        cli_print_compact(stdout, result);
    else
        print(result);
    fflush(stdout);
    return result;
}

static int rpc_and_print(cmd_ctx_t *c, const char *method, cJSON *params, printer_fn print)
{
    cJSON *response = NULL;
    int rc = rpc_result(c, method, params, &response);
    if (rc != CLI_EXIT_OK)
        return rc;
    print_result(c, response, print);
    cJSON_Delete(response);
    return CLI_EXIT_OK;
}

/* {"collection": coll} plus, when id is given, "id". NULL on out-of-memory. */
static cJSON *params_for(const char *coll, const char *id)
{
    cJSON *p = cJSON_CreateObject();
    if (p && coll)
        cJSON_AddStringToObject(p, "collection", coll);
    if (p && id)
        cJSON_AddStringToObject(p, "id", id);
    return p;
}

static int cmd_call(cmd_ctx_t *c, int argc, const char **argv)
{
    cJSON *params = NULL;
    if (argc > 1 && !(params = json_arg("JSON-PARAMS", argv[1], true)))
        return CLI_EXIT_USAGE;
    return rpc_and_print(c, argv[0], params, print_any_result);
}

static int cmd_create(cmd_ctx_t *c, int argc, const char **argv)
{
    (void)argc;
    cJSON *doc = json_arg("the document", argv[1], true);
    if (!doc)
        return CLI_EXIT_USAGE;
    cJSON *p = params_for(argv[0], NULL);
    cJSON_AddItemToObject(p, "doc", doc);
    return rpc_and_print(c, "create", p, print_doc_result);
}

static int cmd_get(cmd_ctx_t *c, int argc, const char **argv)
{
    (void)argc;
    return rpc_and_print(c, "get", params_for(argv[0], argv[1]), print_doc_result);
}

static int cmd_update(cmd_ctx_t *c, int argc, const char **argv)
{
    (void)argc;
    cJSON *patch = json_arg("PATCH-JSON", argv[2], true);
    if (!patch)
        return CLI_EXIT_USAGE;
    cJSON *p = params_for(argv[0], argv[1]);
    cJSON_AddItemToObject(p, "patch", patch);
    if (c->o->has_base_version)
        cJSON_AddNumberToObject(p, "base_version", (double)c->o->base_version);
    return rpc_and_print(c, "update", p, print_doc_result);
}

static int cmd_delete(cmd_ctx_t *c, int argc, const char **argv)
{
    (void)argc;
    return rpc_and_print(c, "delete", params_for(argv[0], argv[1]), print_delete_result);
}

static int cmd_query(cmd_ctx_t *c, int argc, const char **argv)
{
    /* A selector that parses as JSON goes as JSON (the daemon's built-in
     * {where, order_by, limit} form); anything else is a selector name. */
    cJSON *selector = cJSON_Parse(argv[1]);
    if (!selector)
        selector = cJSON_CreateString(argv[1]);
    cJSON *p = params_for(argv[0], NULL);
    cJSON_AddItemToObject(p, "selector", selector);
    if (argc > 2) {
        cJSON *params = json_arg("PARAMS-JSON", argv[2], true);
        if (!params) {
            cJSON_Delete(p);
            return CLI_EXIT_USAGE;
        }
        cJSON_AddItemToObject(p, "params", params);
    }
    return rpc_and_print(c, "query", p, print_query_result);
}

static int cmd_status(cmd_ctx_t *c, int argc, const char **argv)
{
    (void)argc, (void)argv;
    return rpc_and_print(c, "status", NULL, print_kv_result);
}

static cJSON *audit_params(const opts_t *o)
{
    cJSON *p = params_for(o->collection, o->id);
    if (o->since)
        cJSON_AddStringToObject(p, "since", o->since);
    if (o->until)
        cJSON_AddStringToObject(p, "until", o->until);
    if (o->event)
        cJSON_AddStringToObject(p, "event", o->event);
    return p;
}

/* audit --jsonl: every entry of the range, one JSON object a line, for a
 * compliance reviewer; pages of --limit (1000) through offset. */
static int audit_export(cmd_ctx_t *c)
{
    long long page = c->o->has_limit ? c->o->limit : 1000, offset = 0;
    for (int pages = 0; pages < 1000000; pages++) {
        cJSON *p = audit_params(c->o);
        cJSON_AddNumberToObject(p, "limit", (double)page);
        cJSON_AddNumberToObject(p, "offset", (double)offset);
        cJSON *response = NULL;
        int rc = rpc_result(c, "audit", p, &response);
        if (rc != CLI_EXIT_OK)
            return rc;
        const cJSON *entries = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(response, "result"), "entries");
        int n = cJSON_GetArraySize(entries);
        const cJSON *e;
        cJSON_ArrayForEach(e, entries)
            cli_print_compact(stdout, e);
        cJSON_Delete(response);
        offset += n;
        if (n < page)
            break;
    }
    fflush(stdout);
    return CLI_EXIT_OK;
}

static int cmd_audit(cmd_ctx_t *c, int argc, const char **argv)
{
    (void)argc, (void)argv;
    if (c->o->jsonl)
        return audit_export(c);
    cJSON *p = audit_params(c->o);
    if (c->o->has_limit)
        cJSON_AddNumberToObject(p, "limit", (double)c->o->limit);
    return rpc_and_print(c, "audit", p, print_audit_result);
}

static int cmd_cancel(cmd_ctx_t *c, int argc, const char **argv)
{
    (void)argc;
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "mutation", argv[0]);
    return rpc_and_print(c, "cancel", p, print_cancel_result);
}

static int cmd_sync(cmd_ctx_t *c, int argc, const char **argv)
{
    (void)argc, (void)argv;
    return rpc_and_print(c, "sync", NULL, print_kv_result);
}

static int cmd_ping(cmd_ctx_t *c, int argc, const char **argv)
{
    (void)argc, (void)argv;
    return rpc_and_print(c, "ping", NULL, print_any_result);
}

/* ---- policy test / check: run locally, not through the engine ---- */

static int policy_tool(bool test, const char *dir)
{
    int failures = (test ? ts_policy_test_dir : ts_policy_check_dir)(dir, stdout);
    fflush(stdout);
    return failures == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

/* policy.reload answers a result even when it refuses the new policies
 * (loaded: false, the old stay in force); that is a failure here, so that
 * systemd's ExecReload= and scripts see it. */
static int policy_reload(cmd_ctx_t *c)
{
    cJSON *response = NULL;
    int rc = rpc_result(c, "policy.reload", NULL, &response);
    if (rc != CLI_EXIT_OK)
        return rc;
    const cJSON *result = print_result(c, response, print_kv_result);
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(result, "loaded"))) {
        const cJSON *why = cJSON_GetObjectItemCaseSensitive(result, "error");
        fprintf(stderr, "therasync: policy reload refused, the old policies stay: %s\n",
                cJSON_IsString(why) ? why->valuestring : "(no reason given)");
        rc = CLI_EXIT_ERROR;
    }
    cJSON_Delete(response);
    return rc;
}

/* backup PATH: the daemon writes the copy, so a relative PATH is made
 * absolute here (the daemon's working directory is not ours). */
static int cmd_backup(cmd_ctx_t *c, int argc, const char **argv)
{
    (void)argc;
    char cwd[4096], path[8192];
    if (argv[0][0] != '/' && !getcwd(cwd, sizeof cwd))
        return usage_error("%s", "cannot read the working directory");
    snprintf(path, sizeof path, "%s%s%s", argv[0][0] == '/' ? "" : cwd,
             argv[0][0] == '/' ? "" : "/", argv[0]);
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", path);
    return rpc_and_print(c, "backup", p, print_kv_result);
}

static int cmd_policy(cmd_ctx_t *c, int argc, const char **argv)
{
    const char *sub = argv[0];
    if (strcmp(sub, "reload") == 0 && argc == 1)
        return policy_reload(c);
    if (strcmp(sub, "info") == 0 && argc == 1)
        return rpc_and_print(c, "policy.info", NULL, print_kv_result);
    if ((strcmp(sub, "test") == 0 || strcmp(sub, "check") == 0) && argc == 2)
        return policy_tool(strcmp(sub, "test") == 0, argv[1]);
    return usage_error("%s", "usage: policy reload | policy info | policy test DIR | policy check DIR");
}

/* ---- rekey: on the data dir of a stopped daemon, not through it ---- */

static int cmd_rekey(cmd_ctx_t *c, int argc, const char **argv)
{
    (void)argc, (void)argv;
    if (!c->o->data || !c->o->new_key)
        return usage_error("%s", "usage: therasync rekey --data DIR [--old-key FILE] --new-key FILE");
    char err[1024] = "";
    if (ts_persist_rekey(c->o->data, c->o->old_key, c->o->new_key, err, sizeof err)) {
        fprintf(stderr, "therasync: rekey: %s; the store is unchanged\n", err);
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}

/* ---- restore: a backup into the data dir of a stopped daemon ---- */

static int cmd_restore(cmd_ctx_t *c, int argc, const char **argv)
{
    (void)argc;
    if (!c->o->data)
        return usage_error("%s", "usage: therasync restore --data DIR [--force] BACKUP");
    char err[1024] = "";
    if (ts_persist_restore(c->o->data, argv[0], c->o->force, err, sizeof err)) {
        fprintf(stderr, "therasync: restore: %s\n", err);
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}

/* ---- watch: SUB to the events socket ---- */

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void print_event(const opts_t *o, const char *topic, size_t topic_len, const char *body,
                        size_t body_len)
{
    if (o->json) {
        printf("%.*s\n", (int)body_len, body);
    } else {
        char stamp[32];
        ts_rfc3339(ts_wall_ms(), stamp);
        cJSON *ev = cJSON_ParseWithLength(body, body_len);
        const cJSON *method = cJSON_GetObjectItemCaseSensitive(ev, "method");
        char *params = ev ? cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(ev, "params")) : NULL;
        printf("%s %.*s %s %s\n", stamp + 11, (int)topic_len, topic,
               cJSON_IsString(method) ? method->valuestring : "?", params ? params : "");
        cJSON_free(params);
        cJSON_Delete(ev);
    }
    fflush(stdout);
}

static int cmd_top(cmd_ctx_t *c, int argc, const char **argv)
{
    (void)argc, (void)argv;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    return cli_top(c->rpc, c->o->interval_ms ? (int)c->o->interval_ms : 1000, c->o->count,
                   c->o->for_s, &stop_requested);
}

static int cmd_watch(cmd_ctx_t *c, int argc, const char **argv)
{
    opts_t *o = c->o;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    void *ctx = zmq_ctx_new();
    void *sub = ctx ? zmq_socket(ctx, ZMQ_SUB) : NULL;
    int linger = 0, rc = CLI_EXIT_OK;
    if (sub && cli_curve_client(sub, o->key, o->server_key)) {
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    if (!sub || zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_connect(sub, o->events)) {
        fprintf(stderr, "therasync: cannot connect to %s: %s\n", o->events, zmq_strerror(errno));
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    if (argc == 0)
        zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
    for (int i = 0; i < argc; i++)
        zmq_setsockopt(sub, ZMQ_SUBSCRIBE, argv[i], strlen(argv[i]));
    int64_t deadline = o->for_s ? ts_mono_us() + o->for_s * 1000000 : INT64_MAX;
    int64_t seen = 0;
    while (!stop_requested && (o->count == 0 || seen < o->count) && ts_mono_us() < deadline) {
        zmq_pollitem_t item = {.socket = sub, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, 200) <= 0)
            continue;
        /* Two frames: topic, then the JSON-RPC notification. */
        zmq_msg_t topic, body;
        zmq_msg_init(&topic);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&topic, sub, ZMQ_DONTWAIT) >= 0) {
            if (zmq_msg_more(&topic) && zmq_msg_recv(&body, sub, ZMQ_DONTWAIT) >= 0) {
                print_event(o, zmq_msg_data(&topic), zmq_msg_size(&topic), zmq_msg_data(&body),
                            zmq_msg_size(&body));
                seen++;
            }
            while (zmq_msg_more(&body) && zmq_msg_recv(&body, sub, ZMQ_DONTWAIT) >= 0)
                ; /* drop unexpected extra frames */
        }
        zmq_msg_close(&topic);
        zmq_msg_close(&body);
    }
done:
    if (sub)
        zmq_close(sub);
    if (ctx)
        zmq_ctx_term(ctx);
    return rc;
}

/* ---- live: a live query on the front door's own connection ---- */

static size_t item_index(cJSON **v, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++) {
        const char *x = ts_json_string(v[i], "id");
        if (x && strcmp(x, id) == 0)
            return i;
    }
    return n;
}

/* Applies query.changed ops to items, in order (docs/CACHE.md). On a
 * plain array of pointers: cJSON's own insert loses items after a detach
 * in the cJSON Debian ships (1.7.15). */
static void apply_ops(cJSON *items, const cJSON *ops)
{
    size_t n = 0, cap = (size_t)cJSON_GetArraySize(items) + (size_t)cJSON_GetArraySize(ops) + 1;
    cJSON **v = ts_xcalloc(cap, sizeof *v);
    while (items->child)
        v[n++] = cJSON_DetachItemViaPointer(items, items->child);
    for (const cJSON *op = ops ? ops->child : NULL; op; op = op->next) {
        const char *kind = ts_json_string(op, "op"), *id = ts_json_string(op, "id");
        const cJSON *doc = cJSON_GetObjectItemCaseSensitive(op, "doc");
        long long pos = 0;
        ts_json_int(op, "pos", &pos);
        if (!kind || !id)
            continue;
        size_t at = item_index(v, n, id), to = pos < 0 ? 0 : (size_t)pos;
        cJSON *moved = NULL;
        if (strcmp(kind, "add") == 0 && doc && n < cap) {
            moved = cJSON_Duplicate(doc, true);
        } else if ((strcmp(kind, "remove") == 0 || strcmp(kind, "move") == 0) && at < n) {
            moved = v[at];
            memmove(&v[at], &v[at + 1], (n - at - 1) * sizeof *v);
            n--;
            if (kind[0] == 'r') {
                cJSON_Delete(moved);
                moved = NULL;
            }
        } else if (strcmp(kind, "edit") == 0 && doc && at < n) {
            cJSON_Delete(v[at]);
            v[at] = cJSON_Duplicate(doc, true);
        }
        if (moved) { /* add, or the second half of a move */
            to = to > n ? n : to;
            memmove(&v[to + 1], &v[to], (n - to) * sizeof *v);
            v[to] = moved;
            n++;
        }
    }
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(items, v[i]);
    free(v);
}

static int cmd_live(cmd_ctx_t *c, int argc, const char **argv)
{
    opts_t *o = c->o;
    cJSON *p = params_for(argv[0], NULL);
    cJSON_AddStringToObject(p, "selector", argv[1]);
    if (argc > 2) {
        cJSON *params = json_arg("PARAMS-JSON", argv[2], true);
        if (!params) {
            cJSON_Delete(p);
            return CLI_EXIT_USAGE;
        }
        cJSON_AddItemToObject(p, "params", params);
    }
    cJSON_AddStringToObject(p, "mode", o->mode ? o->mode : "diff");
    cJSON *response = NULL;
    int rc = rpc_result(c, "subscribe", p, &response);
    if (rc != CLI_EXIT_OK)
        return rc;
    cJSON *result = cJSON_GetObjectItemCaseSensitive(response, "result");
    cJSON *items = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(result, "items"), true);
    if (o->json) {
        cli_print_compact(stdout, result);
    } else {
        printf("live query %s, version %.0f:\n", ts_json_string(result, "sub"),
               cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(result, "version")));
        cli_print_items(stdout, items);
    }
    fflush(stdout);
    cJSON_Delete(response);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int64_t deadline = o->for_s ? ts_mono_us() + o->for_s * 1000000 : INT64_MAX;
    int64_t seen = 0;
    while (!stop_requested && (o->count == 0 || seen < o->count) && ts_mono_us() < deadline) {
        cJSON *n = cli_rpc_next(c->rpc, 200);
        const char *method = ts_json_string(n, "method");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(n, "params");
        if (!method) {
            cJSON_Delete(n);
            continue;
        }
        seen++;
        if (o->json) {
            cli_print_compact(stdout, n);
        } else if (strcmp(method, "query.closed") == 0) {
            printf("closed: %s\n", ts_json_string(params, "reason"));
        } else {
            const cJSON *full = cJSON_GetObjectItemCaseSensitive(params, "items");
            if (full) {
                cJSON_Delete(items);
                items = cJSON_Duplicate(full, true);
            } else {
                apply_ops(items, cJSON_GetObjectItemCaseSensitive(params, "ops"));
            }
            char stamp[32];
            ts_rfc3339(ts_wall_ms(), stamp);
            printf("%s version %.0f:\n", stamp + 11,
                   cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(params, "to")));
            cli_print_items(stdout, items);
        }
        fflush(stdout);
        bool closed = strcmp(method, "query.closed") == 0;
        cJSON_Delete(n);
        if (closed) {
            rc = CLI_EXIT_ERROR;
            break;
        }
    }
    cJSON_Delete(items);
    return rc;
}

/* ---- keygen: a CURVE key pair for a client or the daemon ---- */

/* Writes text to a new file of mode 0600 (never over an old one). */
static int write_new_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "therasync: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t len = strlen(text);
    bool ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    if (close(fd) || !ok) {
        fprintf(stderr, "therasync: cannot write %s: %s\n", path, strerror(errno));
        unlink(path);
        return -1;
    }
    return 0;
}

static int cmd_keygen(cmd_ctx_t *c, int argc, const char **argv)
{
    (void)c;
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec)) {
        fprintf(stderr, "therasync: this libzmq cannot make CURVE keys: %s\n",
                zmq_strerror(errno));
        return CLI_EXIT_ERROR;
    }
    if (argc == 0) { /* the key file's format, for a file made elsewhere */
        printf("public %s\nsecret %s\n", pub, sec);
        explicit_bzero(sec, sizeof sec);
        return CLI_EXIT_OK;
    }
    const char *path = argv[0], *slash = strrchr(path, '/'), *name = slash ? slash + 1 : path;
    size_t len = strlen(name);
    if (len == 0 || len > 32 ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != len)
        return usage_error("the key's NAME is 1-32 of [A-Za-z0-9_.-], not '%s'", name);
    char key_path[4096], pub_path[4096], text[512];
    snprintf(key_path, sizeof key_path, "%s.key", path);
    snprintf(pub_path, sizeof pub_path, "%s.pub", path);
    snprintf(text, sizeof text,
             "# therasync CURVE key pair of %s: keep it secret (therasync keygen)\n"
             "public %s\nsecret %s\n", name, pub, sec);
    int rc = write_new_file(key_path, text);
    explicit_bzero(text, sizeof text);
    explicit_bzero(sec, sizeof sec);
    if (rc)
        return CLI_EXIT_ERROR;
    snprintf(text, sizeof text, "# therasync CURVE public key of %s\npublic %s\n", name, pub);
    if (write_new_file(pub_path, text)) {
        unlink(key_path);
        return CLI_EXIT_ERROR;
    }
    fprintf(stderr, "wrote %s (secret) and %s; the line for the clients file (role: read, "
                    "write or admin) is:\n", key_path, pub_path);
    printf("%s read %s\n", name, pub);
    return CLI_EXIT_OK;
}

/* ---- dispatch ---- */

typedef struct {
    const char *name;
    int min_args, max_args; /* positional arguments after the command name */
    bool needs_rpc;
    int (*run)(cmd_ctx_t *c, int argc, const char **argv);
    const char *usage;
} command_t;

static const command_t commands[] = {
    {"call", 1, 2, true, cmd_call, "call METHOD [JSON-PARAMS]"},
    {"create", 2, 2, true, cmd_create, "create COLLECTION JSON|@FILE|-"},
    {"get", 2, 2, true, cmd_get, "get COLLECTION ID"},
    {"update", 3, 3, true, cmd_update, "update COLLECTION ID PATCH-JSON [--base-version N]"},
    {"delete", 2, 2, true, cmd_delete, "delete COLLECTION ID"},
    {"query", 2, 3, true, cmd_query, "query COLLECTION SELECTOR [PARAMS-JSON]"},
    {"live", 2, 3, true, cmd_live,
     "live COLLECTION SELECTOR [PARAMS-JSON] [--mode diff|full] [--count N] [--for SECONDS]"},
    {"status", 0, 0, true, cmd_status, "status"},
    {"top", 0, 0, true, cmd_top, "top [--interval MS] [--count N] [--for SECONDS]"},
    {"watch", 0, MAX_ARGS, false, cmd_watch, "watch [TOPIC...] [--count N] [--for SECONDS]"},
    {"audit", 0, 0, true, cmd_audit,
     "audit [--collection C] [--id ID] [--since T] [--until T] [--event E] [--limit N] [--jsonl]"},
    {"cancel", 1, 1, true, cmd_cancel, "cancel MUTATION"},
    {"backup", 1, 1, true, cmd_backup, "backup PATH"},
    {"sync", 0, 0, true, cmd_sync, "sync"},
    {"ping", 0, 0, true, cmd_ping, "ping"},
    {"policy", 1, 2, true, cmd_policy, "policy reload|info|test DIR|check DIR"},
    {"keygen", 0, 1, false, cmd_keygen, "keygen [PATH/NAME]"},
    {"rekey", 0, 0, false, cmd_rekey, "rekey --data DIR [--old-key FILE] --new-key FILE"},
    {"restore", 1, 1, false, cmd_restore, "restore --data DIR [--force] BACKUP"},
};

int main(int argc, char **argv)
{
    ts_oom_hooks_install(); /* policy test runs the engine's code */
    opts_t o = {0};
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? CLI_EXIT_OK : rc;
    if (o.nargs == 0) {
        fputs(usage_text, stderr);
        return CLI_EXIT_USAGE;
    }
    const command_t *cmd = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(o.args[0], commands[i].name) == 0)
            cmd = &commands[i];
    if (!cmd)
        return usage_error("unknown command %s", o.args[0]);
    /* Switches of one command: anywhere else they would be ignored in silence. */
    if (o.force && strcmp(cmd->name, "restore") != 0)
        return usage_error("%s", "--force is for restore only");
    if (o.jsonl && strcmp(cmd->name, "audit") != 0)
        return usage_error("%s", "--jsonl is for audit only");
    int nargs = o.nargs - 1;
    if (nargs < cmd->min_args || nargs > cmd->max_args)
        return usage_error("usage: therasync %s", cmd->usage);
    cmd_ctx_t c = {.o = &o};
    /* policy test/check run locally: no connection needed. */
    bool local = strcmp(cmd->name, "policy") == 0 && nargs == 2;
    if (cmd->needs_rpc && !local &&
        !(c.rpc = cli_rpc_new(o.endpoint, o.timeout_ms, o.key, o.server_key)))
        return CLI_EXIT_USAGE;
    rc = cmd->run(&c, nargs, o.args + 1);
    cli_rpc_destroy(&c.rpc);
    return rc;
}
