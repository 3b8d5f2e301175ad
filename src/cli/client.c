/*
 * client.c - the CLI's HTTP client, on libcurl's easy API: requests, error replies turned into
 * one clear line, and resumable uploads in bounded parts.
 */
#include "cli/cli.h"
#include "common/err.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define REPLY_MAX (256u << 20)

struct client_auth client_auth;

/*
 * Removes --token, --cacert, --cert and --key (with their values) from argv wherever they
 * are, so every command takes them. Returns -1 (after a message) when a value is missing.
 */
int
client_take_global_options(int *argc, char **argv)
{
    static const char *const names[] = {"--token", "--cacert", "--cert", "--key"};
    const char **slots[] = {&client_auth.token, &client_auth.cacert, &client_auth.cert,
                            &client_auth.key};
    int out = 1;
    client_auth.token = getenv("LOCKSTEP_TOKEN");
    client_auth.cacert = getenv("LOCKSTEP_CACERT");
    client_auth.cert = getenv("LOCKSTEP_CERT");
    client_auth.key = getenv("LOCKSTEP_KEY");
    for (int i = 1; i < *argc; i++) {
        int taken = 0;
        for (int k = 0; k < 4 && !taken; k++) {
            size_t n = strlen(names[k]);
            if (strcmp(argv[i], names[k]) == 0) {
                if (i + 1 >= *argc) {
                    fprintf(stderr, "lockstep: %s needs a value\n", names[k]);
                    return -1;
                }
                *slots[k] = argv[++i];
                taken = 1;
            } else if (strncmp(argv[i], names[k], n) == 0 && argv[i][n] == '=') {
                *slots[k] = argv[i] + n + 1;
                taken = 1;
            }
        }
        if (!taken) argv[out++] = argv[i];
    }
    argv[out] = NULL;
    *argc = out;
    return 0;
}

struct curl_slist *
client_apply_auth(void *curl, struct curl_slist *headers)
{
    CURL *c = curl;
    if (client_auth.token) {
        char h[600];
        snprintf(h, sizeof h, "Authorization: Bearer %s", client_auth.token);
        headers = curl_slist_append(headers, h);
    }
    if (client_auth.cacert) curl_easy_setopt(c, CURLOPT_CAINFO, client_auth.cacert);
    if (client_auth.cert) curl_easy_setopt(c, CURLOPT_SSLCERT, client_auth.cert);
    if (client_auth.key) curl_easy_setopt(c, CURLOPT_SSLKEY, client_auth.key);
    return headers;
}

void
client_init(struct client *cl, const char *cmd)
{
    const char *env = getenv("LOCKSTEP_SERVER");
    cl->cmd = cmd;
    if (!cl->server) cl->server = env && *env ? env : "http://127.0.0.1:7070";
}

int
cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "lockstep %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see lockstep %s --help)\n", cmd);
    return EXIT_USAGE;
}

static int
unreserved(unsigned char c, int keep_slash)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/');
}

static char *
encode(const char *s, int keep_slash)
{
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1), *p = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c, keep_slash)) *p++ = (char)c;
        else p += sprintf(p, "%%%02X", c);
    }
    *p = '\0';
    return out;
}

char *
url_path(const char *path)
{
    return encode(path, 1);
}

char *
url_query_value(const char *v)
{
    return encode(v, 0);
}

void
resp_init(struct resp *r)
{
    memset(r, 0, sizeof *r);
    ls_buf_init(&r->body, REPLY_MAX);
}

void
resp_release(struct resp *r)
{
    ls_buf_release(&r->body);
}

static size_t
on_header(char *data, size_t size, size_t n, void *arg)
{
    struct resp *r = arg;
    size_t len = size * n;
    if (len > 5 && strncmp(data, "HTTP/", 5) == 0) {
        r->status = strtol(memchr(data, ' ', len) ? (char *)memchr(data, ' ', len) + 1 : "0",
                           NULL, 10);
        r->version[0] = '\0';
    } else if (len > 19 && strncasecmp(data, "X-Lockstep-Version:", 19) == 0) {
        snprintf(r->version, sizeof r->version, "%.*s", (int)strcspn(data + 20, "\r\n"),
                 data + 20);
    }
    return len;
}

static size_t
on_body(char *data, size_t size, size_t n, void *arg)
{
    struct resp *r = arg;
    size_t len = size * n;
    if (r->sink && r->status >= 200 && r->status < 300) {
        if (fwrite(data, 1, len, r->sink) != len) {
            r->sink_failed = errno ? errno : EIO;
            return 0;
        }
        return len;
    }
    return ls_buf_append(&r->body, data, len) == 0 ? len : 0;
}

int
client_call(struct client *cl, const char *method, const char *path_query, const void *body,
            size_t body_len, const char *const *headers, struct resp *r)
{
    CURL *c = curl_easy_init();
    struct curl_slist *hl = NULL;
    char url[8192];
    CURLcode rc;

    if (!c) return -1;
    snprintf(url, sizeof url, "%s%s", cl->server, path_query);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    hl = curl_slist_append(hl, "Expect:"); /* no 100-continue round trip */
    hl = client_apply_auth(c, hl);
    for (int i = 0; headers && headers[i]; i++) hl = curl_slist_append(hl, headers[i]);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    rc = curl_easy_perform(c);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && r->sink_failed)) {
        r->transport_failed = 1;
        snprintf(r->transport_error, sizeof r->transport_error, "%s: %s", cl->server,
                 curl_easy_strerror(rc));
        return -1;
    }
    return 0;
}

int
client_fail(struct client *cl, const struct resp *r)
{
    json_t *o, *e;
    if (r->transport_failed) {
        fprintf(stderr, "lockstep %s: cannot reach the server at %s\n", cl->cmd,
                r->transport_error);
        return EXIT_ERR;
    }
    if (r->sink_failed) {
        fprintf(stderr, "lockstep %s: cannot write the output: %s\n", cl->cmd,
                strerror(r->sink_failed));
        return EXIT_ERR;
    }
    o = json_loadb(r->body.p ? r->body.p : "", r->body.len, 0, NULL);
    e = o ? json_object_get(o, "error") : NULL;
    if (e && json_is_string(json_object_get(e, "message")))
        fprintf(stderr, "lockstep %s: %s\n", cl->cmd,
                json_string_value(json_object_get(e, "message")));
    else
        fprintf(stderr, "lockstep %s: the server answered HTTP %ld\n", cl->cmd, r->status);
    json_decref(o);
    return r->status == 404 ? EXIT_NOTFOUND : EXIT_ERR;
}

json_t *
client_json(struct client *cl, const char *method, const char *path_query, const void *body,
            size_t body_len, const char *const *headers, int *code)
{
    struct resp r;
    json_t *o = NULL;
    resp_init(&r);
    if (client_call(cl, method, path_query, body, body_len, headers, &r) < 0 || r.status < 200 ||
        r.status >= 300) {
        *code = client_fail(cl, &r);
    } else if (!(o = json_loadb(r.body.p ? r.body.p : "", r.body.len, 0, NULL))) {
        fprintf(stderr, "lockstep %s: the server's reply is not JSON\n", cl->cmd);
        *code = EXIT_ERR;
    } else {
        *code = EXIT_OK;
    }
    resp_release(&r);
    return o;
}

/* ---------------------------------------------------------------- uploads */

static void
progress_draw(uint64_t done, int64_t total)
{
    char line[128];
    if (total > 0) {
        int width = 30, filled = (int)((double)done / (double)total * width);
        snprintf(line, sizeof line, "\r[%-*.*s] %3d%%  %.1f MiB", width, filled,
                 "##############################", (int)(100.0 * (double)done / (double)total),
                 (double)done / 1048576.0);
    } else {
        snprintf(line, sizeof line, "\r%.1f MiB sent", (double)done / 1048576.0);
    }
    fputs(line, stderr);
    fflush(stderr);
}

/*
 * Sends in to a new upload session part by part. When a part fails (the server restarted, the
 * network cut), asks the server how much it holds and goes on from there, a few times with a
 * growing pause. The part in flight stays in memory, so even a pipe can resume.
 */
int
client_upload(struct client *cl, FILE *in, const void *head, size_t head_len, char id[33],
              int progress, int *code)
{
    json_t *o;
    char *part = malloc(UPLOAD_PART);
    char q[128];
    uint64_t sent = 0;
    int64_t total = -1;
    size_t part_len = 0;
    int rc = -1;

    {
        long cur = ftell(in);
        if (cur >= 0 && fseek(in, 0, SEEK_END) == 0) {
            total = ftell(in) - cur + (int64_t)head_len;
            fseek(in, cur, SEEK_SET);
        }
    }
    if (!part || !(o = client_json(cl, "POST", "/v1/uploads", NULL, 0, NULL, code))) goto out;
    snprintf(id, 33, "%s", json_string_value(json_object_get(o, "id")));
    json_decref(o);

    for (;;) {
        uint64_t part_start = sent;
        int attempt = 0;
        part_len = 0;
        if (head_len) {
            memcpy(part, head, head_len);
            part_len = head_len;
            head_len = 0;
        }
        part_len += fread(part + part_len, 1, UPLOAD_PART - part_len, in);
        if (ferror(in)) {
            fprintf(stderr, "lockstep %s: cannot read the input: %s\n", cl->cmd, strerror(errno));
            *code = EXIT_ERR;
            goto out;
        }
        if (part_len == 0) break;
        while (sent < part_start + part_len) {
            struct resp r;
            size_t off = (size_t)(sent - part_start);
            resp_init(&r);
            snprintf(q, sizeof q, "/v1/uploads/%s?offset=%llu", id, (unsigned long long)sent);
            client_call(cl, "PUT", q, part + off, part_len - off, NULL, &r);
            if (r.status == 200) {
                sent = part_start + part_len;
            } else if (r.transport_failed || r.status >= 500 ||
                       (r.status == 409 && r.body.p && strstr(r.body.p, "\"bad_offset\""))) {
                /* Ask what the server holds, then resend from there. */
                json_t *st;
                int ignored;
                if (++attempt > 8) {
                    *code = client_fail(cl, &r);
                    resp_release(&r);
                    goto out;
                }
                sleep(attempt < 4 ? 1u << (attempt - 1) : 8);
                snprintf(q, sizeof q, "/v1/uploads/%s", id);
                st = client_json(cl, "GET", q, NULL, 0, NULL, &ignored);
                if (st) {
                    uint64_t held = (uint64_t)json_integer_value(json_object_get(st, "size"));
                    json_decref(st);
                    if (held < part_start || held > part_start + part_len) {
                        fprintf(stderr, "lockstep %s: the server lost the upload; send again\n",
                                cl->cmd);
                        *code = EXIT_ERR;
                        resp_release(&r);
                        goto out;
                    }
                    sent = held;
                }
            } else {
                *code = client_fail(cl, &r);
                resp_release(&r);
                goto out;
            }
            resp_release(&r);
        }
        if (progress) progress_draw(sent, total);
        if (part_len < UPLOAD_PART && feof(in)) break;
    }
    if (progress) fputs("\n", stderr);
    rc = 0;
out:
    free(part);
    return rc;
}

/* ---------------------------------------------------------------- options */

enum { O_CLI_SERVER = 2000, O_CLI_HELP };

int
cli_parse(struct client *cl, int argc, char **argv, const struct option *extra, const char *usage,
          int (*on_opt)(int ch, const char *arg, void *ctx), void *ctx)
{
    struct option opts[32];
    int n = 0, ch;
    opts[n++] = (struct option){"server", required_argument, NULL, O_CLI_SERVER};
    opts[n++] = (struct option){"help", no_argument, NULL, O_CLI_HELP};
    for (int i = 0; extra && extra[i].name && n < 31; i++) opts[n++] = extra[i];
    opts[n] = (struct option){NULL, 0, NULL, 0};
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":o:", opts, NULL)) != -1) {
        if (ch == O_CLI_HELP) {
            printf("%s", usage);
            return EXIT_OK;
        } else if (ch == O_CLI_SERVER) {
            cl->server = optarg;
        } else if (ch == '?' || ch == ':') {
            return cli_usage_error(cl->cmd, "%s '%s'",
                                   ch == ':' ? "missing value for" : "unknown option",
                                   argv[optind - 1]);
        } else {
            int rc = on_opt(ch, optarg, ctx);
            if (rc >= 0) return rc;
        }
    }
    client_init(cl, cl->cmd);
    return -1;
}
