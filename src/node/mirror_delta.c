/*
 * mirror_delta.c - a large changed file sent to a directory target as an rsync-style delta
 * (librsync; docs/mirror.md): the signature of the target's copy, the delta of the source
 * against it, and the patch of that copy into a temporary file, renamed into place. All of it on
 * the run's thread; the signature and the delta live in unlinked files of the target directory,
 * so memory holds only librsync's hash table of the copy's blocks.
 *
 * Not for: deciding when to use it, or writing whole files (mirror_package.c).
 */
#include "node/mirror_int.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <librsync.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A temporary file beside final, named like the others (a crash's leftovers are swept), opened
 * read-write; unlinked at once when scratch. NULL with errno. */
static FILE *
tmp_open(const char *final, int scratch, char *tmp, size_t n)
{
    char hex[13];
    const char *slash = strrchr(final, '/');
    FILE *f;
    int fd;
    ls_random_hex(hex, 6);
    snprintf(tmp, n, "%.*s/" TMP_PREFIX "%s", (int)(slash - final), final, hex);
    if ((fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) return NULL;
    if (scratch) {
        unlink(tmp);
        *tmp = '\0';
    }
    if (!(f = fdopen(fd, "w+b"))) {
        int e = errno;
        close(fd);
        if (*tmp) unlink(tmp);
        errno = e;
    }
    return f;
}

/* The SHA-256 of what fd holds, read from its start. */
static int
sha_of(int fd, unsigned char sha[32])
{
    char buf[1 << 16];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int len = 32;
    off_t off = 0;
    ssize_t n;
    int rc = 0;
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    while ((n = pread(fd, buf, sizeof buf, off)) > 0) {
        EVP_DigestUpdate(md, buf, (size_t)n);
        off += n;
    }
    if (n < 0) rc = -errno;
    EVP_DigestFinal_ex(md, sha, &len);
    EVP_MD_CTX_free(md);
    return rc;
}

int
mirror_put_delta(const char *final, int src, int64_t mode, int64_t mtime_ns, unsigned char sha[32],
                 int64_t *delta_bytes, const char **what)
{
    char tmp[4300] = "", scratch[4300];
    FILE *basis = NULL, *sig = NULL, *delta = NULL, *out = NULL, *in = NULL;
    rs_signature_t *sums = NULL;
    rs_stats_t stats;
    rs_magic_number magic = RS_BLAKE2_SIG_MAGIC;
    size_t block_len = 0, strong_len = 0; /* recommended block, the full strong sum */
    struct timespec ts[2];
    struct stat sb;
    rs_result rr;
    int fd, rc = 0;

    *what = "open the target's copy";
    if ((fd = open(final, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0) return -errno;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || !(basis = fdopen(fd, "rb"))) {
        rc = errno ? -errno : -EINVAL;
        close(fd);
        return rc;
    }
    *what = "make the copy's signature";
    if (!(sig = tmp_open(final, 1, scratch, sizeof scratch))) goto fail_errno;
    if (rs_sig_args((rs_long_t)sb.st_size, &magic, &block_len, &strong_len) != RS_DONE ||
        (rr = rs_sig_file(basis, sig, block_len, strong_len, magic, &stats)) != RS_DONE)
        goto fail_rs;
    rewind(sig);
    if ((rr = rs_loadsig_file(sig, &sums, &stats)) != RS_DONE ||
        (rr = rs_build_hash_table(sums)) != RS_DONE)
        goto fail_rs;
    fclose(sig);
    sig = NULL;

    *what = "make the delta";
    if (!(delta = tmp_open(final, 1, scratch, sizeof scratch))) goto fail_errno;
    if ((fd = dup(src)) < 0) goto fail_errno;
    if (!(in = fdopen(fd, "rb"))) {
        close(fd);
        goto fail_errno;
    }
    if ((rr = rs_delta_file(sums, in, delta, &stats)) != RS_DONE) goto fail_rs;
    fflush(delta);
    *delta_bytes = (int64_t)ftello(delta);
    rewind(delta);
    rs_free_sumset(sums);
    sums = NULL;

    *what = "patch the copy";
    if (!(out = tmp_open(final, 0, tmp, sizeof tmp))) goto fail_errno;
    rewind(basis);
    if ((rr = rs_patch_file(basis, delta, out, &stats)) != RS_DONE) goto fail_rs;
    *what = "write";
    if (fflush(out) != 0) goto fail_errno;
    fd = fileno(out);
    if ((rc = sha_of(fd, sha))) goto out;
    ts[0].tv_sec = ts[1].tv_sec = (time_t)(mtime_ns / 1000000000);
    ts[0].tv_nsec = ts[1].tv_nsec = (long)(mtime_ns % 1000000000);
    *what = "set mode and mtime";
    if (fchmod(fd, (mode_t)(mode & 07777)) < 0 || futimens(fd, ts) < 0) goto fail_errno;
    *what = "fsync";
    if (fsync(fd) < 0) goto fail_errno;
    *what = "rename into place";
    if (rename(tmp, final) < 0) goto fail_errno;
    *tmp = '\0';
    goto out;
fail_rs:
    rc = -EIO;
    (void)rr;
    goto out;
fail_errno:
    rc = errno ? -errno : -EIO;
out:
    if (sums) rs_free_sumset(sums);
    if (in) fclose(in);
    if (sig) fclose(sig);
    if (delta) fclose(delta);
    if (out) fclose(out);
    if (*tmp) unlink(tmp);
    fclose(basis);
    return rc;
}
