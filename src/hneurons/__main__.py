"""``python -m hneurons``: the same CLI as the ``hneurons`` console script, for environments whose
PATH does not hold the venv's scripts (a notebook kernel, ``sys.executable`` in a subprocess)."""

from hneurons.cli.main import main

if __name__ == "__main__":
    main()
