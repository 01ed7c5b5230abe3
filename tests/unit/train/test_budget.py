"""Time budgets: parsing ``--time-budget`` and fitting epochs and validation cadence to the time left."""

from __future__ import annotations

import pytest

from ctseg.errors import ConfigError
from ctseg.train.budget import BudgetClock, fit_schedule, format_seconds, parse_duration, validation_estimate_s


@pytest.mark.parametrize(
    ("text", "minutes"), [("90s", 1.5), ("20m", 20.0), ("2h", 120.0), ("1d", 1440.0), ("1.5h", 90.0)]
)
def test_parse_duration(text: str, minutes: float) -> None:
    assert parse_duration(text) == pytest.approx(minutes)


@pytest.mark.parametrize("text", ["20", "20 min", "-5m", "m", "1e3s", "2h30m", ""])
def test_parse_duration_refuses_bad_text(text: str) -> None:
    with pytest.raises(ConfigError, match="expected a number and a unit s, m, h or d"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["5s", "31d", "0m"])
def test_parse_duration_is_range_checked(text: str) -> None:
    with pytest.raises(ConfigError, match="expected between 10s and 30d"):
        parse_duration(text)


def test_fit_uses_the_time_and_validates_the_last_epoch() -> None:
    fit = fit_schedule(seconds_left=600.0, step_s=0.3, validation_s=5.0, steps_per_epoch=25, done_steps=10)
    steps_s = (fit.epochs * 25 - 10) * 0.3
    validations = fit.epochs // fit.val_every + (fit.epochs % fit.val_every != 0)
    cost = steps_s + validations * 5.0
    assert cost <= 600.0
    # one more epoch would not fit: the budget is used, not wasted
    assert cost + 25 * 0.3 > 600.0 - 5.0
    assert 8 <= validations <= 11


def test_validations_are_capped_to_a_share_of_the_budget() -> None:
    fit = fit_schedule(seconds_left=100.0, step_s=0.1, validation_s=10.0, steps_per_epoch=10, done_steps=0)
    validations = fit.epochs // fit.val_every + (fit.epochs % fit.val_every != 0)
    assert validations * 10.0 <= 0.2 * 100.0 + 10.0


def test_no_time_left_finishes_the_current_epoch() -> None:
    assert fit_schedule(seconds_left=-5.0, step_s=1.0, validation_s=1.0, steps_per_epoch=25, done_steps=30).epochs == 2
    assert fit_schedule(seconds_left=0.0, step_s=1.0, validation_s=1.0, steps_per_epoch=25, done_steps=50).epochs == 2


def test_refit_keeps_the_cadence() -> None:
    fit = fit_schedule(
        seconds_left=300.0, step_s=0.5, validation_s=2.0, steps_per_epoch=20, done_steps=100, val_every=3
    )
    assert fit.val_every == 3 and fit.epochs > 5


def test_validation_estimate_counts_windows() -> None:
    # 64^3 patches at overlap 0.5 over 128x64x64: 3 windows along z, 1 elsewhere
    assert validation_estimate_s([(128, 64, 64)], (64, 64, 64), step_s=1.0, batch_size=2) == pytest.approx(0.75)


def test_clock_measures_after_warm_up() -> None:
    clock = BudgetClock(deadline=1e18, budget_s=1e18, start_step=5)
    due = [clock.after_step(s) for s in range(6, 6 + 10)]
    assert due == [False] * 9 + [True] and clock.measured_steps == 8 and clock.step_seconds() >= 0.0


def test_clock_measures_less_when_the_budget_is_tiny() -> None:
    clock = BudgetClock(deadline=1e18, budget_s=0.0, start_step=0)  # every measured step is "long enough"
    assert [clock.after_step(s) for s in range(1, 6)] == [False, False, False, True, True]
    clock.fitted = True
    assert not clock.after_step(6) and clock.measured_steps == 4  # still counting: refits use the mean step time


def test_clock_fits_at_once_when_the_budget_is_spent() -> None:
    clock = BudgetClock(deadline=0.0, budget_s=10.0, start_step=0)
    assert clock.after_step(1) and clock.step_seconds() == 0.0


def test_format_seconds() -> None:
    assert format_seconds(754.2) == "12:34" and format_seconds(3725) == "1:02:05" and format_seconds(-3) == "0:00"


def test_a_late_growth_does_not_restart_a_decayed_learning_rate() -> None:
    """Few long epochs (the gpu plan's 250 steps on a CPU): after the last of 3 planned epochs the cosine rate is 0;
    growing to 4 epochs would lift it to 0.15 of the initial rate, so the run keeps 3 and ends early. Early in a
    run, or by a small step late in a run of many short epochs, the horizon still grows."""
    from ctseg.train.budget import MAX_LR_RISE, bounded_growth
    from ctseg.train.setup import lr_factor

    def rise_at(step: int, now: int, spe: int, optimizer: str = "adamw"):  # type: ignore[no-untyped-def]
        return lambda e: lr_factor(optimizer, step, e * spe) - lr_factor(optimizer, step, now * spe)

    assert lr_factor("adamw", 750, 1000) - lr_factor("adamw", 750, 750) > MAX_LR_RISE
    assert bounded_growth(3, 4, rise_at(750, 3, 250)) == 3
    assert bounded_growth(3, 4, rise_at(750, 3, 250, "sgd")) == 3
    assert bounded_growth(40, 60, rise_at(100, 40, 25)) == 60  # a tenth of the way: free to grow
    assert bounded_growth(100, 104, rise_at(2250, 100, 25)) == 104  # 90% of the way, 4% longer: a small lift
    # a large late growth is cut to what keeps the lift small, not refused outright
    grown = bounded_growth(100, 150, rise_at(2250, 100, 25))
    assert 100 < grown < 150 and rise_at(2250, 100, 25)(grown) <= MAX_LR_RISE < rise_at(2250, 100, 25)(grown + 1)
