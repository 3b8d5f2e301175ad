/*
 * mirror_source.c - what a run reads (docs/mirror.md). A store source: targets without a
 * checkpoint get a full pass of the live items in path order, then every target reads the change
 * log after its seq, each changed path as it is now. A directory source: walked depth first with
 * one open directory per level, each file compared with each target's index (size, mtime, inode,
 * mode), so that unchanged files are neither read nor sent; then, with --delete, each target's
 * index is paged through for what the source no longer has. Each source is scanned twice: once to
 * count what is to do (the ETA), once to send it.
 *
 * Not for: writing targets or recording packages (mirror_package.c).
 */
#include "node/mirror_int.h"
#include "common/log.h"
#include "common/util.h"

#include <dirent.h>
#include <errno.h>
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

int
mirror_run_store(struct mirror_run *run, struct package *p)
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
        if (t->cp.full_seq)
            full |= 1u << i;
        else
            live |= 1u << i;
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
     int (*each)(struct mirror_run *run, struct package *p, const char *rel, const struct stat *sb,
                 void *arg),
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
            if (!arg)
                mirror_item_error(run, p, -1, rel, "cannot stat: %s", strerror(errno));
            else
                ++*(int64_t *)arg;
        } else if (S_ISDIR(sb.st_mode)) {
            if ((rc = each(run, p, rel, &sb, arg))) break;
            if (depth + 1 == WALK_DEPTH_MAX) {
                if (!arg)
                    mirror_item_error(run, p, -1, rel, "deeper than %d levels", WALK_DEPTH_MAX);
                else
                    ++*(int64_t *)arg;
            } else if (!(stack[depth + 1].d = opendir(abs_))) {
                if (!arg)
                    mirror_item_error(run, p, -1, rel, "cannot open: %s", strerror(errno));
                else
                    ++*(int64_t *)arg;
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
    for (; depth >= 0; depth--)
        closedir(stack[depth].d);
    return rc;
}

/* arg: NULL on the pass that sends; on the counting pass, a count of what is neither an item
 * nor counted in the totals but needs the sending pass: the problems met (the sending pass
 * records them) and the directories a target lacks. */
static int
dir_entry(struct mirror_run *run, struct package *p, const char *rel, const struct stat *sb,
          void *arg)
{
    struct pitem pi = {.path = (char *)rel};
    if (S_ISDIR(sb->st_mode)) {
        /* directories are made as they are met (no item: they carry no bytes) */
        if (arg) { /* the counting pass: one a target lacks is work for the sending pass */
            for (int i = 0; i < run->nt; i++) {
                char final[4200];
                struct stat tb;
                if (!run->t[i].failed && !run->t[i].remote &&
                    !mirror_target_path(run->t[i].root, rel, final, sizeof final) &&
                    lstat(final, &tb) < 0)
                    ++*(int64_t *)arg;
            }
            return 0;
        }
        for (int i = 0; i < run->nt; i++) {
            char final[4200];
            if (run->t[i].failed || run->t[i].remote ||
                mirror_target_path(run->t[i].root, rel, final, sizeof final))
                continue;
            if (mkdir(final, sb->st_mode & 07777) == 0) chmod(final, sb->st_mode & 07777);
        }
        return 0;
    }
    if (!mirror_path_selected(run->def, rel)) return 0;
    if (!S_ISREG(sb->st_mode) && !S_ISLNK(sb->st_mode)) {
        if (!arg)
            mirror_item_error(run, p, -1, rel, "not a regular file, symlink or directory");
        else
            ++*(int64_t *)arg;
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
        mirror_progress_total(run, pi.kind == IT_FILE ? pi.size : 0);
        return 0;
    }
    if (mirror_package_add(p, &pi)) return LS_ENOMEM;
    if (mirror_package_full(run, p)) return mirror_package_flush(run, p, 0, NULL);
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
    if (lstat(src, &sb) == 0 && !S_ISDIR(sb.st_mode) && mirror_path_selected(g->run->def, path))
        return 0;
    if (g->counting) {
        mirror_progress_total(g->run, 0);
        return 0;
    }
    if ((g->rc = mirror_package_add(g->p, &pi))) return 1;
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
            if (!counting && mirror_package_full(run, p) &&
                (g.rc = mirror_package_flush(run, p, 0, NULL)))
                return g.rc;
        } while (n == PAGE);
    }
    return 0;
}

int
mirror_run_dir(struct mirror_run *run, struct package *p)
{
    int64_t problems = 0, todo;
    int rc;
    pthread_mutex_lock(&run->mu);
    run->phase = "scanning";
    pthread_mutex_unlock(&run->mu);
    if ((rc = walk(run, p, dir_entry, &problems))) return rc;
    if (run->def->delete_missing && (rc = dir_deletions(run, p, 1))) return rc;
    pthread_mutex_lock(&run->mu);
    run->phase = "transferring";
    todo = run->items_total;
    pthread_mutex_unlock(&run->mu);
    /* nothing to send and nothing to report: the sending pass would find the same (a change
     * made meanwhile is the next run's) */
    if (todo == 0 && problems == 0) return 0;
    if ((rc = walk(run, p, dir_entry, NULL))) return rc;
    if ((p->n || p->nerrs) && (rc = mirror_package_flush(run, p, 0, NULL))) return rc;
    if (run->def->delete_missing && (rc = dir_deletions(run, p, 0))) return rc;
    if ((p->n || p->nerrs) && (rc = mirror_package_flush(run, p, 0, NULL))) return rc;
    return 0;
}
