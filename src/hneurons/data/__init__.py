"""Datasets: the registry of packaged and user-supplied benchmarks, and constructed sets.

``load_dataset("triviaqa_test")`` returns uniform :class:`Record`s; see :mod:`.registry` for
the entries and :mod:`.constructed` for NonExist, counterfactual-context MC and sycophancy sets.
"""

from hneurons.data.registry import (
    DATA_DIR_ENV,
    DATASETS,
    PACKAGED_DATA,
    DatasetSpec,
    LoadReport,
    Record,
    data_root,
    iter_rows,
    list_datasets,
    load_dataset,
    load_dataset_with_report,
    load_faitheval,
    load_records,
    load_triviaqa,
    register_dataset,
    resolve_file,
    save_records,
)

__all__ = [
    "DATA_DIR_ENV",
    "DATASETS",
    "PACKAGED_DATA",
    "DatasetSpec",
    "LoadReport",
    "Record",
    "data_root",
    "iter_rows",
    "list_datasets",
    "load_dataset",
    "load_dataset_with_report",
    "load_faitheval",
    "load_records",
    "load_triviaqa",
    "register_dataset",
    "resolve_file",
    "save_records",
]
