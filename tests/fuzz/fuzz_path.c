/*
 * fuzz_path.c - libFuzzer target for path_check (src/core/item.c).
 *
 * The input is the path, byte for byte. Besides not crashing, path_check must agree exactly with
 * the rules of docs/api.md section 2, written out again here as an independent reference: an
 * accepted path starts with '/', is not "/" alone, is at most LS_PATH_MAX bytes, is strict UTF-8,
 * has no NUL or control byte, and has no empty, "." or ".." segment (so never "//", "/./",
 * "/../", nor a trailing "/", "/." or "/.."). A rejected path must come with an LS_EPATH error.
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
            fprintf(stderr, "fuzz_path: invariant broken: %s: ", #cond);                           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Strict UTF-8 (RFC 3629), decoded the long way round. */
static int
ref_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        uint32_t cp, min;
        size_t len;
        if (c <= 0x7f) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            len = 2, cp = c & 0x1f, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
            len = 3, cp = c & 0x0f, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            len = 4, cp = c & 0x07, min = 0x10000;
        else
            return 0; /* continuation byte, 0xc0/0xc1 (always overlong) or 0xf5.. */
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xbf) return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

/* The rules, as docs/api.md states them. */
static int
ref_valid(const unsigned char *p, size_t n)
{
    if (n < 2 || n > LS_PATH_MAX || p[0] != '/') return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f) return 0; /* includes NUL */
    if (!ref_utf8(p, n)) return 0;
    /* segments: between slashes, and after the last one */
    for (size_t i = 1, start = 1; i <= n; i++) {
        if (i == n || p[i] == '/') {
            size_t len = i - start;
            if (len == 0) return 0;
            if (len == 1 && p[start] == '.') return 0;
            if (len == 2 && p[start] == '.' && p[start + 1] == '.') return 0;
            start = i + 1;
        }
    }
    return 1;
}

static int
contains(const uint8_t *p, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(p + i, needle, k) == 0) return 1;
    return 0;
}

static int
ends_with(const uint8_t *p, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(p + n - k, suffix, k) == 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ls_error err;
    /* A copy of exactly size bytes, so that ASan catches any read past the end. */
    char *path = malloc(size ? size : 1);
    int rc, want;
    if (!path) return 0;
    memcpy(path, data, size);
    ls_error_clear(&err);
    rc = path_check(path, size, &err);
    want = ref_valid(data, size);
    if (rc == 0) {
        CHECK(size >= 2 && size <= LS_PATH_MAX, "length %zu", size);
        CHECK(path[0] == '/', "starts with 0x%02x", (unsigned char)path[0]);
        CHECK(!memchr(path, '\0', size), "NUL inside");
        CHECK(!contains(data, size, "//"), "has //");
        CHECK(!contains(data, size, "/./"), "has /./");
        CHECK(!contains(data, size, "/../"), "has /../");
        CHECK(!ends_with(data, size, "/") && !ends_with(data, size, "/.") &&
                  !ends_with(data, size, "/.."),
              "bad ending");
        CHECK(want, "path_check accepted a path the rules refuse (%zu bytes)", size);
    } else {
        CHECK(rc == LS_EPATH, "rc %d", rc);
        CHECK(err.code == LS_EPATH, "err.code %d", err.code);
        CHECK(err.msg[0] != '\0', "no message");
        CHECK(memchr(err.msg, '\0', sizeof err.msg) != NULL, "message not terminated");
        CHECK(!want, "path_check refused a valid path: %s", err.msg);
    }
    /* The NULL path is refused, whatever the length. */
    CHECK(path_check(NULL, size, &err) == LS_EPATH, "NULL path accepted");
    free(path);
    return 0;
}
