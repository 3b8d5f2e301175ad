/*
 * mirror.c - mirroring jobs (docs/mirror.md): the jobs the loop knows, their --every timers, and
 * the runs, each on a thread of its own.
 *
 * A run scans its source once and feeds every target from that scan. Items are grouped into
 * packages (--package-items, --package-bytes); once every target has applied a package (files
 * written to a temporary name, fsynced, renamed, then the file system synced), one writer request
 * records each target's checkpoint (and, for a directory source, its index rows), the package's
 * errors and the run's progress, in one transaction. A run killed mid-way therefore resumes after
 * the last package the store holds as applied, and never sends it again.
 *
 * The scan streams: a store source is read in pages (a full pass in path order, then the change
 * log by seq); a directory source is walked with one open directory per level, twice (the first
 * pass counts what is to do, so that the ETA is real). Nothing holds the whole tree.
 *
 * Threads: the loop owns the job list and starts and reaps runs; a run's thread owns its
 * packages and reads the store through a read-only handle of its own. Its writes go to the
 * loop (the writer is the loop's to talk to) through a small queue and come back through a
 * condition variable. Progress is shared under the run's mutex.
 *
 * Not for: the HTTP routes (http/mirror.c), the tables (core/store/mirror.c). Remote targets,
 * exports, leases and deltas are not here yet.
 */
#include "node/mirror.h"
#include "node/server.h"
#include "common/log.h"
#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TARGETS_MAX 16
#define GLOBS_MAX 32
#define WALK_DEPTH_MAX 128
#define PAGE 500
#define TMP_PREFIX ".lsmirror-"

enum { SRC_STORE, SRC_DIR };
enum { IT_FILE, IT_LINK, IT_DEL };

struct mirror_def {
    int src_kind;
    char src_path[4096]; /* the store prefix ("/" for all), or the directory */
    int ntargets;
    char *targets[TARGETS_MAX]; /* "dir:/path", as given (their names in the tables) */
    int ninclude, nexclude;
    char *include[GLOBS_MAX], *exclude[GLOBS_MAX];
    int published_only, delete_missing;
    int64_t every_ms, package_items, package_bytes, max_errors;
};

struct mirror_run;

struct mirror_job {
    struct mirror_job *next;
    struct mirrors *m;
    char name[65];
    json_t *def_json;
    struct mirror_def def;
    int paused;
    struct event *timer; /* --every */
    struct mirror_run *run;
    /* the last run's outcome, for the listing */
    char last_state[16];
};

/* A write a run hands to the writer; whoever of the run and the loop finishes last frees it. */
struct bridge {
    struct bridge *next;
    struct wreq *r;
    int done, abandoned;
};

struct mirrors {
    struct server *srv;
    struct mirror_job *jobs;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* a bridge request is done */
    struct bridge *outq;     /* from run threads, for the writer */
    struct event *wake;      /* outq has something */
    struct event *reap;      /* a run thread has ended */
};

struct target_state {
    const char *name; /* "dir:/path" */
    const char *root;
    int failed;
    int stuck; /* an item failed: the checkpoint stays where it was for the rest of the run */
    int64_t items, bytes, errors;
    char reason[256];
    struct ls_mirror_checkpoint cp;
};

struct mirror_run {
    struct mirror_job *job;
    struct mirrors *m;
    struct mirror_def *def;
    char job_name[65];
    pthread_t thread;
    int thread_started;
    atomic_int cancel, ended;
    struct store *st; /* the run thread's read-only handle */
    int64_t id, started_ms, started_mono;
    struct target_state t[TARGETS_MAX];
    int nt;
    /* shared with the loop, under mu */
    pthread_mutex_t mu;
    int64_t items_total, bytes_total, items_done, bytes_done, errors;
    double percent;
    const char *phase;
    char state[16], note[256];
    int fatal;
};

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
static int
path_within(const char *a, const char *b)
{
    size_t n = strlen(b);
    while (n > 1 && b[n - 1] == '/') n--;
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
    json_array_foreach(a, i, v) {
        if (!json_is_string(v) || !*json_string_value(v) || json_string_length(v) > 1024)
            return ls_error_set(err, LS_EINVAL, "%s: each pattern is a non-empty string", key);
        json_array_append(list, (json_t *)v);
    }
    return 0;
}

static int
int_field(const json_t *body, const char *key, int64_t def, int64_t min, int64_t max,
          int64_t *out, struct ls_error *err)
{
    const json_t *v = json_object_get(body, key);
    *out = def;
    if (!v || json_is_null(v)) return 0;
    if (json_is_integer(v)) *out = json_integer_value(v);
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

int
mirror_def_check(const json_t *body, char name[65], json_t **def_out, struct ls_error *err)
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
        while (len > 1 && src[6 + len - 1] == '/') len--;
        if (src[6] != '/' || (len > 1 && path_check(src + 6, len, &perr))) {
            rc = ls_error_set(err, LS_EINVAL, "source %s: store:/PREFIX takes an item path", src);
            goto out;
        }
    } else if (strncmp(src, "dir:", 4) == 0) {
        if (!(src_dir = dir_spec(src, "source", err))) {
            rc = LS_EINVAL;
            goto out;
        }
    } else {
        rc = ls_error_set(err, LS_EINVAL,
                          "source %s: unknown scheme (store:/PREFIX or dir:/PATH; lockstep:// "
                          "sources are not in this release)",
                          src);
        goto out;
    }
    json_object_set_new(def, "source", json_string(src));
    if (!json_is_array(targets) || json_array_size(targets) == 0 ||
        json_array_size(targets) > TARGETS_MAX) {
        rc = ls_error_set(err, LS_EINVAL, "targets: a list of 1 to %d targets", TARGETS_MAX);
        goto out;
    }
    json_array_foreach(targets, i, v) {
        const char *t = json_string_value(v), *p;
        size_t j;
        json_t *w;
        if (!t || !(p = dir_spec(t, "target", err))) {
            if (t && strncmp(t, "dir:", 4) == 0) rc = LS_EINVAL;
            else
                rc = ls_error_set(err, LS_EINVAL,
                                  "target %s: unknown scheme (dir:/PATH; lockstep:// targets are "
                                  "not in this release)",
                                  t ? t : "(not a string)");
            goto out;
        }
        if (src_dir && (path_within(p, src_dir) || path_within(src_dir, p))) {
            rc = ls_error_set(err, LS_EINVAL, "target %s overlaps the source %s", t, src);
            goto out;
        }
        json_array_foreach(tl, j, w) if (strcmp(json_string_value(w), t) == 0) {
            rc = ls_error_set(err, LS_EINVAL, "target %s is given twice", t);
            goto out;
        }
        json_array_append_new(tl, json_string(t));
    }
    if ((rc = glob_list(body, "include", def, err)) || (rc = glob_list(body, "exclude", def, err)))
        goto out;
    if (json_is_true(json_object_get(body, "published_only")) && src_dir) {
        rc = ls_error_set(err, LS_EINVAL, "published_only takes a store: source");
        goto out;
    }
    json_object_set_new(def, "published_only",
                        json_boolean(json_is_true(json_object_get(body, "published_only"))));
    json_object_set_new(def, "delete", json_boolean(json_is_true(json_object_get(body, "delete"))));
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
    if (rc) json_decref(def);
    else *def_out = def;
    return rc;
}

static void
def_release(struct mirror_def *d)
{
    for (int i = 0; i < d->ntargets; i++) free(d->targets[i]);
    for (int i = 0; i < d->ninclude; i++) free(d->include[i]);
    for (int i = 0; i < d->nexclude; i++) free(d->exclude[i]);
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
    d->src_kind = strncmp(src, "dir:", 4) == 0 ? SRC_DIR : SRC_STORE;
    snprintf(d->src_path, sizeof d->src_path, "%s", src + (d->src_kind == SRC_DIR ? 4 : 6));
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
    d->every_ms = json_integer_value(json_object_get(j, "every_ms"));
    d->package_items = json_integer_value(json_object_get(j, "package_items"));
    d->package_bytes = json_integer_value(json_object_get(j, "package_bytes"));
    d->max_errors = json_integer_value(json_object_get(j, "max_errors"));
    if (d->package_items <= 0) d->package_items = 1000;
    if (d->package_bytes <= 0) d->package_bytes = 64 << 20;
}

/* Whether an item path ("/a/b") passes --include and --exclude. */
static int
path_selected(const struct mirror_def *d, const char *path)
{
    int in = d->ninclude == 0;
    for (int i = 0; i < d->ninclude && !in; i++) in = fnmatch(d->include[i], path, 0) == 0;
    for (int i = 0; i < d->nexclude && in; i++) in = fnmatch(d->exclude[i], path, 0) != 0;
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
        if (m->srv->writer) writer_submit(m->srv->writer, b->r);
        else bridge_finish_unsent(m, b);
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
static int
run_write(struct mirror_run *run, int (*fn)(struct store *st, struct wreq *r), void *arg,
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
    while (!b->done && !atomic_load(&run->cancel)) pthread_cond_wait(&m->cv, &m->mu);
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

/* ---------------------------------------------------------------- progress */

static void
progress_add(struct mirror_run *run, int64_t items, int64_t bytes, int64_t errors)
{
    pthread_mutex_lock(&run->mu);
    run->items_done += items;
    run->bytes_done += bytes;
    run->errors += errors;
    pthread_mutex_unlock(&run->mu);
}

/* One more item of bytes to do (the counting pass). */
static void
progress_total(struct mirror_run *run, int64_t bytes)
{
    pthread_mutex_lock(&run->mu);
    run->items_total++;
    run->bytes_total += bytes;
    pthread_mutex_unlock(&run->mu);
}

/* The percentage never goes backwards, even when the tree grew after the first pass. */
static double
progress_percent(struct mirror_run *run)
{
    double p;
    if (run->bytes_total > 0)
        p = 100.0 * (double)run->bytes_done / (double)run->bytes_total;
    else if (run->items_total > 0)
        p = 100.0 * (double)run->items_done / (double)run->items_total;
    else
        p = run->ended ? 100.0 : 0.0;
    if (p > 100.0) p = 100.0;
    if (p < run->percent) p = run->percent;
    run->percent = p;
    return p;
}

static json_t *
progress_json(struct mirror_run *run)
{
    json_t *o;
    double secs, rate, pct;
    pthread_mutex_lock(&run->mu);
    secs = (double)(ls_mono_ms() - run->started_mono) / 1000.0;
    rate = secs > 0 ? (double)run->bytes_done / secs : 0;
    pct = progress_percent(run);
    o = json_pack("{s:I,s:s,s:I,s:I,s:I,s:I,s:I,s:f,s:f}", "run", (json_int_t)run->id, "phase",
                  run->phase, "items_total", (json_int_t)run->items_total, "bytes_total",
                  (json_int_t)run->bytes_total, "items_done", (json_int_t)run->items_done,
                  "bytes_done", (json_int_t)run->bytes_done, "errors", (json_int_t)run->errors,
                  "percent", pct, "rate_bytes_per_s", rate);
    if (rate > 0 && run->bytes_total >= run->bytes_done)
        json_object_set_new(o, "eta_s",
                            json_real((double)(run->bytes_total - run->bytes_done) / rate));
    pthread_mutex_unlock(&run->mu);
    return o;
}

static char *
targets_text(struct mirror_run *run)
{
    json_t *a = json_array();
    char *s;
    for (int i = 0; i < run->nt; i++) {
        struct target_state *t = &run->t[i];
        const char *state = t->failed ? "failed" : t->errors ? "partial" : "ok";
        json_t *o = json_pack("{s:s,s:s,s:I,s:I,s:I}", "target", t->name, "state", state, "items",
                              (json_int_t)t->items, "bytes", (json_int_t)t->bytes, "errors",
                              (json_int_t)t->errors);
        if (*t->reason) json_object_set_new(o, "reason", json_string(t->reason));
        json_array_append_new(a, o);
    }
    s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

/* ---------------------------------------------------------------- packages */

struct pitem {
    char *path; /* the item path, "/a/b" */
    int kind;   /* IT_FILE, IT_LINK, IT_DEL */
    unsigned need; /* a bit per target that should get it */
    int64_t size, mtime_ns, ino, mode, seq;
    int64_t version; /* store sources: the version to send */
};

struct perror_ {
    int target; /* -1: the source */
    char *path, *reason;
};

struct package {
    struct pitem *items;
    size_t n, cap;
    int64_t bytes;
    struct perror_ *errs;
    size_t nerrs, cap_errs;
    /* what the commit writes */
    struct mirror_run *run;
    struct ls_mirror_file *index; /* dir sources: rows to set (sha filled) or, size < 0, drop */
    int *index_target;
    size_t nindex;
    struct ls_mirror_run rec;
    char *targets_json;
};

static void
package_clear(struct package *p)
{
    for (size_t i = 0; i < p->n; i++) free(p->items[i].path);
    for (size_t i = 0; i < p->nerrs; i++) {
        free(p->errs[i].path);
        free(p->errs[i].reason);
    }
    for (size_t i = 0; i < p->nindex; i++) free((char *)p->index[i].path);
    free(p->index);
    free(p->index_target);
    p->index = NULL;
    p->index_target = NULL;
    p->n = p->nerrs = p->nindex = 0;
    p->bytes = 0;
    free(p->targets_json);
    p->targets_json = NULL;
}

static void
package_release(struct package *p)
{
    package_clear(p);
    free(p->items);
    free(p->errs);
}

static int
package_add(struct package *p, const struct pitem *it)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        struct pitem *n = realloc(p->items, cap * sizeof *n);
        if (!n) return LS_ENOMEM;
        p->items = n;
        p->cap = cap;
    }
    p->items[p->n] = *it;
    if (!(p->items[p->n].path = strdup(it->path))) return LS_ENOMEM;
    p->n++;
    if (it->kind == IT_FILE) p->bytes += it->size;
    return 0;
}

/* Records an item's failure: in the package (committed with it) and in the counts. */
static void
item_error(struct mirror_run *run, struct package *p, int target, const char *path,
           const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (p->nerrs == p->cap_errs) {
        size_t cap = p->cap_errs ? p->cap_errs * 2 : 16;
        struct perror_ *n = realloc(p->errs, cap * sizeof *n);
        if (!n) return;
        p->errs = n;
        p->cap_errs = cap;
    }
    p->errs[p->nerrs].target = target;
    p->errs[p->nerrs].path = strdup(path);
    p->errs[p->nerrs].reason = strdup(reason);
    p->nerrs++;
    if (target >= 0) {
        run->t[target].errors++;
        run->t[target].stuck = 1;
    }
    progress_add(run, 0, 0, 1);
    log_warn("mirror %s: %s %s: %s", run->job_name, target >= 0 ? run->t[target].name : "source",
             path, reason);
}

static void
index_note(struct package *p, int target, const struct ls_mirror_file *f)
{
    struct ls_mirror_file *n = realloc(p->index, (p->nindex + 1) * sizeof *n);
    int *t;
    if (!n) return;
    p->index = n;
    if (!(t = realloc(p->index_target, (p->nindex + 1) * sizeof *t))) return;
    p->index_target = t;
    p->index[p->nindex] = *f;
    p->index[p->nindex].path = strdup(f->path);
    p->index_target[p->nindex] = target;
    p->nindex++;
}

/* ---------------------------------------------------------------- writing a directory target */

/* root + item path; -1 when it would not fit. */
static int
target_path(const char *root, const char *path, char *out, size_t n)
{
    int len = snprintf(out, n, "%s%s", strcmp(root, "/") == 0 ? "" : root, path);
    return len < 0 || (size_t)len >= n ? -1 : 0;
}

static int
make_parent(const char *file)
{
    char dir[4200];
    char *slash;
    snprintf(dir, sizeof dir, "%s", file);
    if (!(slash = strrchr(dir, '/')) || slash == dir) return 0;
    *slash = '\0';
    return ls_mkdir_p(dir, 0755);
}

/* A temporary name beside final: "DIR/.lsmirror-XXXXXX". */
static void
tmp_name(const char *final, char *out, size_t n)
{
    char hex[13];
    const char *slash = strrchr(final, '/');
    ls_random_hex(hex, 6);
    snprintf(out, n, "%.*s/" TMP_PREFIX "%s", (int)(slash - final), final, hex);
}

/*
 * Writes one file of a package: from the open descriptor src (or the buffer body) to a
 * temporary name beside its place, fsynced, mode and mtime set, then renamed, so a partly
 * written file is never visible under its name. sha receives the SHA-256 of what was written.
 * 0, or -errno with *what naming the step.
 */
static int
put_file(const char *final, int src, const void *body, size_t len, int64_t mode, int64_t mtime_ns,
         unsigned char sha[32], const char **what, atomic_int *cancel)
{
    char tmp[4300], buf[1 << 16];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    struct timespec ts[2];
    int fd = -1, rc = 0;
    unsigned int mdlen = 32;

    *what = "create the parent directory";
    if ((rc = make_parent(final))) goto out;
    tmp_name(final, tmp, sizeof tmp);
    *what = "create a temporary file";
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
        rc = -errno;
        goto out;
    }
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    *what = "write";
    if (body) {
        EVP_DigestUpdate(md, body, len);
        rc = ls_write_all(fd, body, len);
    } else {
        ssize_t n;
        while ((n = read(src, buf, sizeof buf)) > 0) {
            EVP_DigestUpdate(md, buf, (size_t)n);
            if ((rc = ls_write_all(fd, buf, (size_t)n))) break;
            if (atomic_load(cancel)) {
                rc = -ECANCELED;
                break;
            }
        }
        if (n < 0) {
            rc = -errno;
            *what = "read the source";
        }
    }
    if (rc) goto out;
    EVP_DigestFinal_ex(md, sha, &mdlen);
    ts[0].tv_sec = ts[1].tv_sec = (time_t)(mtime_ns / 1000000000);
    ts[0].tv_nsec = ts[1].tv_nsec = (long)(mtime_ns % 1000000000);
    *what = "set mode and mtime";
    if (fchmod(fd, (mode_t)(mode & 07777)) < 0 || futimens(fd, ts) < 0) {
        rc = -errno;
        goto out;
    }
    *what = "fsync";
    if (fsync(fd) < 0) {
        rc = -errno;
        goto out;
    }
    close(fd);
    fd = -1;
    *what = "rename into place";
    if (rename(tmp, final) < 0) rc = -errno;
out:
    if (fd >= 0) close(fd);
    if (rc && *tmp) unlink(tmp);
    EVP_MD_CTX_free(md);
    return rc;
}

static int
put_link(const char *final, const char *to, int64_t mtime_ns, const char **what)
{
    char tmp[4300];
    struct timespec ts[2];
    int rc;
    *what = "create the parent directory";
    if ((rc = make_parent(final))) return rc;
    tmp_name(final, tmp, sizeof tmp);
    *what = "create the symlink";
    if (symlink(to, tmp) < 0) return -errno;
    ts[0].tv_sec = ts[1].tv_sec = (time_t)(mtime_ns / 1000000000);
    ts[0].tv_nsec = ts[1].tv_nsec = (long)(mtime_ns % 1000000000);
    utimensat(AT_FDCWD, tmp, ts, AT_SYMLINK_NOFOLLOW);
    *what = "rename into place";
    if (rename(tmp, final) < 0) {
        rc = -errno;
        unlink(tmp);
        return rc;
    }
    return 0;
}

/* Removes final and then its parents that became empty, up to (not including) root. For a
 * directory source, a parent that the source still has stays. */
static int
remove_file(const char *root, const char *final, const char *src_root)
{
    char dir[4200], src[4200];
    size_t rootlen = strlen(root);
    char *slash;
    if (unlink(final) < 0 && errno != ENOENT) return -errno;
    snprintf(dir, sizeof dir, "%s", final);
    while ((slash = strrchr(dir, '/')) && (size_t)(slash - dir) > rootlen) {
        struct stat sb;
        *slash = '\0';
        if (src_root && snprintf(src, sizeof src, "%s%s", src_root, dir + rootlen) > 0 &&
            lstat(src, &sb) == 0)
            break;
        if (rmdir(dir) < 0) break;
    }
    return 0;
}

/* ---------------------------------------------------------------- applying a package */

struct commit_arg {
    struct mirror_run *run;
    struct package *p;
    int final; /* the run's end: set every surviving target's checkpoint */
};

/* On the writer thread: checkpoints, index rows, errors and the run's record, in one go. */
static int
commit_run(struct store *st, struct wreq *r)
{
    struct commit_arg *a = r->fn_arg;
    struct mirror_run *run = a->run;
    struct package *p = a->p;
    int rc;
    for (int i = 0; i < run->nt; i++) {
        if (run->t[i].failed && !a->final) continue;
        if ((rc = store_mirror_checkpoint_set(st, run->job_name, run->t[i].name, &run->t[i].cp,
                                              &r->err)))
            return rc;
    }
    for (size_t i = 0; p && i < p->nindex; i++) {
        const char *tn = run->t[p->index_target[i]].name;
        rc = p->index[i].size < 0
                 ? store_mirror_index_del(st, run->job_name, tn, p->index[i].path, &r->err)
                 : store_mirror_index_set(st, run->job_name, tn, &p->index[i], &r->err);
        if (rc) return rc;
    }
    for (size_t i = 0; p && i < p->nerrs; i++) {
        const char *tn = p->errs[i].target >= 0 ? run->t[p->errs[i].target].name : "source";
        if ((rc = store_mirror_error_add(st, run->id, tn, p->errs[i].path, p->errs[i].reason,
                                         &r->err)))
            return rc;
    }
    return store_mirror_run_save(st, &p->rec, &r->err);
}

static void
record_fill(struct mirror_run *run, struct package *p)
{
    pthread_mutex_lock(&run->mu);
    p->rec.id = run->id;
    p->rec.job = run->job_name;
    p->rec.started = run->started_ms;
    p->rec.ended = run->ended ? ls_now_ms() : 0;
    p->rec.state = run->state;
    p->rec.items = run->items_done;
    p->rec.bytes = run->bytes_done;
    p->rec.items_total = run->items_total;
    p->rec.bytes_total = run->bytes_total;
    p->rec.errors = run->errors;
    p->rec.note = *run->note ? run->note : NULL;
    pthread_mutex_unlock(&run->mu);
    free(p->targets_json);
    p->targets_json = targets_text(run);
    p->rec.targets = p->targets_json;
}

static int
errors_exceeded(struct mirror_run *run)
{
    int over;
    pthread_mutex_lock(&run->mu);
    over = run->errors > run->def->max_errors;
    pthread_mutex_unlock(&run->mu);
    return over;
}

/* Sends one item to target i. 0, or an error already recorded. */
static int
apply_item(struct mirror_run *run, struct package *p, int i, const struct pitem *it)
{
    struct target_state *t = &run->t[i];
    const struct mirror_def *d = run->def;
    char final[4200], src[4200];
    const char *what = "";
    unsigned char sha[32] = {0};
    struct ls_item si;
    struct ls_error err;
    int rc = 0, fd = -1;
    int64_t bytes = 0;

    if (target_path(t->root, it->path, final, sizeof final)) {
        item_error(run, p, i, it->path, "the path is too long under %s", t->root);
        return -1;
    }
    if (it->kind == IT_DEL) {
        if ((rc = remove_file(t->root, final, d->src_kind == SRC_DIR ? d->src_path : NULL))) {
            item_error(run, p, i, it->path, "cannot remove %s: %s", final, strerror(-rc));
            return -1;
        }
        if (d->src_kind == SRC_DIR) {
            struct ls_mirror_file f = {.path = it->path, .size = -1};
            index_note(p, i, &f);
        }
        t->items++;
        return 0;
    }
    if (d->src_kind == SRC_STORE) {
        memset(&si, 0, sizeof si);
        if (store_get(run->st, it->path, it->version, 1, &si, &err)) {
            item_error(run, p, i, it->path, "cannot read the item: %s", err.msg);
            return -1;
        }
        if (si.in_blob) {
            char blob[4200];
            store_blob_path(run->st, si.sha, blob, sizeof blob);
            if ((fd = open(blob, O_RDONLY | O_CLOEXEC)) < 0) {
                item_error(run, p, i, it->path, "cannot read the body: %s", strerror(errno));
                item_release(&si);
                return -1;
            }
        }
        rc = put_file(final, fd, fd >= 0 ? NULL : si.body ? si.body : "", fd >= 0 ? 0 : si.size,
                      0644, si.mtime * 1000000, sha, &what, &run->cancel);
        bytes = (int64_t)si.size;
        item_release(&si);
    } else {
        snprintf(src, sizeof src, "%s%s", d->src_path, it->path);
        if (it->kind == IT_LINK) {
            char to[4096];
            ssize_t n = readlink(src, to, sizeof to - 1);
            if (n < 0) {
                item_error(run, p, i, it->path, "cannot read the symlink: %s", strerror(errno));
                return -1;
            }
            to[n] = '\0';
            rc = put_link(final, to, it->mtime_ns, &what);
            bytes = n;
        } else {
            if ((fd = open(src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0) {
                item_error(run, p, i, it->path, "cannot read %s: %s", src, strerror(errno));
                return -1;
            }
            rc = put_file(final, fd, NULL, 0, it->mode, it->mtime_ns, sha, &what, &run->cancel);
            bytes = it->size;
        }
    }
    if (fd >= 0) close(fd);
    if (rc) {
        item_error(run, p, i, it->path, "cannot %s (%s): %s", what, final, strerror(-rc));
        return -1;
    }
    if (d->src_kind == SRC_DIR) {
        struct ls_mirror_file f = {.path = it->path, .size = it->size, .mtime_ns = it->mtime_ns,
                                   .ino = it->ino, .mode = it->mode};
        memcpy(f.sha, sha, 32);
        index_note(p, i, &f);
    }
    t->items++;
    t->bytes += bytes;
    return 0;
}

/* LOCKSTEP_MIRROR_PACKAGE_DELAY_MS: the tests slow a run down to kill its server mid-way. */
static void
test_delay(struct mirror_run *run)
{
    const char *v = getenv("LOCKSTEP_MIRROR_PACKAGE_DELAY_MS");
    int64_t ms;
    if (!v || ls_parse_i64(v, &ms) || ms <= 0) return;
    for (int64_t t = 0; t < ms && !atomic_load(&run->cancel); t += 10) usleep(10 * 1000);
}

/* Every target applies the package, syncs, and the store records it. Nonzero: stop the run. */
static int
package_flush(struct mirror_run *run, struct package *p, int64_t upto_seq, const char *after)
{
    struct ls_error err;
    struct commit_arg a = {run, p, 0};
    int64_t items = 0, bytes = 0;
    int rc;

    for (size_t k = 0; k < p->n; k++) {
        const struct pitem *it = &p->items[k];
        for (int i = 0; i < run->nt; i++)
            if ((it->need & (1u << i)) && !run->t[i].failed) apply_item(run, p, i, it);
        items++;
        if (it->kind == IT_FILE) bytes += it->size;
        if (atomic_load(&run->cancel)) return LS_EUNAVAIL;
    }
    for (int i = 0; i < run->nt; i++) {
        struct target_state *t = &run->t[i];
        int dfd;
        if (t->failed) continue;
        /* the renames are durable before the checkpoint says so */
        if ((dfd = open(t->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
            syncfs(dfd);
            close(dfd);
        }
        if (t->stuck) continue;
        if (upto_seq > t->cp.seq && !t->cp.full_seq) t->cp.seq = upto_seq;
        if (after && t->cp.full_seq) snprintf(t->cp.after, sizeof t->cp.after, "%s", after);
    }
    progress_add(run, items, bytes, 0);
    record_fill(run, p);
    rc = run_write(run, commit_run, &a, &err);
    if (rc) {
        snprintf(run->note, sizeof run->note, "cannot record a package: %.200s", err.msg);
        run->fatal = 1;
    }
    package_clear(p);
    test_delay(run);
    if (!rc && errors_exceeded(run)) {
        snprintf(run->note, sizeof run->note, "more than %lld errors",
                 (long long)run->def->max_errors);
        run->fatal = 1;
        return LS_EIO;
    }
    return rc;
}

static int
package_full(const struct mirror_run *run, const struct package *p)
{
    return (int64_t)p->n >= run->def->package_items || p->bytes >= run->def->package_bytes;
}

/* ---------------------------------------------------------------- store sources */

struct store_scan {
    struct mirror_run *run;
    struct package *p;
    int counting;
    unsigned mask; /* the targets this pass feeds */
    char last[4096];
    int64_t last_seq;
    int rc;
};

/* The version of it a target gets (0: none: it is not published and --published-only). */
static int64_t
send_version(const struct mirror_def *d, const struct ls_item *it)
{
    if (it->deleted) return 0;
    if (d->published_only) return it->published_version;
    return it->latest_version;
}

static int
full_item(void *arg, const struct ls_item *it)
{
    struct store_scan *s = arg;
    struct mirror_run *run = s->run;
    struct pitem pi = {.path = it->path, .kind = IT_FILE, .size = (int64_t)it->size};
    snprintf(s->last, sizeof s->last, "%s", it->path);
    if (!(pi.version = send_version(run->def, it)) || !path_selected(run->def, it->path)) return 0;
    for (int i = 0; i < run->nt; i++)
        if ((s->mask & (1u << i)) && strcmp(it->path, run->t[i].cp.after) > 0) pi.need |= 1u << i;
    if (!pi.need) return 0;
    if (s->counting) {
        progress_total(run, pi.size);
        return 0;
    }
    if ((s->rc = package_add(s->p, &pi))) return 1;
    if (package_full(run, s->p) && (s->rc = package_flush(run, s->p, 0, it->path))) return 1;
    return 0;
}

/* A full pass for the targets that have none yet (or one interrupted): every live item. */
static int
store_full(struct mirror_run *run, struct package *p, unsigned mask, int counting)
{
    struct store_scan s = {.run = run, .p = p, .counting = counting, .mask = mask};
    struct ls_error err;
    const char *after = NULL;
    int n;
    for (int i = 0; i < run->nt; i++) /* from the least advanced target */
        if ((mask & (1u << i)) && (!after || strcmp(run->t[i].cp.after, after) < 0))
            after = run->t[i].cp.after;
    snprintf(s.last, sizeof s.last, "%s", after ? after : "");
    do {
        char from[4096];
        snprintf(from, sizeof from, "%s", s.last);
        n = store_list(run->st, run->def->src_path, from, PAGE, 0, full_item, &s, &err);
        if (n < 0) {
            snprintf(run->note, sizeof run->note, "cannot list the source: %.200s", err.msg);
            run->fatal = 1;
            return n;
        }
        if (s.rc || atomic_load(&run->cancel)) return s.rc ? s.rc : LS_EUNAVAIL;
    } while (n == PAGE);
    if (counting) return 0;
    if (p->n && (s.rc = package_flush(run, p, 0, s.last))) return s.rc;
    for (int i = 0; i < run->nt; i++)
        if ((mask & (1u << i)) && !run->t[i].stuck) { /* done: it continues from the log */
            run->t[i].cp.seq = run->t[i].cp.full_seq;
            run->t[i].cp.full_seq = 0;
            run->t[i].cp.after[0] = '\0';
        }
    return 0;
}

static int
under_prefix(const char *prefix, const char *path)
{
    return strcmp(prefix, "/") == 0 || path_within(path, prefix);
}

/* One path a change touched: its state now, for the targets that have not had that seq. */
static int
change_path(struct store_scan *s, const char *path, int64_t seq)
{
    struct mirror_run *run = s->run;
    struct pitem pi = {.path = (char *)path, .seq = seq};
    struct ls_item it;
    struct ls_error err;
    if (!under_prefix(run->def->src_path, path) || !path_selected(run->def, path)) return 0;
    memset(&it, 0, sizeof it);
    if (store_get(run->st, path, 0, 0, &it, &err) == 0 && it.seq > seq && it.seq <= s->last_seq) {
        item_release(&it); /* a later change of this pass sends it (once, not once per change) */
        return 0;
    }
    if ((pi.version = send_version(run->def, &it))) {
        pi.kind = IT_FILE;
        pi.size = (int64_t)it.size;
    } else if (run->def->delete_missing) {
        pi.kind = IT_DEL;
    } else {
        item_release(&it);
        return 0;
    }
    item_release(&it);
    for (int i = 0; i < run->nt; i++)
        if ((s->mask & (1u << i)) && seq > run->t[i].cp.seq) pi.need |= 1u << i;
    if (!pi.need) return 0;
    if (s->counting) {
        progress_total(run, pi.kind == IT_FILE ? pi.size : 0);
        return 0;
    }
    if ((s->rc = package_add(s->p, &pi))) return 1;
    return 0;
}

static int
change_item(void *arg, const struct ls_change *c)
{
    struct store_scan *s = arg;
    int64_t head = s->last_seq; /* the run's end seq, set by store_incremental */
    if (c->seq > head) return 1;
    snprintf(s->last, sizeof s->last, "%lld", (long long)c->seq);
    if (c->op == LS_OP_NOTIFY) return 0;
    if (change_path(s, c->path, c->seq)) return 1;
    if (c->to && change_path(s, c->to, c->seq)) return 1;
    if (!s->counting && package_full(s->run, s->p) &&
        (s->rc = package_flush(s->run, s->p, c->seq, NULL)))
        return 1;
    return 0;
}

/* The log after each target's seq, up to head: what changed, each path as it is now. */
static int
store_incremental(struct mirror_run *run, struct package *p, unsigned mask, int64_t head,
                  int counting)
{
    struct store_scan s = {.run = run, .p = p, .counting = counting, .mask = mask};
    int64_t since = INT64_MAX;
    int n;
    for (int i = 0; i < run->nt; i++)
        if ((mask & (1u << i)) && run->t[i].cp.seq < since) since = run->t[i].cp.seq;
    if (since == INT64_MAX) return 0;
    s.last_seq = head;
    while (since < head) {
        int64_t before = since;
        n = store_changes(run->st, since, PAGE, change_item, &s);
        if (n < 0) {
            snprintf(run->note, sizeof run->note, "cannot read the change log");
            run->fatal = 1;
            return n;
        }
        if (s.rc || atomic_load(&run->cancel)) return s.rc ? s.rc : LS_EUNAVAIL;
        ls_parse_i64(s.last, &since);
        if (n < PAGE || since == before) break;
    }
    if (counting) return 0;
    if (p->n && (s.rc = package_flush(run, p, head, NULL))) return s.rc;
    for (int i = 0; i < run->nt; i++)
        if ((mask & (1u << i)) && !run->t[i].failed && !run->t[i].stuck && run->t[i].cp.seq < head)
            run->t[i].cp.seq = head;
    return 0;
}

static int
run_store(struct mirror_run *run, struct package *p)
{
    struct ls_position pos;
    int64_t floor = store_floor(run->st, FLOOR_LOG);
    unsigned full = 0, live = 0;
    int rc;
    if (store_position(run->st, &pos)) {
        snprintf(run->note, sizeof run->note, "cannot read the store's position");
        run->fatal = 1;
        return LS_EIO;
    }
    for (int i = 0; i < run->nt; i++) {
        struct target_state *t = &run->t[i];
        if (t->failed) continue;
        /* never mirrored, or further behind than the log reaches: a full pass first */
        if (!t->cp.full_seq && (t->cp.seq == 0 || t->cp.seq < floor)) {
            t->cp.full_seq = pos.seq > 0 ? pos.seq : 1;
            t->cp.after[0] = '\0';
        }
        if (t->cp.full_seq) full |= 1u << i;
        else live |= 1u << i;
    }
    pthread_mutex_lock(&run->mu);
    run->phase = "scanning";
    pthread_mutex_unlock(&run->mu);
    if ((full && (rc = store_full(run, p, full, 1))) ||
        (rc = store_incremental(run, p, live, pos.seq, 1)))
        return rc;
    pthread_mutex_lock(&run->mu);
    run->phase = "transferring";
    pthread_mutex_unlock(&run->mu);
    if (full && (rc = store_full(run, p, full, 0))) return rc;
    /* the targets that just had a full pass at their full_seq catch up to head too */
    return store_incremental(run, p, full | live, pos.seq, 0);
}

/* ---------------------------------------------------------------- directory sources */

/* Whether target i's index says it has this file as it is now. */
static int
dir_unchanged(struct mirror_run *run, int i, const char *path, const struct stat *sb)
{
    struct ls_mirror_file f;
    int64_t mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
    if (store_mirror_index_get(run->st, run->job_name, run->t[i].name, path, &f)) return 0;
    return f.size == (int64_t)sb->st_size && f.mtime_ns == mtime_ns &&
           f.ino == (int64_t)sb->st_ino && f.mode == (int64_t)sb->st_mode;
}

struct walk_level {
    DIR *d;
    size_t len; /* of the relative path at this level */
};

/*
 * Walks the source directory depth first, one open directory per level (the stack is bounded
 * by the depth, not the size of the tree), and gives every entry to each (rel: "/a/b").
 */
static int
walk(struct mirror_run *run, struct package *p,
     int (*each)(struct mirror_run *run, struct package *p, const char *rel,
                 const struct stat *sb, void *arg),
     void *arg)
{
    struct walk_level stack[WALK_DEPTH_MAX];
    char rel[4200] = "", abs_[8400];
    int depth = 0, rc = 0;
    if (!(stack[0].d = opendir(run->def->src_path))) {
        snprintf(run->note, sizeof run->note, "cannot open the source %.150s: %.60s",
                 run->def->src_path, strerror(errno));
        run->fatal = 1;
        return LS_EIO;
    }
    stack[0].len = 0;
    while (depth >= 0 && !rc) {
        struct dirent *de = readdir(stack[depth].d);
        struct stat sb;
        size_t len = stack[depth].len;
        if (!de) {
            closedir(stack[depth].d);
            depth--;
            continue;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        if (len + 1 + strlen(de->d_name) >= sizeof rel) continue;
        snprintf(rel + len, sizeof rel - len, "/%s", de->d_name);
        snprintf(abs_, sizeof abs_, "%s%s", run->def->src_path, rel);
        if (lstat(abs_, &sb) < 0) {
            if (!arg) item_error(run, p, -1, rel, "cannot stat: %s", strerror(errno));
        } else if (S_ISDIR(sb.st_mode)) {
            if ((rc = each(run, p, rel, &sb, arg))) break;
            if (depth + 1 == WALK_DEPTH_MAX) {
                if (!arg) item_error(run, p, -1, rel, "deeper than %d levels", WALK_DEPTH_MAX);
            } else if (!(stack[depth + 1].d = opendir(abs_))) {
                if (!arg) item_error(run, p, -1, rel, "cannot open: %s", strerror(errno));
            } else {
                depth++;
                stack[depth].len = strlen(rel);
            }
        } else {
            rc = each(run, p, rel, &sb, arg);
        }
        rel[stack[depth < 0 ? 0 : depth].len] = '\0';
        if (atomic_load(&run->cancel)) rc = LS_EUNAVAIL;
    }
    for (; depth >= 0; depth--) closedir(stack[depth].d);
    return rc;
}

/* arg: NULL on the pass that sends, non-NULL on the counting pass. */
static int
dir_entry(struct mirror_run *run, struct package *p, const char *rel, const struct stat *sb,
          void *arg)
{
    struct pitem pi = {.path = (char *)rel};
    if (S_ISDIR(sb->st_mode)) {
        /* directories are made as they are met (no item: they carry no bytes) */
        if (arg) return 0;
        for (int i = 0; i < run->nt; i++) {
            char final[4200];
            if (run->t[i].failed || target_path(run->t[i].root, rel, final, sizeof final)) continue;
            if (mkdir(final, sb->st_mode & 07777) == 0) chmod(final, sb->st_mode & 07777);
        }
        return 0;
    }
    if (!path_selected(run->def, rel)) return 0;
    if (!S_ISREG(sb->st_mode) && !S_ISLNK(sb->st_mode)) {
        if (!arg) item_error(run, p, -1, rel, "not a regular file, symlink or directory");
        return 0;
    }
    pi.kind = S_ISLNK(sb->st_mode) ? IT_LINK : IT_FILE;
    pi.size = (int64_t)sb->st_size;
    pi.mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
    pi.ino = (int64_t)sb->st_ino;
    pi.mode = (int64_t)sb->st_mode;
    for (int i = 0; i < run->nt; i++)
        if (!run->t[i].failed && !dir_unchanged(run, i, rel, sb)) pi.need |= 1u << i;
    if (!pi.need) return 0;
    if (arg) {
        progress_total(run, pi.kind == IT_FILE ? pi.size : 0);
        return 0;
    }
    if (package_add(p, &pi)) return LS_ENOMEM;
    if (package_full(run, p)) return package_flush(run, p, 0, NULL);
    return 0;
}

struct gone_scan {
    struct mirror_run *run;
    struct package *p;
    int target, counting, rc;
    char last[4200];
};

static int
gone_item(void *arg, const char *path)
{
    struct gone_scan *g = arg;
    char src[8400];
    struct stat sb;
    struct pitem pi = {.path = (char *)path, .kind = IT_DEL, .need = 1u << g->target};
    snprintf(g->last, sizeof g->last, "%s", path);
    snprintf(src, sizeof src, "%s%s", g->run->def->src_path, path);
    if (lstat(src, &sb) == 0 && !S_ISDIR(sb.st_mode) && path_selected(g->run->def, path)) return 0;
    if (g->counting) {
        progress_total(g->run, 0);
        return 0;
    }
    if ((g->rc = package_add(g->p, &pi))) return 1;
    return 0;
}

/* With --delete: what a target's index holds that the source no longer has. Paged, and the
 * package is flushed between pages (the flush changes the index being paged through). */
static int
dir_deletions(struct mirror_run *run, struct package *p, int counting)
{
    for (int i = 0; i < run->nt; i++) {
        struct gone_scan g = {.run = run, .p = p, .target = i, .counting = counting};
        int n;
        if (run->t[i].failed) continue;
        do {
            char from[4200];
            snprintf(from, sizeof from, "%s", g.last);
            n = store_mirror_index_page(run->st, run->job_name, run->t[i].name, from, PAGE,
                                        gone_item, &g);
            if (n < 0) return n;
            if (g.rc) return g.rc;
            if (!counting && package_full(run, p) && (g.rc = package_flush(run, p, 0, NULL)))
                return g.rc;
        } while (n == PAGE);
    }
    return 0;
}

static int
run_dir(struct mirror_run *run, struct package *p)
{
    int rc, counting = 1;
    pthread_mutex_lock(&run->mu);
    run->phase = "scanning";
    pthread_mutex_unlock(&run->mu);
    if ((rc = walk(run, p, dir_entry, &counting))) return rc;
    if (run->def->delete_missing && (rc = dir_deletions(run, p, 1))) return rc;
    pthread_mutex_lock(&run->mu);
    run->phase = "transferring";
    pthread_mutex_unlock(&run->mu);
    if ((rc = walk(run, p, dir_entry, NULL))) return rc;
    if (p->n && (rc = package_flush(run, p, 0, NULL))) return rc;
    if (run->def->delete_missing && (rc = dir_deletions(run, p, 0))) return rc;
    if (p->n && (rc = package_flush(run, p, 0, NULL))) return rc;
    return 0;
}

/* ---------------------------------------------------------------- a run */

/* Temporary files a killed run left in a target: found only after an interrupted run. */
static void
sweep_tmp(const char *root)
{
    char path[4200];
    DIR *stack[WALK_DEPTH_MAX];
    size_t lens[WALK_DEPTH_MAX];
    int depth = 0;
    snprintf(path, sizeof path, "%s", root);
    if (!(stack[0] = opendir(path))) return;
    lens[0] = strlen(path);
    while (depth >= 0) {
        struct dirent *de = readdir(stack[depth]);
        if (!de) {
            closedir(stack[depth--]);
            if (depth >= 0) path[lens[depth]] = '\0';
            continue;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        path[lens[depth]] = '\0';
        if (lens[depth] + strlen(de->d_name) + 2 >= sizeof path) continue;
        snprintf(path + lens[depth], sizeof path - lens[depth], "/%s", de->d_name);
        if (de->d_type == DT_DIR && depth + 1 < WALK_DEPTH_MAX &&
            (stack[depth + 1] = opendir(path))) {
            depth++;
            lens[depth] = strlen(path);
        } else if (strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0) {
            unlink(path);
        }
    }
}

static void
run_finish_state(struct mirror_run *run)
{
    int failed = 0, partial = run->errors > 0;
    for (int i = 0; i < run->nt; i++) {
        if (run->t[i].failed) failed++;
        if (run->t[i].errors) partial = 1;
    }
    pthread_mutex_lock(&run->mu);
    if (run->fatal || atomic_load(&run->cancel) || failed == run->nt)
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

static int
commit_begin(struct store *st, struct wreq *r)
{
    struct ls_mirror_run *rec = r->fn_arg;
    return store_mirror_run_save(st, rec, &r->err);
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
    if (run_write(run, commit_begin, &rec, &err)) {
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
        if ((e = ls_mkdir_p(t->root, 0755)) < 0) {
            t->failed = 1;
            snprintf(t->reason, sizeof t->reason, "cannot create %s: %s", t->root, strerror(-e));
            item_error(run, &p, i, "/", "%s", t->reason);
            continue;
        }
        if (interrupted) sweep_tmp(t->root);
    }
    if (run->def->src_kind == SRC_STORE) rc = run_store(run, &p);
    else rc = run_dir(run, &p);
    (void)rc;
out:
    run_finish_state(run);
    if (run->id) {
        struct commit_arg a = {run, &p, 1};
        record_fill(run, &p);
        if (!atomic_load(&run->cancel) && run_write(run, commit_run, &a, &err))
            log_error("mirror %s: cannot record the run's end: %s", run->job_name, err.msg);
        log_info("mirror %s: run %lld %s: %lld items, %lld bytes, %lld errors%s%s", run->job_name,
                 (long long)run->id, run->state, (long long)run->items_done,
                 (long long)run->bytes_done, (long long)run->errors, *run->note ? ": " : "",
                 run->note);
    }
    package_release(&p);
    store_free(run->st);
    run->st = NULL;
    atomic_store(&run->ended, 1);
    event_active(run->m->reap, EV_READ, 0);
    return NULL;
}

static void
run_free(struct mirror_run *run)
{
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
        j->run = NULL;
        run_free(run);
    }
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
    run->phase = "starting";
    snprintf(run->state, sizeof run->state, "running");
    run->started_ms = ls_now_ms();
    run->started_mono = ls_mono_ms();
    run->nt = job->def.ntargets;
    for (int i = 0; i < run->nt; i++) {
        run->t[i].name = job->def.targets[i];
        run->t[i].root = job->def.targets[i] + 4;
    }
    job->run = run;
    if (pthread_create(&run->thread, NULL, run_main, run)) {
        job->run = NULL;
        run_free(run);
        return ls_error_set(err, LS_EUNAVAIL, "cannot start the run's thread");
    }
    run->thread_started = 1;
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
    if (j) j->paused = paused;
}

json_t *
mirror_job_json(struct mirror_job *job)
{
    json_t *o = json_pack("{s:s,s:O,s:b,s:b}", "name", job->name, "definition", job->def_json,
                          "paused", job->paused, "running", job->run != NULL);
    if (job->run) json_object_set_new(o, "progress", progress_json(job->run));
    if (*job->last_state) json_object_set_new(o, "last_state", json_string(job->last_state));
    return o;
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
    if (mirror_added(l->srv, name, j) == 0) mirror_paused(l->srv, name, paused);
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
        store_mirror_runs(srv->reader, j->name, 1, last_run_state, j->last_state);
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
        if (j->run) atomic_store(&j->run->cancel, 1);
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
