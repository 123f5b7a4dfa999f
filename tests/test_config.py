from dataclasses import dataclass
from typing import Literal

import pytest

from cladapt.config import build_config, param, parse_assignments, split_values
from cladapt.errors import ConfigError, UnknownNameError


@dataclass
class Cfg:
    lr: float = param(0.1, "learning rate")
    epochs: int = param(3, "epochs")
    flag: bool = param(False, "a flag")
    opt: Literal["sgd", "adam"] = param("sgd", "optimizer")
    groups: tuple[int, ...] = param((1, 2), "group sizes")


def test_parse_assignments():
    assert parse_assignments(["lr=0.5", "batch-size=4"]) == {"lr": "0.5", "batch_size": "4"}


@pytest.mark.parametrize("bad", ["lr", "=3", "lr 0.1", "a b=1"])
def test_malformed_assignment_is_one_line_error(bad):
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments([bad])


def test_values_are_coerced_to_declared_types():
    cfg = build_config(
        Cfg, {"lr": "1e-3", "epochs": "7", "flag": "yes", "opt": "adam", "groups": "3,3,5"}
    )
    assert cfg == Cfg(lr=1e-3, epochs=7, flag=True, opt="adam", groups=(3, 3, 5))


@pytest.mark.parametrize(
    "key,value", [("lr", "fast"), ("epochs", "2.5"), ("flag", "maybe"), ("opt", "rmsprop")]
)
def test_bad_values_are_config_errors(key, value):
    with pytest.raises(ConfigError, match=key):
        build_config(Cfg, {key: value})


def test_unknown_key_suggests_the_closest():
    with pytest.raises(UnknownNameError, match="did you mean 'epochs'"):
        build_config(Cfg, {"epoch": "3"})


def test_split_values_routes_keys():
    @dataclass
    class Other:
        batch_size: int = 4

    a, b = split_values({"lr": "1", "batch_size": "2"}, Cfg, Other)
    assert a == {"lr": "1"} and b == {"batch_size": "2"}
    with pytest.raises(UnknownNameError):
        split_values({"nope": "1"}, Cfg, Other)
