"""Scale-out scoring on Ray Data: `score_dataset(ds, model, ...)` maps a dataset of trajectories through an actor
pool that loads the scorer once per actor (`edgeprm.distributed.dataset`); `edgeprm.distributed.files` runs it on a
JSONL or Parquet file for `edgeprm score --ray` and `edgeprm select --ray`. Needs `pip install "edgeprm[data]"`;
importing this package does not import Ray. How to run on a cluster and with GPUs: edgeprm/distributed/README.md.
"""

from edgeprm.distributed.dataset import REWARD_COLUMNS, ScoreBatch, score_dataset

__all__ = ["REWARD_COLUMNS", "ScoreBatch", "score_dataset"]
