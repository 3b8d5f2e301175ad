/*
 * table.c - aligned tables for the CLI's human output (table.h). A cell that cannot be
 * allocated prints as "?": a table is for reading, and the command's result stands.
 */
#include "cli/table.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void
table_init(struct table *t, int ncols, const char *const *headers, const char *align)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols > TABLE_COLS_MAX ? TABLE_COLS_MAX : ncols;
    for (int i = 0; i < t->ncols; i++) {
        t->headers[i] = headers[i];
        t->align[i] = align && align[i] == 'r' ? 'r' : 'l';
    }
}

void
table_cell(struct table *t, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    if (t->ncells == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        char **cells = realloc(t->cells, cap * sizeof *cells);
        if (!cells) return;
        t->cells = cells;
        t->cap = cap;
    }
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    t->cells[t->ncells++] = s;
}

static const char *
shown(const char *s)
{
    return !s ? "?" : *s ? s : "-";
}

void
table_print(struct table *t, FILE *out)
{
    size_t width[TABLE_COLS_MAX];
    for (int c = 0; c < t->ncols; c++) width[c] = strlen(t->headers[c]);
    for (size_t i = 0; i < t->ncells; i++) {
        size_t n = strlen(shown(t->cells[i]));
        if (n > width[i % (size_t)t->ncols]) width[i % (size_t)t->ncols] = n;
    }
    for (size_t i = 0; i < t->ncells + (size_t)t->ncols; i++) {
        int c = (int)(i % (size_t)t->ncols);
        const char *s = i < (size_t)t->ncols ? t->headers[c] : shown(t->cells[i - t->ncols]);
        int last = c == t->ncols - 1 || i + 1 == t->ncells + (size_t)t->ncols;
        if (t->align[c] == 'r') fprintf(out, "%*s", (int)width[c], s);
        else fprintf(out, "%-*s", last ? 0 : (int)width[c], s);
        fputs(last ? "\n" : "  ", out);
    }
}

void
table_release(struct table *t)
{
    for (size_t i = 0; i < t->ncells; i++) free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}
