"""The built-in sample: six questions that stand in for MedQA when data/ is not prepared."""

from __future__ import annotations

import dataclasses

from med_rlvr_plugin.data import SOURCES, format_row

# The built-in sample: original USMLE-style questions written for this project (from no dataset), in
# MedQA's published row format so that the data module renders them exactly as it renders MedQA.
SAMPLE_QUESTIONS = [
    {
        "question": "A 24-year-old woman has fatigue, heat intolerance, weight loss despite a good appetite and a "
        "fine tremor. Her thyroid is diffusely enlarged and non-tender, and both eyes protrude. Antibodies "
        "against which of the following are most likely responsible?",
        "options": {
            "A": "Thyroid peroxidase",
            "B": "The TSH receptor",
            "C": "Thyroglobulin",
            "D": "The acetylcholine receptor",
        },
        "answer_idx": "B",
    },
    {
        "question": "A 58-year-old man who smokes has had crushing chest pain for 40 minutes. The ECG shows ST "
        "elevation in leads II, III and aVF. Which artery is most likely occluded?",
        "options": {"A": "Left anterior descending", "B": "Left circumflex", "C": "Right coronary", "D": "Left main"},
        "answer_idx": "C",
    },
    {
        "question": "A 7-year-old boy has puffy eyelids and cola-colored urine two weeks after a sore throat. His "
        "blood pressure is raised and his serum C3 is low. What is the most likely diagnosis?",
        "options": {
            "A": "Poststreptococcal glomerulonephritis",
            "B": "Minimal change disease",
            "C": "IgA nephropathy",
            "D": "Membranous nephropathy",
            "E": "Alport syndrome",
        },
        "answer_idx": "A",
    },
    {
        "question": "A 45-year-old woman with rheumatoid arthritis treated with weekly methotrexate develops a "
        "macrocytic anemia. Which supplement would most likely have prevented it?",
        "options": {"A": "Pyridoxine", "B": "Iron", "C": "Ascorbic acid", "D": "Folic acid"},
        "answer_idx": "D",
    },
    {
        "question": "A 67-year-old man has a resting tremor of the right hand, slow movements and cogwheel "
        "rigidity. Loss of neurons in which structure best explains these findings?",
        "options": {
            "A": "Caudate nucleus",
            "B": "Substantia nigra pars compacta",
            "C": "Cerebellar vermis",
            "D": "Nucleus basalis of Meynert",
        },
        "answer_idx": "B",
    },
    {
        "question": "A 26-year-old man is found with pinpoint pupils, 6 breaths per minute and a decreased level of "
        "consciousness. Which drug should be given first?",
        "options": {"A": "Flumazenil", "B": "Atropine", "C": "Naloxone", "D": "Physostigmine"},
        "answer_idx": "C",
    },
]


SAMPLE_SOURCE = dataclasses.replace(SOURCES["medqa"], datasource="builtin_sample", answer_text=None, metadata=())


def sample_rows(sft: bool = False) -> list[dict]:
    """The built-in sample as prompt-file rows, rendered by the data module like every prepared file."""
    return [format_row(question, SAMPLE_SOURCE, sft=sft) for question in SAMPLE_QUESTIONS]
