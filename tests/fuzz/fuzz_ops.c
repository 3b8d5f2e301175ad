/*
 * fuzz_ops.c - libFuzzer target for op_parse_json (src/core/item.c), the hand-written strict JSON
 * reader for NDJSON operation lines (POST /v1/batch, lockstep import).
 *
 * The input is parsed twice: whole, as one line, and as a batch split into lines the way
 * h_batch does it (on '\n', a trailing '\r' dropped, empty lines skipped). For every accepted
 * line the result is checked:
 *  - the op is well formed: a known type, valid paths, a kind of 1..64 bytes, a meta in canonical
 *    form, fields that do not apply to the op left empty;
 *  - jansson, a general strict JSON parser, reads the same line as an object with the same
 *    values (op, path, to, body or decoded body_base64, kind, meta, status, version, if_version).
 * A refused line must give LS_EBATCH (or LS_ENOMEM) and leave the op empty.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "core/item.h"

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_ops: invariant broken: %s: ", #cond);                            \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int
b64val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* A reference RFC 4648 decoder (padded, standard alphabet); returns the length or -1. */
static long
ref_base64(const char *in, size_t n, unsigned char *out)
{
    size_t o = 0;
    if (n % 4) return -1;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (in[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else {
                if (pad) return -1; /* "=x" */
                if ((v[k] = b64val(in[i + k])) < 0) return -1;
            }
        }
        out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
        if (pad < 2) out[o++] = (unsigned char)((v[1] & 0xf) << 4 | v[2] >> 2);
        if (pad < 1) out[o++] = (unsigned char)((v[2] & 0x3) << 6 | v[3]);
    }
    return (long)o;
}

static const char *
jstr(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    CHECK(!v || json_is_string(v), "jansson: \"%s\" is not a string", key);
    return v ? json_string_value(v) : NULL;
}

/* The op is well formed on its own. */
static void
check_op(const struct ls_op *op)
{
    struct ls_error err;
    CHECK(op->type >= LS_OP_PUT && op->type <= LS_OP_UNPUBLISH, "type %d", op->type);
    CHECK(op->path != NULL, "no path");
    CHECK(path_check(op->path, strlen(op->path), &err) == 0, "bad path: %s", err.msg);
    if (op->type == LS_OP_MOVE) {
        CHECK(op->to != NULL, "move without to");
        CHECK(path_check(op->to, strlen(op->to), &err) == 0, "bad to: %s", err.msg);
    } else {
        CHECK(op->to == NULL, "to on a %s", op_name(op->type));
    }
    if (op->type == LS_OP_PUT) {
        CHECK(op->body != NULL, "put without a body");
        CHECK(op->body_owned == NULL ? op->body_len == 0 : op->body == op->body_owned,
              "body/body_owned mismatch");
        if (op->kind) {
            size_t n = strlen(op->kind);
            CHECK(n >= 1 && n <= LS_KIND_MAX, "kind of %zu bytes", n);
        }
        if (op->meta) {
            char *again = NULL;
            CHECK(meta_canonical(op->meta, strlen(op->meta), &again, &err) == 0, "meta: %s",
                  err.msg);
            CHECK(strcmp(again, op->meta) == 0, "meta not canonical: %s", op->meta);
            free(again);
        }
        CHECK(op->publish == 0 || op->publish == 1, "publish %d", op->publish);
    } else {
        CHECK(!op->body && !op->body_owned && !op->body_len && !op->kind && !op->meta &&
                  !op->publish,
              "put fields on a %s", op_name(op->type));
    }
    CHECK(op->type == LS_OP_PUBLISH ? op->version >= 0 : op->version == 0, "version %lld",
          (long long)op->version);
    CHECK(op->if_version >= 0, "if_version %lld", (long long)op->if_version);
    CHECK(!op->body_file && !op->has_sha && !op->mtime && !op->seq && !op->no_log &&
              !op->tolerant && !op->body_absent,
          "fields a line cannot set");
}

/* jansson reads the same line to the same values. */
static void
check_against_jansson(const char *line, size_t n, const struct ls_op *op)
{
    json_error_t jerr;
    json_t *o = json_loadb(line, n, JSON_REJECT_DUPLICATES, &jerr), *v;
    const char *s;
    CHECK(o != NULL, "op_parse_json accepted what jansson refuses: %s (at %d)", jerr.text,
          jerr.position);
    CHECK(json_is_object(o), "not an object");
    CHECK((s = jstr(o, "op")) && strcmp(s, op_name(op->type)) == 0, "op");
    CHECK((s = jstr(o, "path")) && strcmp(s, op->path) == 0, "path: %s", op->path);
    s = jstr(o, "to");
    if (op->type == LS_OP_MOVE) CHECK(s && strcmp(s, op->to) == 0, "to: %s", op->to);
    if (op->type == LS_OP_PUT) {
        json_t *body = json_object_get(o, "body"), *b64 = json_object_get(o, "body_base64");
        CHECK(!(body && b64), "both bodies");
        if (body) {
            CHECK(json_is_string(body), "body");
            CHECK(json_string_length(body) == op->body_len &&
                      memcmp(json_string_value(body), op->body, op->body_len) == 0,
                  "body differs (%zu vs %zu bytes)", json_string_length(body), op->body_len);
        } else if (b64) {
            size_t len = json_string_length(b64);
            unsigned char *want = malloc(len / 4 * 3 + 1);
            long got = ref_base64(json_string_value(b64), len, want);
            CHECK(got >= 0, "op_parse_json accepted invalid base64");
            CHECK((size_t)got == op->body_len && memcmp(want, op->body, op->body_len) == 0,
                  "body_base64 decodes to %ld bytes, op has %zu", got, op->body_len);
            free(want);
        } else {
            CHECK(op->body_len == 0, "body without a body field");
        }
        s = jstr(o, "kind");
        CHECK(s ? op->kind && strcmp(s, op->kind) == 0 : !op->kind, "kind");
        v = json_object_get(o, "meta");
        if (v) {
            char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
            CHECK(json_is_object(v), "meta is not an object");
            CHECK(op->meta && text && strcmp(text, op->meta) == 0, "meta %s vs %s",
                  text ? text : "?", op->meta ? op->meta : "(none)");
            free(text);
        } else {
            CHECK(!op->meta, "meta without a meta field");
        }
        s = jstr(o, "status");
        CHECK(op->publish == (s && strcmp(s, "published") == 0), "status");
        if (s) CHECK(strcmp(s, "published") == 0 || strcmp(s, "draft") == 0, "status %s", s);
    }
    v = json_object_get(o, "version");
    CHECK(!v || (json_is_integer(v) && json_integer_value(v) >= 1), "version");
    if (op->type == LS_OP_PUBLISH)
        CHECK(op->version == (v ? json_integer_value(v) : 0), "version value");
    v = json_object_get(o, "if_version");
    CHECK(!v || (json_is_integer(v) && json_integer_value(v) >= 1), "if_version");
    CHECK(op->if_version == (v ? json_integer_value(v) : 0), "if_version value");
    {
        const char *key;
        static const char *const known[] = {"op",   "path", "to",     "body",    "body_base64",
                                            "kind", "meta", "status", "version", "if_version"};
        json_object_foreach(o, key, v)
        {
            size_t k;
            for (k = 0; k < sizeof known / sizeof known[0]; k++)
                if (strcmp(key, known[k]) == 0) break;
            CHECK(k < sizeof known / sizeof known[0], "unknown key \"%s\" accepted", key);
        }
    }
    json_decref(o);
}

static void
parse_one(const char *line, size_t n)
{
    struct ls_error err;
    struct ls_op op;
    /* An exact-size copy: a read past the end of the line is caught by ASan. */
    char *copy = malloc(n ? n : 1);
    int rc;
    if (!copy) return;
    memcpy(copy, line, n);
    ls_error_clear(&err);
    memset(&op, 0xa5, sizeof op); /* op_parse_json must initialise it */
    rc = op_parse_json(copy, n, &op, &err);
    if (rc == 0) {
        check_op(&op);
        check_against_jansson(copy, n, &op);
        op_release(&op);
    } else {
        static const struct ls_op empty;
        CHECK(rc == LS_EBATCH || rc == LS_ENOMEM, "rc %d", rc);
        CHECK(err.code == rc, "err.code %d, rc %d", err.code, rc);
        CHECK(err.msg[0] || rc == LS_ENOMEM, "no message");
        CHECK(memcmp(&op, &empty, sizeof op) == 0, "op not released on failure");
    }
    free(copy);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    parse_one(p, size);
    /* As a batch: split like h_batch (src/node/http_api.c). */
    if (memchr(data, '\n', size)) {
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *line_end = nl ? nl : end;
            size_t n = (size_t)(line_end - p);
            if (n > 0 && p[n - 1] == '\r') n--;
            if (n > 0) parse_one(p, n);
            p = line_end + 1;
        }
    }
    return 0;
}
