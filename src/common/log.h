/*
 * log.h - the server's log: one line per event on stderr in logfmt, with time, level and node
 * name (ts=... level=warn node=NAME msg="..."), and the most recent warnings and errors kept in
 * memory for GET /v1/status.
 * Library code (src/core, src/proto) never logs; it returns errors for the caller to report.
 */
#ifndef LS_LOG_H
#define LS_LOG_H

#include <stddef.h>
#include <stdint.h>

enum { LS_LOG_DEBUG, LS_LOG_INFO, LS_LOG_WARN, LS_LOG_ERROR };

void ls_log_setup(const char *node_name, int min_level);
void ls_log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *ls_log_level_name(int level);
/* Messages at level since start, logged or not (--log-level); warn and error are counted. */
uint64_t ls_log_count(int level);

/* The warnings and errors kept (whatever --log-level hides from stderr), oldest first. */
#define LS_LOG_RECENT_MAX 50
#define LS_LOG_RECENT_MSG 256 /* a longer message is cut (the log line on stderr is whole) */
struct ls_log_entry {
    int64_t ms; /* wall clock, ms since the epoch */
    int level;
    char msg[LS_LOG_RECENT_MSG];
};
/* Copies at most max of the newest into out, oldest first; returns how many. Any thread. */
size_t ls_log_recent(struct ls_log_entry *out, size_t max);
/* Appends value to dst (cap bytes, kept NUL-terminated) as a logfmt value: bare when it can be,
 * else in double quotes with ", \ and control characters escaped. Returns the length now. */
size_t ls_logfmt_value(char *dst, size_t len, size_t cap, const char *value);

#define log_debug(...) ls_log_msg(LS_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) ls_log_msg(LS_LOG_INFO, __VA_ARGS__)
#define log_warn(...) ls_log_msg(LS_LOG_WARN, __VA_ARGS__)
#define log_error(...) ls_log_msg(LS_LOG_ERROR, __VA_ARGS__)

#endif
