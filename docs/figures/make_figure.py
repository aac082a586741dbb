"""Redraw the README's detection figure from a run's numbers, with the report's own plotting code.

    python docs/figures/make_figure.py docs/figures/detection_default.json docs/figures/detection.png

The JSON holds ``{"sets": {set: {"methods": {method: {"auroc": x, "auroc_ci": [lo, hi]}}}}}``, the
shape of ``detect/detect.json``'s ``sets``; so a new run's figure is one call with its own file.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

from hneurons.report.figures import detection_bars


def main(src: str, dst: str) -> None:
    data = json.loads(Path(src).read_text())
    sets = data["sets"]
    methods = list(next(iter(sets.values()))["methods"])
    uri = detection_bars(sets, methods)
    Path(dst).write_bytes(base64.b64decode(uri.split(",", 1)[1]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
