/*
 * http_api.c - the JSON API on the HTTP port (docs/api.md), on libevent's evhttp.
 *
 * Every request enters through http_dispatch(), which finds the route, applies the limits and
 * (from the security issue on) authentication, then calls one handler. Writes are handed to the
 * writer thread and answered when their group has committed; reads use the loop's own read-only
 * store handle. Long replies (large bodies, followed change feeds) are streamed with
 * backpressure: the next chunk is read only when the previous one has left.
 *
 * Not for: applying operations (writer.c and the store) or the peer protocol.
 */
#include "node/net.h"
#include "node/server.h"
#include "node/tls.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <unistd.h>

#define STREAM_CHUNK (256 * 1024)
#define LIST_LIMIT_MAX 1000
#define CHANGES_LIMIT_MAX 10000
#define WAIT_MAX_MS 60000
#define HEARTBEAT_MS 15000


struct ctx {
    struct server *srv;
    struct evhttp_request *req;
    int method;
    const char *rest; /* what follows the route's prefix, still percent-encoded */
    struct evkeyvalq query;
};

typedef void (*handler_fn)(struct ctx *c);

/* ---------------------------------------------------------------- replies */

static void
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

static void
reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
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
    reply_json(req, ls_errstatus(code),
               json_pack("{s:{s:s,s:s}}", "error", "code", ls_errcode(code), "message", msg));
}

static void
reply_lserror(struct evhttp_request *req, const struct ls_error *err)
{
    reply_error(req, err->code, "%s", err->msg[0] ? err->msg : ls_strerror(err->code));
}

/* ---------------------------------------------------------------- request helpers */

static const char *
qget(struct ctx *c, const char *key)
{
    return evhttp_find_header(&c->query, key);
}

static int
qflag(struct ctx *c, const char *key)
{
    const char *v = qget(c, key);
    return v && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 ||
                 *v == '\0');
}

/* Reads an integer query parameter; replies 400 and returns -1 when it is malformed. */
static int
qint(struct ctx *c, const char *key, int64_t def, int64_t min, int64_t max, int64_t *out)
{
    const char *v = qget(c, key);
    *out = def;
    if (!v) return 0;
    if (parse_i64(v, out) || *out < min || *out > max) {
        reply_error(c->req, LS_EINVAL, "query parameter %s must be an integer from %lld to %lld",
                    key, (long long)min, (long long)max);
        return -1;
    }
    return 0;
}

/* Decodes and checks an item path from the URL; replies 400 and returns NULL when invalid. */
static char *
decode_path(struct ctx *c, const char *raw)
{
    struct ls_error err;
    size_t n = 0;
    char *path;
    if (!raw || !*raw) {
        reply_error(c->req, LS_EPATH, "path is empty");
        return NULL;
    }
    path = evhttp_uridecode(raw, 0, &n);
    if (!path) {
        reply_error(c->req, LS_ENOMEM, NULL);
        return NULL;
    }
    if (path_check(path, n, &err)) {
        free(path);
        reply_lserror(c->req, &err);
        return NULL;
    }
    return path;
}

/* Checks a path that is already decoded (a query parameter). */
static char *
checked_path(struct ctx *c, const char *path)
{
    struct ls_error err;
    char *copy;
    if (!path) {
        reply_error(c->req, LS_EPATH, "path is missing");
        return NULL;
    }
    if (path_check(path, strlen(path), &err)) {
        reply_lserror(c->req, &err);
        return NULL;
    }
    if (!(copy = strdup(path))) reply_error(c->req, LS_ENOMEM, NULL);
    return copy;
}

static char *
item_path(struct ctx *c)
{
    return decode_path(c, c->rest);
}

static json_t *
item_json(const struct ls_item *it)
{
    char sha[65], mtime[40];
    json_t *meta = json_loads(it->meta, 0, NULL), *o;
    hex_encode(it->sha, 32, sha);
    format_time(it->mtime, mtime, sizeof mtime);
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

/* Copies the request body out of libevent's buffer: the writer thread reads it later. */
static void *
take_body(struct evhttp_request *req, size_t *n)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    char *p = malloc(len + 1);
    if (!p) return NULL;
    evbuffer_remove(in, p, len);
    p[len] = '\0';
    *n = len;
    return p;
}

static int
require_writable(struct ctx *c)
{
    if (!server_is_primary(c->srv)) {
        /* The primary is at the top of the chain; name the server this one follows. */
        struct evkeyvalq *h = evhttp_request_get_output_headers(c->req);
        const char *primary = server_primary_http(c->srv);
        if (*primary) {
            evhttp_add_header(h, "X-Lockstep-Primary", primary);
            reply_error(c->req, LS_EREADONLY,
                        "this server is a %s and does not accept writes; write to the primary "
                        "at http://%s",
                        c->srv->cfg.role, primary);
        } else {
            reply_error(c->req, LS_EREADONLY,
                        "this server is a %s and does not accept writes; write to the primary "
                        "(this server follows %s and has not reached it yet)",
                        c->srv->cfg.role, c->srv->cfg.upstream);
        }
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- waiting for a seq */

struct seq_wait {
    struct seq_waiter w;
    struct ctx *c;
    handler_fn resume;
};

static void
ctx_free(struct ctx *c)
{
    evhttp_clear_headers(&c->query);
    free(c);
}

static void
on_seq_reached(struct seq_waiter *w, int timed_out)
{
    struct seq_wait *sw = w->arg;
    struct ctx *c = sw->c;
    if (timed_out)
        reply_error(c->req, LS_ETIMEOUT, "this server has not reached seq %lld (it is at %lld)",
                    (long long)w->target, (long long)c->srv->pos.seq);
    else
        sw->resume(c);
    free(sw);
    ctx_free(c);
}

/*
 * min_seq=N: answer only once this server has applied seq N (read-your-writes on a replica),
 * waiting at most wait_ms. Returns 1 when the request was parked (the handler returns at once).
 */
static int
park_until_seq(struct ctx *c, handler_fn resume)
{
    int64_t min_seq, wait_ms;
    struct seq_wait *sw;
    if (qint(c, "min_seq", 0, 0, INT64_MAX, &min_seq) ||
        qint(c, "wait_ms", 5000, 0, WAIT_MAX_MS, &wait_ms))
        return -1;
    if (min_seq <= c->srv->pos.seq) return 0;
    sw = calloc(1, sizeof *sw);
    if (!sw) {
        reply_error(c->req, LS_ENOMEM, NULL);
        return -1;
    }
    sw->c = c;
    sw->resume = resume;
    sw->w.target = min_seq;
    sw->w.deadline_ms = mono_ms() + wait_ms;
    sw->w.fire = on_seq_reached;
    sw->w.arg = sw;
    server_wait_seq(c->srv, &sw->w);
    return 1;
}

/* ---------------------------------------------------------------- streams */

/*
 * A streamed reply. evhttp frees a request whose client went away only if it is still attached
 * to its connection; a detached one is ours to end. on_gone releases the owner either way.
 */
struct stream {
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    void (*on_gone)(struct stream *s);
};

static void
stream_closed(struct evhttp_connection *evcon, void *arg)
{
    struct stream *s = arg;
    if (evhttp_request_get_connection(s->req) == NULL) evhttp_send_reply_end(s->req);
    s->req = NULL;
    s->on_gone(s);
}

static void
stream_start(struct stream *s, struct evhttp_request *req, int status)
{
    s->req = req;
    s->evcon = evhttp_request_get_connection(req);
    evhttp_connection_set_closecb(s->evcon, stream_closed, s);
    evhttp_send_reply_start(req, status, NULL);
}

static void
stream_end(struct stream *s)
{
    evhttp_connection_set_closecb(s->evcon, NULL, NULL);
    evhttp_send_reply_end(s->req);
    s->req = NULL;
}

/* ---- a blob body ---- */

struct blob_stream {
    struct stream s;
    int fd;
};

static void
blob_stream_gone(struct stream *s)
{
    struct blob_stream *b = (struct blob_stream *)s;
    close(b->fd);
    free(b);
}

static void
blob_stream_next(struct evhttp_connection *evcon, void *arg)
{
    struct blob_stream *b = arg;
    struct evbuffer *chunk = evbuffer_new();
    int n = chunk ? evbuffer_read(chunk, b->fd, STREAM_CHUNK) : -1;
    if (n <= 0) {
        if (n < 0) log_warn("reading a blob: %s", strerror(errno));
        evbuffer_free(chunk);
        stream_end(&b->s);
        blob_stream_gone(&b->s);
        return;
    }
    evhttp_send_reply_chunk_with_cb(b->s.req, chunk, blob_stream_next, b);
    evbuffer_free(chunk);
}

/* ---------------------------------------------------------------- items */

static void
set_item_headers(struct evhttp_request *req, const struct ls_item *it)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char num[32], etag[70];
    snprintf(num, sizeof num, "%lld", (long long)it->version);
    evhttp_add_header(h, "X-Lockstep-Version", num);
    snprintf(num, sizeof num, "%lld", (long long)it->seq);
    evhttp_add_header(h, "X-Lockstep-Seq", num);
    evhttp_add_header(h, "X-Lockstep-Kind", it->kind);
    evhttp_add_header(h, "X-Lockstep-Status", status_name(it->status));
    etag[0] = '"';
    hex_encode(it->sha, 32, etag + 1);
    strcat(etag, "\"");
    evhttp_add_header(h, "ETag", etag);
    snprintf(num, sizeof num, "%llu", (unsigned long long)it->size);
    evhttp_add_header(h, "Content-Length", num);
    evhttp_add_header(h, "Content-Type", "application/octet-stream");
}

static void
get_item(struct ctx *c)
{
    struct ls_error err;
    struct ls_item it;
    int64_t version;
    const char *inm;
    char *path;

    if (qint(c, "version", 0, 0, INT64_MAX, &version)) return;
    if (!(path = item_path(c))) return;
    if (store_get(c->srv->reader, path, version, c->method != EVHTTP_REQ_HEAD, &it, &err)) {
        free(path);
        reply_lserror(c->req, &err);
        return;
    }
    free(path);
    if (it.deleted && version == 0) {
        item_release(&it);
        reply_error(c->req, LS_ENOTFOUND, "not found");
        return;
    }
    set_item_headers(c->req, &it);
    inm = evhttp_find_header(evhttp_request_get_input_headers(c->req), "If-None-Match");
    if (inm && strstr(inm, evhttp_find_header(evhttp_request_get_output_headers(c->req), "ETag"))) {
        evhttp_remove_header(evhttp_request_get_output_headers(c->req), "Content-Length");
        evhttp_send_reply(c->req, 304, "Not Modified", NULL);
    } else if (c->method == EVHTTP_REQ_HEAD) {
        evhttp_send_reply(c->req, 200, "OK", NULL);
    } else if (!it.in_blob) {
        evbuffer_add(evhttp_request_get_output_buffer(c->req), it.body, it.size);
        evhttp_send_reply(c->req, 200, "OK", NULL);
    } else {
        char file[4300];
        struct blob_stream *b = calloc(1, sizeof *b);
        store_blob_path(c->srv->reader, it.sha, file, sizeof file);
        if (!b || (b->fd = open(file, O_RDONLY | O_CLOEXEC)) < 0) {
            free(b);
            evhttp_clear_headers(evhttp_request_get_output_headers(c->req));
            reply_error(c->req, LS_EIO, "cannot read the body of %s", it.path);
        } else {
            b->s.on_gone = blob_stream_gone;
            stream_start(&b->s, c->req, 200);
            blob_stream_next(NULL, b);
        }
    }
    item_release(&it);
}

static void
get_stat(struct ctx *c)
{
    struct ls_error err;
    struct ls_item it;
    int64_t version;
    char *path;
    if (qint(c, "version", 0, 0, INT64_MAX, &version)) return;
    if (!(path = item_path(c))) return;
    if (store_get(c->srv->reader, path, version, 0, &it, &err)) {
        reply_lserror(c->req, &err);
    } else {
        reply_json(c->req, 200, item_json(&it));
        item_release(&it);
    }
    free(path);
}

/* Write requests: build ops, hand them to the writer, answer when committed. */

struct write_ctx {
    struct evhttp_request *req;
    struct server *srv;
    int batch; /* reply with counts rather than the item */
    int64_t wait_replicas, wait_ms;
    struct ack_waiter ack;
    json_t *reply;
};

/* wait_replicas=N: the reply goes out once N downstreams have applied the write. */
static void
acks_done(struct ack_waiter *a, int acked)
{
    struct write_ctx *w = a->arg;
    if (acked >= a->want) {
        json_object_set_new(w->reply, "replicas", json_integer(acked));
        reply_json(w->req, 200, w->reply);
    } else {
        json_decref(w->reply);
        reply_error(w->req, LS_ETIMEOUT,
                    "written at seq %lld on this server, but only %d of %d replicas applied it "
                    "within %lld ms",
                    (long long)a->seq, acked, a->want, (long long)w->wait_ms);
    }
    free(w);
}

static void
write_done(struct wreq *r, void *arg)
{
    struct write_ctx *w = arg;
    json_t *o;
    if (r->rc) {
        /* A committed upload that did not become a put is a session again: commit it anew. */
        for (size_t i = 0; i < r->nops; i++)
            if (r->ops[i].body_file) upload_reopen(r->ops[i].body_file);
        reply_lserror(w->req, &r->err);
        wreq_free(r);
        free(w);
        return;
    }
    if (w->batch) {
        o = json_pack("{s:I,s:I,s:I}", "applied", (json_int_t)r->applied, "first_seq",
                      (json_int_t)(r->applied ? r->first_seq : 0), "last_seq",
                      (json_int_t)(r->applied ? r->last.seq : w->srv->pos.seq));
    } else {
        const struct ls_op *op = &r->ops[0];
        o = json_pack("{s:s,s:s,s:I,s:I}", "op", op_name(op->type), "path",
                      op->type == LS_OP_MOVE ? op->to : op->path, "version",
                      (json_int_t)r->last.version, "seq", (json_int_t)r->last.seq);
    }
    if (w->wait_replicas > 0) {
        w->reply = o;
        w->ack.seq = r->applied || !w->batch ? r->last.seq : w->srv->pos.seq;
        w->ack.want = (int)w->wait_replicas;
        w->ack.deadline_ms = mono_ms() + w->wait_ms;
        w->ack.fire = acks_done;
        w->ack.arg = w;
        wreq_free(r);
        server_wait_acks(w->srv, &w->ack);
        return;
    }
    reply_json(w->req, 200, o);
    wreq_free(r);
    free(w);
}

static void
submit(struct ctx *c, struct wreq *r, int batch)
{
    struct write_ctx *w = calloc(1, sizeof *w);
    if (!w) {
        wreq_free(r);
        reply_error(c->req, LS_ENOMEM, NULL);
        return;
    }
    w->req = c->req;
    w->srv = c->srv;
    w->batch = batch;
    if (qint(c, "wait_replicas", 0, 0, 1000, &w->wait_replicas) ||
        qint(c, "wait_ms", 5000, 0, WAIT_MAX_MS, &w->wait_ms)) {
        wreq_free(r);
        free(w);
        return;
    }
    r->done = write_done;
    r->arg = w;
    r->max_body = c->srv->cfg.max_body;
    writer_submit(c->srv->writer, r);
}

static struct wreq *
wreq_one(int type)
{
    struct wreq *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->type = WREQ_OPS;
    r->ops = calloc(1, sizeof *r->ops);
    if (!r->ops) {
        free(r);
        return NULL;
    }
    r->nops = 1;
    r->ops[0].type = type;
    return r;
}

/* Reads kind, meta, publish and if_version of a put from the query and headers. */
static int
put_params(struct ctx *c, struct ls_op *op)
{
    struct ls_error err;
    const char *kind = qget(c, "kind");
    const char *meta = evhttp_find_header(evhttp_request_get_input_headers(c->req),
                                          "X-Lockstep-Meta");
    if (!meta) meta = qget(c, "meta");
    if (kind) {
        size_t n = strlen(kind);
        if (n == 0 || n > LS_KIND_MAX || !utf8_valid(kind, n)) {
            reply_error(c->req, LS_EINVAL, "kind must be 1 to %d bytes of UTF-8", LS_KIND_MAX);
            return -1;
        }
        op->kind = strdup(kind);
    }
    if (meta && meta_canonical(meta, strlen(meta), &op->meta, &err)) {
        reply_lserror(c->req, &err);
        return -1;
    }
    op->publish = qflag(c, "publish");
    return qint(c, "if_version", 0, 0, INT64_MAX, &op->if_version);
}

static void
put_item(struct ctx *c)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
    struct wreq *r;
    struct ls_op *op;
    char *path;

    if (require_writable(c)) return;
    if (evbuffer_get_length(in) > c->srv->cfg.max_body) {
        reply_error(c->req, LS_ETOOBIG, "body is larger than --max-body (%llu bytes)",
                    (unsigned long long)c->srv->cfg.max_body);
        return;
    }
    if (!(path = item_path(c))) return;
    if (!(r = wreq_one(LS_OP_PUT))) {
        free(path);
        reply_error(c->req, LS_ENOMEM, NULL);
        return;
    }
    op = &r->ops[0];
    op->path = path;
    if (put_params(c, op)) {
        wreq_free(r);
        return;
    }
    op->body_owned = take_body(c->req, &op->body_len);
    op->body = op->body_owned;
    if (!op->body) {
        wreq_free(r);
        reply_error(c->req, LS_ENOMEM, NULL);
        return;
    }
    submit(c, r, 0);
}

static void
simple_op(struct ctx *c, int type)
{
    struct wreq *r;
    struct ls_op *op;
    char *path;
    if (require_writable(c)) return;
    if (!(path = item_path(c))) return;
    if (!(r = wreq_one(type))) {
        free(path);
        reply_error(c->req, LS_ENOMEM, NULL);
        return;
    }
    op = &r->ops[0];
    op->path = path;
    if (qint(c, "if_version", 0, 0, INT64_MAX, &op->if_version) ||
        (type == LS_OP_PUBLISH && qint(c, "version", 0, 0, INT64_MAX, &op->version))) {
        wreq_free(r);
        return;
    }
    if (type == LS_OP_MOVE) {
        const char *to = qget(c, "to");
        struct ls_error err;
        if (!to) {
            wreq_free(r);
            reply_error(c->req, LS_EINVAL, "move needs ?to=DESTINATION");
            return;
        }
        if (path_check(to, strlen(to), &err)) {
            wreq_free(r);
            reply_error(c->req, LS_EPATH, "destination: %s", err.msg);
            return;
        }
        op->to = strdup(to);
    }
    submit(c, r, 0);
}

static void
h_items(struct ctx *c)
{
    switch (c->method) {
    case EVHTTP_REQ_GET:
    case EVHTTP_REQ_HEAD: {
        int parked = park_until_seq(c, get_item);
        if (parked == 1) return; /* on_seq_reached answers and frees c */
        if (parked == 0) get_item(c);
        break;
    }
    case EVHTTP_REQ_PUT: put_item(c); break;
    case EVHTTP_REQ_DELETE: simple_op(c, LS_OP_DELETE); break;
    default: reply_error(c->req, LS_EINVAL, "method not allowed on /v1/items"); break;
    }
    ctx_free(c);
}

static void
h_stat(struct ctx *c)
{
    int parked = park_until_seq(c, get_stat);
    if (parked == 1) return; /* on_seq_reached answers and frees c */
    if (parked == 0) get_stat(c);
    ctx_free(c);
}

static void h_publish(struct ctx *c) { simple_op(c, LS_OP_PUBLISH); ctx_free(c); }
static void h_unpublish(struct ctx *c) { simple_op(c, LS_OP_UNPUBLISH); ctx_free(c); }
static void h_purge(struct ctx *c) { simple_op(c, LS_OP_PURGE); ctx_free(c); }
static void h_move(struct ctx *c) { simple_op(c, LS_OP_MOVE); ctx_free(c); }

static int
history_cb(void *arg, const struct ls_item *it)
{
    json_array_append_new(arg, item_json(it));
    return 0;
}

static void
h_history(struct ctx *c)
{
    struct ls_error err;
    json_t *versions = json_array();
    char *path = item_path(c);
    if (path) {
        if (store_history(c->srv->reader, path, history_cb, versions, &err))
            reply_lserror(c->req, &err);
        else
            reply_json(c->req, 200, json_pack("{s:s,s:O}", "path", path, "versions", versions));
        free(path);
    }
    json_decref(versions);
    ctx_free(c);
}

struct list_acc {
    json_t *items;
    char *last;
};

static int
list_cb(void *arg, const struct ls_item *it)
{
    struct list_acc *a = arg;
    json_array_append_new(a->items, item_json(it));
    free(a->last);
    a->last = strdup(it->path);
    return 0;
}

static void
h_list(struct ctx *c)
{
    struct ls_error err;
    struct list_acc a = {json_array(), NULL};
    const char *prefix = qget(c, "prefix"), *after = qget(c, "after");
    int64_t limit;
    int n;
    if (qint(c, "limit", 100, 1, LIST_LIMIT_MAX, &limit)) goto out;
    if (prefix && *prefix && strcmp(prefix, "/") != 0) {
        size_t len = strlen(prefix);
        while (len > 1 && prefix[len - 1] == '/') len--;
        if (path_check(prefix, len, &err)) {
            reply_error(c->req, LS_EPATH, "prefix: %s", err.msg);
            goto out;
        }
    }
    n = store_list(c->srv->reader, prefix, after, (int)limit, qflag(c, "deleted"), list_cb, &a,
                   &err);
    if (n < 0) {
        reply_lserror(c->req, &err);
        goto out;
    }
    reply_json(c->req, 200,
               json_pack("{s:O,s:o}", "items", a.items,
                         "next", n == limit && a.last ? json_string(a.last) : json_null()));
out:
    json_decref(a.items);
    free(a.last);
    ctx_free(c);
}

/* ---------------------------------------------------------------- changes */

static json_t *
change_json(const struct ls_change *ch)
{
    char ts[40];
    json_t *o;
    format_time(ch->ts, ts, sizeof ts);
    o = json_pack("{s:I,s:s,s:s,s:I,s:s}", "seq", (json_int_t)ch->seq, "op", op_name(ch->op),
                  "path", ch->path, "version", (json_int_t)ch->version, "ts", ts);
    if (ch->to) json_object_set_new(o, "to", json_string(ch->to));
    if (ch->op == LS_OP_PUT && ch->published) json_object_set_new(o, "published", json_true());
    return o;
}

static int
changes_array_cb(void *arg, const struct ls_change *ch)
{
    json_array_append_new(arg, change_json(ch));
    return 0;
}

struct changes_req {
    struct seq_waiter w;
    struct evhttp_request *req;
    struct server *srv;
    int64_t since, limit;
};

static void
changes_reply(struct server *srv, struct evhttp_request *req, int64_t since, int64_t limit)
{
    json_t *arr = json_array();
    int64_t next = since;
    int n = store_changes(srv->reader, since, (int)limit, changes_array_cb, arr);
    if (n < 0) {
        json_decref(arr);
        reply_error(req, LS_EIO, "cannot read the change log");
        return;
    }
    if (n > 0) next = json_integer_value(json_object_get(json_array_get(arr, (size_t)n - 1), "seq"));
    else if (srv->pos.seq > since) next = srv->pos.seq; /* a filtered replica: nothing in between */
    reply_json(req, 200,
               json_pack("{s:o,s:I,s:I,s:I}", "changes", arr, "next", (json_int_t)next, "seq",
                         (json_int_t)srv->pos.seq, "log_first_seq",
                         (json_int_t)store_log_first_seq(srv->reader)));
}

static void
changes_fire(struct seq_waiter *w, int timed_out)
{
    struct changes_req *cr = w->arg;
    changes_reply(cr->srv, cr->req, cr->since, cr->limit);
    free(cr);
}

/* ---- follow: an NDJSON stream that stays open ---- */

struct follower {
    struct stream s;
    struct server *srv;
    struct follower *next, *prev;
    struct seq_waiter w;
    struct event *heartbeat;
    int64_t pos;
    int sending;
};

static void follower_pump(struct follower *f);

static void
follower_unlink(struct follower *f)
{
    if (f->prev) f->prev->next = f->next;
    else f->srv->followers = f->next;
    if (f->next) f->next->prev = f->prev;
}

static void
follower_gone(struct stream *s)
{
    struct follower *f = (struct follower *)s;
    server_cancel_wait(f->srv, &f->w);
    event_free(f->heartbeat);
    follower_unlink(f);
    free(f);
}

static void
follower_drained(struct evhttp_connection *evcon, void *arg)
{
    struct follower *f = arg;
    f->sending = 0;
    follower_pump(f);
}

struct follower_batch {
    struct evbuffer *buf;
    int64_t last_seq;
};

static int
follower_line(void *arg, const struct ls_change *ch)
{
    struct follower_batch *b = arg;
    json_t *o = change_json(ch);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (text) {
        evbuffer_add_printf(b->buf, "%s\n", text);
        free(text);
    }
    b->last_seq = ch->seq;
    return 0;
}

static void
follower_fire(struct seq_waiter *w, int timed_out)
{
    follower_pump(w->arg);
}

static void
follower_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    struct follower *f = arg;
    struct timeval tv = {HEARTBEAT_MS / 1000, 0};
    if (!f->sending) {
        struct evbuffer *buf = evbuffer_new();
        evbuffer_add(buf, "\n", 1); /* keeps proxies open and finds dead clients */
        f->sending = 1;
        evhttp_send_reply_chunk_with_cb(f->s.req, buf, follower_drained, f);
        evbuffer_free(buf);
    }
    evtimer_add(f->heartbeat, &tv);
}

static void
follower_pump(struct follower *f)
{
    struct follower_batch b;
    int n;
    if (f->sending || !f->s.req) return;
    b.buf = evbuffer_new();
    b.last_seq = f->pos;
    n = store_changes(f->srv->reader, f->pos, 500, follower_line, &b);
    if (n > 0) {
        f->pos = b.last_seq;
        f->sending = 1;
        evhttp_send_reply_chunk_with_cb(f->s.req, b.buf, follower_drained, f);
    } else {
        /* Caught up. A filtered replica may be ahead of its last log entry. */
        if (f->srv->pos.seq > f->pos) f->pos = f->srv->pos.seq;
        f->w.target = f->pos + 1;
        server_wait_seq(f->srv, &f->w);
    }
    evbuffer_free(b.buf);
}

static void
h_changes(struct ctx *c)
{
    int64_t since, limit, wait_ms;
    if (qint(c, "since", 0, 0, INT64_MAX - 1, &since) ||
        qint(c, "limit", 1000, 1, CHANGES_LIMIT_MAX, &limit) ||
        qint(c, "wait_ms", 0, 0, WAIT_MAX_MS, &wait_ms))
        goto out;
    if (qflag(c, "follow")) {
        struct follower *f = calloc(1, sizeof *f);
        struct timeval tv = {HEARTBEAT_MS / 1000, 0};
        f->srv = c->srv;
        f->pos = since;
        f->s.on_gone = follower_gone;
        f->w.fire = follower_fire;
        f->w.arg = f;
        f->heartbeat = evtimer_new(c->srv->base, follower_heartbeat, f);
        f->next = c->srv->followers;
        if (f->next) f->next->prev = f;
        c->srv->followers = f;
        evhttp_add_header(evhttp_request_get_output_headers(c->req), "Content-Type",
                          "application/x-ndjson");
        stream_start(&f->s, c->req, 200);
        evtimer_add(f->heartbeat, &tv);
        follower_pump(f);
    } else if (wait_ms > 0 && c->srv->pos.seq <= since) {
        struct changes_req *cr = calloc(1, sizeof *cr);
        cr->req = c->req;
        cr->srv = c->srv;
        cr->since = since;
        cr->limit = limit;
        cr->w.target = since + 1;
        cr->w.deadline_ms = mono_ms() + wait_ms;
        cr->w.fire = changes_fire;
        cr->w.arg = cr;
        server_wait_seq(c->srv, &cr->w);
    } else {
        changes_reply(c->srv, c->req, since, limit);
    }
out:
    ctx_free(c);
}

void
http_followers_stop(struct server *srv)
{
    while (srv->followers) {
        struct follower *f = srv->followers;
        stream_end(&f->s);
        follower_gone(&f->s);
    }
}

/* ---------------------------------------------------------------- batch */

static void
h_batch(struct ctx *c)
{
    const char *upload = qget(c, "upload");
    struct ls_error err;
    struct wreq *r;

    ls_error_clear(&err);
    if (c->method != EVHTTP_REQ_POST) {
        reply_error(c->req, LS_EINVAL, "use POST for /v1/batch");
        goto out;
    }
    if (require_writable(c)) goto out;
    if (!(r = calloc(1, sizeof *r))) {
        reply_error(c->req, LS_ENOMEM, NULL);
        goto out;
    }
    if (upload) {
        struct upload_info info;
        if (upload_finish(c->srv->uploads, upload, &info, &err)) {
            free(r);
            reply_lserror(c->req, &err);
            goto out;
        }
        r->type = WREQ_BATCH_FILE;
        r->batch_file = strdup(info.file);
    } else {
        size_t len, cap = 0, lineno = 0;
        char *body = take_body(c->req, &len), *p = body, *end = body + len;
        r->type = WREQ_OPS;
        while (body && p < end) {
            char *nl = memchr(p, '\n', (size_t)(end - p));
            char *line_end = nl ? nl : end;
            size_t n = (size_t)(line_end - p);
            lineno++;
            if (n > 0 && p[n - 1] == '\r') n--;
            if (n > 0) {
                if (r->nops == cap) {
                    cap = cap ? cap * 2 : 64;
                    r->ops = realloc(r->ops, cap * sizeof *r->ops);
                }
                r->ops[r->nops].line = 0;
                if (op_parse_json(p, n, &r->ops[r->nops], &err) == 0 &&
                    r->ops[r->nops].body_len > c->srv->cfg.max_body)
                    ls_error_set(&err, LS_ETOOBIG, "body is larger than --max-body"),
                        op_release(&r->ops[r->nops]);
                else if (err.code == 0) {
                    r->ops[r->nops].line = (uint32_t)lineno;
                    r->nops++;
                    goto next;
                }
                reply_error(c->req, err.code, "line %zu: %s", lineno, err.msg);
                free(body);
                wreq_free(r);
                goto out;
            }
        next:
            ls_error_clear(&err);
            p = line_end + 1;
        }
        free(body);
        if (r->nops == 0) {
            wreq_free(r);
            reply_error(c->req, LS_EBATCH, "the batch holds no operation");
            goto out;
        }
    }
    submit(c, r, 1);
out:
    ctx_free(c);
}

/* ---------------------------------------------------------------- uploads */

static json_t *
upload_json(const struct upload_info *info)
{
    return json_pack("{s:s,s:I}", "id", info->id, "size", (json_int_t)info->size);
}

static void
h_uploads(struct ctx *c)
{
    struct ls_error err;
    struct upload_info info;
    char id[64];
    const char *slash = strchr(c->rest, '/');
    const char *action = slash ? slash + 1 : "";

    snprintf(id, sizeof id, "%.*s", slash ? (int)(slash - c->rest) : (int)strlen(c->rest),
             c->rest);
    ls_error_clear(&err);
    if (!*id && c->method == EVHTTP_REQ_POST) {
        if (require_writable(c)) goto out;
        if (upload_create(c->srv->uploads, &info, &err)) reply_lserror(c->req, &err);
        else reply_json(c->req, 201, upload_json(&info));
    } else if (!*action && c->method == EVHTTP_REQ_GET) {
        if (upload_stat(c->srv->uploads, id, &info, &err)) reply_lserror(c->req, &err);
        else reply_json(c->req, 200, upload_json(&info));
    } else if (!*action && c->method == EVHTTP_REQ_PUT) {
        struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
        size_t n = evbuffer_get_length(in);
        int64_t offset;
        if (qint(c, "offset", -1, 0, INT64_MAX, &offset)) goto out;
        if (offset < 0) {
            reply_error(c->req, LS_EINVAL, "a part needs ?offset=N");
            goto out;
        }
        if (upload_append(c->srv->uploads, id, (uint64_t)offset, evbuffer_pullup(in, -1), n,
                          &info, &err)) {
            if (err.code == LS_ERANGE) {
                json_t *o = json_pack("{s:{s:s,s:s},s:I}", "error", "code", ls_errcode(err.code),
                                      "message", err.msg, "size", (json_int_t)info.size);
                reply_json(c->req, ls_errstatus(LS_ERANGE), o);
            } else {
                reply_lserror(c->req, &err);
            }
        } else {
            reply_json(c->req, 200, upload_json(&info));
        }
    } else if (!*action && c->method == EVHTTP_REQ_DELETE) {
        if (upload_abort(c->srv->uploads, id, &err)) reply_lserror(c->req, &err);
        else reply_json(c->req, 200, json_pack("{s:s}", "deleted", id));
    } else if (strcmp(action, "commit") == 0 && c->method == EVHTTP_REQ_POST) {
        struct wreq *r;
        struct ls_op *op;
        const char *want = qget(c, "sha256");
        char *path;
        if (require_writable(c)) goto out;
        if (!(path = checked_path(c, qget(c, "path")))) goto out; /* already decoded */
        r = wreq_one(LS_OP_PUT);
        op = &r->ops[0];
        op->path = path;
        if (put_params(c, op)) {
            wreq_free(r);
            goto out;
        }
        if (upload_finish(c->srv->uploads, id, &info, &err)) {
            wreq_free(r);
            reply_lserror(c->req, &err);
            goto out;
        }
        if (want) {
            char got[65];
            hex_encode(info.sha, 32, got);
            if (strcmp(got, want) != 0) {
                wreq_free(r);
                reply_error(c->req, LS_EINVAL,
                            "upload %s has sha256 %s, not %s; send it again", id, got, want);
                unlink(info.file);
                goto out;
            }
        }
        op->body_file = strdup(info.file);
        op->body_file_size = info.size;
        op->has_sha = 1;
        memcpy(op->sha, info.sha, 32);
        submit(c, r, 0);
    } else {
        reply_error(c->req, LS_ENOTFOUND, "no such upload endpoint");
    }
out:
    ctx_free(c);
}

/* ---------------------------------------------------------------- status and digest */

static void
h_status(struct ctx *c)
{
    struct server *srv = c->srv;
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:s}", "name", srv->cfg.name, "role",
                          srv->cfg.role, "version", LS_VERSION, "store_id", srv->pos.store_id,
                          "epoch", (json_int_t)srv->pos.epoch, "seq", (json_int_t)srv->pos.seq,
                          "log_first_seq", (json_int_t)store_log_first_seq(srv->reader),
                          "uptime_s", (json_int_t)((mono_ms() - srv->started_ms) / 1000), "http",
                          srv->cfg.http);
    json_object_set_new(o, "peer", json_string(srv->cfg.listen));
    json_object_set_new(o, "downstreams", json_integer(repl_up_connected(srv)));
    if (server_is_primary(srv)) json_object_set_new(o, "state", json_string("live"));
    else repl_down_status(srv, o);
    reply_json(c->req, 200, o);
    ctx_free(c);
}

static void
h_digest(struct ctx *c)
{
    struct ls_error err;
    const char *prefix = qget(c, "prefix");
    int pub = qflag(c, "published_only");
    char hex[65];
    int64_t count, seq;
    if (prefix && *prefix && strcmp(prefix, "/") != 0) {
        size_t len = strlen(prefix);
        while (len > 1 && prefix[len - 1] == '/') len--;
        if (path_check(prefix, len, &err)) {
            reply_error(c->req, LS_EPATH, "prefix: %s", err.msg);
            ctx_free(c);
            return;
        }
    }
    if (store_digest(c->srv->reader, prefix, pub, hex, &count, &seq, &err)) {
        reply_lserror(c->req, &err);
    } else {
        reply_json(c->req, 200,
                   json_pack("{s:I,s:I,s:s,s:s,s:b}", "seq", (json_int_t)seq, "items",
                             (json_int_t)count, "digest", hex, "prefix",
                             prefix && *prefix ? prefix : "/", "published_only", pub));
    }
    ctx_free(c);
}

/* ---------------------------------------------------------------- replication */

static void
h_nodes(struct ctx *c)
{
    reply_json(c->req, 200,
               json_pack("{s:s,s:s,s:I,s:o}", "name", c->srv->cfg.name, "role", c->srv->cfg.role,
                         "seq", (json_int_t)c->srv->pos.seq, "nodes", repl_up_nodes(c->srv)));
    ctx_free(c);
}

static int
promote_job(struct store *st, struct wreq *r)
{
    char pending[8] = "0";
    store_meta_get(st, "snapshot_pending", pending, sizeof pending);
    if (strcmp(pending, "1") == 0)
        return ls_error_set(&r->err, LS_ECONFLICT,
                            "this server is loading a snapshot and holds only part of the store: "
                            "promote another replica, or wait until the snapshot ends");
    return store_new_epoch(st, &r->last.version, &r->err);
}

static void
promote_done(struct wreq *r, void *arg)
{
    struct write_ctx *w = arg;
    struct server *srv = w->srv;
    if (r->rc) {
        repl_down_resume(srv); /* still a replica: follow again */
        reply_lserror(w->req, &r->err);
    } else {
        repl_down_stop(srv);
        free(srv->cfg.role);
        srv->cfg.role = strdup("primary");
        log_warn("promoted to primary: epoch %lld begins at seq %lld (restart this server with "
                 "--role primary to keep the role)",
                 (long long)r->last.version, (long long)srv->pos.seq);
        repl_up_drop_all(srv, "the upstream was promoted; a new epoch begins");
        reply_json(w->req, 200,
                   json_pack("{s:s,s:I,s:I}", "role", "primary", "epoch",
                             (json_int_t)r->last.version, "seq", (json_int_t)srv->pos.seq));
    }
    wreq_free(r);
    free(w);
}

static void
h_promote(struct ctx *c)
{
    struct wreq *r;
    struct write_ctx *w;
    if (server_is_primary(c->srv)) {
        reply_error(c->req, LS_ECONFLICT, "this server is already the primary");
        goto out;
    }
    r = calloc(1, sizeof *r);
    w = calloc(1, sizeof *w);
    if (!r || !w) {
        free(r);
        free(w);
        reply_error(c->req, LS_ENOMEM, NULL);
        goto out;
    }
    repl_down_halt(c->srv); /* no more changes from the old upstream */
    w->req = c->req;
    w->srv = c->srv;
    r->type = WREQ_CUSTOM;
    r->fn = promote_job;
    r->done = promote_done;
    r->arg = w;
    writer_submit(c->srv->writer, r);
out:
    ctx_free(c);
}

static void
h_resync(struct ctx *c)
{
    struct ls_error err;
    int64_t from, since = -1;
    const char *since_s = qget(c, "since");
    if (qint(c, "from_seq", -1, 0, INT64_MAX, &from)) goto out;
    if (since_s && parse_time(since_s, &since)) {
        reply_error(c->req, LS_EINVAL, "since must be a time such as 2026-11-21T10:00:00Z");
        goto out;
    }
    if (from < 0 && since < 0) {
        reply_error(c->req, LS_EINVAL, "resync needs from_seq=SEQ or since=TIME");
        goto out;
    }
    if (repl_down_resync(c->srv, from, since, &err)) reply_lserror(c->req, &err);
    else
        reply_json(c->req, 200,
                   json_pack("{s:s,s:I,s:I}", "resync", "requested", "from_seq", (json_int_t)from,
                             "since_ms", (json_int_t)since));
out:
    ctx_free(c);
}

/* ---------------------------------------------------------------- tokens */

struct token_job {
    struct write_ctx w;
    char name[65], role[16];
    char token[TOKEN_LEN + 1];
    int create;
};

static int
token_job_run(struct store *st, struct wreq *r)
{
    struct token_job *j = r->fn_arg;
    unsigned char hash[32];
    if (!j->create) return store_token_del(st, j->name, &r->err);
    token_hash(j->token, hash);
    return store_token_add(st, j->name, j->role, hash, &r->err);
}

static void
token_job_done(struct wreq *r, void *arg)
{
    struct token_job *j = arg;
    auth_invalidate(j->w.srv->auth);
    if (r->rc) reply_lserror(j->w.req, &r->err);
    else if (j->create)
        reply_json(j->w.req, 201,
                   json_pack("{s:s,s:s,s:s}", "name", j->name, "role", j->role, "token", j->token));
    else
        reply_json(j->w.req, 200, json_pack("{s:s}", "revoked", j->name));
    log_info("token %s %s", j->name, j->create ? "created" : "revoked"); /* never the token */
    wreq_free(r);
    free(j);
}

static void
token_list_cb(void *arg, const char *name, const char *role, const unsigned char hash[32],
              int64_t created)
{
    char t[40];
    format_time(created, t, sizeof t);
    json_array_append_new(arg, json_pack("{s:s,s:s,s:s}", "name", name, "role", role, "created", t));
}

static void
h_tokens(struct ctx *c)
{
    struct token_job *j;
    struct wreq *r;
    const char *name = c->rest[0] == '/' ? c->rest + 1 : c->rest;
    if (c->method == EVHTTP_REQ_GET && !*name) {
        json_t *list = json_array();
        store_tokens(c->srv->reader, token_list_cb, list);
        reply_json(c->req, 200, json_pack("{s:o}", "tokens", list));
        goto out;
    }
    if (!(j = calloc(1, sizeof *j)) || !(r = calloc(1, sizeof *r))) {
        free(j);
        reply_error(c->req, LS_ENOMEM, NULL);
        goto out;
    }
    if (c->method == EVHTTP_REQ_POST && !*name) {
        const char *role = qget(c, "role"), *nm = qget(c, "name");
        if (!role || !role_valid(role)) {
            reply_error(c->req, LS_EINVAL,
                        "role must be one of admin, write, read, replicate, notify, report");
            goto fail;
        }
        j->create = 1;
        snprintf(j->role, sizeof j->role, "%s", role);
        token_generate(j->token);
        if (nm && strlen(nm) >= sizeof j->name) nm = ""; /* refused below */
        if (nm) snprintf(j->name, sizeof j->name, "%s", nm);
        else {
            unsigned char hash[32];
            token_hash(j->token, hash);
            token_default_name(role, hash, j->name, sizeof j->name);
        }
    } else if (c->method == EVHTTP_REQ_DELETE && *name) {
        size_t n = 0;
        char *decoded = evhttp_uridecode(name, 0, &n); /* the CLI sends it percent-encoded */
        if (decoded && n == strlen(decoded) && n < sizeof j->name) memcpy(j->name, decoded, n + 1);
        free(decoded);
    } else {
        reply_error(c->req, LS_EINVAL, "use GET or POST /v1/tokens, DELETE /v1/tokens/NAME");
        goto fail;
    }
    if (!*j->name || strlen(j->name) > 64 || !utf8_valid(j->name, strlen(j->name))) {
        reply_error(c->req, LS_EINVAL, "a token name is 1 to 64 bytes of UTF-8");
        goto fail;
    }
    j->w.req = c->req;
    j->w.srv = c->srv;
    r->type = WREQ_CUSTOM;
    r->fn = token_job_run;
    r->fn_arg = j;
    r->done = token_job_done;
    r->arg = j;
    writer_submit(c->srv->writer, r);
    goto out;
fail:
    free(j);
    free(r);
out:
    ctx_free(c);
}

/* ---------------------------------------------------------------- dispatch */

#define M_GET (EVHTTP_REQ_GET | EVHTTP_REQ_HEAD)
#define M_ANY (EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE)

struct route {
    const char *prefix; /* ends with '/' when it takes a rest */
    int methods;
    enum need read_need, write_need; /* what a token must allow for GET/HEAD, and otherwise */
    handler_fn fn;
};

static const struct route routes[] = {
    {"/v1/items/", M_ANY, NEED_READ, NEED_WRITE, h_items},
    {"/v1/stat/", M_GET, NEED_READ, NEED_READ, h_stat},
    {"/v1/history/", M_GET, NEED_READ, NEED_READ, h_history},
    {"/v1/publish/", EVHTTP_REQ_POST, NEED_WRITE, NEED_WRITE, h_publish},
    {"/v1/unpublish/", EVHTTP_REQ_POST, NEED_WRITE, NEED_WRITE, h_unpublish},
    {"/v1/purge/", EVHTTP_REQ_POST, NEED_WRITE, NEED_WRITE, h_purge},
    {"/v1/move/", EVHTTP_REQ_POST, NEED_WRITE, NEED_WRITE, h_move},
    {"/v1/list", M_GET, NEED_READ, NEED_READ, h_list},
    {"/v1/changes", M_GET, NEED_READ, NEED_READ, h_changes},
    {"/v1/batch", EVHTTP_REQ_POST, NEED_WRITE, NEED_WRITE, h_batch},
    {"/v1/uploads", M_ANY, NEED_WRITE, NEED_WRITE, h_uploads},
    {"/v1/uploads/", M_ANY, NEED_WRITE, NEED_WRITE, h_uploads},
    {"/v1/status", M_GET, NEED_REPORT, NEED_REPORT, h_status},
    {"/v1/digest", M_GET, NEED_READ, NEED_READ, h_digest},
    {"/v1/nodes", M_GET, NEED_REPORT, NEED_REPORT, h_nodes},
    {"/v1/promote", EVHTTP_REQ_POST, NEED_ADMIN, NEED_ADMIN, h_promote},
    {"/v1/resync", EVHTTP_REQ_POST, NEED_ADMIN, NEED_ADMIN, h_resync},
    {"/v1/tokens", M_ANY, NEED_ADMIN, NEED_ADMIN, h_tokens},
    {"/v1/tokens/", EVHTTP_REQ_DELETE, NEED_ADMIN, NEED_ADMIN, h_tokens},
};

/* A 401 answered late: each failure from an address makes the next answer slower. It waits as a
 * seq waiter that only its deadline fires, so a stopping server answers it and frees it too. */
struct late_reply {
    struct seq_waiter w;
    struct evhttp_request *req;
    char msg[128];
};

static void
late_401(struct seq_waiter *w, int timed_out)
{
    struct late_reply *l = w->arg;
    evhttp_add_header(evhttp_request_get_output_headers(l->req), "WWW-Authenticate",
                      "Bearer realm=\"lockstep\"");
    reply_error(l->req, LS_EAUTH, "%s", l->msg);
    free(l);
}

/* Authorization: Bearer TOKEN -> TOKEN (NULL when absent or malformed). */
static const char *
bearer(struct evhttp_request *req)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return NULL;
    h += 7;
    while (*h == ' ') h++;
    return h;
}

/* The allow-list and the token. 0: go on; otherwise the request has been (or will be) answered. */
static int
check_access(struct server *srv, struct evhttp_request *req, const struct route *r, int method)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    const struct sockaddr *sa = evcon ? evhttp_connection_get_addr(evcon) : NULL;
    enum need need = method & M_GET ? r->read_need : r->write_need;
    const char *token = bearer(req), *role;
    char addr[80] = "?";
    int rc;

    if (sa) format_sockaddr(sa, addr, sizeof addr);
    if (sa && !cidr_match(srv->allow, srv->nallow, sa)) {
        log_warn("refused an HTTP request from %s: not in --allow", addr);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        reply_error(req, LS_EDENIED, "this address may not use this server");
        return -1;
    }
    rc = auth_check(srv->auth, token, need, &role);
    if (rc == LS_EAUTH) {
        struct late_reply *l = calloc(1, sizeof *l);
        int64_t delay = sa ? auth_failed(srv->auth, sa) : 0;
        /* The token itself is never logged. */
        log_warn("authentication failed from %s: %s", addr, token ? "unknown token" : "no token");
        if (!l) {
            reply_error(req, LS_EAUTH, NULL);
            return -1;
        }
        l->req = req;
        snprintf(l->msg, sizeof l->msg, "%s",
                 token ? "unknown token" : "this server needs a token (Authorization: Bearer)");
        l->w.target = INT64_MAX;
        l->w.deadline_ms = mono_ms() + delay;
        l->w.fire = late_401;
        l->w.arg = l;
        server_wait_seq(srv, &l->w);
        return -1;
    }
    if (rc == LS_EDENIED) {
        reply_error(req, LS_EDENIED, "a %s token may not %s here", role, need_name(need));
        return -1;
    }
    return 0;
}


/*
 * The one entrance of every HTTP request: route, method, then the checks every handler relies on.
 * Authentication and authorization go here (the route's role), nowhere else.
 */
static void
http_dispatch(struct evhttp_request *req, void *arg)
{
    struct server *srv = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    int method = (int)evhttp_request_get_command(req);
    struct ctx *c;

    if (srv->stopping) {
        reply_error(req, LS_EUNAVAIL, "the server is stopping");
        return;
    }
    http_conns_request(srv, req);
    if (!path) {
        reply_error(req, LS_EINVAL, "malformed request URI");
        return;
    }
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *r = &routes[i];
        size_t n = strlen(r->prefix);
        int has_rest = r->prefix[n - 1] == '/';
        if (has_rest ? strncmp(path, r->prefix, n - 1) != 0 || (path[n - 1] != '/')
                     : strcmp(path, r->prefix) != 0)
            continue;
        if (!(r->methods & method)) {
            reply_error(req, LS_EINVAL, "method not allowed on %s", r->prefix);
            return;
        }
        if (check_access(srv, req, r, method)) return;
        c = calloc(1, sizeof *c);
        if (!c) {
            reply_error(req, LS_ENOMEM, NULL);
            return;
        }
        c->srv = srv;
        c->req = req;
        c->method = method;
        c->rest = has_rest ? path + n - 1 : "";
        if ((r->fn == h_uploads || r->fn == h_tokens) && has_rest) c->rest = path + n;
        TAILQ_INIT(&c->query);
        /* evhttp decodes values into C strings: a %00 would cut one short silently
         * (?to=/a%00b moving an item to /a). No parameter may hold a NUL. */
        if (query && strstr(query, "%00")) {
            reply_error(req, LS_EINVAL, "a query parameter holds a NUL byte (%%00)");
            ctx_free(c);
            return;
        }
        if (query && evhttp_parse_query_str(query, &c->query) < 0) {
            reply_error(req, LS_EINVAL, "malformed query string");
            ctx_free(c);
            return;
        }
        r->fn(c);
        return;
    }
    reply_error(req, LS_ENOTFOUND, "no such endpoint: %s", path);
}

static int
split_addr(const char *addr, char *host, size_t n, int *port)
{
    const char *colon = strrchr(addr, ':');
    int64_t p;
    if (!colon || parse_i64(colon + 1, &p) || p < 0 || p > 65535) return LS_EINVAL;
    if (addr[0] == '[') {
        if (colon == addr || colon[-1] != ']') return LS_EINVAL;
        snprintf(host, n, "%.*s", (int)(colon - addr - 2), addr + 1);
    } else {
        snprintf(host, n, "%.*s", (int)(colon - addr), addr);
    }
    *port = (int)p;
    return 0;
}

int
http_api_start(struct server *srv, struct ls_error *err)
{
    char host[256];
    int port;
    struct timeval tv;

    if (split_addr(srv->cfg.http, host, sizeof host, &port))
        return ls_error_set(err, LS_EINVAL, "--http %s: expected HOST:PORT", srv->cfg.http);
    srv->http = evhttp_new(srv->base);
    if (!srv->http) return ls_error_set(err, LS_ENOMEM, NULL);
    evhttp_set_allowed_methods(srv->http, M_ANY);
    evhttp_set_max_body_size(srv->http, (ev_ssize_t)srv->cfg.max_request);
    evhttp_set_max_headers_size(srv->http, 64 * 1024);
    tv.tv_sec = srv->cfg.idle_timeout_ms / 1000;
    tv.tv_usec = (srv->cfg.idle_timeout_ms % 1000) * 1000;
    evhttp_set_timeout_tv(srv->http, &tv);
    evhttp_set_gencb(srv->http, http_dispatch, srv);
    if (http_conns_start(srv)) return ls_error_set(err, LS_ENOMEM, NULL);
    if (!(srv->http_socket = evhttp_bind_socket_with_handle(srv->http, host, (ev_uint16_t)port)))
        return ls_error_set(err, LS_EIO, "cannot listen on %s: %s", srv->cfg.http,
                            strerror(errno));
    return 0;
}

