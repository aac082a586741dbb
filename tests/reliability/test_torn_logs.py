"""Resume logs survive a kill at any byte of an append: the resumed run writes the same files.

A kill -9 during ``append_jsonl`` leaves the log cut at some byte. Truncating a finished log at
every interesting offset simulates every such kill; each truncated log is then resumed with the
same (deterministic, fake) backend, and the result must equal the log of a run that was never
interrupted, byte for byte, with no (unit, sample) twice.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import bpe_tokenizer  # noqa: E402

from hneurons.config import load_config  # noqa: E402
from hneurons.data.registry import Record  # noqa: E402
from hneurons.errors import StageError  # noqa: E402
from hneurons.core.generation import Generation, SamplingParams, row_seed  # noqa: E402
from hneurons.rundir import RunDir, append_jsonl, read_jsonl, repair_jsonl  # noqa: E402

WORDS = ["paris", "rome", "berlin", "oslo", "lima", "kyiv", "quito", "minsk"]


class FakeBackend:
    """Deterministic per (seed, row, sample), like HFBackend: the text depends on nothing else."""

    name = "fake"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, prompts, params: SamplingParams, progress: bool = True):
        self.calls += 1
        out = []
        for i, prompt in enumerate(prompts):
            row = []
            for j in range(params.n):
                h = hashlib.sha256(f"{prompt}|{row_seed(params.seed, i, j)}|{params.temperature}".encode()).digest()
                text = WORDS[h[0] % len(WORDS)] + (" é" if h[1] % 5 == 0 else "")  # some non-ASCII bytes
                row.append(Generation(text, tuple(h[2:2 + 1 + h[3] % 4]), "stop"))
            out.append(row)
        return out


def _offsets(data: bytes, n_random: int, seed: int) -> list[int]:
    """Every line boundary and its neighbours, the middle of every line, and random bytes."""
    cuts = {0, len(data)}
    pos = 0
    for line in data.split(b"\n")[:-1]:
        start, end = pos, pos + len(line) + 1
        cuts.update({start + 1, start + len(line) // 2, end - 2, end - 1, end})
        pos = end
    rng = random.Random(seed)
    cuts.update(rng.randrange(len(data) + 1) for _ in range(n_random))
    return sorted(c for c in cuts if 0 <= c <= len(data))


# ----------------------------------------------------------------------------- the log helpers


def test_repair_cuts_a_torn_record_and_keeps_a_whole_one(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    append_jsonl(log, [{"i": 0}, {"i": 1}])
    whole = log.read_bytes()
    log.write_bytes(whole + b'{"i": 2, "te')  # killed inside the third record
    assert repair_jsonl(log) == len(b'{"i": 2, "te') and log.read_bytes() == whole
    log.write_bytes(whole + b'{"i": 2}')  # killed just before its newline: the record is whole
    assert repair_jsonl(log) == 0 and log.read_bytes() == whole + b'{"i": 2}\n'
    log.write_bytes(whole + '{"t": "\u00e9'.encode()[:-1])  # cut inside a UTF-8 character
    append_jsonl(log, [{"i": 3}])  # appending repairs first: the new record never lands on a fragment
    assert [r["i"] for r in read_jsonl(log)] == [0, 1, 3]
    log.write_bytes(whole + b"not json\n" + b'{"i": 9}\n')  # damage in the middle is not a torn append
    with pytest.raises(StageError, match="line 3: not valid JSON"):
        read_jsonl(log)


def test_read_drops_repeated_keys(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    append_jsonl(log, [{"q": "a", "s": 0, "v": 1}, {"q": "a", "s": 1}, {"q": "a", "s": 0, "v": 2}])
    got = read_jsonl(log, key=lambda r: (r["q"], r["s"]))
    assert [(r["s"], r.get("v")) for r in got] == [(0, 1), (1, None)]


# ----------------------------------------------------------------------------- responses stage


def _responses_ctx(root: Path):
    cfg = load_config("smoke", overrides={"responses.k": 3, "seed": 7})
    return SimpleNamespace(cfg=cfg, rundir=RunDir(root), log=lambda m: None)


def _responses_run(root: Path) -> tuple[bytes, int]:
    """Screen + sample phases over 10 questions (chunks of 4 and 2), as ``responses.run`` does."""
    from hneurons.stages.responses import _Sampler, read_samples

    ctx = _responses_ctx(root)
    records = [Record(f"q{i}", f"question {i}?", (WORDS[i % len(WORDS)],)) for i in range(10)]
    prompts = {r.id: f"<user>{r.question}" for r in records}
    backend = FakeBackend()

    def judge(rec, text):
        return ("correct" if rec.answers[0] in text else "wrong"), None

    done = read_samples(ctx)
    sampler = _Sampler(ctx, backend, prompts, judge, done)
    sampler.phase(records, "screen", SamplingParams(temperature=0.0, n=1), chunk=4)
    sampler.phase(records[2:], "sample", SamplingParams(n=3), chunk=2)
    for rows in done.values():  # what responses.parquet and the consistency filter see
        assert len({r["sample"] for r in rows}) == len(rows)
    return ctx.rundir.path("responses", "samples.jsonl").read_bytes(), backend.calls


def test_responses_resume_from_every_torn_append(tmp_path: Path) -> None:
    full, calls = _responses_run(tmp_path / "clean")
    lines = full.decode().splitlines()
    assert len(lines) == 10 + 8 * 3
    keys = Counter((r["qid"], r["phase"], r["sample"]) for r in map(json.loads, lines))
    assert max(keys.values()) == 1
    offsets = _offsets(full, n_random=20, seed=1)
    assert len(offsets) > 100
    for b in offsets:
        root = tmp_path / f"cut{b}"
        log = root / "responses" / "samples.jsonl"
        log.parent.mkdir(parents=True)
        log.write_bytes(full[:b])
        resumed, resumed_calls = _responses_run(root)
        assert resumed == full, f"resume after a cut at byte {b} differs"
        assert resumed_calls <= calls
    # nothing left to do: a resumed finished log samples nothing
    assert _responses_run(tmp_path / "cut" f"{len(full)}")[1] == 0


# ----------------------------------------------------------------------------- detect / origin logs


def _set_ctx(root: Path, monkeypatch: pytest.MonkeyPatch, backend: FakeBackend):
    import hneurons.core.generation
    import hneurons.stages.detect as detect_stage

    monkeypatch.setattr(detect_stage, "sampling_backend", lambda ctx: backend)
    monkeypatch.setattr(hneurons.core.generation, "HFBackend", lambda *a, **k: backend)
    tok = bpe_tokenizer()
    cfg = load_config("smoke", overrides={"seed": 3})
    loaded = SimpleNamespace(tokenizer=tok, fingerprint="fp-fake", model=None)
    return SimpleNamespace(cfg=cfg, rundir=RunDir(root), log=lambda m: None, model=loaded,
                           model_fingerprint="fp-fake"), loaded


@pytest.mark.parametrize("stage", ["detect", "origin"])
def test_detect_and_origin_resume_from_torn_appends(stage: str, tmp_path: Path, monkeypatch) -> None:
    import hneurons.stages.detect as detect_stage
    import hneurons.stages.origin as origin_stage

    recs = [Record(f"d{i}", f"what is {i}?", ("x",)) for i in range(37)]  # two chunks of 32 (one short)

    def sample(root: Path) -> bytes:
        backend = FakeBackend()
        ctx, loaded = _set_ctx(root, monkeypatch, backend)
        if stage == "detect":
            done = detect_stage._sample(ctx, "triviaqa", recs)
        else:
            done = origin_stage._sample(ctx, loaded, "triviaqa", recs)
        assert sorted(done) == sorted(r.id for r in recs)
        return (root / stage / "samples_triviaqa.jsonl").read_bytes()

    full = sample(tmp_path / "clean")
    assert len(full.splitlines()) == 37
    for b in _offsets(full, n_random=10, seed=2)[::3]:
        root = tmp_path / f"cut{b}"
        (root / stage).mkdir(parents=True)
        (root / stage / "samples_triviaqa.jsonl").write_bytes(full[:b])
        assert sample(root) == full, f"{stage}: resume after a cut at byte {b} differs"


# ----------------------------------------------------------------------------- intervene and score logs


def test_intervene_progress_resumes_from_torn_appends(tmp_path: Path) -> None:
    from contextlib import contextmanager

    import numpy as np

    from hneurons.intervention.tasks import Item, Judge
    from hneurons.intervention.sweep import SweepSettings, sweep

    items = {"falseqa": [Item(f"f{i}", f"Why is the sun cold {i}?", Record(f"f{i}", f"Why is the sun cold {i}?", label=1))
                         for i in range(6)]}

    def generate(convs, params):
        return [Generation(f"answer {hashlib.sha256(repr((c, params.seed)).encode()).hexdigest()[:6]}", (1,), "stop")
                for c in convs]

    @contextmanager
    def scaler(neurons, alpha):
        yield

    def run(path: Path) -> bytes:
        settings = SweepSettings(path, "key", [0.0, 1.0, 2.0], max_new_tokens=8, seed=0, chunk_size=4,
                                 log=lambda m: None)
        sweep(settings, items, {"H": np.array([1, 2]), "random_0": np.array([3, 4])}, generate, Judge(), scaler)
        return path.read_bytes()

    full = run(tmp_path / "clean.jsonl")
    assert len(full.splitlines()) == 6 * 5  # α = 1 once, α = 0 and 2 for both conditions
    for b in _offsets(full, n_random=10, seed=3)[::4]:
        path = tmp_path / f"cut{b}.jsonl"
        path.write_bytes(full[:b])
        assert run(path) == full, f"intervene: resume after a cut at byte {b} differs"


def test_score_output_resumes_from_torn_appends(tmp_path: Path, monkeypatch) -> None:
    import hneurons.apply.score as scoring

    monkeypatch.setattr(scoring, "state_of", lambda run, model, force: None)
    monkeypatch.setattr(scoring, "probe_key", lambda state: "probe-under-test")  # no real probe here
    monkeypatch.setattr(scoring, "score", lambda state, part, **kw: [{"id": it["id"], "p_hallucination": len(it["question"]) / 100}
                                                                   for it in part])
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"i{n}", "question": "q" * n}) + "\n" for n in range(1, 12)))

    def run(out: Path) -> bytes:
        scoring.score_file("unused", inp, out, batch_size=4, progress=False)
        return out.read_bytes()

    full = run(tmp_path / "clean.jsonl")
    for b in _offsets(full, n_random=5, seed=4)[::3]:
        out = tmp_path / f"cut{b}.jsonl"
        out.write_bytes(full[:b])
        assert run(out) == full, f"score: resume after a cut at byte {b} differs"
