from .divide_and_conquer import TIE_BREAKS, DivideAndConquerRanker
from .listwise import (
    DEFAULT_TEMPLATE,
    ListwiseQuery,
    ListwiseRanker,
    ListwiseReport,
    aggregate,
    presentation_orders,
    render_query,
)
from .parsing import ParsedRanking, parse_ranking
from .reward_function import RankerReward, dcg_gain
from .types import Ranker, Ranking

__all__ = [
    "DEFAULT_TEMPLATE",
    "TIE_BREAKS",
    "DivideAndConquerRanker",
    "ListwiseQuery",
    "ListwiseRanker",
    "ListwiseReport",
    "ParsedRanking",
    "Ranker",
    "RankerReward",
    "Ranking",
    "aggregate",
    "dcg_gain",
    "parse_ranking",
    "presentation_orders",
    "render_query",
]
