"""Dataset registry: one declarative entry per dataset, each loading into uniform :class:`Record`s.

Like lm-evaluation-harness tasks, a benchmark is one :class:`DatasetSpec` (files, loader, kind),
so adding one never touches the pipeline. Loaders read ``.jsonl(.gz)``, ``.json(.gz)`` and
``.parquet``; a malformed row raises :class:`~hneurons.errors.DataError` naming file, line
(1-based) and field. Records are de-duplicated by id and by normalised question text, and the
number dropped is reported (:func:`load_dataset_with_report`), so the pipeline never silently
trains and tests on the same question twice.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hneurons.data.loaders import (get_field, load_are_you_sure, load_faitheval, load_falseqa,
                                   load_judge_validation_falseqa, load_judge_validation_triviaqa, load_qa,
                                   load_triviaqa, simple_loader)
from hneurons.data.readers import iter_rows
from hneurons.data.record import Record, question_key
from hneurons.rundir.files import default_file_mode
from hneurons.errors import DataError

log = logging.getLogger(__name__)

PACKAGED_DATA = Path(__file__).parent / "files"
DATA_DIR_ENV = "HNEURONS_DATA_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    """Declarative registry entry."""

    name: str
    description: str
    files: tuple[str, ...]
    """Packaged files relative to the data root; empty when the user must supply the file."""
    loader: Callable[[Path], list[Record]]
    kind: str
    """"qa" (alias-judged), "false_premise", "harmful", "benign", "jailbreak_template",
    "mc_context", "sycophancy", "judge_validation"."""
    source_note: str
    """SOURCE.md (provenance, licence, counts) relative to the data root."""
    dedupe_questions: bool = True
    """Drop records whose normalised question text was already seen (off for sets where one
    question legitimately has several rows, e.g. several judged responses)."""
    expected_count: int | None = None
    """Rows in the packaged file as stated by SOURCE.md (before de-duplication)."""


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_dataset_with_report` read and dropped."""

    name: str
    path: Path
    n_read: int
    n_duplicate_ids: int
    n_duplicate_questions: int
    n_returned: int


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add (or replace) a registry entry and return it."""
    DATASETS[spec.name] = spec
    return spec


def list_datasets() -> list[DatasetSpec]:
    """All registry entries, sorted by name."""
    return [DATASETS[k] for k in sorted(DATASETS)]


def data_root() -> Path:
    """Folder holding the data files: ``$HNEURONS_DATA_DIR`` when set, else the packaged folder."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else PACKAGED_DATA


def resolve_file(rel: str) -> Path:
    """Find ``rel`` under ``$HNEURONS_DATA_DIR`` first, then in the packaged data."""
    candidates = [data_root() / rel, PACKAGED_DATA / rel]
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(f"data file {rel} not found (looked in {', '.join(str(c.parent) for c in candidates)}); "
                    f"set {DATA_DIR_ENV} to a folder containing it or pass the file path explicitly")



# --------------------------------------------------------------------------------------------
# Loading with de-duplication
# --------------------------------------------------------------------------------------------


def load_dataset_with_report(name: str, path: str | Path | None = None,
                             limit: int | None = None) -> tuple[list[Record], LoadReport]:
    """Load a registered dataset (packaged file, or ``path``) and say what was dropped.

    Records are de-duplicated by id and (unless the entry opts out) by normalised question
    text, keeping the first; ``limit`` keeps the first ``limit`` records in file order.
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    if path is not None:
        file = Path(path).expanduser()
    elif spec.files:
        file = resolve_file(spec.files[0])
    else:
        raise DataError(f"dataset {name!r} is not shipped with hneurons (see {spec.source_note}); "
                        f"pass the path of your own copy, e.g. --set data.{name}=/path/file.jsonl")
    rows = spec.loader(file)
    ids: set[str] = set()
    questions: set[str] = set()
    out: list[Record] = []
    dup_ids = dup_q = 0
    for r in rows:
        if r.id in ids:
            dup_ids += 1
            continue
        ids.add(r.id)
        if spec.dedupe_questions:
            k = question_key(r.question)
            if k in questions:
                dup_q += 1
                continue
            questions.add(k)
        out.append(r)
    if dup_ids or dup_q:
        log.info("%s: dropped %d duplicate ids and %d duplicate questions from %s", name, dup_ids, dup_q, file)
    if limit is not None:
        out = out[: max(0, limit)]
    return out, LoadReport(name, file, len(rows), dup_ids, dup_q, len(out))


def load_dataset(name: str, path: str | Path | None = None, limit: int | None = None) -> list[Record]:
    """Load a registered dataset as de-duplicated :class:`Record`s (see :func:`load_dataset_with_report`)."""
    return load_dataset_with_report(name, path, limit)[0]


def save_records(records: Sequence[Record], path: str | Path) -> Path:
    """Write records as JSON Lines (gzip when the name ends in .gz), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, default_file_mode())  # not mkstemp's 0600
        with os.fdopen(fd, "wb") as raw:
            fh = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if path.name.endswith(".gz") else raw
            for r in records:
                fh.write((json.dumps(r.to_dict(), ensure_ascii=False) + "\n").encode("utf-8"))
            if fh is not raw:
                fh.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_records(path: str | Path) -> list[Record]:
    """Read records written by :func:`save_records` (e.g. a constructed NonExist set)."""
    path = Path(path)
    out = []
    for line, row in iter_rows(path, what="data file"):
        get_field(row, "id", path, line, (str, int))
        get_field(row, "question", path, line)
        try:
            out.append(Record.from_dict(row))
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}:{line}: malformed record ({e})") from None
    return out


# --------------------------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------------------------

def _reg(name: str, description: str, file: str | None, loader: Callable[[Path], list[Record]], kind: str,
         note: str, count: int | None, dedupe: bool = True) -> None:
    register_dataset(DatasetSpec(name=name, description=description, files=(file,) if file else (),
                                 loader=loader, kind=kind, source_note=note, dedupe_questions=dedupe,
                                 expected_count=count))


_JB = "jailbreak/SOURCE.md"
_reg("triviaqa_dev", "TriviaQA open-domain dev split (DPR), the training pool", "triviaqa/dpr_trivia_dev.jsonl.gz",
     load_triviaqa, "qa", "triviaqa/SOURCE.md", 8837)
_reg("triviaqa_test", "TriviaQA open-domain test split (DPR; original TriviaQA dev), held out",
     "triviaqa/dpr_trivia_test.jsonl.gz", load_triviaqa, "qa", "triviaqa/SOURCE.md", 11313)
_reg("nq_open", "NQ-Open dev split (Lee et al. 2019), 3,610 questions", "nq_open/nq_open_dev.jsonl.gz",
     load_qa, "qa", "nq_open/SOURCE.md", 3610)
_reg("smoke_qa", "40 easy hand-written questions interleaved with 40 TriviaQA questions (smoke preset only)",
     "smoke/smoke_qa.jsonl", load_qa, "qa", "smoke/SOURCE.md", 80)
_reg("smoke_heldout", "20 easy hand-written questions interleaved with 20 held-out TriviaQA questions (smoke preset only)",
     "smoke/smoke_heldout.jsonl", load_qa, "qa", "smoke/SOURCE.md", 40)
_reg("bioasq", "BioASQ Task B factoid questions, golden batches 7b-11b", "bioasq/bioasq_factoid_7b-11b.jsonl.gz",
     load_qa, "qa", "bioasq/SOURCE.md", 740)
for _split, _n in (("test", 1374), ("train", 2374), ("valid", 982)):
    _reg("falseqa" if _split == "test" else f"falseqa_{_split}",
         f"FalseQA {_split} split (label 1 = false premise)", f"falseqa/falseqa_{_split}.jsonl.gz",
         load_falseqa, "false_premise", "falseqa/SOURCE.md", _n)
_reg("forbidden_questions", "Shen et al. forbidden question set, 13 scenarios x 30",
     "jailbreak/forbidden_questions.jsonl.gz",
     simple_loader("question", {"category": "content_policy_name", "category_id": "content_policy_id"}),
     "harmful", _JB, 390)
_reg("jailbreak_templates", "The 55 jailbreak templates of Shen et al.'s evaluation (11 communities x 5)",
     "jailbreak/forbidden_question_eval_prompts.jsonl.gz",
     simple_loader("prompt", {"community": "community_name", "community_id": "community_id",
                               "prompt_type": "prompt_type"}), "jailbreak_template", _JB, 55, dedupe=False)
_reg("jailbreak_prompts", "In-the-wild jailbreak prompts (Shen et al., 2023-12-25 release)",
     "jailbreak/jailbreak_prompts.jsonl.gz",
     simple_loader("prompt", {"platform": "platform", "community": "community"}),
     "jailbreak_template", _JB, 1405, dedupe=False)
_reg("jbb_harmful", "JailbreakBench JBB-Behaviors, harmful", "jailbreak/jbb_behaviors_harmful.jsonl.gz",
     simple_loader("Goal", {"category": "Category", "behavior": "Behavior", "target": "Target", "source": "Source"}),
     "harmful", _JB, 100)
_reg("jbb_benign", "JailbreakBench JBB-Behaviors, benign twins (over-refusal)", "jailbreak/jbb_behaviors_benign.jsonl.gz",
     simple_loader("Goal", {"category": "Category", "behavior": "Behavior", "target": "Target", "source": "Source"}),
     "benign", _JB, 100)
_reg("advbench", "AdvBench harmful behaviours", "jailbreak/advbench_harmful_behaviors.jsonl.gz",
     simple_loader("goal", {"target": "target"}), "harmful", _JB, 520)
_reg("strongreject", "StrongREJECT forbidden prompts", "jailbreak/strongreject_dataset.jsonl.gz",
     simple_loader("forbidden_prompt", {"category": "category", "source": "source"}), "harmful", _JB, 313)
_reg("harmbench", "HarmBench text behaviours (contextual ones need extra['context'])",
     "jailbreak/harmbench_behaviors_text_all.jsonl.gz",
     simple_loader("Behavior", {"category": "SemanticCategory", "functional_category": "FunctionalCategory",
                                 "context": "ContextString", "split": "split"}), "harmful", _JB, 400, dedupe=False)
_reg("faitheval", "FaithEval counterfactual-context MC (user-supplied file; not shipped)", None,
     load_faitheval, "mc_context", "faitheval/FORMAT.md", 1000)
_reg("sycophancy_are_you_sure", "Sharma et al. 'are you sure' free-form items (user-supplied file; not shipped)",
     None, load_are_you_sure, "sycophancy", "sycophancy/SOURCE.md", None)
_reg("judge_validation_triviaqa", "TriviaQA responses with GPT-4o verdicts (label 1 = correct)",
     "judge_validation/triviaqa_official_dev.jsonl.gz", load_judge_validation_triviaqa, "judge_validation",
     "judge_validation/SOURCE.md", 573, dedupe=False)
_reg("judge_validation_falseqa", "FalseQA responses with GPT-4o verdicts (label 1 = ACCEPTED)",
     "judge_validation/falseqa_gpt4o_dev.jsonl.gz", load_judge_validation_falseqa, "judge_validation",
     "judge_validation/SOURCE.md", 1032, dedupe=False)
