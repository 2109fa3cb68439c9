"""lightning_green.checks: numbers from NumPy and torch are numbers, bools and text are not.

And lightning_green.json_safe: the one rule for JSON (non-finite floats become None).
"""

from __future__ import annotations

import json
import math
import re
from enum import Enum

import numpy as np
import pytest
import torch
from nvml_double import FakeNvml, gpus

from lightning_green.checks import (
    as_number,
    check_at_least,
    check_bool,
    check_bools,
    check_choice,
    check_fraction_0_to_1,
    check_fraction_below_1,
    check_int,
    check_non_negative,
    check_number,
    check_positive,
    check_range,
    is_number,
)
from lightning_green.energy.carbon import resolve_carbon_intensity_g_per_kwh, validate_pue
from lightning_green.energy.estimate import resolve_cpu_power_per_core_w
from lightning_green.energy.nvml import NvmlMeter
from lightning_green.json_safe import finite_or_none, json_safe
from lightning_green.policy.batch_size import BatchSizePolicy, scale_learning_rate
from lightning_green.policy.noise_scale import GradientNoiseScale
from lightning_green.policy.precision import PrecisionPolicy

INTS = [5, np.int64(5), np.int32(5), np.uint8(5), torch.tensor(5), np.array(5)]
FLOATS = [0.25, np.float64(0.25), np.float32(0.25), np.float16(0.25), torch.tensor(0.25), np.array(0.25)]
NOT_NUMBERS = [
    True,
    False,
    np.bool_(True),
    torch.tensor(True),
    "0.25",
    "5",
    b"5",
    None,
    [5],
    1j,
    torch.tensor([5]),
]


@pytest.mark.parametrize("value", INTS)
def test_integers_from_numpy_and_torch_are_plain_ints(value):
    out = check_int("patience", value, 0)
    assert out == 5 and type(out) is int
    assert as_number(value) == 5 and type(as_number(value)) is int


@pytest.mark.parametrize("value", FLOATS)
def test_floats_from_numpy_and_torch_are_plain_floats(value):
    for out in (
        check_positive("lr", value),
        check_non_negative("energy_j", value),
        check_fraction_below_1("switch_margin", value),
        check_fraction_0_to_1("min_relative_gain", value),
        check_range("loss_tolerance", value, 0.0, math.inf),
        check_number("threshold", value),
    ):
        assert out == 0.25 and type(out) is float


def test_float32_is_taken_at_its_own_value():
    assert check_positive("min_delta", np.float32(0.1)) == float(np.float32(0.1))


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_bools_text_and_non_scalars_are_not_numbers(value):
    assert not is_number(value)
    with pytest.raises(ValueError) as info:
        check_positive("pue", value)
    hint = f" (the text {value!r}, not a number: write it unquoted, or pass a number)"
    hint = hint if isinstance(value, str) else ""  # text that reads as a number says so
    assert str(info.value) == f"pue must be a positive number, got {value!r}{hint}"
    with pytest.raises(ValueError, match=r"^patience must be an integer >= 0, got "):
        check_int("patience", value, 0)


def test_an_integer_argument_refuses_integral_floats():
    for value in (5.0, np.float64(5.0), torch.tensor(5.0)):
        with pytest.raises(ValueError, match=r"^window_steps must be an integer >= 1, got "):
            check_int("window_steps", value, 1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: check_int("patience", -1, 0), "patience must be an integer >= 0, got -1"),
        (lambda: check_int("probe_windows", 9, 1, 8), "probe_windows must be an integer in [1, 8], got 9"),
        (lambda: check_int("offset", 3, maximum=2), "offset must be an integer <= 2, got 3"),
        (
            lambda: check_int("steps", "3"),
            "steps must be an integer, got '3' (the text '3', not a number: write it unquoted, or pass "
            "a number)",
        ),
        (lambda: check_int("epoch", -2, 0, allow_none=True), "epoch must be None or an integer >= 0, got -2"),
        (lambda: check_positive("lr", 0), "lr must be a positive number, got 0"),
        (lambda: check_positive("lr", math.inf), "lr must be a positive number, got inf"),
        (
            lambda: check_positive("poll_interval_s", -1, unit="seconds", allow_none=True),
            "poll_interval_s must be None or a positive number of seconds, got -1",
        ),
        (
            lambda: check_non_negative("energy_j", -5, unit="joules"),
            "energy_j must be a finite number of joules >= 0, got -5",
        ),
        (
            lambda: check_non_negative("b_noise", math.nan, allow_inf=True, allow_none=True),
            "b_noise must be None or a number >= 0 (inf allowed), got nan",
        ),
        (
            lambda: check_at_least("pue", 0.5, 1.0, what="facility energy / IT energy"),
            "pue must be a number >= 1.0 (facility energy / IT energy), got 0.5",
        ),
        (lambda: check_at_least("pue", math.inf, 1.0), "pue must be a number >= 1.0, got inf"),
        (
            lambda: check_range("switch_margin", 1.0, 0.0, 1.0),
            "switch_margin must be a number in [0.0, 1.0), got 1.0",
        ),
        (
            lambda: check_range("x", 0.0, 0.0, 1.0, low_open=True, high_open=False, what="a share"),
            "x must be a number in (0.0, 1.0] (a share), got 0.0",
        ),
        (lambda: check_fraction_below_1("ema_decay", 1), "ema_decay must be a number in [0, 1), got 1"),
        (
            lambda: check_fraction_0_to_1("min_relative_gain", np.float64(1.5)),
            f"min_relative_gain must be a number in [0, 1], got {np.float64(1.5)!r}",  # numpy 1 and 2
        ),
        (
            lambda: check_number("stopping_threshold", math.nan),
            "stopping_threshold must be a finite number, got nan",
        ),
        (lambda: check_bool("verbose", 1), "verbose must be True or False, got 1"),
        (lambda: check_bool("verbose", "True"), "verbose must be True or False, got 'True'"),
        (lambda: check_bools(strict=True, summary=None), "summary must be True or False, got None"),
        (
            lambda: check_choice("mode", "maximize", ("min", "max")),
            "mode must be one of ['min', 'max'], got 'maximize'",
        ),
        (lambda: check_choice("level", True, (0, 1)), "level must be one of [0, 1], got True"),
        (
            lambda: check_positive("LIGHTNING_GREEN_CPU_POWER_PER_CORE_W", math.inf, given="1e400"),
            "LIGHTNING_GREEN_CPU_POWER_PER_CORE_W must be a positive number, got '1e400'",
        ),
    ],
)
def test_messages_name_the_argument_the_value_and_what_is_allowed(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_optional_variants_accept_none_and_nothing_else_that_is_not_a_number():
    assert check_positive("poll_interval_s", None, allow_none=True) is None
    assert check_int("max_epochs", None, 1, allow_none=True) is None
    assert check_fraction_below_1("margin", None, allow_none=True) is None
    assert check_bool("check_on_train_epoch_end", None, allow_none=True) is None
    assert check_choice("region", None, ("FR",), allow_none=True) is None
    with pytest.raises(ValueError, match=r"^lr must be a positive number, got None$"):
        check_positive("lr", None)


def test_bools_from_numpy_and_torch_are_flags_and_ints_are_not():
    assert check_bool("verbose", np.bool_(True)) is True
    assert check_bool("verbose", torch.tensor(False)) is False
    for value in (0, 1, np.int64(1), torch.tensor(1)):
        with pytest.raises(ValueError, match=r"^verbose must be True or False"):
            check_bool("verbose", value)


def test_choice_returns_the_matching_choice():
    assert check_choice("mode", np.str_("max"), ("min", "max")) == "max"
    assert type(check_choice("mode", np.str_("max"), ("min", "max"))) is str
    assert check_choice("window", np.int64(2), (1, 2, 4)) == 2
    with pytest.raises(ValueError, match="got array"):
        check_choice("mode", np.array([1, 2]), (1, 2))


# -- the modules that use the checks --------------------------------------------------------------
def test_energy_arguments_accept_numpy_and_torch_scalars_exactly_as_python_numbers():
    assert validate_pue(np.float64(1.2)) == 1.2 and validate_pue(torch.tensor(2)) == 2.0
    assert resolve_carbon_intensity_g_per_kwh(np.int64(300)) == (300.0, "argument")
    assert resolve_cpu_power_per_core_w(np.float32(12.5)) == 12.5
    meter = NvmlMeter([0], nvml=FakeNvml(gpus(1)), environ={}, sampling_interval_s=np.float32(0.5))
    assert meter.sampling_interval_s == 0.5 and type(meter.sampling_interval_s) is float


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (  # np.True_ (numpy 2), True (numpy 1)
            lambda: validate_pue(np.bool_(True)),
            rf"^pue must be a number >= 1.0 .*got {re.escape(repr(np.bool_(True)))}$",
        ),
        (lambda: validate_pue("1.2"), r"^pue must be .*, got '1.2'"),
        (
            lambda: resolve_carbon_intensity_g_per_kwh(True),
            r"^carbon_intensity_g_per_kwh must be .*, got True",
        ),
        (
            lambda: resolve_cpu_power_per_core_w("10"),
            r"^cpu_power_per_core_w must be a positive number .*'10'",
        ),
        (
            lambda: NvmlMeter([0], nvml=FakeNvml(gpus(1)), environ={}, sampling_interval_s=True),
            r"^sampling_interval_s must be a positive number of seconds, got True",
        ),
    ],
)
def test_energy_arguments_refuse_bools_and_text(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_environment_text_is_parsed_then_checked_and_quoted_as_set(monkeypatch):
    monkeypatch.setenv("LIGHTNING_GREEN_CPU_POWER_PER_CORE_W", "7.5")
    assert resolve_cpu_power_per_core_w(None) == 7.5
    for text in ("lots", "-3", "1e400", "nan"):
        monkeypatch.setenv("LIGHTNING_GREEN_CPU_POWER_PER_CORE_W", text)
        with pytest.raises(ValueError, match=f"LIGHTNING_GREEN_CPU_POWER_PER_CORE_W .*got '{text}'$"):
            resolve_cpu_power_per_core_w(None)
    monkeypatch.setenv("LIGHTNING_GREEN_CARBON_INTENSITY", "-1")
    with pytest.raises(ValueError, match=r"LIGHTNING_GREEN_CARBON_INTENSITY must be .* >= 0, got '-1'$"):
        resolve_carbon_intensity_g_per_kwh()


def test_policies_take_numpy_and_torch_scalars_and_keep_json_able_state():
    policy = BatchSizePolicy(
        np.int64(32), np.int64(16), torch.tensor(128), switch_margin=np.float32(0.25), max_factor=np.int64(4)
    )
    assert (policy.initial_batch_size, policy.max_factor, policy.switch_margin) == (32, 4, 0.25)
    policy.record_probe(np.int64(32), np.float64(12.0), np.int64(320), torch.tensor(0.5))
    json.dumps(policy.state_dict(), allow_nan=False)  # plain Python numbers only
    precision = PrecisionPolicy(
        ["bf16-mixed"],
        switch_margin=np.float32(0.25),
        cooldown_epochs=np.int64(3),
        start_step=torch.tensor(0),
    )
    assert (precision.switch_margin, precision.cooldown_epochs, precision.start_step) == (0.25, 3, 0)
    assert type(precision.cooldown_epochs) is int
    precision.record(
        "32-true", np.float64(1.0), np.int64(8), np.float32(0.5), losses=[np.float32(2.0), torch.tensor(1.5)]
    )
    json.dumps(precision.state_dict(), allow_nan=False)
    assert GradientNoiseScale(ema_decay=torch.tensor(0.5), min_updates=np.int64(2)).ema_decay == 0.5
    assert scale_learning_rate(np.float64(0.1), np.int64(32), torch.tensor(128), "linear") == pytest.approx(
        0.4
    )


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: PrecisionPolicy(["bf16-mixed"], cooldown_epochs=np.bool_(True)), "cooldown_epochs"),
        (lambda: PrecisionPolicy(["bf16-mixed"], switch_margin="0.1"), "switch_margin"),
        (lambda: PrecisionPolicy(["bf16-mixed"], loss_tolerance=True), "loss_tolerance"),
        (lambda: PrecisionPolicy(["bf16-mixed"]).record("32-true", 1.0, 8, 1.0, losses=["2.0"]), "losses"),
        (lambda: BatchSizePolicy(32, 16, 128, switch_margin=True), "switch_margin"),
        (lambda: BatchSizePolicy(32.0, 16, 128), "initial_batch_size"),
        (lambda: BatchSizePolicy(32, 16, 128).record_probe(32, "12", 320, 0.5), "energy_j"),
        (lambda: scale_learning_rate("0.1", 32, 64, "linear"), "lr"),
        (lambda: GradientNoiseScale(ema_decay="0.9"), "ema_decay"),
        (lambda: GradientNoiseScale(min_updates=True), "min_updates"),
    ],
)
def test_policies_refuse_bools_and_text_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        call()


# -- the one JSON-safe rule -------------------------------------------------------------------------
class Reason(str, Enum):
    CHEAPER = "cheaper"


def test_json_safe_turns_every_non_finite_float_into_none_and_keeps_the_rest():
    data = {
        "total_kwh": 1.5,
        "best": math.inf,
        "per_epoch": [1.0, math.nan, np.float32(-np.inf), np.float64(2.0)],
        "reason": Reason.CHEAPER,
        Reason.CHEAPER: (np.int64(3), torch.tensor(math.nan), np.bool_(True)),
        64: np.array([[1.0, np.nan]]),
        "t": torch.tensor([0.5, math.inf]),
        "none": None,
        "flag": False,
    }
    out = json_safe(data)
    assert out == {
        "total_kwh": 1.5,
        "best": None,
        "per_epoch": [1.0, None, None, 2.0],
        "reason": "cheaper",
        "cheaper": [3, None, True],
        "64": [[1.0, None]],
        "t": [0.5, None],
        "none": None,
        "flag": False,
    }
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_finite_or_none():
    assert finite_or_none(np.float32(0.5)) == 0.5 and type(finite_or_none(np.float32(0.5))) is float
    assert [finite_or_none(v) for v in (None, math.nan, -math.inf, torch.tensor(math.inf))] == [None] * 4
    with pytest.raises(TypeError, match="got 'x'"):
        finite_or_none("x")


def test_a_number_pyyaml_read_as_text_is_refused_with_the_reason():
    """PyYAML (YAML 1.1) reads ``1e-3`` as the text '1e-3'; the error says why and how to write it."""
    import yaml

    from lightning_green import EnergyAwareEarlyStopping

    config = yaml.safe_load("energy_budget_kwh: 1e-3\npatience: '3'\n")
    assert config == {"energy_budget_kwh": "1e-3", "patience": "3"}
    with pytest.raises(ValueError, match=r"got '1e-3' \(the text '1e-3', not a number: .*write 1.0e-3"):
        EnergyAwareEarlyStopping(monitor="val_loss", energy_budget_kwh=config["energy_budget_kwh"])
    with pytest.raises(ValueError, match=r"got '3' \(the text '3', not a number: write it unquoted"):
        EnergyAwareEarlyStopping(monitor="val_loss", patience=config["patience"])
    # Written as YAML 1.1 wants it, the same value is a number.
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", **yaml.safe_load("energy_budget_kwh: 1.0e-3"))
    assert stopper.energy_budget_kwh == 1e-3
    # Text that is no number gets no such hint.
    with pytest.raises(ValueError, match=r"got 'lots'$"):
        EnergyAwareEarlyStopping(monitor="val_loss", energy_budget_kwh="lots")
