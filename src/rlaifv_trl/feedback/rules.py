"""Offline, rule-based claim splitting and polar-question writing for English answers.

Sentences come from `sentencex` (a maintained, dependency-free sentence segmenter with no data to download: NLTK's
punkt needs a download at run time and pysbd has had no release since 2021). Each declarative sentence is a claim;
questions, opinions, first-person remarks and hedged guesses are dropped, and lists of objects ("There is a cat and a
dog.") are split into one claim per object. A claim becomes a polar question by moving its auxiliary verb to the
front ("The cat is not black." -> "Is the cat not black?"), by do-support ("A man rides a bike." -> "Does a man ride
a bike?") or, for existential sentences, as "Is there ... in the image?" with negations kept ("There is no dog." ->
"Is there no dog in the image?"). What the rules cannot parse is asked as "Is it true that ...?".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sentencex


# ---------------------------------------------------------------------------------------------------------------------
# Word lists

_DETERMINERS = {
    "a", "an", "the", "this", "that", "these", "those", "another", "some", "several", "many", "few", "no", "each",
    "every", "both", "multiple", "various", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "his", "her", "its", "their", "a few", "numerous", "any",
}  # fmt: skip
_PLURAL_DETERMINERS = {
    "these", "those", "some", "several", "many", "few", "both", "multiple", "various", "two", "three", "four", "five",
    "six", "seven", "eight", "nine", "ten", "numerous",
}  # fmt: skip
_PRONOUNS = {"it", "he", "she", "they", "there", "someone", "something", "everything", "nothing", "nobody", "everyone"}
_PLURAL_SUBJECTS = {"they", "we", "you", "people", "men", "women", "children", "both"}
_BE = {"is", "are", "was", "were", "am"}
_MODALS = {"can", "could", "will", "would", "shall", "should", "may", "might", "must"}
_DO = {"do", "does", "did"}
_HAVE = {"has", "have", "had"}
_RELATIVE = {"who", "which", "that", "whose", "whom", "where"}
_PREPOSITIONS = set(
    """in on at near behind inside outside under above below beside by along across around against
    between among within from with to into""".split()
)
_INDEFINITE = set(
    """a an another some several many few multiple various numerous one two three four five six seven
    eight nine ten no both""".split()
)
_IMAGE_WORDS = r"(?:image|picture|photo|photograph|scene|frame|illustration|drawing|painting)"

_SUBJECTIVE = {
    "beautiful", "lovely", "nice", "amazing", "stunning", "gorgeous", "wonderful", "pleasant", "cute", "adorable",
    "interesting", "peaceful", "serene", "charming", "delightful", "breathtaking", "picturesque", "impressive",
    "elegant", "cozy", "cosy", "attractive", "ugly", "boring", "fascinating", "captivating", "awesome", "fantastic",
    "magnificent", "majestic", "striking", "inviting", "appealing", "tranquil", "idyllic", "whimsical", "vibrant",
    "atmosphere", "mood", "evokes", "conveys", "feeling", "enjoyable", "heartwarming", "aesthetic", "aesthetically",
}  # fmt: skip
_FIRST_PERSON = re.compile(r"\b(?:I|I'm|I'd|I've|I'll)\b|\b(?:me|my|mine|we|our|ours|us)\b|^(?:We|My|Our|Let's)\b")
_CAN_SEE = re.compile(r"^(?:I|we|you|one)\s+can\s+(?:see|spot|notice|observe)\s+(.+)$", re.IGNORECASE)
_HEDGE = re.compile(
    r"\b(?:might|perhaps|possibly|probably|presumably|apparently|seemingly|maybe|likely|may\s+(?:be|have|not))\b",
    re.IGNORECASE,
)

_BASE_VERBS = set(
    """sit stand hold wear ride show contain have play eat lie hang look walk run carry cover appear fly float grow
    read say display feature depict include face point rest lean sleep swim drive park wait talk watch use fill
    surround lead cross climb jump pull push throw catch kick hit open close sell serve cook cut smile laugh cry dance
    sing drink write draw paint build stack line mount place lay keep reach block hide support belong form seem stay
    move turn tow touch graze perch crowd shine reflect cast occupy dominate overlook border flank frame decorate adorn
    top match make take give come go see get sign bear hold pose gather chase bark fetch wag sail hover rise sink
    dangle sprout bloom wave hug kiss enter exit approach follow lift drag roll spin feed stop start end fall break
    tie paint light glow print label mark attach connect tilt sleep fish skate ski surf kneel crouch bend rain snow
    work study shop browse cook bake clean wash brush comb knit sew type""".split()
)
_IRREGULAR = {
    "has": ("have", "present"), "had": ("have", "past"), "does": ("do", "present"), "did": ("do", "past"),
    "sat": ("sit", "past"), "stood": ("stand", "past"), "held": ("hold", "past"), "wore": ("wear", "past"),
    "rode": ("ride", "past"), "ate": ("eat", "past"), "hung": ("hang", "past"), "ran": ("run", "past"),
    "flew": ("fly", "past"), "grew": ("grow", "past"), "said": ("say", "past"), "drove": ("drive", "past"),
    "swam": ("swim", "past"), "threw": ("throw", "past"), "caught": ("catch", "past"), "drank": ("drink", "past"),
    "wrote": ("write", "past"), "drew": ("draw", "past"), "built": ("build", "past"), "kept": ("keep", "past"),
    "shone": ("shine", "past"), "led": ("lead", "past"), "made": ("make", "past"), "took": ("take", "past"),
    "gave": ("give", "past"), "came": ("come", "past"), "went": ("go", "past"), "saw": ("see", "past"),
    "got": ("get", "past"), "goes": ("go", "present"), "rose": ("rise", "past"), "sank": ("sink", "past"),
    "bore": ("bear", "past"), "lies": ("lie", "present"), "ties": ("tie", "present"),
}  # fmt: skip
_PARTICIPLES = {"been", "seen", "taken", "given", "made", "done", "gone", "written", "driven", "eaten", "worn", "held",
                "built", "hung", "kept", "left", "put", "set", "grown", "drawn", "shown", "known", "found", "got",
                "gotten", "sat", "stood", "led", "caught", "brought", "bought", "painted"}  # fmt: skip
_CONTRACTIONS = [
    (r"\bcan't\b", "can not"), (r"\bcannot\b", "can not"), (r"\bwon't\b", "will not"), (r"\bain't\b", "is not"),
    (r"\b(\w+)n't\b", r"\1 not"), (r"\b(there|it|that|what|here)'s\b", r"\1 is"), (r"\b(they|we|you)'re\b", r"\1 are"),
]  # fmt: skip
_DISCOURSE = re.compile(
    r"^(?:additionally|also|moreover|furthermore|however|overall|finally|lastly|besides|in addition|in general|"
    r"notably|interestingly|meanwhile|similarly|in summary|in conclusion|then)\s*,?\s+",
    re.IGNORECASE,
)
_LEADING_PP = re.compile(
    r"^((?:in front of|on top of|next to|to the (?:left|right) of|in|on|at|near|behind|inside|outside|under|"
    r"underneath|above|below|beside|beyond|along|across|around|against|between|among|within|throughout|on the "
    r"(?:left|right))\b[^,]{0,80}),\s*(.+)$",
    re.IGNORECASE,
)
_IMAGE_SHOWS = re.compile(
    rf"^(?:the|this)\s+{_IMAGE_WORDS}\s+(?:shows|depicts|features|displays|contains|captures|presents|includes|"
    r"portrays|showcases)\s+(that\s+)?(.+)$",
    re.IGNORECASE,
)
_EXISTENTIAL = re.compile(r"^there\s+(is|are|was|were)\s+(.+)$", re.IGNORECASE)
_LIST_MARKER = re.compile(r"^\s*(?:[-*•·–—+]|\(?\d{1,3}[.)]|\(?[a-z]\))\s+")
_LIST_VERBS = r"(?:has|have|had|contains|contain|shows|show|includes|include|features|feature|holds|hold|wears|wear)"


# ---------------------------------------------------------------------------------------------------------------------
# Splitting


def sentences(text: str) -> list[str]:
    """Sentences of `text`: one per line item, segmented with `sentencex`, list markers and surrounding spaces removed."""
    found: list[str] = []
    for line in text.splitlines():
        line = _LIST_MARKER.sub("", line).strip()
        if line:
            found += [part.strip() for part in sentencex.segment("en", line) if part.strip()]
    return found


def truncate_words(text: str, max_words: int) -> str:
    """The first `max_words` words of `text` (whitespace kept inside the kept part)."""
    matches = list(re.finditer(r"\S+", text))
    if len(matches) <= max_words:
        return text
    return text[: matches[max_words - 1].end()]


def is_factual(sentence: str) -> bool:
    """Whether a sentence states a checkable fact: not a question, an opinion, a first-person remark or a guess."""
    words = re.findall(r"[A-Za-z]+(?:'[a-z]+)?", sentence)
    if sentence.rstrip().endswith("?") or len(words) < 2:
        return False
    if not any(len(word) > 1 for word in words):
        return False
    if _FIRST_PERSON.search(sentence) and not _CAN_SEE.match(sentence.strip()):
        return False
    if _HEDGE.search(sentence):
        return False
    return not any(word.lower() in _SUBJECTIVE for word in words)


def _items_with_determiners(phrase: str) -> list[str] | None:
    """The items of an "A, B and C" list when each starts with a determiner or a number, else None."""
    items = [item.strip() for item in re.split(r",\s*(?:and\s+|or\s+)?|\s+and\s+", phrase) if item.strip()]
    if len(items) < 2:
        return None
    if all(item.split()[0].lower() in _DETERMINERS or item.split()[0].isdigit() for item in items):
        return items
    return None


def _split_lists(claim: str) -> list[str]:
    """Split "There is A, B and C." and "X has A and B." into one claim per item."""
    body, end = claim.rstrip(".!"), "."
    match = re.match(r"^([^,]{1,80},\s*)?(there)\s+(is|are|was|were)\s+(.+)$", body, re.IGNORECASE)
    if match:
        lead, there, verb, rest = match.groups()
        items = _items_with_determiners(rest)
        if items:
            past = verb.lower() in ("was", "were")
            out = []
            for item in items:
                first = item.split()[0].lower()
                plural = first in _PLURAL_DETERMINERS or (first.isdigit() and first != "1")
                form = ("were" if plural else "was") if past else ("are" if plural else "is")
                out.append(f"{lead or ''}{there} {form} {item}{end}")
            return out
    match = re.match(rf"^(.+?\s{_LIST_VERBS})\s+(.+)$", body, re.IGNORECASE)
    if match and len(match.group(1).split()) <= 6:
        items = _items_with_determiners(match.group(2))
        if items:
            return [f"{match.group(1)} {item}{end}" for item in items]
    return [claim]


def _split_clauses(sentence: str) -> list[str]:
    """Split at semicolons and before a coordinated "there is/are" clause."""
    parts = re.split(r"\s*;\s*|,?\s+(?:and|but|while|whereas)\s+(?=there\s+(?:is|are|was|were)\b)", sentence)
    parts = [part.strip() for part in parts if part and part.strip()]
    return [part[0].upper() + part[1:] for part in parts]


def _normalize_claim(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip().strip("\"'“”‘’").strip()
    text = re.sub(r"[.!…]+$", "", text).strip()
    return f"{text}." if text else ""


def split_claims(answer: str) -> list[str]:
    """Atomic factual claims of an answer, in order, without repeats."""
    claims: list[str] = []
    seen: set[str] = set()
    for sentence in sentences(answer):
        if not is_factual(sentence):
            continue
        for clause in _split_clauses(sentence):
            for claim in _split_lists(_normalize_claim(clause)):
                key = claim.lower()
                if claim and key not in seen and is_factual(claim):
                    seen.add(key)
                    claims.append(claim)
    return claims


# ---------------------------------------------------------------------------------------------------------------------
# Polar questions


def _expand_contractions(text: str) -> str:
    for pattern, replacement in _CONTRACTIONS:
        text = re.sub(pattern, replacement, text, flags=re.IGNORECASE)
    return text


def _lower_first(text: str) -> str:
    """Lower-case the first word when it is a function word (keeps proper nouns such as "Mary")."""
    first, _, rest = text.partition(" ")
    if first.lower() in _DETERMINERS or first.lower() in _PRONOUNS or first.lower() in _PLURAL_SUBJECTS:
        first = first.lower()
    return f"{first} {rest}".strip()


def _mentions_image(text: str) -> bool:
    return re.search(rf"\b{_IMAGE_WORDS}\b", text, re.IGNORECASE) is not None


def _existential(noun_phrase: str, verb: str | None = None, place: str = "") -> str:
    if verb is None:
        first = noun_phrase.split()[0].lower() if noun_phrase.split() else ""
        verb = "are" if first in _PLURAL_DETERMINERS or (first.isdigit() and first != "1") else "is"
    where = f" {place}" if place else ("" if _mentions_image(noun_phrase) else " in the image")
    return f"{verb.capitalize()} there {noun_phrase}{where}?"


def _verb_form(word: str) -> tuple[str, str] | None:
    """(base form, "present" | "past" | "base") when `word` is a finite form of a known verb."""
    word = word.lower()
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word in _BASE_VERBS:
        return word, "base"
    candidates: list[tuple[str, str]] = []
    if word.endswith("ies"):
        candidates.append((word[:-3] + "y", "present"))
    if word.endswith("es"):
        candidates.append((word[:-2], "present"))
    if word.endswith("s") and not word.endswith("ss"):
        candidates.append((word[:-1], "present"))
    if word.endswith("ied"):
        candidates.append((word[:-3] + "y", "past"))
    if word.endswith("ed"):
        candidates += [(word[:-2], "past"), (word[:-1], "past")]
        if len(word) > 4 and word[-3] == word[-4]:
            candidates.append((word[:-3], "past"))
    for base, tense in candidates:
        if base in _BASE_VERBS:
            return base, tense
    return None


def _is_perfect(rest: list[str]) -> bool:
    """Whether the words after "has/have/had" make it an auxiliary: "has been", "has not", "has painted the"."""
    word = rest[0].lower()
    if word in _PARTICIPLES or word == "not":
        return True
    following = rest[1].lower() if len(rest) > 1 else ""
    return word.endswith("ed") and len(word) > 3 and (not following or following in _DETERMINERS)


def _invert(words: list[str]) -> str | None:
    """Polar question by subject-auxiliary inversion or do-support, or None when no finite verb is found."""
    if words[0].lower() in _PREPOSITIONS:
        return None
    for i in range(1, min(len(words), 10)):
        word = words[i].lower()
        subject = words[:i]
        if any(w.lower().strip(",") in _RELATIVE for w in subject) or any(w.endswith(",") for w in subject):
            return None
        rest = words[i + 1 :]
        is_aux = word in _BE or word in _MODALS or word in _DO
        if word in _HAVE and rest and _is_perfect(rest):
            is_aux = True
        if is_aux:
            return " ".join([word.capitalize(), _lower_first(" ".join(subject)), *rest]).strip() + "?"
        form = _verb_form(word)
        if form is None or words[i - 1].lower() in _DETERMINERS:
            continue
        base, tense = form
        previous = words[i - 1].lower()
        if tense == "base":
            if not (previous in _PLURAL_SUBJECTS or (previous.endswith("s") and not previous.endswith("ss"))):
                continue
            auxiliary = "Do"
        else:
            auxiliary = "Did" if tense == "past" else "Does"
        return " ".join([auxiliary, _lower_first(" ".join(subject)), base, *rest]).strip() + "?"
    return None


def polar_question(claim: str) -> str:
    """A yes/no question that is answered "yes" exactly when `claim` is true, negations kept."""
    text = _expand_contractions(re.sub(r"\s+", " ", claim).strip())
    text = re.sub(r"[.!…]+$", "", text).strip()
    text = _DISCOURSE.sub("", text)
    place = ""
    match = _LEADING_PP.match(text)
    if match:
        phrase, text = match.groups()
        if not _mentions_image(phrase):
            place = phrase[0].lower() + phrase[1:]
    if not text:
        return ""
    match = _EXISTENTIAL.match(text)
    if match:
        verb, rest = match.groups()
        return _existential(rest, verb.lower(), place)
    match = _IMAGE_SHOWS.match(text)
    if match:
        that, rest = match.groups()
        return polar_question(rest) if that else _existential(rest)
    match = _CAN_SEE.match(text)
    if match:
        return _existential(match.group(1), place=place)
    words = text.split()
    question = _invert(words)
    if question is not None:
        return question[:-1] + (f" {place}?" if place else "?")
    if words[0].lower() in _INDEFINITE or words[0].isdigit():
        return _existential(_lower_first(text), place=place)
    statement = _lower_first(text) + (f" {place}" if place else "")
    return f"Is it true that {statement}?"


# ---------------------------------------------------------------------------------------------------------------------
# The pluggable objects


class RuleBasedClaimSplitter:
    """Splits answers into claims with sentence segmentation and English rules; needs no model.

    Args:
        max_input_words: Answers are cut to their first this many words first (an unfinished last sentence is
            dropped).
    """

    name = "rule-based"

    def __init__(self, max_input_words: int = 300):
        self.max_input_words = max_input_words

    def split(self, prompts: Sequence[str], answers: Sequence[str], seed: int = 0) -> list[list[str]]:
        out = []
        for answer in answers:
            cut = truncate_words(answer, self.max_input_words)
            claims = split_claims(cut)
            if cut != answer and claims and not re.search(r"[.!?]\W*$", cut):
                claims = claims[:-1]
            out.append(claims)
        return out


class RuleBasedQuestionWriter:
    """Turns claims into polar questions with English rules; needs no model."""

    name = "rule-based"

    def write(self, claims: Sequence[str], seed: int = 0) -> list[str]:
        return [polar_question(claim) for claim in claims]
