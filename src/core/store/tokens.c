/*
 * tokens.c - access tokens of this server (not replicated): a name, a role and the token's
 * SHA-256; the token itself is never stored.
 *
 * Not for: checking requests (src/node/auth.c).
 */
#include "core/store/store_int.h"

/* ---------------------------------------------------------------- tokens */

int
store_token_add(struct store *st, const char *name, const char *role, const unsigned char hash[32],
                struct ls_error *err)
{
    sqlite3_stmt *s;
    int rc;
    if (sqlite3_prepare_v2(st->db, "INSERT INTO tokens VALUES(?1, ?2, ?3, ?4)", -1, &s, NULL))
        return db_error(st, SQLITE_ERROR, err, "tokens");
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, role, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 3, hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, ls_now_ms());
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc == SQLITE_CONSTRAINT)
        return ls_error_set(err, LS_EEXISTS, "a token named %s exists already", name);
    return rc == SQLITE_DONE ? 0 : db_error(st, rc, err, "tokens");
}

int
store_token_del(struct store *st, const char *name, struct ls_error *err)
{
    sqlite3_stmt *s;
    int rc, last_admin;
    /* The last admin token stays: without it a server that has tokens could not be
     * administered, and without any it would be open to everyone. */
    if (sqlite3_prepare_v2(st->db,
                           "SELECT role = 'admin' AND (SELECT count(*) FROM tokens WHERE "
                           "role = 'admin') = 1 FROM tokens WHERE name=?1",
                           -1, &s, NULL))
        return db_error(st, SQLITE_ERROR, err, "tokens");
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    last_admin = rc == SQLITE_ROW && sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_error(st, rc, err, "tokens");
    if (last_admin)
        return ls_error_set(err, LS_ECONFLICT,
                            "%s is the last admin token: create another admin token first", name);
    if (sqlite3_prepare_v2(st->db, "DELETE FROM tokens WHERE name=?1", -1, &s, NULL))
        return db_error(st, SQLITE_ERROR, err, "tokens");
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return db_error(st, rc, err, "tokens");
    if (sqlite3_changes(st->db) == 0)
        return ls_error_set(err, LS_ENOTFOUND, "no token named %s", name);
    return 0;
}

int
store_tokens(struct store *st, store_token_cb cb, void *arg)
{
    sqlite3_stmt *s;
    int n = 0, rc;
    if (sqlite3_prepare_v2(st->db, "SELECT name, role, hash, created FROM tokens ORDER BY name",
                           -1, &s, NULL))
        return LS_EIO;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(s, 2) != 32) continue;
        cb(arg, (const char *)sqlite3_column_text(s, 0), (const char *)sqlite3_column_text(s, 1),
           sqlite3_column_blob(s, 2), sqlite3_column_int64(s, 3));
        n++;
    }
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? n : LS_EIO;
}
