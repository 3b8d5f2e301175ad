/*
 * reply.c - how the HTTP API answers: JSON bodies, errors in the one shape docs/api.md gives
 * ({"error":{"code","message"}}), items as JSON, and streamed replies (chunked NDJSON, blobs,
 * Server-Sent Events) with backpressure.
 *
 * Not for: deciding what to answer; the route groups do that.
 */
#include "node/http/http.h"
#include "common/util.h"

#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- JSON replies */

void
reply_json(struct evhttp_request *req, int status, json_t *body)
{
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    if (text) {
        evbuffer_add(out, text, strlen(text));
        evbuffer_add(out, "\n", 1);
        free(text);
    }
    evhttp_send_reply(req, status, NULL, NULL);
}

void
reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    if (fmt) {
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    } else {
        snprintf(msg, sizeof msg, "%s", ls_strerror(code));
    }
    if (code == LS_EUNAVAIL)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    reply_json(req, ls_errstatus(code), error_json(code, msg));
}

json_t *
error_json(int code, const char *msg)
{
    return json_pack("{s:{s:s,s:s}}", "error", "code", ls_errcode(code), "message", msg);
}

int
reply_error_raw(struct evbuffer *out, int code, const char *msg)
{
    json_t *body = error_json(code, msg);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    int rc = -1;
    json_decref(body);
    if (!text) return -1;
    /* The headers evhttp would send with reply_error, and the connection's end. */
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", gmtime_r(&now, &tm));
    if (evbuffer_add_printf(out,
                            "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nDate: %s\r\n"
                            "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
                            ls_errstatus(code), ls_errstatus(code) == 400 ? "Bad Request" : "Error",
                            date, strlen(text) + 1, text) > 0)
        rc = 0;
    free(text);
    return rc;
}

void
reply_lserror(struct evhttp_request *req, const struct ls_error *err)
{
    reply_error(req, err->code, "%s", err->msg[0] ? err->msg : ls_strerror(err->code));
}

json_t *
item_json(const struct ls_item *it)
{
    char sha[65], mtime[40];
    json_t *meta = json_loads(it->meta, 0, NULL), *o;
    ls_hex_encode(it->sha, 32, sha);
    ls_format_time(it->mtime, mtime, sizeof mtime);
    o = json_pack("{s:s,s:s,s:I,s:I,s:s,s:I,s:I,s:s,s:o,s:s}", "path", it->path, "kind", it->kind,
                  "version", (json_int_t)it->version, "latest_version",
                  (json_int_t)it->latest_version, "status", status_name(it->status), "seq",
                  (json_int_t)it->seq, "size", (json_int_t)it->size, "sha256", sha, "meta",
                  meta ? meta : json_object(), "mtime", mtime);
    json_object_set_new(o, "published_version",
                        it->published_version > 0 ? json_integer(it->published_version)
                                                   : json_null());
    if (it->deleted) json_object_set_new(o, "deleted", json_true());
    return o;
}

/* ---------------------------------------------------------------- streams */

static void
stream_closed(struct evhttp_connection *evcon, void *arg)
{
    struct stream *s = arg;
    if (evhttp_request_get_connection(s->req) == NULL) evhttp_send_reply_end(s->req);
    s->req = NULL;
    s->on_gone(s);
}

void
stream_start(struct stream *s, struct evhttp_request *req, int status)
{
    s->req = req;
    s->evcon = evhttp_request_get_connection(req);
    evhttp_connection_set_closecb(s->evcon, stream_closed, s);
    evhttp_send_reply_start(req, status, NULL);
}

void
stream_start_sse(struct stream *s, struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    stream_start(s, req, 200);
}

static void
chunk_sent(struct evhttp_connection *evcon, void *arg)
{
    struct stream *s = arg;
    if (s->on_sent) s->on_sent(s);
}

void
stream_send(struct stream *s, struct evbuffer *chunk)
{
    evhttp_send_reply_chunk_with_cb(s->req, chunk, chunk_sent, s);
}

void
stream_end(struct stream *s)
{
    evhttp_connection_set_closecb(s->evcon, NULL, NULL);
    evhttp_send_reply_end(s->req);
    s->req = NULL;
}

/* One event: "event:", "id:", then each line of data as its own "data:" line. */
void
sse_format(struct evbuffer *out, const char *event, const char *id, const char *data)
{
    if (event) evbuffer_add_printf(out, "event: %s\n", event);
    if (id) evbuffer_add_printf(out, "id: %s\n", id);
    while (data) {
        const char *nl = strchr(data, '\n');
        size_t n = nl ? (size_t)(nl - data) : strlen(data);
        evbuffer_add(out, "data: ", 6);
        evbuffer_add(out, data, n);
        evbuffer_add(out, "\n", 1);
        data = nl ? nl + 1 : NULL;
    }
    evbuffer_add(out, "\n", 1);
}
