"""Object churn: create and drop many short-lived Python objects.

Each step makes tuples, dicts, lists, instances of a small class and
strings (f-strings, concatenation, str.join), folds a little of each into
a checksum and lets the rest die at once, so nearly every allocation is
freed soon after it is made.  Deterministic: no randomness, no clock.

Run as a script: ``python churn.py [steps]``.
"""

import sys

STEPS = 500_000


class Point:
    def __init__(self, x, y, label):
        self.x = x
        self.y = y
        self.label = label

    def moved(self, dx, dy):
        return Point(self.x + dx, self.y + dy, self.label + "'")


def step(i):
    pair = (i, i + 1)
    triple = (pair, str(i), i * 2)
    record = {"id": i, "name": f"item-{i}", "pair": pair, "tags": ["a", "b"]}
    p = Point(i, -i, "p" + str(i % 97))
    q = p.moved(1, 2)
    row = [pair, triple, record, q.label]
    words = [f"w{j}" for j in range(i % 7 + 3)]
    line = "-".join(words) + ":" + record["name"]
    counts = {w: len(w) for w in words}
    return len(row) + len(line) + sum(counts.values()) + q.x + q.y + triple[2]


def main(steps):
    checksum = 0
    for i in range(steps):
        checksum = (checksum * 31 + step(i)) % 1_000_000_007
    print(f"checksum: churn steps={steps} value={checksum}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else STEPS)
