"""Oracle rankers: order a prompt's candidate answers, for ranking-based training (Oracle-RLAIF's GRPO_rank).

- `DivideAndConquerRanker`: by claim-label scores (RLAIF-V's divide and conquer);
- `ListwiseRanker`: by asking a VLM or language model for the order (`parse_ranking` reads its reply);
- `RankerReward`: either one as a TRL reward function.
"""

import lazy_loader


# The public names are imported on first use; __init__.pyi lists them (and is what type checkers read).
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
