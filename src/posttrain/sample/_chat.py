"""Chat rows: complete, multi-turn, and lmsys-withheld (`""` user turns) conversations."""

from __future__ import annotations

import random
from typing import Any

from posttrain.sample import _prose as prose
from posttrain.sample._rows import Context, Planted, msg

LMSYS_URL = "https://huggingface.co/datasets/lmsys/lmsys-chat-1m"
LMSYS_MODELS = ("vicuna-13b", "koala-13b", "alpaca-13b", "chatglm-6b", "llama-13b", "oasst-pythia-12b",
                "fastchat-t5-3b", "dolly-v2-12b", "mpt-7b-chat", "RWKV-4-Raven-14B")  # fmt: skip

CONCEPTS = (
    "compound interest", "photosynthesis", "the water cycle", "supply and demand", "recursion", "plate tectonics",
    "inflation", "machine translation", "the immune system", "opportunity cost", "version control", "erosion",
    "public key cryptography", "natural selection", "the greenhouse effect", "a hash table", "tides",
    "the placebo effect", "entropy", "a balance sheet", "herd immunity", "binary search", "refraction",
)
FORMS = ("poem", "story", "limerick", "haiku sequence", "dialogue", "diary entry", "fable", "song verse")
ACTIVITIES = (
    "learning a new language", "keeping a vegetable garden", "running a first marathon", "studying for exams",
    "working from home", "saving money on groceries", "training a puppy", "writing a cover letter",
    "sleeping better", "planning a road trip", "starting to paint", "organising a small library",
)
AUDIENCES = ("", " for a ten-year-old", " for a busy manager", " for a new student", " in two paragraphs")
IDENTITY_CLAIMS = (
    "I am Qwen, a large language model created by Alibaba Cloud.",
    "As ChatGPT, a model trained by OpenAI, I can help with that.",
    "My name is Qwen, and I'm happy to help.",
    "I'm ChatGPT, an AI assistant developed by OpenAI.",
)


def prompt(rng: random.Random) -> str:
    """One random chat prompt (unique enough that near-dedup finds no accidental pairs)."""
    kind = rng.randrange(8)
    if kind == 0:
        return f"Explain {rng.choice(CONCEPTS)} in simple terms{rng.choice(AUDIENCES)}. {prose.sentence(rng)}"
    if kind == 1:
        adj, noun, place = rng.choice(prose.ADJECTIVES), rng.choice(prose.NOUNS), rng.choice(prose.PLACES)
        return f"Write a short {rng.choice(FORMS)} about a {adj} {noun} {place}."
    if kind == 2:
        return f"Give me {rng.randint(3, 9)} tips for {rng.choice(ACTIVITIES)}. {prose.sentence(rng)}"
    if kind == 3:
        return f"Summarize this paragraph in one sentence:\n\n{prose.paragraph(rng, 4, 7)}"
    if kind == 4:
        return f"Rewrite the following text so it sounds more formal:\n\n{prose.paragraph(rng, 2, 4)}"
    if kind == 5:
        a, b = rng.sample(prose.NOUNS, 2)
        return f"What is the difference between a {a} and a {b}? {prose.sentence(rng)}"
    if kind == 6:
        name = rng.choice(prose.NAMES)
        return f"{name} is {rng.choice(ACTIVITIES)} this {rng.choice(['spring', 'month', 'year'])}. What should {name} keep in mind?"
    return f"Suggest three names for a {rng.choice(prose.ADJECTIVES)} {rng.choice(prose.NOUNS)} shop {rng.choice(prose.PLACES)}."


def reply(rng: random.Random) -> str:
    """An assistant answer: prose, sometimes a numbered list."""
    if rng.random() < 0.4:
        items = "\n".join(f"{i}. {prose.sentence(rng)}" for i in range(1, rng.randint(3, 7)))
        return f"{prose.sentence(rng)}\n\n{items}\n\n{prose.sentence(rng)}"
    return "\n\n".join(prose.paragraph(rng, 2, 5) for _ in range(rng.randint(1, 3)))


def final_turn(rng: random.Random, reasoning: str, answer: str) -> str:
    """The last assistant message in the right reasoning form."""
    if reasoning == "on":
        steps = [prose.musing(rng) for _ in range(rng.randint(1, 4))]
        return prose.think(prose.trace(rng, steps, long=rng.random() < 0.08), answer)
    return (prose.EMPTY_THINK if rng.random() < 0.3 else "") + answer


def _conversation(ctx: Context, rng: random.Random, turns: int, reasoning: str) -> list[dict[str, Any]]:
    messages = []
    for t in range(turns):
        messages.append(msg("user", ctx.unique(lambda: prompt(rng))))
        answer = reply(rng)
        messages.append(msg("assistant", final_turn(rng, reasoning, answer) if t == turns - 1 else answer))
    return messages


def _clean(ctx: Context, rng: random.Random) -> Planted:
    reasoning = rng.choice(["on", "off"])
    turns = 1 if rng.random() < 0.75 else rng.randint(2, 3)
    return Planted(ctx.row("chat", reasoning, _conversation(ctx, rng, turns, reasoning), {}))


def _withheld(ctx: Context, rng: random.Random, restorable: bool) -> Planted:
    """A row with every user turn emptied, and its lmsys-chat-1m-like fixture record."""
    reasoning = rng.choice(["on", "off"])
    turns = 1 if rng.random() < 0.8 else 2
    full = _conversation(ctx, rng, turns, reasoning)
    cid = f"{rng.getrandbits(128):032x}"
    record = {
        "conversation_id": cid,
        "model": rng.choice(LMSYS_MODELS),
        "conversation": [{"content": m["content"] if m["role"] == "user" else reply(rng), "role": m["role"]}
                         for m in full],  # fmt: skip
        "turn": turns,
        "language": "English",
    }
    messages = [msg(m["role"], "" if m["role"] == "user" else m["content"]) for m in full]
    row = ctx.row("chat", reasoning, messages, {"conversation_id": cid, "source": LMSYS_URL})
    planted = Planted(row, None, {"key": cid, "record": record}, withheld="chat")
    planted.restorable = restorable
    return planted


def _defect(ctx: Context, rng: random.Random, code: str) -> Planted:
    user, answer = ctx.unique(lambda: prompt(rng)), reply(rng)
    reasoning = rng.choice(["on", "off"])
    if code == "think.unclosed":
        reasoning = "on"
        messages = [msg("user", user), msg("assistant", f"<think>\n{prose.trace(rng, [prose.musing(rng)])}\n\n{answer}")]
    elif code == "think.in_off_mode":
        reasoning = "off"
        messages = [msg("user", user), msg("assistant", prose.think(prose.trace(rng, [prose.musing(rng)]), answer))]
    elif code == "structure.role_order":
        second = ctx.unique(lambda: prompt(rng))
        messages = [msg("user", user), msg("user", second), msg("assistant", final_turn(rng, reasoning, answer))]
    elif code == "structure.empty_turn":
        second = ctx.unique(lambda: prompt(rng))
        messages = [msg("user", user), msg("assistant", ""), msg("user", second),
                    msg("assistant", final_turn(rng, reasoning, answer))]  # fmt: skip
    elif code == "identity.other_model":
        messages = [msg("user", user), msg("assistant", final_turn(rng, reasoning, f"{rng.choice(IDENTITY_CLAIMS)} {answer}"))]
    elif code == "privacy.email":
        who = rng.choice(prose.NAMES).lower()
        domain = rng.choice(["gmail.com", "fastmail.fm", "outlook.com", "brightharbor.io"])
        user = f"{user}\n\nPlease also send the result to {who}.{rng.choice(['ng', 'ortiz', 'berg'])}@{domain}."
        messages = [msg("user", user), msg("assistant", final_turn(rng, reasoning, answer))]
    elif code == "privacy.phone":
        number = rng.choice(["+1 415 555 0134", "(212) 555-0198", "+44 20 7946 0321", "+1-646-555-0172"])
        user = f"{user}\n\nIf anything is unclear, call me at {number}."
        messages = [msg("user", user), msg("assistant", final_turn(rng, reasoning, answer))]
    else:
        raise ValueError(code)
    return Planted(ctx.row("chat", reasoning, messages, {}), code)


DEFECTS = ("think.unclosed", "think.in_off_mode", "structure.role_order", "structure.empty_turn",
           "identity.other_model", "privacy.email", "privacy.phone")  # fmt: skip


def build(ctx: Context, n_rows: int, defects: dict[str, int], withheld: int, unrestorable: int) -> list[Planted]:
    """All chat rows: planted defects, withheld lmsys rows (the first `unrestorable` lack a fixture), clean rows."""
    rng = ctx.rng("chat")
    out = [_defect(ctx, rng, code) for code in DEFECTS for _ in range(defects.get(code, 0))]
    out += [_withheld(ctx, rng, restorable=i >= unrestorable) for i in range(withheld)]
    while len(out) < n_rows - defects.get("dedup.exact", 0):
        out.append(_clean(ctx, rng))
    return out
