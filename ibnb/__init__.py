"""ibnb — Inductive Bias in Neural Networks: data, models, training, evaluation, plots and results."""
from . import data, models, profiles, results, train, utils  # noqa: F401
from .data import load_dataset, list_datasets  # noqa: F401
from .models import create_model, list_models  # noqa: F401
from .train import evaluate, fit  # noqa: F401

__version__ = "0.1.0"
