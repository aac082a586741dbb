"""The ``hneurons`` command line: thin commands over the library (see :mod:`hneurons.cli.main`)."""
