/*
 * digest.c - one SHA-256 over the live content in path order: equal on servers that hold the
 * same content, whatever their histories. It hashes the stored hashes; lockstep verify rehashes
 * the bodies themselves.
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
        hex_encode(sqlite3_column_blob(s, 4), 32, shahex);
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
    hex_encode(out, 32, hex);
    *count = n;
out2:
    EVP_MD_CTX_free(md);
    return rc;
}
