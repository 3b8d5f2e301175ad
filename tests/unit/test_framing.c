/*
 * test_framing.c - the scan of a request's bytes that finds where evhttp will end it and the
 * chunk size lines and trailers it would refuse (src/node/http/framing.c). Every case is fed
 * whole, byte by byte and split in two at every point: the verdict, where the request ends and
 * where the refused line starts must not depend on how the bytes arrive.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "node/http/http.h"

struct outcome {
    enum frame_verdict v;
    uint64_t at; /* FRAME_END: bytes of the request; FRAME_BAD: where the refused line starts */
    const char *why;
};

/* Feeds p[0..n) in pieces of the given sizes (the last piece repeats). */
static struct outcome
scan(const char *p, size_t n, const size_t *pieces, size_t npieces)
{
    struct frame_scan s;
    struct outcome o = {FRAME_MORE, 0, NULL};
    size_t i = 0, k = 0;
    frame_scan_init(&s);
    while (i < n) {
        size_t want = pieces[k < npieces ? k : npieces - 1], used = 0;
        if (want > n - i) want = n - i;
        k++;
        o.v = frame_scan_feed(&s, p + i, want, &used);
        assert_true(used <= want);
        i += used;
        if (o.v != FRAME_MORE) break;
        assert_int_equal(used, want);
    }
    o.at = o.v == FRAME_BAD ? s.line_start : s.off;
    o.why = s.why;
    if (o.v == FRAME_END) assert_int_equal(o.at, i);
    return o;
}

/* The same outcome whole, byte by byte and split at every point. */
static struct outcome
scan_all_ways(const char *p, size_t n)
{
    size_t whole = n ? n : 1, one = 1;
    struct outcome first = scan(p, n, &whole, 1), o;
    o = scan(p, n, &one, 1);
    assert_int_equal(first.v, o.v);
    assert_int_equal(first.at, o.at);
    for (size_t cut = 1; cut < n; cut++) {
        size_t two[2] = {cut, n};
        o = scan(p, n, two, 2);
        if (o.v != first.v || o.at != first.at)
            fail_msg("split at %zu: verdict %d at %llu, whole: %d at %llu", cut, o.v,
                     (unsigned long long)o.at, first.v, (unsigned long long)first.at);
    }
    return first;
}

#define CHUNKED_PUT "PUT /v1/items/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

static void
expect_end(const char *req, const char *after)
{
    char buf[8192];
    struct outcome o;
    snprintf(buf, sizeof buf, "%s%s", req, after);
    o = scan_all_ways(buf, strlen(buf));
    if (o.v != FRAME_END || o.at != strlen(req))
        fail_msg("expected the end at %zu, got verdict %d at %llu: %s", strlen(req), o.v,
                 (unsigned long long)o.at, req);
}

static void
expect_bad(const char *good_part, const char *bad_part, const char *why)
{
    char buf[8192];
    struct outcome o;
    snprintf(buf, sizeof buf, "%s%s", good_part, bad_part);
    o = scan_all_ways(buf, strlen(buf));
    if (o.v != FRAME_BAD || o.at != strlen(good_part))
        fail_msg("expected a refused line at %zu, got verdict %d at %llu: %s|%s",
                 strlen(good_part), o.v, (unsigned long long)o.at, good_part, bad_part);
    assert_string_equal(why, o.why);
}

static void
expect_lost(const char *req)
{
    struct outcome o = scan_all_ways(req, strlen(req));
    if (o.v != FRAME_LOST) fail_msg("expected to give up, got verdict %d: %s", o.v, req);
}

static void
test_ends(void **state)
{
    (void)state;
    /* no body, a Content-Length body, chunked bodies; what follows is the next request's */
    expect_end("GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n", "GET / HTTP/1.1\r\n");
    expect_end("PUT /v1/items/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", "zz\r\n");
    expect_end("PUT /v1/items/x HTTP/1.1\r\ncontent-length:  0\r\n\r\n", "hello");
    expect_end(CHUNKED_PUT "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "PUT / HTTP/1.1\r\n");
    expect_end(CHUNKED_PUT "a\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n folded\r\n\r\n", "x");
    /* what evhttp takes besides plain hex: LF alone, a space then anything, 0x, +, upper case,
     * leading zeros, empty lines, a NUL that ends the line early */
    expect_end("PUT /x HTTP/1.1\nTransfer-Encoding: CHUNKED\n\n5\nhello\n0\n\n", "");
    expect_end(CHUNKED_PUT "5 ;x=y\r\nhello\r\n0x3\r\nabc+2\r\nde\r\n\r\n\r\n"
                           "00000A\r\n0123456789\r\n0\r\n\r\n",
               "");
    {
        static const char nul[] = CHUNKED_PUT "5\0zz\r\nhello\r\n0\r\n\r\n";
        struct outcome o = scan_all_ways(nul, sizeof nul - 1);
        assert_int_equal(FRAME_END, o.v);
        assert_int_equal(sizeof nul - 1, o.at);
    }
    /* bodies evhttp does not read: HEAD, TRACE, unknown methods, no length at all */
    expect_end("HEAD /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "zz\r\n");
    expect_end("FOO /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "zz\r\n");
    expect_end("PUT /x HTTP/1.1\r\nHost: x\r\n\r\n", "zz\r\n");
    /* the first Transfer-Encoding decides; another than chunked leaves Content-Length */
    expect_end("PUT /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n"
               "Transfer-Encoding: chunked\r\n\r\nabc",
               "zz\r\n");
    /* Expect: 100-continue changes nothing */
    expect_end("PUT /x HTTP/1.1\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n"
               "1\r\na\r\n0\r\n\r\n",
               "");
}

static void
test_refused(void **state)
{
    char line[400];
    (void)state;
    expect_bad(CHUNKED_PUT, "5;x=y\r\nhello\r\n0\r\n\r\n", frame_msg_hex);
    expect_bad(CHUNKED_PUT, "zz\r\n", frame_msg_hex);
    expect_bad(CHUNKED_PUT "5\r\nhello\r\n", "zz\r\nabc\r\n0\r\n\r\n", frame_msg_hex);
    expect_bad(CHUNKED_PUT "5\r\nhello", "5;\r\nhello\r\n", frame_msg_hex); /* no CRLF after data */
    expect_bad(CHUNKED_PUT, "-5\r\nhello\r\n", frame_msg_hex);
    expect_bad(CHUNKED_PUT, "5\r\r\nhello\r\n", frame_msg_hex); /* a CR kept: "5\r" */
    expect_bad(CHUNKED_PUT, "5\t\r\nhello\r\n", frame_msg_hex);
    expect_bad(CHUNKED_PUT, "FFFFFFFFFFFFFFFFFF\r\nabc\r\n", frame_msg_range);
    expect_bad(CHUNKED_PUT, "10000000000000000\r\n", frame_msg_range);
    expect_bad(CHUNKED_PUT "5\r\nhello\r\n0\r\n", "not a header\r\n\r\n", frame_msg_trailer);
    expect_bad(CHUNKED_PUT "0\r\nX-A: 1\r\n", "X-B: a\rb\r\n\r\n", frame_msg_trailer);
    /* 256 bytes are taken (with or without the CR), 257 are not, ended or not */
    memset(line, '0', sizeof line);
    memcpy(line + 255, "1\r\nx\r\n0\r\n\r\n", 12);
    {
        char buf[1024];
        struct outcome o;
        snprintf(buf, sizeof buf, "%s%s", CHUNKED_PUT, line);
        o = scan_all_ways(buf, strlen(buf));
        assert_int_equal(FRAME_END, o.v);
    }
    memset(line, '0', sizeof line);
    memcpy(line + 256, "1\r\nx\r\n", 7);
    expect_bad(CHUNKED_PUT, line, frame_msg_long);
    memset(line, '0', sizeof line - 1);
    line[sizeof line - 1] = '\0';
    expect_bad(CHUNKED_PUT "1\r\nx\r\n", line, frame_msg_long);
}

static void
test_lost(void **state)
{
    (void)state;
    /* a folded header, an Expect evhttp answers 417, a Content-Length it refuses, a long line
     * with a header that frames the body */
    expect_lost("PUT /x HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\nzz\r\n");
    expect_lost("PUT /x HTTP/1.1\r\nExpect: 200-ok\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    expect_lost("PUT /x HTTP/1.1\r\nContent-Length: 5x\r\n\r\nzz\r\n");
    {
        char buf[2048];
        snprintf(buf, sizeof buf, "PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked%*s\r\n\r\nzz\r\n",
                 600, "");
        expect_lost(buf);
        /* a long header that does not frame the body is no reason to give up */
        snprintf(buf, sizeof buf, "PUT /x HTTP/1.1\r\nX-Long: %0600d\r\n%s", 7,
                 "Transfer-Encoding: chunked\r\n\r\n");
        expect_bad(buf, "zz\r\n", frame_msg_hex);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ends),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_lost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
