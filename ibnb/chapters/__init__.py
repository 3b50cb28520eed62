"""One package per study chapter, each with the same contract.

``ibnb/chapters/<name>/`` holds everything that is the chapter's own:

* ``presets.py`` — ``NOTEBOOK`` (the notebook stem), ``PRESETS`` (``smoke`` / ``cpu`` / ``gpu``: every knob,
  same keys in each) and ``validate(P)``; the notebook resolves them with
  ``ibnb.book.profiles.resolve(presets, globals())``;
* the method (objectives and train steps as frozen dataclasses), the sweep, the claims audit, the figures.

Its ``__init__.py`` exposes the contract the notebook calls, one call per step:

* ``run(P, progress=False) -> Outcome`` — trains (or loads from the run cache) every planned run and writes the
  chapter's results table (each training run's row carries ``converged`` / ``convergence``);
* ``audit(outcome, P) -> ibnb.book.page.Audit`` — claims decided by :func:`ibnb.book.claims.judge`, plus
  calibration rows against published numbers;
* ``numbers(outcome, P) -> dict`` — every number the prose quotes (glued by name);
* ``figures(outcome, P) -> dict[str, Figure]`` — every figure (glued by name, shown with ``{glue:figure}``);
* ``tables(outcome, P) -> dict[str, ibnb.book.tables.Table]`` — every table, through the one formatter.

A chapter imports :mod:`ibnb.core` and :mod:`ibnb.book`, never another chapter.
"""
