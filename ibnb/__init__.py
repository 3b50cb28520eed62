"""ibnb — Inductive Bias in Neural Networks, in three layers.

* :mod:`ibnb.core` — data, image ops, the device loader, models, the training loop, the run cache, metrics, plots;
* :mod:`ibnb.chapters` — one package per chapter (presets, method, sweep, claims audit, figures);
* :mod:`ibnb.book` — profiles, claims and verdicts, results tables, provenance, the runner, the synthesis pages.

``core`` imports neither ``chapters`` nor ``book``; a chapter imports ``core`` and ``book``, never another chapter.
"""
__version__ = "0.2.0"
