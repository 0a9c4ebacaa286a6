"""Reproduce the weights of the embedded default's built-in models.

    OMP_NUM_THREADS=1 python scripts/train_builtin_policy.py                                      # the policy
    OMP_NUM_THREADS=1 python scripts/train_builtin_policy.py --name builtin:shapesworld-llava-biased
    OMP_NUM_THREADS=1 python scripts/train_builtin_policy.py --name builtin:shapesworld-llava-labeler
    OMP_NUM_THREADS=1 python scripts/train_builtin_policy.py --name builtin:shapesworld-llava-ranker
    OMP_NUM_THREADS=1 python scripts/train_builtin_policy.py --name builtin:motionworld-qwen2vl     # video policy
    OMP_NUM_THREADS=1 python scripts/train_builtin_policy.py --name builtin:motionworld-qwen2vl-labeler

Each writes its file under `src/rlaifv_testbed/weights/` (about 7.5 minutes on one CPU thread): a small LLaVA
whose vision tower is pretrained to recognise ShapesWorld objects, then fine-tuned with TRL's `SFTTrainer` on scene
descriptions and yes/no existence questions. The policy sees 30% of its descriptions with one absent object added,
so that it hallucinates when sampling. The biased policy's captions carry language priors instead
(`rlaifv_testbed.bias.CaptionBias`: 85% of the scenes holding a trigger object name its usual partner even when it is
absent, 20% of the objects are named with their shape's usual colour, 10% carry a random absent object), so that it
hallucinates in its greedy answers too (docs/efficacy.md). The labeler (another seed) sees faithful descriptions and
twice the questions.
The ranker starts from the labeler's weights and is fine-tuned with `SFTTrainer` on listwise ranking queries
(`rlaifv_testbed.ranking_data`: 4 answers per scene, sampled from the policy or templated, shown in random
orders; the target is the ground-truth order, fewer hallucinated objects first); it needs the labeler's and the
policy's weights.
The MotionWorld models are small Qwen2-VLs trained the same way on clips (videos of 4 frames): the vision tower also
learns which shape moves and where to; 30% of the policy's descriptions carry an absent object or a wrong motion, and
both models learn yes/no questions about objects and motions as the rule-based question writer phrases them.
"""

import argparse
import logging

import torch

from rlaifv_testbed.builtin import BUILTIN_POLICY, train_builtin_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=BUILTIN_POLICY, help="Built-in policy to train.")
    parser.add_argument("--output", default=None, help="Safetensors file to write (default: the packaged one).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)  # tiny models run fastest on one thread
    print(train_builtin_policy(args.name, args.output))


if __name__ == "__main__":
    main()
