/*
 * identity.c - where the store stands: meta values, the seq, the epochs and their ids, taking
 * over an upstream's identity, emptying the store for a snapshot, and promotion to a new epoch.
 *
 * Not for: creating a store's first identity (schema.c).
 */
#include "core/store/store_int.h"

/* ---------------------------------------------------------------- identity, epochs, position */

int
store_meta_get(struct store *st, const char *key, char *out, size_t n)
{
    return db_meta_text(st, key, out, n);
}

int
store_meta_set(struct store *st, const char *key, const char *value, struct ls_error *err)
{
    sqlite3_stmt *s;
    int rc;
    if (sqlite3_prepare_v2(st->db, "INSERT OR REPLACE INTO meta VALUES(?1, ?2)", -1, &s, NULL))
        return db_error(st, SQLITE_ERROR, err, "meta");
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    if (value) sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : db_error(st, rc, err, "meta");
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
    if ((rc = db_exec(st, "DELETE FROM epochs", err))) return rc;
    for (int i = 0; i < n; i++) {
        /* Ids come from the wire: only 32 hex digits are taken, else the derived one. */
        if (strlen(epochs[i].id) == 32 && strspn(epochs[i].id, "0123456789abcdef") == 32)
            memcpy(id, epochs[i].id, 33);
        else
            store_epoch_default_id(store_id, epochs[i].epoch, id);
        snprintf(sql, sizeof sql,
                 "INSERT INTO epochs(epoch, start_seq, ts, id) VALUES(%lld, %lld, %lld, '%s')",
                 (long long)epochs[i].epoch, (long long)epochs[i].start_seq, (long long)ls_now_ms(),
                 id);
        if ((rc = db_exec(st, sql, err))) return rc;
    }
    snprintf(num, sizeof num, "%lld", (long long)(n ? epochs[n - 1].epoch : 1));
    return store_meta_set(st, "epoch", num, err);
}

/* Empties the store before a snapshot is loaded into it (inside a transaction). */
int
store_reset(struct store *st, struct ls_error *err)
{
    int rc = db_exec(st,
                  "DELETE FROM items; DELETE FROM versions; DELETE FROM log;"
                  "INSERT OR REPLACE INTO meta VALUES('snapshot_pending', 1);"
                  /* another history: consumers' positions in the old one mean nothing now */
                  "INSERT OR IGNORE INTO meta VALUES('log_gen', 0);"
                  "UPDATE meta SET value=value+1 WHERE key='log_gen';"
                  "INSERT OR REPLACE INTO meta VALUES('gen_start', 0);",
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
    int64_t e = db_meta_int(st, "epoch") + 1;
    int rc;
    ls_random_hex(id, 16); /* another server promoted to the same number gets another id */
    snprintf(sql, sizeof sql,
             "INSERT INTO epochs(epoch, start_seq, ts, id) VALUES(%lld, %lld, %lld, '%s'); "
             "UPDATE meta SET value=%lld WHERE key='epoch'",
             (long long)e, (long long)st->seq, (long long)ls_now_ms(), id, (long long)e);
    if ((rc = db_exec(st, sql, err))) return rc;
    *epoch = e;
    return 0;
}
