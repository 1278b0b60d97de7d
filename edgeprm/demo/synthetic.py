"""Seeded synthetic multi-step arithmetic word problems with labelled candidate solutions.

Each problem is a short story ("Tom has 37 apples. He buys 5 bags of 12 apples each, then gives away 19. ...") whose
solution is a chain of calculation steps ("5 * 12 = 60", "37 + 60 = 97", "97 - 19 = 78") ending in an answer step
("The answer is 78."). Every problem gets several candidate solutions, phrased differently; some are correct and some
carry exactly one injected error:

- `result`:   a step's arithmetic is wrong ("37 + 60 = 98");
- `carried`:  a step uses a number other than the earlier result it should carry ("97 - 19" after "... = 79");
- `operator`: a step uses the wrong operation ("97 + 19" where the story says "gives away 19").

Steps after the error compute correctly from the wrong value, so the final answer is wrong. Step labels: every step
from the first error on is bad (0), earlier steps good (1). Wrong candidates of one problem often repeat the same
"popular" mistake and so share a wrong answer, which keeps majority voting from winning trivially.

`generate(n_problems, candidates=4, seed=0)` returns flat records (one per candidate), in problem order:
    {"id", "problem_id", "problem", "steps", "step_labels", "is_correct", "answer", "gold_answer",
     "first_error", "error_kind", "error_char"}
`error_char` is the character offset in the first wrong step where it departs from the correct solution (None for
correct ones). The same seed always gives the same records (only `random.Random(seed)` is used).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from edgeprm.rows import group_rows

ERROR_KINDS = ("result", "carried", "operator")
MAX_VALUE = 999

_NAMES = [("Tom", "he"), ("Mia", "she"), ("Raj", "he"), ("Lena", "she"), ("Omar", "he"), ("Ana", "she"),
          ("Ben", "he"), ("Zoe", "she"), ("Liam", "he"), ("Nora", "she"), ("Ivan", "he"), ("Ella", "she"),
          ("Sam", "he"), ("Ruth", "she"), ("Kai", "he"), ("Jade", "she")]
_ITEMS = [("apples", "bags"), ("stickers", "sheets"), ("marbles", "jars"), ("cookies", "boxes"), ("pencils", "packs"),
          ("cards", "decks"), ("eggs", "cartons"), ("shells", "buckets"), ("coins", "pouches"), ("books", "crates"),
          ("beads", "strings"), ("stamps", "albums")]
_RELATIVES = ["sister", "brother", "cousin", "friend", "neighbour", "teacher"]
_OBJ = {"he": "him", "she": "her"}
_POS = {"he": "his", "she": "her"}

# Story events. Each clause has a matching phrase for verbose solution steps. `{n}` is the amount; group events
# have `{k}` groups of `{m}`; scale events multiply or divide by a fixed factor.
_ADD = [("{Sub} buys {n} more {items}.", "After buying {n} more, {sub} has"),
        ("{Pos} {rel} gives {obj} {n} {items}.", "With the gift, {sub} has"),
        ("{Sub} finds {n} more {items}.", "After finding {n} more, {sub} has"),
        ("{Sub} wins {n} {items} in a game.", "After the game, {sub} has")]
_SUB = [("{Sub} gives away {n} {items}.", "After giving away {n}, {sub} has"),
        ("{Sub} sells {n} of them.", "After selling {n}, {sub} has"),
        ("{Sub} loses {n} {items}.", "After losing {n}, {sub} has"),
        ("{Sub} gives {n} {items} to {pos} {rel}.", "After giving {n} to the {rel}, {sub} has")]
_ADD_GROUPS = [("{Sub} buys {k} {packs} of {m} {items} each.", "The {packs} hold", "Adding them, {sub} has"),
               ("{Pos} {rel} gives {obj} {k} {packs} with {m} {items} in each.", "The {packs} hold",
                "Now {sub} has"),
               ("{Sub} collects {m} {items} a day for {k} days.", "Over the days {sub} collects",
                "Together {sub} has")]
_SUB_GROUPS = [("{Sub} gives {k} friends {m} {items} each.", "{Sub} gives away", "That leaves {obj} with"),
               ("{Sub} sells {k} {packs} of {m} {items} each.", "{Sub} sells", "Then {sub} has"),
               ("{Sub} uses {m} {items} a day for {k} days.", "Over the days {sub} uses", "So {sub} has")]
_MUL = [("Then the number of {items} {sub} has doubles.", 2, "After doubling, {sub} has"),
        ("{Sub} then triples {pos} {items}.", 3, "After tripling, {sub} has")]
_DIV = [("{Sub} gives half of {pos} {items} to {pos} {rel}.", 2, "{Sub} keeps"),
        ("{Sub} splits {pos} {items} evenly with {pos} {rel}.", 2, "{Sub} keeps")]
_QUESTIONS = ["How many {items} does {name} have now?", "How many {items} does {sub} have at the end?",
              "How many {items} does {name} end up with?"]
_FINAL = ["The answer is {x}.", "So the answer is \\boxed{{{x}}}.", "{Name} has {x} {items} in the end. "
          "The answer is {x}.", "Therefore, the final answer is {x}."]


@dataclass(frozen=True)
class _Calc:
    """One calculation step `lhs op rhs = result`. Operands are ("const", value) or ("ref", index of an earlier step).

    `role` picks the phrasing: "group" (k * m), "apply" (running value op amount); `phrase` is the verbose lead-in.
    """

    op: str
    lhs: tuple[str, int]
    rhs: tuple[str, int]
    role: str
    phrase: str


@dataclass(frozen=True)
class _Error:
    kind: str
    step: int
    side: str = "lhs"  # carried: which operand is mis-copied ("ans" for the final answer step)
    delta: int = 0  # result / carried: the written number is the true one plus delta
    op: str = ""  # operator: the wrong operator


def _apply(op: str, a: int, b: int) -> int | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a // b if b and a % b == 0 else None
    raise AssertionError(op)


def _fill(template: str, ctx: dict, **kw) -> str:
    d = {**ctx, **kw}
    return template.format(**d)


EVENTS = (2, 2, 3, 3, 3, 4)  # story events per problem, drawn uniformly from this tuple


def _make_problem(rng: random.Random, events: tuple[int, ...] = EVENTS):
    """A story and its correct calculation chain. Returns (problem text, calcs, ctx)."""
    name, sub = rng.choice(_NAMES)
    items, packs = rng.choice(_ITEMS)
    ctx = {"name": name, "Name": name, "sub": sub, "Sub": sub.capitalize(), "obj": _OBJ[sub], "pos": _POS[sub],
           "Pos": _POS[sub].capitalize(), "items": items, "packs": packs, "rel": rng.choice(_RELATIVES)}
    while True:
        value = rng.randint(8, 99)
        clauses = [f"{name} has {value} {items}."]
        calcs: list[_Calc] = []
        running = ("const", value)
        n_events = rng.choice(events)
        ok = True
        for _ in range(n_events):
            kind = rng.choices(["add", "sub", "add_groups", "sub_groups", "mul", "div"], [3, 3, 3, 2, 1, 1])[0]
            if kind in ("add", "sub"):
                tpl, phrase = rng.choice(_ADD if kind == "add" else _SUB)
                n = rng.randint(2, 60) if kind == "add" else rng.randint(2, max(2, value - 1))
                op = "+" if kind == "add" else "-"
                clauses.append(_fill(tpl, ctx, n=n))
                calcs.append(_Calc(op, running, ("const", n), "apply", _fill(phrase, ctx, n=n)))
            elif kind in ("add_groups", "sub_groups"):
                tpl, gphrase, phrase = rng.choice(_ADD_GROUPS if kind == "add_groups" else _SUB_GROUPS)
                k, m = rng.randint(2, 9), rng.randint(2, 12)
                if kind == "sub_groups" and k * m >= value:
                    ok = False
                    break
                clauses.append(_fill(tpl, ctx, k=k, m=m))
                calcs.append(_Calc("*", ("const", k), ("const", m), "group", _fill(gphrase, ctx)))
                calcs.append(_Calc("+" if kind == "add_groups" else "-", running, ("ref", len(calcs) - 1), "apply",
                                   _fill(phrase, ctx)))
            else:
                tpl, factor, phrase = rng.choice(_MUL if kind == "mul" else _DIV)
                if (kind == "mul" and value * factor > MAX_VALUE) or (kind == "div" and value % factor):
                    ok = False
                    break
                clauses.append(_fill(tpl, ctx))
                calcs.append(_Calc("*" if kind == "mul" else "/", running, ("const", factor), "apply",
                                   _fill(phrase, ctx)))
            chain = _run(calcs)
            if chain is None:
                ok = False
                break
            value, running = chain[-1][3], ("ref", len(calcs) - 1)
        if ok:
            break
    # Join some clauses with ", then" so stories do not all read alike.
    text = clauses[0]
    for c in clauses[1:]:
        if rng.random() < 0.25 and text.endswith(".") and not c.startswith(("Then", name)):
            text = text[:-1] + ", then " + c[0].lower() + c[1:]
        else:
            text += " " + c
    text += " " + _fill(rng.choice(_QUESTIONS), ctx)
    return text, calcs, ctx


def _run(calcs: list[_Calc], error: _Error | None = None):
    """Evaluate a chain, injecting `error`. Returns [(a, op, b, written_result)] or None if the chain goes invalid."""
    out = []
    written: list[int] = []
    for i, c in enumerate(calcs):
        op = error.op if error and error.kind == "operator" and error.step == i else c.op
        vals = {}
        for side, (src, v) in (("lhs", c.lhs), ("rhs", c.rhs)):
            x = v if src == "const" else written[v]
            if error and error.kind == "carried" and error.step == i and error.side == side:
                x += error.delta
            vals[side] = x
        r = _apply(op, vals["lhs"], vals["rhs"])
        if r is None:
            return None
        if error and error.kind == "result" and error.step == i:
            r += error.delta
        if r <= 0 or r > MAX_VALUE or vals["lhs"] <= 0:
            return None
        written.append(r)
        out.append((vals["lhs"], op, vals["rhs"], r))
    return out


def _final_answer(calcs, error: _Error | None, chain) -> int:
    x = chain[-1][3]
    if error and error.kind == "carried" and error.side == "ans":
        x += error.delta
    return x


SLIPS = (1, -1, 2, -2, 3, -3)  # off-by amounts of a slipped number (besides swapping its last two digits)


@dataclass(frozen=True)
class ErrorMix:
    """Which errors `generate` injects: relative weights of the three kinds and the off-by amounts of slips.

    The default is the evaluation distribution (kinds equally likely, slips of one to three). Training may shift it,
    e.g. towards `result` errors and slips of two and four, which keep the last digit's parity, so that checking
    parity alone does not pass for checking arithmetic."""

    kinds: tuple[float, float, float] = (1.0, 1.0, 1.0)  # result, carried, operator
    slips: tuple[int, ...] = SLIPS

    def __post_init__(self):
        if len(self.kinds) != len(ERROR_KINDS) or min(self.kinds) < 0 or not sum(self.kinds):
            raise ValueError(f"ErrorMix.kinds needs {len(ERROR_KINDS)} non-negative weights, not all 0; "
                             f"got {self.kinds}")
        if not any(d % 10 for d in self.slips):
            raise ValueError(f"ErrorMix.slips needs an amount that changes the last digit; got {self.slips}")


def _number_slip(x: int, rng: random.Random, slips: tuple[int, ...] = SLIPS) -> int:
    """A plausible wrong copy or result for x, as a delta: off by a few (`slips`), or the last two digits swapped.

    Every slip changes the last digit, which is where the checks of a step (the result against its operands, a copied
    number against the one it copies) are decided for a small model."""
    s = str(x)
    options = [d for d in slips if x + d > 0 and d % 10]
    if len(s) >= 2 and s[-1] != s[-2]:
        options.append(int(s[:-2] + s[-1] + s[-2]) - x)
    return rng.choice(options)


def _random_error(calcs, rng: random.Random, mix: ErrorMix = ErrorMix()) -> _Error:
    n = len(calcs)
    # Equal weights keep the original draw, so the evaluation mix (and every held-out set) is unchanged, bit for bit.
    kind = rng.choice(ERROR_KINDS) if mix.kinds == (1.0, 1.0, 1.0) else rng.choices(ERROR_KINDS, mix.kinds)[0]
    if kind == "result":
        step = rng.randrange(n)
        c = calcs[step]
        true = _run(calcs)[step][3]
        a, b = _run(calcs)[step][0], _run(calcs)[step][2]
        slips = [d for d in (a, -a, b, -b) if d % 10]  # times-table slip: one group too many or too few
        if c.op == "*" and slips and rng.random() < 0.4:
            return _Error("result", step, delta=rng.choice(slips))
        return _Error("result", step, delta=_number_slip(true, rng, mix.slips))
    if kind == "carried":
        # Steps that copy an earlier result, plus the final answer step (which copies the last result).
        sites = [(i, side) for i, c in enumerate(calcs) for side, src in (("lhs", c.lhs), ("rhs", c.rhs))
                 if src[0] == "ref"] + [(n, "ans")]
        step, side = rng.choice(sites)
        chain = _run(calcs)
        copied = chain[-1][3] if side == "ans" else chain[getattr(calcs[step], side)[1]][3]
        return _Error("carried", step, side=side, delta=_number_slip(copied, rng, mix.slips))
    step = rng.randrange(n)
    wrong = {"+": "-*", "-": "+", "*": "+", "/": "*-"}[calcs[step].op]
    return _Error("operator", step, op=rng.choice(wrong))


def _valid_error(calcs, error: _Error, gold: int) -> tuple | None:
    chain = _run(calcs, error)
    if chain is None:
        return None
    answer = _final_answer(calcs, error, chain)
    if answer == gold or answer <= 0:
        return None
    return chain, answer


def _expr(a, op, b, r) -> str:
    return f"{a} {op} {b} = {r}"


def _render(calcs, chain, answer: int, ctx: dict, rng: random.Random) -> list[str]:
    """Solution steps in one candidate's style: terse, verbose or a mix."""
    style = rng.choice(["terse", "verbose", "mixed"])
    steps = []
    for c, (a, op, b, r) in zip(calcs, chain):
        e = _expr(a, op, b, r)
        verbose = style == "verbose" or (style == "mixed" and rng.random() < 0.5)
        steps.append(f"{c.phrase} {e} {ctx['items']}." if verbose else e)
    steps.append(_fill(rng.choice(_FINAL), ctx, x=answer))
    return steps


def _candidate(calcs, ctx, gold: int, error: _Error | None, rng: random.Random) -> dict:
    state = rng.getstate()
    steps = _render(calcs, _run(calcs), gold, ctx, rng)
    first, error_char, answer = None, None, gold
    if error is not None:
        chain, answer = _valid_error(calcs, error, gold)
        right = steps[error.step]
        rng.setstate(state)  # the same template draws, so the two renderings differ only where the error is
        steps = _render(calcs, chain, answer, ctx, rng)
        wrong = steps[error.step]
        first = error.step
        error_char = next((i for i, (a, b) in enumerate(zip(right, wrong)) if a != b), min(len(right), len(wrong)))
    labels = [1 if first is None or i < first else 0 for i in range(len(steps))]
    return {"steps": steps, "step_labels": labels, "is_correct": error is None, "answer": answer,
            "first_error": first, "error_kind": None if error is None else error.kind, "error_char": error_char}


def _draw_error(calcs, gold: int, rng: random.Random, mix: ErrorMix = ErrorMix()) -> _Error:
    for _ in range(200):
        e = _random_error(calcs, rng, mix)
        if _valid_error(calcs, e, gold) is not None:
            return e
    # Fall back to a wrong final answer copy, which is always valid.
    return _Error("carried", len(calcs), side="ans", delta=1)


# How many of 4 candidates are correct: mean 1.8 (45%), a few problems with none.
_N_CORRECT_WEIGHTS = [0.10, 0.35, 0.30, 0.15, 0.10]


def generate(n_problems: int, candidates: int = 4, seed: int = 0, p_shared: float = 0.6,
             events: tuple[int, ...] = EVENTS, errors: ErrorMix = ErrorMix()) -> list[dict]:
    """`n_problems` problems x `candidates` solutions each, as flat records (see the module docstring).

    `p_shared`: the chance that a wrong candidate repeats the problem's most popular mistake (same wrong answer).
    `events`: story events per problem, drawn uniformly from this tuple. `errors`: the error mix (default: the
    evaluation one).
    """
    if n_problems < 0 or candidates < 1:
        raise ValueError(f"need n_problems >= 0 and candidates >= 1; got {n_problems}, {candidates}")
    rng = random.Random(seed)
    records = []
    for p in range(n_problems):
        problem, calcs, ctx = _make_problem(rng, events)
        gold = _run(calcs)[-1][3]
        weights = _N_CORRECT_WEIGHTS if candidates == 4 else None
        n_correct = (rng.choices(range(5), weights)[0] if weights else
                     sum(rng.random() < 0.45 for _ in range(candidates)))
        popular = _draw_error(calcs, gold, rng, errors)
        drawn: list[_Error | None] = [None] * n_correct
        for _ in range(candidates - n_correct):
            drawn.append(popular if rng.random() < p_shared else _draw_error(calcs, gold, rng, errors))
        rng.shuffle(drawn)
        for j, err in enumerate(drawn):
            rec = _candidate(calcs, ctx, gold, err, rng)
            records.append({"id": f"s{seed}-p{p}-c{j}", "problem_id": f"s{seed}-p{p}", "problem": problem, **rec,
                            "gold_answer": gold})
    return records


_EXPR = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def parse_expressions(step: str) -> list[tuple[int, str, int, int]]:
    """All `a op b = c` expressions in a step, as integers."""
    return [(int(a), op, int(b), int(c)) for a, op, b, c in _EXPR.findall(step)]


def group_by_problem(records: list[dict]) -> list[list[dict]]:
    """Records grouped by `problem_id`, in first-seen order."""
    return [[records[i] for i in idx] for idx in group_rows(records, "problem_id").values()]


__all__ = ["ERROR_KINDS", "SLIPS", "ErrorMix", "generate", "group_by_problem", "parse_expressions"]
