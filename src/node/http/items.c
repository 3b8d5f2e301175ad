/*
 * items.c - the item routes of the HTTP API (docs/api.md, section 4): read a body, stat,
 * history, list, and the single-item writes (put, delete, publish, unpublish, purge, move).
 *
 * A body and a stat are one indexed lookup and are answered on the loop; history and listings
 * can be long and go to a reader thread. Blobs stream in chunks with backpressure.
 *
 * Not for: batches and uploads (batch.c), or the rules of the operations (core/).
 */
#include "node/http/http.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STREAM_CHUNK (256 * 1024)
#define LIST_LIMIT_MAX 1000

static char *
item_path(struct ctx *c)
{
    return decode_path(c, param(c, "path"));
}

/* ---------------------------------------------------------------- a blob body */

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
blob_stream_next(struct stream *s)
{
    struct blob_stream *b = (struct blob_stream *)s;
    struct evbuffer *chunk = evbuffer_new();
    int n = chunk ? evbuffer_read(chunk, b->fd, STREAM_CHUNK) : -1;
    if (n <= 0) {
        if (n < 0) log_warn("reading a blob: %s", strerror(errno));
        if (chunk) evbuffer_free(chunk);
        stream_end(&b->s);
        blob_stream_gone(&b->s);
        return;
    }
    stream_send(&b->s, chunk);
    evbuffer_free(chunk);
}

/* ---------------------------------------------------------------- reads */

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
    ls_hex_encode(it->sha, 32, etag + 1);
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

    if (qint(c, "version", 0, 0, INT64_MAX, &version)) goto out;
    if (!(path = item_path(c))) goto out;
    if (store_get(c->srv->reader, path, version, c->method != EVHTTP_REQ_HEAD, &it, &err)) {
        free(path);
        reply_lserror(c->req, &err);
        goto out;
    }
    free(path);
    if (it.deleted && version == 0) {
        item_release(&it);
        reply_error(c->req, LS_ENOTFOUND, "not found");
        goto out;
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
        struct blob_stream *b = NULL;
        store_blob_path(c->srv->reader, it.sha, file, sizeof file);
        if (!evhttp_request_get_connection(c->req)) {
            /* its client went away while the request waited for min_seq: nobody to stream
             * to, and this reply frees the detached request */
            reply_error(c->req, LS_EUNAVAIL, "the client has gone");
        } else if (!(b = calloc(1, sizeof *b)) ||
                   (b->fd = open(file, O_RDONLY | O_CLOEXEC)) < 0) {
            free(b);
            evhttp_clear_headers(evhttp_request_get_output_headers(c->req));
            reply_error(c->req, LS_EIO, "cannot read the body of %s", it.path);
        } else {
            b->s.on_gone = blob_stream_gone;
            b->s.on_sent = blob_stream_next;
            stream_start(&b->s, c->req, 200);
            blob_stream_next(&b->s);
        }
    }
    item_release(&it);
out:
    ctx_free(c);
}

static void
get_stat(struct ctx *c)
{
    struct ls_error err;
    struct ls_item it;
    int64_t version;
    char *path;
    if (qint(c, "version", 0, 0, INT64_MAX, &version)) goto out;
    if (!(path = item_path(c))) goto out;
    if (store_get(c->srv->reader, path, version, 0, &it, &err)) {
        reply_lserror(c->req, &err);
    } else {
        reply_json(c->req, 200, item_json(&it));
        item_release(&it);
    }
    free(path);
out:
    ctx_free(c);
}

/* GET and HEAD wait for min_seq first; the resumed handler answers and frees c. */
static void
h_get(struct ctx *c)
{
    int parked = park_until_seq(c, get_item);
    if (parked == 0) get_item(c);
    else if (parked < 0) ctx_free(c);
}

static void
h_stat(struct ctx *c)
{
    int parked = park_until_seq(c, get_stat);
    if (parked == 0) get_stat(c);
    else if (parked < 0) ctx_free(c);
}

static int
append_item(void *arg, const struct ls_item *it)
{
    json_array_append_new(arg, item_json(it));
    return 0;
}

static void
history_run(struct store *st, struct http_read *r)
{
    json_t *versions = json_array();
    if (store_history(st, r->arg, append_item, versions, &r->err) == 0)
        r->reply = json_pack("{s:s,s:o}", "path", (char *)r->arg, "versions", versions);
    else
        json_decref(versions);
}

static void
h_history(struct ctx *c)
{
    struct http_read *r;
    char *path = item_path(c);
    if (!path) goto fail;
    if (!(r = calloc(1, sizeof *r))) {
        free(path);
        reply_error(c->req, LS_ENOMEM, NULL);
        goto fail;
    }
    r->run = history_run;
    r->arg = path;
    r->free_arg = free;
    http_read_submit(c, r);
    return;
fail:
    ctx_free(c);
}

struct list_args {
    char *prefix, *after;
    int64_t limit;
    int deleted;
    json_t *items;
    char *last;
};

static void
list_args_free(void *arg)
{
    struct list_args *a = arg;
    free(a->prefix);
    free(a->after);
    free(a->last);
    free(a);
}

static int
list_cb(void *arg, const struct ls_item *it)
{
    struct list_args *a = arg;
    json_array_append_new(a->items, item_json(it));
    free(a->last);
    /* Without it the page would end with "next": null, as if the listing were complete. */
    return !(a->last = strdup(it->path)); /* stop: list_run fails the request */
}

static void
list_run(struct store *st, struct http_read *r)
{
    struct list_args *a = r->arg;
    int n;
    a->items = json_array();
    n = store_list(st, a->prefix, a->after, (int)a->limit, a->deleted, list_cb, a, &r->err);
    if (n > 0 && !a->last) n = ls_error_set(&r->err, LS_ENOMEM, NULL);
    if (n < 0) {
        json_decref(a->items);
        return;
    }
    r->reply = json_pack("{s:o,s:o}", "items", a->items, "next",
                         n == a->limit && a->last ? json_string(a->last) : json_null());
}

static void
h_list(struct ctx *c)
{
    const char *prefix = qget(c, "prefix"), *after = qget(c, "after");
    struct list_args *a = NULL;
    struct http_read *r = NULL;
    int64_t limit;
    if (qint(c, "limit", 100, 1, LIST_LIMIT_MAX, &limit) || check_prefix(c, prefix)) goto fail;
    a = calloc(1, sizeof *a);
    r = calloc(1, sizeof *r);
    if (!a || !r || (prefix && !(a->prefix = strdup(prefix))) ||
        (after && !(a->after = strdup(after)))) {
        reply_error(c->req, LS_ENOMEM, NULL);
        goto fail;
    }
    a->limit = limit;
    a->deleted = qflag(c, "deleted");
    r->run = list_run;
    r->arg = a;
    r->free_arg = list_args_free;
    http_read_submit(c, r);
    return;
fail:
    if (a) list_args_free(a);
    free(r);
    ctx_free(c);
}

/* ---------------------------------------------------------------- writes */

/* A writer request of one operation on the item the URL names; NULL once answered (a replica,
 * a full writer queue, a bad path). */
static struct wreq *
item_wreq(struct ctx *c, int type)
{
    struct wreq *r;
    char *path;
    if (require_writable(c) || !(path = item_path(c))) return NULL;
    if (!(r = wreq_one(type))) {
        free(path);
        reply_error(c->req, LS_ENOMEM, NULL);
        return NULL;
    }
    r->ops[0].path = path;
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
        if (n == 0 || n > LS_KIND_MAX || !ls_utf8_valid(kind, n)) {
            reply_error(c->req, LS_EINVAL, "kind must be 1 to %d bytes of UTF-8", LS_KIND_MAX);
            return -1;
        }
        if (!(op->kind = strdup(kind))) {
            reply_error(c->req, LS_ENOMEM, NULL);
            return -1;
        }
    }
    if (meta && meta_canonical(meta, strlen(meta), &op->meta, &err)) {
        reply_lserror(c->req, &err);
        return -1;
    }
    op->publish = qflag(c, "publish");
    return qint(c, "if_version", 0, 0, INT64_MAX, &op->if_version);
}

/* For uploads: a put whose body is a committed upload file. */
int
http_put_params(struct ctx *c, struct ls_op *op)
{
    return put_params(c, op);
}

static void
h_put(struct ctx *c)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
    struct wreq *r;
    struct ls_op *op;

    if (evbuffer_get_length(in) > c->srv->cfg.max_body) {
        reply_error(c->req, LS_ETOOBIG, "body is larger than --max-body (%llu bytes)",
                    (unsigned long long)c->srv->cfg.max_body);
        goto out;
    }
    if (!(r = item_wreq(c, LS_OP_PUT))) goto out;
    op = &r->ops[0];
    if (put_params(c, op)) {
        wreq_free(r);
        goto out;
    }
    op->body_owned = take_body(c->req, &op->body_len);
    op->body = op->body_owned;
    if (!op->body) {
        wreq_free(r);
        reply_error(c->req, LS_ENOMEM, NULL);
        goto out;
    }
    submit(c, r, 0);
out:
    ctx_free(c);
}

static void
simple_op(struct ctx *c, int type)
{
    struct wreq *r;
    struct ls_op *op;
    const char *to = qget(c, "to");
    struct ls_error err;
    if (!(r = item_wreq(c, type))) goto out;
    op = &r->ops[0];
    if (qint(c, "if_version", 0, 0, INT64_MAX, &op->if_version) ||
        (type == LS_OP_PUBLISH && qint(c, "version", 0, 0, INT64_MAX, &op->version)))
        goto fail;
    if (type == LS_OP_MOVE) {
        if (!to) {
            reply_error(c->req, LS_EINVAL, "move needs ?to=DESTINATION");
            goto fail;
        }
        if (path_check(to, strlen(to), &err)) {
            reply_error(c->req, LS_EPATH, "destination: %s", err.msg);
            goto fail;
        }
        if (!(op->to = strdup(to))) {
            reply_error(c->req, LS_ENOMEM, NULL);
            goto fail;
        }
    }
    submit(c, r, 0);
    goto out;
fail:
    wreq_free(r);
out:
    ctx_free(c);
}

static void h_delete(struct ctx *c) { simple_op(c, LS_OP_DELETE); }
static void h_publish(struct ctx *c) { simple_op(c, LS_OP_PUBLISH); }
static void h_unpublish(struct ctx *c) { simple_op(c, LS_OP_UNPUBLISH); }
static void h_purge(struct ctx *c) { simple_op(c, LS_OP_PURGE); }
static void h_move(struct ctx *c) { simple_op(c, LS_OP_MOVE); }

void
http_items_routes(struct server *srv)
{
    uint64_t body = srv->cfg.max_request;
    const struct route routes[] = {
        {"/v1/items/{path*}", M_GET, NEED_READ, NEED_READ, NO_BODY, h_get},
        {"/v1/items/{path*}", EVHTTP_REQ_PUT, NEED_WRITE, NEED_WRITE, body, h_put},
        {"/v1/items/{path*}", EVHTTP_REQ_DELETE, NEED_WRITE, NEED_WRITE, NO_BODY, h_delete},
        {"/v1/stat/{path*}", M_GET, NEED_READ, NEED_READ, NO_BODY, h_stat},
        {"/v1/history/{path*}", M_GET, NEED_READ, NEED_READ, NO_BODY, h_history},
        {"/v1/publish/{path*}", EVHTTP_REQ_POST, NEED_WRITE, NEED_WRITE, NO_BODY, h_publish},
        {"/v1/unpublish/{path*}", EVHTTP_REQ_POST, NEED_WRITE, NEED_WRITE, NO_BODY, h_unpublish},
        {"/v1/purge/{path*}", EVHTTP_REQ_POST, NEED_WRITE, NEED_WRITE, NO_BODY, h_purge},
        {"/v1/move/{path*}", EVHTTP_REQ_POST, NEED_WRITE, NEED_WRITE, NO_BODY, h_move},
        {"/v1/list", M_GET, NEED_READ, NEED_READ, NO_BODY, h_list},
    };
    http_routes(srv, routes, sizeof routes / sizeof routes[0]);
}
