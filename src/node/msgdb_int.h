/*
 * msgdb_int.h - what pgmsg.c and msgdb_sqlite.c share about a connection to the messenger's
 * shared database (pgmsg.h's struct msgdb_conn and struct msgdb_res): one of the two handles is
 * set.
 *
 * Not for: anything outside those two files (http/notify_pg.c sees them opaque).
 */
#ifndef LS_MSGDB_INT_H
#define LS_MSGDB_INT_H

#include <libpq-fe.h>
#include <sqlite3.h>

#include "node/pgmsg.h"

#define MSGDB_STMT_CACHE 48

struct msgdb_conn {
    PGconn *pg;
    sqlite3 *lite;
    /* SQLite: the statements prepared so far, by their text (msgdb_sqlite.c) */
    sqlite3_stmt *stmts[MSGDB_STMT_CACHE];
    int nstmts;
    /* PostgreSQL: the texts prepared on this connection so far, as "m0", "m1"... (pgmsg.c) */
    char *pg_sql[MSGDB_STMT_CACHE];
    int npg, pg_unprepared; /* unprepared: a pooler in between forgot them */
};

/* PostgreSQL's result as it is; SQLite's rows copied out as text (NULL: a NULL). */
struct msgdb_res {
    PGresult *pg;
    int rows, cols;
    char **cells;
    int64_t changed;
};

/* ---- msgdb_sqlite.c: `--messenger sqlite:PATH` ---- */
/* The path of a sqlite: URL, or NULL when the URL is not one. */
const char *msgdb_sqlite_path(const char *url);
/* Opens PATH (created if absent) with this server's settings, checks it is a messenger database
 * of a version this binary knows (creating the schema in a new file): 0, or -1 and err set. */
int msgdb_sqlite_open(const char *path, int sync_full, struct msgdb_conn *out,
                      struct ls_error *err);
struct msgdb_res *msgdb_sqlite_exec(struct msgdb_conn *conn, struct ls_error *err, const char *sql,
                                    int n, const char *const *values);
/* Ends a transaction a failed job left open. */
void msgdb_sqlite_abort(struct msgdb_conn *conn);
void msgdb_sqlite_close(struct msgdb_conn *conn);
/* The listener's loop for SQLite: reads PRAGMA data_version when the file is written and every
 * interval_ms, and calls wake(arg) when another connection committed. pause(arg, fd, ms) waits
 * ms, or less once fd (-1: none) is readable, and returns 1 to stop the loop. */
void msgdb_sqlite_watch(const char *path, int64_t interval_ms, void (*wake)(void *arg),
                        int (*pause)(void *arg, int fd, int ms), void *arg);

#endif
