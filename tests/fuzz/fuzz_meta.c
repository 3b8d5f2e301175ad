/*
 * fuzz_meta.c - libFuzzer target for meta_canonical (src/core/item.c): the input is meta text, as
 * it arrives in an X-Lockstep-Meta header, a ?meta= parameter or a batch line's "meta".
 *
 * Invariants: an accepted meta is a NUL-terminated ASCII JSON object of at most LS_META_MAX bytes
 * (JSON_ENSURE_ASCII; DEL may stay raw), and canonicalising it again gives the same text (the
 * canonical form is a fixed point: digests hash it). A refusal is LS_EMETA (or LS_ENOMEM) with a
 * message.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "core/item.h"

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_meta: invariant broken: %s: ", #cond);                           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ls_error err;
    char *text = malloc(size ? size : 1), *out = NULL, *again = NULL;
    int rc;
    if (!text) return 0;
    memcpy(text, data, size); /* exactly size bytes, not terminated: reads past it are caught */
    ls_error_clear(&err);
    rc = meta_canonical(text, size, &out, &err);
    if (rc == 0) {
        size_t n;
        CHECK(out != NULL, "no output");
        n = strlen(out);
        CHECK(n >= 2 && n <= LS_META_MAX, "canonical length %zu", n);
        CHECK(out[0] == '{' && out[n - 1] == '}', "not an object: %.80s", out);
        for (size_t i = 0; i < n; i++)
            CHECK((unsigned char)out[i] >= 0x20 && (unsigned char)out[i] <= 0x7f,
                  "non-ASCII or control byte 0x%02x at %zu", (unsigned char)out[i], i);
        ls_error_clear(&err);
        CHECK(meta_canonical(out, n, &again, &err) == 0, "canonical form refused: %s", err.msg);
        CHECK(strcmp(out, again) == 0, "not a fixed point:\n  %.200s\n  %.200s", out, again);
        free(again);
        free(out);
    } else {
        CHECK(rc == LS_EMETA || rc == LS_ENOMEM, "rc %d", rc);
        CHECK(err.code == rc, "err.code %d, rc %d", err.code, rc);
        CHECK(err.msg[0] != '\0' || rc == LS_ENOMEM, "no message");
        CHECK(out == NULL, "output on failure");
    }
    free(text);
    return 0;
}
