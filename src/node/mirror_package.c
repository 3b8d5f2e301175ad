/*
 * mirror_package.c - a run's packages (docs/mirror.md): progress, the items of a package and
 * their errors, writing them to directory targets (a temporary name beside the file, fsync,
 * rename, then syncfs), and recording an applied package in the store through the writer.
 *
 * Not for: scanning sources (mirror_source.c), jobs and threads (mirror.c).
 */
#include "node/mirror_int.h"
#include "common/log.h"
#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- progress */

void
mirror_progress_add(struct mirror_run *run, int64_t items, int64_t bytes, int64_t errors)
{
    pthread_mutex_lock(&run->mu);
    run->items_done += items;
    run->bytes_done += bytes;
    run->errors += errors;
    pthread_mutex_unlock(&run->mu);
}

/* One more item of bytes to do (the counting pass). */
void
mirror_progress_total(struct mirror_run *run, int64_t bytes)
{
    pthread_mutex_lock(&run->mu);
    run->items_total++;
    run->bytes_total += bytes;
    pthread_mutex_unlock(&run->mu);
}

/*
 * The percentage never goes backwards, even when the tree grew after the first pass, or after a
 * crash: a resumed run counts what the runs it resumes had done, and while it counts what is left
 * it stays where they stood. Only recorded packages are done, so what a client saw before a
 * crash is never more than the resumed run starts from.
 */
static double
progress_percent(struct mirror_run *run)
{
    double p;
    int64_t bt = run->carry_bytes + run->bytes_total, it = run->carry_items + run->items_total;
    if (!run->ended && strcmp(run->phase, "transferring") != 0)
        p = run->percent;
    else if (bt > 0)
        p = 100.0 * (double)(run->carry_bytes + run->bytes_done) / (double)bt;
    else if (it > 0)
        p = 100.0 * (double)(run->carry_items + run->items_done) / (double)it;
    else
        p = run->ended ? 100.0 : 0.0;
    if (p > 100.0) p = 100.0;
    if (p < run->percent) p = run->percent;
    run->percent = p;
    return p;
}

json_t *
mirror_progress_json(struct mirror_run *run)
{
    json_t *o;
    double secs, rate, pct;
    pthread_mutex_lock(&run->mu);
    secs = (double)(ls_mono_ms() - run->started_mono) / 1000.0;
    rate = secs > 0 ? (double)run->bytes_done / secs : 0;
    pct = progress_percent(run);
    o = json_pack("{s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:f,s:f}", "run", (json_int_t)run->id, "state",
                  run->state, "phase", run->phase, "items_total", (json_int_t)run->items_total,
                  "bytes_total", (json_int_t)run->bytes_total, "items_done",
                  (json_int_t)run->items_done, "bytes_done", (json_int_t)run->bytes_done, "errors",
                  (json_int_t)run->errors, "percent", pct, "rate_bytes_per_s", rate);
    if (run->carry_items || run->carry_bytes)
        json_object_set_new(o, "resumed",
                            json_pack("{s:I,s:I}", "items", (json_int_t)run->carry_items, "bytes",
                                      (json_int_t)run->carry_bytes));
    if (*run->note) json_object_set_new(o, "note", json_string(run->note));
    if (rate > 0 && run->bytes_total >= run->bytes_done)
        json_object_set_new(o, "eta_s",
                            json_real((double)(run->bytes_total - run->bytes_done) / rate));
    pthread_mutex_unlock(&run->mu);
    return o;
}

char *
mirror_targets_text(struct mirror_run *run)
{
    json_t *a = json_array();
    char *s;
    for (int i = 0; i < run->nt; i++) {
        struct target_state *t = &run->t[i];
        const char *state = t->failed ? "failed" : t->errors ? "partial" : "ok";
        json_t *o = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I}", "target", t->name, "state",
                              state, "items", (json_int_t)t->items, "bytes", (json_int_t)t->bytes,
                              "errors", (json_int_t)t->errors, "delta_files",
                              (json_int_t)t->delta_files, "delta_bytes", (json_int_t)t->delta_bytes,
                              "whole_bytes", (json_int_t)t->whole_bytes);
        if (*t->reason) json_object_set_new(o, "reason", json_string(t->reason));
        json_array_append_new(a, o);
    }
    s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

void
mirror_package_clear(struct package *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->items[i].path);
        free(p->items[i].link_to);
    }
    for (size_t i = 0; i < p->nerrs; i++) {
        free(p->errs[i].path);
        free(p->errs[i].reason);
    }
    for (size_t i = 0; i < p->nindex; i++)
        free((char *)p->index[i].path);
    free(p->index);
    free(p->index_target);
    p->index = NULL;
    p->index_target = NULL;
    p->n = p->nerrs = p->nindex = 0;
    p->bytes = 0;
    free(p->targets_json);
    p->targets_json = NULL;
}

void
mirror_package_release(struct package *p)
{
    mirror_package_clear(p);
    free(p->items);
    free(p->errs);
}

int
mirror_package_add(struct package *p, const struct pitem *it)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        struct pitem *n = realloc(p->items, cap * sizeof *n);
        if (!n) return LS_ENOMEM;
        p->items = n;
        p->cap = cap;
    }
    p->items[p->n] = *it;
    p->items[p->n].link_to = NULL;
    if (!(p->items[p->n].path = strdup(it->path))) return LS_ENOMEM;
    if (it->link_to && !(p->items[p->n].link_to = strdup(it->link_to))) {
        free(p->items[p->n].path);
        return LS_ENOMEM;
    }
    p->n++;
    if (it->kind == IT_FILE) p->bytes += it->size;
    return 0;
}

/* Records an item's failure: in the package (committed with it) and in the counts. */
void
mirror_item_error(struct mirror_run *run, struct package *p, int target, const char *path,
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
    mirror_progress_add(run, 0, 0, 1);
    log_warn("mirror %s: %s %s: %s", run->job_name, target >= 0 ? run->t[target].name : "source",
             path, reason);
}

void
mirror_index_note(struct package *p, int target, const struct ls_mirror_file *f)
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
int
mirror_target_path(const char *root, const char *path, char *out, size_t n)
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

/* A temporary name beside final: "DIR/.lsmirror-XXXXXXXXXXXX": a random start for each thread,
 * then a counter (a name per file without a call into the random generator; O_EXCL does the
 * rest). */
static void
tmp_name(const char *final, char *out, size_t n)
{
    static _Thread_local uint64_t next;
    const char *slash = strrchr(final, '/');
    if (!next && ls_random_bytes(&next, sizeof next)) next = (uint64_t)ls_mono_ms();
    next = (next + 1) & 0xffffffffffffULL;
    snprintf(out, n, "%.*s/" TMP_PREFIX "%012llx", (int)(slash - final), final,
             (unsigned long long)next);
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

    tmp_name(final, tmp, sizeof tmp);
    *what = "create a temporary file";
    /* the parent is there but for the first file of a new directory: made then */
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0 && errno == ENOENT) {
        *what = "create the parent directory";
        if ((rc = make_parent(final))) goto out;
        *what = "create a temporary file";
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
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
    tmp_name(final, tmp, sizeof tmp);
    *what = "create the symlink";
    if ((rc = symlink(to, tmp)) < 0 && errno == ENOENT) { /* a new directory: made then */
        *what = "create the parent directory";
        if ((rc = make_parent(final))) return rc;
        *what = "create the symlink";
        rc = symlink(to, tmp);
    }
    if (rc < 0) return -errno;
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

/* On the writer thread: checkpoints, index rows, errors and the run's record, in one go. */
int
mirror_commit_run(struct store *st, struct wreq *r)
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

void
mirror_record_fill(struct mirror_run *run, struct package *p)
{
    pthread_mutex_lock(&run->mu);
    p->rec.id = run->id;
    p->rec.job = run->job_name;
    p->rec.started = run->started_ms;
    p->rec.ended = run->ended ? ls_now_ms() : 0;
    p->rec.state = run->state;
    p->rec.items = run->items_done + p->pend_items;
    p->rec.bytes = run->bytes_done + p->pend_bytes;
    p->rec.items_total = run->items_total;
    p->rec.bytes_total = run->bytes_total;
    p->rec.errors = run->errors;
    p->rec.note = *run->note ? run->note : NULL;
    pthread_mutex_unlock(&run->mu);
    free(p->targets_json);
    p->targets_json = mirror_targets_text(run);
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

/*
 * Writes a file of fd's size bytes to final: as a delta when both it and the target's copy are
 * at least DELTA_MIN (a failed delta falls back to a whole copy), otherwise whole.
 */
static int
put_regular(struct target_state *t, const char *final, int fd, int64_t size, int64_t mode,
            int64_t mtime_ns, unsigned char sha[32], const char **what, atomic_int *cancel)
{
    struct stat sb;
    int64_t dbytes = 0;
    if (size >= DELTA_MIN && lstat(final, &sb) == 0 && S_ISREG(sb.st_mode) &&
        sb.st_size >= DELTA_MIN) {
        if (mirror_put_delta(final, fd, mode, mtime_ns, sha, &dbytes, what) == 0) {
            t->delta_files++;
            t->delta_bytes += dbytes;
            return 0;
        }
        if (lseek(fd, 0, SEEK_SET) < 0) return -errno;
    }
    t->whole_bytes += size;
    return put_file(final, fd, NULL, 0, mode, mtime_ns, sha, what, cancel);
}

/* Writes one item to the directory target i. 0, or an error already recorded. */
static int
apply_local(struct mirror_run *run, struct package *p, int i, const struct pitem *it)
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

    if (mirror_target_path(t->root, it->path, final, sizeof final)) {
        mirror_item_error(run, p, i, it->path, "the path is too long under %s", t->root);
        return -1;
    }
    if (it->kind == IT_DEL) {
        if ((rc = remove_file(t->root, final, d->src_kind == SRC_DIR ? d->src_path : NULL))) {
            mirror_item_error(run, p, i, it->path, "cannot remove %s: %s", final, strerror(-rc));
            return -1;
        }
        if (SRC_INDEXED(d)) {
            struct ls_mirror_file f = {.path = it->path, .size = -1};
            mirror_index_note(p, i, &f);
        }
        t->items++;
        return 0;
    }
    if (d->src_kind == SRC_STORE) {
        memset(&si, 0, sizeof si);
        if (store_get(run->st, it->path, it->version, 1, &si, &err)) {
            mirror_item_error(run, p, i, it->path, "cannot read the item: %s", err.msg);
            return -1;
        }
        if (si.in_blob) {
            char blob[4200];
            store_blob_path(run->st, si.sha, blob, sizeof blob);
            if ((fd = open(blob, O_RDONLY | O_CLOEXEC)) < 0) {
                mirror_item_error(run, p, i, it->path, "cannot read the body: %s", strerror(errno));
                item_release(&si);
                return -1;
            }
        }
        if (fd >= 0)
            rc = put_regular(t, final, fd, (int64_t)si.size, 0644, si.mtime * 1000000, sha, &what,
                             &run->cancel);
        else {
            t->whole_bytes += (int64_t)si.size;
            rc = put_file(final, -1, si.body ? si.body : "", si.size, 0644, si.mtime * 1000000, sha,
                          &what, &run->cancel);
        }
        bytes = (int64_t)si.size;
        item_release(&si);
    } else if (d->src_kind == SRC_RSTORE) {
        char why[300];
        int rfd = mirror_rstore_fetch(run, it, t->root, why, sizeof why);
        if (rfd < 0) {
            mirror_item_error(run, p, i, it->path, "%s", why);
            return -1;
        }
        t->whole_bytes += it->size; /* fetched whole: a delta would save nothing here */
        rc = put_file(final, rfd, NULL, 0, 0644, it->mtime_ns, sha, &what, &run->cancel);
        bytes = it->size;
    } else if (d->src_kind == SRC_EXPORT) {
        char why[300];
        if (it->kind == IT_LINK) {
            rc = put_link(final, it->link_to ? it->link_to : "", it->mtime_ns, &what);
            bytes = it->link_to ? (int64_t)strlen(it->link_to) : 0;
        } else {
            int efd = mirror_export_fetch(run, it, t->root, why, sizeof why);
            if (efd < 0) {
                mirror_item_error(run, p, i, it->path, "%s", why);
                return -1;
            }
            t->whole_bytes += it->size;
            rc = put_file(final, efd, NULL, 0, it->mode, it->mtime_ns, sha, &what, &run->cancel);
            bytes = it->size;
        }
    } else {
        snprintf(src, sizeof src, "%s%s", d->src_path, it->path);
        if (it->kind == IT_LINK) {
            char to[4096];
            ssize_t n = readlink(src, to, sizeof to - 1);
            if (n < 0) {
                mirror_item_error(run, p, i, it->path, "cannot read the symlink: %s",
                                  strerror(errno));
                return -1;
            }
            to[n] = '\0';
            rc = put_link(final, to, it->mtime_ns, &what);
            bytes = n;
        } else {
            if ((fd = open(src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0) {
                mirror_item_error(run, p, i, it->path, "cannot read %s: %s", src, strerror(errno));
                return -1;
            }
            rc = put_regular(t, final, fd, it->size, it->mode, it->mtime_ns, sha, &what,
                             &run->cancel);
            bytes = it->size;
        }
    }
    if (fd >= 0) close(fd);
    if (rc) {
        mirror_item_error(run, p, i, it->path, "cannot %s (%s): %s", what, final, strerror(-rc));
        return -1;
    }
    if (SRC_INDEXED(d)) {
        struct ls_mirror_file f = {.path = it->path,
                                   .size = it->size,
                                   .mtime_ns = it->mtime_ns,
                                   .ino = it->ino,
                                   .mode = it->mode};
        memcpy(f.sha, sha, 32);
        mirror_index_note(p, i, &f);
    }
    t->items++;
    t->bytes += bytes;
    return 0;
}

/* Sends one item to target i. 0, or an error already recorded. */
static int
apply_item(struct mirror_run *run, struct package *p, int i, const struct pitem *it)
{
    if (run->t[i].remote) return mirror_push_add(run, p, i, (size_t)(it - p->items));
    return apply_local(run, p, i, it);
}

/* LOCKSTEP_MIRROR_PACKAGE_DELAY_MS: the tests slow a run down to kill its server mid-way. */
static void
test_delay(struct mirror_run *run)
{
    const char *v = getenv("LOCKSTEP_MIRROR_PACKAGE_DELAY_MS");
    int64_t ms;
    if (!v || ls_parse_i64(v, &ms) || ms <= 0) return;
    for (int64_t t = 0; t < ms && !atomic_load(&run->cancel); t += 10)
        usleep(10 * 1000);
}

/* Every target applies the package, syncs, and the store records it. Nonzero: stop the run. */
int
mirror_package_flush(struct mirror_run *run, struct package *p, int64_t upto_seq, const char *after)
{
    struct ls_error err;
    struct commit_arg a = {run, p, 0};
    int64_t items = 0, bytes = 0;
    int rc;

    for (size_t k = 0; k < p->n; k++) {
        const struct pitem *it = &p->items[k];
        for (int i = 0; i < run->nt; i++)
            if ((it->need & (1u << i)) && !run->t[i].failed) apply_item(run, p, i, it);
        if (run->fatal) break; /* the source went away: what was applied is recorded, no more */
        items++;
        if (it->kind == IT_FILE) bytes += it->size;
        if (atomic_load(&run->cancel)) return LS_EUNAVAIL;
    }
    for (int i = 0; i < run->nt; i++) /* a remote target applies the package as one batch */
        if (run->t[i].remote && !run->t[i].failed) mirror_push_send(run, p, i);
    {
        int alive = 0;
        for (int i = 0; i < run->nt; i++)
            alive += !run->t[i].failed;
        if (!alive) items = bytes = 0; /* nobody has this package: it is not done */
        /* the source went away mid-package: a store's checkpoint cannot hold part of it, so
         * the items applied are sent again by the next run (a directory's index keeps them) */
        if (run->fatal && !SRC_INDEXED(run->def)) items = bytes = 0;
    }
    for (int i = 0; i < run->nt; i++) {
        struct target_state *t = &run->t[i];
        int dfd;
        if (t->failed) continue;
        /* the renames are durable before the checkpoint says so */
        if (!t->remote && (dfd = open(t->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
            syncfs(dfd);
            close(dfd);
        }
        if (t->stuck) continue;
        if (upto_seq > t->cp.seq && !t->cp.full_seq) t->cp.seq = upto_seq;
        if (after && t->cp.full_seq) snprintf(t->cp.after, sizeof t->cp.after, "%s", after);
    }
    p->pend_items = items;
    p->pend_bytes = bytes;
    mirror_record_fill(run, p);
    rc = mirror_run_write(run, mirror_commit_run, &a, &err);
    p->pend_items = p->pend_bytes = 0;
    if (!rc) mirror_progress_add(run, items, bytes, 0);
    if (rc) {
        snprintf(run->note, sizeof run->note, "cannot record a package: %.200s", err.msg);
        run->fatal = 1;
    }
    mirror_package_clear(p);
    if (!rc && run->fatal) return LS_EIO;
    test_delay(run);
    if (!rc && errors_exceeded(run)) {
        snprintf(run->note, sizeof run->note, "more than %lld errors",
                 (long long)run->def->max_errors);
        run->fatal = 1;
        return LS_EIO;
    }
    return rc;
}

int
mirror_package_full(const struct mirror_run *run, const struct package *p)
{
    return (int64_t)p->n >= run->def->package_items || p->bytes >= run->def->package_bytes;
}

/* ---------------------------------------------------------------- after a crash */

/* Temporary files a killed run left in a target: found only after an interrupted run. */
void
mirror_sweep_tmp(const char *root)
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
