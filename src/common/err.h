/*
 * err.h - lockstep's error codes.
 *
 * Functions return 0 or a negative LS_E* code. One table gives the enum, the short machine code
 * that the HTTP API puts in {"error":{"code":...}}, the HTTP status, and a default message, so the
 * four never drift apart (libuv's UV_ERRNO_MAP does the same).
 */
#ifndef LS_ERR_H
#define LS_ERR_H

#define LS_ERRNO_MAP(X)                                                                            \
    X(INVAL, "bad_request", 400, "invalid argument")                                              \
    X(PATH, "bad_path", 400, "invalid path")                                                      \
    X(META, "bad_meta", 400, "meta must be a JSON object")                                        \
    X(BATCH, "bad_batch", 400, "malformed batch")                                                 \
    X(NOTFOUND, "not_found", 404, "not found")                                                    \
    X(EXISTS, "exists", 409, "already exists")                                                    \
    X(CONFLICT, "conflict", 409, "version conflict")                                              \
    X(READONLY, "read_only", 409, "this server does not accept writes")                           \
    X(TOOBIG, "too_large", 413, "too large")                                                      \
    X(RANGE, "bad_offset", 409, "offset does not match")                                          \
    X(AUTH, "unauthorized", 401, "missing or invalid token")                                      \
    X(DENIED, "forbidden", 403, "not allowed for this token's role")                              \
    X(TIMEOUT, "timeout", 504, "timed out")                                                       \
    X(NOSPC, "disk_full", 507, "no space left on the data disk")                                  \
    X(IO, "io_error", 500, "input/output error")                                                  \
    X(NOMEM, "out_of_memory", 503, "out of memory")                                               \
    X(PROTO, "protocol_error", 400, "protocol error")                                             \
    X(UNAVAIL, "unavailable", 503, "temporarily unavailable")                                     \
    X(INTERNAL, "internal", 500, "internal error")

enum ls_err {
    LS_OK = 0,
#define LS_ERR_ENUM(name, code, status, msg) LS_E##name,
    LS_E_FIRST_ = -1000,
    LS_ERRNO_MAP(LS_ERR_ENUM)
#undef LS_ERR_ENUM
};

const char *ls_strerror(int err);   /* default message */
const char *ls_errcode(int err);    /* machine code, e.g. "bad_path" */
int ls_errstatus(int err);          /* HTTP status */

/*
 * An error with a message written for the person who caused it. Library code fills one in and
 * returns its code; the server or the CLI decides what to print.
 */
struct ls_error {
    int code;
    char msg[512];
};

int ls_error_set(struct ls_error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ls_error_clear(struct ls_error *e);
/* Puts "line 7: " (or any prefix) in front of the message. */
void ls_error_prefix(struct ls_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
