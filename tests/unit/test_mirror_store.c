/*
 * test_mirror_store.c - unit tests for the mirroring jobs' tables (src/core/store/mirror.c): a
 * duplicate job name and an unknown one are told apart, a job's removal takes its runs, errors,
 * checkpoints and indexes with it, a new run marks the job's interrupted one, checkpoints and
 * index rows read back as written, and the index pages in path order.
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

#include "common/err.h"
#include "common/util.h"
#include "core/store.h"

struct fx {
    char dir[64];
    struct store *st;
};

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    struct store_options opt = {0};
    struct ls_error err;
    snprintf(f->dir, sizeof f->dir, "/tmp/ls-mirror-unit.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    f->st = store_open(f->dir, &opt, &err);
    if (!f->st) return -1;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    store_free(f->st);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static int
count_job(void *arg, const char *name, const char *def, int paused)
{
    (void)name, (void)def, (void)paused;
    (*(int *)arg)++;
    return 0;
}

static void
test_jobs(void **state)
{
    struct fx *f = *state;
    struct ls_error err;
    int n = 0;
    assert_int_equal(0, store_mirror_job_add(f->st, "a", "{}", &err));
    assert_int_equal(LS_EEXISTS, store_mirror_job_add(f->st, "a", "{}", &err));
    assert_non_null(strstr(err.msg, "exists already"));
    assert_int_equal(LS_ENOTFOUND, store_mirror_job_del(f->st, "nope", &err));
    assert_int_equal(LS_ENOTFOUND, store_mirror_job_pause(f->st, "nope", 1, &err));
    assert_int_equal(0, store_mirror_job_pause(f->st, "a", 1, &err));
    assert_int_equal(1, store_mirror_jobs(f->st, count_job, &n));
    assert_int_equal(1, n);
}

struct runs_seen {
    int n;
    char state[4][16], note[4][32];
    int64_t items[4];
};

static int
see_run(void *arg, const struct ls_mirror_run *r)
{
    struct runs_seen *s = arg;
    if (s->n == 4) return 1;
    snprintf(s->state[s->n], 16, "%s", r->state);
    snprintf(s->note[s->n], 32, "%s", r->note ? r->note : "");
    s->items[s->n] = r->items;
    s->n++;
    return 0;
}

static int
see_error(void *arg, const char *target, const char *path, const char *reason)
{
    (void)target, (void)reason;
    snprintf(arg, 64, "%s", path);
    return 0;
}

static void
test_runs(void **state)
{
    struct fx *f = *state;
    struct ls_error err;
    struct ls_mirror_run r1 = {.job = "a", .state = "running", .started = 1};
    struct ls_mirror_run r2 = {.job = "a", .state = "running", .started = 2};
    struct runs_seen seen = {0};
    char path[64] = "";
    assert_int_equal(0, store_mirror_job_add(f->st, "a", "{}", &err));
    assert_int_equal(0, store_mirror_run_save(f->st, &r1, &err));
    assert_true(r1.id > 0);
    r1.items = 40; /* a package acknowledged, then the server was killed */
    assert_int_equal(0, store_mirror_run_save(f->st, &r1, &err));
    assert_int_equal(0, store_mirror_error_add(f->st, r1.id, "dir:/t", "/x/y", "boom", &err));
    assert_int_equal(0, store_mirror_run_save(f->st, &r2, &err)); /* the next start */
    assert_true(r2.id > r1.id);
    assert_int_equal(2, store_mirror_runs(f->st, "a", 10, see_run, &seen));
    assert_string_equal("running", seen.state[0]);
    assert_string_equal("failed", seen.state[1]);
    assert_string_equal("interrupted", seen.note[1]);
    assert_int_equal(40, seen.items[1]);
    assert_int_equal(1, store_mirror_errors(f->st, r1.id, 10, see_error, path));
    assert_string_equal("/x/y", path);
    /* a removed job leaves nothing behind */
    assert_int_equal(0, store_mirror_job_del(f->st, "a", &err));
    assert_int_equal(0, store_mirror_runs(f->st, "a", 10, see_run, &seen));
    assert_int_equal(0, store_mirror_errors(f->st, r1.id, 10, see_error, path));
}

static int
collect_path(void *arg, const char *path)
{
    strcat(arg, path);
    strcat(arg, ",");
    return 0;
}

struct rows_fx {
    struct ls_mirror_file *rows;
    int n;
};

static int
collect_row(void *arg, const struct ls_mirror_file *f)
{
    struct rows_fx *rf = arg;
    rf->rows[rf->n] = *f;
    rf->rows[rf->n].path = NULL; /* the callback's own: not kept */
    rf->n++;
    return 0;
}

static void
test_checkpoints_and_index(void **state)
{
    struct fx *f = *state;
    struct ls_error err;
    struct ls_mirror_checkpoint cp = {.seq = 7, .full_seq = 9}, got;
    struct ls_mirror_file fi = {.path = "/b", .size = 3, .mtime_ns = 5, .ino = 11, .mode = 0100644};
    struct ls_mirror_file back;
    char paths[256] = "";
    snprintf(cp.after, sizeof cp.after, "/m/n");
    assert_int_equal(0, store_mirror_job_add(f->st, "j", "{}", &err));
    assert_int_equal(0, store_mirror_checkpoint_get(f->st, "j", "dir:/t", &got));
    assert_int_equal(0, got.seq); /* none yet: zeros, and no log generation known */
    assert_int_equal(-1, got.gen);
    cp.gen = 4;
    assert_int_equal(0, store_mirror_checkpoint_set(f->st, "j", "dir:/t", &cp, &err));
    assert_int_equal(0, store_mirror_checkpoint_get(f->st, "j", "dir:/t", &got));
    assert_int_equal(7, got.seq);
    assert_int_equal(9, got.full_seq);
    assert_int_equal(4, got.gen);
    assert_string_equal("/m/n", got.after);
    cp.gen = -1; /* not known: the one recorded stays */
    assert_int_equal(0, store_mirror_checkpoint_set(f->st, "j", "dir:/t", &cp, &err));
    assert_int_equal(0, store_mirror_checkpoint_get(f->st, "j", "dir:/t", &got));
    assert_int_equal(4, got.gen);
    memset(fi.sha, 0xab, 32);
    assert_int_equal(0, store_mirror_index_set(f->st, "j", "dir:/t", &fi, &err));
    fi.path = "/a";
    assert_int_equal(0, store_mirror_index_set(f->st, "j", "dir:/t", &fi, &err));
    fi.path = "/c";
    assert_int_equal(0, store_mirror_index_set(f->st, "j", "dir:/other", &fi, &err));
    assert_int_equal(0, store_mirror_index_get(f->st, "j", "dir:/t", "/b", &back));
    assert_int_equal(3, back.size);
    assert_int_equal(11, back.ino);
    assert_int_equal(0xab, back.sha[31]);
    assert_int_equal(LS_ENOTFOUND, store_mirror_index_get(f->st, "j", "dir:/t", "/c", &back));
    assert_int_equal(2, store_mirror_index_page(f->st, "j", "dir:/t", "", 10, collect_path, paths));
    assert_string_equal("/a,/b,", paths); /* in path order, this target's only */
    paths[0] = '\0';
    assert_int_equal(1,
                     store_mirror_index_page(f->st, "j", "dir:/t", "/a", 10, collect_path, paths));
    assert_string_equal("/b,", paths);
    /* the rows, a page at a time, in path order */
    {
        struct ls_mirror_file rows[4];
        struct rows_fx rf = {rows, 0};
        assert_int_equal(1, store_mirror_index_rows(f->st, "j", "dir:/t", "", 1, collect_row, &rf));
        assert_int_equal(3, rows[0].size);
        assert_int_equal(11, rows[0].ino);
        assert_int_equal(0100644, rows[0].mode);
        assert_int_equal(1, store_mirror_index_rows(f->st, "j", "dir:/t", "/a", 5, collect_row, &rf));
        assert_int_equal(0, store_mirror_index_rows(f->st, "j", "dir:/t", "/b", 5, collect_row, &rf));
        assert_int_equal(2, rf.n);
        assert_int_equal(5, rows[1].mtime_ns);
    }
    assert_int_equal(0, store_mirror_index_del(f->st, "j", "dir:/t", "/a", &err));
    assert_int_equal(LS_ENOTFOUND, store_mirror_index_get(f->st, "j", "dir:/t", "/a", &back));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoints_and_index, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
