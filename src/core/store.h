/*
 * store.h - the versioned content store and its change log, on SQLite in WAL mode.
 *
 * A store is a directory: store.db (items, versions, the change log, identity) and blobs/ (bodies
 * above the inline threshold, named by their SHA-256, stored once per distinct content).
 *
 * Threading: a struct store is one SQLite connection and is used by one thread. The server opens
 * the same directory twice: one handle for its writer thread (all writes, group commit) and one
 * for the event loop (reads; WAL readers never block the writer).
 *
 * Every applied operation appends exactly one log entry with the next seq. The writer brackets
 * a group of requests in store_begin/store_commit and each request in a savepoint, so a request
 * (a batch) is all or nothing and many requests share one fsync.
 */
#ifndef LS_STORE_H
#define LS_STORE_H

#include <stdatomic.h>
#include <stdint.h>

#include "common/err.h"
#include "core/item.h"

#define LS_INLINE_MAX_DEFAULT (64 * 1024)

struct store;

struct store_options {
    int64_t max_versions; /* versions kept per item, besides the published one; 0: default 100 */
    int sync_full;        /* fsync at every commit (the primary); else at checkpoints only */
    uint64_t inline_max;  /* bodies above this go to blobs/; 0: LS_INLINE_MAX_DEFAULT */
    int readonly;         /* a reader handle: no schema creation, no writes */
    int cache_kib;        /* SQLite's page cache; 0: 8 MB for a reader, 32 MB for the writer */
};

/* A position in a store's history (DESIGN.md: everything is a position in a log). */
struct ls_position {
    char store_id[33];
    int64_t epoch;
    int64_t seq;
};

enum ls_status { LS_STATUS_DRAFT, LS_STATUS_PUBLISHED, LS_STATUS_CHANGED };
const char *status_name(int status);

/* An item, or one version of it, as read from the store. Release with item_release(). */
struct ls_item {
    int64_t id;
    char *path;
    char *kind;
    char *meta;
    int64_t version;           /* the version described (latest unless asked for another) */
    int64_t latest_version;    /* the item's latest version */
    int64_t published_version; /* 0 when nothing is published */
    int status;
    int deleted;
    int64_t seq;   /* seq of the item's last change */
    int64_t mtime; /* ms since the Unix epoch, of this version */
    int64_t vseq;  /* seq that created this version */
    uint64_t size;
    unsigned char sha[32];
    void *body; /* inline body when asked for and stored inline; NULL otherwise */
    int in_blob;
};
void item_release(struct ls_item *it);

struct ls_change {
    int64_t seq;
    int64_t ts;
    int op;
    const char *path;
    const char *to; /* move */
    int64_t version;
    int published; /* put: the new version was published too */
};

struct ls_op_result {
    int64_t seq;
    int64_t version;
};

struct store *store_open(const char *dir, const struct store_options *opt, struct ls_error *err);
void store_free(struct store *st);
const char *store_dir(const struct store *st);
/* While *flag is nonzero, the statement running on this handle stops with an error (a reader
 * whose client went away). NULL: no more checks. */
void store_set_interrupt(struct store *st, atomic_int *flag);

/* ---- writing (one thread) ---- */
int store_begin(struct store *st, struct ls_error *err);
/* On failure nothing of the transaction is committed, and the position is the one on disk. */
int store_commit(struct store *st, struct ls_error *err);
/* Rolls back whatever is open; the in-memory position and the tail go back to what is on disk. */
void store_rollback(struct store *st);
/* Nonzero while the transaction of store_begin is open. SQLite may roll it back by itself on
 * SQLITE_FULL, SQLITE_IOERR or SQLITE_NOMEM: then nothing of it will commit (store_rollback). */
int store_in_transaction(struct store *st);
/* Each returns 0, or an error when the transaction is no longer open (or, for the rollback,
 * when the request's changes could not be undone alone): then only store_rollback is left. */
int store_savepoint(struct store *st);
int store_savepoint_release(struct store *st);
int store_savepoint_rollback(struct store *st);
int store_apply(struct store *st, const struct ls_op *op, struct ls_op_result *res,
                struct ls_error *err);
/* Removes blob files that the last commit left unreferenced. Call after store_commit. */
void store_collect_garbage(struct store *st);
void store_collect_all_garbage(struct store *st); /* a full scan of blobs/ */
/* From now on every entry this (writer's) handle logs goes to tail as well (core/tail.h). */
struct log_tail;
void store_set_tail(struct store *st, struct log_tail *tail);
void store_clean_tmp(struct store *st);           /* at start: interrupted writes */

/* ---- identity and position ---- */
int store_position(struct store *st, struct ls_position *pos); /* as committed */

/* ---- reading ---- */
/* version 0: the latest. want_body loads inline bodies into it->body. */
int store_get(struct store *st, const char *path, int64_t version, int want_body,
              struct ls_item *it, struct ls_error *err);
typedef int (*store_item_cb)(void *arg, const struct ls_item *it);
int store_history(struct store *st, const char *path, store_item_cb cb, void *arg,
                  struct ls_error *err);
/* Items under prefix (the prefix itself and its subtree) in path order, after `after`. */
int store_list(struct store *st, const char *prefix, const char *after, int limit,
               int include_deleted, store_item_cb cb, void *arg, struct ls_error *err);
typedef int (*store_change_cb)(void *arg, const struct ls_change *c);
/* Log entries with seq > since, at most limit. Returns the count, or a negative error. */
int store_changes(struct store *st, int64_t since, int limit, store_change_cb cb, void *arg);
int store_digest(struct store *st, const char *prefix, int published_only, char hex[65],
                 int64_t *count, int64_t *seq, struct ls_error *err);
/* One stored version's body, for a scrub (core/verify.h). Valid during the callback only. */
struct store_body_ref {
    int64_t rowid; /* the walk's position */
    const unsigned char *sha;
    const char *path;
    int64_t version;
    uint64_t size;
    const void *body; /* inline bodies; NULL for one in blobs/ */
    size_t body_len;
};
typedef int (*store_body_cb)(void *arg, const struct store_body_ref *b);
/* At most limit versions after (after_sha, after_rowid), each slice its own short read: the
 * inline ones (blobs 0) by rowid, after_sha ignored; those in blobs/ (blobs 1) by (sha256,
 * rowid), so that the versions sharing one file come together. A cb return of 1 ends the slice
 * there; a negative one stops and is returned. Returns the count of versions given, or a
 * negative error. */
int store_bodies(struct store *st, int blobs, const unsigned char after_sha[32],
                 int64_t after_rowid, int limit, store_body_cb cb, void *arg,
                 struct ls_error *err);
/* Where the blob with this hash lives (it may not exist). */
void store_blob_path(const struct store *st, const unsigned char sha[32], char *out, size_t n);
int64_t store_log_first_seq(struct store *st);

/* ---- replication support ---- */
typedef int (*store_entry_cb)(void *arg, const struct ls_entry *e);
int store_meta_get(struct store *st, const char *key, char *out, size_t n);
int store_meta_set(struct store *st, const char *key, const char *value, struct ls_error *err);
void store_set_seq(struct store *st, int64_t seq); /* writer, in a transaction */
int64_t store_seq(const struct store *st);
int store_epochs(struct store *st, int64_t (*out)[2], int max); /* (epoch, start seq) */
/* An epoch is named by its number and a random id made when it began (a promotion; epoch 1:
 * the store's creation): two servers promoted to the same number still differ. */
struct ls_epoch {
    int64_t epoch;
    int64_t start_seq;
    char id[33]; /* 32 lowercase hex digits */
};
int store_epoch_list(struct store *st, struct ls_epoch *out, int max); /* in epoch order */
/* Every epoch, however many, in *out (malloc'ed, the caller frees): their number, or < 0. */
int store_epoch_list_all(struct store *st, struct ls_epoch **out);
/* The id an epoch gets when none is known (a store written before epoch ids, an upstream that
 * sends none): derived from store_id and the number, so every copy of one history agrees. */
void store_epoch_default_id(const char *store_id, int64_t epoch, char id[33]);
/* Epochs whose id is empty get store_epoch_default_id(). */
int store_set_identity(struct store *st, const char *store_id, const struct ls_epoch *epochs, int n,
                       struct ls_error *err);
int store_reset(struct store *st, struct ls_error *err);
int store_truncate_log(struct store *st, int64_t seq, struct ls_error *err);
int store_new_epoch(struct store *st, int64_t *epoch, struct ls_error *err);
/* Log entries after since with the data to apply them; stops after max_bytes of bodies. */
int store_log_entries(struct store *st, int64_t since, int limit, size_t max_bytes,
                      store_entry_cb cb, void *arg);
int store_log_cum_at(struct store *st, int64_t seq, int64_t *cum, int64_t *ts);
/* The current latest version of the item the log entry at seq refers to, wherever it is now
 * (by item id: the item may have moved since). LS_ENOTFOUND when the entry or the item is gone. */
int store_log_item_version(struct store *st, int64_t seq, int64_t *version);
/* Drops entries older than min_ts and beyond max_bytes of log (0: no limit), and raises the
 * floor; only notifications with notify_only (then max_bytes counts all the log after them). */
int store_log_retain(struct store *st, int64_t min_ts, int64_t max_bytes, int notify_only,
                     int64_t *removed, struct ls_error *err);

/* ---- notifications and consumers (notify.c; docs/messenger.md) ---- */
/* A notification, or a change of an item as the channel "content" shows it. */
struct ls_note {
    int64_t seq, ts;
    int op;              /* LS_OP_NOTIFY, or the item operation */
    const char *channel; /* LS_CONTENT_CHANNEL for an item operation */
    const char *payload; /* notify: compact JSON text */
    const char *path, *to;
    int64_t version;
};
typedef int (*store_note_cb)(void *arg, const struct ls_note *n);
/* Whether a set of channels (comma-separated; "" is every channel) has this one. */
int channels_has(const char *set, const char *channel);
/*
 * The entries after `after` and up to `upto` (what the caller knows is committed: a reader may
 * see a commit before the loop has counted it) on a set of channels, at most limit of them,
 * looking at no more than scan_max log entries. *scanned: the last seq looked at (a position
 * may move there even when nothing matched); *at_end: nothing more up to `upto`. Returns the
 * count, or < 0.
 */
int store_notes(struct store *st, int64_t after, int64_t upto, const char *channels, int limit,
                int scan_max, store_note_cb cb, void *arg, int64_t *scanned, int *at_end);
/* How many entries wait in (after, upto] (counted up to cap), and the time of the first. */
int store_notes_pending(struct store *st, int64_t after, int64_t upto, const char *channels,
                        int64_t cap, int64_t *count, int64_t *first_ts);
/* Below a floor entries may be missing: "log_floor" (retention, a snapshot) for everything,
 * "notify_floor" for notifications (their own retention). Floors only rise. */
#define FLOOR_LOG "log_floor"
#define FLOOR_NOTIFY "notify_floor"
/* (with store_floor) how many times the log was replaced by a snapshot: a position taken in an
 * earlier generation belongs to another history */
#define LOG_GEN "log_gen"
#define GEN_START "gen_start" /* the last seq the current generation shares with the one before */
int64_t store_floor(struct store *st, const char *which);
int store_raise_floor(struct store *st, const char *which, int64_t seq, struct ls_error *err);
/* The seq of the last entry before time ts (ms), by bisection; 0 when there is none. */
int64_t store_log_seq_before(struct store *st, int64_t ts);
/* A consumer's durable record. reset_at > 0: a reset (with that id) waits for an ack. */
struct ls_consumer {
    const char *name, *channels;
    int64_t position, created, acked, resets, reset_at;
    int64_t gen; /* the log generation its position belongs to; -1: not known yet */
};
typedef int (*store_consumer_cb)(void *arg, const struct ls_consumer *c);
int store_consumers(struct store *st, store_consumer_cb cb, void *arg);
int store_consumer_save(struct store *st, const struct ls_consumer *c, struct ls_error *err);
int store_consumer_del(struct store *st, const char *name, struct ls_error *err);
/*
 * A replica's outbox: notifications it accepted and has yet to forward to the primary, in
 * order, with ids that are never reused (AUTOINCREMENT). The primary keeps, per origin server,
 * the last outbox id it applied (forwarded), so a batch sent again is applied once.
 */
int store_outbox_add(struct store *st, const char *channel, const char *payload, int64_t ts,
                     int64_t *id, struct ls_error *err);
typedef int (*store_outbox_cb)(void *arg, int64_t id, const char *channel, const char *payload,
                               int64_t ts);
int store_outbox(struct store *st, int64_t after, int limit, store_outbox_cb cb, void *arg);
int store_outbox_done(struct store *st, int64_t upto, struct ls_error *err);
int64_t store_forwarded(struct store *st, const char *origin); /* 0: none yet; < 0: error */
int store_set_forwarded(struct store *st, const char *origin, int64_t last_id,
                        struct ls_error *err);

/* ---- mirroring jobs (mirror.c; docs/mirror.md): this server's own, never replicated ---- */
/* One run of a job as stored; targets is a JSON array of per-target results. */
struct ls_mirror_run {
    int64_t id; /* 0: a new run (store_mirror_run_save assigns it) */
    const char *job, *state, *targets, *note;
    int64_t started, ended, items, bytes, items_total, bytes_total, errors;
};
/* How far a target has acknowledged its source: a store source's seq; a full pass of a store
 * source in progress at full_seq has given everything up to the path after. */
struct ls_mirror_checkpoint {
    int64_t seq, full_seq;
    int64_t gen; /* the log generation (LOG_GEN) seq belongs to; -1: not known */
    char after[4096];
};
/* What a directory target was last given of one file of a directory source. */
struct ls_mirror_file {
    const char *path;
    int64_t size, mtime_ns, ino, mode;
    unsigned char sha[32];
};
typedef int (*store_mirror_job_cb)(void *arg, const char *name, const char *def, int paused);
typedef int (*store_mirror_run_cb)(void *arg, const struct ls_mirror_run *r);
typedef int (*store_mirror_error_cb)(void *arg, const char *target, const char *path,
                                     const char *reason);
int store_mirror_job_add(struct store *st, const char *name, const char *def, struct ls_error *err);
int store_mirror_job_del(struct store *st, const char *name, struct ls_error *err);
int store_mirror_job_pause(struct store *st, const char *name, int paused, struct ls_error *err);
int store_mirror_jobs(struct store *st, store_mirror_job_cb cb, void *arg);
/* A new run (id 0) also marks the job's runs still "running" as failed (interrupted). */
int store_mirror_run_save(struct store *st, struct ls_mirror_run *r, struct ls_error *err);
int store_mirror_runs(struct store *st, const char *job, int limit, store_mirror_run_cb cb,
                      void *arg); /* newest first */
int store_mirror_error_add(struct store *st, int64_t run, const char *target, const char *path,
                           const char *reason, struct ls_error *err);
int store_mirror_errors(struct store *st, int64_t run, int limit, store_mirror_error_cb cb,
                        void *arg);
int store_mirror_checkpoint_get(struct store *st, const char *job, const char *target,
                                struct ls_mirror_checkpoint *cp); /* zeros when none */
int store_mirror_checkpoint_set(struct store *st, const char *job, const char *target,
                                const struct ls_mirror_checkpoint *cp, struct ls_error *err);
/* 0 and *f filled (not f->path), LS_ENOTFOUND, or LS_EIO. */
int store_mirror_index_get(struct store *st, const char *job, const char *target,
                           const char *path, struct ls_mirror_file *f);
int store_mirror_index_set(struct store *st, const char *job, const char *target,
                           const struct ls_mirror_file *f, struct ls_error *err);
int store_mirror_index_del(struct store *st, const char *job, const char *target,
                           const char *path, struct ls_error *err);
/* At most limit indexed paths after `after`, in path order. */
int store_mirror_index_page(struct store *st, const char *job, const char *target,
                            const char *after, int limit, int (*cb)(void *arg, const char *path),
                            void *arg);
/* The same with each row's size, mtime_ns, ino and mode (not sha), in one read transaction. */
int store_mirror_index_rows(struct store *st, const char *job, const char *target,
                            const char *after, int limit,
                            int (*cb)(void *arg, const struct ls_mirror_file *f), void *arg);

/* ---- access tokens (local to this store; only hashes are kept) ---- */
typedef void (*store_token_cb)(void *arg, const char *name, const char *role,
                               const unsigned char hash[32], int64_t created_ms);
int store_token_add(struct store *st, const char *name, const char *role,
                    const unsigned char hash[32], struct ls_error *err);
int store_token_del(struct store *st, const char *name, struct ls_error *err);
int store_tokens(struct store *st, store_token_cb cb, void *arg);

/* Asks the checkpoint thread (a writing handle's) for a checkpoint now; with truncate, one that
 * waits briefly for readers and the writer and leaves the -wal file empty. Any thread. */
void store_checkpoint_request(struct store *st, int truncate);

/* A snapshot: one read transaction on its own connection, consistent at one seq. */
struct store_snapshot;
struct store_snapshot *store_snapshot_open(const char *dir, int64_t max_versions,
                                           int published_only, struct ls_position *pos,
                                           struct ls_error *err);
int store_snapshot_next(struct store_snapshot *sn, int (*keep)(void *arg, const char *path),
                        store_entry_cb cb, void *arg);
void store_snapshot_close(struct store_snapshot *sn);

#endif
