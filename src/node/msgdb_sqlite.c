/*
 * msgdb_sqlite.c - the shared database on one host (`lockstep serve --messenger sqlite:PATH`,
 * docs/messenger.md "Shared database"): the SQLite side of pgmsg.h's statement interface, the
 * schema of a messenger file, and the watch that stands in for LISTEN/NOTIFY.
 *
 * Every server of the host opens the same file, in WAL mode (readers never wait for the writer)
 * with a busy timeout (writers take turns). SQLite has one writer at a time for the whole file,
 * and a publish draws its ids (AUTOINCREMENT) inside its write transaction: ids become visible in
 * the order they were drawn, so a reader's `id > last` never passes over a later commit, and
 * pgmsg.c needs no watermark here.
 *
 * The watch: a connection of its own reads PRAGMA data_version. The value changes when another
 * connection, of this process or another, has committed; reading it reads the WAL index in
 * shared memory, no I/O. It looks when inotify reports a write to the file or its -wal (a hint
 * only: the event says "written", not "committed", and a commit's last write comes before its
 * WAL-index update, so it looks again 1, 2, 4, 8 and 16 ms later), and every --poll-interval
 * (50 ms unless given) whatever inotify says: a file rewritten, truncated or replaced, or a
 * filesystem without inotify, costs at most one interval. The directory is watched, not the
 * files, which come and go. A publish by this server wakes its own readers at once
 * (http/notify_pg.c).
 *
 * Runs on pgmsg.c's threads only, never on the event loop, except msgdb_sqlite_open's first
 * call, made by serve before the loop starts.
 *
 * Not for: the jobs, the waiters, retention (pgmsg.c); the HTTP API (http/notify_pg.c).
 */
#include "common/log.h"
#include "common/util.h"
#include "node/msgdb_int.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#define SCHEMA_VERSION 1
#define BUSY_TIMEOUT_MS 10000

const char *
msgdb_sqlite_path(const char *url)
{
    return url && strncmp(url, "sqlite:", 7) == 0 ? url + 7 : NULL;
}

/* ---------------------------------------------------------------- statements */

static int
fail_with(struct ls_error *err, sqlite3 *db, int rc)
{
    return ls_error_set(err, (rc & 0xff) == SQLITE_BUSY ? LS_EUNAVAIL : LS_EIO,
                        "the messenger database: %s", sqlite3_errmsg(db));
}

/*
 * The statement for sql, prepared once per connection: the texts are a few dozen constants, and
 * preparing one costs more than running most of them. A statement comes back reset, its
 * parameters cleared (they point into the caller's strings).
 */
static int
prepare(struct msgdb_conn *conn, const char *sql, sqlite3_stmt **out)
{
    int rc;
    for (int i = 0; i < conn->nstmts; i++)
        if (strcmp(sqlite3_sql(conn->stmts[i]), sql) == 0) {
            *out = conn->stmts[i];
            return SQLITE_OK;
        }
    rc = sqlite3_prepare_v3(conn->lite, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
    if (rc == SQLITE_OK && *out && conn->nstmts < MSGDB_STMT_CACHE)
        conn->stmts[conn->nstmts++] = *out;
    return rc;
}

static void
release(struct msgdb_conn *conn, sqlite3_stmt *st)
{
    if (!st) return;
    for (int i = 0; i < conn->nstmts; i++)
        if (conn->stmts[i] == st) {
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return;
        }
    sqlite3_finalize(st); /* the cache was full */
}

struct msgdb_res *
msgdb_sqlite_exec(struct msgdb_conn *conn, struct ls_error *err, const char *sql, int n,
                  const char *const *values)
{
    sqlite3 *db = conn->lite;
    sqlite3_stmt *st = NULL;
    struct msgdb_res *r = calloc(1, sizeof *r);
    size_t cap = 0;
    int rc;
    if (!r) {
        ls_error_set(err, LS_ENOMEM, NULL);
        return NULL;
    }
    if ((rc = prepare(conn, sql, &st)) != SQLITE_OK) goto fail;
    for (int i = 0; i < n; i++) {
        char name[16];
        int at;
        snprintf(name, sizeof name, "$%d", i + 1);
        /* a parameter the statement does not use is left alone (pgmsg.c passes some for the
         * other dialect's text) */
        if ((at = sqlite3_bind_parameter_index(st, name)) > 0 &&
            (rc = sqlite3_bind_text(st, at, values[i], -1, SQLITE_STATIC)) != SQLITE_OK)
            goto fail;
    }
    r->cols = sqlite3_column_count(st);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        size_t need = (size_t)(r->rows + 1) * (size_t)r->cols;
        if (need > cap) {
            size_t ncap = cap ? cap * 2 : (size_t)r->cols * 16;
            char **cells = realloc(r->cells, ncap * sizeof *cells);
            if (!cells) {
                ls_error_set(err, LS_ENOMEM, NULL);
                goto out;
            }
            memset(cells + cap, 0, (ncap - cap) * sizeof *cells);
            r->cells = cells;
            cap = ncap;
        }
        for (int c = 0; c < r->cols; c++) {
            const unsigned char *t = sqlite3_column_text(st, c);
            char **cell = &r->cells[(size_t)r->rows * (size_t)r->cols + (size_t)c];
            if (t && !(*cell = strdup((const char *)t))) {
                ls_error_set(err, LS_ENOMEM, NULL);
                r->rows++; /* its cells are freed with the others */
                goto out;
            }
        }
        r->rows++;
    }
    if (rc != SQLITE_DONE) goto fail;
    r->changed = sqlite3_changes64(db);
    release(conn, st);
    return r;
fail:
    fail_with(err, db, rc);
out:
    release(conn, st);
    msgdb_clear(r);
    return NULL;
}

void
msgdb_sqlite_abort(struct msgdb_conn *conn)
{
    if (conn->lite && !sqlite3_get_autocommit(conn->lite))
        sqlite3_exec(conn->lite, "ROLLBACK", NULL, NULL, NULL);
}

void
msgdb_sqlite_close(struct msgdb_conn *conn)
{
    for (int i = 0; i < conn->nstmts; i++)
        sqlite3_finalize(conn->stmts[i]);
    conn->nstmts = 0;
    sqlite3_close(conn->lite);
    conn->lite = NULL;
}

/* ---------------------------------------------------------------- the schema */

/*
 * The same tables as PostgreSQL's (pgmsg.c), in SQLite's types. AUTOINCREMENT: an id is never
 * drawn twice, even once retention has removed every row (a plain rowid would start again at 1,
 * below the floor, and every consumer would skip the new notifications).
 */
static const char *const schema_sql[] = {
    "CREATE TABLE lockstep_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE lockstep_notes (id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, "
    "payload TEXT NOT NULL, ts INTEGER NOT NULL)",
    "CREATE INDEX lockstep_notes_ts ON lockstep_notes (ts)",
    "CREATE TABLE lockstep_consumers (name TEXT PRIMARY KEY, channels TEXT NOT NULL, "
    "position INTEGER NOT NULL, created INTEGER NOT NULL, acked INTEGER NOT NULL DEFAULT 0, "
    "resets INTEGER NOT NULL DEFAULT 0, reset_at INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE lockstep_nodes (key TEXT PRIMARY KEY, rec TEXT NOT NULL, heard INTEGER NOT "
    "NULL)",
    "INSERT INTO lockstep_meta VALUES ('schema_version', 1), ('floor', 0)",
};

static int
one_i64(struct msgdb_conn *conn, struct ls_error *err, const char *sql, int64_t *out)
{
    struct msgdb_res *r = msgdb_sqlite_exec(conn, err, sql, 0, NULL);
    if (!r) return -1;
    *out = msgdb_rows(r) ? msgdb_i64(r, 0, 0) : 0;
    msgdb_clear(r);
    return 0;
}

/* A new file gets the schema; a file with other tables, or from a newer lockstep, is refused.
 * BEGIN IMMEDIATE: two servers starting together take turns. */
static int
schema_ensure(struct msgdb_conn *conn, const char *path, struct ls_error *err)
{
    int64_t ours, tables, version = 0;
    if (msgdb_run(conn, err, "BEGIN IMMEDIATE", 0, NULL)) return -1;
    if (one_i64(conn, err,
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = "
                "'lockstep_meta'",
                &ours) ||
        one_i64(conn, err, "SELECT count(*) FROM sqlite_master", &tables) ||
        (ours && one_i64(conn, err, "SELECT value FROM lockstep_meta WHERE key = 'schema_version'",
                         &version)))
        goto fail;
    if (!ours && tables) {
        ls_error_set(err, LS_EINVAL,
                     "%s is not a lockstep messenger database (it holds other tables)", path);
        goto fail;
    }
    if (ours && version <= 0) {
        ls_error_set(err, LS_EINVAL, "%s is not a lockstep messenger database (no schema version)",
                     path);
        goto fail;
    }
    if (version > SCHEMA_VERSION) {
        ls_error_set(err, LS_EINVAL,
                     "%s has messenger schema version %lld, from a newer lockstep (this one "
                     "knows %d)",
                     path, (long long)version, SCHEMA_VERSION);
        goto fail;
    }
    for (size_t i = 0; !ours && i < sizeof schema_sql / sizeof schema_sql[0]; i++)
        if (msgdb_run(conn, err, schema_sql[i], 0, NULL)) goto fail;
    if (msgdb_run(conn, err, "COMMIT", 0, NULL)) goto fail;
    if (!ours) log_info("messenger: created the schema in %s", path);
    return 0;
fail:
    msgdb_sqlite_abort(conn);
    return -1;
}

int
msgdb_sqlite_open(const char *path, int sync_full, struct msgdb_conn *out, struct ls_error *err)
{
    struct msgdb_conn conn = {0};
    struct msgdb_res *r;
    int rc;
    if (!path || path[0] != '/')
        return ls_error_set(err, LS_EINVAL,
                            "--messenger sqlite:PATH needs an absolute path (got \"%s\")",
                            path ? path : "");
    rc = sqlite3_open_v2(path, &conn.lite,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        ls_error_set(err, LS_EIO, "cannot open the messenger database %s: %s", path,
                     conn.lite ? sqlite3_errmsg(conn.lite) : sqlite3_errstr(rc));
        goto fail;
    }
    if (sqlite3_db_readonly(conn.lite, "main") == 1) {
        ls_error_set(err, LS_EIO, "cannot open the messenger database %s: it is not writable",
                     path);
        goto fail;
    }
    sqlite3_busy_timeout(conn.lite, BUSY_TIMEOUT_MS);
    /* the first statement reads the file: "file is not a database" shows here */
    if (!(r = msgdb_sqlite_exec(&conn, err, "PRAGMA journal_mode = WAL", 0, NULL))) {
        ls_error_set(err, LS_EINVAL, "%s is not a lockstep messenger database (%s)", path,
                     sqlite3_errmsg(conn.lite));
        goto fail;
    }
    if (msgdb_rows(r) != 1 || strcmp(msgdb_text(r, 0, 0), "wal") != 0) {
        ls_error_set(err, LS_EIO, "cannot put the messenger database %s in WAL mode (%s)", path,
                     msgdb_rows(r) ? msgdb_text(r, 0, 0) : "?");
        msgdb_clear(r);
        goto fail;
    }
    msgdb_clear(r);
    /* NORMAL in WAL mode: a commit survives the process (kill -9); FULL: the machine too */
    if (msgdb_run(&conn, err,
                  sync_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL", 0,
                  NULL) ||
        schema_ensure(&conn, path, err))
        goto fail;
    *out = conn;
    return 0;
fail:
    msgdb_sqlite_close(&conn);
    return -1;
}

/* ---------------------------------------------------------------- the watch */

/* An inotify descriptor watching the directory of path for writes, or -1 (the interval alone
 * then); *base is set to path's last component. */
static int
watch_dir(const char *path, const char **base)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int fd;
    *base = slash ? slash + 1 : path;
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else
        return -1;
    if ((fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) return -1;
    if (inotify_add_watch(fd, dir, IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads what fd has; 1 when an event names base or base-wal. */
static int
watch_drain(int fd, const char *base)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    size_t blen = strlen(base);
    ssize_t n;
    int hit = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            if (ev->len && strncmp(ev->name, base, blen) == 0 &&
                (ev->name[blen] == 0 || strcmp(ev->name + blen, "-wal") == 0))
                hit = 1;
            if (ev->mask & IN_Q_OVERFLOW) hit = 1;
            p += sizeof *ev + ev->len;
        }
    }
    return hit;
}

void
msgdb_sqlite_watch(const char *path, int64_t interval_ms, void (*wake)(void *arg),
                   int (*pause)(void *arg, int fd, int ms), void *arg)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t seen = -1;
    int ms = interval_ms < 1 ? 1 : interval_ms > 60000 ? 60000 : (int)interval_ms;
    const char *base;
    int ino = watch_dir(path, &base), again = 0; /* again: the next look after a write, in ms */
    if (ino < 0) log_info("messenger: no inotify on %s's directory; looking every %d ms", path, ms);
    for (;;) {
        if (!st) {
            sqlite3_close(db);
            db = NULL;
            if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
                    SQLITE_OK ||
                sqlite3_prepare_v2(db, "PRAGMA data_version", -1, &st, NULL) != SQLITE_OK) {
                sqlite3_finalize(st);
                st = NULL;
                if (pause(arg, -1, 1000)) break;
                continue;
            }
            seen = -1;
        }
        if (sqlite3_step(st) == SQLITE_ROW) {
            int64_t now = sqlite3_column_int64(st, 0);
            if (seen >= 0 && now != seen) {
                wake(arg);
                again = 0;
            }
            seen = now;
        } else { /* looked again with a new connection; meanwhile a look of pgmsg.c's covers */
            sqlite3_finalize(st);
            st = NULL;
            wake(arg);
        }
        sqlite3_reset(st);
        if (pause(arg, ino, again ? again : ms)) break;
        if (ino >= 0 && watch_drain(ino, base))
            again = 1;
        else if (again)
            again = again >= 16 ? 0 : again * 2;
    }
    if (ino >= 0) close(ino);
    sqlite3_finalize(st);
    sqlite3_close(db);
}
