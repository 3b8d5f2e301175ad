/*
 * test_path.c - unit tests for path_check (src/core/item.c): what an item path may be, and that
 * a refused path comes with LS_EPATH and a message that says why.
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

/* A literal with its length, embedded NULs included. */
#define P(lit) (lit), (sizeof(lit) - 1)

static void
expect_ok_n(const char *path, size_t len)
{
    struct ls_error err;
    int rc;
    ls_error_clear(&err);
    rc = path_check(path, len, &err);
    if (rc != 0) fail_msg("path_check(\"%.*s\", %zu) refused: %d %s", (int)len, path, len, rc, err.msg);
}

/* Refused with LS_EPATH, with a message containing `why`. */
static void
expect_bad_n(const char *path, size_t len, const char *why)
{
    struct ls_error err;
    int rc;
    ls_error_clear(&err);
    rc = path_check(path, len, &err);
    if (rc != LS_EPATH)
        fail_msg("path_check(\"%.*s\", %zu) returned %d, want LS_EPATH", (int)len,
                 path ? path : "", len, rc);
    assert_int_equal(err.code, LS_EPATH);
    if (!strstr(err.msg, why))
        fail_msg("path_check(\"%.*s\"): message \"%s\" does not mention \"%s\"", (int)len,
                 path ? path : "", err.msg, why);
    /* The same verdict without an error struct. */
    assert_int_equal(path_check(path, len, NULL), LS_EPATH);
}

#define OK(lit) expect_ok_n(P(lit))
#define BAD(lit, why) expect_bad_n(P(lit), why)

static void
test_valid_paths(void **state)
{
    (void)state;
    OK("/a");
    OK("/a/b/c");
    OK("/docs/2024/report.pdf");
    OK("/a b");              /* space is fine */
    OK("/.hidden");          /* only "." and ".." as whole segments are refused */
    OK("/..a");
    OK("/a/...");
    OK("/a./b.");
    OK("/h\xc3\xa9llo/w\xc3\xb6rld"); /* UTF-8 */
    OK("/\xf0\x9f\x98\x80");          /* 4-byte sequence */
    OK("/~!@#$%^&*()_+-=[]{};:'\",<>?|\\");
    /* Only len bytes are looked at. */
    expect_ok_n("/a/bad//tail", 6);
    expect_ok_n("/abc\x01", 4);
}

static void
test_empty_and_relative(void **state)
{
    (void)state;
    expect_bad_n(NULL, 0, "empty");
    expect_bad_n(NULL, 5, "empty");
    BAD("", "empty");
    expect_bad_n("/a", 0, "empty");
    BAD("a", "absolute");
    BAD("a/b", "absolute");
    BAD("./a", "absolute");
    BAD(" /a", "absolute");
}

static void
test_root_and_segments(void **state)
{
    (void)state;
    BAD("/", "names no item");
    BAD("//", "empty segment");
    BAD("//a", "empty segment");
    BAD("/a/", "empty segment");
    BAD("/a//b", "empty segment");
    BAD("/a/b//", "empty segment");
    BAD("/.", "'.' or '..'");
    BAD("/..", "'.' or '..'");
    BAD("/./a", "'.' or '..'");
    BAD("/a/..", "'.' or '..'");
    BAD("/a/./b", "'.' or '..'");
    BAD("/a/../b", "'.' or '..'");
    BAD("/../a", "'.' or '..'");
}

static void
test_nul_inside(void **state)
{
    (void)state;
    BAD("/a\0b", "NUL");
    BAD("/a\0", "NUL");
    BAD("/\0", "NUL");
    /* strlen would say "/a" is fine; the length is what counts. */
    assert_int_equal(strlen("/a\0b"), 2);
}

static void
test_invalid_utf8(void **state)
{
    (void)state;
    BAD("/\xc0\xaf", "UTF-8");             /* overlong '/' */
    BAD("/a/\xc0\x80", "UTF-8");           /* overlong NUL */
    BAD("/\xe0\x80\xaf", "UTF-8");         /* overlong, 3 bytes */
    BAD("/\xf0\x80\x80\xaf", "UTF-8");     /* overlong, 4 bytes */
    BAD("/\xed\xa0\x80", "UTF-8");         /* high surrogate */
    BAD("/\xed\xbf\xbf", "UTF-8");         /* low surrogate */
    BAD("/\xf4\x90\x80\x80", "UTF-8");     /* above U+10FFFF */
    BAD("/abc\xe2\x82", "UTF-8");          /* truncated at the end */
    BAD("/\xe2\x82/b", "UTF-8");           /* truncated before a slash */
    BAD("/\x80", "UTF-8");                 /* lone continuation byte */
    BAD("/\xff", "UTF-8");
    expect_bad_n("/\xc3\xa9", 2, "UTF-8"); /* sequence cut by len */
}

static void
test_control_chars(void **state)
{
    (void)state;
    BAD("/a\x01", "control");
    BAD("/a\tb", "control");
    BAD("/a\nb", "control");
    BAD("/a\rb", "control");
    BAD("/\x1f", "control");
    BAD("/a\x7f", "control");
    BAD("/a/b\x1b[31m", "control");
}

static void
test_length_limit(void **state)
{
    char p[LS_PATH_MAX + 2];
    struct ls_error err;
    char num[16];
    (void)state;

    p[0] = '/';
    memset(p + 1, 'a', sizeof p - 1);
    expect_ok_n(p, LS_PATH_MAX); /* exactly 1024 bytes */
    expect_bad_n(p, LS_PATH_MAX + 1, "longer");
    snprintf(num, sizeof num, "%d", LS_PATH_MAX);
    ls_error_clear(&err);
    assert_int_equal(path_check(p, LS_PATH_MAX + 1, &err), LS_EPATH);
    assert_non_null(strstr(err.msg, num)); /* says what the limit is */

    /* 1024 bytes of several segments and multi-byte characters are fine too. */
    for (size_t i = 0; i + 4 <= LS_PATH_MAX; i += 4) memcpy(p + i, "/\xe2\x82\xac", 4);
    expect_ok_n(p, LS_PATH_MAX);
    expect_bad_n(p, LS_PATH_MAX + 1, "longer");
}

static void
test_error_is_rewritten_each_time(void **state)
{
    struct ls_error err;
    (void)state;
    ls_error_clear(&err);
    assert_int_equal(path_check(P("/a//b"), &err), LS_EPATH);
    assert_non_null(strstr(err.msg, "empty segment"));
    assert_int_equal(path_check(P("/a\x01"), &err), LS_EPATH);
    assert_null(strstr(err.msg, "empty segment"));
    assert_non_null(strstr(err.msg, "control"));
    /* A valid path does not disturb the error struct's code. */
    err.code = 0;
    assert_int_equal(path_check(P("/ok"), &err), 0);
    assert_int_equal(err.code, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_paths),
        cmocka_unit_test(test_empty_and_relative),
        cmocka_unit_test(test_root_and_segments),
        cmocka_unit_test(test_nul_inside),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_control_chars),
        cmocka_unit_test(test_length_limit),
        cmocka_unit_test(test_error_is_rewritten_each_time),
    };
    return cmocka_run_group_tests_name("path", tests, NULL, NULL);
}
