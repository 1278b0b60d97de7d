"""Helpers several test modules share."""

import random
import shutil

import numpy as np

from edgeprm.trajectory import Trajectory


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def items(seed: int, n: int, problems: int = 1) -> list[Trajectory]:
    """n trajectories over `problems` problems: 1 to 12 steps of different lengths, some with a response."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = [1, 12][i] if i < 2 else rng.randint(1, 8)
        steps = [f"Step {j}: {rng.randint(1, 999)} * {rng.randint(1, 9)} is {'x ' * rng.randint(0, 25)}done."
                 for j in range(k)]
        response = f"The answer is {rng.randint(1, 99)}." if rng.random() < 0.3 else None
        out.append(Trajectory(f"Problem {i % problems}: {'the ducks ' * (1 + i % problems)}?", steps, response,
                              id=str(i)))
    return out


def close(onnx_results, torch_results, atol: float) -> None:
    """Every reward and score within atol; None (and NaN) in exactly the same places."""
    for a, b in zip(onnx_results, torch_results):
        assert (a.id, a.truncated, a.num_tokens) == (b.id, b.truncated, b.num_tokens)
        assert [x is None for x in a.step_rewards] == [x is None for x in b.step_rewards]
        assert (a.trajectory_reward is None) == (b.trajectory_reward is None)
        got = [x for x in [*a.step_rewards, a.trajectory_reward, a.score] if x is not None]
        want = [x for x in [*b.step_rewards, b.trajectory_reward, b.score] if x is not None]
        assert np.array_equal(np.isnan(got), np.isnan(want)), f"id {a.id}: NaN in different places"
        diff = np.nan_to_num(np.abs(np.array(got) - np.array(want)))  # a trajectory with no kept step scores NaN
        assert diff.max() <= atol, f"id {a.id}: max |delta| {diff.max():.3g} > {atol} ({got} vs {want})"


# The start of a script run in a fresh interpreter where importing torch or transformers raises ImportError, as on a
# device that has only onnxruntime.
BLOCK_TORCH = r"""
import sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is blocked: the ONNX path must not import it")
        return None

sys.meta_path.insert(0, Blocked())
"""


def kill_after(cmd: list[str], part, lines: int, timeout: float = 180.0) -> int:
    """Run `cmd`, SIGKILL it once `part` holds at least `lines` lines, and return how many it holds then (a run
    killed mid-job, as a crash or the OOM killer leaves it)."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if part.exists() and len(part.read_bytes().splitlines()) >= lines:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return len(part.read_bytes().splitlines())
