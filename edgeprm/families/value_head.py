"""value-head PRMs: ReasonFlux-PRM-1.5B (a Qwen2 causal LM + `reward_head.pt`, the state dict of `Linear(H, 1)`).

Recipe: the raw string `problem + completion` (no chat template, nothing inserted between them), at most 2048
tokens; reward = sigmoid(head(h)) at the last real token. With steps given as a list the completion is the steps
joined by the split separator, so a solution split and re-joined scores exactly as the reference scores it. The step
reward is the same head at the token holding each step's last character: the value of that prefix (causal, so
exact), and the last step's reward is the reference trajectory score.
"""

from __future__ import annotations

from edgeprm.families.base import Family, PRMFamily, check_head, token_at

REWARD_HEAD_FILE = "reward_head.pt"


class ValueHeadPositions:
    """Step positions of one tokenizer: the token holding each segment's last character of the raw text."""

    def __init__(self, tokenizer, split: str):
        self.tokenizer, self.split = tokenizer, split

    def locate(self, traj, segments: list[str]):
        text = traj.problem
        ends = []
        for i, seg in enumerate(segments):
            if i:
                text += self.split
            text += seg
            ends.append(len(text))
        ids, offsets = self.tokenizer.encode(text)
        starts = [o[0] for o in offsets]
        return ids, [token_at(starts, offsets, e - 1) for e in ends], len(ids) - 1


class ValueHead(PRMFamily):
    family = Family.VALUE_HEAD
    layout = f"a value-head ({REWARD_HEAD_FILE} beside a causal LM)"
    default_aggregation = "reasonflux"  # the paper's recipe: mean(step) + alpha * trajectory
    length_limit = 2048  # the reference truncates there

    def detect(self, model_dir, config, weights) -> bool:
        return (model_dir / REWARD_HEAD_FILE).is_file()

    def load_head(self, model_dir, config, weights, tokenizer, options, hidden: int):
        import torch

        from edgeprm.kernels.step_head import StepHeadWeights

        f = model_dir / REWARD_HEAD_FILE
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: a value-head PRM needs the reward head's state dict "
                                    f"(Linear({hidden}, 1): 'weight' [1, {hidden}], 'bias' [1]) beside the backbone")
        try:
            sd = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{f} could not be read as a weights-only state dict ({e})") from e
        if isinstance(sd, torch.nn.Module) or not isinstance(sd, dict):
            raise ValueError(f"{f} must hold a state dict of Linear({hidden}, 1); got {type(sd).__name__}")
        w = [k for k in sd if k == "weight" or k.endswith(".weight")]
        b = [k for k in sd if k == "bias" or k.endswith(".bias")]
        if len(w) != 1 or len(b) > 1:
            raise ValueError(f"{f} must hold one Linear({hidden}, 1): keys 'weight' and 'bias'; got {sorted(sd)}")
        return StepHeadWeights(w2=check_head(w[0], str(f), sd[w[0]], (1, hidden)),
                               b2=check_head(b[0], str(f), sd[b[0]], (1,)) if b else None)

    def bind(self, tokenizer, options, split: str) -> ValueHeadPositions:
        return ValueHeadPositions(tokenizer, split)
