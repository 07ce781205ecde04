"""Run many small trainings (model size x seed x loss) through :func:`kd_lib.train`; collect rows.

A chapter that compares "scratch" with "distilled" over several seeds and student sizes
describes each training as a :class:`Run`, hands the list to :func:`run_sweep`, and gets one
plain ``dict`` per run back (its tags, the seed, the parameter count, the final test accuracy,
the teacher agreement, the history). :func:`summarize` then reduces the rows to mean and
standard deviation over seeds, and :func:`format_table` prints them.

    runs = [Run("scratch", make_student, (x, y), seed=s) for s in range(3)]
    runs += [Run("distilled", make_student, (x_transfer, None), seed=s, teacher=teacher,
                 loss_fn=partial(kd_loss, temperature=4.0)) for s in range(3)]
    rows = run_sweep(runs, eval_data=(x_test, y_test))
    print(format_table(summarize(rows, by=["name"])))

Each run seeds every RNG with its ``seed`` *before* building the model, so the initial weights,
the batch order and the result depend only on the run, not on what ran before it.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from tqdm.auto import tqdm

from ..metrics import count_parameters
from ..runtime import seed_everything, show_progress
from ..train import LossFn, TrainConfig, train

Tensor = torch.Tensor

__all__ = ["Run", "run_sweep", "summarize", "per_seed", "format_table", "ScoreAtSteps"]


@dataclass
class Run:
    """One training: a model factory, its data, a seed, and (for distillation) a teacher and loss.

    ``tags`` are copied into the result row (e.g. ``{"width": 64}``) so rows can be grouped.
    """

    name: str  # what kind of run this is, e.g. "scratch" or "distilled"
    make_model: Callable[[], nn.Module]
    train_data: Tuple[Tensor, Optional[Tensor]]
    seed: int = 0
    teacher: Optional[nn.Module] = None
    loss_fn: Optional[LossFn] = None
    config: TrainConfig = field(default_factory=TrainConfig)
    augment: Optional[Callable[[Tensor, torch.Generator], Tensor]] = None
    tags: Dict[str, Any] = field(default_factory=dict)


def run_sweep(
    runs: Sequence[Run],
    eval_data: Tuple[Tensor, Tensor],
    *,
    keep_models: bool = False,
    progress: bool = True,
    desc: str = "runs",
) -> List[Dict[str, Any]]:
    """Train every run in order and return one row per run.

    A row holds ``name``, the run's ``tags``, ``seed``, ``parameters``, ``accuracy`` (final
    test accuracy), ``agreement`` (final top-1 agreement with the teacher on the test inputs,
    when there is a teacher), ``cpu_seconds`` (``time.process_time`` spent), ``history`` and,
    with ``keep_models=True``, the trained ``model``. One tqdm bar counts runs; the runs'
    own bars are switched off.
    """
    if len(runs) == 0:
        raise ValueError("run_sweep got no runs")
    reserved = {"name", "seed", "parameters", "accuracy", "agreement", "cpu_seconds", "history", "model"}
    rows = []
    for run in tqdm(runs, desc=desc, disable=not show_progress(progress)):
        clash = reserved & set(run.tags)
        if clash:
            raise ValueError(f"run {run.name!r}: tags {sorted(clash)} clash with result columns")
        started = time.process_time()
        seed_everything(run.seed)
        model = run.make_model()
        # a loss with trained parameters (a projection) must not carry its weights from run to run
        loss_fn = copy.deepcopy(run.loss_fn) if isinstance(run.loss_fn, nn.Module) else run.loss_fn
        config = dataclasses.replace(run.config, seed=run.seed, progress=False)
        history = train(model, run.train_data, teacher=run.teacher, loss_fn=loss_fn, config=config,
                        eval_data=eval_data, augment=run.augment)
        row = {"name": run.name, **run.tags, "seed": run.seed, "parameters": count_parameters(model),
               "accuracy": history.final["eval_accuracy"], "agreement": history.final.get("eval_agreement", math.nan),
               "cpu_seconds": time.process_time() - started, "history": history}
        if keep_models:
            row["model"] = model
        rows.append(row)
    return rows


def summarize(rows: Sequence[Dict[str, Any]], by: Sequence[str], metric: str = "accuracy") -> List[Dict[str, Any]]:
    """Group rows by the columns ``by`` (first-seen order) and reduce ``metric`` over each group.

    Returns one dict per group: the ``by`` values, ``mean``, ``std`` (sample standard deviation,
    ``n - 1`` in the denominator; 0 for a single row), ``min``, ``max`` and ``n``.
    """
    if len(rows) == 0:
        raise ValueError("summarize got no rows")
    missing = [column for column in [*by, metric] if column not in rows[0]]
    if missing:
        raise ValueError(f"rows have no column(s) {missing}; columns: {sorted(rows[0])}")
    groups: Dict[tuple, List[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[column] for column in by), []).append(float(row[metric]))
    summary = []
    for key, values in groups.items():
        values_t = torch.tensor(values, dtype=torch.float64)
        std = float(values_t.std()) if len(values) > 1 else 0.0
        summary.append({**dict(zip(by, key)), "mean": float(values_t.mean()), "std": std,
                        "min": float(values_t.min()), "max": float(values_t.max()), "n": len(values)})
    return summary


def per_seed(rows: Sequence[Dict[str, Any]], metric: str = "accuracy", **match: Any) -> List[float]:
    """``metric`` of the rows whose columns equal ``match``, in seed order.

    Two calls with the same seeds give lists that line up seed by seed, ready for
    :func:`kd_lib.lab.stats.paired_difference`: ``per_seed(rows, name="distilled", T=1)``.
    Raises ``ValueError`` when no row matches.
    """
    chosen = sorted((row for row in rows if all(row.get(k) == v for k, v in match.items())), key=lambda r: r["seed"])
    if not chosen:
        raise ValueError(f"no row has {match}")
    return [float(row[metric]) for row in chosen]


def format_table(rows: Sequence[Dict[str, Any]], columns: Optional[Sequence[str]] = None, digits: int = 3) -> str:
    """A plain-text table of ``rows`` (floats rounded to ``digits``), one line per row.

    ``columns`` defaults to every key with a plain value (text, number, ``None``) in any row, in
    first-seen order, so objects such as a ``history`` or a trained ``model`` are left out. A row
    without a column shows an empty cell.
    """
    if len(rows) == 0:
        raise ValueError("format_table got no rows")
    if columns is None:
        columns = []
        for row in rows:
            columns += [key for key, value in row.items()
                        if key not in columns and (value is None or isinstance(value, (str, int, float)))]
    columns = list(columns)

    def cell(value: Any) -> str:
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    cells = [[cell(row[column]) if column in row else "" for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.rjust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(text.rjust(width) for text, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


class ScoreAtSteps:
    """A :func:`kd_lib.train` callback: ``score(student)`` after each of the optimizer ``steps``.

        at = ScoreAtSteps([40, 80, 160], lambda m: accuracy(predict_logits(m, x), y))
        train(student, data, config=config, callbacks=[at])
        at.values  # {40: ..., 80: ..., 160: ...}

    One run then gives a learning curve at several budgets (with a constant learning rate, the
    run stopped at step ``s`` is exactly this run's first ``s`` steps). Scoring happens in the
    middle of training: the student is put in eval mode for it and back in train mode after.
    """

    def __init__(self, steps: Sequence[int], score: Callable[[nn.Module], float]):
        if not steps or any(int(s) < 1 for s in steps):
            raise ValueError(f"steps must be optimizer steps >= 1, got {list(steps)}")
        self.steps, self.score, self.values = sorted(set(int(s) for s in steps)), score, {}

    def on_step_end(self, state) -> None:
        if state.step in self.steps:
            was_training = state.student.training
            state.student.eval()
            try:
                self.values[state.step] = float(self.score(state.student))
            finally:
                state.student.train(was_training)

    def curve(self) -> List[float]:
        """The scores in step order; raises if training stopped before the last step."""
        missing = [s for s in self.steps if s not in self.values]
        if missing:
            raise ValueError(f"training ended before steps {missing}")
        return [self.values[s] for s in self.steps]
