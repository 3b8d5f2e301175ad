/*
 * test_writer.c - unit tests for the writer thread (src/node/writer.c) on a real store and a
 * real event loop: requests of one chain apply in order or not at all (a replica's batches:
 * when one fails, none after it may move the position past it), requests outside the chain
 * are not held back, and a cleared chain applies again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "node/server.h"

struct fx {
    char dir[64];
    struct server srv;
    int done;
};

static void
nothing(evutil_socket_t fd, short what, void *arg)
{
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    struct store_options opt = {0}, ropt = {.readonly = 1};
    struct ls_error err;
    snprintf(f->dir, sizeof f->dir, "/tmp/ls-ut-writer-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    f->srv.base = event_base_new();
    f->srv.waiters.next = f->srv.waiters.prev = &f->srv.waiters;
    f->srv.waiter_timer = evtimer_new(f->srv.base, nothing, NULL);
    f->srv.wstore = store_open(f->dir, &opt, &err);
    f->srv.reader = f->srv.wstore ? store_open(f->dir, &ropt, &err) : NULL;
    if (!f->srv.reader) fail_msg("store_open: %s", err.msg);
    f->srv.writer = writer_start(&f->srv, f->srv.wstore, &err);
    if (!f->srv.writer) fail_msg("writer_start: %s", err.msg);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    writer_stop(f->srv.writer);
    store_free(f->srv.reader);
    store_free(f->srv.wstore);
    event_free(f->srv.waiter_timer);
    event_base_free(f->srv.base);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* A finished request: its result is kept for the test to read. */
struct result {
    struct fx *f;
    int rc;
};

static void
on_done(struct wreq *r, void *arg)
{
    struct result *res = arg;
    res->rc = r->rc;
    res->f->done++;
    wreq_free(r);
}

static int
fail_here(struct store *st, struct wreq *r)
{
    return ls_error_set(&r->err, LS_EIO, "this request fails");
}

static void
submit_put(struct fx *f, const char *path, int *chain, struct result *res)
{
    struct wreq *r = calloc(1, sizeof *r);
    r->type = WREQ_OPS;
    r->ops = calloc(1, sizeof *r->ops);
    r->nops = 1;
    op_init(&r->ops[0]);
    r->ops[0].type = LS_OP_PUT;
    r->ops[0].path = strdup(path);
    r->ops[0].body = "x";
    r->ops[0].body_len = 1;
    r->chain_failed = chain;
    r->max_body = UINT64_MAX;
    r->done = on_done;
    r->arg = res;
    res->f = f;
    writer_submit(f->srv.writer, r);
}

static void
submit_failing(struct fx *f, int *chain, struct result *res)
{
    struct wreq *r = calloc(1, sizeof *r);
    r->type = WREQ_CUSTOM;
    r->fn = fail_here;
    r->chain_failed = chain;
    r->done = on_done;
    r->arg = res;
    res->f = f;
    writer_submit(f->srv.writer, r);
}

static void
run_until_done(struct fx *f, int n)
{
    for (int i = 0; i < 1000 && f->done < n; i++) {
        struct timeval tv = {0, 10000};
        event_base_loopexit(f->srv.base, &tv);
        event_base_dispatch(f->srv.base);
    }
    assert_int_equal(f->done, n);
}

static int
exists(struct fx *f, const char *path)
{
    struct ls_item it;
    struct ls_error err;
    if (store_get(f->srv.reader, path, 0, 0, &it, &err)) return 0;
    item_release(&it);
    return 1;
}

static void
test_chain_stops_after_a_failure(void **state)
{
    struct fx *f = *state;
    struct result a, b, c, d, e;
    int chain = 0;

    submit_put(f, "/first", &chain, &a);
    submit_failing(f, &chain, &b);
    submit_put(f, "/after", &chain, &c); /* would move the position past b's failure */
    submit_put(f, "/other", NULL, &d);   /* not of the chain: goes through */
    run_until_done(f, 4);
    assert_int_equal(a.rc, 0);
    assert_int_not_equal(b.rc, 0);
    assert_int_not_equal(c.rc, 0);
    assert_int_equal(d.rc, 0);
    assert_int_equal(chain, 1);
    assert_true(exists(f, "/first"));
    assert_false(exists(f, "/after"));
    assert_true(exists(f, "/other"));
    assert_int_equal(f->srv.pos.seq, 2);

    /* still failed: the owner has not cleared it */
    submit_put(f, "/after", &chain, &e);
    run_until_done(f, 5);
    assert_int_not_equal(e.rc, 0);
    assert_false(exists(f, "/after"));

    /* cleared (nothing in flight): the chain applies again */
    chain = 0;
    submit_put(f, "/after", &chain, &e);
    run_until_done(f, 6);
    assert_int_equal(e.rc, 0);
    assert_true(exists(f, "/after"));
    assert_int_equal(f->srv.pos.seq, 3);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chain_stops_after_a_failure, setup, teardown),
    };
    return cmocka_run_group_tests_name("writer", tests, NULL, NULL);
}
