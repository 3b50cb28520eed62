"""Which papermill knobs of each training notebook set *how much* is done (volume) and which set *what* runs
(shape), for the dry run (:mod:`ibnb.book.dryrun`), the cost estimate (:mod:`ibnb.book.cost`) and the sweep
planner (:mod:`ibnb.book.cluster`). A test checks that every knob on which ``smoke`` and ``gpu`` differ is
classified here, so a new knob cannot slip through.
"""
from __future__ import annotations

from typing import Any

#: per notebook: the knobs that set how much is done (images, epochs, steps, seeds, trials), taken from ``smoke``
VOLUME: dict[str, set[str]] = {
    "01_architectures": {"val_per_class", "n_per_class", "epochs", "seeds", "test_per_class", "grid",
                         "tune_n_per_class", "fast_epochs", "permute_n_per_class", "permute_models", "lr_extend"},
    "02_mlp_scaling": {"val_per_class", "ladder_n_per_class", "ladder_epochs", "epochs", "min_steps", "seeds",
                       "test_per_class", "scaling_n_per_class", "scaling_seeds", "batch_n_per_class", "batch_epochs",
                       "prior_n_per_class", "prior_epochs", "throughput_steps", "throughput_batch", "fit_bootstrap"},
    "03_spatial_attention": {"n_per_class", "val_per_class", "test_per_class", "epochs", "seeds", "pacs_n_per_class",
                             "pacs_val_per_class", "pacs_epochs", "sketch_per_class", "faith_per_class",
                             "overlay_images", "food_epochs", "food_seeds", "food_val_per_class"},
    "04_test_time_augmentation": {"probe_epochs", "members", "ensembles", "ra_members", "n_per_class",
                                  "val_per_class", "test_per_class", "corrupt_per_class", "epochs", "tta_samples",
                                  "corrupt_samples", "gps_pool", "gps_search_per_class", "member_subsets",
                                  "metta_members", "metta_views", "probe_per_class"},
    "05_sparse_vd": {"n_per_class", "val_per_class", "test_per_class", "epochs", "seeds", "random_label_per_class",
                     "random_label_epochs", "random_label_seeds"},
    "06_deep_weight_prior": {"n_source_nets", "source_epochs", "vae_steps", "sizes", "seeds", "target_steps",
                             "test_per_class", "init_n_per_class", "init_epochs", "init_seeds", "val_per_class",
                             "mc_samples"},
    "07_self_supervised": {"probe_epochs", "n_per_class", "val_per_class", "test_per_class", "epochs",
                           "finetune_epochs", "transfer_per_class", "tsne_per_class", "seeds", "seeds_other_methods"},
    "08_vit_sam": {"n_per_class", "val_per_class", "test_per_class", "epochs", "seeds", "sharp_n", "hessian_iters",
                   "slice_points", "rollout_images", "search_trials", "search_epochs", "extra_seeds"},
    "10_cpu_training": {"val_per_class", "n_per_class", "test_per_class", "seeds", "seeds_cheapest", "parity_epochs",
                        "parity_seeds", "bench_steps", "bench_repeats", "bench_batch_size"},
}
#: per notebook: knobs that differ between ``smoke`` and ``gpu`` and define *what* runs (kept at the profile's value)
SHAPE: dict[str, set[str]] = {
    "01_architectures": {"model_kw", "batch_size", "lrs", "weight_decays", "fast_recipe"},
    "02_mlp_scaling": {"lr", "model_kw", "batch_size", "scaling_sizes", "batch_sizes"},
    "03_spatial_attention": {"width", "grid_lr", "grid_batch_size", "grid_weight_decay", "pacs_size",
                             "faith_fractions", "food"},
    "04_test_time_augmentation": {"model", "optimizer", "lr", "momentum", "weight_decay", "schedule",
                                  "warmup_fraction", "label_smoothing", "lookahead", "ra_ops", "eval_batch_size",
                                  "model_kw", "batch_size"},
    "05_sparse_vd": set(),
    "06_deep_weight_prior": {"width1", "width2", "vae_hidden"},
    "07_self_supervised": {"loss_kw", "backbones", "backbone_kw", "batch_size", "projector_dims", "wmse_dim",
                           "warmup_epochs"},
    "08_vit_sam": {"asam_rho", "models", "model_kw", "batch_size", "lr", "rhos", "search_models", "arch_profile"},
    "10_cpu_training": {"bench_models", "recipes", "batch_size", "widths_s"},
}


#: per notebook: the volume knobs that only change evaluation work (test images, TTA views, policy pools, bench
#: steps), never a training run; the cost estimate (:mod:`ibnb.book.cost`) takes only these from ``smoke``
EVAL_ONLY: dict[str, set[str]] = {
    "01_architectures": {"test_per_class"},
    "02_mlp_scaling": {"test_per_class", "throughput_steps", "throughput_batch", "fit_bootstrap"},
    "03_spatial_attention": {"test_per_class", "sketch_per_class", "faith_per_class", "overlay_images"},
    "04_test_time_augmentation": {"test_per_class", "corrupt_per_class", "tta_samples", "corrupt_samples",
                                  "gps_pool", "gps_search_per_class", "member_subsets", "metta_views"},
    "05_sparse_vd": {"test_per_class"},
    "06_deep_weight_prior": {"test_per_class"},
    "07_self_supervised": {"test_per_class", "tsne_per_class"},
    "08_vit_sam": {"test_per_class", "sharp_n", "hessian_iters", "slice_points", "rollout_images"},
    "10_cpu_training": {"test_per_class", "bench_steps", "bench_repeats", "bench_batch_size"},
}


#: per notebook: further volume knobs the cost estimate (and only it) takes from ``smoke``: work it does not count
#: (chapter 06's kernel VAE, a small MLP trained in its own loop; MeTTA's linear probes on the probe split) or
#: whose count it rescales (chapter 04's validation split, :data:`VAL_KNOB`). Evaluating 45,000-image ensembles
#: on thousands of augmented views is hours of CPU even when every member trained two steps; the counted
#: training runs are the same. Not for the sweep planner (:mod:`ibnb.book.cluster`): a smaller validation
#: split changes the runs' cache keys.
UNCOUNTED: dict[str, set[str]] = {
    "04_test_time_augmentation": {"probe_per_class", "val_per_class"},
    "06_deep_weight_prior": {"vae_steps"},
}
#: per notebook: the knob that sizes the per-epoch validation set of its training runs, where :data:`UNCOUNTED`
#: takes it from ``smoke``: the estimate scales each run's validation images by (profile's value / smoke's)
VAL_KNOB: dict[str, str] = {"04_test_time_augmentation": "val_per_class"}


def estimate_swap(stem: str) -> set[str]:
    """The knobs a cost estimate of ``stem`` takes from ``smoke``: :data:`EVAL_ONLY` and :data:`UNCOUNTED`."""
    return EVAL_ONLY[stem] | UNCOUNTED.get(stem, set())


#: per notebook: volume knobs a dry run must raise above ``smoke`` so the profile's own batch size stays valid
#: (``(params) -> {knob: value}``, applied after the swap and before the caller's overrides)
AT_LEAST: dict[str, Any] = {
    # the presets require batch_size <= the pretraining set (10 classes × n_per_class)
    "07_self_supervised": lambda p: {"n_per_class": max(p["n_per_class"], -(-p["batch_size"] // 10))},
}
