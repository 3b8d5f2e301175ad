/*
 * log.h - the server's log: one line per event on stderr, with time, level and node name.
 * Library code (src/core, src/proto) never logs; it returns errors for the caller to report.
 */
#ifndef LS_LOG_H
#define LS_LOG_H

enum { LS_LOG_DEBUG, LS_LOG_INFO, LS_LOG_WARN, LS_LOG_ERROR };

void ls_log_setup(const char *node_name, int min_level);
void ls_log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) ls_log_msg(LS_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) ls_log_msg(LS_LOG_INFO, __VA_ARGS__)
#define log_warn(...) ls_log_msg(LS_LOG_WARN, __VA_ARGS__)
#define log_error(...) ls_log_msg(LS_LOG_ERROR, __VA_ARGS__)

#endif
