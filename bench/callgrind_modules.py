#!/usr/bin/env python3
"""Sums callgrind's self instruction counts by Swift module (read from the mangled name) or, for code
that is not Swift, by shared object. Input: `callgrind_annotate --inclusive=no` output, NOT demangled.
Usage: bench/callgrind_modules.py ANNOTATE.txt"""

import os
import re
import sys
from collections import defaultdict

line_re = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S+?)(?:\s+\[(.+)\])?\s*$")
totals = defaultdict(int)
program_total = None
for line in open(sys.argv[1], errors="replace"):
    if program_total is None and "PROGRAM TOTALS" in line:
        program_total = int(line.split()[0].replace(",", ""))
        continue
    m = line_re.match(line)
    if not m:
        continue
    count = int(m.group(1).replace(",", ""))
    where = m.group(2)
    function = where.split(":", 1)[1] if ":" in where else where
    obj = os.path.basename(m.group(3)) if m.group(3) else "?"
    module = None
    mangled = re.match(r"^_?\$s(\d+)", function)
    if mangled:
        length = int(mangled.group(1))
        start = mangled.end()
        module = function[start:start + length]
    elif re.match(r"^_?\$sS", function):
        module = "Swift (stdlib)"
    elif function.startswith("swift_") or function.startswith("_swift"):
        module = "Swift runtime"
    if module is None:
        module = f"[{obj}]"
    totals[module] += count

grand = program_total or sum(totals.values())
print(f"{'self Ir':>16}  {'share':>6}  module (Swift module from the mangled name, else [object])")
for module, count in sorted(totals.items(), key=lambda kv: -kv[1])[:25]:
    print(f"{count:>16,}  {100 * count / grand:5.1f}%  {module}")
print(f"{grand:>16,}  100.0%  total")
