/* cli.h — the therasync command-line client: shared pieces of src/cli/.
 *
 * main.c parses the arguments and runs one command; rpc.c sends one JSON-RPC
 * request to the front door and waits (bounded) for its reply; print.c turns
 * results into human-readable text. */
#ifndef THERASYNC_CLI_H
#define THERASYNC_CLI_H

#include <cJSON.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes, as README.md documents them. */
enum {
    CLI_EXIT_OK = 0,          /* the engine answered with a result */
    CLI_EXIT_ERROR = 1,       /* the engine answered with an error (or another runtime failure) */
    CLI_EXIT_USAGE = 2,       /* bad command line or bad local input */
    CLI_EXIT_UNREACHABLE = 3, /* no answer within --timeout */
};

/* ---- rpc.c ---- */

typedef struct cli_rpc cli_rpc_t;

/* A DEALER connected to endpoint (with CURVE keys when given, see
 * cli_curve_client), with linger 0 so that exiting never waits
 * on an absent engine. Returns NULL (and prints why) when ZeroMQ refuses the
 * endpoint. */
cli_rpc_t *cli_rpc_new(const char *endpoint, int timeout_ms, const char *key_file,
                       const char *server_key_file);
/* With key_file (this client's key pair) and server_key_file (the daemon's
 * public key), makes sock a CURVE client before it connects; without them,
 * nothing. 0, or -1 with the reason printed. */
int cli_curve_client(void *sock, const char *key_file, const char *server_key_file);
void cli_rpc_destroy(cli_rpc_t **self_p);

/* Sends {"jsonrpc":"2.0","id":N,"method":method,"params":params} (params may
 * be NULL; the caller keeps it) and waits up to the timeout for the response
 * with the same id. Returns CLI_EXIT_OK with *response set (the whole
 * response object; the caller deletes it), CLI_EXIT_UNREACHABLE on timeout,
 * or CLI_EXIT_ERROR when the reply is not a JSON-RPC response. */
int cli_rpc_call(cli_rpc_t *self, const char *method, const cJSON *params, cJSON **response);

/* The next message the engine sent (a notification of a live query), or
 * NULL when none came within timeout_ms or it was not JSON. */
cJSON *cli_rpc_next(cli_rpc_t *self, int timeout_ms);

/* ---- top.c ---- */

/* `therasync top`: status and metrics every interval_ms, count times (0:
 * until *stop) or for for_s seconds (0: no bound). An exit code. */
int cli_top(cli_rpc_t *rpc, int interval_ms, int64_t count, int64_t for_s,
            volatile sig_atomic_t *stop);

/* ---- print.c ---- */

/* Prints a JSON-RPC error object to stderr as "error CODE REASON: MESSAGE"
 * plus one line per validation error. */
void cli_print_error(const cJSON *error);
/* A document, pretty-printed. */
void cli_print_doc(FILE *out, const cJSON *doc);
/* The "sync" member of a write result, as one line. */
void cli_print_sync(FILE *out, const cJSON *sync);
/* An object as aligned "key: value" lines; nested objects get dotted keys. */
void cli_print_kv(FILE *out, const cJSON *obj);
/* Query items as a table when every item is an object with few short
 * fields; otherwise one compact document per line. */
void cli_print_items(FILE *out, const cJSON *items);
/* Audit entries, one per line. */
void cli_print_audit(FILE *out, const cJSON *entries);
/* Compact JSON of any value, followed by a newline. */
void cli_print_compact(FILE *out, const cJSON *value);

#endif
