/*
 * test_util.c - unit tests for src/common/util.c and the error helpers in src/common/err.c:
 * sizes, durations, strict UTF-8, hex, SHA-256, the capped buffer and error messages.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/util.h"

/* ---------------------------------------------------------------- parse_size */

static void
expect_size(const char *s, uint64_t want)
{
    uint64_t v = 12345;
    int rc = ls_parse_size(s, &v);
    if (rc != 0) fail_msg("ls_parse_size(\"%s\") failed with %d", s, rc);
    if (v != want)
        fail_msg("ls_parse_size(\"%s\") = %llu, want %llu", s, (unsigned long long)v,
                 (unsigned long long)want);
}

static void
expect_size_bad(const char *s)
{
    uint64_t v = 777;
    int rc = ls_parse_size(s, &v);
    if (rc != LS_EINVAL) fail_msg("ls_parse_size(\"%s\") returned %d, want LS_EINVAL", s ? s : "NULL", rc);
    assert_int_equal(v, 777); /* output untouched on error */
}

static void
test_parse_size_units(void **state)
{
    (void)state;
    expect_size("0", 0);
    expect_size("100", 100);
    expect_size("64K", 64ULL << 10);
    expect_size("64k", 64ULL << 10);
    expect_size("64KB", 64ULL << 10);
    expect_size("64KiB", 64ULL << 10);
    expect_size("64Ki", 64ULL << 10);
    expect_size("1M", 1ULL << 20);
    expect_size("1MiB", 1ULL << 20);
    expect_size("1mib", 1ULL << 20);
    expect_size("1MB", 1ULL << 20);
    expect_size("4G", 4ULL << 30);
    expect_size("4GiB", 4ULL << 30);
    expect_size("2T", 2ULL << 40);
    expect_size("18446744073709551615", UINT64_MAX);
    expect_size("17179869183G", 17179869183ULL << 30); /* largest that fits */
}

static void
test_parse_size_bad(void **state)
{
    (void)state;
    expect_size_bad(NULL);
    expect_size_bad("");
    expect_size_bad("K");
    expect_size_bad("-1");
    expect_size_bad("+1");
    expect_size_bad(" 1");
    expect_size_bad("1 K");
    expect_size_bad("1.5K");
    expect_size_bad("1X");
    expect_size_bad("1KK");
    expect_size_bad("1KiBx");
    expect_size_bad("1iB");
    expect_size_bad("0x10");
    expect_size_bad("18446744073709551616"); /* 2^64 */
    expect_size_bad("17179869184G");         /* 2^64 after the multiplier */
    expect_size_bad("16777216T");            /* 2^64 */
}

/* ---------------------------------------------------------------- parse_duration_ms */

static void
expect_dur(const char *s, int64_t want)
{
    int64_t v = 12345;
    int rc = ls_parse_duration_ms(s, &v);
    if (rc != 0) fail_msg("ls_parse_duration_ms(\"%s\") failed with %d", s, rc);
    if (v != want)
        fail_msg("ls_parse_duration_ms(\"%s\") = %lld, want %lld", s, (long long)v, (long long)want);
}

static void
expect_dur_bad(const char *s)
{
    int64_t v = 777;
    int rc = ls_parse_duration_ms(s, &v);
    if (rc != LS_EINVAL)
        fail_msg("ls_parse_duration_ms(\"%s\") returned %d, want LS_EINVAL", s ? s : "NULL", rc);
    assert_int_equal(v, 777);
}

static void
test_parse_duration(void **state)
{
    (void)state;
    expect_dur("0", 0);
    expect_dur("30", 30000); /* bare number: seconds */
    expect_dur("30s", 30000);
    expect_dur("250ms", 250);
    expect_dur("5m", 300000);
    expect_dur("2h", 7200000);
    expect_dur("7d", 604800000);
    expect_dur("9223372036854775807ms", INT64_MAX);

    expect_dur_bad(NULL);
    expect_dur_bad("");
    expect_dur_bad("s");
    expect_dur_bad("-5s");
    expect_dur_bad(" 5s");
    expect_dur_bad("5 s");
    expect_dur_bad("5x");
    expect_dur_bad("5S");
    expect_dur_bad("5mss");
    expect_dur_bad("1.5s");
    expect_dur_bad("9223372036854775807d");  /* overflows after the multiplier */
    expect_dur_bad("9223372036854775808ms"); /* overflows strtoll */
}

static void
test_parse_numbers_and_time(void **state)
{
    uint64_t u;
    int64_t i, ms;
    char buf[64];
    (void)state;

    assert_int_equal(ls_parse_u64("42", &u), 0);
    assert_int_equal(u, 42);
    assert_int_equal(ls_parse_u64("-1", &u), LS_EINVAL);
    assert_int_equal(ls_parse_u64("4x", &u), LS_EINVAL);
    assert_int_equal(ls_parse_i64("-42", &i), 0);
    assert_true(i == -42);
    assert_int_equal(ls_parse_i64("", &i), LS_EINVAL);
    assert_int_equal(ls_parse_i64(" 1", &i), LS_EINVAL);
    assert_int_equal(ls_parse_i64("9223372036854775808", &i), LS_EINVAL);

    assert_int_equal(ls_parse_time("2024-02-29T12:34:56Z", &ms), 0);
    assert_true(ms == 1709210096000LL);
    assert_int_equal(ls_parse_time("2024-02-29", &ms), 0);
    assert_true(ms == 1709164800000LL);
    assert_int_equal(ls_parse_time("1700000000123", &ms), 0);
    assert_true(ms == 1700000000123LL);
    assert_int_equal(ls_parse_time("yesterday", &ms), LS_EINVAL);
    assert_int_equal(ls_parse_time("2024-02-29T12:34:56Zjunk", &ms), LS_EINVAL);

    ls_format_time(0, buf, sizeof buf);
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    ls_format_time(1709210096789LL, buf, sizeof buf);
    assert_string_equal(buf, "2024-02-29T12:34:56.789Z");

    /* what format_time writes reads back to the same millisecond */
    for (int64_t t = 0; t < 2000000000000LL; t += 123456789013LL) {
        ls_format_time(t, buf, sizeof buf);
        assert_int_equal(ls_parse_time(buf, &ms), 0);
        assert_true(ms == t);
    }
    /* offsets and fractions people type */
    assert_int_equal(ls_parse_time("2024-02-29T14:34:56.789+02:00", &ms), 0);
    assert_true(ms == 1709210096789LL);
    assert_int_equal(ls_parse_time("2024-02-29T07:04:56.7-0530", &ms), 0);
    assert_true(ms == 1709210096700LL);
    assert_int_equal(ls_parse_time("2024-02-29T12:34:56.789123456Z", &ms), 0);
    assert_true(ms == 1709210096789LL);
    assert_int_equal(ls_parse_time("2024-02-29T12:34:56.Z", &ms), LS_EINVAL);
    assert_int_equal(ls_parse_time("2024-02-29T12:34:56+2", &ms), LS_EINVAL);
    assert_int_equal(ls_parse_time("2024-02-29T12:34:56+25:00", &ms), LS_EINVAL);
}

/* ---------------------------------------------------------------- utf8_valid */

#define U8(lit) (lit), (sizeof(lit) - 1)

static void
test_utf8_valid(void **state)
{
    (void)state;
    assert_true(ls_utf8_valid(U8("")));
    assert_true(ls_utf8_valid(U8("plain ascii")));
    assert_true(ls_utf8_valid(U8("h\xc3\xa9llo")));          /* é */
    assert_true(ls_utf8_valid(U8("\xe2\x82\xac")));          /* € */
    assert_true(ls_utf8_valid(U8("\xf0\x9f\x98\x80")));      /* U+1F600 */
    assert_true(ls_utf8_valid(U8("\xf4\x8f\xbf\xbf")));      /* U+10FFFF, the last code point */
    assert_true(ls_utf8_valid(U8("\xef\xbf\xbf")));          /* U+FFFF */
    assert_true(ls_utf8_valid(U8("\xed\x9f\xbf")));          /* U+D7FF, just below surrogates */
    assert_true(ls_utf8_valid(U8("\xee\x80\x80")));          /* U+E000, just above */
    assert_true(ls_utf8_valid(U8("a\0b")));                  /* NUL is valid UTF-8 */
    assert_true(ls_utf8_valid("\xc3\xa9zzz", 2));            /* n bounds the check */

    /* overlong forms */
    assert_false(ls_utf8_valid(U8("\xc0\x80")));
    assert_false(ls_utf8_valid(U8("\xc1\xbf")));
    assert_false(ls_utf8_valid(U8("\xe0\x80\x80")));
    assert_false(ls_utf8_valid(U8("\xe0\x9f\xbf")));
    assert_false(ls_utf8_valid(U8("\xf0\x80\x80\x80")));
    assert_false(ls_utf8_valid(U8("\xf0\x8f\xbf\xbf")));
    /* surrogates */
    assert_false(ls_utf8_valid(U8("\xed\xa0\x80")));
    assert_false(ls_utf8_valid(U8("\xed\xbf\xbf")));
    /* above U+10FFFF and bytes that never occur */
    assert_false(ls_utf8_valid(U8("\xf4\x90\x80\x80")));
    assert_false(ls_utf8_valid(U8("\xf5\x80\x80\x80")));
    assert_false(ls_utf8_valid(U8("\xf8\x88\x80\x80\x80")));
    assert_false(ls_utf8_valid(U8("\xfe")));
    assert_false(ls_utf8_valid(U8("\xff")));
    /* lone continuation, bad continuation, truncated */
    assert_false(ls_utf8_valid(U8("\x80")));
    assert_false(ls_utf8_valid(U8("a\xbf" "b")));
    assert_false(ls_utf8_valid(U8("\xe2\x28\xa1")));
    assert_false(ls_utf8_valid(U8("\xe2\x82")));
    assert_false(ls_utf8_valid(U8("\xf0\x9f\x98")));
    assert_false(ls_utf8_valid("\xc3\xa9", 1)); /* cut by n */
}

/* ---------------------------------------------------------------- hex and sha256 */

static void
test_hex_round_trip(void **state)
{
    unsigned char all[256], back[256];
    char hex[513];
    const unsigned char some[] = {0x00, 0x01, 0xab, 0xff};
    (void)state;

    ls_hex_encode(some, sizeof some, hex);
    assert_string_equal(hex, "0001abff");
    assert_int_equal(ls_hex_decode("0001ABFF", back, 4), 0);
    assert_memory_equal(back, some, 4);

    for (int i = 0; i < 256; i++) all[i] = (unsigned char)i;
    ls_hex_encode(all, sizeof all, hex);
    assert_int_equal(strlen(hex), 512);
    memset(back, 0x55, sizeof back);
    assert_int_equal(ls_hex_decode(hex, back, sizeof back), 0);
    assert_memory_equal(back, all, sizeof all);

    ls_hex_encode(all, 0, hex);
    assert_string_equal(hex, "");
    assert_int_equal(ls_hex_decode("", back, 0), 0);

    assert_int_equal(ls_hex_decode("0001ab", back, 4), LS_EINVAL);   /* too short */
    assert_int_equal(ls_hex_decode("0001abff00", back, 4), LS_EINVAL); /* too long */
    assert_int_equal(ls_hex_decode("0001abfg", back, 4), LS_EINVAL);   /* not hex */
    assert_int_equal(ls_hex_decode("zz", back, 1), LS_EINVAL);
    assert_int_equal(ls_hex_decode(" 1", back, 1), LS_EINVAL);
}

static void
test_sha256_vectors(void **state)
{
    unsigned char out[32];
    char hex[65];
    (void)state;
    ls_sha256("abc", 3, out);
    ls_hex_encode(out, 32, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ls_sha256("", 0, out);
    ls_hex_encode(out, 32, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void
test_random_hex(void **state)
{
    char a[33], b[33];
    unsigned char raw[16];
    (void)state;
    ls_random_hex(a, 16);
    ls_random_hex(b, 16);
    assert_int_equal(strlen(a), 32);
    assert_int_equal(ls_hex_decode(a, raw, 16), 0);
    assert_string_not_equal(a, b);
}

/* ---------------------------------------------------------------- buf */

static void
test_buf_append_and_cap(void **state)
{
    struct ls_buf b;
    (void)state;
    ls_buf_init(&b, 10);
    assert_null(b.p);
    assert_int_equal(ls_buf_append(&b, "", 0), 0);
    assert_int_equal(b.len, 0);
    assert_non_null(b.p);
    assert_string_equal(b.p, "");

    assert_int_equal(ls_buf_append(&b, "hello", 5), 0);
    assert_int_equal(ls_buf_append(&b, "world", 5), 0); /* exactly max */
    assert_int_equal(b.len, 10);
    assert_string_equal(b.p, "helloworld");

    assert_int_equal(ls_buf_append(&b, "!", 1), LS_ETOOBIG);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.p, "helloworld");
    assert_int_equal(ls_buf_append(&b, "x", SIZE_MAX), LS_ETOOBIG); /* no overflow */
    assert_int_equal(b.len, 10);

    ls_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.p, "");
    assert_int_equal(ls_buf_append(&b, "a\0b", 3), 0);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.p, "a\0b", 4);
    ls_buf_release(&b);
    assert_null(b.p);
    assert_int_equal(b.len, 0);
}

static void
test_buf_grows(void **state)
{
    struct ls_buf b;
    char chunk[1000];
    (void)state;
    memset(chunk, 'x', sizeof chunk);
    ls_buf_init(&b, 1 << 20);
    for (int i = 0; i < 100; i++) assert_int_equal(ls_buf_append(&b, chunk, sizeof chunk), 0);
    assert_int_equal(b.len, 100000);
    assert_true(b.cap > b.len);
    assert_int_equal(b.p[b.len], '\0');
    for (size_t i = 0; i < b.len; i++)
        if (b.p[i] != 'x') fail_msg("byte %zu corrupted", i);
    ls_buf_release(&b);
}

static void
test_buf_printf(void **state)
{
    struct ls_buf b;
    char big[600];
    (void)state;
    ls_buf_init(&b, 2000);
    assert_int_equal(ls_buf_printf(&b, "%d-%s", 42, "x"), 0);
    assert_string_equal(b.p, "42-x");
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(ls_buf_printf(&b, "[%s]", big), 0); /* longer than the on-stack buffer */
    assert_int_equal(b.len, 4 + 2 + 599);
    assert_int_equal(b.p[4], '[');
    assert_int_equal(b.p[b.len - 1], ']');
    assert_int_equal(b.p[b.len], '\0');
    ls_buf_release(&b);

    ls_buf_init(&b, 8);
    assert_int_equal(ls_buf_printf(&b, "%s", "12345678"), 0);
    assert_int_equal(ls_buf_printf(&b, "%s", "9"), LS_ETOOBIG);
    assert_string_equal(b.p, "12345678");
    ls_buf_reset(&b);
    assert_int_equal(ls_buf_printf(&b, "%s", big), LS_ETOOBIG); /* long path also capped */
    assert_int_equal(b.len, 0);
    ls_buf_release(&b);
}

/* ---------------------------------------------------------------- errors */

static void
test_error_prefix(void **state)
{
    struct ls_error e;
    char longmsg[600];
    (void)state;

    assert_int_equal(ls_error_set(&e, LS_EPATH, "bad %s", "thing"), LS_EPATH);
    assert_int_equal(e.code, LS_EPATH);
    assert_string_equal(e.msg, "bad thing");
    ls_error_prefix(&e, "line %d: ", 7);
    assert_string_equal(e.msg, "line 7: bad thing");
    assert_int_equal(e.code, LS_EPATH); /* the code is kept */

    /* A message that fills the buffer: the prefix wins, the result stays terminated. */
    memset(longmsg, 'm', sizeof longmsg);
    longmsg[sizeof longmsg - 1] = '\0';
    ls_error_set(&e, LS_EINVAL, "%s", longmsg);
    assert_int_equal(strlen(e.msg), sizeof e.msg - 1);
    ls_error_prefix(&e, "line %d: ", 12);
    assert_int_equal(strlen(e.msg), sizeof e.msg - 1);
    assert_memory_equal(e.msg, "line 12: mmm", 12);
    assert_int_equal(e.msg[sizeof e.msg - 2], 'm');

    /* Empty prefix leaves the message alone. */
    ls_error_set(&e, LS_EINVAL, "x");
    ls_error_prefix(&e, "%s", "");
    assert_string_equal(e.msg, "x");

    ls_error_clear(&e);
    assert_int_equal(e.code, 0);
    assert_string_equal(e.msg, "");

    /* NULL format: the default message. NULL error: the code is still returned. */
    assert_int_equal(ls_error_set(&e, LS_ENOTFOUND, NULL), LS_ENOTFOUND);
    assert_string_equal(e.msg, "not found");
    assert_int_equal(ls_error_set(NULL, LS_EIO, "ignored"), LS_EIO);
}

static void
test_error_table(void **state)
{
    (void)state;
    assert_string_equal(ls_strerror(0), "success");
    assert_string_equal(ls_errcode(LS_EPATH), "bad_path");
    assert_int_equal(ls_errstatus(LS_EPATH), 400);
    assert_string_equal(ls_errcode(LS_ECONFLICT), "conflict");
    assert_int_equal(ls_errstatus(LS_ECONFLICT), 409);
    assert_string_equal(ls_errcode(LS_ETOOBIG), "too_large");
    assert_int_equal(ls_errstatus(LS_ETOOBIG), 413);
    assert_string_equal(ls_errcode(LS_EINTERNAL), "internal");
    assert_string_equal(ls_strerror(LS_EINVAL), "invalid argument");
    assert_string_equal(ls_errcode(-1), "internal");
    assert_int_equal(ls_errstatus(12345), 500);
    assert_string_equal(ls_strerror(-1), "unknown error");
    assert_int_equal(ls_errno_to_ls(-ENOSPC), LS_ENOSPC);
    assert_int_equal(ls_errno_to_ls(ENOENT), LS_ENOTFOUND);
    assert_int_equal(ls_errno_to_ls(EIO), LS_EIO);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size_units),
        cmocka_unit_test(test_parse_size_bad),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_numbers_and_time),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_hex_round_trip),
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_random_hex),
        cmocka_unit_test(test_buf_append_and_cap),
        cmocka_unit_test(test_buf_grows),
        cmocka_unit_test(test_buf_printf),
        cmocka_unit_test(test_error_prefix),
        cmocka_unit_test(test_error_table),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
