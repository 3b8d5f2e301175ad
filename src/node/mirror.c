/*
 * mirror.c - mirroring jobs (docs/mirror.md): the jobs the loop knows, their definitions and
 * --every timers, and the runs: each on a thread of its own, started and reaped here.
 *
 * A run scans its source once and feeds every target from that scan (mirror_source.c), in
 * packages (mirror_package.c): once every target has applied a package, one writer request
 * records each target's checkpoint, the package's errors and the run's progress, in one
 * transaction. A run killed mid-way therefore resumes after the last package the store holds as
 * applied, and never sends it again.
 *
 * Threads: the loop owns the job list and starts and reaps runs; a run's thread owns its
 * packages and reads the store through a read-only handle of its own. Its writes go to the loop
 * (the writer is the loop's to talk to) through a small queue and come back through a condition
 * variable. Progress is shared under the run's mutex.
 *
 * Not for: the HTTP routes (http/mirror.c), the tables (core/store/mirror.c), pulling from
 * another server's export (mirror_remote.c), pushing to another server's store (mirror_push.c).
 */
#include "node/mirror_int.h"
#include "common/log.h"
#include "common/util.h"
#include "node/http/http.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the job definition */

static int
name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return 0;
    return 1;
}

/* "dir:/abs/path" -> the path; NULL after an error naming what. */
static const char *
dir_spec(const char *spec, const char *what, struct ls_error *err)
{
    const char *p = spec + 4;
    if (strncmp(spec, "dir:", 4) != 0) return NULL;
    if (*p != '/') {
        ls_error_set(err, LS_EINVAL, "%s %s: a directory must be an absolute path", what, spec);
        return NULL;
    }
    if (strlen(p) >= 4000 || strstr(p, "/../") || strstr(p, "/./") ||
        (strlen(p) >= 3 && strcmp(p + strlen(p) - 3, "/..") == 0)) {
        ls_error_set(err, LS_EINVAL, "%s %s: the path must be absolute and plain", what, spec);
        return NULL;
    }
    return p;
}

/* Whether a lies under b or is b (two directory trees that would feed each other). */
int
mirror_path_within(const char *a, const char *b)
{
    size_t n = strlen(b);
    while (n > 1 && b[n - 1] == '/')
        n--;
    return strncmp(a, b, n) == 0 && (a[n] == '\0' || a[n] == '/' || n == 1);
}

static int
glob_list(const json_t *body, const char *key, json_t *out, struct ls_error *err)
{
    const json_t *a = json_object_get(body, key), *v;
    json_t *list = json_array();
    size_t i;
    json_object_set_new(out, key, list);
    if (!a || json_is_null(a)) return 0;
    if (!json_is_array(a) || json_array_size(a) > GLOBS_MAX)
        return ls_error_set(err, LS_EINVAL, "%s must be a list of at most %d patterns", key,
                            GLOBS_MAX);
    json_array_foreach(a, i, v)
    {
        if (!json_is_string(v) || !*json_string_value(v) || json_string_length(v) > 1024)
            return ls_error_set(err, LS_EINVAL, "%s: each pattern is a non-empty string", key);
        json_array_append(list, (json_t *)v);
    }
    return 0;
}

static int
int_field(const json_t *body, const char *key, int64_t def, int64_t min, int64_t max, int64_t *out,
          struct ls_error *err)
{
    const json_t *v = json_object_get(body, key);
    *out = def;
    if (!v || json_is_null(v)) return 0;
    if (json_is_integer(v))
        *out = json_integer_value(v);
    else if (json_is_string(v) && strcmp(key, "package_bytes") == 0) {
        uint64_t u;
        if (ls_parse_size(json_string_value(v), &u) || u > (uint64_t)max)
            return ls_error_set(err, LS_EINVAL, "%s: expected a size (64M)", key);
        *out = (int64_t)u;
    } else if (json_is_string(v) && strcmp(key, "every_ms") == 0) {
        if (ls_parse_duration_ms(json_string_value(v), out))
            return ls_error_set(err, LS_EINVAL, "every: expected a duration (30s, 10m, 1h)");
    } else {
        return ls_error_set(err, LS_EINVAL, "%s must be an integer", key);
    }
    if (*out < min || *out > max)
        return ls_error_set(err, LS_EINVAL, "%s must be from %lld to %lld", key, (long long)min,
                            (long long)max);
    return 0;
}

/* Within one of the --mirror-root directories (or no roots are set). */
static int
within_roots(const char *path, const struct strlist *roots)
{
    if (!roots || roots->n == 0) return 1;
    for (int i = 0; i < roots->n; i++)
        if (mirror_path_within(path, roots->v[i])) return 1;
    return 0;
}

int
mirror_def_check(const json_t *body, const char *data_dir, const struct strlist *roots,
                 char name[65], json_t **def_out, struct ls_error *err)
{
    const char *nm = json_string_value(json_object_get(body, "name"));
    const char *src = json_string_value(json_object_get(body, "source"));
    const json_t *targets = json_object_get(body, "targets"), *v;
    const char *src_dir = NULL;
    json_t *def = json_object(), *tl = json_array();
    int64_t n;
    size_t i;
    int rc = 0;

    *def_out = NULL;
    json_object_set_new(def, "targets", tl);
    if (!json_is_object(body)) {
        rc = ls_error_set(err, LS_EINVAL, "a mirror job is a JSON object");
        goto out;
    }
    if (!nm || !name_valid(nm)) {
        rc = ls_error_set(err, LS_EINVAL,
                          "name: 1 to 64 characters of letters, digits, '-', '_' and '.'");
        goto out;
    }
    snprintf(name, 65, "%s", nm);
    if (!src) {
        rc = ls_error_set(err, LS_EINVAL, "source is missing (store:/PREFIX or dir:/PATH)");
        goto out;
    }
    if (strncmp(src, "store:", 6) == 0) {
        struct ls_error perr;
        size_t len = strlen(src + 6);
        while (len > 1 && src[6 + len - 1] == '/')
            len--;
        if (src[6] != '/' || (len > 1 && path_check(src + 6, len, &perr))) {
            rc = ls_error_set(err, LS_EINVAL, "source %s: store:/PREFIX takes an item path", src);
            goto out;
        }
    } else if (strncmp(src, "dir:", 4) == 0) {
        if (!(src_dir = dir_spec(src, "source", err))) {
            rc = LS_EINVAL;
            goto out;
        }
        if (!within_roots(src_dir, roots)) {
            rc = ls_error_set(err, LS_EINVAL, "source %s is outside every --mirror-root", src);
            goto out;
        }
    } else if (strncmp(src, "lockstep://", 11) == 0) {
        struct mirror_def *probe = calloc(1, sizeof *probe);
        rc = probe ? mirror_remote_spec(src, probe, err) : ls_error_set(err, LS_ENOMEM, NULL);
        free(probe);
        if (rc) goto out;
    } else {
        rc = ls_error_set(err, LS_EINVAL,
                          "source %s: unknown scheme (store:/PREFIX, dir:/PATH or "
                          "lockstep://HOST:PORT/export/NAME)",
                          src);
        goto out;
    }
    json_object_set_new(def, "source", json_string(src));
    {
        /* a remote's token: the file's name is kept (and shown), never the token */
        const json_t *tf = json_object_get(body, "token_file");
        if (tf && !json_is_null(tf)) {
            const char *f = json_string_value(tf);
            if (!f || f[0] != '/' || strlen(f) >= 4000) {
                rc = ls_error_set(err, LS_EINVAL, "token_file: an absolute path");
                goto out;
            }
            json_object_set_new(def, "token_file", json_string(f));
        }
    }
    if (!json_is_array(targets) || json_array_size(targets) == 0 ||
        json_array_size(targets) > TARGETS_MAX) {
        rc = ls_error_set(err, LS_EINVAL, "targets: a list of 1 to %d targets", TARGETS_MAX);
        goto out;
    }
    json_array_foreach(targets, i, v)
    {
        const char *t = json_string_value(v), *p;
        size_t j;
        json_t *w;
        if (t && strncmp(t, "lockstep://", 11) == 0) {
            char url[300], prefix[4096];
            if ((rc = mirror_push_spec(t, url, sizeof url, prefix, sizeof prefix, err))) goto out;
            json_array_foreach(tl, j, w) if (strcmp(json_string_value(w), t) == 0)
            {
                rc = ls_error_set(err, LS_EINVAL, "target %s is given twice", t);
                goto out;
            }
            json_array_append_new(tl, json_string(t));
            continue;
        }
        if (!t || !(p = dir_spec(t, "target", err))) {
            if (t && strncmp(t, "dir:", 4) == 0)
                rc = LS_EINVAL;
            else
                rc = ls_error_set(err, LS_EINVAL,
                                  "target %s: unknown scheme (dir:/PATH or "
                                  "lockstep://HOST:PORT/PREFIX)",
                                  t ? t : "(not a string)");
            goto out;
        }
        if (!within_roots(p, roots)) {
            rc = ls_error_set(err, LS_EINVAL, "target %s is outside every --mirror-root", t);
            goto out;
        }
        if (data_dir && (mirror_path_within(p, data_dir) || mirror_path_within(data_dir, p))) {
            rc = ls_error_set(err, LS_EINVAL, "target %s overlaps this server's data directory", t);
            goto out;
        }
        if (src_dir && (mirror_path_within(p, src_dir) || mirror_path_within(src_dir, p))) {
            rc = ls_error_set(err, LS_EINVAL, "target %s overlaps the source %s", t, src);
            goto out;
        }
        json_array_foreach(tl, j, w) if (strcmp(json_string_value(w), t) == 0)
        {
            rc = ls_error_set(err, LS_EINVAL, "target %s is given twice", t);
            goto out;
        }
        json_array_append_new(tl, json_string(t));
    }
    if ((rc = glob_list(body, "include", def, err)) || (rc = glob_list(body, "exclude", def, err)))
        goto out;
    if (json_is_true(json_object_get(body, "published_only")) && strncmp(src, "store:", 6) != 0 &&
        (strncmp(src, "lockstep://", 11) != 0 || strstr(src + 11, "/export/"))) {
        rc = ls_error_set(err, LS_EINVAL, "published_only takes a store: source");
        goto out;
    }
    json_object_set_new(def, "published_only",
                        json_boolean(json_is_true(json_object_get(body, "published_only"))));
    json_object_set_new(def, "delete", json_boolean(json_is_true(json_object_get(body, "delete"))));
    if (json_is_true(json_object_get(body, "live")) && strncmp(src, "store:", 6) != 0) {
        /* it follows this server's change log: a remote or a directory has none here */
        rc = ls_error_set(err, LS_EINVAL, "live takes a store: source (this server's store)");
        goto out;
    }
    json_object_set_new(def, "live", json_boolean(json_is_true(json_object_get(body, "live"))));
    if ((rc = int_field(body, "every_ms", 0, 0, INT64_C(365) * 86400000, &n, err))) goto out;
    if (n > 0 && n < 1000) {
        rc = ls_error_set(err, LS_EINVAL, "every: at least 1s");
        goto out;
    }
    json_object_set_new(def, "every_ms", json_integer(n));
    if ((rc = int_field(body, "package_items", 1000, 1, 1000000, &n, err))) goto out;
    json_object_set_new(def, "package_items", json_integer(n));
    if ((rc = int_field(body, "package_bytes", 64 << 20, 1, INT64_C(1) << 40, &n, err))) goto out;
    json_object_set_new(def, "package_bytes", json_integer(n));
    if ((rc = int_field(body, "max_errors", 1000, 0, INT32_MAX, &n, err))) goto out;
    json_object_set_new(def, "max_errors", json_integer(n));
out:
    if (rc)
        json_decref(def);
    else
        *def_out = def;
    return rc;
}

static void
def_release(struct mirror_def *d)
{
    for (int i = 0; i < d->ntargets; i++)
        free(d->targets[i]);
    for (int i = 0; i < d->ninclude; i++)
        free(d->include[i]);
    for (int i = 0; i < d->nexclude; i++)
        free(d->exclude[i]);
    memset(d, 0, sizeof *d);
}

/* The stored (checked) definition into its working form. */
static void
def_load(struct mirror_def *d, const json_t *j)
{
    const char *src = json_string_value(json_object_get(j, "source"));
    const json_t *v;
    size_t i;
    memset(d, 0, sizeof *d);
    if (!src) src = "store:/";
    if (strncmp(src, "lockstep://", 11) == 0) {
        struct ls_error err;
        mirror_remote_spec(src, d, &err); /* checked when the job was made */
    } else {
        d->src_kind = strncmp(src, "dir:", 4) == 0 ? SRC_DIR : SRC_STORE;
        snprintf(d->src_path, sizeof d->src_path, "%s", src + (d->src_kind == SRC_DIR ? 4 : 6));
    }
    if (json_is_string(json_object_get(j, "token_file")))
        snprintf(d->token_file, sizeof d->token_file, "%s",
                 json_string_value(json_object_get(j, "token_file")));
    for (size_t n = strlen(d->src_path); n > 1 && d->src_path[n - 1] == '/'; n--)
        d->src_path[n - 1] = '\0';
    json_array_foreach(json_object_get(j, "targets"), i, v) if (d->ntargets < TARGETS_MAX)
        d->targets[d->ntargets++] = strdup(json_string_value(v));
    json_array_foreach(json_object_get(j, "include"), i, v) if (d->ninclude < GLOBS_MAX)
        d->include[d->ninclude++] = strdup(json_string_value(v));
    json_array_foreach(json_object_get(j, "exclude"), i, v) if (d->nexclude < GLOBS_MAX)
        d->exclude[d->nexclude++] = strdup(json_string_value(v));
    d->published_only = json_is_true(json_object_get(j, "published_only"));
    d->delete_missing = json_is_true(json_object_get(j, "delete"));
    d->live = d->src_kind == SRC_STORE && json_is_true(json_object_get(j, "live"));
    d->every_ms = json_integer_value(json_object_get(j, "every_ms"));
    d->package_items = json_integer_value(json_object_get(j, "package_items"));
    d->package_bytes = json_integer_value(json_object_get(j, "package_bytes"));
    d->max_errors = json_integer_value(json_object_get(j, "max_errors"));
    if (d->package_items <= 0) d->package_items = 1000;
    if (d->package_bytes <= 0) d->package_bytes = 64 << 20;
    for (int k = 0; k < d->ntargets; k++) /* a remote target takes a package in one request */
        if (strncmp(d->targets[k], "lockstep://", 11) == 0 && d->package_bytes > PUSH_PACKAGE_BYTES)
            d->package_bytes = PUSH_PACKAGE_BYTES;
}

/* Whether an item path ("/a/b") passes --include and --exclude. */
int
mirror_path_selected(const struct mirror_def *d, const char *path)
{
    int in = d->ninclude == 0;
    for (int i = 0; i < d->ninclude && !in; i++)
        in = fnmatch(d->include[i], path, 0) == 0;
    for (int i = 0; i < d->nexclude && in; i++)
        in = fnmatch(d->exclude[i], path, 0) != 0;
    return in;
}

/* ---------------------------------------------------------------- writes through the writer */

static void bridge_finish(struct wreq *r, void *arg);

/* A request that can no longer reach the writer (stopping) fails like a refused one. */
static void
bridge_finish_unsent(struct mirrors *m, struct bridge *b)
{
    (void)m;
    b->r->rc = ls_error_set(&b->r->err, LS_EUNAVAIL, "the server is stopping");
    b->r->done(b->r, b->r->arg);
}

/* A request for the writer, on the loop: queued by a run thread, submitted here. */
static void
on_outq(evutil_socket_t fd, short what, void *arg)
{
    struct mirrors *m = arg;
    struct bridge *list;
    pthread_mutex_lock(&m->mu);
    list = m->outq;
    m->outq = NULL;
    pthread_mutex_unlock(&m->mu);
    /* reversed: the queue is a stack; keep the order of submission */
    struct bridge *rev = NULL;
    while (list) {
        struct bridge *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    for (struct bridge *b = rev, *n; b; b = n) {
        n = b->next;
        if (m->srv->writer)
            writer_submit(m->srv->writer, b->r);
        else
            bridge_finish_unsent(m, b);
    }
}

struct bridge_arg {
    struct mirrors *m;
    struct bridge *b;
};

static void
bridge_finish(struct wreq *r, void *arg)
{
    struct bridge_arg *ba = arg;
    struct mirrors *m = ba->m;
    struct bridge *b = ba->b;
    int abandoned;
    pthread_mutex_lock(&m->mu);
    b->done = 1;
    abandoned = b->abandoned;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    if (abandoned) { /* the run stopped waiting (the server is stopping) */
        wreq_free(r);
        free(b);
    }
    free(ba);
}

/*
 * On a run thread: runs fn(st, r) on the writer thread, inside a transaction, and waits until
 * it has committed. The result, or LS_EUNAVAIL when the run was cancelled while waiting (then
 * the request may still commit: everything a run writes is safe to write again).
 */
int
mirror_run_write(struct mirror_run *run, int (*fn)(struct store *st, struct wreq *r), void *arg,
                 struct ls_error *err)
{
    struct mirrors *m = run->m;
    struct bridge *b = calloc(1, sizeof *b);
    struct bridge_arg *ba = calloc(1, sizeof *ba);
    struct wreq *r = calloc(1, sizeof *r);
    int rc;
    if (!b || !ba || !r) {
        free(b);
        free(ba);
        free(r);
        return ls_error_set(err, LS_ENOMEM, NULL);
    }
    r->type = WREQ_CUSTOM;
    r->fn = fn;
    r->fn_arg = arg;
    r->done = bridge_finish;
    r->arg = ba;
    ba->m = m;
    ba->b = b;
    b->r = r;
    pthread_mutex_lock(&m->mu);
    b->next = m->outq;
    m->outq = b;
    event_active(m->wake, EV_READ, 0);
    while (!b->done && !atomic_load(&run->cancel))
        pthread_cond_wait(&m->cv, &m->mu);
    if (!b->done) {
        b->abandoned = 1;
        pthread_mutex_unlock(&m->mu);
        return ls_error_set(err, LS_EUNAVAIL, "the server is stopping");
    }
    pthread_mutex_unlock(&m->mu);
    rc = r->rc;
    if (rc) *err = r->err;
    wreq_free(r);
    free(b);
    return rc;
}

/* ---------------------------------------------------------------- a run */

static void
run_finish_state(struct mirror_run *run)
{
    int failed = 0, partial = run->errors > 0;
    for (int i = 0; i < run->nt; i++) {
        if (run->t[i].failed) failed++;
        if (run->t[i].errors) partial = 1;
    }
    pthread_mutex_lock(&run->mu);
    if (run->skipped && !run->fatal && !atomic_load(&run->cancel))
        snprintf(run->state, sizeof run->state, "skipped");
    else if (run->fatal || atomic_load(&run->cancel) || failed == run->nt)
        snprintf(run->state, sizeof run->state, "failed");
    else if (failed || partial)
        snprintf(run->state, sizeof run->state, "partial");
    else
        snprintf(run->state, sizeof run->state, "ok");
    if (atomic_load(&run->cancel) && !*run->note)
        snprintf(run->note, sizeof run->note, "the server stopped");
    run->ended = 1;
    run->phase = "done";
    pthread_mutex_unlock(&run->mu);
}

static int
last_run_state(void *arg, const struct ls_mirror_run *r)
{
    snprintf(arg, 16, "%s", r->state);
    return 1;
}

/* The last run as mirrors_start finds it: its state, end, errors and note. */
static int
last_run_info(void *arg, const struct ls_mirror_run *r)
{
    struct mirror_job *j = arg;
    snprintf(j->last_state, sizeof j->last_state, "%s", r->state);
    snprintf(j->last_note, sizeof j->last_note, "%s", r->note ? r->note : "");
    j->last_ended = r->ended;
    j->last_errors = r->errors;
    return 1;
}

/* The runs a crash cut short, newest first, up to the last that was not: what they did. */
struct resumed {
    int n;
    int64_t items, bytes, items_before, bytes_before, items_total, bytes_total;
};

static int
resumed_run(void *arg, const struct ls_mirror_run *r)
{
    struct resumed *c = arg;
    int cut = c->n == 0 ? strcmp(r->state, "running") == 0
                        : strcmp(r->state, "failed") == 0 && r->note &&
                              strcmp(r->note, "interrupted") == 0;
    if (!cut) return 1;
    if (c->n++ == 0) {
        c->items_total = r->items_total;
        c->bytes_total = r->bytes_total;
    } else {
        c->items_before += r->items;
        c->bytes_before += r->bytes;
    }
    c->items += r->items;
    c->bytes += r->bytes;
    return 0;
}

/* A resumed run starts from what the runs it resumes did, and from their percentage. */
static void
resume_progress(struct mirror_run *run)
{
    struct resumed c = {0};
    double pct = 0;
    store_mirror_runs(run->st, run->job_name, 1000, resumed_run, &c);
    if (!c.n) return;
    /* the newest interrupted run's percentage: its own total plus what it carried */
    if (c.bytes_before + c.bytes_total > 0)
        pct = 100.0 * (double)c.bytes / (double)(c.bytes_before + c.bytes_total);
    else if (c.items_before + c.items_total > 0)
        pct = 100.0 * (double)c.items / (double)(c.items_before + c.items_total);
    pthread_mutex_lock(&run->mu);
    run->carry_items = c.items;
    run->carry_bytes = c.bytes;
    run->percent = pct > 100.0 ? 100.0 : pct;
    pthread_mutex_unlock(&run->mu);
}

static int
commit_begin(struct store *st, struct wreq *r)
{
    struct ls_mirror_run *rec = r->fn_arg;
    return store_mirror_run_save(st, rec, &r->err);
}

/*
 * --live, on the run's thread: waits until a commit came after *done (the seq the last pass
 * started from), then a moment more so that a burst of commits makes one pass. 0: stop (the
 * job was paused, or the server stops).
 */
static int
live_wait(struct mirror_run *run, int64_t *done)
{
    int go;
    pthread_mutex_lock(&run->mu);
    run->phase = "live";
    while (!atomic_load(&run->cancel) && !run->live_stop && run->live_seq <= *done) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&run->cv, &run->mu, &ts);
    }
    go = !atomic_load(&run->cancel) && !run->live_stop;
    pthread_mutex_unlock(&run->mu);
    if (go) usleep(LIVE_BATCH_MS * 1000);
    pthread_mutex_lock(&run->mu);
    *done = run->live_seq;
    pthread_mutex_unlock(&run->mu);
    return go && !atomic_load(&run->cancel);
}

/* --live: after the first pass, one pass of the log per burst of commits, until paused. */
static int
live_follow(struct mirror_run *run, struct package *p, int64_t done)
{
    struct commit_arg a = {run, p, 0};
    struct ls_error err;
    int rc;
    log_info("mirror %s: following the change log", run->job_name);
    while (live_wait(run, &done)) {
        for (int i = 0; i < run->nt; i++)
            run->t[i].stuck = 0; /* a failed item is tried again from its target's checkpoint */
        if ((rc = mirror_run_store(run, p))) return rc;
        /* the checkpoints moved even when nothing under the prefix changed: record them */
        mirror_record_fill(run, p);
        if ((rc = mirror_run_write(run, mirror_commit_run, &a, &err))) {
            snprintf(run->note, sizeof run->note, "cannot record a package: %.200s", err.msg);
            run->fatal = 1;
            return rc;
        }
        mirror_package_clear(p);
    }
    return 0;
}

static void *
run_main(void *arg)
{
    struct mirror_run *run = arg;
    struct store_options opt = run->m->srv->store_opt;
    struct package p = {.run = run};
    struct ls_mirror_run rec = {.job = run->job_name, .state = "running"};
    struct ls_error err;
    int interrupted = 0, rc = 0;

    opt.readonly = 1;
    /* the run reads its index and the store in order, a page at a time: a small cache does */
    opt.cache_kib = 2000;
    rec.started = run->started_ms;
    if (!(run->st = store_open(store_dir(run->m->srv->reader), &opt, &err))) {
        log_error("mirror %s: cannot open the store: %s", run->job_name, err.msg);
        goto out;
    }
    /* the previous run still says "running": it was cut short, and may have left temp files */
    {
        char prev[16] = "";
        store_mirror_runs(run->st, run->job_name, 1, last_run_state, prev);
        interrupted = strcmp(prev, "running") == 0;
    }
    if (interrupted) resume_progress(run);
    if (mirror_run_write(run, commit_begin, &rec, &err)) {
        log_error("mirror %s: cannot record the run: %s", run->job_name, err.msg);
        goto out;
    }
    pthread_mutex_lock(&run->mu);
    run->id = rec.id;
    pthread_mutex_unlock(&run->mu);
    log_info("mirror %s: run %lld started", run->job_name, (long long)run->id);
    for (int i = 0; i < run->nt; i++) {
        struct target_state *t = &run->t[i];
        int e;
        store_mirror_checkpoint_get(run->st, run->job_name, t->name, &t->cp);
        if (t->remote) continue;
        if ((e = ls_mkdir_p(t->root, 0755)) < 0) {
            t->failed = 1;
            snprintf(t->reason, sizeof t->reason, "cannot create %s: %s", t->root, strerror(-e));
            mirror_item_error(run, &p, i, "/", "%s", t->reason);
            continue;
        }
        if (interrupted) mirror_sweep_tmp(t->root);
    }
    if (run->def->src_kind == SRC_STORE) {
        int64_t done;
        pthread_mutex_lock(&run->mu);
        done = run->live_seq; /* the pass reads the store's position: at least this */
        pthread_mutex_unlock(&run->mu);
        rc = mirror_run_store(run, &p);
        if (!rc && run->def->live && !atomic_load(&run->cancel)) rc = live_follow(run, &p, done);
    } else if (run->def->src_kind == SRC_EXPORT)
        rc = mirror_run_export(run, &p);
    else if (run->def->src_kind == SRC_RSTORE)
        rc = mirror_run_rstore(run, &p);
    else
        rc = mirror_run_dir(run, &p);
    if (rc && !atomic_load(&run->cancel)) { /* whatever stopped it, the run did not finish */
        run->fatal = 1;
        if (!*run->note) snprintf(run->note, sizeof run->note, "%s", ls_strerror(rc));
    }
out:
    run_finish_state(run);
    if (run->id) {
        struct commit_arg a = {run, &p, 1};
        mirror_record_fill(run, &p);
        if (!atomic_load(&run->cancel) && mirror_run_write(run, mirror_commit_run, &a, &err))
            log_error("mirror %s: cannot record the run's end: %s", run->job_name, err.msg);
        log_info("mirror %s: run %lld %s: %lld items, %lld bytes, %lld errors%s%s", run->job_name,
                 (long long)run->id, run->state, (long long)run->items_done,
                 (long long)run->bytes_done, (long long)run->errors, *run->note ? ": " : "",
                 run->note);
    }
    mirror_package_release(&p);
    mirror_push_free(run);
    mirror_remote_close(run);
    store_free(run->st);
    run->st = NULL;
    atomic_store(&run->ended, 1);
    event_active(run->m->reap, EV_READ, 0);
    return NULL;
}

static void
run_free(struct mirror_run *run)
{
    server_cancel_wait(run->m->srv, &run->live_w);
    pthread_cond_destroy(&run->cv);
    pthread_mutex_destroy(&run->mu);
    free(run);
}

/* On the loop: joins the runs whose threads have ended. */
static void
on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct mirrors *m = arg;
    for (struct mirror_job *j = m->jobs; j; j = j->next) {
        struct mirror_run *run = j->run;
        if (!run || !atomic_load(&run->ended)) continue;
        pthread_join(run->thread, NULL);
        snprintf(j->last_state, sizeof j->last_state, "%s", run->state);
        if (strcmp(run->state, "ok") == 0) j->counted.runs_ok++;
        else if (strcmp(run->state, "partial") == 0) j->counted.runs_partial++;
        else j->counted.runs_failed++;
        j->counted.items += (uint64_t)run->items_done;
        j->counted.bytes += (uint64_t)run->bytes_done;
        j->counted.errors += (uint64_t)run->errors;
        snprintf(j->last_note, sizeof j->last_note, "%s", run->note);
        j->last_ended = ls_now_ms();
        j->last_errors = run->errors;
        json_decref(j->last_end);
        j->last_end = run->id ? mirror_progress_json(run) : NULL;
        j->run = NULL;
        run_free(run);
    }
}

/* On the loop, after a commit: tells a --live run, and waits for the next one. */
static void
live_fire(struct seq_waiter *w, int timed_out)
{
    struct mirror_run *run = w->arg;
    struct server *srv = run->m->srv;
    pthread_mutex_lock(&run->mu);
    run->live_seq = srv->pos.seq;
    pthread_cond_signal(&run->cv);
    pthread_mutex_unlock(&run->mu);
    if (timed_out) return; /* the server stops */
    w->target = srv->pos.seq + 1;
    server_wait_seq(srv, w);
}

int
mirror_run_now(struct server *srv, struct mirror_job *job, struct ls_error *err)
{
    struct mirror_run *run;
    if (job->run) return ls_error_set(err, LS_ECONFLICT, "mirror %s is running already", job->name);
    if (job->paused) return ls_error_set(err, LS_ECONFLICT, "mirror %s is paused", job->name);
    if (srv->stopping) return ls_error_set(err, LS_EUNAVAIL, "the server is stopping");
    if (!(run = calloc(1, sizeof *run))) return ls_error_set(err, LS_ENOMEM, NULL);
    run->job = job;
    run->m = job->m;
    run->def = &job->def;
    snprintf(run->job_name, sizeof run->job_name, "%s", job->name);
    pthread_mutex_init(&run->mu, NULL);
    pthread_cond_init(&run->cv, NULL);
    run->live_w.fire = live_fire;
    run->live_w.arg = run;
    run->live_seq = srv->pos.seq;
    run->phase = "starting";
    snprintf(run->state, sizeof run->state, "running");
    run->started_ms = ls_now_ms();
    run->started_mono = ls_mono_ms();
    run->nt = job->def.ntargets;
    for (int i = 0; i < run->nt; i++) {
        struct target_state *t = &run->t[i];
        t->name = job->def.targets[i];
        t->root = job->def.targets[i] + 4;
        if (strncmp(t->name, "lockstep://", 11) == 0) {
            t->remote = 1;
            t->root = NULL;
            mirror_push_spec(t->name, t->url, sizeof t->url, t->prefix, sizeof t->prefix, err);
        }
    }
    job->run = run;
    if (job->def.live) {
        run->live_w.target = srv->pos.seq + 1;
        server_wait_seq(srv, &run->live_w);
    }
    if (pthread_create(&run->thread, NULL, run_main, run)) {
        job->run = NULL;
        run_free(run);
        return ls_error_set(err, LS_EUNAVAIL, "cannot start the run's thread");
    }
    return 0;
}

/* ---------------------------------------------------------------- the jobs */

static void
on_every(evutil_socket_t fd, short what, void *arg)
{
    struct mirror_job *job = arg;
    struct ls_error err;
    if (job->paused || job->run) return; /* one run at a time: this tick is skipped */
    if (mirror_run_now(job->m->srv, job, &err))
        log_warn("mirror %s: cannot start the scheduled run: %s", job->name, err.msg);
}

struct mirror_job *
mirror_find(struct server *srv, const char *name)
{
    if (!srv->mirrors) return NULL;
    for (struct mirror_job *j = srv->mirrors->jobs; j; j = j->next)
        if (strcmp(j->name, name) == 0) return j;
    return NULL;
}

int
mirror_running(const struct mirror_job *job)
{
    return job->run != NULL;
}

static void
job_free(struct mirror_job *j)
{
    if (j->timer) event_free(j->timer);
    def_release(&j->def);
    json_decref(j->def_json);
    json_decref(j->last_end);
    free(j);
}

int
mirror_added(struct server *srv, const char *name, json_t *def)
{
    struct mirrors *m = srv->mirrors;
    struct mirror_job *j = calloc(1, sizeof *j), **pp;
    if (!j) {
        json_decref(def);
        return LS_ENOMEM;
    }
    j->m = m;
    snprintf(j->name, sizeof j->name, "%s", name);
    j->def_json = def;
    def_load(&j->def, def);
    if (j->def.every_ms > 0 && (j->timer = event_new(srv->base, -1, EV_PERSIST, on_every, j))) {
        struct timeval tv = {j->def.every_ms / 1000, (j->def.every_ms % 1000) * 1000};
        event_add(j->timer, &tv);
    }
    for (pp = &m->jobs; *pp && strcmp((*pp)->name, name) < 0; pp = &(*pp)->next) {
    }
    j->next = *pp;
    *pp = j;
    return 0;
}

void
mirror_removed(struct server *srv, const char *name)
{
    for (struct mirror_job **pp = &srv->mirrors->jobs; *pp; pp = &(*pp)->next) {
        struct mirror_job *j = *pp;
        if (strcmp(j->name, name) != 0) continue;
        if (j->run) return; /* the API refuses to remove a running job */
        *pp = j->next;
        job_free(j);
        return;
    }
}

void
mirror_paused(struct server *srv, const char *name, int paused)
{
    struct mirror_job *j = mirror_find(srv, name);
    struct ls_error err;
    if (!j) return;
    j->paused = paused;
    if (j->run && paused) { /* a --live run ends after its pass */
        pthread_mutex_lock(&j->run->mu);
        j->run->live_stop = 1;
        pthread_cond_signal(&j->run->cv);
        pthread_mutex_unlock(&j->run->mu);
    }
    /* a --live job follows the log again (a run goes on from its checkpoints) */
    if (!paused && j->def.live && !j->run && mirror_run_now(srv, j, &err))
        log_warn("mirror %s: cannot start following the log: %s", j->name, err.msg);
}

json_t *
mirror_job_json(struct mirror_job *job)
{
    json_t *o = json_pack("{s:s,s:O,s:b,s:b}", "name", job->name, "definition", job->def_json,
                          "paused", job->paused, "running", job->run != NULL);
    if (job->run) json_object_set_new(o, "progress", mirror_progress_json(job->run));
    if (*job->last_state) json_object_set_new(o, "last_state", json_string(job->last_state));
    if (job->last_ended > 0) {
        char t[40];
        ls_format_time(job->last_ended, t, sizeof t);
        json_object_set_new(o, "last_ended", json_string(t));
        json_object_set_new(o, "last_errors", json_integer(job->last_errors));
        if (*job->last_note) json_object_set_new(o, "last_note", json_string(job->last_note));
    }
    return o;
}

void
mirror_count(struct mirror_job *job, struct mirror_counters *out)
{
    struct mirror_run *run = job->run;
    *out = job->counted;
    out->running = run != NULL;
    if (!run) return;
    pthread_mutex_lock(&run->mu);
    out->items += (uint64_t)run->items_done;
    out->bytes += (uint64_t)run->bytes_done;
    out->errors += (uint64_t)run->errors;
    out->run_items_total = run->items_total;
    out->run_bytes_total = run->bytes_total;
    pthread_mutex_unlock(&run->mu);
}

struct mirror_job *
mirror_next(struct server *srv, struct mirror_job *prev)
{
    if (prev) return prev->next;
    return srv->mirrors ? srv->mirrors->jobs : NULL;
}

const char *
mirror_name(const struct mirror_job *job)
{
    return job->name;
}

static void
event_add_json(struct evbuffer *out, const char *event, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    if (s) sse_format(out, event, NULL, s);
    free(s);
}

void
mirror_events(struct mirror_job *job, struct evbuffer *out, int64_t *seen_end, int *first)
{
    int64_t end_id = job->last_end ? json_integer_value(json_object_get(job->last_end, "run")) : 0;
    if (*first) {
        *first = 0;
        *seen_end = end_id;
        if (!job->run) {
            json_t *o = json_pack("{s:s,s:b}", "name", job->name, "paused", job->paused);
            if (*job->last_state)
                json_object_set_new(o, "last_state", json_string(job->last_state));
            if (job->last_end) json_object_set(o, "last", job->last_end);
            event_add_json(out, "idle", o);
            json_decref(o);
        }
    } else if (end_id > *seen_end) { /* a run ended since the last look */
        *seen_end = end_id;
        event_add_json(out, "end", job->last_end);
    }
    if (job->run) {
        json_t *o;
        int64_t id;
        pthread_mutex_lock(&job->run->mu);
        id = job->run->id;
        pthread_mutex_unlock(&job->run->mu);
        if (!id) return; /* not recorded yet */
        o = mirror_progress_json(job->run);
        event_add_json(out, "progress", o);
        json_decref(o);
    }
}

json_t *
mirror_list_json(struct server *srv)
{
    json_t *a = json_array();
    for (struct mirror_job *j = srv->mirrors ? srv->mirrors->jobs : NULL; j; j = j->next)
        json_array_append_new(a, mirror_job_json(j));
    return a;
}

/* ---------------------------------------------------------------- start and stop */

struct load_ctx {
    struct server *srv;
    int n;
};

static int
load_job(void *arg, const char *name, const char *def, int paused)
{
    struct load_ctx *l = arg;
    json_t *j = json_loads(def, 0, NULL);
    if (!j) {
        log_warn("mirror %s: its stored definition is not JSON; ignored", name);
        return 0;
    }
    if (mirror_added(l->srv, name, j) == 0) mirror_find(l->srv, name)->paused = paused;
    l->n++;
    return 0;
}

int
mirrors_start(struct server *srv, struct ls_error *err)
{
    struct mirrors *m = calloc(1, sizeof *m);
    struct load_ctx l = {srv, 0};
    if (!m) return ls_error_set(err, LS_ENOMEM, NULL);
    m->srv = srv;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    srv->mirrors = m;
    if (!(m->wake = event_new(srv->base, -1, 0, on_outq, m)) ||
        !(m->reap = event_new(srv->base, -1, 0, on_reap, m)))
        return ls_error_set(err, LS_ENOMEM, NULL);
    if (store_mirror_jobs(srv->reader, load_job, &l) < 0)
        return ls_error_set(err, LS_EIO, "cannot read the mirroring jobs");
    for (struct mirror_job *j = m->jobs; j; j = j->next) {
        store_mirror_runs(srv->reader, j->name, 1, last_run_info, j);
        /* a run a crash cut short goes on from its checkpoints */
        if (strcmp(j->last_state, "running") == 0 && !j->paused) {
            struct ls_error e;
            log_info("mirror %s: its last run was interrupted; running it again", j->name);
            if (mirror_run_now(srv, j, &e)) log_warn("mirror %s: %s", j->name, e.msg);
        }
    }
    if (l.n) log_info("%d mirroring job(s)", l.n);
    return 0;
}

void
mirrors_stop(struct server *srv)
{
    struct mirrors *m = srv->mirrors;
    if (!m) return;
    for (struct mirror_job *j = m->jobs; j; j = j->next) {
        if (j->timer) event_del(j->timer);
        if (!j->run) continue;
        atomic_store(&j->run->cancel, 1);
        pthread_mutex_lock(&j->run->mu);
        pthread_cond_signal(&j->run->cv);
        pthread_mutex_unlock(&j->run->mu);
    }
    pthread_mutex_lock(&m->mu);
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    for (struct mirror_job *j = m->jobs; j; j = j->next) {
        if (!j->run) continue;
        pthread_join(j->run->thread, NULL);
        run_free(j->run);
        j->run = NULL;
    }
    /* what the runs queued and the loop never handed over: abandoned by their runs */
    for (struct bridge *b = m->outq, *n; b; b = n) {
        n = b->next;
        free(b->r->arg);
        wreq_free(b->r);
        free(b);
    }
    m->outq = NULL;
}

void
mirrors_free(struct server *srv)
{
    struct mirrors *m = srv->mirrors;
    if (!m) return;
    mirrors_stop(srv);
    while (m->jobs) {
        struct mirror_job *j = m->jobs;
        m->jobs = j->next;
        job_free(j);
    }
    if (m->wake) event_free(m->wake);
    if (m->reap) event_free(m->reap);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
    srv->mirrors = NULL;
}
