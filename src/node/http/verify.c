/*
 * verify.c - GET /v1/verify: the scrub (core/verify.h) over this server's store, on a reader
 * thread, at most ?rate= bytes per second (default VERIFY_RATE_DEFAULT), answering what it
 * checked and every damaged version (docs/api.md).
 *
 * One scrub at a time: a second one while the first runs gets 409, so that scrubs never take
 * every reader thread (the listings, digests and change pages need them too). The loop only
 * submits and answers; the files are read and hashed on the reader thread.
 *
 * Not for: the digest (cluster.c), which compares servers; this compares a server with itself.
 */
#include "node/http/http.h"
#include "core/verify.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

#define VERIFY_RATE_DEFAULT (50u << 20) /* bytes per second */

static int verify_running; /* on the loop only */

struct verify_args {
    uint64_t rate;
    json_t *damaged;
};

static void
verify_args_free(void *arg)
{
    struct verify_args *a = arg;
    json_decref(a->damaged);
    free(a);
    verify_running = 0;
}

static int
on_damage(void *arg, const char *path, int64_t version, const unsigned char sha[32],
          const char *problem, const char *blob)
{
    struct verify_args *a = arg;
    char hex[65];
    json_t *d;
    ls_hex_encode(sha, 32, hex);
    d = json_pack("{s:s,s:I,s:s,s:s}", "path", path, "version", (json_int_t)version, "sha256",
                  hex, "problem", problem);
    if (!d) return LS_ENOMEM;
    if (blob) json_object_set_new(d, "blob", json_string(blob));
    return json_array_append_new(a->damaged, d) ? LS_ENOMEM : 0;
}

static void
verify_run(struct store *st, struct http_read *r)
{
    struct verify_args *a = r->arg;
    struct verify_options opt = {.rate = a->rate, .cancel = &r->job.cancelled};
    struct verify_result res;
    int64_t t0 = ls_mono_ms();
    if (store_verify(st, &opt, on_damage, a, &res, &r->err)) return;
    r->reply = json_pack("{s:I,s:I,s:I,s:O,s:f}", "checked", (json_int_t)res.checked, "blobs",
                         (json_int_t)res.blobs, "bytes", (json_int_t)res.bytes, "damaged",
                         a->damaged, "seconds", (double)(ls_mono_ms() - t0) / 1000.0);
}

static void
h_verify(struct ctx *c)
{
    const char *rate = qget(c, "rate");
    struct verify_args *a = NULL;
    struct http_read *r = NULL;
    uint64_t bps = VERIFY_RATE_DEFAULT;
    if (rate && *rate && ls_parse_size(rate, &bps)) {
        reply_error(c->req, LS_EINVAL, "rate: expected bytes per second, as 50M (0: no limit)");
        goto fail;
    }
    if (!c->srv->readers) { /* stopping: never a scrub on the loop */
        reply_error(c->req, LS_EUNAVAIL, "the server is stopping");
        goto fail;
    }
    if (verify_running) {
        reply_error(c->req, LS_ECONFLICT, "a verify is already running on this server");
        goto fail;
    }
    a = calloc(1, sizeof *a);
    r = calloc(1, sizeof *r);
    if (!a || !r || !(a->damaged = json_array())) {
        reply_error(c->req, LS_ENOMEM, NULL);
        goto fail;
    }
    a->rate = bps;
    r->run = verify_run;
    r->arg = a;
    r->free_arg = verify_args_free;
    verify_running = 1; /* until verify_args_free, on the loop, whatever the outcome */
    http_read_submit(c, r);
    return;
fail:
    if (a) {
        json_decref(a->damaged);
        free(a);
    }
    free(r);
    ctx_free(c);
}

void
http_verify_routes(struct server *srv)
{
    const struct route routes[] = {
        {"/v1/verify", M_GET, NEED_READ, NEED_READ, NO_BODY, h_verify},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) http_route(srv, &routes[i]);
}
