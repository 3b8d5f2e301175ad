/*
 * tokens.c - access tokens over HTTP: list, create (the token is shown once), revoke
 * (docs/api.md, section 7). The store keeps only hashes; auth.c checks them.
 *
 * Not for: checking a request's token (router.c and auth.c).
 */
#include "node/http/http.h"
#include "common/log.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

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
    ls_format_time(created, t, sizeof t);
    json_array_append_new(arg, json_pack("{s:s,s:s,s:s}", "name", name, "role", role, "created", t));
}

static void
h_token_list(struct ctx *c)
{
    json_t *list = json_array();
    store_tokens(c->srv->reader, token_list_cb, list);
    reply_json(c->req, 200, json_pack("{s:o}", "tokens", list));
    ctx_free(c);
}

/* Hands j (create or revoke, name set) to the writer; takes j. */
static void
token_submit(struct ctx *c, struct token_job *j)
{
    struct wreq *r = NULL;
    if (!*j->name || strlen(j->name) > 64 || !ls_utf8_valid(j->name, strlen(j->name))) {
        reply_error(c->req, LS_EINVAL, "a token name is 1 to 64 bytes of UTF-8");
        goto fail;
    }
    if (!(r = calloc(1, sizeof *r))) {
        reply_error(c->req, LS_ENOMEM, NULL);
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
    ctx_free(c);
    return;
fail:
    free(j);
    ctx_free(c);
}

static void
h_token_create(struct ctx *c)
{
    const char *role = qget(c, "role"), *nm = qget(c, "name");
    struct token_job *j;
    if (!role || !role_valid(role)) {
        reply_error(c->req, LS_EINVAL,
                    "role must be one of admin, write, read, replicate, notify, report");
        ctx_free(c);
        return;
    }
    if (!(j = calloc(1, sizeof *j))) {
        reply_error(c->req, LS_ENOMEM, NULL);
        ctx_free(c);
        return;
    }
    j->create = 1;
    snprintf(j->role, sizeof j->role, "%s", role);
    token_generate(j->token);
    if (nm && strlen(nm) >= sizeof j->name) nm = ""; /* refused in token_submit */
    if (nm) {
        snprintf(j->name, sizeof j->name, "%s", nm);
    } else {
        unsigned char hash[32];
        token_hash(j->token, hash);
        token_default_name(role, hash, j->name, sizeof j->name);
    }
    token_submit(c, j);
}

static void
h_token_revoke(struct ctx *c)
{
    struct token_job *j = calloc(1, sizeof *j);
    size_t n = 0;
    char *decoded;
    if (!j) {
        reply_error(c->req, LS_ENOMEM, NULL);
        ctx_free(c);
        return;
    }
    decoded = evhttp_uridecode(param(c, "name"), 0, &n); /* the CLI sends it percent-encoded */
    if (decoded && n == strlen(decoded) && n < sizeof j->name) memcpy(j->name, decoded, n + 1);
    free(decoded);
    token_submit(c, j);
}

void
http_tokens_routes(struct server *srv)
{
    const struct route routes[] = {
        {"/v1/tokens", M_GET, NEED_ADMIN, NEED_ADMIN, NO_BODY, h_token_list},
        {"/v1/tokens", EVHTTP_REQ_POST, NEED_ADMIN, NEED_ADMIN, NO_BODY, h_token_create},
        {"/v1/tokens/{name}", EVHTTP_REQ_DELETE, NEED_ADMIN, NEED_ADMIN, NO_BODY, h_token_revoke},
    };
    http_routes(srv, routes, sizeof routes / sizeof routes[0]);
}
