/*
 * snapshot.c - a snapshot: one read transaction on a handle of its own, consistent at one seq,
 * read in bounded batches (an item with thousands of versions spans several), never blocking
 * the writer (WAL).
 *
 * Not for: sending it (repl_up.c).
 */
#include "core/store/store_int.h"

/* ---------------------------------------------------------------- snapshots */

/* What one store_snapshot_next call emits at most: an item with thousands of large versions
 * goes out over several calls, so the caller never holds more than this of it. */
#define SNAP_BATCH_BYTES (512u << 10)
#define SNAP_BATCH_RECORDS 256

struct store_snapshot {
    struct store *st; /* a read handle of its own, holding one read transaction */
    sqlite3_stmt *items, *lowest, *versions;
    struct ls_position pos;
    int64_t max_versions;
    int published_only;
    int done;
    /* The item being emitted, while its versions statement is part way through. */
    int in_item, deleted;
    int64_t latest, published, item_seq, mtime;
    char *path;
};

struct store_snapshot *
store_snapshot_open(const char *dir, int64_t max_versions, int published_only,
                    struct ls_position *pos, struct ls_error *err)
{
    struct store_options opt = {.readonly = 1};
    struct store_snapshot *sn = calloc(1, sizeof *sn);
    if (!sn) return NULL;
    if (!(sn->st = store_open(dir, &opt, err))) goto fail;
    if (db_exec(sn->st, "BEGIN", err) || store_position(sn->st, &sn->pos)) goto fail;
    /* The first read pins the WAL snapshot: everything below sees this one seq. */
    if (sqlite3_prepare_v2(sn->st->db,
                           "SELECT id, path, version, published, deleted, seq, mtime FROM items "
                           "ORDER BY path",
                           -1, &sn->items, NULL) ||
        sqlite3_prepare_v2(sn->st->db,
                           "SELECT version FROM versions WHERE item=?1 ORDER BY version DESC "
                           "LIMIT 1 OFFSET ?2",
                           -1, &sn->lowest, NULL) ||
        sqlite3_prepare_v2(sn->st->db,
                           "SELECT version, kind, meta, size, sha256, body IS NULL, body, mtime, "
                           "seq FROM versions WHERE item=?1 AND (version>=?2 OR version=?4) "
                           "AND (?3=0 OR version=?3) ORDER BY version",
                           -1, &sn->versions, NULL)) {
        db_error(sn->st, SQLITE_ERROR, err, "snapshot");
        goto fail;
    }
    sn->max_versions = max_versions;
    sn->published_only = published_only;
    *pos = sn->pos;
    return sn;
fail:
    store_snapshot_close(sn);
    return NULL;
}

void
store_snapshot_close(struct store_snapshot *sn)
{
    if (!sn) return;
    sqlite3_finalize(sn->items);
    sqlite3_finalize(sn->lowest);
    sqlite3_finalize(sn->versions);
    free(sn->path);
    if (sn->st) db_exec(sn->st, "COMMIT", NULL);
    store_free(sn->st);
    free(sn);
}

/*
 * Emits the next records of the snapshot, item by item in path order, oldest version first: a
 * put per retained version (the published one flagged), then a delete when the item is a
 * tombstone. The latest version of a live item carries the item's seq. One call emits at most
 * SNAP_BATCH_BYTES of bodies (or SNAP_BATCH_RECORDS records): an item with a long history is
 * continued by the next call, its versions statement left where it stopped, so memory does not
 * grow with an item's history. Returns 1 when records were emitted, 0 at the end, or an error.
 * keep(path) filters items (NULL: all).
 */
int
store_snapshot_next(struct store_snapshot *sn, int (*keep)(void *arg, const char *path),
                    store_entry_cb cb, void *arg)
{
    for (;;) {
        int rc, nrec = 0;
        size_t bytes = 0;
        struct ls_entry e;

        if (!sn->in_item) {
            int64_t id, lowest = 0;
            const char *path;
            rc = sn->done ? SQLITE_DONE : sqlite3_step(sn->items);
            if (rc == SQLITE_DONE) sn->done = 1;
            if (sn->done) return 0;
            if (rc != SQLITE_ROW) return LS_EIO;
            id = sqlite3_column_int64(sn->items, 0);
            path = (const char *)sqlite3_column_text(sn->items, 1);
            sn->latest = sqlite3_column_int64(sn->items, 2);
            sn->published = sqlite3_column_int64(sn->items, 3);
            sn->deleted = sqlite3_column_int(sn->items, 4);
            sn->item_seq = sqlite3_column_int64(sn->items, 5);
            sn->mtime = sqlite3_column_int64(sn->items, 6);
            if (keep && !keep(arg, path)) continue;
            if (sn->published_only && (sn->deleted || sn->published <= 0)) continue;
            if (!sn->published_only && sn->max_versions > 0) {
                sqlite3_bind_int64(sn->lowest, 1, id);
                sqlite3_bind_int64(sn->lowest, 2, sn->max_versions - 1);
                if (sqlite3_step(sn->lowest) == SQLITE_ROW)
                    lowest = sqlite3_column_int64(sn->lowest, 0);
                sqlite3_reset(sn->lowest);
            }
            free(sn->path);
            if (!(sn->path = strdup(path))) return LS_ENOMEM;
            sqlite3_bind_int64(sn->versions, 1, id);
            sqlite3_bind_int64(sn->versions, 2, lowest);
            sqlite3_bind_int64(sn->versions, 3, sn->published_only ? sn->published : 0);
            sqlite3_bind_int64(sn->versions, 4, sn->published); /* never left out, however old */
            sn->in_item = 1;
        }
        while ((rc = sqlite3_step(sn->versions)) == SQLITE_ROW) {
            memset(&e, 0, sizeof e);
            e.op = LS_OP_PUT;
            e.path = sn->path;
            e.version = sqlite3_column_int64(sn->versions, 0);
            e.flags = REC_DATA | (e.version == sn->published ? REC_PUBLISHED : 0);
            e.kind = (char *)sqlite3_column_text(sn->versions, 1);
            e.meta = (char *)sqlite3_column_text(sn->versions, 2);
            e.size = (uint64_t)sqlite3_column_int64(sn->versions, 3);
            memcpy(e.sha, sqlite3_column_blob(sn->versions, 4), 32);
            if (sqlite3_column_int(sn->versions, 5)) {
                e.body_kind = BODY_BLOB;
            } else {
                e.body_kind = BODY_INLINE;
                e.body = sqlite3_column_blob(sn->versions, 6);
                e.body_len = (size_t)sqlite3_column_bytes(sn->versions, 6);
                if (!e.body) e.body = "";
            }
            e.ts = sqlite3_column_int64(sn->versions, 7);
            e.seq = e.version == sn->latest && !sn->deleted
                        ? sn->item_seq
                        : sqlite3_column_int64(sn->versions, 8);
            nrec++;
            bytes += e.body_len + strlen(e.meta ? e.meta : "") + 64;
            cb(arg, &e);
            if (bytes >= SNAP_BATCH_BYTES || nrec >= SNAP_BATCH_RECORDS)
                return 1; /* the rest of this item next time */
        }
        sqlite3_reset(sn->versions);
        sn->in_item = 0;
        if (rc != SQLITE_DONE) return LS_EIO;
        if (sn->deleted) {
            memset(&e, 0, sizeof e);
            e.op = LS_OP_DELETE;
            e.path = sn->path;
            e.version = sn->latest;
            e.seq = sn->item_seq;
            e.ts = sn->mtime;
            nrec++;
            cb(arg, &e);
        }
        if (nrec) return 1;
    }
}
