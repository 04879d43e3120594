"""Summarises `cuobjdump --dump-resource-usage | c++filt` (stdin): one line per kernel and
architecture with registers, static shared memory, local memory (LOCAL > 0 means a spill or a
stack array) and stack; exits 1 if any kernel uses local memory."""
import re
import sys

arch = "?"
rows = []
name = None
for line in sys.stdin:
    m = re.search(r"arch = (sm_\d+)", line)
    if m:
        arch = m.group(1)
    m = re.match(r"\s*Function (.+?):\s*$", line)
    if m:
        name = m.group(1)
        continue
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line)
    if m and name:
        reg, stack, shared, local = map(int, m.groups())
        short = name.replace("(anonymous namespace)::", "")
        short = re.sub(r"^void ", "", short)
        if short.endswith(")"):  # drop the parameter list: the last balanced (...)
            depth = 0
            for i in range(len(short) - 1, -1, -1):
                depth += {")": 1, "(": -1}.get(short[i], 0)
                if depth == 0:
                    short = short[:i]
                    break
        short = re.sub(r"fastconv::(\w+::)*", "", short)
        rows.append((arch, short, reg, shared, local, stack))
        name = None

print(f"{'arch':<7} {'regs':>4} {'smem':>6} {'local':>5} {'stack':>5}  kernel")
for arch, short, reg, shared, local, stack in sorted(rows):
    print(f"{arch:<7} {reg:>4} {shared:>6} {local:>5} {stack:>5}  {short[:110]}")
bad = [r for r in rows if r[4] > 0]
print(f"{len(rows)} kernels x architectures; {len(bad)} with local memory (spills)")
sys.exit(1 if bad or not rows else 0)
