/*
 * item.c - path rules, meta canonicalisation and the JSON operation parser (see item.h).
 * Pure functions: no storage, no sockets; the fuzz targets call them directly.
 */
#include "core/item.h"
#include "common/util.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

static const char *op_names[] = {NULL, "put", "delete", "purge", "move", "publish", "unpublish"};

const char *
op_name(int type)
{
    if (type < LS_OP_PUT || type > LS_OP_UNPUBLISH) return "?";
    return op_names[type];
}

int
op_from_name(const char *name)
{
    for (int i = LS_OP_PUT; i <= LS_OP_UNPUBLISH; i++)
        if (strcmp(name, op_names[i]) == 0) return i;
    return 0;
}

void
op_init(struct ls_op *op)
{
    memset(op, 0, sizeof *op);
}

void
op_release(struct ls_op *op)
{
    if (!op) return;
    free(op->path);
    free(op->to);
    free(op->kind);
    free(op->meta);
    free(op->body_owned);
    free(op->body_file);
    op_init(op);
}

/* ---------------------------------------------------------------- paths */

int
path_check(const char *path, size_t len, struct ls_error *err)
{
    if (!path || len == 0) return ls_error_set(err, LS_EPATH, "path is empty");
    if (len > LS_PATH_MAX)
        return ls_error_set(err, LS_EPATH, "path is longer than %d bytes", LS_PATH_MAX);
    if (path[0] != '/')
        return ls_error_set(err, LS_EPATH, "path must be absolute (start with '/')");
    if (memchr(path, '\0', len)) return ls_error_set(err, LS_EPATH, "path contains a NUL byte");
    if (!utf8_valid(path, len)) return ls_error_set(err, LS_EPATH, "path is not valid UTF-8");
    if (len == 1) return ls_error_set(err, LS_EPATH, "path '/' names no item");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c < 0x20 || c == 0x7f)
            return ls_error_set(err, LS_EPATH, "path contains a control character");
    }
    /* Walk the segments after the leading slash. */
    for (size_t start = 1; start <= len;) {
        const char *seg = path + start;
        const char *slash = memchr(seg, '/', len - start);
        size_t n = slash ? (size_t)(slash - seg) : len - start;
        if (n == 0) return ls_error_set(err, LS_EPATH, "path has an empty segment");
        if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return ls_error_set(err, LS_EPATH, "path has a '.' or '..' segment");
        start += n + 1;
        if (!slash) break;
    }
    return 0;
}

/* ---------------------------------------------------------------- meta */

static int
json_depth_ok(const char *s, size_t n)
{
    /* jansson has its own depth limit (2048); ours is lower, checked before parsing. */
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > LS_JSON_DEPTH_MAX) return 0;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return 1;
}

static int
meta_from_json(json_t *obj, char **out, struct ls_error *err)
{
    char *text;
    if (!json_is_object(obj)) return ls_error_set(err, LS_EMETA, "meta must be a JSON object");
    text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (!text) return ls_error_set(err, LS_ENOMEM, NULL);
    if (strlen(text) > LS_META_MAX) {
        free(text);
        return ls_error_set(err, LS_EMETA, "meta is larger than %d bytes", LS_META_MAX);
    }
    *out = text;
    return 0;
}

int
meta_canonical(const char *text, size_t len, char **out, struct ls_error *err)
{
    json_error_t jerr;
    json_t *obj;
    int rc;

    if (len > LS_META_MAX)
        return ls_error_set(err, LS_EMETA, "meta is larger than %d bytes", LS_META_MAX);
    if (!json_depth_ok(text, len))
        return ls_error_set(err, LS_EMETA, "meta is nested deeper than %d levels",
                            LS_JSON_DEPTH_MAX);
    obj = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj) return ls_error_set(err, LS_EMETA, "meta is not valid JSON: %s", jerr.text);
    rc = meta_from_json(obj, out, err);
    json_decref(obj);
    return rc;
}

/* ---------------------------------------------------------------- NDJSON operations */

static int
take_path(json_t *obj, const char *key, char **out, struct ls_error *err)
{
    json_t *v = json_object_get(obj, key);
    const char *s;
    size_t n;
    int rc;
    if (!v) return ls_error_set(err, LS_EBATCH, "missing \"%s\"", key);
    if (!json_is_string(v)) return ls_error_set(err, LS_EBATCH, "\"%s\" must be a string", key);
    s = json_string_value(v);
    n = json_string_length(v);
    if ((rc = path_check(s, n, err))) return rc;
    *out = strdup(s);
    return *out ? 0 : ls_error_set(err, LS_ENOMEM, NULL);
}

static int
decode_base64(const char *in, size_t n, void **out, size_t *outlen, struct ls_error *err)
{
    unsigned char *buf;
    int len, pad = 0;
    /* Strict RFC 4648: the alphabet only, '=' only as the last one or two characters.
     * (EVP_DecodeBlock alone takes '=' anywhere as zero bits and skips whitespace.) */
    if (n % 4) return ls_error_set(err, LS_EBATCH, "\"body_base64\" is not valid base64");
    if (n >= 1 && in[n - 1] == '=') pad++;
    if (n >= 2 && in[n - 2] == '=') pad++;
    for (size_t i = 0; i < n - (size_t)pad; i++) {
        char c = in[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return ls_error_set(err, LS_EBATCH, "\"body_base64\" is not valid base64");
    }
    buf = malloc(n / 4 * 3 + 1);
    if (!buf) return ls_error_set(err, LS_ENOMEM, NULL);
    len = n ? EVP_DecodeBlock(buf, (const unsigned char *)in, (int)n) : 0;
    if (len < 0) {
        free(buf);
        return ls_error_set(err, LS_EBATCH, "\"body_base64\" is not valid base64");
    }
    *out = buf;
    *outlen = (size_t)len - (size_t)pad;
    return 0;
}

static const char *const known_keys[] = {"op",   "path",   "to",      "body",       "body_base64",
                                         "kind", "meta",   "status",  "version",    "if_version",
                                         NULL};

int
op_parse_json(const char *line, size_t len, struct ls_op *op, struct ls_error *err)
{
    json_error_t jerr;
    json_t *obj, *v;
    const char *key;
    int rc = 0;

    op_init(op);
    if (!json_depth_ok(line, len))
        return ls_error_set(err, LS_EBATCH, "nested deeper than %d levels", LS_JSON_DEPTH_MAX);
    obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj) return ls_error_set(err, LS_EBATCH, "not valid JSON: %s", jerr.text);
    if (!json_is_object(obj)) {
        rc = ls_error_set(err, LS_EBATCH, "an operation must be a JSON object");
        goto out;
    }
    json_object_foreach(obj, key, v)
    {
        int known = 0;
        for (int i = 0; known_keys[i]; i++) known |= strcmp(key, known_keys[i]) == 0;
        if (!known) {
            rc = ls_error_set(err, LS_EBATCH, "unknown field \"%s\"", key);
            goto out;
        }
    }
    v = json_object_get(obj, "op");
    if (!json_is_string(v) || !(op->type = op_from_name(json_string_value(v)))) {
        rc = ls_error_set(err, LS_EBATCH,
                          "\"op\" must be one of put, delete, purge, move, publish, unpublish");
        goto out;
    }
    if ((rc = take_path(obj, "path", &op->path, err))) goto out;

    switch (op->type) {
    case LS_OP_MOVE:
        if ((rc = take_path(obj, "to", &op->to, err))) goto out;
        break;
    case LS_OP_PUT: {
        json_t *body = json_object_get(obj, "body"), *b64 = json_object_get(obj, "body_base64");
        json_t *kind = json_object_get(obj, "kind"), *meta = json_object_get(obj, "meta");
        json_t *status = json_object_get(obj, "status");
        if (body && b64) {
            rc = ls_error_set(err, LS_EBATCH, "give \"body\" or \"body_base64\", not both");
            goto out;
        }
        if (body) {
            if (!json_is_string(body)) {
                rc = ls_error_set(err, LS_EBATCH, "\"body\" must be a string");
                goto out;
            }
            op->body_len = json_string_length(body);
            op->body_owned = malloc(op->body_len + 1);
            if (!op->body_owned) {
                rc = ls_error_set(err, LS_ENOMEM, NULL);
                goto out;
            }
            memcpy(op->body_owned, json_string_value(body), op->body_len);
            op->body = op->body_owned;
        } else if (b64) {
            if (!json_is_string(b64)) {
                rc = ls_error_set(err, LS_EBATCH, "\"body_base64\" must be a string");
                goto out;
            }
            rc = decode_base64(json_string_value(b64), json_string_length(b64), &op->body_owned,
                               &op->body_len, err);
            if (rc) goto out;
            op->body = op->body_owned;
        } else {
            op->body = "";
        }
        if (kind) {
            if (!json_is_string(kind) || json_string_length(kind) == 0 ||
                json_string_length(kind) > LS_KIND_MAX ||
                !utf8_valid(json_string_value(kind), json_string_length(kind))) {
                rc = ls_error_set(err, LS_EBATCH, "\"kind\" must be a string of 1 to %d bytes",
                                  LS_KIND_MAX);
                goto out;
            }
            op->kind = strdup(json_string_value(kind));
        }
        if (meta && (rc = meta_from_json(meta, &op->meta, err))) goto out;
        if (status) {
            const char *s = json_is_string(status) ? json_string_value(status) : "";
            if (strcmp(s, "published") == 0) op->publish = 1;
            else if (strcmp(s, "draft") != 0) {
                rc = ls_error_set(err, LS_EBATCH, "\"status\" must be \"draft\" or \"published\"");
                goto out;
            }
        }
        break;
    }
    case LS_OP_PUBLISH:
        v = json_object_get(obj, "version");
        if (v) {
            if (!json_is_integer(v) || json_integer_value(v) < 1) {
                rc = ls_error_set(err, LS_EBATCH, "\"version\" must be a positive integer");
                goto out;
            }
            op->version = json_integer_value(v);
        }
        break;
    default:
        break;
    }
    v = json_object_get(obj, "if_version");
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            rc = ls_error_set(err, LS_EBATCH, "\"if_version\" must be a positive integer");
            goto out;
        }
        op->if_version = json_integer_value(v);
    }
out:
    json_decref(obj);
    if (rc) {
        /* Whatever was wrong inside it, the line is a malformed batch line. */
        if (rc != LS_ENOMEM) rc = LS_EBATCH;
        if (err) err->code = rc;
        op_release(op);
    }
    return rc;
}
