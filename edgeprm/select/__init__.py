"""Choosing training data with a PRM: `edgeprm select` keeps the best trajectories of a scored (or unscored) file.

- `edgeprm.select.policy`: the score a row is ranked by and the rules (threshold, top-k per group, top-fraction);
- `edgeprm.select.pipeline`: `select_file`, the resumable two-stage job (score, then select) and its summary;
- `edgeprm.select.io`: JSONL and Parquet rows in and out, atomic writes.

    from edgeprm.select import LocalScoring, SelectRule, select_file
    summary = select_file("pool.jsonl", "kept.parquet", SelectRule(top_k=1), LocalScoring(edgeprm.load()))
"""

from edgeprm.select.pipeline import LocalScoring, SelectSummary, select_file
from edgeprm.select.policy import SCORE_FIELDS, SelectRule, score_of

__all__ = ["SCORE_FIELDS", "LocalScoring", "SelectRule", "SelectSummary", "score_of", "select_file"]
