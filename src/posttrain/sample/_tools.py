"""Tool-calling rows: multi-turn user/assistant/tool conversations with declared function specs."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from posttrain.sample import _prose as prose
from posttrain.sample._rows import Context, Planted, _normal, dumps, msg, tool_call

CITIES = ("Lisbon", "Nairobi", "Osaka", "Toronto", "Valparaiso", "Tromso", "Hanoi", "Porto", "Cusco", "Tbilisi",
          "Reykjavik", "Marrakesh", "Auckland", "Krakow", "Bogota", "Ljubljana")  # fmt: skip
CURRENCIES = ("EUR", "USD", "JPY", "GBP", "CAD", "CHF", "KES", "NZD")
TOPICS = ("renewable energy", "chess", "urban gardening", "space probes", "coral reefs", "jazz", "robotics")


def _fn(name: str, description: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    params = {"type": "object", "properties": props, "required": required}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}


_S, _I, _N = {"type": "string"}, {"type": "integer"}, {"type": "number"}

#: name -> (spec, draw arguments, fake result, user ask)
Tool = tuple[dict[str, Any], Callable[[random.Random], dict], Callable[[random.Random, dict], dict], Callable[[dict], str]]
TOOLS: dict[str, Tool] = {
    "get_weather": (
        _fn("get_weather", "Current weather for a city.",
            {"city": _S, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city"]),
        lambda r: {"city": r.choice(CITIES), "unit": r.choice(["celsius", "fahrenheit"])},
        lambda r, a: {"city": a["city"], "temperature": r.randint(-5, 35), "conditions": r.choice(["sunny", "rain", "fog"])},
        lambda a: f"What's the weather like in {a['city']} right now, in {a['unit']}?",
    ),
    "convert_currency": (
        _fn("convert_currency", "Convert an amount between currencies.",
            {"amount": _N, "from_currency": _S, "to_currency": _S}, ["amount", "from_currency", "to_currency"]),
        lambda r: {"amount": r.randint(5, 900), "from_currency": r.choice(CURRENCIES[:4]), "to_currency": r.choice(CURRENCIES[4:])},
        lambda r, a: {"converted": round(a["amount"] * r.uniform(0.5, 1.6), 2), "currency": a["to_currency"]},
        lambda a: f"How much is {a['amount']} {a['from_currency']} in {a['to_currency']}?",
    ),
    "search_restaurants": (
        _fn("search_restaurants", "Find restaurants by cuisine in a city.",
            {"city": _S, "cuisine": _S, "max_results": {"type": "integer", "minimum": 1, "maximum": 10}}, ["city", "cuisine"]),
        lambda r: {"city": r.choice(CITIES), "cuisine": r.choice(["thai", "vegan", "seafood", "ramen", "tapas"]), "max_results": r.randint(2, 5)},
        lambda r, a: {"results": [f"{r.choice(prose.ADJECTIVES).title()} {r.choice(prose.NOUNS).title()}" for _ in range(a["max_results"])]},
        lambda a: f"Can you find {a['max_results']} {a['cuisine']} places to eat in {a['city']}?",
    ),
    "get_stock_price": (
        _fn("get_stock_price", "Latest price for a ticker symbol.", {"symbol": _S}, ["symbol"]),
        lambda r: {"symbol": r.choice(["ACME", "GLOBX", "INITECH", "UMBR", "STARK", "WAYNE"])},
        lambda r, a: {"symbol": a["symbol"], "price": round(r.uniform(10, 600), 2)},
        lambda a: f"What is {a['symbol']} trading at?",
    ),
    "get_news": (
        _fn("get_news", "Recent headlines on a topic.", {"topic": _S, "count": _I}, ["topic"]),
        lambda r: {"topic": r.choice(TOPICS), "count": r.randint(2, 4)},
        lambda r, a: {"headlines": [prose.sentence(r) for _ in range(a["count"])]},
        lambda a: f"Give me {a['count']} recent headlines about {a['topic']}.",
    ),
    "compute_route": (
        _fn("compute_route", "Travel time between two places.",
            {"origin": _S, "destination": _S, "mode": {"type": "string", "enum": ["walking", "cycling", "driving"]}},
            ["origin", "destination", "mode"]),
        lambda r: dict(zip(["origin", "destination"], r.sample(CITIES, 2), strict=True), mode=r.choice(["walking", "cycling", "driving"])),
        lambda r, a: {"minutes": r.randint(20, 4000), "distance_km": r.randint(5, 3000)},
        lambda a: f"How long would {a['mode']} from {a['origin']} to {a['destination']} take?",
    ),
    "find_recipes": (
        _fn("find_recipes", "Recipes that use the given ingredients.",
            {"ingredients": {"type": "array", "items": _S, "minItems": 1}, "vegetarian": {"type": "boolean"}}, ["ingredients"]),
        lambda r: {"ingredients": r.sample(["lentils", "leeks", "rice", "tofu", "squash", "basil", "chickpeas"], 2), "vegetarian": r.random() < 0.5},
        lambda r, a: {"recipes": [f"{a['ingredients'][0].title()} {r.choice(['stew', 'salad', 'curry', 'bake'])}"]},
        lambda a: f"What could I cook with {a['ingredients'][0]} and {a['ingredients'][1]}?",
    ),
    "set_reminder": (
        _fn("set_reminder", "Create a reminder.", {"text": _S, "minutes_from_now": {"type": "integer", "minimum": 1}},
            ["text", "minutes_from_now"]),
        lambda r: {"text": f"check the {r.choice(prose.NOUNS)}", "minutes_from_now": r.randint(5, 240)},
        lambda r, a: {"status": "scheduled", "reminder_id": f"rem_{r.getrandbits(24):06x}"},
        lambda a: f"Remind me to {a['text']} in {a['minutes_from_now']} minutes.",
    ),
}  # fmt: skip


def _ids(rng: random.Random) -> str:
    return f"call_{rng.getrandbits(40):010x}"


def _assistant_text(rng: random.Random, trace: bool, answer: str) -> str:
    return prose.think(prose.trace(rng, [prose.musing(rng)], long=rng.random() < 0.05), answer) if trace else answer


def _round(rng: random.Random, names: list[str], defect: str | None) -> tuple[list[dict[str, Any]], str]:
    """One user ask -> assistant call(s) -> tool replies -> assistant summary; returns messages, summary text."""
    picks = rng.sample(names, 2) if len(names) > 1 and rng.random() < 0.25 else [rng.choice(names)]
    calls, replies, asks = [], [], []
    for name in picks:
        spec, draw, result, ask = TOOLS[name]
        args = draw(rng)
        asks.append(ask(args))
        arguments = dumps(args)
        if defect == "tools.arguments_not_json":
            arguments = repr(args) if rng.random() < 0.5 else arguments[:-1]
            defect = None
        elif defect == "tools.arguments_schema":
            required = spec["function"]["parameters"]["required"]
            bad = dict(args)
            bad.pop(required[0]) if rng.random() < 0.5 else bad.__setitem__(required[0], [bad[required[0]]])
            arguments, defect = dumps(bad), None
        call_name = name
        if defect == "tools.unknown_tool":
            call_name, defect = rng.choice(["lookup_everything", "web_search", "get_forecast", "fetch_quote"]), None
        calls.append(tool_call(_ids(rng), call_name, arguments))
        replies.append(msg("tool", dumps(result(rng, args))))
    user = " Also, ".join([asks[0]] + [a[0].lower() + a[1:] for a in asks[1:]]) + f" {prose.sentence(rng)}"
    intro = rng.choice(["Let me check that for you.", "I'll look that up.", "One moment while I query the tools."])
    found = " ".join(f"The {n.replace('_', ' ')} call returned {r['content']}." for n, r in zip(picks, replies, strict=True))
    summary = f"Here is what I found. {found} {prose.sentence(rng)}"
    return [msg("user", user), msg("assistant", intro, calls), *replies], summary


def _row(ctx: Context, rng: random.Random, defect: str | None) -> Planted:
    while True:
        names = rng.sample(sorted(TOOLS), rng.randint(1, 4))
        rounds = rng.choice([1, 1, 2, 2, 3, 4])
        bad_round = rng.randrange(rounds)
        messages: list[dict[str, Any]] = []
        for i in range(rounds):
            part, summary = _round(rng, names, defect if i == bad_round else None)
            messages += part + [msg("assistant", _assistant_text(rng, i == rounds - 1, summary))]
        if _normal(messages[0]["content"]) not in ctx.prompts:
            ctx.claim(messages[0]["content"])
            break
    tools = [TOOLS[n][0] for n in names]
    return Planted(ctx.row("tool_calling", "on", messages, {"tools": tools}), defect)


DEFECTS = ("tools.unknown_tool", "tools.arguments_not_json", "tools.arguments_schema")


def build(ctx: Context, n_rows: int, defects: dict[str, int]) -> list[Planted]:
    """All tool-calling rows: clean conversations plus the planted tool-call faults."""
    rng = ctx.rng("tool_calling")
    out = [_row(ctx, rng, code) for code in DEFECTS for _ in range(defects.get(code, 0))]
    while len(out) < n_rows - defects.get("dedup.exact", 0):
        out.append(_row(ctx, rng, None))
    return out
