/*
 * util.h - small helpers shared by the server, the CLI and the tests: a capped growable buffer,
 * time, sizes and durations, hex, SHA-256, random ids, UTF-8 and careful file I/O.
 */
#ifndef LS_UTIL_H
#define LS_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* ---- capped buffer: grows from input, never past max (curl's dynbuf with toobig) ---- */
struct buf {
    char *p;
    size_t len, cap, max;
};
void buf_init(struct buf *b, size_t max);
void buf_release(struct buf *b);
int buf_append(struct buf *b, const void *data, size_t n); /* 0, LS_ETOOBIG or LS_ENOMEM */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_reset(struct buf *b);

/* ---- time ---- */
int64_t now_ms(void);  /* wall clock, ms since the Unix epoch */
int64_t mono_ms(void); /* monotonic, for timeouts */
void format_time(int64_t ms, char *out, size_t n); /* ISO 8601 UTC */
int parse_time(const char *s, int64_t *ms);         /* ISO 8601 date/time or ms number */

/* ---- sizes and durations: "64K", "4G", "30s", "7d" ---- */
int parse_size(const char *s, uint64_t *out);
int parse_duration_ms(const char *s, int64_t *out);
int parse_u64(const char *s, uint64_t *out);
int parse_i64(const char *s, int64_t *out);

/* ---- hex, hashes, randomness ---- */
void hex_encode(const unsigned char *in, size_t n, char *out); /* out has 2n+1 bytes */
int hex_decode(const char *in, unsigned char *out, size_t n);  /* exactly 2n hex digits */
void sha256(const void *data, size_t n, unsigned char out[32]);
int random_bytes(void *out, size_t n);
void random_hex(char *out, size_t nbytes); /* out has 2*nbytes+1 bytes */

/* ---- text ---- */
int utf8_valid(const char *s, size_t n);

/* ---- files ---- */
int write_all(int fd, const void *data, size_t n);     /* 0 or -errno */
int mkdir_p(const char *path, int mode);               /* 0 or -errno */
int fsync_dir(const char *dir);                        /* 0 or -errno */
int errno_to_ls(int err);                              /* ENOSPC -> LS_ENOSPC, ... */

#endif
