"""Reproduce the weights of the embedded default's built-in models.

    OMP_NUM_THREADS=1 python scripts/train_builtin_policy.py                                      # the policy
    OMP_NUM_THREADS=1 python scripts/train_builtin_policy.py --name builtin:shapesworld-llava-labeler

Each writes its file under `src/rlaifv_trl/synthetic/weights/` (about 7.5 minutes on one CPU thread): a small LLaVA
whose vision tower is pretrained to recognise ShapesWorld objects, then fine-tuned with TRL's `SFTTrainer` on scene
descriptions and yes/no existence questions. The policy sees 30% of its descriptions with one absent object added,
so that it hallucinates when sampling; the labeler (another seed) sees faithful descriptions and twice the questions.
"""

import argparse
import logging

import torch

from rlaifv_trl.synthetic.builtin import BUILTIN_POLICY, train_builtin_policy


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
