"""A service-like script that leaks: every order it handles is also kept in
a module-level audit list that nothing ever trims, while the rest of its
work (pricing, reports) is transient. Profile it with:

    heapsite run examples/dataclass_store.py

and the report's first table names the leaking kind (`__main__.Order`),
the line that builds each record, and what holds them (`AUDIT_LOG`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

ORDERS = 30_000
CUSTOMERS = [f"customer-{i:04d}" for i in range(500)]
PRODUCTS = ["widget", "gadget", "gizmo", "doohickey", "sprocket"]

# Every order ever handled, "for the auditors": never trimmed.
AUDIT_LOG: list = []


@dataclass
class Order:
    order_id: int
    customer: str
    product: str
    quantity: int
    unit_price: float
    tags: list = field(default_factory=list)

    @property
    def total(self) -> float:
        return self.quantity * self.unit_price


def price(product: str, rng: random.Random) -> float:
    return round(rng.uniform(1.0, 100.0), 2) + len(product)


def handle(order_id: int, rng: random.Random) -> float:
    """One request: build the order, audit it, return its total."""
    customer, product, quantity = rng.choice(CUSTOMERS), rng.choice(PRODUCTS), rng.randint(1, 9)
    order = Order(order_id, customer, product, quantity, price(product, rng))  # record line
    AUDIT_LOG.append(order)
    return order.total


def daily_report(totals: list) -> str:
    """Transient work: a formatted report, built and dropped."""
    lines = [f"{i:6d} {t:10.2f}" for i, t in enumerate(totals)]
    return "\n".join(lines)


def main() -> None:
    rng = random.Random(7)
    totals = []
    for order_id in range(ORDERS):
        totals.append(handle(order_id, rng))
        if order_id % 5_000 == 4_999:
            report = daily_report(totals)
            print(f"report of {len(report)} characters, {len(AUDIT_LOG)} orders audited")
            totals.clear()


if __name__ == "__main__":
    main()
