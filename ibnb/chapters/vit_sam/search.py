"""Chapter 08's hyperparameter search: Optuna's seeded TPE over (learning rate, weight decay, ρ), then the chosen
setting re-run with every seed.

The search trains each model of ``search_models`` on seed 0's training set for ``search_epochs`` epochs per trial
(the base optimiser is AdamW) and scores the validation split (never the test set); with ``workers`` > 1 the
models' studies run side by side in worker processes, each study one trial after the other. Each trial is a run of the run cache, so a re-executed page replays the
same trials: TPE with a fixed ``search_seed`` and the same scores proposes the same points. Parameter importances
are Optuna's fANOVA evaluator (a random forest over the trials, seeded); with fewer than :data:`MIN_IMPORTANCE_TRIALS`
completed trials none are computed. :func:`run_chosen` then trains the best trial's setting for the chapter's
``epochs`` with every seed and tests it on the full test split, next to the default setting of the main sweep.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import optuna
import pandas as pd

from ibnb.chapters.vit_sam.sweep import run_spec, train, train_subset
from ibnb.core.data import ImageData
from ibnb.core.parallel import map_in_workers, prefetch
from ibnb.core.train import evaluate

#: the search space: learning rate and weight decay log-uniform, ρ = 0 (the base optimiser) or a SAM radius
LR_RANGE, WD_RANGE, RHOS = (3e-4, 1e-2), (1e-3, 0.3), (0.0, 0.02, 0.05, 0.1, 0.2)
MIN_IMPORTANCE_TRIALS = 4


@dataclass
class Search:
    """The trials (one row each, in order), the fANOVA importances (``{}`` when too few trials) and why none."""

    trials: pd.DataFrame
    importances: dict = field(default_factory=dict)
    importance_note: str = ""

    @property
    def best(self) -> pd.Series:
        return self.trials.sort_values(["val_acc", "trial"], ascending=[False, True]).iloc[0]


def run_search(p: dict, data: ImageData, val: ImageData, model: str) -> Search:
    """Seeded TPE over the space above for ``model`` on ``data`` (seed 0's training set), ``search_trials``
    trials, one after the other."""
    rows = []

    def objective(trial: optuna.Trial) -> float:
        c = dict(lr=trial.suggest_float("lr", *LR_RANGE, log=True),
                 weight_decay=trial.suggest_float("weight_decay", *WD_RANGE, log=True),
                 rho=trial.suggest_categorical("rho", RHOS))
        net, hist, cached = train(p, model, data, val, seed=0, epochs=p["search_epochs"], rho=c["rho"],
                                  optimizer="adamw", lr=c["lr"], weight_decay=c["weight_decay"])
        ev = evaluate(net, val)
        rows.append(dict(model=model, trial=trial.number, **c, val_acc=ev["acc"], val_nll=ev["nll"], cached=cached,
                         **hist.columns()))
        return ev["acc"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=p["search_seed"]))
    study.optimize(objective, n_trials=p["search_trials"], n_jobs=1)
    trials = pd.DataFrame(rows)
    if len(study.trials) < MIN_IMPORTANCE_TRIALS:
        return Search(trials, {}, f"{len(study.trials)} trials, fewer than the {MIN_IMPORTANCE_TRIALS} an importance "
                                  "estimate needs")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=p["search_seed"])
    return Search(trials, dict(optuna.importance.get_param_importances(study, evaluator=evaluator)))


def run_searches(p: dict, pool: ImageData, val: ImageData) -> dict[str, Search]:
    """:func:`run_search` for every model of ``search_models`` (side by side with ``workers`` > 1)."""
    data = train_subset(pool, p, 0)
    found = map_in_workers(run_search, [(p, data, val, m) for m in p["search_models"]], p["workers"], p["device"])
    return dict(zip(p["search_models"], found))


def _chosen(p: dict, best: pd.Series) -> dict:
    return dict(epochs=p["epochs"], rho=float(best["rho"]), optimizer="adamw", lr=float(best["lr"]),
                weight_decay=float(best["weight_decay"]))


def run_chosen(p: dict, pool: ImageData, val: ImageData, test: ImageData, searches: dict[str, Search]) -> pd.DataFrame:
    """Each model's best trial setting trained for ``epochs`` with every seed, tested on the test split."""
    jobs = [(m, seed, train_subset(pool, p, seed)) for m in searches for seed in range(p["seeds"])]
    trained = prefetch([run_spec(p, m, data, val, seed=seed, **_chosen(p, searches[m].best)) for m, seed, data in jobs],
                       p["workers"], p["device"])
    rows = []
    for m, seed, data in jobs:
        c = _chosen(p, searches[m].best)
        net, hist, cached = train(p, m, data, val, seed=seed, trained=trained, **c)
        ev = evaluate(net, test)
        rows.append(dict(experiment="searched", model=m, seed=seed, epochs=p["epochs"], lr=c["lr"],
                         weight_decay=c["weight_decay"], rho=c["rho"], n_train=len(data), test_acc=ev["acc"],
                         test_nll=ev["nll"], n_test=ev["n"], cached=cached, **hist.columns()))
    return pd.DataFrame(rows)
