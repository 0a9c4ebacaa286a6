"""Hallucination metrics: CHAIR with the COCO and ShapesWorld vocabularies, POPE yes/no parsing and scores, and the
same numbers through `evaluate.load` of the modules shipped with the package."""

import evaluate
import pytest

from rlaifv_trl.metrics import (
    chair_metrics,
    coco_categories,
    coco_category,
    coco_objects,
    module_path,
    parse_yes_no,
    pope_metrics,
)


COCO_ANSWERS = [
    "A man is sitting on a bench next to two dogs.",
    "Two teddy bears sit on a dining table.",
    "The people are eating hot dogs near a car.",
]
COCO_TRUTH = [["person", "bench"], ["teddy bear", "dining table", "cup"], ["people", "hot dog"]]
# Answer 1 mentions person ("man"), bench, dog: dog is absent -> 1 hallucinated of 3.
# Answer 2 mentions teddy bear, dining table ("bear" and "table" are read inside the phrases): 0 of 2.
# Answer 3 mentions person ("people"), hot dog (not "dog"), car: car is absent -> 1 of 3.
# response_rate = 2 answers with a hallucination / 3 answers with objects = 2/3
# mention_rate = 2 hallucinated / 8 mentions = 0.25
# recall = (2 of {person, bench} + 2 of {teddy bear, dining table, cup} + 2 of {person, hot dog}) / 7 = 6/7
# mean_length = (11 + 8 + 9) words / 3 answers = 28/3
COCO_EXPECTED = {
    "response_rate": 2 / 3,
    "mention_rate": 0.25,
    "recall": 6 / 7,
    "mean_length": 28 / 3,
    "num_answers": 3,
    "num_answers_with_objects": 3,
    "num_mentions": 8,
    "num_hallucinated_mentions": 2,
}

SHAPES_ANSWERS = ["There is a red circle and two blue squares.", "A green triangle."]
SHAPES_TRUTH = [["red circle"], ["green triangle", "yellow square"]]
# Answer 1: red circle (present), blue square (absent, plural) -> 1 of 2; answer 2: green triangle -> 0 of 1.
# response_rate = 1/2, mention_rate = 1/3, recall = 2 found / 3 present, mean_length = (9 + 3) / 2 = 6.
SHAPES_EXPECTED = {
    "response_rate": 0.5,
    "mention_rate": 1 / 3,
    "recall": 2 / 3,
    "mean_length": 6.0,
    "num_answers": 2,
    "num_answers_with_objects": 2,
    "num_mentions": 3,
    "num_hallucinated_mentions": 1,
}

POPE_ANSWERS = [
    "Yes, there is a dog.",  # reference yes: true positive
    "No.",  # reference yes: false negative
    "Yes it is",  # reference no: false positive
    "no, there isn't",  # reference no: true negative
    "There is no cat in the image.",  # reference no: true negative (a negation without "yes")
    "I'm not sure.",  # reference yes: unparsed, counted wrong (a miss of a "yes")
]
POPE_REFERENCES = ["yes", "yes", "no", "no", "no", "yes"]
# accuracy = (1 TP + 2 TN) / 6 = 0.5; precision = 1 TP / 2 answered yes = 0.5; recall = 1 TP / 3 reference yes = 1/3
# f1 = 2 * 0.5 * (1/3) / (0.5 + 1/3) = 0.4; yes_ratio = 2 answered yes / 6 = 1/3; 1 unparsed answer.
POPE_EXPECTED = {
    "accuracy": 0.5,
    "precision": 0.5,
    "recall": 1 / 3,
    "f1": 0.4,
    "yes_ratio": 1 / 3,
    "num_answers": 6,
    "num_unparsed": 1,
}


def _assert_same(found: dict, expected: dict) -> None:
    assert set(found) == set(expected)
    for key, value in expected.items():
        assert found[key] == pytest.approx(value), key


def test_chair_coco_hand_computed():
    _assert_same(chair_metrics(COCO_ANSWERS, COCO_TRUTH, vocabulary="coco"), COCO_EXPECTED)


def test_chair_shapesworld_hand_computed():
    _assert_same(chair_metrics(SHAPES_ANSWERS, SHAPES_TRUTH, vocabulary="shapesworld"), SHAPES_EXPECTED)


def test_chair_answers_without_objects_are_outside_the_response_rate():
    # "It is sunny." mentions nothing: the response rate is 1 hallucinating answer / 1 answer with objects; the
    # empty truth of the second answer adds nothing to recall's denominator; mean_length = (5 + 3) / 2 = 4.
    found = chair_metrics(["A cat on a couch.", "It is sunny."], [["cat"], []])
    assert found["response_rate"] == 1.0 and found["num_answers_with_objects"] == 1
    assert found["mention_rate"] == 0.5 and found["recall"] == 1.0 and found["mean_length"] == 4.0
    assert chair_metrics([], [])["mean_length"] == 0.0


def test_chair_rejects_unknown_vocabulary_and_length_mismatch():
    with pytest.raises(ValueError, match="vocabulary"):
        chair_metrics(["a"], [[]], vocabulary="imagenet")
    with pytest.raises(ValueError, match="ground-truth"):
        chair_metrics(["a", "b"], [[]])


def test_coco_vocabulary_has_the_80_categories():
    categories = coco_categories()
    assert len(categories) == 80 and categories[0] == "person" and categories[-1] == "toothbrush"
    assert {"hot dog", "teddy bear", "dining table", "cell phone", "tv"} <= set(categories)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A man and a woman.", ["person", "person"]),  # synonyms
        ("Two men and three children.", ["person", "person"]),  # irregular plurals
        ("Giraffes, buses, knives and ponies.", ["giraffe", "bus", "knife", "horse"]),  # regular plurals
        ("A pair of skis and the blue skies.", ["skis"]),  # "skies" is not "skis"
        ("Hot dogs on a plate.", ["hot dog"]),  # a phrase, not a dog
        ("A teddy-bear on the dining table.", ["teddy bear", "dining table"]),
        ("Two teddy bears.", ["teddy bear"]),  # plural inside a phrase
        ("Wine glasses and cell phones.", ["wine glass", "cell phone"]),
        ("A baby elephant and an adult zebra.", ["elephant", "zebra"]),  # "baby" is not a person here
        ("A passenger train.", ["train"]),  # nor "passenger"
        ("The toilet seat is up.", ["toilet"]),  # not a chair
        ("The seat of the toilet.", ["toilet"]),
        ("A runner near home plate.", []),  # "home plate" is not an object
        ("A man wearing a bow tie.", ["person", "tie"]),
        ("A stove top oven.", ["oven"]),  # a three-word phrase
        ("The SOFA and a Laptop.", ["couch", "laptop"]),  # case
        ("A table with a laptop computer.", ["dining table", "laptop"]),
    ],
)
def test_coco_objects(text, expected):
    assert coco_objects(text) == expected


def test_coco_ground_truth_names_are_normalized():
    assert coco_category("man") == "person" and coco_category("Teddy Bear") == "teddy bear"
    assert coco_category("sofa") == "couch" and coco_category("kites") == "kite"
    assert coco_category("unicorn") == "unicorn"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Yes", True),
        ("Yes,", True),
        ("yes.", True),
        ("Yes it is", True),
        ("  YES, there is a red circle in the image.", True),
        ("Yes, but it is not red.", True),  # the first word decides
        ("No", False),
        ("no.", False),
        ("No, there isn't.", False),
        ("Nope", False),
        ("Not at all.", False),
        ("There is no dog in the image.", False),
        ("There isn't a cat.", False),
        ("The image doesn't show a bus.", False),
        ("I'm not sure.", None),
        ("I cannot tell from the image.", None),
        ("I don't know", None),
        ("There is a dog.", None),  # neither yes nor no
        ("", None),
        ("...", None),
        ("Yes and no.", True),
    ],
)
def test_parse_yes_no(answer, expected):
    assert parse_yes_no(answer) is expected


def test_pope_hand_computed():
    _assert_same(pope_metrics(POPE_ANSWERS, POPE_REFERENCES), POPE_EXPECTED)


def test_pope_boolean_references_and_degenerate_cases():
    assert pope_metrics(["yes", "no"], [True, False])["accuracy"] == 1.0
    # An "always yes" model: precision 1/2, recall 1, f1 2/3, yes ratio 1.
    found = pope_metrics(["Yes"] * 4, ["yes", "no", "yes", "no"])
    assert (found["precision"], found["recall"], found["yes_ratio"]) == (0.5, 1.0, 1.0)
    assert found["f1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="yes"):
        pope_metrics(["yes"], ["maybe"])


ZEROS = {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0}


@pytest.mark.parametrize(
    ("answers", "references", "expected"),
    [
        # No answer says yes: precision 0/0 is 0, recall 0 / 1 reference yes, accuracy 1 TN / 2.
        (["No.", "no"], ["yes", "no"], {**ZEROS, "accuracy": 0.5, "num_answers": 2, "num_unparsed": 0}),
        # No reference is yes: precision 0 TP / 1 answered yes, recall 0/0 is 0, accuracy 1 TN / 2, yes ratio 1/2.
        (["Yes.", "No."], [False, False], {**ZEROS, "accuracy": 0.5, "yes_ratio": 0.5, "num_answers": 2, "num_unparsed": 0}),
        # Unparsed answers are wrong even where the reference is "no", and miss a "yes": recall 0 / 1 reference yes.
        (["Maybe.", "I cannot tell."], ["yes", "no"], {**ZEROS, "num_answers": 2, "num_unparsed": 2}),
        # One unparsed answer among right ones: accuracy 2/3; precision 1/1, recall 1 TP / 2 reference yes, f1 2/3.
        (["Yes.", "Not sure.", "No."], ["yes", "yes", "no"], {
            "accuracy": 2 / 3, "precision": 1.0, "recall": 0.5, "f1": 2 / 3, "yes_ratio": 1 / 3, "num_answers": 3,
            "num_unparsed": 1,
        }),
        ([], [], {**ZEROS, "num_answers": 0, "num_unparsed": 0}),
    ],
)  # fmt: skip
def test_pope_ratios_without_a_denominator_are_zero(answers, references, expected):
    found = pope_metrics(answers, references)
    _assert_same(found, expected)
    assert all(type(found[key]) is float for key in ZEROS)  # plain floats, not numpy scalars (JSON, manifests)


def test_chair_module_matches_the_function():
    module = evaluate.load(module_path("chair"))
    assert module.name == "chair" and "Rohrbach" in module.citation and "CHAIR" in module.description
    _assert_same(module.compute(predictions=COCO_ANSWERS, references=COCO_TRUTH), COCO_EXPECTED)
    found = module.compute(predictions=SHAPES_ANSWERS, references=SHAPES_TRUTH, vocabulary="shapesworld")
    _assert_same(found, SHAPES_EXPECTED)
    for answer, truth in zip(COCO_ANSWERS, COCO_TRUTH):  # incremental inputs give the same numbers
        module.add(prediction=answer, reference=truth)
    _assert_same(module.compute(), COCO_EXPECTED)


def test_pope_module_matches_the_function():
    module = evaluate.load(module_path("pope"))
    assert module.name == "pope" and "Li" in module.citation
    _assert_same(module.compute(predictions=POPE_ANSWERS, references=POPE_REFERENCES), POPE_EXPECTED)


def test_module_paths():
    with pytest.raises(ValueError, match="chair"):
        module_path("bleu")
