/*
 * test_item.c - unit tests for meta_canonical and op_parse_json (src/core/item.c): the canonical
 * form of meta, its limits, and the NDJSON operation parser with every op type and field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"
#include "core/item.h"

#define L(lit) (lit), (sizeof(lit) - 1)

/* ---------------------------------------------------------------- meta_canonical */

static void
expect_canon_n(const char *in, size_t len, const char *want)
{
    struct ls_error err;
    char *out = NULL;
    int rc;
    ls_error_clear(&err);
    rc = meta_canonical(in, len, &out, &err);
    if (rc != 0) fail_msg("meta_canonical(%.*s) failed: %d %s", (int)len, in, rc, err.msg);
    assert_non_null(out);
    assert_string_equal(out, want);
    free(out);
}
#define CANON(lit, want) expect_canon_n(L(lit), want)

static void
expect_meta_bad_n(const char *in, size_t len, const char *why)
{
    struct ls_error err;
    char *out = NULL;
    int rc;
    ls_error_clear(&err);
    rc = meta_canonical(in, len, &out, &err);
    if (rc != LS_EMETA)
        fail_msg("meta_canonical(%.60s) returned %d, want LS_EMETA", in, rc);
    assert_int_equal(err.code, LS_EMETA);
    assert_null(out);
    if (why && !strstr(err.msg, why))
        fail_msg("meta_canonical(%.60s): message \"%s\" lacks \"%s\"", in, err.msg, why);
}
#define META_BAD(lit, why) expect_meta_bad_n(L(lit), why)

static void
test_meta_sorts_and_compacts(void **state)
{
    (void)state;
    CANON("{}", "{}");
    CANON("  {  }  ", "{}");
    CANON("{\"b\": 1, \"a\": 2}", "{\"a\":2,\"b\":1}");
    CANON("{\"z\":{\"y\":[3, 2, {\"q\":1,\"p\":0}],\"x\":null},\"a\":true}",
          "{\"a\":true,\"z\":{\"x\":null,\"y\":[3,2,{\"p\":0,\"q\":1}]}}");
    CANON("{\n\t\"k\" :\t\"v\"\n}", "{\"k\":\"v\"}");
    /* Strings with braces don't count as nesting, and escapes survive. */
    CANON("{\"s\":\"{[\\\"}]\"}", "{\"s\":\"{[\\\"}]\"}");
    /* Non-ASCII comes out escaped, so equal meta has one byte form. */
    CANON("{\"k\":\"\xc3\xa9\"}", "{\"k\":\"\\u00E9\"}");
    CANON("{\"k\":\"\\u00e9\"}", "{\"k\":\"\\u00E9\"}");
    /* Only len bytes are read. */
    expect_canon_n("{\"a\":1}trailing garbage", 7, "{\"a\":1}");
}

static void
test_meta_rejects_non_objects(void **state)
{
    (void)state;
    META_BAD("[]", NULL);
    META_BAD("[1,2]", NULL);
    META_BAD("1", NULL);
    META_BAD("\"text\"", NULL);
    META_BAD("null", NULL);
    META_BAD("true", NULL);
    META_BAD("", "not valid JSON");
    META_BAD("{", "not valid JSON");
    META_BAD("{\"a\":}", "not valid JSON");
    META_BAD("{'a':1}", "not valid JSON");
    META_BAD("{\"a\":1} {}", "not valid JSON");
    META_BAD("{\"a\":1,\"a\":2}", NULL); /* duplicate keys */
    META_BAD("{\"x\":{\"a\":1,\"a\":1}}", NULL);
}

static char *
nested(int depth)
{
    /* {"a":{"a":...{"a":1}...}} with `depth` objects */
    size_t n = (size_t)depth * 6 + 2;
    char *s = malloc(n), *p = s;
    for (int i = 0; i < depth; i++) p += sprintf(p, "{\"a\":");
    p += sprintf(p, "1");
    for (int i = 0; i < depth; i++) *p++ = '}';
    *p = '\0';
    return s;
}

static void
test_meta_depth(void **state)
{
    struct ls_error err;
    char *ok = nested(LS_JSON_DEPTH_MAX), *deep = nested(LS_JSON_DEPTH_MAX + 1), *out = NULL;
    (void)state;
    assert_int_equal(meta_canonical(ok, strlen(ok), &out, &err), 0);
    assert_string_equal(out, ok); /* already canonical */
    free(out);
    out = NULL;
    expect_meta_bad_n(deep, strlen(deep), "nested");
    /* Arrays count as levels too. */
    {
        char buf[256], *p = buf;
        p += sprintf(p, "{\"a\":");
        for (int i = 1; i < LS_JSON_DEPTH_MAX + 1; i++) *p++ = '[';
        for (int i = 1; i < LS_JSON_DEPTH_MAX + 1; i++) *p++ = ']';
        *p++ = '}';
        *p = '\0';
        expect_meta_bad_n(buf, strlen(buf), "nested");
    }
    free(ok);
    free(deep);
}

static void
test_meta_size(void **state)
{
    struct ls_error err;
    char *s = malloc(LS_META_MAX + 2), *out = NULL;
    size_t n;
    (void)state;
    /* {"a":"xxx...x"} of exactly LS_META_MAX bytes */
    memcpy(s, "{\"a\":\"", 6);
    memset(s + 6, 'x', LS_META_MAX - 8);
    memcpy(s + LS_META_MAX - 2, "\"}", 3);
    n = strlen(s);
    assert_int_equal(n, LS_META_MAX);
    assert_int_equal(meta_canonical(s, n, &out, &err), 0);
    assert_int_equal(strlen(out), LS_META_MAX);
    free(out);
    out = NULL;

    /* one byte more */
    memset(s + 6, 'x', LS_META_MAX - 7);
    memcpy(s + LS_META_MAX - 1, "\"}", 3);
    assert_int_equal(strlen(s), LS_META_MAX + 1);
    expect_meta_bad_n(s, LS_META_MAX + 1, "larger");

    /* Small on input, too large once escaped: 30000 x U+00E9 is 60 KB raw, 180 KB canonical. */
    {
        size_t k = 0;
        s[k++] = '{', s[k++] = '"', s[k++] = 'a', s[k++] = '"', s[k++] = ':', s[k++] = '"';
        for (int i = 0; i < 30000; i++) s[k++] = '\xc3', s[k++] = '\xa9';
        s[k++] = '"', s[k++] = '}', s[k] = '\0';
        assert_true(k <= LS_META_MAX);
        expect_meta_bad_n(s, k, "larger");
    }
    free(s);
}

/* ---------------------------------------------------------------- op_parse_json */

static void
parse_ok_n(const char *line, size_t len, struct ls_op *op)
{
    struct ls_error err;
    int rc;
    ls_error_clear(&err);
    rc = op_parse_json(line, len, op, &err);
    if (rc != 0) fail_msg("op_parse_json(%.*s) failed: %d %s", (int)len, line, rc, err.msg);
}
#define PARSE_OK(lit, op) parse_ok_n(L(lit), op)

/*
 * Refused with err.code LS_EBATCH, a message containing `why` (when given), and the op left
 * empty. (That the return value is LS_EBATCH too is checked separately, in
 * test_op_error_return_matches_code.)
 */
static void
parse_bad_n(const char *line, size_t len, const char *why)
{
    struct ls_error err;
    struct ls_op op;
    int rc;
    ls_error_clear(&err);
    memset(&op, 0x5a, sizeof op);
    rc = op_parse_json(line, len, &op, &err);
    if (rc == 0) {
        op_release(&op);
        fail_msg("op_parse_json(%.*s) accepted, want an error", (int)len, line);
    }
    assert_true(rc < 0);
    if (err.code != LS_EBATCH)
        fail_msg("op_parse_json(%.*s): err.code %d (%s), want LS_EBATCH", (int)len, line,
                 err.code, err.msg);
    if (why && !strstr(err.msg, why))
        fail_msg("op_parse_json(%.*s): message \"%s\" lacks \"%s\"", (int)len, line, err.msg, why);
    assert_null(op.path);
    assert_null(op.to);
    assert_null(op.kind);
    assert_null(op.meta);
    assert_null(op.body_owned);
    assert_int_equal(op.type, 0);
}
#define PARSE_BAD(lit, why) parse_bad_n(L(lit), why)

static void
test_op_put_body(void **state)
{
    struct ls_op op;
    (void)state;
    PARSE_OK("{\"op\":\"put\",\"path\":\"/a/b\",\"body\":\"hello\"}", &op);
    assert_int_equal(op.type, LS_OP_PUT);
    assert_string_equal(op.path, "/a/b");
    assert_null(op.to);
    assert_null(op.kind);
    assert_null(op.meta);
    assert_int_equal(op.body_len, 5);
    assert_memory_equal(op.body, "hello", 5);
    assert_int_equal(op.publish, 0);
    assert_int_equal(op.if_version, 0);
    assert_int_equal(op.version, 0);
    op_release(&op);
    assert_null(op.path);

    /* JSON escapes decode to UTF-8 bytes. */
    PARSE_OK("{\"op\":\"put\",\"path\":\"/a\",\"body\":\"\\u00e9\\n\"}", &op);
    assert_int_equal(op.body_len, 3);
    assert_memory_equal(op.body, "\xc3\xa9\n", 3);
    op_release(&op);

    /* No body: an empty one. */
    PARSE_OK("{\"path\":\"/a\",\"op\":\"put\"}", &op);
    assert_int_equal(op.type, LS_OP_PUT);
    assert_non_null(op.body);
    assert_int_equal(op.body_len, 0);
    op_release(&op);

    PARSE_OK("{\"op\":\"put\",\"path\":\"/a\",\"body\":\"\"}", &op);
    assert_non_null(op.body);
    assert_int_equal(op.body_len, 0);
    op_release(&op);
}

static void
test_op_put_kind_meta_status(void **state)
{
    struct ls_op op;
    char line[256];
    char kind64[LS_KIND_MAX + 2];
    (void)state;
    PARSE_OK("{\"op\":\"put\",\"path\":\"/a\",\"kind\":\"note\",\"meta\":{\"z\":1,\"a\":[true]},"
             "\"status\":\"published\",\"if_version\":4}",
             &op);
    assert_string_equal(op.kind, "note");
    assert_string_equal(op.meta, "{\"a\":[true],\"z\":1}");
    assert_int_equal(op.publish, 1);
    assert_int_equal(op.if_version, 4);
    op_release(&op);

    PARSE_OK("{\"op\":\"put\",\"path\":\"/a\",\"status\":\"draft\"}", &op);
    assert_int_equal(op.publish, 0);
    op_release(&op);

    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"status\":\"live\"}", "status");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"status\":\"Published\"}", "status");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"status\":1}", "status");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"status\":null}", "status");

    /* kind: 1 to LS_KIND_MAX bytes of UTF-8 */
    memset(kind64, 'k', LS_KIND_MAX);
    kind64[LS_KIND_MAX] = '\0';
    snprintf(line, sizeof line, "{\"op\":\"put\",\"path\":\"/a\",\"kind\":\"%s\"}", kind64);
    parse_ok_n(line, strlen(line), &op);
    assert_int_equal(strlen(op.kind), LS_KIND_MAX);
    op_release(&op);
    snprintf(line, sizeof line, "{\"op\":\"put\",\"path\":\"/a\",\"kind\":\"%sk\"}", kind64);
    parse_bad_n(line, strlen(line), "kind");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"kind\":\"\"}", "kind");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"kind\":7}", "kind");

    /* meta must be an object (errors from meta checks are reported as bad_batch) */
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"meta\":\"{}\"}", "meta");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"meta\":[1]}", "meta");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"meta\":{\"a\":1,\"a\":2}}", NULL);
}

static void
expect_b64(const char *b64, const void *want, size_t wantlen)
{
    char line[512];
    struct ls_op op;
    snprintf(line, sizeof line, "{\"op\":\"put\",\"path\":\"/bin\",\"body_base64\":\"%s\"}", b64);
    parse_ok_n(line, strlen(line), &op);
    if (op.body_len != wantlen)
        fail_msg("base64 \"%s\" decoded to %zu bytes, want %zu", b64, op.body_len, wantlen);
    assert_non_null(op.body);
    assert_memory_equal(op.body, want, wantlen);
    op_release(&op);
}

/*
 * 1 when body_base64 `b64` is refused with LS_EBATCH and a message about base64; otherwise 0 and
 * a description of what happened appended to `log`.
 */
static int
b64_refused(const char *b64, char *log, size_t logsize)
{
    char line[512], hex[128] = "";
    struct ls_error err;
    struct ls_op op;
    int rc;
    snprintf(line, sizeof line, "{\"op\":\"put\",\"path\":\"/bin\",\"body_base64\":\"%s\"}", b64);
    ls_error_clear(&err);
    rc = op_parse_json(line, strlen(line), &op, &err);
    if (rc != 0 && err.code == LS_EBATCH && strstr(err.msg, "base64") && !op.body_owned) return 1;
    size_t blen = rc == 0 ? op.body_len : 0;
    if (rc == 0) {
        for (size_t i = 0; i < op.body_len && i < 40; i++)
            sprintf(hex + 2 * i, "%02x", ((const unsigned char *)op.body)[i]);
        op_release(&op);
    }
    snprintf(log + strlen(log), logsize - strlen(log), "\n    \"%s\": rc %d, %zu byte(s) [%s] %s",
             b64, rc, blen, hex, rc ? err.msg : "accepted, decoded as shown");
    return 0;
}

static void
expect_b64_bad(const char *b64)
{
    char log[512] = "";
    if (!b64_refused(b64, log, sizeof log)) fail_msg("invalid base64 not refused:%s", log);
}

/* Checks every input, then fails once listing all that were not refused. */
static void
expect_all_b64_bad(const char *const *inputs)
{
    char log[2048] = "";
    int bad = 0;
    for (int i = 0; inputs[i]; i++) bad += !b64_refused(inputs[i], log, sizeof log);
    if (bad) fail_msg("%d invalid base64 input(s) not refused:%s", bad, log);
}

static void
test_op_put_base64(void **state)
{
    (void)state;
    expect_b64("", "", 0);
    expect_b64("QQ==", "A", 1);   /* two padding characters */
    expect_b64("QUI=", "AB", 2);  /* one */
    expect_b64("QUJD", "ABC", 3); /* none */
    expect_b64("QUJDRA==", "ABCD", 4);
    expect_b64("AA==", "\0", 1);
    expect_b64("AAECAP8A", "\x00\x01\x02\x00\xff\x00", 6); /* binary with NULs */
    expect_b64("/+/+", "\xff\xef\xfe", 3);
    {
        /* every byte value, through a reference encoder */
        static const char abc[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        unsigned char all[256];
        char enc[400], *p = enc;
        for (int i = 0; i < 256; i++) all[i] = (unsigned char)i;
        for (int i = 0; i < 256; i += 3) {
            unsigned v = (unsigned)all[i] << 16;
            int left = 256 - i;
            if (left > 1) v |= (unsigned)all[i + 1] << 8;
            if (left > 2) v |= all[i + 2];
            *p++ = abc[v >> 18 & 63];
            *p++ = abc[v >> 12 & 63];
            *p++ = left > 1 ? abc[v >> 6 & 63] : '=';
            *p++ = left > 2 ? abc[v & 63] : '=';
        }
        *p = '\0';
        assert_int_equal(strlen(enc), 344);
        expect_b64(enc, all, sizeof all);
    }

    expect_b64_bad("Q");        /* not a multiple of 4 */
    expect_b64_bad("QQ");
    expect_b64_bad("QQ=");
    expect_b64_bad("QUJDR");
    expect_b64_bad("QU@D");     /* not in the alphabet */
    expect_b64_bad("!!!!");
    expect_b64_bad("QU-_");     /* base64url is not base64 */
    expect_b64_bad("QU\\nJD");  /* a newline inside */
}

/* Padding that is not at the end, or too much of it, is not base64 either. */
static void
test_op_put_base64_bad_padding(void **state)
{
    static const char *const inputs[] = {"====", "A===", "QQ=A", "Q===", "=QQQ", "QQ==QUJD", NULL};
    (void)state;
    expect_all_b64_bad(inputs);
}

/*
 * Whitespace is not in the base64 alphabet. Refusing it is fine; accepting it is tolerable only if
 * the decoded bytes are still exactly right. Decoding to different bytes is silent corruption.
 */
static void
test_op_put_base64_whitespace(void **state)
{
    static const struct {
        const char *b64, *want;
        size_t len;
    } cases[] = {
        {"QQ==    ", "A", 1},
        {"QUI=    ", "AB", 2},
        {"    QUJD", "ABC", 3},
        {"QUJD    ", "ABC", 3},
        {"    QQ==", "A", 1},
    };
    char log[1024] = "";
    int bad = 0;
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char line[256];
        struct ls_error err;
        struct ls_op op;
        snprintf(line, sizeof line, "{\"op\":\"put\",\"path\":\"/w\",\"body_base64\":\"%s\"}",
                 cases[i].b64);
        if (op_parse_json(line, strlen(line), &op, &err) != 0) {
            assert_int_equal(err.code, LS_EBATCH); /* refused: fine */
            continue;
        }
        if (op.body_len != cases[i].len || memcmp(op.body, cases[i].want, cases[i].len) != 0) {
            char hex[64] = "";
            for (size_t k = 0; k < op.body_len && k < 30; k++)
                sprintf(hex + 2 * k, "%02x", ((const unsigned char *)op.body)[k]);
            bad++;
            snprintf(log + strlen(log), sizeof log - strlen(log),
                     "\n    \"%s\": accepted as %zu byte(s) [%s], want refused or \"%s\"",
                     cases[i].b64, op.body_len, hex, cases[i].want);
        }
        op_release(&op);
    }
    if (bad) fail_msg("%d base64 input(s) with whitespace decoded to the wrong bytes:%s", bad, log);
}

static void
test_op_put_body_conflicts(void **state)
{
    (void)state;
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"body\":\"x\",\"body_base64\":\"eA==\"}", "not both");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"body\":5}", "body");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"body\":null}", "body");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"body_base64\":[]}", "body_base64");
    /* A NUL inside a JSON string needs body_base64. */
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"body\":\"a\\u0000b\"}", NULL);
}

static void
test_op_simple_types(void **state)
{
    struct ls_op op;
    (void)state;
    PARSE_OK("{\"op\":\"delete\",\"path\":\"/x\"}", &op);
    assert_int_equal(op.type, LS_OP_DELETE);
    assert_string_equal(op.path, "/x");
    assert_null(op.body);
    op_release(&op);

    PARSE_OK("{\"op\":\"purge\",\"path\":\"/x\",\"if_version\":2}", &op);
    assert_int_equal(op.type, LS_OP_PURGE);
    assert_int_equal(op.if_version, 2);
    op_release(&op);

    PARSE_OK("{\"op\":\"purge\",\"path\":\"/x\",\"seq\":42}", &op);
    assert_int_equal(op.type, LS_OP_PURGE);
    assert_int_equal(op.version, 0);
    op_release(&op);

    PARSE_OK("{\"op\":\"unpublish\",\"path\":\"/x\"}", &op);
    assert_int_equal(op.type, LS_OP_UNPUBLISH);
    op_release(&op);

    PARSE_OK("{\"op\":\"publish\",\"path\":\"/x\"}", &op);
    assert_int_equal(op.type, LS_OP_PUBLISH);
    assert_int_equal(op.version, 0);
    op_release(&op);

    PARSE_OK("{\"op\":\"publish\",\"path\":\"/x\",\"version\":3}", &op);
    assert_int_equal(op.version, 3);
    op_release(&op);

    PARSE_OK("{\"op\":\"move\",\"path\":\"/x\",\"to\":\"/y/z\"}", &op);
    assert_int_equal(op.type, LS_OP_MOVE);
    assert_string_equal(op.path, "/x");
    assert_string_equal(op.to, "/y/z");
    op_release(&op);

    /* The names map both ways. */
    for (int t = LS_OP_PUT; t <= LS_OP_UNPUBLISH; t++) assert_int_equal(op_from_name(op_name(t)), t);
    assert_int_equal(op_from_name("copy"), 0);
    assert_string_equal(op_name(0), "?");
    assert_string_equal(op_name(LS_OP_MOVE), "move");
}

static void
test_op_path_and_to(void **state)
{
    (void)state;
    PARSE_BAD("{\"op\":\"put\"}", "missing \"path\"");
    PARSE_BAD("{\"op\":\"delete\",\"path\":null}", "path");
    PARSE_BAD("{\"op\":\"delete\",\"path\":5}", "path");
    PARSE_BAD("{\"op\":\"delete\",\"path\":\"rel\"}", "absolute");
    PARSE_BAD("{\"op\":\"delete\",\"path\":\"/a//b\"}", "empty segment");
    PARSE_BAD("{\"op\":\"delete\",\"path\":\"/a\\u0001\"}", "control");
    PARSE_BAD("{\"op\":\"move\",\"path\":\"/a\"}", "missing \"to\"");
    PARSE_BAD("{\"op\":\"move\",\"path\":\"/a\",\"to\":\"/\"}", "names no item");
    PARSE_BAD("{\"op\":\"move\",\"path\":\"/a\",\"to\":7}", "to");
}

static void
test_op_versions(void **state)
{
    struct ls_op op;
    (void)state;
    PARSE_BAD("{\"op\":\"publish\",\"path\":\"/a\",\"version\":0}", "version");
    PARSE_BAD("{\"op\":\"publish\",\"path\":\"/a\",\"version\":-1}", "version");
    PARSE_BAD("{\"op\":\"publish\",\"path\":\"/a\",\"version\":\"3\"}", "version");
    PARSE_BAD("{\"op\":\"publish\",\"path\":\"/a\",\"version\":1.5}", "version");
    PARSE_BAD("{\"op\":\"publish\",\"path\":\"/a\",\"version\":null}", "version");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"if_version\":0}", "if_version");
    PARSE_BAD("{\"op\":\"delete\",\"path\":\"/a\",\"if_version\":-3}", "if_version");
    PARSE_BAD("{\"op\":\"move\",\"path\":\"/a\",\"to\":\"/b\",\"if_version\":\"1\"}", "if_version");
    /* "seq" (what a fork export writes) is checked, then ignored */
    PARSE_BAD("{\"op\":\"delete\",\"path\":\"/a\",\"seq\":0}", "seq");
    PARSE_BAD("{\"op\":\"delete\",\"path\":\"/a\",\"seq\":\"7\"}", "seq");
    PARSE_BAD("{\"op\":\"delete\",\"path\":\"/a\",\"seq\":7,\"seq\":8}", "duplicate");
    PARSE_BAD("{\"op\":\"unpublish\",\"path\":\"/a\",\"if_version\":2.0}", "if_version");

    PARSE_OK("{\"op\":\"move\",\"path\":\"/a\",\"to\":\"/b\",\"if_version\":9007199254740993}", &op);
    assert_true(op.if_version == 9007199254740993LL);
    op_release(&op);
}

static void
test_op_shape_errors(void **state)
{
    char *deep, line[512];
    (void)state;
    PARSE_BAD("", "not valid JSON");
    PARSE_BAD("{", "not valid JSON");
    PARSE_BAD("put /a", "not valid JSON");
    PARSE_BAD("[{\"op\":\"put\",\"path\":\"/a\"}]", "JSON object");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\"}{}", "not valid JSON");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"bogus\":1}", "unknown field \"bogus\"");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"Path\":\"/a\"}", "unknown field");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"path\":\"/b\"}", NULL); /* duplicate key */
    PARSE_BAD("{\"path\":\"/a\"}", "\"op\"");
    PARSE_BAD("{\"op\":\"copy\",\"path\":\"/a\"}", "\"op\"");
    PARSE_BAD("{\"op\":\"PUT\",\"path\":\"/a\"}", "\"op\"");
    PARSE_BAD("{\"op\":1,\"path\":\"/a\"}", "\"op\"");

    /* nesting deeper than the limit, through meta */
    deep = malloc(2 * LS_JSON_DEPTH_MAX * 6 + 128);
    {
        char *p = deep;
        p += sprintf(p, "{\"op\":\"put\",\"path\":\"/a\",\"meta\":");
        for (int i = 0; i < LS_JSON_DEPTH_MAX; i++) p += sprintf(p, "{\"a\":");
        p += sprintf(p, "1");
        for (int i = 0; i < LS_JSON_DEPTH_MAX + 1; i++) *p++ = '}';
        *p = '\0';
    }
    parse_bad_n(deep, strlen(deep), "nested");
    free(deep);

    /* The line need not be NUL-terminated: only len bytes are parsed. */
    snprintf(line, sizeof line, "{\"op\":\"delete\",\"path\":\"/a\"}GARBAGE");
    {
        struct ls_op op;
        parse_ok_n(line, strlen(line) - 7, &op);
        assert_int_equal(op.type, LS_OP_DELETE);
        op_release(&op);
    }
}

/* A refused line returns the code it puts in err: LS_EBATCH, whatever check refused it. */
static void
test_op_error_return_matches_code(void **state)
{
    static const char *const lines[] = {
        "{\"op\":\"delete\",\"path\":\"rel\"}",             /* path_check: LS_EPATH */
        "{\"op\":\"move\",\"path\":\"/a\",\"to\":\"/a//b\"}",     /* path_check on "to" */
        "{\"op\":\"put\",\"path\":\"/a\",\"meta\":[1]}",         /* meta check: LS_EMETA */
        "{\"op\":\"put\",\"path\":\"/a\",\"body\":5}",           /* the parser's own check */
        NULL,
    };
    char log[1024] = "";
    int bad = 0;
    (void)state;
    for (int i = 0; lines[i]; i++) {
        struct ls_error err;
        struct ls_op op;
        int rc;
        ls_error_clear(&err);
        rc = op_parse_json(lines[i], strlen(lines[i]), &op, &err);
        assert_int_equal(err.code, LS_EBATCH);
        if (rc != err.code) {
            bad++;
            snprintf(log + strlen(log), sizeof log - strlen(log),
                     "\n    %s: returned %d, err.code %d (%s)", lines[i], rc, err.code, err.msg);
        }
        /* Without an error struct, the same code comes back. */
        rc = op_parse_json(lines[i], strlen(lines[i]), &op, NULL);
        if (rc != LS_EBATCH) {
            bad++;
            snprintf(log + strlen(log), sizeof log - strlen(log),
                     "\n    %s with err NULL: returned %d, want LS_EBATCH (%d)", lines[i], rc,
                     LS_EBATCH);
        }
    }
    if (bad) fail_msg("%d return value(s) differ from LS_EBATCH:%s", bad, log);
}

static void
test_op_release_twice(void **state)
{
    struct ls_op op;
    (void)state;
    PARSE_OK("{\"op\":\"put\",\"path\":\"/a\",\"kind\":\"k\",\"meta\":{},\"body_base64\":\"QQ==\"}",
             &op);
    op_release(&op);
    op_release(&op); /* idempotent */
    op_release(NULL);
    assert_null(op.body_owned);
}

/* meta is raw JSON skipped by a small scanner, then checked by jansson; both bugs below were
 * found by tests/fuzz/fuzz_ops (the first hung the server, the second took ']' as a value). */
static void
test_op_meta_scanner(void **state)
{
    struct ls_op op;
    (void)state;
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"meta\":{\0}}", NULL);
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"meta\":{\"k\":1\0}}", NULL);
    PARSE_BAD("{\"op\":\"delete\",\"path\":\"/a\",\"meta\":]}", "expected a value");
    PARSE_BAD("{\"op\":\"delete\",\"path\":\"/a\",\"meta\":,}", "expected a value");
    PARSE_BAD("{\"op\":\"put\",\"path\":\"/a\",\"meta\":}", "expected a value");
    PARSE_BAD("{\"op\":\"publish\",\"path\":\"/a\",\"version\":01}", "integer");
    /* meta is checked on every operation, and kept only by a put */
    PARSE_BAD("{\"op\":\"delete\",\"path\":\"/a\",\"meta\":[1]}", "meta");
    PARSE_OK("{\"op\":\"delete\",\"path\":\"/a\",\"meta\":{\"k\":1}}", &op);
    assert_int_equal(op.type, LS_OP_DELETE);
    assert_null(op.meta);
    op_release(&op);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_meta_sorts_and_compacts),
        cmocka_unit_test(test_meta_rejects_non_objects),
        cmocka_unit_test(test_meta_depth),
        cmocka_unit_test(test_meta_size),
        cmocka_unit_test(test_op_put_body),
        cmocka_unit_test(test_op_put_kind_meta_status),
        cmocka_unit_test(test_op_put_base64),
        cmocka_unit_test(test_op_put_base64_bad_padding),
        cmocka_unit_test(test_op_put_base64_whitespace),
        cmocka_unit_test(test_op_put_body_conflicts),
        cmocka_unit_test(test_op_simple_types),
        cmocka_unit_test(test_op_path_and_to),
        cmocka_unit_test(test_op_versions),
        cmocka_unit_test(test_op_shape_errors),
        cmocka_unit_test(test_op_error_return_matches_code),
        cmocka_unit_test(test_op_release_twice),
        cmocka_unit_test(test_op_meta_scanner),
    };
    return cmocka_run_group_tests_name("item", tests, NULL, NULL);
}
