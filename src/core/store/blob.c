/*
 * blob.c - bodies above the inline limit, kept as files under blobs/xx/<sha256>, written and
 * synced before the transaction that refers to them commits, stored once per content; and the
 * collection of blob files no version refers to any more.
 *
 * Not for: inline bodies (apply.c stores those in the versions table).
 */
#include "core/store/store_int.h"

/* ---------------------------------------------------------------- blobs */

void
store_blob_path(const struct store *st, const unsigned char sha[32], char *out, size_t n)
{
    char hex[65];
    ls_hex_encode(sha, 32, hex);
    snprintf(out, n, "%s/blobs/%.2s/%s", st->dir, hex, hex + 2);
}

/* Moves a complete, synced file into the blob store under its hash (or drops it if present). */
int
blob_adopt(struct store *st, const char *file, const unsigned char sha[32], struct ls_error *err)
{
    char dst[4300], dir[4300];
    int rc;
    store_blob_path(st, sha, dst, sizeof dst);
    if (access(dst, F_OK) == 0) {
        unlink(file);
        return 0;
    }
    snprintf(dir, sizeof dir, "%s", dst);
    *strrchr(dir, '/') = '\0';
    if ((rc = ls_mkdir_p(dir, 0755)) < 0 || rename(file, dst) < 0 ||
        (rc = ls_fsync_dir(dir)) < 0) {
        int e = rc < 0 ? -rc : errno;
        return ls_error_set(err, ls_errno_to_ls(e), "cannot store blob: %s", strerror(e));
    }
    return 0;
}

int
blob_write(struct store *st, const void *data, size_t n, const unsigned char sha[32],
           struct ls_error *err)
{
    char tmp[4300], dst[4300];
    int fd, rc;
    store_blob_path(st, sha, dst, sizeof dst);
    if (access(dst, F_OK) == 0) return 0; /* the same content is stored once */
    snprintf(tmp, sizeof tmp, "%s/blobs/tmp/w.XXXXXX", st->dir);
    fd = mkstemp(tmp);
    if (fd < 0) return ls_error_set(err, ls_errno_to_ls(errno), "cannot write blob: %s", strerror(errno));
    rc = ls_write_all(fd, data, n);
    if (rc == 0 && fsync(fd) < 0) rc = -errno;
    close(fd);
    if (rc < 0) {
        unlink(tmp);
        return ls_error_set(err, ls_errno_to_ls(rc), "cannot write blob: %s", strerror(-rc));
    }
    return blob_adopt(st, tmp, sha, err);
}

void
blob_garbage_add(struct store *st, const void *sha)
{
    if (st->ngarbage == st->garbage_cap) {
        size_t cap = st->garbage_cap ? st->garbage_cap * 2 : 16;
        void *p = realloc(st->garbage, cap * 32);
        if (!p) return; /* a leaked blob is harmless; a lost one is not */
        st->garbage = p;
        st->garbage_cap = cap;
    }
    memcpy(st->garbage[st->ngarbage++], sha, 32);
}

void
store_collect_garbage(struct store *st)
{
    sqlite3_stmt *s = db_stmt(st, S_BLOB_REF);
    for (size_t i = 0; i < st->ngarbage; i++) {
        int referenced;
        sqlite3_bind_blob(s, 1, st->garbage[i], 32, SQLITE_STATIC);
        referenced = sqlite3_step(s) == SQLITE_ROW;
        db_done(s);
        if (!referenced) {
            char path[4300];
            store_blob_path(st, st->garbage[i], path, sizeof path);
            unlink(path);
        }
    }
    st->ngarbage = 0;
}

/* Runs a DELETE ... RETURNING sha256, is-in-a-blob and notes blobs that may be unreferenced. */
int
blob_delete_versions(struct store *st, sqlite3_stmt *s, struct ls_error *err)
{
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        if (sqlite3_column_int(s, 1)) blob_garbage_add(st, sqlite3_column_blob(s, 0));
    db_done(s);
    return rc == SQLITE_DONE ? 0 : db_error(st, rc, err, "delete versions");
}

/* Walks blobs/ and removes every file no version refers to (after a snapshot replaced the
 * store's content). */
void
store_collect_all_garbage(struct store *st)
{
    char dir[4200], path[4500];
    DIR *top, *sub;
    struct dirent *de, *fe;
    snprintf(dir, sizeof dir, "%s/blobs", st->dir);
    if (!(top = opendir(dir))) return;
    while ((de = readdir(top))) {
        if (strlen(de->d_name) != 2) continue; /* the xx/ fan-out directories */
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (!(sub = opendir(path))) continue;
        while ((fe = readdir(sub))) {
            unsigned char sha[32];
            char hex[65];
            if (strlen(fe->d_name) != 62) continue;
            snprintf(hex, sizeof hex, "%.2s%.62s", de->d_name, fe->d_name);
            if (ls_hex_decode(hex, sha, 32) == 0) blob_garbage_add(st, sha);
        }
        closedir(sub);
    }
    closedir(top);
    store_collect_garbage(st);
}

/* Leftovers of writes and transfers a crash interrupted (at start, before anything runs). */
void
store_clean_tmp(struct store *st)
{
    char dir[4200], path[4500];
    DIR *top;
    struct dirent *de;
    snprintf(dir, sizeof dir, "%s/blobs/tmp", st->dir);
    if ((top = opendir(dir))) {
        while ((de = readdir(top))) {
            if (de->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
        closedir(top);
    }
}
