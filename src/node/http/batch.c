/*
 * batch.c - many operations in one transaction (POST /v1/batch), and resumable upload
 * sessions (/v1/uploads) for bodies and batch files larger than one request (docs/api.md).
 *
 * A commit hashes and syncs the uploaded file on a reader thread (after a restart the hash is
 * taken from the whole file), then hands the put or the batch file to the writer.
 *
 * Not for: reading operation lines (core/item.c) or applying them (the writer).
 */
#include "node/http/http.h"
#include "common/util.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- committing an upload */

/* What a commit does once the file is hashed and synced: a put, or a batch file. */
struct commit_job {
    struct read_job job;
    struct ctx *c;
    struct upload_commit *uc;
    struct upload_info info;
    struct ls_error err;
    int rc;
    struct wreq *r; /* the put (op->path and params set), or a batch file request */
    char want[65];  /* ?sha256= the client expects, "" when none */
};

static void
commit_run(struct store *st, struct read_job *j)
{
    struct commit_job *cj = (struct commit_job *)j;
    cj->rc = upload_finish_run(cj->uc, &cj->info, &cj->err);
    cj->uc = NULL;
}

static void
commit_done(struct read_job *j)
{
    struct commit_job *cj = (struct commit_job *)j;
    struct ctx *c = cj->c;
    struct wreq *r = cj->r;
    if (cj->uc) { /* cancelled before it ran (the server is stopping) */
        upload_commit_free(cj->uc);
        upload_reopen(cj->info.file);
        reply_error(c->req, LS_EUNAVAIL, "the server is stopping; commit again");
        wreq_free(r);
        goto out;
    }
    if (cj->rc) {
        reply_lserror(c->req, &cj->err);
        wreq_free(r);
        goto out;
    }
    if (*cj->want) {
        char got[65];
        ls_hex_encode(cj->info.sha, 32, got);
        if (strcmp(got, cj->want) != 0) {
            reply_error(c->req, LS_EINVAL, "upload %s has sha256 %s, not %s; send it again",
                        cj->info.id, got, cj->want);
            unlink(cj->info.file);
            wreq_free(r);
            goto out;
        }
    }
    if (r->type == WREQ_BATCH_FILE) {
        if (!(r->batch_file = strdup(cj->info.file))) goto nomem;
        submit(c, r, 1);
    } else {
        struct ls_op *op = &r->ops[0];
        if (!(op->body_file = strdup(cj->info.file))) goto nomem;
        op->body_file_size = cj->info.size;
        op->has_sha = 1;
        memcpy(op->sha, cj->info.sha, 32);
        submit(c, r, 0);
    }
    goto out;
nomem:
    upload_reopen(cj->info.file);
    reply_error(c->req, LS_ENOMEM, NULL);
    wreq_free(r);
out:
    ctx_free(c);
    free(cj);
}

/* Takes c and r: starts the commit of upload id; r is submitted once the file is ready. */
static void
commit_upload(struct ctx *c, const char *id, struct wreq *r, const char *want)
{
    struct commit_job *cj = calloc(1, sizeof *cj);
    if (!cj) {
        reply_error(c->req, LS_ENOMEM, NULL);
        goto fail;
    }
    ls_error_clear(&cj->err);
    if (upload_finish_start(c->srv->uploads, id, &cj->info, &cj->uc, &cj->err)) {
        reply_lserror(c->req, &cj->err);
        goto fail;
    }
    cj->c = c;
    cj->r = r;
    snprintf(cj->want, sizeof cj->want, "%s", want ? want : "");
    cj->job.run = commit_run;
    cj->job.done = commit_done;
    if (readers_submit(c->srv->readers, &cj->job)) {
        upload_commit_free(cj->uc);
        upload_reopen(cj->info.file);
        reply_error(c->req, LS_EUNAVAIL, "too much work is waiting; commit again");
        goto fail;
    }
    return;
fail:
    free(cj);
    wreq_free(r);
    ctx_free(c);
}

/* ---------------------------------------------------------------- batch */

/* The body's NDJSON lines as operations; NULL after a 400 (or 507 for memory). */
static struct wreq *
parse_batch(struct ctx *c)
{
    struct ls_error err;
    size_t len, cap = 0, lineno = 0;
    char *body = take_body(c->req, &len), *p = body, *end = body + len;
    struct wreq *r = calloc(1, sizeof *r);
    if (!body || !r) {
        reply_error(c->req, LS_ENOMEM, NULL);
        goto fail;
    }
    r->type = WREQ_OPS;
    ls_error_clear(&err);
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *line_end = nl ? nl : end;
        size_t n = (size_t)(line_end - p);
        lineno++;
        if (n > 0 && p[n - 1] == '\r') n--;
        if (n > 0) {
            if (r->nops == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                struct ls_op *ops = realloc(r->ops, ncap * sizeof *ops);
                if (!ops) {
                    reply_error(c->req, LS_ENOMEM, NULL);
                    goto fail;
                }
                r->ops = ops;
                cap = ncap;
            }
            memset(&r->ops[r->nops], 0, sizeof r->ops[r->nops]);
            if (op_parse_json(p, n, &r->ops[r->nops], &err) == 0 &&
                r->ops[r->nops].body_len > c->srv->cfg.max_body) {
                ls_error_set(&err, LS_ETOOBIG, "body is larger than --max-body");
                op_release(&r->ops[r->nops]);
            }
            if (err.code) {
                reply_error(c->req, err.code, "line %zu: %s", lineno, err.msg);
                goto fail;
            }
            r->ops[r->nops].line = (uint32_t)lineno;
            r->nops++;
        }
        p = line_end + 1;
    }
    if (r->nops == 0) {
        reply_error(c->req, LS_EBATCH, "the batch holds no operation");
        goto fail;
    }
    free(body);
    return r;
fail:
    free(body);
    wreq_free(r);
    return NULL;
}

static void
h_batch(struct ctx *c)
{
    const char *upload = qget(c, "upload");
    struct wreq *r;
    if (require_writable(c)) goto out;
    if (upload) {
        if (!(r = calloc(1, sizeof *r))) {
            reply_error(c->req, LS_ENOMEM, NULL);
            goto out;
        }
        r->type = WREQ_BATCH_FILE;
        commit_upload(c, upload, r, NULL);
        return;
    }
    if ((r = parse_batch(c))) submit(c, r, 1);
out:
    ctx_free(c);
}

/* ---------------------------------------------------------------- upload sessions */

static json_t *
upload_json(const struct upload_info *info)
{
    return json_pack("{s:s,s:I}", "id", info->id, "size", (json_int_t)info->size);
}

static void
h_upload_create(struct ctx *c)
{
    struct ls_error err;
    struct upload_info info;
    if (require_writable(c)) goto out;
    if (upload_create(c->srv->uploads, &info, &err)) reply_lserror(c->req, &err);
    else reply_json(c->req, 201, upload_json(&info));
out:
    ctx_free(c);
}

static void
h_upload_stat(struct ctx *c)
{
    struct ls_error err;
    struct upload_info info;
    if (upload_stat(c->srv->uploads, param(c, "id"), &info, &err)) reply_lserror(c->req, &err);
    else reply_json(c->req, 200, upload_json(&info));
    ctx_free(c);
}

static void
h_upload_append(struct ctx *c)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
    size_t n = evbuffer_get_length(in);
    struct ls_error err;
    struct upload_info info;
    const char *id = param(c, "id");
    int64_t offset;
    if (qint(c, "offset", -1, 0, INT64_MAX, &offset)) goto out;
    if (offset < 0) {
        reply_error(c->req, LS_EINVAL, "a part needs ?offset=N");
        goto out;
    }
    if (upload_append(c->srv->uploads, id, (uint64_t)offset, evbuffer_pullup(in, -1), n, &info,
                      &err)) {
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
out:
    ctx_free(c);
}

static void
h_upload_abort(struct ctx *c)
{
    struct ls_error err;
    const char *id = param(c, "id");
    if (upload_abort(c->srv->uploads, id, &err)) reply_lserror(c->req, &err);
    else reply_json(c->req, 200, json_pack("{s:s}", "deleted", id));
    ctx_free(c);
}

static void
h_upload_commit(struct ctx *c)
{
    struct wreq *r = NULL;
    char *path;
    if (require_writable(c)) goto out;
    if (!(path = checked_path(c, qget(c, "path")))) goto out; /* already decoded */
    if (!(r = wreq_one(LS_OP_PUT))) {
        free(path);
        reply_error(c->req, LS_ENOMEM, NULL);
        goto out;
    }
    r->ops[0].path = path;
    if (http_put_params(c, &r->ops[0])) goto out;
    commit_upload(c, param(c, "id"), r, qget(c, "sha256"));
    return;
out:
    wreq_free(r);
    ctx_free(c);
}

void
http_batch_routes(struct server *srv)
{
    uint64_t body = srv->cfg.max_request;
    const struct route routes[] = {
        {"/v1/batch", EVHTTP_REQ_POST, NEED_WRITE, NEED_WRITE, body, h_batch},
        {"/v1/uploads", EVHTTP_REQ_POST, NEED_WRITE, NEED_WRITE, NO_BODY, h_upload_create},
        {"/v1/uploads/{id}", M_GET, NEED_WRITE, NEED_WRITE, NO_BODY, h_upload_stat},
        {"/v1/uploads/{id}", EVHTTP_REQ_PUT, NEED_WRITE, NEED_WRITE, body, h_upload_append},
        {"/v1/uploads/{id}", EVHTTP_REQ_DELETE, NEED_WRITE, NEED_WRITE, NO_BODY, h_upload_abort},
        {"/v1/uploads/{id}/commit", EVHTTP_REQ_POST, NEED_WRITE, NEED_WRITE, NO_BODY,
         h_upload_commit},
    };
    http_routes(srv, routes, sizeof routes / sizeof routes[0]);
}
