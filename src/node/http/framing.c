/*
 * framing.c - what evhttp (libevent 2.1) will make of the bytes of one HTTP request: where the
 * request ends, and whether a chunk size line or trailer of its chunked body is one evhttp
 * would refuse. http_conns.c runs it on the bytes of each connection as they arrive, before
 * evhttp parses them, because evhttp answers a malformed chunked body with the same HTML 413
 * as one that is too large and gives no way to answer otherwise (docs/api.md, "Errors").
 *
 * It mirrors evhttp's own parsing (http.c: evhttp_parse_request_line, evhttp_parse_headers_,
 * evhttp_get_body, evhttp_handle_chunked_read) closely enough to agree on where a body starts
 * and ends, line by line with the same C string functions. Where agreement is not certain (a
 * folded header, an Expect other than 100-continue, a Content-Length evhttp refuses, a long
 * line holding a header that frames the body) it gives up on the request: FRAME_LOST, and
 * evhttp alone decides, as before. A chunk size line evhttp would refuse, one longer than
 * FRAME_LINE_MAX, or one over 64 bits is FRAME_BAD; a chunk size that is merely too large is
 * not: evhttp and the routes refuse those with 413.
 *
 * Not for: anything but finding the ends of requests and bad chunk lines; pure (no I/O).
 */
#include "node/http/http.h"

#include <errno.h>
#include <event2/util.h>
#include <stdlib.h>
#include <string.h>

enum { FS_REQLINE, FS_HEADER, FS_BODY, FS_SIZE, FS_DATA, FS_TRAILER };

const char frame_msg_hex[] =
    "malformed chunked body: a chunk size must be hexadecimal digits, without chunk extensions";
const char frame_msg_long[] = "malformed chunked body: a chunk size line is longer than 256 bytes";
const char frame_msg_range[] = "malformed chunked body: a chunk size does not fit in 64 bits";
const char frame_msg_trailer[] = "malformed chunked body: a trailer line is not a header field";

_Static_assert(FRAME_LINE_MAX == 256, "frame_msg_long names the limit");

void
frame_scan_init(struct frame_scan *s)
{
    memset(s, 0, sizeof *s);
    s->state = FS_REQLINE;
}

static enum frame_verdict
bad(struct frame_scan *s, const char *why)
{
    s->why = why;
    return FRAME_BAD;
}

/* evhttp_header_is_valid_value: a CR or LF inside a value must start a folded line. */
static int
valid_value(const char *v)
{
    while ((v = strpbrk(v, "\r\n")) != NULL) {
        v += strspn(v, "\r\n");
        if (*v != ' ' && *v != '\t') return 0;
    }
    return 1;
}

/* Splits "key: value" in place as evhttp_parse_headers_ does; NULL when there is no colon. */
static char *
split_header(char *line)
{
    char *colon = strchr(line, ':'), *v, *end;
    if (!colon) return NULL;
    *colon = '\0';
    v = colon + 1 + strspn(colon + 1, " ");
    end = v + strlen(v);
    while (end > v && (end[-1] == ' ' || end[-1] == '\t')) *--end = '\0';
    return v;
}

static int
frames_body(const char *key)
{
    return evutil_ascii_strcasecmp(key, "Transfer-Encoding") == 0 ||
           evutil_ascii_strcasecmp(key, "Content-Length") == 0 ||
           evutil_ascii_strcasecmp(key, "Expect") == 0;
}

/* evhttp_method_may_have_body, on the method as evhttp_parse_request_line cuts it out. */
static void
request_line(struct frame_scan *s)
{
    static const char *const with_body[] = {"GET",    "PUT",     "POST",   "PATCH",
                                            "DELETE", "OPTIONS", "CONNECT"};
    char *sp = strchr(s->line, ' ');
    s->may_body = 0;
    if (!sp) return; /* evhttp refuses the request */
    *sp = '\0';
    for (size_t i = 0; i < sizeof with_body / sizeof with_body[0]; i++)
        if (strcmp(s->line, with_body[i]) == 0) s->may_body = 1;
}

/* evhttp_get_body: the first Transfer-Encoding, then the first Content-Length. */
static enum frame_verdict
headers_done(struct frame_scan *s)
{
    if (!s->may_body) return FRAME_END;
    if (s->te_seen && s->chunked) {
        if (s->expect_other) return FRAME_LOST; /* evhttp answers 417 and skips the body */
        s->state = FS_SIZE;
        return FRAME_MORE;
    }
    if (!s->cl_seen) return FRAME_END;
    if (s->cl_bad) return FRAME_LOST; /* evhttp refuses the request */
    if (s->cl < 1) return FRAME_END;
    if (s->expect_other) return FRAME_LOST;
    s->state = FS_BODY;
    s->skip = (uint64_t)s->cl;
    return FRAME_MORE;
}

static enum frame_verdict
header_line(struct frame_scan *s)
{
    char *key = s->line, *value, *end;
    long long n;
    if (key[0] == '\0') return headers_done(s);
    if (key[0] == ' ' || key[0] == '\t') return FRAME_LOST; /* folded: it may change a value */
    if (strlen(key) > FRAME_LINE_MAX) {
        /* Only the start is held: enough to see that the header does not frame the body. */
        value = split_header(key);
        return value && !frames_body(key) ? FRAME_MORE : FRAME_LOST;
    }
    if (!(value = split_header(key))) return FRAME_LOST; /* evhttp refuses the request */
    if (!frames_body(key)) return FRAME_MORE;
    if (strchr(key, '\r') || !valid_value(value)) return FRAME_LOST; /* refused too */
    if (evutil_ascii_strcasecmp(key, "Transfer-Encoding") == 0 && !s->te_seen) {
        s->te_seen = 1;
        s->chunked = evutil_ascii_strcasecmp(value, "chunked") == 0;
    } else if (evutil_ascii_strcasecmp(key, "Content-Length") == 0 && !s->cl_seen) {
        s->cl_seen = 1;
        errno = 0;
        n = strtoll(value, &end, 10);
        s->cl_bad = *value == '\0' || *end != '\0' || n < 0;
        s->cl = n;
    } else if (evutil_ascii_strcasecmp(key, "Expect") == 0 && !s->expect_seen) {
        s->expect_seen = 1;
        s->expect_other = evutil_ascii_strcasecmp(value, "100-continue") != 0;
    }
    return FRAME_MORE;
}

/* evhttp_handle_chunked_read: the same test of the same strtoll, and our two limits. */
static enum frame_verdict
size_line(struct frame_scan *s, size_t len)
{
    char *end;
    long long n;
    if (len > FRAME_LINE_MAX) return bad(s, frame_msg_long);
    if (s->line[0] == '\0') return FRAME_MORE; /* the line break after a chunk's data */
    errno = 0;
    n = strtoll(s->line, &end, 16);
    if ((*end != '\0' && *end != ' ') || n < 0) return bad(s, frame_msg_hex);
    if (errno == ERANGE) return bad(s, frame_msg_range);
    if (n == 0) {
        s->state = FS_TRAILER;
        return FRAME_MORE;
    }
    s->state = FS_DATA;
    s->skip = (uint64_t)n;
    return FRAME_MORE;
}

/* evhttp_read_trailer reads header lines, and refuses what evhttp_parse_headers_ refuses. */
static enum frame_verdict
trailer_line(struct frame_scan *s)
{
    char *key = s->line, *value;
    if (key[0] == '\0') return FRAME_END;
    if (key[0] == ' ' || key[0] == '\t') return FRAME_MORE; /* folded onto the header before */
    if (strlen(key) > FRAME_LINE_MAX) return FRAME_LOST;
    if (!(value = split_header(key)) || strchr(key, '\r') || !valid_value(value))
        return bad(s, frame_msg_trailer);
    return FRAME_MORE;
}

/* A whole line is in: evhttp_readln's EVBUFFER_EOL_CRLF drops one CR before the LF. */
static enum frame_verdict
line_done(struct frame_scan *s)
{
    size_t len = s->len - (s->len > 0 && s->last == '\r');
    s->line[len < FRAME_LINE_MAX + 1 ? len : FRAME_LINE_MAX + 1] = '\0';
    switch (s->state) {
    case FS_REQLINE:
        request_line(s);
        s->state = FS_HEADER;
        return FRAME_MORE;
    case FS_HEADER:
        return header_line(s);
    case FS_SIZE:
        return size_line(s, len);
    default:
        return trailer_line(s);
    }
}

enum frame_verdict
frame_scan_skip(struct frame_scan *s, uint64_t n)
{
    s->skip -= n;
    s->off += n;
    if (s->skip) return FRAME_MORE;
    s->line_start = s->off;
    if (s->state == FS_BODY) return FRAME_END;
    s->state = FS_SIZE; /* after a chunk's data */
    return FRAME_MORE;
}

enum frame_verdict
frame_scan_feed(struct frame_scan *s, const char *p, size_t n, size_t *used)
{
    enum frame_verdict v = FRAME_MORE;
    size_t i = 0;
    while (i < n && v == FRAME_MORE) {
        const char *nl;
        size_t take, kept, room;
        if (s->skip) {
            size_t k = s->skip < n - i ? (size_t)s->skip : n - i;
            i += k;
            v = frame_scan_skip(s, k);
            continue;
        }
        nl = memchr(p + i, '\n', n - i);
        take = nl ? (size_t)(nl - (p + i)) : n - i;
        kept = s->len < FRAME_LINE_MAX + 1 ? s->len : FRAME_LINE_MAX + 1;
        room = FRAME_LINE_MAX + 1 - kept;
        memcpy(s->line + kept, p + i, take < room ? take : room);
        if (take) s->last = p[i + take - 1];
        s->len += take;
        s->off += take;
        i += take;
        if (!nl) {
            /* A chunk size line is refused as soon as it cannot be short enough any more. */
            if (s->state == FS_SIZE && s->len > FRAME_LINE_MAX + 1) v = bad(s, frame_msg_long);
            break;
        }
        i++;
        s->off++;
        v = line_done(s);
        if (v == FRAME_BAD) break; /* line_start stays at the refused line */
        s->line_start = s->off;
        s->len = 0;
        s->last = 0;
    }
    *used = i;
    return v;
}
