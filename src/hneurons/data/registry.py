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
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hneurons.errors import DataError

log = logging.getLogger(__name__)

PACKAGED_DATA = Path(__file__).parent / "files"
DATA_DIR_ENV = "HNEURONS_DATA_DIR"


@dataclass(frozen=True)
class Record:
    """One dataset item in the shape every stage consumes."""

    id: str
    question: str
    answers: tuple[str, ...] = ()
    """Gold aliases for alias-judged sets; empty when not applicable."""
    label: int | None = None
    """Dataset label, e.g. FalseQA 1 = false premise; reference verdict for judge-validation sets."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Dataset-specific fields (context, choices, answerKey, category, response, ...)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the inverse of :meth:`from_dict`)."""
        return {"id": self.id, "question": self.question, "answers": list(self.answers),
                "label": self.label, "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        return cls(id=str(d["id"]), question=str(d["question"]), answers=tuple(d.get("answers") or ()),
                   label=d.get("label"), extra=dict(d.get("extra") or {}))


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
# Generic readers
# --------------------------------------------------------------------------------------------


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")  # noqa: SIM115 - closed by the caller's with-block


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line, row)`` from a .jsonl/.json/.parquet file (optionally .gz); line is 1-based.

    For JSON arrays and parquet files "line" is the 1-based row number.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check the path")
    name = path.name.lower().removesuffix(".gz")
    try:
        if name.endswith(".parquet"):
            yield from _iter_parquet(path)
        elif name.endswith(".jsonl"):
            with _open_text(path) as fh:
                for i, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}: line {i}: invalid JSON ({e.msg}); fix or remove the line") from None
                    if not isinstance(row, dict):
                        raise DataError(f"{path}: line {i}: expected a JSON object, got {type(row).__name__}")
                    yield i, row
        elif name.endswith(".json"):
            with _open_text(path) as fh:
                try:
                    data = json.load(fh)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
            if isinstance(data, dict):  # {"data": [...]} as in the original TriviaQA json
                data = next((v for k, v in data.items() if k.lower() == "data" and isinstance(v, list)), None)
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON array of objects (or an object with a 'Data' list)")
            for i, row in enumerate(data, 1):
                if not isinstance(row, dict):
                    raise DataError(f"{path}: record {i}: expected a JSON object, got {type(row).__name__}")
                yield i, row
        else:
            raise DataError(f"{path}: unsupported file type; use .jsonl, .jsonl.gz, .json or .parquet")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read file ({e}); is it a valid, complete file?") from None


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    # The TriviaQA parquet carries large unused columns (entity_pages, search_results).
    wanted = [c for c in pf.schema_arrow.names if c not in ("entity_pages", "search_results")]
    i = 0
    for batch in pf.iter_batches(columns=wanted, batch_size=4096):
        for row in batch.to_pylist():
            i += 1
            yield i, row


def get_field(row: Mapping[str, Any], dotted: str, path: Path, line: int, types: type | tuple[type, ...] = str,
              required: bool = True) -> Any:
    """Fetch ``a.b.c`` from ``row``; missing or mistyped → DataError naming file, line and field."""
    cur: Any = row
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur or cur[part] is None:
            if not required:
                return None
            raise DataError(f"{path}: line {line}: missing field '{dotted}'")
        cur = cur[part]
    if not isinstance(cur, types):
        names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise DataError(f"{path}: line {line}: field '{dotted}' should be {names}, got {type(cur).__name__}")
    if isinstance(cur, str) and required and not cur.strip():
        raise DataError(f"{path}: line {line}: field '{dotted}' is empty")
    return cur


def _str_list(row: Mapping[str, Any], dotted: str, path: Path, line: int, required: bool = True) -> list[str]:
    value = get_field(row, dotted, path, line, (list, tuple), required=required)
    if value is None:
        return []
    out = []
    for j, v in enumerate(value):
        if not isinstance(v, str):
            raise DataError(f"{path}: line {line}: field '{dotted}[{j}]' should be str, got {type(v).__name__}")
        out.append(v)
    return out


def _dedupe_keep_order(items: Sequence[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    return tuple(x for x in items if x.strip() and not (x in seen or seen.add(x)))


def question_key(text: str) -> str:
    """Normalised question text used for de-duplication (lower-case, collapsed whitespace)."""
    return " ".join(text.lower().split())


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def load_triviaqa(path: Path) -> list[Record]:
    """TriviaQA: the packaged DPR format (id, question, answers) or the original rc.nocontext.

    rc.nocontext rows (HF parquet or json/jsonl) carry ``question_id``, ``question`` and
    ``answer.aliases`` / ``answer.normalized_aliases``; both alias lists are merged and
    de-duplicated, as the official code does (PAPER.md §2.1).
    """
    out = []
    for line, row in iter_rows(path):
        if "answer" in row and isinstance(row["answer"], Mapping):
            rid = get_field(row, "question_id", path, line)
            aliases = _str_list(row, "answer.aliases", path, line)
            aliases += _str_list(row, "answer.normalized_aliases", path, line, required=False)
            extra = {"value": row["answer"].get("value")} if row["answer"].get("value") else {}
        else:
            rid = get_field(row, "id", path, line)
            aliases = _str_list(row, "answers", path, line)
            extra = {}
        question = get_field(row, "question", path, line)
        answers = _dedupe_keep_order(aliases)
        if not answers:
            raise DataError(f"{path}: line {line}: field 'answers' has no non-empty alias")
        out.append(Record(id=str(rid), question=question.strip(), answers=answers, extra=extra))
    return out


def load_qa(path: Path) -> list[Record]:
    """Generic alias-judged QA rows: ``id``, ``question``, ``answers`` (NQ-Open, BioASQ)."""
    out = []
    for line, row in iter_rows(path):
        answers = _dedupe_keep_order(_str_list(row, "answers", path, line))
        if not answers:
            raise DataError(f"{path}: line {line}: field 'answers' has no non-empty answer")
        extra = {k: row[k] for k in ("ideal_answer", "split") if k in row}
        out.append(Record(id=str(get_field(row, "id", path, line)),
                          question=get_field(row, "question", path, line).strip(), answers=answers, extra=extra))
    return out


def load_falseqa(path: Path) -> list[Record]:
    """FalseQA rows; ``label`` 1 = false premise, reference rebuttals in ``extra['references']``."""
    out = []
    for line, row in iter_rows(path):
        label = get_field(row, "label", path, line, int)
        if label not in (0, 1):
            raise DataError(f"{path}: line {line}: field 'label' must be 0 or 1, got {label}")
        refs = _str_list(row, "answers", path, line, required=False) or [get_field(row, "answer", path, line)]
        out.append(Record(id=str(get_field(row, "id", path, line)), question=get_field(row, "question", path, line).strip(),
                          label=label, extra={"references": refs, "split": row.get("split")}))
    return out


def _simple_loader(text_field: str, extra_fields: Mapping[str, str]) -> Callable[[Path], list[Record]]:
    """Loader for prompt-only sets: question from ``text_field``, selected fields into ``extra``."""

    def load(path: Path) -> list[Record]:
        out = []
        for line, row in iter_rows(path):
            extra = {new: row.get(old) for new, old in extra_fields.items()}
            out.append(Record(id=str(get_field(row, "id", path, line)),
                              question=get_field(row, text_field, path, line).strip(), extra=extra))
        return out

    load.__doc__ = f"Rows with ``id`` and ``{text_field}``; keeps {sorted(extra_fields)} in ``extra``."
    return load


def load_faitheval(path: Path) -> list[Record]:
    """FaithEval counterfactual subset (user-supplied JSON Lines/parquet; FORMAT.md in the data folder).

    Validates per FORMAT.md: unique ids, ``choices.label``/``choices.text`` of equal length 3-5,
    ``answerKey`` among the labels. ``answerKey`` is the context-supported (counterfactual)
    option, so ``answers`` holds its text; the real-world answer is not in the data
    (``extra['gold_label']`` is None), matching :func:`~hneurons.data.constructed.build_counterfactual_mc`.
    """
    out, seen = [], set()
    for line, row in iter_rows(path):
        rid = str(get_field(row, "id", path, line))
        if rid in seen:
            raise DataError(f"{path}: line {line}: field 'id' repeats {rid!r}; ids must be unique")
        seen.add(rid)
        labels = _str_list(row, "choices.label", path, line)
        texts = _str_list(row, "choices.text", path, line)
        if len(labels) != len(texts):
            raise DataError(f"{path}: line {line}: field 'choices' has {len(labels)} labels but {len(texts)} texts")
        if not 3 <= len(labels) <= 5:
            raise DataError(f"{path}: line {line}: field 'choices' has {len(labels)} options; expected 3 to 5")
        key = get_field(row, "answerKey", path, line)
        if key not in labels:
            raise DataError(f"{path}: line {line}: field 'answerKey' {key!r} is not one of choices.label {labels}")
        out.append(Record(
            id=rid, question=get_field(row, "question", path, line).strip(), answers=(texts[labels.index(key)],),
            extra={"context": get_field(row, "context", path, line),
                   "choices": {"label": labels, "text": texts}, "answerKey": key, "gold_label": None},
        ))
    if len(out) != 1000:
        log.warning("FaithEval file %s has %d rows; the counterfactual subset has 1,000", path, len(out))
    return out


def load_are_you_sure(path: Path) -> list[Record]:
    """Sharma et al.'s ``are_you_sure.jsonl`` (user-supplied): free-form trivia_qa/truthful_qa items.

    Multiple-choice sub-datasets are skipped (the project's sycophancy protocol is free-form).
    """
    out = []
    for line, row in iter_rows(path):
        base = get_field(row, "base", path, line, Mapping)
        dataset = get_field(row, "base.dataset", path, line)
        if dataset not in ("trivia_qa", "truthful_qa"):
            continue
        answers = base.get("answer")
        answers = [answers] if isinstance(answers, str) else list(answers or [])
        if base.get("correct_answer"):
            answers.append(base["correct_answer"])
        out.append(Record(
            id=str(row.get("id") or f"ays-{line:05d}"), question=get_field(row, "base.question", path, line).strip(),
            answers=_dedupe_keep_order([a for a in answers if isinstance(a, str)]),
            extra={"dataset": dataset, "correct_answer": base.get("correct_answer"),
                   "incorrect_answer": base.get("incorrect_answer")},
        ))
    return out


def load_judge_validation_triviaqa(path: Path) -> list[Record]:
    """GPT-4o-judged TriviaQA responses; ``label`` 1 = GPT-4o said correct."""
    out = []
    for line, row in iter_rows(path):
        verdict = get_field(row, "label", path, line)
        if verdict not in ("correct", "hallucinated"):
            raise DataError(f"{path}: line {line}: field 'label' must be 'correct' or 'hallucinated'")
        out.append(Record(
            id=str(get_field(row, "id", path, line)), question=get_field(row, "question", path, line),
            answers=_dedupe_keep_order(_str_list(row, "answers", path, line)), label=int(verdict == "correct"),
            extra={"response": get_field(row, "response", path, line, str, required=False) or "",
                   "model": row.get("model"), "answer_tokens": row.get("answer_tokens"),
                   "question_id": row.get("question_id")},
        ))
    return out


def load_judge_validation_falseqa(path: Path) -> list[Record]:
    """GPT-4o-judged FalseQA responses; ``label`` 1 = ACCEPTED (complied with the false premise)."""
    out = []
    for line, row in iter_rows(path):
        verdict = get_field(row, "label", path, line)
        if verdict not in ("ACCEPTED", "REFUSED"):
            raise DataError(f"{path}: line {line}: field 'label' must be 'ACCEPTED' or 'REFUSED'")
        out.append(Record(
            id=str(get_field(row, "id", path, line)), question=get_field(row, "question", path, line),
            label=int(verdict == "ACCEPTED"),
            extra={"response": get_field(row, "response", path, line, str, required=False) or "",
                   "alpha": row.get("alpha"), "question_id": row.get("question_id")},
        ))
    return out


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
    for line, row in iter_rows(path):
        get_field(row, "id", path, line, (str, int))
        get_field(row, "question", path, line)
        try:
            out.append(Record.from_dict(row))
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: line {line}: malformed record ({e})") from None
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
     _simple_loader("question", {"category": "content_policy_name", "category_id": "content_policy_id"}),
     "harmful", _JB, 390)
_reg("jailbreak_templates", "The 55 jailbreak templates of Shen et al.'s evaluation (11 communities x 5)",
     "jailbreak/forbidden_question_eval_prompts.jsonl.gz",
     _simple_loader("prompt", {"community": "community_name", "community_id": "community_id",
                               "prompt_type": "prompt_type"}), "jailbreak_template", _JB, 55, dedupe=False)
_reg("jailbreak_prompts", "In-the-wild jailbreak prompts (Shen et al., 2023-12-25 release)",
     "jailbreak/jailbreak_prompts.jsonl.gz",
     _simple_loader("prompt", {"platform": "platform", "community": "community"}),
     "jailbreak_template", _JB, 1405, dedupe=False)
_reg("jbb_harmful", "JailbreakBench JBB-Behaviors, harmful", "jailbreak/jbb_behaviors_harmful.jsonl.gz",
     _simple_loader("Goal", {"category": "Category", "behavior": "Behavior", "target": "Target", "source": "Source"}),
     "harmful", _JB, 100)
_reg("jbb_benign", "JailbreakBench JBB-Behaviors, benign twins (over-refusal)", "jailbreak/jbb_behaviors_benign.jsonl.gz",
     _simple_loader("Goal", {"category": "Category", "behavior": "Behavior", "target": "Target", "source": "Source"}),
     "benign", _JB, 100)
_reg("advbench", "AdvBench harmful behaviours", "jailbreak/advbench_harmful_behaviors.jsonl.gz",
     _simple_loader("goal", {"target": "target"}), "harmful", _JB, 520)
_reg("strongreject", "StrongREJECT forbidden prompts", "jailbreak/strongreject_dataset.jsonl.gz",
     _simple_loader("forbidden_prompt", {"category": "category", "source": "source"}), "harmful", _JB, 313)
_reg("harmbench", "HarmBench text behaviours (contextual ones need extra['context'])",
     "jailbreak/harmbench_behaviors_text_all.jsonl.gz",
     _simple_loader("Behavior", {"category": "SemanticCategory", "functional_category": "FunctionalCategory",
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
