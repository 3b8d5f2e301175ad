/* util.c - see util.h. Nothing here knows about items, logs or sockets. */
#include "common/util.h"
#include "common/err.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- buffer */

void
ls_buf_init(struct ls_buf *b, size_t max)
{
    b->p = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

void
ls_buf_release(struct ls_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void
ls_buf_reset(struct ls_buf *b)
{
    b->len = 0;
    if (b->p) b->p[0] = '\0';
}

static int
buf_reserve(struct ls_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (extra > b->max || b->len + extra > b->max) return LS_ETOOBIG;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;
        while (cap < need) cap *= 2;
        p = realloc(b->p, cap);
        if (!p) return LS_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    return 0;
}

int
ls_buf_append(struct ls_buf *b, const void *data, size_t n)
{
    int rc = buf_reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int
ls_buf_printf(struct ls_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n, rc;
    char small[256];

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return LS_EINVAL;
    if ((size_t)n < sizeof small) return ls_buf_append(b, small, (size_t)n);
    if ((rc = buf_reserve(b, (size_t)n))) return rc;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

/* ---------------------------------------------------------------- time */

int64_t
ls_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
ls_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
ls_format_time(int64_t ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    size_t k;
    gmtime_r(&t, &tm);
    k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03dZ", (int)(ms % 1000));
}

/*
 * Reads what format_time writes, and the ISO 8601 forms people type: a date, a date and time
 * with optional fractional seconds (milliseconds kept, further digits dropped), then `Z`, an
 * offset (`+02:00`, `-0530`) or nothing (UTC). A plain number is milliseconds since the epoch.
 */
int
ls_parse_time(const char *s, int64_t *ms)
{
    struct tm tm;
    const char *end;
    int64_t v, frac = 0, offset_s = 0;

    if (ls_parse_i64(s, &v) == 0) {
        *ms = v;
        return 0;
    }
    memset(&tm, 0, sizeof tm);
    end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end && *end == '.') {
        int digits = 0;
        for (end++; isdigit((unsigned char)*end); end++, digits++)
            if (digits < 3) frac = frac * 10 + (*end - '0');
        if (digits == 0) return LS_EINVAL;
        for (; digits < 3; digits++) frac *= 10;
    }
    if (!end) {
        memset(&tm, 0, sizeof tm);
        end = strptime(s, "%Y-%m-%d", &tm);
        if (!end) return LS_EINVAL;
    }
    if (*end == 'Z') {
        end++;
    } else if (*end == '+' || *end == '-') {
        int sign = *end == '-' ? -1 : 1, hh, mm;
        const char *d = end + 1;
        if (!isdigit((unsigned char)d[0]) || !isdigit((unsigned char)d[1])) return LS_EINVAL;
        hh = (d[0] - '0') * 10 + (d[1] - '0');
        d += 2;
        if (*d == ':') d++;
        if (!isdigit((unsigned char)d[0]) || !isdigit((unsigned char)d[1])) return LS_EINVAL;
        mm = (d[0] - '0') * 10 + (d[1] - '0');
        if (hh > 23 || mm > 59) return LS_EINVAL;
        offset_s = sign * (hh * 3600 + mm * 60);
        end = d + 2;
    }
    if (*end) return LS_EINVAL;
    /* 12:00+02:00 is 10:00 UTC */
    *ms = ((int64_t)timegm(&tm) - offset_s) * 1000 + frac;
    return 0;
}

/* ---------------------------------------------------------------- numbers */

int
ls_parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    if (!s || !isdigit((unsigned char)*s)) return LS_EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end) return LS_EINVAL;
    *out = v;
    return 0;
}

int
ls_parse_i64(const char *s, int64_t *out)
{
    char *end;
    long long v;
    if (!s || !*s || isspace((unsigned char)*s)) return LS_EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end) return LS_EINVAL;
    *out = v;
    return 0;
}

int
ls_parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    uint64_t mul = 1;
    if (!s || !isdigit((unsigned char)*s)) return LS_EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno) return LS_EINVAL;
    switch (toupper((unsigned char)*end)) {
    case '\0': break;
    case 'K': mul = 1ULL << 10; end++; break;
    case 'M': mul = 1ULL << 20; end++; break;
    case 'G': mul = 1ULL << 30; end++; break;
    case 'T': mul = 1ULL << 40; end++; break;
    case 'B': break;
    default: return LS_EINVAL;
    }
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return LS_EINVAL;
    if (v > UINT64_MAX / mul) return LS_EINVAL;
    *out = v * mul;
    return 0;
}

int
ls_parse_duration_ms(const char *s, int64_t *out)
{
    char *end;
    long long v;
    int64_t mul = 1000;
    if (!s || !isdigit((unsigned char)*s)) return LS_EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno) return LS_EINVAL;
    if (strcmp(end, "ms") == 0) mul = 1;
    else if (strcmp(end, "s") == 0 || *end == '\0') mul = 1000;
    else if (strcmp(end, "m") == 0) mul = 60000;
    else if (strcmp(end, "h") == 0) mul = 3600000;
    else if (strcmp(end, "d") == 0) mul = 86400000;
    else return LS_EINVAL;
    if (v > INT64_MAX / mul) return LS_EINVAL;
    *out = (int64_t)v * mul;
    return 0;
}

/* ---------------------------------------------------------------- hex, hashes */

void
ls_hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int
ls_hex_decode(const char *in, unsigned char *out, size_t n)
{
    if (strlen(in) != 2 * n) return LS_EINVAL;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
        if (hi < 0 || lo < 0) return LS_EINVAL;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

/* The algorithm is fetched once: EVP_Digest(..., EVP_sha256()) looks it up on every call,
 * a good part of the cost for a 1 KiB body. (A context per thread would save a little more
 * but outlives its thread.) */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void
sha256_init(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void
ls_sha256(const void *data, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    pthread_once(&sha256_once, sha256_init);
    EVP_Digest(data, n, out, &len, sha256_md ? sha256_md : EVP_sha256(), NULL);
}

int
ls_random_bytes(void *out, size_t n)
{
    return RAND_bytes(out, (int)n) == 1 ? 0 : LS_EINTERNAL;
}

void
ls_random_hex(char *out, size_t nbytes)
{
    unsigned char raw[64];
    if (nbytes > sizeof raw) nbytes = sizeof raw;
    if (ls_random_bytes(raw, nbytes)) abort(); /* no entropy: nothing safe to do */
    ls_hex_encode(raw, nbytes, out);
}

/* ---------------------------------------------------------------- text */

/* Strict UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
int
ls_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + len > n) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

/* ---------------------------------------------------------------- files */

int
ls_write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int
ls_mkdir_p(const char *path, int mode)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n >= sizeof tmp) return -ENAMETOOLONG;
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, (mode_t)mode) < 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(tmp, (mode_t)mode) < 0 && errno != EEXIST) return -errno;
    return 0;
}

int
ls_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0) return -errno;
    if (fsync(fd) < 0) rc = -errno;
    close(fd);
    return rc;
}

int
ls_errno_to_ls(int err)
{
    if (err < 0) err = -err;
    switch (err) {
    case ENOSPC:
    case EDQUOT: return LS_ENOSPC;
    case ENOMEM: return LS_ENOMEM;
    case ENOENT: return LS_ENOTFOUND;
    default: return LS_EIO;
    }
}
