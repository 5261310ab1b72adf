"""The built-in sample: six questions that stand in for MedQA when data/ is not prepared.

Original USMLE-style questions written for this project (from no dataset), kept in sample.jsonl in MedQA's
published row format, one question a line, so that the data module renders them exactly as it renders MedQA.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from med_rlvr_plugin.data import SOURCES, format_row
from med_rlvr_plugin.files import read_jsonl

SAMPLE_QUESTIONS = [
    question
    for _, question in read_jsonl(
        Path(__file__).with_name("sample.jsonl"), fix="the installed package is damaged: reinstall med-rlvr"
    )
]
SAMPLE_SOURCE = dataclasses.replace(SOURCES["medqa"], datasource="builtin_sample", answer_text=None, metadata=())


def sample_rows(sft: bool = False) -> list[dict]:
    """The built-in sample as prompt-file rows, rendered by the data module like every prepared file."""
    return [format_row(question, SAMPLE_SOURCE, sft=sft) for question in SAMPLE_QUESTIONS]
