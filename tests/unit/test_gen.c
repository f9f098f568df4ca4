/* test_gen.c — the C generator reproduces the peer's gen.mjs byte for byte.
 *
 * Expected strings come from the Node peer's `node gen.mjs 3` (bench/PEERS.md);
 * the checksum is FNV-1a 64 over the first 10,000 lines of `gen.mjs 10000`,
 * each followed by "\n" (computed with node, see the commit message). */
#include "../../src/bench/gen.h"

#include <criterion/criterion.h>
#include <string.h>

static const char *expected[3] = {
    "{\"id\":\"99e1ef7c-72c3-2b8a-da3b-32c0ab73b0ad\",\"patient_id\":\"pat-0875\",\"therapist_"
    "id\":\"thr-106\",\"scheduled_at\":\"2026-04-10T17:15:00.000Z\",\"duration_min\":60,\"statu"
    "s\":\"completed\",\"modality\":\"telehealth\",\"room\":\"A8\",\"notes\":\"plan mood sleep revi"
    "ewed coping anxiety patient homework goals patient anxiety patient mood patient "
    "improved discussed reviewed patient improved goals\",\"version\":1,\"updated_at\":\"20"
    "25-12-01T00:00:00.000Z\"}",
    "{\"id\":\"7cdc85f2-cf1c-2159-51c8-3eb6732c5dd1\",\"patient_id\":\"pat-0188\",\"therapist_"
    "id\":\"thr-011\",\"scheduled_at\":\"2026-07-23T03:45:00.000Z\",\"duration_min\":50,\"statu"
    "s\":\"scheduled\",\"modality\":\"telehealth\",\"room\":\"A3\",\"notes\":\"plan goals reviewed "
    "sleep mood mood reported coping coping plan session reported progress follow-up "
    "progress improved reported patient stable homework\",\"version\":1,\"updated_at\":\"20"
    "25-12-01T00:00:01.000Z\"}",
    "{\"id\":\"9ca6ebe4-e649-6e6c-13dc-70c7b8379355\",\"patient_id\":\"pat-4675\",\"therapist_"
    "id\":\"thr-056\",\"scheduled_at\":\"2026-09-15T21:30:00.000Z\",\"duration_min\":30,\"statu"
    "s\":\"scheduled\",\"modality\":\"group\",\"room\":\"A9\",\"notes\":\"anxiety session follow-up"
    " anxiety stable anxiety stable plan mood homework goals plan progress session fo"
    "llow-up reviewed mood reported plan stable di\",\"version\":1,\"updated_at\":\"2025-12"
    "-01T00:00:02.000Z\"}",
};

Test(gen, first_three_sessions_match_node)
{
    gen_rng_t rng;
    gen_rng_seed(&rng, GEN_SEED);
    ts_buf_t buf = {0};
    for (int i = 0; i < 3; i++) {
        gen_session_t s;
        gen_session(&rng, i, &s);
        ts_buf_reset(&buf);
        cr_assert_eq(gen_session_json(&s, true, &buf), 0);
        cr_assert_str_eq(buf.data, expected[i], "session %d differs", i);
    }
    ts_buf_free(&buf);
}

Test(gen, first_10000_checksum_matches_node)
{
    gen_rng_t rng;
    gen_rng_seed(&rng, GEN_SEED);
    ts_buf_t buf = {0};
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 10000; i++) {
        gen_session_t s;
        gen_session(&rng, i, &s);
        ts_buf_reset(&buf);
        cr_assert_eq(gen_session_json(&s, true, &buf), 0);
        cr_assert_eq(ts_buf_puts(&buf, "\n"), 0);
        for (size_t k = 0; k < buf.len; k++) {
            h ^= (unsigned char)buf.data[k];
            h *= 0x100000001b3ull;
        }
    }
    ts_buf_free(&buf);
    cr_assert_eq(h, 0xc566cad9c7c0c8ceull, "checksum %016llx", (unsigned long long)h);
}

Test(gen, client_form_leaves_out_server_fields)
{
    gen_rng_t rng;
    gen_rng_seed(&rng, GEN_SEED);
    gen_session_t s;
    gen_session(&rng, 0, &s);
    ts_buf_t buf = {0};
    cr_assert_eq(gen_session_json(&s, false, &buf), 0);
    size_t cut = strlen(expected[0]) - strlen(",\"version\":1,\"updated_at\":\"2025-12-01T00:00:00.000Z\"}");
    cr_assert_eq(buf.len, cut + 1);
    cr_assert(strncmp(buf.data, expected[0], cut) == 0);
    cr_assert_str_eq(buf.data + cut, "}");
    ts_buf_free(&buf);
}

Test(gen, helpers_format_like_node)
{
    char t[12], iso[32];
    gen_therapist_id(7, t);
    cr_assert_str_eq(t, "thr-007");
    gen_slot_iso(GEN_N_SLOTS - 1, iso);
    cr_assert_str_eq(iso, "2026-12-31T23:45:00.000Z");
}
