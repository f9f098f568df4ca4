/* curve.c — --curve: the bench as a client with a key (docs/FRONT_DOOR.md,
 * "Authentication"). One client key for every socket the bench opens;
 * for a daemon of its own the bench makes that key, the daemon's key pair
 * and the clients file, and starts the daemon with them. */
#include "bench.h"
#include "therasync/front.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

static struct {
    bool on, own;               /* own: the keys are ours, for our own daemon */
    char server_public[41];     /* the daemon's */
    char server_secret[41];     /* own only */
    char public_key[41], secret_key[41]; /* the bench's client key */
} keys;

bool bench_curve_on(void)
{
    return keys.on;
}

int bench_curve_generate(void)
{
    if (zmq_curve_keypair(keys.server_public, keys.server_secret) ||
        zmq_curve_keypair(keys.public_key, keys.secret_key)) {
        fprintf(stderr, "bench: cannot make CURVE keys: %s (libzmq without CURVE?)\n",
                zmq_strerror(errno));
        return -1;
    }
    keys.on = keys.own = true;
    return 0;
}

int bench_curve_files(const char *key_file, const char *server_key_file)
{
    char err[512];
    if (ts_curve_read_key(key_file, keys.public_key, keys.secret_key, err, sizeof err) ||
        ts_curve_read_key(server_key_file, keys.server_public, NULL, err, sizeof err)) {
        fprintf(stderr, "bench: %s\n", err);
        return -1;
    }
    keys.on = true;
    return 0;
}

int bench_curve_client(void *sock)
{
    if (!keys.on)
        return 0;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, keys.server_public, 40) ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, keys.public_key, 40) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, keys.secret_key, 40)) {
        fprintf(stderr, "bench: cannot set CURVE keys: %s\n", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

/* Writes text to dir/name, mode 0600 (keys), replacing an earlier one. */
static int write_private(const char *dir, const char *name, const char *text, char *path,
                         size_t pathlen)
{
    snprintf(path, pathlen, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    size_t len = strlen(text);
    bool ok = fd >= 0 && write(fd, text, len) == (ssize_t)len;
    if (fd >= 0 && close(fd) != 0)
        ok = false;
    if (!ok)
        fprintf(stderr, "bench: cannot write %s: %s\n", path, strerror(errno));
    return ok ? 0 : -1;
}

int bench_curve_daemon_config(const char *data_dir, const char *base_config, char *out,
                              size_t outlen)
{
    if (!keys.own)
        return 1;
    char key_path[512], clients_path[512], text[1024];
    snprintf(text, sizeof text,
             "# therasync CURVE key pair of the bench's daemon (therasync-bench --curve)\n"
             "public %s\nsecret %s\n",
             keys.server_public, keys.server_secret);
    int rc = write_private(data_dir, "bench-server.key", text, key_path, sizeof key_path);
    explicit_bzero(text, sizeof text);
    snprintf(text, sizeof text, "# name role public key\nbench admin %s\n", keys.public_key);
    if (rc == 0)
        rc = write_private(data_dir, "bench-clients", text, clients_path, sizeof clients_path);
    /* The caller's config (if any) first, then the keys. event_bodies: events
     * keep their documents as without keys, so a comparison measures CURVE
     * and not smaller events. */
    ts_buf_t cfg = {0};
    if (rc == 0 && base_config) {
        FILE *f = fopen(base_config, "r");
        char chunk[4096];
        size_t got;
        if (!f) {
            fprintf(stderr, "bench: cannot read %s: %s\n", base_config, strerror(errno));
            rc = -1;
        }
        while (f && (got = fread(chunk, 1, sizeof chunk, f)) > 0)
            ts_buf_append(&cfg, chunk, got);
        if (f)
            fclose(f);
        ts_buf_puts(&cfg, "\n");
    }
    if (rc == 0)
        rc = ts_buf_printf(&cfg,
                           "security = { curve_secret_file = \"%s\", clients_file = \"%s\", "
                           "event_bodies = true }\n",
                           key_path, clients_path);
    if (rc == 0)
        rc = write_private(data_dir, "bench-curve.lua", cfg.data, out, outlen);
    ts_buf_free(&cfg);
    return rc;
}
