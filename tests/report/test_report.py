"""`edgeprm report`: the page holds every figure (the images decode), the per-source counts match the file, it
references nothing outside itself; Best-of-N accuracy against brute force over subsets."""

import base64
import io
import itertools
import random
from collections import Counter
from html.parser import HTMLParser

import pytest
from PIL import Image

from edgeprm.cli import main
from edgeprm.demo.synthetic import generate
from edgeprm.report.data import best_of_n_curve, calibration_table
from edgeprm.rows import read_jsonl, write_jsonl
from edgeprm.select.policy import rank_key

FIGURES = {"score_distribution", "step_curves", "first_doubt", "best_of_n", "calibration"}


class Page(HTMLParser):
    """The images (by figure id), the source table's rows, and every URL-bearing attribute."""

    def __init__(self):
        super().__init__()
        self.figure, self.images, self.sources, self.urls, self.tags = None, {}, {}, [], Counter()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] += 1
        if tag == "figure":
            self.figure = a["id"].removeprefix("fig-")
        if tag == "img":
            self.images[self.figure] = a["src"]
        if tag == "tr" and "data-source" in a:
            self.sources[a["data-source"]] = int(a["data-rows"])
        self.urls += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith("data:")]


@pytest.fixture(scope="module")
def scored(scorers, tmp_path_factory):
    """Synthetic Best-of-4 problems from unequal-sized sources, scored by a tiny step-classifier."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    rows = []
    for r in generate(30, candidates=4, seed=seed % 1000):
        rows.append({"id": r["id"], "group": r["problem_id"], "problem": r["problem"], "steps": r["steps"],
                     "is_correct": r["is_correct"], "source": rng.choices(["sft", "rl <v2>", "teacher"],
                                                                          [5, 3, 1])[0]})
    results = scorers["step-classifier"].score_batch(rows)
    path = tmp_path_factory.mktemp("report") / "scored.jsonl"
    write_jsonl([{**r, **s.to_dict(with_id=False)} for r, s in zip(rows, results)], path)
    return path


def test_report_holds_every_figure_and_the_source_counts(scored, tmp_path, capsys):
    out, png = tmp_path / "report.html", tmp_path / "png"
    assert main(["report", str(scored), "-o", str(out), "--png", str(png)]) == 0
    assert "3 sources, Best-of-N and calibration" in capsys.readouterr().err
    page = Page()
    page.feed(out.read_text(encoding="utf-8"))
    assert set(page.images) == FIGURES
    for name, src in page.images.items():
        raw = base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True)
        img = Image.open(io.BytesIO(raw))
        img.load()  # decodes every pixel
        assert img.format == "PNG" and img.width > 300 and img.height > 200, name
        assert (png / f"{name}.png").read_bytes() == raw  # --png writes the same images
    assert page.sources == dict(Counter(r["source"] for r in read_jsonl(scored)))
    assert "rl &lt;v2&gt;" in out.read_text()  # user text is escaped
    assert page.urls == [] and page.tags["script"] == 0 and page.tags["link"] == 0  # opens offline


def test_report_without_labels_or_sources(tmp_path):
    rows = [{"id": i, "problem": "p", "step_rewards": [0.9, 0.2 * (i % 3)], "trajectory_reward": 0.5, "score": 0.1 * i}
            for i in range(12)]
    write_jsonl(rows, tmp_path / "s.jsonl")
    assert main(["report", str(tmp_path / "s.jsonl"), "-o", str(tmp_path / "r.html"), "--score", "reasonflux"]) == 0
    page = Page()
    page.feed((tmp_path / "r.html").read_text())
    assert set(page.images) == {"score_distribution", "step_curves", "first_doubt"}
    assert page.sources == {"all rows": 12}
    write_jsonl([{"id": 1, "problem": "p"}], tmp_path / "unscored.jsonl")
    assert main(["report", str(tmp_path / "unscored.jsonl"), "-o", str(tmp_path / "x.html")]) == 2


def test_best_of_n_curve_equals_brute_force_over_subsets():
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    groups, index = [], 0
    for _ in range(17):
        g = []
        for _ in range(rng.randint(1, 6)):
            g.append((rank_key(rng.choice([0.2, 0.5, rng.random()]), index), rng.random() < 0.4))
            index += 1
        groups.append(g)
    for row in best_of_n_curve(groups):
        n, prm, rnd, oracle, used = row["n"], 0.0, 0.0, 0.0, 0
        for g in groups:
            if len(g) < n:
                continue
            used += 1
            subsets = list(itertools.combinations(g, n))
            prm += sum(max(s, key=lambda c: c[0])[1] for s in subsets) / len(subsets)
            rnd += sum(c for _, c in g) / len(g)
            oracle += sum(any(c for _, c in s) for s in subsets) / len(subsets)
        assert row["groups"] == used
        assert (row["prm"], row["random"], row["oracle"]) == pytest.approx((prm / used, rnd / used, oracle / used)), \
            f"seed {seed} n {n}"


def test_calibration_bins_and_ece():
    pairs = [(0.05, False), (0.15, True), (0.95, True), (0.91, True), (0.5, False), (1.0, True)]
    table, ece = calibration_table(pairs, 10)
    assert [(b["count"], b["correct"]) for b in table] == [(1, 0.0), (1, 1.0), (1, 0.0), (3, 1.0)]
    want = (abs(0.05 - 0) + abs(0.15 - 1) + abs(0.5 - 0) + 3 * abs((0.95 + 0.91 + 1.0) / 3 - 1)) / 6
    assert ece == pytest.approx(want)
    table, ece = calibration_table([(-1.0, False), (2.0, True)], 4)  # reasonflux scores leave [0, 1]
    assert ece is None and table[0]["lo"] == -1.0 and table[-1]["hi"] == 2.0
