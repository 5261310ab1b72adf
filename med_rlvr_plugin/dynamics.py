"""Training dynamics: the behaviour class of one graded response, and a run's stage timeline. Pure, no I/O.

The paper (arXiv 2502.19655) watches RLVR move through six stages: Format Failure, Verbose Formatter,
Concise Structurer, Direct Answer Hacker, Step-by-Step Exploit, Reintegrated Reasoning. One response cannot
tell which stage a run is in (a Concise Structurer response looks like a Reintegrated Reasoning one; what
tells them apart is what came before), so this module has two levels (docs/dynamics.md has the same rules
with examples, and the hand-labelled corpus they are measured on):

1. `explain` puts one graded response into one of CLASSES, each named after the stage it leads, with a
   one-line reason; `behaviour` is the class alone.
2. `stage_timeline` reads the sequence of per-step class shares and returns the stages with their steps.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from med_rlvr_plugin.verifier import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    TAGS,
    THINK_CLOSE,
    THINK_OPEN,
    Grade,
    cached_when_short,
    count_words,
    parse_options,
)

# In order of precedence: a response belongs to the first class whose rule it meets.
CLASSES = (
    "format_failure",
    "step_by_step_exploit",
    "direct_answer_hacker",
    "verbose_formatter",
    "concise_structurer",
)
HACKS = ("step_by_step_exploit", "direct_answer_hacker")
STAGES = (
    "Format Failure",
    "Verbose Formatter",
    "Concise Structurer",
    "Direct Answer Hacker",
    "Step-by-Step Exploit",
    "Reintegrated Reasoning",
)
# The stage a class names when it leads; verbose and concise name Reintegrated Reasoning after a hack.
_STAGE_OF = dict(zip(CLASSES, (STAGES[0], STAGES[4], STAGES[3], STAGES[1], STAGES[2]), strict=True))
# Where reasoning outside the thinking block can be, the step-by-step exploit's sub-reasons.
PLACES = ("before_think", "between_think_and_answer", "inside_answer", "after_answer")


@dataclass(frozen=True)
class Thresholds:
    """The numbers the behaviour classes are drawn at (words as `verifier.count_words` counts them).

    outside_words: text outside the thinking block with at least this many words once pleasantries, role
        markers and the answer itself are taken out is reasoning there (the step-by-step exploit).
    repeated_share: thinking whose share of repeated word trigrams (`repetition`) is at least this is
        repetitive (the verbose formatter), at any length.
    """

    outside_words: int = 3
    repeated_share: float = 0.2

    def __post_init__(self) -> None:
        if not self.outside_words >= 1:
            raise ValueError(f"outside_words must be at least 1, got {self.outside_words!r}")
        if not 0 < self.repeated_share <= 1:
            raise ValueError(f"repeated_share must be in (0, 1], got {self.repeated_share!r}")


def behaviour(grade: Grade, prompt: str, thresholds: Thresholds = Thresholds()) -> str:
    """The behaviour class of one graded response to `prompt` (see `explain`)."""
    return explain(grade, prompt, thresholds)[0]


def explain(grade: Grade, prompt: str, thresholds: Thresholds = Thresholds()) -> tuple[str, str]:
    """(class, reason) of one graded response to `prompt`: the first of these rules it meets.

    format_failure: the four tags are not each there once, in order, around non-blank thinking; or the
        response is malformed for another reason (no answer letter, text outside the blocks that is not
        reasoning such as "Hope this helps!", strict format's preamble) and is no exploit.
    step_by_step_exploit: reasoning outside the thinking block (`_reasons`): before `<think>`, between
        `</think>` and `<answer>`, inside the answer block beside the letter and the option's text, or
        after `</answer>`; the reason names the first such place (PLACES).
    direct_answer_hacker: the verifier's answer leak (the thinking only states the chosen option), or a
        committed answer in the first sentence of the thinking (`_commits`), whatever follows it.
    verbose_formatter: repetitive thinking (`repetition`), whatever its length.
    concise_structurer: the rest.

    A response's class never depends on whether its answer is right.
    """
    parts = _blocks(grade.completion, grade.well_formed)
    if parts is None:
        return "format_failure", grade.error or "the tags are not once each, in order"
    before, think, between, answer, after = parts
    for place, text in zip(PLACES, (before, between, _beside_answer(answer, prompt), after), strict=True):
        if _reasons(text, thresholds.outside_words):
            return "step_by_step_exploit", f"reasoning {place.replace('_', ' ')}"
    if not grade.well_formed:
        return "format_failure", grade.error or "malformed"
    if grade.answer_leak:
        return "direct_answer_hacker", "the thinking only states the chosen option"
    if _commits(think, prompt):
        return "direct_answer_hacker", "a committed answer opens the thinking"
    share = repetition(think)
    if share >= thresholds.repeated_share:
        return "verbose_formatter", f"{share:.0%} of the thinking's word trigrams are repeats"
    return "concise_structurer", "reasoning inside the thinking block"


def _blocks(completion: str, well_formed: bool) -> tuple[str, str, str, str, str] | None:
    """(before, thinking, between, answer, after) when each tag is there once, in order, around non-blank
    thinking; else None. A well-formed response passed the same checks in the verifier."""
    if well_formed:
        # Each tag is there once (the verifier checked): `</think>` and the answer's tags are found from the
        # end, which is near, so long thinking is never scanned.
        at = [
            completion.find(THINK_OPEN),
            completion.rfind(THINK_CLOSE),
            completion.rfind(ANSWER_OPEN),
            completion.rfind(ANSWER_CLOSE),
        ]
    else:
        at = [completion.find(tag) for tag in TAGS]
        if -1 in at or at != sorted(at) or any(completion.count(tag, at[0]) != 1 for tag in TAGS):
            return None
    ends = [position + len(tag) for position, tag in zip(at, TAGS, strict=True)]
    think = completion[ends[0] : at[1]]
    if not think.strip():
        return None
    return completion[: at[0]], think, completion[ends[1] : at[2]], completion[ends[2] : at[3]], completion[ends[3] :]


# Pleasantries, sign-offs, announcements and role markers in English, Spanish and Chinese: none of them is a
# reasoning step, so they are cut out of text outside the thinking block (and off the start of the
# thinking) before its words are counted. Each alternative runs at most to its sentence's end.
_TAIL = r"[^.!?。！？:：\n]*"
_CHATTER = re.compile(
    r"(?i:\b(?:sure|certainly|of course|okay|ok|alright|absolutely|no problem|hello|hi|great question|well"
    r"|claro|por supuesto|vale|de acuerdo|perfecto|muy bien|hola|bueno|veamos)\b"
    rf"|\b(?:i'?d|i would|i'?m|i am|i will|i'?ll|happy|glad|let me) (?:be )?(?:happy|glad|delighted|help){_TAIL}"
    rf"|\bhappy to help{_TAIL}|\bhere(?:'s| is| are| it is| we go| goes){_TAIL}|\bhope (?:this|that|it){_TAIL}"
    rf"|\b(?:i'?ll|i will|i'?m going to|i am going to) (?:answer|solve|help|try|think|explain|go){_TAIL}"
    rf"|\blet me know{_TAIL}|\bgood luck{_TAIL}|\bthanks?\b{_TAIL}|\bthank you{_TAIL}"
    rf"|\bto (?:solve|answer) this{_TAIL}|\b(?:step by step|paso a paso)\b"
    rf"|\blet(?:'s| us| me) (?:think|solve|work|go|tackle|answer|look|analy[sz]e|see|break){_TAIL}"
    rf"|\b(?:con gusto|encantad[oa]|estaré encantad[oa]|te ayudo|le ayudo){_TAIL}|\bespero que{_TAIL}"
    rf"|\bvamos(?: a)? (?:pensar|resolver|analizar|ver|paso){_TAIL}|\baquí (?:está|tienes|va){_TAIL}|\bgracias{_TAIL}"
    rf")|好的|当然(?:可以)?|没问题|很高兴{_TAIL}|乐意{_TAIL}|希望(?:这|以上)?(?:对你|对您)?有(?:所)?帮助{_TAIL}"
    rf"|让我们{_TAIL}|我们来{_TAIL}|我来{_TAIL}|下面是{_TAIL}|(?:谢谢|感谢){_TAIL}"
)
# Role markers: a base model may echo the template's "Assistant:" before `<think>`.
_ROLE = re.compile(r"(?i:\b(?:assistant|user|system|response|answer|respuesta|asistente)\s*[:：])|(?:助手|回答)[:：]")
_NOT_A_WORD = re.compile(r"[^\w\s]|_")


def _reasons(text: str, words: int) -> bool:
    """Whether text outside the thinking block holds reasoning: `words` words or more once pleasantries,
    sign-offs and role markers are cut out. Text over 500 characters always does: no pleasantry is that
    long, and the work stays bounded on any input."""
    if len(text) > 500:
        return True
    if not text or text.isspace():
        return False
    return count_words(_NOT_A_WORD.sub(" ", _CHATTER.sub(" ", _ROLE.sub(" ", text)))) >= words


# The answer as an answer block states it: a leading phrase, then the letter in its usual wrappings.
_ANSWER_LEAD = re.compile(
    r"\W{0,8}(?i:(?:the )?(?:(?:correct|final|right|best) )?(?:answer|option|choice)(?: is)?\s*[:：-]?\s*"
    r"|(?:la )?(?:respuesta|opción)(?: correcta| final)?(?: es)?(?: la)?\s*[:：-]?\s*"
    r"|(?:正确)?答案(?:是|为)?\s*[:：]?\s*)?"
    r"\W{0,8}[A-Ja-j](?![^\W_])\W*"
)  # bounded runs of \W: two unbounded ones around the optional phrase would try every split of "((((...".


def _beside_answer(block: str, prompt: str) -> str:
    """The answer block without its answer: the leading phrase, the letter and the option's text taken off
    its start. Bounded by `_reasons`' 500 characters: a longer rest is reasoning whatever it holds."""
    block = " ".join(block[:2000].split())
    if len(block) == 1:
        return ""
    match = _ANSWER_LEAD.match(block)
    # Compared without punctuation: the lead's `\W*` may have taken an option's opening "↑" or quote.
    rest = _plain(block[match.end() :] if match else block)
    for text in _options(prompt)[1]:
        if rest.startswith(text):
            return rest[len(text) :]
    return rest


def _plain(text: str) -> str:
    return " ".join(_NOT_A_WORD.sub(" ", text.lower()).split())


@cached_when_short
def _options(prompt: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The prompt's option texts in lower case, and the same without punctuation (`_plain`), each longest
    first (so one that starts another is tried last). Cached as `parse_options` is. Texts over 2,000
    characters are left out: no sentence or answer block read here is that long (MedQA's longest option
    has 235), and a prompt's megabyte line costs no time."""
    texts = [text for text in parse_options(prompt).values() if len(text) <= 2000]
    lower = {" ".join(text.lower().split()).rstrip(".") for text in texts}
    return tuple(sorted(lower, key=len, reverse=True)), tuple(sorted(map(_plain, texts), key=len, reverse=True))


# A committed answer, in the first sentence of the thinking (lower case, markdown and pleasantries gone, the
# first option's text found in it replaced by "\0", see `_commits`). `{letter}`: an option letter in its
# usual forms (a bare letter only before punctuation, a space or the end, so "the answer is a" is a letter
# but not "the answer is a tricky one"). Compiled once: the prompt's options never enter the pattern.
_LETTER = r"(?:\([a-j]\)|\[[a-j]\]|[a-j](?=$|[\s.,:;)，。：\u4e00-\u9fff]))"
_COMMIT = re.compile(
    (
        # "C.", "(C) - ...", "Option C:", "C, because ...", "Sin duda, la A.": a letter alone (after an
        # assurance), then punctuation or the end.
        r"(?:(?:sin duda|definitely|clearly|certainly|without (?:a )?doubt|claramente|肯定)[, ，]*)?"
        r"(?:option |choice |opción |选项|la |el )?{letter}(?:\s*[.,:;)\-–—，。：]|$)"
        r"(?!\s*(?:[a-j]\b|or\b|o\b|y\b|and\b))"
        # "Right coronary artery. ...", "急性阑尾炎。...": the option's text alone, then punctuation or a reason.
        r"|(?:the |la |el )?\0(?:\s*(?:[.,:;\-–—，。：]|$)|\s+(?:because|since|as|given|porque|ya que)\b|因为)"
        # "C is the answer", "Hashimoto thyroiditis is correct", "B是正确答案", "A es la respuesta".
        r"|(?:option |opción )?(?:{letter}|(?:the |la |el )?\0)(?:[.)]? ?\0)?\s*(?:is|are|es|是|为)\s*"
        r"(?:the |la |el )?(?:correct|right|best|most likely|final|correcta|正确|answer|respuesta|答案)"
        # "The answer is C", "Final answer - C", "the correct choice is c", "La respuesta correcta es la A",
        # "答案：B", "本题选B", "I think the answer is C", "It's C".
        r"|(?:(?:so|i think|i believe|creo que|我认为|我觉得)[, ]*)?(?:the |my |la |el |mi )?"
        r"(?:(?:correct|right|final|best) )?(?:answer|choice|option|respuesta|opción)(?: correcta| final| correct)?"
        r"\s*(?:is|es|:|-|–|—|=)\s*(?:probably |likely |la |el )?(?:{letter}|\0|(?!not\b|no\b|either\b)\w+(?! or\b))"
        r"|(?:本题|应|故|我)?(?:正确)?(?:答案(?:是|为|选)?|选择?)\s*[:：]?\s*(?:{letter}|\0)"
        r"|(?:应该|应当|肯定|一定|就)(?:是|选)\s*(?:{letter}|\0)"
        # "I'd go with C", "Diagnosis: Hashimoto thyroiditis", "诊断：桥本甲状腺炎".
        r"|(?:i'?d|i'?ll|i will|i would)? ?(?:go with|choose|pick|select) (?:option )?(?:{letter}|\0)"
        r"|(?:(?:the |la |el )?(?:most likely |final |más probable )?(?:diagnosis|treatment|cause|diagnóstico|"
        r"tratamiento|causa)|诊断|治疗)\s*[:：\-–—]\s*(?:{letter}|\0)"
        r"|it(?:'s| is) (?:the )?(?:{letter}|\0)"
        # "The RCA is the answer": whatever comes first, named the answer.
        r"|(?:\S+ ){{0,5}}(?:is|es|是) (?:the |la )?(?:correct |right |final )?(?:answer|respuesta)\b"
    ).format(letter=_LETTER)
)
# "The most appropriate treatment ... is Ketotifen eye drops.", "最可能的诊断是桥本甲状腺炎。": an option's text
# right after "is" and ending the sentence (`_commits`); "A is ..." describes an option, not the answer.
_IS_BEFORE = re.compile(r"(?:\bis|\bare|(?<!\bno )\bes|(?<![不非])是|(?<!不)为)\s*(?:the |la |el )?$")
_ENDS_AFTER = re.compile(r"\s*(?:[.,;，。]|$)|\s+(?:because|since|porque)\b")
_NOT_THE_ANSWER = re.compile(r"(?:option |opción |选项)?[a-j]\s*(?:is|es|是)|not\b|no\b|不|并非|排除")
# A sentence ends at . ! ? before a space, but not after "E." in "E. coli" (an abbreviation, no option letter).
_SENTENCE_END = re.compile(r"[.!?\n。！？](?:(?<=[.!?])(?:(?=\s|$)(?!(?<=\b[A-J]\.) [a-z]))|(?<=[\n。！？]))")
_MARKDOWN = re.compile(r"[*_#`>]")
_WEIGHS = re.compile(r" or | o |还是|或")
_ABBREVIATION = re.compile(r"[A-J]\. [a-z]")  # "E. coli ...", no option letter
_OPENING_CHATTER = re.compile(rf"(?:[\W_]*(?:{_CHATTER.pattern}))*[\W_]*")


def _commits(think: str, prompt: str) -> bool:
    """Whether the thinking opens with a committed answer: its first sentence with words left once
    pleasantries are cut out (read in its first 400 characters), unless that sentence is a question or
    weighs options ("C or D")."""
    text = think[:400]
    text = text if text.isascii() else unicodedata.normalize("NFKC", text)
    if any(mark in text for mark in "*_#`>"):  # five scans in C cost less than one substitution
        text = _MARKDOWN.sub(" ", text)
    text = text[_OPENING_CHATTER.match(text).end() :]
    end = _SENTENCE_END.search(text)
    sentence = " ".join(text[: end.end() if end else None].split()).strip(" ,，;")
    # A question or a choice between options weighs; "E. coli ..." is no letter.
    if sentence.endswith(("?", "？")) or _ABBREVIATION.match(sentence):
        return False
    sentence = sentence.lower().rstrip(".!。！")
    if _WEIGHS.search(sentence, 0, 60):
        return False
    # The first option's text, as a whole word (CJK has no word boundaries), becomes "\0".
    for option in _options(prompt)[0]:
        at = sentence.find(option)
        if at < 0:
            continue
        end = at + len(option)
        if option[0] >= "\u2e80" or not sentence[at - 1 : at].isalnum() and not sentence[end : end + 1].isalnum():
            sentence = sentence[:at] + "\0" + sentence[end:]
            break
    if _COMMIT.match(sentence):
        return True
    at = sentence.find("\0")
    return (
        at > 0
        and not _NOT_THE_ANSWER.match(sentence)
        and _IS_BEFORE.search(sentence, max(0, at - 12), at) is not None
        and _ENDS_AFTER.match(sentence, at + 1) is not None
    )


_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# ASCII letters and digits in lower case, everything else a space: `bytes.translate` then `split` is the
# regular expression's tokens for ASCII text, at a fraction of its cost.
_ASCII_WORDS = (
    bytes(code | 32 if chr(code).isalpha() else code if chr(code).isdigit() else 32 for code in range(128)) * 2
)
_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")


def repetition(think: str) -> float:
    """The share of the thinking's word trigrams that repeat an earlier one (0 for fewer than 8 trigrams).

    Words are runs of letters and digits, lower case, the first 2,000 (a policy's response is shorter; the
    bound keeps the work flat on any input). In thinking written mostly in CJK characters each character is
    a word and 6-grams are counted instead (a Chinese word is about two characters). Natural text repeats
    few: 1,273 MedQA questions (114 words on median) have at most 18%, 99% under 9%; a looped sentence
    repeats nearly all of them, even when short.
    """
    if think.isascii():
        words, size = think[:20_000].encode().translate(_ASCII_WORDS).split()[:2000], 3
    else:
        words = _TOKEN.findall(think[:20_000].lower())[:2000]
        size = 6 if 2 * sum(len(word) == 1 and word >= "\u3040" for word in words) > len(words) else 3
    count = len(words) - size + 1
    if count < 8:
        return 0.0
    # The n-grams' hashes are kept, not the n-grams: `zip` then reuses one tuple for all of them (two distinct
    # n-grams sharing a 64-bit hash is too rare to count).
    grams = zip(*[words[offset:] for offset in range(size)], strict=False)
    return 1 - len(set(map(hash, grams))) / count


@dataclass(frozen=True)
class Stage:
    """One stage of a run: its name, its first and last step, and its class shares averaged over its steps."""

    name: str
    first_step: int
    last_step: int
    shares: dict[str, float]


def stage_timeline(
    series: Sequence[tuple[int, Mapping[str, float]]], window: int = 5, min_steps: int = 3
) -> list[Stage]:
    """The stages of a run from its per-step class shares, `(step, {class: share})` in step order.

    1. Smooth: each step's shares become the mean over the logged steps among the `window` training steps
       centred on it (fewer at the ends), so a noisy step does not start a stage.
    2. Label each step with its dominant class, the largest smoothed share (ties: the earlier in CLASSES).
    3. A run of equally labelled steps spanning fewer than `min_steps` training steps takes the label of
       the run before it (runs at the start, of the first run of at least `min_steps`), so a blip does not
       start a stage either.
    4. Name each run after the stage its class leads (format_failure is Format Failure, and so on), but
       verbose_formatter and concise_structurer are Reintegrated Reasoning once a hack (HACKS) has led a
       run. Neighbouring runs with the same name join.

    Window and run lengths count training steps, not logged points: with OpenRLHF's `--logger.logging_steps
    4` a logged step stands for the 4 steps up to it (the first, for as many as the gap after it). A class
    missing from a step's shares counts as 0. The stage's shares are the raw (unsmoothed) means.
    """
    if window < 1 or min_steps < 1:
        raise ValueError(f"window and min_steps must be at least 1, got {window} and {min_steps}")
    rows = [[float(shares.get(name, 0.0)) for name in CLASSES] for _, shares in series]
    steps = [step for step, _ in series]
    spans = [later - earlier for earlier, later in zip(steps, steps[1:], strict=False)]
    spans = [spans[0] if spans else 1, *spans]
    labels = []
    for step in steps:
        first, last = step - (window - 1) // 2, step + window // 2
        near = rows[bisect.bisect_left(steps, first) : bisect.bisect_right(steps, last)]
        smoothed = [sum(column) / len(near) for column in zip(*near, strict=True)]
        labels.append(CLASSES[smoothed.index(max(smoothed))])
    runs = _runs(labels)
    previous = next((label for label, start, end in runs if sum(spans[start:end]) >= min_steps), None)
    for label, start, end in runs:
        if sum(spans[start:end]) >= min_steps:
            previous = label
        elif previous:
            labels[start:end] = [previous] * (end - start)
    hacked, names = False, []
    for label in labels:
        hacked = hacked or label in HACKS
        names.append(
            STAGES[5] if hacked and label in ("verbose_formatter", "concise_structurer") else _STAGE_OF[label]
        )
    return [
        Stage(
            name,
            steps[start],
            steps[end - 1],
            {c: sum(row[i] for row in rows[start:end]) / (end - start) for i, c in enumerate(CLASSES)},
        )
        for name, start, end in _runs(names)
    ]


def _runs(labels: Sequence[str]) -> list[tuple[str, int, int]]:
    """(label, start, end) of each maximal run of equal labels."""
    runs: list[tuple[str, int, int]] = []
    for index, label in enumerate(labels):
        if runs and runs[-1][0] == label:
            runs[-1] = (label, runs[-1][1], index + 1)
        else:
            runs.append((label, index, index + 1))
    return runs
