/*
 * db.c - the store's handle: opening a store directory (schema.c brings its tables up to
 * date), the prepared statements, the SQLite helpers the other files use, and the checkpoint
 * thread that keeps the WAL short without ever running inside a commit.
 *
 * Not for: what the tables hold (the other files of src/core/store/).
 */
#include "core/store/store_int.h"

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
    /* The change feed is the items' (notifications are the messenger's: notify.c) */
    [R_CHANGES] = "SELECT seq, ts, op, path, version, flags, arg FROM log WHERE seq>?1 AND op<>7 "
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
    /* the messenger (notify.c): after ?1, up to ?3, at most ?2 rows; only notifications use the
     * partial index log_notify and skip the content */
    [R_NOTES_ALL] = "SELECT seq, ts, op, path, version, arg FROM log WHERE seq>?1 AND seq<=?3 "
                    "ORDER BY seq LIMIT ?2",
    [R_NOTES_ONLY] = "SELECT seq, ts, op, path, version, arg FROM log WHERE op=7 AND seq>?1 "
                     "AND seq<=?3 ORDER BY seq LIMIT ?2",
    [R_MIRROR_INDEX] = "SELECT size, mtime_ns, ino, mode, sha256 FROM mirror_index "
                       "WHERE job=?1 AND target=?2 AND path=?3",
    [R_MIRROR_INDEX_ROWS] = "SELECT path, size, mtime_ns, ino, mode FROM mirror_index "
                            "WHERE job=?1 AND target=?2 AND path>?3 ORDER BY path LIMIT ?4",
    [S_MIRROR_INDEX_SET] = "INSERT OR REPLACE INTO mirror_index VALUES(?1,?2,?3,?4,?5,?6,?7,?8)",
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

int
db_checkpoint_start(struct store *st, const char *path)
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

void
db_checkpoint_stop(struct store *st)
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

/* ---------------------------------------------------------------- SQLite plumbing */

int
db_error(struct store *st, int rc, struct ls_error *err, const char *what)
{
    int code = LS_EIO;
    if (rc == SQLITE_FULL) code = LS_ENOSPC;
    else if (rc == SQLITE_NOMEM) code = LS_ENOMEM;
    else if (rc == SQLITE_CONSTRAINT) code = LS_EEXISTS;
    else if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) code = LS_EUNAVAIL;
    if (code == LS_ENOSPC) return ls_error_set(err, code, "no space left on the data disk");
    return ls_error_set(err, code, "%s: %s", what, st->db ? sqlite3_errmsg(st->db) : "sqlite");
}

sqlite3_stmt *
db_stmt(struct store *st, int which)
{
    sqlite3_stmt *s = st->stmt[which];
    if (!s) {
        if (sqlite3_prepare_v3(st->db, stmt_sql[which], -1, SQLITE_PREPARE_PERSISTENT, &s, NULL))
            return NULL;
        st->stmt[which] = s;
    }
    return s;
}

void
db_done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

int
db_exec(struct store *st, const char *sql, struct ls_error *err)
{
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : db_error(st, rc, err, sql);
}

int
db_meta_text(struct store *st, const char *key, char *out, size_t n)
{
    sqlite3_stmt *s = db_stmt(st, R_META);
    int rc = LS_ENOTFOUND;
    if (!s) return LS_EIO;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW) {
        snprintf(out, n, "%s", (const char *)sqlite3_column_text(s, 0));
        rc = 0;
    }
    db_done(s);
    return rc;
}

int64_t
db_meta_int(struct store *st, const char *key)
{
    char buf[32];
    int64_t v = 0;
    if (db_meta_text(st, key, buf, sizeof buf) == 0) ls_parse_i64(buf, &v);
    return v;
}

/* The writer's in-memory position (seq, cumulative log bytes) as committed: at open, and after
 * a transaction rolled back. */
int
db_load_position(struct store *st)
{
    char buf[32];
    int64_t seq = 0, cum = 0;
    sqlite3_stmt *c;
    int rc;
    if (db_meta_text(st, "seq", buf, sizeof buf) || ls_parse_i64(buf, &seq)) return -1;
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
    if (!st->opt.readonly && (rc = ls_mkdir_p(path, 0755)) < 0) {
        ls_error_set(err, ls_errno_to_ls(rc), "cannot create %s: %s", path, strerror(-rc));
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
        if (db_exec(st, "PRAGMA journal_mode=WAL", err)) goto fail;
        if (db_exec(st, st->opt.sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                 err))
            goto fail;
        if (schema_init(st, err)) goto fail;
        /* After a large import the WAL file shrinks back to this once checkpointed. */
        if (db_exec(st, "PRAGMA journal_size_limit=67108864", err)) goto fail;
        if (db_checkpoint_start(st, path)) {
            ls_error_set(err, LS_EIO, "cannot start the checkpoint thread");
            goto fail;
        }
    }
    /* The writer keeps more pages: a large import otherwise spills and rewrites index pages. */
    {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA cache_size=-%d",
                 st->opt.cache_kib > 0 ? st->opt.cache_kib : st->opt.readonly ? 8000 : 32000);
        if (db_exec(st, sql, err)) goto fail;
    }
    /* No memory map: every page a connection touched through one stayed in the server's RSS
     * (a 1M-document snapshot took the primary to 1.1 GB, a stalled replica's catch-up to
     * 325 MB), and on this machine it was slower too. Reads go through SQLite's page cache,
     * whose size above bounds them. */
    if (db_exec(st, "PRAGMA mmap_size=0", err)) goto fail;
    for (int i = 0; i < N_STMT; i++) {
        if (!db_stmt(st, i)) {
            db_error(st, SQLITE_ERROR, err, "prepare");
            goto fail;
        }
    }
    if (db_load_position(st) && !st->opt.readonly) { /* a reader's position is store_position's */
        db_error(st, SQLITE_ERROR, err, "read the position");
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
            db_error(st, SQLITE_ERROR, err, "read the item ids");
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
    db_checkpoint_stop(st);
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
