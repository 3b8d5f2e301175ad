/*
 * log.c - the log on stderr in logfmt, one write() per line so that lines from many threads
 * never interleave:
 *
 *   ts=2026-12-03T14:00:00.123Z level=info node=delivery-1 msg="downstream R connected"
 *
 * A value with a space, a quote, '=' or a control character is quoted, with ", \ and control
 * characters escaped (\n, \t, \r, \uXXXX), so that a message never spans two lines. Warnings and
 * errors also go to a small ring (the last LS_LOG_RECENT_MAX), which GET /v1/status shows.
 *
 * Not for: structured fields; call sites pass free text.
 */
#include "common/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char node[64] = "lockstep";
static int min_level = LS_LOG_INFO;

static pthread_mutex_t recent_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ls_log_entry recent[LS_LOG_RECENT_MAX];
static size_t recent_next, recent_count;

static atomic_ullong counts[LS_LOG_ERROR + 1];

static const char *const level_names[] = {"debug", "info", "warn", "error"};

const char *
ls_log_level_name(int level)
{
    return level >= LS_LOG_DEBUG && level <= LS_LOG_ERROR ? level_names[level] : "?";
}

uint64_t
ls_log_count(int level)
{
    return level >= LS_LOG_DEBUG && level <= LS_LOG_ERROR ? atomic_load(&counts[level]) : 0;
}

void
ls_log_setup(const char *node_name, int level)
{
    if (node_name) snprintf(node, sizeof node, "%s", node_name);
    min_level = level;
}

static size_t
append_value(char *dst, size_t len, size_t cap, const char *value, int quote)
{
    const unsigned char *s = (const unsigned char *)value;
    quote |= *s == '\0';
    if (len >= cap) return len;
    for (const unsigned char *p = s; *p && !quote; p++)
        quote = *p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f;
    /* each byte needs at most 6 (\u001f); the closing quote and the NUL 2 more */
#define PUT(c) (len + 1 < cap ? (void)(dst[len++] = (char)(c)) : (void)0)
    if (quote) PUT('"');
    for (; *s; s++) {
        if (len + 8 >= cap) break; /* cut rather than leave half an escape */
        if (!quote) {
            PUT(*s);
        } else if (*s == '"' || *s == '\\') {
            PUT('\\');
            PUT(*s);
        } else if (*s == '\n') {
            PUT('\\');
            PUT('n');
        } else if (*s == '\t') {
            PUT('\\');
            PUT('t');
        } else if (*s == '\r') {
            PUT('\\');
            PUT('r');
        } else if (*s < 0x20 || *s == 0x7f) {
            len += (size_t)snprintf(dst + len, cap - len, "\\u%04x", *s);
        } else {
            PUT(*s);
        }
    }
    if (quote) PUT('"');
#undef PUT
    dst[len] = '\0';
    return len;
}

size_t
ls_logfmt_value(char *dst, size_t len, size_t cap, const char *value)
{
    return append_value(dst, len, cap, value, 0);
}

static void
remember(int64_t ms, int level, const char *msg)
{
    struct ls_log_entry *e;
    pthread_mutex_lock(&recent_lock);
    e = &recent[recent_next];
    e->ms = ms;
    e->level = level;
    if (snprintf(e->msg, sizeof e->msg, "%s", msg) >= (int)sizeof e->msg) {
        /* cut at a character's start, not inside a UTF-8 sequence */
        size_t n = sizeof e->msg - 1; /* msg[n]: the first byte left out */
        while (n > 0 && ((unsigned char)msg[n] & 0xc0) == 0x80) n--;
        e->msg[n] = '\0';
    }
    recent_next = (recent_next + 1) % LS_LOG_RECENT_MAX;
    if (recent_count < LS_LOG_RECENT_MAX) recent_count++;
    pthread_mutex_unlock(&recent_lock);
}

size_t
ls_log_recent(struct ls_log_entry *out, size_t max)
{
    size_t n, first;
    pthread_mutex_lock(&recent_lock);
    n = recent_count < max ? recent_count : max;
    first = (recent_next + LS_LOG_RECENT_MAX - n) % LS_LOG_RECENT_MAX;
    for (size_t i = 0; i < n; i++) out[i] = recent[(first + i) % LS_LOG_RECENT_MAX];
    pthread_mutex_unlock(&recent_lock);
    return n;
}

void
ls_log_msg(int level, const char *fmt, ...)
{
    char msg[2048], line[4096 + 64];
    struct timeval tv;
    struct tm tm;
    size_t n;
    va_list ap;

    if (level < min_level && level < LS_LOG_WARN) return;
    gettimeofday(&tv, NULL);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (level >= LS_LOG_DEBUG && level <= LS_LOG_ERROR) atomic_fetch_add(&counts[level], 1);
    if (level >= LS_LOG_WARN)
        remember((int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000, level, msg);
    if (level < min_level) return;
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof line, "ts=%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03dZ level=%s node=",
                          (int)(tv.tv_usec / 1000), ls_log_level_name(level));
    n = append_value(line, n, sizeof line - 1, node, 0);
    n += (size_t)snprintf(line + n, sizeof line - n, " msg=");
    /* msg is always quoted: a reader's pattern knows where it begins and ends */
    n = append_value(line, n, sizeof line - 1, msg, 1);
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) < 0) { /* nothing better to do */
    }
}
