"""What a scorer returns (plain Python, shared by both backends)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ScoreResult:
    """Rewards of one trajectory. Steps cut by truncation are None (and `truncated` is True)."""

    step_rewards: list[float | None]
    trajectory_reward: float | None
    score: float
    truncated: bool = False
    num_tokens: int = 0
    id: str | None = None

    def to_dict(self, with_id: bool = True) -> dict:
        """The result as JSON-ready fields; an output row is the input row plus `to_dict(with_id=False)` (the row
        keeps its own id, as it was written)."""
        d = asdict(self)
        if not with_id:
            del d["id"]
        return d
