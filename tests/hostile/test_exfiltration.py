"""A run directory never makes the tool open a connection, and every connection the caller asks for
is named once on stderr and refused under --offline / HNEURONS_OFFLINE=1.

A listener on 127.0.0.1 records every connection it gets. Before the fix, a manifest's
``spans.llm_url`` made ``score`` post every question and answer to it (exit 0, nothing printed), and
``responses.backend_url`` / ``responses.judge_url`` did the same for the responses stage.
"""

from __future__ import annotations

import json

import pytest
from hostile_kit import make_run, write_items

SMALL_RESPONSES = {"responses.dataset": "smoke_qa", "responses.n_questions": 4, "responses.k": 1,
                   "responses.screen": False, "responses.min_per_class": 1}


def test_score_never_sends_to_the_manifests_span_url(tmp_path, tiny_model, listener, hneurons) -> None:
    run = make_run(tmp_path / "run", tiny_model, settings={
        "spans.method": "llm", "spans.llm_url": listener.url, "spans.llm_model": "exfil"})
    code, _, err = hneurons("score", run, "--input", write_items(tmp_path / "in.jsonl"), "-o", tmp_path / "out.jsonl",
                            "--model", tiny_model)
    assert listener.received == 0, listener.requests[:1]
    assert code == 2 and not (tmp_path / "out.jsonl").exists()
    assert err[0].startswith("note: ignored spans.llm_url=") and f"--set spans.llm_url={listener.url}" in err[0]
    assert err[-1].startswith("error:") and "spans.llm_url" in err[-1]


@pytest.mark.parametrize("settings", [
    {"responses.backend": "openai", "responses.backend_url": "URL", "responses.backend_model": "exfil"},
    {"responses.judge": "llm", "responses.judge_url": "URL", "responses.judge_model": "exfil"},
], ids=["backend_url", "judge_url"])
def test_responses_stage_never_sends_to_the_manifests_urls(settings, tmp_path, tiny_model, listener, hneurons) -> None:
    settings = {k: (listener.url if v == "URL" else v) for k, v in settings.items()}
    run = make_run(tmp_path / "run", tiny_model, settings={**SMALL_RESPONSES, **settings})
    code, _, err = hneurons("responses", run, "--model", tiny_model)
    assert listener.received == 0, listener.requests[:1]
    assert code == 2, err
    key = next(k for k in settings if k.endswith("_url"))
    assert any(ln.startswith(f"note: ignored {key}=") for ln in err), err
    assert err[-1].startswith("error:") and key in err[-1]


def test_every_manifest_url_ignored_while_score_succeeds(tmp_path, tiny_model, listener, hneurons,
                                                         monkeypatch) -> None:
    """With the Hub offline (HF_HUB_OFFLINE=1, as in every test run) and every URL and the model in
    the manifest pointing elsewhere, scoring works and nothing is contacted."""
    urls = {k: listener.url for k in ("responses.backend_url", "responses.judge_url", "intervene.judge_url",
                                      "spans.llm_url")}
    run = make_run(tmp_path / "run", tiny_model, settings={"model.name": "some-org/some-hub-model", **urls})
    out = tmp_path / "out.jsonl"
    monkeypatch.setenv("HNEURONS_MODEL", str(tiny_model))  # the caller's model, from their environment
    code, _, err = hneurons("score", run, "--input", write_items(tmp_path / "in.jsonl"), "-o", out)
    assert code == 0, err
    assert listener.received == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r["p_hallucination"] is not None for r in rows)
    (note,) = [ln for ln in err if ln.startswith("note:")]
    assert all(f"{k}=" in note for k in urls) and "model.name=some-org/some-hub-model" in note


@pytest.mark.parametrize("how", ["flag", "env"])
def test_offline_refuses_the_callers_own_endpoint(how, tmp_path, tiny_model, listener, hneurons, monkeypatch) -> None:
    run = make_run(tmp_path / "run", tiny_model)
    args = ["score", run, "--input", write_items(tmp_path / "in.jsonl"), "-o", tmp_path / "out.jsonl",
            "--model", tiny_model, "--set", "spans.method=llm", "--set", f"spans.llm_url={listener.url}",
            "--set", "spans.llm_model=m"]
    if how == "flag":
        args.append("--offline")
    else:
        monkeypatch.setenv("HNEURONS_OFFLINE", "1")
    code, _, err = hneurons(*args)
    assert listener.received == 0
    assert code == 2 and len(err) == 1 and err[0].startswith("error: offline") and listener.url in err[0], err


def test_offline_stage_command_refuses_the_callers_backend(tmp_path, tiny_model, listener, hneurons) -> None:
    run = make_run(tmp_path / "run", tiny_model, settings=SMALL_RESPONSES)
    code, _, err = hneurons("responses", run, "--model", tiny_model, "--offline", "--set", "responses.backend=openai",
                            "--set", f"responses.backend_url={listener.url}", "--set", "responses.backend_model=m")
    assert listener.received == 0
    assert code == 2 and err[-1].startswith("error: offline") and listener.url in err[-1], err


def test_the_callers_endpoint_is_named_once_on_stderr(tmp_path, tiny_model, listener, hneurons) -> None:
    run = make_run(tmp_path / "run", tiny_model)
    code, _, err = hneurons("score", run, "--input", write_items(tmp_path / "in.jsonl"), "-o", tmp_path / "out.jsonl",
                            "--model", tiny_model, "--set", "spans.method=llm", "--set", f"spans.llm_url={listener.url}",
                            "--set", "spans.llm_model=m")
    assert code == 0, err
    named = [ln for ln in err if ln.startswith("network:")]
    assert len(named) == 1 and listener.url in named[0], err
    assert len(listener.requests) >= 3  # one span request per item: the caller asked for it, and was told


def test_every_http_client_passes_the_gate(listener) -> None:
    """The two clients that open connections (LLM judge / span locator, OpenAI sampling backend) are
    refused offline before they connect, and otherwise name their endpoint once."""
    from hneurons.core.backends import make_backend
    from hneurons.errors import ConfigError
    from hneurons.judges.rules import LLMJudge
    from hneurons.trust import go_offline

    go_offline()
    with pytest.raises(ConfigError, match="offline"):
        LLMJudge(listener.url, "m")
    with pytest.raises(ConfigError, match="offline"):
        make_backend("openai", base_url=listener.url, model="m")
    assert listener.received == 0


def test_caller_only_settings_are_the_code_and_network_ones() -> None:
    from hneurons.config import load_config
    from hneurons.trust import is_caller_only, split_caller_only

    flat = {f"{s}.{k}": v for s, sec in load_config("paper").to_dict().items() if isinstance(sec, dict)
            for k, v in sec.items()}
    caller_only = {k for k in flat if is_caller_only(k)}
    assert caller_only == {"model.name", "model.trust_remote_code", "origin.base_model", "responses.backend_url",
                           "responses.judge_url", "intervene.judge_url", "intervene.backend_url", "spans.llm_url"}
    recorded = {**flat, "model.name": "x", "spans.llm_url": "http://evil", "model.trust_remote_code": True}
    kept, ignored = split_caller_only(recorded, given={"model.name"})
    assert not caller_only & set(kept)
    assert ignored == {"spans.llm_url": "http://evil", "model.trust_remote_code": True}
