"""A program with known allocation lines, shared by the oracle tests.

Each function allocates on its own lines; tests compare heapsite's figures for
this file with tracemalloc's on the same run.
"""

import threading


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a = a
        self.b = b


def strings(n):
    return ["item-%d" % i for i in range(n)]


def points(n):
    return [Point(i, -i) for i in range(n)]


def slotted(n):
    return [Slotted(i, str(i)) for i in range(n)]


def dicts(n):
    return [{"key": i, "other": i * 2} for i in range(n)]


def growing_list(n):
    out = []
    for i in range(n):
        out.append((i, i + 1))
    return out


def nested(n):
    return {i: [float(i)] * 3 for i in range(n)}


def in_threads(n, workers=4):
    results = [None] * workers

    def work(k):
        results[k] = [bytearray(100 + k) for _ in range(n)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def run(n=20000):
    kept = [strings(n), points(n), slotted(n), dicts(n), growing_list(n), nested(n // 4)]
    kept.append(in_threads(n // 10))
    return kept
