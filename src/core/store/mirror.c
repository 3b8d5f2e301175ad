/*
 * mirror.c - the durable state of mirroring jobs (docs/mirror.md): their definitions, the
 * history of their runs with each failed item, each target's checkpoint (how far it has
 * acknowledged the source) and, for directory sources, each target's index of the files it was
 * given (path, size, mtime, inode, mode, SHA-256), so that unchanged files are not read again.
 *
 * This server's own state: none of it is in the log or replicated. Writes go through the writer
 * thread like every other; reads run on any handle.
 *
 * Not for: running jobs or touching files (src/node/mirror.c).
 */
#include "core/store/store_int.h"

/* Prepares sql or fills err; the statement is the caller's to finalize. */
static sqlite3_stmt *
prep(struct store *st, const char *sql, struct ls_error *err)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK) {
        db_error(st, SQLITE_ERROR, err, "mirror tables");
        return NULL;
    }
    return s;
}

static int
step_done(struct store *st, sqlite3_stmt *s, struct ls_error *err)
{
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc == SQLITE_CONSTRAINT) return ls_error_set(err, LS_EEXISTS, "already exists");
    return rc == SQLITE_DONE ? 0 : db_error(st, rc, err, "mirror tables");
}

static const char *
col_text(sqlite3_stmt *s, int i)
{
    const char *t = (const char *)sqlite3_column_text(s, i);
    return t ? t : "";
}

/* ---------------------------------------------------------------- jobs */

int
store_mirror_job_add(struct store *st, const char *name, const char *def, struct ls_error *err)
{
    sqlite3_stmt *s = prep(st, "INSERT INTO mirror_jobs VALUES(?1, ?2, 0, ?3)", err);
    int rc;
    if (!s) return err->code;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, def, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, ls_now_ms());
    rc = step_done(st, s, err);
    if (rc == LS_EEXISTS)
        ls_error_set(err, LS_EEXISTS, "a mirror job named %s exists already", name);
    return rc;
}

/* A job goes with everything it left: runs, errors, checkpoints and indexes. */
int
store_mirror_job_del(struct store *st, const char *name, struct ls_error *err)
{
    static const char *const sql[] = {
        "DELETE FROM mirror_errors WHERE run IN (SELECT id FROM mirror_runs WHERE job=?1)",
        "DELETE FROM mirror_runs WHERE job=?1",
        "DELETE FROM mirror_checkpoints WHERE job=?1",
        "DELETE FROM mirror_gens WHERE job=?1",
        "DELETE FROM mirror_index WHERE job=?1",
        "DELETE FROM mirror_jobs WHERE name=?1",
    };
    int rc;
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
        sqlite3_stmt *s = prep(st, sql[i], err);
        if (!s) return err->code;
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        if ((rc = step_done(st, s, err))) return rc;
    }
    if (sqlite3_changes(st->db) == 0)
        return ls_error_set(err, LS_ENOTFOUND, "no mirror job named %s", name);
    return 0;
}

int
store_mirror_job_pause(struct store *st, const char *name, int paused, struct ls_error *err)
{
    sqlite3_stmt *s = prep(st, "UPDATE mirror_jobs SET paused=?2 WHERE name=?1", err);
    int rc;
    if (!s) return err->code;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, paused);
    if ((rc = step_done(st, s, err))) return rc;
    if (sqlite3_changes(st->db) == 0)
        return ls_error_set(err, LS_ENOTFOUND, "no mirror job named %s", name);
    return 0;
}

int
store_mirror_jobs(struct store *st, store_mirror_job_cb cb, void *arg)
{
    sqlite3_stmt *s = NULL;
    int rc, n = 0;
    if (sqlite3_prepare_v2(st->db, "SELECT name, def, paused FROM mirror_jobs ORDER BY name", -1,
                           &s, NULL))
        return LS_EIO;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        n++;
        if (cb(arg, col_text(s, 0), col_text(s, 1), sqlite3_column_int(s, 2))) break;
    }
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? n : LS_EIO;
}

/* ---------------------------------------------------------------- runs and errors */

int
store_mirror_run_save(struct store *st, struct ls_mirror_run *r, struct ls_error *err)
{
    sqlite3_stmt *s;
    int rc;
    if (r->id == 0) {
        /* A run still "running" in the store was cut short by a crash: this one replaces it. */
        if (!(s = prep(st,
                       "UPDATE mirror_runs SET state='failed', note='interrupted', "
                       "ended=?2 WHERE job=?1 AND state='running'",
                       err)))
            return err->code;
        sqlite3_bind_text(s, 1, r->job, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, r->started);
        if ((rc = step_done(st, s, err))) return rc;
        if (!(s = prep(st, "INSERT INTO mirror_runs(job, started, state) VALUES(?1, ?2, ?3)", err)))
            return err->code;
        sqlite3_bind_text(s, 1, r->job, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, r->started);
        sqlite3_bind_text(s, 3, r->state, -1, SQLITE_STATIC);
        if ((rc = step_done(st, s, err))) return rc;
        r->id = sqlite3_last_insert_rowid(st->db);
    }
    if (!(s = prep(st,
                   "UPDATE mirror_runs SET ended=?2, state=?3, items=?4, bytes=?5, "
                   "items_total=?6, bytes_total=?7, errors=?8, targets=?9, note=?10 WHERE id=?1",
                   err)))
        return err->code;
    sqlite3_bind_int64(s, 1, r->id);
    sqlite3_bind_int64(s, 2, r->ended);
    sqlite3_bind_text(s, 3, r->state, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, r->items);
    sqlite3_bind_int64(s, 5, r->bytes);
    sqlite3_bind_int64(s, 6, r->items_total);
    sqlite3_bind_int64(s, 7, r->bytes_total);
    sqlite3_bind_int64(s, 8, r->errors);
    sqlite3_bind_text(s, 9, r->targets ? r->targets : "[]", -1, SQLITE_STATIC);
    if (r->note) sqlite3_bind_text(s, 10, r->note, -1, SQLITE_STATIC);
    return step_done(st, s, err);
}

int
store_mirror_runs(struct store *st, const char *job, int limit, store_mirror_run_cb cb, void *arg)
{
    sqlite3_stmt *s = NULL;
    int rc, n = 0;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT id, job, started, ended, state, items, bytes, items_total, "
                           "bytes_total, errors, targets, note FROM mirror_runs WHERE job=?1 "
                           "ORDER BY id DESC LIMIT ?2",
                           -1, &s, NULL))
        return LS_EIO;
    sqlite3_bind_text(s, 1, job, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, limit);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct ls_mirror_run r = {.id = sqlite3_column_int64(s, 0),
                                  .job = col_text(s, 1),
                                  .started = sqlite3_column_int64(s, 2),
                                  .ended = sqlite3_column_int64(s, 3),
                                  .state = col_text(s, 4),
                                  .items = sqlite3_column_int64(s, 5),
                                  .bytes = sqlite3_column_int64(s, 6),
                                  .items_total = sqlite3_column_int64(s, 7),
                                  .bytes_total = sqlite3_column_int64(s, 8),
                                  .errors = sqlite3_column_int64(s, 9),
                                  .targets = col_text(s, 10),
                                  .note = (const char *)sqlite3_column_text(s, 11)};
        n++;
        if (cb(arg, &r)) break;
    }
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? n : LS_EIO;
}

int
store_mirror_error_add(struct store *st, int64_t run, const char *target, const char *path,
                       const char *reason, struct ls_error *err)
{
    sqlite3_stmt *s = prep(st, "INSERT INTO mirror_errors VALUES(?1, ?2, ?3, ?4)", err);
    if (!s) return err->code;
    sqlite3_bind_int64(s, 1, run);
    sqlite3_bind_text(s, 2, target, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, path, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, reason, -1, SQLITE_STATIC);
    return step_done(st, s, err);
}

int
store_mirror_errors(struct store *st, int64_t run, int limit, store_mirror_error_cb cb, void *arg)
{
    sqlite3_stmt *s = NULL;
    int rc, n = 0;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT target, path, reason FROM mirror_errors WHERE run=?1 "
                           "ORDER BY rowid LIMIT ?2",
                           -1, &s, NULL))
        return LS_EIO;
    sqlite3_bind_int64(s, 1, run);
    sqlite3_bind_int(s, 2, limit);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        n++;
        if (cb(arg, col_text(s, 0), col_text(s, 1), col_text(s, 2))) break;
    }
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? n : LS_EIO;
}

/* ---------------------------------------------------------------- checkpoints */

int
store_mirror_checkpoint_get(struct store *st, const char *job, const char *target,
                            struct ls_mirror_checkpoint *cp)
{
    sqlite3_stmt *s = NULL;
    int rc;
    memset(cp, 0, sizeof *cp);
    if (sqlite3_prepare_v2(st->db,
                           "SELECT seq, full_seq, after FROM mirror_checkpoints "
                           "WHERE job=?1 AND target=?2",
                           -1, &s, NULL))
        return LS_EIO;
    sqlite3_bind_text(s, 1, job, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, target, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        cp->seq = sqlite3_column_int64(s, 0);
        cp->full_seq = sqlite3_column_int64(s, 1);
        snprintf(cp->after, sizeof cp->after, "%s", col_text(s, 2));
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return LS_EIO;
    cp->gen = -1;
    if (sqlite3_prepare_v2(st->db, "SELECT gen FROM mirror_gens WHERE job=?1 AND target=?2", -1,
                           &s, NULL))
        return LS_EIO;
    sqlite3_bind_text(s, 1, job, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, target, -1, SQLITE_STATIC);
    if ((rc = sqlite3_step(s)) == SQLITE_ROW) cp->gen = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : LS_EIO;
}

int
store_mirror_checkpoint_set(struct store *st, const char *job, const char *target,
                            const struct ls_mirror_checkpoint *cp, struct ls_error *err)
{
    sqlite3_stmt *s =
        prep(st, "INSERT OR REPLACE INTO mirror_checkpoints VALUES(?1,?2,?3,?4,?5)", err);
    int rc;
    if (!s) return err->code;
    sqlite3_bind_text(s, 1, job, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, target, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, cp->seq);
    sqlite3_bind_int64(s, 4, cp->full_seq);
    sqlite3_bind_text(s, 5, cp->after, -1, SQLITE_STATIC);
    if ((rc = step_done(st, s, err))) return rc;
    if (cp->gen < 0) return 0;
    if (!(s = prep(st, "INSERT OR REPLACE INTO mirror_gens VALUES(?1,?2,?3)", err))) return err->code;
    sqlite3_bind_text(s, 1, job, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, target, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, cp->gen);
    return step_done(st, s, err);
}

/* ---------------------------------------------------------------- directory indexes */

int
store_mirror_index_get(struct store *st, const char *job, const char *target, const char *path,
                       struct ls_mirror_file *f)
{
    sqlite3_stmt *s = db_stmt(st, R_MIRROR_INDEX);
    int rc;
    if (!s) return LS_EIO;
    sqlite3_bind_text(s, 1, job, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, target, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, path, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        f->size = sqlite3_column_int64(s, 0);
        f->mtime_ns = sqlite3_column_int64(s, 1);
        f->ino = sqlite3_column_int64(s, 2);
        f->mode = sqlite3_column_int64(s, 3);
        memset(f->sha, 0, 32);
        if (sqlite3_column_bytes(s, 4) == 32) memcpy(f->sha, sqlite3_column_blob(s, 4), 32);
    }
    db_done(s);
    if (rc == SQLITE_ROW) return 0;
    return rc == SQLITE_DONE ? LS_ENOTFOUND : LS_EIO;
}

int
store_mirror_index_set(struct store *st, const char *job, const char *target,
                       const struct ls_mirror_file *f, struct ls_error *err)
{
    sqlite3_stmt *s = db_stmt(st, S_MIRROR_INDEX_SET); /* a row per file: prepared once */
    int rc;
    if (!s) return db_error(st, SQLITE_ERROR, err, "mirror tables");
    sqlite3_bind_text(s, 1, job, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, target, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, f->path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, f->size);
    sqlite3_bind_int64(s, 5, f->mtime_ns);
    sqlite3_bind_int64(s, 6, f->ino);
    sqlite3_bind_int64(s, 7, f->mode);
    sqlite3_bind_blob(s, 8, f->sha, 32, SQLITE_STATIC);
    rc = sqlite3_step(s);
    db_done(s);
    return rc == SQLITE_DONE ? 0 : db_error(st, rc, err, "mirror tables");
}

int
store_mirror_index_del(struct store *st, const char *job, const char *target, const char *path,
                       struct ls_error *err)
{
    sqlite3_stmt *s =
        prep(st, "DELETE FROM mirror_index WHERE job=?1 AND target=?2 AND path=?3", err);
    if (!s) return err->code;
    sqlite3_bind_text(s, 1, job, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, target, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, path, -1, SQLITE_STATIC);
    return step_done(st, s, err);
}

int
store_mirror_index_page(struct store *st, const char *job, const char *target, const char *after,
                        int limit, int (*cb)(void *arg, const char *path), void *arg)
{
    sqlite3_stmt *s = NULL;
    int rc, n = 0;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT path FROM mirror_index WHERE job=?1 AND target=?2 AND path>?3 "
                           "ORDER BY path LIMIT ?4",
                           -1, &s, NULL))
        return LS_EIO;
    sqlite3_bind_text(s, 1, job, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, target, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, after, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 4, limit);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        n++;
        if (cb(arg, col_text(s, 0))) break;
    }
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? n : LS_EIO;
}

int
store_mirror_index_rows(struct store *st, const char *job, const char *target, const char *after,
                        int limit, int (*cb)(void *arg, const struct ls_mirror_file *f), void *arg)
{
    sqlite3_stmt *s = db_stmt(st, R_MIRROR_INDEX_ROWS);
    int rc, n = 0;
    if (!s) return LS_EIO;
    sqlite3_bind_text(s, 1, job, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, target, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, after, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 4, limit);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct ls_mirror_file f = {.path = col_text(s, 0),
                                   .size = sqlite3_column_int64(s, 1),
                                   .mtime_ns = sqlite3_column_int64(s, 2),
                                   .ino = sqlite3_column_int64(s, 3),
                                   .mode = sqlite3_column_int64(s, 4)};
        n++;
        if (cb(arg, &f)) break;
    }
    db_done(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? n : LS_EIO;
}
