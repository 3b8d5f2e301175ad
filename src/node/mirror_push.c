/*
 * mirror_push.c - a store subtree on another server as a target (docs/mirror.md, target
 * `lockstep://HOST:PORT/PREFIX`): each package becomes one POST /v1/batch there, applied in one
 * transaction (so its changes appear together in that server's log and on its `content`
 * channel). Item /a/b becomes PREFIX/a/b, published. When the target refuses one operation
 * (the batch then names its line and applies nothing), that item is recorded as failed for the
 * target and the rest is sent again, so the target answers per item; deleting what the target
 * does not have is no failure. A target that does not answer fails for the rest of the run; the
 * next run goes on from its checkpoint (store sources) or its index (directory sources).
 *
 * The HTTP requests run on the run's thread, with timeouts, never on the event loop.
 *
 * Not for: local directory targets (mirror_package.c), sources (mirror_source.c, _remote.c).
 */
#include "node/mirror_int.h"
#include "common/log.h"
#include "common/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BATCH_BODY_MAX (12u << 20) /* under a server's default --max-request (16M) */
#define CONNECT_TIMEOUT_MS 5000L
#define REQUEST_TIMEOUT_MS 120000L

struct pending {
    char *line; /* the NDJSON operation */
    size_t item; /* its index in the package */
    int del, removed;
    struct ls_mirror_file f; /* for the index (directory sources) */
    int64_t bytes;
};

struct push {
    CURL *curl;
    struct curl_slist *headers;
    struct pending *v;
    size_t n, cap, body_len;
};

/* ---------------------------------------------------------------- the target's spec */

int
mirror_push_spec(const char *spec, char *url, size_t url_n, char *prefix, size_t prefix_n,
                 struct ls_error *err)
{
    const char *hp = spec + 11, *slash = strchr(hp, '/');
    struct ls_error perr;
    size_t len;
    if (strncmp(spec, "lockstep://", 11) != 0 || !slash || slash == hp ||
        (size_t)(slash - hp) >= 256 || strpbrk(spec, "?#@"))
        return ls_error_set(err, LS_EINVAL, "target %s: expected lockstep://HOST:PORT/PREFIX",
                            spec);
    if (strncmp(slash, "/export/", 8) == 0 || strcmp(slash, "/export") == 0)
        return ls_error_set(err, LS_EINVAL, "target %s: an export is read-only", spec);
    len = strlen(slash);
    while (len > 1 && slash[len - 1] == '/')
        len--;
    if (len > 1 && path_check(slash, len, &perr))
        return ls_error_set(err, LS_EINVAL, "target %s: the prefix must be an item path (%s)",
                            spec, perr.msg);
    snprintf(url, url_n, "http://%.*s", (int)(slash - hp), hp);
    snprintf(prefix, prefix_n, "%.*s", (int)(len == 1 ? 0 : len), slash);
    return 0;
}

/* ---------------------------------------------------------------- building a batch */

static struct push *
push_of(struct mirror_run *run, int i)
{
    struct target_state *t = &run->t[i];
    char hdr[600];
    if (t->push) return t->push;
    if (!(t->push = calloc(1, sizeof *t->push))) return NULL;
    if (!(t->push->curl = curl_easy_init())) return t->push;
    if (mirror_token_header(run, hdr, sizeof hdr) == 0 && *hdr)
        t->push->headers = curl_slist_append(NULL, hdr);
    memset(hdr, 0, sizeof hdr);
    t->push->headers = curl_slist_append(t->push->headers, "Content-Type: application/x-ndjson");
    curl_easy_setopt(t->push->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t->push->curl, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(t->push->curl, CURLOPT_TIMEOUT_MS, REQUEST_TIMEOUT_MS);
    curl_easy_setopt(t->push->curl, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(t->push->curl, CURLOPT_HTTPHEADER, t->push->headers);
    return t->push;
}

/* The whole content of an item from the source, in memory (a package's bytes are bounded). */
static int
item_content(struct mirror_run *run, const struct pitem *it, char **out, size_t *len,
             json_t *op, char *why, size_t n)
{
    const struct mirror_def *d = run->def;
    int fd = -1, own = 1;
    struct stat sb;
    *out = NULL;
    *len = 0;
    if (it->kind == IT_LINK) {
        char to[4096];
        ssize_t k;
        if (d->src_kind == SRC_EXPORT) {
            snprintf(to, sizeof to, "%s", it->link_to ? it->link_to : "");
            k = (ssize_t)strlen(to);
        } else {
            char src[8400];
            snprintf(src, sizeof src, "%s%s", d->src_path, it->path);
            if ((k = readlink(src, to, sizeof to - 1)) < 0) {
                snprintf(why, n, "cannot read the symlink: %s", strerror(errno));
                return -1;
            }
        }
        json_object_set_new(op, "kind", json_string("symlink"));
        *out = strndup(to, (size_t)k);
        *len = (size_t)k;
        return *out ? 0 : -1;
    }
    if (d->src_kind == SRC_STORE) {
        struct ls_item si;
        struct ls_error err;
        memset(&si, 0, sizeof si);
        if (store_get(run->st, it->path, it->version, 1, &si, &err)) {
            snprintf(why, n, "cannot read the item: %.300s", err.msg);
            return -1;
        }
        if (si.kind) json_object_set_new(op, "kind", json_string(si.kind));
        if (si.meta) json_object_set_new(op, "meta", json_loads(si.meta, 0, NULL));
        if (!si.in_blob) {
            *len = si.size;
            *out = malloc(si.size + 1);
            if (*out && si.size) memcpy(*out, si.body, si.size);
            item_release(&si);
            return *out ? 0 : -1;
        }
        char blob[4200];
        store_blob_path(run->st, si.sha, blob, sizeof blob);
        item_release(&si);
        fd = open(blob, O_RDONLY | O_CLOEXEC);
    } else if (d->src_kind == SRC_EXPORT || d->src_kind == SRC_RSTORE) {
        fd = d->src_kind == SRC_EXPORT ? mirror_export_fetch(run, it, NULL, why, n)
                                       : mirror_rstore_fetch(run, it, NULL, why, n);
        own = 0;
        if (fd < 0) return -1;
    } else {
        char src[8400];
        snprintf(src, sizeof src, "%s%s", d->src_path, it->path);
        fd = open(src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    }
    if (fd < 0 || fstat(fd, &sb) < 0) {
        snprintf(why, n, "cannot read it: %s", strerror(errno));
        if (fd >= 0 && own) close(fd);
        return -1;
    }
    if ((uint64_t)sb.st_size > BATCH_BODY_MAX / 2) {
        snprintf(why, n, "larger than a batch to a store target may carry (%u bytes)",
                 BATCH_BODY_MAX / 2);
        if (own) close(fd);
        return -1;
    }
    if ((*out = malloc((size_t)sb.st_size + 1))) {
        ssize_t got;
        while (*len < (size_t)sb.st_size &&
               (got = pread(fd, *out + *len, (size_t)sb.st_size - *len, (off_t)*len)) > 0)
            *len += (size_t)got;
    }
    if (own) close(fd);
    return *out ? 0 : -1;
}

int
mirror_push_add(struct mirror_run *run, struct package *p, int i, size_t k)
{
    const struct pitem *it = &p->items[k];
    struct target_state *t = &run->t[i];
    struct push *ps = push_of(run, i);
    struct pending pe = {.item = k, .del = it->kind == IT_DEL};
    char path[8200], why[400] = "", *body = NULL;
    size_t len = 0;
    json_t *op;
    if (!ps || !ps->curl) {
        mirror_item_error(run, p, i, it->path, "out of memory");
        return -1;
    }
    if ((size_t)snprintf(path, sizeof path, "%s%s", t->prefix, it->path) >= 4096) {
        mirror_item_error(run, p, i, it->path, "the path is too long under %s", t->name);
        return -1;
    }
    op = json_pack("{s:s,s:s}", "op", pe.del ? "delete" : "put", "path", path);
    if (!pe.del) {
        unsigned char sha[32];
        unsigned int shalen = 32;
        char *b64;
        if (item_content(run, it, &body, &len, op, why, sizeof why)) {
            mirror_item_error(run, p, i, it->path, "%s", *why ? why : "out of memory");
            json_decref(op);
            return -1;
        }
        EVP_Digest(body, len, sha, &shalen, EVP_sha256(), NULL);
        if (!(b64 = malloc(4 * ((len + 2) / 3) + 1))) {
            free(body);
            json_decref(op);
            mirror_item_error(run, p, i, it->path, "out of memory");
            return -1;
        }
        EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)body, (int)len);
        json_object_set_new(op, "body_base64", json_string(b64));
        json_object_set_new(op, "status", json_string("published"));
        free(b64);
        free(body);
        memcpy(pe.f.sha, sha, 32);
        pe.bytes = (int64_t)len;
    }
    pe.f.path = it->path;
    pe.f.size = pe.del ? -1 : it->size;
    pe.f.mtime_ns = it->mtime_ns;
    pe.f.ino = it->ino;
    pe.f.mode = it->mode;
    pe.line = json_dumps(op, JSON_COMPACT);
    json_decref(op);
    if (!pe.line) return -1;
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 64;
        struct pending *nv = realloc(ps->v, cap * sizeof *nv);
        if (!nv) {
            free(pe.line);
            return -1;
        }
        ps->v = nv;
        ps->cap = cap;
    }
    ps->v[ps->n++] = pe;
    ps->body_len += strlen(pe.line) + 1;
    return 0;
}

/* ---------------------------------------------------------------- sending it */

static size_t
on_reply(char *data, size_t size, size_t nmemb, void *arg)
{
    return ls_buf_append(arg, data, size * nmemb) ? 0 : size * nmemb;
}

static void
pending_clear(struct push *ps)
{
    for (size_t k = 0; k < ps->n; k++)
        free(ps->v[k].line);
    ps->n = 0;
    ps->body_len = 0;
}

/* The 1-based operation a refused batch names ("line N: ..."), 0 when none. */
static size_t
refused_line(const char *msg)
{
    long long n;
    if (!msg || sscanf(msg, "line %lld:", &n) != 1 || n < 1) return 0;
    return (size_t)n;
}

void
mirror_push_send(struct mirror_run *run, struct package *p, int i)
{
    struct target_state *t = &run->t[i];
    struct push *ps = t->push;
    struct ls_buf body, reply;
    char url[600];
    size_t left;
    if (!ps || !ps->n) return;
    snprintf(url, sizeof url, "%s/v1/batch", t->url);
    ls_buf_init(&body, BATCH_BODY_MAX);
    ls_buf_init(&reply, 1 << 20);
    size_t *map = malloc(ps->n * sizeof *map);
    if (!map) {
        t->failed = 1;
        snprintf(t->reason, sizeof t->reason, "out of memory");
    }
    for (size_t attempt = 0; map && attempt <= ps->n && !t->failed; attempt++) {
        size_t nsent = 0;
        long status = 0;
        CURLcode cc;
        json_t *j;
        const char *msg, *code;
        ls_buf_reset(&body);
        ls_buf_reset(&reply);
        for (size_t k = 0; k < ps->n; k++) {
            if (ps->v[k].removed) continue;
            ls_buf_append(&body, ps->v[k].line, strlen(ps->v[k].line));
            ls_buf_append(&body, "\n", 1);
            map[nsent++] = k;
        }
        if (!nsent) break;
        curl_easy_setopt(ps->curl, CURLOPT_URL, url);
        curl_easy_setopt(ps->curl, CURLOPT_POSTFIELDS, body.p);
        curl_easy_setopt(ps->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body.len);
        curl_easy_setopt(ps->curl, CURLOPT_WRITEFUNCTION, on_reply);
        curl_easy_setopt(ps->curl, CURLOPT_WRITEDATA, &reply);
        cc = curl_easy_perform(ps->curl);
        curl_easy_getinfo(ps->curl, CURLINFO_RESPONSE_CODE, &status);
        if (cc != CURLE_OK || status >= 500 || status == 401 || status == 403 || status == 413) {
            j = reply.len ? json_loadb(reply.p, reply.len, 0, NULL) : NULL;
            msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
            t->failed = 1;
            if (cc != CURLE_OK)
                snprintf(t->reason, sizeof t->reason, "cannot reach %.150s: %.80s", url,
                         curl_easy_strerror(cc));
            else
                snprintf(t->reason, sizeof t->reason, "the target answered %ld%s%.200s", status,
                         msg ? ": " : "", msg ? msg : "");
            json_decref(j);
            mirror_item_error(run, p, i, "/", "%s", t->reason);
            break;
        }
        if (status == 200) {
            for (size_t s = 0; s < nsent; s++) {
                struct pending *pe = &ps->v[map[s]];
                if (SRC_INDEXED(run->def)) mirror_index_note(p, i, &pe->f);
                t->items++;
                t->bytes += pe->bytes;
            }
            break;
        }
        /* one operation refused: that item fails (or, a deletion of nothing, is done) */
        j = reply.len ? json_loadb(reply.p, reply.len, 0, NULL) : NULL;
        msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
        left = refused_line(msg);
        if (!left && nsent == 1) left = 1;
        if (!left || left > nsent) {
            t->failed = 1;
            snprintf(t->reason, sizeof t->reason, "the target refused a package: %ld %.200s",
                     status, msg ? msg : "");
            mirror_item_error(run, p, i, "/", "%s", t->reason);
            json_decref(j);
            break;
        }
        {
            struct pending *pe = &ps->v[map[left - 1]];
            pe->removed = 1;
            if (pe->del && code && strcmp(code, "not_found") == 0) {
                if (SRC_INDEXED(run->def)) mirror_index_note(p, i, &pe->f);
                t->items++;
            } else {
                mirror_item_error(run, p, i, p->items[pe->item].path, "the target refused it: %.300s",
                                  msg ? msg : "?");
            }
        }
        json_decref(j);
    }
    free(map);
    ls_buf_release(&body);
    ls_buf_release(&reply);
    pending_clear(ps);
}

void
mirror_push_free(struct mirror_run *run)
{
    for (int i = 0; i < run->nt; i++) {
        struct push *ps = run->t[i].push;
        if (!ps) continue;
        pending_clear(ps);
        free(ps->v);
        if (ps->curl) curl_easy_cleanup(ps->curl);
        curl_slist_free_all(ps->headers);
        free(ps);
        run->t[i].push = NULL;
    }
}
