/*
 * pgmsg.c - the messenger's shared-database mode (pgmsg.h, docs/messenger.md "Shared
 * database"): the connection threads, the listener, the schema, retention, the delivery
 * watermark and the waiters.
 *
 * Two backends. With `--messenger sqlite:PATH` the same threads, waiters, retention and registry
 * run on an SQLite file (msgdb_sqlite.c: the connection, its schema, and the watch of PRAGMA
 * data_version that the listener thread runs instead of LISTEN); statements go through
 * msgdb_exec (below) whichever it is. What follows about PostgreSQL's listener and watermark is
 * PostgreSQL's alone: SQLite's single writer commits ids in order, so its watermark is infinite.
 *
 * Threads. PGMSG_THREADS threads each own one connection and run jobs from one bounded FIFO
 * queue (as readers.c does for the store); a finished job goes back to the loop through one
 * event. Publishes (urgent jobs) have a queue of their own, and the first thread takes only
 * those: a publish does not wait behind the reads of the notifications before it, nor for a
 * thread busy with one. The other threads take the oldest job of either queue.
 *
 * The listener. One more thread owns a connection that only LISTENs: a NOTIFY (sent by a trigger
 * at the commit of every insert, whoever inserts) carries the rows inserted, or their highest id
 * (WAKE_FUNCTION_SQL); the loop keeps the rows (pgmsg_recent, for the event streams) and fires
 * the waiters below that id, with no statement. A NOTIFY without an id makes it look for the
 * head. The loop also looks every --poll-interval: a NOTIFY missed while the listener was
 * reconnecting, or while the database restarted, costs one interval, never a notification.
 *
 * The watermark. Publishers commit out of id order: a row with id 7 may commit while id 6 is
 * still in flight, and a reader that moved its position to 7 would skip 6 for ever. Every insert
 * takes a shared advisory lock (held to the end of its transaction) before it draws its id from
 * the sequence: the trigger does, whoever inserts. A probe reads the sequence's last value L,
 * then, in a later statement, the transactions holding that lock (pg_locks): every id <= L
 * belongs to one of them or to a transaction that had ended already. Once none of them holds
 * the lock any more, every id <= L is final: committed (and visible to any later snapshot, a
 * transaction's locks going only after its commit is visible) or never to appear. The watermark
 * is the highest such L. A reader delivers a row that follows the previous one (id = previous
 * + 1) at once, and a row after a gap only when the gap is below the watermark as it was before
 * the reader's snapshot; otherwise it stops there and reads again at the next look. Only
 * publishing transactions hold anything up: a long unrelated transaction in the database does
 * not (as it would with a snapshot's xmin).
 *
 * The site registry. Each server also writes its own record (as PING carries it) every second and
 * reads everyone's: GET /v1/nodes?all=1 lists the servers sharing the database.
 *
 * Not for: the HTTP answers (http/notify_pg.c).
 */
#include "node/pgmsg.h"
#include "node/msgdb_int.h"
#include "common/log.h"
#include "common/util.h"
#include "node/server.h"
#include "node/site.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PGMSG_THREADS 3 /* the first one only publishes */
#define PGMSG_QUEUE_MAX 4096
#define PROBES 32
#define RECENT 1024 /* rows kept from the wake-ups (a power of 2) */
#define SCHEMA_VERSION 1
/* advisory lock keys: "lockstep" in ASCII, and the same + 1 */
#define LOCK_SCHEMA "7813586174566774128"
#define LOCK_RETENTION "7813586174566774129"
/* held (shared) by every publishing transaction: "lock", 1 as two int4 (pg_locks shows them as
 * classid, objid and objsubid 2) */
#define LOCK_PUBLISH "1819239275, 1"
#define HOLDERS_SQL                                                                               \
    "SELECT coalesce(string_agg(virtualtransaction, ','), '') FROM pg_locks WHERE locktype = "    \
    "'advisory' AND classid = 1819239275 AND objid = 1 AND objsubid = 2 AND granted"

/* The sequence's last value, and the transactions ("vxid,vxid,") that held the publishing
 * lock just after it was read: once none does, every id up to last_id is final. */
struct probe {
    int64_t last_id;
    char *holders;
};

struct pgmsg {
    struct server *srv;
    char *url;
    const char *sqlite_path; /* in url: `--messenger sqlite:PATH` (else PostgreSQL) */
    int sync_full;           /* SQLite: --sync full */
    /* the job threads */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pg_job *queue, **queue_tail, *urgent, **urgent_tail, *finished, **finished_tail;
    int queued, stop;
    pthread_t threads[PGMSG_THREADS];
    int nthreads, nstarted; /* nstarted: counted by the threads as they start (mu held) */
    pthread_cond_t cv_urgent;
    uint64_t submitted; /* the publishing thread's: an urgent job is queued */
    struct event *wake;
    atomic_int schema_ok;
    atomic_llong last_complaint; /* mono ms of the last "unreachable" log line */
    /* the listener */
    pthread_t listener;
    int listening, stop_pipe[2];
    struct event *kick_ev, *poll_timer, *retention_timer;
    /* the watermark and the probes that may raise it, shared by the threads */
    pthread_mutex_t probe_mu;
    struct probe probes[PROBES];
    int nprobes;
    int64_t watermark;
    atomic_int gap_seen; /* a reader stopped at a gap since the last look: that look probes */
    /* the listener's news for the loop: the highest id a wake-up carried, or that one came
     * without (the loop looks for the head then) */
    _Atomic int64_t woken_id;
    atomic_int woken_blind, woken_stale; /* stale: the listener reconnected, forget recent */
    pthread_mutex_t arrived_mu;
    json_t *arrived; /* the listener's: rows from wake-ups, for the loop to take */
    /* the loop's: the rows wake-ups carried, by id modulo RECENT (pgmsg_recent) */
    struct recent {
        int64_t id, ts;
        char channel[LS_CHANNEL_MAX + 1];
        json_t *payload;
    } recent[RECENT];
    int naive;
    /* the loop's own */
    struct pg_waiter *waiters;
    struct pg_job head_job, prune_job;
    int64_t head, found_head;
    int looking, look_again, pruning, stopping;
    int64_t age_ms, bytes;
    void *views; /* http/notify_pg.c's */
    /* the site registry: this server's record goes in, everyone's comes out */
    struct pg_job site_job;
    struct event *site_timer;
    int site_busy;
    char *site_key, *site_self; /* in: the key and record to write */
    json_t *site_found;         /* out: [[record, age_ms], ...] */
    json_t *site_known;         /* the loop's: the last list read */
};

struct pgmsg *
pgmsg_of(struct server *srv)
{
    return srv->pgmsg;
}

void **
pgmsg_views(struct pgmsg *m)
{
    return &m->views;
}

int
pgmsg_stopping(struct pgmsg *m)
{
    return m->stopping;
}

const char *
pgmsg_kind(struct pgmsg *m)
{
    return m->sqlite_path ? "sqlite" : "postgres";
}

int
pgmsg_naive(struct pgmsg *m)
{
    return m->naive;
}

int64_t
pgmsg_head(struct pgmsg *m)
{
    return m->head;
}

void
pgmsg_retention(struct pgmsg *m, int64_t *age_ms, int64_t *bytes)
{
    *age_ms = m->age_ms;
    *bytes = m->bytes;
}

/* ---------------------------------------------------------------- SQL helpers */

/* A result, or NULL and err set (r cleared). */
static PGresult *
pg_checked(PGconn *conn, struct ls_error *err, PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) return r;
    {
        const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(conn);
        size_t len = strlen(msg);
        while (len && (msg[len - 1] == '\n' || msg[len - 1] == ' ')) len--;
        ls_error_set(err, PQstatus(conn) == CONNECTION_OK ? LS_EIO : LS_EUNAVAIL,
                     "the messenger database: %.*s", (int)len, msg);
    }
    PQclear(r);
    return NULL;
}

static PGresult *
pg_exec(PGconn *conn, struct ls_error *err, const char *sql, int n, const char *const *values)
{
    return pg_checked(conn, err, PQexecParams(conn, sql, n, NULL, values, NULL, NULL, 0));
}

/* The connection's prepared statements are forgotten (it is closed, or a new one). */
static void
pg_forget(struct msgdb_conn *c)
{
    for (int i = 0; i < c->npg; i++) free(c->pg_sql[i]);
    c->npg = 0;
}

/*
 * pg_exec, with the statement prepared once per connection (the jobs' statements are a few fixed
 * texts): a read's statement is planned once, not at every wake-up. Transaction control, and
 * anything once the cache is full, goes unprepared.
 */
static int
preparable(const char *sql)
{
    static const char *const verbs[] = {"SELECT", "WITH", "INSERT", "UPDATE", "DELETE"};
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (strncmp(sql, verbs[i], strlen(verbs[i])) == 0) return 1;
    return 0;
}

static PGresult *
pg_exec_prepared(struct msgdb_conn *c, struct ls_error *err, const char *sql, int n,
                 const char *const *values)
{
    char name[16];
    PGresult *r;
    int i;
    for (i = 0; i < c->npg && strcmp(c->pg_sql[i], sql) != 0; i++) {}
    if (i == c->npg) {
        if (i == MSGDB_STMT_CACHE || c->pg_unprepared || !preparable(sql))
            return pg_exec(c->pg, err, sql, n, values);
        snprintf(name, sizeof name, "m%d", i);
        if (!(r = pg_checked(c->pg, err, PQprepare(c->pg, name, sql, n, NULL)))) return NULL;
        PQclear(r);
        if (!(c->pg_sql[i] = strdup(sql))) return pg_exec(c->pg, err, sql, n, values);
        c->npg++;
    }
    snprintf(name, sizeof name, "m%d", i);
    r = PQexecPrepared(c->pg, name, n, values, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_FATAL_ERROR &&
        strcmp(PQresultErrorField(r, PG_DIAG_SQLSTATE) ? PQresultErrorField(r, PG_DIAG_SQLSTATE)
                                                       : "",
               "26000") == 0) {
        /* a transaction-pooling proxy (PgBouncer) hands each statement to any backend: this
         * connection prepares nothing more, and the statement goes again unless it was inside a
         * transaction, which the error ended */
        log_warn("messenger: the database forgot a prepared statement (a pooler in between?): "
                 "statements go unprepared on this connection");
        pg_forget(c);
        c->pg_unprepared = 1;
        if (PQtransactionStatus(c->pg) == PQTRANS_IDLE) {
            PQclear(r);
            return pg_exec(c->pg, err, sql, n, values);
        }
    }
    return pg_checked(c->pg, err, r);
}

static int
pg_run(PGconn *conn, struct ls_error *err, const char *sql, int n, const char *const *values)
{
    PGresult *r = pg_exec(conn, err, sql, n, values);
    if (!r) return -1;
    PQclear(r);
    return 0;
}

static int64_t
pg_i64(const PGresult *r, int row, int col)
{
    int64_t v = 0;
    if (PQgetisnull(r, row, col)) return 0;
    ls_parse_i64(PQgetvalue(r, row, col), &v);
    return v;
}

/* ---------------------------------------------------------------- either database */

struct msgdb_res *
msgdb_exec(struct msgdb_conn *conn, struct ls_error *err, const char *sql, int n,
           const char *const *values)
{
    struct msgdb_res *r;
    PGresult *pr;
    if (conn->lite) return msgdb_sqlite_exec(conn, err, sql, n, values);
    if (!(pr = pg_exec_prepared(conn, err, sql, n, values))) return NULL;
    if (!(r = calloc(1, sizeof *r))) {
        PQclear(pr);
        ls_error_set(err, LS_ENOMEM, NULL);
        return NULL;
    }
    r->pg = pr;
    r->rows = PQntuples(pr);
    ls_parse_i64(PQcmdTuples(pr), &r->changed);
    return r;
}

int
msgdb_run(struct msgdb_conn *conn, struct ls_error *err, const char *sql, int n,
          const char *const *values)
{
    struct msgdb_res *r = msgdb_exec(conn, err, sql, n, values);
    if (!r) return -1;
    msgdb_clear(r);
    return 0;
}

int
msgdb_rows(const struct msgdb_res *r)
{
    return r->rows;
}

int
msgdb_isnull(const struct msgdb_res *r, int row, int col)
{
    if (r->pg) return PQgetisnull(r->pg, row, col);
    return row >= r->rows || col >= r->cols || !r->cells[row * r->cols + col];
}

const char *
msgdb_text(const struct msgdb_res *r, int row, int col)
{
    if (r->pg) return PQgetvalue(r->pg, row, col);
    return msgdb_isnull(r, row, col) ? "" : r->cells[row * r->cols + col];
}

int64_t
msgdb_i64(const struct msgdb_res *r, int row, int col)
{
    int64_t v = 0;
    if (msgdb_isnull(r, row, col)) return 0;
    ls_parse_i64(msgdb_text(r, row, col), &v);
    return v;
}

int64_t
msgdb_changed(const struct msgdb_res *r)
{
    return r->changed;
}

void
msgdb_clear(struct msgdb_res *r)
{
    if (!r) return;
    PQclear(r->pg);
    for (int i = 0; r->cells && i < r->rows * r->cols; i++)
        free(r->cells[i]);
    free(r->cells);
    free(r);
}

int
msgdb_is_sqlite(const struct msgdb_conn *conn)
{
    return conn->lite != NULL;
}

/* ---------------------------------------------------------------- schema */

/*
 * Everything in public, prefixed lockstep_, created once by whichever server connects first
 * (the advisory lock makes two servers starting together take turns). The trigger is what every
 * writer goes through, an application inserting from its own transaction too: it takes the xid
 * before the id (the watermark's rule), stamps the time, and a statement trigger sends the NOTIFY
 * that is delivered at commit.
 */
/* The wake-up carries the rows the statement inserted, [[id, ts, channel, payload], ...] in id
 * order, when they are few and fit in a NOTIFY (8000 bytes): a server delivers them to the
 * streams they follow without reading them (pgmsg_recent). Otherwise it carries the highest id:
 * a listener that knows it need not ask for the head. Schema version 1 had an empty payload; a
 * server that finds that trigger or function replaces both (wake_upgrade), and a listener that
 * gets an empty payload looks for the head. */
#define WAKE_FUNCTION_SQL                                                                         \
    "CREATE OR REPLACE FUNCTION lockstep_notes_wake() RETURNS trigger LANGUAGE plpgsql AS $$\n" \
    "DECLARE n bigint; top bigint; msg text; -- " WAKE_MARK "\n"                                 \
    "BEGIN\n"                                                                                     \
    "  SELECT count(*), max(id) INTO n, top FROM lockstep_notes_new;\n"                           \
    "  IF n <= 32 THEN\n"                                                                         \
    "    SELECT json_agg(json_build_array(id, ts, channel, payload) ORDER BY id)::text INTO msg "  \
    "FROM lockstep_notes_new;\n"                                                                  \
    "  END IF;\n"                                                                                 \
    "  IF msg IS NULL OR octet_length(msg) > 7900 THEN msg := coalesce(top::text, ''); END IF;\n" \
    "  PERFORM pg_notify('lockstep_notes', msg);\n"                                               \
    "  RETURN NULL;\n"                                                                            \
    "END $$"
#define WAKE_MARK "rows in the payload"
#define WAKE_TRIGGER_SQL                                                                          \
    "CREATE TRIGGER lockstep_notes_wake AFTER INSERT ON lockstep_notes REFERENCING NEW TABLE AS " \
    "lockstep_notes_new FOR EACH STATEMENT EXECUTE FUNCTION lockstep_notes_wake()"

static const char *const schema_sql[] = {
    "CREATE SEQUENCE lockstep_notes_id CACHE 1", /* CACHE 1: ids are drawn in order */
    "CREATE TABLE lockstep_notes (id bigint PRIMARY KEY, channel text NOT NULL, "
    "payload json NOT NULL, ts bigint NOT NULL)",
    "CREATE INDEX lockstep_notes_ts ON lockstep_notes (ts)",
    "CREATE FUNCTION lockstep_notes_stamp() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  PERFORM pg_advisory_xact_lock_shared(" LOCK_PUBLISH "); -- before the id: pgmsg.c\n"
    "  NEW.id := nextval('lockstep_notes_id');\n"
    "  NEW.ts := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;\n"
    "  RETURN NEW;\n"
    "END $$",
    "CREATE TRIGGER lockstep_notes_stamp BEFORE INSERT ON lockstep_notes FOR EACH ROW "
    "EXECUTE FUNCTION lockstep_notes_stamp()",
    WAKE_FUNCTION_SQL,
    WAKE_TRIGGER_SQL,
    "CREATE TABLE lockstep_consumers (name text PRIMARY KEY, channels text NOT NULL, "
    "position bigint NOT NULL, created bigint NOT NULL, acked bigint NOT NULL DEFAULT 0, "
    "resets bigint NOT NULL DEFAULT 0, reset_at bigint NOT NULL DEFAULT 0)",
    /* the site registry: each server's own record, as PING carries it; heard: the database's
     * clock, so that the servers' clocks need not agree */
    "CREATE TABLE lockstep_nodes (key text PRIMARY KEY, rec json NOT NULL, heard bigint NOT "
    "NULL)",
    "INSERT INTO lockstep_meta VALUES ('schema_version', 1), ('floor', 0)",
};

/*
 * A database created by an older lockstep (same schema version: its servers keep working, they
 * do not read the payload) gets the wake-up with a payload, once. In a savepoint: a user that may
 * not replace the trigger keeps the old one, and its servers look for the head at each wake-up.
 */
static int
wake_upgrade(PGconn *conn, struct ls_error *err)
{
    PGresult *r = pg_exec(conn, err,
                          "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                          "'lockstep_notes'::regclass AND tgname = 'lockstep_notes_wake' AND "
                          "tgnewtable IS NULL) + (SELECT count(*) FROM pg_proc WHERE proname = "
                          "'lockstep_notes_wake' AND strpos(prosrc, '" WAKE_MARK "') = 0)",
                          0, NULL);
    struct ls_error up;
    int old;
    if (!r) return -1;
    old = pg_i64(r, 0, 0) > 0;
    PQclear(r);
    if (!old) return 0;
    ls_error_clear(&up);
    if (pg_run(conn, err, "SAVEPOINT wake", 0, NULL)) return -1;
    if (pg_run(conn, &up, WAKE_FUNCTION_SQL, 0, NULL) ||
        pg_run(conn, &up, "DROP TRIGGER lockstep_notes_wake ON lockstep_notes", 0, NULL) ||
        pg_run(conn, &up, WAKE_TRIGGER_SQL, 0, NULL)) {
        log_warn("messenger: cannot give the wake-up its payload (%s): each wake-up costs a look "
                 "for the head",
                 up.msg);
        return pg_run(conn, err, "ROLLBACK TO SAVEPOINT wake", 0, NULL);
    }
    log_info("messenger: the wake-up carries the new notifications now");
    return pg_run(conn, err, "RELEASE SAVEPOINT wake", 0, NULL);
}

static int
schema_ensure(PGconn *conn, struct ls_error *err)
{
    PGresult *r;
    int64_t version;
    if (PQserverVersion(conn) < 130000)
        return ls_error_set(err, LS_EUNAVAIL,
                            "the messenger database is PostgreSQL %d: 13 or later is needed",
                            PQserverVersion(conn) / 10000);
    if (pg_run(conn, err, "BEGIN", 0, NULL) ||
        pg_run(conn, err, "SELECT pg_advisory_xact_lock(" LOCK_SCHEMA ")", 0, NULL) ||
        pg_run(conn, err,
               "CREATE TABLE IF NOT EXISTS lockstep_meta (key text PRIMARY KEY, value bigint "
               "NOT NULL)",
               0, NULL) ||
        !(r = pg_exec(conn, err, "SELECT value FROM lockstep_meta WHERE key='schema_version'", 0,
                      NULL)))
        goto fail;
    version = PQntuples(r) ? pg_i64(r, 0, 0) : 0;
    PQclear(r);
    if (version > SCHEMA_VERSION) {
        ls_error_set(err, LS_EUNAVAIL,
                     "the messenger database has schema version %lld, from a newer lockstep "
                     "(this one knows %d)",
                     (long long)version, SCHEMA_VERSION);
        goto fail;
    }
    for (size_t i = 0; version == 0 && i < sizeof schema_sql / sizeof schema_sql[0]; i++)
        if (pg_run(conn, err, schema_sql[i], 0, NULL)) goto fail;
    if (version > 0 && wake_upgrade(conn, err)) goto fail;
    if (pg_run(conn, err, "COMMIT", 0, NULL)) goto fail;
    if (version == 0) log_info("messenger: created the schema in the shared database");
    return 0;
fail:
    PQclear(PQexec(conn, "ROLLBACK"));
    return -1;
}

/* ---------------------------------------------------------------- connections */

/* The server's notices ("relation ... already exists, skipping") are not for the log. */
static void
ignore_notice(void *arg, const char *message)
{
}

static PGconn *
connect_db(struct pgmsg *m)
{
    PGconn *conn;
    /* ours first: the URL's own settings override them (expand_dbname) */
    const char *const keys[] = {"connect_timeout", "application_name", "keepalives_idle",
                                "keepalives_interval", "keepalives_count", "dbname", NULL};
    const char *const values[] = {"5", "lockstep", "10", "5", "3", m->url, NULL};
    conn = PQconnectdbParams(keys, values, 1);
    if (conn) PQsetNoticeProcessor(conn, ignore_notice, NULL);
    return conn;
}

/* Says once every 10 s at most that the database cannot be reached: a down database must not
 * flood the log with one line per request. */
static void
complain(struct pgmsg *m, const char *what, const char *msg)
{
    long long now = ls_mono_ms(), last = atomic_load(&m->last_complaint);
    if (last && now - last < 10000) return;
    atomic_store(&m->last_complaint, now);
    log_warn("messenger: %s: %s", what, msg);
}

/* An idle connection with something to read has been told it is closed (a restart, a
 * pg_terminate_backend): found before a job is sent on it, so that a publish, which is never
 * sent twice, does not fail for it. */
static int
idle_conn_alive(PGconn *conn)
{
    /* a terminated backend sends its FATAL (taken as a notice while idle), then closes: the
     * close is seen by the read after the one that took the message */
    for (int i = 0; i < 4; i++) {
        struct pollfd p = {PQsocket(conn), POLLIN, 0};
        if (poll(&p, 1, 0) <= 0) return 1;
        if (!PQconsumeInput(conn) || PQstatus(conn) != CONNECTION_OK) return 0;
    }
    return 1;
}

static int
db_ready(struct pgmsg *m, struct msgdb_conn *conn, struct ls_error *err)
{
    if (m->sqlite_path) { /* a file: opened once, never "broken" */
        if (conn->lite) return 0;
        if (msgdb_sqlite_open(m->sqlite_path, m->sync_full, conn, err)) {
            complain(m, "the shared database", err->msg);
            return -1;
        }
        return 0;
    }
    if (conn->pg && PQstatus(conn->pg) == CONNECTION_OK && idle_conn_alive(conn->pg)) return 0;
    PQfinish(conn->pg);
    pg_forget(conn);
    conn->pg_unprepared = 0;
    conn->pg = connect_db(m);
    if (PQstatus(conn->pg) != CONNECTION_OK) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(conn->pg));
        msg[strcspn(msg, "\n")] = '\0';
        complain(m, "the shared database is unreachable", msg);
        ls_error_set(err, LS_EUNAVAIL, "the messenger database is unreachable: %s", msg);
        PQfinish(conn->pg);
        conn->pg = NULL;
        return -1;
    }
    if (!atomic_load(&m->schema_ok)) {
        if (schema_ensure(conn->pg, err)) {
            complain(m, "schema", err->msg);
            return -1;
        }
        atomic_store(&m->schema_ok, 1);
    }
    return 0;
}

static void
db_close(struct msgdb_conn *conn)
{
    PQfinish(conn->pg);
    pg_forget(conn);
    msgdb_sqlite_close(conn);
    conn->pg = NULL;
}

/* ---------------------------------------------------------------- the job threads */

static void
push(struct pg_job ***tail, struct pg_job *j)
{
    j->next = NULL;
    **tail = j;
    *tail = &j->next;
}

static void
run_job(struct pgmsg *m, struct msgdb_conn *conn, struct pg_job *j)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        ls_error_clear(&j->err);
        if (db_ready(m, conn, &j->err)) return;
        if (j->run(m, conn, j) == 0) return;
        if (!j->err.code) ls_error_set(&j->err, LS_EIO, "the messenger database failed");
        /* whatever the job left open is not to be committed by the next one */
        if (conn->lite) {
            msgdb_sqlite_abort(conn);
            return;
        }
        if (PQstatus(conn->pg) == CONNECTION_OK && PQtransactionStatus(conn->pg) != PQTRANS_IDLE)
            PQclear(PQexec(conn->pg, "ROLLBACK"));
        if (PQstatus(conn->pg) == CONNECTION_OK || !j->idempotent) return;
        complain(m, "the connection broke; trying again on a new one", j->err.msg);
    }
}

/* The next job for a thread (mu held): the oldest; the publishing thread takes only urgent ones.
 * NULL: none. (Urgent first for every thread starved the reads of the publishing server.) */
static struct pg_job *
next_job(struct pgmsg *m, int publisher)
{
    struct pg_job *j;
    if ((j = m->urgent) && (publisher || !m->queue || j->order < m->queue->order)) {
        if (!(m->urgent = j->next)) m->urgent_tail = &m->urgent;
    } else if (!publisher && (j = m->queue)) {
        if (!(m->queue = j->next)) m->queue_tail = &m->queue;
    } else {
        j = NULL;
    }
    if (j) m->queued--;
    return j;
}

static void *
worker_main(void *arg)
{
    struct pgmsg *m = arg;
    struct msgdb_conn conn = {0};
    int publisher;
    pthread_mutex_lock(&m->mu);
    publisher = m->nstarted++ == 0;
    for (;;) {
        struct pg_job *j;
        int stopping;
        while (!(j = next_job(m, publisher)) && !m->stop)
            pthread_cond_wait(publisher ? &m->cv_urgent : &m->cv, &m->mu);
        if (!j) break;
        stopping = m->stop;
        pthread_mutex_unlock(&m->mu);
        if (stopping || atomic_load(&j->cancelled)) atomic_store(&j->cancelled, 1);
        else run_job(m, &conn, j);
        pthread_mutex_lock(&m->mu);
        push(&m->finished_tail, j);
        event_active(m->wake, EV_READ, 0);
    }
    pthread_mutex_unlock(&m->mu);
    db_close(&conn);
    return NULL;
}

static void
on_finished(evutil_socket_t fd, short what, void *arg)
{
    struct pgmsg *m = arg;
    struct pg_job *list;
    pthread_mutex_lock(&m->mu);
    list = m->finished;
    m->finished = NULL;
    m->finished_tail = &m->finished;
    pthread_mutex_unlock(&m->mu);
    for (struct pg_job *j = list, *next; j; j = next) {
        next = j->next;
        j->done(j);
    }
}

int
pgmsg_submit(struct pgmsg *m, struct pg_job *j)
{
    pthread_mutex_lock(&m->mu);
    if (m->stop || m->queued >= PGMSG_QUEUE_MAX) {
        pthread_mutex_unlock(&m->mu);
        return LS_EUNAVAIL;
    }
    atomic_store(&j->cancelled, 0);
    j->order = ++m->submitted;
    push(j->urgent ? &m->urgent_tail : &m->queue_tail, j);
    m->queued++;
    if (j->urgent) pthread_cond_signal(&m->cv_urgent);
    pthread_cond_signal(&m->cv); /* an urgent one too: the publishing thread may be busy */
    pthread_mutex_unlock(&m->mu);
    return 0;
}

/* ---------------------------------------------------------------- the listener */

/*
 * --poll-interval: PostgreSQL's fallback look (1 s unless given); SQLite's look at the file
 * (50 ms unless given: a read of PRAGMA data_version is a read of shared memory, no I/O).
 */
static int64_t
watch_interval_ms(const struct pgmsg *m)
{
    int64_t given = m->srv->cfg.poll_interval_ms;
    return given > 0 ? given : m->sqlite_path ? 50 : 1000;
}

/* Sleeps ms, or less when the server stops; 1: stopping. */
static int
listener_pause(struct pgmsg *m, int ms)
{
    struct pollfd p = {m->stop_pipe[0], POLLIN, 0};
    return poll(&p, 1, ms) > 0;
}

static void
sqlite_wake(void *arg)
{
    struct pgmsg *m = arg;
    atomic_store(&m->woken_blind, 1);
    event_active(m->kick_ev, EV_READ, 0);
}

static int
sqlite_pause(void *arg, int fd, int ms)
{
    struct pgmsg *m = arg;
    struct pollfd p[2] = {{m->stop_pipe[0], POLLIN, 0}, {fd, POLLIN, 0}};
    return poll(p, fd >= 0 ? 2 : 1, ms) > 0 && (p[0].revents & POLLIN);
}

/* The listener: a wake-up's payload (WAKE_FUNCTION_SQL). Its rows go to m->arrived for the loop.
 * The highest id, or 0 when it carries none (then the loop looks for the head). */
static int64_t
wake_payload(struct pgmsg *m, const char *extra)
{
    json_t *rows, *row;
    int64_t top = 0;
    size_t i;
    if (*extra != '[') return ls_parse_i64(extra, &top) ? 0 : top;
    if (!(rows = json_loads(extra, 0, NULL)) || !json_is_array(rows)) {
        json_decref(rows);
        return 0;
    }
    json_array_foreach(rows, i, row) {
        json_int_t id = json_integer_value(json_array_get(row, 0));
        if (json_array_size(row) != 4 || id <= 0 || !json_is_integer(json_array_get(row, 1)) ||
            !json_is_string(json_array_get(row, 2))) {
            json_decref(rows);
            return 0;
        }
        if (id > top) top = id;
    }
    pthread_mutex_lock(&m->arrived_mu);
    if (!m->arrived) m->arrived = json_array();
    json_array_extend(m->arrived, rows);
    json_decref(rows); /* before the loop may take them: their counts are not ours after */
    pthread_mutex_unlock(&m->arrived_mu);
    return top;
}

static void *
listener_main(void *arg)
{
    struct pgmsg *m = arg;
    PGconn *conn = NULL;
    int backoff = 100, lost = 0;
    if (m->sqlite_path) { /* no LISTEN in SQLite: msgdb_sqlite.c watches the file */
        msgdb_sqlite_watch(m->sqlite_path, watch_interval_ms(m), sqlite_wake, sqlite_pause, m);
        return NULL;
    }
    for (;;) {
        struct pollfd p[2];
        PGnotify *n;
        int got = 0;
        if (!conn) {
            PGresult *r;
            conn = connect_db(m);
            r = PQstatus(conn) == CONNECTION_OK ? PQexec(conn, "LISTEN lockstep_notes") : NULL;
            if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                PQclear(r);
                PQfinish(conn);
                conn = NULL;
                if (listener_pause(m, backoff)) break;
                backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
                continue;
            }
            PQclear(r);
            if (lost) log_info("messenger: listening to the shared database again");
            backoff = 100;
            lost = 0;
            atomic_store(&m->woken_blind, 1); /* what was published while nobody listened */
            atomic_store(&m->woken_stale, 1);
            event_active(m->kick_ev, EV_READ, 0);
        }
        p[0] = (struct pollfd){PQsocket(conn), POLLIN, 0};
        p[1] = (struct pollfd){m->stop_pipe[0], POLLIN, 0};
        if (poll(p, 2, -1) < 0 && errno != EINTR) break;
        if (p[1].revents) break;
        if (!p[0].revents) continue;
        if (!PQconsumeInput(conn) || PQstatus(conn) != CONNECTION_OK) {
            log_warn("messenger: lost the listening connection to the shared database "
                     "(polling meanwhile): %s",
                     PQerrorMessage(conn));
            PQfinish(conn);
            conn = NULL;
            lost = 1;
            continue;
        }
        while ((n = PQnotifies(conn))) {
            int64_t id = wake_payload(m, n->extra), seen;
            got = 1;
            if (id <= 0) {
                atomic_store(&m->woken_blind, 1); /* an older trigger's, or someone else's */
            } else {
                seen = atomic_load(&m->woken_id);
                while (id > seen && !atomic_compare_exchange_weak(&m->woken_id, &seen, id)) {}
            }
            PQfreemem(n);
        }
        if (got) event_active(m->kick_ev, EV_READ, 0);
    }
    PQfinish(conn);
    return NULL;
}

/* ---------------------------------------------------------------- the watermark */

/* The publishing lock's holders now, as ",vxid,vxid,"; NULL (err set) on failure. */
static char *
lock_holders(PGconn *conn, struct ls_error *err)
{
    PGresult *r = pg_exec(conn, err, HOLDERS_SQL, 0, NULL);
    char *s;
    if (!r) return NULL;
    if (!(s = malloc(strlen(PQgetvalue(r, 0, 0)) + 3))) ls_error_set(err, LS_ENOMEM, NULL);
    else sprintf(s, ",%s,", PQgetvalue(r, 0, 0));
    PQclear(r);
    return s;
}

static int
holds_any(const char *now, const char *then)
{
    for (const char *p = then + 1; *p; p = strchr(p, ',') + 1) {
        char one[64];
        size_t n = strcspn(p, ",");
        if (n == 0 || n + 3 > sizeof one) continue;
        snprintf(one, sizeof one, ",%.*s,", (int)n, p);
        if (strstr(now, one)) return 1;
    }
    return 0;
}

/* Raises the watermark with every probe whose holders have all let go (the probe mutex held). */
static void
settle_locked(struct pgmsg *m, const char *now)
{
    for (int i = 0; i < m->nprobes;) {
        struct probe *p = &m->probes[i];
        if (holds_any(now, p->holders)) {
            i++;
            continue;
        }
        if (p->last_id > m->watermark) m->watermark = p->last_id;
        free(p->holders);
        m->probes[i] = m->probes[--m->nprobes];
    }
}

int
pgmsg_probe(struct pgmsg *m, struct msgdb_conn *db, struct ls_error *err)
{
    PGconn *conn = db->pg;
    PGresult *r;
    struct probe p;
    if (db->lite) return 0; /* ids commit in order there (docs/messenger.md): no watermark */
    /* two statements, in this order: the holders are read after the sequence */
    if (!(r = pg_exec(conn, err, "SELECT last_value, is_called FROM lockstep_notes_id", 0, NULL)))
        return -1;
    p.last_id = pg_i64(r, 0, 0) - (strcmp(PQgetvalue(r, 0, 1), "t") == 0 ? 0 : 1);
    PQclear(r);
    if (!(p.holders = lock_holders(conn, err))) return -1;
    pthread_mutex_lock(&m->probe_mu);
    /* the earlier probes whose holders have gone raise the watermark: these holders were read
     * after theirs (and this probe settles at once when nobody held the lock) */
    settle_locked(m, p.holders);
    if (strcmp(p.holders, ",,") == 0) {
        if (p.last_id > m->watermark) m->watermark = p.last_id;
        free(p.holders);
    } else {
        if (m->nprobes == PROBES) { /* the newest gives way: the oldest settle first */
            free(m->probes[PROBES - 1].holders);
            m->nprobes--;
        }
        m->probes[m->nprobes++] = p;
    }
    pthread_mutex_unlock(&m->probe_mu);
    return 0;
}

void
pgmsg_gap_seen(struct pgmsg *m)
{
    atomic_store(&m->gap_seen, 1);
}

int64_t
pgmsg_watermark(struct pgmsg *m)
{
    int64_t w;
    if (m->naive || m->sqlite_path) return INT64_MAX;
    pthread_mutex_lock(&m->probe_mu);
    w = m->watermark;
    pthread_mutex_unlock(&m->probe_mu);
    return w;
}

/* ---------------------------------------------------------------- looking for the head */

static int
head_run(struct pgmsg *m, struct msgdb_conn *conn, struct pg_job *j)
{
    struct msgdb_res *r =
        msgdb_exec(conn, &j->err, "SELECT coalesce(max(id), 0) FROM lockstep_notes", 0, NULL);
    if (!r) return -1;
    m->found_head = msgdb_i64(r, 0, 0);
    msgdb_clear(r);
    /* The watermark matters only to a reader stopped at a gap, which probed then: a look probes
     * (three statements, one of them on pg_locks) only after that, to settle it. Rows that
     * follow one another are delivered without it, so a live site pays one statement a look. */
    if (!atomic_exchange(&m->gap_seen, 0)) return 0;
    return pgmsg_probe(m, conn, &j->err);
}

static void look(struct pgmsg *m);

static void
fire_waiters(struct pgmsg *m, int all)
{
    struct pg_waiter *due = NULL, *w, *next;
    for (w = m->waiters; w; w = next) { /* unlinked first: a fire may wait again */
        next = w->next;
        if (!all && w->cursor >= m->head) continue;
        pgmsg_cancel_wait(m, w);
        w->next = due;
        due = w;
    }
    for (w = due; w; w = next) {
        next = w->next;
        w->next = NULL;
        w->fire(w);
    }
}

static void
head_done(struct pg_job *j)
{
    struct pgmsg *m = (struct pgmsg *)((char *)j - offsetof(struct pgmsg, head_job));
    m->looking = 0;
    if (!j->err.code && !atomic_load(&j->cancelled) && m->found_head > m->head)
        m->head = m->found_head;
    if (!m->stopping) fire_waiters(m, 0);
    if (m->look_again) look(m);
}

static void
look(struct pgmsg *m)
{
    if (m->stopping) return;
    if (m->looking) {
        m->look_again = 1;
        return;
    }
    m->look_again = 0;
    m->head_job.run = head_run;
    m->head_job.done = head_done;
    m->head_job.idempotent = 1;
    if (pgmsg_submit(m, &m->head_job) == 0) m->looking = 1;
}

void
pgmsg_kick(struct pgmsg *m)
{
    look(m);
}

void
pgmsg_committed(struct pgmsg *m, int64_t id)
{
    if (m->stopping) return;
    /* a reader waits at a gap: the look settles the watermark for it (head_run) */
    if (atomic_load(&m->gap_seen)) {
        look(m);
        return;
    }
    if (id <= m->head) return;
    m->head = id;
    fire_waiters(m, 0);
}

static void
recent_forget(struct pgmsg *m)
{
    for (int i = 0; i < RECENT; i++) {
        json_decref(m->recent[i].payload);
        memset(&m->recent[i], 0, sizeof m->recent[i]);
    }
}

void
pgmsg_recent_put(struct pgmsg *m, int64_t id, int64_t ts, const char *channel, json_t *payload)
{
    struct recent *r = &m->recent[id & (RECENT - 1)];
    if (id <= 0 || !channel || !payload) return;
    json_decref(r->payload);
    r->id = id;
    r->ts = ts;
    snprintf(r->channel, sizeof r->channel, "%s", channel);
    r->payload = json_incref(payload);
}

int
pgmsg_recent(struct pgmsg *m, int64_t id, int64_t *ts, const char **channel, json_t **payload)
{
    struct recent *r = &m->recent[id & (RECENT - 1)];
    if (id <= 0 || r->id != id) return 0;
    *ts = r->ts;
    *channel = r->channel;
    *payload = r->payload;
    return 1;
}

/* The loop takes the rows the listener got: they are committed (a NOTIFY goes after its commit
 * is visible), and immutable. */
static void
recent_take(struct pgmsg *m)
{
    json_t *rows, *row;
    size_t i;
    pthread_mutex_lock(&m->arrived_mu);
    rows = m->arrived;
    m->arrived = NULL;
    pthread_mutex_unlock(&m->arrived_mu);
    if (atomic_exchange(&m->woken_stale, 0)) recent_forget(m); /* the database may be another */
    json_array_foreach(rows, i, row) {
        pgmsg_recent_put(m, json_integer_value(json_array_get(row, 0)),
                         json_integer_value(json_array_get(row, 1)),
                         json_string_value(json_array_get(row, 2)), json_array_get(row, 3));
    }
    json_decref(rows);
}

/* The listener heard a wake-up: its id is committed, no need to ask for the head. */
static void
on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct pgmsg *m = arg;
    int64_t id = atomic_load(&m->woken_id);
    recent_take(m);
    if (atomic_exchange(&m->woken_blind, 0)) look(m);
    else pgmsg_committed(m, id);
}

void
pgmsg_wait(struct pgmsg *m, struct pg_waiter *w)
{
    if (w->waiting) return;
    if (m->stopping) { /* answered now: nothing more will come */
        w->fire(w);
        return;
    }
    w->waiting = 1;
    w->prev = NULL;
    w->next = m->waiters;
    if (m->waiters) m->waiters->prev = w;
    m->waiters = w;
}

void
pgmsg_cancel_wait(struct pgmsg *m, struct pg_waiter *w)
{
    if (!w->waiting) return;
    if (w->prev) w->prev->next = w->next;
    else m->waiters = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->waiting = 0;
}

/* ---------------------------------------------------------------- retention */

/*
 * One server at a time cuts. PostgreSQL: a transaction-level advisory lock; the others skip their
 * turn. SQLite: BEGIN IMMEDIATE takes the file's only write lock, so the cuts are serial by
 * themselves; a server that waited for another's finds nothing more to cut. The cut is a prefix
 * of ids: up to the newest notification older than the age, or beyond which the payloads exceed
 * the size. The floor (lockstep_meta) remembers the highest id removed: a consumer whose position
 * is below it gets a reset.
 */
static int
prune_run(struct pgmsg *m, struct msgdb_conn *conn, struct pg_job *j)
{
    char min_ts[24], bytes[24], cut_s[24];
    const char *v[1];
    int64_t cut = 0, removed;
    struct msgdb_res *r;
    snprintf(min_ts, sizeof min_ts, "%lld", (long long)(m->age_ms ? ls_now_ms() - m->age_ms : 0));
    snprintf(bytes, sizeof bytes, "%lld", (long long)m->bytes);
    if (msgdb_is_sqlite(conn)) {
        if (msgdb_run(conn, &j->err, "BEGIN IMMEDIATE", 0, NULL)) return -1;
    } else {
        if (msgdb_run(conn, &j->err, "BEGIN", 0, NULL) ||
            !(r = msgdb_exec(conn, &j->err, "SELECT pg_try_advisory_xact_lock(" LOCK_RETENTION ")",
                             0, NULL)))
            return -1;
        if (strcmp(msgdb_text(r, 0, 0), "t") != 0) { /* another server is cutting now */
            msgdb_clear(r);
            return msgdb_run(conn, &j->err, "ROLLBACK", 0, NULL);
        }
        msgdb_clear(r);
    }
    if (m->age_ms) {
        v[0] = min_ts;
        if (!(r = msgdb_exec(conn, &j->err,
                             "SELECT max(id) FROM lockstep_notes WHERE ts < CAST($1 AS bigint)", 1,
                             v)))
            return -1;
        cut = msgdb_i64(r, 0, 0);
        msgdb_clear(r);
    }
    if (m->bytes) {
        int64_t by_size;
        v[0] = bytes;
        if (!(r = msgdb_exec(
                  conn, &j->err,
                  DB_SQL(conn,
                         "SELECT max(id) FROM (SELECT id, sum(octet_length(payload::text)) "
                         "OVER (ORDER BY id DESC) AS total FROM lockstep_notes) t "
                         "WHERE total > CAST($1 AS bigint)",
                         "SELECT max(id) FROM (SELECT id, sum(length(CAST(payload AS "
                         "blob))) OVER (ORDER BY id DESC) AS total FROM lockstep_notes) t "
                         "WHERE total > CAST($1 AS bigint)"),
                  1, v)))
            return -1;
        by_size = msgdb_i64(r, 0, 0);
        msgdb_clear(r);
        if (by_size > cut) cut = by_size;
    }
    if (cut <= 0) return msgdb_run(conn, &j->err, "COMMIT", 0, NULL);
    snprintf(cut_s, sizeof cut_s, "%lld", (long long)cut);
    v[0] = cut_s;
    if (!(r = msgdb_exec(conn, &j->err, "DELETE FROM lockstep_notes WHERE id <= CAST($1 AS bigint)",
                         1, v)))
        return -1;
    removed = msgdb_changed(r);
    msgdb_clear(r);
    if (msgdb_run(
            conn, &j->err,
            "UPDATE lockstep_meta SET value = CASE WHEN value > CAST($1 AS bigint) THEN value "
            "ELSE CAST($1 AS bigint) END WHERE key = 'floor'",
            1, v) ||
        msgdb_run(conn, &j->err, "COMMIT", 0, NULL))
        return -1;
    if (removed) log_info("notification retention removed %lld old notifications (up to id %lld)",
                          (long long)removed, (long long)cut);
    return 0;
}

static void
prune_done(struct pg_job *j)
{
    struct pgmsg *m = (struct pgmsg *)((char *)j - offsetof(struct pgmsg, prune_job));
    m->pruning = 0;
    if (j->err.code && !atomic_load(&j->cancelled))
        log_warn("notification retention: %s", j->err.msg);
}

static void
on_retention(evutil_socket_t fd, short what, void *arg)
{
    struct pgmsg *m = arg;
    if (m->pruning || m->stopping || (!m->age_ms && !m->bytes)) return;
    m->prune_job.run = prune_run;
    m->prune_job.done = prune_done;
    m->prune_job.idempotent = 1;
    if (pgmsg_submit(m, &m->prune_job) == 0) m->pruning = 1;
}

/* ---------------------------------------------------------------- the site registry */

/*
 * Every SITE_HEARTBEAT_MS each server writes its own record (as PING carries it) and reads
 * everyone's: GET /v1/nodes?all=1 then lists the servers of the site that share the database,
 * though none of them talks to another. A record is active while fresh, stale after
 * SITE_STALE_MS (a missed heartbeat or two), down after --heartbeat-timeout, forgotten after
 * SITE_FORGET_MS.
 */
static int
site_run(struct pgmsg *m, struct msgdb_conn *conn, struct pg_job *j)
{
    char forget[24], now[24];
    struct msgdb_res *r;
    json_decref(m->site_found);
    m->site_found = NULL;
    /* SQLite: one host, one clock, this server's */
    snprintf(now, sizeof now, "%lld", (long long)ls_now_ms());
    if (msgdb_run(
            conn, &j->err,
            DB_SQL(conn,
                   "INSERT INTO lockstep_nodes VALUES ($1, $2, (extract(epoch FROM "
                   "clock_timestamp()) * 1000)::bigint) ON CONFLICT (key) DO UPDATE SET rec = "
                   "EXCLUDED.rec, heard = EXCLUDED.heard",
                   "INSERT INTO lockstep_nodes VALUES ($1, $2, CAST($3 AS bigint)) ON CONFLICT "
                   "(key) DO UPDATE SET rec = excluded.rec, heard = excluded.heard"),
            msgdb_is_sqlite(conn) ? 3 : 2, (const char *const[]){m->site_key, m->site_self, now}))
        return -1;
    snprintf(forget, sizeof forget, "%lld", (long long)SITE_FORGET_MS);
    if (!(r = msgdb_exec(
              conn, &j->err,
              DB_SQL(conn,
                     "SELECT rec::text, age FROM (SELECT rec, (extract(epoch FROM "
                     "clock_timestamp()) * 1000)::bigint - heard AS age FROM "
                     "lockstep_nodes) t WHERE age < $1::bigint LIMIT 1024",
                     "SELECT rec, age FROM (SELECT rec, CAST($2 AS bigint) - heard AS age "
                     "FROM lockstep_nodes) t WHERE age < CAST($1 AS bigint) LIMIT 1024"),
              msgdb_is_sqlite(conn) ? 2 : 1, (const char *const[]){forget, now})))
        return -1;
    m->site_found = json_array();
    for (int i = 0; i < msgdb_rows(r); i++) {
        json_t *rec = json_loads(msgdb_text(r, i, 0), 0, NULL);
        if (rec) json_array_append_new(m->site_found, json_pack("[o,I]", rec, msgdb_i64(r, i, 1)));
    }
    msgdb_clear(r);
    return 0;
}

static void
site_done(struct pg_job *j)
{
    struct pgmsg *m = (struct pgmsg *)((char *)j - offsetof(struct pgmsg, site_job));
    m->site_busy = 0;
    free(m->site_key);
    free(m->site_self);
    m->site_key = m->site_self = NULL;
    if (j->err.code || atomic_load(&j->cancelled) || !m->site_found) return;
    json_decref(m->site_known);
    m->site_known = m->site_found;
    m->site_found = NULL;
}

static void
on_site(evutil_socket_t fd, short what, void *arg)
{
    struct pgmsg *m = arg;
    json_t *self;
    const char *id, *name;
    if (m->site_busy || m->stopping || !(self = site_self_json(m->srv))) return;
    id = json_string_value(json_object_get(self, "node_id"));
    name = json_string_value(json_object_get(self, "name"));
    m->site_key = strdup(id && *id ? id : name ? name : "?");
    m->site_self = json_dumps(self, JSON_COMPACT);
    json_decref(self);
    m->site_job.run = site_run;
    m->site_job.done = site_done;
    m->site_job.idempotent = 1;
    if (!m->site_key || !m->site_self || pgmsg_submit(m, &m->site_job)) {
        free(m->site_key);
        free(m->site_self);
        m->site_key = m->site_self = NULL;
        return;
    }
    m->site_busy = 1;
}

void
pgmsg_site(struct server *srv, struct site_set *out)
{
    struct pgmsg *m = srv->pgmsg;
    size_t i;
    json_t *e;
    json_array_foreach(m->site_known, i, e) {
        int64_t age = json_integer_value(json_array_get(e, 1));
        int state = age <= SITE_STALE_MS + SITE_HEARTBEAT_MS ? SITE_ACTIVE
                    : age <= srv->cfg.heartbeat_timeout_ms   ? SITE_STALE
                                                             : SITE_DOWN;
        site_set_add_json(out, json_array_get(e, 0), age, state, 1);
    }
}

/* ---------------------------------------------------------------- start and stop */

static void
on_poll(evutil_socket_t fd, short what, void *arg)
{
    look(arg);
}

static struct timeval
tv_of(int64_t ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

int
pgmsg_check(const struct config *cfg, struct ls_error *err)
{
    const char *path = msgdb_sqlite_path(cfg->messenger);
    struct msgdb_conn probe = {0};
    if (!path) return 0;
    if (msgdb_sqlite_open(path, strcmp(cfg->sync, "full") == 0, &probe, err)) return -1;
    msgdb_sqlite_close(&probe);
    return 0;
}

int
pgmsg_start(struct server *srv, struct ls_error *err)
{
    struct pgmsg *m = calloc(1, sizeof *m);
    const char *naive = getenv("LOCKSTEP_PG_NAIVE");
    struct timeval poll_tv, ret_tv, site_tv;
    if (!m || !(m->url = strdup(srv->cfg.messenger))) {
        free(m);
        return ls_error_set(err, LS_ENOMEM, "out of memory");
    }
    srv->pgmsg = m;
    m->srv = srv;
    m->sqlite_path = msgdb_sqlite_path(m->url);
    m->sync_full = strcmp(srv->cfg.sync, "full") == 0;
    m->naive = naive && strcmp(naive, "1") == 0;
    m->age_ms = srv->notify_age_ms;
    m->bytes = srv->notify_bytes;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    pthread_cond_init(&m->cv_urgent, NULL);
    pthread_mutex_init(&m->probe_mu, NULL);
    pthread_mutex_init(&m->arrived_mu, NULL);
    m->queue_tail = &m->queue;
    m->urgent_tail = &m->urgent;
    m->finished_tail = &m->finished;
    m->stop_pipe[0] = m->stop_pipe[1] = -1;
    if (pipe2(m->stop_pipe, O_CLOEXEC) ||
        !(m->wake = event_new(srv->base, -1, 0, on_finished, m)) ||
        !(m->kick_ev = event_new(srv->base, -1, 0, on_kick, m)) ||
        !(m->poll_timer = event_new(srv->base, -1, EV_PERSIST, on_poll, m)) ||
        !(m->retention_timer = event_new(srv->base, -1, EV_PERSIST, on_retention, m)) ||
        !(m->site_timer = event_new(srv->base, -1, EV_PERSIST, on_site, m)))
        return ls_error_set(err, LS_ENOMEM, "cannot start the messenger's database threads");
    for (; m->nthreads < PGMSG_THREADS; m->nthreads++)
        if (pthread_create(&m->threads[m->nthreads], NULL, worker_main, m))
            return ls_error_set(err, LS_ENOMEM, "cannot start the messenger's database threads");
    if (pthread_create(&m->listener, NULL, listener_main, m))
        return ls_error_set(err, LS_ENOMEM, "cannot start the messenger's listener");
    m->listening = 1;
    /* SQLite: the watch is the poll; this look only covers a watch that cannot open the file */
    poll_tv = tv_of(m->sqlite_path ? 5000 : watch_interval_ms(m));
    ret_tv = tv_of(srv->retention_interval_ms);
    event_add(m->poll_timer, &poll_tv);
    event_add(m->retention_timer, &ret_tv);
    site_tv = tv_of(SITE_HEARTBEAT_MS);
    event_add(m->site_timer, &site_tv);
    pgmsg_reckon_start(srv);
    look(m);
    on_site(-1, 0, m); /* in the registry from the start */
    log_info("messenger: notifications and consumers in the shared %s database%s%s (%s every "
             "%lld ms%s)",
             m->sqlite_path ? "SQLite" : "PostgreSQL", m->sqlite_path ? " " : "",
             m->sqlite_path ? m->sqlite_path : "", m->sqlite_path ? "watched" : "poll",
             (long long)watch_interval_ms(m),
             m->naive ? "; LOCKSTEP_PG_NAIVE: no watermark, for tests" : "");
    return 0;
}

/* The threads stop (queued jobs end cancelled, their done() runs), the waiters are answered. */
void
pgmsg_stop(struct server *srv)
{
    struct pgmsg *m = srv->pgmsg;
    if (!m || m->stopping) return;
    m->stopping = 1;
    pgmsg_reckon_stop(srv);
    if (m->poll_timer) event_del(m->poll_timer);
    if (m->retention_timer) event_del(m->retention_timer);
    if (m->site_timer) event_del(m->site_timer);
    if (m->listening) {
        if (write(m->stop_pipe[1], "x", 1) < 0) log_warn("messenger: cannot stop the listener");
        pthread_join(m->listener, NULL);
        m->listening = 0;
    }
    pthread_mutex_lock(&m->mu);
    m->stop = 1;
    for (struct pg_job *j = m->queue; j; j = j->next) atomic_store(&j->cancelled, 1);
    for (struct pg_job *j = m->urgent; j; j = j->next) atomic_store(&j->cancelled, 1);
    pthread_cond_broadcast(&m->cv);
    pthread_cond_broadcast(&m->cv_urgent);
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; i < m->nthreads; i++) pthread_join(m->threads[i], NULL);
    m->nthreads = 0;
    if (m->wake) on_finished(-1, 0, m);
    fire_waiters(m, 1);
}

void
pgmsg_free(struct server *srv)
{
    struct pgmsg *m = srv->pgmsg;
    if (!m) return;
    pgmsg_stop(srv);
    if (m->wake) event_free(m->wake);
    if (m->kick_ev) event_free(m->kick_ev);
    if (m->poll_timer) event_free(m->poll_timer);
    if (m->retention_timer) event_free(m->retention_timer);
    if (m->site_timer) event_free(m->site_timer);
    json_decref(m->site_found);
    json_decref(m->site_known);
    for (int i = 0; i < 2; i++)
        if (m->stop_pipe[i] >= 0) close(m->stop_pipe[i]);
    pthread_cond_destroy(&m->cv);
    pthread_cond_destroy(&m->cv_urgent);
    pthread_mutex_destroy(&m->mu);
    for (int i = 0; i < m->nprobes; i++) free(m->probes[i].holders);
    pthread_mutex_destroy(&m->probe_mu);
    pthread_mutex_destroy(&m->arrived_mu);
    json_decref(m->arrived);
    recent_forget(m);
    pgmsg_reckon_free(srv);
    free(m->url);
    free(m);
    srv->pgmsg = NULL;
}
