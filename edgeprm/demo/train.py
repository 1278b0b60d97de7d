"""Train the bundled demo PRM: a tiny Qwen2 step classifier on synthetic arithmetic solutions, in the real layout.

    python -m edgeprm.demo.train OUT_DIR [--minutes 26] [--seed 0] [--steps N] [--threads 2]

What it writes is a `step-classifier` checkpoint exactly as the real ones are laid out: `config.json`
(architectures=["Qwen2ForProcessRewardModel"], model_type=qwen2), `model.safetensors` with `model.*` backbone keys,
the head `score.0.*` (H->H) and `score.2.*` (H->2) and an unused `lm_head.weight`, and a tokenizer with `<extra_0>`
and a chat template; plus `training.json` (seed, steps, wall time, held-out figures).

Inputs follow the step-classifier reference recipe to the character: [system prompt, user problem, assistant
"<extra_0>".join(steps) + "<extra_0>"] through the chat template. The PRM loss is cross-entropy of the head's two
logits at the `<extra_0>` tokens (class 1 = good step). Two training-only auxiliaries help the backbone: next-token
prediction on the solution text (mostly its digits and operators), read from a middle layer through the (unused at
scoring) `lm_head`, and the same head's "no error so far" target at every solution token, weighted up at the token
where an error starts. The first 20% of the run uses short problems (1-2 story events), and training sees twice as
many wrong results as the held-out mix, since arithmetic is the check a small model learns last. The training data
is fresh synthetic problems from seeds >= 1_000_000 (`TRAIN_SEED_BASE`); held-out figures use seeds below that
(`edgeprm.demo.evaluate`).

Without `--steps`, the learning-rate schedule runs on wall time, so the step count depends on the machine; with
`--steps N` it runs on steps and the run is repeatable on one machine (seeded data, init and batch order).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from edgeprm.backends.base import length_buckets
from edgeprm.demo.synthetic import EVENTS, ErrorMix, generate
from edgeprm.families.step_classifier import SEP_TOKEN, SYSTEM_PROMPT, render
from edgeprm.kernels.step_head import StepHeadWeights, head_logits_ref, normalise_ref
from edgeprm.testing.checkpoints import build_tokenizer, tiny_qwen2_config, write_safetensors

TRAIN_SEED_BASE = 1_000_000  # data seed of chunk c under --seed s: TRAIN_SEED_BASE + 100_000 * s + c


@dataclass(frozen=True)
class DemoConfig:
    """Model size and optimisation of the demo PRM (defaults: ~2.1M parameters, ~8 MB in fp32)."""

    hidden: int = 192
    layers: int = 4
    heads: int = 6
    kv_heads: int = 6
    intermediate: int = 512
    vocab: int = 1024  # an upper bound: BPE stops early once the synthetic corpus is fully merged
    max_positions: int = 2048
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup: float = 0.03  # share of the run
    weight_decay: float = 0.01
    batch_tokens: int = 4096  # padded tokens per batch
    chunk_problems: int = 256  # problems generated per data chunk (x4 candidates)
    lm_weight: float = 1.0  # auxiliary next-token loss on the solution text (see DemoPRM)
    lm_text_weight: float = 0.1  # relative weight in it of targets that are neither digits nor operators
    token_weight: float = 1.0  # auxiliary "error so far" loss of the head at every solution token
    first_error_weight: float = 5.0  # extra weight of that loss at the token where an error starts
    curriculum: float = 0.2  # share of the run trained on short problems (1-2 story events) before the full mix
    bf16: bool = True  # bf16 autocast (AVX512-BF16 CPUs run it ~1.5x faster than fp32)
    lm_layer: int = 2  # the layer whose output feeds the auxiliary next-token loss (0 = the last)
    # The training error mix (held-out data keeps the evaluation mix: kinds equally likely, slips of 1-3). Arithmetic
    # is the check a small model learns last, so training sees twice as many `result` errors.
    result_weight: float = 2.0  # weight of `result` errors against 1 for `carried` and 1 for `operator`
    max_slip: int = 3  # slips are off by 1..max_slip either way (or the last two digits swapped)

    def error_mix(self) -> ErrorMix:
        slips = tuple(d for k in range(1, self.max_slip + 1) for d in (k, -k))
        return ErrorMix(kinds=(self.result_weight, 1.0, 1.0), slips=slips)

    def __post_init__(self):
        if self.result_weight < 0 or not 1 <= self.max_slip <= 9:
            raise ValueError(f"need result_weight >= 0 and 1 <= max_slip <= 9; got {self.result_weight}, "
                             f"{self.max_slip}")
        if self.hidden % self.heads or (self.hidden // self.heads) % 2 or self.heads % self.kv_heads:
            raise ValueError(f"hidden {self.hidden} / heads {self.heads} must be an even head size and heads a "
                             f"multiple of kv_heads {self.kv_heads}")


def chat_text(tokenizer, problem: str, steps: list[str]) -> str:
    """The step-classifier reference input, rendered as scoring renders it (`families.step_classifier.render`):
    system prompt, problem, steps each followed by <extra_0>, reserved strings in the text neutralised."""
    return render(problem, steps,
                  lambda m: tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=False),
                  list(tokenizer.get_added_vocab()))


def train_tokenizer(out_dir: Path, cfg: DemoConfig, seed: int):
    """Byte-level BPE (digits one per token) trained on synthetic problems and solutions plus the system prompt."""
    records = generate(2000, seed=TRAIN_SEED_BASE + 100_000 * seed + 99_999)
    corpus = list(dict.fromkeys(r["problem"] for r in records)) + ["\n".join(r["steps"]) for r in records]
    corpus += [SYSTEM_PROMPT, "system\nuser\nassistant\n"] * 100
    return build_tokenizer(out_dir, vocab_size=cfg.vocab, seed=seed, corpus=corpus)


class DemoPRM(nn.Module):
    """Qwen2 backbone + the step-classifier head `score = Linear(H, H) -> ReLU -> Linear(H, 2)`."""

    def __init__(self, config: dict, lm_layer: int = 0):
        super().__init__()
        from transformers import Qwen2Config, Qwen2Model

        qcfg = Qwen2Config.from_dict({k: v for k, v in config.items() if k not in ("architectures", "auto_map")})
        # Plain matmul attention: at these lengths (~150 tokens, head size 32) its backward is ~1.4x faster on CPU
        # than SDPA's flash kernel, which buys ~40% more steps in the time budget.
        qcfg._attn_implementation = "eager"
        self.model = Qwen2Model(qcfg)
        h = config["hidden_size"]
        self.score = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))
        # Training-only auxiliary: next-token prediction on the solution text teaches the backbone the arithmetic
        # and copying it must check. The PRM never uses it; it ships as the checkpoint's (unused) lm_head.
        # `score` holds the head's parameters under the checkpoint's names; forward applies them with the kernel
        # module's reference (`head_logits_ref`), the same math scoring uses.
        self.lm_head = nn.Linear(h, config["vocab_size"], bias=False)
        self.lm_layer = lm_layer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sep_mask: torch.Tensor,
                token_mask: torch.Tensor | None = None, lm_mask: torch.Tensor | None = None):
        """input_ids, attention_mask, sep_mask: [B, T] -> logits [S, 2] at the separator tokens, row-major order.

        For training, also the head's logits at `token_mask` [B, T] positions and next-token logits [N, V] at
        `lm_mask` positions."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                         output_hidden_states=token_mask is not None)
        hidden = out.last_hidden_state
        head = self.head_weights()
        logits = head_logits_ref(hidden[sep_mask], head)
        if token_mask is None:
            return logits
        # The next-token prediction is read from a middle layer, so that the expected token is already in the
        # residual stream where the later layers of the following position can compare it with the actual one.
        mid = self.model.norm(out.hidden_states[self.lm_layer]) if self.lm_layer else hidden
        return logits, head_logits_ref(hidden[token_mask], head), self.lm_head(mid[lm_mask])

    def head_weights(self) -> StepHeadWeights:
        """The `score` module's parameters as the step head the scorer applies (score.0 = w1/b1, score.2 = w2/b2)."""
        first, last = self.score[0], self.score[2]
        return StepHeadWeights(w2=last.weight, b2=last.bias, w1=first.weight, b1=first.bias)


def encode_records(tokenizer, records: list[dict], sep_id: int):
    """Per record: (token ids, step labels, token labels). Checks one separator per step.

    Token labels (auxiliary targets for the same head) cover the solution text: 1 before the token where the first
    wrong step departs from the correct solution (`error_char`), 0 from there on, -100 outside the solution.
    """
    texts = [chat_text(tokenizer, r["problem"], r["steps"]) for r in records]
    enc = tokenizer(texts, return_offsets_mapping=True)
    out = []
    for r, text, ids, offsets in zip(records, texts, enc["input_ids"], enc["offset_mapping"]):
        seps = [i for i, t in enumerate(ids) if t == sep_id]
        assert len(seps) == len(r["steps"]), (len(seps), len(r["steps"]))
        content = text.index(SEP_TOKEN.join(r["steps"]) + SEP_TOKEN)
        start = next(i for i, (a, _) in enumerate(offsets) if a >= content)
        err_tok = seps[-1] + 1
        if r["first_error"] is not None:
            k = r["first_error"]
            char = content + sum(len(s) + len(SEP_TOKEN) for s in r["steps"][:k]) + r["error_char"]
            err_tok = next(i for i, (_, b) in enumerate(offsets) if b > char)
            assert start <= err_tok <= seps[k], (start, err_tok, seps[k])
        tok_labels = [-100] * len(ids)
        for p in range(start, seps[-1] + 1):
            tok_labels[p] = int(p < err_tok)
        if r["first_error"] is not None:
            tok_labels[err_tok] = 2  # bad, and the token where the error starts (weighted by first_error_weight)
        out.append((ids, r["step_labels"], tok_labels))
    return out


def lm_positions(ids: list[int], labels: list[int], sep_id: int, start_id: int) -> list[int]:
    """Positions whose next token is an auxiliary LM target: the solution text, except the first wrong step."""
    start = len(ids) - 1 - ids[::-1].index(start_id) + 3  # after "<|im_start|>assistant\n"
    seps = [i for i, t in enumerate(ids) if t == sep_id]
    bad = labels.index(0) if 0 in labels else None
    skip = range(0) if bad is None else range(seps[bad - 1] + 1 if bad else start, seps[bad] + 1)
    return [p - 1 for p in range(start, seps[-1] + 1) if p not in skip]


def collate(items, pad_id: int, sep_id: int, start_id: int | None = None):
    """Right-padded batch of encoded items -> input_ids, attention_mask, sep_mask [B, T], labels [S]; with
    `start_id` (the <|im_start|> id) also token labels [B, T] and the auxiliary LM mask [B, T] with targets [N]."""
    t = max(len(it[0]) for it in items)
    ids = torch.full((len(items), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), t), dtype=torch.long)
    tok_labels = torch.full((len(items), t), -100, dtype=torch.long)
    lm_mask = torch.zeros((len(items), t), dtype=torch.bool)
    for row, (seq, labs, tlabs) in enumerate(items):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        tok_labels[row, : len(seq)] = torch.tensor(tlabs)
        if start_id is not None:
            lm_mask[row, lm_positions(seq, labs, sep_id, start_id)] = True
    labels = torch.tensor([lab for _, labs, _ in items for lab in labs], dtype=torch.long)
    if start_id is None:
        return ids, mask, ids == sep_id, labels
    targets = torch.roll(ids, -1, dims=1)[lm_mask]
    return ids, mask, ids == sep_id, labels, tok_labels, lm_mask, targets


def make_batches(encoded, batch_tokens: int, rng: random.Random, pad_id: int, sep_id: int, start_id: int):
    """Length-sorted batches of at most `batch_tokens` padded tokens, in random order (collated)."""
    for g in length_buckets([len(e[0]) for e in encoded], batch_tokens, rng=rng):
        yield collate([encoded[i] for i in g], pad_id, sep_id, start_id)


@torch.no_grad()
def predict(model: DemoPRM, tokenizer, records: list[dict], sep_id: int, pad_id: int) -> list[list[float]]:
    """Step rewards with the training forward (progress prints only; shipped figures go through edgeprm.load)."""
    model.eval()
    encoded = encode_records(tokenizer, records, sep_id)
    out: list[list[float]] = []
    for k in range(0, len(encoded), 32):
        sub = encoded[k : k + 32]
        ids, mask, sep, _ = collate(sub, pad_id, sep_id)
        probs = normalise_ref(model(ids, mask, sep).float()).tolist()
        pos = 0
        for _, labs, _ in sub:
            out.append(probs[pos : pos + len(labs)])
            pos += len(labs)
    model.train()
    return out


def key_token_mask(tokenizer) -> torch.Tensor:
    """[V] bool: the tokens a step's check hinges on (digits, one per token, and the operators, with or without a
    leading space). The auxiliary next-token loss weights them over the rest of the text."""
    keys = [str(d) for d in range(10)] + [p + o for o in "+-*/" for p in ("", " ")]
    mask = torch.zeros(len(tokenizer), dtype=torch.bool)
    for k in keys:
        ids = tokenizer.encode(k, add_special_tokens=False)
        if len(ids) == 1:
            mask[ids[0]] = True
    return mask


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged with per-target weights (computed in fp32 under bf16 autocast)."""
    ce = nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    return (ce * weights).sum() / weights.sum()


def lr_at(progress: float, cfg: DemoConfig) -> float:
    if progress < cfg.warmup:
        return cfg.lr * progress / cfg.warmup
    p = min(1.0, (progress - cfg.warmup) / (1 - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def checkpoint_tensors(model: DemoPRM, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The on-disk tensors: `model.*` backbone, `score.0/2.*` head, and an unused `lm_head.weight`."""
    return {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(model: DemoPRM, config: dict, out_dir: Path) -> None:
    write_safetensors(out_dir, checkpoint_tensors(model), shards=1)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))


def train(out_dir, minutes: float = 26.0, seed: int = 0, steps: int | None = None, threads: int = 2,
          cfg: DemoConfig = DemoConfig(), eval_problems: int = 500, log=print) -> dict:
    """Train from scratch into `out_dir`; returns the training record (also written to training.json)."""
    if minutes <= 0 and not steps:
        raise ValueError(f"need a positive --minutes or --steps; got minutes={minutes}, steps={steps}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    tok = train_tokenizer(out_dir, cfg, seed)
    sep_id, pad_id = tok.convert_tokens_to_ids(SEP_TOKEN), tok.pad_token_id
    start_id = tok.convert_tokens_to_ids("<|im_start|>")
    config = tiny_qwen2_config(len(tok), hidden_size=cfg.hidden, num_layers=cfg.layers, num_heads=cfg.heads,
                               num_kv_heads=cfg.kv_heads, intermediate_size=cfg.intermediate,
                               max_position_embeddings=cfg.max_positions,
                               eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=pad_id)
    config["architectures"] = ["Qwen2ForProcessRewardModel"]
    config["auto_map"] = {"AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
                          "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"}
    torch.manual_seed(seed)
    model = DemoPRM(config, cfg.lm_layer)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    from edgeprm.demo.evaluate import VALIDATION_SEED, figures

    val_records = generate(60, seed=VALIDATION_SEED)
    log(f"demo PRM: {n_params / 1e6:.2f}M parameters, vocab {len(tok)}, {cfg.hidden}x{cfg.layers}, "
        f"{f'{steps} steps' if steps else f'{minutes:.1f} min'}, {threads} threads")
    rng = random.Random(seed)
    mix = cfg.error_mix()
    key_targets = key_token_mask(tok)
    budget = minutes * 60.0
    t_train = time.perf_counter()
    step, chunk, ema, ema_lm, ema_acc, done = 0, 0, None, None, None, False
    while not done:
        progress = step / steps if steps else (time.perf_counter() - t_train) / budget
        events = (1, 2) if progress < cfg.curriculum else EVENTS
        records = generate(cfg.chunk_problems, seed=TRAIN_SEED_BASE + 100_000 * seed + chunk, events=events,
                           errors=mix)
        chunk += 1
        batches = make_batches(encode_records(tok, records, sep_id), cfg.batch_tokens, rng, pad_id, sep_id, start_id)
        for ids, mask, sep, labels, tok_labels, lm_mask, targets in batches:
            elapsed = time.perf_counter() - t_train
            progress = step / steps if steps else elapsed / budget
            if progress >= 1.0 or (steps and budget > 0 and elapsed >= budget):
                done = True
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(progress, cfg)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits, tok_logits, lm_logits = model(ids, mask, sep, tok_labels >= 0, lm_mask)
            loss = nn.functional.cross_entropy(logits.float(), labels)
            tok_targets = tok_labels[tok_labels >= 0]
            tok_w = 1.0 + (cfg.first_error_weight - 1.0) * (tok_targets == 2).float()
            tok_loss = weighted_cross_entropy(tok_logits, (tok_targets == 1).long(), tok_w)
            lm_loss = weighted_cross_entropy(lm_logits, targets,
                                             torch.where(key_targets[targets], 1.0, cfg.lm_text_weight))
            opt.zero_grad(set_to_none=True)
            (loss + cfg.token_weight * tok_loss + cfg.lm_weight * lm_loss).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            acc = (logits.argmax(-1) == labels).float().mean().item()
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            ema_lm = lm_loss.item() if ema_lm is None else 0.98 * ema_lm + 0.02 * lm_loss.item()
            ema_acc = acc if ema_acc is None else 0.98 * ema_acc + 0.02 * acc
            if step % 100 == 0:
                f = figures(val_records, predict(model, tok, val_records, sep_id, pad_id))
                kinds = " ".join(f"{k[:3]} {v:.2f}" for k, v in f["first_error_exact_by_kind"].items())
                log(f"step {step:5d}  {elapsed / 60:5.1f} min  lr {opt.param_groups[0]['lr']:.2e}  loss {ema:.4f}  "
                    f"lm {ema_lm:.3f}  acc {ema_acc:.3f} | val AUROC {f['step_auroc']:.3f}  first-error "
                    f"{f['first_error_exact']:.2f} ({kinds})  BoN {f['bon_prm_min']:.2f}")
    train_seconds = time.perf_counter() - t_train
    save_checkpoint(model, config, out_dir)
    info = {"seed": seed, "steps": step, "data_chunks": chunk, "train_seconds": round(train_seconds, 1),
            "wall_seconds": round(time.perf_counter() - t_start, 1), "threads": threads, "parameters": n_params,
            "config": asdict(cfg), "train_seed_base": TRAIN_SEED_BASE,
            "safetensors_bytes": (out_dir / "model.safetensors").stat().st_size}
    if eval_problems:
        from edgeprm.demo.evaluate import evaluate, format_figures

        info["heldout"] = evaluate(out_dir, n_problems=eval_problems)
        log(format_figures(info["heldout"]))
    info["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    (out_dir / "training.json").write_text(json.dumps(info, indent=2))
    log(f"wrote {out_dir} in {info['wall_seconds'] / 60:.1f} min ({step} steps, "
        f"{info['safetensors_bytes'] / 1e6:.1f} MB safetensors)")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeprm.demo.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--minutes", type=float, default=26.0, help="training time budget (the schedule follows it)")
    ap.add_argument("--steps", type=int, default=None, help="train exactly this many steps (schedule on steps)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-problems", type=int, default=500, help="held-out problems to evaluate (0 = skip)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help=f"override a DemoConfig field ({', '.join(DemoConfig.__dataclass_fields__)})")
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in DemoConfig.__dataclass_fields__:
            ap.error(f"--set {item!r}: unknown field; choose from {', '.join(DemoConfig.__dataclass_fields__)}")
        kind = type(getattr(DemoConfig(), key))
        overrides[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    train(args.out_dir, args.minutes, args.seed, args.steps, args.threads, DemoConfig(**overrides),
          eval_problems=args.eval_problems)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
