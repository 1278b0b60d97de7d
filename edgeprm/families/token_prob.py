"""token-prob PRMs: Math-Shepherd-style causal LMs that mark each step with a tag and read a good/bad token pair.

On disk: a causal LM whose `config.json` names the step tag and the token pair (`"edgeprm": {"step_tag": " ки",
"good_token": "+", "bad_token": "-"}`), or the same given to `edgeprm.load`. Recipe: `problem + " " +
"\\n".join(step + tag)`; the step reward is the softmax over the LM-head logits of the two tokens at the tag
position, good-token probability. Only those two LM-head rows are read (never a [T, V] tensor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from edgeprm.families.base import Family, PRMFamily, check_head, token_at
from edgeprm.trajectory import neutralise

STEP_TAG = " ки"


@dataclass(frozen=True)
class TokenProbSpec:
    """How a token-prob PRM marks steps and reads its verdict: a step tag and a good/bad token pair."""

    step_tag: str = STEP_TAG
    good_token: str = "+"
    bad_token: str = "-"


class TokenProbPositions:
    """Step positions of one tokenizer: the step tag token after each segment (checked: it must not merge)."""

    def __init__(self, tokenizer, spec: TokenProbSpec):
        self.tokenizer, self.spec = tokenizer, spec
        self.tag_id = tokenizer.single_token_id(spec.step_tag, "step tag")
        self.reserved = [*tokenizer.added_tokens, spec.step_tag.strip()]

    def locate(self, traj, segments: list[str]):
        tag = self.spec.step_tag
        text = neutralise(traj.problem, self.reserved) + " "
        spans = []
        for i, seg in enumerate(segments):
            if i:
                text += "\n"
            text += neutralise(seg, self.reserved)
            spans.append((len(text), len(text) + len(tag)))
            text += tag
        ids, offsets = self.tokenizer.encode(text)
        starts = [o[0] for o in offsets]
        positions = []
        for k, (_, b) in enumerate(spans):
            p = token_at(starts, offsets, b - 1)
            if ids[p] != self.tag_id:
                raise ValueError(f"step {k} of id {traj.id!r}: the step tag {tag!r} merged with the text around it "
                                 f"(token id {ids[p]}); end the step with a space or punctuation")
            positions.append(p)
        return ids, positions, positions[-1]


class TokenProb(PRMFamily):
    family = Family.TOKEN_PROB
    layout = "a token-prob PRM (config.json 'edgeprm': {'step_tag', 'good_token', 'bad_token'})"
    default_aggregation = "min"
    option_names = ("step_tag", "good_token", "bad_token")

    def detect(self, model_dir, config, weights) -> bool:
        return bool((config.get("edgeprm") or {}).get("step_tag"))

    def options(self, config: dict, overrides: Mapping[str, object]) -> TokenProbSpec:
        """Explicit options, else config.json's 'edgeprm' section, else the defaults."""
        section = config.get("edgeprm") or {}
        default = TokenProbSpec()
        return TokenProbSpec(**{k: overrides.get(k) or section.get(k) or getattr(default, k)
                                for k in self.option_names})

    def encoding_record(self, options: TokenProbSpec) -> dict:
        return {"token_prob": asdict(options)}

    def options_from_record(self, record: Mapping) -> TokenProbSpec:
        return TokenProbSpec(**(record.get("token_prob") or {}))

    def bind(self, tokenizer, options: TokenProbSpec, split: str) -> TokenProbPositions:
        return TokenProbPositions(tokenizer, options or TokenProbSpec())

    def _head_key(self, config: dict, weights) -> str:
        if "lm_head.weight" in weights:
            return "lm_head.weight"
        embed = weights.backbone_prefix + "embed_tokens.weight"
        if config.get("tie_word_embeddings") and embed in weights:
            return embed
        raise ValueError(f"{weights.model_dir}: a token-prob PRM needs 'lm_head.weight' (or tied embeddings) in "
                         f"{weights.files()}")

    def head_tensor_keys(self, config, weights) -> tuple[str, ...]:
        key = self._head_key(config, weights)
        return (key, "lm_head.bias") if "lm_head.bias" in weights else (key,)

    def load_head(self, model_dir, config, weights, tokenizer, options: TokenProbSpec, hidden: int):
        from edgeprm.kernels.step_head import StepHeadWeights

        good = tokenizer.single_token_id(options.good_token, "good token")
        bad = tokenizer.single_token_id(options.bad_token, "bad token")
        vocab = config.get("vocab_size")
        for tok, i in ((options.good_token, good), (options.bad_token, bad)):
            if vocab is not None and i >= vocab:
                raise ValueError(f"token {tok!r} has id {i}, outside the model's vocab_size {vocab}")
        key = self._head_key(config, weights)
        rows = weights.get(key, rows=[bad, good])  # class 1 = good, as the other families' positive class
        bias = weights.get("lm_head.bias", rows=None)[[bad, good]] if "lm_head.bias" in weights else None
        return StepHeadWeights(w2=check_head(key + " rows", str(model_dir), rows, (2, hidden)),
                               b2=None if bias is None else bias.float())
