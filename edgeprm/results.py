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

    def to_dict(self) -> dict:
        return asdict(self)
