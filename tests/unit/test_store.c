/*
 * test_store.c - unit tests for the SQLite store (src/core/store/): versions, the change log,
 * tombstones, purge, move, publish, pruning, blobs, savepoints, reopening, digests and listing.
 * Every test gets a fresh directory from mkdtemp and removes it afterwards.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "common/err.h"
#include "common/util.h"
#include "core/item.h"
#include "core/store.h"

/* ---------------------------------------------------------------- fixture */

/* Test bodies from pattern(); teardown frees them, so a failing assertion leaks nothing. */
static void *allocs[32];
static int nallocs;

struct fx {
    char dir[64];
    struct store *st;
    struct store_options opt;
};

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void
rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static struct store *
open_store(struct fx *f)
{
    struct ls_error err;
    struct store *st;
    ls_error_clear(&err);
    st = store_open(f->dir, &f->opt, &err);
    if (!st) fail_msg("store_open(%s): %d %s", f->dir, err.code, err.msg);
    return st;
}

static int
setup_opts(void **state, int64_t max_versions, uint64_t inline_max)
{
    struct fx *f = calloc(1, sizeof *f);
    if (!f) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/ls-ut-store-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    f->opt.max_versions = max_versions;
    f->opt.inline_max = inline_max;
    f->st = open_store(f);
    *state = f;
    return 0;
}

static int setup(void **state) { return setup_opts(state, 0, 0); }
static int setup_small_inline(void **state) { return setup_opts(state, 0, 1024); }
static int setup_prune3(void **state) { return setup_opts(state, 3, 1024); }

static int
teardown(void **state)
{
    struct fx *f = *state;
    while (nallocs > 0) free(allocs[--nallocs]);
    store_free(f->st);
    rm_rf(f->dir);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

static struct ls_op
mk(int type, const char *path)
{
    struct ls_op op;
    op_init(&op);
    op.type = type;
    op.path = (char *)path;
    return op;
}

static struct ls_op
mkput(const char *path, const void *body, size_t len)
{
    struct ls_op op = mk(LS_OP_PUT, path);
    op.body = body;
    op.body_len = len;
    return op;
}

/* Applies one op in its own group and savepoint, as the writer does; rolls back on failure. */
static int
apply1(struct store *st, const struct ls_op *op, struct ls_op_result *res, struct ls_error *err)
{
    struct ls_error e2;
    int rc;
    assert_int_equal(store_begin(st, &e2), 0);
    assert_int_equal(store_savepoint(st), 0);
    rc = store_apply(st, op, res, err);
    if (rc) store_savepoint_rollback(st);
    else store_savepoint_release(st);
    if (store_commit(st, &e2)) fail_msg("commit: %s", e2.msg);
    return rc;
}

/* Applies and requires success; returns the new version. */
static int64_t
ok_(struct store *st, const struct ls_op *op, int64_t *seq, const char *file, int line)
{
    struct ls_op_result res;
    struct ls_error err;
    int rc;
    ls_error_clear(&err);
    rc = apply1(st, op, &res, &err);
    if (rc) fail_msg("%s:%d: %s %s failed: %d %s", file, line, op_name(op->type), op->path, rc, err.msg);
    if (seq) *seq = res.seq;
    return res.version;
}
#define OK(st, op) ok_((st), (op), NULL, __FILE__, __LINE__)

static int64_t
put_(struct store *st, const char *path, const char *body, const char *file, int line)
{
    struct ls_op op = mkput(path, body, strlen(body));
    return ok_(st, &op, NULL, file, line);
}
#define PUT(st, path, body) put_((st), (path), (body), __FILE__, __LINE__)

static void
simple_(struct store *st, int type, const char *path, const char *file, int line)
{
    struct ls_op op = mk(type, path);
    ok_(st, &op, NULL, file, line);
}
#define DO(st, type, path) simple_((st), (type), (path), __FILE__, __LINE__)

/* Applies and requires the error `want`. */
static void
fails_(struct store *st, const struct ls_op *op, int want, const char *file, int line)
{
    struct ls_error err;
    int rc;
    ls_error_clear(&err);
    rc = apply1(st, op, NULL, &err);
    if (rc != want)
        fail_msg("%s:%d: %s %s returned %d (%s), want %d", file, line, op_name(op->type), op->path,
                 rc, err.msg, want);
    assert_int_equal(err.code, want);
    assert_true(err.msg[0] != '\0');
}
#define FAILS(st, op, want) fails_((st), (op), (want), __FILE__, __LINE__)

static int
get(struct store *st, const char *path, int64_t version, struct ls_item *it)
{
    struct ls_error err;
    ls_error_clear(&err);
    return store_get(st, path, version, 1, it, &err);
}

static struct ls_item
must_get_(struct store *st, const char *path, int64_t version, const char *file, int line)
{
    struct ls_item it;
    struct ls_error err;
    int rc;
    ls_error_clear(&err);
    rc = store_get(st, path, version, 1, &it, &err);
    if (rc) fail_msg("%s:%d: get %s v%lld: %d %s", file, line, path, (long long)version, rc, err.msg);
    return it;
}
#define GET(st, path, version) must_get_((st), (path), (version), __FILE__, __LINE__)

static void
expect_missing_(struct store *st, const char *path, int64_t version, const char *file, int line)
{
    struct ls_item it;
    int rc = get(st, path, version, &it);
    if (rc != LS_ENOTFOUND) {
        if (rc == 0) item_release(&it);
        fail_msg("%s:%d: get %s v%lld returned %d, want LS_ENOTFOUND", file, line, path,
                 (long long)version, rc);
    }
}
#define MISSING(st, path, version) expect_missing_((st), (path), (version), __FILE__, __LINE__)

/* Collects versions from store_history, newest first. */
struct vlist {
    int n;
    int64_t v[64];
    char kind[64][16];
};

static int
vlist_cb(void *arg, const struct ls_item *it)
{
    struct vlist *l = arg;
    if (l->n < 64) {
        snprintf(l->kind[l->n], sizeof l->kind[0], "%s", it->kind);
        l->v[l->n++] = it->version;
    }
    return 0;
}

static int
history(struct store *st, const char *path, struct vlist *l)
{
    struct ls_error err;
    memset(l, 0, sizeof *l);
    return store_history(st, path, vlist_cb, l, &err);
}

/* Collects paths from store_list. */
struct plist {
    int n;
    char path[64][64];
    int deleted[64];
};

static int
plist_cb(void *arg, const struct ls_item *it)
{
    struct plist *l = arg;
    if (l->n < 64) {
        snprintf(l->path[l->n], sizeof l->path[0], "%s", it->path);
        l->deleted[l->n++] = it->deleted;
    }
    return 0;
}

static int
list(struct store *st, const char *prefix, const char *after, int limit, int include_deleted,
     struct plist *l)
{
    struct ls_error err;
    memset(l, 0, sizeof *l);
    return store_list(st, prefix, after, limit, include_deleted, plist_cb, l, &err);
}

/* Joins listed paths with spaces, for one readable comparison. */
static const char *
joined(const struct plist *l)
{
    static char out[4096];
    size_t k = 0;
    out[0] = '\0';
    for (int i = 0; i < l->n; i++)
        k += (size_t)snprintf(out + k, sizeof out - k, "%s%s", i ? " " : "", l->path[i]);
    return out;
}

/* Collects the change log. */
struct clist {
    int n;
    int64_t seq[256];
    int op[256];
    int64_t version[256];
    int published[256];
    char path[256][32];
    char to[256][32];
};

static struct clist clbuf; /* static: large, and nothing to free when an assertion fails */

static int
clist_cb(void *arg, const struct ls_change *c)
{
    struct clist *l = arg;
    if (l->n < 256) {
        l->seq[l->n] = c->seq;
        l->op[l->n] = c->op;
        l->version[l->n] = c->version;
        l->published[l->n] = c->published;
        snprintf(l->path[l->n], sizeof l->path[0], "%s", c->path);
        snprintf(l->to[l->n], sizeof l->to[0], "%s", c->to ? c->to : "");
        l->n++;
    }
    return 0;
}

static int
changes(struct store *st, int64_t since, int limit, struct clist *l)
{
    memset(l, 0, sizeof *l);
    return store_changes(st, since, limit, clist_cb, l);
}

/* The log holds exactly seq 1..n, in order. */
static void
expect_gapless(struct store *st, int64_t n)
{
    struct clist *l = &clbuf;
    struct ls_position pos;
    int got = changes(st, 0, 1000, l);
    if (got != n) fail_msg("log has %d entries, want %lld", got, (long long)n);
    for (int i = 0; i < l->n; i++)
        if (l->seq[i] != i + 1) fail_msg("log entry %d has seq %lld", i, (long long)l->seq[i]);
    assert_int_equal(store_position(st, &pos), 0);
    assert_true(pos.seq == n);
    if (n > 0) assert_true(store_log_first_seq(st) == 1);
}

static int
count_files_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)ftw;
    return flag == FTW_F ? (strstr(path, "/blobs/tmp/") ? 0 : 1) : 0;
}

/* Regular files under DIR/blobs, not counting blobs/tmp. nftw stops at a nonzero return, so
 * count one at a time through a static. */
static int nfiles;
static int
count_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    nfiles += count_files_cb(path, sb, flag, ftw);
    return 0;
}

static int
blob_files(struct store *st)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/blobs", store_dir(st));
    nfiles = 0;
    nftw(dir, count_cb, 16, FTW_PHYS);
    return nfiles;
}

static int
tmp_files(struct store *st)
{
    char dir[4200];
    int n = 0;
    DIR *d;
    struct dirent *e;
    snprintf(dir, sizeof dir, "%s/blobs/tmp", store_dir(st));
    d = opendir(dir);
    if (!d) return -1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static int
blob_exists(struct store *st, const unsigned char sha[32])
{
    char path[4300];
    store_blob_path(st, sha, path, sizeof path);
    return access(path, F_OK) == 0;
}

static void
check_blob_content(struct store *st, const unsigned char sha[32], const void *want, size_t n)
{
    char path[4300];
    FILE *fp;
    char *got = malloc(n + 1);
    size_t r;
    store_blob_path(st, sha, path, sizeof path);
    fp = fopen(path, "rb");
    assert_non_null(fp);
    r = fread(got, 1, n + 1, fp);
    fclose(fp);
    assert_int_equal(r, n);
    assert_memory_equal(got, want, n);
    free(got);
}

static char *
pattern(size_t n, unsigned seed)
{
    char *p = malloc(n);
    assert_non_null(p);
    assert_true(nallocs < 32);
    allocs[nallocs++] = p;
    for (size_t i = 0; i < n; i++) p[i] = (char)((i * 31 + seed * 7 + (i >> 8)) & 0xff);
    return p;
}

/* ---------------------------------------------------------------- put and get */

static void
check_round_trip(struct store *st, const char *path, const void *body, size_t len)
{
    struct ls_op op = mkput(path, body, len);
    struct ls_item it;
    unsigned char sha[32];
    int64_t v = OK(st, &op);
    assert_int_equal(v, 1);
    it = GET(st, path, 0);
    assert_string_equal(it.path, path);
    assert_int_equal(it.version, 1);
    assert_int_equal(it.latest_version, 1);
    assert_int_equal(it.published_version, 0);
    assert_int_equal(it.status, LS_STATUS_DRAFT);
    assert_int_equal(it.deleted, 0);
    assert_string_equal(it.kind, "document");
    assert_string_equal(it.meta, "{}");
    assert_int_equal(it.size, len);
    assert_int_equal(it.in_blob, 0);
    assert_true(it.mtime > 0);
    ls_sha256(body, len, sha);
    assert_memory_equal(it.sha, sha, 32);
    assert_non_null(it.body);
    if (len) assert_memory_equal(it.body, body, len);
    item_release(&it);

    /* Without want_body, no body is loaded. */
    {
        struct ls_error err;
        assert_int_equal(store_get(st, path, 0, 0, &it, &err), 0);
        assert_null(it.body);
        assert_int_equal(it.size, len);
        item_release(&it);
    }
}

static void
test_put_get_round_trip(void **state)
{
    struct fx *f = *state;
    static const char bin[] = "\0\x01\xff\0binary\0\0";
    check_round_trip(f->st, "/empty", "", 0);
    check_round_trip(f->st, "/text", "hello, world\n", 13);
    check_round_trip(f->st, "/bin", bin, sizeof bin); /* trailing NUL included */
    check_round_trip(f->st, "/utf/h\xc3\xa9", "\xc3\xa9t\xc3\xa9", 5);
    MISSING(f->st, "/nothing", 0);
    MISSING(f->st, "/text", 2);
    assert_int_equal(blob_files(f->st), 0);
}

static void
test_put_with_kind_meta(void **state)
{
    struct fx *f = *state;
    struct ls_op op = mkput("/k", "x", 1);
    struct ls_item it;
    op.kind = "note";
    op.meta = "{\"a\":1}";
    OK(f->st, &op);
    it = GET(f->st, "/k", 0);
    assert_string_equal(it.kind, "note");
    assert_string_equal(it.meta, "{\"a\":1}");
    item_release(&it);
}

static void
test_blob_storage(void **state)
{
    struct fx *f = *state; /* inline_max = 1024 */
    size_t n = 5000;
    char *big = pattern(n, 1), *edge = pattern(1024, 2);
    struct ls_op op = mkput("/big", big, n);
    struct ls_item it;
    unsigned char sha[32];

    OK(f->st, &op);
    it = GET(f->st, "/big", 0);
    assert_int_equal(it.in_blob, 1);
    assert_null(it.body); /* bodies in blobs are not loaded by store_get */
    assert_int_equal(it.size, n);
    ls_sha256(big, n, sha);
    assert_memory_equal(it.sha, sha, 32);
    item_release(&it);
    assert_true(blob_exists(f->st, sha));
    check_blob_content(f->st, sha, big, n);
    assert_int_equal(blob_files(f->st), 1);
    assert_int_equal(tmp_files(f->st), 0);

    /* Blob path layout: DIR/blobs/<2 hex>/<62 hex>. */
    {
        char path[4300], hex[65], want[4300];
        store_blob_path(f->st, sha, path, sizeof path);
        ls_hex_encode(sha, 32, hex);
        snprintf(want, sizeof want, "%s/blobs/%.2s/%s", f->dir, hex, hex + 2);
        assert_string_equal(path, want);
    }

    /* Exactly inline_max stays inline. */
    op = mkput("/edge", edge, 1024);
    OK(f->st, &op);
    it = GET(f->st, "/edge", 0);
    assert_int_equal(it.in_blob, 0);
    assert_non_null(it.body);
    assert_memory_equal(it.body, edge, 1024);
    item_release(&it);
    assert_int_equal(blob_files(f->st), 1);

    /* The same big body elsewhere, and again as a new version, shares the one file. */
    op = mkput("/big2", big, n);
    OK(f->st, &op);
    op = mkput("/dir/big3", big, n);
    OK(f->st, &op);
    op = mkput("/big", big, n);
    assert_int_equal(OK(f->st, &op), 2);
    assert_int_equal(blob_files(f->st), 1);
    it = GET(f->st, "/big2", 0);
    assert_int_equal(it.in_blob, 1);
    assert_memory_equal(it.sha, sha, 32);
    item_release(&it);

    /* A different big body gets its own. */
    big[0] ^= 1;
    op = mkput("/big4", big, n);
    OK(f->st, &op);
    assert_int_equal(blob_files(f->st), 2);
    assert_int_equal(tmp_files(f->st), 0);
}

/* ---------------------------------------------------------------- versions */

static void
test_version_numbering(void **state)
{
    struct fx *f = *state;
    struct ls_item it;
    struct vlist h;
    int64_t seq;
    struct ls_op op = mkput("/v", "one", 3);

    assert_int_equal(ok_(f->st, &op, &seq, __FILE__, __LINE__), 1);
    assert_int_equal(seq, 1);
    assert_int_equal(PUT(f->st, "/v", "two"), 2);
    assert_int_equal(PUT(f->st, "/other", "x"), 1);
    op = mkput("/v", "three", 5);
    assert_int_equal(ok_(f->st, &op, &seq, __FILE__, __LINE__), 3);
    assert_int_equal(seq, 4);

    it = GET(f->st, "/v", 0);
    assert_int_equal(it.version, 3);
    assert_int_equal(it.latest_version, 3);
    assert_int_equal(it.seq, 4);
    assert_int_equal(it.vseq, 4);
    assert_memory_equal(it.body, "three", 5);
    item_release(&it);

    it = GET(f->st, "/v", 2);
    assert_int_equal(it.version, 2);
    assert_int_equal(it.latest_version, 3);
    assert_int_equal(it.vseq, 2);
    assert_int_equal(it.size, 3);
    assert_memory_equal(it.body, "two", 3);
    item_release(&it);

    it = GET(f->st, "/v", 1);
    assert_memory_equal(it.body, "one", 3);
    item_release(&it);
    MISSING(f->st, "/v", 4);

    assert_int_equal(history(f->st, "/v", &h), 0);
    assert_int_equal(h.n, 3);
    assert_int_equal(h.v[0], 3);
    assert_int_equal(h.v[1], 2);
    assert_int_equal(h.v[2], 1);
    assert_int_equal(history(f->st, "/nope", &h), LS_ENOTFOUND);
}

static void
test_kind_meta_inherited(void **state)
{
    struct fx *f = *state;
    struct ls_op op = mkput("/km", "1", 1);
    struct ls_item it;

    op.kind = "note";
    op.meta = "{\"a\":1}";
    OK(f->st, &op);

    op = mkput("/km", "2", 1); /* neither given: both kept */
    OK(f->st, &op);
    it = GET(f->st, "/km", 0);
    assert_int_equal(it.version, 2);
    assert_string_equal(it.kind, "note");
    assert_string_equal(it.meta, "{\"a\":1}");
    item_release(&it);

    op = mkput("/km", "3", 1); /* kind only: meta kept */
    op.kind = "memo";
    OK(f->st, &op);
    it = GET(f->st, "/km", 0);
    assert_string_equal(it.kind, "memo");
    assert_string_equal(it.meta, "{\"a\":1}");
    item_release(&it);

    op = mkput("/km", "4", 1); /* meta only: kind kept */
    op.meta = "{\"b\":2}";
    OK(f->st, &op);
    it = GET(f->st, "/km", 0);
    assert_string_equal(it.kind, "memo");
    assert_string_equal(it.meta, "{\"b\":2}");
    item_release(&it);

    /* Older versions keep their own. */
    it = GET(f->st, "/km", 1);
    assert_string_equal(it.kind, "note");
    assert_string_equal(it.meta, "{\"a\":1}");
    item_release(&it);

    /* After a purge the path starts afresh with the defaults. */
    DO(f->st, LS_OP_PURGE, "/km");
    assert_int_equal(PUT(f->st, "/km", "new"), 1);
    it = GET(f->st, "/km", 0);
    assert_string_equal(it.kind, "document");
    assert_string_equal(it.meta, "{}");
    item_release(&it);
}

/* ---------------------------------------------------------------- publish */

static void
test_publish_unpublish(void **state)
{
    struct fx *f = *state;
    struct ls_item it;
    struct ls_op op;
    struct clist *l = &clbuf;

    PUT(f->st, "/p", "v1");
    it = GET(f->st, "/p", 0);
    assert_int_equal(it.status, LS_STATUS_DRAFT);
    assert_int_equal(it.published_version, 0);
    item_release(&it);

    op = mk(LS_OP_PUBLISH, "/p"); /* version 0: the latest */
    assert_int_equal(OK(f->st, &op), 1);
    it = GET(f->st, "/p", 0);
    assert_int_equal(it.status, LS_STATUS_PUBLISHED);
    assert_int_equal(it.published_version, 1);
    item_release(&it);

    PUT(f->st, "/p", "v2");
    it = GET(f->st, "/p", 0);
    assert_int_equal(it.version, 2);
    assert_int_equal(it.status, LS_STATUS_CHANGED);
    assert_int_equal(it.published_version, 1); /* a draft put keeps what is published */
    item_release(&it);

    op = mk(LS_OP_PUBLISH, "/p");
    op.version = 2;
    assert_int_equal(OK(f->st, &op), 2);
    it = GET(f->st, "/p", 0);
    assert_int_equal(it.status, LS_STATUS_PUBLISHED);
    assert_int_equal(it.published_version, 2);
    item_release(&it);

    /* Publishing an older version: the item is "changed". */
    op = mk(LS_OP_PUBLISH, "/p");
    op.version = 1;
    assert_int_equal(OK(f->st, &op), 1);
    it = GET(f->st, "/p", 0);
    assert_int_equal(it.status, LS_STATUS_CHANGED);
    assert_int_equal(it.published_version, 1);
    item_release(&it);

    op = mk(LS_OP_UNPUBLISH, "/p");
    assert_int_equal(OK(f->st, &op), 1); /* reports the version that was published */
    it = GET(f->st, "/p", 0);
    assert_int_equal(it.status, LS_STATUS_DRAFT);
    assert_int_equal(it.published_version, 0);
    item_release(&it);
    FAILS(f->st, &op, LS_ECONFLICT); /* nothing published */

    /* A put that publishes. */
    op = mkput("/p", "v3", 2);
    op.publish = 1;
    assert_int_equal(OK(f->st, &op), 3);
    it = GET(f->st, "/p", 0);
    assert_int_equal(it.status, LS_STATUS_PUBLISHED);
    assert_int_equal(it.published_version, 3);
    item_release(&it);

    /* Missing versions and items. */
    op = mk(LS_OP_PUBLISH, "/p");
    op.version = 4;
    FAILS(f->st, &op, LS_ENOTFOUND);
    op.version = 99;
    FAILS(f->st, &op, LS_ENOTFOUND);
    op = mk(LS_OP_PUBLISH, "/nope");
    FAILS(f->st, &op, LS_ENOTFOUND);
    op = mk(LS_OP_UNPUBLISH, "/nope");
    FAILS(f->st, &op, LS_ENOTFOUND);
    it = GET(f->st, "/p", 0);
    assert_int_equal(it.published_version, 3); /* the failures changed nothing */
    item_release(&it);

    /* The log: put, publish, put, publish 2, publish 1, unpublish, put(published). */
    assert_int_equal(changes(f->st, 0, 100, l), 7);
    {
        static const int ops[] = {LS_OP_PUT,     LS_OP_PUBLISH,   LS_OP_PUT, LS_OP_PUBLISH,
                                  LS_OP_PUBLISH, LS_OP_UNPUBLISH, LS_OP_PUT};
        static const int64_t vers[] = {1, 1, 2, 2, 1, 1, 3};
        for (int i = 0; i < 7; i++) {
            assert_int_equal(l->op[i], ops[i]);
            assert_int_equal(l->version[i], vers[i]);
            assert_string_equal(l->path[i], "/p");
        }
        assert_int_equal(l->published[0], 0);
        assert_int_equal(l->published[6], 1);
    }
    expect_gapless(f->st, 7);
}

/* ---------------------------------------------------------------- tombstones */

static void
test_tombstone(void **state)
{
    struct fx *f = *state;
    struct ls_item it;
    struct vlist h;
    struct plist pl;
    struct ls_op op;

    PUT(f->st, "/t", "one");
    op = mkput("/t", "two", 3);
    op.publish = 1;
    OK(f->st, &op);

    op = mk(LS_OP_DELETE, "/t");
    assert_int_equal(OK(f->st, &op), 2);
    MISSING(f->st, "/t", 0);
    FAILS(f->st, &op, LS_ENOTFOUND); /* deleting a tombstone */
    op = mk(LS_OP_PUBLISH, "/t");
    FAILS(f->st, &op, LS_ENOTFOUND);
    op = mk(LS_OP_UNPUBLISH, "/t");
    FAILS(f->st, &op, LS_ENOTFOUND);

    /* The history is still there. */
    assert_int_equal(history(f->st, "/t", &h), 0);
    assert_int_equal(h.n, 2);
    it = GET(f->st, "/t", 1);
    assert_int_equal(it.deleted, 1);
    assert_memory_equal(it.body, "one", 3);
    item_release(&it);

    /* Listed only when asked for. */
    assert_int_equal(list(f->st, "", NULL, 100, 0, &pl), 0);
    assert_int_equal(list(f->st, "", NULL, 100, 1, &pl), 1);
    assert_string_equal(pl.path[0], "/t");
    assert_int_equal(pl.deleted[0], 1);

    /* A put revives it with the next version, unpublished. */
    assert_int_equal(PUT(f->st, "/t", "three"), 3);
    it = GET(f->st, "/t", 0);
    assert_int_equal(it.deleted, 0);
    assert_int_equal(it.version, 3);
    assert_int_equal(it.published_version, 0);
    assert_int_equal(it.status, LS_STATUS_DRAFT);
    assert_memory_equal(it.body, "three", 5);
    item_release(&it);
    assert_int_equal(history(f->st, "/t", &h), 0);
    assert_int_equal(h.n, 3);
    assert_int_equal(list(f->st, "", NULL, 100, 0, &pl), 1);

    /* A put with if_version on a tombstone: the tombstone counts as version 0. */
    DO(f->st, LS_OP_DELETE, "/t");
    op = mkput("/t", "x", 1);
    op.if_version = 3;
    FAILS(f->st, &op, LS_ECONFLICT);
    expect_gapless(f->st, 5);
}

/* ---------------------------------------------------------------- move */

static void
test_move(void **state)
{
    struct fx *f = *state;
    struct ls_item it;
    struct vlist h;
    struct ls_op op;
    struct clist *l = &clbuf;

    PUT(f->st, "/a", "a1");
    op = mkput("/a", "a2", 2);
    op.kind = "note";
    op.publish = 1;
    OK(f->st, &op);

    op = mk(LS_OP_MOVE, "/a");
    op.to = "/b/c";
    assert_int_equal(OK(f->st, &op), 2);
    MISSING(f->st, "/a", 0);
    assert_int_equal(history(f->st, "/a", &h), LS_ENOTFOUND);
    it = GET(f->st, "/b/c", 0);
    assert_int_equal(it.version, 2);
    assert_int_equal(it.published_version, 2);
    assert_string_equal(it.kind, "note");
    assert_memory_equal(it.body, "a2", 2);
    item_release(&it);
    assert_int_equal(history(f->st, "/b/c", &h), 0); /* the history follows */
    assert_int_equal(h.n, 2);
    it = GET(f->st, "/b/c", 1);
    assert_memory_equal(it.body, "a1", 2);
    item_release(&it);

    /* The log names both ends. */
    assert_int_equal(changes(f->st, 2, 10, l), 1);
    assert_int_equal(l->op[0], LS_OP_MOVE);
    assert_string_equal(l->path[0], "/a");
    assert_string_equal(l->to[0], "/b/c");
    assert_int_equal(l->version[0], 2);

    /* The old path is free for a new item. */
    assert_int_equal(PUT(f->st, "/a", "fresh"), 1);

    /* Onto a live item: refused, nothing changes. */
    op = mk(LS_OP_MOVE, "/a");
    op.to = "/b/c";
    FAILS(f->st, &op, LS_EEXISTS);
    it = GET(f->st, "/a", 0);
    assert_memory_equal(it.body, "fresh", 5);
    item_release(&it);
    it = GET(f->st, "/b/c", 0);
    assert_memory_equal(it.body, "a2", 2);
    item_release(&it);

    /* Onto itself: refused. */
    op.to = "/a";
    FAILS(f->st, &op, LS_EINVAL);

    /* Missing or deleted source. */
    op = mk(LS_OP_MOVE, "/nope");
    op.to = "/x";
    FAILS(f->st, &op, LS_ENOTFOUND);
    PUT(f->st, "/gone", "g");
    DO(f->st, LS_OP_DELETE, "/gone");
    op = mk(LS_OP_MOVE, "/gone");
    op.to = "/x";
    FAILS(f->st, &op, LS_ENOTFOUND);
    MISSING(f->st, "/x", 0);

    /* Onto a tombstone: the tombstone and its history are replaced. */
    PUT(f->st, "/tomb", "t1");
    PUT(f->st, "/tomb", "t2");
    PUT(f->st, "/tomb", "t3");
    DO(f->st, LS_OP_DELETE, "/tomb");
    op = mk(LS_OP_MOVE, "/a");
    op.to = "/tomb";
    assert_int_equal(OK(f->st, &op), 1);
    MISSING(f->st, "/a", 0);
    it = GET(f->st, "/tomb", 0);
    assert_int_equal(it.version, 1);
    assert_int_equal(it.deleted, 0);
    assert_memory_equal(it.body, "fresh", 5);
    item_release(&it);
    assert_int_equal(history(f->st, "/tomb", &h), 0);
    assert_int_equal(h.n, 1);
    MISSING(f->st, "/tomb", 3);

    /* Every successful op logged once: 2 puts, move, put, put, delete, 3 puts, delete, move. */
    expect_gapless(f->st, 11);
}

/* ---------------------------------------------------------------- purge */

static void
test_purge(void **state)
{
    struct fx *f = *state;
    struct vlist h;
    struct plist pl;
    struct ls_op op;

    PUT(f->st, "/p", "1");
    PUT(f->st, "/p", "2");
    op = mk(LS_OP_PURGE, "/p");
    assert_int_equal(OK(f->st, &op), 2);
    MISSING(f->st, "/p", 0);
    MISSING(f->st, "/p", 1);
    assert_int_equal(history(f->st, "/p", &h), LS_ENOTFOUND);
    assert_int_equal(list(f->st, "", NULL, 100, 1, &pl), 0);
    FAILS(f->st, &op, LS_ENOTFOUND);

    /* Purging a tombstone works too. */
    PUT(f->st, "/q", "1");
    DO(f->st, LS_OP_DELETE, "/q");
    DO(f->st, LS_OP_PURGE, "/q");
    assert_int_equal(list(f->st, "", NULL, 100, 1, &pl), 0);
    assert_int_equal(history(f->st, "/q", &h), LS_ENOTFOUND);

    /* The path starts again at version 1. */
    assert_int_equal(PUT(f->st, "/p", "again"), 1);
    expect_gapless(f->st, 7);
}

/* What an old log entry refers to: the version it wrote, found by item id. */
struct first_entry {
    int64_t seq;
    char body[32];
    int found;
};

static int
entry_body_cb(void *arg, const struct ls_entry *e)
{
    struct first_entry *fe = arg;
    if (e->seq != fe->seq) return 0;
    fe->found = 1;
    snprintf(fe->body, sizeof fe->body, "%.*s", (int)e->body_len, e->body ? (const char *)e->body : "");
    return 0;
}

static void
expect_entry_body(struct store *st, int64_t seq, const char *want)
{
    struct first_entry fe = {.seq = seq};
    assert_true(store_log_entries(st, seq - 1, 10, 1 << 20, entry_body_cb, &fe) > 0);
    assert_true(fe.found);
    assert_string_equal(fe.body, want);
}

/*
 * Item ids are never reused. The log names an entry's item by id: when a purge freed the
 * largest id and SQLite handed it to the next new item, replicating the purged item's old put
 * (a catch-up, a fork export) sent the new item's body under the old path.
 */
static void
test_purged_id_not_reused(void **state)
{
    struct fx *f = *state;
    PUT(f->st, "/a", "a-body");  /* seq 1 */
    PUT(f->st, "/b", "b-body");  /* seq 2: the largest id */
    DO(f->st, LS_OP_PURGE, "/b"); /* seq 3 */
    PUT(f->st, "/c", "c-body");  /* seq 4: must not take /b's id */
    expect_entry_body(f->st, 2, "");
    expect_entry_body(f->st, 4, "c-body");
    /* the same after a restart, when only the log remembers /b's id */
    PUT(f->st, "/d", "d-body"); /* seq 5 */
    DO(f->st, LS_OP_PURGE, "/d"); /* seq 6 */
    store_free(f->st);
    f->st = open_store(f);
    PUT(f->st, "/e", "e-body"); /* seq 7 */
    expect_entry_body(f->st, 5, "");
    expect_entry_body(f->st, 7, "e-body");
}

static void
test_purge_collects_blob(void **state)
{
    struct fx *f = *state; /* inline_max = 1024 */
    size_t n = 3000;
    char *big = pattern(n, 3);
    unsigned char sha[32];
    struct ls_op op = mkput("/big", big, n);
    struct ls_error err;

    ls_sha256(big, n, sha);
    OK(f->st, &op);
    store_collect_garbage(f->st); /* nothing to collect */
    assert_true(blob_exists(f->st, sha));

    assert_int_equal(store_begin(f->st, &err), 0);
    op = mk(LS_OP_PURGE, "/big");
    assert_int_equal(store_apply(f->st, &op, NULL, &err), 0);
    assert_int_equal(store_commit(f->st, &err), 0);
    assert_true(blob_exists(f->st, sha)); /* removed only by the collection */
    store_collect_garbage(f->st);
    assert_false(blob_exists(f->st, sha));
    assert_int_equal(blob_files(f->st), 0);

    /* The content can come back later. */
    op = mkput("/big", big, n);
    OK(f->st, &op);
    assert_true(blob_exists(f->st, sha));
    check_blob_content(f->st, sha, big, n);
}

static void
test_purge_keeps_shared_blob(void **state)
{
    struct fx *f = *state; /* inline_max = 1024 */
    size_t n = 3000;
    char *big = pattern(n, 4);
    unsigned char sha[32];
    struct ls_op op = mkput("/one", big, n);
    struct ls_item it;

    ls_sha256(big, n, sha);
    OK(f->st, &op);
    op = mkput("/two", big, n);
    OK(f->st, &op);
    assert_int_equal(blob_files(f->st), 1);

    DO(f->st, LS_OP_PURGE, "/one");
    store_collect_garbage(f->st);
    assert_true(blob_exists(f->st, sha)); /* /two still refers to it */
    check_blob_content(f->st, sha, big, n);
    it = GET(f->st, "/two", 0);
    assert_int_equal(it.in_blob, 1);
    item_release(&it);

    /* A tombstone still holds its versions, so it keeps the blob too. */
    DO(f->st, LS_OP_DELETE, "/two");
    store_collect_garbage(f->st);
    assert_true(blob_exists(f->st, sha));

    DO(f->st, LS_OP_PURGE, "/two");
    store_collect_garbage(f->st);
    assert_false(blob_exists(f->st, sha));
}

/* Purge and re-put the same content in one group: the blob must survive the collection. */
static void
test_purge_and_reput_same_group(void **state)
{
    struct fx *f = *state; /* inline_max = 1024 */
    size_t n = 2000;
    char *big = pattern(n, 5);
    unsigned char sha[32];
    struct ls_op op = mkput("/x", big, n);
    struct ls_error err;

    ls_sha256(big, n, sha);
    OK(f->st, &op);
    assert_int_equal(store_begin(f->st, &err), 0);
    op = mk(LS_OP_PURGE, "/x");
    assert_int_equal(store_apply(f->st, &op, NULL, &err), 0);
    op = mkput("/y", big, n);
    assert_int_equal(store_apply(f->st, &op, NULL, &err), 0);
    assert_int_equal(store_commit(f->st, &err), 0);
    store_collect_garbage(f->st);
    assert_true(blob_exists(f->st, sha));
    check_blob_content(f->st, sha, big, n);
}

/* ---------------------------------------------------------------- pruning */

static void
test_prune_keeps_newest_and_published(void **state)
{
    struct fx *f = *state; /* max_versions = 3 */
    struct vlist h;
    struct ls_op op;
    struct ls_item it;

    PUT(f->st, "/r", "1");
    PUT(f->st, "/r", "2");
    op = mk(LS_OP_PUBLISH, "/r");
    op.version = 2;
    OK(f->st, &op);
    for (int i = 3; i <= 6; i++) {
        char body[8];
        snprintf(body, sizeof body, "%d", i);
        assert_int_equal(PUT(f->st, "/r", body), i);
    }
    assert_int_equal(history(f->st, "/r", &h), 0);
    assert_int_equal(h.n, 4);
    assert_int_equal(h.v[0], 6);
    assert_int_equal(h.v[1], 5);
    assert_int_equal(h.v[2], 4);
    assert_int_equal(h.v[3], 2); /* the published one */
    MISSING(f->st, "/r", 1);
    MISSING(f->st, "/r", 3);
    it = GET(f->st, "/r", 2);
    assert_memory_equal(it.body, "2", 1);
    assert_int_equal(it.published_version, 2);
    assert_int_equal(it.status, LS_STATUS_CHANGED);
    item_release(&it);

    /* A pruned version cannot be published. */
    op = mk(LS_OP_PUBLISH, "/r");
    op.version = 3;
    FAILS(f->st, &op, LS_ENOTFOUND);

    /* Unpublished, version 2 goes with the next put. */
    DO(f->st, LS_OP_UNPUBLISH, "/r");
    PUT(f->st, "/r", "7");
    assert_int_equal(history(f->st, "/r", &h), 0);
    assert_int_equal(h.n, 3);
    assert_int_equal(h.v[0], 7);
    assert_int_equal(h.v[1], 6);
    assert_int_equal(h.v[2], 5);

    /* Without any publish: just the newest 3. */
    for (int i = 1; i <= 5; i++) PUT(f->st, "/s", "x");
    assert_int_equal(history(f->st, "/s", &h), 0);
    assert_int_equal(h.n, 3);
    assert_int_equal(h.v[0], 5);
    assert_int_equal(h.v[2], 3);
}

static void
test_prune_collects_blobs(void **state)
{
    struct fx *f = *state; /* max_versions = 3, inline_max = 1024 */
    size_t n = 2048;
    unsigned char sha[6][32];
    for (int i = 0; i < 5; i++) {
        char *big = pattern(n, 10 + (unsigned)i);
        struct ls_op op = mkput("/b", big, n);
        ls_sha256(big, n, sha[i]);
        OK(f->st, &op);
        store_collect_garbage(f->st);
    }
    assert_false(blob_exists(f->st, sha[0]));
    assert_false(blob_exists(f->st, sha[1]));
    assert_true(blob_exists(f->st, sha[2]));
    assert_true(blob_exists(f->st, sha[3]));
    assert_true(blob_exists(f->st, sha[4]));
    assert_int_equal(blob_files(f->st), 3);
}

/* ---------------------------------------------------------------- the change log */

static void
test_gapless_seq_all_ops(void **state)
{
    struct fx *f = *state;
    struct clist *l = &clbuf;
    struct ls_op op;
    int64_t seq;
    int n = 0;

#define STEP(o)                                                                                    \
    do {                                                                                           \
        ok_(f->st, (o), &seq, __FILE__, __LINE__);                                                 \
        n++;                                                                                       \
        assert_int_equal(seq, n);                                                                  \
    } while (0)

    op = mkput("/g/a", "1", 1);
    STEP(&op);
    op = mk(LS_OP_PUBLISH, "/g/a");
    STEP(&op);
    op = mk(LS_OP_PUBLISH, "/missing"); /* failures take no seq */
    FAILS(f->st, &op, LS_ENOTFOUND);
    op = mkput("/g/a", "2", 1);
    STEP(&op);
    op = mk(LS_OP_UNPUBLISH, "/g/a");
    STEP(&op);
    FAILS(f->st, &op, LS_ECONFLICT);
    op = mk(LS_OP_MOVE, "/g/a");
    op.to = "/g/b";
    STEP(&op);
    FAILS(f->st, &op, LS_ENOTFOUND);
    op = mk(LS_OP_DELETE, "/g/b");
    STEP(&op);
    op = mkput("/g/b", "3", 1);
    STEP(&op);
    op = mk(LS_OP_PURGE, "/g/b");
    STEP(&op);
    op = mkput("/g/c", "", 0);
    STEP(&op);
#undef STEP

    assert_int_equal(changes(f->st, 0, 100, l), n);
    {
        static const int ops[] = {LS_OP_PUT,  LS_OP_PUBLISH, LS_OP_PUT,   LS_OP_UNPUBLISH,
                                  LS_OP_MOVE, LS_OP_DELETE,  LS_OP_PUT,   LS_OP_PURGE,
                                  LS_OP_PUT};
        assert_int_equal(n, 9);
        for (int i = 0; i < n; i++) {
            assert_int_equal(l->seq[i], i + 1);
            assert_int_equal(l->op[i], ops[i]);
        }
    }
    expect_gapless(f->st, n);

    /* since and limit */
    assert_int_equal(changes(f->st, 3, 2, l), 2);
    assert_int_equal(l->seq[0], 4);
    assert_int_equal(l->seq[1], 5);
    assert_int_equal(changes(f->st, n, 10, l), 0);
}

static void
test_savepoint_rollback(void **state)
{
    struct fx *f = *state;
    struct ls_error err;
    struct ls_op op;
    struct ls_op_result res;
    struct clist *l = &clbuf;
    struct plist pl;
    struct ls_item it;

    PUT(f->st, "/base", "b");              /* seq 1 */
    PUT(f->st, "/tomb", "t");              /* seq 2 */
    DO(f->st, LS_OP_DELETE, "/tomb");      /* seq 3 */

    assert_int_equal(store_begin(f->st, &err), 0);

    /* Request 1 succeeds. */
    assert_int_equal(store_savepoint(f->st), 0);
    op = mkput("/r1", "r1", 2);
    assert_int_equal(store_apply(f->st, &op, &res, &err), 0);
    assert_int_equal(res.seq, 4);
    store_savepoint_release(f->st);

    /* Request 2: three ops succeed, including a move onto a tombstone, then one fails. */
    assert_int_equal(store_savepoint(f->st), 0);
    op = mkput("/r2", "r2", 2);
    assert_int_equal(store_apply(f->st, &op, &res, &err), 0);
    assert_int_equal(res.seq, 5);
    op = mkput("/base", "b2", 2);
    assert_int_equal(store_apply(f->st, &op, &res, &err), 0);
    op = mk(LS_OP_MOVE, "/base");
    op.to = "/tomb";
    assert_int_equal(store_apply(f->st, &op, &res, &err), 0);
    assert_int_equal(res.seq, 7);
    op = mk(LS_OP_PUBLISH, "/nothing");
    assert_int_equal(store_apply(f->st, &op, &res, &err), LS_ENOTFOUND);
    store_savepoint_rollback(f->st);

    /* Request 3 succeeds and takes the next seq after request 1. */
    assert_int_equal(store_savepoint(f->st), 0);
    op = mkput("/r3", "r3", 2);
    assert_int_equal(store_apply(f->st, &op, &res, &err), 0);
    assert_int_equal(res.seq, 5);
    store_savepoint_release(f->st);
    assert_int_equal(store_commit(f->st, &err), 0);

    /* No trace of request 2. */
    MISSING(f->st, "/r2", 0);
    it = GET(f->st, "/base", 0);
    assert_int_equal(it.version, 1);
    assert_memory_equal(it.body, "b", 1);
    item_release(&it);
    MISSING(f->st, "/tomb", 0);
    assert_int_equal(list(f->st, "/tomb", NULL, 10, 1, &pl), 1); /* the tombstone is back */
    assert_int_equal(pl.deleted[0], 1);
    it = GET(f->st, "/tomb", 1);
    assert_memory_equal(it.body, "t", 1);
    item_release(&it);
    it = GET(f->st, "/r1", 0);
    item_release(&it);
    it = GET(f->st, "/r3", 0);
    assert_int_equal(it.seq, 5);
    item_release(&it);

    assert_int_equal(changes(f->st, 0, 100, l), 5);
    assert_string_equal(l->path[3], "/r1");
    assert_string_equal(l->path[4], "/r3");
    expect_gapless(f->st, 5);

    /* And the next group continues from there. */
    op = mkput("/r4", "r4", 2);
    {
        int64_t seq;
        ok_(f->st, &op, &seq, __FILE__, __LINE__);
        assert_int_equal(seq, 6);
    }
    expect_gapless(f->st, 6);
}

static void
test_group_rollback(void **state)
{
    struct fx *f = *state;
    struct ls_error err;
    struct ls_op op;
    struct ls_op_result res;
    struct ls_position pos;
    int64_t seq;

    PUT(f->st, "/a", "1"); /* seq 1 */
    assert_int_equal(store_begin(f->st, &err), 0);
    op = mkput("/b", "b", 1);
    assert_int_equal(store_apply(f->st, &op, &res, &err), 0);
    assert_int_equal(res.seq, 2);
    op = mkput("/a", "2", 1);
    assert_int_equal(store_apply(f->st, &op, &res, &err), 0);
    assert_int_equal(res.seq, 3);
    store_rollback(f->st);

    MISSING(f->st, "/b", 0);
    MISSING(f->st, "/a", 2);
    expect_gapless(f->st, 1);
    assert_int_equal(store_position(f->st, &pos), 0);
    assert_int_equal(pos.seq, 1);

    op = mkput("/c", "c", 1);
    ok_(f->st, &op, &seq, __FILE__, __LINE__);
    assert_int_equal(seq, 2);
    expect_gapless(f->st, 2);
}

/* ---------------------------------------------------------------- persistence */

static void
test_reopen_persists(void **state)
{
    struct fx *f = *state; /* inline_max = 1024 */
    struct ls_position before, after;
    struct ls_item it;
    struct ls_op op;
    size_t n = 4096;
    char *big = pattern(n, 9);
    int64_t seq;

    PUT(f->st, "/a", "alpha");
    op = mkput("/big", big, n);
    op.publish = 1;
    OK(f->st, &op);
    DO(f->st, LS_OP_DELETE, "/a");
    assert_int_equal(store_position(f->st, &before), 0);
    assert_int_equal(strlen(before.store_id), 32);
    assert_int_equal(before.seq, 3);
    assert_int_equal(before.epoch, 1);

    store_free(f->st);
    f->st = open_store(f);
    assert_int_equal(store_position(f->st, &after), 0);
    assert_string_equal(after.store_id, before.store_id);
    assert_int_equal(after.seq, 3);
    assert_int_equal(after.epoch, 1);
    expect_gapless(f->st, 3);

    MISSING(f->st, "/a", 0);
    it = GET(f->st, "/a", 1);
    assert_memory_equal(it.body, "alpha", 5);
    item_release(&it);
    it = GET(f->st, "/big", 0);
    assert_int_equal(it.in_blob, 1);
    assert_int_equal(it.published_version, 1);
    check_blob_content(f->st, it.sha, big, n);
    item_release(&it);

    /* seq continues after reopening */
    op = mkput("/a", "back", 4);
    assert_int_equal(ok_(f->st, &op, &seq, __FILE__, __LINE__), 2);
    assert_int_equal(seq, 4);
    expect_gapless(f->st, 4);

    /* A read-only handle sees the same. */
    {
        struct store_options ro = f->opt;
        struct ls_error err;
        struct store *r;
        ro.readonly = 1;
        r = store_open(f->dir, &ro, &err);
        assert_non_null(r);
        assert_int_equal(store_position(r, &after), 0);
        assert_string_equal(after.store_id, before.store_id);
        assert_int_equal(after.seq, 4);
        it = GET(r, "/a", 0);
        assert_memory_equal(it.body, "back", 4);
        item_release(&it);
        store_free(r);
    }

    /* A different directory is a different store. */
    {
        struct fx g;
        memset(&g, 0, sizeof g);
        snprintf(g.dir, sizeof g.dir, "/tmp/ls-ut-store-XXXXXX");
        assert_non_null(mkdtemp(g.dir));
        g.st = open_store(&g);
        assert_int_equal(store_position(g.st, &after), 0);
        assert_string_not_equal(after.store_id, before.store_id);
        assert_int_equal(after.seq, 0);
        store_free(g.st);
        rm_rf(g.dir);
    }
}

/* ---------------------------------------------------------------- digests */

static void
digest(struct store *st, const char *prefix, int published_only, char hex[65], int64_t *count)
{
    struct ls_error err;
    int64_t seq;
    ls_error_clear(&err);
    if (store_digest(st, prefix, published_only, hex, count, &seq, &err))
        fail_msg("digest: %s", err.msg);
}

static void
feed_common(struct store *st)
{
    struct ls_op op;
    PUT(st, "/d/a", "alpha");
    op = mkput("/d/b", "beta", 4);
    op.kind = "note";
    op.meta = "{\"x\":1}";
    op.publish = 1;
    OK(st, &op);
    PUT(st, "/d/b", "beta2");
    PUT(st, "/e", "echo");
    DO(st, LS_OP_PUBLISH, "/e");
}

static void
test_digest(void **state)
{
    struct fx *f = *state, g;
    char h1[65], h2[65], p1[65], p2[65];
    int64_t c1, c2;

    memset(&g, 0, sizeof g);
    snprintf(g.dir, sizeof g.dir, "/tmp/ls-ut-store-XXXXXX");
    assert_non_null(mkdtemp(g.dir));
    g.st = open_store(&g);

    /* Empty stores: the hash of nothing. */
    digest(f->st, "", 0, h1, &c1);
    assert_string_equal(h1, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(c1, 0);

    feed_common(f->st);
    feed_common(g.st);
    digest(f->st, "", 0, h1, &c1);
    digest(g.st, "", 0, h2, &c2);
    assert_int_equal(strlen(h1), 64);
    assert_string_equal(h1, h2);
    assert_int_equal(c1, 3);
    assert_int_equal(c2, 3);
    digest(f->st, "", 1, p1, &c1);
    digest(g.st, "", 1, p2, &c2);
    assert_string_equal(p1, p2);
    assert_int_equal(c1, 2);
    assert_string_not_equal(p1, h1);

    /* History that ends in the same live state gives the same digest. */
    PUT(g.st, "/tmp", "scratch");
    DO(g.st, LS_OP_DELETE, "/tmp");
    digest(g.st, "", 0, h2, &c2);
    assert_string_equal(h1, h2);

    /* One differing put: the full digest differs, the published one does not. */
    PUT(g.st, "/d/a", "alpha2");
    digest(g.st, "", 0, h2, &c2);
    assert_string_not_equal(h1, h2);
    digest(g.st, "", 1, p2, &c2);
    assert_string_equal(p1, p2);

    /* Same again on the other store: equal again. */
    PUT(f->st, "/d/a", "alpha2");
    digest(f->st, "", 0, h1, &c1);
    assert_string_equal(h1, h2);

    /* Publishing changes both. */
    DO(g.st, LS_OP_PUBLISH, "/d/a");
    digest(g.st, "", 0, h2, &c2);
    assert_string_not_equal(h1, h2);
    digest(g.st, "", 1, p2, &c2);
    assert_string_not_equal(p1, p2);
    assert_int_equal(c2, 3);

    /* meta and kind count. */
    DO(f->st, LS_OP_PUBLISH, "/d/a");
    digest(f->st, "", 0, h1, &c1);
    assert_string_equal(h1, h2);
    {
        struct ls_op op = mkput("/e", "echo", 4);
        op.meta = "{\"y\":2}";
        OK(f->st, &op);
        op = mkput("/e", "echo", 4);
        op.kind = "other";
        OK(g.st, &op);
    }
    digest(f->st, "", 0, h1, &c1);
    digest(g.st, "", 0, h2, &c2);
    assert_string_not_equal(h1, h2);

    /* A prefix digest covers the subtree only: "/d" is the same in both. */
    digest(f->st, "/d", 0, h1, &c1);
    digest(g.st, "/d", 0, h2, &c2);
    assert_string_equal(h1, h2);
    assert_int_equal(c1, 2);

    store_free(g.st);
    rm_rf(g.dir);
}

/* ---------------------------------------------------------------- listing */

static void
test_list(void **state)
{
    struct fx *f = *state;
    struct plist pl;
    static const char *paths[] = {"/b", "/a/y/z", "/ab", "/a", "/c", "/a-1", "/a/x", "/a.b"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) PUT(f->st, paths[i], "x");

    assert_int_equal(list(f->st, "", NULL, 100, 0, &pl), 8);
    assert_string_equal(joined(&pl), "/a /a-1 /a.b /a/x /a/y/z /ab /b /c");
    assert_int_equal(list(f->st, "/", NULL, 100, 0, &pl), 8);
    assert_int_equal(list(f->st, NULL, NULL, 100, 0, &pl), 8);

    /* A prefix is a subtree: "/a" is "/a" and "/a/...", never "/ab" or "/a-1". */
    assert_int_equal(list(f->st, "/a", NULL, 100, 0, &pl), 3);
    assert_string_equal(joined(&pl), "/a /a/x /a/y/z");
    assert_int_equal(list(f->st, "/a/", NULL, 100, 0, &pl), 3);
    assert_string_equal(joined(&pl), "/a /a/x /a/y/z");
    assert_int_equal(list(f->st, "/a/y", NULL, 100, 0, &pl), 1);
    assert_string_equal(joined(&pl), "/a/y/z");
    assert_int_equal(list(f->st, "/ab", NULL, 100, 0, &pl), 1);
    assert_string_equal(joined(&pl), "/ab");
    assert_int_equal(list(f->st, "/zzz", NULL, 100, 0, &pl), 0);
    assert_int_equal(list(f->st, "/a/x/deeper", NULL, 100, 0, &pl), 0);

    /* Paging with after. */
    {
        char seen[4096] = "", after[64] = "";
        int pages = 0;
        for (;;) {
            int n = list(f->st, "", after, 3, 0, &pl);
            assert_true(n >= 0 && n <= 3);
            if (n == 0) break;
            pages++;
            strcat(seen, seen[0] ? " " : "");
            strcat(seen, joined(&pl));
            snprintf(after, sizeof after, "%s", pl.path[pl.n - 1]);
        }
        assert_int_equal(pages, 3);
        assert_string_equal(seen, "/a /a-1 /a.b /a/x /a/y/z /ab /b /c");
    }
    assert_int_equal(list(f->st, "/a", "/a", 100, 0, &pl), 2);
    assert_string_equal(joined(&pl), "/a/x /a/y/z");
    assert_int_equal(list(f->st, "", "/a/x", 2, 0, &pl), 2);
    assert_string_equal(joined(&pl), "/a/y/z /ab");

    /* include_deleted */
    DO(f->st, LS_OP_DELETE, "/a/x");
    DO(f->st, LS_OP_DELETE, "/b");
    assert_int_equal(list(f->st, "/a", NULL, 100, 0, &pl), 2);
    assert_string_equal(joined(&pl), "/a /a/y/z");
    assert_int_equal(list(f->st, "/a", NULL, 100, 1, &pl), 3);
    assert_string_equal(joined(&pl), "/a /a/x /a/y/z");
    assert_int_equal(pl.deleted[0], 0);
    assert_int_equal(pl.deleted[1], 1);
    assert_int_equal(list(f->st, "", NULL, 100, 0, &pl), 6);
    assert_int_equal(list(f->st, "", NULL, 100, 1, &pl), 8);
}

static int
stop_after_two(void *arg, const struct ls_item *it)
{
    int *n = arg;
    (void)it;
    return ++*n >= 2;
}

static void
test_list_callback_stops(void **state)
{
    struct fx *f = *state;
    struct ls_error err;
    int n = 0;
    PUT(f->st, "/1", "x");
    PUT(f->st, "/2", "x");
    PUT(f->st, "/3", "x");
    assert_int_equal(store_list(f->st, "", NULL, 100, 0, stop_after_two, &n, &err), 2);
    assert_int_equal(n, 2);
}

/* ---------------------------------------------------------------- if_version */

static void
test_if_version(void **state)
{
    struct fx *f = *state;
    struct ls_op op;
    struct ls_item it;

    PUT(f->st, "/i", "1");
    op = mkput("/i", "2", 1);
    op.if_version = 1;
    assert_int_equal(OK(f->st, &op), 2);
    FAILS(f->st, &op, LS_ECONFLICT); /* now at 2 */
    op.if_version = 3;
    FAILS(f->st, &op, LS_ECONFLICT);
    op = mkput("/new", "x", 1);
    op.if_version = 1;
    FAILS(f->st, &op, LS_ECONFLICT); /* a new item is at version 0 */
    MISSING(f->st, "/new", 0);

    op = mk(LS_OP_PUBLISH, "/i");
    op.if_version = 1;
    FAILS(f->st, &op, LS_ECONFLICT);
    op.if_version = 2;
    OK(f->st, &op);

    op = mk(LS_OP_UNPUBLISH, "/i");
    op.if_version = 1;
    FAILS(f->st, &op, LS_ECONFLICT);
    it = GET(f->st, "/i", 0);
    assert_int_equal(it.published_version, 2);
    item_release(&it);

    op = mk(LS_OP_DELETE, "/i");
    op.if_version = 1;
    FAILS(f->st, &op, LS_ECONFLICT);
    it = GET(f->st, "/i", 0);
    item_release(&it);

    op = mk(LS_OP_PURGE, "/i");
    op.if_version = 5;
    FAILS(f->st, &op, LS_ECONFLICT);
    it = GET(f->st, "/i", 0);
    item_release(&it);

    /* Three successes so far; the conflicts took no seq. */
    expect_gapless(f->st, 3);

    op = mk(LS_OP_DELETE, "/i");
    op.if_version = 2;
    OK(f->st, &op);
    op = mk(LS_OP_PURGE, "/i");
    op.if_version = 2;
    OK(f->st, &op);
    expect_gapless(f->st, 5);
}

/* The parser accepts if_version on a move, so the store must honour it there too. */
static void
test_if_version_move(void **state)
{
    struct fx *f = *state;
    struct ls_op op;

    PUT(f->st, "/m", "1");
    PUT(f->st, "/m", "2");
    op = mk(LS_OP_MOVE, "/m");
    op.to = "/n";
    op.if_version = 1;
    FAILS(f->st, &op, LS_ECONFLICT);
    MISSING(f->st, "/n", 0);
    {
        struct ls_item it = GET(f->st, "/m", 0);
        item_release(&it);
    }
    op.if_version = 2;
    OK(f->st, &op);
    MISSING(f->st, "/m", 0);
}

/* ---------------------------------------------------------------- ops parsed from JSON */

static void
test_parsed_ops_apply(void **state)
{
    struct fx *f = *state;
    static const char *lines[] = {
        "{\"op\":\"put\",\"path\":\"/j\",\"body_base64\":\"AAEA\",\"kind\":\"bin\","
        "\"meta\":{\"b\":1,\"a\":2},\"status\":\"published\"}",
        "{\"op\":\"put\",\"path\":\"/j\",\"body\":\"text\"}",
        "{\"op\":\"move\",\"path\":\"/j\",\"to\":\"/k\"}",
    };
    struct ls_item it;
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        struct ls_op op;
        struct ls_error err;
        assert_int_equal(op_parse_json(lines[i], strlen(lines[i]), &op, &err), 0);
        OK(f->st, &op);
        op_release(&op);
    }
    it = GET(f->st, "/k", 1);
    assert_int_equal(it.size, 3);
    assert_memory_equal(it.body, "\0\1\0", 3);
    assert_string_equal(it.kind, "bin");
    assert_string_equal(it.meta, "{\"a\":2,\"b\":1}");
    item_release(&it);
    it = GET(f->st, "/k", 0);
    assert_int_equal(it.version, 2);
    assert_int_equal(it.status, LS_STATUS_CHANGED);
    assert_string_equal(it.kind, "bin");
    assert_memory_equal(it.body, "text", 4);
    item_release(&it);
}

/* A transaction gone (SQLite rolls one back by itself on SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM):
 * no savepoint or operation may then begin a transaction of its own and commit alone, and the
 * position goes back to what is on disk. test_writer.c injects the real errors. */
static void
test_no_savepoint_outside_a_transaction(void **state)
{
    struct fx *f = *state;
    struct ls_op op = mkput("/gone", "x", 1);
    struct ls_position pos;
    struct ls_error err;

    OK(f->st, &op);
    assert_int_equal(store_begin(f->st, &err), 0);
    assert_true(store_in_transaction(f->st));
    assert_int_equal(store_savepoint(f->st), 0);
    assert_int_equal(store_apply(f->st, &op, NULL, &err), 0);
    assert_int_equal(store_seq(f->st), 2);
    store_rollback(f->st); /* as SQLite would have */
    assert_false(store_in_transaction(f->st));
    assert_int_equal(store_seq(f->st), 1);
    assert_int_not_equal(store_savepoint(f->st), 0);
    assert_false(store_in_transaction(f->st));
    assert_int_not_equal(store_apply(f->st, &op, NULL, &err), 0);
    assert_int_not_equal(store_savepoint_release(f->st), 0);
    assert_int_not_equal(store_savepoint_rollback(f->st), 0);
    assert_int_equal(store_seq(f->st), 1);
    assert_int_equal(store_position(f->st, &pos), 0);
    assert_int_equal(pos.seq, 1);
    OK(f->st, &op); /* the next group takes the next seq */
    assert_int_equal(store_seq(f->st), 2);
}

/* ---------------------------------------------------------------- epochs and their ids */

static void
assert_hex32(const char *id)
{
    assert_int_equal(strlen(id), 32);
    assert_int_equal(strspn(id, "0123456789abcdef"), 32);
}

/* A new store's epoch 1 has a random id; a promotion makes another random one. */
static void
test_epoch_ids_random(void **state)
{
    struct fx *f = *state;
    struct ls_epoch ep[4];
    struct ls_position pos;
    struct ls_error err;
    char def[33];
    int64_t e;
    assert_int_equal(store_position(f->st, &pos), 0);
    assert_int_equal(store_epoch_list(f->st, ep, 4), 1);
    assert_int_equal(ep[0].epoch, 1);
    assert_hex32(ep[0].id);
    store_epoch_default_id(pos.store_id, 1, def);
    assert_string_not_equal(ep[0].id, def);
    assert_int_equal(store_begin(f->st, &err), 0);
    assert_int_equal(store_new_epoch(f->st, &e, &err), 0);
    assert_int_equal(store_commit(f->st, &err), 0);
    assert_int_equal(e, 2);
    assert_int_equal(store_epoch_list(f->st, ep, 4), 2);
    assert_hex32(ep[1].id);
    assert_string_not_equal(ep[1].id, ep[0].id);
    store_epoch_default_id(pos.store_id, 2, def);
    assert_string_not_equal(ep[1].id, def);
}

/* A new store records its schema version; one written by a newer lockstep is refused, and
 * left as it was. */
static void
test_schema_version(void **state)
{
    struct fx *f = *state;
    struct ls_error err;
    char v[32], path[128];
    sqlite3 *db;
    assert_int_equal(store_meta_get(f->st, "schema_version", v, sizeof v), 0);
    assert_string_equal(v, "3");
    PUT(f->st, "/a", "alpha");
    store_free(f->st);
    f->st = NULL;
    snprintf(path, sizeof path, "%s/store.db", f->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE meta SET value=99 WHERE key='schema_version'", NULL,
                                  NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    ls_error_clear(&err);
    assert_null(store_open(f->dir, &f->opt, &err));
    assert_non_null(strstr(err.msg, "schema version 99"));
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE meta SET value=2 WHERE key='schema_version'", NULL,
                                  NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    f->st = open_store(f);
    {
        struct ls_item it = GET(f->st, "/a", 0);
        assert_int_equal(it.size, 5);
        assert_memory_equal(it.body, "alpha", 5);
        item_release(&it);
    }
}

/* A store written before epoch ids (no id column) opens: every epoch gets the id derived from
 * store_id and its number, the same in every copy of that history. */
static void
test_epoch_ids_migrated(void **state)
{
    struct fx *f = *state;
    struct ls_epoch ep[4];
    struct ls_position pos;
    char path[128], def[33];
    sqlite3 *db;
    PUT(f->st, "/a", "alpha");
    assert_int_equal(store_position(f->st, &pos), 0);
    store_free(f->st);
    f->st = NULL;
    snprintf(path, sizeof path, "%s/store.db", f->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "ALTER TABLE epochs DROP COLUMN id;"
                                  "DELETE FROM meta WHERE key='schema_version';"
                                  "INSERT INTO epochs VALUES(2, 1, 0);"
                                  "UPDATE meta SET value=2 WHERE key='epoch'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    f->st = open_store(f);
    assert_int_equal(store_epoch_list(f->st, ep, 4), 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ep[i].epoch, i + 1);
        store_epoch_default_id(pos.store_id, i + 1, def);
        assert_string_equal(ep[i].id, def);
    }
    assert_int_equal(ep[1].start_seq, 1);
    /* and again: nothing changes on the next open */
    store_free(f->st);
    f->st = open_store(f);
    assert_int_equal(store_epoch_list(f->st, ep, 4), 2);
    store_epoch_default_id(pos.store_id, 2, def);
    assert_string_equal(ep[1].id, def);
}

/* A history of more than 64 epochs: every one is listed (store_epoch_list_all) and, in a store
 * written before epoch ids, every one gets its id (the migration went 64 at a time, once). */
static void
test_epochs_past_64(void **state)
{
    struct fx *f = *state;
    struct ls_epoch *ep;
    struct ls_position pos;
    struct ls_error err;
    char path[128], def[33];
    sqlite3 *db;
    int64_t e;
    for (int i = 0; i < 140; i++) {
        assert_int_equal(store_begin(f->st, &err), 0);
        assert_int_equal(store_new_epoch(f->st, &e, &err), 0);
        assert_int_equal(store_commit(f->st, &err), 0);
    }
    assert_int_equal(e, 141);
    assert_int_equal(store_epoch_list_all(f->st, &ep), 141);
    for (int i = 0; i < 141; i++) {
        assert_int_equal(ep[i].epoch, i + 1);
        assert_hex32(ep[i].id);
    }
    free(ep);
    assert_int_equal(store_position(f->st, &pos), 0);
    store_free(f->st);
    f->st = NULL;
    snprintf(path, sizeof path, "%s/store.db", f->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "ALTER TABLE epochs DROP COLUMN id;"
                                  "DELETE FROM meta WHERE key='schema_version'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    f->st = open_store(f);
    assert_int_equal(store_epoch_list_all(f->st, &ep), 141);
    for (int i = 0; i < 141; i++) {
        store_epoch_default_id(pos.store_id, i + 1, def);
        assert_string_equal(ep[i].id, def);
    }
    free(ep);
}

/* Ids taken over from an upstream are kept; a missing or malformed one is derived. */
static void
test_epoch_ids_set_identity(void **state)
{
    struct fx *f = *state;
    struct ls_epoch in[3] = {{1, 0, "0123456789abcdef0123456789abcdef"}, {2, 5, ""},
                             {3, 9, "not hex"}}, out[4];
    struct ls_error err;
    struct ls_position pos;
    const char *sid = "00112233445566778899aabbccddeeff";
    char def[33];
    assert_int_equal(store_begin(f->st, &err), 0);
    assert_int_equal(store_set_identity(f->st, sid, in, 3, &err), 0);
    assert_int_equal(store_commit(f->st, &err), 0);
    assert_int_equal(store_position(f->st, &pos), 0);
    assert_int_equal(pos.epoch, 3);
    assert_int_equal(store_epoch_list(f->st, out, 4), 3);
    assert_string_equal(out[0].id, in[0].id);
    store_epoch_default_id(sid, 2, def);
    assert_string_equal(out[1].id, def);
    store_epoch_default_id(sid, 3, def);
    assert_string_equal(out[2].id, def);
    assert_int_equal(out[2].start_seq, 9);
}


static int
count_change(void *arg, const struct ls_change *c)
{
    (void)c;
    ((int *)arg)[0]++;
    return 0;
}

static int
consumer_cb(void *arg, const struct ls_consumer *c)
{
    struct {
        int n;
        struct ls_consumer c;
        char name[16], ch[16];
    } *sv = arg;
    sv->n++;
    sv->c = *c;
    snprintf(sv->name, sizeof sv->name, "%s", c->name);
    snprintf(sv->ch, sizeof sv->ch, "%s", c->channels);
    return 0;
}

/* ---------------------------------------------------------------- the messenger */

static int64_t
notify_(struct store *st, const char *channel, const char *payload, const char *file, int line)
{
    struct ls_op op = mk(LS_OP_NOTIFY, channel);
    int64_t seq = 0;
    op.to = (char *)payload;
    ok_(st, &op, &seq, file, line);
    return seq;
}
#define NOTIFY(st, ch, pl) notify_((st), (ch), (pl), __FILE__, __LINE__)

struct seen {
    int n;
    int64_t seq[16];
    char what[16][64];
};

static int
seen_cb(void *arg, const struct ls_note *e)
{
    struct seen *s = arg;
    if (s->n < 16) {
        s->seq[s->n] = e->seq;
        snprintf(s->what[s->n], sizeof s->what[0], "%s:%s", e->channel,
                 e->op == LS_OP_NOTIFY ? e->payload : e->path);
    }
    s->n++;
    return 0;
}

static struct seen
notes(struct store *st, int64_t after, const char *channels, int limit, int scan, int64_t *scanned,
      int *at_end)
{
    struct seen s = {0};
    int n = store_notes(st, after, INT64_MAX, channels, limit, scan, seen_cb, &s, scanned, at_end);
    assert_int_equal(n, s.n);
    return s;
}

/* Notifications share the log's seqs with content changes; each channel set reads its own, in
 * order, and "content" is every item change. The change feed does not show notifications. */
static void
test_notes_channels(void **state)
{
    struct fx *f = *state;
    int64_t scanned;
    int at_end;
    struct seen s;
    NOTIFY(f->st, "a", "1");
    PUT(f->st, "/x", "x");
    NOTIFY(f->st, "b", "{\"k\":2}");
    NOTIFY(f->st, "a", "3");
    DO(f->st, LS_OP_DELETE, "/x");
    s = notes(f->st, 0, "a", 10, 100, &scanned, &at_end);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.what[0], "a:1");
    assert_string_equal(s.what[1], "a:3");
    assert_int_equal(s.seq[1], 4);
    assert_true(at_end);
    s = notes(f->st, 0, "content", 10, 100, &scanned, &at_end);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.what[0], "content:/x");
    assert_int_equal(s.seq[1], 5);
    s = notes(f->st, 0, "", 10, 100, &scanned, &at_end); /* every channel */
    assert_int_equal(s.n, 5);
    s = notes(f->st, 1, "a,content", 2, 100, &scanned, &at_end);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.seq[0], 2);
    assert_int_equal(s.seq[1], 4);
    assert_int_equal(scanned, 4); /* stopped at the limit: the position may move to 4 only */
    assert_false(at_end);
    /* up to a seq: what a reader saw committed beyond the loop's count stays for the next read */
    {
        struct seen u = {0};
        int n = store_notes(f->st, 0, 3, "a", 10, 100, seen_cb, &u, &scanned, &at_end);
        assert_int_equal(n, 1);
        assert_int_equal(u.seq[0], 1);
        assert_true(at_end); /* nothing more up to 3 */
    }
    /* a bounded scan moves past other channels without returning anything */
    s = notes(f->st, 0, "b", 10, 1, &scanned, &at_end);
    assert_int_equal(s.n, 0);
    assert_int_equal(scanned, 1);
    assert_false(at_end);
    /* the change feed is the items' */
    {
        struct ls_change_count {
            int n;
        } c = {0};
        assert_int_equal(store_changes(f->st, 0, 100, count_change, &c), 2);
    }
}

/* Notification retention removes notifications only (all of them when all are old) and raises
 * the notify floor; the log floor stays. */
static void
test_notes_retention(void **state)
{
    struct fx *f = *state;
    struct ls_error err;
    int64_t removed = -1, scanned;
    int at_end;
    struct seen s;
    NOTIFY(f->st, "a", "1");
    PUT(f->st, "/x", "x");
    NOTIFY(f->st, "a", "2");
    assert_int_equal(store_begin(f->st, &err), 0);
    assert_int_equal(store_log_retain(f->st, ls_now_ms() + 1000, 0, 1, &removed, &err), 0);
    assert_int_equal(store_commit(f->st, &err), 0);
    assert_int_equal(removed, 2);
    assert_int_equal(store_floor(f->st, FLOOR_NOTIFY), 3);
    assert_int_equal(store_floor(f->st, FLOOR_LOG), 0);
    s = notes(f->st, 0, "", 10, 100, &scanned, &at_end);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.what[0], "content:/x");
}

/* A replica's outbox ids are never reused, and the primary's forwarded mark is per origin. */
static void
test_outbox_and_forwarded(void **state)
{
    struct fx *f = *state;
    struct ls_error err;
    int64_t a, b, c;
    assert_int_equal(store_begin(f->st, &err), 0);
    assert_int_equal(store_outbox_add(f->st, "ch", "1", 1, &a, &err), 0);
    assert_int_equal(store_outbox_add(f->st, "ch", "2", 1, &b, &err), 0);
    assert_int_equal(store_outbox_done(f->st, b, &err), 0);
    assert_int_equal(store_outbox_add(f->st, "ch", "3", 1, &c, &err), 0);
    assert_int_equal(store_set_forwarded(f->st, "o1", 7, &err), 0);
    assert_int_equal(store_commit(f->st, &err), 0);
    assert_true(a < b && b < c); /* not b again after the rows were deleted */
    assert_int_equal(store_forwarded(f->st, "o1"), 7);
    assert_int_equal(store_forwarded(f->st, "o2"), 0);
}

/* Consumers round-trip through the store. */
static void
test_consumers_saved(void **state)
{
    struct fx *f = *state;
    struct ls_error err;
    struct ls_consumer c = {"web1", "a,b", 42, 1000, 2000, 1, 40, 3};
    assert_int_equal(store_begin(f->st, &err), 0);
    assert_int_equal(store_consumer_save(f->st, &c, &err), 0);
    c.name = "gone";
    assert_int_equal(store_consumer_save(f->st, &c, &err), 0);
    assert_int_equal(store_consumer_del(f->st, "gone", &err), 0);
    assert_int_equal(store_commit(f->st, &err), 0);
    store_free(f->st);
    f->st = open_store(f);
    {
        struct saved {
            int n;
            struct ls_consumer c;
            char name[16], ch[16];
        } sv = {0};
        assert_int_equal(store_consumers(f->st, consumer_cb, &sv), 0);
        assert_int_equal(sv.n, 1);
        assert_string_equal(sv.name, "web1");
        assert_string_equal(sv.ch, "a,b");
        assert_int_equal(sv.c.position, 42);
        assert_int_equal(sv.c.reset_at, 40);
        assert_int_equal(sv.c.gen, 3);
    }
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define TS(fn) cmocka_unit_test_setup_teardown(fn, setup_small_inline, teardown)
#define TP(fn) cmocka_unit_test_setup_teardown(fn, setup_prune3, teardown)
    const struct CMUnitTest tests[] = {
        T(test_put_get_round_trip),
        T(test_no_savepoint_outside_a_transaction),
        T(test_put_with_kind_meta),
        TS(test_blob_storage),
        T(test_version_numbering),
        T(test_kind_meta_inherited),
        T(test_publish_unpublish),
        T(test_tombstone),
        T(test_move),
        T(test_purge),
        T(test_purged_id_not_reused),
        TS(test_purge_collects_blob),
        TS(test_purge_keeps_shared_blob),
        TS(test_purge_and_reput_same_group),
        TP(test_prune_keeps_newest_and_published),
        TP(test_prune_collects_blobs),
        T(test_gapless_seq_all_ops),
        T(test_savepoint_rollback),
        T(test_group_rollback),
        TS(test_reopen_persists),
        T(test_digest),
        T(test_list),
        T(test_list_callback_stops),
        T(test_if_version),
        T(test_if_version_move),
        T(test_parsed_ops_apply),
        T(test_epoch_ids_random),
        T(test_epoch_ids_migrated),
        T(test_schema_version),
        T(test_epoch_ids_set_identity),
        T(test_epochs_past_64),
        T(test_notes_channels),
        T(test_notes_retention),
        T(test_outbox_and_forwarded),
        T(test_consumers_saved),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
