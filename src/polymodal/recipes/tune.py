"""`polymodal tune`: an Optuna study over a classification config.

One trial = one ``recipes.train.train`` run into ``STUDY_DIR/trials/trial_NNNN`` with the trial's values put into the
config, data loaders WITHOUT the test split (trials choose on validation only), the Trainer reporting the
per-epoch validation metric to the trial (median or successive-halving pruning).

- Sampler: TPE (Bergstra et al., "Algorithms for Hyper-Parameter Optimization", NeurIPS 2011), seeded.
- Resumable: the study lives in ``STUDY_DIR/study.db`` (SQLite); running the same command again continues it,
  and ``--trials N`` is the total of finished (complete + pruned) trials. A trial cut short (Ctrl-C, a killed
  process) is retried with the same values and resumes its own checkpoint (the Trainer's exact resume).
- Parallel: ``jobs`` trials at a time in threads of one process (optuna's n_jobs). Torch's intra-op threads are
  divided between them; the global RNGs are shared, so parallel trials are not bit-reproducible (jobs=1 is).
- At the end the best trial's model (its ``best/``) is kept and evaluated on the TEST split once
  (``STUDY_DIR/test/``); other trials' checkpoints are removed unless ``keep_checkpoints``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, apply_overrides, from_dict, read_config_file
from ..errors import PolymodalError
from ..tune.space import SearchSpace, apply_params, load_space, validate_space

STORAGE_NAME = "study.db"
STUDY_NAME = "polymodal"
SETTINGS_NAME = "tune.json"


class TuneError(PolymodalError):
    """A study cannot run or continue as asked (optuna missing, no validation split, a changed objective...)."""


class TrialFailedError(PolymodalError):
    """One trial could not train (a config combination that does not build, a diverged run): the trial is
    recorded as failed and the study goes on."""


def _optuna():
    try:
        import optuna
    except ImportError:
        raise TuneError("polymodal tune needs the 'optuna' package, which is not installed: "
                        "pip install 'polymodal[tune]' (or: pip install 'optuna>=3.6')") from None
    return optuna


def _pruned_error_type():
    optuna = _optuna()

    class TrialPrunedError(PolymodalError, optuna.TrialPruned):
        """Raised from the Trainer's epoch callback: optuna records the trial as PRUNED, trackers as pruned."""

        tracker_status = "pruned"

    return TrialPrunedError


@dataclass
class TuneOptions:
    trials: int
    study_dir: str | Path
    timeout: float | None = None  # seconds for this invocation (optuna stops starting new trials after it)
    jobs: int = 1
    pruner: str = "median"  # median | halving | none
    metric: str | None = None  # default: the space's, else train.monitor
    direction: str | None = None  # default: the space's, else from train.monitor_mode
    seed: int | None = None  # sampler seed; default train.seed
    overrides: list[str] = field(default_factory=list)
    keep_checkpoints: bool = False
    evaluate_test: bool = True
    verbose: bool = True
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # values to try first (e.g. a known baseline)


def _settings(config_path: str, space: SearchSpace, metric: str, direction: str) -> dict[str, Any]:
    return {"config": str(Path(config_path).resolve()), "space": space.source, "metric": metric,
            "direction": direction, "params": space.keys}


def _check_same_study(study_dir: Path, settings: dict[str, Any]) -> None:
    """A study continues only with the same objective: mixing metrics or spaces in one study is meaningless."""
    path = study_dir / SETTINGS_NAME
    if not path.exists():
        path.write_text(json.dumps(settings, indent=2))
        return
    previous = json.loads(path.read_text())
    for key in ("metric", "direction", "params"):
        if previous.get(key) != settings[key]:
            raise TuneError(f"{study_dir} holds a study with {key} {previous.get(key)!r}; this command asks for "
                            f"{settings[key]!r}: use another --study-dir (or the same {key})")


def _pruner(name: str, optuna):
    if name == "median":
        # No pruning on the first epoch (every model is poor then) nor before two trials have finished.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise TuneError(f"--pruner: {name!r} is not one of median, halving, none")


def _recover_interrupted(study, optuna) -> None:
    """Trials left RUNNING (the process was killed) become FAIL; every interrupted trial not yet retried is
    enqueued again with its values and run directory, so it resumes from its checkpoint."""
    state = optuna.trial.TrialState
    for trial in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
        # Safe: the study directory's lock (held by the caller) says no other process runs this study.
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(trial._trial_id, state.FAIL)
    retried = set(study.user_attrs.get("retried", []))
    for trial in study.get_trials(deepcopy=False, states=(state.FAIL,)):
        if trial.user_attrs.get("interrupted") and trial.number not in retried and trial.params:
            study.enqueue_trial(trial.params, user_attrs={"resume_from": trial.user_attrs.get("run_dir"),
                                                          "retry_of": trial.number})
            retried.add(trial.number)
    study.set_user_attr("retried", sorted(retried))


def _finished(study, optuna) -> int:
    state = optuna.trial.TrialState
    return len(study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED)))


class _Objective:
    """Trains one trial; returns its best validation value (the Trainer's monitor is the study's metric)."""

    def __init__(self, base_data, space, metric, direction, study_dir, prepared, options, stop):
        self.base_data, self.space, self.metric, self.direction = base_data, space, metric, direction
        self.study_dir, self.prepared, self.options, self.stop = study_dir, prepared, options, stop
        self.pruned_error = _pruned_error_type()
        self.lock = threading.Lock()

    def trial_config(self, values: dict[str, Any], run_dir: Path) -> Config:
        data = apply_params(self.base_data, values)
        train = data.setdefault("train", {})
        train.update(out_dir=str(run_dir), progress=False, monitor=self.metric,
                     monitor_mode="max" if self.direction == "maximize" else "min")
        return from_dict(Config, data)

    def __call__(self, trial) -> float:
        from ..training.checkpoint import is_complete_checkpoint
        from ..training.interrupt import TrainingInterrupted
        from ..training.run_lock import RunLockedError
        from ..training.write_errors import DiskFullError
        from .train import prepare, train

        values = self.space.suggest(trial)
        resume_from = trial.user_attrs.get("resume_from")
        run_dir = Path(resume_from) if resume_from else self.study_dir / "trials" / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            config = self.trial_config(values, run_dir)
        except ConfigError as err:
            trial.set_user_attr("error", str(err))
            raise TrialFailedError(f"trial {trial.number}: {err}") from err

        last_epoch = config.train.epochs - 1 if config.train.max_steps is None else float("inf")

        def report(epoch: int, row: dict[str, Any]) -> None:
            value = float(row[self.metric])
            trial.report(value, epoch)
            if self.stop is not None and self.stop.requested is not None:  # --jobs > 1: Ctrl-C reaches us here
                raise TrainingInterrupted(f"trial {trial.number} stopped on a signal at epoch {epoch + 1}",
                                          signum=self.stop.requested)
            # The last epoch is never pruned: the run is complete by then and its value is a real result.
            if epoch < last_epoch and trial.should_prune():
                raise self.pruned_error(f"trial {trial.number} pruned after epoch {epoch + 1}: "
                                        f"{self.metric} {value:.4f}")

        resume = bool(resume_from) and is_complete_checkpoint(run_dir / "checkpoints" / "last")
        started = time.perf_counter()
        try:
            if self.prepared is not None:
                prepared = self.prepared
            else:  # the space changes the data or processors: this trial's own loaders, still without test
                prepared = prepare(copy.deepcopy(config), splits=("train", "val"))
            summary = train(config, resume=resume, run_dir=run_dir, verbose=False, prepared=prepared,
                            epoch_callback=report)
        except (TrainingInterrupted, KeyboardInterrupt):
            trial.set_user_attr("interrupted", True)
            raise
        except self.pruned_error as err:
            trial.set_user_attr("seconds", time.perf_counter() - started)
            self._drop_resume_state(run_dir)
            if self.options.verbose:
                print(f"  {err}", flush=True)
            raise
        except (DiskFullError, RunLockedError):  # the machine, not the point in the space: stop the study
            raise
        except (PolymodalError, KeyError, ValueError, TypeError, RuntimeError) as err:
            # A combination that does not build (unknown name, mismatched shapes), a diverged run, out of memory:
            # this point fails, the study goes on.
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            raise TrialFailedError(f"trial {trial.number}: {err}") from err
        fit = summary["fit"]
        trial.set_user_attr("seconds", time.perf_counter() - started)
        trial.set_user_attr("epochs_run", fit["epochs_run"])
        trial.set_user_attr("best_epoch", fit["best_epoch"])
        self._drop_resume_state(run_dir)
        if fit["best_metric"] is None:
            raise TrialFailedError(f"trial {trial.number}: no validation value of {self.metric} was recorded")
        if self.options.verbose:
            shown = ", ".join(f"{k}={_short(v)}" for k, v in values.items())
            print(f"  trial {trial.number}: {self.metric} {fit['best_metric']:.4f}  ({shown})", flush=True)
        return float(fit["best_metric"])

    def _drop_resume_state(self, run_dir: Path) -> None:
        # A finished trial is never resumed: its optimizer state is dead weight (often 2-3x the model).
        if not self.options.keep_checkpoints:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def load_base(config_path: str | Path, overrides: list[str]) -> tuple[dict[str, Any], Config]:
    """The study's base config as plain data (trial values are applied to this) and validated."""
    data = read_config_file(config_path)
    apply_overrides(data, list(overrides))
    return data, from_dict(Config, copy.deepcopy(data))


def _metric_and_direction(options: TuneOptions, space: SearchSpace, base: Config) -> tuple[str, str]:
    metric = options.metric or space.metric or base.train.monitor
    if not metric.startswith("val_"):
        raise TuneError(f"--metric {metric!r}: a study optimises a validation metric (val_accuracy, val_macro_f1, "
                        "val_loss, ...): trials never see the test split")
    direction = options.direction or space.direction
    if direction is None:
        direction = "minimize" if metric.endswith("loss") else "maximize"
    if direction not in ("maximize", "minimize"):
        raise TuneError(f"--direction {direction!r} must be maximize or minimize")
    return metric, direction


def run_study(config_path: str | Path, space_path: str | Path, options: TuneOptions) -> dict[str, Any]:
    """Run (or continue) a study; evaluate its best trial on test once; write the study report.

    Returns the study summary (also written to ``STUDY_DIR/study.json``): best trial, its value / params /
    model directory, the test metrics, the trials table and report paths. Raises TuneError (optuna missing, no
    validation split, a different objective in the study directory, no trial completed), SearchSpaceError (a
    bad space) and TrainingInterrupted (Ctrl-C: the study is resumable as it stands).
    """
    optuna = _optuna()
    from ..training.run_lock import RunLock
    from ..training.trackers import resolve_trackers
    from .train import prepare

    if options.trials < 1:
        raise TuneError(f"--trials must be >= 1, got {options.trials}")
    if options.jobs < 1:
        raise TuneError(f"--jobs must be >= 1, got {options.jobs}")
    base_data, base = load_base(config_path, options.overrides)
    resolve_trackers(base.train.trackers)  # a missing tracker package: said before any data loads
    space = load_space(space_path)
    validate_space(space, base_data)
    metric, direction = _metric_and_direction(options, space, base)
    study_dir = Path(options.study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own one line per trial instead
    with RunLock(study_dir, what="study directory"):
        _check_same_study(study_dir, _settings(str(config_path), space, metric, direction))
        seed = base.train.seed if options.seed is None else options.seed
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, options.trials // 2)))
        study = optuna.create_study(storage=f"sqlite:///{(study_dir / STORAGE_NAME).resolve()}",
                                    study_name=STUDY_NAME, direction=direction, sampler=sampler,
                                    pruner=_pruner(options.pruner, optuna), load_if_exists=True)
        _recover_interrupted(study, optuna)
        if not study.trials:
            for values in options.enqueue:
                study.enqueue_trial(values)
        prepared = None
        if not space.touches_data():
            prepared = prepare(copy.deepcopy(base), splits=("train", "val"))  # shared by trials; never test
            if "val" not in prepared[1]:
                raise TuneError(f"{config_path}: tune needs a validation split (data.val, or a built-in data set "
                                "with one): trials are compared on it, never on test")
        done = _finished(study, optuna)
        if options.verbose:
            print(f"polymodal tune: {done} of {options.trials} trials finished in {study_dir}; optimising "
                  f"{metric} ({direction})", flush=True)
        _optimize(study, optuna, base_data, space, metric, direction, study_dir, prepared, options)
        return _finish(study, optuna, study_dir, metric, direction, options)


def _optimize(study, optuna, base_data, space, metric, direction, study_dir, prepared, options) -> None:
    import contextlib

    import torch

    from ..training.interrupt import StopSignals

    deadline = None if options.timeout is None else time.monotonic() + options.timeout
    failures = 0
    # With threads, the trials' Trainers cannot install signal handlers: one handler here, checked per epoch.
    signals = StopSignals() if options.jobs > 1 else contextlib.nullcontext()
    threads = torch.get_num_threads()
    if options.jobs > 1:
        torch.set_num_threads(max(1, threads // options.jobs))  # trials share the cores instead of oversubscribing
    try:
        with signals as stop:
            objective = _Objective(base_data, space, metric, direction, study_dir, prepared, options,
                                   stop if options.jobs > 1 else None)
            while (remaining := options.trials - _finished(study, optuna)) > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                before = len(study.trials)
                study.optimize(objective, n_trials=remaining, timeout=left, n_jobs=options.jobs,
                               catch=(TrialFailedError,))
                state = optuna.trial.TrialState
                failures += sum(t.state == state.FAIL for t in study.trials[before:])
                if failures >= max(3, options.trials):  # a space where most points fail: stop, say so below
                    break
                if len(study.trials) == before:
                    break
    finally:
        torch.set_num_threads(threads)


def _finish(study, optuna, study_dir: Path, metric, direction, options) -> dict[str, Any]:
    from ..tune.report import trials_table, write_report

    state = optuna.trial.TrialState
    complete = study.get_trials(deepcopy=False, states=(state.COMPLETE,))
    if not complete:
        errors = [t.user_attrs.get("error") for t in study.trials if t.user_attrs.get("error")]
        hint = f"; last error: {errors[-1]}" if errors else ""
        raise TuneError(f"no trial of the study in {study_dir} completed ({len(study.trials)} tried){hint}")
    best = study.best_trial
    best_run = Path(best.user_attrs["run_dir"])
    if not options.keep_checkpoints:
        _drop_other_models(study, optuna, best)
    test = None
    if options.evaluate_test:
        test = _test_once(best, best_run, study_dir)
    summary = {
        "study_dir": str(study_dir),
        "metric": metric,
        "direction": direction,
        "trials_finished": _finished(study, optuna),
        "best": {"number": best.number, "value": best.value, "params": best.params, "run_dir": str(best_run),
                 "model_dir": str(best_run / "best")},
        "test": test,
        "trials": trials_table(study, optuna),
    }
    summary["paths"] = {k: str(v) for k, v in write_report(summary, study, optuna, study_dir).items()}
    return summary


def _drop_other_models(study, optuna, best) -> None:
    """Keep the best trial's model; finished trials that lost never need theirs (interrupted ones may resume)."""
    state = optuna.trial.TrialState
    for trial in study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED)):
        run_dir = trial.user_attrs.get("run_dir")
        if trial.number != best.number and run_dir and run_dir != best.user_attrs.get("run_dir"):
            shutil.rmtree(Path(run_dir) / "best", ignore_errors=True)


def _test_once(best, best_run: Path, study_dir: Path) -> dict[str, Any] | None:
    """Evaluate the best model on test unless this very trial's test result is already in the study directory
    (a rerun of a finished study must not read test again)."""
    record = study_dir / "test" / "tune_test.json"
    if record.exists():
        previous = json.loads(record.read_text())
        if previous.get("trial") == best.number:
            return previous["metrics"]
    metrics = evaluate_test(best_run, study_dir / "test")
    if metrics is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"trial": best.number, "metrics": metrics}, indent=2))
    return metrics


def evaluate_test(run_dir: Path, out: Path) -> dict[str, Any] | None:
    """The one read of the test split: the evaluation report (quality with bootstrap CIs) of the best model.
    None when the data has no test split."""
    from ..evaluation.report import ReportOptions
    from ..models import MultimodalModel
    from .evaluate import evaluate_path

    model = MultimodalModel.from_pretrained(run_dir / "best")
    data = getattr(model, "data_config", None) or {}
    if not data.get("name") and not data.get("test"):
        return None
    report, _ = evaluate_path(run_dir, split="test", out=out,
                              options=ReportOptions(robustness=False, efficiency=False))
    quality = (report.get("quality") or {}).get("classification_report") or {}
    keep = ("accuracy", "macro_f1", "weighted_f1", "num_samples")
    return {key: quality[key] for key in keep if key in quality} | {"report": str(out / "report.md")}


def study_summary_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, default=lambda v: dataclasses.asdict(v) if dataclasses.is_dataclass(v)
                      else str(v))
