"""A small Flask shop served by waitress: what bench_service.py loads and watches.

usage: service_app.py PORT READY_FILE

Three templated pages (Jinja2, with a base layout, loops, filters and macros) over an
in-memory catalogue, plus a bounded per-visitor cache of recently viewed items, so that
each request allocates and frees what a real page does and a little stays live. Serves on
127.0.0.1:PORT with waitress (4 threads, HTTP/1.1 keep-alive) and writes READY_FILE once
it listens.
"""

import random
import sys
import threading
from collections import OrderedDict
from pathlib import Path

from flask import Flask, abort, render_template, request

app = Flask(__name__, template_folder=str(Path(__file__).resolve().parent / "service_templates"))

CATEGORIES = ["books", "garden", "kitchen", "music", "outdoor", "toys", "tools", "games"]
_rng = random.Random(42)
CATALOGUE = [
    {
        "id": n,
        "name": f"Item {n} {_rng.choice(['deluxe', 'classic', 'mini', 'pro', 'eco'])}",
        "category": CATEGORIES[n % len(CATEGORIES)],
        "price": round(_rng.uniform(1, 500), 2),
        "stock": _rng.randint(0, 80),
        "tags": _rng.sample(["new", "sale", "gift", "bulk", "rare", "local"], 3),
        "description": " ".join(
            _rng.choice(["fine", "sturdy", "light", "bright"]) for _ in range(30)
        ),
    }
    for n in range(2000)
]
RECENT_LIMIT = 500  # visitors kept
recent = OrderedDict()
recent_lock = threading.Lock()


def remember(visitor, item_ids):
    with recent_lock:
        seen = recent.pop(visitor, [])
        recent[visitor] = (seen + list(item_ids))[-20:]
        while len(recent) > RECENT_LIMIT:
            recent.popitem(last=False)


@app.route("/")
def index():
    featured = [
        CATALOGUE[(request.args.get("page", 0, type=int) * 7 + n) % 2000] for n in range(24)
    ]
    return render_template("index.html", items=featured, categories=CATEGORIES)


@app.route("/category/<name>")
def category(name):
    if name not in CATEGORIES:
        abort(404)
    page = request.args.get("page", 0, type=int)
    items = [item for item in CATALOGUE if item["category"] == name]
    items.sort(key=lambda item: (item["price"], item["id"]))
    shown = items[page * 40 : page * 40 + 40]
    remember(request.args.get("visitor", "anon"), (item["id"] for item in shown))
    return render_template("category.html", name=name, items=shown, page=page)


@app.route("/item/<int:item_id>")
def item(item_id):
    if not 0 <= item_id < len(CATALOGUE):
        abort(404)
    found = CATALOGUE[item_id]
    related = [
        i
        for i in CATALOGUE[max(0, item_id - 50) : item_id + 50]
        if i["category"] == found["category"]
    ]
    visitor = request.args.get("visitor", "anon")
    remember(visitor, [item_id])
    with recent_lock:
        viewed = [CATALOGUE[i] for i in recent.get(visitor, [])]
    return render_template("item.html", item=found, related=related[:8], viewed=viewed)


def main():
    from waitress import create_server

    port, ready = int(sys.argv[1]), Path(sys.argv[2])
    server = create_server(app, host="127.0.0.1", port=port, threads=4)
    ready.write_text(f"{port}\n")
    server.run()


if __name__ == "__main__":
    main()
