/*
 * store_int.h - what the files of the store share, and nothing outside src/core/store/ sees:
 * the handle (struct store), the prepared statements, and the SQLite helpers. These files are
 * the only ones that include sqlite3.h; the rest of lockstep knows the store through store.h.
 *
 * The store, file by file:
 *   db.c        the handle: open and close, prepared statements, the checkpoint thread
 *   schema.c    the tables, schema_version and the forward migrations, the store's identity
 *   txn.c       transactions and savepoints (the writer's group commit)
 *   apply.c     applying operations: put, delete, purge, move, publish, unpublish, restore
 *   blob.c      bodies kept as files under blobs/, and collecting unreferenced ones
 *   read.c      reading items, history, listings and the change log
 *   digest.c    the digest of the live content
 *   identity.c  the position (seq), epochs, meta, resets and promotion
 *   log.c       log entries with the data to replicate them, retention, truncation
 *   snapshot.c  consistent snapshots on a read transaction of their own
 *   tokens.c    access tokens (hashes only)
 *   mirror.c    mirroring jobs: definitions, runs, errors, checkpoints, directory indexes
 */
#ifndef LS_STORE_INT_H
#define LS_STORE_INT_H

#include "core/store.h"
#include "core/tail.h"
#include "common/util.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_VERSIONS_DEFAULT 100

/* The prepared statements (their SQL is in db.c): S_ for the writer, R_ for readers. */
enum {
    S_ITEM_BY_PATH,
    S_VERSION_KINDMETA,
    S_ITEM_INSERT,
    S_ITEM_INSERT_NEW,
    S_ITEM_UPDATE,
    S_ITEM_MOVE,
    S_ITEM_DELETE,
    S_VERSION_INSERT,
    S_VERSION_EXISTS,
    S_VERSION_PRUNE,
    S_VERSION_PURGE,
    S_LOG_INSERT,
    S_META_SET_SEQ,
    S_BLOB_REF,
    R_GET,
    R_HISTORY,
    R_LIST,
    R_CHANGES,
    R_META,
    R_DIGEST,
    R_DIGEST_PUB,
    R_LOG_FIRST,
    R_NOTES_ALL,
    R_NOTES_ONLY,
    R_MIRROR_INDEX, /* a directory source's scan looks up every file: prepared once */
    R_MIRROR_INDEX_ROWS, /* ... or reads a target's index in path order, beside its walk */
    S_MIRROR_INDEX_SET,  /* a package records a row per file it wrote */
    N_STMT
};

struct store {
    sqlite3 *db;
    sqlite3_stmt *stmt[N_STMT];
    char dir[4096];
    struct store_options opt;
    int64_t seq;          /* writer: the last assigned seq */
    int64_t seq_at_begin; /* restored when a group rolls back */
    int64_t seq_at_savepoint;
    int64_t op_seq;   /* the seq the operation being applied takes */
    int op_more;      /* ... and whether its request goes on after it (LOG_MORE) */
    int op_nolog;     /* ... and whether it is logged (not while loading a snapshot) */
    int64_t log_cum, log_cum_at_begin, log_cum_at_savepoint; /* cumulative bytes logged */
    /* For the invariant checked at commit: a group that only took next seqs moved the seq by the
     * number of entries it logged. Replication sets seqs of its own (seq_jumped). */
    int64_t nlogged, nlogged_at_savepoint;
    int seq_jumped;
    unsigned char (*garbage)[32]; /* blobs that may have lost their last reference */
    size_t ngarbage, garbage_cap;
    /* Checkpoints run on their own thread and connection, never inside a commit. */
    sqlite3 *ckpt_db;
    pthread_t ckpt_thread;
    pthread_mutex_t ckpt_mu;
    pthread_cond_t ckpt_cv;
    int ckpt_wanted, ckpt_stop, ckpt_running;
    int ckpt_truncate; /* the next checkpoint is a TRUNCATE (store_checkpoint_request) */
    /* The writer feeds the log's newest entries to this (store_set_tail) as it logs them. */
    struct log_tail *tail;
    size_t tail_mark_at_savepoint;
    const struct ls_entry *put_data; /* apply_put: what the put's log entry carries */
    int64_t next_item_id; /* writer: ids only grow (a rolled-back one is simply skipped) */
};

#define CHECKPOINT_PAGES 2000 /* WAL pages (8 MB) that make a checkpoint worth it */

/* An item row as the apply code sees it. */
struct cur_item {
    int exists;
    int64_t id, version, published;
    int deleted;
};

/* ---- db.c ---- */
int db_error(struct store *st, int rc, struct ls_error *err, const char *what);
sqlite3_stmt *db_stmt(struct store *st, int which); /* prepared once, reset by db_done */
void db_done(sqlite3_stmt *s);
int db_exec(struct store *st, const char *sql, struct ls_error *err);
int db_step_done(struct store *st, sqlite3_stmt *s, struct ls_error *err, const char *what);
int db_meta_text(struct store *st, const char *key, char *out, size_t n);
int64_t db_meta_int(struct store *st, const char *key);
int db_load_position(struct store *st);
void db_checkpoint_stop(struct store *st);
int db_checkpoint_start(struct store *st, const char *path);

/* ---- schema.c ---- */
/* Creates the tables of a new store, or brings an old one to this binary's schema_version,
 * in one transaction; then the store's identity. The writer's handle only. */
int schema_init(struct store *st, struct ls_error *err);

/* ---- blob.c ---- */
int blob_adopt(struct store *st, const char *file, const unsigned char sha[32],
               struct ls_error *err);
int blob_write(struct store *st, const void *data, size_t n, const unsigned char sha[32],
               struct ls_error *err);
void blob_garbage_add(struct store *st, const void *sha);
int blob_delete_versions(struct store *st, sqlite3_stmt *s, struct ls_error *err);

/* ---- apply.c ---- */
int apply_item_lookup(struct store *st, const char *path, struct cur_item *c,
                      struct ls_error *err);

/* ---- read.c ---- */
int read_item_row(sqlite3_stmt *s, struct ls_item *it, int want_body);
void read_bind_subtree(sqlite3_stmt *s, const char *prefix, char *slash, char *end, size_t n);

#endif
