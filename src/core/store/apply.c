/*
 * apply.c - applying operations: each one checks its rules, changes items and versions, and
 * appends exactly one log entry with the next seq (or the upstream's seq on a replica).
 *
 * Not for: transactions (txn.c) or reading (read.c).
 */
#include "core/store/store_int.h"

/* ---------------------------------------------------------------- applying operations */

int
apply_item_lookup(struct store *st, const char *path, struct cur_item *c, struct ls_error *err)
{
    sqlite3_stmt *s = db_stmt(st, S_ITEM_BY_PATH);
    int rc;
    memset(c, 0, sizeof *c);
    sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        c->exists = 1;
        c->id = sqlite3_column_int64(s, 0);
        c->version = sqlite3_column_int64(s, 1);
        c->published = sqlite3_column_int64(s, 2);
        c->deleted = sqlite3_column_int(s, 3);
    }
    db_done(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_error(st, rc, err, "lookup");
    return 0;
}

int
db_step_done(struct store *st, sqlite3_stmt *s, struct ls_error *err, const char *what)
{
    int rc = sqlite3_step(s);
    db_done(s);
    return rc == SQLITE_DONE ? 0 : db_error(st, rc, err, what);
}

static int
log_append(struct store *st, int op, int64_t item, const char *path, int64_t version, int flags,
           const char *arg, int64_t bytes, int64_t ts, struct ls_error *err)
{
    sqlite3_stmt *s = db_stmt(st, S_LOG_INSERT);
    int64_t seq = st->op_seq;
    int rc;
    if (st->op_nolog) return 0;
    st->log_cum += 48 + (int64_t)strlen(path) + (arg ? (int64_t)strlen(arg) : 0) + bytes;
    sqlite3_bind_int64(s, 9, st->log_cum);
    sqlite3_bind_int64(s, 1, seq);
    sqlite3_bind_int64(s, 2, ts);
    sqlite3_bind_int(s, 3, op);
    sqlite3_bind_int64(s, 4, item);
    sqlite3_bind_text(s, 5, path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 6, version);
    if (st->op_more) flags |= LOG_MORE;
    sqlite3_bind_int(s, 7, flags);
    if (arg) sqlite3_bind_text(s, 8, arg, -1, SQLITE_STATIC);
    if ((rc = db_step_done(st, s, err, "append to log"))) return rc;
    assert(st->seq_jumped || seq == st->seq + 1);
    if (seq > st->seq) st->seq = seq;
    st->nlogged++;
    if (st->tail) {
        /* The entry as store_log_entries would read it back. A publish's would carry its
         * version's data, which is not at hand here: the tail starts again after it. */
        struct ls_entry e;
        if (op == LS_OP_PUT && st->put_data) e = *st->put_data;
        else memset(&e, 0, sizeof e);
        e.seq = seq;
        e.op = op;
        e.ts = ts;
        e.path = (char *)path;
        e.to = (char *)arg;
        e.version = version;
        e.flags = (flags & LOG_PUBLISHED ? REC_PUBLISHED : 0) | (op == LS_OP_PUT ? REC_DATA : 0) |
                  (flags & LOG_MORE ? REC_MORE : 0);
        if (op == LS_OP_PUBLISH || (op == LS_OP_PUT && !st->put_data)) tail_break(st->tail);
        else tail_add(st->tail, &e);
    }
    return 0;
}

void
store_set_tail(struct store *st, struct log_tail *tail)
{
    st->tail = tail;
}

static int
item_update(struct store *st, const struct cur_item *c, int64_t version, int64_t published,
            int deleted, int64_t mtime, struct ls_error *err)
{
    sqlite3_stmt *s = db_stmt(st, S_ITEM_UPDATE);
    sqlite3_bind_int64(s, 1, c->id);
    sqlite3_bind_int64(s, 2, version);
    if (published > 0) sqlite3_bind_int64(s, 3, published);
    sqlite3_bind_int(s, 4, deleted);
    sqlite3_bind_int64(s, 5, st->op_seq);
    sqlite3_bind_int64(s, 6, mtime);
    return db_step_done(st, s, err, "update item");
}

/* Stores a put's body where it belongs (a blob file, or nothing yet for an inline one) and
 * gives its hash. */
static int
store_body(struct store *st, const struct ls_op *op, int in_blob, unsigned char sha[32],
           struct ls_error *err)
{
    if (op->has_sha) memcpy(sha, op->sha, 32);
    else if (op->body_file || op->body_absent)
        return ls_error_set(err, LS_EINTERNAL, "body file without its hash");
    else ls_sha256(op->body, op->body_len, sha);
    if (op->body_absent) return 0; /* a placeholder: a later entry prunes or purges it */
    if (op->body_file) return blob_adopt(st, op->body_file, sha, err);
    if (in_blob) return blob_write(st, op->body, op->body_len, sha, err);
    return 0;
}

static int
version_insert(struct store *st, int64_t item, int64_t version, const char *kind,
               const char *meta, uint64_t size, const unsigned char sha[32], int in_blob,
               const struct ls_op *op, int64_t mtime, struct ls_error *err)
{
    sqlite3_stmt *s = db_stmt(st, S_VERSION_INSERT);
    sqlite3_bind_int64(s, 1, item);
    sqlite3_bind_int64(s, 2, version);
    sqlite3_bind_text(s, 3, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, meta, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)size);
    sqlite3_bind_blob(s, 6, sha, 32, SQLITE_STATIC);
    if (!in_blob)
        sqlite3_bind_blob(s, 7, op->body_len ? op->body : "", (int)op->body_len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, mtime);
    sqlite3_bind_int64(s, 9, st->op_seq);
    return db_step_done(st, s, err, "insert version");
}

static int
version_exists(struct store *st, int64_t item, int64_t version)
{
    sqlite3_stmt *s = db_stmt(st, S_VERSION_EXISTS);
    int found;
    sqlite3_bind_int64(s, 1, item);
    sqlite3_bind_int64(s, 2, version);
    found = sqlite3_step(s) == SQLITE_ROW;
    db_done(s);
    return found;
}

/*
 * A replica gets a version it may lack just before the publish that needs it (REC_RESTORE):
 * the version row is added when missing; the item, its latest version and the log stay as
 * they are (the publish that follows is the change).
 */
static int
apply_restore(struct store *st, const struct ls_op *op, int64_t mtime, struct ls_error *err)
{
    struct cur_item c;
    unsigned char sha[32];
    uint64_t size = op->body_file || op->body_absent ? op->body_file_size : op->body_len;
    int in_blob = op->body_file != NULL || op->body_absent || op->body_len > st->opt.inline_max;
    int rc;
    if ((rc = apply_item_lookup(st, op->path, &c, err))) return rc;
    if (!c.exists || c.deleted || op->version <= 0 || version_exists(st, c.id, op->version))
        return 0;
    if ((rc = store_body(st, op, in_blob, sha, err))) return rc;
    return version_insert(st, c.id, op->version, op->kind ? op->kind : "document",
                          op->meta ? op->meta : "{}", size, sha, in_blob, op, mtime, err);
}

static int
apply_put(struct store *st, const struct ls_op *op, int64_t mtime, struct ls_op_result *res,
          struct ls_error *err)
{
    struct cur_item c;
    unsigned char sha[32];
    const char *kind = op->kind, *meta = op->meta;
    char *prev_kind = NULL, *prev_meta = NULL;
    int64_t version, published;
    uint64_t size = op->body_file || op->body_absent ? op->body_file_size : op->body_len;
    int inserted = 0;
    int in_blob = op->body_file != NULL || op->body_absent || op->body_len > st->opt.inline_max;
    sqlite3_stmt *s;
    int rc;

    /* Most puts of an import make new items: try the insert first, and look the path up
     * only when it exists (one index search instead of two). */
    memset(&c, 0, sizeof c);
    if (op->if_version == 0) {
        int64_t v = op->version > 0 ? op->version : 1;
        s = db_stmt(st, S_ITEM_INSERT_NEW);
        sqlite3_bind_text(s, 1, op->path, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, v);
        if (op->publish) sqlite3_bind_int64(s, 3, v);
        sqlite3_bind_int64(s, 4, st->op_seq);
        sqlite3_bind_int64(s, 5, mtime);
        sqlite3_bind_int64(s, 6, st->next_item_id);
        if ((rc = db_step_done(st, s, err, "insert item"))) return rc;
        if (sqlite3_changes(st->db) == 1) {
            inserted = 1;
            c.id = st->next_item_id++;
        }
    }
    if (!inserted && (rc = apply_item_lookup(st, op->path, &c, err))) return rc;
    if (op->if_version > 0 && (!c.exists || c.deleted ? 0 : c.version) != op->if_version)
        return ls_error_set(err, LS_ECONFLICT, "%s is at version %lld, not %lld", op->path,
                            (long long)(c.exists && !c.deleted ? c.version : 0),
                            (long long)op->if_version);
    version = op->version > 0 ? op->version : c.version + 1;

    if (c.exists && (!kind || !meta)) {
        s = db_stmt(st, S_VERSION_KINDMETA);
        sqlite3_bind_int64(s, 1, c.id);
        sqlite3_bind_int64(s, 2, c.version);
        if (sqlite3_step(s) == SQLITE_ROW) {
            prev_kind = strdup((const char *)sqlite3_column_text(s, 0));
            prev_meta = strdup((const char *)sqlite3_column_text(s, 1));
            if (!prev_kind || !prev_meta) rc = ls_error_set(err, LS_ENOMEM, NULL);
        }
        db_done(s);
        if (rc) goto out; /* not the defaults in place of the kept kind and meta */
        if (!kind) kind = prev_kind;
        if (!meta) meta = prev_meta;
    }
    if (!kind) kind = "document";
    if (!meta) meta = "{}";

    if ((rc = store_body(st, op, in_blob, sha, err))) goto out;

    published = op->publish ? version : (c.exists && !c.deleted ? c.published : 0);
    if (inserted) {
        rc = 0; /* the row is in already */
    } else if (c.exists) {
        rc = item_update(st, &c, version, published, 0, mtime, err);
    } else {
        s = db_stmt(st, S_ITEM_INSERT);
        sqlite3_bind_text(s, 1, op->path, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, version);
        if (published > 0) sqlite3_bind_int64(s, 3, published);
        sqlite3_bind_int64(s, 4, st->op_seq);
        sqlite3_bind_int64(s, 5, mtime);
        sqlite3_bind_int64(s, 6, st->next_item_id);
        rc = db_step_done(st, s, err, "insert item");
        c.id = st->next_item_id++;
    }
    if (rc) goto out;

    if ((rc = version_insert(st, c.id, version, kind, meta, size, sha, in_blob, op, mtime, err)))
        goto out;

    {
        struct ls_entry data = {.kind = (char *)kind, .meta = (char *)meta, .size = size,
                                .body_kind = in_blob ? BODY_BLOB : BODY_INLINE,
                                .body = in_blob ? NULL : (op->body_len ? op->body : ""),
                                .body_len = in_blob ? 0 : op->body_len};
        memcpy(data.sha, sha, 32);
        st->put_data = &data;
        rc = log_append(st, LS_OP_PUT, c.id, op->path, version, op->publish, NULL,
                        (int64_t)size, mtime, err);
        st->put_data = NULL;
        if (rc) goto out;
    }

    /* Keep the newest max_versions and the published one. A replicated put may also go back
     * to an older number (staging after a re-publish): then nothing newer may stay. */
    if (version > st->opt.max_versions || (op->version > 0 && c.exists && c.version > version)) {
        s = db_stmt(st, S_VERSION_PRUNE);
        sqlite3_bind_int64(s, 1, c.id);
        sqlite3_bind_int64(s, 2, version - st->opt.max_versions);
        if (published > 0) sqlite3_bind_int64(s, 3, published);
        sqlite3_bind_int64(s, 4, version);
        rc = blob_delete_versions(st, s, err);
    }
    res->version = version;
out:
    free(prev_kind);
    free(prev_meta);
    return rc;
}

static int
require_live(const struct cur_item *c, const char *path, struct ls_error *err)
{
    if (!c->exists || c->deleted) return ls_error_set(err, LS_ENOTFOUND, "%s: not found", path);
    return 0;
}

static int
apply_purge_item(struct store *st, int64_t id, struct ls_error *err)
{
    sqlite3_stmt *s = db_stmt(st, S_VERSION_PURGE);
    int rc;
    sqlite3_bind_int64(s, 1, id);
    if ((rc = blob_delete_versions(st, s, err))) return rc;
    s = db_stmt(st, S_ITEM_DELETE);
    sqlite3_bind_int64(s, 1, id);
    return db_step_done(st, s, err, "purge item");
}

static int
apply_move(struct store *st, const struct ls_op *op, int64_t mtime, struct ls_op_result *res,
           struct ls_error *err)
{
    struct cur_item src, dst;
    sqlite3_stmt *s;
    int rc;
    if ((rc = apply_item_lookup(st, op->path, &src, err))) return rc;
    if (op->tolerant && (!src.exists || src.deleted)) return 0;
    if ((rc = require_live(&src, op->path, err))) return rc;
    if (strcmp(op->path, op->to) == 0)
        return ls_error_set(err, LS_EINVAL, "cannot move %s onto itself", op->path);
    if (op->if_version > 0 && src.version != op->if_version)
        return ls_error_set(err, LS_ECONFLICT, "%s is at version %lld, not %lld", op->path,
                            (long long)src.version, (long long)op->if_version);
    if ((rc = apply_item_lookup(st, op->to, &dst, err))) return rc;
    if (dst.exists && !dst.deleted) return ls_error_set(err, LS_EEXISTS, "%s exists", op->to);
    /* A tombstone at the destination is replaced: the moved item takes its path. */
    if (dst.exists && (rc = apply_purge_item(st, dst.id, err))) return rc;
    s = db_stmt(st, S_ITEM_MOVE);
    sqlite3_bind_int64(s, 1, src.id);
    sqlite3_bind_text(s, 2, op->to, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, st->op_seq);
    sqlite3_bind_int64(s, 4, mtime);
    if ((rc = db_step_done(st, s, err, "move"))) return rc;
    res->version = src.version;
    return log_append(st, LS_OP_MOVE, src.id, op->path, src.version, 0, op->to, 0, mtime, err);
}

static int
apply_other(struct store *st, const struct ls_op *op, int64_t mtime, struct ls_op_result *res,
            struct ls_error *err)
{
    struct cur_item c;
    int64_t version = 0;
    int rc;

    if ((rc = apply_item_lookup(st, op->path, &c, err))) return rc;
    if (op->tolerant && (!c.exists || (c.deleted && op->type != LS_OP_PURGE) ||
                         (op->type == LS_OP_UNPUBLISH && c.published <= 0)))
        return 0;
    if (op->type == LS_OP_PURGE ? !c.exists : (rc = require_live(&c, op->path, err)) != 0)
        return rc ? rc : ls_error_set(err, LS_ENOTFOUND, "%s: not found", op->path);
    if (op->if_version > 0 && c.version != op->if_version)
        return ls_error_set(err, LS_ECONFLICT, "%s is at version %lld, not %lld", op->path,
                            (long long)c.version, (long long)op->if_version);
    switch (op->type) {
    case LS_OP_DELETE:
        rc = item_update(st, &c, c.version, 0, 1, mtime, err);
        version = c.version;
        break;
    case LS_OP_PURGE:
        rc = apply_purge_item(st, c.id, err);
        version = c.version;
        break;
    case LS_OP_PUBLISH: {
        version = op->version > 0 ? op->version : c.version;
        if (!version_exists(st, c.id, version))
            return ls_error_set(err, LS_ENOTFOUND, "%s has no version %lld", op->path,
                                (long long)version);
        rc = item_update(st, &c, c.version, version, 0, mtime, err);
        break;
    }
    case LS_OP_UNPUBLISH:
        if (c.published <= 0)
            return ls_error_set(err, LS_ECONFLICT, "%s is not published", op->path);
        version = c.published;
        rc = item_update(st, &c, c.version, 0, 0, mtime, err);
        break;
    default:
        return ls_error_set(err, LS_EINVAL, "unknown operation");
    }
    if (rc) return rc;
    res->version = version;
    return log_append(st, op->type, c.id, op->path, version, 0, NULL, 0, mtime, err);
}

/* A notification is only a log entry: its channel where an item's path would be, its payload
 * (compact JSON) as the argument. */
static int
apply_notify(struct store *st, const struct ls_op *op, int64_t mtime, struct ls_error *err)
{
    int rc;
    if (!op->to || (rc = name_check("channel", op->path, strlen(op->path), err)))
        return op->to ? rc : ls_error_set(err, LS_EINVAL, "a notification needs a payload");
    if (strlen(op->to) > LS_NOTIFY_MAX)
        return ls_error_set(err, LS_ETOOBIG, "a notification's payload is at most %d bytes",
                            LS_NOTIFY_MAX);
    return log_append(st, LS_OP_NOTIFY, 0, op->path, 0, 0, op->to, 0, mtime, err);
}

int
store_apply(struct store *st, const struct ls_op *op, struct ls_op_result *res,
            struct ls_error *err)
{
    int64_t mtime = op->mtime > 0 ? op->mtime : ls_now_ms();
    struct ls_op_result dummy;
    int rc;
    if (!res) res = &dummy;
    memset(res, 0, sizeof *res);
    if (!store_in_transaction(st)) /* each statement would commit alone */
        return ls_error_set(err, LS_EIO, "no transaction is open: it was rolled back");
    st->op_seq = op->seq > 0 ? op->seq : st->seq + 1;
    st->op_nolog = op->no_log;
    st->op_more = op->more;
    if (op->seq > 0) st->seq_jumped = 1;
    switch (op->type) {
    case LS_OP_PUT:
        rc = op->restore ? apply_restore(st, op, mtime, err) : apply_put(st, op, mtime, res, err);
        break;
    case LS_OP_MOVE: rc = apply_move(st, op, mtime, res, err); break;
    case LS_OP_NOTIFY: rc = apply_notify(st, op, mtime, err); break;
    default: rc = apply_other(st, op, mtime, res, err); break;
    }
    if (rc == 0) res->seq = st->seq;
    return rc;
}
