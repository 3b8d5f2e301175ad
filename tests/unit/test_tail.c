/*
 * test_tail.c - unit tests for the in-memory log tail (src/core/tail.c): what it promises is
 * that every entry after its base is in it, in order; savepoint rollbacks, aborted and broken
 * transactions and eviction must keep that true, and a position below the base is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/tail.h"

struct seen {
    int64_t seq[64];
    char body[64][16];
    int n, stop_at;
};

static int
collect(void *arg, const struct ls_entry *e)
{
    struct seen *s = arg;
    s->seq[s->n] = e->seq;
    snprintf(s->body[s->n], sizeof s->body[0], "%.*s", (int)e->body_len, (const char *)e->body);
    s->n++;
    return s->stop_at && s->n >= s->stop_at;
}

static void
add(struct log_tail *t, int64_t seq, const char *body)
{
    struct ls_entry e;
    memset(&e, 0, sizeof e);
    e.seq = seq;
    e.op = LS_OP_PUT;
    e.flags = REC_DATA;
    e.path = "/p";
    e.kind = "document";
    e.meta = "{}";
    e.body_kind = BODY_INLINE;
    e.body = body;
    e.body_len = strlen(body);
    e.size = e.body_len;
    tail_add(t, &e);
}

static int
read_after(struct log_tail *t, int64_t after, struct seen *s)
{
    memset(s, 0, sizeof *s);
    return tail_read(t, after, 100, 1 << 20, collect, s);
}

static void
test_nothing_before_a_reader(void **state)
{
    struct log_tail *t = tail_new(1 << 20);
    struct seen s;
    (void)state;
    /* no reader yet: nothing is kept, and nothing is claimed */
    add(t, 1, "a");
    tail_end(t, 1, 1);
    assert_int_equal(read_after(t, 0, &s), -1);
    /* the reader's first visit turned it on: from the next transaction on, it holds them */
    add(t, 2, "b");
    tail_end(t, 1, 2);
    assert_int_equal(read_after(t, 0, &s), -1); /* 1 was never in it */
    assert_int_equal(read_after(t, 1, &s), 1);
    add(t, 3, "c");
    tail_end(t, 1, 3);
    assert_int_equal(read_after(t, 1, &s), 2);
    assert_int_equal(s.seq[0], 2);
    assert_int_equal(s.seq[1], 3);
    assert_string_equal(s.body[1], "c");
    assert_int_equal(read_after(t, 3, &s), 0);
    tail_free(t);
}

static void
test_savepoints_aborts_and_breaks(void **state)
{
    struct log_tail *t = tail_new(1 << 20);
    struct seen s;
    size_t mark;
    (void)state;
    read_after(t, 0, &s); /* wanted */
    tail_end(t, 1, 10);   /* base 10 */
    add(t, 11, "a");
    mark = tail_mark(t);
    add(t, 12, "rolled back");
    tail_undo(t, mark);
    add(t, 12, "b");
    tail_end(t, 1, 12);
    assert_int_equal(read_after(t, 10, &s), 2);
    assert_string_equal(s.body[1], "b");
    /* an aborted transaction leaves nothing */
    add(t, 13, "x");
    tail_end(t, 0, 12);
    assert_int_equal(read_after(t, 12, &s), 0);
    /* a broken one: the tail starts again after it */
    add(t, 13, "c");
    tail_break(t);
    add(t, 14, "d");
    tail_end(t, 1, 14);
    assert_int_equal(read_after(t, 12, &s), -1);
    assert_int_equal(read_after(t, 14, &s), 0);
    add(t, 15, "e");
    tail_end(t, 1, 15);
    assert_int_equal(read_after(t, 14, &s), 1);
    assert_string_equal(s.body[0], "e");
    /* limits and a callback that stops */
    add(t, 16, "f");
    add(t, 17, "g");
    tail_end(t, 1, 17);
    memset(&s, 0, sizeof s);
    s.stop_at = 2;
    assert_int_equal(tail_read(t, 14, 100, 1 << 20, collect, &s), 2);
    memset(&s, 0, sizeof s);
    assert_int_equal(tail_read(t, 14, 1, 1 << 20, collect, &s), 1);
    assert_int_equal(s.seq[0], 15);
    tail_free(t);
}

/* A log replaced below a reader's position (a snapshot of another history at a lower seq): the
 * base alone would let the reader go on in the new history; the epoch refuses it. */
static void
test_epoch_refuses_a_replaced_log(void **state)
{
    struct log_tail *t = tail_new(1 << 20);
    struct seen s;
    uint64_t e;
    (void)state;
    read_after(t, 0, &s); /* wanted */
    tail_end(t, 1, 100);
    add(t, 101, "old");
    tail_end(t, 1, 101);
    e = tail_epoch(t);
    memset(&s, 0, sizeof s);
    assert_int_equal(tail_read_epoch(t, e, 100, 100, 1 << 20, collect, &s), 1);
    /* the log is replaced by another history at seq 50, which then grows past 101 */
    tail_break(t);
    tail_end(t, 1, 50);
    for (int64_t q = 51; q <= 103; q++)
        add(t, q, "new");
    tail_end(t, 1, 103);
    assert_true(tail_epoch(t) != e);
    memset(&s, 0, sizeof s);
    assert_int_equal(tail_read_epoch(t, e, 101, 100, 1 << 20, collect, &s), -1);
    assert_int_equal(s.n, 0);
    /* tail_read itself does not know: its readers (downstreams) learn of a new history from
     * the store, and an epoch read of the new one works */
    memset(&s, 0, sizeof s);
    assert_int_equal(tail_read(t, 101, 100, 1 << 20, collect, &s), 2);
    memset(&s, 0, sizeof s);
    assert_int_equal(tail_read_epoch(t, tail_epoch(t), 101, 100, 1 << 20, collect, &s), 2);
    assert_int_equal(tail_read_epoch(t, TAIL_ANY_EPOCH, 101, 100, 1 << 20, collect, &s), 2);
    tail_free(t);
}

static void
test_eviction_moves_the_base(void **state)
{
    struct log_tail *t = tail_new(2000); /* room for a few entries only */
    struct seen s;
    char body[200];
    (void)state;
    memset(body, 'z', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    read_after(t, 0, &s);
    tail_end(t, 1, 0);
    for (int64_t seq = 1; seq <= 40; seq++) {
        add(t, seq, body);
        tail_end(t, 1, seq);
    }
    assert_int_equal(read_after(t, 0, &s), -1);
    {
        int n = read_after(t, 39, &s);
        assert_int_equal(n, 1);
        assert_int_equal(s.seq[0], 40);
    }
    /* whatever it still holds runs without a gap up to 40 */
    for (int64_t after = 0; after < 40; after++) {
        int n = read_after(t, after, &s);
        if (n < 0) continue;
        assert_int_equal(n, 40 - after);
        for (int i = 0; i < n; i++) assert_int_equal(s.seq[i], after + 1 + i);
    }
    /* a transaction larger than the tail is not kept at all */
    for (int64_t seq = 41; seq <= 60; seq++) add(t, seq, body);
    tail_end(t, 1, 60);
    assert_int_equal(read_after(t, 40, &s), -1);
    assert_int_equal(read_after(t, 60, &s), 0);
    tail_free(t);
}

static int
read_open(struct log_tail *t, int64_t after, struct seen *s, uint64_t *gen, int64_t *unit_after)
{
    memset(s, 0, sizeof *s);
    return tail_read_open(t, after, 100, 1 << 20, collect, s, gen, unit_after);
}

/* A streamed unit: published entries are read by tail_read_open only, until the commit. */
static void
test_streamed_unit_commits(void **state)
{
    struct log_tail *t = tail_new(1 << 20);
    struct seen s;
    uint64_t gen = 0, g;
    int64_t after = -1;
    (void)state;
    assert_int_equal(read_after(t, 0, &s), -1); /* a reader: the tail keeps entries */
    tail_end(t, 1, 5);
    assert_int_equal(tail_stream_begin(t), 1);
    assert_int_equal(read_open(t, 5, &s, &gen, &after), 0);
    add(t, 6, "a");
    add(t, 7, "b");
    assert_true(tail_pending_bytes(t) > 0);
    assert_int_equal(read_open(t, 5, &s, &gen, &after), 0); /* pending: nobody sees them */
    tail_publish(t);
    assert_int_equal(tail_pending_bytes(t), 0);
    assert_int_equal(read_after(t, 5, &s), 0); /* plain readers: still nothing */
    assert_int_equal(read_open(t, 5, &s, &gen, &after), 2);
    assert_int_equal(gen, 1);
    assert_int_equal(after, 5);
    assert_string_equal(s.body[1], "b");
    g = 0;
    assert_int_equal(read_open(t, 4, &s, &g, &after), -1); /* before the unit: read committed */
    g = 7;
    assert_int_equal(read_open(t, 6, &s, &g, &after), -1); /* another unit than the one asked */
    g = 1;
    assert_int_equal(read_open(t, 6, &s, &g, &after), 1);
    assert_int_equal(tail_unit(t, 1), TAIL_UNIT_OPEN);
    add(t, 8, "c"); /* the last piece goes with the commit */
    tail_end(t, 1, 8);
    assert_int_equal(tail_unit(t, 1), TAIL_UNIT_COMMITTED);
    assert_int_equal(read_open(t, 7, &s, &gen, &after), -1); /* no unit open */
    assert_int_equal(read_after(t, 5, &s), 3);
    assert_int_equal(s.seq[2], 8);
    assert_int_equal(tail_unit(t, 2), TAIL_UNIT_UNKNOWN);
    tail_free(t);
}

/* A unit rolled back (its savepoint, or the whole transaction) is aborted; its seqs come again. */
static void
test_streamed_unit_aborts(void **state)
{
    struct log_tail *t = tail_new(1 << 20);
    struct seen s;
    uint64_t gen = 0;
    int64_t after = -1;
    size_t mark;
    (void)state;
    assert_int_equal(read_after(t, 0, &s), -1);
    tail_end(t, 1, 5);
    /* 1: rolled back to its savepoint, then an empty commit */
    assert_int_equal(tail_stream_begin(t), 1);
    mark = tail_mark(t);
    add(t, 6, "a");
    tail_publish(t);
    add(t, 7, "b");
    assert_int_equal(read_open(t, 5, &s, &gen, &after), 1);
    tail_undo(t, mark);
    assert_int_equal(tail_unit(t, 1), TAIL_UNIT_ABORTED);
    tail_end(t, 1, 5);
    assert_int_equal(read_after(t, 5, &s), 0);
    /* 2: its seqs again, committed */
    assert_int_equal(tail_stream_begin(t), 2);
    add(t, 6, "x");
    tail_publish(t);
    tail_end(t, 1, 6);
    assert_int_equal(tail_unit(t, 1), TAIL_UNIT_ABORTED);
    assert_int_equal(tail_unit(t, 2), TAIL_UNIT_COMMITTED);
    assert_int_equal(read_after(t, 5, &s), 1);
    assert_string_equal(s.body[0], "x");
    /* 3: the transaction rolled back (SQLITE_FULL): the tail starts again at the seq on disk */
    assert_int_equal(tail_stream_begin(t), 3);
    add(t, 7, "y");
    tail_publish(t);
    tail_break(t);
    tail_end(t, 0, 6);
    assert_int_equal(tail_unit(t, 3), TAIL_UNIT_ABORTED);
    assert_int_equal(read_after(t, 6, &s), 0);
    assert_int_equal(read_open(t, 6, &s, &gen, &after), -1);
    tail_free(t);
}

/* Uncommitted entries pushed out of the ring: a rollback cannot pop them, the tail restarts. */
static void
test_streamed_unit_evicted(void **state)
{
    struct log_tail *t = tail_new(600); /* a few entries (x TAIL_STREAM_FACTOR while streaming) */
    struct seen s;
    uint64_t gen = 0;
    int64_t after = -1;
    (void)state;
    assert_int_equal(read_after(t, 0, &s), -1);
    tail_end(t, 1, 0);
    assert_int_equal(tail_stream_begin(t), 1);
    for (int64_t i = 1; i <= 60; i++) {
        add(t, i, "0123456789");
        tail_publish(t);
    }
    assert_int_equal(read_open(t, 0, &s, &gen, &after), -1); /* entry 1 is gone */
    tail_undo(t, 0);
    assert_int_equal(tail_unit(t, 1), TAIL_UNIT_ABORTED);
    tail_end(t, 1, 0);
    assert_int_equal(read_after(t, 0, &s), 0); /* started again, empty, at 0 */
    tail_free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_before_a_reader),
        cmocka_unit_test(test_savepoints_aborts_and_breaks),
        cmocka_unit_test(test_eviction_moves_the_base),
        cmocka_unit_test(test_epoch_refuses_a_replaced_log),
        cmocka_unit_test(test_streamed_unit_commits),
        cmocka_unit_test(test_streamed_unit_aborts),
        cmocka_unit_test(test_streamed_unit_evicted),
    };
    return cmocka_run_group_tests_name("tail", tests, NULL, NULL);
}
