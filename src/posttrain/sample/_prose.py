"""Varied filler prose for the bundled sample, drawn from a seeded `random.Random`.

Sentences are assembled from word banks so that no two clean rows share long word n-grams by
accident: near-duplicate detection on the sample must only find the planted pairs. The text is
deliberately free of digits runs, e-mail addresses, model names and `<think>` tags, so it can
never trip a privacy, identity or reasoning check.

>>> import random
>>> s = sentence(random.Random(1))
>>> s[0].isupper() and s.endswith(".")
True
"""

from __future__ import annotations

import random

NOUNS = (
    "river lantern harbor meadow engine ledger orchard bridge compass garden signal kettle market "
    "violin glacier canyon workshop archive tunnel beacon pasture quarry chapel mill ferry carriage "
    "notebook telescope harvest festival village vineyard library courtyard balcony staircase window "
    "mountain island forest valley desert prairie marsh lagoon volcano cliff shore reef estuary "
    "algorithm dataset circuit sensor battery network protocol compiler kernel database cache "
    "theorem lemma proof sequence polygon matrix vector integral function parameter variable "
    "recipe bakery spice orchestra painting sculpture novel poem sketch mural tapestry pottery "
    "bicycle tractor sailboat airship locomotive scooter wagon canoe glider kayak "
    "teacher farmer sailor baker carpenter gardener engineer scientist traveler merchant pilot "
    "committee council neighbor family student apprentice captain librarian curator cartographer "
    "morning evening winter summer autumn season decade century afternoon twilight "
    "budget invoice schedule deadline meeting proposal contract report survey interview"
).split()

ADJECTIVES = (
    "quiet bright ancient sturdy narrow gentle curious hidden golden silver rusty crowded empty "
    "distant humble vivid careful patient restless fragile hollow crisp dusty elegant fierce "
    "frozen generous heavy honest lively lonely modest muddy noble pale polished proud rapid "
    "rough shallow sharp silent slender smooth steep stubborn subtle tender tidy vast warm weary "
    "wild wooden young clever anxious brave calm cheerful clumsy eager faithful graceful jolly"
).split()

VERBS = (
    "gathers carries follows measures repairs guards builds paints shelters crosses records "
    "explores collects balances compares sketches borrows delivers polishes arranges inspects "
    "studies watches tracks lifts shapes trims sorts weaves plants harvests visits greets "
    "questions describes signals supports connects protects reveals hides replaces"
).split()

ADVERBS = (
    "slowly quietly carefully eagerly rarely gently briefly patiently suddenly steadily "
    "proudly calmly boldly warmly loosely neatly firmly softly swiftly openly"
).split()

PLACES = (
    "near the harbor|beside the old mill|across the valley|under the stone bridge|behind the library|"
    "along the northern shore|inside the workshop|at the edge of the forest|on the top floor|"
    "past the village square|through the narrow tunnel|around the busy market|over the frozen lake|"
    "below the chapel tower|between the two orchards|next to the quiet canal"
).split("|")

NAMES = (
    "Amara Bastian Celine Dmitri Elif Farid Greta Hiro Ines Jonas Keiko Lars Mireille Nadia Omar "
    "Priya Quentin Rosa Soren Tamsin Ugo Valeria Wendell Ximena Yusuf Zofia Anders Bianca Cyrus "
    "Delphine Emeka Freya Gideon Hana Idris Juno Kofi Leona Matteo Noor Osric Paloma Rafael Saoirse"
).split()

_TEMPLATES = (
    "The {adj} {noun} {verb} the {adj2} {noun2} {place}.",
    "{name} {verb} the {adj} {noun} {adv} every {noun3}.",
    "Every {adj} {noun} {verb} its own {noun2} {place}.",
    "The {adj} {noun} rarely {verb} the {noun2} without the {adj2} {noun3}.",
    "When the {noun} {verb} the {noun2}, the {adj} {noun3} {verb2} {adv}.",
    "{name} and {name2} {adv} discuss the {adj} {noun} {place}.",
    "Some say the {noun} {verb} more {noun2}s than the {adj} {noun3} ever did.",
    "It is the {adj} {noun}, not the {noun2}, that {verb} the {noun3}.",
    "Nobody expected the {adj} {noun} to {verb_base} the {noun2} {place}.",
    "{name} kept the {adj} {noun} that {verb} the {adj2} {noun2}.",
)


def _base(verb: str) -> str:
    """Third-person verb to its base form (the word banks only use regular -s/-es forms).

    >>> _base("carries"), _base("watches"), _base("gathers")
    ('carry', 'watch', 'gather')
    """
    if verb.endswith("ies"):
        return verb[:-3] + "y"
    if verb.endswith(("ches", "shes", "sses", "xes")):
        return verb[:-2]
    return verb[:-1]


def sentence(rng: random.Random) -> str:
    """One random sentence from the word banks."""
    verb = rng.choice(VERBS)
    text = rng.choice(_TEMPLATES).format(
        adj=rng.choice(ADJECTIVES),
        adj2=rng.choice(ADJECTIVES),
        noun=rng.choice(NOUNS),
        noun2=rng.choice(NOUNS),
        noun3=rng.choice(NOUNS),
        verb=verb,
        verb2=rng.choice(VERBS),
        verb_base=_base(verb),
        adv=rng.choice(ADVERBS),
        place=rng.choice(PLACES),
        name=rng.choice(NAMES),
        name2=rng.choice(NAMES),
    )
    return text[0].upper() + text[1:]


def paragraph(rng: random.Random, n_min: int = 3, n_max: int = 6) -> str:
    """A paragraph of `n_min`..`n_max` random sentences."""
    return " ".join(sentence(rng) for _ in range(rng.randint(n_min, n_max)))


def words(text: str) -> list[str]:
    """Lower-case word tokens, the unit near-duplicate detection shingles on.

    >>> words("The Quiet river, gathers!")
    ['the', 'quiet', 'river', 'gathers']
    """
    return "".join(c.lower() if c.isalnum() else " " for c in text).split()


_MUSINGS = (
    "Hmm, let me re-read the question to be sure about what is asked.",
    "Wait, I should double-check that step before moving on.",
    "Okay, that seems consistent so far.",
    "Let me think about whether there is a simpler way to see this.",
    "Actually, let me verify this another way.",
    "So far so good, but I want to make sure nothing is missing.",
    "Alternatively, I could approach it from the other direction.",
    "That matches what I expected, so I can continue.",
)


def musing(rng: random.Random) -> str:
    """A short thinking-aloud line, followed by a random sentence so traces stay distinct."""
    return f"{rng.choice(_MUSINGS)} {sentence(rng)}"


def trace(rng: random.Random, steps: list[str], long: bool = False) -> str:
    """A reasoning trace: the given steps interleaved with musings; `long` pads it to a few KB."""
    parts: list[str] = []
    for step in steps:
        parts.append(step)
        if rng.random() < 0.6:
            parts.append(musing(rng))
    if long:
        for _ in range(rng.randint(12, 30)):
            parts.append(musing(rng) if rng.random() < 0.5 else paragraph(rng, 2, 4))
        parts.append("Going back over every step once more, the result holds.")
    return "\n\n".join(parts)


def think(trace_text: str, answer: str) -> str:
    """A reasoning-on response: `<think>` trace `</think>` then the answer.

    >>> think("t", "a")
    '<think>\\nt\\n</think>\\n\\na'
    """
    return f"<think>\n{trace_text}\n</think>\n\n{answer}"


#: A reasoning-off response with an empty trace, as the Nemotron template's off-mode prompt writes it.
EMPTY_THINK = "<think>\n\n</think>\n\n"
