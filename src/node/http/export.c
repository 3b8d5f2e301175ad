/*
 * export.c - directories this server serves read-only to mirror servers (`serve --export
 * NAME=PATH`, docs/mirror.md "Exports"): lockstep's own rsync daemon, behind the same tokens,
 * roles and allow-lists as every other route (a `read` token reads an export).
 *
 *   GET /v1/exports                        the names
 *   GET /v1/exports/{name}/list?after=&limit=  entries in path order after a cursor
 *   GET /v1/exports/{name}/file?path=&offset=&length=  a piece of one regular file
 *
 * The listing is paged by path order (siblings sorted so that the full paths of the files come
 * out in strcmp order, the order of a mirror's index), so a walk is resumable from any cursor
 * and a page costs one open directory per level. Nothing here follows a symlink: every path is
 * opened a component at a time from the export's root with O_NOFOLLOW, and `..`, `.` and empty
 * components are refused, so no request reaches outside the exported tree. A symlink is listed
 * as one (with its target's text); its content is never served.
 *
 * All of it runs on the reader threads (directories and files are read there, never on the loop).
 *
 * Not for: pulling from an export (node/mirror_remote.c).
 */
#include "node/http/http.h"
#include "common/log.h"
#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LIST_MAX 5000
#define LIST_DEFAULT 500
#define PIECE_MAX (8 << 20)
#define DEPTH_MAX 128
#define DIR_ENTRIES_MAX 1000000
#define REL_MAX 4096

/* ---------------------------------------------------------------- exports by name */

/* The export's directory (as given to --export), or NULL. */
static const char *
export_path(struct server *srv, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < srv->cfg.exports.n; i++) {
        const char *e = srv->cfg.exports.v[i];
        if (strncmp(e, name, n) == 0 && e[n] == '=') return e + n + 1;
    }
    return NULL;
}

/* Whether the data directory is dir or lies under it (both resolved). */
static int
data_within(const char *data, const char *dir)
{
    char d[PATH_MAX], x[PATH_MAX];
    size_t n;
    if (!data || !realpath(data, d) || !realpath(dir, x)) return 0;
    n = strlen(x);
    if (n == 1) return 1;
    return strncmp(d, x, n) == 0 && (d[n] == '\0' || d[n] == '/');
}

int
export_known(struct server *srv, const char *name)
{
    return export_path(srv, name) != NULL;
}

int
http_exports_check(struct server *srv, struct ls_error *err)
{
    for (int i = 0; i < srv->cfg.exports.n; i++) {
        const char *e = srv->cfg.exports.v[i], *eq = strchr(e, '=');
        struct stat sb;
        int ok = eq && eq > e && eq - e <= 64;
        for (const char *p = e; ok && p < eq; p++)
            ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                 *p == '-' || *p == '_' || *p == '.';
        if (!ok)
            return ls_error_set(err, LS_EINVAL,
                                "--export %s: expected NAME=PATH (NAME: letters, digits, -_.)", e);
        if (eq[1] != '/')
            return ls_error_set(err, LS_EINVAL, "--export %s: the path must be absolute", e);
        if (stat(eq + 1, &sb) < 0 || !S_ISDIR(sb.st_mode))
            return ls_error_set(err, LS_EINVAL, "--export %s: not a directory", e);
        if (data_within(srv->cfg.data, eq + 1))
            return ls_error_set(err, LS_EINVAL,
                                "--export %s: it holds this server's data directory", e);
        for (int k = 0; k < i; k++)
            if (strncmp(srv->cfg.exports.v[k], e, (size_t)(eq - e) + 1) == 0)
                return ls_error_set(err, LS_EINVAL, "--export %.*s is given twice", (int)(eq - e),
                                    e);
    }
    return 0;
}

/*
 * A relative path as a request gives it: "/a/b", each component non-empty and neither "." nor
 * "..". A trailing "/" is allowed when trailing_slash (a listing cursor after a directory).
 */
static int
rel_valid(const char *p, int trailing_slash)
{
    size_t n = strlen(p);
    if (n == 0 || p[0] != '/' || n >= REL_MAX) return 0;
    if (trailing_slash && n > 1 && p[n - 1] == '/') n--;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1, len;
        while (j < n && p[j] != '/')
            j++;
        len = j - i - 1;
        if (len == 0 || (len == 1 && p[i + 1] == '.') ||
            (len == 2 && p[i + 1] == '.' && p[i + 2] == '.'))
            return 0;
        i = j;
    }
    return 1;
}

/* Opens rel (valid) beneath the directory rootfd, one component at a time, following no
 * symlink (ELOOP or ENOTDIR when one is met). A descriptor, or -errno. */
static int
open_beneath(int rootfd, const char *rel, int flags)
{
    char comp[NAME_MAX + 1];
    int fd = dup(rootfd);
    const char *p = rel;
    if (fd < 0) return -errno;
    while (*p == '/')
        p++;
    while (*p) {
        size_t len = strcspn(p, "/");
        int last = p[len] == '\0', next;
        if (len > NAME_MAX) {
            close(fd);
            return -ENAMETOOLONG;
        }
        memcpy(comp, p, len);
        comp[len] = '\0';
        next = openat(fd, comp,
                      (last ? flags : O_RDONLY | O_DIRECTORY) | O_NOFOLLOW | O_CLOEXEC);
        close(fd);
        if (next < 0) return -errno;
        fd = next;
        p += len;
        while (*p == '/')
            p++;
    }
    return fd;
}

/* ---------------------------------------------------------------- the listing */

struct dent {
    char *name;
    struct stat sb;
    int ok; /* lstat worked */
};

struct lister {
    const char *after; /* "" or a cursor */
    int64_t limit, n;
    json_t *entries;
    char next[REL_MAX + 2];
    int full; /* the page is full: stop */
};

static int
is_dir(const struct dent *d)
{
    return d->ok && S_ISDIR(d->sb.st_mode);
}

/* Siblings in the order that puts the full paths of everything under them in strcmp order: a
 * directory sorts as "name/", since its contents follow it as "name/...". */
static int
dent_cmp(const void *a, const void *b)
{
    const struct dent *x = a, *y = b;
    const char *p = x->name, *q = y->name;
    while (*p && *p == *q) {
        p++;
        q++;
    }
    int cx = *p ? (unsigned char)*p : is_dir(x) ? '/' : 0;
    int cy = *q ? (unsigned char)*q : is_dir(y) ? '/' : 0;
    if (cx != cy) return cx - cy;
    if (!*p && !*q) return 0;
    /* one name ended where the other goes on: the "/" of a directory against the rest */
    return !*p ? (is_dir(x) ? 1 : -1) : (is_dir(y) ? -1 : 1);
}

/* Adds one entry, or says the page is full (its cursor: the last entry's key). */
static int
emit(struct lister *L, int dirfd, const char *rel, const struct dent *d)
{
    json_t *o;
    if (L->n == L->limit) {
        L->full = 1;
        return 1;
    }
    if (!d->ok) {
        o = json_pack("{s:s,s:s}", "path", rel, "type", "error");
        json_object_set_new(o, "error", json_string("cannot stat"));
    } else if (S_ISDIR(d->sb.st_mode)) {
        o = json_pack("{s:s,s:s,s:I}", "path", rel, "type", "dir", "mode",
                      (json_int_t)d->sb.st_mode);
    } else {
        int64_t mtime_ns = (int64_t)d->sb.st_mtim.tv_sec * 1000000000 + d->sb.st_mtim.tv_nsec;
        const char *type = S_ISREG(d->sb.st_mode) ? "file" : S_ISLNK(d->sb.st_mode) ? "link" : "other";
        o = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I}", "path", rel, "type", type, "size",
                      (json_int_t)d->sb.st_size, "mtime_ns", (json_int_t)mtime_ns, "mode",
                      (json_int_t)d->sb.st_mode, "ino", (json_int_t)d->sb.st_ino);
        if (S_ISLNK(d->sb.st_mode)) {
            char to[4096];
            ssize_t n = readlinkat(dirfd, d->name, to, sizeof to - 1);
            if (n < 0) {
                json_object_set_new(o, "type", json_string("error"));
                json_object_set_new(o, "error", json_string(strerror(errno)));
            } else {
                to[n] = '\0';
                json_object_set_new(o, "target", json_string(to));
            }
        }
    }
    json_array_append_new(L->entries, o);
    L->n++;
    snprintf(L->next, sizeof L->next, "%s%s", rel, d->ok && S_ISDIR(d->sb.st_mode) ? "/" : "");
    return 0;
}

static void
dents_free(struct dent *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
}

/*
 * Lists the directory dirfd (rel: its path, "" for the root) after L->after, depth first. A
 * subtree whose paths all sort at or before the cursor is not opened. 0, 1 (the page is full),
 * or -errno.
 */
static int
list_dir(struct lister *L, int dirfd, const char *rel, int depth, atomic_int *cancel)
{
    struct dent *v = NULL;
    size_t n = 0, cap = 0;
    DIR *d;
    struct dirent *de;
    int fd = dup(dirfd), rc = 0;
    if (fd < 0 || !(d = fdopendir(fd))) {
        rc = -errno;
        if (fd >= 0) close(fd);
        return rc;
    }
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        if (n == cap) {
            struct dent *nv;
            cap = cap ? cap * 2 : 64;
            if (cap > DIR_ENTRIES_MAX || !(nv = realloc(v, cap * sizeof *nv))) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
        }
        if (!(v[n].name = strdup(de->d_name))) {
            rc = -ENOMEM;
            break;
        }
        v[n].ok = fstatat(dirfd, de->d_name, &v[n].sb, AT_SYMLINK_NOFOLLOW) == 0;
        n++;
    }
    closedir(d);
    if (rc) {
        dents_free(v, n);
        return rc;
    }
    if (n) qsort(v, n, sizeof *v, dent_cmp);
    for (size_t i = 0; i < n && !rc; i++) {
        char path[REL_MAX + NAME_MAX + 4];
        size_t plen;
        int sub;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", rel, v[i].name) >= REL_MAX) continue;
        if (atomic_load(cancel)) {
            rc = -ECANCELED;
            break;
        }
        if (!is_dir(&v[i])) {
            if (*L->after && strcmp(path, L->after) <= 0) continue;
            rc = emit(L, dirfd, path, &v[i]);
            continue;
        }
        plen = strlen(path);
        path[plen] = '/';
        path[plen + 1] = '\0';
        if (*L->after && strncmp(L->after, path, plen + 1) != 0 && strcmp(L->after, path) > 0)
            continue; /* the whole subtree is before the cursor */
        if (!*L->after || strcmp(path, L->after) > 0) { /* the directory itself, not yet listed */
            path[plen] = '\0';
            if ((rc = emit(L, dirfd, path, &v[i]))) break;
        }
        path[plen] = '\0';
        if (depth + 1 >= DEPTH_MAX) continue;
        if ((sub = openat(dirfd, v[i].name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
            continue; /* unreadable (or replaced meanwhile): listed, its contents are not */
        rc = list_dir(L, sub, path, depth + 1, cancel);
        close(sub);
        if (rc < 0 && rc != -ECANCELED && rc != -ENOMEM) rc = 0; /* a subtree that vanished */
    }
    dents_free(v, n);
    return rc;
}

struct export_req {
    char *root;
    char name[65];
    char lease_job[65]; /* X-Lockstep-Lease: a shared job's reads carry its lease's fence */
    int64_t fence;
    char *after, *path;
    int64_t limit, offset, length;
    /* the file piece */
    char *buf;
    size_t len;
    struct stat sb;
};

static void
export_req_free(void *arg)
{
    struct export_req *e = arg;
    if (!e) return;
    free(e->root);
    free(e->after);
    free(e->path);
    free(e->buf);
    free(e);
}

static int
open_root(struct http_read *r, const char *root)
{
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) ls_error_set(&r->err, LS_EIO, "the export cannot be opened: %s", strerror(errno));
    return fd;
}

static void
list_run(struct store *st, struct http_read *r)
{
    struct export_req *e = r->arg;
    struct lister L = {.after = e->after ? e->after : "", .limit = e->limit};
    int rootfd, rc;
    if (*e->lease_job && lease_check(st, e->name, e->lease_job, e->fence, &r->err)) return;
    if ((rootfd = open_root(r, e->root)) < 0) return;
    L.entries = json_array();
    rc = list_dir(&L, rootfd, "", 0, &r->job.cancelled);
    close(rootfd);
    if (rc < 0) {
        json_decref(L.entries);
        ls_error_set(&r->err, rc == -ENOMEM ? LS_ENOMEM : LS_EIO, "cannot list the export: %s",
                     strerror(-rc));
        return;
    }
    r->reply = json_pack("{s:o,s:s,s:b}", "entries", L.entries, "next", L.next, "done", !L.full);
}

static void
file_run(struct store *st, struct http_read *r)
{
    struct export_req *e = r->arg;
    int rootfd, fd;
    ssize_t got;
    if (*e->lease_job && lease_check(st, e->name, e->lease_job, e->fence, &r->err)) return;
    if ((rootfd = open_root(r, e->root)) < 0) return;
    fd = open_beneath(rootfd, e->path, O_RDONLY | O_NONBLOCK);
    close(rootfd);
    if (fd < 0) {
        if (fd == -ELOOP || fd == -ENOTDIR)
            ls_error_set(&r->err, LS_EDENIED, "%s: a symlink or a file on the way; refused",
                         e->path);
        else if (fd == -ENOENT)
            ls_error_set(&r->err, LS_ENOTFOUND, "%s: no such file in the export", e->path);
        else
            ls_error_set(&r->err, LS_EIO, "%s: %s", e->path, strerror(-fd));
        return;
    }
    if (fstat(fd, &e->sb) < 0 || !S_ISREG(e->sb.st_mode)) {
        ls_error_set(&r->err, LS_EINVAL, "%s: not a regular file", e->path);
        close(fd);
        return;
    }
    if (e->offset >= e->sb.st_size) {
        close(fd);
        return;
    }
    if (e->length > e->sb.st_size - e->offset) e->length = e->sb.st_size - e->offset;
    if (!(e->buf = malloc((size_t)e->length + 1))) {
        ls_error_set(&r->err, LS_ENOMEM, NULL);
        close(fd);
        return;
    }
    while (e->len < (size_t)e->length &&
           (got = pread(fd, e->buf + e->len, (size_t)e->length - e->len,
                        e->offset + (off_t)e->len)) > 0)
        e->len += (size_t)got;
    close(fd);
}

/* On the loop: the piece, raw, with the file's state as it was read in headers. */
static int
file_finish(struct http_read *r)
{
    struct export_req *e = r->arg;
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->c->req);
    struct evbuffer *b = evbuffer_new();
    char v[64];
    int64_t mtime_ns = (int64_t)e->sb.st_mtim.tv_sec * 1000000000 + e->sb.st_mtim.tv_nsec;
    evhttp_add_header(h, "Content-Type", "application/octet-stream");
#define HDR(name, val)                                                                             \
    snprintf(v, sizeof v, "%lld", (long long)(val));                                               \
    evhttp_add_header(h, name, v)
    HDR("X-Lockstep-Size", e->sb.st_size);
    HDR("X-Lockstep-Mtime-Ns", mtime_ns);
    HDR("X-Lockstep-Mode", e->sb.st_mode);
    HDR("X-Lockstep-Ino", e->sb.st_ino);
#undef HDR
    if (b && e->len) evbuffer_add(b, e->buf, e->len);
    evhttp_send_reply(r->c->req, 200, "OK", b);
    if (b) evbuffer_free(b);
    export_req_free(e);
    ctx_free(r->c);
    return 1;
}

/* ---------------------------------------------------------------- handlers */

static struct export_req *
export_req_new(struct ctx *c)
{
    const char *name = param(c, "name"), *root = export_path(c->srv, name);
    struct evkeyvalq *h = evhttp_request_get_input_headers(c->req);
    const char *job = evhttp_find_header(h, "X-Lockstep-Lease");
    const char *fence = evhttp_find_header(h, "X-Lockstep-Fence");
    struct export_req *e;
    int64_t f = 0;
    if (!root) {
        reply_error(c->req, LS_ENOTFOUND, "no export named %s", name);
        return NULL;
    }
    if (job && (strlen(job) == 0 || strlen(job) > 64 || !fence || ls_parse_i64(fence, &f))) {
        reply_error(c->req, LS_EINVAL,
                    "X-Lockstep-Lease takes a job's name, with its X-Lockstep-Fence number");
        return NULL;
    }
    if (!(e = calloc(1, sizeof *e)) || !(e->root = strdup(root))) {
        free(e);
        reply_error(c->req, LS_ENOMEM, NULL);
        return NULL;
    }
    snprintf(e->name, sizeof e->name, "%s", name);
    if (job) snprintf(e->lease_job, sizeof e->lease_job, "%s", job);
    e->fence = f;
    return e;
}

/* Hands e (taken; text: a string to copy into *slot first, or NULL) to a reader thread. */
static void
export_read_submit(struct ctx *c, struct export_req *e, char **slot, const char *text,
                   void (*run)(struct store *st, struct http_read *r),
                   int (*finish)(struct http_read *r))
{
    struct http_read *r = NULL;
    if ((text && !(*slot = strdup(text))) || !(r = calloc(1, sizeof *r))) {
        export_req_free(e);
        reply_error(c->req, LS_ENOMEM, NULL);
        ctx_free(c);
        return;
    }
    r->run = run;
    r->finish = finish;
    r->arg = e;
    r->free_arg = export_req_free;
    http_read_submit(c, r);
}

static void
h_list(struct ctx *c)
{
    const char *after = qget(c, "after");
    struct export_req *e;
    int64_t limit;
    if (qint(c, "limit", LIST_DEFAULT, 1, LIST_MAX, &limit)) goto fail;
    if (after && *after && !rel_valid(after, 1)) {
        reply_error(c->req, LS_EINVAL,
                    "after: a path in the export (/a/b), without '.', '..' or empty parts");
        goto fail;
    }
    if (!(e = export_req_new(c))) goto fail;
    e->limit = limit;
    export_read_submit(c, e, &e->after, after, list_run, NULL);
    return;
fail:
    ctx_free(c);
}

static void
h_file(struct ctx *c)
{
    const char *path = qget(c, "path");
    struct export_req *e;
    int64_t offset, length;
    if (qint(c, "offset", 0, 0, INT64_MAX, &offset) ||
        qint(c, "length", PIECE_MAX, 1, PIECE_MAX, &length))
        goto fail;
    if (!path || !rel_valid(path, 0) || strcmp(path, "/") == 0) {
        reply_error(c->req, LS_EINVAL,
                    "path: a file in the export (/a/b), without '.', '..' or empty parts");
        goto fail;
    }
    if (!(e = export_req_new(c))) goto fail;
    e->offset = offset;
    e->length = length;
    export_read_submit(c, e, &e->path, path, file_run, file_finish);
    return;
fail:
    ctx_free(c);
}

static void
h_exports(struct ctx *c)
{
    json_t *a = json_array();
    for (int i = 0; i < c->srv->cfg.exports.n; i++) {
        const char *e = c->srv->cfg.exports.v[i];
        json_array_append_new(a, json_stringn(e, (size_t)(strchr(e, '=') - e)));
    }
    reply_json(c->req, 200, json_pack("{s:o}", "exports", a));
    ctx_free(c);
}

void
http_export_routes(struct server *srv)
{
    static const struct route routes[] = {
        {"/v1/exports", M_GET, NEED_READ, NEED_ADMIN, 0, h_exports},
        {"/v1/exports/{name}/list", M_GET, NEED_READ, NEED_ADMIN, 0, h_list},
        {"/v1/exports/{name}/file", M_GET, NEED_READ, NEED_ADMIN, 0, h_file},
    };
    http_routes(srv, routes, sizeof routes / sizeof routes[0]);
}
