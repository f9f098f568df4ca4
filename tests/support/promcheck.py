#!/usr/bin/env python3
"""promcheck.py -- a strict checker of the Prometheus text exposition
format 0.0.4, standard library only (tests/e2e/test_admin.c runs it).

usage: promcheck.py FILE [--require FAMILY]...

Checks: metric and label names; label value escapes; values that parse as
floats; one HELP and one TYPE per family, both before its first sample;
a family's samples together; no sample twice; counters named *_total;
histograms with _bucket{le} lines in increasing le order, cumulative
counts that never fall, a +Inf bucket equal to _count, and a _sum; every
--require family present. Exit 0 when clean, 1 with one line per fault.
"""
import math
import re
import sys

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
SAMPLE = re.compile(r"^(" + NAME + r")(\{(.*)\})? (\S+)( -?[0-9]+)?$")
LABEL_PAIR = re.compile(r'(' + LABEL + r')="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse_float(text):
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", text):
        raise ValueError(text)
    return float(text)


def parse_labels(text):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL_PAIR.match(text, pos)
        if not m:
            raise ValueError("bad labels {%s}" % text)
        if m.group(1) in labels:
            raise ValueError("label %s twice" % m.group(1))
        labels[m.group(1)] = m.group(2)
        pos = m.end()
    return labels


def check(text, required):
    faults = []
    help_, type_ = {}, {}
    started, closed = set(), set()
    seen = set()
    current = None
    hist = {}  # (family, labels without le) -> {"buckets": [(le, v)], "sum", "count"}

    def family_of(name):
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and type_.get(base) in ("histogram", "summary"):
                return base
        return name

    if not text.endswith("\n"):
        faults.append("the text does not end with a newline")
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d" % n
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not re.fullmatch(NAME, name):
                    faults.append("%s: bad metric name %r" % (where, name))
                if name in started:
                    faults.append("%s: %s for %s after its samples" % (where, parts[1], name))
                table = help_ if parts[1] == "HELP" else type_
                if name in table:
                    faults.append("%s: a second %s for %s" % (where, parts[1], name))
                value = parts[3] if len(parts) > 3 else ""
                if parts[1] == "TYPE" and value not in TYPES:
                    faults.append("%s: unknown type %r" % (where, value))
                if parts[1] == "HELP" and not value:
                    faults.append("%s: empty HELP for %s" % (where, name))
                table[name] = value
            continue
        m = SAMPLE.match(line)
        if not m:
            faults.append("%s: not a sample: %r" % (where, line))
            continue
        name = m.group(1)
        try:
            labels = parse_labels(m.group(3) or "")
            value = parse_float(m.group(4))
        except ValueError as e:
            faults.append("%s: %s" % (where, e))
            continue
        family = family_of(name)
        if family not in type_:
            faults.append("%s: sample of %s before its TYPE" % (where, family))
        if family not in help_:
            faults.append("%s: sample of %s before its HELP" % (where, family))
        if family != current:
            if family in closed:
                faults.append("%s: samples of %s are not together" % (where, family))
            if current:
                closed.add(current)
            current = family
        started.add(family)
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            faults.append("%s: %s%s twice" % (where, name, labels))
        seen.add(key)
        kind = type_.get(family)
        if kind == "counter":
            if not name.endswith("_total"):
                faults.append("%s: counter %s is not named *_total" % (where, name))
            if value < 0 or math.isnan(value):
                faults.append("%s: counter %s is %s" % (where, name, value))
        if kind == "histogram":
            rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            h = hist.setdefault((family, rest), {"buckets": [], "sum": None, "count": None})
            if name.endswith("_bucket"):
                if "le" not in labels:
                    faults.append("%s: bucket without le" % where)
                    continue
                try:
                    h["buckets"].append((parse_float(labels["le"]), value, where))
                except ValueError:
                    faults.append("%s: le %r is not a number" % (where, labels["le"]))
            elif name.endswith("_sum"):
                h["sum"] = value
            elif name.endswith("_count"):
                h["count"] = value
            else:
                faults.append("%s: %s is not a histogram sample name" % (where, name))
    for (family, rest), h in hist.items():
        what = "%s%s" % (family, dict(rest))
        b = h["buckets"]
        for (le1, v1, _), (le2, v2, w2) in zip(b, b[1:]):
            if not le2 > le1:
                faults.append("%s: le not increasing in %s" % (w2, what))
            if v2 < v1:
                faults.append("%s: bucket count falls in %s" % (w2, what))
        if not b or b[-1][0] != math.inf:
            faults.append("%s: no +Inf bucket" % what)
        elif h["count"] is None or b[-1][1] != h["count"]:
            faults.append("%s: +Inf bucket %s != _count %s" % (what, b[-1][1], h["count"]))
        if h["sum"] is None:
            faults.append("%s: no _sum" % what)
    for family in type_:
        if family not in help_:
            faults.append("%s has a TYPE but no HELP" % family)
    for family in required:
        if family not in started:
            faults.append("required family %s is missing" % family)
    return faults


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().split("\n")[2], file=sys.stderr)
        return 2
    required = [argv[i + 1] for i, a in enumerate(argv) if a == "--require" and i + 1 < len(argv)]
    with open(argv[1], encoding="utf-8") as f:
        faults = check(f.read(), required)
    for fault in faults:
        print(fault)
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
