"""The Med-RLVR grading rule for multiple-choice responses: pure Python, no torch, no I/O.

Every adapter (the OpenRLHF reward file, evaluation, analysis, servers) calls `grade_response`, so the
rule lives here once. The rule, step by step (docs/verifier.md has the same text with examples):

1. Completion: the response is the query with the prompt removed from its front (also when OpenRLHF
   truncated the prompt from the left, to any length: the longest suffix of the prompt the query starts
   with), trailing special tokens and whitespace removed, and, when the prompt ends with `<think>`, that
   `<think>` put back in front.
2. Format: exactly one `<think>`, `</think>`, `<answer>`, `</answer>` in that order; non-blank thinking;
   only whitespace between `</think>` and `<answer>` and after `</answer>`; only whitespace before
   `<think>` in strict format (anything in lenient format, the paper's); the answer names one letter.
3. Answer: see `parse_answer_letter`.
4. Reward: +1 well formed and correct; 0 (neutral, the paper's) or -1 (penalized) well formed and wrong;
   -1 malformed. Optional shaping beyond the paper (`RewardConfig`) only ever lowers a well-formed
   response's reward, and never below -1, so a well-formed response never scores under a malformed one.

Every function is total on any string and runs in time linear in its input. No regular expression
below can backtrack more than a constant number of steps per character (the comments beside them say
why); the answer grammar runs on at most 1,000 whitespace-collapsed characters, so each `\\s?` in it
matches at most one character; the prompt is located by string search in C or, failing that, KMP.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache, wraps

LETTERS = "ABCDEFGHIJ"
CACHED_CHARS = 16_384  # the longest prompt (and option text) the verifier caches
SCHEMES = ("neutral", "penalized")
FORMATS = ("lenient", "strict")
THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
# The usual completion, recognized in one pass: `<` only in the four tags (so each is there once, in
# order), non-blank thinking, only whitespace between `</think>` and `<answer>` and after `</answer>`.
# Groups: the text before `<think>`, the thinking block, the answer block. What follows each `[^<]*` or
# `\s*` starts with a character that it cannot match, so giving a character back fails at once.
_USUAL = re.compile(r"([^<]*)<think>(\s*[^\s<][^<]*)</think>\s*<answer>([^<]*)</answer>\s*")

# Trailing special tokens, matched on the *reversed* completion so that one anchored `match` strips any
# run of them (with whitespace between) in linear time; a forward search for "junk up to the end" would
# retry from every position. Covers `<|...|>` (Qwen, Llama-3, Phi), DeepSeek's full-width `<｜...｜>`,
# and the SentencePiece/Gemma/BERT spellings. A whitespace run is one `\s+` (a loop in C), not one turn
# of the group per character. That `\s+` sits inside `(...)*` yet never backtracks: nothing follows the
# group, so the first, greedy attempt is the match.
_NAMED_SPECIAL_TOKENS = ("</s>", "<eos>", "<pad>", "<unk>", "<end_of_turn>", "<eot>", "[PAD]", "[SEP]", "[EOS]")
_TRAILING_SPECIALS_REVERSED = re.compile(
    r"(?:\s+|>\|[\w.:\-]{1,64}\|<|>｜[^｜<>\s]{1,64}｜<|"
    + "|".join(re.escape(token[::-1]) for token in _NAMED_SPECIAL_TOKENS)
    + r")*"
)

# The answer grammar, run on whitespace-collapsed text: an optional leading phrase ("The correct answer
# is", "Answer:", "Option", optionally in bold, optionally after a discourse opener from a closed list:
# "So", "Therefore,", "I think", "So, I think"), one letter A-J bare or wrapped in (), [], *, **, _ or
# __ (a lower-case letter only in () or []), an optional delimiter, then optionally a space and free
# text (the option's wording). Each piece of the leading phrase is bounded, so trying its few possible
# splits takes constant time.
_OPENER = r"(?:(?:so|thus|hence|therefore|in conclusion),? )?(?:i think |i believe )?"
_LEAD = (
    rf"(?:{_OPENER}\*{{0,2}}(?:the )?(?:(?:correct|final|best|right) )?(?:answer|option|choice)(?: is)?"
    r" ?:? ?\*{0,2} ?:? ?)?"
)
_ANSWER = re.compile(
    rf"(?i:{_LEAD})"
    r"(?:\((?P<paren>[A-Ja-j])\)|\[(?P<bracket>[A-Ja-j])\]|\*\*(?P<bold>[A-J])[.):]?\*\*|\*(?P<em>[A-J])\*"
    r"|__(?P<under2>[A-J])__|_(?P<under>[A-J])_|(?P<bare>[A-J]))"
    r"(?P<delim>[.):])?(?P<text>(?: .*)?)",
    re.S,
)
_LEAD_ONLY = re.compile(rf"(?i:{_LEAD})")
# Wording after the letter that names another option makes the answer a hedge. An option marker is a
# letter in () or [] (either case), or a capital followed by `)`, `:`, or by `.` and wording that does not
# start in lower case ("E. coli" and "C. difficile" are not markers). A hedge: wording that starts with a
# marker, a joiner, a lone letter or a list of letters ("A or C", "C. D", "C. D, E"); a marker after
# `or`/`and` ("C. Levothyroxine or (D)"); or, anywhere, a marker that starts a word (after a space, `,`
# or `;`) and is followed by wording that does not start in lower case, whatever joins the two ("C. RCA
# D. LMCA", "C) RCA; D) LMCA"). So "A decrease in ...", "Hepatitis B and C", "RhO(D) immunoglobulin",
# "Free energy (G) of" and "I, II" are wording; the price: a second option in lower case ("C. hCG D.
# pH") or a letter with nothing after it ("C. Levothyroxine or D") reads as C. Every alternative spans at
# most nine characters, so a `search` tries each position in constant time.
_MARKER = r"(?:\([A-Ja-j]\)|\[[A-Ja-j]\]|[A-J](?:[):]|\.(?= [^\sa-z])))"
_HEDGE_START = re.compile(rf"(?:(?i:or|and|vs\.?|versus)\b|[/,&;+]|{_MARKER}|[A-J](?:[,/] ?[A-J]\b|\.?$))")
_HEDGE_INSIDE = re.compile(rf"(?i:\b(?:or|and) )(?:{_MARKER}|[A-J][,/])|(?<![^\s,;]){_MARKER}(?= [^\sa-z])")
# Characters that do not show, removed from an answer block: soft hyphen, zero-width characters, the
# word joiner and invisible operators, direction marks, embeddings, overrides and isolates, the BOM.
_INVISIBLE = re.compile(r"[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_READ_LENGTH = 1000  # characters of an answer block that are read, see `_parse_answer`
# An option line of the prompt: the greedy `.*` runs to the line's end and gives back only its trailing
# whitespace (a lazy `.+?` before `\s*$` would retry a run of inner spaces at each of its positions).
_OPTION_LINE = re.compile(r"^([A-J])\. (.*\S)", re.M)
_EDGE_PUNCTUATION = " .,;:!*_\"'`"


@dataclass(frozen=True)
class RewardConfig:
    """How a graded response becomes a reward. The defaults reproduce the paper.

    scheme: "neutral" (well formed and wrong earns 0; the paper's) or "penalized" (-1; its ablation).
    format: "lenient" (anything may precede `<think>`; the paper's, which let the "step-by-step exploit"
        stage earn reward) or "strict" (only whitespace may).
    leak_penalty: subtracted when the thinking block merely states the chosen option (see
        `is_answer_leak`): the paper's "direct answer hacker" stage. 0 turns it off.
    min_think_words, short_think_penalty: a well-formed response whose thinking block has fewer than
        `min_think_words` words (`count_words`: each CJK character is one) loses `short_think_penalty`.
        0 words turns it off.
    """

    scheme: str = "neutral"
    format: str = "lenient"
    leak_penalty: float = 0.0
    min_think_words: int = 0
    short_think_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown reward scheme {self.scheme!r}; valid: {', '.join(SCHEMES)}")
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; valid: {', '.join(FORMATS)}")
        for name in ("leak_penalty", "min_think_words", "short_think_penalty"):
            if not getattr(self, name) >= 0:  # also rejects NaN
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")


# Environment variables that configure the OpenRLHF reward file (and anything else reading a config from
# an environment), mapped to RewardConfig fields and their types.
ENV_VARS = {
    "MED_RLVR_REWARD_SCHEME": ("scheme", str),
    "MED_RLVR_FORMAT": ("format", str),
    "MED_RLVR_LEAK_PENALTY": ("leak_penalty", float),
    "MED_RLVR_MIN_THINK_WORDS": ("min_think_words", int),
    "MED_RLVR_SHORT_THINK_PENALTY": ("short_think_penalty", float),
}
# The reward file's rollout sampling, read by med_rlvr_plugin.openrlhf_reward.rollout_sampling: not grading, but
# MED_RLVR_* names, so config_from_env accepts them.
ROLLOUT_ENV_VARS = ("MED_RLVR_ROLLOUT_SAMPLES", "MED_RLVR_ROLLOUT_DIR", "MED_RLVR_ROLLOUT_MAX_MB")


def config_from_env(environ: Mapping[str, str]) -> RewardConfig:
    """The RewardConfig an environment describes; unset variables keep the paper's defaults.

    ValueError on a bad value, and on any other MED_RLVR_* name (the prefix belongs to these variables),
    so a typo such as MED_RLVR_SCHEME=penalized cannot silently run the wrong ablation.
    """
    known = (*ENV_VARS, *ROLLOUT_ENV_VARS)
    unknown = sorted(name for name in environ if name.startswith("MED_RLVR_") and name not in known)
    if unknown:
        raise ValueError(f"unknown variable {', '.join(unknown)}; valid: {', '.join(known)}")
    fields = {}
    for name, (field, kind) in ENV_VARS.items():
        if name in environ:
            # Validate each variable alone so that the message names the variable that is wrong.
            try:
                fields[field] = kind(environ[name])
                RewardConfig(**{field: fields[field]})
            except ValueError as error:
                raise ValueError(f"{name}={environ[name]!r}: {error}") from None
    return RewardConfig(**fields)


@dataclass(frozen=True)
class Grade:
    """The verdict on one response, with what analysis and logging need to see why.

    `grade_response` fills a new Grade's fields without calling __init__ (see there), so a field added here
    must be set there too; tests/test_verifier.py checks that every field is.
    """

    reward: float
    correct: bool  # well formed and names the gold letter; this is `scores` for OpenRLHF
    well_formed: bool
    error: str | None  # why it is malformed, None when well formed
    letter: str | None  # the letter the answer block names, None when it names none
    preamble: bool  # non-whitespace text before the first `<think>`
    answer_leak: bool
    think_words: int
    completion: str
    prompt_found: bool  # False when the prompt could not be located in the query (split was a guess)


def extract_completion(query: str, prompt: str) -> tuple[str, bool]:
    """The policy's completion inside an OpenRLHF query (prompt + response), and whether the prompt was found.

    The query is normally the prompt followed by the response. OpenRLHF truncates an over-long prompt
    from the left at a token boundary, so the query may start partway into the prompt, possibly with a
    broken first character (U+FFFD). When the prompt cannot be located (a tokenizer whose decode does not
    reproduce the prompt), the response is guessed to follow the prompt's last line, and the second value
    is False so callers can report it.
    """
    start = _response_start(query, prompt)
    found = start is not None
    if start is None:
        last_line = prompt.rstrip().rpartition("\n")[2].strip()
        window = query[: len(prompt) + 64]
        cut = window.rfind(last_line) if last_line else -1
        start = cut + len(last_line) if cut >= 0 else 0
    response = query[start:]
    # Every special token ends in `>` or `]`: a response ending in anything else but whitespace (cut off at
    # the length limit, say) has nothing to strip and is not reversed.
    if response[-1:] in (">", "]") or response[-1:].isspace():
        response = response[: len(response) - _TRAILING_SPECIALS_REVERSED.match(response[::-1]).end()]
    if prompt.rstrip().endswith(THINK_OPEN):
        response = THINK_OPEN + response
    return response, found


def _response_start(query: str, prompt: str) -> int | None:
    if query.startswith(prompt):
        return len(prompt)
    # A prefix such as a BOS token before the full prompt.
    at = query.find(prompt, 0, len(prompt) + 64)
    if at >= 0:
        return at + len(prompt)
    # Left-truncated prompt: the query opens with a suffix of the prompt, of any length; find the longest.
    # Usually the window's first 64 characters occur in the prompt and, from their leftmost occurrence on,
    # the prompt agrees with the window: that is the longest suffix (a longer one would hold them further
    # left). Both checks run in C. When they occur nowhere, any suffix is shorter than 64 characters.
    body = len(query) - len(query.lstrip("\ufffd"))
    window = query[body : body + len(prompt)]
    start = prompt.find(window[:64])
    if start >= 0 and window.startswith(prompt[start:]):
        return body + len(prompt) - start
    if start < 0:
        window = window[:64]
    # The general case: the last value of KMP's prefix function over window + separator + prompt is the
    # longest prefix of that string that also ends it. The separator, None, equals no character, so the
    # prefix stays inside the window. `border` grows by at most one per step and each inner step shrinks
    # it, so the loop runs in O(len(window)) steps.
    text = [*window, None, *prompt[len(prompt) - len(window) :]]
    borders = [0] * len(text)
    for i in range(1, len(text)):
        border = borders[i - 1]
        while border and text[i] != text[border]:
            border = borders[border - 1]
        borders[i] = border + (text[i] == text[border])
    return body + borders[-1] if borders[-1] else None


def parse_answer_letter(block: str) -> str | None:
    """The option letter an answer block names, or None when it names none (which makes a response malformed).

    The block's first 1,000 characters are read, whitespace collapsed, zero-width characters and direction
    marks removed, compatibility forms NFKC-normalized (full-width `Ｃ` is `C`, `Answer：C` is `Answer:C`).
    Accepted: `C`; a lone lower-case `c`; `(C)`, `[C]`, `(c)`, `[c]`, `*C*`, `**C**`, `_C_`, `__C__`; `C.`,
    `C)`, `C:` with or without the option's wording after them (`C) Levothyroxine`); a wrapped letter
    followed by wording (`(C) Levothyroxine`); any of these after a leading phrase (`Option C`,
    `option (C)`, `The answer is C`, `The correct answer is (C).`, `Answer: C`, `**Answer:** C`), which may
    follow a discourse opener: `So`, `Thus`, `Hence`, `Therefore` or `In conclusion` (comma optional),
    `I think` or `I believe`, or one of the first then one of the second (`So, I think the answer is C`);
    and the whole block in bold (`**C. Levothyroxine**`). Not accepted: an empty block, wording without a
    letter, hedges (`A or C`, `A, C`, `C/D`, `CD`, `A and C`, `(A) or (C)`, and a second option marker
    followed by wording, whatever joins them: `C. RCA D. LMCA`, `(C) RCA (D) LMCA`, `C) RCA; D) LMCA`),
    numbers, letters past J, any other lower-case letter (`c.`, `the answer is c`), an opener without a
    leading phrase (`So C`), and sentences that merely start with a capital letter (`A 45-year-old ...`).
    Wording that only contains letters is no hedge: `C) Hepatitis B and C`, `D. Vitamin D.`,
    `C. E. coli infection` (a capital and `.` before a lower-case word is an abbreviation), `C. I, II`.
    """
    parsed = _parse_answer(block)
    return parsed[0] if parsed else None


def _parse_answer(block: str) -> tuple[str, str] | None:
    """(letter, wording after it) for an answer block, or None; the grammar of `parse_answer_letter`."""
    # A lone letter, the commonest block by far, is answered first; the lines below read it the same way.
    text = block.strip()
    if len(text) == 1 and text in "ABCDEFGHIJabcdefghij":
        return text.upper(), ""
    # Only the first 1,000 characters, whitespace collapsed, are read: room for any leading phrase and
    # option wording (MedQA's longest option has 235 characters), and a bound on the work below at any
    # block length (NFKC can turn one character into 18, at a microsecond each). `maxsplit` stops the
    # split there; the rest of the block is copied once, never scanned.
    text = " ".join(block.split(maxsplit=_READ_LENGTH)[:_READ_LENGTH])[:_READ_LENGTH]
    if not text.isascii():
        # Invisible characters out, compatibility forms (full-width `Ｃ`, `：`) to plain ones; collapse
        # again, as either can leave or make spaces.
        text = " ".join(unicodedata.normalize("NFKC", _INVISIBLE.sub("", text)).split())
    if len(text) == 1 and text in "abcdefghij":
        return text.upper(), ""
    if len(text) > 4 and text[:2] == text[-2:] and text[:2] in ("**", "__"):
        text = text[2:-2].strip()
    match = _ANSWER.fullmatch(text)
    if not match:
        return None
    letter = next(value for value in match.group("paren", "bracket", "bold", "em", "under2", "under", "bare") if value)
    wording = match.group("text").strip()
    # A bare letter needs a delimiter before any wording, or "I think ..." would name I.
    if match.group("bare") and wording and not match.group("delim"):
        return None
    if wording and (_HEDGE_START.match(wording) or _HEDGE_INSIDE.search(wording)):
        return None
    return letter.upper(), wording


def parse_label(label: object) -> str:
    """The gold letter of a label such as "C", " c ", "(C)", "[C]" or "C."; ValueError when it names none.

    A label naming no letter is a configuration error, never a reward: "" is what OpenRLHF passes when
    `--data.label_key` was not given, and an integer is an option index whose base (0 or 1) is unknowable.
    """
    if isinstance(label, str) and len(label) == 1 and label in LETTERS:
        return label  # the usual label, as the prompt files hold it
    text = label.strip().rstrip(".").strip("()[] ").upper() if isinstance(label, str) else ""
    if len(text) == 1 and text in LETTERS:
        return text
    if label == "":
        cause = (
            "the label is empty: OpenRLHF passes '' when --data.label_key is not given (use --data.label_key label)"
        )
    else:
        cause = (
            "the label column does not hold the gold option letter A-J: check --data.label_key, or prepare the "
            "prompt file with data_prep/prepare.py"
        )
    raise ValueError(f"med-rlvr: label {label!r} names no option letter; {cause}")


def cached_when_short(function):
    """`function` with an LRU cache of 4,096 entries for arguments of at most CACHED_CHARS characters;
    longer ones are computed each time. So the cache holds at most 4,096 x 16,384 characters (64 MB of
    ASCII) per process, whatever prompts a client sends; MedQA's prompts are 1-3 K characters."""
    cached = lru_cache(maxsize=4096)(function)

    @wraps(function)
    def call(text):
        return cached(text) if text is None or len(text) <= CACHED_CHARS else function(text)

    return call


@cached_when_short
def parse_options(prompt: str) -> dict[str, str]:
    """Option letter -> option text, from the prompt's `X. text` lines (the last line wins for a letter).

    Cached because OpenRLHF grades n_samples_per_prompt responses to each prompt.
    """
    return dict(_OPTION_LINE.findall(prompt))


def _normalize(text: str) -> str:
    return " ".join(text.lower().split()).strip(_EDGE_PUNCTUATION)


@cached_when_short
def _leak_option(option_text: str | None) -> tuple[str | None, int]:
    """The option's text as `is_answer_leak` compares it, and the most words a leak of it can hold.

    A leak holds at most a leading phrase (up to 7 words, e.g. "**The correct answer is : **"), the letter
    and the option's words. Cached, like `parse_options`: every response to a prompt names one of its options.
    """
    option = _normalize(option_text) if option_text else None
    return option, (count_words(option) + 10 if option else 10)


def is_answer_leak(think: str, letter: str, option_text: str | None, *, think_words: int | None = None) -> bool:
    """Whether a thinking block merely states the chosen option instead of reasoning towards it.

    True when the block, compared case- and whitespace-insensitively and ignoring edge punctuation, is
    exactly: the chosen letter in any answer-block form (`C`, `(C)`, `The answer is C.`), that letter
    followed by the option's text (`C. Levothyroxine`), or the option's text alone, optionally after a
    leading phrase (`The answer is levothyroxine`). Any other word in the block counts as reasoning.
    `think_words`, when the caller has counted them, is `count_words(think)`.
    """
    option, limit = _leak_option(option_text)
    # A leak holds at most `limit` words; a longer block is reasoning, whatever it holds.
    if (count_words(think) if think_words is None else think_words) > limit:
        return False
    parsed = _parse_answer(think)
    if parsed and parsed[0] == letter and (not parsed[1] or _normalize(parsed[1]) == option):
        return True
    if not option:
        return False
    collapsed = " ".join(think.split())
    return _normalize(collapsed[_LEAD_ONLY.match(collapsed).end() :]) == option


def grade_response(query: str, prompt: str, label: object, config: RewardConfig = RewardConfig()) -> Grade:
    """Grade one OpenRLHF sample (query = prompt + response as decoded, prompt, label) under `config`.

    Raises ValueError only for a label naming no letter (a configuration error); any query is graded.
    """
    gold = parse_label(label)
    completion, prompt_found = extract_completion(query, prompt)
    # The usual completion is read in one pass; any other goes through the format's checks one by one,
    # which give a usual completion the same parts and no error (tests/test_verifier.py checks both).
    usual = _USUAL.fullmatch(completion)
    if usual:
        (before, think, block), error = usual.groups(), None
    else:
        before, think, block, error = _read_tags(completion)
    preamble = before != "" and not before.isspace()
    think_words = count_words(think)
    if error is None and preamble and config.format == "strict":
        error = "text before <think> (strict format)"
    letter = parse_answer_letter(block) if error is None else None
    if error is None and letter is None:
        error = "the answer block names no single option letter A-J"

    correct = leak = False
    if error:
        reward = -1.0
    else:
        correct = letter == gold
        leak = is_answer_leak(think, letter, parse_options(prompt).get(letter), think_words=think_words)
        reward = 1.0 if correct else (0.0 if config.scheme == "neutral" else -1.0)
        reward -= config.leak_penalty if leak else 0.0
        reward -= config.short_think_penalty if think_words < config.min_think_words else 0.0
    # Grade(...) would set each field through object.__setattr__, as a frozen dataclass's __init__ does, at
    # three times the cost; filling the new instance's dictionary at once makes the same Grade.
    grade = object.__new__(Grade)
    grade.__dict__.update(
        reward=max(reward, -1.0),
        correct=correct,
        well_formed=error is None,
        error=error,
        letter=letter,
        preamble=preamble,
        answer_leak=leak,
        think_words=think_words,
        completion=completion,
        prompt_found=prompt_found,
    )
    return grade


def _read_tags(completion: str) -> tuple[str, str, str, str | None]:
    """(text before `<think>`, thinking block, answer block, why the tags make the completion malformed).

    The format's checks up to the answer, in the rule's order, for any completion. The thinking block
    runs from the first `<think>` to the first `</think>` after it, also in a malformed completion
    (its words and the preamble are reported); the answer block is read only when the tags are right.
    """
    think_open = completion.find(THINK_OPEN)
    think_close = completion.find(THINK_CLOSE, think_open + 1) if think_open >= 0 else -1
    before = completion[:think_open] if think_open > 0 else ""
    think = completion[think_open + len(THINK_OPEN) : think_close] if think_close >= 0 else ""
    answer_open, answer_close = completion.find(ANSWER_OPEN), completion.find(ANSWER_CLOSE)
    if any(completion.count(tag) != 1 for tag in TAGS):
        error = "each of <think>, </think>, <answer>, </answer> must appear exactly once"
    elif not think_open < think_close < answer_open < answer_close:
        error = "tags out of order: expected <think> </think> <answer> </answer>"
    elif not think.strip():
        error = "empty thinking block"
    elif completion[think_close + len(THINK_CLOSE) : answer_open].strip():
        error = "text between </think> and <answer>"
    elif completion[answer_close + len(ANSWER_CLOSE) :].strip():
        error = "text after </answer>"
    else:
        return before, think, completion[answer_open + len(ANSWER_OPEN) : answer_close], None
    return before, think, "", error


# For `count_words`: each ASCII character as b" " when str.split() splits at it, else as b"x" (a
# translation table has 256 entries; ASCII text only meets the first 128).
_SPACE_OR_WORD = bytes(32 if chr(code).isspace() else 120 for code in range(128)) + bytes(128)
# Scripts written without spaces between words: CJK ideographs (with extensions and compatibility forms),
# kana and bopomofo, one word a character; and the CJK and full-width punctuation that ends their clauses,
# which separates words as a space does (it is no word itself). Runs are matched, not single characters:
# one substitution a run costs far less than one a character.
_UNSPACED_LETTERS = re.compile(
    "[\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\uff66-\uff9d\U00020000-\U0003134f]+"
)
_UNSPACED_PUNCTUATION = re.compile("[\u3001-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]+")


def count_words(text: str) -> int:
    """The words of a text in any script: its whitespace-separated words, where each CJK character (Han,
    kana, bopomofo) is a word of its own and CJK punctuation separates words as whitespace does.

    So `len(text.split())` for text in a script with spaces ("答案是B。" is 4 words, "TSH升高" 3).
    Thai, Lao, Khmer and Burmese, also written without spaces, count one word per space-separated run.
    ASCII text is counted without building the words, twice as fast as splitting: each character becomes
    b" " (whitespace) or b"x", and behind a leading space every word then starts with exactly one b" x".
    """
    if text.isascii():
        return (" " + text).encode().translate(_SPACE_OR_WORD).count(b" x")
    try:
        text.encode("latin-1")  # a copy when every character is below U+0100 (no CJK), else stops at once
        return len(text.split())
    except UnicodeEncodeError:
        pass
    spaced, runs = _UNSPACED_LETTERS.subn(" ", text)
    if not runs:
        return len(text.split())
    letters = len(text) - len(spaced) + runs  # each run of n letters became one space
    return letters + len(_UNSPACED_PUNCTUATION.sub(" ", spaced).split())
