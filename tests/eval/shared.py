"""Score rows the parity tests share."""

from edgeprm.rows import write_jsonl


def rows(scores, steps=None, groups=None, correct=None):
    out = []
    for i, s in enumerate(scores):
        r = {"id": f"r{i}", "problem": f"p{i // 4}", "step_rewards": steps[i] if steps else [s, s], "score": s}
        if groups is not None:
            r["group"] = groups[i]
        if correct is not None:
            r["is_correct"] = correct[i]
        out.append(r)
    return out


def write_scores(path, rs):
    write_jsonl(rs, path)
    return path
