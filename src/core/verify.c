/*
 * verify.c - the scrub (verify.h): every inline body and every blob file rehashed against the
 * SHA-256 its versions record, at a bounded rate, on the caller's thread and store handle.
 *
 * The store is read in short slices (store_bodies), each its own read transaction, so that a
 * long scrub never pins an old snapshot (which would keep the WAL from being checkpointed); the
 * files and the pauses that keep the rate come between slices, with no statement open.
 *
 * Not for: repairing anything (a damaged body is reported; a replica can be resynced).
 */
#include "core/verify.h"
#include "core/store.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SLICE_ROWS 256
#define SLICE_BYTES (4u << 20) /* an inline slice ends past this many bytes of bodies */
#define CHUNK (1u << 20)       /* blob files are read this much at a time */

struct scrub {
    struct store *st;
    const struct verify_options *opt;
    verify_damage_cb cb;
    void *arg;
    struct verify_result *res;
    int64_t start_ms;
    uint64_t slice_bytes;
    int64_t last_rowid;
    /* the blob slice, copied so that the files are read with no statement open */
    struct blob_row {
        int64_t rowid;
        unsigned char sha[32];
        char *path;
        int64_t version;
    } rows[SLICE_ROWS];
    int nrows;
};

static int
cancelled(const struct scrub *s)
{
    return s->opt->cancel && atomic_load(s->opt->cancel);
}

/* Sleeps until the bytes hashed so far fit the rate, in short naps that notice a cancel. */
static int
throttle(struct scrub *s)
{
    if (!s->opt->rate) return cancelled(s) ? LS_EUNAVAIL : 0;
    for (;;) {
        int64_t due = s->start_ms + (int64_t)(s->res->bytes * 1000 / s->opt->rate);
        int64_t now = ls_mono_ms(), nap;
        if (cancelled(s)) return LS_EUNAVAIL;
        if (now >= due) return 0;
        nap = due - now > 100 ? 100 : due - now;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = nap * 1000000};
        nanosleep(&ts, NULL);
    }
}

static int
report(struct scrub *s, const char *path, int64_t version, const unsigned char sha[32],
       const char *problem, const char *blob)
{
    s->res->damaged++;
    return s->cb ? s->cb(s->arg, path, version, sha, problem, blob) : 0;
}

static int
on_inline(void *arg, const struct store_body_ref *b)
{
    struct scrub *s = arg;
    unsigned char sha[32];
    int rc = 0;
    ls_sha256(b->body, b->body_len, sha);
    s->res->checked++;
    s->res->bytes += b->body_len;
    s->slice_bytes += b->body_len;
    s->last_rowid = b->rowid;
    if (memcmp(sha, b->sha, 32) || b->body_len != b->size)
        rc = report(s, b->path, b->version, b->sha, "sha256 mismatch", NULL);
    if (rc) return rc;
    return s->slice_bytes >= SLICE_BYTES ? 1 : 0;
}

static int
on_blob_row(void *arg, const struct store_body_ref *b)
{
    struct scrub *s = arg;
    struct blob_row *r = &s->rows[s->nrows];
    if (!(r->path = strdup(b->path))) return LS_ENOMEM;
    r->rowid = b->rowid;
    memcpy(r->sha, b->sha, 32);
    r->version = b->version;
    s->nrows++;
    return 0;
}

/* Hashes one blob file: NULL when it matches, else the problem. */
static const char *
check_file(struct scrub *s, const char *file, const unsigned char want[32], char *why, size_t n)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *buf = malloc(CHUNK), got[32];
    const char *problem = NULL;
    int fd = -1;
    if (!md || !buf) {
        snprintf(why, n, "unreadable: out of memory");
        problem = why;
        goto out;
    }
    if ((fd = open(file, O_RDONLY | O_CLOEXEC)) < 0) {
        if (errno == ENOENT) {
            problem = "missing";
        } else {
            snprintf(why, n, "unreadable: %s", strerror(errno));
            problem = why;
        }
        goto out;
    }
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    for (;;) {
        ssize_t got_n = read(fd, buf, CHUNK);
        if (got_n < 0 && errno == EINTR) continue;
        if (got_n < 0) {
            snprintf(why, n, "unreadable: %s", strerror(errno));
            problem = why;
            goto out;
        }
        if (got_n == 0) break;
        EVP_DigestUpdate(md, buf, (size_t)got_n);
        s->res->bytes += (uint64_t)got_n;
        if (throttle(s)) {
            problem = ""; /* cancelled: the caller sees it */
            goto out;
        }
    }
    EVP_DigestFinal_ex(md, got, NULL);
    if (memcmp(got, want, 32)) problem = "sha256 mismatch";
out:
    if (fd >= 0) close(fd);
    free(buf);
    EVP_MD_CTX_free(md);
    return problem;
}

/* A bad file may only have lost its last version meanwhile (the writer removes unreferenced
 * blobs): it is damage only while the version that named it is still there. */
static int
still_there_cb(void *arg, const struct store_body_ref *b)
{
    *(int64_t *)arg = b->rowid;
    return 1;
}

static int
still_there(struct scrub *s, const struct blob_row *r)
{
    int64_t found = -1;
    struct ls_error err;
    if (store_bodies(s->st, 1, r->sha, r->rowid - 1, 1, still_there_cb, &found, &err) < 0)
        return 1; /* cannot tell: report it */
    return found == r->rowid;
}

static int
check_blob_slice(struct scrub *s, unsigned char last_sha[32], int *have_last,
                 const char **last_problem, char *why, size_t n)
{
    char file[4200], rel[80], hex[65];
    for (int i = 0; i < s->nrows; i++) {
        struct blob_row *r = &s->rows[i];
        int rc;
        s->res->checked++;
        if (!*have_last || memcmp(last_sha, r->sha, 32)) {
            store_blob_path(s->st, r->sha, file, sizeof file);
            *last_problem = check_file(s, file, r->sha, why, n);
            if (cancelled(s)) return LS_EUNAVAIL;
            memcpy(last_sha, r->sha, 32);
            *have_last = 1;
            s->res->blobs++;
        }
        if (!*last_problem || !still_there(s, r)) continue;
        ls_hex_encode(r->sha, 32, hex);
        snprintf(rel, sizeof rel, "blobs/%.2s/%s", hex, hex + 2);
        if ((rc = report(s, r->path, r->version, r->sha, *last_problem, rel))) return rc;
    }
    return 0;
}

static void
free_rows(struct scrub *s)
{
    for (int i = 0; i < s->nrows; i++) free(s->rows[i].path);
    s->nrows = 0;
}

int
store_verify(struct store *st, const struct verify_options *opt, verify_damage_cb cb, void *arg,
             struct verify_result *res, struct ls_error *err)
{
    struct scrub *s = calloc(1, sizeof *s);
    unsigned char last_sha[32] = {0}, after_sha[32] = {0};
    char why[300];
    const char *last_problem = NULL;
    int have_last = 0, n, rc = 0;

    memset(res, 0, sizeof *res);
    if (!s) return ls_error_set(err, LS_ENOMEM, NULL);
    *s = (struct scrub){.st = st, .opt = opt, .cb = cb, .arg = arg, .res = res,
                        .start_ms = ls_mono_ms()};
    /* the inline bodies, by rowid */
    do {
        s->slice_bytes = 0;
        if ((n = store_bodies(st, 0, NULL, s->last_rowid, SLICE_ROWS, on_inline, s, err)) < 0) {
            rc = n;
            goto out;
        }
        if ((rc = throttle(s))) goto cancel;
    } while (n > 0);
    /* the blob files, each once, in hash order */
    int64_t after_rowid = 0;
    do {
        n = store_bodies(st, 1, after_sha, after_rowid, SLICE_ROWS, on_blob_row, s, err);
        if (n < 0) {
            rc = n;
            goto out;
        }
        if (s->nrows) {
            memcpy(after_sha, s->rows[s->nrows - 1].sha, 32);
            after_rowid = s->rows[s->nrows - 1].rowid;
        }
        rc = check_blob_slice(s, last_sha, &have_last, &last_problem, why, sizeof why);
        free_rows(s);
        if (rc == LS_EUNAVAIL) goto cancel;
        if (rc) {
            ls_error_set(err, rc, NULL);
            goto out;
        }
    } while (n > 0);
    goto out;
cancel:
    rc = ls_error_set(err, LS_EUNAVAIL, "the verify was cancelled");
out:
    free_rows(s);
    free(s);
    return rc;
}
