/*
 * txn.c - transactions and savepoints: the writer brackets a group of requests in
 * store_begin/store_commit and each request in a savepoint, so a request is all or nothing and
 * many share one fsync. SQLite may roll a whole transaction back by itself; this file notices.
 *
 * Not for: what a transaction does (apply.c and the others).
 */
#include "core/store/store_int.h"

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
    return db_exec(st, "BEGIN IMMEDIATE", err);
}

int
store_commit(struct store *st, struct ls_error *err)
{
    sqlite3_stmt *s = db_stmt(st, S_META_SET_SEQ);
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
        db_done(s);
        if (rc != SQLITE_DONE) {
            db_error(st, rc, err, "record seq");
            store_rollback(st);
            return err ? err->code : LS_EIO;
        }
    }
    rc = sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        db_error(st, rc, err, "commit");
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
                     (long long)ls_now_ms());
            if (db_exec(st, sql, NULL) && store_in_transaction(st))
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
    if (db_load_position(st)) {
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
    return db_exec(st, "SAVEPOINT req", NULL);
}

int
store_savepoint_release(struct store *st)
{
    int rc;
    if (!store_in_transaction(st)) return LS_EIO;
    if ((rc = db_exec(st, "RELEASE req", NULL))) return rc;
    return store_in_transaction(st) ? 0 : LS_EIO;
}

int
store_savepoint_rollback(struct store *st)
{
    int rc = LS_EIO;
    if (store_in_transaction(st) && (rc = db_exec(st, "ROLLBACK TO req", NULL)) == 0)
        db_exec(st, "RELEASE req", NULL); /* a savepoint left behind goes at the commit */
    st->seq = st->seq_at_savepoint;
    st->log_cum = st->log_cum_at_savepoint;
    st->nlogged = st->nlogged_at_savepoint;
    if (st->tail) tail_undo(st->tail, st->tail_mark_at_savepoint);
    return rc == 0 && store_in_transaction(st) ? 0 : LS_EIO;
}
