/*
 * test_writer.c - unit tests for the writer thread (src/node/writer.c) on a real store and a
 * real event loop: requests of one chain apply in order or not at all (a replica's batches:
 * when one fails, none after it may move the position past it), requests outside the chain
 * are not held back, and a cleared chain applies again. Storage errors (SQLITE_IOERR,
 * SQLITE_FULL) are injected through a VFS that wraps the default one: inside a request's
 * savepoint and at the commit, every result must say what is on disk, and the next writes
 * must go on with the next seqs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
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
#include <event2/thread.h>
#include <sqlite3.h>

#include "core/tail.h"
#include "node/server.h"

/* ---------------------------------------------------------------- a VFS that fails on demand */

/* Wraps the default VFS; while fail_writes (fail_syncs) is set, every xWrite (xSync) of every
 * file the store opens returns it: the database, its WAL, and the temporary files SQLite spills
 * statement and savepoint journals into. */
static sqlite3_vfs *real_vfs;
static sqlite3_vfs shim_vfs;
static atomic_int fail_writes, fail_syncs; /* 0, or the SQLite code to return */
static atomic_int failed_calls;            /* how many calls were failed */

struct shim_file {
    sqlite3_file base;
    sqlite3_file *real; /* right after this struct (szOsFile) */
};

#define REAL(f) (((struct shim_file *)(f))->real)
#define CALL(f, m, ...) REAL(f)->pMethods->m(REAL(f), ##__VA_ARGS__)

static int shim_close(sqlite3_file *f) { return CALL(f, xClose); }
static int shim_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o) { return CALL(f, xRead, b, n, o); }
static int
shim_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
    int code = atomic_load(&fail_writes);
    if (code) {
        atomic_fetch_add(&failed_calls, 1);
        return code;
    }
    return CALL(f, xWrite, b, n, o);
}
static int shim_truncate(sqlite3_file *f, sqlite3_int64 n) { return CALL(f, xTruncate, n); }
static int
shim_sync(sqlite3_file *f, int flags)
{
    int code = atomic_load(&fail_syncs);
    if (code) {
        atomic_fetch_add(&failed_calls, 1);
        return code;
    }
    return CALL(f, xSync, flags);
}
static int shim_file_size(sqlite3_file *f, sqlite3_int64 *n) { return CALL(f, xFileSize, n); }
static int shim_lock(sqlite3_file *f, int l) { return CALL(f, xLock, l); }
static int shim_unlock(sqlite3_file *f, int l) { return CALL(f, xUnlock, l); }
static int shim_reserved(sqlite3_file *f, int *out) { return CALL(f, xCheckReservedLock, out); }
static int shim_fcntl(sqlite3_file *f, int op, void *arg) { return CALL(f, xFileControl, op, arg); }
static int shim_sector(sqlite3_file *f) { return CALL(f, xSectorSize); }
static int shim_devchar(sqlite3_file *f) { return CALL(f, xDeviceCharacteristics); }
static int shim_shm_map(sqlite3_file *f, int pg, int sz, int ext, void volatile **p) { return CALL(f, xShmMap, pg, sz, ext, p); }
static int shim_shm_lock(sqlite3_file *f, int o, int n, int fl) { return CALL(f, xShmLock, o, n, fl); }
static void shim_shm_barrier(sqlite3_file *f) { CALL(f, xShmBarrier); }
static int shim_shm_unmap(sqlite3_file *f, int del) { return CALL(f, xShmUnmap, del); }
static int shim_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **p) { return CALL(f, xFetch, o, n, p); }
static int shim_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p) { return CALL(f, xUnfetch, o, p); }

static const sqlite3_io_methods shim_io = {
    3, shim_close, shim_read, shim_write, shim_truncate, shim_sync, shim_file_size, shim_lock,
    shim_unlock, shim_reserved, shim_fcntl, shim_sector, shim_devchar, shim_shm_map,
    shim_shm_lock, shim_shm_barrier, shim_shm_unmap, shim_fetch, shim_unfetch,
};

static int
shim_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    struct shim_file *sf = (struct shim_file *)f;
    int rc;
    (void)vfs;
    sf->real = (sqlite3_file *)(sf + 1);
    rc = real_vfs->xOpen(real_vfs, name, sf->real, flags, out_flags);
    f->pMethods = sf->real->pMethods ? &shim_io : NULL;
    return rc;
}

static void
shim_register(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    shim_vfs = *real_vfs;
    shim_vfs.pNext = NULL;
    shim_vfs.zName = "ls-test-faults";
    shim_vfs.szOsFile = (int)sizeof(struct shim_file) + real_vfs->szOsFile;
    shim_vfs.xOpen = shim_open;
    if (sqlite3_vfs_register(&shim_vfs, 1) != SQLITE_OK) abort(); /* the default from now on */
}

/* ---------------------------------------------------------------- fixture */

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

static int sync_full; /* the next setup's store fsyncs at every commit (a primary's) */

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    struct store_options opt = {.sync_full = sync_full}, ropt = {.readonly = 1};
    struct ls_error err;
    snprintf(f->dir, sizeof f->dir, "/tmp/ls-ut-writer-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    f->srv.base = event_base_new();
    f->srv.waiter_timer = evtimer_new(f->srv.base, nothing, NULL);
    f->srv.wstore = store_open(f->dir, &opt, &err);
    f->srv.reader = f->srv.wstore ? store_open(f->dir, &ropt, &err) : NULL;
    if (!f->srv.reader) fail_msg("store_open: %s", err.msg);
    f->srv.tail = tail_new(1 << 20); /* as in a server */
    store_set_tail(f->srv.wstore, f->srv.tail);
    f->srv.writer = writer_start(&f->srv, f->srv.wstore, &err);
    if (!f->srv.writer) fail_msg("writer_start: %s", err.msg);
    *state = f;
    return 0;
}

static atomic_int gate_entered, gate_open; /* gate(): holds the writer until opened */

static int
teardown(void **state)
{
    struct fx *f = *state;
    atomic_store(&gate_open, 1); /* a test that failed while holding the writer */
    writer_stop(f->srv.writer);
    store_free(f->srv.reader);
    store_free(f->srv.wstore);
    tail_free(f->srv.tail);
    event_free(f->srv.waiter_timer);
    event_base_free(f->srv.base);
    waiters_release(&f->srv.waiters);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* A finished request: its result is kept for the test to read. */
struct result {
    struct fx *f;
    int rc;
    int64_t seq; /* of its last op */
};

static void
on_done(struct wreq *r, void *arg)
{
    struct result *res = arg;
    res->rc = r->rc;
    res->seq = r->last.seq;
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

/* ---------------------------------------------------------------- held units */

static int session_a; /* names a replication session (wreq.session) */

/* The rest of session_a's unit will not come (repl_down.c abort_unit). */
static void
submit_abort(struct fx *f, struct result *res)
{
    struct wreq *r = calloc(1, sizeof *r);
    r->type = WREQ_CUSTOM;
    r->abort_unit = 1;
    r->session = &session_a;
    r->done = on_done;
    r->arg = res;
    res->f = f;
    writer_submit(f->srv.writer, r);
}

static struct wreq *
unit_put(const char *path, int hold, struct result *res, struct fx *f)
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
    r->max_body = UINT64_MAX;
    r->session = &session_a;
    r->hold = hold;
    r->done = on_done;
    r->arg = res;
    res->f = f;
    return r;
}

/* A unit's first part stays uncommitted; a request of another session waits for its end. */
static void
test_held_unit_commits_whole(void **state)
{
    struct fx *f = *state;
    struct result a = {0}, o = {0}, b = {0};
    writer_submit(f->srv.writer, unit_put("/u1", 1, &a, f));
    run_until_done(f, 1);
    assert_int_equal(a.rc, 0);
    assert_false(exists(f, "/u1")); /* applied, not committed: readers do not see it */
    assert_int_equal(f->srv.pos.seq, 0);
    submit_put(f, "/other", NULL, &o); /* waits: it must not commit half of the unit */
    usleep(50000);
    assert_false(exists(f, "/other"));
    writer_submit(f->srv.writer, unit_put("/u2", 0, &b, f));
    run_until_done(f, 3);
    assert_int_equal(b.rc, 0);
    assert_int_equal(o.rc, 0);
    assert_true(exists(f, "/u1"));
    assert_true(exists(f, "/u2"));
    assert_true(exists(f, "/other"));
    assert_int_equal(o.seq, 3); /* after the unit */
}

/* An abandoned unit (the link dropped) is rolled back; the position is what is on disk. */
static void
test_held_unit_abandoned(void **state)
{
    struct fx *f = *state;
    struct result a = {0}, x = {0}, o = {0};
    writer_submit(f->srv.writer, unit_put("/u1", 1, &a, f));
    run_until_done(f, 1);
    submit_put(f, "/other", NULL, &o);
    submit_abort(f, &x);
    run_until_done(f, 3);
    assert_int_equal(o.rc, 0);
    assert_false(exists(f, "/u1"));
    assert_true(exists(f, "/other"));
    assert_int_equal(o.seq, 1); /* the unit's seq is handed out again */
    assert_int_equal(f->srv.pos.seq, 1);
}

/* ---------------------------------------------------------------- storage errors */

#define NITEMS 40
#define BODY_BYTES 3000 /* one version per page: a purge of them all touches NITEMS pages */

static char big_body[BODY_BYTES];
static int fail_op = LS_OP_PURGE; /* what the failing request does to every /p/NN */
static int long_paths;            /* /p/NN/xxx... of about 1000 bytes: 3 items a page */

static void
item_path(int i, char *out, size_t n)
{
    int len = snprintf(out, n, "/p/%02d", i);
    if (long_paths) {
        out[len++] = '/';
        memset(out + len, 'x', 1000);
        out[len + 1000] = '\0';
    }
}
static atomic_int inject_code; /* the error the next update() injects */

static void
submit_fn(struct fx *f, int (*fn)(struct store *, struct wreq *), struct result *res)
{
    struct wreq *r = calloc(1, sizeof *r);
    r->type = WREQ_CUSTOM;
    r->fn = fn;
    r->done = on_done;
    r->arg = res;
    res->f = f;
    writer_submit(f->srv.writer, r);
}

/* Holds the writer until the test has queued the next group behind it. */
static int
gate(struct store *st, struct wreq *r)
{
    atomic_store(&gate_entered, 1);
    while (!atomic_load(&gate_open)) usleep(1000);
    return 0;
}

/* Puts every /p/NN, in one request. */
static int
put_all(struct store *st, struct wreq *r)
{
    for (int i = 0; i < NITEMS; i++) {
        struct ls_op op;
        char path[1100];
        int rc;
        item_path(i, path, sizeof path);
        op_init(&op);
        op.type = LS_OP_PUT;
        op.path = path;
        op.body = big_body;
        op.body_len = sizeof big_body;
        rc = store_apply(st, &op, &r->last, &r->err);
        if (rc) return rc;
        r->applied++;
    }
    return 0;
}

/*
 * Purges (or deletes) every /p/NN with writes failing. The savepoint's journal keeps the pages
 * the request changes (a purge: one a version; a delete of long paths: one for 3 items) and
 * outgrows memory (64 KiB): it spills to a file, whose writes fail. A purge's DELETE of many
 * rows has a statement journal, so SQLite may undo just that statement on SQLITE_FULL; a
 * delete's one-row UPDATE has none, and SQLite rolls back the whole transaction.
 */
static int
change_all_failing(struct store *st, struct wreq *r)
{
    int rc = 0;
    atomic_store(&fail_writes, atomic_load(&inject_code));
    for (int i = 0; i < NITEMS && rc == 0; i++) {
        struct ls_op op;
        char path[1100];
        item_path(i, path, sizeof path);
        op_init(&op);
        op.type = fail_op;
        op.path = path;
        if ((rc = store_apply(st, &op, &r->last, &r->err)) == 0) r->applied++;
    }
    atomic_store(&fail_writes, 0);
    return rc;
}

/* Arms a failing fsync for the commit that follows. */
static int
arm_sync_failure(struct store *st, struct wreq *r)
{
    atomic_store(&fail_syncs, SQLITE_IOERR);
    return 0;
}

/* Arms the injection for the commit that follows. */
static int
arm_commit_failure(struct store *st, struct wreq *r)
{
    atomic_store(&fail_writes, atomic_load(&inject_code));
    return 0;
}

static int64_t
version_of(struct store *st, const char *path)
{
    struct ls_item it;
    struct ls_error err;
    int64_t v;
    if (store_get(st, path, 0, 0, &it, &err)) return 0;
    v = it.deleted ? 0 : it.version;
    item_release(&it);
    return v;
}

/* seq and path of log entries, from the store or from the tail */
struct entries {
    int n;
    int64_t seq[256];
    char path[256][16];
};

static int
collect_entry(void *arg, const struct ls_entry *e)
{
    struct entries *x = arg;
    if (x->n == 256) return 1;
    x->seq[x->n] = e->seq;
    snprintf(x->path[x->n], sizeof x->path[0], "%s", e->path);
    x->n++;
    return 0;
}

static int
collect_change(void *arg, const struct ls_change *c)
{
    struct entries *x = arg;
    if (x->n == 256) return 1;
    x->seq[x->n] = c->seq;
    snprintf(x->path[x->n], sizeof x->path[0], "%s", c->path);
    x->n++;
    return 0;
}

/* Wherever the tail answers, it answers what the store holds. */
static void
assert_tail_agrees(struct fx *f, int64_t upto)
{
    for (int64_t after = 0; after <= upto; after++) {
        struct entries *t = calloc(1, sizeof *t), *s = calloc(1, sizeof *s);
        int n = tail_read(f->srv.tail, after, 1000, SIZE_MAX, collect_entry, t);
        if (n >= 0) {
            store_log_entries(f->srv.reader, after, 1000, SIZE_MAX, collect_entry, s);
            assert_int_equal(t->n, s->n);
            for (int i = 0; i < t->n; i++) {
                assert_int_equal(t->seq[i], s->seq[i]);
                assert_string_equal(t->path[i], s->path[i]);
            }
        }
        free(t);
        free(s);
    }
}

/* The next writes succeed, one seq after the other, from the seq on disk. */
static void
assert_writes_go_on(struct fx *f, int64_t seq)
{
    struct result r;
    int done = f->done;
    assert_int_equal(f->srv.pos.seq, seq);
    for (int i = 1; i <= 3; i++) {
        char path[16];
        snprintf(path, sizeof path, "/next/%d", i);
        submit_put(f, path, NULL, &r);
        run_until_done(f, ++done);
        assert_int_equal(r.rc, 0);
        assert_int_equal(r.seq, seq + i);
        assert_int_equal(f->srv.pos.seq, seq + i);
    }
}

/* Closed and opened again: the log is gapless from 1 to the recorded seq, and each item's
 * version is as expected (0: absent). */
static void
assert_store_consistent(struct fx *f, int64_t seq, const char *const *paths,
                        const int64_t *versions, int n)
{
    struct store_options opt = {0};
    struct ls_position pos;
    struct ls_error err;
    struct entries *e = calloc(1, sizeof *e);

    assert_tail_agrees(f, seq);
    writer_stop(f->srv.writer);
    f->srv.writer = NULL;
    store_free(f->srv.reader);
    store_free(f->srv.wstore);
    f->srv.reader = NULL;
    f->srv.wstore = store_open(f->dir, &opt, &err);
    if (!f->srv.wstore) fail_msg("store_open: %s", err.msg);
    assert_int_equal(store_position(f->srv.wstore, &pos), 0);
    assert_int_equal(pos.seq, seq);
    assert_int_equal(store_seq(f->srv.wstore), seq);
    assert_int_equal(store_changes(f->srv.wstore, 0, 1000, collect_change, e), seq);
    for (int i = 0; i < e->n; i++) assert_int_equal(e->seq[i], i + 1);
    for (int i = 0; i < n; i++) {
        if (version_of(f->srv.wstore, paths[i]) != versions[i])
            fail_msg("%s: version %lld, expected %lld", paths[i],
                     (long long)version_of(f->srv.wstore, paths[i]), (long long)versions[i]);
    }
    free(e);
}

/*
 * A group of three requests, the middle one hitting a storage error inside its savepoint. With
 * SQLITE_IOERR SQLite rolls the whole transaction back: every request of the group must fail
 * (none was committed), and the next writes take the next seqs on disk. Whatever SQLite does,
 * each result must say what is on disk.
 */
static void
error_inside_a_savepoint(void **state, int code, int op, int long_names)
{
    struct fx *f = *state;
    struct result setup_res, g, a, b, c;
    char first[1100], last[1100];
    const char *paths[] = {"/a", first, last, "/c", "/next/1", "/next/3"};
    int64_t versions[6], seq;

    fail_op = op;
    long_paths = long_names;
    item_path(0, first, sizeof first);
    item_path(NITEMS - 1, last, sizeof last);

    memset(big_body, 'b', sizeof big_body);
    tail_read(f->srv.tail, 0, 1, 1, collect_entry, NULL); /* a reader came: the tail keeps */
    submit_fn(f, put_all, &setup_res);
    run_until_done(f, 1);
    assert_int_equal(setup_res.rc, 0);
    assert_int_equal(f->srv.pos.seq, NITEMS);

    atomic_store(&gate_entered, 0);
    atomic_store(&gate_open, 0);
    submit_fn(f, gate, &g);
    while (!atomic_load(&gate_entered)) usleep(1000);
    submit_put(f, "/a", NULL, &a);
    atomic_store(&inject_code, code);
    atomic_store(&failed_calls, 0);
    submit_fn(f, change_all_failing, &b);
    submit_put(f, "/c", NULL, &c);
    atomic_store(&gate_open, 1);
    run_until_done(f, 5);
    assert_true(atomic_load(&failed_calls) > 0); /* the error was injected */
    assert_int_not_equal(b.rc, 0);

    /* results say what is on disk */
    assert_int_equal(a.rc == 0, version_of(f->srv.reader, "/a") == 1);
    assert_int_equal(version_of(f->srv.reader, first), 1);
    assert_int_equal(version_of(f->srv.reader, last), 1);
    assert_int_equal(c.rc == 0, version_of(f->srv.reader, "/c") == 1);
    if (code == SQLITE_IOERR || op == LS_OP_DELETE) { /* the whole transaction went */
        assert_int_not_equal(a.rc, 0);
        assert_int_not_equal(c.rc, 0);
    }
    seq = NITEMS + (a.rc == 0) + (c.rc == 0);
    assert_writes_go_on(f, seq);

    versions[0] = a.rc == 0;
    versions[1] = versions[2] = 1;
    versions[3] = c.rc == 0;
    versions[4] = versions[5] = 1;
    assert_store_consistent(f, seq + 3, paths, versions, 6);
}

static void
test_ioerr_inside_a_savepoint(void **state)
{
    error_inside_a_savepoint(state, SQLITE_IOERR, LS_OP_PURGE, 0);
}

static void
test_full_inside_a_savepoint(void **state) /* SQLite undoes the one statement */
{
    error_inside_a_savepoint(state, SQLITE_FULL, LS_OP_PURGE, 0);
}

static void
test_full_rolls_back_the_transaction(void **state)
{
    error_inside_a_savepoint(state, SQLITE_FULL, LS_OP_DELETE, 1);
}

static void
test_ioerr_in_a_one_row_update(void **state)
{
    error_inside_a_savepoint(state, SQLITE_IOERR, LS_OP_DELETE, 1);
}

/* The commit itself fails: every request of the group fails, the next group works. */
static void
error_at_commit(void **state, int code)
{
    struct fx *f = *state;
    struct result g, a, b, c;
    const char *paths[] = {"/a", "/b", "/next/1"};
    const int64_t versions[] = {1, 0, 1};

    tail_read(f->srv.tail, 0, 1, 1, collect_entry, NULL);
    submit_put(f, "/a", NULL, &a);
    run_until_done(f, 1);
    assert_int_equal(a.rc, 0);

    atomic_store(&gate_entered, 0);
    atomic_store(&gate_open, 0);
    submit_fn(f, gate, &g);
    while (!atomic_load(&gate_entered)) usleep(1000);
    submit_put(f, "/b", NULL, &b);
    atomic_store(&inject_code, code);
    atomic_store(&failed_calls, 0);
    submit_fn(f, arm_commit_failure, &c);
    atomic_store(&gate_open, 1);
    run_until_done(f, 4);
    atomic_store(&fail_writes, 0);
    assert_true(atomic_load(&failed_calls) > 0);
    assert_int_not_equal(b.rc, 0);
    assert_int_not_equal(c.rc, 0);
    assert_int_equal(version_of(f->srv.reader, "/b"), 0);
    assert_writes_go_on(f, 1);
    assert_store_consistent(f, 4, paths, versions, 3);
}


/*
 * A failed fsync at the commit (a primary's store syncs every commit): the group is reported
 * failed, so it must not come back either when the process dies now and the next start
 * recovers the WAL, where its frames may well be whole.
 */
static void
test_sync_failure_then_crash(void **state)
{
    struct fx *f = *state;
    struct result g, a, b, c;
    char cmd[512], copy[80];
    struct store_options opt = {0};
    struct store *st;
    struct ls_error err;

    submit_put(f, "/a", NULL, &a);
    run_until_done(f, 1);
    assert_int_equal(a.rc, 0);
    atomic_store(&gate_entered, 0);
    atomic_store(&gate_open, 0);
    submit_fn(f, gate, &g);
    while (!atomic_load(&gate_entered)) usleep(1000);
    submit_put(f, "/b", NULL, &b);
    atomic_store(&failed_calls, 0);
    submit_fn(f, arm_sync_failure, &c);
    atomic_store(&gate_open, 1);
    run_until_done(f, 4);
    atomic_store(&fail_syncs, 0);
    assert_true(atomic_load(&failed_calls) > 0);
    assert_int_not_equal(b.rc, 0);
    assert_int_equal(version_of(f->srv.reader, "/b"), 0);

    /* the files as a crash now would leave them (no -shm: the open recovers from the WAL) */
    snprintf(copy, sizeof copy, "%s/crash", f->dir);
    snprintf(cmd, sizeof cmd, "mkdir %s && cp %s/store.db %s/store.db-wal %s/", copy, f->dir,
             f->dir, copy);
    assert_int_equal(system(cmd), 0);
    st = store_open(copy, &opt, &err);
    if (!st) fail_msg("store_open: %s", err.msg);
    assert_int_equal(version_of(st, "/a"), 1);
    assert_int_equal(version_of(st, "/b"), 0);
    assert_int_equal(store_seq(st), 1);
    store_free(st);

    assert_writes_go_on(f, 1);
}

static int
setup_sync_full(void **state)
{
    int rc;
    sync_full = 1;
    rc = setup(state);
    sync_full = 0;
    return rc;
}

static void
test_ioerr_at_commit(void **state)
{
    error_at_commit(state, SQLITE_IOERR);
}

static void
test_full_at_commit(void **state)
{
    error_at_commit(state, SQLITE_FULL);
}

/*
 * The writer's queue is bounded: while it is held, writes past the request count (or the body
 * bytes) are refused by writer_admit (HTTP answers 503), and admitted again once done.
 */
static void
test_queue_is_bounded(void **state)
{
    struct fx *f = *state;
    struct result g = {0}, r[3];
    memset(r, 0, sizeof r);
    writer_set_limits(f->srv.writer, 3, 1000);
    assert_int_equal(writer_admit(f->srv.writer, 10), 0);
    atomic_store(&gate_entered, 0);
    atomic_store(&gate_open, 0);
    submit_fn(f, gate, &g);
    while (!atomic_load(&gate_entered)) usleep(1000);
    submit_put(f, "/q1", NULL, &r[0]);
    assert_int_equal(writer_admit(f->srv.writer, 10), 0);
    assert_int_equal(writer_admit(f->srv.writer, 1000), LS_EUNAVAIL); /* bytes: 1 + 1000 */
    submit_put(f, "/q2", NULL, &r[1]);
    assert_int_equal(writer_admit(f->srv.writer, 0), LS_EUNAVAIL); /* 3 in flight */
    atomic_store(&gate_open, 1);
    run_until_done(f, 3);
    assert_int_equal(r[0].rc, 0);
    assert_int_equal(r[1].rc, 0);
    assert_int_equal(writer_admit(f->srv.writer, 999), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chain_stops_after_a_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_unit_commits_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_unit_abandoned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ioerr_inside_a_savepoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_inside_a_savepoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_rolls_back_the_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ioerr_in_a_one_row_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ioerr_at_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_at_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_failure_then_crash, setup_sync_full, teardown),
    };
    shim_register();
    /* the writer thread wakes the loop with event_active, as in serve_main */
    evthread_use_pthreads();
    return cmocka_run_group_tests_name("writer", tests, NULL, NULL);
}
