"""``python -m hneurons.cli``: the same entry point as the ``hneurons`` command."""

from hneurons.cli.main import main

main()
