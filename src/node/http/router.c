/*
 * router.c - the one entrance of every HTTP request (docs/api.md): the route table that each
 * group fills with http_route(), path parameters, the checks every handler relies on (the
 * allow-list, the token against the role the route needs, the route's body limit), the query
 * helpers, waiting for a seq (min_seq), and handing long reads to the reader threads.
 *
 * Authentication and authorization happen here, nowhere else.
 *
 * Not for: what a route does; each group's file says that.
 */
#include "node/http/http.h"
#include "node/net.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#define ROUTES_MAX 64

struct http_router {
    struct route routes[ROUTES_MAX];
    int n;
    uint64_t max_body; /* the largest of the routes' limits: evhttp's own */
    /* answers by route and status (GET /metrics); [ROUTES_MAX]: requests that matched none */
    struct http_route_stats stats[ROUTES_MAX + 1];
};

void
http_route(struct server *srv, const struct route *r)
{
    struct http_router *rt = srv->router;
    /* A table too small is a programming error, found by the first start of any test. */
    if (rt->n == ROUTES_MAX) {
        log_error("too many HTTP routes; %s not registered", r->pattern);
        abort();
    }
    rt->stats[rt->n].pattern = r->pattern;
    rt->stats[rt->n].srv = srv;
    rt->routes[rt->n++] = *r;
    if (r->max_body > rt->max_body) rt->max_body = r->max_body;
}

void
http_routes(struct server *srv, const struct route *table, size_t n)
{
    for (size_t i = 0; i < n; i++) http_route(srv, &table[i]);
}

/* ---------------------------------------------------------------- matching */

/*
 * Matches path against pattern. {name} takes one non-empty segment, {name*} everything that
 * follows (at least one character). Parameters are pointers into c's own copies.
 */
static int
match(const char *pattern, const char *path, struct ctx *c)
{
    const char *p = pattern, *s = path;
    c->nparams = 0;
    while (*p) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            int rest = close[-1] == '*';
            size_t len;
            /* a rest parameter keeps its leading slash: /v1/items/a/b names the item /a/b */
            if (rest && p > pattern && p[-1] == '/') s--;
            len = rest ? strlen(s) : strcspn(s, "/");
            if (len == 0 || c->nparams == HTTP_PARAMS_MAX) return 0;
            c->param_name[c->nparams] = p + 1;
            c->param[c->nparams] = strndup(s, len);
            if (!c->param[c->nparams]) return 0;
            c->nparams++;
            s += len;
            p = close + 1;
        } else if (*p++ != *s++) {
            return 0;
        }
    }
    return *s == '\0';
}

const char *
param(struct ctx *c, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < c->nparams; i++)
        if (strncmp(c->param_name[i], name, n) == 0 &&
            (c->param_name[i][n] == '}' || c->param_name[i][n] == '*'))
            return c->param[i];
    return "";
}

static void
params_clear(struct ctx *c)
{
    for (int i = 0; i < c->nparams; i++) free(c->param[i]);
    c->nparams = 0;
}

void
ctx_free(struct ctx *c)
{
    if (!c) return;
    params_clear(c);
    evhttp_clear_headers(&c->query);
    free(c);
}

/* ---------------------------------------------------------------- query helpers */

const char *
qget(struct ctx *c, const char *key)
{
    return evhttp_find_header(&c->query, key);
}

int
qflag(struct ctx *c, const char *key)
{
    const char *v = qget(c, key);
    return v && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 ||
                 *v == '\0');
}

int
qint(struct ctx *c, const char *key, int64_t def, int64_t min, int64_t max, int64_t *out)
{
    const char *v = qget(c, key);
    *out = def;
    if (!v) return 0;
    if (ls_parse_i64(v, out) || *out < min || *out > max) {
        reply_error(c->req, LS_EINVAL, "query parameter %s must be an integer from %lld to %lld",
                    key, (long long)min, (long long)max);
        return -1;
    }
    return 0;
}

char *
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

char *
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

int
check_prefix(struct ctx *c, const char *prefix)
{
    struct ls_error err;
    if (prefix && *prefix && strcmp(prefix, "/") != 0) {
        size_t len = strlen(prefix);
        while (len > 1 && prefix[len - 1] == '/') len--;
        if (path_check(prefix, len, &err)) {
            reply_error(c->req, LS_EPATH, "prefix: %s", err.msg);
            return -1;
        }
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
on_seq_reached(struct seq_waiter *w, int timed_out)
{
    struct seq_wait *sw = w->arg;
    struct ctx *c = sw->c;
    handler_fn resume = sw->resume;
    int64_t target = w->target;
    free(sw); /* w with it */
    if (timed_out) {
        reply_error(c->req, LS_ETIMEOUT, "this server has not reached seq %lld (it is at %lld)",
                    (long long)target, (long long)c->srv->pos.seq);
        ctx_free(c);
    } else {
        resume(c);
    }
}

int
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
    sw->w.deadline_ms = ls_mono_ms() + wait_ms;
    sw->w.fire = on_seq_reached;
    sw->w.arg = sw;
    server_wait_seq(c->srv, &sw->w);
    return 1;
}

/* ---------------------------------------------------------------- reads off the loop */

static void
read_client_gone(struct evhttp_connection *evcon, void *arg)
{
    struct http_read *r = arg;
    atomic_store(&r->job.cancelled, 1);
}

static void
read_run(struct store *st, struct read_job *j)
{
    struct http_read *r = (struct http_read *)j;
    r->run(st, r);
}

static void
read_done(struct read_job *j)
{
    struct http_read *r = (struct http_read *)j;
    struct evhttp_connection *evcon = evhttp_request_get_connection(r->c->req);
    if (evcon) evhttp_connection_set_closecb(evcon, NULL, NULL);
    if (r->finish && !r->err.code && !atomic_load(&j->cancelled) && r->finish(r)) {
        free(r);
        return;
    }
    if (r->reply) reply_json(r->c->req, r->status ? r->status : 200, r->reply);
    else if (r->err.code) reply_lserror(r->c->req, &r->err);
    else if (atomic_load(&j->cancelled))
        /* nobody is listening (or the server is stopping): this frees a detached request */
        reply_error(r->c->req, LS_EUNAVAIL, "the read was cancelled");
    else reply_error(r->c->req, LS_EIO, "the read failed");
    if (r->free_arg) r->free_arg(r->arg);
    ctx_free(r->c);
    free(r);
}

void
http_read_submit(struct ctx *c, struct http_read *r)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(c->req);
    r->c = c;
    r->job.run = read_run;
    r->job.done = read_done;
    ls_error_clear(&r->err);
    if (!c->srv->readers) {
        /* Stopping: the readers have gone, and what is still waiting (long polls fired at
         * shutdown) is answered here, once. */
        read_run(c->srv->reader, &r->job);
        read_done(&r->job);
        return;
    }
    if (readers_submit(c->srv->readers, &r->job)) {
        reply_error(c->req, LS_EUNAVAIL, "%s",
                    c->srv->stopping ? "the server is stopping"
                                     : "too many reads are waiting; try again");
        if (r->free_arg) r->free_arg(r->arg);
        ctx_free(c);
        free(r);
        return;
    }
    /* One request at a time per connection (evhttp reads the next after this one's answer):
     * the connection's close callback is this read's until it is answered. */
    if (evcon) evhttp_connection_set_closecb(evcon, read_client_gone, r);
}

/* ---------------------------------------------------------------- access */

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
        l->w.deadline_ms = ls_mono_ms() + delay;
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

/* ---------------------------------------------------------------- counting answers */

/* Runs once the reply has left (evhttp's completion callback; a client that went away before
 * it did is not counted). Counted here, in one place, whoever answered. */
static void
on_request_done(struct evhttp_request *req, void *arg)
{
    struct http_route_stats *st = arg;
    int code = evhttp_request_get_response_code(req), i;
    for (i = 0; i < HTTP_STATUS_SLOTS - 1; i++) {
        if (st->code[i] == code) break;
        if (st->code[i] == 0) {
            st->code[i] = code;
            break;
        }
    }
    st->count[i]++; /* the last slot (code 0) takes any status beyond the first 15 seen */
    http_conns_done(st->srv, req);
}

const struct http_route_stats *
http_route_stats(struct server *srv, int *n)
{
    *n = srv->router ? srv->router->n : 0;
    return srv->router ? srv->router->stats : NULL;
}

const struct http_route_stats *
http_unmatched_stats(struct server *srv)
{
    return srv->router ? &srv->router->stats[ROUTES_MAX] : NULL;
}

/* ---------------------------------------------------------------- dispatch */

static void
http_dispatch(struct evhttp_request *req, void *arg)
{
    struct server *srv = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    int method = (int)evhttp_request_get_command(req);
    struct http_router *rt = srv->router;
    const struct route *r = NULL;
    struct ctx *c;
    size_t body;

    evhttp_request_set_on_complete_cb(req, on_request_done, &rt->stats[ROUTES_MAX]);
    if (srv->stopping) {
        reply_error(req, LS_EUNAVAIL, "the server is stopping");
        return;
    }
    if (http_conns_request(srv, req)) return;
    if (!path) {
        reply_error(req, LS_EINVAL, "malformed request URI");
        return;
    }
    if (!(c = calloc(1, sizeof *c))) {
        reply_error(req, LS_ENOMEM, NULL);
        return;
    }
    TAILQ_INIT(&c->query);
    c->srv = srv;
    c->req = req;
    c->method = method;
    /* The first route whose pattern matches and that takes the method; a path that matches
     * only routes of other methods gets "method not allowed". */
    for (int i = 0; i < rt->n; i++) {
        if (!match(rt->routes[i].pattern, path, c)) {
            params_clear(c);
            continue;
        }
        if (rt->routes[i].methods & method) {
            r = &rt->routes[i];
            break;
        }
        if (!r) r = &rt->routes[i]; /* remembered for the error */
        params_clear(c);
    }
    if (!r) {
        reply_error(req, LS_ENOTFOUND, "no such endpoint: %s", path);
        goto fail;
    }
    /* counted under its pattern from here, a method it does not take included */
    evhttp_request_set_on_complete_cb(req, on_request_done, &rt->stats[r - rt->routes]);
    if (!(r->methods & method)) {
        reply_error(req, LS_EINVAL, "method not allowed on %s", path);
        goto fail;
    }
    if (check_access(srv, req, r, method)) goto fail;
    body = evbuffer_get_length(evhttp_request_get_input_buffer(req));
    if (body > r->max_body) {
        reply_error(req, LS_ETOOBIG, "a request body here may hold at most %llu bytes",
                    (unsigned long long)r->max_body);
        goto fail;
    }
    /* evhttp decodes values into C strings: a %00 would cut one short silently
     * (?to=/a%00b moving an item to /a). No parameter may hold a NUL. */
    if (query && strstr(query, "%00")) {
        reply_error(req, LS_EINVAL, "a query parameter holds a NUL byte (%%00)");
        goto fail;
    }
    if (query && evhttp_parse_query_str(query, &c->query) < 0) {
        reply_error(req, LS_EINVAL, "malformed query string");
        goto fail;
    }
    r->fn(c);
    return;
fail:
    ctx_free(c);
}

/* ---------------------------------------------------------------- start and stop */

int
http_api_start(struct server *srv, struct ls_error *err)
{
    char host[256];
    int port;
    struct timeval tv;

    if (net_split_hostport(srv->cfg.http, host, sizeof host, &port))
        return ls_error_set(err, LS_EINVAL, "--http %s: expected HOST:PORT", srv->cfg.http);
    if (!(srv->router = calloc(1, sizeof *srv->router))) return ls_error_set(err, LS_ENOMEM, NULL);
    srv->router->stats[ROUTES_MAX].pattern = "";
    srv->router->stats[ROUTES_MAX].srv = srv;
    http_items_routes(srv);
    http_changes_routes(srv);
    http_batch_routes(srv);
    http_cluster_routes(srv);
    http_tokens_routes(srv);
    http_verify_routes(srv);
    http_notify_routes(srv);
    http_mirror_routes(srv);
    http_metrics_routes(srv);
    http_dashboard_routes(srv);
    http_export_routes(srv);
    http_report_routes(srv);
    http_lease_routes(srv);
    if (http_exports_check(srv, err)) return err->code;
    srv->http = evhttp_new(srv->base);
    if (!srv->http) return ls_error_set(err, LS_ENOMEM, NULL);
    evhttp_set_allowed_methods(srv->http, M_ANY);
    /* evhttp reads a whole body before any handler runs: its limit is the largest route's,
     * and each route's own limit is checked before the body is looked at. */
    evhttp_set_max_body_size(srv->http, (ev_ssize_t)srv->router->max_body);
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

void
http_api_stop(struct server *srv)
{
    http_dashboard_free(srv);
    free(srv->router);
    srv->router = NULL;
}
