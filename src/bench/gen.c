/* gen.c — seeded session generator, byte-compatible with gen.mjs. */
#include "gen.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define SLOT_MS (15 * 60 * 1000)
#define YEAR_START_MS 1767225600000LL    /* Date.UTC(2026, 0, 1) */
#define UPDATED_BASE_MS 1764547200000LL  /* Date.UTC(2025, 11, 1) */

const char *const gen_statuses[4] = {"scheduled", "completed", "cancelled", "no_show"};
static const int durations[5] = {30, 45, 50, 60, 90};
static const char *const modalities[3] = {"in_person", "telehealth", "group"};
static const char *const words[16] = {
    "patient", "reported", "improved", "sleep",   "mood",      "stable", "follow-up", "homework",
    "reviewed", "anxiety", "coping",   "plan",    "discussed", "goals",  "session",   "progress",
};

void gen_rng_seed(gen_rng_t *rng, uint32_t seed)
{
    rng->a = seed;
}

/* Math.imul and >>> 0 are plain wrapping uint32 arithmetic. */
uint32_t gen_rng_u32(gen_rng_t *rng)
{
    rng->a += 0x6d2b79f5u;
    uint32_t t = rng->a;
    t = (t ^ (t >> 15)) * (t | 1u);
    t ^= t + (t ^ (t >> 7)) * (t | 61u);
    return t ^ (t >> 14);
}

double gen_rng_next(gen_rng_t *rng)
{
    return (double)gen_rng_u32(rng) / 4294967296.0;
}

/* Math.floor(r * n) for r in [0, 1): the product is positive, so truncation. */
static int pick(gen_rng_t *rng, int n)
{
    return (int)floor(gen_rng_next(rng) * (double)n);
}

void gen_therapist_id(int k, char out[12])
{
    snprintf(out, 12, "thr-%03d", k % 1000);
}

void gen_slot_iso(int64_t slot, char out[32])
{
    ts_rfc3339(YEAR_START_MS + slot * SLOT_MS, out);
}

void gen_session(gen_rng_t *rng, int64_t seq, gen_session_t *s)
{
    uint32_t h[4];
    for (int i = 0; i < 4; i++)
        h[i] = gen_rng_u32(rng);
    snprintf(s->id, sizeof s->id, "%08x-%04x-%04x-%04x-%04x%08x", h[0], h[1] >> 16, h[1] & 0xffff,
             h[2] >> 16, h[2] & 0xffff, h[3]);
    snprintf(s->patient_id, sizeof s->patient_id, "pat-%04d", (pick(rng, GEN_N_PATIENTS) + 1) % 10000);
    gen_therapist_id(pick(rng, GEN_N_THERAPISTS) + 1, s->therapist_id);
    gen_slot_iso(pick(rng, GEN_N_SLOTS), s->scheduled_at);
    s->duration_min = durations[pick(rng, 5)];
    double rs = gen_rng_next(rng);
    s->status = rs < 0.7 ? gen_statuses[0] : rs < 0.9 ? gen_statuses[1] : rs < 0.97 ? gen_statuses[2] : gen_statuses[3];
    s->modality = modalities[pick(rng, 3)];
    s->room[0] = "ABC"[pick(rng, 3)];
    s->room[1] = (char)('1' + pick(rng, 9));
    s->room[2] = '\0';
    /* Words until at least 150 chars, then cut to exactly 150. */
    size_t len = 0;
    char notes[160 + 16];
    while (len < 150) {
        const char *w = words[pick(rng, 16)];
        size_t wl = strlen(w);
        if (len)
            notes[len++] = ' ';
        memcpy(notes + len, w, wl);
        len += wl;
    }
    memcpy(s->notes, notes, 150);
    s->notes[150] = '\0';
    ts_rfc3339(UPDATED_BASE_MS + seq * 1000, s->updated_at);
}

/* Every value is plain ASCII without quotes or backslashes, so the strings
 * need no escaping and the output equals JSON.stringify's. */
int gen_session_json(const gen_session_t *s, bool server_fields, ts_buf_t *out)
{
    int rc = ts_buf_printf(out,
                           "{\"id\":\"%s\",\"patient_id\":\"%s\",\"therapist_id\":\"%s\","
                           "\"scheduled_at\":\"%s\",\"duration_min\":%d,\"status\":\"%s\","
                           "\"modality\":\"%s\",\"room\":\"%s\",\"notes\":\"%s\"",
                           s->id, s->patient_id, s->therapist_id, s->scheduled_at, s->duration_min,
                           s->status, s->modality, s->room, s->notes);
    if (rc == 0 && server_fields)
        rc = ts_buf_printf(out, ",\"version\":1,\"updated_at\":\"%s\"", s->updated_at);
    if (rc == 0)
        rc = ts_buf_puts(out, "}");
    return rc;
}
