/*
 * pgmsg.h - the messenger's shared-database mode (`lockstep serve --messenger postgres://...` or
 * `--messenger sqlite:PATH`, docs/messenger.md): notifications and consumers live in one
 * database that every server of the site uses, instead of in each store's change log.
 *
 * pgmsg.c owns the database side: the connection threads (the event loop never waits for the
 * database), the listener (PostgreSQL's LISTEN/NOTIFY, or msgdb_sqlite.c's watch of the file,
 * wakes the servers; polling covers a missed wake-up), the schema, retention, the delivery
 * watermark (below), and the waiters of long polls and event streams. http/notify_pg.c answers
 * the HTTP API with it, through the small statement interface below, the same for both
 * backends: only the SQL text differs where the two dialects do (DB_SQL).
 *
 * Not for: the native messenger (messenger.c, store/notify.c).
 */
#ifndef LS_PGMSG_H
#define LS_PGMSG_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "common/err.h"

struct server;
struct pgmsg;

/* ---- lifecycle (server.c): start before the HTTP API, stop in shutdown_begin, free last ---- */
/* Before serve creates anything: an SQLite file that cannot be the messenger's database (bad
 * path, another file, a newer schema) is refused with its reason; a new one gets the schema.
 * Blocks: called before the loop runs, as the store is opened. PostgreSQL's is checked later. */
struct config;
int pgmsg_check(const struct config *cfg, struct ls_error *err);
int pgmsg_start(struct server *srv, struct ls_error *err);
void pgmsg_stop(struct server *srv);
void pgmsg_free(struct server *srv);
/* /v1/status's "messenger" on a server in this mode (http/notify_pg.c) */
json_t *pgmsg_status_json(struct server *srv);
/* The consumers' states, reckoned every few seconds (http/notify_pg.c; started and stopped by
 * pgmsg.c with the rest). */
void pgmsg_reckon_start(struct server *srv);
void pgmsg_reckon_stop(struct server *srv);
void pgmsg_reckon_free(struct server *srv);
/* GET /v1/nodes?all=1: the servers that share the database, as each last wrote its record */
struct site_set;
void pgmsg_site(struct server *srv, struct site_set *out);
/* http/notify_pg.c's own state, kept here */
void **pgmsg_views(struct pgmsg *m);

/* ---- one connection to the shared database, PostgreSQL or SQLite ---- */
struct msgdb_conn;
struct msgdb_res;
/* One statement with text parameters ($1, $2, ... in both dialects); NULL (err set) on failure,
 * else its rows (none for a statement that returns none) and the count of rows it changed. */
struct msgdb_res *msgdb_exec(struct msgdb_conn *conn, struct ls_error *err, const char *sql, int n,
                             const char *const *values);
/* db_exec, then db_clear: 0 or -1 */
int msgdb_run(struct msgdb_conn *conn, struct ls_error *err, const char *sql, int n,
              const char *const *values);
int msgdb_rows(const struct msgdb_res *r);
const char *msgdb_text(const struct msgdb_res *r, int row, int col); /* "" for NULL */
int msgdb_isnull(const struct msgdb_res *r, int row, int col);
int64_t msgdb_i64(const struct msgdb_res *r, int row, int col); /* NULL as 0 */
int64_t msgdb_changed(const struct msgdb_res *r);               /* by an INSERT, UPDATE or DELETE */
void msgdb_clear(struct msgdb_res *r);
/* 1: the connection is SQLite's. DB_SQL picks a statement's text in the connection's dialect. */
int msgdb_is_sqlite(const struct msgdb_conn *conn);
#define DB_SQL(conn, pg, lite) (msgdb_is_sqlite(conn) ? (lite) : (pg))

/* ---- work on a database thread ---- */
/*
 * A job runs on one of the connection threads with that thread's connection (connected when run
 * is called), then done() runs on the loop, whatever happened (err.code set on failure, or
 * cancelled set when the server stopped first). An idempotent job whose connection broke under
 * it runs once more on a new connection; others fail (a publish must not be applied twice).
 */
struct pg_job {
    struct pg_job *next;
    int (*run)(struct pgmsg *m, struct msgdb_conn *conn, struct pg_job *j);
    void (*done)(struct pg_job *j);
    int idempotent;
    /* a publish: one thread runs only these, so that a publish does not wait behind the reads
     * it will wake; the others run every job in the order they came */
    int urgent;
    uint64_t order; /* pgmsg's: the submission's number */
    atomic_int cancelled;
    struct ls_error err;
};
/* 0, or LS_EUNAVAIL when too many jobs wait or the server is stopping (j is not taken). */
int pgmsg_submit(struct pgmsg *m, struct pg_job *j);

/* ---- waiting for notifications (the loop) ---- */
/*
 * A long poll or an event stream waiting for notifications after cursor: fire() runs once the
 * database holds a notification above it (found by a wake-up, a poll, or a publish by this
 * server), or when the server stops. A waiter waits once per pgmsg_wait.
 */
struct pg_waiter {
    struct pg_waiter *prev, *next;
    int64_t cursor;
    void (*fire)(struct pg_waiter *w);
    void *arg;
    int waiting;
};
void pgmsg_wait(struct pgmsg *m, struct pg_waiter *w);
void pgmsg_cancel_wait(struct pgmsg *m, struct pg_waiter *w);
/* Something may have been published: look now (once, however many ask meanwhile). */
void pgmsg_kick(struct pgmsg *m);
/* Notifications up to id are committed (a publish's reply, a wake-up's payload): the waiters
 * below it fire without a look for the head (unless a reader waits at a gap: then a look). */
void pgmsg_committed(struct pgmsg *m, int64_t id);
/* A notification a wake-up carried (the loop keeps the last ones): 1 and its fields (borrowed,
 * valid until the next return to the loop), or 0 when not kept. It is committed. */
int pgmsg_recent(struct pgmsg *m, int64_t id, int64_t *ts, const char **channel,
                 json_t **payload);
/* Keeps a committed notification for pgmsg_recent (the loop; payload is not taken). */
void pgmsg_recent_put(struct pgmsg *m, int64_t id, int64_t ts, const char *channel,
                      json_t *payload);
/* The highest id seen committed (0 before the first look). */
int64_t pgmsg_head(struct pgmsg *m);
struct pgmsg *pgmsg_of(struct server *srv);
int pgmsg_stopping(struct pgmsg *m);
/* "postgres" or "sqlite" (/v1/status's messenger.mode) */
const char *pgmsg_kind(struct pgmsg *m);

/* ---- on a database thread ---- */
/*
 * The delivery watermark: every id at or below it is final (committed, or never to appear) for any
 * snapshot taken after it was read. Rows are delivered in id order; a row right after the
 * previous one needs nothing, a row after a gap only once the gap is below the watermark
 * (pgmsg.c, docs/messenger.md "Shared database"). pgmsg_probe records what raises it later, and
 * raises it with the earlier probes that have settled.
 */
int64_t pgmsg_watermark(struct pgmsg *m);
int pgmsg_probe(struct pgmsg *m, struct msgdb_conn *conn, struct ls_error *err);
/* A reader stopped at a gap (and probed): the next look probes too, to settle it. */
void pgmsg_gap_seen(struct pgmsg *m);
/* Test hook (LOCKSTEP_PG_NAIVE=1): no watermark, every row is delivered as found. */
int pgmsg_naive(struct pgmsg *m);

/* retention as parsed from --notify-retention */
void pgmsg_retention(struct pgmsg *m, int64_t *age_ms, int64_t *bytes);

#endif
