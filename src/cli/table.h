/*
 * table.h - the CLI's human tables: columns as wide as their widest cell, two spaces apart,
 * numbers right-aligned. Scripts read --json instead; this is for people.
 */
#ifndef LS_CLI_TABLE_H
#define LS_CLI_TABLE_H

#include <stdio.h>

#define TABLE_COLS_MAX 16

struct table {
    int ncols;
    const char *headers[TABLE_COLS_MAX];
    char align[TABLE_COLS_MAX]; /* 'l' or 'r' per column */
    char **cells;               /* row after row, ncols each */
    size_t ncells, cap;
};

/* headers: ncols names; align: one 'l' or 'r' per column ("llrr"). */
void table_init(struct table *t, int ncols, const char *const *headers, const char *align);
/* Appends the next cell (rows fill left to right); "" prints as "-". */
void table_cell(struct table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void table_print(struct table *t, FILE *out);
void table_release(struct table *t);

#endif
