/* gen.h — the benchmark dataset: a C port of the peer's gen.mjs.
 *
 * Same PRNG (mulberry32, seed 42), same draw order, same JSON bytes, so that
 * results can be cross-checked with the Node peer (bench/PEERS.md).
 * The draw order is written out in bench/README.md ("The data"); gen.c
 * follows it line by line. */
#ifndef THERASYNC_BENCH_GEN_H
#define THERASYNC_BENCH_GEN_H

#include "therasync/util.h"

#include <stdbool.h>
#include <stdint.h>

#define GEN_SEED 42u
#define GEN_N_PATIENTS 5000
#define GEN_N_THERAPISTS 200
#define GEN_N_SLOTS 35040

/* mulberry32: one 32-bit state word. */
typedef struct {
    uint32_t a;
} gen_rng_t;

void gen_rng_seed(gen_rng_t *rng, uint32_t seed);
uint32_t gen_rng_u32(gen_rng_t *rng);
/* u32 / 2^32, as JavaScript computes it. */
double gen_rng_next(gen_rng_t *rng);

extern const char *const gen_statuses[4]; /* scheduled completed cancelled no_show */

/* One session, fields in the peer's JSON key order. */
typedef struct {
    char id[37];
    char patient_id[12];  /* pat-0001 .. pat-5000 */
    char therapist_id[12]; /* thr-001 .. thr-200 */
    char scheduled_at[32];
    int duration_min;
    const char *status;
    const char *modality;
    char room[3];
    char notes[151];
    char updated_at[32]; /* 2025-12-01T00:00:00.000Z + seq seconds; version is always 1 */
} gen_session_t;

/* Draws session number seq (0-based position in the stream) from rng. */
void gen_session(gen_rng_t *rng, int64_t seq, gen_session_t *out);

/* Appends the session as JSON. With server_fields, the bytes equal
 * JSON.stringify() in gen.mjs (version and updated_at included); without,
 * those two server-assigned fields are left out, as a client create sends it.
 * Returns 0, or -1 when memory ran out. */
int gen_session_json(const gen_session_t *s, bool server_fields, ts_buf_t *out);

/* "thr-%03d" of k in 1..200, and the ISO time of a 15-minute slot of 2026
 * (the helpers the select workload draws its parameters with). */
void gen_therapist_id(int k, char out[12]);
void gen_slot_iso(int64_t slot, char out[32]);

#endif
