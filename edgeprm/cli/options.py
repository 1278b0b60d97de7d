"""The scorer options every scoring subcommand takes (`--model`, `--backend`, `--quantization`, ...), and the
`ScorerConfig` they make, and the Ray Data options of `--ray` (`add_ray_options`). Choices come from `edgeprm.config`,
never retyped; torch-free."""

from __future__ import annotations

import argparse

from edgeprm.aggregation import AGGREGATIONS
from edgeprm.config import BACKENDS, BUNDLE_SCHEMES, DTYPES, TORCH_QUANTIZATIONS, ScorerConfig
from edgeprm.families import FAMILIES
from edgeprm.trajectory import DEFAULT_SPLIT

QUANTIZATION_CHOICES = tuple(dict.fromkeys([*(q for q in TORCH_QUANTIZATIONS if q), *BUNDLE_SCHEMES]))


def add_scorer_options(p: argparse.ArgumentParser, separator_flag: str = "--split") -> None:
    """The flags; `separator_flag` names the step-separator flag where a command's `--split` means something else
    (`edgeprm eval processbench --split` is a data set split)."""
    g = p.add_argument_group("model and scoring options")
    g.add_argument("--model", default=None, help="checkpoint directory or hub id, or with --backend onnx a bundle "
                                                 "(default: the bundled demo PRM)")
    g.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default=None,
                   help="torch: int8 | int4 weights; onnx: the bundle's scheme (none | int8 | int4)")
    g.add_argument("--backend", choices=BACKENDS, default="torch")
    g.add_argument("--device", default="auto", help="cpu | cuda | auto")
    g.add_argument("--dtype", default="auto", choices=[*DTYPES, "auto"], help="torch compute dtype")
    g.add_argument("--family", choices=FAMILIES, default=None, help="override the detected PRM family")
    g.add_argument("--aggregation", choices=AGGREGATIONS, default=None, help="how 'score' combines the rewards")
    g.add_argument("--alpha", type=float, default=1.0, help="weight of the trajectory reward in 'reasonflux'")
    g.add_argument(separator_flag, dest="separator", default=DEFAULT_SPLIT,
                   help="separator that splits a 'solution' into steps")
    g.add_argument("--max-length", type=int, default=None, help="token limit (default: the model's)")
    g.add_argument("--truncate", action="store_true", help="score what fits; cut steps get null rewards")
    g.add_argument("--token-budget", type=int, default=8192, help="padded tokens per forward batch")
    g.add_argument("--threads", type=int, default=None, help="onnx: onnxruntime threads (default: one per core)")


def scorer_config(args: argparse.Namespace) -> ScorerConfig:
    """The ScorerConfig of parsed `add_scorer_options` flags."""
    return ScorerConfig(quantization=args.quantization, backend=args.backend, device=args.device, family=args.family,
                        dtype=args.dtype, aggregation=args.aggregation, alpha=args.alpha, max_length=args.max_length,
                        truncate=args.truncate, split=args.separator, token_budget=args.token_budget,
                        threads=args.threads)


def add_ray_options(p: argparse.ArgumentParser) -> None:
    """`--ray [ADDRESS]` and the actor pool's size and resources (scoring on Ray Data; see edgeprm/distributed)."""
    g = p.add_argument_group("Ray Data (scale-out; pip install \"edgeprm[data]\")")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="score on Ray Data: an existing cluster's ADDRESS ('auto', 'ray://head:10001'), or none for "
                        "RAY_ADDRESS / a local instance (write --ray=ADDRESS, or put --ray after the input)")
    g.add_argument("--ray-actors", type=int, default=1, help="actors, each loading the scorer once")
    g.add_argument("--ray-cpus-per-actor", type=float, default=1.0, help="CPUs reserved per actor")
    g.add_argument("--ray-gpus-per-actor", type=float, default=0.0, help="GPUs reserved per actor")
    g.add_argument("--ray-batch-rows", type=int, default=64, help="rows per actor call")


def ray_scoring(args: argparse.Namespace):
    """The `edgeprm.distributed.files.RayScoring` of parsed `add_scorer_options` + `add_ray_options` flags."""
    from edgeprm.distributed.files import RayScoring

    return RayScoring(model=args.model, config=scorer_config(args), address=args.ray or None, actors=args.ray_actors,
                      cpus_per_actor=args.ray_cpus_per_actor, gpus_per_actor=args.ray_gpus_per_actor,
                      batch_rows=args.ray_batch_rows)
