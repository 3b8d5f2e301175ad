#!/usr/bin/env python3
"""promparse.py - reads a Prometheus text exposition (format 0.0.4) on stdin, checks it, and
prints its samples as one JSON object: {"name{k=\"v\",...}": value}, labels sorted by key
("name" alone when it has none).

Checked, each a line on stderr and exit 1: every line is a comment, blank, or a sample that
parses (name, labels with escaped values, a float value, an optional timestamp); every sample's
family has a TYPE (counter, gauge, untyped, summary or histogram) given before its samples and
only once, with a HELP; counters end in _total; with --prefix P every name starts with P; no
series appears twice. Nothing here is lockstep's: it reads any exposition.
"""
import json
import re
import sys

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
VALUE = r"[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf|NaN)"
SAMPLE = re.compile(r"^(%s)(?:\{(.*)\})? (%s)(?: -?[0-9]+)?$" % (NAME, VALUE))
PAIR = re.compile(r'(%s)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)' % LABEL)
TYPES = {"counter", "gauge", "untyped", "summary", "histogram"}


def parse(text, prefix=""):
    errors, types, helps, samples = [], {}, set(), {}
    for no, line in enumerate(text.split("\n"), 1):
        if line == "":
            continue
        if line.startswith("#"):
            m = re.match(r"^# (HELP|TYPE) (%s) (.*)$" % NAME, line)
            if not m:
                if line.startswith("# HELP") or line.startswith("# TYPE"):
                    errors.append("line %d: malformed: %r" % (no, line))
                continue
            kind, name, rest = m.groups()
            if kind == "HELP":
                if name in helps:
                    errors.append("line %d: a second HELP for %s" % (no, name))
                helps.add(name)
            else:
                if rest not in TYPES:
                    errors.append("line %d: unknown type %r" % (no, rest))
                if name in types:
                    errors.append("line %d: a second TYPE for %s" % (no, name))
                if any(k.split("{")[0] == name for k in samples):
                    errors.append("line %d: TYPE of %s after its samples" % (no, name))
                types[name] = rest
            continue
        m = SAMPLE.match(line)
        if not m:
            errors.append("line %d: not a sample: %r" % (no, line))
            continue
        name, labels, value = m.groups()
        pairs, rest = [], labels or ""
        while rest:
            pm = PAIR.match(rest)
            if not pm:
                errors.append("line %d: malformed labels: %r" % (no, labels))
                break
            pairs.append((pm.group(1), pm.group(2)))
            rest = rest[pm.end():]
        if len({k for k, _ in pairs}) != len(pairs):
            errors.append("line %d: a label twice: %r" % (no, line))
        if name not in types:
            errors.append("line %d: %s has no TYPE before it" % (no, name))
        elif name not in helps:
            errors.append("line %d: %s has no HELP" % (no, name))
        if types.get(name) == "counter" and not name.endswith("_total"):
            errors.append("line %d: counter %s does not end in _total" % (no, name))
        if not name.startswith(prefix):
            errors.append("line %d: %s does not start with %s" % (no, name, prefix))
        key = name + ("{%s}" % ",".join('%s="%s"' % p for p in sorted(pairs)) if pairs else "")
        if key in samples:
            errors.append("line %d: series %s appears twice" % (no, key))
        samples[key] = float(value.replace("Inf", "inf").replace("NaN", "nan"))
    return samples, errors


def main():
    prefix = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--prefix" else ""
    samples, errors = parse(sys.stdin.read(), prefix)
    for e in errors:
        print("promparse: " + e, file=sys.stderr)
    if errors:
        return 1
    json.dump({k: (int(v) if v.is_integer() else v) for k, v in samples.items()}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
