/*
 * log.c - the change log as replication reads it: entries with the data to apply them
 * (version rows found by item id, which survives moves), positions in bytes and time, retention
 * by age and size, and truncation for a resync.
 *
 * Not for: the change feed without data (read.c).
 */
#include "core/store/store_int.h"

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
        e.flags = ((sqlite3_column_int(s, 5) & LOG_PUBLISHED) ? REC_PUBLISHED : 0) |
                  ((sqlite3_column_int(s, 5) & LOG_MORE) ? REC_MORE : 0);
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
 * seq, so the cut is found by bisection over seq with point look-ups, never a scan. The floor
 * rises to the cut, so that a consumer behind it is told (a reset), never silently skipped.
 */
int
store_log_retain(struct store *st, int64_t min_ts, int64_t max_bytes, int notify_only,
                 int64_t *removed, struct ls_error *err)
{
    /* The log keeps its last entry (its first seq stays meaningful); notifications may all go. */
    int64_t lo = store_log_first_seq(st), hi = st->seq + (notify_only ? 1 : 0), cut;
    const char *floor = notify_only ? FLOOR_NOTIFY : FLOOR_LOG;
    char sql[120];
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
    if (cut <= store_log_first_seq(st) || cut - 1 <= store_floor(st, floor)) return 0;
    snprintf(sql, sizeof sql, "DELETE FROM log WHERE %sseq<%lld", notify_only ? "op=7 AND " : "",
             (long long)cut);
    if ((rc = db_exec(st, sql, err))) return rc;
    *removed = sqlite3_changes(st->db);
    return store_raise_floor(st, floor, cut - 1, err);
}

int64_t
store_log_seq_before(struct store *st, int64_t ts)
{
    int64_t lo = store_log_first_seq(st), hi = 0, found, t;
    sqlite3_stmt *s;
    if (lo <= 0) return 0;
    if (sqlite3_prepare_v2(st->db, "SELECT max(seq) FROM log", -1, &s, NULL)) return 0;
    if (sqlite3_step(s) == SQLITE_ROW) hi = sqlite3_column_int64(s, 0) + 1;
    sqlite3_finalize(s);
    while (lo < hi) { /* the first seq at or after ts */
        int64_t mid = lo + (hi - lo) / 2;
        if (log_point(st, mid, &found, NULL, &t)) {
            hi = mid;
            continue;
        }
        if (t >= ts) hi = mid;
        else lo = found + 1;
    }
    return hi - 1;
}

/* A resync from seq: the log after it is forgotten, to be received again. */
int
store_truncate_log(struct store *st, int64_t seq, struct ls_error *err)
{
    char sql[300];
    /* What follows seq comes again, maybe from another history (a fork): readers beyond it
     * start again from there (LOG_GEN, GEN_START). */
    snprintf(sql, sizeof sql,
             "DELETE FROM log WHERE seq>%lld;"
             "INSERT OR IGNORE INTO meta VALUES('log_gen', 0);"
             "UPDATE meta SET value=value+1 WHERE key='log_gen';"
             "INSERT OR REPLACE INTO meta VALUES('gen_start', %lld);",
             (long long)seq, (long long)seq);
    if (st->tail) tail_break(st->tail);
    return db_exec(st, sql, err);
}
