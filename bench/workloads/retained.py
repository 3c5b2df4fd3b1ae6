"""Retained heap: build 1,000,000 small objects and keep them alive.

Builds a list of 1,000,000 ``Order`` instances (three attributes each),
then does a little work over them while they are all still alive, so a
tracer carries a large live table for the whole run.  At the end, still
holding the objects, it calls ``bench_stats_hook()`` if the benchmark
harness injected one (bench/harness.py does); run on its own it is a
plain program.

Run as a script: ``python retained.py [count]``.
"""

import sys

COUNT = 1_000_000


class Order:
    def __init__(self, order_id, qty, sku):
        self.order_id = order_id
        self.qty = qty
        self.sku = sku


def build(count):
    return [Order(i, i % 13 + 1, i % 1009) for i in range(count)]


def work(orders):
    total_qty = 0
    by_sku = {}
    for order in orders:
        total_qty += order.qty
        by_sku[order.sku] = by_sku.get(order.sku, 0) + order.qty
    busiest = max(by_sku, key=by_sku.get)
    return total_qty, busiest


def main(count):
    orders = build(count)
    total_qty, busiest = work(orders)
    print(f"checksum: retained count={len(orders)} qty={total_qty} sku={busiest}")
    hook = globals().get("bench_stats_hook")
    if hook is not None:
        hook()
    return orders


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else COUNT)
