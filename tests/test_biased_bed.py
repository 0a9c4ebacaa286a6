"""The biased test bed: captions with language priors, a policy that hallucinates in its mode, a labeler that does
not, and POPE's adversarial questions."""

import random
import tomllib
from pathlib import Path

import pytest
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed.adversarial import adversarial_question_rows
from rlaifv_testbed.bias import COOCCURRENCE, CaptionBias, cooccurrence_question_scenes
from rlaifv_testbed.builtin import BUILTIN_BIASED_POLICY, BUILTIN_LABELER, materialize_builtin
from rlaifv_testbed.data import description_dataset
from rlaifv_testbed.recipe import shapesworld_pope_adversarial
from rlaifv_testbed.shapes import EVAL_SEED_OFFSET, ShapesWorld, existence_question, shapes_objects
from rlaifv_trl.feedback.labeler import LabelGroup, YesNoLabeler
from rlaifv_trl.generation import generate_batch
from rlaifv_trl.plugins import EVALUATORS, import_function


PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_biased_captions_name_the_absent_partner_and_usual_colours():
    world, rng = ShapesWorld(), random.Random(0)
    always = CaptionBias(cooccurrence_rate=1.0, attribute_rate=0.0)
    for scene in (world.scene(seed) for seed in range(200)):
        text, added = always.caption(scene, rng)
        assert added == always.absent_partners(scene)
        assert set(shapes_objects(text)) == set(scene.object_names) | set(added)
    swapped = CaptionBias(cooccurrence_rate=0.0, attribute_rate=1.0)
    scene = next(s for s in map(world.scene, range(200)) if s.object_names == ["green square"])
    assert swapped.caption(scene, rng) == ("There is a blue square.", ["blue square"])
    rows = description_dataset(400, bias=CaptionBias(), hallucination_rate=0.0)
    with_partner = [row for row in rows if CaptionBias().absent_partners(world.scene(row["scene_seed"]))]
    named = sum(set(CaptionBias().absent_partners(world.scene(row["scene_seed"]))) <= set(row["hallucinated"])
                for row in with_partner)  # fmt: skip
    assert 0.75 < named / len(with_partner) < 0.95  # cooccurrence_rate 0.85


def test_the_adversarial_evaluator_is_registered_and_asks_about_absent_partners():
    registered = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"][EVALUATORS]
    assert import_function(registered["shapesworld_pope_adversarial"]) is shapesworld_pope_adversarial
    rows = adversarial_question_rows(40)
    assert rows.references == ["no", "yes"] * 20
    world = ShapesWorld()
    for prompt, answer, seed in zip(rows.prompts, rows.references, rows.ids):
        name = next(n for n in [*COOCCURRENCE.values(), *world.scene(seed).object_names] if existence_question(n) in
                    prompt[0]["content"][-1]["text"])  # fmt: skip
        assert seed >= EVAL_SEED_OFFSET and (name in world.scene(seed).object_names) == (answer == "yes")


@pytest.fixture(scope="module")
def biased_and_labeler(tmp_path_factory):
    root = tmp_path_factory.mktemp("biased")
    folders = [
        materialize_builtin(name, root / name.split(":")[1]) for name in (BUILTIN_BIASED_POLICY, BUILTIN_LABELER)
    ]
    return [(AutoModelForImageTextToText.from_pretrained(f).eval(), AutoProcessor.from_pretrained(f)) for f in folders]


def test_the_biased_policy_names_absent_partners_greedily_that_the_labeler_rejects(biased_and_labeler, one_thread):
    (policy, processor), (labeler, labeler_processor) = biased_and_labeler
    bias = CaptionBias()
    scenes = cooccurrence_question_scenes(bias, ShapesWorld(), EVAL_SEED_OFFSET, 12)
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    answers = generate_batch(
        policy, processor, [prompt] * len(scenes), [[s.render()] for s in scenes], do_sample=False, max_new_tokens=48
    )
    partners = [bias.absent_partners(scene) for scene in scenes]
    named = [set(names) & set(shapes_objects(answer)) for names, answer in zip(partners, answers)]
    groups = [
        LabelGroup([scene.render()], [existence_question(n) for n in names]) for scene, names in zip(scenes, partners)
    ]
    rejected = [
        all(not label.accepted for label in group) for group in YesNoLabeler(labeler, labeler_processor).label(groups)
    ]
    # The greedy answer names an absent partner in most of these scenes (the shipped weights: 12 of 12; the unbiased
    # builtin:shapesworld-llava: 0), and the labeler says "no" to it.
    assert sum(map(bool, named)) >= 10
    assert sum(bool(n) and r for n, r in zip(named, rejected)) >= 10
