/*
 * test_log.c - the log (src/common/log.c): logfmt values (bare when they can be; quoted with
 * ", \ and control characters escaped otherwise, never a raw newline), the line format on
 * stderr, the ring of the last warnings and errors (oldest first, at most LS_LOG_RECENT_MAX,
 * kept whatever --log-level hides, cut at a character boundary) and the counts by level.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"

static const char *
value(const char *v)
{
    static char buf[256];
    ls_logfmt_value(buf, 0, sizeof buf, v);
    return buf;
}

static void
test_values(void **state)
{
    char small[8];
    assert_string_equal(value("plain"), "plain");
    assert_string_equal(value("delivery-1"), "delivery-1");
    assert_string_equal(value(""), "\"\"");
    assert_string_equal(value("two words"), "\"two words\"");
    assert_string_equal(value("a=b"), "\"a=b\"");
    assert_string_equal(value("say \"hi\""), "\"say \\\"hi\\\"\"");
    assert_string_equal(value("back\\slash"), "\"back\\\\slash\"");
    assert_string_equal(value("line\nnext\ttab\r"), "\"line\\nnext\\ttab\\r\"");
    assert_string_equal(value("bell\a"), "\"bell\\u0007\"");
    assert_string_equal(value("caf\xc3\xa9"), "caf\xc3\xa9"); /* UTF-8 passes as it is */
    /* a value longer than the room is cut, still quoted and NUL-terminated */
    ls_logfmt_value(small, 0, sizeof small, "a long value with spaces");
    assert_true(strlen(small) < sizeof small);
    assert_int_equal(small[0], '"');
    assert_null(strchr(small, '\n'));
}

/* Runs fn with stderr going to a file, and returns what it wrote. */
static char *
captured(void (*fn)(void))
{
    static char buf[8192];
    FILE *f = tmpfile();
    int saved = dup(STDERR_FILENO);
    size_t n;
    assert_non_null(f);
    dup2(fileno(f), STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(f);
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void
log_some(void)
{
    ls_log_setup("node one", LS_LOG_WARN);
    log_info("hidden %d", 1);
    log_warn("disk \"%s\" is\nfull", "/var");
}

static void
test_line(void **state)
{
    uint64_t warns = ls_log_count(LS_LOG_WARN);
    char *out = captured(log_some);
    /* one line; info hidden by the level; ts first, then level, node, msg (always quoted) */
    assert_int_equal(strncmp(out, "ts=", 3), 0);
    assert_non_null(strstr(out, "Z level=warn node=\"node one\" msg=\"disk \\\"/var\\\" is\\nfull\"\n"));
    assert_null(strstr(out, "hidden"));
    assert_int_equal(strchr(out, '\n') - out + 1, (long)strlen(out));
    assert_int_equal(ls_log_count(LS_LOG_WARN), warns + 1);
}

static void
quiet(void)
{
    char long_msg[LS_LOG_RECENT_MSG + 10];
    ls_log_setup("n", LS_LOG_ERROR + 1); /* nothing on stderr: the ring keeps them all the same */
    for (int i = 0; i < LS_LOG_RECENT_MAX + 5; i++) log_warn("warning %d", i);
    log_error("the last");
    /* 'é' (2 bytes) across the cut: the message ends before it, not in the middle */
    memset(long_msg, 'x', sizeof long_msg);
    long_msg[LS_LOG_RECENT_MSG - 2] = '\xc3';
    long_msg[LS_LOG_RECENT_MSG - 1] = '\xa9';
    long_msg[sizeof long_msg - 1] = '\0';
    log_warn("%s", long_msg);
}

static void
test_recent(void **state)
{
    static struct ls_log_entry e[LS_LOG_RECENT_MAX + 1];
    size_t n;
    assert_string_equal(captured(quiet), "");
    n = ls_log_recent(e, LS_LOG_RECENT_MAX + 1);
    assert_int_equal(n, LS_LOG_RECENT_MAX);
    assert_int_equal(e[n - 2].level, LS_LOG_ERROR);
    assert_string_equal(e[n - 2].msg, "the last");
    assert_string_equal(e[n - 3].msg, "warning 54");
    assert_string_equal(e[0].msg, "warning 7"); /* the oldest kept */
    assert_int_equal(strlen(e[n - 1].msg), LS_LOG_RECENT_MSG - 2);
    assert_true(e[n - 1].ms > 1700000000000LL);
    assert_int_equal(ls_log_recent(e, 3), 3);
    assert_string_equal(e[1].msg, "the last");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_line),
        cmocka_unit_test(test_recent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
