/*
 * store.c - the content store on SQLite (see store.h). This is the only file that includes
 * sqlite3.h. It knows items, versions, the change log and the blob directory; it knows nothing
 * of HTTP, threads or replication peers.
 *
 * Schema in brief:
 *   items    one row per path: latest version, published version, tombstone flag, last seq
 *   versions one row per retained version: kind, meta, size, sha256, and the body when inline
 *   log      one row per operation, in seq order; puts refer to their version row
 *   meta     store_id, epoch, seq (the position), created
 *   epochs   where each epoch began (promotion starts a new one)
 */
#include "core/store.h"
#include "common/util.h"

#include <errno.h>
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
    [S_ITEM_INSERT] = "INSERT INTO items(path, version, published, deleted, seq, mtime) "
                      "VALUES(?1, ?2, ?3, 0, ?4, ?5)",
    [S_ITEM_UPDATE] = "UPDATE items SET version=?2, published=?3, deleted=?4, seq=?5, mtime=?6 "
                      "WHERE id=?1",
    [S_ITEM_MOVE] = "UPDATE items SET path=?2, seq=?3, mtime=?4 WHERE id=?1",
    [S_ITEM_DELETE] = "DELETE FROM items WHERE id=?1",
    [S_VERSION_INSERT] = "INSERT OR REPLACE INTO versions(item, version, kind, meta, size, sha256, "
                         "body, mtime, seq) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [S_VERSION_EXISTS] = "SELECT 1 FROM versions WHERE item=?1 AND version=?2",
    [S_VERSION_PRUNE] = "DELETE FROM versions WHERE item=?1 AND version<=?2 AND version IS NOT ?3 "
                        "RETURNING sha256, body IS NULL",
    [S_VERSION_PURGE] = "DELETE FROM versions WHERE item=?1 RETURNING sha256, body IS NULL",
    [S_LOG_INSERT] = "INSERT INTO log(seq, ts, op, item, path, version, flags, arg) "
                     "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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
    "  arg TEXT);"
    "CREATE TABLE IF NOT EXISTS epochs(epoch INTEGER PRIMARY KEY, start_seq INTEGER NOT NULL,"
    "  ts INTEGER NOT NULL);";

struct store {
    sqlite3 *db;
    sqlite3_stmt *stmt[N_STMT];
    char dir[4096];
    struct store_options opt;
    int64_t seq;          /* writer: the last assigned seq */
    int64_t seq_at_begin; /* restored when a group rolls back */
    int64_t seq_at_savepoint;
    unsigned char (*garbage)[32]; /* blobs that may have lost their last reference */
    size_t ngarbage, garbage_cap;
};

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

static int
init_identity(struct store *st, struct ls_error *err)
{
    char id[33], sql[512];
    char existing[64];
    if (meta_get_text(st, "store_id", existing, sizeof existing) == 0) return 0;
    random_hex(id, 16);
    snprintf(sql, sizeof sql,
             "BEGIN IMMEDIATE;"
             "INSERT OR IGNORE INTO meta VALUES('store_id', '%s');"
             "INSERT OR IGNORE INTO meta VALUES('epoch', 1);"
             "INSERT OR IGNORE INTO meta VALUES('seq', 0);"
             "INSERT OR IGNORE INTO meta VALUES('created', %lld);"
             "INSERT OR IGNORE INTO epochs VALUES(1, 0, %lld);"
             "COMMIT;",
             id, (long long)now_ms(), (long long)now_ms());
    return exec(st, sql, err);
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
    }
    if (exec(st, "PRAGMA cache_size=-8000", err)) goto fail; /* 8 MB page cache */
    for (int i = 0; i < N_STMT; i++) {
        if (!stmt(st, i)) {
            sql_error(st, SQLITE_ERROR, err, "prepare");
            goto fail;
        }
    }
    st->seq = meta_get_int(st, "seq");
    return st;
fail:
    store_free(st);
    return NULL;
}

void
store_free(struct store *st)
{
    if (!st) return;
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

/* ---------------------------------------------------------------- transactions */

int
store_begin(struct store *st, struct ls_error *err)
{
    st->seq_at_begin = st->seq;
    st->ngarbage = 0;
    return exec(st, "BEGIN IMMEDIATE", err);
}

int
store_commit(struct store *st, struct ls_error *err)
{
    sqlite3_stmt *s = stmt(st, S_META_SET_SEQ);
    int rc;
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
        return err ? err->code : LS_EIO;
    }
    return 0;
}

void
store_rollback(struct store *st)
{
    if (!sqlite3_get_autocommit(st->db)) sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    st->seq = st->seq_at_begin;
    st->ngarbage = 0;
}

int
store_savepoint(struct store *st)
{
    st->seq_at_savepoint = st->seq;
    return exec(st, "SAVEPOINT req", NULL);
}

void
store_savepoint_release(struct store *st)
{
    exec(st, "RELEASE req", NULL);
}

void
store_savepoint_rollback(struct store *st)
{
    exec(st, "ROLLBACK TO req", NULL);
    exec(st, "RELEASE req", NULL);
    st->seq = st->seq_at_savepoint;
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

/* Runs a DELETE ... RETURNING sha256, body IS NULL and notes blobs that may be unreferenced. */
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
           const char *arg, int64_t ts, struct ls_error *err)
{
    sqlite3_stmt *s = stmt(st, S_LOG_INSERT);
    int64_t seq = st->seq + 1;
    int rc;
    sqlite3_bind_int64(s, 1, seq);
    sqlite3_bind_int64(s, 2, ts);
    sqlite3_bind_int(s, 3, op);
    sqlite3_bind_int64(s, 4, item);
    sqlite3_bind_text(s, 5, path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 6, version);
    sqlite3_bind_int(s, 7, flags);
    if (arg) sqlite3_bind_text(s, 8, arg, -1, SQLITE_STATIC);
    if ((rc = step_done(st, s, err, "append to log"))) return rc;
    st->seq = seq;
    return 0;
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
    sqlite3_bind_int64(s, 5, st->seq + 1);
    sqlite3_bind_int64(s, 6, mtime);
    return step_done(st, s, err, "update item");
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
    uint64_t size = op->body_file ? op->body_file_size : op->body_len;
    int in_blob = op->body_file != NULL || op->body_len > st->opt.inline_max;
    sqlite3_stmt *s;
    int rc;

    if ((rc = item_lookup(st, op->path, &c, err))) return rc;
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
        }
        done(s);
        if (!kind) kind = prev_kind;
        if (!meta) meta = prev_meta;
    }
    if (!kind) kind = "document";
    if (!meta) meta = "{}";

    if (op->has_sha) memcpy(sha, op->sha, 32);
    else if (op->body_file) {
        rc = ls_error_set(err, LS_EINTERNAL, "body file without its hash");
        goto out;
    } else sha256(op->body, op->body_len, sha);
    if (op->body_file) rc = blob_adopt(st, op->body_file, sha, err);
    else if (in_blob) rc = blob_write(st, op->body, op->body_len, sha, err);
    if (rc) goto out;

    published = op->publish ? version : (c.exists && !c.deleted ? c.published : 0);
    if (c.exists) {
        rc = item_update(st, &c, version, published, 0, mtime, err);
    } else {
        s = stmt(st, S_ITEM_INSERT);
        sqlite3_bind_text(s, 1, op->path, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, version);
        if (published > 0) sqlite3_bind_int64(s, 3, published);
        sqlite3_bind_int64(s, 4, st->seq + 1);
        sqlite3_bind_int64(s, 5, mtime);
        rc = step_done(st, s, err, "insert item");
        c.id = sqlite3_last_insert_rowid(st->db);
    }
    if (rc) goto out;

    s = stmt(st, S_VERSION_INSERT);
    sqlite3_bind_int64(s, 1, c.id);
    sqlite3_bind_int64(s, 2, version);
    sqlite3_bind_text(s, 3, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, meta, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)size);
    sqlite3_bind_blob(s, 6, sha, 32, SQLITE_STATIC);
    if (!in_blob) sqlite3_bind_blob(s, 7, op->body_len ? op->body : "", (int)op->body_len,
                                    SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, mtime);
    sqlite3_bind_int64(s, 9, st->seq + 1);
    if ((rc = step_done(st, s, err, "insert version"))) goto out;

    if ((rc = log_append(st, LS_OP_PUT, c.id, op->path, version, op->publish, NULL, mtime, err)))
        goto out;

    if (version > st->opt.max_versions) {
        s = stmt(st, S_VERSION_PRUNE);
        sqlite3_bind_int64(s, 1, c.id);
        sqlite3_bind_int64(s, 2, version - st->opt.max_versions);
        if (published > 0) sqlite3_bind_int64(s, 3, published);
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
    if ((rc = item_lookup(st, op->path, &src, err)) || (rc = require_live(&src, op->path, err)))
        return rc;
    if (strcmp(op->path, op->to) == 0)
        return ls_error_set(err, LS_EINVAL, "cannot move %s onto itself", op->path);
    if ((rc = item_lookup(st, op->to, &dst, err))) return rc;
    if (dst.exists && !dst.deleted) return ls_error_set(err, LS_EEXISTS, "%s exists", op->to);
    /* A tombstone at the destination is replaced: the moved item takes its path. */
    if (dst.exists && (rc = apply_purge_item(st, dst.id, err))) return rc;
    s = stmt(st, S_ITEM_MOVE);
    sqlite3_bind_int64(s, 1, src.id);
    sqlite3_bind_text(s, 2, op->to, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, st->seq + 1);
    sqlite3_bind_int64(s, 4, mtime);
    if ((rc = step_done(st, s, err, "move"))) return rc;
    res->version = src.version;
    return log_append(st, LS_OP_MOVE, src.id, op->path, src.version, 0, op->to, mtime, err);
}

static int
apply_other(struct store *st, const struct ls_op *op, int64_t mtime, struct ls_op_result *res,
            struct ls_error *err)
{
    struct cur_item c;
    int64_t version = 0;
    int rc;

    if ((rc = item_lookup(st, op->path, &c, err))) return rc;
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
        sqlite3_stmt *s = stmt(st, S_VERSION_EXISTS);
        int found;
        version = op->version > 0 ? op->version : c.version;
        sqlite3_bind_int64(s, 1, c.id);
        sqlite3_bind_int64(s, 2, version);
        found = sqlite3_step(s) == SQLITE_ROW;
        done(s);
        if (!found)
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
    return log_append(st, op->type, c.id, op->path, version, 0, NULL, mtime, err);
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
    switch (op->type) {
    case LS_OP_PUT: rc = apply_put(st, op, mtime, res, err); break;
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
 *   path NUL kind NUL version NUL status NUL sha256-hex NUL meta LF
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
