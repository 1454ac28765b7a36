"""Competitive-programming problems for the code rows: statement, formats, a working solution.

Each solution reads stdin and writes stdout; `make_input(rng)` draws a sample test so every
restored statement carries its own example. Solutions are this package's own code (not dataset
text), so running them in-process at generation time to compute the example output is safe.
"""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    title: str
    statement: str
    input_format: str
    output_format: str
    make_input: Callable[[random.Random], str]
    solution: str
    idea: str


def run_solution(code: str, stdin: str) -> str:
    """Run one of the bundled solutions on `stdin` and return its stdout.

    >>> run_solution("print(int(input()) * 2)", "21\\n")
    '42\\n'
    """
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fake = io.StringIO(stdin)
        exec(code, {"__name__": "__main__", "input": fake.readline, "__builtins__": __builtins__,
                    "open": None, "_stdin": fake})  # fmt: skip
    return out.getvalue()


def _ints(rng: random.Random, n: int, lo: int, hi: int) -> str:
    return " ".join(str(rng.randint(lo, hi)) for _ in range(n))


def _array(lo: int, hi: int) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        n = rng.randint(4, 9)
        return f"{n}\n{_ints(rng, n, lo, hi)}\n"

    return make


_NUMS_IN = "The first line contains an integer n. The second line contains n integers a_1, ..., a_n."

PROBLEMS = (
    Problem("Total Weight", "Given n integers, print their sum.", _NUMS_IN, "Print one integer: the sum.",
            _array(-1000, 1000),
            "n = int(input())\nvalues = list(map(int, input().split()))\nprint(sum(values[:n]))\n",
            "Read the numbers and add them up; Python integers do not overflow."),
    Problem("Best Stretch", "Find the largest possible sum of a non-empty contiguous segment of the array.",
            _NUMS_IN, "Print the maximum segment sum.", _array(-50, 50),
            "n = int(input())\nvalues = list(map(int, input().split()))\nbest = current = values[0]\n"
            "for v in values[1:]:\n    current = max(v, current + v)\n    best = max(best, current)\nprint(best)\n",
            "Kadane's algorithm keeps the best sum ending at each position."),
    Problem("Vowel Count", "Count the vowels (a, e, i, o, u) in a lowercase word.",
            "One line with a word of lowercase letters.", "Print the number of vowels.",
            lambda rng: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(5, 14))) + "\n",
            "word = input().strip()\nprint(sum(1 for ch in word if ch in 'aeiou'))\n",
            "Scan the word once and count letters from the vowel set."),
    Problem("Mirror Word", "Decide whether a word reads the same forwards and backwards.",
            "One line with a lowercase word.", "Print YES if it is a palindrome and NO otherwise.",
            lambda rng: rng.choice(["level", "rotor", "stats", "banana", "kayak", "planet", "refer", "orbit"]) + "\n",
            "word = input().strip()\nprint('YES' if word == word[::-1] else 'NO')\n",
            "Compare the word with its reverse."),
    Problem("Common Step", "Find the greatest common divisor of all n numbers.", _NUMS_IN,
            "Print the greatest common divisor.", _array(2, 600),
            "import math\nfrom functools import reduce\n\nn = int(input())\nvalues = list(map(int, input().split()))\n"
            "print(reduce(math.gcd, values[:n]))\n",
            "Fold math.gcd over the list."),
    Problem("Rabbit Generations", "Print the n-th Fibonacci number modulo 1000000007, with F(1) = F(2) = 1.",
            "One integer n.", "Print F(n) modulo 1000000007.", lambda rng: f"{rng.randint(3, 90)}\n",
            "MOD = 10**9 + 7\nn = int(input())\na, b = 1, 1\nfor _ in range(n - 1):\n    a, b = b, (a + b) % MOD\nprint(a)\n",
            "Iterate the recurrence keeping only the last two values."),
    Problem("Distinct Stamps", "Count how many different values appear in the array.", _NUMS_IN,
            "Print the number of distinct values.", _array(1, 6),
            "n = int(input())\nprint(len(set(input().split()[:n])))\n",
            "A set keeps each value once."),
    Problem("Pair Target", "Decide whether two different positions hold values that add up to t.",
            "The first line contains n and t. The second line contains n integers.",
            "Print YES if such a pair exists, otherwise NO.",
            lambda rng: f"6 {rng.randint(5, 40)}\n{_ints(rng, 6, 1, 25)}\n",
            "n, t = map(int, input().split())\nseen = set()\nfound = False\nfor v in map(int, input().split()):\n"
            "    if t - v in seen:\n        found = True\n    seen.add(v)\nprint('YES' if found else 'NO')\n",
            "Remember the values seen so far and look up the complement."),
    Problem("Rising Path", "Find the length of the longest strictly increasing subsequence.", _NUMS_IN,
            "Print the length.", _array(1, 30),
            "import bisect\n\nn = int(input())\ntails = []\nfor v in map(int, input().split()):\n"
            "    i = bisect.bisect_left(tails, v)\n    if i == len(tails):\n        tails.append(v)\n    else:\n"
            "        tails[i] = v\nprint(len(tails))\n",
            "Patience sorting with binary search gives O(n log n)."),
    Problem("Prime Lanterns", "Count the prime numbers that do not exceed n.", "One integer n (2 <= n <= 10^6).",
            "Print the count of primes up to n.", lambda rng: f"{rng.randint(10, 5000)}\n",
            "n = int(input())\nsieve = bytearray([1]) * (n + 1)\nsieve[0] = sieve[1] = 0\ni = 2\nwhile i * i <= n:\n"
            "    if sieve[i]:\n        sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))\n    i += 1\nprint(sum(sieve))\n",
            "The sieve of Eratosthenes marks composites in place."),
    Problem("Exact Change", "Using unlimited coins of the given values, pay exactly s with as few coins as "
            "possible, or report -1.", "The first line contains k and s. The second line contains k coin values.",
            "Print the minimum number of coins or -1.",
            lambda rng: f"3 {rng.randint(7, 60)}\n{_ints(rng, 3, 2, 12)}\n",
            "k, s = map(int, input().split())\ncoins = list(map(int, input().split()))\nINF = float('inf')\n"
            "best = [0] + [INF] * s\nfor total in range(1, s + 1):\n    for c in coins:\n"
            "        if c <= total and best[total - c] + 1 < best[total]:\n            best[total] = best[total - c] + 1\n"
            "print(best[s] if best[s] != INF else -1)\n",
            "Dynamic programming over the amount."),
    Problem("Bracket Garden", "Check whether a string of brackets ()[]{} is balanced.",
            "One line with the bracket string.", "Print YES if balanced, otherwise NO.",
            lambda rng: rng.choice(["([]{})", "(([)])", "{[()()]}", "((()", "[]{}()", "{{[[(())]]}}"]) + "\n",
            "pairs = {')': '(', ']': '[', '}': '{'}\nstack = []\nok = True\nfor ch in input().strip():\n"
            "    if ch in '([{':\n        stack.append(ch)\n    elif not stack or stack.pop() != pairs[ch]:\n"
            "        ok = False\n        break\nprint('YES' if ok and not stack else 'NO')\n",
            "A stack matches each closing bracket with the latest opening one."),
    Problem("Backwards Speech", "Reverse the order of the words in a sentence.", "One line of words.",
            "Print the words in reverse order separated by single spaces.",
            lambda rng: " ".join(rng.choice(["river", "stone", "lamp", "cloud", "ember", "field"]) for _ in range(5)) + "\n",
            "print(' '.join(reversed(input().split())))\n",
            "Split on whitespace, reverse, join."),
    Problem("Inversion Audit", "Count the pairs i < j with a_i > a_j.", _NUMS_IN, "Print the number of inversions.",
            _array(1, 40),
            "def count(values):\n    if len(values) < 2:\n        return values, 0\n    mid = len(values) // 2\n"
            "    left, a = count(values[:mid])\n    right, b = count(values[mid:])\n    merged, inv, i, j = [], a + b, 0, 0\n"
            "    while i < len(left) and j < len(right):\n        if left[i] <= right[j]:\n            merged.append(left[i])\n"
            "            i += 1\n        else:\n            merged.append(right[j])\n            inv += len(left) - i\n"
            "            j += 1\n    merged += left[i:] + right[j:]\n    return merged, inv\n\n\n"
            "n = int(input())\nprint(count(list(map(int, input().split())))[1])\n",
            "Merge sort counts the inversions while merging."),
)  # fmt: skip
