"""Math rows: real computed problems whose answers end in `\\boxed{...}` and match `expected_answer`."""

from __future__ import annotations

import math
import random
from fractions import Fraction

from posttrain.sample import _prose as prose
from posttrain.sample._bench import gsm8k_items, math500_items
from posttrain.sample._rows import Context, Planted, msg

SOURCES = (
    "aops_c4_high_school_math",
    "aops_c6_high_school_olympiads",
    "aops_c5_contests_amp_programs",
    "aops_c7_college_math",
    "MATH_training_set",
)

Problem = tuple[str, list[str], str, str]  # prompt, trace steps, answer text, boxed answer (LaTeX)


def tex(value: Fraction | int) -> str:
    """LaTeX of an exact rational: integers plain, others `\\frac{p}{q}` (the nested-brace case).

    >>> tex(Fraction(-3, 4)), tex(Fraction(6, 3))
    ('-\\\\frac{3}{4}', '2')
    """
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def _linear(rng: random.Random) -> Problem:
    a, b, c = rng.randint(2, 19), rng.randint(-40, 40), rng.randint(-60, 90)
    x = Fraction(c - b, a)
    lead = rng.choice(["Solve for $x$:", "Find the value of $x$ that satisfies", "Determine $x$ if"])
    prompt = f"{lead} ${a}x {'+' if b >= 0 else '-'} {abs(b)} = {c}$."
    steps = [f"Subtract {b} from both sides: ${a}x = {c - b}$.", f"Divide by {a}: $x = {tex(x)}$."]
    return prompt, steps, f"Isolating $x$ gives $x = \\dfrac{{{c - b}}}{{{a}}}$, which simplifies.", tex(x)


def _series(rng: random.Random) -> Problem:
    a, d, n = rng.randint(-9, 30), rng.randint(2, 13), rng.randint(8, 60)
    total = n * (2 * a + (n - 1) * d) // 2
    prompt = (
        f"What is the sum of the first {n} terms of the arithmetic sequence "
        f"${a}, {a + d}, {a + 2 * d}, \\ldots$?"
    )
    steps = [
        f"The first term is {a} and the common difference is {d}.",
        f"The last term is ${a} + {n - 1}\\cdot {d} = {a + (n - 1) * d}$.",
        f"The sum is $\\frac{{{n}}}{{2}}({a} + {a + (n - 1) * d}) = {total}$.",
    ]
    return prompt, steps, "Using the formula $S_n = \\frac{n}{2}(a_1 + a_n)$.", str(total)


def _committee(rng: random.Random) -> Problem:
    n, k = rng.randint(6, 24), rng.randint(2, 6)
    group, pick = rng.choice([("students", "a study group"), ("volunteers", "a crew"), ("players", "a team")])
    prompt = f"In how many ways can {pick} of {k} be chosen from {n} {group} if order does not matter?"
    value = math.comb(n, k)
    steps = [f"This is a combination: $\\binom{{{n}}}{{{k}}}$.", f"$\\binom{{{n}}}{{{k}}} = {value}$."]
    return prompt, steps, f"The count is $\\binom{{{n}}}{{{k}}}$.", str(value)


def _marbles(rng: random.Random) -> Problem:
    r, b = rng.randint(2, 15), rng.randint(2, 15)
    colour = rng.choice(["red", "green", "white", "yellow"])
    other = rng.choice(["blue", "black", "purple", "orange"])
    p = Fraction(r, r + b) * Fraction(r - 1, r + b - 1)
    prompt = (
        f"{prose.sentence(rng)} A bag holds {r} {colour} and {b} {other} marbles. Two marbles are drawn at random without "
        f"replacement. What is the probability that both are {colour}?"
    )
    steps = [
        f"The first draw is {colour} with probability $\\frac{{{r}}}{{{r + b}}}$.",
        f"Then the second is {colour} with probability $\\frac{{{r - 1}}}{{{r + b - 1}}}$.",
        f"Multiplying gives ${tex(p)}$.",
    ]
    return prompt, steps, "Multiply the two conditional probabilities.", tex(p)


def _lcm(rng: random.Random) -> Problem:
    a, b = rng.randint(6, 180), rng.randint(6, 180)
    if rng.random() < 0.5:
        value, word = math.lcm(a, b), "least common multiple"
    else:
        value, word = math.gcd(a, b), "greatest common divisor"
    prompt = f"Find the {word} of {a} and {b}."
    steps = [f"Factor both numbers: {a} and {b}.", f"The {word} is {value}."]
    return prompt, steps, f"Comparing prime factorizations gives the {word}.", str(value)


def _power_mod(rng: random.Random) -> Problem:
    a, k, m = rng.randint(2, 29), rng.randint(20, 400), rng.randint(5, 41)
    value = pow(a, k, m)
    prompt = f"What is the remainder when ${a}^{{{k}}}$ is divided by {m}?"
    steps = [f"Work modulo {m} and look for a cycle in the powers of {a}.", f"The remainder is {value}."]
    return prompt, steps, "Reducing the exponent along the cycle of powers gives the remainder.", str(value)


def _roots(rng: random.Random) -> Problem:
    s, p = rng.randint(-15, 15), rng.randint(-30, 30)
    value = s * s - 2 * p
    prompt = (
        f"Let $r$ and $s$ be the roots of $x^2 {'-' if s >= 0 else '+'} {abs(s)}x "
        f"{'+' if p >= 0 else '-'} {abs(p)} = 0$. Compute $r^2 + s^2$."
    )
    steps = [f"By Vieta, $r + s = {s}$ and $rs = {p}$.", f"So $r^2 + s^2 = ({s})^2 - 2({p}) = {value}$."]
    return prompt, steps, "Vieta's formulas give the sum and product of the roots.", str(value)


def _triangle(rng: random.Random) -> Problem:
    pts = [(rng.randint(-12, 12), rng.randint(-12, 12)) for _ in range(3)]
    (x1, y1), (x2, y2), (x3, y3) = pts
    twice = abs(x1 * (y2 - y3) + x2 * (y3 - y1) + x3 * (y1 - y2))
    if twice == 0:
        return _triangle(rng)
    area = Fraction(twice, 2)
    prompt = f"Find the area of the triangle with vertices $({x1}, {y1})$, $({x2}, {y2})$ and $({x3}, {y3})$."
    steps = ["Use the shoelace formula.", f"Twice the area is {twice}, so the area is ${tex(area)}$."]
    return prompt, steps, "The shoelace formula gives the area directly.", tex(area)


def _divisible(rng: random.Random) -> Problem:
    n, a, b = rng.randint(100, 5000), rng.randint(2, 13), rng.randint(2, 13)
    if a == b:
        b += 1
    value = n // a + n // b - n // math.lcm(a, b)
    prompt = f"How many integers from 1 to {n} inclusive are divisible by {a} or by {b}?"
    steps = [
        f"Multiples of {a}: {n // a}. Multiples of {b}: {n // b}.",
        f"Both, i.e. multiples of {math.lcm(a, b)}: {n // math.lcm(a, b)}.",
        f"Inclusion-exclusion: {value}.",
    ]
    return prompt, steps, "Count with inclusion-exclusion.", str(value)


def _geometric(rng: random.Random) -> Problem:
    a, r = rng.randint(1, 40), rng.randint(2, 9)
    value = Fraction(a) / (1 - Fraction(1, r))
    prompt = f"Evaluate the infinite geometric series ${a} + \\frac{{{a}}}{{{r}}} + \\frac{{{a}}}{{{r * r}}} + \\cdots$."
    steps = [f"The ratio is $\\frac{{1}}{{{r}}}$, so the sum is $\\frac{{{a}}}{{1 - 1/{r}}}$.", f"That is ${tex(value)}$."]
    return prompt, steps, "The series converges because the ratio is less than one.", tex(value)


def _shopping(rng: random.Random) -> Problem:
    name, noun = rng.choice(prose.NAMES), rng.choice(["notebook", "lantern", "kettle", "compass", "sketchbook"])
    n, price, off = rng.randint(3, 40), rng.randint(2, 60), rng.choice([10, 20, 25, 50])
    total = Fraction(n * price * (100 - off), 100)
    prompt = (
        f"{prose.sentence(rng)} {name} buys {n} {noun}s at {price} dollars each and receives a {off}% discount on the whole "
        f"order. How many dollars does {name} pay?"
    )
    steps = [f"Before the discount: ${n} \\times {price} = {n * price}$.", f"After {off}% off: ${tex(total)}$."]
    return prompt, steps, "Apply the discount to the full price.", tex(total)


FAMILIES = (_linear, _series, _committee, _marbles, _lcm, _power_mod, _roots, _triangle, _divisible,
            _geometric, _shopping)  # fmt: skip


def _response(rng: random.Random, steps: list[str], summary: str, final: str, reasoning: str) -> str:
    """Solution text; `final` is the closing line (a boxed answer, or not for the planted defect)."""
    body = f"{summary} {prose.sentence(rng)}\n\n" + "\n".join(f"- {s}" for s in steps) + f"\n\n{final}"
    if reasoning == "on":
        return prose.think(prose.trace(rng, steps, long=rng.random() < 0.12), body)
    return (prose.EMPTY_THINK if rng.random() < 0.3 else "") + body


def _boxed_line(rng: random.Random, boxed: str) -> str:
    return rng.choice([f"The answer is $\\boxed{{{boxed}}}$.", f"\\[\n\\boxed{{{boxed}}}\n\\]"])


def _row(ctx: Context, rng: random.Random, prompt: str, steps: list[str], summary: str, final: str,
         expected: str, source: str) -> dict:  # fmt: skip
    reasoning = "on" if rng.random() < 0.85 else "off"
    messages = [msg("user", prompt), msg("assistant", _response(rng, steps, summary, final, reasoning))]
    return ctx.row("math", reasoning, messages, {"expected_answer": expected, "problem_source": source})


def _clean(ctx: Context, rng: random.Random, defect: str | None = None) -> Planted:
    prompt, steps, summary, boxed = ctx.unique(lambda: rng.choice(FAMILIES)(rng))
    source = rng.choice(SOURCES)
    if defect == "math.no_boxed":
        final = f"So the final answer is {boxed}."
        if "\\frac" in boxed:
            final = f"So the final answer is ${boxed}$."
    elif defect == "math.mismatch":
        wrong = tex(Fraction(boxed.replace("\\frac{", "").replace("}{", "/").rstrip("}")) + 1)
        final = _boxed_line(rng, wrong)
    else:
        final = _boxed_line(rng, boxed)
    return Planted(_row(ctx, rng, prompt, steps, summary, final, boxed, source), defect)


def _benchmark(ctx: Context, rng: random.Random, prompt: str, answer: str, item: str,
               defect: str | None, source: str) -> Planted:  # fmt: skip
    steps = ["Read the problem carefully and set up the quantities.", f"Working it through gives {answer}."]
    row = _row(ctx, rng, prompt, steps, "Carrying out the computation:", _boxed_line(rng, answer), answer, source)
    ctx.claim(prompt)
    planted = Planted(row, defect, {"item": item})
    if defect is None:
        planted.paraphrase_of = item
    return planted


#: A heavy paraphrase of GSM8K test item 0013 (same numbers, none of its wording): must NOT be caught.
GSM8K_PARAPHRASE = (
    "Door to door, a vendor of vacuums starts the day with some stock. One third goes at a green "
    "building, then a pair at a red one, and then half of whatever remains at an orange one. Five "
    "machines are left at the end. What was the starting stock?"
)


def build(ctx: Context, n_rows: int, defects: dict[str, int]) -> list[Planted]:
    """All math rows: clean ones, the planted defects, benchmark-contaminated rows and a paraphrase."""
    rng = ctx.rng("math")
    out: list[Planted] = []
    for code in ("math.no_boxed", "math.mismatch"):
        out += [_clean(ctx, rng, code) for _ in range(defects.get(code, 0))]
    for case in gsm8k_items(2, skip=("gsm8k-test-0013",)):
        out.append(_benchmark(ctx, rng, case["prompt"], case["expected"], case["id"], "decontam.ngram",
                              "gsm8k"))  # fmt: skip
    for item in math500_items(2):
        out.append(_benchmark(ctx, rng, item["question"], item["answer"], f"MATH500/{item['data_source_id']}",
                              "decontam.ngram", "MATH_training_set"))  # fmt: skip
    out.append(_benchmark(ctx, rng, GSM8K_PARAPHRASE, "18", "gsm8k-test-0013", None, "aops_c4_high_school_math"))
    exact = defects.get("dedup.exact", 0)
    clean = [_clean(ctx, rng) for _ in range(n_rows - len(out) - exact)]
    return out + clean
