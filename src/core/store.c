/*
 * store.c - the content store on SQLite (see store.h). This is the only file that includes
 * sqlite3.h. It knows items, versions, the change log and the blob directory; it knows nothing
 * of HTTP, threads or replication peers.
 *
 * Schema in brief:
 *   items    one row per path: latest version, published version, tombstone flag, last seq
 *   versions one row per retained version: kind, meta, size, sha256, and the body when inline
 *   log      one row per operation, in seq order; puts refer to their version row
 *   meta     store_id, epoch, seq (the position), created, node_id
 *   epochs   where each epoch began (promotion starts a new one) and its random id
 */
#include "core/store.h"
#include "core/tail.h"
#include "common/util.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/evp.h>

#define MAX_VERSIONS_DEFAULT 100

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
    N_STMT
};

static const char *const stmt_sql[N_STMT] = {
    [S_ITEM_BY_PATH] = "SELECT id, version, published, deleted FROM items WHERE path=?1",
    [S_VERSION_KINDMETA] = "SELECT kind, meta FROM versions WHERE item=?1 AND version=?2",
    [S_ITEM_INSERT] = "INSERT INTO items(path, version, published, deleted, seq, mtime, id) "
                      "VALUES(?1, ?2, ?3, 0, ?4, ?5, ?6)",
    [S_ITEM_INSERT_NEW] = "INSERT INTO items(path, version, published, deleted, seq, mtime, id) "
                          "VALUES(?1, ?2, ?3, 0, ?4, ?5, ?6) ON CONFLICT(path) DO NOTHING",
    [S_ITEM_UPDATE] = "UPDATE items SET version=?2, published=?3, deleted=?4, seq=?5, mtime=?6 "
                      "WHERE id=?1",
    [S_ITEM_MOVE] = "UPDATE items SET path=?2, seq=?3, mtime=?4 WHERE id=?1",
    [S_ITEM_DELETE] = "DELETE FROM items WHERE id=?1",
    [S_VERSION_INSERT] = "INSERT OR REPLACE INTO versions(item, version, kind, meta, size, sha256, "
                         "body, mtime, seq) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [S_VERSION_EXISTS] = "SELECT 1 FROM versions WHERE item=?1 AND version=?2",
    [S_VERSION_PRUNE] = "DELETE FROM versions WHERE item=?1 AND (version<=?2 OR version>?4) "
                        "AND version IS NOT ?3 RETURNING sha256, typeof(body)='null'",
    /* typeof(), not IS NULL: SQLite 3.38-3.40 gets "IS NULL" wrong in RETURNING when NOT NULL
     * columns precede the column, and every blob would leak. */
    [S_VERSION_PURGE] = "DELETE FROM versions WHERE item=?1 RETURNING sha256, typeof(body)='null'",
    [S_LOG_INSERT] = "INSERT INTO log(seq, ts, op, item, path, version, flags, arg, cum) "
                     "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [S_META_SET_SEQ] = "UPDATE meta SET value=?1 WHERE key='seq'",
    [S_BLOB_REF] = "SELECT 1 FROM versions WHERE sha256=?1 AND body IS NULL LIMIT 1",
#define ITEM_COLS                                                                                  \
    "i.id, i.path, i.version, i.published, i.deleted, i.seq, v.version, v.kind, v.meta, "         \
    "v.size, v.sha256, v.mtime, v.seq, v.body IS NULL"
    [R_GET] = "SELECT " ITEM_COLS ", CASE WHEN ?3 THEN v.body END FROM items i "
              "JOIN versions v ON v.item=i.id "
              "WHERE i.path=?1 AND v.version = CASE WHEN ?2>0 THEN ?2 ELSE i.version END",
    [R_HISTORY] = "SELECT " ITEM_COLS ", NULL FROM items i JOIN versions v ON v.item=i.id "
                  "WHERE i.path=?1 ORDER BY v.version DESC",
    /* ?1 prefix, ?2 prefix + "/", ?3 end of the range, ?4 after, ?5 include deleted, ?6 limit */
    [R_LIST] = "SELECT " ITEM_COLS ", NULL FROM items i "
               "JOIN versions v ON v.item=i.id AND v.version=i.version "
               "WHERE i.path>=?1 AND i.path<?3 AND (i.path=?1 OR i.path>=?2) AND i.path>?4 "
               "AND (?5 OR i.deleted=0) ORDER BY i.path LIMIT ?6",
    [R_CHANGES] = "SELECT seq, ts, op, path, version, flags, arg FROM log WHERE seq>?1 "
                  "ORDER BY seq LIMIT ?2",
    [R_META] = "SELECT value FROM meta WHERE key=?1",
    [R_DIGEST] = "SELECT i.path, v.kind, i.version, i.published, v.sha256, v.meta FROM items i "
                 "JOIN versions v ON v.item=i.id AND v.version=i.version "
                 "WHERE i.path>=?1 AND i.path<?3 AND (i.path=?1 OR i.path>=?2) AND i.deleted=0 "
                 "ORDER BY i.path",
    [R_DIGEST_PUB] = "SELECT i.path, v.kind, i.published, i.published, v.sha256, v.meta "
                     "FROM items i JOIN versions v ON v.item=i.id AND v.version=i.published "
                     "WHERE i.path>=?1 AND i.path<?3 AND (i.path=?1 OR i.path>=?2) "
                     "AND i.deleted=0 AND i.published IS NOT NULL ORDER BY i.path",
    [R_LOG_FIRST] = "SELECT min(seq) FROM log",
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS items("
    "  id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,"
    "  published INTEGER, deleted INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL,"
    "  mtime INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS versions("
    "  item INTEGER NOT NULL, version INTEGER NOT NULL, kind TEXT NOT NULL, meta TEXT NOT NULL,"
    "  size INTEGER NOT NULL, sha256 BLOB NOT NULL, body BLOB, mtime INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL, PRIMARY KEY(item, version));"
    "CREATE INDEX IF NOT EXISTS versions_blob ON versions(sha256) WHERE body IS NULL;"
    "CREATE TABLE IF NOT EXISTS log("
    "  seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, op INTEGER NOT NULL, item INTEGER NOT NULL,"
    "  path TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0, flags INTEGER NOT NULL DEFAULT 0,"
    "  arg TEXT, cum INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS epochs(epoch INTEGER PRIMARY KEY, start_seq INTEGER NOT NULL,"
    "  ts INTEGER NOT NULL, id TEXT);"
    /* Access tokens of this server (not replicated): only their SHA-256 is kept. */
    "CREATE TABLE IF NOT EXISTS tokens(name TEXT PRIMARY KEY, role TEXT NOT NULL,"
    "  hash BLOB NOT NULL, created INTEGER NOT NULL);";

struct store {
    sqlite3 *db;
    sqlite3_stmt *stmt[N_STMT];
    char dir[4096];
    struct store_options opt;
    int64_t seq;          /* writer: the last assigned seq */
    int64_t seq_at_begin; /* restored when a group rolls back */
    int64_t seq_at_savepoint;
    int64_t op_seq;   /* the seq the operation being applied takes */
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

static void *
checkpoint_main(void *arg)
{
    struct store *st = arg;
    pthread_mutex_lock(&st->ckpt_mu);
    for (;;) {
        while (!st->ckpt_wanted && !st->ckpt_stop) pthread_cond_wait(&st->ckpt_cv, &st->ckpt_mu);
        if (st->ckpt_stop) break;
        int truncate = st->ckpt_truncate;
        st->ckpt_wanted = 0;
        st->ckpt_truncate = 0;
        pthread_mutex_unlock(&st->ckpt_mu);
        /* PASSIVE: copies what it can without waiting for readers or blocking the writer.
         * TRUNCATE (asked for after a snapshot that pinned the WAL was dropped) waits a little
         * for both, then empties the -wal file, which otherwise keeps its grown size. */
        sqlite3_wal_checkpoint_v2(st->ckpt_db, NULL,
                                  truncate ? SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_PASSIVE,
                                  NULL, NULL);
        pthread_mutex_lock(&st->ckpt_mu);
    }
    pthread_mutex_unlock(&st->ckpt_mu);
    return NULL;
}

/* Called by SQLite after each commit of the writer's connection. */
static int
on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages)
{
    struct store *st = arg;
    if (pages >= CHECKPOINT_PAGES) {
        pthread_mutex_lock(&st->ckpt_mu);
        st->ckpt_wanted = 1;
        pthread_cond_signal(&st->ckpt_cv);
        pthread_mutex_unlock(&st->ckpt_mu);
    }
    return SQLITE_OK;
}

static int
checkpoint_start(struct store *st, const char *path)
{
    if (sqlite3_open_v2(path, &st->ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL))
        return -1;
    sqlite3_busy_timeout(st->ckpt_db, 1000);
    sqlite3_exec(st->ckpt_db,
                 st->opt.sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", NULL,
                 NULL, NULL);
    pthread_mutex_init(&st->ckpt_mu, NULL);
    pthread_cond_init(&st->ckpt_cv, NULL);
    if (pthread_create(&st->ckpt_thread, NULL, checkpoint_main, st)) return -1;
    st->ckpt_running = 1;
    /* The writer no longer checkpoints by itself; the hook hands the work over. */
    sqlite3_wal_autocheckpoint(st->db, 0);
    sqlite3_wal_hook(st->db, on_wal_commit, st);
    return 0;
}

void
store_checkpoint_request(struct store *st, int truncate)
{
    if (!st->ckpt_running) return;
    pthread_mutex_lock(&st->ckpt_mu);
    st->ckpt_wanted = 1;
    if (truncate) st->ckpt_truncate = 1;
    pthread_cond_signal(&st->ckpt_cv);
    pthread_mutex_unlock(&st->ckpt_mu);
}

static void
checkpoint_stop(struct store *st)
{
    if (st->ckpt_running) {
        pthread_mutex_lock(&st->ckpt_mu);
        st->ckpt_stop = 1;
        pthread_cond_signal(&st->ckpt_cv);
        pthread_mutex_unlock(&st->ckpt_mu);
        pthread_join(st->ckpt_thread, NULL);
        pthread_mutex_destroy(&st->ckpt_mu);
        pthread_cond_destroy(&st->ckpt_cv);
        st->ckpt_running = 0;
    }
    sqlite3_close(st->ckpt_db);
    st->ckpt_db = NULL;
}

const char *
status_name(int status)
{
    switch (status) {
    case LS_STATUS_PUBLISHED: return "published";
    case LS_STATUS_CHANGED: return "changed";
    default: return "draft";
    }
}

/* ---------------------------------------------------------------- SQLite plumbing */

static int
sql_error(struct store *st, int rc, struct ls_error *err, const char *what)
{
    int code = LS_EIO;
    if (rc == SQLITE_FULL) code = LS_ENOSPC;
    else if (rc == SQLITE_NOMEM) code = LS_ENOMEM;
    else if (rc == SQLITE_CONSTRAINT) code = LS_EEXISTS;
    else if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) code = LS_EUNAVAIL;
    if (code == LS_ENOSPC) return ls_error_set(err, code, "no space left on the data disk");
    return ls_error_set(err, code, "%s: %s", what, st->db ? sqlite3_errmsg(st->db) : "sqlite");
}

static sqlite3_stmt *
stmt(struct store *st, int which)
{
    sqlite3_stmt *s = st->stmt[which];
    if (!s) {
        if (sqlite3_prepare_v3(st->db, stmt_sql[which], -1, SQLITE_PREPARE_PERSISTENT, &s, NULL))
            return NULL;
        st->stmt[which] = s;
    }
    return s;
}

static void
done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

static int
exec(struct store *st, const char *sql, struct ls_error *err)
{
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sql_error(st, rc, err, sql);
}

static int
meta_get_text(struct store *st, const char *key, char *out, size_t n)
{
    sqlite3_stmt *s = stmt(st, R_META);
    int rc = LS_ENOTFOUND;
    if (!s) return LS_EIO;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW) {
        snprintf(out, n, "%s", (const char *)sqlite3_column_text(s, 0));
        rc = 0;
    }
    done(s);
    return rc;
}

static int64_t
meta_get_int(struct store *st, const char *key)
{
    char buf[32];
    int64_t v = 0;
    if (meta_get_text(st, key, buf, sizeof buf) == 0) parse_i64(buf, &v);
    return v;
}

/* ---------------------------------------------------------------- open and close */

void
store_epoch_default_id(const char *store_id, int64_t epoch, char id[33])
{
    char text[80];
    unsigned char md[32];
    unsigned int n = 0;
    int len = snprintf(text, sizeof text, "lockstep epoch %s %lld", store_id, (long long)epoch);
    EVP_Digest(text, (size_t)len, md, &n, EVP_sha256(), NULL);
    hex_encode(md, 16, id);
    id[32] = '\0';
}

/*
 * Stores written before epochs had ids get one per epoch, derived from store_id and the
 * number: every replica of one primary migrates to the same ids, and keeps agreeing with it.
 */
static int
migrate_epoch_ids(struct store *st, struct ls_error *err)
{
    sqlite3_stmt *s;
    char store_id[64], id[33], sql[200];
    int64_t todo[64];
    int n = 0, rc;
    if (sqlite3_prepare_v2(st->db, "SELECT id FROM epochs LIMIT 0", -1, &s, NULL) != SQLITE_OK) {
        if ((rc = exec(st, "ALTER TABLE epochs ADD COLUMN id TEXT", err))) return rc;
    } else {
        sqlite3_finalize(s);
    }
    if (meta_get_text(st, "store_id", store_id, sizeof store_id)) return 0;
    do { /* 64 at a time, until none is left: a long history must not keep NULL ids */
        n = 0;
        if (sqlite3_prepare_v2(st->db, "SELECT epoch FROM epochs WHERE id IS NULL LIMIT 64", -1,
                               &s, NULL))
            return sql_error(st, SQLITE_ERROR, err, "epochs");
        while (sqlite3_step(s) == SQLITE_ROW && n < 64) todo[n++] = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        for (int i = 0; i < n; i++) {
            store_epoch_default_id(store_id, todo[i], id);
            snprintf(sql, sizeof sql, "UPDATE epochs SET id='%s' WHERE epoch=%lld", id,
                     (long long)todo[i]);
            if ((rc = exec(st, sql, err))) return rc;
        }
    } while (n == 64);
    return 0;
}

/* This server's own id (not the store's: a snapshot or --replace-store keeps it), made once. */
static int
init_node_id(struct store *st, struct ls_error *err)
{
    char id[33], sql[120];
    if (meta_get_text(st, "node_id", id, sizeof id) == 0 && strlen(id) == 32) return 0;
    random_hex(id, 16);
    snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO meta VALUES('node_id', '%s')", id);
    return exec(st, sql, err);
}

static int
init_identity(struct store *st, struct ls_error *err)
{
    char id[33], epoch_id[33], sql[600];
    char existing[64];
    if (meta_get_text(st, "store_id", existing, sizeof existing) == 0) return 0;
    random_hex(id, 16);
    random_hex(epoch_id, 16);
    snprintf(sql, sizeof sql,
             "BEGIN IMMEDIATE;"
             "INSERT OR IGNORE INTO meta VALUES('store_id', '%s');"
             "INSERT OR IGNORE INTO meta VALUES('epoch', 1);"
             "INSERT OR IGNORE INTO meta VALUES('seq', 0);"
             "INSERT OR IGNORE INTO meta VALUES('created', %lld);"
             "INSERT OR IGNORE INTO epochs(epoch, start_seq, ts, id) VALUES(1, 0, %lld, '%s');"
             "COMMIT;",
             id, (long long)now_ms(), (long long)now_ms(), epoch_id);
    return exec(st, sql, err);
}

/* The writer's in-memory position (seq, cumulative log bytes) as committed: at open, and after
 * a transaction rolled back. */
static int
load_position(struct store *st)
{
    char buf[32];
    int64_t seq = 0, cum = 0;
    sqlite3_stmt *c;
    int rc;
    if (meta_get_text(st, "seq", buf, sizeof buf) || parse_i64(buf, &seq)) return -1;
    if (sqlite3_prepare_v2(st->db, "SELECT cum FROM log ORDER BY seq DESC LIMIT 1", -1, &c,
                           NULL) != SQLITE_OK)
        return -1;
    if ((rc = sqlite3_step(c)) == SQLITE_ROW) cum = sqlite3_column_int64(c, 0);
    sqlite3_finalize(c);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return -1;
    st->seq = seq;
    st->log_cum = cum;
    return 0;
}

struct store *
store_open(const char *dir, const struct store_options *opt, struct ls_error *err)
{
    struct store *st = calloc(1, sizeof *st);
    char path[4200];
    int rc;

    if (!st) {
        ls_error_set(err, LS_ENOMEM, NULL);
        return NULL;
    }
    if (opt) st->opt = *opt;
    if (st->opt.max_versions <= 0) st->opt.max_versions = MAX_VERSIONS_DEFAULT;
    if (st->opt.inline_max == 0) st->opt.inline_max = LS_INLINE_MAX_DEFAULT;
    snprintf(st->dir, sizeof st->dir, "%s", dir);

    snprintf(path, sizeof path, "%s/blobs/tmp", dir);
    if (!st->opt.readonly && (rc = mkdir_p(path, 0755)) < 0) {
        ls_error_set(err, errno_to_ls(rc), "cannot create %s: %s", path, strerror(-rc));
        goto fail;
    }
    snprintf(path, sizeof path, "%s/store.db", dir);
    rc = sqlite3_open_v2(path, &st->db,
                         (st->opt.readonly ? SQLITE_OPEN_READONLY
                                           : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                             SQLITE_OPEN_NOMUTEX,
                         NULL);
    if (rc) {
        ls_error_set(err, LS_EIO, "cannot open %s: %s", path,
                     st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(st->db, 10000);
    sqlite3_extended_result_codes(st->db, 0);
    if (!st->opt.readonly) {
        if (exec(st, "PRAGMA journal_mode=WAL", err)) goto fail;
        if (exec(st, st->opt.sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                 err))
            goto fail;
        if (exec(st, schema, err)) goto fail;
        if (init_identity(st, err)) goto fail;
        if (migrate_epoch_ids(st, err)) goto fail;
        if (init_node_id(st, err)) goto fail;
        /* After a large import the WAL file shrinks back to this once checkpointed. */
        if (exec(st, "PRAGMA journal_size_limit=67108864", err)) goto fail;
        if (checkpoint_start(st, path)) {
            ls_error_set(err, LS_EIO, "cannot start the checkpoint thread");
            goto fail;
        }
    }
    /* The writer keeps more pages: a large import otherwise spills and rewrites index pages. */
    if (exec(st, st->opt.readonly ? "PRAGMA cache_size=-8000" : "PRAGMA cache_size=-32000", err))
        goto fail;
    /* No memory map: every page a connection touched through one stayed in the server's RSS
     * (a 1M-document snapshot took the primary to 1.1 GB, a stalled replica's catch-up to
     * 325 MB), and on this machine it was slower too. Reads go through SQLite's page cache,
     * whose size above bounds them. */
    if (exec(st, "PRAGMA mmap_size=0", err)) goto fail;
    for (int i = 0; i < N_STMT; i++) {
        if (!stmt(st, i)) {
            sql_error(st, SQLITE_ERROR, err, "prepare");
            goto fail;
        }
    }
    if (load_position(st) && !st->opt.readonly) { /* a reader's position is store_position's */
        sql_error(st, SQLITE_ERROR, err, "read the position");
        goto fail;
    }
    /* Item ids are never reused: log entries name their item by id, and an id a purged item
     * leaves behind must not lead an old entry to a new item's versions. SQLite would reuse
     * the largest id once its row is gone. */
    if (!st->opt.readonly) {
        sqlite3_stmt *c;
        if (sqlite3_prepare_v2(st->db,
                               "SELECT max(coalesce((SELECT max(id) FROM items), 0),"
                               " coalesce((SELECT max(item) FROM log), 0))",
                               -1, &c, NULL) != SQLITE_OK) {
            sql_error(st, SQLITE_ERROR, err, "read the item ids");
            goto fail;
        }
        if (sqlite3_step(c) == SQLITE_ROW) st->next_item_id = sqlite3_column_int64(c, 0) + 1;
        sqlite3_finalize(c);
    }
    return st;
fail:
    store_free(st);
    return NULL;
}

void
store_free(struct store *st)
{
    if (!st) return;
    checkpoint_stop(st);
    for (int i = 0; i < N_STMT; i++) sqlite3_finalize(st->stmt[i]);
    sqlite3_close(st->db);
    free(st->garbage);
    free(st);
}

const char *
store_dir(const struct store *st)
{
    return st->dir;
}

static int
interrupted(void *flag)
{
    return atomic_load((const atomic_int *)flag) != 0;
}

void
store_set_interrupt(struct store *st, atomic_int *flag)
{
    /* every 1000 virtual-machine steps: well under a millisecond */
    sqlite3_progress_handler(st->db, flag ? 1000 : 0, flag ? interrupted : NULL, flag);
}

/* ---------------------------------------------------------------- transactions */

/*
 * SQLite may roll back the whole transaction by itself when a statement fails with SQLITE_FULL,
 * SQLITE_IOERR or SQLITE_NOMEM (and a failed RELEASE or ROLLBACK TO leaves it unsure). The
 * connection is then in autocommit mode again: a SAVEPOINT would begin a transaction of its own,
 * and its RELEASE commit it, behind the group's back. So every step checks that the group's
 * transaction is still open, and a rollback resets the in-memory position to what is on disk.
 */
int
store_in_transaction(struct store *st)
{
    return !sqlite3_get_autocommit(st->db);
}

int
store_begin(struct store *st, struct ls_error *err)
{
    st->seq_at_begin = st->seq;
    st->log_cum_at_begin = st->log_cum;
    st->nlogged = 0;
    st->seq_jumped = 0;
    st->ngarbage = 0;
    return exec(st, "BEGIN IMMEDIATE", err);
}

int
store_commit(struct store *st, struct ls_error *err)
{
    sqlite3_stmt *s = stmt(st, S_META_SET_SEQ);
    int64_t want = st->seq;
    int rc;
    /* Taking next seqs only, a group moves the seq by the entries it logged, no more, no less. */
    assert(st->seq_jumped || st->seq == st->seq_at_begin + st->nlogged);
    if (!store_in_transaction(st)) { /* rolled back under us: COMMIT would say only "no
                                        transaction is active" */
        store_rollback(st);
        return ls_error_set(err, LS_EIO, "the transaction was rolled back");
    }
    if (st->seq != st->seq_at_begin) {
        sqlite3_bind_int64(s, 1, st->seq);
        rc = sqlite3_step(s);
        done(s);
        if (rc != SQLITE_DONE) {
            sql_error(st, rc, err, "record seq");
            store_rollback(st);
            return err ? err->code : LS_EIO;
        }
    }
    rc = sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        sql_error(st, rc, err, "commit");
        store_rollback(st);
        /* What is on disk decides: a commit that went through is not reported failed. */
        if (want != st->seq_at_begin && st->seq == want) return 0;
        /* A failed fsync leaves the group's frames whole in the WAL, where the recovery after a
         * crash would find them and bring back what was reported failed. A transaction written
         * in their place cuts their checksum chain: they can no longer be recovered. */
        {
            char sql[160];
            snprintf(sql, sizeof sql,
                     "BEGIN IMMEDIATE; INSERT OR REPLACE INTO meta VALUES('failed_commit', %lld);"
                     "COMMIT",
                     (long long)now_ms());
            if (exec(st, sql, NULL) && store_in_transaction(st))
                sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        }
        return err ? err->code : LS_EIO;
    }
    if (st->tail) tail_end(st->tail, 1, st->seq);
    return 0;
}

void
store_rollback(struct store *st)
{
    if (store_in_transaction(st)) sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    /* What is on disk, not what the group believed; if even that cannot be read, where the
     * group began (which was on disk). */
    if (load_position(st)) {
        st->seq = st->seq_at_begin;
        st->log_cum = st->log_cum_at_begin;
    }
    st->ngarbage = 0;
    if (st->tail) { /* start again, empty, at the seq on disk */
        tail_break(st->tail);
        tail_end(st->tail, 0, st->seq);
    }
}

int
store_savepoint(struct store *st)
{
    if (!store_in_transaction(st)) return LS_EIO; /* it would begin a transaction of its own */
    st->seq_at_savepoint = st->seq;
    st->log_cum_at_savepoint = st->log_cum;
    st->nlogged_at_savepoint = st->nlogged;
    if (st->tail) st->tail_mark_at_savepoint = tail_mark(st->tail);
    return exec(st, "SAVEPOINT req", NULL);
}

int
store_savepoint_release(struct store *st)
{
    int rc;
    if (!store_in_transaction(st)) return LS_EIO;
    if ((rc = exec(st, "RELEASE req", NULL))) return rc;
    return store_in_transaction(st) ? 0 : LS_EIO;
}

int
store_savepoint_rollback(struct store *st)
{
    int rc = LS_EIO;
    if (store_in_transaction(st) && (rc = exec(st, "ROLLBACK TO req", NULL)) == 0)
        exec(st, "RELEASE req", NULL); /* a savepoint left behind goes at the commit */
    st->seq = st->seq_at_savepoint;
    st->log_cum = st->log_cum_at_savepoint;
    st->nlogged = st->nlogged_at_savepoint;
    if (st->tail) tail_undo(st->tail, st->tail_mark_at_savepoint);
    return rc == 0 && store_in_transaction(st) ? 0 : LS_EIO;
}

/* ---------------------------------------------------------------- blobs */

void
store_blob_path(const struct store *st, const unsigned char sha[32], char *out, size_t n)
{
    char hex[65];
    hex_encode(sha, 32, hex);
    snprintf(out, n, "%s/blobs/%.2s/%s", st->dir, hex, hex + 2);
}

/* Moves a complete, synced file into the blob store under its hash (or drops it if present). */
static int
blob_adopt(struct store *st, const char *file, const unsigned char sha[32], struct ls_error *err)
{
    char dst[4300], dir[4300];
    int rc;
    store_blob_path(st, sha, dst, sizeof dst);
    if (access(dst, F_OK) == 0) {
        unlink(file);
        return 0;
    }
    snprintf(dir, sizeof dir, "%s", dst);
    *strrchr(dir, '/') = '\0';
    if ((rc = mkdir_p(dir, 0755)) < 0 || rename(file, dst) < 0 ||
        (rc = fsync_dir(dir)) < 0) {
        int e = rc < 0 ? -rc : errno;
        return ls_error_set(err, errno_to_ls(e), "cannot store blob: %s", strerror(e));
    }
    return 0;
}

static int
blob_write(struct store *st, const void *data, size_t n, const unsigned char sha[32],
           struct ls_error *err)
{
    char tmp[4300], dst[4300];
    int fd, rc;
    store_blob_path(st, sha, dst, sizeof dst);
    if (access(dst, F_OK) == 0) return 0; /* the same content is stored once */
    snprintf(tmp, sizeof tmp, "%s/blobs/tmp/w.XXXXXX", st->dir);
    fd = mkstemp(tmp);
    if (fd < 0) return ls_error_set(err, errno_to_ls(errno), "cannot write blob: %s", strerror(errno));
    rc = write_all(fd, data, n);
    if (rc == 0 && fsync(fd) < 0) rc = -errno;
    close(fd);
    if (rc < 0) {
        unlink(tmp);
        return ls_error_set(err, errno_to_ls(rc), "cannot write blob: %s", strerror(-rc));
    }
    return blob_adopt(st, tmp, sha, err);
}

static void
garbage_add(struct store *st, const void *sha)
{
    if (st->ngarbage == st->garbage_cap) {
        size_t cap = st->garbage_cap ? st->garbage_cap * 2 : 16;
        void *p = realloc(st->garbage, cap * 32);
        if (!p) return; /* a leaked blob is harmless; a lost one is not */
        st->garbage = p;
        st->garbage_cap = cap;
    }
    memcpy(st->garbage[st->ngarbage++], sha, 32);
}

void
store_collect_garbage(struct store *st)
{
    sqlite3_stmt *s = stmt(st, S_BLOB_REF);
    for (size_t i = 0; i < st->ngarbage; i++) {
        int referenced;
        sqlite3_bind_blob(s, 1, st->garbage[i], 32, SQLITE_STATIC);
        referenced = sqlite3_step(s) == SQLITE_ROW;
        done(s);
        if (!referenced) {
            char path[4300];
            store_blob_path(st, st->garbage[i], path, sizeof path);
            unlink(path);
        }
    }
    st->ngarbage = 0;
}

/* Runs a DELETE ... RETURNING sha256, is-in-a-blob and notes blobs that may be unreferenced. */
static int
delete_versions(struct store *st, sqlite3_stmt *s, struct ls_error *err)
{
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        if (sqlite3_column_int(s, 1)) garbage_add(st, sqlite3_column_blob(s, 0));
    done(s);
    return rc == SQLITE_DONE ? 0 : sql_error(st, rc, err, "delete versions");
}

/* ---------------------------------------------------------------- applying operations */

struct cur_item {
    int exists;
    int64_t id, version, published;
    int deleted;
};

static int
item_lookup(struct store *st, const char *path, struct cur_item *c, struct ls_error *err)
{
    sqlite3_stmt *s = stmt(st, S_ITEM_BY_PATH);
    int rc;
    memset(c, 0, sizeof *c);
    sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        c->exists = 1;
        c->id = sqlite3_column_int64(s, 0);
        c->version = sqlite3_column_int64(s, 1);
        c->published = sqlite3_column_int64(s, 2);
        c->deleted = sqlite3_column_int(s, 3);
    }
    done(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sql_error(st, rc, err, "lookup");
    return 0;
}

static int
step_done(struct store *st, sqlite3_stmt *s, struct ls_error *err, const char *what)
{
    int rc = sqlite3_step(s);
    done(s);
    return rc == SQLITE_DONE ? 0 : sql_error(st, rc, err, what);
}

static int
log_append(struct store *st, int op, int64_t item, const char *path, int64_t version, int flags,
           const char *arg, int64_t bytes, int64_t ts, struct ls_error *err)
{
    sqlite3_stmt *s = stmt(st, S_LOG_INSERT);
    int64_t seq = st->op_seq;
    int rc;
    if (st->op_nolog) return 0;
    st->log_cum += 48 + (int64_t)strlen(path) + (arg ? (int64_t)strlen(arg) : 0) + bytes;
    sqlite3_bind_int64(s, 9, st->log_cum);
    sqlite3_bind_int64(s, 1, seq);
    sqlite3_bind_int64(s, 2, ts);
    sqlite3_bind_int(s, 3, op);
    sqlite3_bind_int64(s, 4, item);
    sqlite3_bind_text(s, 5, path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 6, version);
    sqlite3_bind_int(s, 7, flags);
    if (arg) sqlite3_bind_text(s, 8, arg, -1, SQLITE_STATIC);
    if ((rc = step_done(st, s, err, "append to log"))) return rc;
    assert(st->seq_jumped || seq == st->seq + 1);
    if (seq > st->seq) st->seq = seq;
    st->nlogged++;
    if (st->tail) {
        /* The entry as store_log_entries would read it back. A publish's would carry its
         * version's data, which is not at hand here: the tail starts again after it. */
        struct ls_entry e;
        if (op == LS_OP_PUT && st->put_data) e = *st->put_data;
        else memset(&e, 0, sizeof e);
        e.seq = seq;
        e.op = op;
        e.ts = ts;
        e.path = (char *)path;
        e.to = (char *)arg;
        e.version = version;
        e.flags = (flags & 1 ? REC_PUBLISHED : 0) | (op == LS_OP_PUT ? REC_DATA : 0);
        if (op == LS_OP_PUBLISH || (op == LS_OP_PUT && !st->put_data)) tail_break(st->tail);
        else tail_add(st->tail, &e);
    }
    return 0;
}

void
store_set_tail(struct store *st, struct log_tail *tail)
{
    st->tail = tail;
}

static int
item_update(struct store *st, const struct cur_item *c, int64_t version, int64_t published,
            int deleted, int64_t mtime, struct ls_error *err)
{
    sqlite3_stmt *s = stmt(st, S_ITEM_UPDATE);
    sqlite3_bind_int64(s, 1, c->id);
    sqlite3_bind_int64(s, 2, version);
    if (published > 0) sqlite3_bind_int64(s, 3, published);
    sqlite3_bind_int(s, 4, deleted);
    sqlite3_bind_int64(s, 5, st->op_seq);
    sqlite3_bind_int64(s, 6, mtime);
    return step_done(st, s, err, "update item");
}

/* Stores a put's body where it belongs (a blob file, or nothing yet for an inline one) and
 * gives its hash. */
static int
store_body(struct store *st, const struct ls_op *op, int in_blob, unsigned char sha[32],
           struct ls_error *err)
{
    if (op->has_sha) memcpy(sha, op->sha, 32);
    else if (op->body_file || op->body_absent)
        return ls_error_set(err, LS_EINTERNAL, "body file without its hash");
    else sha256(op->body, op->body_len, sha);
    if (op->body_absent) return 0; /* a placeholder: a later entry prunes or purges it */
    if (op->body_file) return blob_adopt(st, op->body_file, sha, err);
    if (in_blob) return blob_write(st, op->body, op->body_len, sha, err);
    return 0;
}

static int
version_insert(struct store *st, int64_t item, int64_t version, const char *kind,
               const char *meta, uint64_t size, const unsigned char sha[32], int in_blob,
               const struct ls_op *op, int64_t mtime, struct ls_error *err)
{
    sqlite3_stmt *s = stmt(st, S_VERSION_INSERT);
    sqlite3_bind_int64(s, 1, item);
    sqlite3_bind_int64(s, 2, version);
    sqlite3_bind_text(s, 3, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, meta, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)size);
    sqlite3_bind_blob(s, 6, sha, 32, SQLITE_STATIC);
    if (!in_blob)
        sqlite3_bind_blob(s, 7, op->body_len ? op->body : "", (int)op->body_len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, mtime);
    sqlite3_bind_int64(s, 9, st->op_seq);
    return step_done(st, s, err, "insert version");
}

static int
version_exists(struct store *st, int64_t item, int64_t version)
{
    sqlite3_stmt *s = stmt(st, S_VERSION_EXISTS);
    int found;
    sqlite3_bind_int64(s, 1, item);
    sqlite3_bind_int64(s, 2, version);
    found = sqlite3_step(s) == SQLITE_ROW;
    done(s);
    return found;
}

/*
 * A replica gets a version it may lack just before the publish that needs it (REC_RESTORE):
 * the version row is added when missing; the item, its latest version and the log stay as
 * they are (the publish that follows is the change).
 */
static int
apply_restore(struct store *st, const struct ls_op *op, int64_t mtime, struct ls_error *err)
{
    struct cur_item c;
    unsigned char sha[32];
    uint64_t size = op->body_file || op->body_absent ? op->body_file_size : op->body_len;
    int in_blob = op->body_file != NULL || op->body_absent || op->body_len > st->opt.inline_max;
    int rc;
    if ((rc = item_lookup(st, op->path, &c, err))) return rc;
    if (!c.exists || c.deleted || op->version <= 0 || version_exists(st, c.id, op->version))
        return 0;
    if ((rc = store_body(st, op, in_blob, sha, err))) return rc;
    return version_insert(st, c.id, op->version, op->kind ? op->kind : "document",
                          op->meta ? op->meta : "{}", size, sha, in_blob, op, mtime, err);
}

static int
apply_put(struct store *st, const struct ls_op *op, int64_t mtime, struct ls_op_result *res,
          struct ls_error *err)
{
    struct cur_item c;
    unsigned char sha[32];
    const char *kind = op->kind, *meta = op->meta;
    char *prev_kind = NULL, *prev_meta = NULL;
    int64_t version, published;
    uint64_t size = op->body_file || op->body_absent ? op->body_file_size : op->body_len;
    int inserted = 0;
    int in_blob = op->body_file != NULL || op->body_absent || op->body_len > st->opt.inline_max;
    sqlite3_stmt *s;
    int rc;

    /* Most puts of an import make new items: try the insert first, and look the path up
     * only when it exists (one index search instead of two). */
    memset(&c, 0, sizeof c);
    if (op->if_version == 0) {
        int64_t v = op->version > 0 ? op->version : 1;
        s = stmt(st, S_ITEM_INSERT_NEW);
        sqlite3_bind_text(s, 1, op->path, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, v);
        if (op->publish) sqlite3_bind_int64(s, 3, v);
        sqlite3_bind_int64(s, 4, st->op_seq);
        sqlite3_bind_int64(s, 5, mtime);
        sqlite3_bind_int64(s, 6, st->next_item_id);
        if ((rc = step_done(st, s, err, "insert item"))) return rc;
        if (sqlite3_changes(st->db) == 1) {
            inserted = 1;
            c.id = st->next_item_id++;
        }
    }
    if (!inserted && (rc = item_lookup(st, op->path, &c, err))) return rc;
    if (op->if_version > 0 && (!c.exists || c.deleted ? 0 : c.version) != op->if_version)
        return ls_error_set(err, LS_ECONFLICT, "%s is at version %lld, not %lld", op->path,
                            (long long)(c.exists && !c.deleted ? c.version : 0),
                            (long long)op->if_version);
    version = op->version > 0 ? op->version : c.version + 1;

    if (c.exists && (!kind || !meta)) {
        s = stmt(st, S_VERSION_KINDMETA);
        sqlite3_bind_int64(s, 1, c.id);
        sqlite3_bind_int64(s, 2, c.version);
        if (sqlite3_step(s) == SQLITE_ROW) {
            prev_kind = strdup((const char *)sqlite3_column_text(s, 0));
            prev_meta = strdup((const char *)sqlite3_column_text(s, 1));
            if (!prev_kind || !prev_meta) rc = ls_error_set(err, LS_ENOMEM, NULL);
        }
        done(s);
        if (rc) goto out; /* not the defaults in place of the kept kind and meta */
        if (!kind) kind = prev_kind;
        if (!meta) meta = prev_meta;
    }
    if (!kind) kind = "document";
    if (!meta) meta = "{}";

    if ((rc = store_body(st, op, in_blob, sha, err))) goto out;

    published = op->publish ? version : (c.exists && !c.deleted ? c.published : 0);
    if (inserted) {
        rc = 0; /* the row is in already */
    } else if (c.exists) {
        rc = item_update(st, &c, version, published, 0, mtime, err);
    } else {
        s = stmt(st, S_ITEM_INSERT);
        sqlite3_bind_text(s, 1, op->path, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, version);
        if (published > 0) sqlite3_bind_int64(s, 3, published);
        sqlite3_bind_int64(s, 4, st->op_seq);
        sqlite3_bind_int64(s, 5, mtime);
        sqlite3_bind_int64(s, 6, st->next_item_id);
        rc = step_done(st, s, err, "insert item");
        c.id = st->next_item_id++;
    }
    if (rc) goto out;

    if ((rc = version_insert(st, c.id, version, kind, meta, size, sha, in_blob, op, mtime, err)))
        goto out;

    {
        struct ls_entry data = {.kind = (char *)kind, .meta = (char *)meta, .size = size,
                                .body_kind = in_blob ? BODY_BLOB : BODY_INLINE,
                                .body = in_blob ? NULL : (op->body_len ? op->body : ""),
                                .body_len = in_blob ? 0 : op->body_len};
        memcpy(data.sha, sha, 32);
        st->put_data = &data;
        rc = log_append(st, LS_OP_PUT, c.id, op->path, version, op->publish, NULL,
                        (int64_t)size, mtime, err);
        st->put_data = NULL;
        if (rc) goto out;
    }

    /* Keep the newest max_versions and the published one. A replicated put may also go back
     * to an older number (staging after a re-publish): then nothing newer may stay. */
    if (version > st->opt.max_versions || (op->version > 0 && c.exists && c.version > version)) {
        s = stmt(st, S_VERSION_PRUNE);
        sqlite3_bind_int64(s, 1, c.id);
        sqlite3_bind_int64(s, 2, version - st->opt.max_versions);
        if (published > 0) sqlite3_bind_int64(s, 3, published);
        sqlite3_bind_int64(s, 4, version);
        rc = delete_versions(st, s, err);
    }
    res->version = version;
out:
    free(prev_kind);
    free(prev_meta);
    return rc;
}

static int
require_live(const struct cur_item *c, const char *path, struct ls_error *err)
{
    if (!c->exists || c->deleted) return ls_error_set(err, LS_ENOTFOUND, "%s: not found", path);
    return 0;
}

static int
apply_purge_item(struct store *st, int64_t id, struct ls_error *err)
{
    sqlite3_stmt *s = stmt(st, S_VERSION_PURGE);
    int rc;
    sqlite3_bind_int64(s, 1, id);
    if ((rc = delete_versions(st, s, err))) return rc;
    s = stmt(st, S_ITEM_DELETE);
    sqlite3_bind_int64(s, 1, id);
    return step_done(st, s, err, "purge item");
}

static int
apply_move(struct store *st, const struct ls_op *op, int64_t mtime, struct ls_op_result *res,
           struct ls_error *err)
{
    struct cur_item src, dst;
    sqlite3_stmt *s;
    int rc;
    if ((rc = item_lookup(st, op->path, &src, err))) return rc;
    if (op->tolerant && (!src.exists || src.deleted)) return 0;
    if ((rc = require_live(&src, op->path, err))) return rc;
    if (strcmp(op->path, op->to) == 0)
        return ls_error_set(err, LS_EINVAL, "cannot move %s onto itself", op->path);
    if (op->if_version > 0 && src.version != op->if_version)
        return ls_error_set(err, LS_ECONFLICT, "%s is at version %lld, not %lld", op->path,
                            (long long)src.version, (long long)op->if_version);
    if ((rc = item_lookup(st, op->to, &dst, err))) return rc;
    if (dst.exists && !dst.deleted) return ls_error_set(err, LS_EEXISTS, "%s exists", op->to);
    /* A tombstone at the destination is replaced: the moved item takes its path. */
    if (dst.exists && (rc = apply_purge_item(st, dst.id, err))) return rc;
    s = stmt(st, S_ITEM_MOVE);
    sqlite3_bind_int64(s, 1, src.id);
    sqlite3_bind_text(s, 2, op->to, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, st->op_seq);
    sqlite3_bind_int64(s, 4, mtime);
    if ((rc = step_done(st, s, err, "move"))) return rc;
    res->version = src.version;
    return log_append(st, LS_OP_MOVE, src.id, op->path, src.version, 0, op->to, 0, mtime, err);
}

static int
apply_other(struct store *st, const struct ls_op *op, int64_t mtime, struct ls_op_result *res,
            struct ls_error *err)
{
    struct cur_item c;
    int64_t version = 0;
    int rc;

    if ((rc = item_lookup(st, op->path, &c, err))) return rc;
    if (op->tolerant && (!c.exists || (c.deleted && op->type != LS_OP_PURGE) ||
                         (op->type == LS_OP_UNPUBLISH && c.published <= 0)))
        return 0;
    if (op->type == LS_OP_PURGE ? !c.exists : (rc = require_live(&c, op->path, err)) != 0)
        return rc ? rc : ls_error_set(err, LS_ENOTFOUND, "%s: not found", op->path);
    if (op->if_version > 0 && c.version != op->if_version)
        return ls_error_set(err, LS_ECONFLICT, "%s is at version %lld, not %lld", op->path,
                            (long long)c.version, (long long)op->if_version);
    switch (op->type) {
    case LS_OP_DELETE:
        rc = item_update(st, &c, c.version, 0, 1, mtime, err);
        version = c.version;
        break;
    case LS_OP_PURGE:
        rc = apply_purge_item(st, c.id, err);
        version = c.version;
        break;
    case LS_OP_PUBLISH: {
        version = op->version > 0 ? op->version : c.version;
        if (!version_exists(st, c.id, version))
            return ls_error_set(err, LS_ENOTFOUND, "%s has no version %lld", op->path,
                                (long long)version);
        rc = item_update(st, &c, c.version, version, 0, mtime, err);
        break;
    }
    case LS_OP_UNPUBLISH:
        if (c.published <= 0)
            return ls_error_set(err, LS_ECONFLICT, "%s is not published", op->path);
        version = c.published;
        rc = item_update(st, &c, c.version, 0, 0, mtime, err);
        break;
    default:
        return ls_error_set(err, LS_EINVAL, "unknown operation");
    }
    if (rc) return rc;
    res->version = version;
    return log_append(st, op->type, c.id, op->path, version, 0, NULL, 0, mtime, err);
}

int
store_apply(struct store *st, const struct ls_op *op, struct ls_op_result *res,
            struct ls_error *err)
{
    int64_t mtime = op->mtime > 0 ? op->mtime : now_ms();
    struct ls_op_result dummy;
    int rc;
    if (!res) res = &dummy;
    memset(res, 0, sizeof *res);
    if (!store_in_transaction(st)) /* each statement would commit alone */
        return ls_error_set(err, LS_EIO, "no transaction is open: it was rolled back");
    st->op_seq = op->seq > 0 ? op->seq : st->seq + 1;
    st->op_nolog = op->no_log;
    if (op->seq > 0) st->seq_jumped = 1;
    switch (op->type) {
    case LS_OP_PUT:
        rc = op->restore ? apply_restore(st, op, mtime, err) : apply_put(st, op, mtime, res, err);
        break;
    case LS_OP_MOVE: rc = apply_move(st, op, mtime, res, err); break;
    default: rc = apply_other(st, op, mtime, res, err); break;
    }
    if (rc == 0) res->seq = st->seq;
    return rc;
}

/* ---------------------------------------------------------------- reading */

int
store_position(struct store *st, struct ls_position *pos)
{
    if (meta_get_text(st, "store_id", pos->store_id, sizeof pos->store_id)) return LS_EIO;
    pos->epoch = meta_get_int(st, "epoch");
    pos->seq = meta_get_int(st, "seq");
    return 0;
}

int64_t
store_log_first_seq(struct store *st)
{
    sqlite3_stmt *s = stmt(st, R_LOG_FIRST);
    int64_t v = 0;
    if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
    done(s);
    return v;
}

void
item_release(struct ls_item *it)
{
    if (!it) return;
    free(it->path);
    free(it->kind);
    free(it->meta);
    free(it->body);
    memset(it, 0, sizeof *it);
}

/* Fills an item from a row of ITEM_COLS; column 14 may hold the inline body. */
static int
item_from_row(sqlite3_stmt *s, struct ls_item *it, int want_body)
{
    memset(it, 0, sizeof *it);
    it->id = sqlite3_column_int64(s, 0);
    it->path = strdup((const char *)sqlite3_column_text(s, 1));
    it->latest_version = sqlite3_column_int64(s, 2);
    it->published_version = sqlite3_column_int64(s, 3);
    it->deleted = sqlite3_column_int(s, 4);
    it->seq = sqlite3_column_int64(s, 5);
    it->version = sqlite3_column_int64(s, 6);
    it->kind = strdup((const char *)sqlite3_column_text(s, 7));
    it->meta = strdup((const char *)sqlite3_column_text(s, 8));
    it->size = (uint64_t)sqlite3_column_int64(s, 9);
    if (sqlite3_column_bytes(s, 10) == 32) memcpy(it->sha, sqlite3_column_blob(s, 10), 32);
    it->mtime = sqlite3_column_int64(s, 11);
    it->vseq = sqlite3_column_int64(s, 12);
    it->in_blob = sqlite3_column_int(s, 13);
    if (it->published_version <= 0) it->status = LS_STATUS_DRAFT;
    else if (it->published_version == it->latest_version) it->status = LS_STATUS_PUBLISHED;
    else it->status = LS_STATUS_CHANGED;
    if (want_body && !it->in_blob) {
        int n = sqlite3_column_bytes(s, 14);
        it->body = malloc((size_t)n + 1);
        if (it->body && n) memcpy(it->body, sqlite3_column_blob(s, 14), (size_t)n);
    }
    if (!it->path || !it->kind || !it->meta || (want_body && !it->in_blob && !it->body)) {
        item_release(it);
        return LS_ENOMEM;
    }
    return 0;
}

int
store_get(struct store *st, const char *path, int64_t version, int want_body, struct ls_item *it,
          struct ls_error *err)
{
    sqlite3_stmt *s = stmt(st, R_GET);
    int rc;
    sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, version);
    sqlite3_bind_int(s, 3, want_body);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        rc = item_from_row(s, it, want_body);
        if (rc == 0 && it->deleted && version == 0) {
            item_release(it);
            rc = ls_error_set(err, LS_ENOTFOUND, "%s: deleted", path);
        } else if (rc) {
            ls_error_set(err, rc, NULL);
        }
    } else if (rc == SQLITE_DONE) {
        rc = version ? ls_error_set(err, LS_ENOTFOUND, "%s: no version %lld", path,
                                    (long long)version)
                     : ls_error_set(err, LS_ENOTFOUND, "%s: not found", path);
    } else {
        rc = sql_error(st, rc, err, "get");
    }
    done(s);
    return rc;
}

static int
each_item(struct store *st, sqlite3_stmt *s, store_item_cb cb, void *arg, struct ls_error *err)
{
    int rc, n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct ls_item it;
        int stop;
        if (item_from_row(s, &it, 0)) {
            done(s);
            return ls_error_set(err, LS_ENOMEM, NULL);
        }
        stop = cb(arg, &it);
        item_release(&it);
        n++;
        if (stop) break;
    }
    done(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sql_error(st, rc, err, "read");
    return n;
}

int
store_history(struct store *st, const char *path, store_item_cb cb, void *arg,
              struct ls_error *err)
{
    sqlite3_stmt *s = stmt(st, R_HISTORY);
    int n;
    sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
    n = each_item(st, s, cb, arg, err);
    if (n == 0) return ls_error_set(err, LS_ENOTFOUND, "%s: not found", path);
    return n < 0 ? n : 0;
}

/* Binds ?1 ?2 ?3 of the subtree range for prefix: the prefix itself and everything below it. */
static void
bind_subtree(sqlite3_stmt *s, const char *prefix, char *slash, char *end, size_t n)
{
    size_t len;
    if (!prefix || !*prefix || strcmp(prefix, "/") == 0) prefix = "";
    len = strlen(prefix);
    while (len > 0 && prefix[len - 1] == '/') len--;
    snprintf(slash, n, "%.*s/", (int)len, prefix);
    snprintf(end, n, "%.*s0", (int)len, prefix); /* '0' is the byte after '/' */
    sqlite3_bind_text(s, 1, prefix, (int)len, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, slash, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, end, -1, SQLITE_STATIC);
}

int
store_list(struct store *st, const char *prefix, const char *after, int limit,
           int include_deleted, store_item_cb cb, void *arg, struct ls_error *err)
{
    sqlite3_stmt *s = stmt(st, R_LIST);
    char slash[LS_PATH_MAX + 2], end[LS_PATH_MAX + 2];
    int n;
    bind_subtree(s, prefix, slash, end, sizeof slash);
    sqlite3_bind_text(s, 4, after ? after : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 5, include_deleted);
    sqlite3_bind_int(s, 6, limit);
    n = each_item(st, s, cb, arg, err);
    return n;
}

int
store_changes(struct store *st, int64_t since, int limit, store_change_cb cb, void *arg)
{
    sqlite3_stmt *s = stmt(st, R_CHANGES);
    int rc, n = 0;
    sqlite3_bind_int64(s, 1, since);
    sqlite3_bind_int(s, 2, limit);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct ls_change c;
        int flags;
        c.seq = sqlite3_column_int64(s, 0);
        c.ts = sqlite3_column_int64(s, 1);
        c.op = sqlite3_column_int(s, 2);
        c.path = (const char *)sqlite3_column_text(s, 3);
        c.version = sqlite3_column_int64(s, 4);
        flags = sqlite3_column_int(s, 5);
        c.published = (flags & 1) != 0;
        c.to = (const char *)sqlite3_column_text(s, 6);
        n++;
        if (cb(arg, &c)) break;
    }
    done(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return LS_EIO;
    return n;
}

/*
 * The digest of the live items: SHA-256 over one record per item, in path order:
 *   path NUL kind NUL version NUL status NUL sha256-hex NUL meta NUL LF
 * Two stores holding the same live state compute the same digest whatever their history.
 */
int
store_digest(struct store *st, const char *prefix, int published_only, char hex[65],
             int64_t *count, int64_t *seq, struct ls_error *err)
{
    sqlite3_stmt *s = stmt(st, published_only ? R_DIGEST_PUB : R_DIGEST);
    char slash[LS_PATH_MAX + 2], end[LS_PATH_MAX + 2], num[32], shahex[65];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char out[32];
    int rc, rc2;
    int64_t n = 0;

    if (!md) return ls_error_set(err, LS_ENOMEM, NULL);
    if ((rc = exec(st, "BEGIN", err))) goto out2;
    *seq = meta_get_int(st, "seq");
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    bind_subtree(s, prefix, slash, end, sizeof slash);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t version = sqlite3_column_int64(s, 2), published = sqlite3_column_int64(s, 3);
        const char *status = published <= 0          ? "draft"
                             : published == version ? "published"
                                                    : "changed";
        const char *fields[6];
        fields[0] = (const char *)sqlite3_column_text(s, 0);
        fields[1] = (const char *)sqlite3_column_text(s, 1);
        snprintf(num, sizeof num, "%lld", (long long)version);
        fields[2] = num;
        fields[3] = status;
        hex_encode(sqlite3_column_blob(s, 4), 32, shahex);
        fields[4] = shahex;
        fields[5] = (const char *)sqlite3_column_text(s, 5);
        for (int i = 0; i < 6; i++) EVP_DigestUpdate(md, fields[i], strlen(fields[i]) + 1);
        EVP_DigestUpdate(md, "\n", 1);
        n++;
    }
    done(s);
    rc2 = exec(st, "COMMIT", NULL);
    if (rc != SQLITE_DONE || rc2) {
        rc = sql_error(st, rc, err, "digest");
        goto out2;
    }
    rc = 0;
    EVP_DigestFinal_ex(md, out, NULL);
    hex_encode(out, 32, hex);
    *count = n;
out2:
    EVP_MD_CTX_free(md);
    return rc;
}

/* ---------------------------------------------------------------- identity, epochs, position */

int
store_meta_get(struct store *st, const char *key, char *out, size_t n)
{
    return meta_get_text(st, key, out, n);
}

int
store_meta_set(struct store *st, const char *key, const char *value, struct ls_error *err)
{
    sqlite3_stmt *s;
    int rc;
    if (sqlite3_prepare_v2(st->db, "INSERT OR REPLACE INTO meta VALUES(?1, ?2)", -1, &s, NULL))
        return sql_error(st, SQLITE_ERROR, err, "meta");
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    if (value) sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : sql_error(st, rc, err, "meta");
}

void
store_set_seq(struct store *st, int64_t seq)
{
    st->seq = seq;
    st->seq_jumped = 1;
}

int64_t
store_seq(const struct store *st)
{
    return st->seq;
}

int
store_epochs(struct store *st, int64_t (*out)[2], int max)
{
    sqlite3_stmt *s;
    int n = 0;
    if (sqlite3_prepare_v2(st->db, "SELECT epoch, start_seq FROM epochs ORDER BY epoch", -1, &s,
                           NULL))
        return LS_EIO;
    while (sqlite3_step(s) == SQLITE_ROW && n < max) {
        out[n][0] = sqlite3_column_int64(s, 0);
        out[n][1] = sqlite3_column_int64(s, 1);
        n++;
    }
    sqlite3_finalize(s);
    return n;
}

int
store_epoch_list(struct store *st, struct ls_epoch *out, int max)
{
    sqlite3_stmt *s;
    int n = 0;
    if (sqlite3_prepare_v2(st->db, "SELECT epoch, start_seq, id FROM epochs ORDER BY epoch", -1,
                           &s, NULL))
        return LS_EIO;
    while (sqlite3_step(s) == SQLITE_ROW && n < max) {
        const char *id = (const char *)sqlite3_column_text(s, 2);
        out[n].epoch = sqlite3_column_int64(s, 0);
        out[n].start_seq = sqlite3_column_int64(s, 1);
        snprintf(out[n].id, sizeof out[n].id, "%s", id ? id : "");
        n++;
    }
    sqlite3_finalize(s);
    return n;
}

int
store_epoch_list_all(struct store *st, struct ls_epoch **out)
{
    struct ls_epoch *v = NULL;
    int max = 64, n;
    for (;;) {
        struct ls_epoch *nv = realloc(v, (size_t)max * sizeof *v);
        if (!nv) {
            n = LS_ENOMEM;
            break;
        }
        v = nv;
        if ((n = store_epoch_list(st, v, max)) < max) break;
        if (max >= (1 << 24)) {
            n = LS_ETOOBIG;
            break;
        }
        max *= 2;
    }
    if (n < 0) {
        free(v);
        v = NULL;
    }
    *out = v;
    return n;
}

/* Takes over an upstream's identity and epoch history (inside a transaction). */
int
store_set_identity(struct store *st, const char *store_id, const struct ls_epoch *epochs, int n,
                   struct ls_error *err)
{
    char num[32], sql[200], id[33];
    int rc;
    if ((rc = store_meta_set(st, "store_id", store_id, err))) return rc;
    if ((rc = exec(st, "DELETE FROM epochs", err))) return rc;
    for (int i = 0; i < n; i++) {
        /* Ids come from the wire: only 32 hex digits are taken, else the derived one. */
        if (strlen(epochs[i].id) == 32 && strspn(epochs[i].id, "0123456789abcdef") == 32)
            memcpy(id, epochs[i].id, 33);
        else
            store_epoch_default_id(store_id, epochs[i].epoch, id);
        snprintf(sql, sizeof sql,
                 "INSERT INTO epochs(epoch, start_seq, ts, id) VALUES(%lld, %lld, %lld, '%s')",
                 (long long)epochs[i].epoch, (long long)epochs[i].start_seq, (long long)now_ms(),
                 id);
        if ((rc = exec(st, sql, err))) return rc;
    }
    snprintf(num, sizeof num, "%lld", (long long)(n ? epochs[n - 1].epoch : 1));
    return store_meta_set(st, "epoch", num, err);
}

/* Empties the store before a snapshot is loaded into it (inside a transaction). */
int
store_reset(struct store *st, struct ls_error *err)
{
    int rc = exec(st,
                  "DELETE FROM items; DELETE FROM versions; DELETE FROM log;"
                  "INSERT OR REPLACE INTO meta VALUES('snapshot_pending', 1);",
                  err);
    if (st->tail) tail_break(st->tail);
    if (rc == 0) {
        st->seq = 0;
        st->seq_jumped = 1;
        st->log_cum = 0;
    }
    return rc;
}

/* Promotion: a new epoch begins at the current seq (inside a transaction). */
int
store_new_epoch(struct store *st, int64_t *epoch, struct ls_error *err)
{
    char sql[260], id[33];
    int64_t e = meta_get_int(st, "epoch") + 1;
    int rc;
    random_hex(id, 16); /* another server promoted to the same number gets another id */
    snprintf(sql, sizeof sql,
             "INSERT INTO epochs(epoch, start_seq, ts, id) VALUES(%lld, %lld, %lld, '%s'); "
             "UPDATE meta SET value=%lld WHERE key='epoch'",
             (long long)e, (long long)st->seq, (long long)now_ms(), id, (long long)e);
    if ((rc = exec(st, sql, err))) return rc;
    *epoch = e;
    return 0;
}

/* ---------------------------------------------------------------- log entries with data */

static const char log_entries_sql[] =
    "SELECT l.seq, l.ts, l.op, l.path, l.version, l.flags, l.arg, v.kind, v.meta, v.size, "
    "v.sha256, v.body IS NULL, v.body, l.op IN (1, 5) AND v.item IS NULL "
    "FROM log l LEFT JOIN versions v ON l.op IN (1, 5) AND v.item=l.item AND v.version=l.version "
    "WHERE l.seq>?1 ORDER BY l.seq LIMIT ?2";

int
store_log_entries(struct store *st, int64_t since, int limit, size_t max_bytes,
                  store_entry_cb cb, void *arg)
{
    sqlite3_stmt *s = NULL;
    size_t bytes = 0;
    int rc = SQLITE_DONE, n = 0;
    if (sqlite3_prepare_v3(st->db, log_entries_sql, -1, 0, &s, NULL)) return LS_EIO;
    sqlite3_bind_int64(s, 1, since);
    sqlite3_bind_int(s, 2, limit);
    while (bytes < max_bytes && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct ls_entry e;
        memset(&e, 0, sizeof e);
        e.seq = sqlite3_column_int64(s, 0);
        e.ts = sqlite3_column_int64(s, 1);
        e.op = sqlite3_column_int(s, 2);
        e.path = (char *)sqlite3_column_text(s, 3);
        e.version = sqlite3_column_int64(s, 4);
        e.flags = (sqlite3_column_int(s, 5) & 1) ? REC_PUBLISHED : 0;
        e.to = (char *)sqlite3_column_text(s, 6);
        if (sqlite3_column_type(s, 7) != SQLITE_NULL) {
            e.flags |= REC_DATA;
            e.kind = (char *)sqlite3_column_text(s, 7);
            e.meta = (char *)sqlite3_column_text(s, 8);
            e.size = (uint64_t)sqlite3_column_int64(s, 9);
            if (sqlite3_column_bytes(s, 10) == 32) memcpy(e.sha, sqlite3_column_blob(s, 10), 32);
            if (sqlite3_column_int(s, 11)) {
                e.body_kind = BODY_BLOB;
            } else {
                e.body_kind = BODY_INLINE;
                e.body = sqlite3_column_blob(s, 12);
                e.body_len = (size_t)sqlite3_column_bytes(s, 12);
                if (!e.body) e.body = "";
            }
        } else if (sqlite3_column_int(s, 13)) {
            /* The version is gone (pruned, or the item purged since). */
            e.flags |= REC_DATA;
            e.kind = "document";
            e.meta = "{}";
            e.body_kind = BODY_MISSING;
        }
        bytes += 64 + e.body_len + strlen(e.path) + (e.meta ? strlen(e.meta) : 0);
        n++;
        if (cb(arg, &e)) break;
    }
    sqlite3_finalize(s);
    /* A failed step is an error, never the end of the log: a reader would skip what follows. */
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? n : LS_EIO;
}

int
store_log_item_version(struct store *st, int64_t seq, int64_t *version)
{
    sqlite3_stmt *s;
    int rc = LS_ENOTFOUND;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT i.version FROM log l JOIN items i ON i.id=l.item WHERE l.seq=?1",
                           -1, &s, NULL))
        return LS_EIO;
    sqlite3_bind_int64(s, 1, seq);
    if (sqlite3_step(s) == SQLITE_ROW) {
        *version = sqlite3_column_int64(s, 0);
        rc = 0;
    }
    sqlite3_finalize(s);
    return rc;
}

/* Reads one position of the log (for lag and retention). */
static int
log_point(struct store *st, int64_t seq, int64_t *found_seq, int64_t *cum, int64_t *ts)
{
    sqlite3_stmt *s;
    int rc = LS_ENOTFOUND;
    if (sqlite3_prepare_v2(st->db, "SELECT seq, cum, ts FROM log WHERE seq>=?1 ORDER BY seq LIMIT 1",
                           -1, &s, NULL))
        return LS_EIO;
    sqlite3_bind_int64(s, 1, seq);
    if (sqlite3_step(s) == SQLITE_ROW) {
        if (found_seq) *found_seq = sqlite3_column_int64(s, 0);
        if (cum) *cum = sqlite3_column_int64(s, 1);
        if (ts) *ts = sqlite3_column_int64(s, 2);
        rc = 0;
    }
    sqlite3_finalize(s);
    return rc;
}

int
store_log_cum_at(struct store *st, int64_t seq, int64_t *cum, int64_t *ts)
{
    return log_point(st, seq, NULL, cum, ts);
}

/*
 * Drops log entries older than min_ts and beyond max_bytes (0: no limit). cum and ts grow with
 * seq, so the cut is found by bisection over seq with point look-ups, never a scan.
 */
int
store_log_retain(struct store *st, int64_t min_ts, int64_t max_bytes, int64_t *removed,
                 struct ls_error *err)
{
    int64_t lo = store_log_first_seq(st), hi = st->seq, cut = lo;
    char sql[96];
    int rc;
    *removed = 0;
    if (lo <= 0 || hi <= lo) return 0;
    while (lo < hi) { /* the first seq that must be kept */
        int64_t mid = lo + (hi - lo) / 2, found, cum, ts;
        int keep;
        if (log_point(st, mid, &found, &cum, &ts)) break;
        keep = (min_ts <= 0 || ts >= min_ts) && (max_bytes <= 0 || st->log_cum - cum < max_bytes);
        if (keep) hi = mid;
        else lo = mid + 1;
    }
    cut = lo;
    if (cut <= store_log_first_seq(st)) return 0;
    snprintf(sql, sizeof sql, "DELETE FROM log WHERE seq<%lld", (long long)cut);
    if ((rc = exec(st, sql, err))) return rc;
    *removed = sqlite3_changes(st->db);
    return 0;
}

/* ---------------------------------------------------------------- snapshots */

/* What one store_snapshot_next call emits at most: an item with thousands of large versions
 * goes out over several calls, so the caller never holds more than this of it. */
#define SNAP_BATCH_BYTES (512u << 10)
#define SNAP_BATCH_RECORDS 256

struct store_snapshot {
    struct store *st; /* a read handle of its own, holding one read transaction */
    sqlite3_stmt *items, *lowest, *versions;
    struct ls_position pos;
    int64_t max_versions;
    int published_only;
    int done;
    /* The item being emitted, while its versions statement is part way through. */
    int in_item, deleted;
    int64_t latest, published, item_seq, mtime;
    char *path;
};

struct store_snapshot *
store_snapshot_open(const char *dir, int64_t max_versions, int published_only,
                    struct ls_position *pos, struct ls_error *err)
{
    struct store_options opt = {.readonly = 1};
    struct store_snapshot *sn = calloc(1, sizeof *sn);
    if (!sn) return NULL;
    if (!(sn->st = store_open(dir, &opt, err))) goto fail;
    if (exec(sn->st, "BEGIN", err) || store_position(sn->st, &sn->pos)) goto fail;
    /* The first read pins the WAL snapshot: everything below sees this one seq. */
    if (sqlite3_prepare_v2(sn->st->db,
                           "SELECT id, path, version, published, deleted, seq, mtime FROM items "
                           "ORDER BY path",
                           -1, &sn->items, NULL) ||
        sqlite3_prepare_v2(sn->st->db,
                           "SELECT version FROM versions WHERE item=?1 ORDER BY version DESC "
                           "LIMIT 1 OFFSET ?2",
                           -1, &sn->lowest, NULL) ||
        sqlite3_prepare_v2(sn->st->db,
                           "SELECT version, kind, meta, size, sha256, body IS NULL, body, mtime, "
                           "seq FROM versions WHERE item=?1 AND (version>=?2 OR version=?4) "
                           "AND (?3=0 OR version=?3) ORDER BY version",
                           -1, &sn->versions, NULL)) {
        sql_error(sn->st, SQLITE_ERROR, err, "snapshot");
        goto fail;
    }
    sn->max_versions = max_versions;
    sn->published_only = published_only;
    *pos = sn->pos;
    return sn;
fail:
    store_snapshot_close(sn);
    return NULL;
}

void
store_snapshot_close(struct store_snapshot *sn)
{
    if (!sn) return;
    sqlite3_finalize(sn->items);
    sqlite3_finalize(sn->lowest);
    sqlite3_finalize(sn->versions);
    free(sn->path);
    if (sn->st) exec(sn->st, "COMMIT", NULL);
    store_free(sn->st);
    free(sn);
}

/*
 * Emits the next records of the snapshot, item by item in path order, oldest version first: a
 * put per retained version (the published one flagged), then a delete when the item is a
 * tombstone. The latest version of a live item carries the item's seq. One call emits at most
 * SNAP_BATCH_BYTES of bodies (or SNAP_BATCH_RECORDS records): an item with a long history is
 * continued by the next call, its versions statement left where it stopped, so memory does not
 * grow with an item's history. Returns 1 when records were emitted, 0 at the end, or an error.
 * keep(path) filters items (NULL: all).
 */
int
store_snapshot_next(struct store_snapshot *sn, int (*keep)(void *arg, const char *path),
                    store_entry_cb cb, void *arg)
{
    for (;;) {
        int rc, nrec = 0;
        size_t bytes = 0;
        struct ls_entry e;

        if (!sn->in_item) {
            int64_t id, lowest = 0;
            const char *path;
            rc = sn->done ? SQLITE_DONE : sqlite3_step(sn->items);
            if (rc == SQLITE_DONE) sn->done = 1;
            if (sn->done) return 0;
            if (rc != SQLITE_ROW) return LS_EIO;
            id = sqlite3_column_int64(sn->items, 0);
            path = (const char *)sqlite3_column_text(sn->items, 1);
            sn->latest = sqlite3_column_int64(sn->items, 2);
            sn->published = sqlite3_column_int64(sn->items, 3);
            sn->deleted = sqlite3_column_int(sn->items, 4);
            sn->item_seq = sqlite3_column_int64(sn->items, 5);
            sn->mtime = sqlite3_column_int64(sn->items, 6);
            if (keep && !keep(arg, path)) continue;
            if (sn->published_only && (sn->deleted || sn->published <= 0)) continue;
            if (!sn->published_only && sn->max_versions > 0) {
                sqlite3_bind_int64(sn->lowest, 1, id);
                sqlite3_bind_int64(sn->lowest, 2, sn->max_versions - 1);
                if (sqlite3_step(sn->lowest) == SQLITE_ROW)
                    lowest = sqlite3_column_int64(sn->lowest, 0);
                sqlite3_reset(sn->lowest);
            }
            free(sn->path);
            if (!(sn->path = strdup(path))) return LS_ENOMEM;
            sqlite3_bind_int64(sn->versions, 1, id);
            sqlite3_bind_int64(sn->versions, 2, lowest);
            sqlite3_bind_int64(sn->versions, 3, sn->published_only ? sn->published : 0);
            sqlite3_bind_int64(sn->versions, 4, sn->published); /* never left out, however old */
            sn->in_item = 1;
        }
        while ((rc = sqlite3_step(sn->versions)) == SQLITE_ROW) {
            memset(&e, 0, sizeof e);
            e.op = LS_OP_PUT;
            e.path = sn->path;
            e.version = sqlite3_column_int64(sn->versions, 0);
            e.flags = REC_DATA | (e.version == sn->published ? REC_PUBLISHED : 0);
            e.kind = (char *)sqlite3_column_text(sn->versions, 1);
            e.meta = (char *)sqlite3_column_text(sn->versions, 2);
            e.size = (uint64_t)sqlite3_column_int64(sn->versions, 3);
            memcpy(e.sha, sqlite3_column_blob(sn->versions, 4), 32);
            if (sqlite3_column_int(sn->versions, 5)) {
                e.body_kind = BODY_BLOB;
            } else {
                e.body_kind = BODY_INLINE;
                e.body = sqlite3_column_blob(sn->versions, 6);
                e.body_len = (size_t)sqlite3_column_bytes(sn->versions, 6);
                if (!e.body) e.body = "";
            }
            e.ts = sqlite3_column_int64(sn->versions, 7);
            e.seq = e.version == sn->latest && !sn->deleted
                        ? sn->item_seq
                        : sqlite3_column_int64(sn->versions, 8);
            nrec++;
            bytes += e.body_len + strlen(e.meta ? e.meta : "") + 64;
            cb(arg, &e);
            if (bytes >= SNAP_BATCH_BYTES || nrec >= SNAP_BATCH_RECORDS)
                return 1; /* the rest of this item next time */
        }
        sqlite3_reset(sn->versions);
        sn->in_item = 0;
        if (rc != SQLITE_DONE) return LS_EIO;
        if (sn->deleted) {
            memset(&e, 0, sizeof e);
            e.op = LS_OP_DELETE;
            e.path = sn->path;
            e.version = sn->latest;
            e.seq = sn->item_seq;
            e.ts = sn->mtime;
            nrec++;
            cb(arg, &e);
        }
        if (nrec) return 1;
    }
}

/* A resync from seq: the log after it is forgotten, to be received again. */
int
store_truncate_log(struct store *st, int64_t seq, struct ls_error *err)
{
    char sql[80];
    snprintf(sql, sizeof sql, "DELETE FROM log WHERE seq>%lld", (long long)seq);
    if (st->tail) tail_break(st->tail);
    return exec(st, sql, err);
}

/* Walks blobs/ and removes every file no version refers to (after a snapshot replaced the
 * store's content). */
void
store_collect_all_garbage(struct store *st)
{
    char dir[4200], path[4500];
    DIR *top, *sub;
    struct dirent *de, *fe;
    snprintf(dir, sizeof dir, "%s/blobs", st->dir);
    if (!(top = opendir(dir))) return;
    while ((de = readdir(top))) {
        if (strlen(de->d_name) != 2) continue; /* the xx/ fan-out directories */
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (!(sub = opendir(path))) continue;
        while ((fe = readdir(sub))) {
            unsigned char sha[32];
            char hex[65];
            if (strlen(fe->d_name) != 62) continue;
            snprintf(hex, sizeof hex, "%.2s%.62s", de->d_name, fe->d_name);
            if (hex_decode(hex, sha, 32) == 0) garbage_add(st, sha);
        }
        closedir(sub);
    }
    closedir(top);
    store_collect_garbage(st);
}

/* Leftovers of writes and transfers a crash interrupted (at start, before anything runs). */
void
store_clean_tmp(struct store *st)
{
    char dir[4200], path[4500];
    DIR *top;
    struct dirent *de;
    snprintf(dir, sizeof dir, "%s/blobs/tmp", st->dir);
    if ((top = opendir(dir))) {
        while ((de = readdir(top))) {
            if (de->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
        closedir(top);
    }
}

/* ---------------------------------------------------------------- tokens */

int
store_token_add(struct store *st, const char *name, const char *role, const unsigned char hash[32],
                struct ls_error *err)
{
    sqlite3_stmt *s;
    int rc;
    if (sqlite3_prepare_v2(st->db, "INSERT INTO tokens VALUES(?1, ?2, ?3, ?4)", -1, &s, NULL))
        return sql_error(st, SQLITE_ERROR, err, "tokens");
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, role, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 3, hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, now_ms());
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc == SQLITE_CONSTRAINT)
        return ls_error_set(err, LS_EEXISTS, "a token named %s exists already", name);
    return rc == SQLITE_DONE ? 0 : sql_error(st, rc, err, "tokens");
}

int
store_token_del(struct store *st, const char *name, struct ls_error *err)
{
    sqlite3_stmt *s;
    int rc, last_admin;
    /* The last admin token stays: without it a server that has tokens could not be
     * administered, and without any it would be open to everyone. */
    if (sqlite3_prepare_v2(st->db,
                           "SELECT role = 'admin' AND (SELECT count(*) FROM tokens WHERE "
                           "role = 'admin') = 1 FROM tokens WHERE name=?1",
                           -1, &s, NULL))
        return sql_error(st, SQLITE_ERROR, err, "tokens");
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    last_admin = rc == SQLITE_ROW && sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sql_error(st, rc, err, "tokens");
    if (last_admin)
        return ls_error_set(err, LS_ECONFLICT,
                            "%s is the last admin token: create another admin token first", name);
    if (sqlite3_prepare_v2(st->db, "DELETE FROM tokens WHERE name=?1", -1, &s, NULL))
        return sql_error(st, SQLITE_ERROR, err, "tokens");
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return sql_error(st, rc, err, "tokens");
    if (sqlite3_changes(st->db) == 0)
        return ls_error_set(err, LS_ENOTFOUND, "no token named %s", name);
    return 0;
}

int
store_tokens(struct store *st, store_token_cb cb, void *arg)
{
    sqlite3_stmt *s;
    int n = 0, rc;
    if (sqlite3_prepare_v2(st->db, "SELECT name, role, hash, created FROM tokens ORDER BY name",
                           -1, &s, NULL))
        return LS_EIO;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(s, 2) != 32) continue;
        cb(arg, (const char *)sqlite3_column_text(s, 0), (const char *)sqlite3_column_text(s, 1),
           sqlite3_column_blob(s, 2), sqlite3_column_int64(s, 3));
        n++;
    }
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? n : LS_EIO;
}
