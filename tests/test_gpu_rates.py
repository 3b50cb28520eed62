"""The GPU check's model list and the reproduce page's table of measured GPU rates."""
import json

import pandas as pd
import pytest
import torch

from ibnb.book import gpu_rates
from ibnb.book.gpu_check import gpu_models
from ibnb.core.models import create_model


@pytest.mark.parametrize("spec", gpu_models(), ids=lambda s: f"{s['model']}-{s['chapter'].replace(' ', '+')}")
def test_every_survey_model_builds_and_runs_at_its_input_shape(spec):
    """A survey row the GPU check cannot build costs device time and returns an error row (as
    ``team_cnn_mini`` did without its ``image_size``): every row must run forward and backward here."""
    model = create_model(spec["model"], **spec["model_kw"])
    x = torch.randn(2, *spec["input_shape"])
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()


def test_survey_lists_each_gpu_model_once_with_the_chapters_that_train_it():
    rows = gpu_models()
    keys = [(r["model"], json.dumps(r["model_kw"], sort_keys=True), r["batch_size"]) for r in rows]
    assert len(keys) == len(set(keys))
    resnet = [r for r in rows if r["model"] == "resnet18"]
    assert len(resnet) == 1 and resnet[0]["chapter"].split() == ["01", "04", "07", "08"]


def _rates() -> pd.DataFrame:
    base = dict(chapter="01", model_kw=json.dumps({"width": 8}), batch_size=256, input_shape="3x32x32",
                train_gflop_per_image=1.0, device="cuda (test)")
    rows = [dict(base, model="cnn", path="fp32", fit_images_per_s=1000.0, fit_gflop_per_s=1000.0),
            dict(base, model="cnn", path="bf16+channels_last", fit_images_per_s=1500.0, fit_gflop_per_s=1500.0),
            dict(base, model="mlp", path="fp32", fit_images_per_s=400.0, fit_gflop_per_s=400.0),
            dict(base, model="team_cnn_mini", error="RuntimeError: shapes")]
    df = pd.DataFrame(rows)
    df["assumed_images_per_s"] = 10_000.0
    df["fit_vs_assumed"] = df["fit_images_per_s"] / df["assumed_images_per_s"]
    return df


def test_rate_table_reports_the_path_fit_takes_on_cuda_and_leaves_failed_models_out():
    """fit runs bf16 + channels-last on CUDA, so that row is reported even where fp32 was faster; a model measured
    in fp32 only says so."""
    df = _rates()
    df.loc[1, ["fit_images_per_s", "fit_vs_assumed"]] = [800.0, 0.08]  # bf16 slower than fp32 for this cnn
    frame = gpu_rates.rate_frame(df)
    assert list(frame["model"]) == ["`cnn` width 8", "`mlp` width 8"]
    cnn, mlp = frame.iloc[0], frame.iloc[1]
    assert cnn["measured (images/s)"] == "800" and cnn["path measured"] == "bf16 + channels-last"
    assert cnn["measured / assumed"] == "8 %" and cnn["bf16 + channels-last vs fp32"] == "-20 %"
    assert mlp["path measured"] == "fp32 only" and mlp["bf16 + channels-last vs fp32"] == "not measured"
    food = df.assign(model="team_cnn_sa_mini").iloc[[2]]
    assert gpu_rates.rate_frame(food)["model"].iloc[0].endswith("(Food-101 head)")


def test_rate_sentence_states_the_range_and_names_the_failed_model():
    text = str(gpu_rates.numbers(_rates(), {"device": "cuda (test)", "matmul_gflop_per_s": {"bf16": 7e5}})
               ["gpu_rate_sentence"])
    assert "4 % to 15 %" in text and "`team_cnn_mini`" in text
    assert "No GPU rate" in str(gpu_rates.numbers(pd.DataFrame(), {})["gpu_rate_sentence"])
