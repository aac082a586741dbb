"""What using a fitted run needs: the model, the probe and the run's prompt and span settings.

A run directory or probe file is data from someone else: its probe is used only after its files
hash as the probe stage recorded them and its weights are finite and of the recorded shape, and
the model, its code and every endpoint come from the caller (:mod:`hneurons.trust`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hneurons.config import PAPER_SUFFIX, Config
from hneurons.core.arch import neuron_label
from hneurons.errors import ConfigError, DataError, FingerprintMismatch, StageError
from hneurons.probe.estimator import HNeuronProbe
from hneurons.rundir import RunDir
from hneurons.trust import (caller_config, quote_value, read_manifest, recorded_fingerprint, recorded_settings,
                            source_fingerprint)
from hneurons.text.locator import locate_answer_span, make_llm_locator
from hneurons.text.prompts import answer_stop, render_prompt, user_text
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
        return answer_stop(self.chat)


@dataclass
class FittedProbe:
    """A fitted probe and what its run directory or probe file records about it (all of it data).

    ``settings`` are the recorded config as flat ``section.key`` values; the caller-only ones among
    them are dropped by :func:`hneurons.trust.caller_config` before anything uses them.
    """

    probe: HNeuronProbe
    where: str  # the run directory or probe file, for messages
    settings: dict[str, Any]
    fingerprint: str | None  # the model it was fitted on
    model_label: str | None
    n_layers: int | None
    d_ff: int | None
    rebuild: str  # what to do when it is damaged
    cache_dir: Path | None = None  # where the LLM span locator caches replies


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def check_probe(fitted: FittedProbe) -> None:
    """Refuse a probe whose weights could not have come from a fit: wrong shape or not finite."""
    p, where, fix = fitted.probe, fitted.where, fitted.rebuild
    n = int(p.n_features_in_)
    coef = np.asarray(p.coef_)
    if coef.shape != (n,):
        raise DataError(f"{where}: the probe has weights of shape {coef.shape} for {n} neurons; {fix}")
    bad = np.flatnonzero(~np.isfinite(coef))
    if bad.size:
        f = int(bad[0])
        name = neuron_label(f // fitted.d_ff, f % fitted.d_ff) if fitted.d_ff else f"#{f}"
        raise DataError(f"{where}: the probe's weight of neuron {name} is {coef[f]}; weights must be finite, {fix}")
    if not np.isfinite(p.intercept_):
        raise DataError(f"{where}: the probe's intercept is {p.intercept_}; it must be finite, {fix}")
    for attr in ("scaler_mean_", "scaler_scale_"):
        if hasattr(p, attr):
            arr = np.asarray(getattr(p, attr))
            if arr.shape != (n,) or not np.isfinite(arr).all() or (attr == "scaler_scale_" and (arr <= 0).any()):
                raise DataError(f"{where}: the probe's {attr.rstrip('_')} is not {n} finite (positive) numbers; {fix}")
    if fitted.n_layers and fitted.d_ff and fitted.n_layers * fitted.d_ff != n:
        raise DataError(f"{where}: {n} weights do not fit {fitted.n_layers} layers × {fitted.d_ff} neurons; {fix}")


def read_run_probe(run_dir: str | Path) -> FittedProbe:
    """A run directory's probe, checked: manifest an object, probe files as the probe stage hashed them
    (a missing or unreadable marker is refused), weights finite and of the recorded shape."""
    root = Path(run_dir)
    manifest = read_manifest(root)
    settings = recorded_settings(manifest, root / "manifest.json")
    probe_path = root / "probe" / "probe.safetensors"
    if not probe_path.is_file():
        raise StageError(f"{root} has no fitted probe ({probe_path} is missing); run `hneurons probe {root}` first")
    RunDir(root).verify("probe", required=True)  # changed, or nothing vouches for it: refused, not used
    probe = HNeuronProbe.load(probe_path)
    try:
        h = json.loads((root / "probe" / "h_neurons.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        h = {}
    h = h if isinstance(h, dict) else {}
    fp, label = recorded_fingerprint(manifest)
    fp = h.get("model_fingerprint") if isinstance(h.get("model_fingerprint"), str) else fp
    fitted = FittedProbe(probe, str(root), settings, fp, label, _count(h.get("n_layers")),
                         _count(h.get("d_ff")) or _count(probe.d_ff), f"rebuild it with `hneurons probe {root} --force`",
                         root / "spans_cache")
    check_probe(fitted)
    return fitted


def _check_fingerprint(fitted: FittedProbe, fingerprint: str, what: str, force: bool) -> None:
    if fitted.fingerprint and fingerprint != fitted.fingerprint and not force:
        made = f" (recorded as {quote_value(fitted.model_label)})" if fitted.model_label else ""
        raise FingerprintMismatch(
            f"{fitted.where} was fitted on model {fitted.fingerprint}{made} but {what} is {fingerprint}; pass --model "
            "with the model it was fitted on, or --force to use this one anyway")


def _load_checked(fitted: FittedProbe, cfg: Config, force: bool) -> Any:
    """The caller's model, its fingerprint compared with the probe's before anything of it is imported."""
    from hneurons.core.models import load_model

    m = cfg.model
    source, fp = source_fingerprint(m.name)
    _check_fingerprint(fitted, fp, str(source), force)
    return load_model(source, dtype=m.dtype, device=m.device, device_map=m.device_map,
                      trust_remote_code=m.trust_remote_code)


def load_state(source: str | Path, *, model: Any = None, force: bool = False,
               overrides: Mapping[str, Any] | None = None, note: Callable[[str], None] | None = None) -> ScoringState:
    """A probe — from a run directory or a portable probe file (``hneurons export``) — and its model.

    The model, its remote code and every endpoint come from ``overrides`` (the caller's ``--model``,
    ``--set``, ``--trust-remote-code``) or ``model`` (a :class:`~hneurons.core.models.LoadedModel`),
    never from the run (:mod:`hneurons.trust`). A model whose fingerprint differs from the probe's is
    refused unless ``force``; when this function loads it, that is checked before it is imported.
    """
    path = Path(source)
    if path.is_file():
        from hneurons.apply.portable import read_portable

        fitted = read_portable(path)
    else:
        fitted = read_run_probe(path)
    given = ("model.name", "model.trust_remote_code") if model is not None else ()
    cfg = caller_config(fitted.settings, dict(overrides or {}), source=fitted.where, given=given, note=note)
    span_llm = make_llm_locator(cfg.spans, fitted.cache_dir)  # an endpoint is named (or refused) before any model
    if model is None:
        model = _load_checked(fitted, cfg, force)
    else:
        _check_fingerprint(fitted, model.fingerprint, str(model.name), force)
    layout = model.layout
    if fitted.d_ff and fitted.n_layers and (layout.d_ff, layout.n_layers) != (fitted.d_ff, fitted.n_layers):
        raise FingerprintMismatch(f"{fitted.where} was fitted on a model with {fitted.n_layers} layers × {fitted.d_ff} "
                                  f"neurons but {model.name} has {layout.n_layers} × {layout.d_ff}; use the model it "
                                  "was fitted on")
    return ScoringState(model, fitted.probe, chat=cfg.model.prompt_format == "chat", suffix=cfg.responses.suffix,
                        max_new_tokens=cfg.responses.max_new_tokens, run_dir=None if path.is_file() else path,
                        span_method=cfg.spans.method, span_llm=span_llm)


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
