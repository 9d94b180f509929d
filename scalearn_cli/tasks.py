"""Task table: where each task's rows come from, which fields hold text and labels, and how it is scored.

A :class:`TaskSpec` is a small frozen value object. The built-in table :data:`TASKS` covers GLUE, SuperGLUE,
SNLI, the shelf's public tasks (:mod:`scalearn_cli.shelf_tasks`) and the synthetic demo tasks;
:func:`custom_task` builds a spec for the user's own files. Specs are stored in JSON metadata through
:func:`task_to_dict` / :func:`task_from_dict`.
"""

from __future__ import annotations

import difflib
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Literal, get_args

from scalearn_cli.errors import TaskError, UnknownTaskError, UsageError
from scalearn_cli.prompts import template_fields
from scalearn_cli.shelf_tasks import SHELF_ROWS

ProblemType = Literal["classification", "regression", "multiple_choice", "generation", "multi_label_classification"]
PROBLEM_TYPES: tuple[str, ...] = get_args(ProblemType)

#: Metric names understood by :mod:`scalearn_cli.metrics`.
KNOWN_METRICS: tuple[str, ...] = (
    "accuracy", "f1", "macro_f1", "micro_f1", "matthews", "pearson", "spearman", "exact_match")
_REGRESSION_METRICS = frozenset({"pearson", "spearman"})
#: generation targets: exact match of greedy-decoded answers, or (with choices) accuracy of the most likely choice
_GENERATION_METRICS = frozenset({"exact_match", "accuracy"})
#: multi-label targets: F1 over labels (macro: the paper's HumSet tables), or over all decisions; subset accuracy
_MULTI_LABEL_METRICS = frozenset({"macro_f1", "micro_f1", "accuracy"})
MULTI_LABEL = "multi_label_classification"


@dataclass(frozen=True)
class TaskSpec:
    """Everything the data and metric code needs to know about one task.

    ``text_fields`` holds one or two text *segments*; a segment is its fields' values joined with a space
    (e.g. WiC: ``(("word", "sentence1"), ("sentence2",))``). Two segments are encoded as a pair.
    For multiple choice, ``text_fields`` is the single context segment and ``choice_fields`` the candidates;
    the label is the index of the right candidate. ``test_split`` names the raw split used as the test set
    (the paper evaluates on the official validation split).

    Generation (decoder LMs): ``prompt_template`` (``{field}`` placeholders) renders each row's prompt, whose
    fields are ``text_fields``' one segment; ``label_field`` holds the answer text. With ``choice_fields`` the
    answer is one of the row's choices and scoring picks the choice of highest log-likelihood (accuracy);
    without, greedy-decoded answers are scored by exact match.

    Multi-label (``multi_label_classification``): ``label_field`` holds each row's label *set* (a list of ids or
    names; with ``label_separator``, one string of labels joined by it); one sigmoid output per label name.
    """

    name: str
    hub_id: str | None
    hub_config: str | None
    text_fields: tuple[tuple[str, ...], ...]
    label_names: tuple[str, ...] | None
    problem_type: ProblemType
    metrics: tuple[str, ...]
    main_metric: str
    label_field: str = "label"
    choice_fields: tuple[str, ...] = ()
    test_split: str = "validation"
    prompt_template: str | None = None  # generation only
    label_separator: str | None = None  # multi-label only: labels joined in one string ("joy,love")

    def __post_init__(self) -> None:
        # Normalise lists (from JSON or CLI options) to tuples so specs stay hashable and comparable.
        object.__setattr__(self, "text_fields", tuple(tuple(seg) for seg in self.text_fields))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "choice_fields", tuple(self.choice_fields))
        if self.label_names is not None:
            object.__setattr__(self, "label_names", tuple(str(n) for n in self.label_names))
        if not self.name:
            raise TaskError("task field 'name' is empty; give the task a name")
        self._check_fields()
        self._check_labels()
        self._check_metrics()

    def _check_fields(self) -> None:
        where = f"task {self.name}"
        if self.problem_type not in PROBLEM_TYPES:
            raise TaskError(
                f"{where}: field 'problem_type' is {self.problem_type!r}; use one of {', '.join(PROBLEM_TYPES)}"
            )
        if not 1 <= len(self.text_fields) <= 2:
            raise TaskError(
                f"{where}: field 'text_fields' has {len(self.text_fields)} segments; give one or two text segments"
            )
        if any(not seg or not all(isinstance(f, str) and f for f in seg) for seg in self.text_fields):
            raise TaskError(f"{where}: field 'text_fields' has an empty segment or field name; name every field")
        if not self.label_field:
            raise TaskError(f"{where}: field 'label_field' is empty; name the column that holds the labels")
        if not self.test_split:
            raise TaskError(f"{where}: field 'test_split' is empty; name the split used as test set")
        if self.problem_type == "generation":
            self._check_template()
        elif self.prompt_template is not None:
            raise TaskError(f"{where}: field 'prompt_template' is only used by generation tasks; leave it empty")
        if self.problem_type == "multiple_choice":
            if len(self.choice_fields) < 2:
                raise TaskError(f"{where}: field 'choice_fields' needs at least two choices for multiple choice")
            if len(self.text_fields) != 1:
                raise TaskError(f"{where}: field 'text_fields' must be one context segment for multiple choice")
        elif self.choice_fields and self.problem_type != "generation":
            raise TaskError(f"{where}: field 'choice_fields' is only used by multiple-choice tasks; leave it empty")
        if self.label_separator is not None and (self.problem_type != MULTI_LABEL or not self.label_separator):
            raise TaskError(f"{where}: field 'label_separator' is only used by multi-label tasks (a non-empty "
                            "string); leave it empty")

    def _check_template(self) -> None:
        where = f"task {self.name}"
        if not self.prompt_template:
            raise TaskError(f"{where}: a generation task needs field 'prompt_template' (e.g. 'Q: {{question}} A:')")
        fields_used = template_fields(self.prompt_template)
        if not fields_used:
            raise TaskError(f"{where}: field 'prompt_template' names no {{field}}; put the prompt column in braces")
        if tuple(fields_used) != self.text_fields[0] or len(self.text_fields) != 1:
            raise TaskError(f"{where}: field 'text_fields' must be the template's fields {list(fields_used)}")
        if len(self.choice_fields) == 1:
            raise TaskError(f"{where}: field 'choice_fields' needs at least two choices (or none: exact match)")

    def _check_labels(self) -> None:
        where = f"task {self.name}"
        names = self.label_names
        if self.problem_type == "generation":
            if names is not None:
                raise TaskError(f"{where}: field 'label_names' must be None for generation (answers are text)")
            return
        if self.problem_type == "regression":
            if names is not None:
                raise TaskError(f"{where}: field 'label_names' must be None for regression")
            return
        if names is None:
            return  # custom classification: inferred from the data by data.make_splits
        if len(names) < 2 or len(set(names)) != len(names):
            raise TaskError(f"{where}: field 'label_names' needs at least two distinct names, got {list(names)}")
        if self.problem_type == "multiple_choice" and len(names) != len(self.choice_fields):
            raise TaskError(
                f"{where}: field 'label_names' has {len(names)} names but there are "
                f"{len(self.choice_fields)} choice_fields; give one name per choice"
            )

    def _check_metrics(self) -> None:
        where = f"task {self.name}"
        if not self.metrics:
            raise TaskError(f"{where}: field 'metrics' is empty; use some of {', '.join(KNOWN_METRICS)}")
        unknown = [m for m in self.metrics if m not in KNOWN_METRICS]
        if unknown:
            raise TaskError(f"{where}: field 'metrics' has unknown {unknown}; use some of {', '.join(KNOWN_METRICS)}")
        if self.problem_type == "generation" or "exact_match" in self.metrics:
            if self.problem_type != "generation" or not set(self.metrics) <= _GENERATION_METRICS:
                raise TaskError(f"{where}: field 'metrics' {list(self.metrics)} does not fit problem_type "
                                f"{self.problem_type}; generation uses exact_match (or accuracy with choices)")
            if self.main_metric not in self.metrics:
                raise TaskError(f"{where}: field 'main_metric' {self.main_metric!r} is not one of {list(self.metrics)}")
            return
        if self.problem_type == MULTI_LABEL and not set(self.metrics) <= _MULTI_LABEL_METRICS:
            raise TaskError(f"{where}: field 'metrics' {list(self.metrics)} does not fit problem_type {MULTI_LABEL}; "
                            f"use some of {', '.join(sorted(_MULTI_LABEL_METRICS))}")
        regression = self.problem_type == "regression"
        if any((m in _REGRESSION_METRICS) != regression for m in self.metrics):
            raise TaskError(
                f"{where}: field 'metrics' {list(self.metrics)} does not fit problem_type {self.problem_type}; "
                "use pearson/spearman for regression and the others for classification"
            )
        if "f1" in self.metrics and self.label_names is not None and len(self.label_names) != 2:
            raise TaskError(
                f"{where}: field 'metrics' has binary 'f1' but {len(self.label_names)} labels; use macro_f1"
            )
        if self.main_metric not in self.metrics:
            raise TaskError(
                f"{where}: field 'main_metric' {self.main_metric!r} is not one of metrics {list(self.metrics)}"
            )

    @property
    def num_labels(self) -> int:
        """Output size of the head: 1 for regression, the number of choices, or the number of labels."""
        if self.problem_type == "regression":
            return 1
        if self.problem_type in ("multiple_choice", "generation"):
            return len(self.choice_fields)  # generation: 0 without choices (no head either way)
        if self.label_names is None:
            raise TaskError(
                f"task {self.name} has no label names yet; load its data with data.make_splits to infer them"
            )
        return len(self.label_names)

    @property
    def all_text_fields(self) -> tuple[str, ...]:
        """Every column the task reads text from (segments, then choices), without duplicates."""
        cols = [f for seg in self.text_fields for f in seg] + list(self.choice_fields)
        return tuple(dict.fromkeys(cols))


def _glue(
    name: str,
    text: tuple[tuple[str, ...], ...],
    labels: tuple[str, ...] | None,
    metrics: tuple[str, ...] = ("accuracy",),
    **kw: Any,
) -> TaskSpec:
    problem: ProblemType = "regression" if labels is None else "classification"
    return TaskSpec(name, "nyu-mll/glue", name, text, labels, problem, metrics, metrics[0], **kw)


def _superglue(
    name: str, config: str, text: tuple[tuple[str, ...], ...], labels: tuple[str, ...], **kw: Any
) -> TaskSpec:
    kw.setdefault("problem_type", "classification")
    kw.setdefault("metrics", ("accuracy",))
    return TaskSpec(name, "super_glue", config, text, labels, main_metric=kw["metrics"][0], **kw)


_S1_S2 = (("sentence1",), ("sentence2",))
_PREMISE_HYPOTHESIS = (("premise",), ("hypothesis",))
_NLI3 = ("entailment", "neutral", "contradiction")
_BOOL = ("False", "True")


def _demo(name: str, text: tuple[tuple[str, ...], ...], labels: tuple[str, ...], metrics: tuple[str, ...]) -> TaskSpec:
    return TaskSpec(name, None, None, text, labels, "classification", metrics, metrics[0])


_ALL: tuple[TaskSpec, ...] = (
    # GLUE (nyu-mll/glue schema)
    _glue("cola", (("sentence",),), ("unacceptable", "acceptable"), ("matthews",)),
    _glue("sst2", (("sentence",),), ("negative", "positive")),
    _glue("mrpc", _S1_S2, ("not_equivalent", "equivalent"), ("accuracy", "f1")),
    _glue("stsb", _S1_S2, None, ("pearson", "spearman")),
    _glue("qqp", (("question1",), ("question2",)), ("not_duplicate", "duplicate"), ("accuracy", "f1")),
    _glue("mnli", _PREMISE_HYPOTHESIS, _NLI3, test_split="validation_matched"),
    _glue("qnli", (("question",), ("sentence",)), ("entailment", "not_entailment")),
    _glue("rte", _S1_S2, ("entailment", "not_entailment")),
    _glue("wnli", _S1_S2, ("not_entailment", "entailment")),
    # SuperGLUE (super_glue schema)
    _superglue("boolq", "boolq", (("question",), ("passage",)), _BOOL),
    _superglue(
        "cb", "cb", _PREMISE_HYPOTHESIS, ("entailment", "contradiction", "neutral"), metrics=("accuracy", "macro_f1")
    ),
    _superglue(
        "copa",
        "copa",
        (("premise", "question"),),
        ("choice1", "choice2"),
        problem_type="multiple_choice",
        choice_fields=("choice1", "choice2"),
    ),
    _superglue("superglue-rte", "rte", _PREMISE_HYPOTHESIS, ("entailment", "not_entailment")),
    _superglue("wic", "wic", (("word", "sentence1"), ("sentence2",)), _BOOL),
    _superglue("wsc", "wsc.fixed", (("text",), ("span1_text", "span2_text")), _BOOL),
    # SNLI (stanfordnlp/snli; label -1 rows are dropped by data.make_splits)
    TaskSpec("snli", "stanfordnlp/snli", None, _PREMISE_HYPOTHESIS, _NLI3, "classification", ("accuracy",), "accuracy"),
    # Synthetic demo tasks written by data.write_demo_tasks (the zoo's demo recipes, the tests)
    _demo("demo-sentiment", (("sentence",),), ("negative", "positive"), ("accuracy",)),
    _demo("demo-paraphrase", _S1_S2, ("not_equivalent", "equivalent"), ("accuracy", "f1")),
    _demo("demo-nli", _S1_S2, _NLI3, ("accuracy",)),
    # the shelf's other public tasks (scalearn_cli/shelf_tasks.py): scored on their files' test split
    *(TaskSpec(name, hub, config, text, labels, metrics=metrics, main_metric=metrics[0], test_split="test",
               **{"problem_type": "regression" if labels is None else "classification", **kw})
      for name, hub, config, text, labels, metrics, kw in SHELF_ROWS),
)

#: Built-in tasks by name.
TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in _ALL}
DEMO_TASKS: tuple[str, ...] = ("demo-sentiment", "demo-paraphrase", "demo-nli")


def get_task(name: str) -> TaskSpec:
    """Return the built-in task called ``name`` (case-insensitive); raise :class:`TaskError` if unknown."""
    key = name.strip().lower()
    if key in TASKS:
        return TASKS[key]
    close = difflib.get_close_matches(key, TASKS, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UnknownTaskError(  # a usage error (exit 2), still a TaskError for callers catching those
        f"unknown task {name!r}; {hint}known tasks: {', '.join(TASKS)}; "
        "for your own data use --task custom with --text-fields and --label-field"
    )


def custom_task(
    text_fields: list[str],
    label_field: str,
    problem_type: ProblemType,
    label_names: list[str] | None = None,
    choice_fields: list[str] | None = None,
    label_separator: str | None = None,
) -> TaskSpec:
    """Build the spec of a user-defined task called ``custom``.

    Each text field is one segment (at most two). Label names may be ``None`` for classification; they are then
    inferred from the data by :func:`scalearn_cli.data.make_splits`. Multiple choice needs ``choice_fields``
    (the single text field is the context). Multi-label tasks are scored by macro-F1 (and micro-F1); their labels
    are lists, or strings joined by ``label_separator``.
    """
    if not text_fields:
        raise UsageError("no text fields given; pass --text-fields with one or two column names")
    if len(text_fields) > 2:
        raise UsageError(
            f"--text-fields has {len(text_fields)} columns ({', '.join(text_fields)}); give one or two columns"
        )
    if problem_type not in PROBLEM_TYPES:
        raise UsageError(f"problem type {problem_type!r} is unknown; use one of {', '.join(PROBLEM_TYPES)}")
    if problem_type == "regression":
        metrics: tuple[str, ...] = ("pearson", "spearman")
        if label_names:
            raise UsageError("label names were given for a regression task; drop --label-names or use classification")
        label_names = None
    elif problem_type == MULTI_LABEL:
        metrics = ("macro_f1", "micro_f1")
    else:
        metrics = ("accuracy", "macro_f1")
    if label_separator is not None and problem_type != MULTI_LABEL:
        raise UsageError(f"--label-separator splits multi-label sets; pass --problem-type {MULTI_LABEL} or drop it")
    choices = tuple(choice_fields or ())
    if problem_type == "multiple_choice" and label_names is None:
        label_names = list(choices)
    return TaskSpec(
        name="custom",
        hub_id=None,
        hub_config=None,
        text_fields=tuple((f,) for f in text_fields),
        label_names=tuple(label_names) if label_names is not None else None,
        problem_type=problem_type,
        metrics=metrics,
        main_metric=metrics[0],
        label_field=label_field,
        choice_fields=choices,
        label_separator=label_separator or None,
    )


def generation_task(
    answer_field: str | None,
    prompt_field: str | None = None,
    prompt_template: str | None = None,
    choice_fields: list[str] | None = None,
) -> TaskSpec:
    """The spec of a custom generation task: a prompt (one column, or a ``{field}`` template) -> an answer column.

    With ``choice_fields`` the answer must be one of the row's choices (scored by log-likelihood, accuracy);
    otherwise greedy-decoded answers are scored by exact match.
    """
    if not answer_field:
        raise UsageError("--problem-type generation needs --answer-field (the column holding each row's answer)")
    if bool(prompt_field) == bool(prompt_template):
        raise UsageError("--problem-type generation needs one of --prompt-field COLUMN or --prompt-template "
                         "'...{column}...'")
    template = prompt_template or "{" + str(prompt_field) + "}"
    metrics = ("accuracy",) if choice_fields else ("exact_match",)
    return TaskSpec("custom", None, None, (template_fields(template),), None, "generation", metrics, metrics[0],
                    label_field=answer_field, choice_fields=tuple(choice_fields or ()), prompt_template=template)


def task_to_dict(spec: TaskSpec) -> dict[str, Any]:
    """JSON-ready dict of ``spec`` (tuples become lists); inverse of :func:`task_from_dict`."""
    data = asdict(spec)
    data["text_fields"] = [list(seg) for seg in spec.text_fields]
    data["label_names"] = list(spec.label_names) if spec.label_names is not None else None
    data["metrics"] = list(spec.metrics)
    data["choice_fields"] = list(spec.choice_fields)
    for optional in ("prompt_template", "label_separator"):  # other tasks' metadata stays as it was before them
        if data[optional] is None:
            del data[optional]
    return data


def task_from_dict(data: dict[str, Any]) -> TaskSpec:
    """Rebuild a :class:`TaskSpec` from :func:`task_to_dict` output; raise :class:`TaskError` on bad keys."""
    known = {f.name for f in fields(TaskSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TaskError(f"task metadata has unknown keys {unknown}; it was written by a newer scalearn, upgrade it")
    required = {f.name for f in fields(TaskSpec) if f.default is MISSING}
    missing = sorted(required - set(data))
    if missing:
        raise TaskError(f"task metadata lacks keys {missing}; the metadata file is incomplete, re-create it")
    return TaskSpec(**data)
