"""A script that parses a large JSON document (a product catalogue, about
15 MB, generated here) and keeps the parsed result in a module-level cache
while it goes on with other work. Profile it with:

    heapsite run examples/json_cache.py

and the report's first table names the kinds the document became (`dict`,
`str`, `list`...), the program's line that parsed it (the parser's own line
in the json module follows it), and what holds them (`CACHE`).
"""

from __future__ import annotations

import json

PRODUCTS = 60_000

# Parsed documents by name, kept for the life of the process.
CACHE: dict = {}


def generate_catalogue() -> str:
    """The document as a service would receive it: one JSON text."""
    products = [
        {
            "sku": f"SKU-{i:08d}",
            "name": f"Product number {i} in the catalogue",
            "price": round(i * 0.37 % 500, 2),
            "stock": i % 97,
            "tags": [f"tag-{i % 13}", f"batch-{i // 1000}"],
            "dimensions": {"w": i % 50, "h": i % 70, "d": i % 30},
        }
        for i in range(PRODUCTS)
    ]
    return json.dumps({"version": 3, "products": products}, indent=1)


def load_catalogue(text: str) -> dict:
    catalogue = json.loads(text)  # parse line
    CACHE["catalogue"] = catalogue
    return catalogue


def stock_summary(catalogue: dict) -> dict:
    """Other work: a transient summary of the cached document."""
    by_tag: dict = {}
    for product in catalogue["products"]:
        for tag in product["tags"]:
            by_tag[tag] = by_tag.get(tag, 0) + product["stock"]
    return by_tag


def main() -> None:
    text = generate_catalogue()
    print(f"document of {len(text) / 1e6:.1f} MB")
    catalogue = load_catalogue(text)
    del text
    summary = stock_summary(catalogue)
    print(f"{len(catalogue['products'])} products cached, {len(summary)} tags")


if __name__ == "__main__":
    main()
