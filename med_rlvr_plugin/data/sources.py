"""The dataset registry: where each dataset keeps its question, options, answer and id.

As in lm-evaluation-harness, what differs per dataset is data, a field mapping (`Source`), not code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """Where one dataset keeps each part of a question. Field names may be dotted paths into nested rows.

    options: one field holding a list or a letter-keyed dict, or one field per option (MedMCQA's opa..opd).
    The gold answer comes from a letter, an index (counted from `answer_index_base`), a text equal to one
    option, or several of these, which must then agree.
    """

    datasource: str  # OpenRLHF groups evaluation metrics by this value
    hub_path: str
    hub_config: str | None
    default_split: str
    question: str
    options: tuple[str, ...] = ()
    fixed_options: tuple[str, ...] = ()  # the same options for every row (PubMedQA's yes/no/maybe)
    answer_letter: str | None = None
    answer_index: str | None = None
    answer_index_base: int | None = None  # None: decided per run from evidence or --cop-base (MedMCQA)
    answer_text: str | None = None
    explanation: str | None = None  # free text that may state the answer: evidence for the index convention
    context: str | None = None  # passages shown before the question (PubMedQA's abstract)
    context_labels: str | None = None
    id: str | None = None  # without one, a row's id is a hash of its question and options
    metadata: tuple[str, ...] = ()
    category: str | None = None  # the field `--category` selects on
    # A release published as one JSON object keyed by id (PubMedQA's ori_pqal.json): its (field, path in
    # the hub layout) pairs. Such rows are rebuilt in the hub layout, the key becoming `id`.
    keyed_release: tuple[tuple[str, str], ...] = ()
    # The parts read, one after another: the hub's per-subject configs, or in a folder of the CSV release
    # the files SUBJECT_SPLIT.csv (MMLU's six medical subjects).
    subsets: tuple[str, ...] = ()
    # A CSV release without a header, one file per subject: question, the options, the answer letter
    # (MMLU's data.tar). Its rows are rebuilt in the hub layout: `question`, `choices`, `answer` (an index
    # from 0) and `subject` (from the file name).
    csv_release: bool = False


SOURCES = {
    "medqa": Source(
        datasource="medqa",
        hub_path="GBaker/MedQA-USMLE-4-options",
        hub_config=None,
        default_split="train",
        question="question",
        options=("options",),
        answer_letter="answer_idx",
        answer_text="answer",
        metadata=("meta_info",),
    ),
    "mmlu_pro": Source(
        datasource="mmlu_pro",
        hub_path="TIGER-Lab/MMLU-Pro",
        hub_config=None,
        default_split="test",
        question="question",
        options=("options",),
        answer_letter="answer",
        answer_index="answer_index",
        answer_index_base=0,
        id="question_id",
        metadata=("src", "category"),
        category="category",
    ),
    "medmcqa": Source(
        datasource="medmcqa",
        hub_path="openlifescienceai/medmcqa",
        hub_config=None,
        default_split="validation",
        question="question",
        options=("opa", "opb", "opc", "opd"),
        answer_index="cop",
        explanation="exp",
        id="id",
        metadata=("subject_name", "topic_name", "choice_type"),
    ),
    "pubmedqa": Source(
        datasource="pubmedqa",
        hub_path="qiaojin/PubMedQA",
        hub_config="pqa_labeled",
        default_split="train",
        question="question",
        fixed_options=("yes", "no", "maybe"),
        answer_text="final_decision",
        context="context.contexts",
        context_labels="context.labels",
        id="pubid",
        metadata=("context.meshes",),
        keyed_release=(
            ("QUESTION", "question"),
            ("CONTEXTS", "context.contexts"),
            ("LABELS", "context.labels"),
            ("MESHES", "context.meshes"),
            ("final_decision", "final_decision"),
            ("LONG_ANSWER", "long_answer"),
        ),
    ),
    "mmlu": Source(
        datasource="mmlu",
        hub_path="cais/mmlu",
        hub_config=None,
        default_split="test",
        question="question",
        options=("choices",),
        answer_index="answer",
        answer_index_base=0,
        metadata=("subject",),
        category="subject",
        subsets=(
            "anatomy",
            "clinical_knowledge",
            "college_biology",
            "college_medicine",
            "medical_genetics",
            "professional_medicine",
        ),
        csv_release=True,
    ),
}
