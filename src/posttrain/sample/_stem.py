"""STEM rows: computed multiple-choice questions, metadata `{"expected_answer": "\\\\text{B}"}`.

Answer convention (documented in the manifest notes): the response's last line is
`The answer is \\boxed{B}.` — the letter, boxed, outside the reasoning trace.
"""

from __future__ import annotations

import random
from fractions import Fraction

from posttrain.sample import _prose as prose
from posttrain.sample._rows import Context, Planted, msg

LETTERS = "ABCDEFGHIJ"

Question = tuple[str, Fraction, str, list[str]]  # question, correct value, unit, trace steps

_MOLAR = {"water": 18, "carbon dioxide": 44, "methane": 16, "oxygen gas": 32, "ammonia": 17, "glucose": 180}


def _num(v: Fraction) -> str:
    """A value as a short decimal string.

    >>> _num(Fraction(5, 2)), _num(Fraction(7))
    ('2.5', '7')
    """
    if v.denominator == 1:
        return str(v.numerator)
    return f"{float(v):.3g}"


def _distance(rng: random.Random) -> Question:
    v, t = rng.randint(3, 45), rng.randint(4, 90)
    thing = rng.choice(["cyclist", "train", "drone", "boat", "runner", "cart"])
    q = f"A {thing} moves at a constant speed of {v} m/s for {t} s. How far does it travel?"
    return q, Fraction(v * t), "m", [f"Distance is speed times time: {v} x {t} = {v * t} m."]


def _force(rng: random.Random) -> Question:
    m, a = rng.randint(2, 120), rng.randint(2, 19)
    q = f"What net force is needed to accelerate a {m} kg object at {a} m/s^2?"
    return q, Fraction(m * a), "N", [f"Newton's second law: F = ma = {m} x {a} = {m * a} N."]


def _ohm(rng: random.Random) -> Question:
    i, r = rng.randint(1, 12), rng.randint(2, 220)
    q = f"A resistor of {r} ohms carries a current of {i} A. What is the voltage across it?"
    return q, Fraction(i * r), "V", [f"Ohm's law: V = IR = {i} x {r} = {i * r} V."]


def _kinetic(rng: random.Random) -> Question:
    m, v = rng.randint(1, 60), rng.randint(2, 30)
    e = Fraction(m * v * v, 2)
    q = f"Find the kinetic energy of a {m} kg mass moving at {v} m/s."
    return q, e, "J", [f"KE = (1/2) m v^2 = 0.5 x {m} x {v}^2 = {_num(e)} J."]


def _density(rng: random.Random) -> Question:
    v, d = rng.randint(2, 50), rng.randint(2, 19)
    q = f"A block has a volume of {v} cm^3 and a mass of {v * d} g. What is its density?"
    return q, Fraction(d), "g/cm^3", [f"Density is mass over volume: {v * d} / {v} = {d} g/cm^3."]


def _moles(rng: random.Random) -> Question:
    name = rng.choice(sorted(_MOLAR))
    n = rng.randint(1, 25)
    q = f"How many moles are in {n * _MOLAR[name]} g of {name}?"
    return q, Fraction(n), "mol", [f"The molar mass of {name} is {_MOLAR[name]} g/mol, so n = {n} mol."]


def _wave(rng: random.Random) -> Question:
    f, lam = rng.randint(2, 900), rng.randint(1, 12)
    q = f"A wave has a frequency of {f} Hz and a wavelength of {lam} m. What is its speed?"
    return q, Fraction(f * lam), "m/s", [f"v = f x wavelength = {f} x {lam} = {f * lam} m/s."]


def _power(rng: random.Random) -> Question:
    p, t = rng.randint(2, 400), rng.randint(2, 60)
    q = f"A motor does {p * t} J of work in {t} s. What is its average power output?"
    return q, Fraction(p), "W", [f"P = W / t = {p * t} / {t} = {p} W."]


def _pressure(rng: random.Random) -> Question:
    a, p = rng.randint(2, 40), rng.randint(3, 500)
    q = f"A force of {a * p} N acts evenly on an area of {a} m^2. What pressure does it exert?"
    return q, Fraction(p), "Pa", [f"P = F / A = {a * p} / {a} = {p} Pa."]


def _half_life(rng: random.Random) -> Question:
    m0, h, n = rng.choice([64, 128, 256, 512, 1024]), rng.randint(2, 30), rng.randint(1, 5)
    left = Fraction(m0, 2**n)
    q = f"A {m0} g sample of an isotope has a half-life of {h} days. How much remains after {h * n} days?"
    return q, left, "g", [f"{h * n} days is {n} half-lives, so {m0} / 2^{n} = {_num(left)} g remain."]


FAMILIES = (_distance, _force, _ohm, _kinetic, _density, _moles, _wave, _power, _pressure, _half_life)


def _options(rng: random.Random, value: Fraction, unit: str) -> tuple[list[str], int]:
    """4-6 distinct options (the right value among distractors) and the index of the right one."""
    k = rng.choice([4, 4, 4, 5, 6])
    wrong = {value * 2, value / 2, value + 3, value * 3, value - 1 if value > 1 else value + 7, value * 10}
    wrong.discard(value)
    distractors = rng.sample(sorted(wrong), k - 1)
    values = [value] + distractors
    rng.shuffle(values)
    return [f"{_num(v)} {unit}" for v in values], values.index(value)


def _prompt(question: str, options: list[str], passage: str | None) -> str:
    lines = [f"{LETTERS[i]}: {opt}" for i, opt in enumerate(options)]
    head = f"Read the passage, then answer the question.\n\n{passage}\n\n" if passage else ""
    return f"{head}{question}\n\n" + "\n".join(lines)


def _response(rng: random.Random, steps: list[str], letter: str, reasoning: str) -> str:
    body = f"{steps[-1]} {prose.sentence(rng)}\n\nThe answer is \\boxed{{{letter}}}."
    if reasoning == "on":
        return prose.think(prose.trace(rng, steps + [f"That matches option {letter}."], rng.random() < 0.1), body)
    return body


def _draw(ctx: Context, rng: random.Random, passage: str | None = None):
    def make():
        question, value, unit, steps = rng.choice(FAMILIES)(rng)
        options, right = _options(rng, value, unit)
        return _prompt(question, options, passage), steps, right, len(options)

    return ctx.unique(make)


def _row(ctx: Context, rng: random.Random, prompt: str, steps: list[str], right: int, said: int) -> dict:
    reasoning = "on" if rng.random() < 0.85 else "off"
    messages = [msg("user", prompt), msg("assistant", _response(rng, steps, LETTERS[said], reasoning))]
    return ctx.row("stem", reasoning, messages, {"expected_answer": f"\\text{{{LETTERS[right]}}}"})


def _near_pair(ctx: Context, rng: random.Random) -> tuple[Planted, Planted]:
    """A clean row with a ~130-word passage and its near-duplicate: one adjective swapped, new answer."""
    passage = prose.paragraph(rng, 9, 11)
    prompt, steps, right, _ = _draw(ctx, rng, passage)
    original = Planted(_row(ctx, rng, prompt, steps, right, right))
    words = passage.split(" ")
    spots = [i for i, w in enumerate(words) if w in prose.ADJECTIVES]
    spot = spots[len(spots) // 2]
    words[spot] = next(a for a in prose.ADJECTIVES if a != words[spot])
    edited = prompt.replace(passage, " ".join(words))
    ctx.claim(edited)
    copy = Planted(_row(ctx, rng, edited, steps, right, right), "dedup.near", {"twin": original.row["uuid"]})
    return original, copy


def build(ctx: Context, n_rows: int, defects: dict[str, int]) -> list[Planted]:
    """All stem rows: clean, wrong letters (`stem.mismatch`) and near-duplicate prompt pairs."""
    rng = ctx.rng("stem")
    out: list[Planted] = []
    for _ in range(defects.get("stem.mismatch", 0)):
        prompt, steps, right, n_opts = _draw(ctx, rng)
        said = (right + 1) % n_opts
        out.append(Planted(_row(ctx, rng, prompt, steps, right, said), "stem.mismatch"))
    for _ in range(defects.get("dedup.near", 0)):
        out.extend(_near_pair(ctx, rng))
    while len(out) < n_rows - defects.get("dedup.exact", 0):
        passage = prose.paragraph(rng, 2, 4) if rng.random() < 0.2 else None
        prompt, steps, right, _ = _draw(ctx, rng, passage)
        out.append(Planted(_row(ctx, rng, prompt, steps, right, right)))
    return out
