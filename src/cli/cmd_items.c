/*
 * cmd_items.c - the item commands: put, get, stat, ls, history, rm, purge, mv, publish,
 * unpublish. Each is a thin client of one HTTP endpoint (docs/api.md).
 */
#include "cli/cli.h"
#include "core/item.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { O_SERVER = 1000, O_KIND, O_META, O_PUBLISH, O_VERSION, O_JSON, O_HELP, O_DELETED,
       O_IFVERSION, O_WAIT, O_MINSEQ };

/* Options shared by the commands that write, and by those that read. */
static const char *wait_replicas, *min_seq;

static void
append_wait(char **url)
{
    char *u;
    if (!wait_replicas) return;
    if (asprintf(&u, "%s%cwait_replicas=%s", *url, strchr(*url, '?') ? '&' : '?',
                 wait_replicas) < 0)
        return;
    free(*url);
    *url = u;
}

static void
append_min_seq(char **url)
{
    char *u;
    if (!min_seq) return;
    if (asprintf(&u, "%s%cmin_seq=%s&wait_ms=10000", *url, strchr(*url, '?') ? '&' : '?',
                 min_seq) < 0)
        return;
    free(*url);
    *url = u;
}

/* The item commands all take --wait-replicas (writes) and --min-seq (reads) besides their own. */
struct items_opt_ctx {
    const char *cmd;
    int (*on_opt)(int ch, const char *arg, void *ctx);
    void *ctx;
};

static int
items_opt(int ch, const char *arg, void *vctx)
{
    struct items_opt_ctx *x = vctx;
    int64_t v;
    if (ch != O_WAIT && ch != O_MINSEQ) return x->on_opt(ch, arg, x->ctx);
    if (ls_parse_i64(arg, &v) || v < 0)
        return cli_usage_error(x->cmd, "--%s needs a number",
                               ch == O_WAIT ? "wait-replicas" : "min-seq");
    if (ch == O_WAIT) wait_replicas = arg;
    else min_seq = arg;
    return -1;
}

static int
parse_opts(struct client *cl, int argc, char **argv, const struct option *extra, const char *usage,
           int (*on_opt)(int ch, const char *arg, void *ctx), void *ctx)
{
    struct option opts[24];
    struct items_opt_ctx x = {cl->cmd, on_opt, ctx};
    int n = 0;
    opts[n++] = (struct option){"wait-replicas", required_argument, NULL, O_WAIT};
    opts[n++] = (struct option){"min-seq", required_argument, NULL, O_MINSEQ};
    for (int i = 0; extra && extra[i].name && n < 23; i++) opts[n++] = extra[i];
    opts[n] = (struct option){NULL, 0, NULL, 0};
    return cli_parse(cl, argc, argv, opts, usage, items_opt, &x);
}

/* Checks a path argument the way the server will, to fail before sending anything. */
static int
bad_path(const char *cmd, const char *path)
{
    struct ls_error err;
    if (path_check(path, strlen(path), &err) == 0) return 0;
    fprintf(stderr, "lockstep %s: %s: %s\n", cmd, path, err.msg);
    return 1;
}

#define COMMON_HELP                                                                               \
    "  --server URL     the server (default $LOCKSTEP_SERVER or http://127.0.0.1:7070)\n"         \
    "  --wait-replicas N  (writes) answer only once N replicas applied the change\n"            \
    "  --min-seq SEQ    (reads) wait until this server has applied SEQ\n"                       \
    "  --help           this text\n"

/* ---------------------------------------------------------------- put */

struct put_args {
    const char *kind, *meta;
    int publish;
    const char *if_version;
};

static int
put_opt(int ch, const char *arg, void *ctx)
{
    struct put_args *a = ctx;
    if (ch == O_KIND) a->kind = arg;
    else if (ch == O_META) a->meta = arg;
    else if (ch == O_PUBLISH) a->publish = 1;
    else if (ch == O_IFVERSION) a->if_version = arg;
    return -1;
}

static void
print_write_result(json_t *o)
{
    printf("%s %s version %lld seq %lld\n", json_string_value(json_object_get(o, "op")),
           json_string_value(json_object_get(o, "path")),
           (long long)json_integer_value(json_object_get(o, "version")),
           (long long)json_integer_value(json_object_get(o, "seq")));
}

int
cmd_put(int argc, char **argv)
{
    static const struct option extra[] = {{"kind", required_argument, NULL, O_KIND},
                                          {"meta", required_argument, NULL, O_META},
                                          {"publish", no_argument, NULL, O_PUBLISH},
                                          {"if-version", required_argument, NULL, O_IFVERSION},
                                          {NULL, 0, NULL, 0}};
    static const char usage[] =
        "usage: lockstep put PATH [FILE|-] [--kind KIND] [--meta JSON] [--publish]\n\n"
        "Writes a new version of the item at PATH from FILE (or standard input). Bodies larger\n"
        "than 8 MiB travel as a resumable upload session.\n\n"
        "  --kind KIND      the item's kind (default: the previous version's, or document)\n"
        "  --meta JSON      a JSON object (default: the previous version's meta)\n"
        "  --publish        publish the new version too\n"
        "  --if-version N   only if the item is now at version N\n" COMMON_HELP;
    struct client cl = {.cmd = "put"};
    struct put_args a = {0};
    const char *path, *file = "-";
    char *epath = NULL, *q = NULL, *hdr = NULL, *part = NULL;
    const char *headers[2] = {NULL, NULL};
    FILE *in = stdin;
    size_t n;
    int rc, code = EXIT_ERR;
    json_t *o;

    if ((rc = parse_opts(&cl, argc, argv, extra, usage, put_opt, &a)) >= 0) return rc;
    if (optind >= argc) return cli_usage_error("put", "missing PATH");
    path = argv[optind++];
    if (bad_path("put", path)) return EXIT_ERR;
    if (optind < argc) file = argv[optind++];
    if (optind < argc) return cli_usage_error("put", "unexpected argument '%s'", argv[optind]);
    if (strcmp(file, "-") != 0 && !(in = fopen(file, "rb"))) {
        fprintf(stderr, "lockstep put: cannot open %s: %m\n", file);
        return EXIT_ERR;
    }
    /* Checked here as the server would (an empty header would not even reach it), and sent
     * canonical: compact JSON has no raw newline to break the header. */
    if (a.meta) {
        struct ls_error err;
        char *canon;
        if (meta_canonical(a.meta, strlen(a.meta), &canon, &err)) {
            fprintf(stderr, "lockstep put: %s\n", err.msg);
            goto out;
        }
        rc = asprintf(&hdr, "X-Lockstep-Meta: %s", canon);
        free(canon);
        if (rc < 0) goto out;
        headers[0] = hdr;
    }
    epath = url_path(path);
    {
        char *kind = a.kind ? url_query_value(a.kind) : NULL;
        rc = asprintf(&q, "%s%s%s%s%s%s", a.publish ? "&publish=1" : "", kind ? "&kind=" : "",
                      kind ? kind : "", a.if_version ? "&if_version=" : "",
                      a.if_version ? a.if_version : "", "");
        free(kind);
        if (rc < 0) goto out;
    }
    /* Read the first part: a small body goes in one request, a larger one as an upload. */
    part = malloc(UPLOAD_PART);
    n = part ? fread(part, 1, UPLOAD_PART, in) : 0;
    if (!part || ferror(in)) {
        fprintf(stderr, "lockstep put: cannot read %s\n", file);
        goto out;
    }
    if (n < UPLOAD_PART && feof(in)) {
        char *url;
        if (asprintf(&url, "/v1/items%s%s%s", epath, q[0] ? "?" : "", q[0] ? q + 1 : "") < 0)
            goto out;
        append_wait(&url);
        o = client_json(&cl, "PUT", url, part, n, headers, &code);
        free(url);
    } else {
        char id[33], *url, *eq = url_query_value(path);
        int failed = client_upload(&cl, in, part, n, id, isatty(2), &code) < 0;
        free(part);
        part = NULL;
        if (failed) { /* client_upload printed the error */
            free(eq);
            goto out;
        }
        if (asprintf(&url, "/v1/uploads/%s/commit?path=%s%s", id, eq, q) < 0) goto out;
        free(eq);
        append_wait(&url);
        o = client_json(&cl, "POST", url, NULL, 0, headers, &code);
        free(url);
    }
    if (o) {
        print_write_result(o);
        json_decref(o);
    }
out:
    if (in != stdin) fclose(in);
    free(part);
    free(epath);
    free(q);
    free(hdr);
    return code;
}

/* ---------------------------------------------------------------- get */

struct get_args {
    const char *version, *out;
};

static int
get_opt(int ch, const char *arg, void *ctx)
{
    struct get_args *a = ctx;
    if (ch == O_VERSION) a->version = arg;
    else if (ch == 'o') a->out = arg;
    return -1;
}

int
cmd_get(int argc, char **argv)
{
    static const struct option extra[] = {{"version", required_argument, NULL, O_VERSION},
                                          {"output", required_argument, NULL, 'o'},
                                          {NULL, 0, NULL, 0}};
    static const char usage[] =
        "usage: lockstep get PATH [--version N] [-o FILE]\n\n"
        "Writes the item's body, byte for byte, to standard output or FILE.\n\n"
        "  --version N      that version rather than the latest\n"
        "  -o, --output FILE  write to FILE (replaced only when the whole body arrived)\n"
        COMMON_HELP;
    struct client cl = {.cmd = "get"};
    struct get_args a = {0};
    struct resp r;
    char *epath, *url, tmp[4200] = "";
    int rc;
    int64_t v;

    if ((rc = parse_opts(&cl, argc, argv, extra, usage, get_opt, &a)) >= 0) return rc;
    if (optind != argc - 1) return cli_usage_error("get", "expected one PATH");
    if (bad_path("get", argv[optind])) return EXIT_ERR;
    if (a.version && (ls_parse_i64(a.version, &v) || v < 1))
        return cli_usage_error("get", "--version must be a positive integer");
    epath = url_path(argv[optind]);
    if (asprintf(&url, "/v1/items%s%s%s", epath, a.version ? "?version=" : "",
                 a.version ? a.version : "") < 0)
        return EXIT_ERR;
    free(epath);
    append_min_seq(&url);
    resp_init(&r);
    r.sink = stdout;
    if (a.out) {
        int fd;
        snprintf(tmp, sizeof tmp, "%s.partXXXXXX", a.out);
        if ((fd = mkstemp(tmp)) < 0 || !(r.sink = fdopen(fd, "wb"))) {
            fprintf(stderr, "lockstep get: cannot write %s: %m\n", a.out);
            free(url);
            return EXIT_ERR;
        }
    }
    client_call(&cl, "GET", url, NULL, 0, NULL, &r);
    free(url);
    if (r.sink && fflush(r.sink) != 0 && !r.sink_failed) r.sink_failed = errno;
    if (a.out) {
        if (fclose(r.sink) != 0 && !r.sink_failed) r.sink_failed = errno;
    }
    if (r.transport_failed || r.sink_failed || r.status != 200) {
        rc = client_fail(&cl, &r);
        if (a.out) unlink(tmp);
    } else {
        rc = EXIT_OK;
        if (a.out && rename(tmp, a.out) < 0) {
            fprintf(stderr, "lockstep get: cannot write %s: %m\n", a.out);
            unlink(tmp);
            rc = EXIT_ERR;
        }
    }
    resp_release(&r);
    return rc;
}

/* ---------------------------------------------------------------- stat, history, ls */

struct json_args {
    int json, deleted;
    const char *version;
};

static int
json_opt(int ch, const char *arg, void *ctx)
{
    struct json_args *a = ctx;
    if (ch == O_JSON) a->json = 1;
    else if (ch == O_VERSION) a->version = arg;
    else if (ch == O_DELETED) a->deleted = 1;
    return -1;
}

static void
print_json(json_t *o)
{
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text) puts(text);
    free(text);
}

static void
print_item_line(json_t *it)
{
    json_t *pv = json_object_get(it, "published_version");
    printf("%-9s v%-4lld %10lld  %-10s %s%s\n", json_string_value(json_object_get(it, "status")),
           (long long)json_integer_value(json_object_get(it, "version")),
           (long long)json_integer_value(json_object_get(it, "size")),
           json_string_value(json_object_get(it, "kind")),
           json_string_value(json_object_get(it, "path")),
           json_is_true(json_object_get(it, "deleted")) ? "  (deleted)" : "");
    (void)pv;
}

int
cmd_stat(int argc, char **argv)
{
    static const struct option extra[] = {{"json", no_argument, NULL, O_JSON},
                                          {"version", required_argument, NULL, O_VERSION},
                                          {NULL, 0, NULL, 0}};
    static const char usage[] = "usage: lockstep stat PATH [--version N] [--json]\n\n"
                                "Shows an item's kind, status, versions, size, hash and meta.\n\n"
                                "  --json           print JSON\n" COMMON_HELP;
    struct client cl = {.cmd = "stat"};
    struct json_args a = {0};
    char *epath, *url;
    json_t *o;
    int rc;

    if ((rc = parse_opts(&cl, argc, argv, extra, usage, json_opt, &a)) >= 0) return rc;
    if (optind != argc - 1) return cli_usage_error("stat", "expected one PATH");
    if (bad_path("stat", argv[optind])) return EXIT_ERR;
    epath = url_path(argv[optind]);
    if (asprintf(&url, "/v1/stat%s%s%s", epath, a.version ? "?version=" : "",
                 a.version ? a.version : "") < 0)
        return EXIT_ERR;
    free(epath);
    append_min_seq(&url);
    o = client_json(&cl, "GET", url, NULL, 0, NULL, &rc);
    free(url);
    if (!o) return rc;
    if (a.json) {
        print_json(o);
    } else {
        json_t *pv = json_object_get(o, "published_version");
        char *meta = json_dumps(json_object_get(o, "meta"), JSON_COMPACT | JSON_SORT_KEYS);
        printf("path:      %s\nkind:      %s\nstatus:    %s\nversion:   %lld\npublished: %s\n"
               "size:      %lld\nsha256:    %s\nseq:       %lld\nmtime:     %s\nmeta:      %s\n",
               json_string_value(json_object_get(o, "path")),
               json_string_value(json_object_get(o, "kind")),
               json_string_value(json_object_get(o, "status")),
               (long long)json_integer_value(json_object_get(o, "version")),
               json_is_integer(pv) ? "yes" : "no",
               (long long)json_integer_value(json_object_get(o, "size")),
               json_string_value(json_object_get(o, "sha256")),
               (long long)json_integer_value(json_object_get(o, "seq")),
               json_string_value(json_object_get(o, "mtime")), meta ? meta : "{}");
        if (json_is_integer(pv))
            printf("published version: %lld\n", (long long)json_integer_value(pv));
        free(meta);
    }
    json_decref(o);
    return EXIT_OK;
}

int
cmd_history(int argc, char **argv)
{
    static const struct option extra[] = {{"json", no_argument, NULL, O_JSON}, {NULL, 0, NULL, 0}};
    static const char usage[] = "usage: lockstep history PATH [--json]\n\n"
                                "Lists the retained versions of an item, newest first.\n\n"
                                "  --json           print JSON\n" COMMON_HELP;
    struct client cl = {.cmd = "history"};
    struct json_args a = {0};
    char *epath, *url;
    json_t *o, *v;
    size_t i;
    int rc;

    if ((rc = parse_opts(&cl, argc, argv, extra, usage, json_opt, &a)) >= 0) return rc;
    if (optind != argc - 1) return cli_usage_error("history", "expected one PATH");
    if (bad_path("history", argv[optind])) return EXIT_ERR;
    epath = url_path(argv[optind]);
    if (asprintf(&url, "/v1/history%s", epath) < 0) return EXIT_ERR;
    free(epath);
    o = client_json(&cl, "GET", url, NULL, 0, NULL, &rc);
    free(url);
    if (!o) return rc;
    if (a.json) {
        print_json(o);
    } else {
        json_array_foreach(json_object_get(o, "versions"), i, v)
        {
            json_t *pv = json_object_get(v, "published_version");
            printf("v%-5lld %10lld  %s  %.12s%s\n",
                   (long long)json_integer_value(json_object_get(v, "version")),
                   (long long)json_integer_value(json_object_get(v, "size")),
                   json_string_value(json_object_get(v, "mtime")),
                   json_string_value(json_object_get(v, "sha256")),
                   json_integer_value(pv) == json_integer_value(json_object_get(v, "version"))
                       ? "  published"
                       : "");
        }
    }
    json_decref(o);
    return EXIT_OK;
}

int
cmd_ls(int argc, char **argv)
{
    static const struct option extra[] = {{"json", no_argument, NULL, O_JSON},
                                          {"deleted", no_argument, NULL, O_DELETED},
                                          {NULL, 0, NULL, 0}};
    static const char usage[] =
        "usage: lockstep ls [PREFIX] [--json] [--deleted]\n\n"
        "Lists the items at PREFIX and below it, in path order.\n\n"
        "  --json           print one JSON object per line\n"
        "  --deleted        include tombstones\n" COMMON_HELP;
    struct client cl = {.cmd = "ls"};
    struct json_args a = {0};
    char *prefix = NULL, *after = NULL;
    int rc;

    if ((rc = parse_opts(&cl, argc, argv, extra, usage, json_opt, &a)) >= 0) return rc;
    if (optind < argc - 1) return cli_usage_error("ls", "expected at most one PREFIX");
    prefix = url_query_value(optind < argc ? argv[optind] : "/");
    for (;;) {
        char *url;
        json_t *o, *it, *next;
        size_t i;
        if (asprintf(&url, "/v1/list?limit=1000&prefix=%s%s%s%s", prefix,
                     a.deleted ? "&deleted=1" : "", after ? "&after=" : "", after ? after : "") < 0)
            break;
        o = client_json(&cl, "GET", url, NULL, 0, NULL, &rc);
        free(url);
        if (!o) break;
        json_array_foreach(json_object_get(o, "items"), i, it)
        {
            if (a.json) {
                char *text = json_dumps(it, JSON_COMPACT);
                puts(text);
                free(text);
            } else {
                print_item_line(it);
            }
        }
        next = json_object_get(o, "next");
        free(after);
        after = json_is_string(next) ? url_query_value(json_string_value(next)) : NULL;
        json_decref(o);
        if (!after) break;
    }
    free(prefix);
    free(after);
    return rc;
}

/* ---------------------------------------------------------------- rm, purge, mv, (un)publish */

static int
simple(int argc, char **argv, const char *cmd, const char *method, const char *endpoint,
       const char *usage, int nargs)
{
    static const struct option extra[] = {{"version", required_argument, NULL, O_VERSION},
                                          {"if-version", required_argument, NULL, O_IFVERSION},
                                          {NULL, 0, NULL, 0}};
    struct client cl = {.cmd = cmd};
    struct json_args a = {0};
    char *epath, *url, *to = NULL;
    json_t *o;
    int rc;

    if ((rc = parse_opts(&cl, argc, argv, extra, usage, json_opt, &a)) >= 0) return rc;
    if (argc - optind != nargs)
        return cli_usage_error(cmd, nargs == 1 ? "expected one PATH" : "expected SRC and DST");
    if (bad_path(cmd, argv[optind]) || (nargs == 2 && bad_path(cmd, argv[optind + 1])))
        return EXIT_ERR;
    epath = url_path(argv[optind]);
    if (nargs == 2) to = url_query_value(argv[optind + 1]);
    if (asprintf(&url, "%s%s%s%s%s%s", endpoint, epath, to ? "?to=" : "", to ? to : "",
                 a.version ? (to ? "&version=" : "?version=") : "", a.version ? a.version : "") <
        0)
        return EXIT_ERR;
    free(epath);
    free(to);
    append_wait(&url);
    o = client_json(&cl, method, url, NULL, 0, NULL, &rc);
    free(url);
    if (o) {
        print_write_result(o);
        json_decref(o);
    }
    return rc;
}

int
cmd_rm(int argc, char **argv)
{
    return simple(argc, argv, "rm", "DELETE", "/v1/items",
                  "usage: lockstep rm PATH\n\nDeletes an item, leaving a tombstone that replicas "
                  "and mirrors see.\n" COMMON_HELP,
                  1);
}

int
cmd_purge(int argc, char **argv)
{
    return simple(argc, argv, "purge", "POST", "/v1/purge",
                  "usage: lockstep purge PATH\n\nDeletes an item completely: every version and "
                  "the tombstone.\n" COMMON_HELP,
                  1);
}

int
cmd_mv(int argc, char **argv)
{
    return simple(argc, argv, "mv", "POST", "/v1/move",
                  "usage: lockstep mv SRC DST\n\nMoves an item and its history to a new "
                  "path.\n" COMMON_HELP,
                  2);
}

int
cmd_publish(int argc, char **argv)
{
    return simple(argc, argv, "publish", "POST", "/v1/publish",
                  "usage: lockstep publish PATH [--version N]\n\nPublishes the latest version "
                  "(or version N) of an item.\n" COMMON_HELP,
                  1);
}

int
cmd_unpublish(int argc, char **argv)
{
    return simple(argc, argv, "unpublish", "POST", "/v1/unpublish",
                  "usage: lockstep unpublish PATH\n\nTakes an item off line; its versions "
                  "stay.\n" COMMON_HELP,
                  1);
}
