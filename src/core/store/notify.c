/*
 * notify.c - the messenger's side of the store (docs/messenger.md): reading notifications and
 * content changes after a position for one set of channels, the floors below which entries are
 * gone (retention, a snapshot), and the consumers' durable positions.
 *
 * A notification is a log entry (op LS_OP_NOTIFY, path = channel, arg = payload); the channel
 * "content" is every other entry. Both are read from the log here, in seq order.
 *
 * Not for: appending them (apply.c) or retention's cut (log.c).
 */
#include "core/store/store_int.h"

/* ---------------------------------------------------------------- channel sets */

/* Whether a set (comma-separated names; "" is every channel) has this channel. */
int
channels_has(const char *set, const char *channel)
{
    size_t n = strlen(channel);
    if (!*set) return 1;
    for (const char *p = set; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && memcmp(p, channel, n) == 0) return 1;
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- reading */

int
store_notes(struct store *st, int64_t after, int64_t upto, const char *channels, int limit,
            int scan_max, store_note_cb cb, void *arg, int64_t *scanned, int *at_end)
{
    int want_content = channels_has(channels, LS_CONTENT_CHANNEL);
    sqlite3_stmt *s = db_stmt(st, want_content ? R_NOTES_ALL : R_NOTES_ONLY);
    int rc = SQLITE_DONE, n = 0, rows = 0;
    *scanned = after;
    *at_end = 0;
    if (!s) return LS_EIO;
    sqlite3_bind_int64(s, 1, after);
    sqlite3_bind_int(s, 2, scan_max);
    sqlite3_bind_int64(s, 3, upto);
    while (n < limit && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct ls_note e;
        memset(&e, 0, sizeof e);
        e.seq = sqlite3_column_int64(s, 0);
        e.ts = sqlite3_column_int64(s, 1);
        e.op = sqlite3_column_int(s, 2);
        *scanned = e.seq;
        rows++;
        if (e.op == LS_OP_NOTIFY) {
            e.channel = (const char *)sqlite3_column_text(s, 3);
            e.payload = (const char *)sqlite3_column_text(s, 5);
            if (!e.channel || !e.payload || !channels_has(channels, e.channel)) continue;
        } else {
            e.channel = LS_CONTENT_CHANNEL;
            e.path = (const char *)sqlite3_column_text(s, 3);
            e.version = sqlite3_column_int64(s, 4);
            if (e.op == LS_OP_MOVE) e.to = (const char *)sqlite3_column_text(s, 5);
        }
        n++;
        if (cb(arg, &e)) break;
    }
    /* A failed step is an error, never the end of the log: a position would skip what follows. */
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) n = LS_EIO;
    *at_end = rc == SQLITE_DONE && rows < scan_max; /* not merely the scan's LIMIT */
    db_done(s);
    return n;
}

struct pending {
    int64_t count, first_ts;
};

static int
pending_cb(void *arg, const struct ls_note *e)
{
    struct pending *p = arg;
    if (p->count++ == 0) p->first_ts = e->ts;
    return 0;
}

int
store_notes_pending(struct store *st, int64_t after, int64_t upto, const char *channels,
                    int64_t cap, int64_t *count, int64_t *first_ts)
{
    struct pending p = {0, 0};
    int64_t scanned;
    int at_end;
    int rc = store_notes(st, after, upto, channels, (int)cap, (int)cap * 4, pending_cb, &p,
                         &scanned, &at_end);
    *count = p.count;
    *first_ts = p.first_ts;
    return rc < 0 ? rc : 0;
}

/* ---------------------------------------------------------------- floors */

int64_t
store_floor(struct store *st, const char *which)
{
    return db_meta_int(st, which);
}

int
store_raise_floor(struct store *st, const char *which, int64_t seq, struct ls_error *err)
{
    char sql[120];
    if (seq <= db_meta_int(st, which)) return 0;
    snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO meta VALUES('%s', %lld)", which,
             (long long)seq);
    return db_exec(st, sql, err);
}

/* ---------------------------------------------------------------- consumers */

int
store_consumers(struct store *st, store_consumer_cb cb, void *arg)
{
    sqlite3_stmt *s;
    int rc;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT name, channels, position, created, acked, resets, reset_at, "
                           "gen FROM consumers ORDER BY name",
                           -1, &s, NULL))
        return LS_EIO;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct ls_consumer c;
        memset(&c, 0, sizeof c);
        c.name = (const char *)sqlite3_column_text(s, 0);
        c.channels = (const char *)sqlite3_column_text(s, 1);
        c.position = sqlite3_column_int64(s, 2);
        c.created = sqlite3_column_int64(s, 3);
        c.acked = sqlite3_column_int64(s, 4);
        c.resets = sqlite3_column_int64(s, 5);
        c.reset_at = sqlite3_column_int64(s, 6);
        c.gen = sqlite3_column_int64(s, 7);
        if (!c.name || !c.channels) continue;
        if (cb(arg, &c)) break;
    }
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : LS_EIO;
}

int
store_consumer_save(struct store *st, const struct ls_consumer *c, struct ls_error *err)
{
    sqlite3_stmt *s;
    int rc;
    if (sqlite3_prepare_v2(st->db,
                           "INSERT OR REPLACE INTO consumers(name, channels, position, created, "
                           "acked, resets, reset_at, gen) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                           -1, &s, NULL))
        return db_error(st, SQLITE_ERROR, err, "consumers");
    sqlite3_bind_text(s, 1, c->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, c->channels, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, c->position);
    sqlite3_bind_int64(s, 4, c->created);
    sqlite3_bind_int64(s, 5, c->acked);
    sqlite3_bind_int64(s, 6, c->resets);
    sqlite3_bind_int64(s, 7, c->reset_at);
    sqlite3_bind_int64(s, 8, c->gen);
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : db_error(st, rc, err, "save a consumer");
}

int
store_consumer_del(struct store *st, const char *name, struct ls_error *err)
{
    sqlite3_stmt *s;
    int rc;
    if (sqlite3_prepare_v2(st->db, "DELETE FROM consumers WHERE name=?1", -1, &s, NULL))
        return db_error(st, SQLITE_ERROR, err, "consumers");
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : db_error(st, rc, err, "remove a consumer");
}

/* ---------------------------------------------------------------- forwarding */

int
store_outbox_add(struct store *st, const char *channel, const char *payload, int64_t ts,
                 int64_t *id, struct ls_error *err)
{
    sqlite3_stmt *s;
    int rc;
    if (sqlite3_prepare_v2(st->db, "INSERT INTO outbox(channel, payload, ts) VALUES(?1, ?2, ?3)",
                           -1, &s, NULL))
        return db_error(st, SQLITE_ERROR, err, "outbox");
    sqlite3_bind_text(s, 1, channel, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, payload, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, ts);
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return db_error(st, rc, err, "queue a notification");
    *id = sqlite3_last_insert_rowid(st->db);
    return 0;
}

int
store_outbox(struct store *st, int64_t after, int limit, store_outbox_cb cb, void *arg)
{
    sqlite3_stmt *s;
    int rc, n = 0;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT id, channel, payload, ts FROM outbox WHERE id>?1 ORDER BY id "
                           "LIMIT ?2",
                           -1, &s, NULL))
        return LS_EIO;
    sqlite3_bind_int64(s, 1, after);
    sqlite3_bind_int(s, 2, limit);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *ch = (const char *)sqlite3_column_text(s, 1);
        const char *pl = (const char *)sqlite3_column_text(s, 2);
        if (!ch || !pl) continue;
        n++;
        if (cb(arg, sqlite3_column_int64(s, 0), ch, pl, sqlite3_column_int64(s, 3))) break;
    }
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? n : LS_EIO;
}

int
store_outbox_done(struct store *st, int64_t upto, struct ls_error *err)
{
    char sql[80];
    snprintf(sql, sizeof sql, "DELETE FROM outbox WHERE id<=%lld", (long long)upto);
    return db_exec(st, sql, err);
}

int64_t
store_forwarded(struct store *st, const char *origin)
{
    sqlite3_stmt *s;
    int64_t v = 0;
    if (sqlite3_prepare_v2(st->db, "SELECT last_id FROM forwarded WHERE origin=?1", -1, &s, NULL))
        return -1;
    sqlite3_bind_text(s, 1, origin, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

int
store_set_forwarded(struct store *st, const char *origin, int64_t last_id, struct ls_error *err)
{
    sqlite3_stmt *s;
    int rc;
    if (sqlite3_prepare_v2(st->db, "INSERT OR REPLACE INTO forwarded(origin, last_id) VALUES(?1, ?2)",
                           -1, &s, NULL))
        return db_error(st, SQLITE_ERROR, err, "forwarded");
    sqlite3_bind_text(s, 1, origin, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, last_id);
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : db_error(st, rc, err, "record a forwarded notification");
}
