/*
 * digest.c - one SHA-256 over the live content in path order: equal on servers that hold the
 * same content, whatever their histories. It hashes the stored hashes; lockstep verify
 * (src/core/verify.c) rehashes the bodies themselves, which store_bodies() below walks.
 *
 * Not for: anything that writes.
 */
#include "core/store/store_int.h"

/*
 * The digest of the live items: SHA-256 over one record per item, in path order:
 *   path NUL kind NUL version NUL status NUL sha256-hex NUL meta NUL LF
 * Two stores holding the same live state compute the same digest whatever their history.
 */
int
store_digest(struct store *st, const char *prefix, int published_only, char hex[65],
             int64_t *count, int64_t *seq, struct ls_error *err)
{
    sqlite3_stmt *s = db_stmt(st, published_only ? R_DIGEST_PUB : R_DIGEST);
    char slash[LS_PATH_MAX + 2], end[LS_PATH_MAX + 2], num[32], shahex[65];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char out[32];
    int rc, rc2;
    int64_t n = 0;

    if (!md) return ls_error_set(err, LS_ENOMEM, NULL);
    if ((rc = db_exec(st, "BEGIN", err))) goto out2;
    *seq = db_meta_int(st, "seq");
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    read_bind_subtree(s, prefix, slash, end, sizeof slash);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t version = sqlite3_column_int64(s, 2), published = sqlite3_column_int64(s, 3);
        const char *status = published <= 0          ? "draft"
                             : published == version ? "published"
                                                    : "changed";
        const char *fields[6];
        fields[0] = (const char *)sqlite3_column_text(s, 0);
        fields[1] = (const char *)sqlite3_column_text(s, 1);
        snprintf(num, sizeof num, "%lld", (long long)version);
        fields[2] = num;
        fields[3] = status;
        ls_hex_encode(sqlite3_column_blob(s, 4), 32, shahex);
        fields[4] = shahex;
        fields[5] = (const char *)sqlite3_column_text(s, 5);
        for (int i = 0; i < 6; i++) EVP_DigestUpdate(md, fields[i], strlen(fields[i]) + 1);
        EVP_DigestUpdate(md, "\n", 1);
        n++;
    }
    db_done(s);
    rc2 = db_exec(st, "COMMIT", NULL);
    if (rc != SQLITE_DONE || rc2) {
        rc = db_error(st, rc, err, "digest");
        goto out2;
    }
    rc = 0;
    EVP_DigestFinal_ex(md, out, NULL);
    ls_hex_encode(out, 32, hex);
    *count = n;
out2:
    EVP_MD_CTX_free(md);
    return rc;
}

/* ---------------------------------------------------------------- bodies, for a scrub */

int
store_bodies(struct store *st, int blobs, const unsigned char after_sha[32],
             int64_t after_rowid, int limit, store_body_cb cb, void *arg,
             struct ls_error *err)
{
    /* Prepared per slice: a scrub is rare, and its statements stay out of the cached set. */
    static const char *const sql[2] = {
        "SELECT v.rowid, v.sha256, i.path, v.version, v.size, v.body FROM versions v "
        "JOIN items i ON i.id=v.item WHERE v.body IS NOT NULL AND v.rowid>?2 "
        "ORDER BY v.rowid LIMIT ?3",
        "SELECT v.rowid, v.sha256, i.path, v.version, v.size, NULL FROM versions v "
        "JOIN items i ON i.id=v.item WHERE v.body IS NULL AND (v.sha256, v.rowid)>(?1, ?2) "
        "ORDER BY v.sha256, v.rowid LIMIT ?3",
    };
    static const unsigned char zero[32];
    sqlite3_stmt *s;
    int rc, n = 0, stop = 0;

    if ((rc = sqlite3_prepare_v2(st->db, sql[blobs ? 1 : 0], -1, &s, NULL)))
        return db_error(st, rc, err, "bodies");
    sqlite3_bind_blob(s, 1, after_sha ? after_sha : zero, 32, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, after_rowid);
    sqlite3_bind_int(s, 3, limit);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct store_body_ref b = {.rowid = sqlite3_column_int64(s, 0),
                                   .sha = sqlite3_column_blob(s, 1),
                                   .path = (const char *)sqlite3_column_text(s, 2),
                                   .version = sqlite3_column_int64(s, 3),
                                   .size = (uint64_t)sqlite3_column_int64(s, 4)};
        if (!b.sha || sqlite3_column_bytes(s, 1) != 32 || !b.path) continue; /* not ours */
        if (!blobs) {
            b.body_len = (size_t)sqlite3_column_bytes(s, 5);
            b.body = b.body_len ? sqlite3_column_blob(s, 5) : "";
        }
        n++;
        if ((stop = cb(arg, &b))) break;
    }
    if (!stop && rc != SQLITE_DONE) n = db_error(st, rc, err, "bodies");
    if (stop < 0) ls_error_set(err, stop, NULL);
    sqlite3_finalize(s);
    return stop < 0 ? stop : n;
}
