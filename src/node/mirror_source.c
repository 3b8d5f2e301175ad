/*
 * mirror_source.c - what a run reads (docs/mirror.md). A store source: targets without a
 * checkpoint get a full pass of the live items in path order, then every target reads the change
 * log after its seq, each changed path as it is now. A directory source: walked depth first in
 * path order with one open directory per level, each file compared with each target's index
 * (size, mtime, inode, mode), read beside the walk in the same order, so that unchanged files are
 * neither read nor sent and, with --delete, the rows the walk passes over are what the source no
 * longer has. Each source is scanned twice: once to count what is to do (the ETA), once to send
 * it (a run with nothing to do stops after the first); a directory's counting pass writes what
 * it found to a spool (an unlinked file), which the sending pass reads instead of walking again.
 *
 * Not for: writing targets or recording packages (mirror_package.c).
 */
#include "node/mirror_int.h"
#include "common/log.h"
#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- store sources */

struct store_scan {
    struct mirror_run *run;
    struct package *p;
    int counting;
    unsigned mask;   /* the targets this pass feeds */
    char last[4096]; /* the full pass: the last path listed */
    int64_t head;    /* the log pass: the store's seq when the run began, where it ends */
    int64_t at_seq;  /* the log pass: the last seq read */
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
    if (!(pi.version = send_version(run->def, it)) || !mirror_path_selected(run->def, it->path))
        return 0;
    for (int i = 0; i < run->nt; i++)
        if ((s->mask & (1u << i)) && strcmp(it->path, run->t[i].cp.after) > 0) pi.need |= 1u << i;
    if (!pi.need) return 0;
    if (s->counting) {
        mirror_progress_total(run, pi.size);
        return 0;
    }
    if ((s->rc = mirror_package_add(s->p, &pi))) return 1;
    if (mirror_package_full(run, s->p) && (s->rc = mirror_package_flush(run, s->p, 0, it->path)))
        return 1;
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
    if ((p->n || p->nerrs) && (s.rc = mirror_package_flush(run, p, 0, s.last))) return s.rc;
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
    return strcmp(prefix, "/") == 0 || mirror_path_within(path, prefix);
}

/* One path a change touched: its state now, for the targets that have not had that seq. */
static int
change_path(struct store_scan *s, const char *path, int64_t seq)
{
    struct mirror_run *run = s->run;
    struct pitem pi = {.path = (char *)path, .seq = seq};
    struct ls_item it;
    struct ls_error err;
    if (!under_prefix(run->def->src_path, path) || !mirror_path_selected(run->def, path)) return 0;
    memset(&it, 0, sizeof it);
    if (store_get(run->st, path, 0, 0, &it, &err) == 0 && it.seq > seq && it.seq <= s->head) {
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
        mirror_progress_total(run, pi.kind == IT_FILE ? pi.size : 0);
        return 0;
    }
    if ((s->rc = mirror_package_add(s->p, &pi))) return 1;
    return 0;
}

static int
change_item(void *arg, const struct ls_change *c)
{
    struct store_scan *s = arg;
    if (c->seq > s->head) return 1;
    s->at_seq = c->seq;
    if (c->op == LS_OP_NOTIFY) return 0;
    if (change_path(s, c->path, c->seq)) return 1;
    if (c->to && change_path(s, c->to, c->seq)) return 1;
    if (!s->counting && mirror_package_full(s->run, s->p) &&
        (s->rc = mirror_package_flush(s->run, s->p, c->seq, NULL)))
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
    s.head = head;
    s.at_seq = since;
    while (since < head) {
        int64_t before = since;
        n = store_changes(run->st, since, PAGE, change_item, &s);
        if (n < 0) {
            snprintf(run->note, sizeof run->note, "cannot read the change log");
            run->fatal = 1;
            return n;
        }
        if (s.rc || atomic_load(&run->cancel)) return s.rc ? s.rc : LS_EUNAVAIL;
        since = s.at_seq;
        if (n < PAGE || since == before) break;
    }
    if (counting) return 0;
    if ((p->n || p->nerrs) && (s.rc = mirror_package_flush(run, p, head, NULL))) return s.rc;
    for (int i = 0; i < run->nt; i++)
        if ((mask & (1u << i)) && !run->t[i].failed && !run->t[i].stuck && run->t[i].cp.seq < head)
            run->t[i].cp.seq = head;
    return 0;
}

/*
 * After the log was replaced (a snapshot, or a fork: LOG_GEN moved), a target's copy may hold
 * items of the old history that the new one does not have; the log cannot name them. With
 * --delete, each such directory target is compared with the store: every file under the prefix
 * that is not an item to send now is removed.
 */
static int
store_sweep(struct mirror_run *run, struct package *p, unsigned mask, int counting)
{
    for (int i = 0; i < run->nt; i++) {
        struct target_state *t = &run->t[i];
        DIR *stack[WALK_DEPTH_MAX];
        size_t lens[WALK_DEPTH_MAX], rootlen;
        char path[4200];
        int depth = 0, rc = 0;
        if (!(mask & (1u << i)) || t->failed || t->remote) continue;
        snprintf(path, sizeof path, "%s", strcmp(t->root, "/") == 0 ? "" : t->root);
        rootlen = strlen(path);
        if (!(stack[0] = opendir(*path ? path : "/"))) continue;
        lens[0] = rootlen;
        while (depth >= 0 && !rc) {
            struct dirent *de = readdir(stack[depth]);
            struct stat sb;
            struct ls_item it;
            struct ls_error err;
            const char *rel;
            int keep;
            if (!de) {
                closedir(stack[depth--]);
                continue;
            }
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
                strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0 ||
                lens[depth] + strlen(de->d_name) + 2 >= sizeof path)
                continue;
            snprintf(path + lens[depth], sizeof path - lens[depth], "/%s", de->d_name);
            rel = path + rootlen;
            if (lstat(path, &sb) < 0) continue;
            if (S_ISDIR(sb.st_mode)) {
                if (depth + 1 < WALK_DEPTH_MAX && (stack[depth + 1] = opendir(path))) {
                    depth++;
                    lens[depth] = strlen(path);
                }
                continue;
            }
            if (!under_prefix(run->def->src_path, rel)) continue;
            memset(&it, 0, sizeof it);
            keep = store_get(run->st, rel, 0, 0, &it, &err) == 0 &&
                   send_version(run->def, &it) && mirror_path_selected(run->def, rel);
            item_release(&it);
            if (keep) continue;
            if (counting) {
                mirror_progress_total(run, 0);
            } else {
                struct pitem pi = {.path = (char *)rel, .kind = IT_DEL, .need = 1u << i};
                if ((rc = mirror_package_add(p, &pi)) == 0 && mirror_package_full(run, p))
                    rc = mirror_package_flush(run, p, 0, NULL);
            }
            if (!rc && atomic_load(&run->cancel)) rc = LS_EUNAVAIL;
        }
        for (; depth >= 0; depth--)
            closedir(stack[depth]);
        if (rc) return rc;
    }
    if (!counting && (p->n || p->nerrs)) return mirror_package_flush(run, p, 0, NULL);
    return 0;
}

int
mirror_run_store(struct mirror_run *run, struct package *p)
{
    struct ls_position pos;
    /* the generation first: one that moves before the position is read only errs towards a
     * full pass at the next run */
    int64_t gen = store_floor(run->st, LOG_GEN), gen_start = store_floor(run->st, GEN_START);
    int64_t floor = store_floor(run->st, FLOOR_LOG);
    unsigned full = 0, live = 0, sweep = 0;
    int rc;
    if (store_position(run->st, &pos)) {
        snprintf(run->note, sizeof run->note, "cannot read the store's position");
        run->fatal = 1;
        return LS_EIO;
    }
    for (int i = 0; i < run->nt; i++) {
        struct target_state *t = &run->t[i];
        if (t->failed) continue;
        if (t->cp.gen < 0 && gen == 0) t->cp.gen = 0; /* never replaced: it can only be this */
        if ((t->cp.seq || t->cp.full_seq) && t->cp.gen != gen) {
            /* The log was replaced since the checkpoint: its seq names a change of another
             * history. Only when it lies in what the two histories share (one replacement,
             * at or before gen_start) and the log still has what follows does the log go on
             * from it; otherwise a full pass again, and with --delete a comparison of the
             * copy with the store. */
            if (t->cp.full_seq || t->cp.gen != gen - 1 || t->cp.seq > gen_start ||
                t->cp.seq < floor) {
                log_info("mirror %s: %s: the store's history changed since its checkpoint "
                         "(seq %lld): a full pass",
                         run->job_name, t->name, (long long)t->cp.seq);
                t->cp.full_seq = pos.seq > 0 ? pos.seq : 1;
                t->cp.after[0] = '\0';
                if (run->def->delete_missing && !t->remote) sweep |= 1u << i;
            }
            if (!(sweep & (1u << i))) t->cp.gen = gen; /* a swept one once the sweep is done */
        } else if (!t->cp.full_seq && (t->cp.seq == 0 || t->cp.seq < floor)) {
            /* never mirrored, or further behind than the log reaches: a full pass first */
            t->cp.full_seq = pos.seq > 0 ? pos.seq : 1;
            t->cp.after[0] = '\0';
            t->cp.gen = gen;
        }
        if (t->cp.full_seq)
            full |= 1u << i;
        else
            live |= 1u << i;
    }
    pthread_mutex_lock(&run->mu);
    run->phase = "scanning";
    pthread_mutex_unlock(&run->mu);
    if ((sweep && (rc = store_sweep(run, p, sweep, 1))) ||
        (full && (rc = store_full(run, p, full, 1))) ||
        (rc = store_incremental(run, p, live, pos.seq, 1)))
        return rc;
    pthread_mutex_lock(&run->mu);
    run->phase = "transferring";
    pthread_mutex_unlock(&run->mu);
    if (sweep) {
        if ((rc = store_sweep(run, p, sweep, 0))) return rc;
        for (int i = 0; i < run->nt; i++) /* until then a crash leaves it to do again */
            if ((sweep & (1u << i)) && !run->t[i].stuck) run->t[i].cp.gen = gen;
    }
    if (full && (rc = store_full(run, p, full, 0))) return rc;
    /* the targets that just had a full pass at their full_seq catch up to head too */
    return store_incremental(run, p, full | live, pos.seq, 0);
}

/* ---------------------------------------------------------------- directory sources */

/*
 * A record of the spool: kind 'D' a directory to make, 'F' an item (a file or symlink, or a
 * removal), 'E' a problem of the source; then the path (path_len bytes) and for 'E' the reason.
 */
struct spool_rec {
    char kind;
    unsigned char item_kind; /* IT_FILE, IT_LINK, IT_DEL */
    uint16_t path_len, why_len;
    uint32_t need;
    int64_t size, mtime_ns, ino, mode;
};

static void
spool_put(struct dir_pass *dp, char kind, const struct pitem *pi, const char *why)
{
    struct spool_rec r = {.kind = kind};
    size_t pl = strlen(pi->path), wl = why ? strlen(why) : 0;
    if (!dp->spool || dp->spool_bad) return;
    r.item_kind = (unsigned char)pi->kind;
    r.path_len = (uint16_t)pl;
    r.why_len = (uint16_t)wl;
    r.need = pi->need;
    r.size = pi->size;
    r.mtime_ns = pi->mtime_ns;
    r.ino = pi->ino;
    r.mode = pi->mode;
    if (pl >= 4200 || wl >= 4096 || fwrite(&r, sizeof r, 1, dp->spool) != 1 ||
        fwrite(pi->path, 1, pl, dp->spool) != pl || (wl && fwrite(why, 1, wl, dp->spool) != wl))
        dp->spool_bad = 1;
}

/*
 * One target's index, read beside the walk in path order, a page at a time (one read
 * transaction a page, not one a file). Both go in strcmp order, so a row the walk passes over is
 * a file the source no longer has. Rows a package records are never read again: before an item
 * joins a package, the cursor holds a row at or after its path (or has reached the end), so the
 * next page starts after every path a flush writes.
 */
static void
cursor_clear(struct index_cursor *c)
{
    for (int k = 0; k < c->n; k++)
        free((char *)c->rows[k].path);
    c->n = c->at = 0;
}

static int
cursor_row(void *arg, const struct ls_mirror_file *f)
{
    struct index_cursor *c = arg;
    c->rows[c->n] = *f;
    if (!(c->rows[c->n].path = strdup(f->path))) {
        c->oom = 1;
        return 1;
    }
    c->n++;
    return 0;
}

/* Target i's next row, or NULL at the end of its index (or on an error, in *rc). */
static const struct ls_mirror_file *
cursor_peek(struct dir_pass *dp, int i, int *rc)
{
    struct index_cursor *c = &dp->cur[i];
    int n;
    if (c->at < c->n) return &c->rows[c->at];
    if (c->done) return NULL;
    cursor_clear(c);
    n = store_mirror_index_rows(dp->run->st, dp->run->job_name, dp->run->t[i].name, c->last, PAGE,
                                cursor_row, c);
    if (n < 0 || c->oom) {
        snprintf(dp->run->note, sizeof dp->run->note, "cannot read the index of %.200s",
                 dp->run->t[i].name);
        dp->run->fatal = 1;
        *rc = c->oom ? LS_ENOMEM : LS_EIO;
        return NULL;
    }
    if (c->n < PAGE) c->done = 1;
    if (!c->n) return NULL;
    snprintf(c->last, sizeof c->last, "%s", c->rows[c->n - 1].path);
    return &c->rows[0];
}

/* A row of target i's index that the source no longer has: with --delete, a removal. */
static int
index_gone(struct dir_pass *dp, int i, const char *path)
{
    struct pitem pi = {.path = (char *)path, .kind = IT_DEL, .need = 1u << i};
    if (!dp->run->def->delete_missing) return 0;
    if (dp->counting) {
        mirror_progress_total(dp->run, 0);
        spool_put(dp, 'F', &pi, NULL);
        return 0;
    }
    if (mirror_package_add(dp->p, &pi)) return LS_ENOMEM;
    if (mirror_package_full(dp->run, dp->p)) return mirror_package_flush(dp->run, dp->p, 0, NULL);
    return 0;
}

/*
 * Target i's index up to path (NULL: to its end): the rows before it are gone from the source,
 * and so is path's own row unless keep; with keep, *row receives it and *found is set.
 */
int
mirror_index_upto(struct dir_pass *dp, int i, const char *path, int keep,
                  struct ls_mirror_file *row, int *found)
{
    const struct ls_mirror_file *f;
    int rc = 0, cmp;
    if (found) *found = 0;
    while ((f = cursor_peek(dp, i, &rc)) && (cmp = path ? strcmp(f->path, path) : -1) <= 0) {
        dp->cur[i].at++;
        if (cmp == 0 && keep) {
            *row = *f;
            *found = 1;
            return 0;
        }
        if ((rc = index_gone(dp, i, f->path))) return rc;
    }
    return rc;
}

/* A problem of the source: the sending pass records it, the counting pass counts it. */
static void
dir_problem(struct dir_pass *dp, const char *rel, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void
dir_problem(struct dir_pass *dp, const char *rel, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (dp->counting) {
        struct pitem pi = {.path = (char *)rel};
        dp->problems++;
        spool_put(dp, 'E', &pi, why);
        return;
    }
    mirror_item_error(dp->run, dp->p, -1, rel, "%s", why);
}

/* A directory of the source: no item (it carries no bytes); made in the targets as it is met. */
static int
dir_directory(struct dir_pass *dp, const char *rel, const struct stat *sb)
{
    struct mirror_run *run = dp->run;
    struct pitem pi = {.path = (char *)rel, .mode = (int64_t)sb->st_mode};
    int rc;
    for (int i = 0; i < run->nt; i++) {
        char final[4200];
        struct stat tb;
        if (run->t[i].failed) continue;
        /* an indexed file of that name is gone: the source has a directory there now */
        if ((rc = mirror_index_upto(dp, i, rel, 0, NULL, NULL))) return rc;
        if (run->t[i].remote || mirror_target_path(run->t[i].root, rel, final, sizeof final))
            continue;
        if (dp->counting) { /* one a target lacks is work for the sending pass */
            if (lstat(final, &tb) < 0) pi.need |= 1u << i;
        } else if (mkdir(final, sb->st_mode & 07777) == 0) {
            chmod(final, sb->st_mode & 07777);
        }
    }
    if (pi.need) {
        dp->problems++;
        spool_put(dp, 'D', &pi, NULL);
    }
    return 0;
}

/* A file, symlink or other entry of the source, against each target's row for it. */
static int
dir_file(struct dir_pass *dp, const char *rel, const struct stat *sb)
{
    struct mirror_run *run = dp->run;
    struct pitem pi = {.path = (char *)rel};
    int selected = mirror_path_selected(run->def, rel);
    int item = S_ISREG(sb->st_mode) || S_ISLNK(sb->st_mode);
    int rc;
    pi.kind = S_ISLNK(sb->st_mode) ? IT_LINK : IT_FILE;
    pi.size = (int64_t)sb->st_size;
    pi.mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
    pi.ino = (int64_t)sb->st_ino;
    pi.mode = (int64_t)sb->st_mode;
    for (int i = 0; i < run->nt; i++) {
        struct ls_mirror_file f;
        int found;
        if (run->t[i].failed) continue;
        /* an excluded path's row is gone; another entry's (a FIFO) stays */
        if ((rc = mirror_index_upto(dp, i, rel, selected, &f, &found))) return rc;
        if (!found || f.size != pi.size || f.mtime_ns != pi.mtime_ns || f.ino != pi.ino ||
            f.mode != pi.mode)
            pi.need |= 1u << i;
    }
    if (!selected) return 0;
    if (!item) {
        dir_problem(dp, rel, "not a regular file, symlink or directory");
        return 0;
    }
    if (!pi.need) return 0;
    if (dp->counting) {
        mirror_progress_total(run, pi.kind == IT_FILE ? pi.size : 0);
        spool_put(dp, 'F', &pi, NULL);
        return 0;
    }
    if (mirror_package_add(dp->p, &pi)) return LS_ENOMEM;
    if (mirror_package_full(run, dp->p)) return mirror_package_flush(run, dp->p, 0, NULL);
    return 0;
}

/* The sending pass from the spool: what the counting pass found, in the same order. */
static int
spool_send(struct dir_pass *dp)
{
    struct mirror_run *run = dp->run;
    struct spool_rec r;
    char path[4200], why[4096];
    int rc = 0;
    if (fflush(dp->spool) || fseek(dp->spool, 0, SEEK_SET)) return LS_EIO;
    while (!rc && fread(&r, sizeof r, 1, dp->spool) == 1) {
        struct pitem pi = {.path = path};
        if (r.path_len >= sizeof path || r.why_len >= sizeof why ||
            fread(path, 1, r.path_len, dp->spool) != r.path_len ||
            fread(why, 1, r.why_len, dp->spool) != r.why_len)
            return LS_EIO;
        path[r.path_len] = why[r.why_len] = '\0';
        if (r.kind == 'D') {
            for (int i = 0; i < run->nt; i++) {
                char final[4200];
                mode_t mode = (mode_t)(r.mode & 07777);
                if (!(r.need & (1u << i)) || run->t[i].failed || run->t[i].remote ||
                    mirror_target_path(run->t[i].root, path, final, sizeof final))
                    continue;
                if (mkdir(final, mode) == 0) chmod(final, mode);
            }
        } else if (r.kind == 'E') {
            mirror_item_error(run, dp->p, -1, path, "%s", why);
        } else {
            pi.kind = r.item_kind;
            pi.need = r.need;
            pi.size = r.size;
            pi.mtime_ns = r.mtime_ns;
            pi.ino = r.ino;
            pi.mode = r.mode;
            if (mirror_package_add(dp->p, &pi)) return LS_ENOMEM;
            if (mirror_package_full(run, dp->p)) rc = mirror_package_flush(run, dp->p, 0, NULL);
        }
        if (!rc && atomic_load(&run->cancel)) rc = LS_EUNAVAIL;
    }
    if (!rc && ferror(dp->spool)) return LS_EIO;
    return rc;
}

/* An unlinked file in the data directory (or /tmp) for the spool; NULL when none can be had. */
static FILE *
spool_open(struct mirror_run *run)
{
    int fd = open(store_dir(run->st), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    FILE *f;
    if (fd < 0 && (fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) < 0) return NULL;
    if (!(f = fdopen(fd, "w+"))) close(fd);
    return f;
}

/*
 * A directory being walked: its entries, read at once and sorted so that the full paths come
 * out in strcmp order (a directory's name sorts as NAME/, since that is where its contents are).
 * Each entry is a flag byte ('/' for a directory) and its name, in one buffer.
 */
struct walk_level {
    DIR *d;
    char *buf;
    size_t used, cap;
    char **e;
    size_t n, cap_e, at;
    size_t len; /* of the relative path at this level */
};

static int
entry_cmp(const void *a, const void *b)
{
    const unsigned char *x = *(const unsigned char *const *)a;
    const unsigned char *y = *(const unsigned char *const *)b;
    const unsigned char *p = x + 1, *q = y + 1;
    int cp, cq;
    while (*p && *p == *q)
        p++, q++;
    cp = *p ? *p : x[0] == '/' ? '/' : 0;
    cq = *q ? *q : y[0] == '/' ? '/' : 0;
    return cp - cq;
}

/* Reads l->d (opened) whole and sorts it. 0, or LS_ENOMEM. */
static int
level_read(struct walk_level *l)
{
    struct dirent *de;
    size_t k = 0;
    l->used = l->n = l->at = 0;
    while ((de = readdir(l->d))) {
        size_t nl = strlen(de->d_name);
        int dir = de->d_type == DT_DIR;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        if (de->d_type == DT_UNKNOWN) {
            struct stat sb;
            dir = fstatat(dirfd(l->d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
                  S_ISDIR(sb.st_mode);
        }
        if (l->used + nl + 2 > l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 16384;
            char *nb;
            while (cap < l->used + nl + 2)
                cap *= 2;
            if (!(nb = realloc(l->buf, cap))) return LS_ENOMEM;
            l->buf = nb;
            l->cap = cap;
        }
        if (l->n == l->cap_e) {
            size_t cap = l->cap_e ? l->cap_e * 2 : 256;
            char **ne = realloc(l->e, cap * sizeof *ne);
            if (!ne) return LS_ENOMEM;
            l->e = ne;
            l->cap_e = cap;
        }
        l->buf[l->used] = dir ? '/' : '-';
        memcpy(l->buf + l->used + 1, de->d_name, nl + 1);
        l->e[l->n++] = (char *)(uintptr_t)l->used; /* an offset until the buffer stops moving */
        l->used += nl + 2;
    }
    for (k = 0; k < l->n; k++)
        l->e[k] = l->buf + (size_t)(uintptr_t)l->e[k];
    qsort(l->e, l->n, sizeof *l->e, entry_cmp);
    return 0;
}

/*
 * Walks the source directory depth first in path order, one open directory per level (the
 * stack is bounded by the depth, each level holds one directory's names), each entry stated
 * relative to its directory; every target's index is merged in on the way, and at the end
 * what is left of it is gone.
 */
static int
walk(struct dir_pass *dp)
{
    struct mirror_run *run = dp->run;
    struct walk_level *stack = calloc(WALK_DEPTH_MAX, sizeof *stack);
    char rel[4200] = "";
    int depth = 0, rc = 0;
    if (!stack) return LS_ENOMEM;
    if (!(stack[0].d = opendir(run->def->src_path))) {
        snprintf(run->note, sizeof run->note, "cannot open the source %.150s: %.60s",
                 run->def->src_path, strerror(errno));
        run->fatal = 1;
        free(stack);
        return LS_EIO;
    }
    rc = level_read(&stack[0]);
    while (depth >= 0 && !rc) {
        struct walk_level *l = &stack[depth];
        struct stat sb;
        const char *name;
        if (l->at == l->n) {
            closedir(l->d);
            l->d = NULL;
            depth--;
            continue;
        }
        name = l->e[l->at++] + 1;
        if (l->len + 1 + strlen(name) >= sizeof rel) continue;
        snprintf(rel + l->len, sizeof rel - l->len, "/%s", name);
        if (fstatat(dirfd(l->d), name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
            dir_problem(dp, rel, "cannot stat: %s", strerror(errno));
        } else if (S_ISDIR(sb.st_mode)) {
            int fd;
            DIR *d = NULL;
            if ((rc = dir_directory(dp, rel, &sb))) break;
            if (depth + 1 == WALK_DEPTH_MAX) {
                dir_problem(dp, rel, "deeper than %d levels", WALK_DEPTH_MAX);
            } else if ((fd = openat(dirfd(l->d), name,
                                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 ||
                       !(d = fdopendir(fd))) {
                dir_problem(dp, rel, "cannot open: %s", strerror(errno));
                if (fd >= 0) close(fd);
            } else {
                depth++;
                stack[depth].d = d;
                stack[depth].len = strlen(rel);
                rc = level_read(&stack[depth]);
            }
        } else {
            rc = dir_file(dp, rel, &sb);
        }
        if (!rc && atomic_load(&run->cancel)) rc = LS_EUNAVAIL;
    }
    for (int k = 0; k < WALK_DEPTH_MAX; k++) {
        if (stack[k].d) closedir(stack[k].d);
        free(stack[k].buf);
        free(stack[k].e);
    }
    free(stack);
    /* what is left of each index, the source no longer has */
    for (int i = 0; !rc && run->def->delete_missing && i < run->nt; i++)
        if (!run->t[i].failed) rc = mirror_index_upto(dp, i, NULL, 0, NULL, NULL);
    return rc;
}

void
mirror_dir_pass_reset(struct dir_pass *dp, int counting)
{
    for (int i = 0; i < TARGETS_MAX; i++) {
        cursor_clear(&dp->cur[i]);
        dp->cur[i].done = dp->cur[i].oom = 0;
        dp->cur[i].last[0] = '\0';
    }
    dp->counting = counting;
}

int
mirror_run_dir(struct mirror_run *run, struct package *p)
{
    struct dir_pass *dp = calloc(1, sizeof *dp);
    int64_t todo;
    int rc;
    if (!dp) return LS_ENOMEM;
    dp->run = run;
    dp->p = p;
    pthread_mutex_lock(&run->mu);
    run->phase = "scanning";
    pthread_mutex_unlock(&run->mu);
    mirror_dir_pass_reset(dp, 1);
    dp->spool = spool_open(run);
    if ((rc = walk(dp))) goto out;
    pthread_mutex_lock(&run->mu);
    run->phase = "transferring";
    todo = run->items_total;
    pthread_mutex_unlock(&run->mu);
    /* nothing to send and nothing to report: the sending pass would find the same (a change
     * made meanwhile is the next run's) */
    if (todo == 0 && dp->problems == 0) goto out;
    mirror_dir_pass_reset(dp, 0);
    if (dp->spool && !dp->spool_bad) {
        if ((rc = spool_send(dp)) == LS_EIO && !run->fatal) {
            snprintf(run->note, sizeof run->note, "cannot read back the scan's spool");
            run->fatal = 1;
        }
    } else {
        rc = walk(dp);
    }
    if (!rc && (p->n || p->nerrs)) rc = mirror_package_flush(run, p, 0, NULL);
out:
    mirror_dir_pass_reset(dp, 0);
    if (dp->spool) fclose(dp->spool);
    free(dp);
    return rc;
}
