/*
 * upload.c - resumable upload sessions: how bodies larger than one HTTP request reach the store.
 *
 * A session is a file under DATA/uploads/ that grows by appended parts. The client says at which
 * offset each part goes; a part at the wrong offset is refused with the size the server holds, so
 * an interrupted upload resumes exactly from there (S3's multipart idea, kept sequential so the
 * SHA-256 can be computed as the parts arrive). Memory stays bounded by one part.
 *
 * Not for: deciding where the body ends up (the commit turns the file into a put, done by the
 * writer thread, which moves it into the blob store).
 */
#include "node/server.h"
#include "common/log.h"
#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Sessions open at once. When all are taken, the least recently touched one that has been idle
 * for UPLOAD_IDLE_S makes room: abandoned sessions cannot block uploads until they expire. */
#define UPLOADS_MAX 1024
#define UPLOAD_EXPIRE_S (24 * 3600) /* a session untouched this long is abandoned */
#define UPLOAD_IDLE_S (10 * 60)     /* one untouched this long goes when the table is full */

struct session {
    struct session *next;
    char id[33];
    uint64_t size;   /* bytes hashed so far == bytes in the file */
    EVP_MD_CTX *md;  /* running SHA-256; NULL: taken from the file at the commit */
};

struct uploads {
    char dir[4096];
    uint64_t max_size;
    struct session *list;
    int count;
};

static void expire(struct uploads *u);
static void remove_committed(struct uploads *u);
static void make_room(struct uploads *u);

struct uploads *
uploads_new(const char *dir, uint64_t max_size)
{
    struct uploads *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    snprintf(u->dir, sizeof u->dir, "%s", dir);
    u->max_size = max_size;
    if (ls_mkdir_p(dir, 0755) < 0) {
        free(u);
        return NULL;
    }
    remove_committed(u);
    expire(u);
    return u;
}

static void
session_free(struct session *s)
{
    if (!s) return;
    EVP_MD_CTX_free(s->md);
    free(s);
}

void
uploads_free(struct uploads *u)
{
    if (!u) return;
    while (u->list) {
        struct session *s = u->list;
        u->list = s->next;
        session_free(s);
    }
    free(u);
}

#define COMMITTED ".commit" /* a finished session's file, waiting for the writer */

static int
valid_id_n(const char *id, size_t n)
{
    if (n != 32) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'))) return 0;
    return 1;
}

static int
valid_id(const char *id)
{
    return valid_id_n(id, strlen(id));
}

/* A session's file, or one that upload_finish renamed: both expire. */
static int
upload_file_name(const char *name)
{
    size_t n = strlen(name);
    return valid_id(name) ||
           (n == 32 + sizeof COMMITTED - 1 && valid_id_n(name, 32) && strcmp(name + 32, COMMITTED) == 0);
}

static void
file_of(struct uploads *u, const char *id, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", u->dir, id);
}

/* Finds a session, rebuilding its hash from the file after a restart. */
static int
lookup(struct uploads *u, const char *id, struct session **out, struct ls_error *err)
{
    char path[4200];
    struct session *s;
    struct stat sb;

    if (!valid_id(id)) return ls_error_set(err, LS_ENOTFOUND, "no upload session %s", id);
    for (s = u->list; s; s = s->next)
        if (strcmp(s->id, id) == 0) {
            *out = s;
            return 0;
        }
    file_of(u, id, path, sizeof path);
    if (stat(path, &sb) < 0) return ls_error_set(err, LS_ENOTFOUND, "no upload session %s", id);
    if (u->count >= UPLOADS_MAX) make_room(u);
    if (u->count >= UPLOADS_MAX)
        return ls_error_set(err, LS_EUNAVAIL, "too many upload sessions in progress");
    s = calloc(1, sizeof *s);
    if (!s || !(s->md = EVP_MD_CTX_new())) {
        session_free(s);
        return ls_error_set(err, LS_ENOMEM, NULL);
    }
    snprintf(s->id, sizeof s->id, "%s", id);
    if (sb.st_size == 0) {
        EVP_DigestInit_ex(s->md, EVP_sha256(), NULL);
    } else {
        /* A session from before a restart: its hash is taken from the file when it is
         * committed, on a reader thread; hashing gigabytes here would stop the loop. */
        EVP_MD_CTX_free(s->md);
        s->md = NULL;
    }
    s->size = (uint64_t)sb.st_size;
    s->next = u->list;
    u->list = s;
    u->count++;
    *out = s;
    return 0;
}

static void
forget(struct uploads *u, struct session *s)
{
    for (struct session **pp = &u->list; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            u->count--;
            session_free(s);
            return;
        }
}

static void
fill_info(struct uploads *u, struct session *s, struct upload_info *info)
{
    snprintf(info->id, sizeof info->id, "%s", s->id);
    info->size = s->size;
    file_of(u, s->id, info->file, sizeof info->file);
}

/* Removes sessions nobody has touched for UPLOAD_EXPIRE_S. */
static void
expire(struct uploads *u)
{
    DIR *dir = opendir(u->dir);
    struct dirent *de;
    time_t now = time(NULL);
    if (!dir) return;
    while ((de = readdir(dir))) {
        char path[sizeof u->dir + 256];
        struct stat sb;
        if (!upload_file_name(de->d_name)) continue;
        file_of(u, de->d_name, path, sizeof path);
        if (stat(path, &sb) == 0 && now - sb.st_mtime > UPLOAD_EXPIRE_S) {
            for (struct session *s = u->list; s; s = s->next)
                if (strcmp(s->id, de->d_name) == 0) {
                    forget(u, s);
                    break;
                }
            unlink(path);
        }
    }
    closedir(dir);
}

/*
 * At start no commit is running, so a ".commit" file (a session whose commit began) is left by
 * a crash. For a put it would be gone had the put committed (the writer moves it into the blob
 * store in the transaction), but a batch file stays until after its transaction committed, and
 * nothing tells the two cases apart. Renaming it back to a session could let a client commit an
 * applied batch a second time; the client got no answer from the crashed commit, so it checks
 * and sends again anyway. Such files are removed: tens of megabytes each, kept 24 hours before.
 */
static void
remove_committed(struct uploads *u)
{
    DIR *dir = opendir(u->dir);
    struct dirent *de;
    int n = 0;
    if (!dir) return;
    while ((de = readdir(dir))) {
        char path[sizeof u->dir + 256];
        if (!upload_file_name(de->d_name) || valid_id(de->d_name)) continue;
        file_of(u, de->d_name, path, sizeof path);
        if (unlink(path) == 0) n++;
    }
    closedir(dir);
    if (n) log_info("removed %d upload file(s) left by commits interrupted by a crash", n);
}

/* The table is full: expired sessions go, then the least recently touched session (its file's
 * mtime: every part touches it) if it has been idle for UPLOAD_IDLE_S. */
static void
make_room(struct uploads *u)
{
    struct session *lru = NULL;
    time_t lru_mtime = 0, now = time(NULL);
    char path[4200];
    expire(u);
    if (u->count < UPLOADS_MAX) return;
    for (struct session *s = u->list; s; s = s->next) {
        struct stat sb;
        file_of(u, s->id, path, sizeof path);
        if (stat(path, &sb) < 0) sb.st_mtime = 0; /* gone: the first to go */
        if (!lru || sb.st_mtime < lru_mtime) {
            lru = s;
            lru_mtime = sb.st_mtime;
        }
    }
    if (!lru || now - lru_mtime < UPLOAD_IDLE_S) return;
    log_info("upload sessions are all in use: removing %s, idle for %llds", lru->id,
             (long long)(now - lru_mtime));
    file_of(u, lru->id, path, sizeof path);
    unlink(path);
    forget(u, lru);
}

int
upload_create(struct uploads *u, struct upload_info *info, struct ls_error *err)
{
    char id[33], path[4200];
    struct session *s;
    int fd;
    if (u->count >= UPLOADS_MAX) make_room(u);
    if (u->count >= UPLOADS_MAX)
        return ls_error_set(err, LS_EUNAVAIL, "too many upload sessions in progress");
    ls_random_hex(id, 16);
    file_of(u, id, path, sizeof path);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return ls_error_set(err, ls_errno_to_ls(errno), "cannot create upload: %s", strerror(errno));
    close(fd);
    return lookup(u, id, &s, err) ?: (fill_info(u, s, info), 0);
}

int
upload_stat(struct uploads *u, const char *id, struct upload_info *info, struct ls_error *err)
{
    struct session *s;
    int rc = lookup(u, id, &s, err);
    if (rc == 0) fill_info(u, s, info);
    return rc;
}

int
upload_append(struct uploads *u, const char *id, uint64_t offset, const void *data, size_t n,
              struct upload_info *info, struct ls_error *err)
{
    char path[4200];
    struct session *s;
    int fd, rc;

    if ((rc = lookup(u, id, &s, err))) return rc;
    fill_info(u, s, info);
    if (offset != s->size)
        return ls_error_set(err, LS_ERANGE, "upload %s holds %llu bytes; send from there", id,
                            (unsigned long long)s->size);
    if (s->size + n > u->max_size)
        return ls_error_set(err, LS_ETOOBIG, "upload would exceed --max-body (%llu bytes)",
                            (unsigned long long)u->max_size);
    file_of(u, id, path, sizeof path);
    fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) return ls_error_set(err, ls_errno_to_ls(errno), "upload: %s", strerror(errno));
    rc = ls_write_all(fd, data, n);
    if (rc < 0) {
        /* Cut back to the last whole part, so the next attempt starts from a known size. */
        if (ftruncate(fd, (off_t)s->size) < 0) { /* the size check will catch it */
        }
        close(fd);
        return ls_error_set(err, ls_errno_to_ls(rc), "upload: %s", strerror(-rc));
    }
    close(fd);
    if (s->md) EVP_DigestUpdate(s->md, data, n);
    s->size += n;
    info->size = s->size;
    return 0;
}

struct upload_commit {
    EVP_MD_CTX *md; /* the running hash, or NULL: hash the file */
};

int
upload_finish_start(struct uploads *u, const char *id, struct upload_info *info,
                    struct upload_commit **out, struct ls_error *err)
{
    char committed[sizeof info->file + sizeof COMMITTED];
    struct upload_commit *uc;
    struct session *s;
    int rc;
    if ((rc = lookup(u, id, &s, err))) return rc;
    fill_info(u, s, info);
    if (!(uc = calloc(1, sizeof *uc))) return ls_error_set(err, LS_ENOMEM, NULL);
    /* Out of the session's name first: a part sent after the commit began cannot reach the
     * file that the hash is taken of (it finds no session instead). */
    snprintf(committed, sizeof committed, "%s%s", info->file, COMMITTED);
    if (strlen(committed) >= sizeof info->file || rename(info->file, committed) < 0) {
        free(uc);
        return ls_error_set(err, LS_EIO, "upload: cannot rename %s", info->file);
    }
    memcpy(info->file, committed, strlen(committed) + 1);
    uc->md = s->md;
    s->md = NULL;
    forget(u, s);
    *out = uc;
    return 0;
}

int
upload_finish_run(struct upload_commit *uc, struct upload_info *info, struct ls_error *err)
{
    int fd = open(info->file, O_RDONLY | O_CLOEXEC), rc = 0;
    if (fd < 0) {
        rc = ls_error_set(err, ls_errno_to_ls(errno), "upload: %s", strerror(errno));
        goto out;
    }
    if (!uc->md) { /* a session resumed after a restart: hash what the file holds */
        char buf[1 << 16];
        ssize_t n;
        if (!(uc->md = EVP_MD_CTX_new())) {
            rc = ls_error_set(err, LS_ENOMEM, NULL);
            goto out;
        }
        EVP_DigestInit_ex(uc->md, EVP_sha256(), NULL);
        while ((n = read(fd, buf, sizeof buf)) > 0) EVP_DigestUpdate(uc->md, buf, (size_t)n);
        if (n < 0) {
            rc = ls_error_set(err, ls_errno_to_ls(errno), "upload: %s", strerror(errno));
            goto out;
        }
    }
    EVP_DigestFinal_ex(uc->md, info->sha, NULL);
    if (fsync(fd) < 0) rc = ls_error_set(err, ls_errno_to_ls(errno), "upload: %s", strerror(errno));
out:
    if (fd >= 0) close(fd);
    if (rc) upload_reopen(info->file); /* the client may commit again */
    upload_commit_free(uc);
    return rc;
}

void
upload_commit_free(struct upload_commit *uc)
{
    if (!uc) return;
    EVP_MD_CTX_free(uc->md);
    free(uc);
}

void
upload_reopen(const char *committed)
{
    char file[4200];
    size_t n = strlen(committed), k = sizeof COMMITTED - 1;
    if (n <= k || n - k >= sizeof file || strcmp(committed + n - k, COMMITTED) != 0) return;
    memcpy(file, committed, n - k);
    file[n - k] = '\0';
    rename(committed, file); /* gone already when the writer adopted it: nothing to do */
}

int
upload_abort(struct uploads *u, const char *id, struct ls_error *err)
{
    struct session *s;
    char path[4200];
    int rc;
    if ((rc = lookup(u, id, &s, err))) return rc;
    file_of(u, id, path, sizeof path);
    unlink(path);
    forget(u, s);
    return 0;
}
