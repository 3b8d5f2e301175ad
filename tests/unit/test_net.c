/*
 * test_net.c - the one HOST:PORT parser (src/node/net.c): names, IPv4 and [IPv6] with a port
 * split as expected; no port, a bad port, a bare IPv6 address or unbalanced brackets are
 * refused (the server refuses such a flag at start rather than retrying it for ever).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "node/net.h"

static void
test_good(void **state)
{
    char host[64];
    int port = -1;
    (void)state;
    assert_int_equal(0, net_split_hostport("127.0.0.1:7071", host, sizeof host, &port));
    assert_string_equal("127.0.0.1", host);
    assert_int_equal(7071, port);
    assert_int_equal(0, net_split_hostport("db.example.com:1", host, sizeof host, &port));
    assert_string_equal("db.example.com", host);
    assert_int_equal(1, port);
    assert_int_equal(0, net_split_hostport("[::1]:65535", host, sizeof host, &port));
    assert_string_equal("::1", host);
    assert_int_equal(65535, port);
    assert_int_equal(0, net_split_hostport(":7070", host, sizeof host, &port));
    assert_string_equal("", host); /* any address, for listening */
}

static void
test_bad(void **state)
{
    static const char *const bad[] = {
        "127.0.0.1", "127.0.0.1:", "host:port", "host:-1", "host:65536", "host:80x",
        "::1:80",    "[::1:80",    "::1]:80",   "[]x:80",  "[::1]x:80",  "",
    };
    char host[64];
    int port;
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (net_split_hostport(bad[i], host, sizeof host, &port) == 0)
            fail_msg("'%s' was accepted", bad[i]);
    assert_int_not_equal(0, net_split_hostport(NULL, host, sizeof host, &port));
    /* a host longer than the buffer is refused, not cut */
    assert_int_not_equal(0, net_split_hostport("abcdefgh:80", host, 8, &port));
}

static void
test_same_host(void **state)
{
    (void)state;
    assert_true(same_host("127.0.0.1:1000", "127.0.0.1:2000"));
    assert_false(same_host("127.0.0.1:1000", "127.0.0.2:1000"));
    assert_true(same_host("[::1]:1", "[::1]:2"));
    assert_false(same_host("[::1]:1", "127.0.0.1:1"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_same_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
