/*
 * util.h - small helpers shared by the server, the CLI and the tests: a capped growable buffer,
 * time, sizes and durations, hex, SHA-256, random ids, UTF-8 and careful file I/O.
 */
#ifndef LS_UTIL_H
#define LS_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* ---- capped buffer: grows from input, never past max (curl's dynbuf with toobig) ---- */
struct ls_buf {
    char *p;
    size_t len, cap, max;
};
void ls_buf_init(struct ls_buf *b, size_t max);
void ls_buf_release(struct ls_buf *b);
int ls_buf_append(struct ls_buf *b, const void *data, size_t n); /* 0, LS_ETOOBIG or LS_ENOMEM */
int ls_buf_printf(struct ls_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ls_buf_reset(struct ls_buf *b);

/* ---- time ---- */
int64_t ls_now_ms(void);  /* wall clock, ms since the Unix epoch */
int64_t ls_mono_ms(void); /* monotonic, for timeouts */
void ls_format_time(int64_t ms, char *out, size_t n); /* ISO 8601 UTC */
int ls_parse_time(const char *s, int64_t *ms);         /* ISO 8601 date/time or ms number */

/* ---- sizes and durations: "64K", "4G", "30s", "7d" ---- */
int ls_parse_size(const char *s, uint64_t *out);
int ls_parse_duration_ms(const char *s, int64_t *out);
int ls_parse_u64(const char *s, uint64_t *out);
int ls_parse_i64(const char *s, int64_t *out);

/* ---- hex, hashes, randomness ---- */
void ls_hex_encode(const unsigned char *in, size_t n, char *out); /* out has 2n+1 bytes */
int ls_hex_decode(const char *in, unsigned char *out, size_t n);  /* exactly 2n hex digits */
void ls_sha256(const void *data, size_t n, unsigned char out[32]);
int ls_random_bytes(void *out, size_t n);
void ls_random_hex(char *out, size_t nbytes); /* out has 2*nbytes+1 bytes */

/* ---- text ---- */
int ls_utf8_valid(const char *s, size_t n);

/* ---- files ---- */
int ls_write_all(int fd, const void *data, size_t n);     /* 0 or -errno */
int ls_mkdir_p(const char *path, int mode);               /* 0 or -errno */
int ls_fsync_dir(const char *dir);                        /* 0 or -errno */
int ls_errno_to_ls(int err);                              /* ENOSPC -> LS_ENOSPC, ... */

#endif
