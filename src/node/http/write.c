/*
 * write.c - the write path of the HTTP API: a handler builds a writer request, submit() hands it
 * to the writer thread, and the reply goes out once its group has committed (and, with
 * wait_replicas=N, once N downstreams have applied it).
 *
 * Not for: applying operations (writer.c and the store).
 */
#include "node/http/http.h"
#include "common/util.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

int
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
    /* Refused before its body is copied: past the writer's bound, memory would only grow. */
    if (writer_admit(c->srv->writer,
                     evbuffer_get_length(evhttp_request_get_input_buffer(c->req)))) {
        reply_error(c->req, LS_EUNAVAIL, "%s",
                    c->srv->stopping ? "the server is stopping"
                                     : "too many writes are waiting; try again shortly");
        return -1;
    }
    return 0;
}

void *
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

struct wreq *
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
        w->ack.deadline_ms = ls_mono_ms() + w->wait_ms;
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

void
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
