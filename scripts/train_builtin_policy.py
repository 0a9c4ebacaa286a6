"""Reproduce the weights of the embedded default policy (`builtin:shapesworld-llava`).

    OMP_NUM_THREADS=1 python scripts/train_builtin_policy.py

Writes `src/rlaifv_trl/synthetic/weights/shapesworld_llava.safetensors` (about 9 minutes on 2 CPU cores): a small
LLaVA whose vision tower is pretrained to recognise ShapesWorld objects, then fine-tuned with TRL's `SFTTrainer` on
scene descriptions (30% of them carrying one absent object, so that it hallucinates when sampling) and yes/no
existence questions (so that it can label its own claims).
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
