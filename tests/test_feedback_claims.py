"""Divide: rule-based splitting and polar questions, language-model output parsing, and the LM splitter's plumbing."""

import random
from pathlib import Path

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from rlaifv_testbed import ShapesWorld, build_tokenizer, shapes_objects
from rlaifv_testbed.shapes import existence_question
from rlaifv_trl.feedback import (
    CausalLMRunner,
    ClaimSplitter,
    LLMClaimSplitter,
    LLMQuestionWriter,
    QuestionWriter,
    RuleBasedClaimSplitter,
    RuleBasedQuestionWriter,
    parse_claims,
    parse_question,
    polar_question,
    split_claims,
    with_instruction,
)
from rlaifv_trl.feedback.config import DEFAULT_YES_NO_INSTRUCTION


# ---------------------------------------------------------------------------------------------------------------------
# Rule-based: ShapesWorld answers, perfectly


@pytest.mark.parametrize("hallucinated", [False, True])
def test_shapes_world_answers_split_and_ask_perfectly(hallucinated):
    world, rng = ShapesWorld(), random.Random(0)
    splitter, writer = RuleBasedClaimSplitter(), RuleBasedQuestionWriter()
    for seed in range(300):
        scene = world.scene(seed)
        answer, _ = world.hallucinated_description(scene, rng) if hallucinated else (scene.description(), [])
        names = shapes_objects(answer)
        claims = splitter.split(["Describe the image."], [answer])[0]
        assert claims == [f"There is a {name}." for name in names]
        questions = [with_instruction(q, DEFAULT_YES_NO_INSTRUCTION) for q in writer.write(claims)]
        assert questions == [existence_question(name) for name in names]


# ---------------------------------------------------------------------------------------------------------------------
# Rule-based: varied English

SENTENCES = [
    ("There is no dog.", ["There is no dog."], ["Is there no dog in the image?"]),
    ("The cat isn't black.", ["The cat isn't black."], ["Is the cat not black?"]),
    ("The dog can't swim.", ["The dog can't swim."], ["Can the dog not swim?"]),
    ("The woman doesn't have an umbrella.", None, ["Does the woman not have an umbrella?"]),
    ("There are no clouds in the sky.", None, ["Are there no clouds in the sky in the image?"]),
    ("A man rides a bicycle down a busy street.", None, ["Does a man ride a bicycle down a busy street?"]),
    ("Two dogs play in the park.", None, ["Do two dogs play in the park?"]),
    ("The clock on the wall shows ten past eleven.", None, ["Does the clock on the wall show ten past eleven?"]),
    ("The boy carried a bag.", None, ["Did the boy carry a bag?"]),
    ("The dog sat on the rug.", None, ["Did the dog sit on the rug?"]),
    ("Mary is holding a cup.", None, ["Is Mary holding a cup?"]),
    ("It is raining.", None, ["Is it raining?"]),
    ("He is wearing a blue shirt.", None, ["Is he wearing a blue shirt?"]),
    ("The children were playing football.", None, ["Were the children playing football?"]),
    ("The train has been painted red.", None, ["Has the train been painted red?"]),
    ("The car has green doors.", None, ["Does the car have green doors?"]),
    ("The walls are covered with posters.", None, ["Are the walls covered with posters?"]),
    ("The sign says stop.", None, ["Does the sign say stop?"]),
    ("A red car.", None, ["Is there a red car in the image?"]),
    ("There's a lamp next to the bed.", None, ["Is there a lamp next to the bed in the image?"]),
    ("In the background, there is a tall building.", None, ["Is there a tall building in the background?"]),
    ("Additionally, a bicycle is parked near the fence.", None, ["Is a bicycle parked near the fence?"]),
    ("The image shows a man riding a horse.", None, ["Is there a man riding a horse in the image?"]),
    ("The photo shows that the door is open.", None, ["Is the door open?"]),
    ("We can see a boat on the lake.", None, ["Is there a boat on the lake in the image?"]),
    ("A black and white cat sleeps on the sofa.", None, ["Does a black and white cat sleep on the sofa?"]),
    ("The man with the dogs walks slowly.", None, ["Does the man with the dogs walk slowly?"]),
    (
        "The kitchen has a white refrigerator, a stove and a wooden table.",
        ["The kitchen has a white refrigerator.", "The kitchen has a stove.", "The kitchen has a wooden table."],
        ["Does the kitchen have a white refrigerator?", "Does the kitchen have a stove?",
         "Does the kitchen have a wooden table?"],
    ),
    (
        "There were three birds, a cat and two dogs.",
        ["There were three birds.", "There was a cat.", "There were two dogs."],
        ["Were there three birds in the image?", "Was there a cat in the image?", "Were there two dogs in the image?"],
    ),
    (
        "In the image, there are two cats and a dog.",
        ["In the image, there are two cats.", "In the image, there is a dog."],
        ["Are there two cats in the image?", "Is there a dog in the image?"],
    ),
    (
        "The sky is blue and there are no clouds.",
        ["The sky is blue.", "There are no clouds."],
        ["Is the sky blue?", "Are there no clouds in the image?"],
    ),
    (
        "The people are waiting for the bus; the bus is late.",
        ["The people are waiting for the bus.", "The bus is late."],
        ["Are the people waiting for the bus?", "Is the bus late?"],
    ),
    ("The man, who is tall, wears a hat.", None, ["Is it true that the man, who is tall, wears a hat?"]),
    ("The bus stopped at the corner.", None, ["Did the bus stop at the corner?"]),
    # Not claims: questions, opinions, first-person remarks, guesses, fragments.
    ("I think this is a beautiful scene.", [], []),
    ("What color is the bus?", [], []),
    ("There might be a bird in the tree.", [], []),
    ("Overall, the image conveys a peaceful atmosphere.", [], []),
    ("The sunset looks stunning.", [], []),
    ("My favourite part is the dog.", [], []),
    ("Yes.", [], []),
    ("", [], []),
]  # fmt: skip


@pytest.mark.parametrize(("text", "claims", "questions"), SENTENCES, ids=[s[0][:40] or "empty" for s in SENTENCES])
def test_varied_english(text, claims, questions):
    found = split_claims(text)
    assert found == (claims if claims is not None else [text])
    assert [polar_question(claim) for claim in found] == questions


def test_a_paragraph_keeps_order_and_drops_repeats():
    answer = (
        "The image shows a kitchen. A woman is cooking at the stove! Is she happy? "
        "The kitchen is bright and beautiful. A woman is cooking at the stove.\n"
        "- There is a cat on the floor.\n2. The window is open."
    )
    assert split_claims(answer) == [
        "The image shows a kitchen.",
        "A woman is cooking at the stove.",
        "There is a cat on the floor.",
        "The window is open.",
    ]


def test_rule_splitter_cuts_long_answers_to_the_word_limit():
    answer = " ".join(f"There is a red circle number {i}." for i in range(100))  # 700 words
    claims = RuleBasedClaimSplitter(max_input_words=300).split(["Describe."], [answer])[0]
    assert len(claims) == 300 // 7  # whole sentences within the first 300 words; the cut one is dropped
    assert claims[-1] == f"There is a red circle number {300 // 7 - 1}."


def test_every_labeler_question_ends_with_the_instruction():
    for question in ["Is there a dog in the image?", "Is it raining? Please answer yes or no.", "  Is it?  "]:
        full = with_instruction(question, DEFAULT_YES_NO_INSTRUCTION)
        assert full.endswith(DEFAULT_YES_NO_INSTRUCTION)
        assert full.count(DEFAULT_YES_NO_INSTRUCTION) == 1


def test_the_rule_based_objects_satisfy_the_protocols():
    assert isinstance(RuleBasedClaimSplitter(), ClaimSplitter)
    assert isinstance(RuleBasedQuestionWriter(), QuestionWriter)


# ---------------------------------------------------------------------------------------------------------------------
# Parsing language-model output

PARSE_CASES = [
    ("- There is a dog.\n- The dog is brown.", ["There is a dog.", "The dog is brown."]),
    ("### Facts\n\n* There is a dog\n* The dog is brown\n", ["There is a dog.", "The dog is brown."]),
    ("Facts:\n1. There is a dog.\n2) The dog is brown.\n(3) A ball lies on the grass.",
     ["There is a dog.", "The dog is brown.", "A ball lies on the grass."]),
    ("There is a dog. The dog is brown.\nA ball lies on the grass.",
     ["There is a dog.", "The dog is brown.", "A ball lies on the grass."]),
    ("- There is a dog.\n\n\n- there is a dog\n- **The dog is brown.**\n-   \n- none",
     ["There is a dog.", "The dog is brown."]),
    ("Here are the facts:\n• \"There is a dog.\"\n• Is the dog brown?\n• The dog is brown.",
     ["There is a dog.", "The dog is brown."]),
    ("- There is a dog.\nQuestion: Describe the image.\nAnswer: - There is a cat.", ["There is a dog."]),
    ("- none", []),
    ("", []),
    ("   \n\n  ", []),
]  # fmt: skip


@pytest.mark.parametrize(("text", "claims"), PARSE_CASES)
def test_parse_claims(text, claims):
    assert parse_claims(text) == claims


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("Is there a dog in the image?", "Is there a dog in the image?"),
        ("Question: Is the dog brown?\nAnswer: yes", "Is the dog brown?"),
        ("\n- Is there no cat on the sofa? Yes.", "Is there no cat on the sofa?"),
        ("**Are there two birds**", "Are there two birds?"),
        ("The dog is brown.", None),
        ("", None),
    ],
)
def test_parse_question(text, question):
    assert parse_question(text) == question


# ---------------------------------------------------------------------------------------------------------------------
# Language-model splitter and question writer, on a tiny real causal LM


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    tokenizer = build_tokenizer("llava")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-lm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_lm_splitter_renders_our_instruction_with_the_chat_template(tiny_lm_dir, one_thread):
    runner = CausalLMRunner(tiny_lm_dir, max_new_tokens=8)
    splitter = LLMClaimSplitter(runner, max_input_words=300)
    answer = " ".join(["word"] * 400)
    [instruction] = splitter.instructions(["Describe the image."], [answer])
    assert instruction.count("word") == 300
    assert "Question: Describe the image." in instruction
    rendered = runner.render(instruction)
    assert rendered.startswith("<|im_start|>user\n") and rendered.endswith("<|im_start|>assistant\n")
    assert splitter.name == f"llm:local: {Path(tiny_lm_dir).name}"


def test_lm_splitter_and_writer_are_seeded_and_always_give_questions(tiny_lm_dir, one_thread):
    runner = CausalLMRunner(tiny_lm_dir, max_new_tokens=12, batch_size=2)
    splitter, writer = LLMClaimSplitter(runner), LLMQuestionWriter(runner)
    answers = ["There is a red circle.", "", "There is a blue square. There is a green triangle."]
    first = splitter.split(["Describe."] * 3, answers, seed=3)
    assert first == splitter.split(["Describe."] * 3, answers, seed=3)
    assert len(first) == 3 and first[1] == [] and all(isinstance(c, str) for cs in first for c in cs)
    raw = runner.complete(["Say something."] * 3, seed=1)
    assert raw == runner.complete(["Say something."] * 3, seed=1)
    assert raw != runner.complete(["Say something."] * 3, seed=2)
    claims = ["There is a red circle.", "The circle is not blue."]
    questions = writer.write(claims, seed=5)
    assert questions == writer.write(claims, seed=5)
    assert len(questions) == 2 and all(q.endswith("?") for q in questions)
    # A random tiny model rarely writes a question: the rules take over and the fallbacks are counted.
    assert writer.num_fallbacks >= 1


def test_lm_splitter_groups_without_a_grouping_runner_are_one_call_per_group(tiny_lm_dir, one_thread):
    runner = CausalLMRunner(tiny_lm_dir, max_new_tokens=8, batch_size=2)  # transformers: no `complete_groups`
    splitter, writer = LLMClaimSplitter(runner), LLMQuestionWriter(runner)
    groups = [(["Describe."] * 2, ["There is a red circle.", ""], 3), (["Describe."], ["A blue square."], 4)]
    assert splitter.split_groups(groups) == [splitter.split(*group) for group in groups]
    claims = [(["There is a red circle."], 5), ([], 6), (["The square is blue.", "A dog sits."], 7)]
    assert writer.write_groups(claims) == [writer.write(*group) for group in claims]


def test_lm_runner_without_a_chat_template_uses_plain_text(tiny_lm_dir, one_thread):
    runner = CausalLMRunner(tiny_lm_dir, max_new_tokens=4)
    runner.tokenizer.chat_template = None
    assert runner.render("Split this.") == "Split this.\n"
    assert len(runner.complete(["Split this.", "And this."], seed=0)) == 2
