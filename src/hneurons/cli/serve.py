"""``hneurons serve``: the OpenAI-compatible guarded server (:mod:`hneurons.apply.server`).

The port is bound first (a busy port fails at once and stays ours), then the server starts and
the model loads in the background: ``/health`` answers 503 until it is ready.
"""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer
from rich.console import Console

from hneurons.cli.apply import AbstainOpt, AlphaOpt, CommonOptions, ForceOpt, ModelOpt, RunDirArg, with_common_options

console = Console(stderr=True)

KeyOpt = Annotated[Optional[str], typer.Option(
    "--api-key", help="require 'Authorization: Bearer KEY' on /v1 and /metrics (default: $HNEURONS_API_KEY; "
                      "none = open to whoever can reach the port)", show_default=False)]
UpstreamOpt = Annotated[Optional[str], typer.Option(
    "--upstream", help="generate with this OpenAI-compatible server (vLLM…, e.g. http://gpu:8000/v1) and score "
                       "each answer with one forward pass of the local model", show_default=False)]


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""

    @app.command()
    @with_common_options
    def serve(
        run_dir: RunDirArg = None,
        port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
        host: Annotated[str, typer.Option("--host", help="bind address (127.0.0.1 = this machine only)")] = "127.0.0.1",
        alpha: AlphaOpt = 1.0,
        abstain_above: AbstainOpt = None,
        max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="requests decoded together")] = 8,
        max_queue: Annotated[int, typer.Option("--max-queue", min=1, help="requests waiting before 429")] = 64,
        max_prompt_tokens: Annotated[Optional[int], typer.Option(
            "--max-prompt-tokens", min=1, help="refuse longer prompts (default: context - max_tokens)")] = None,
        api_key: KeyOpt = None,
        request_log: Annotated[Optional[str], typer.Option(
            "--request-log", help="JSON-lines request log: a file, or - for stderr")] = "-",
        upstream: UpstreamOpt = None,
        upstream_model: Annotated[Optional[str], typer.Option("--upstream-model", help="model name the upstream serves")] = None,
        model: ModelOpt = None,
        force: ForceOpt = False,
        *,
        common: CommonOptions,
    ) -> None:
        """Serve OpenAI-compatible /v1/chat/completions and /v1/completions with guarded generation."""
        from hneurons.config import check_guard
        from hneurons.errors import ConfigError

        use = common.use(run_dir, model, force)
        use.source()
        check_guard(alpha, abstain_above)
        if (upstream is None) != (upstream_model is None):
            raise ConfigError("--upstream and --upstream-model go together: the server's URL and the model it serves")
        from hneurons.apply.server import ServeOptions, Upstream, bind_socket, create_app, run_server

        up = Upstream(upstream, upstream_model, os.environ.get("HNEURONS_UPSTREAM_KEY")) if upstream else None
        opts = ServeOptions(alpha=alpha, abstain_above=abstain_above, max_batch=max_batch, max_queue=max_queue,
                            max_input_bytes=common.max_input_bytes, max_prompt_tokens=max_prompt_tokens,
                            api_key=api_key or os.environ.get("HNEURONS_API_KEY"), request_log=request_log,
                            upstream=up)
        sock = bind_socket(host, port)  # before the model loads: a busy port fails fast, and stays ours
        app_ = create_app(use.state, opts)
        console.print(f"serving on http://{host}:{sock.getsockname()[1]}/v1 (α = {alpha:g}, abstain above "
                      f"{abstain_above if abstain_above is not None else 'off'}, API key "
                      f"{'required' if opts.api_key else 'off'}); loading the model, GET /health says when ready")
        run_server(app_, sock)
