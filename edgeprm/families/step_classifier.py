"""step-classifier PRMs: Qwen2.5-Math-PRM-7B/72B, ReasonFlux-PRM-7B (`Qwen2ForProcessRewardModel`).

On disk: `config.json` with `architectures=["Qwen2ForProcessRewardModel"]`, safetensors with `model.*` backbone keys,
the head `score.0.*` (Linear H->H) and `score.2.*` (Linear H->2), an unused `lm_head.*`; a tokenizer with `<extra_0>`
and a chat template. Recipe: messages [system prompt, user problem, assistant `"<extra_0>".join(steps) +
"<extra_0>"`] through the chat template; the step reward is softmax(head(h))[1] at each `<extra_0>` token, read at
the separator ids directly (never by filtering probabilities, which misaligns when one underflows to 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from edgeprm.families.base import Family, PRMFamily, check_head
from edgeprm.trajectory import neutralise

SEP_TOKEN = "<extra_0>"
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
HEAD_KEYS = ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias")


@dataclass(frozen=True)
class ChatOptions:
    """The system prompt of the reference recipe (an exported bundle records the one it was built with)."""

    system_prompt: str = SYSTEM_PROMPT


def render(problem: str, segments: Sequence[str], apply_chat_template: Callable[[list[dict]], str],
           reserved: Sequence[str], system_prompt: str = SYSTEM_PROMPT) -> str:
    """The reference input text: each segment followed by `<extra_0>`, user text neutralised (see
    `edgeprm.trajectory.neutralise`) so that it can never add or remove a separator. Training renders with it too."""
    body = "".join(neutralise(s, reserved) + SEP_TOKEN for s in segments)
    messages = [{"role": "system", "content": system_prompt},
                {"role": "user", "content": neutralise(problem, reserved)},
                {"role": "assistant", "content": body}]
    return apply_chat_template(messages)


class ClassifierPositions:
    """Step positions of one tokenizer: the `<extra_0>` tokens."""

    def __init__(self, tokenizer, options: ChatOptions):
        self.tokenizer, self.system_prompt = tokenizer, options.system_prompt
        self.sep_id = tokenizer.token_id(SEP_TOKEN)
        if self.sep_id is None:
            raise ValueError(f"the tokenizer has no {SEP_TOKEN!r} token, which a step-classifier PRM needs")
        if not tokenizer.chat_template:
            raise ValueError("a step-classifier PRM's tokenizer needs a chat template (tokenizer_config.json "
                             "'chat_template')")
        self.reserved = tokenizer.added_tokens

    def locate(self, traj, segments: list[str]):
        text = render(traj.problem, segments, lambda m: self.tokenizer.apply_chat_template(m), self.reserved,
                      self.system_prompt)
        ids, _ = self.tokenizer.encode(text)
        positions = [i for i, t in enumerate(ids) if t == self.sep_id]
        if len(positions) != len(segments):
            raise AssertionError(f"{len(positions)} separator tokens for {len(segments)} segments in {traj.id!r}")
        return ids, positions, positions[-1]


class StepClassifier(PRMFamily):
    family = Family.STEP_CLASSIFIER
    layout = ("a step-classifier (architectures ['Qwen2ForProcessRewardModel'] with score.0/score.2 tensors)")
    default_aggregation = "min"  # one bad step sinks a solution

    def detect(self, model_dir, config, weights) -> bool:
        archs = config.get("architectures") or []
        return any("ProcessRewardModel" in a for a in archs) or "score.2.weight" in weights

    def load_head(self, model_dir, config, weights, tokenizer, options, hidden: int):
        from edgeprm.kernels.step_head import StepHeadWeights

        missing = [k for k in HEAD_KEYS if k not in weights]
        if missing:
            raise ValueError(f"{model_dir}: step-classifier head tensors {missing} are missing from "
                             f"{weights.files()}; expected score.0 (Linear {hidden}->{hidden}) and score.2 "
                             f"(Linear {hidden}->2)")
        src = f"{model_dir}/{weights.files()}"

        def get(key, shape):
            return check_head(key, src, weights.get(key), shape)

        return StepHeadWeights(w1=get("score.0.weight", (hidden, hidden)), b1=get("score.0.bias", (hidden,)),
                               w2=get("score.2.weight", (2, hidden)), b2=get("score.2.bias", (2,)))

    def head_tensor_keys(self, config, weights) -> tuple[str, ...]:
        return HEAD_KEYS

    def options(self, config: dict, overrides: Mapping[str, object]) -> ChatOptions:
        return ChatOptions()

    def encoding_record(self, options: ChatOptions) -> dict:
        return {"system_prompt": options.system_prompt, "separator": SEP_TOKEN}

    def options_from_record(self, record: Mapping) -> ChatOptions:
        return ChatOptions(record.get("system_prompt") or SYSTEM_PROMPT)

    def bind(self, tokenizer, options: ChatOptions, split: str) -> ClassifierPositions:
        return ClassifierPositions(tokenizer, options or ChatOptions())
