#!/usr/bin/env python3
"""Writes the proxy's symbol ordering file from callgrind's profiles.

usage: order.py BINARY OUT PROFILE...
       order.py --check BINARY ORDER

Every function of BINARY that ran in any PROFILE (callgrind output written
with --demangle=no --compress-strings=no), most instructions first. The
linker lays these out first in .text, so the code a sidecar runs sits in
as few pages as it can.
"""
import collections
import subprocess
import sys


def self_cost(path, binary_name, cost):
    ob = fn = None
    after_calls = False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("ob="):
                ob = line[3:].strip()
            elif line.startswith("fn="):
                fn = line[3:].strip() if ob and ob.endswith("/" + binary_name) else None
                if fn:
                    cost.setdefault(fn, 0)
            elif line.startswith("calls="):
                # The next cost line is the call's inclusive cost.
                after_calls = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_calls:
                    after_calls = False
                    continue
                parts = line.split()
                if fn and len(parts) >= 2:
                    cost[fn] += int(parts[1])


def code_of(binary):
    code = {}
    nm = subprocess.run(["nm", "-S", binary], capture_output=True, text=True)
    if nm.returncode != 0:
        # A wrapper script in the binary's place (a profiler's) has none.
        sys.exit(f"order.py: no symbols in {binary}: {nm.stderr.strip()}")
    for line in nm.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tTwW":
            code[parts[3]] = int(parts[1], 16)
    return code


def check(binary, order):
    """How much of ORDER names functions BINARY still has. A function
    whose name changed (its code, or LLVM's numbering of local copies)
    falls back among the code that never runs, and maps its page."""
    code = code_of(binary)
    with open(order) as f:
        names = [line.strip() for line in f if line.strip()]
    found = sum(name in code for name in names)
    print(f"{binary}: {found} of the {len(names)} functions {order} names")
    if found < len(names):
        print("  the rest moved or were renamed: bench/order.sh writes the file again")


def main():
    if sys.argv[1] == "--check":
        return check(sys.argv[2], sys.argv[3])
    binary, out, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]
    if not profiles:
        sys.exit("order.py: no callgrind profiles given")
    code = code_of(binary)
    cost = collections.Counter()
    name = binary.rsplit("/", 1)[-1]
    for p in profiles:
        self_cost(p, name, cost)
    ran = [fn for fn, _ in sorted(cost.items(), key=lambda kv: (-kv[1], kv[0])) if fn in code]
    if not ran:
        sys.exit(f"order.py: no function of {binary} in the profiles")
    with open(out, "w") as f:
        f.write("".join(fn + "\n" for fn in ran))
    total = sum(code.values())
    size = sum(code[fn] for fn in ran)
    print(f"{out}: {len(ran)} functions that ran, {size / 1024:.0f} KiB of {total / 1024:.0f} KiB of code")


if __name__ == "__main__":
    main()
