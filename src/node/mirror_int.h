/*
 * mirror_int.h - what the files of mirroring jobs share (docs/mirror.md), and nothing else sees:
 *   mirror.c         the jobs the loop knows, their definitions and --every timers; runs: their
 *                    threads, start, end and reaping; writes handed to the writer thread
 *   mirror_package.c progress, packages, writing a directory target, recording a package
 *   mirror_delta.c   a large changed file sent to a directory target as a librsync delta
 *   mirror_source.c  the sources: a store (a full pass, then the log by seq) and a directory
 *                    (walked twice with a bounded stack, against each target's index)
 *   mirror_push.c    a store subtree on another server as a target: a package, one batch there
 *   mirror_remote.c  a directory another server exports (lockstep://HOST:PORT/export/NAME),
 *                    listed in pages over HTTP on the run's thread, against each target's index
 * The rest of lockstep knows mirroring through node/mirror.h.
 */
#ifndef LS_MIRROR_INT_H
#define LS_MIRROR_INT_H

#include "node/mirror.h"
#include "node/server.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#define TARGETS_MAX 16
#define GLOBS_MAX 32
#define WALK_DEPTH_MAX 128
#define PAGE 500
#define LIVE_BATCH_MS 100 /* --live: a pass waits this long after a commit, for the burst */
#define TMP_PREFIX ".lsmirror-"
/* A changed file at least this large whose target copy is too travels as a librsync delta. */
#define DELTA_MIN (64 * 1024)

enum { SRC_STORE, SRC_DIR, SRC_EXPORT, SRC_RSTORE }; /* RSTORE: a store on another server */
enum { IT_FILE, IT_LINK, IT_DEL };

struct mirror_def {
    int src_kind;
    char src_path[4096]; /* the store prefix ("/" for all), or the directory */
    char src_url[300];   /* SRC_EXPORT: "http://HOST:PORT" */
    char src_export[65]; /* SRC_EXPORT: the export's name */
    char token_file[4096]; /* the token for a remote server is read from here ("": none) */
    int ntargets;
    char *targets[TARGETS_MAX]; /* "dir:/path", as given (their names in the tables) */
    int ninclude, nexclude;
    char *include[GLOBS_MAX], *exclude[GLOBS_MAX];
    int published_only, delete_missing, live;
    int64_t every_ms, package_items, package_bytes, max_errors;
};

/* Whether a source's targets keep an index of what they were given (directories), rather than a
 * checkpoint by seq (stores). */
#define SRC_INDEXED(d) ((d)->src_kind == SRC_DIR || (d)->src_kind == SRC_EXPORT)

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
    /* the last run's outcome, for the listing; its final progress, for the event streams */
    char last_state[16];
    struct mirror_counters counted; /* of the runs ended since start (GET /metrics) */
    int64_t last_ended, last_errors; /* wall clock ms (0: not known) */
    char last_note[256];
    json_t *last_end;
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
    pthread_cond_t cv;   /* a bridge request is done */
    struct bridge *outq; /* from run threads, for the writer */
    struct event *wake;  /* outq has something */
    struct event *reap;  /* a run thread has ended */
};

struct push;

struct target_state {
    const char *name; /* "dir:/path" or "lockstep://HOST:PORT/PREFIX" */
    const char *root; /* dir: targets */
    int remote;       /* lockstep:// targets: url, prefix and push (mirror_push.c) */
    char url[300], prefix[4096];
    struct push *push;
    int failed;
    int stuck; /* an item failed: the checkpoint stays where it was for the rest of the run */
    int64_t items, bytes, errors;
    int64_t delta_files, delta_bytes, whole_bytes; /* sent as deltas (their size) or whole */
    char reason[256];
    struct ls_mirror_checkpoint cp;
};

struct remote;

struct mirror_run {
    struct mirror_job *job;
    struct mirrors *m;
    struct mirror_def *def;
    char job_name[65];
    pthread_t thread;
    atomic_int cancel, ended;
    struct store *st; /* the run thread's read-only handle */
    struct remote *remote; /* SRC_EXPORT: the HTTP client of the source (mirror_remote.c) */
    int64_t id, started_ms, started_mono;
    struct target_state t[TARGETS_MAX];
    int nt;
    /* shared with the loop, under mu */
    pthread_mutex_t mu;
    int64_t items_total, bytes_total, items_done, bytes_done, errors;
    /* what the runs this one resumes (a crash cut them short) had done, and where their
     * percentage stood: the percentage goes on from there */
    int64_t carry_items, carry_bytes;
    double percent;
    const char *phase;
    char state[16], note[256];
    int fatal;
    int skipped; /* another mirror server holds the source's lease: nothing was done */
    /* --live: the loop's waiter for the next commit; live_seq, the committed seq it last saw,
     * and live_stop (the job was paused) are under mu, and cv tells the run */
    struct seq_waiter live_w;
    int64_t live_seq;
    int live_stop;
    pthread_cond_t cv;
};

struct pitem {
    char *path;    /* the item path, "/a/b" */
    int kind;      /* IT_FILE, IT_LINK, IT_DEL */
    unsigned need; /* a bit per target that should get it */
    int64_t size, mtime_ns, ino, mode, seq;
    int64_t version; /* store sources: the version to send */
    char *link_to;   /* export sources: a symlink's target (owned by the package) */
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
    int64_t pend_items, pend_bytes; /* applied, counted as done once recorded */
    struct ls_mirror_run rec;
    char *targets_json;
};

/* ---- mirror.c ---- */
int mirror_path_within(const char *a, const char *b);
/* Whether an item path ("/a/b") passes --include and --exclude. */
int mirror_path_selected(const struct mirror_def *d, const char *path);
/*
 * On a run thread: runs fn(st, r) on the writer thread, inside a transaction, and waits until
 * it has committed. The result, or LS_EUNAVAIL when the run was cancelled while waiting.
 */
int mirror_run_write(struct mirror_run *run, int (*fn)(struct store *st, struct wreq *r), void *arg,
                     struct ls_error *err);

/* ---- mirror_package.c ---- */
void mirror_progress_add(struct mirror_run *run, int64_t items, int64_t bytes, int64_t errors);
void mirror_progress_total(struct mirror_run *run, int64_t bytes); /* the counting pass */
json_t *mirror_progress_json(struct mirror_run *run);              /* the loop, under mu */
char *mirror_targets_text(struct mirror_run *run);                 /* JSON; the caller frees */
void mirror_package_clear(struct package *p);
void mirror_package_release(struct package *p);
int mirror_package_add(struct package *p, const struct pitem *it); /* copies it->path */
int mirror_package_full(const struct mirror_run *run, const struct package *p);
/* Every target applies the package, syncs, and the store records it with the targets'
 * checkpoints (upto_seq, after). Nonzero: stop the run. */
int mirror_package_flush(struct mirror_run *run, struct package *p, int64_t upto_seq,
                         const char *after);
/* Records an item's failure (target -1: the source's) with the package and in the counts. */
void mirror_item_error(struct mirror_run *run, struct package *p, int target, const char *path,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
struct commit_arg {
    struct mirror_run *run;
    struct package *p;
    int final; /* the run's end: set every surviving target's checkpoint */
};
int mirror_commit_run(struct store *st, struct wreq *r); /* writer thread; r->fn_arg: commit_arg */
void mirror_record_fill(struct mirror_run *run, struct package *p);
int mirror_target_path(const char *root, const char *path, char *out, size_t n);
void mirror_sweep_tmp(const char *root);

void mirror_index_note(struct package *p, int target, const struct ls_mirror_file *f);

/* ---- mirror_push.c ---- */
#define PUSH_PACKAGE_BYTES (4 << 20) /* a package's bytes with a lockstep:// target, at most */
/* "lockstep://HOST:PORT/PREFIX" -> "http://HOST:PORT" and "/PREFIX" ("" for the root). */
int mirror_push_spec(const char *spec, char *url, size_t url_n, char *prefix, size_t prefix_n,
                     struct ls_error *err);
/* Adds item k of the package to target i's batch; -1 after recording its error. */
int mirror_push_add(struct mirror_run *run, struct package *p, int i, size_t k);
/* Sends target i's batch: items refused one by one are failed items; no answer fails the target. */
void mirror_push_send(struct mirror_run *run, struct package *p, int i);
void mirror_push_free(struct mirror_run *run);
/* ---- mirror_delta.c ---- */
/*
 * Writes final from src as a delta against final's current copy: signature, delta, patch into
 * a temporary file (fsynced, mode and mtime set), renamed into place. sha receives the SHA-256
 * of the result, delta_bytes the delta's size. 0, or -errno with *what naming the step (final
 * untouched; src's offset is then undefined).
 */
int mirror_put_delta(const char *final, int src, int64_t mode, int64_t mtime_ns,
                     unsigned char sha[32], int64_t *delta_bytes, const char **what);

/* ---- mirror_source.c ---- */
int mirror_run_store(struct mirror_run *run, struct package *p);
int mirror_run_dir(struct mirror_run *run, struct package *p);
/*
 * A scan of a directory tree in path order (a local walk, an export's listing) with each
 * target's index read beside it, a page of rows per read transaction: a row the scan passes
 * over is a file the source no longer has. Before an item joins a package, mirror_index_upto
 * must have been called with its path for every target (then no row a flush writes is read).
 */
struct index_cursor {
    struct ls_mirror_file rows[PAGE];
    int n, at, done, oom;
    char last[4200]; /* the next page starts after it */
};
struct dir_pass {
    struct mirror_run *run;
    struct package *p;
    int counting;
    /* the counting pass: what is neither an item nor in the totals but needs the sending pass
     * (the problems met, which it records, and the directories a target lacks) */
    int64_t problems;
    /* the counting pass writes here what the sending pass is to do, in order, so that the tree
     * is walked once; NULL (or bad: a write failed) and the sending pass walks it again */
    FILE *spool;
    int spool_bad;
    struct index_cursor cur[TARGETS_MAX];
};
/* Target i's index up to path (NULL: to its end): the rows before it are gone from the source
 * (with --delete, removals: counted, or added to the package), and so is path's own row unless
 * keep; with keep, *row receives it and *found is set. */
int mirror_index_upto(struct dir_pass *dp, int i, const char *path, int keep,
                      struct ls_mirror_file *row, int *found);
/* Frees what the cursors hold and starts them again from the first row. */
void mirror_dir_pass_reset(struct dir_pass *dp, int counting);

/* ---- mirror_remote.c ---- */
/* Parses "lockstep://HOST:PORT/export/NAME" (an export) or "lockstep://HOST:PORT/PREFIX" (a store
 * subtree) into d; LS_EINVAL with the reason otherwise. */
int mirror_remote_spec(const char *src, struct mirror_def *d, struct ls_error *err);
int mirror_run_export(struct mirror_run *run, struct package *p);
int mirror_run_rstore(struct mirror_run *run, struct package *p);
/* A remote store item's body (it->version) in a temporary file: a descriptor at 0, or -1. */
int mirror_rstore_fetch(struct mirror_run *run, const struct pitem *it, const char *root,
                        char *why, size_t n);
void mirror_remote_close(struct mirror_run *run);
/* "Authorization: Bearer ..." from the job's token file ("" when it has none); -1 when the
 * file cannot be read. */
int mirror_token_header(struct mirror_run *run, char *out, size_t n);
/* The content of an export's file, fetched once per package item into a temporary file beside
 * root (NULL: in /tmp): a descriptor at offset 0 (the run keeps it), or -1 with why filled. */
int mirror_export_fetch(struct mirror_run *run, const struct pitem *it, const char *root,
                        char *why, size_t n);

#endif
