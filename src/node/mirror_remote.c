/*
 * mirror_remote.c - pulling a directory that another server exports (docs/mirror.md, source
 * `lockstep://HOST:PORT/export/NAME`): the export's listing is read in pages over HTTP, in path
 * order, and each file and symlink is compared with each target's index (size, mtime, inode,
 * mode) as for a local directory, so that unchanged files are not fetched; a changed file is
 * fetched in pieces into a temporary file and written to the targets from there. With --delete,
 * the listing and each target's index (both in path order) are merged: an indexed path the
 * listing skipped is gone from the source.
 *
 * Every HTTP request runs on the run's own thread (libcurl's easy API, with timeouts, and an
 * abort as soon as the run is cancelled), never on the event loop.
 *
 * The end of the file is the other remote source, a store subtree on another server
 * (`lockstep://HOST:PORT/PREFIX`), read through /v1/list, /v1/changes and /v1/items.
 *
 * Not for: writing targets or recording packages (mirror_package.c), serving exports
 * (http/export.c).
 */
#include "node/mirror_int.h"
#include "common/log.h"
#include "common/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LIST_REPLY_MAX (64u << 20)
#define PIECE (8 << 20)
#define CONNECT_TIMEOUT_MS 5000L
#define REQUEST_TIMEOUT_MS 120000L

struct remote {
    CURL *curl;
    struct curl_slist *headers; /* the token, and the lease's fence once held */
    struct curl_slist *auth;    /* the token alone (for the lease requests) */
    atomic_int *cancel;
    /* the lease on the source (shared duty) */
    char holder[140];
    int64_t fence, ttl_ms, renewed_mono;
    int leased;
    /* the file fetched for the current package item, kept for its other targets */
    char *fetched_path;
    int fetched_fd;
};

/* ---------------------------------------------------------------- the source's spec */

int
mirror_remote_spec(const char *src, struct mirror_def *d, struct ls_error *err)
{
    const char *hp = src + 11, *slash = strchr(hp, '/'), *name;
    size_t n;
    if (!slash || slash == hp || (size_t)(slash - hp) >= 256 || strchr(hp, '?') ||
        strchr(hp, '#') || strchr(hp, '@'))
        return ls_error_set(err, LS_EINVAL, "source %s: expected lockstep://HOST:PORT/...", src);
    if (strncmp(slash, "/export/", 8) != 0) { /* a store subtree */
        struct ls_error perr;
        size_t len = strlen(slash);
        while (len > 1 && slash[len - 1] == '/')
            len--;
        if (len > 1 && path_check(slash, len, &perr))
            return ls_error_set(err, LS_EINVAL, "source %s: the prefix must be an item path (%s)",
                                src, perr.msg);
        d->src_kind = SRC_RSTORE;
        snprintf(d->src_url, sizeof d->src_url, "http://%.*s", (int)(slash - hp), hp);
        snprintf(d->src_path, sizeof d->src_path, "%.*s", (int)len, slash);
        return 0;
    }
    name = slash + 8;
    n = strlen(name);
    if (n == 0 || n > 64)
        return ls_error_set(err, LS_EINVAL, "source %s: the export's name is missing", src);
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-' || *c == '_' || *c == '.'))
            return ls_error_set(err, LS_EINVAL, "source %s: an export's name is letters, digits, "
                                "'-', '_' and '.'", src);
    d->src_kind = SRC_EXPORT;
    snprintf(d->src_url, sizeof d->src_url, "http://%.*s", (int)(slash - hp), hp);
    snprintf(d->src_export, sizeof d->src_export, "%s", name);
    snprintf(d->src_path, sizeof d->src_path, "%s", src);
    return 0;
}

/* ---------------------------------------------------------------- HTTP on the run's thread */

struct sink {
    struct ls_buf *buf; /* JSON replies and errors */
    int fd;             /* a file piece: written here (2xx only) */
    long status;
    int64_t written;
    int failed;
    int64_t size, mtime_ns, mode, ino; /* X-Lockstep-* of a file piece */
    CURL *curl;
};

static size_t
on_data(char *data, size_t size, size_t nmemb, void *arg)
{
    struct sink *s = arg;
    size_t n = size * nmemb;
    if (!s->status) curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &s->status);
    if (s->fd >= 0 && s->status == 200) {
        if (ls_write_all(s->fd, data, n)) {
            s->failed = 1;
            return 0;
        }
        s->written += (int64_t)n;
        return n;
    }
    if (ls_buf_append(s->buf, data, n)) {
        s->failed = 1;
        return 0;
    }
    return n;
}

static size_t
on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct sink *s = arg;
    size_t n = size * nmemb;
    static const char *const names[] = {"X-Lockstep-Size:", "X-Lockstep-Mtime-Ns:",
                                        "X-Lockstep-Mode:", "X-Lockstep-Ino:"};
    int64_t *slots[] = {&s->size, &s->mtime_ns, &s->mode, &s->ino};
    for (int i = 0; i < 4; i++) {
        size_t k = strlen(names[i]);
        if (n > k && strncasecmp(data, names[i], k) == 0) {
            char v[32];
            size_t len = n - k < sizeof v - 1 ? n - k : sizeof v - 1;
            memcpy(v, data + k, len);
            v[len] = '\0';
            *slots[i] = strtoll(v, NULL, 10);
        }
    }
    return n;
}

static int
on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct remote *rm = arg;
    return atomic_load(rm->cancel) ? 1 : 0;
}

/* The reason of a refusal: the server's message, or the status. */
static void
refusal(const struct sink *s, char *why, size_t n)
{
    json_t *j = s->buf->len ? json_loadb(s->buf->p, s->buf->len, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    snprintf(why, n, "the source answered %ld%s%s", s->status, msg ? ": " : "", msg ? msg : "");
    json_decref(j);
}

/* GET base + path_query. 0 with s->status 200, or with why filled -1 (the source answered
 * otherwise) or -2 (no answer: the source is down, or the run was cancelled). */
static int
http_call(struct mirror_run *run, const char *path_query, const char *post, struct sink *s,
          char *why, size_t n)
{
    struct remote *rm = run->remote;
    char url[8600];
    CURLcode cc;
    struct curl_slist *h = NULL;
    snprintf(url, sizeof url, "%s%s", run->def->src_url, path_query);
    s->curl = rm->curl;
    curl_easy_setopt(rm->curl, CURLOPT_URL, url);
    if (post) {
        for (struct curl_slist *a = rm->auth; a; a = a->next)
            h = curl_slist_append(h, a->data);
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(rm->curl, CURLOPT_POSTFIELDS, post);
        curl_easy_setopt(rm->curl, CURLOPT_HTTPHEADER, h);
    } else {
        curl_easy_setopt(rm->curl, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(rm->curl, CURLOPT_HTTPHEADER, rm->headers);
    }
    curl_easy_setopt(rm->curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(rm->curl, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(rm->curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(rm->curl, CURLOPT_HEADERDATA, s);
    cc = curl_easy_perform(rm->curl);
    curl_slist_free_all(h);
    curl_easy_getinfo(rm->curl, CURLINFO_RESPONSE_CODE, &s->status);
    if (cc != CURLE_OK) {
        if (atomic_load(rm->cancel))
            snprintf(why, n, "the run was cancelled");
        else if (s->failed)
            snprintf(why, n, "cannot keep what %s sent", run->def->src_url);
        else
            snprintf(why, n, "cannot reach %s: %s", run->def->src_url, curl_easy_strerror(cc));
        return -2;
    }
    if (s->status != 200) {
        refusal(s, why, n);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- the lease */

/* LOCKSTEP_MIRROR_LEASE_TTL_MS: the tests shorten the lease to see another server take over. */
static int64_t
lease_ttl(void)
{
    const char *v = getenv("LOCKSTEP_MIRROR_LEASE_TTL_MS");
    int64_t ms;
    if (v && ls_parse_i64(v, &ms) == 0 && ms >= 100 && ms <= 600000) return ms;
    return 30000;
}

/*
 * Asks the source for the job's lease (ttl_ms 0: gives it back). 0: held, with rm->fence;
 * 1: another server holds it (why says who); -1: no answer or a refusal (why says which).
 */
static int
lease_take(struct mirror_run *run, int64_t ttl_ms, char *why, size_t n)
{
    struct remote *rm = run->remote;
    char q[200], *body, *esc = curl_easy_escape(rm->curl, run->def->src_export, 0);
    struct ls_buf buf;
    struct sink s = {.buf = &buf, .fd = -1};
    json_t *j;
    int rc;
    snprintf(q, sizeof q, "/v1/exports/%s/lease", esc ? esc : "");
    curl_free(esc);
    j = json_pack("{s:s,s:s,s:I}", "job", run->job_name, "holder", rm->holder, "ttl_ms",
                  (json_int_t)ttl_ms);
    body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    ls_buf_init(&buf, 1 << 20);
    rc = body ? http_call(run, q, body, &s, why, n) : -1;
    free(body);
    if (rc == -1 && s.status == 409) {
        ls_buf_release(&buf);
        return 1;
    }
    if (rc == 0) {
        j = json_loadb(buf.p ? buf.p : "", buf.len, 0, NULL);
        int64_t fence = json_integer_value(json_object_get(j, "fence"));
        json_decref(j);
        if (fence <= 0) {
            snprintf(why, n, "the source's lease answer is not understood");
            rc = -1;
        } else if (rm->leased && fence != rm->fence) {
            snprintf(why, n, "the lease was lost (fence %lld, now %lld)", (long long)rm->fence,
                     (long long)fence);
            rc = -1;
        } else {
            char h[100];
            rm->fence = fence;
            rm->renewed_mono = ls_mono_ms();
            if (!rm->leased && ttl_ms > 0) {
                snprintf(h, sizeof h, "X-Lockstep-Lease: %s", run->job_name);
                rm->headers = curl_slist_append(rm->headers, h);
                snprintf(h, sizeof h, "X-Lockstep-Fence: %lld", (long long)fence);
                rm->headers = curl_slist_append(rm->headers, h);
                rm->leased = 1;
            }
        }
    }
    ls_buf_release(&buf);
    return rc;
}

/* Renews the lease when a third of it has passed; a lease lost makes the run stop. */
static int
lease_keep(struct mirror_run *run)
{
    struct remote *rm = run->remote;
    char why[400];
    int rc;
    if (!rm->leased || ls_mono_ms() - rm->renewed_mono < rm->ttl_ms / 3) return 0;
    if ((rc = lease_take(run, rm->ttl_ms, why, sizeof why)) == 0) return 0;
    snprintf(run->note, sizeof run->note, "lost the lease on the source: %.200s",
             rc == 1 ? "another mirror server holds it" : why);
    run->fatal = 1;
    return LS_ECONFLICT;
}

static int
http_get(struct mirror_run *run, const char *path_query, struct sink *s, char *why, size_t n)
{
    if (lease_keep(run)) {
        snprintf(why, n, "%s", run->note);
        return -2;
    }
    return http_call(run, path_query, NULL, s, why, n);
}

int
mirror_token_header(struct mirror_run *run, char *out, size_t n)
{
    char token[512];
    FILE *f;
    *out = '\0';
    if (!*run->def->token_file) return 0;
    if (!(f = fopen(run->def->token_file, "r")) || !fgets(token, sizeof token, f)) {
        snprintf(run->note, sizeof run->note, "cannot read the token file %.200s: %s",
                 run->def->token_file, f ? "empty" : strerror(errno));
        if (f) fclose(f);
        return -1;
    }
    fclose(f);
    token[strcspn(token, "\r\n")] = '\0';
    snprintf(out, n, "Authorization: Bearer %s", token);
    memset(token, 0, sizeof token);
    return 0;
}

/* The token, from the job's token file; the curl handle. 0, or fatal with the run's note. */
static int
remote_open(struct mirror_run *run)
{
    struct remote *rm = calloc(1, sizeof *rm);
    char hdr[600];
    if (!rm) return LS_ENOMEM;
    rm->fetched_fd = -1;
    rm->cancel = &run->cancel;
    run->remote = rm;
    if (mirror_token_header(run, hdr, sizeof hdr)) {
        run->fatal = 1;
        return LS_EINVAL;
    }
    if (*hdr) {
        rm->headers = curl_slist_append(NULL, hdr);
        rm->auth = curl_slist_append(NULL, hdr);
        memset(hdr, 0, sizeof hdr);
    }
    if (!(rm->curl = curl_easy_init())) return LS_ENOMEM;
    curl_easy_setopt(rm->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(rm->curl, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(rm->curl, CURLOPT_TIMEOUT_MS, REQUEST_TIMEOUT_MS);
    curl_easy_setopt(rm->curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(rm->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(rm->curl, CURLOPT_XFERINFODATA, rm);
    curl_easy_setopt(rm->curl, CURLOPT_PROTOCOLS_STR, "http");
    return 0;
}

void
mirror_remote_close(struct mirror_run *run)
{
    struct remote *rm = run->remote;
    if (!rm) return;
    if (rm->leased) { /* given back, so that another server need not wait for it to expire */
        char why[300];
        rm->leased = 0;
        lease_take(run, 0, why, sizeof why);
    }
    if (rm->curl) curl_easy_cleanup(rm->curl);
    curl_slist_free_all(rm->headers);
    curl_slist_free_all(rm->auth);
    if (rm->fetched_fd >= 0) close(rm->fetched_fd);
    free(rm->fetched_path);
    free(rm);
    run->remote = NULL;
}

/* ---------------------------------------------------------------- fetching a file */

/*
 * Where an item's content is fetched to: the descriptor of the last fetch when it is the same
 * item (another target of the package wants it; *cached set, at offset 0), else a new temporary
 * file beside root (so that a large file does not go to a small /tmp), or in /tmp. -1 with why.
 */
static int
fetch_begin(struct remote *rm, const struct pitem *it, const char *root, int *cached, char *why,
            size_t n)
{
    int fd;
    *cached = rm->fetched_path && strcmp(rm->fetched_path, it->path) == 0;
    if (*cached) {
        lseek(rm->fetched_fd, 0, SEEK_SET);
        return rm->fetched_fd;
    }
    if (rm->fetched_fd >= 0) close(rm->fetched_fd);
    free(rm->fetched_path);
    rm->fetched_fd = -1;
    rm->fetched_path = NULL;
    if ((!root || (fd = open(root, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) < 0) &&
        (fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) < 0) {
        snprintf(why, n, "cannot create a temporary file: %s", strerror(errno));
        return -1;
    }
    return fd;
}

int
mirror_export_fetch(struct mirror_run *run, const struct pitem *it, const char *root, char *why,
                    size_t n)
{
    struct remote *rm = run->remote;
    char *esc_path, *esc_name;
    int fd, cached;
    if ((fd = fetch_begin(rm, it, root, &cached, why, n)) < 0 || cached) return fd;
    esc_path = curl_easy_escape(rm->curl, it->path, 0);
    esc_name = curl_easy_escape(rm->curl, run->def->src_export, 0);
    for (int64_t off = 0;;) {
        char q[8600];
        struct ls_buf buf;
        struct sink s = {.buf = &buf, .fd = fd, .size = -1};
        int rc;
        ls_buf_init(&buf, 1 << 20);
        snprintf(q, sizeof q, "/v1/exports/%s/file?path=%s&offset=%lld&length=%d", esc_name,
                 esc_path ? esc_path : "", (long long)off, PIECE);
        rc = http_get(run, q, &s, why, n);
        ls_buf_release(&buf);
        if (rc == -2 || (rc && (s.status >= 500 || s.status == 409))) {
            /* the source is gone, or the lease: the run stops after recording what it applied */
            snprintf(run->note, sizeof run->note, "%.250s", why);
            run->fatal = 1;
        }
        if (rc) goto fail;
        /* the file must be the one listed, through every piece */
        if (s.size != it->size || s.mtime_ns != it->mtime_ns || s.ino != it->ino) {
            snprintf(why, n, "changed since it was listed (it is sent on the next run)");
            goto fail;
        }
        off += s.written;
        if (off >= it->size || s.written == 0) break;
    }
    if (lseek(fd, 0, SEEK_END) != it->size) {
        snprintf(why, n, "the source sent %lld bytes of %lld", (long long)lseek(fd, 0, SEEK_END),
                 (long long)it->size);
        goto fail;
    }
    curl_free(esc_path);
    curl_free(esc_name);
    lseek(fd, 0, SEEK_SET);
    rm->fetched_fd = fd;
    rm->fetched_path = strdup(it->path);
    return fd;
fail:
    curl_free(esc_path);
    curl_free(esc_name);
    close(fd);
    return -1;
}

/* ---------------------------------------------------------------- the listing */

static int64_t
jint(const json_t *o, const char *k)
{
    return (int64_t)json_integer_value(json_object_get(o, k));
}

/* One listed entry, against each target's index (read beside the listing, in the same order). */
static int
export_entry(struct dir_pass *x, const json_t *e)
{
    struct mirror_run *run = x->run;
    const char *path = json_string_value(json_object_get(e, "path"));
    const char *type = json_string_value(json_object_get(e, "type"));
    struct pitem pi = {0};
    int rc, selected, item;
    if (!path || !type || path[0] != '/') return 0;
    if (strcmp(type, "dir") == 0) {
        if (x->counting) return 0;
        for (int i = 0; i < run->nt; i++) {
            char final[4200];
            mode_t mode = (mode_t)(jint(e, "mode") & 07777);
            if (run->t[i].failed || run->t[i].remote ||
                mirror_target_path(run->t[i].root, path, final, sizeof final))
                continue;
            if (mkdir(final, mode ? mode : 0755) == 0) chmod(final, mode ? mode : 0755);
        }
        return 0;
    }
    selected = mirror_path_selected(run->def, path);
    item = strcmp(type, "file") == 0 || strcmp(type, "link") == 0;
    pi.path = (char *)path;
    pi.kind = strcmp(type, "link") == 0 ? IT_LINK : IT_FILE;
    pi.size = jint(e, "size");
    pi.mtime_ns = jint(e, "mtime_ns");
    pi.ino = jint(e, "ino");
    pi.mode = jint(e, "mode");
    pi.link_to = (char *)json_string_value(json_object_get(e, "target"));
    for (int i = 0; i < run->nt; i++) {
        struct ls_mirror_file f;
        int found;
        if (run->t[i].failed) continue;
        /* the rows before it are gone, and its own unless it is a file or link to send */
        if ((rc = mirror_index_upto(x, i, path, selected && item, &f, &found))) return rc;
        if (!found || f.size != pi.size || f.mtime_ns != pi.mtime_ns || f.ino != pi.ino ||
            f.mode != pi.mode)
            pi.need |= 1u << i;
    }
    if (!selected) return 0;
    if (!item) {
        if (!x->counting) {
            const char *why = json_string_value(json_object_get(e, "error"));
            mirror_item_error(run, x->p, -1, path, "%s",
                              why ? why : "not a regular file, symlink or directory");
        }
        return 0;
    }
    if (!pi.need) return 0;
    if (x->counting) {
        mirror_progress_total(run, pi.kind == IT_FILE ? pi.size : 0);
        return 0;
    }
    if (mirror_package_add(x->p, &pi)) return LS_ENOMEM;
    if (mirror_package_full(run, x->p)) return mirror_package_flush(run, x->p, 0, NULL);
    return 0;
}

/* The whole listing, page by page, once. */
static int
export_pass(struct mirror_run *run, struct package *p, int counting)
{
    struct dir_pass *x = calloc(1, sizeof *x);
    char cursor[4200] = "", why[512];
    char *esc_name = curl_easy_escape(run->remote->curl, run->def->src_export, 0);
    int rc = 0, done = 0;
    if (!x || !esc_name) {
        free(x);
        curl_free(esc_name);
        return LS_ENOMEM;
    }
    x->run = run;
    x->p = p;
    mirror_dir_pass_reset(x, counting);
    while (!done && !rc) {
        char q[8800], *esc = curl_easy_escape(run->remote->curl, cursor, 0);
        struct ls_buf buf;
        struct sink s = {.buf = &buf, .fd = -1};
        json_t *j, *v;
        size_t i;
        ls_buf_init(&buf, LIST_REPLY_MAX);
        snprintf(q, sizeof q, "/v1/exports/%s/list?limit=%d&after=%s", esc_name, PAGE,
                 esc ? esc : "");
        curl_free(esc);
        if (http_get(run, q, &s, why, sizeof why)) {
            ls_buf_release(&buf);
            snprintf(run->note, sizeof run->note, "cannot list the source: %.200s", why);
            run->fatal = 1;
            rc = LS_EIO;
            break;
        }
        j = json_loadb(buf.p, buf.len, 0, NULL);
        ls_buf_release(&buf);
        if (!json_is_array(json_object_get(j, "entries")) ||
            !json_is_string(json_object_get(j, "next"))) {
            json_decref(j);
            snprintf(run->note, sizeof run->note, "the source's listing is not understood");
            run->fatal = 1;
            rc = LS_EPROTO;
            break;
        }
        json_array_foreach(json_object_get(j, "entries"), i, v)
        {
            if ((rc = export_entry(x, v))) break;
            if (atomic_load(&run->cancel)) {
                rc = LS_EUNAVAIL;
                break;
            }
        }
        done = json_is_true(json_object_get(j, "done")) || json_array_size(json_object_get(j, "entries")) == 0;
        snprintf(cursor, sizeof cursor, "%s", json_string_value(json_object_get(j, "next")));
        json_decref(j);
    }
    /* what is left of each index, the source no longer has */
    for (int i = 0; !rc && run->def->delete_missing && i < run->nt; i++)
        if (!run->t[i].failed) rc = mirror_index_upto(x, i, NULL, 0, NULL, NULL);
    if (!rc && !counting && (p->n || p->nerrs)) rc = mirror_package_flush(run, p, 0, NULL);
    curl_free(esc_name);
    mirror_dir_pass_reset(x, counting);
    free(x);
    return rc;
}

int
mirror_run_export(struct mirror_run *run, struct package *p)
{
    struct remote *rm;
    char node_id[64] = "", why[400];
    int rc;
    if ((rc = remote_open(run))) {
        if (!*run->note) snprintf(run->note, sizeof run->note, "cannot start an HTTP client");
        run->fatal = 1;
        return rc;
    }
    /* shared duty: only the holder of the job's lease on the source mirrors it */
    rm = run->remote;
    store_meta_get(run->st, "node_id", node_id, sizeof node_id);
    snprintf(rm->holder, sizeof rm->holder, "%.64s/%.16s", run->m->srv->cfg.name, node_id);
    rm->ttl_ms = lease_ttl();
    rc = lease_take(run, rm->ttl_ms, why, sizeof why);
    if (rc == 1) {
        snprintf(run->note, sizeof run->note, "%.250s", why);
        run->skipped = 1;
        return 0;
    }
    if (rc) {
        snprintf(run->note, sizeof run->note, "cannot take the lease on the source: %.200s", why);
        run->fatal = 1;
        return LS_EIO;
    }
    pthread_mutex_lock(&run->mu);
    run->phase = "scanning";
    pthread_mutex_unlock(&run->mu);
    if ((rc = export_pass(run, p, 1))) return rc;
    pthread_mutex_lock(&run->mu);
    run->phase = "transferring";
    pthread_mutex_unlock(&run->mu);
    return export_pass(run, p, 0);
}

/* ---------------------------------------------------------------- a store on another server */
/*
 * A source lockstep://HOST:PORT/PREFIX: the same passes as a local store source
 * (mirror_source.c), over that server's API: targets without a checkpoint (or behind its log's
 * first seq) get a full pass of /v1/list in path order, then every target reads /v1/changes
 * after its seq up to the seq the run began at, each changed path as /v1/stat says it is now.
 * Bodies are fetched at apply time (GET /v1/items{path}?version=N).
 */

/* An item path for a URL: each byte but the unreserved ones and '/' percent-encoded. */
static void
url_item_path(const char *path, char *out, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *c = (const unsigned char *)path; *c && o + 4 < n; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            *c == '-' || *c == '_' || *c == '.' || *c == '~' || *c == '/') {
            out[o++] = (char)*c;
        } else {
            out[o++] = '%';
            out[o++] = hex[*c >> 4];
            out[o++] = hex[*c & 15];
        }
    }
    out[o] = '\0';
}

/* GET a JSON reply; NULL after making the run fatal (why in its note), or *status 404. */
static json_t *
get_json(struct mirror_run *run, const char *q, long *status)
{
    struct ls_buf buf;
    struct sink s = {.buf = &buf, .fd = -1};
    char why[400];
    json_t *j = NULL;
    ls_buf_init(&buf, LIST_REPLY_MAX);
    if (http_get(run, q, &s, why, sizeof why) == 0)
        j = json_loadb(buf.p ? buf.p : "", buf.len, 0, NULL);
    ls_buf_release(&buf);
    if (status) *status = s.status;
    if (!j && !(status && s.status == 404)) {
        snprintf(run->note, sizeof run->note, "%.250s", s.status == 200 ? "the source's answer is not JSON" : why);
        run->fatal = 1;
    }
    return j;
}

static int64_t
item_version(const struct mirror_def *d, const json_t *it)
{
    if (!it || json_is_true(json_object_get(it, "deleted"))) return 0;
    return jint(it, d->published_only ? "published_version" : "latest_version");
}

static int64_t
item_mtime_ns(const json_t *it)
{
    int64_t ms = 0;
    const char *t = json_string_value(json_object_get(it, "mtime"));
    if (t) ls_parse_time(t, &ms);
    return ms * 1000000;
}

static int
rstore_full(struct mirror_run *run, struct package *p, unsigned mask, int counting)
{
    char after[4200] = "", prefix[8400], q[17000];
    const char *least = NULL;
    int rc = 0;
    for (int i = 0; i < run->nt; i++)
        if ((mask & (1u << i)) && (!least || strcmp(run->t[i].cp.after, least) < 0))
            least = run->t[i].cp.after;
    snprintf(after, sizeof after, "%s", least ? least : "");
    url_item_path(run->def->src_path, prefix, sizeof prefix);
    for (;;) {
        char a[8400];
        json_t *j, *it;
        size_t k;
        url_item_path(after, a, sizeof a);
        snprintf(q, sizeof q, "/v1/list?prefix=%s&limit=%d%s%s", prefix, PAGE, *after ? "&after=" : "",
                 a);
        if (!(j = get_json(run, q, NULL))) return LS_EIO;
        json_array_foreach(json_object_get(j, "items"), k, it)
        {
            const char *path = json_string_value(json_object_get(it, "path"));
            struct pitem pi = {.path = (char *)path, .kind = IT_FILE};
            if (!path) continue;
            snprintf(after, sizeof after, "%s", path);
            if (!(pi.version = item_version(run->def, it)) || !mirror_path_selected(run->def, path))
                continue;
            pi.size = jint(it, "size");
            pi.mtime_ns = item_mtime_ns(it);
            for (int i = 0; i < run->nt; i++)
                if ((mask & (1u << i)) && strcmp(path, run->t[i].cp.after) > 0) pi.need |= 1u << i;
            if (!pi.need) continue;
            if (counting) {
                mirror_progress_total(run, pi.size);
                continue;
            }
            if ((rc = mirror_package_add(p, &pi)) ||
                (mirror_package_full(run, p) && (rc = mirror_package_flush(run, p, 0, path))))
                break;
        }
        int more = json_is_string(json_object_get(j, "next"));
        json_decref(j);
        if (rc) return rc;
        if (atomic_load(&run->cancel)) return LS_EUNAVAIL;
        if (!more) break;
    }
    if (counting) return 0;
    if ((p->n || p->nerrs) && (rc = mirror_package_flush(run, p, 0, after))) return rc;
    for (int i = 0; i < run->nt; i++)
        if ((mask & (1u << i)) && !run->t[i].stuck && !run->t[i].failed) {
            run->t[i].cp.seq = run->t[i].cp.full_seq;
            run->t[i].cp.full_seq = 0;
            run->t[i].cp.after[0] = '\0';
        }
    return 0;
}

static int
under(const char *prefix, const char *path)
{
    return strcmp(prefix, "/") == 0 || mirror_path_within(path, prefix);
}

/* One path a change touched, as the source has it now. */
static int
rchange_path(struct mirror_run *run, struct package *p, unsigned mask, const char *path,
             int64_t seq, int64_t head, int counting)
{
    char q[8600], e[8400];
    struct pitem pi = {.path = (char *)path, .seq = seq};
    json_t *it;
    long status = 0;
    if (!under(run->def->src_path, path) || !mirror_path_selected(run->def, path)) return 0;
    url_item_path(path, e, sizeof e);
    snprintf(q, sizeof q, "/v1/stat%s", e);
    it = get_json(run, q, &status);
    if (!it && status != 404) return LS_EIO;
    if (it && jint(it, "seq") > seq && jint(it, "seq") <= head) {
        json_decref(it); /* a later change of this pass sends it */
        return 0;
    }
    if ((pi.version = item_version(run->def, it))) {
        pi.kind = IT_FILE;
        pi.size = jint(it, "size");
        pi.mtime_ns = item_mtime_ns(it);
    } else if (run->def->delete_missing) {
        pi.kind = IT_DEL;
    } else {
        json_decref(it);
        return 0;
    }
    json_decref(it);
    for (int i = 0; i < run->nt; i++)
        if ((mask & (1u << i)) && seq > run->t[i].cp.seq) pi.need |= 1u << i;
    if (!pi.need) return 0;
    if (counting) {
        mirror_progress_total(run, pi.kind == IT_FILE ? pi.size : 0);
        return 0;
    }
    return mirror_package_add(p, &pi);
}

static int
rstore_incremental(struct mirror_run *run, struct package *p, unsigned mask, int64_t head,
                   int counting)
{
    int64_t since = INT64_MAX;
    int rc = 0;
    for (int i = 0; i < run->nt; i++)
        if ((mask & (1u << i)) && run->t[i].cp.seq < since) since = run->t[i].cp.seq;
    if (since == INT64_MAX) return 0;
    while (since < head && !rc) {
        char q[200];
        json_t *j, *c;
        size_t k, n;
        int64_t next;
        snprintf(q, sizeof q, "/v1/changes?since=%lld&limit=%d", (long long)since, PAGE);
        if (!(j = get_json(run, q, NULL))) return LS_EIO;
        n = json_array_size(json_object_get(j, "changes"));
        next = jint(j, "next");
        json_array_foreach(json_object_get(j, "changes"), k, c)
        {
            int64_t seq = jint(c, "seq");
            const char *op = json_string_value(json_object_get(c, "op"));
            const char *path = json_string_value(json_object_get(c, "path"));
            const char *to = json_string_value(json_object_get(c, "to"));
            if (seq > head) {
                next = head;
                break;
            }
            if (!op || !path || strcmp(op, "notify") == 0) continue;
            if ((rc = rchange_path(run, p, mask, path, seq, head, counting)) ||
                (to && (rc = rchange_path(run, p, mask, to, seq, head, counting))))
                break;
            if (!counting && mirror_package_full(run, p) &&
                (rc = mirror_package_flush(run, p, seq, NULL)))
                break;
        }
        json_decref(j);
        if (atomic_load(&run->cancel)) return LS_EUNAVAIL;
        if (n == 0 || next <= since) break;
        since = next;
    }
    if (rc || counting) return rc;
    if ((p->n || p->nerrs) && (rc = mirror_package_flush(run, p, head, NULL))) return rc;
    for (int i = 0; i < run->nt; i++)
        if ((mask & (1u << i)) && !run->t[i].failed && !run->t[i].stuck && run->t[i].cp.seq < head)
            run->t[i].cp.seq = head;
    return 0;
}

int
mirror_run_rstore(struct mirror_run *run, struct package *p)
{
    unsigned full = 0, live = 0;
    int64_t head, first;
    json_t *j;
    int rc;
    if ((rc = remote_open(run))) {
        if (!*run->note) snprintf(run->note, sizeof run->note, "cannot start an HTTP client");
        run->fatal = 1;
        return rc;
    }
    if (!(j = get_json(run, "/v1/changes?since=0&limit=1", NULL))) return LS_EIO;
    head = jint(j, "seq");
    first = jint(j, "log_first_seq");
    json_decref(j);
    for (int i = 0; i < run->nt; i++) {
        struct target_state *t = &run->t[i];
        if (t->failed) continue;
        /* never mirrored, or further behind than the source's log reaches: a full pass first */
        if (!t->cp.full_seq && (t->cp.seq == 0 || t->cp.seq + 1 < first)) {
            t->cp.full_seq = head > 0 ? head : 1;
            t->cp.after[0] = '\0';
        }
        if (t->cp.full_seq)
            full |= 1u << i;
        else
            live |= 1u << i;
    }
    pthread_mutex_lock(&run->mu);
    run->phase = "scanning";
    pthread_mutex_unlock(&run->mu);
    if ((full && (rc = rstore_full(run, p, full, 1))) ||
        (rc = rstore_incremental(run, p, live, head, 1)))
        return rc;
    pthread_mutex_lock(&run->mu);
    run->phase = "transferring";
    pthread_mutex_unlock(&run->mu);
    if (full && (rc = rstore_full(run, p, full, 0))) return rc;
    return rstore_incremental(run, p, full | live, head, 0);
}

int
mirror_rstore_fetch(struct mirror_run *run, const struct pitem *it, const char *root, char *why,
                    size_t n)
{
    struct remote *rm = run->remote;
    char q[8700], e[8400];
    struct ls_buf buf;
    struct sink s = {.buf = &buf, .fd = -1, .size = -1};
    int fd, rc, cached;
    if ((fd = fetch_begin(rm, it, root, &cached, why, n)) < 0 || cached) return fd;
    url_item_path(it->path, e, sizeof e);
    snprintf(q, sizeof q, "/v1/items%s?version=%lld", e, (long long)it->version);
    s.fd = fd;
    ls_buf_init(&buf, 1 << 20);
    rc = http_get(run, q, &s, why, n);
    ls_buf_release(&buf);
    if (rc == -2 || (rc && s.status >= 500)) {
        snprintf(run->note, sizeof run->note, "%.250s", why);
        run->fatal = 1;
    }
    if (rc) {
        close(fd);
        return -1;
    }
    lseek(fd, 0, SEEK_SET);
    rm->fetched_fd = fd; /* closed with the next fetch, or the run */
    rm->fetched_path = strdup(it->path);
    return fd;
}
