"""A designed screen (`--design fraction`): a resolution-IV fraction of a grid space, every
arm run to its end, in a random order.

The grid's two-level axes get a regular two-level fraction of resolution IV (main effects aliased
with no two-factor interaction, two-factor interactions with each other), from the minimum-aberration
generators of Montgomery, *Design and Analysis of Experiments*, Table 8.14; the axes with three or
more levels are crossed with it in full, which keeps resolution IV: an interaction of a many-level
axis with a two-level one is aliased only with four-factor and higher ones. A grid needs four or more
two-level axes for a fraction to exist (below, the full factorial is the smallest resolution-IV
design). The ablation's 3 x 2^4 grid becomes 3 x 8 = 24 arms (D = ABC).

Each two-level axis is coded -1 for its first level and +1 for its second, in the space's order; a
generator names the base axes (A, B, C, ... in that order) whose product sets an added axis. The
arms run in an order drawn from ``--search-seed`` (recorded), so a time trend in the machine's load
does not fall on one factor.
"""
from __future__ import annotations

import itertools
import random
import string
from typing import Any, Mapping

from study.config import UserError
from sweep import vocabulary as vocab

DESIGNS = ("full", "fraction")
# Two-level axes -> the generators of the added axes (each a word of base letters), 16 runs at most.
GENERATORS: dict[int, list[str]] = {4: ["ABC"], 5: ["ABCD"], 6: ["ABC", "BCD"], 7: ["ABC", "BCD", "ACD"],
                                    8: ["BCD", "ACD", "ABC", "ABD"]}


def fraction(params: Mapping[str, Any], seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the fraction's arms in their run order, the design's record for sweep.json): see the module
    docstring. A grid whose two-level axes cannot carry a resolution-IV fraction is a UserError."""
    axes = {k: v for k, v in vocab.grid_axes(params).items() if k != "seed"}
    binary = [k for k, levels in axes.items() if len(levels) == 2]
    many = [k for k, levels in axes.items() if len(levels) > 2]
    if len(binary) not in GENERATORS:
        raise UserError(f"--design fraction needs 4 to 8 two-level grid axes for a resolution-IV fraction; "
                        f"this grid has {len(binary)} ({', '.join(binary) or 'none'}): run the full grid")
    words = GENERATORS[len(binary)]
    base = binary[:len(binary) - len(words)]
    letters = dict(zip(string.ascii_uppercase, base))
    rows = []
    for signs in itertools.product((-1, 1), repeat=len(base)):
        coded = dict(zip(base, signs))
        for axis, word in zip(binary[len(base):], words):
            product = 1
            for letter in word:
                product *= coded[letters[letter]]
            coded[axis] = product
        rows.append({axis: axes[axis][0 if coded[axis] < 0 else 1] for axis in binary})
    arms = [{**dict(zip(many, combo)), **row} for combo in itertools.product(*(axes[k] for k in many)) for row in rows]
    arms = [{k: arm[k] for k in axes} for arm in arms]  # the space's axis order
    random.Random(seed).shuffle(arms)
    names = {axis: string.ascii_uppercase[i] for i, axis in enumerate(binary)}
    added = [names[axis] for axis in binary[len(base):]]
    record = {"design": "fraction", "resolution": 4, "arms": len(arms), "full_arms": len(vocab.grid_arms(params)),
              "two_level_axes": {names[a]: a for a in binary}, "crossed_in_full": many,
              "generators": [f"{names[axis]} = {word}" for axis, word in zip(binary[len(base):], words)],
              "aliased_two_factor_interactions": alias_chains(added, words, names), "order_seed": seed}
    return arms, record


def defining_relation(added: list[str], words: list[str]) -> set[frozenset[str]]:
    """Every word of the fraction's defining relation: each generator word times its added letter
    (D = ABC gives I = ABCD), and all their products (letters that appear twice cancel)."""
    first = [frozenset(word) ^ {letter} for letter, word in zip(added, words)]
    out = set()
    for k in range(1, len(first) + 1):
        for combo in itertools.combinations(first, k):
            word = frozenset()
            for w in combo:
                word ^= w
            out.add(word)
    return out


def alias_chains(added: list[str], words: list[str], names: dict[str, str]) -> list[str]:
    """The two-level axes' two-factor interactions that the fraction aliases with each other, one
    chain per line ('residual×dsconv = activation×recipe'); an interaction aliased with none is left
    out (it is estimable, assuming three-factor and higher interactions are 0)."""
    axis_of = {letter: axis for axis, letter in names.items()}
    relation = defining_relation(added, words)
    seen, chains = set(), []
    for pair in itertools.combinations(sorted(axis_of), 2):
        if frozenset(pair) in seen:
            continue
        chain = [frozenset(pair)] + sorted((frozenset(pair) ^ w for w in relation if len(frozenset(pair) ^ w) == 2),
                                           key=sorted)
        seen.update(chain)
        if len(chain) > 1:
            chains.append(" = ".join("×".join(axis_of[x] for x in sorted(c)) for c in chain))
    return chains
