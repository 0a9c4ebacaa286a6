"""MS COCO objects mentioned in a text, with the synonym lists and rules of the original CHAIR metric.

CHAIR (Rohrbach, Hendricks et al., "Object Hallucination in Image Captioning", EMNLP 2018) maps the words of a
caption to the 80 COCO categories through synonym lists (`coco_synonyms.txt`, shipped with the package): words are
lowercased and singularized, multi-word phrases ("hot dog", "teddy bear", "dining table") are read as one word before
single words, and a few rules avoid false matches: "baby bird" and "adult cat" name the animal, not a person;
"passenger jet" and "passenger train" name the vehicle; "toilet seat" is a toilet, and "seat" next to "toilet" is not
a chair; "home plate" and "train track" are not objects.

Differences from the original code: it singularized with `pattern.en` and tokenized with NLTK; here a small rule-based
singularizer (irregular plurals, -ies, -ves, -es, -s) keeps a word that is itself in the vocabulary ("bus", "skis",
"scissors", "glass"), and phrases of three words ("stove top oven") are matched too.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources


SYNONYMS_FILE = "coco_synonyms.txt"

# Two-word phrases read as one word (the original's `coco_double_words`), beyond the vocabulary's own phrases.
_EXTRA_PHRASES = ("home plate", "train track")
# Qualifiers that would otherwise fire "person" or misread a vehicle: "baby bird" -> "bird", "passenger jet" -> "jet".
_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
_VEHICLES = ("jet", "train")
_IRREGULAR_PLURALS = {
    "men": "man",
    "women": "woman",
    "children": "child",
    "mice": "mouse",
    "geese": "goose",
    "feet": "foot",
    "teeth": "tooth",
    "policemen": "policeman",
    "gentlemen": "gentleman",
    "servicemen": "serviceman",
    "grandchildren": "grandchild",
    "knives": "knife",
    "calves": "calf",
    "wolves": "wolf",
    "shelves": "shelf",
}
_WORD = re.compile(r"[a-z]+")


@cache
def coco_synonyms() -> dict[str, str]:
    """Every word or phrase of the vocabulary (lowercased), mapped to its COCO category."""
    text = resources.files(__package__).joinpath(SYNONYMS_FILE).read_text(encoding="utf-8")
    mapping: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        words = [" ".join(word.lower().split()) for word in line.split(",")]
        words = [word for word in words if word]
        for word in words:
            mapping[word] = words[0]
    return mapping


def coco_categories() -> list[str]:
    """The 80 COCO categories, in the vocabulary's order."""
    return list(dict.fromkeys(coco_synonyms().values()))


@cache
def _phrases() -> dict[tuple[str, ...], str]:
    """Multi-word phrases (as word tuples) mapped to the word they are read as."""
    phrases = {tuple(phrase.split()): phrase for phrase in coco_synonyms() if " " in phrase}
    phrases.update({tuple(phrase.split()): phrase for phrase in _EXTRA_PHRASES})
    for animal in _ANIMALS:
        phrases[("baby", animal)] = phrases[("adult", animal)] = animal
    for vehicle in _VEHICLES:
        phrases[("passenger", vehicle)] = vehicle
    phrases[("bow", "tie")] = "tie"
    phrases[("toilet", "seat")] = "toilet"
    return phrases


@cache
def _known_words() -> frozenset[str]:
    words = set(coco_synonyms())
    for phrase in _phrases():
        words.update(phrase)
    return frozenset(word for word in words if " " not in word)


def singularize(word: str) -> str:
    """The singular of a lowercase English word; a word of the vocabulary stays as it is ("bus", "skis")."""
    known = _known_words()
    if word in known:
        return word
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    candidates = []
    if word.endswith("ies") and len(word) > 4:
        candidates.append(word[:-3] + "y")
    if word.endswith("ves"):
        candidates += [word[:-3] + "f", word[:-3] + "fe"]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        candidates.append(word[:-1])
    if word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh")):
        candidates.append(word[:-2])
    for candidate in candidates:
        if candidate in known:
            return candidate
    return candidates[0] if candidates else word


def _read_words(text: str) -> list[str]:
    """The caption's words, singularized, with multi-word phrases merged (longest first) and rewritten."""
    words = [singularize(word) for word in _WORD.findall(text.lower())]
    phrases = _phrases()
    longest = max(len(phrase) for phrase in phrases)
    merged, i = [], 0
    while i < len(words):
        for size in range(longest, 1, -1):
            phrase = tuple(words[i : i + size])
            if len(phrase) == size and phrase in phrases:
                merged.append(phrases[phrase])
                i += size
                break
        else:
            merged.append(words[i])
            i += 1
    if "toilet" in merged and "seat" in merged:  # "the seat of the toilet" is not a chair
        merged = [word for word in merged if word != "seat"]
    return merged


def coco_objects(text: str) -> list[str]:
    """COCO categories mentioned in `text`, in order, once per mention (e.g. "Two men ride hot dogs." ->
    ["person", "hot dog"])."""
    synonyms = coco_synonyms()
    return [synonyms[word] for word in _read_words(text) if word in synonyms]


def coco_category(name: str) -> str:
    """The COCO category of a ground-truth object name given as a category or a synonym ("man" -> "person"); a name
    outside the vocabulary is returned lowercased."""
    normalized = " ".join(name.lower().split())
    synonyms = coco_synonyms()
    if normalized in synonyms:
        return synonyms[normalized]
    found = coco_objects(normalized)
    return found[0] if len(found) == 1 else normalized
