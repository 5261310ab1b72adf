"""MedMCQA's answer numbering: whether `cop` counts from 0 (the hub copy) or 1 (the original release).

Never guessed: a wrong guess would mislabel every row. Evidence is a row only one convention can read
(cop 0: from 0; cop 4: from 1) and a row whose explanation states the letter that one convention gives.
Without --cop-base, the convention is the one the evidence points to, shown by at least
MIN_CONVENTION_EVIDENCE rows. The convention used (inferred, --cop-base, or the hub copy's own) must not be
contradicted: a row it cannot read, or explanations siding as often with the other, stops the run, because
the rows it would mislabel are a whole release or corrupt, and skipping rows cannot fix that. Single
explanations that disagree are reported: some of MedMCQA's explanations are wrong.
"""

from __future__ import annotations

import re

from med_rlvr_plugin.data.formatting import DataError, examples
from med_rlvr_plugin.data.sources import Source
from med_rlvr_plugin.prompts import LETTERS

# Rows that must show an index convention before it is taken from the file: one corrupt row must not
# decide a whole file. A real file of thousands of rows has hundreds; a small one may need --cop-base.
MIN_CONVENTION_EVIDENCE = 3


# MedMCQA explanations often open by stating the answer: "Ans. is 'a' i.e., Ureter", "Ans: (c)", "Answer- B.".
# The letter must be set off by quotes, brackets or punctuation, so "Ans is a rare ..." states nothing.
STATED_ANSWER = re.compile(
    r"\s*(?:the\s+)?(?:correct\s+)?ans(?:wer)?\b[\s.:\-\u2013\u2014]*(?:is\b[\s:\-\u2013\u2014]*)?"
    r"[(\['\"\u2018\u2019\u201c\u201d]?\s*([a-j])\s*(?=[)\]'\"\u2018\u2019\u201c\u201d.:,;\-\u2013\u2014]|i\.?e\b|$)",
    re.IGNORECASE,
)


def stated_letter(explanation: object) -> str | None:
    """The answer letter an explanation opens by stating (upper case), or None when it states none."""
    match = STATED_ANSWER.match(explanation) if isinstance(explanation, str) else None
    return match[1].upper() if match else None


def _evidence(rows: list[tuple[str, dict]], source: Source) -> tuple[dict, dict, list, str]:
    """What the rows show of each convention (0, 1): the rows only it can read, the rows whose explanation
    agrees with it; every stated letter as (location, index, letter); and the evidence in words, for
    messages and the summary."""
    field, count = source.answer_index, len(source.options)
    only = {0: [], 1: []}  # rows only this convention can read
    agree = {0: [], 1: []}  # rows whose explanation names the letter this convention gives
    stated = []
    for location, row in rows:
        value = row.get(field)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        if value in (0, count):
            only[int(value == count)].append(location)
        letter = stated_letter(row.get(source.explanation)) if source.explanation else None
        if letter:
            stated.append((location, value, letter))
            for base in (0, 1):
                if 0 <= value - base < count and LETTERS[value - base] == letter:
                    agree[base].append(location)
    evidence = "; ".join(
        f"counting from {base}: {field} {0 if base == 0 else count} in {len(only[base])} rows"
        + (f" ({examples(only[base])})" if only[base] else "")
        + f", explanations agree in {len(agree[base])}"
        + (f" ({examples(agree[base])})" if agree[base] else "")
        for base in (0, 1)
    )
    return only, agree, stated, evidence


def answer_index_convention(
    rows: list[tuple[str, dict]], source: Source, cop_base: int | None, where: str, from_hub: bool
) -> tuple[int, dict]:
    """Where `cop` counts from (`cop_base`, the hub copy's 0, or the evidence), or a DataError when the rows
    contradict it or show too little; with the summary's report of the evidence (module docstring)."""
    field, count = source.answer_index, len(source.options)
    only, agree, stated, evidence = _evidence(rows, source)
    support = {base: list(dict.fromkeys(only[base] + agree[base])) for base in (0, 1)}  # rows, each once
    if cop_base is not None:
        base, why = cop_base, f"--cop-base {cop_base}"
    elif from_hub:
        base, why = 0, "the hub copy's documented convention (from 0)"
    else:
        base, why = max((0, 1), key=lambda side: len(support[side])), "the evidence"
    other = 1 - base
    if only[other] or (agree[other] and len(agree[other]) >= len(agree[base])):
        opening = (
            f"{where}: the rows disagree on whether {field} counts from 0 or from 1; the file mixes 0-based and "
            "1-based rows, or some are corrupt"
            if why == "the evidence"
            else f"{why} contradicts {where}"
        )
        advice = (
            f"The rows show counting from {other}: pass --cop-base {other}, or no --cop-base"
            if cop_base is not None and not support[base]
            else "Fix or remove the rows that do not fit, or prepare each release separately; skipping rows or "
            "a flag cannot fix this, as the rows read the other way would get wrong letters"
        )
        raise DataError(f"{opening} ({evidence}). {advice}")
    if why == "the evidence" and len(support[base]) < MIN_CONVENTION_EVIDENCE:
        raise DataError(
            f"{where}: cannot tell whether {field} counts from 0 (the hub copy) or from 1 (the original release) "
            f"({evidence}); at least {MIN_CONVENTION_EVIDENCE} rows must show it, so that one corrupt row cannot "
            "decide the file. Pass --cop-base 0 or --cop-base 1"
        )
    disagreements = [
        {"location": location, "label": LETTERS[value - base], "explanation_says": letter}
        for location, value, letter in stated
        if 0 <= value - base < count and LETTERS[value - base] != letter
    ]
    report = {
        f"{field}_convention": f"counted from {base}: {why} ({evidence})",
        f"{field}_evidence": {
            f"from_{side}": {
                "rows": len(support[side]),
                f"{field}_only_readable": len(only[side]),
                "explanations_agree": len(agree[side]),
            }
            for side in (0, 1)
        },
        f"{field}_explanation_disagreements": len(disagreements),
        f"{field}_explanation_disagreement_rows": disagreements,
    }
    return base, report
