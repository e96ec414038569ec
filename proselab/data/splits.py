"""Seeded, stratified splits: each label's rows are shuffled by their own seeded generator and
cut by the split fractions, so every split keeps the label mix and the same seed always gives
the same split (Python's ``random.Random`` seeded with a string is stable across versions and
machines, unlike a library's shuffle, which may change between releases)."""

from __future__ import annotations

import random
from collections import defaultdict


def stratified_split(labels: list[str], fractions: tuple[float, ...], seed: str) -> list[list[int]]:
    """Row indices of each split, in file order.

    Args:
        labels: the label of each row.
        fractions: the share of each split after the first (e.g. ``(0.1, 0.1)`` for val and
            test); the first split takes the rest. Each label's count in a split is rounded.
        seed: any string; the same seed and labels give the same split.

    Returns:
        ``len(fractions) + 1`` lists of row indices, the first the rest (train).
    """
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    splits: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for label, rows in sorted(by_label.items()):
        random.Random(f"{seed}:{label}").shuffle(rows)
        at = 0
        for k, fraction in enumerate(fractions, start=1):
            n = min(round(len(rows) * fraction), len(rows) - at - 1)  # one row of each label stays in the first
            splits[k] += rows[at : at + max(n, 0)]
            at += max(n, 0)
        splits[0] += rows[at:]
    return [sorted(split) for split in splits]
