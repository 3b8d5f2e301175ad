/*
 * http.h - what the HTTP API's route groups share: the router, the request context, replies,
 * streams, query helpers and the ways a handler hands work off the loop (the writer thread for
 * writes, reader threads for long reads).
 *
 * Each group (items.c, changes.c, batch.c, cluster.c, tokens.c) registers its routes in its own
 * http_*_routes() function; router.c owns the table, matches paths, checks the allow-list, the
 * token and the route's body limit, and calls the handler. A handler owns the request context it
 * is given and frees it with ctx_free() once it has answered, or hands it to whatever answers
 * later.
 *
 * Not for: anything outside the HTTP port. The peer port is repl_up.c.
 */
#ifndef LS_HTTP_H
#define LS_HTTP_H

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "node/server.h"

#define M_GET (EVHTTP_REQ_GET | EVHTTP_REQ_HEAD)
#define M_ANY (EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE)

#define WAIT_MAX_MS 60000
#define NO_BODY (64 * 1024) /* the limit of routes that take no body: a small one is ignored */
#define HTTP_PARAMS_MAX 4

struct ctx {
    struct server *srv;
    struct evhttp_request *req;
    int method;
    /* the route's parameters, still percent-encoded: {name} is one segment, {name*} the rest */
    const char *param_name[HTTP_PARAMS_MAX];
    char *param[HTTP_PARAMS_MAX];
    int nparams;
    struct evkeyvalq query;
};

typedef void (*handler_fn)(struct ctx *c);

/* ---- router.c ---- */
/*
 * A route: a pattern of literal segments and parameters ("/v1/items/{path*}",
 * "/v1/uploads/{id}/commit"), the methods it takes, what a token must allow for reads (GET, HEAD)
 * and for the other methods, and the largest body it accepts (0: none; larger ones are refused
 * with 413 before the handler runs or anything is copied).
 */
struct route {
    const char *pattern;
    int methods;
    enum need read_need, write_need;
    uint64_t max_body;
    handler_fn fn;
};
void http_route(struct server *srv, const struct route *r);
/* The answers given, by route pattern and status ("" for requests no route matched). Status
 * slots fill in the order codes are first seen; code 0 counts those beyond the first 15. */
#define HTTP_STATUS_SLOTS 16
struct http_route_stats {
    const char *pattern;
    struct server *srv;
    int code[HTTP_STATUS_SLOTS];
    uint64_t count[HTTP_STATUS_SLOTS];
};
const struct http_route_stats *http_route_stats(struct server *srv, int *n);
const struct http_route_stats *http_unmatched_stats(struct server *srv);
void http_routes(struct server *srv, const struct route *table, size_t n);
void http_items_routes(struct server *srv);
void http_changes_routes(struct server *srv);
void http_batch_routes(struct server *srv);
void http_cluster_routes(struct server *srv);
void http_tokens_routes(struct server *srv);
void http_verify_routes(struct server *srv);
void http_notify_routes(struct server *srv);
void http_mirror_routes(struct server *srv);
void http_metrics_routes(struct server *srv); /* metrics.c: GET /metrics */
void http_dashboard_routes(struct server *srv); /* and starts its 1 Hz sampler */
void http_dashboard_free(struct server *srv);
/* cluster.c: GET /v1/status's answer, which the dashboard and /metrics show too */
json_t *status_json(struct server *srv);
void http_export_routes(struct server *srv);
void http_report_routes(struct server *srv);
void http_lease_routes(struct server *srv);
int export_known(struct server *srv, const char *name); /* export.c: --export NAME=... given */
/* lease.c: whether fence is the current one of the live lease export/job; LS_ECONFLICT if not */
int lease_check(struct store *st, const char *export_, const char *job, int64_t fence,
                struct ls_error *err);
int http_exports_check(struct server *srv, struct ls_error *err); /* --export NAME=PATH */
/* notify.c's parameters and parsing, shared with notify_pg.c */
char *query_channels(struct ctx *c); /* the channel= set ("": every channel); NULL after a 400 */
struct wreq *notify_parse(struct ctx *c, json_t *body); /* NULL after a 400 */
/* An ack's id (?id=N or {"id":N}); -1 after a 400. */
int ack_id(struct ctx *c, int64_t *id);
/* A rewind's ?to=: an id, or (*by_time) a time in ms; -1 after a 400. */
int rewind_target(struct ctx *c, int64_t *v, int *by_time);
/* One SSE event whose data is body (compact JSON). */
void sse_event_json(struct evbuffer *out, const char *type, int64_t id, json_t *body);
/* A Last-Event-ID this site never gave: one error event, and the end of the stream. */
void sse_refuse_unknown_id(struct ctx *c, const char *last, int64_t head);
/* notify_pg.c: the same routes on the shared database (--messenger); each takes c */
void pg_h_notify(struct ctx *c);
void pg_h_notifications(struct ctx *c);
void pg_h_events(struct ctx *c);
void pg_h_consumers(struct ctx *c);
void pg_h_consumer(struct ctx *c);
void pg_h_ack(struct ctx *c);
void pg_h_rewind(struct ctx *c);
void pg_h_reset(struct ctx *c);
void pg_h_consumer_delete(struct ctx *c);

void ctx_free(struct ctx *c);
/* A route parameter by name (percent-encoded), "" when the route has none of that name. */
const char *param(struct ctx *c, const char *name);
const char *qget(struct ctx *c, const char *key);
int qflag(struct ctx *c, const char *key);
/* Reads an integer query parameter; replies 400 and returns -1 when it is malformed. */
int qint(struct ctx *c, const char *key, int64_t def, int64_t min, int64_t max, int64_t *out);
/* Decodes and checks an item path from the URL; replies 400 and returns NULL when invalid. */
char *decode_path(struct ctx *c, const char *raw);
/* Checks an already decoded path (a query parameter); a copy, or NULL after a 400. */
char *checked_path(struct ctx *c, const char *path);
/* Checks ?prefix= (absent, "" and "/" mean everything); -1 after a 400. */
int check_prefix(struct ctx *c, const char *prefix);
/*
 * min_seq=N: answer only once this server has applied seq N (read-your-writes on a replica),
 * waiting at most wait_ms. 1: the request was parked and resume(c) answers it later (and frees
 * c); 0: go on now; -1: answered already (a bad parameter).
 */
int park_until_seq(struct ctx *c, handler_fn resume);

/* ---- framing.c: where a request ends, and whether evhttp would refuse its chunked body ---- */
#define FRAME_LINE_MAX 256 /* the longest chunk size line taken */
enum frame_verdict {
    FRAME_MORE, /* every byte given was taken; the request goes on */
    FRAME_END,  /* the request ends after the bytes taken */
    FRAME_BAD,  /* the line that began at line_start is refused; why says why, for a person */
    FRAME_LOST, /* the scan cannot be sure what evhttp will do: this request is evhttp's alone */
};
/*
 * The scan of one request's bytes, from its first. Feed it bytes in any pieces; a verdict other
 * than FRAME_MORE is final (begin the next request with frame_scan_init). While skip is not 0
 * the bytes are not looked at, and frame_scan_skip may pass over them without copying.
 */
struct frame_scan {
    int state;
    uint64_t off;        /* bytes taken since the request began */
    uint64_t line_start; /* where the current line began */
    uint64_t skip;       /* bytes to pass over unread: a chunk's data, a Content-Length body */
    size_t len;          /* bytes of the current line so far, without its LF */
    char last;           /* the last of them */
    char line[FRAME_LINE_MAX + 2]; /* the first FRAME_LINE_MAX + 1 of them, and a NUL */
    unsigned may_body : 1, te_seen : 1, chunked : 1, cl_seen : 1, cl_bad : 1, expect_seen : 1,
        expect_other : 1;
    long long cl;
    const char *why;
};
void frame_scan_init(struct frame_scan *s);
/* Takes bytes from p[0..n) until a verdict; *used: how many. */
enum frame_verdict frame_scan_feed(struct frame_scan *s, const char *p, size_t n, size_t *used);
/* Passes over n (0 < n <= skip) bytes unread. */
enum frame_verdict frame_scan_skip(struct frame_scan *s, uint64_t n);
extern const char frame_msg_hex[], frame_msg_long[], frame_msg_range[], frame_msg_trailer[];

/* ---- reply.c ---- */
void reply_json(struct evhttp_request *req, int status, json_t *body); /* takes body */
void reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void reply_lserror(struct evhttp_request *req, const struct ls_error *err);
/* {"error":{"code":...,"message":...}}, the shape of every error (docs/api.md, "Errors"). */
json_t *error_json(int code, const char *msg);
/*
 * A whole HTTP/1.1 error reply, status line to body, for a connection taken over from evhttp
 * (http_conns.c); it says the connection closes. -1: out of memory.
 */
int reply_error_raw(struct evbuffer *out, int code, const char *msg);
json_t *item_json(const struct ls_item *it);

/*
 * A streamed reply (chunked), with backpressure: stream_send's callback runs once the chunk has
 * left, and only then should the owner produce the next. evhttp frees a request whose client
 * went away only if it is still attached to its connection; a detached one is ours to end.
 * on_gone releases the owner either way. For Server-Sent Events, stream_start_sse sets the
 * headers and sse_format appends one event to a buffer.
 */
struct stream {
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    void (*on_gone)(struct stream *s);
    void (*on_sent)(struct stream *s);
};
void stream_start(struct stream *s, struct evhttp_request *req, int status);
void stream_start_sse(struct stream *s, struct evhttp_request *req);
void stream_send(struct stream *s, struct evbuffer *chunk); /* on_sent follows */
void stream_end(struct stream *s);
void sse_format(struct evbuffer *out, const char *event, const char *id, const char *data);

/* ---- off the loop ---- */
/*
 * A long read for a reader thread. run() fills reply (or err) there with the reader's own
 * store handle; the loop then answers. A client that goes away cancels the read: SQLite stops
 * at its next step, and nothing is answered.
 */
struct http_read {
    struct read_job job;
    struct ctx *c;
    void (*run)(struct store *st, struct http_read *r);
    json_t *reply;
    int status;
    struct ls_error err;
    void *arg;                        /* the handler's own */
    void (*free_arg)(void *arg);
    /* When set, runs on the loop after run() (not after a cancel), before the answer; 1: it
     * took c and arg (it answers later), and only r is freed. */
    int (*finish)(struct http_read *r);
};
/* Takes c; r is calloc'ed by the caller with run (and arg) set, and freed here. */
void http_read_submit(struct ctx *c, struct http_read *r);

/* ---- items.c ---- */
/* kind, meta, publish and if_version of a put, from the query and headers; -1 after a 400 */
int http_put_params(struct ctx *c, struct ls_op *op);

/* ---- write.c: writes go to the writer thread and are answered when committed ---- */
int require_writable(struct ctx *c);
/* Copies the request body out of libevent's buffer: the writer thread reads it later. */
void *take_body(struct evhttp_request *req, size_t *n);
struct wreq *wreq_one(int type);
/* Reads wait_replicas and wait_ms, then submits; batch: reply with counts, not the item. */
void submit(struct ctx *c, struct wreq *r, int batch);

/* What a writer job answers with, for the custom jobs (promote, tokens). */
struct write_ctx {
    struct evhttp_request *req;
    struct server *srv;
    int batch;
    int64_t wait_replicas, wait_ms;
    struct ack_waiter ack;
    json_t *reply;
};

#endif
