/*
 * read.c - reading: the position, an item or one of its versions, an item's history, a
 * listing under a prefix, and the change log as entries without data.
 *
 * Not for: reading the log with the data to replicate it (log.c), snapshots (snapshot.c).
 */
#include "core/store/store_int.h"

const char *
status_name(int status)
{
    switch (status) {
    case LS_STATUS_PUBLISHED: return "published";
    case LS_STATUS_CHANGED: return "changed";
    default: return "draft";
    }
}

/* ---------------------------------------------------------------- reading */

int
store_position(struct store *st, struct ls_position *pos)
{
    if (db_meta_text(st, "store_id", pos->store_id, sizeof pos->store_id)) return LS_EIO;
    pos->epoch = db_meta_int(st, "epoch");
    pos->seq = db_meta_int(st, "seq");
    return 0;
}

int64_t
store_log_first_seq(struct store *st)
{
    sqlite3_stmt *s = db_stmt(st, R_LOG_FIRST);
    int64_t v = 0;
    if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
    db_done(s);
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
int
read_item_row(sqlite3_stmt *s, struct ls_item *it, int want_body)
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
    sqlite3_stmt *s = db_stmt(st, R_GET);
    int rc;
    sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, version);
    sqlite3_bind_int(s, 3, want_body);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        rc = read_item_row(s, it, want_body);
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
        rc = db_error(st, rc, err, "get");
    }
    db_done(s);
    return rc;
}

static int
each_item(struct store *st, sqlite3_stmt *s, store_item_cb cb, void *arg, struct ls_error *err)
{
    int rc, n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct ls_item it;
        int stop;
        if (read_item_row(s, &it, 0)) {
            db_done(s);
            return ls_error_set(err, LS_ENOMEM, NULL);
        }
        stop = cb(arg, &it);
        item_release(&it);
        n++;
        if (stop) break;
    }
    db_done(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_error(st, rc, err, "read");
    return n;
}

int
store_history(struct store *st, const char *path, store_item_cb cb, void *arg,
              struct ls_error *err)
{
    sqlite3_stmt *s = db_stmt(st, R_HISTORY);
    int n;
    sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
    n = each_item(st, s, cb, arg, err);
    if (n == 0) return ls_error_set(err, LS_ENOTFOUND, "%s: not found", path);
    return n < 0 ? n : 0;
}

/* Binds ?1 ?2 ?3 of the subtree range for prefix: the prefix itself and everything below it. */
void
read_bind_subtree(sqlite3_stmt *s, const char *prefix, char *slash, char *end, size_t n)
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
    sqlite3_stmt *s = db_stmt(st, R_LIST);
    char slash[LS_PATH_MAX + 2], end[LS_PATH_MAX + 2];
    int n;
    read_bind_subtree(s, prefix, slash, end, sizeof slash);
    sqlite3_bind_text(s, 4, after ? after : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 5, include_deleted);
    sqlite3_bind_int(s, 6, limit);
    n = each_item(st, s, cb, arg, err);
    return n;
}

int
store_changes(struct store *st, int64_t since, int limit, store_change_cb cb, void *arg)
{
    sqlite3_stmt *s = db_stmt(st, R_CHANGES);
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
    db_done(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return LS_EIO;
    return n;
}
