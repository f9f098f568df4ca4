/* SHA-256 against the FIPS 180-4 / NIST example vectors, and incremental
 * hashing split at every offset giving the same answer as one shot. */
#include <criterion/criterion.h>
#include <string.h>

#include "therasync/sha256.h"

static void check(const char *msg, const char *want)
{
    char hex[65];
    ts_sha256_hex(msg, strlen(msg), hex);
    cr_assert_str_eq(hex, want, "sha256(\"%s\")", msg);
}

Test(sha256, nist_vectors)
{
    check("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    check("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    check("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
          "klmnopqrlmnopqrsmnopqrstnopqrstu",
          "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

Test(sha256, million_a)
{
    ts_sha256_t ctx;
    uint8_t d[32];
    char hex[65], chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    ts_sha256_init(&ctx);
    for (int i = 0; i < 1000; i++)
        ts_sha256_update(&ctx, chunk, sizeof chunk);
    ts_sha256_final(&ctx, d);
    ts_sha256_to_hex(d, hex);
    cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

Test(sha256, split_anywhere)
{
    char msg[200];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (char)('a' + i % 26);
    for (size_t n = 0; n <= sizeof msg; n += 7) {
        char whole[65], parts[65];
        uint8_t d[32];
        ts_sha256_hex(msg, n, whole);
        for (size_t cut = 0; cut <= n; cut += 3) {
            ts_sha256_t ctx;
            ts_sha256_init(&ctx);
            ts_sha256_update(&ctx, msg, cut);
            ts_sha256_update(&ctx, msg + cut, n - cut);
            ts_sha256_final(&ctx, d);
            ts_sha256_to_hex(d, parts);
            cr_assert_str_eq(parts, whole, "n=%zu cut=%zu", n, cut);
        }
    }
}
