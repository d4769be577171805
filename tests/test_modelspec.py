"""Models from specs: stable keys, seeded weights, shapes governance can check without a model."""

from __future__ import annotations

import pytest
import torch

from meshfl.errors import ConfigError
from meshfl.events import ModelSpec
from meshfl.modelspec import build_model, expected_shapes, initial_state, num_parameters

MLP = ModelSpec(input_dim=64, hidden=[128], output_dim=10)


def test_mlp_state_matches_expected_shapes() -> None:
    state = build_model(MLP, seed=1).state_dict()
    shapes = expected_shapes(MLP)
    assert (
        list(state)
        == list(shapes)
        == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    )
    for name, tensor in state.items():
        assert (list(tensor.shape), str(tensor.dtype).removeprefix("torch.")) == shapes[name]
    assert num_parameters(MLP) == 64 * 128 + 128 + 128 * 10 + 10 == sum(t.numel() for t in state.values())


def test_keys_do_not_depend_on_activation_or_dropout() -> None:
    deep = ModelSpec(input_dim=5, hidden=[7, 6], output_dim=3)
    variants = [deep, deep.model_copy(update={"activation": "gelu", "dropout": 0.3})]
    keys = [list(build_model(spec, seed=0).state_dict()) for spec in variants]
    assert keys[0] == keys[1] == list(expected_shapes(deep))
    a, b = (build_model(spec, seed=0).state_dict() for spec in variants)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_seeded_weights_are_deterministic_and_leave_the_global_rng() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = initial_state(MLP, seed=5)
    assert torch.equal(torch.rand(3), expected_next)
    second = initial_state(MLP, seed=5)
    other = initial_state(MLP, seed=6)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["layers.0.weight"], other["layers.0.weight"])


def test_logreg_and_forward() -> None:
    spec = ModelSpec(architecture="logreg", input_dim=30, output_dim=2)
    model = build_model(spec, seed=0)
    assert list(model.state_dict()) == ["layers.0.weight", "layers.0.bias"]
    assert model(torch.zeros(4, 30)).shape == (4, 2)
    for activation in ("relu", "tanh", "gelu"):
        out = build_model(MLP.model_copy(update={"activation": activation}), seed=0)(torch.rand(3, 64))
        assert out.shape == (3, 10)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"architecture": "transformer"}, "architecture"),
        ({"architecture": "logreg"}, "hidden"),
        ({"activation": "swish"}, "activation"),
        ({"dropout": 1.0}, "dropout"),
        ({"hidden": [0]}, "width"),
    ],
)
def test_bad_specs(changes: dict[str, object], message: str) -> None:
    spec = MLP.model_copy(update=changes)
    with pytest.raises(ConfigError, match=message):
        build_model(spec)
    with pytest.raises(ConfigError, match=message):
        expected_shapes(spec)
