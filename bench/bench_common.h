/*
 * bench_common.h - small helpers shared by the benchmark programs (header only: every bench program
 * is its own executable). Document bodies are generated here so that the bare SQLite figure and
 * the lockstep figures write exactly the same bytes.
 */
#ifndef LS_BENCH_COMMON_H
#define LS_BENCH_COMMON_H

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

#define BENCH_BODY_DEFAULT 1024
#define BENCH_BODY_MAX (1u << 20)

static inline double
bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds (user + system) this process has used so far. */
static inline double
bench_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static inline void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static inline void
bench_die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "FATAL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    _exit(1); /* threads may be running: no atexit handlers */
}

static inline long long
bench_num(const char *opt, const char *v, long long min, long long max)
{
    char *end;
    long long n;
    errno = 0;
    n = strtoll(v ? v : "", &end, 10);
    if (!v || errno || end == v || *end || n < min || n > max)
        bench_die("%s wants an integer from %lld to %lld, got '%s'", opt, min, max, v ? v : "");
    return n;
}

static inline double
bench_dbl(const char *opt, const char *v, double min, double max)
{
    char *end;
    double d;
    errno = 0;
    d = strtod(v ? v : "", &end);
    if (!v || errno || end == v || *end || d < min || d > max)
        bench_die("%s wants a number from %g to %g, got '%s'", opt, min, max, v ? v : "");
    return d;
}

/*
 * Fills out[0..n) with printable text that needs no JSON escaping: a fixed pseudo-random
 * pattern (same on every run) with the document number written at the start, so that bodies
 * differ from one document to the next without costing the generator much.
 */
static inline void
bench_fill_body(char *out, size_t n, uint64_t docno)
{
    static char pattern[BENCH_BODY_MAX];
    static size_t made;
    static const char alphabet[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.-";
    char num[32];
    int k;
    if (n > BENCH_BODY_MAX) n = BENCH_BODY_MAX;
    if (made < n) { /* first call happens before any thread starts */
        uint64_t x = 0x9E3779B97F4A7C15ull;
        for (size_t i = 0; i < BENCH_BODY_MAX; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            pattern[i] = alphabet[x % (sizeof alphabet - 1)];
        }
        made = BENCH_BODY_MAX;
    }
    memcpy(out, pattern, n);
    k = snprintf(num, sizeof num, "doc %llu ", (unsigned long long)docno);
    memcpy(out, num, (size_t)k < n ? (size_t)k : n);
}

static inline int
bench_cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* p in [0,1] of a sorted array (nearest rank). */
static inline double
bench_pct(const double *sorted, size_t n, double p)
{
    size_t i;
    if (n == 0) return 0;
    i = (size_t)(p * (double)n + 0.999999);
    if (i < 1) i = 1;
    if (i > n) i = n;
    return sorted[i - 1];
}

/* A growable byte buffer, always NUL-terminated (the programs parse replies in place). */
struct dbuf {
    char *p;
    size_t len, cap;
};

static inline void
dbuf_reserve(struct dbuf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1) cap *= 2;
    if (!(b->p = realloc(b->p, cap))) bench_die("out of memory");
    b->cap = cap;
}

static inline void
dbuf_add(struct dbuf *b, const void *data, size_t n)
{
    dbuf_reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static inline void dbuf_printf(struct dbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline void
dbuf_printf(struct dbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    dbuf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Drops the first n bytes (what a parser has consumed). */
static inline void
dbuf_consume(struct dbuf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->p, b->p + n, b->len - n);
        b->len -= n;
    }
    if (b->p) b->p[b->len] = '\0';
}

#endif
