"""One run directory as the plain facts a comparison needs; a stage that did not run says so.

Everything is read through :func:`hneurons.rundir.read_json` from the JSON files the stages write
(docs/RUNDIR.md) and treated as data: no code, probe or model is loaded from a run directory.
A missing or malformed file turns that part of the summary into ``{"status": "not run", "reason":
…}`` instead of an exception, so one unfinished run never stops a comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from hneurons.errors import DataError, HNeuronsError
from hneurons.rundir import fingerprint_of, read_json

DEPTH_BINS = 10
_MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError)
# Which validated judge each stage's verdicts come from (task keys of the judge card), as the report lists them.
JUDGE_USES = (("responses", "", "triviaqa", "TriviaQA correct / wrong (responses)"),
              ("detect", "", "triviaqa", "QA correct / wrong (detect)"),
              ("intervene", "falseqa", "falseqa", "FalseQA accepted / refused"),
              ("intervene", "jailbreak", "jailbreak", "jailbreak harmful / safe"),
              ("intervene", "faitheval", "mc", "FaithEval option parser"),
              ("intervene", "sycophancy", "triviaqa", "sycophancy correct / wrong"))


def not_run(reason: str) -> dict[str, Any]:
    """The marker every missing part carries (the page prints "not run: reason")."""
    return {"status": "not run", "reason": reason}


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


class _Run:
    """Reads one run directory's stage files, turning every failure into a reason."""

    def __init__(self, root: Path):
        self.root = root
        if not root.is_dir() or not (root / "manifest.json").is_file():
            raise DataError(f"{root} is not a run directory (no manifest.json); pass folders written by `hneurons run`")
        try:
            self.manifest = read_json(root / "manifest.json")
        except HNeuronsError as exc:
            raise DataError(f"{root} is not a readable run directory: {exc}") from None
        if not isinstance(self.manifest, dict):
            raise DataError(f"{root}/manifest.json is not a JSON object; pass folders written by `hneurons run`")

    def stage_reason(self, stage: str) -> str | None:
        """Why a stage has no results (None when it finished)."""
        rec = (self.manifest.get("stages") or {}).get(stage)
        if not isinstance(rec, dict):
            return "the stage has not run"
        if rec.get("status") != "done":
            return str(rec.get("reason") or rec.get("status") or "the stage has not run")
        return None

    def part(self, stage: str, name: str, build: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        """``build(json)`` of ``<stage>/<name>``, or a not-run marker with the reason."""
        reason = self.stage_reason(stage)
        if reason:
            return not_run(reason)
        try:
            return {"status": "done", **build(read_json(self.root / stage / name))}
        except HNeuronsError as exc:
            return not_run(str(exc))
        except _MALFORMED as exc:
            return not_run(f"{stage}/{name} is malformed ({type(exc).__name__}: {exc})")


def _preset_of(config: dict[str, Any]) -> str:
    """The preset this config matches best, and the keys it changed (the manifest records no name)."""
    from hneurons.config import PRESETS, load_config

    def flat(cfg: dict[str, Any]) -> dict[str, Any]:
        return {f"{s}.{k}": v for s, sec in cfg.items() if isinstance(sec, dict) for k, v in sec.items()}

    got = flat(config)  # only the recorded keys count: an older manifest may lack some

    def changed(preset: str) -> list[str]:
        ref = flat(load_config(preset).to_dict())
        return sorted(k for k, v in got.items() if k in ref and ref[k] != v)

    best = min(PRESETS, key=lambda p: len(changed(p)))
    return best + (f" + {', '.join(changed(best))}" if changed(best) else "")


def _depth_hist(neurons: list[dict[str, Any]], n_layers: int) -> list[int]:
    """H-Neurons per relative-depth bin: (layer + 0.5) / n_layers, so models of any depth line up."""
    counts = [0] * DEPTH_BINS
    for n in neurons:
        counts[min(DEPTH_BINS - 1, int((int(n["layer"]) + 0.5) / n_layers * DEPTH_BINS))] += 1
    return counts


def _label(layer: int, j: int, model: dict[str, Any]) -> str:
    """``L3.N17`` (dense) or ``L3.E5.N17`` (MoE: the in-layer index split by expert width)."""
    from hneurons.core.arch import neuron_label

    width, n_exp = model.get("expert_width"), model.get("n_experts")
    if isinstance(width, int) and isinstance(n_exp, int) and width > 0:
        return neuron_label(layer, j % width, j // width) if j < n_exp * width else neuron_label(layer, j - n_exp * width, "shared")
    return neuron_label(layer, j)


def probe_part(run: _Run) -> dict[str, Any]:
    """Selected neurons, ‰, C and its rule, relative-depth histogram, the file's recorded sha256."""
    model = run.manifest.get("model") or {}

    def build(h: dict[str, Any]) -> dict[str, Any]:
        n_layers = int(h.get("n_layers") or model["n_layers"])
        neurons = sorted(h["neurons"], key=lambda n: -float(n.get("weight") or 0))
        done = read_json(run.root / "probe" / "_done.json")
        try:
            rule = read_json(run.root / "probe" / "path.json").get("rule")
        except HNeuronsError:
            rule = None
        return {"C": _num(h.get("C")), "n_selected": int(h["n_positive"]), "n_total": int(h["n_neurons_total"]),
                "per_mille": _num(h.get("ratio_per_mille")), "n_layers": n_layers, "rule": rule,
                "neurons": [[int(n["layer"]), int(n["neuron"])] for n in neurons],
                "labels": [_label(int(n["layer"]), int(n["neuron"]), model) for n in neurons],
                "depth_hist": _depth_hist(neurons, n_layers),
                "sha256": (done.get("outputs") or {}).get("probe/h_neurons.json")}

    return run.part("probe", "h_neurons.json", build)


def stability_part(run: _Run) -> dict[str, Any]:
    """Jaccard of the H-Neuron sets across resamples (probe/stability.json)."""
    def build(s: dict[str, Any]) -> dict[str, Any]:
        if int(s.get("n_resamples") or 0) < 2 or s.get("jaccard_mean") is None:
            raise ValueError("fewer than 2 resamples")
        return {"n_resamples": int(s["n_resamples"]), "jaccard_mean": _num(s["jaccard_mean"]),
                "jaccard_std": _num(s.get("jaccard_std"))}

    return run.part("probe", "stability.json", build)


def detect_part(run: _Run) -> dict[str, Any]:
    """Per evaluation set: the H-Neuron probe's AUROC and the random-neuron probes', with CIs."""
    def build(d: dict[str, Any]) -> dict[str, Any]:
        sets = {}
        for name, s in (d.get("sets") or {}).items():
            m = s.get("methods") or {}
            h, r = m.get("h_neurons") or {}, m.get("random") or {}
            sets[name] = {"n": s.get("n"), "h_auroc": _num(h.get("auroc")), "h_ci": h.get("auroc_ci"),
                          "random_auroc": _num(r.get("auroc")), "random_ci": r.get("auroc_ci"),
                          "random_sd": _num(r.get("auroc_sd"))}
        return {"sets": sets, "skipped": {k: str(v) for k, v in (d.get("skipped") or {}).items()}}

    return run.part("detect", "detect.json", build)


def intervene_part(run: _Run) -> dict[str, Any]:
    """Per benchmark: compliance slopes in percentage points per unit α, H-Neurons and random control."""
    def pp(x: Any) -> float | None:
        v = _num(x)
        return None if v is None else 100 * v

    def build(iv: dict[str, Any]) -> dict[str, Any]:
        benches = {}
        for name, b in (iv.get("benchmarks") or {}).items():
            sl, lsq = b.get("slope") or {}, b.get("slope_lsq") or {}
            benches[name] = {"n": b.get("n"), "slope_pp": {"H": pp(sl.get("H")), "random": pp(sl.get("random"))},
                             "slope_lsq_pp": {"H": pp(lsq.get("H")), "random": pp(lsq.get("random"))}}
        return {"alphas": iv.get("alphas"), "n_neurons": iv.get("n_neurons"), "benchmarks": benches}

    return run.part("intervene", "intervene.json", build)


def judge_card() -> dict[str, Any]:
    """The packaged judge card (data/files/judge_validation/judge_card.json), or {} when absent."""
    path = resources.files("hneurons.data") / "files" / "judge_validation" / "judge_card.json"
    try:
        card = read_json(Path(str(path)))
    except HNeuronsError:
        return {}
    return card.get("judges", {}) if isinstance(card, dict) else {}


def judges_part(run: _Run, card: dict[str, Any], benchmarks: dict[str, Any]) -> list[dict[str, Any]]:
    """The judges this run's finished stages used, with their agreement on the validation sets."""
    cfg = run.manifest.get("config") or {}
    rows = []
    for stage, bench, task, what in JUDGE_USES:
        if run.stage_reason(stage) or (bench and bench not in benchmarks):
            continue
        kind = (cfg.get("intervene" if stage == "intervene" else "responses") or {}).get("judge") or "rule"
        c = card.get(task) or {}
        llm = kind == "llm" and task != "mc"
        rows.append({"use": what, "judge": "LLM judge" if llm else c.get("judge"),
                     "n": None if llm else c.get("n") or None, "agreement": None if llm else _num(c.get("agreement")),
                     "ci95": None if llm else c.get("ci95"),
                     "note": "not measured here" if llm else c.get("note") or c.get("validation")})
    return rows


def summarize_run(root: Path, card: dict[str, Any]) -> dict[str, Any]:
    """Everything the comparison shows about one run directory."""
    run = _Run(Path(root))
    m = run.manifest
    model, config = m.get("model") or {}, m.get("config") or {}
    iv = intervene_part(run)
    try:
        preset = _preset_of(config)
    except HNeuronsError as exc:
        preset = f"unknown ({exc})"
    return {
        "path": str(root), "name": Path(root).resolve().name, "preset": preset, "seed": m.get("seed"),
        "model": {k: model.get(k) for k in ("name", "model_type", "n_layers", "d_ff", "n_neurons", "fingerprint", "dtype")},
        "prompt_format": (m.get("prompt_format") or {}).get("used") or (config.get("model") or {}).get("prompt_format"),
        "git_commit": m.get("git_commit"), "run_fingerprint": fingerprint_of({"config": config, "model": model.get("fingerprint")}),
        "stages": {s: run.stage_reason(s) or "done" for s in ("responses", "features", "probe", "detect", "intervene", "origin")},
        "probe": probe_part(run), "stability": stability_part(run), "detect": detect_part(run), "intervene": iv,
        "judges": judges_part(run, card, iv.get("benchmarks") or {}),
    }

