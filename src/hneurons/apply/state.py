"""What using a fitted run needs: the model, the probe and the run's prompt and span settings."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hneurons.config import PAPER_SUFFIX, Config, load_config
from hneurons.errors import ConfigError, DataError, FingerprintMismatch, StageError
from hneurons.probe.estimator import HNeuronProbe
from hneurons.rundir import RunDir
from hneurons.text.locator import locate_answer_span, make_llm_locator
from hneurons.text.prompts import render_prompt, user_text
from hneurons.text.spans import Span, SpanFailure

ABSTAIN_TEXT = "I'm not confident enough to answer that."


TOP_NEURONS = 5


ON_LONG = ("truncate", "refuse")


@dataclass
class ScoringState:
    """Everything needed to score or guard: the model, the probe and the run's prompt settings.

    ``record`` are the probe's non-zero neurons (all the probe reads); ``h_neurons`` its positive
    ones, the H-Neurons that α scales.
    """

    loaded: Any  # LoadedModel or an object with .model, .tokenizer, .layout, .name, .fingerprint
    probe: HNeuronProbe
    chat: bool = True
    suffix: str = PAPER_SUFFIX
    max_new_tokens: int = 50
    run_dir: Path | None = None
    span_method: str = "phrase"  # the run's spans.method: the same label-blind rule as training
    span_llm: Any = None  # an LLMSpanLocator for span_method = "llm"

    def __post_init__(self) -> None:
        n = self.loaded.layout.n_neurons
        if int(self.probe.n_features_in_) != n:
            raise FingerprintMismatch(
                f"the probe has {self.probe.n_features_in_} neuron weights but model {self.loaded.name} has {n} "
                "neurons; use the model the probe was fitted on"
            )
        coef = np.asarray(self.probe.coef_)
        self.record = np.flatnonzero(coef)
        self.h_neurons = np.flatnonzero(coef > 0)

    @property
    def max_context(self) -> int | None:
        """The model's context length (``max_position_embeddings``), or None when it has none."""
        value = getattr(getattr(self.loaded.model, "config", None), "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else None

    def user_text(self, question: str) -> str:
        """The user turn as in training (:func:`hneurons.text.prompts.user_text` with the run's suffix)."""
        return user_text(question, self.suffix)

    def prompt(self, question: str) -> str:
        """The rendered prompt a response to ``question`` is generated from."""
        return render_prompt(self.loaded.tokenizer, self.user_text(question), chat=self.chat)

    @property
    def use_span_method(self) -> str:
        """The locator used on new text: the run's rule; the label-aware parity rule ``alias`` has
        no gold answer at use time, so it scores the whole response (what it used for wrong answers)."""
        return "response" if self.span_method == "alias" else self.span_method

    def locate(self, seq: Any, question: str) -> Span | SpanFailure:
        """The answer span of a rendered (question, answer) sequence, as in training."""
        return locate_answer_span(seq, question, self.use_span_method, self.span_llm)

    @property
    def stop(self) -> tuple[str, ...]:
        """Base-model prompts stop at the first newline, as when the run sampled them."""
        return () if self.chat else ("\n",)


def _run_config(manifest: dict[str, Any], path: Path) -> Config:
    recorded = manifest.get("config")
    if not isinstance(recorded, dict):
        raise StageError(f"{path} has no 'config'; it was not written by `hneurons run`")
    flat = {f"{s}.{k}": v for s, sec in recorded.items() if isinstance(sec, dict) for k, v in sec.items()}
    if "seed" in recorded:
        flat["seed"] = recorded["seed"]
    return load_config("paper", overrides=flat)


def load_state(run_dir: str | Path, *, model: Any = None, force: bool = False) -> ScoringState:
    """Read a run's probe and config and load (or check) the model it was fitted on.

    ``model`` (a :class:`~hneurons.core.models.LoadedModel`) is used instead of loading the run's model;
    a model whose fingerprint differs from the run's is refused unless ``force``.
    """
    root = Path(run_dir)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise StageError(f"{root} is not a run directory (no manifest.json); pass the folder `hneurons run` wrote")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{manifest_path} is not valid JSON ({exc}); restore it or re-run the pipeline") from None
    probe_path = root / "probe" / "probe.safetensors"
    if not probe_path.is_file():
        raise StageError(f"{root} has no fitted probe ({probe_path} is missing); run `hneurons probe {root}` first")
    RunDir(root).verify("probe")  # a probe changed since the probe stage wrote it is refused, not used
    cfg = _run_config(manifest, manifest_path)
    probe = HNeuronProbe.load(probe_path)
    run_fp = None
    h_path = root / "probe" / "h_neurons.json"
    if h_path.is_file():
        try:
            run_fp = json.loads(h_path.read_text()).get("model_fingerprint")
        except json.JSONDecodeError:
            run_fp = None
    run_fp = run_fp or (manifest.get("model") or {}).get("fingerprint")
    if model is None:
        from hneurons.core.models import load_model

        m = cfg.model
        model = load_model(m.name, dtype=m.dtype, device=m.device, device_map=m.device_map,
                           trust_remote_code=m.trust_remote_code)
    if run_fp and model.fingerprint != run_fp and not force:
        raise FingerprintMismatch(
            f"{root} was fitted on model {run_fp} but {model.name} is {model.fingerprint}; score with the run's "
            "model (--model) or pass --force to use this one anyway"
        )
    return ScoringState(model, probe, chat=cfg.model.prompt_format == "chat", suffix=cfg.responses.suffix,
                        max_new_tokens=cfg.responses.max_new_tokens, run_dir=root, span_method=cfg.spans.method,
                        span_llm=make_llm_locator(cfg.spans, root / "spans_cache"))


def state_of(run: str | Path | ScoringState, model: Any, force: bool) -> ScoringState:
    return run if isinstance(run, ScoringState) else load_state(run, model=model, force=force)


def apply_probe(state: ScoringState, X_nz: np.ndarray) -> tuple[np.ndarray, list[list[dict[str, Any]]]]:
    """p_hallucination and the top contributing neurons for rows of CETT over ``state.record``.

    The probe reads only its non-zero columns, so a full-width row with zeros elsewhere gives
    exactly :meth:`HNeuronProbe.decision_function` of the full feature vector.
    """
    probe, d_ff = state.probe, state.loaded.layout.d_ff
    X = np.zeros((X_nz.shape[0], int(probe.n_features_in_)), dtype=np.float64)
    X[:, state.record] = X_nz
    p = probe.predict_proba(X)[:, 1] if X.shape[0] else np.empty(0)
    w = np.asarray(probe.coef_)[state.record]
    if hasattr(probe, "scaler_mean_"):
        contrib = w * (X_nz - probe.scaler_mean_[state.record]) / probe.scaler_scale_[state.record]
    else:
        contrib = w * X_nz
    tops = []
    for row in range(X_nz.shape[0]):
        order = np.argsort(-contrib[row], kind="stable")[:TOP_NEURONS]
        tops.append([{"name": state.loaded.layout.neuron_name(int(state.record[j])),
                      "layer": int(state.record[j] // d_ff), "neuron": int(state.record[j] % d_ff),
                      "contribution": float(contrib[row, j]), "cett": float(X_nz[row, j]), "weight": float(w[j])}
                     for j in order])
    return p, tops


def max_context_check(n: int, keep_from: int, limit: int | None, on_long: str, what: str) -> int:
    """How many tokens to drop from the left of a sequence of ``n`` tokens (0 when it fits).

    Only tokens before ``keep_from`` (the prompt) may be dropped; a response that alone exceeds the
    context cannot be scored.
    """
    if on_long not in ON_LONG:
        raise ConfigError(f"on_long must be one of {', '.join(ON_LONG)}, got {on_long!r}")
    if limit is None or n <= limit:
        return 0
    if on_long == "refuse":
        raise DataError(f"{what} has {n} tokens, more than the model's context ({limit}); shorten it or use on_long=truncate")
    cut = n - limit
    if cut > keep_from:
        raise DataError(f"{what}: the response alone needs {n - keep_from} tokens, more than the model's context ({limit}); shorten it")
    warnings.warn(f"{what} has {n} tokens > context {limit}; dropped the first {cut} prompt tokens", stacklevel=3)
    return cut
