/*
 * test_site.c - the site registry's merging and parsing (src/node/site.c): one record per
 * server, this server's own never replaced; among reports from below the freshest; an echo
 * from above a moment newer does not replace first-hand knowledge, a server that moved away
 * (heard from elsewhere well after) does; records not refreshed for SITE_FORGET_MS go; at most
 * SITE_MAX stay, the freshest. A PING's list: malformed records skipped, the count capped,
 * ages turned into times, a PING without a list leaving the last one in place.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/util.h"
#include "node/site.h"

#define NOW 1800000000000LL

static struct site_rec
rec(const char *name, int id, int state, int64_t heard, int64_t seq)
{
    struct site_rec r;
    memset(&r, 0, sizeof r);
    snprintf(r.name, sizeof r.name, "%s", name);
    if (id) snprintf(r.node_id, sizeof r.node_id, "%032x", id);
    r.state = state;
    r.heard_ms = heard;
    r.seq = seq;
    return r;
}

static const struct site_rec *
find(const struct site_set *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->recs[i].name, name) == 0) return &s->recs[i];
    return NULL;
}

static void
test_merge_ranks(void **state)
{
    struct site_set s;
    struct site_rec r;
    (void)state;
    site_set_init(&s);
    site_set_add(&s, (r = rec("me", 1, SITE_ACTIVE, NOW, 10), &r), 0);
    /* an echo of this server itself, newer: ignored */
    site_set_add(&s, (r = rec("me", 1, SITE_DOWN, NOW + 60000, 1), &r), 2);
    /* a downstream that just died, and the upstream's echo of it from before, a moment newer */
    site_set_add(&s, (r = rec("c", 2, SITE_DOWN, NOW - 3000, 7), &r), 1);
    site_set_add(&s, (r = rec("c", 2, SITE_ACTIVE, NOW - 2990, 7), &r), 2);
    /* a server that left this subtree long ago and is heard of elsewhere now */
    site_set_add(&s, (r = rec("moved", 3, SITE_DOWN, NOW - 60000, 5), &r), 1);
    site_set_add(&s, (r = rec("moved", 3, SITE_ACTIVE, NOW - 500, 9), &r), 2);
    /* reported by two downstreams: the freshest */
    site_set_add(&s, (r = rec("two", 4, SITE_DOWN, NOW - 9000, 3), &r), 1);
    site_set_add(&s, (r = rec("two", 4, SITE_ACTIVE, NOW - 100, 4), &r), 1);
    /* only from above */
    site_set_add(&s, (r = rec("above", 5, SITE_STALE, NOW - 2500, 2), &r), 2);
    /* not refreshed for longer than SITE_FORGET_MS: forgotten */
    site_set_add(&s, (r = rec("old", 6, SITE_DOWN, NOW - SITE_FORGET_MS - 1, 1), &r), 1);
    /* a peer without node_id: by name */
    site_set_add(&s, (r = rec("noid", 0, SITE_ACTIVE, NOW - 100, 1), &r), 1);
    site_set_merge(&s, NOW);

    assert_int_equal(s.n, 6);
    assert_string_equal(s.recs[0].name, "me"); /* this server first, then by name */
    assert_string_equal(s.recs[1].name, "above");
    assert_string_equal(s.recs[5].name, "two");
    assert_int_equal(s.rank[0], 0);
    assert_int_equal(find(&s, "me")->seq, 10);
    assert_int_equal(find(&s, "me")->state, SITE_ACTIVE);
    assert_int_equal(find(&s, "c")->state, SITE_DOWN);
    assert_int_equal(find(&s, "moved")->state, SITE_ACTIVE);
    assert_int_equal(find(&s, "moved")->seq, 9);
    assert_int_equal(find(&s, "two")->seq, 4);
    assert_int_equal(find(&s, "above")->state, SITE_STALE);
    assert_null(find(&s, "old"));
    assert_non_null(find(&s, "noid"));
    site_set_release(&s);
}

static void
test_merge_cap(void **state)
{
    struct site_set s;
    struct site_rec r;
    char name[32];
    (void)state;
    site_set_init(&s);
    site_set_add(&s, (r = rec("me", 1, SITE_ACTIVE, NOW - 200000, 1), &r), 0);
    /* 1.5 x SITE_MAX others; the ones heard last are the ones kept */
    for (int i = 0; i < SITE_MAX + SITE_MAX / 2; i++) {
        snprintf(name, sizeof name, "n%05d", i);
        site_set_add(&s, (r = rec(name, 100 + i, SITE_ACTIVE, NOW - 100000 + i, i), &r), 1);
    }
    site_set_merge(&s, NOW);
    assert_int_equal(s.n, SITE_MAX);
    assert_string_equal(s.recs[0].name, "me"); /* kept although heard the longest ago */
    assert_null(find(&s, "n00000"));
    snprintf(name, sizeof name, "n%05d", SITE_MAX / 2 + 1);
    assert_non_null(find(&s, name));
    snprintf(name, sizeof name, "n%05d", SITE_MAX / 2);
    assert_null(find(&s, name));
    site_set_release(&s);
}

static void
test_parse(void **state)
{
    struct site_list l = {0};
    json_t *ping;
    int64_t now;
    (void)state;
    ping = json_loads(
        "{\"name\":\"r1\",\"site_every_ms\":2000,\"site\":["
        "{\"name\":\"r1\",\"node_id\":\"0123456789abcdef0123456789abcdef\",\"role\":\"replica\","
        "\"version\":\"0.1.0\",\"http\":\"h:1\",\"peer\":\"h:2\",\"upstream\":\"p\",\"seq\":5,"
        "\"state\":\"active\",\"age_ms\":0},"
        "{\"name\":\"c\",\"seq\":3,\"state\":\"down\",\"age_ms\":60000,\"extra\":1},"
        "{\"name\":\"\",\"seq\":3,\"state\":\"down\",\"age_ms\":1},"    /* no name */
        "{\"name\":\"x\",\"seq\":-1,\"state\":\"down\",\"age_ms\":1},"  /* bad seq */
        "{\"name\":\"x\",\"seq\":1,\"state\":\"sleepy\",\"age_ms\":1}," /* bad state */
        "{\"name\":\"x\",\"node_id\":\"XYZ\",\"seq\":1,\"state\":\"down\",\"age_ms\":1},"
        "{\"name\":\"a\\u001b[31m\",\"seq\":1,\"state\":\"down\",\"age_ms\":1}," /* escape */
        "{\"name\":\"d\",\"seq\":1,\"state\":\"stale\",\"age_ms\":1},"
        "7]}",
        0, NULL);
    assert_non_null(ping);
    now = ls_now_ms();
    assert_int_equal(site_list_parse(&l, ping, SITE_MAX), 1);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.every_ms, 2000);
    assert_string_equal(l.recs[0].name, "r1");
    assert_string_equal(l.recs[0].upstream, "p");
    assert_int_equal(l.recs[0].seq, 5);
    assert_true(l.recs[0].heard_ms >= now && l.recs[0].heard_ms <= now + 1000);
    assert_string_equal(l.recs[1].name, "c");
    assert_int_equal(l.recs[1].state, SITE_DOWN);
    assert_true(l.recs[1].heard_ms >= now - 60000 && l.recs[1].heard_ms <= now - 59000);
    assert_string_equal(l.recs[2].name, "d");
    assert_false(site_list_old(&l, l.recv_mono_ms + 4000));
    assert_true(site_list_old(&l, l.recv_mono_ms + 4001));
    /* capped: only the first record fits */
    assert_int_equal(site_list_parse(&l, ping, 1), 1);
    assert_int_equal(l.n, 1);
    json_decref(ping);
    /* a PING without a list (an older peer, or between two lists) keeps the last one */
    ping = json_loads("{\"name\":\"r1\",\"seq\":9}", 0, NULL);
    assert_int_equal(site_list_parse(&l, ping, SITE_MAX), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.every_ms, 2000);
    json_decref(ping);
    site_list_release(&l);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_ranks),
        cmocka_unit_test(test_merge_cap),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
