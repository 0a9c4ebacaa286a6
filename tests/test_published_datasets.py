"""Published preference datasets of each schema, served by the loopback Hub, read in the project's format."""

import numpy as np
import pytest
from datasets import Dataset, Features, Image, List, Value

from rlaifv_testbed import ShapesWorld
from rlaifv_testbed.data import assistant_turn, user_turn
from rlaifv_trl.artifacts import write_iteration_dataset
from rlaifv_trl.data import detect_schema, load_preference_dataset


def scenes(count):
    world = ShapesWorld()
    return [world.scene(seed) for seed in range(count)]


def openbmb_dataset(count=4) -> Dataset:
    """A small dataset with exactly openbmb/RLAIF-V-Dataset's columns and types."""
    rows = {
        k: []
        for k in (
            "ds_name",
            "image",
            "question",
            "chosen",
            "rejected",
            "origin_dataset",
            "origin_split",
            "idx",
            "image_path",
        )
    }
    for i, scene in enumerate(scenes(count)):
        rows["ds_name"].append("RLAIF-V")
        rows["image"].append(scene.render())
        rows["question"].append("Describe the image.")
        rows["chosen"].append(scene.description())
        rows["rejected"].append(scene.description() + " There is a red square.")
        rows["origin_dataset"].append("shapes")
        rows["origin_split"].append('{"model": "policy", "feedback_model": "labeler", "type": "detailed_description"}')
        rows["idx"].append(str(i))
        rows["image_path"].append(f"shapes/{i}.png")
    features = Features({k: Image() if k == "image" else Value("string") for k in rows})
    return Dataset.from_dict(rows, features=features)


def trl_dataset(count=4, single_image_column=False, plain_text=False) -> Dataset:
    """TRL's conversational vision preference format (as in trl-lib/rlaif-v), or its plain-text variant."""
    rows = {"prompt": [], "image" if single_image_column else "images": [], "chosen": [], "rejected": []}
    for scene in scenes(count):
        rows["prompt"].append("Describe the image." if plain_text else user_turn("Describe the image."))
        image = scene.render()
        rows["image" if single_image_column else "images"].append(image if single_image_column else [image])
        answer, wrong = scene.description(), scene.description() + " There is a red square."
        rows["chosen"].append(answer if plain_text else assistant_turn(answer))
        rows["rejected"].append(wrong if plain_text else assistant_turn(wrong))
    if single_image_column:
        return Dataset.from_dict(rows).cast_column("image", Image())
    return Dataset.from_dict(rows).cast_column("images", List(Image()))


def assert_project_format(rows, count):
    assert len(rows) == count
    truth = scenes(count)
    for row, scene in zip(rows, truth):
        assert row["prompt"][0]["role"] == "user"
        assert [item["type"] for item in row["prompt"][0]["content"]] == ["image", "text"]
        assert row["prompt"][0]["content"][1]["text"] == "Describe the image."
        assert row["chosen"] == assistant_turn(scene.description())
        assert row["rejected"][0]["content"][0]["text"].endswith("There is a red square.")
        assert np.array_equal(np.asarray(row["images"][0].convert("RGB")), np.asarray(scene.render()))


@pytest.mark.parametrize("streaming", [False, True])
def test_openbmb_schema(hub_repo_id, streaming):
    openbmb_dataset().push_to_hub(hub_repo_id)
    loaded = load_preference_dataset(hub_repo_id, streaming=streaming)
    rows = list(loaded)
    assert_project_format(rows, 4)
    assert rows[2]["prompt_id"] == "RLAIF-V-2" and rows[2]["origin_dataset"] == "shapes"


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("variant", ["conversational", "image_column", "plain_text"])
def test_trl_schemas(hub_repo_id, streaming, variant):
    trl_dataset(single_image_column=variant == "image_column", plain_text=variant == "plain_text").push_to_hub(
        hub_repo_id
    )
    assert_project_format(list(load_preference_dataset(hub_repo_id, streaming=streaming)), 4)


@pytest.mark.parametrize("streaming", [False, True])
def test_the_projects_own_pushed_configs(hub, hub_repo_id, tmp_path, streaming):
    from huggingface_hub import HfApi

    from rlaifv_trl.artifacts import dataset_configs
    from rlaifv_trl.cards import DatasetCardInfo, IterationStats, render_dataset_card

    data = trl_dataset(3).add_column("prompt_id", ["a", "b", "c"]).add_column("ref_chosen_logps", [-1.0, -2.0, -3.0])
    write_iteration_dataset(data, tmp_path, 1)
    stats = IterationStats(1, "p", "l", 3, 12, 30, 5, 3, 10.0, 12.0)
    render_dataset_card(hub_repo_id, [stats], DatasetCardInfo(splitter="rule-based"), dataset_configs(tmp_path)).save(
        tmp_path / "dataset" / "README.md"
    )
    HfApi().create_repo(hub_repo_id, repo_type="dataset")
    HfApi().upload_folder(repo_id=hub_repo_id, repo_type="dataset", folder_path=tmp_path / "dataset")
    rows = list(load_preference_dataset(hub_repo_id, name="iteration-1", streaming=streaming))
    assert_project_format(rows, 3)
    assert [row["ref_chosen_logps"] for row in rows] == [-1.0, -2.0, -3.0]
    assert [row["prompt_id"] for row in rows] == ["a", "b", "c"]


def test_unknown_schema_names_the_columns():
    with pytest.raises(ValueError, match=r"columns \['answer', 'picture'\]"):
        detect_schema(["picture", "answer"])
    with pytest.raises(ValueError, match="question"):
        detect_schema(["image", "chosen", "rejected"])  # openbmb's columns without the question
