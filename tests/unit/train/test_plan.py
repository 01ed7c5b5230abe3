"""The plan: mirroring that respects anatomy, the cpu plan's time budget, and notes that say why."""

from __future__ import annotations

from ctseg.config import RunConfig, TrainConfig
from ctseg.preprocess.intensity import IntensityStats
from ctseg.train.plan import CPU_BUDGET_MINUTES, Fingerprint, make_plan
from ctseg.train.setup import apply_overrides


def _fingerprint() -> Fingerprint:
    stats = IntensityStats(lower_hu=-100.0, upper_hu=300.0, mean_hu=80.0, std_hu=50.0)
    return Fingerprint(((1.5, 0.8, 0.8), (1.5, 0.8, 0.8)), ((200, 512, 512), (180, 512, 512)), stats, 6)


def test_plan_turns_off_left_right_mirroring_for_lateralised_labels() -> None:
    labels = ["liver", "spleen", "kidney_right", "kidney_left", "aorta"]
    for budget in ("cpu", "gpu"):
        plan = make_plan(_fingerprint(), budget=budget, labels=labels)
        assert 2 not in plan.config.train.mirror_axes and plan.config.train.mirror_axes == ()
        note = next(n for n in plan.notes if n.startswith("mirror_axes"))
        assert "kidney_right" in note and "kidney_left" in note and "left-right" in note


def test_set_overrides_the_planned_mirroring() -> None:
    plan = make_plan(_fingerprint(), labels=["kidney_left", "kidney_right"])
    config = apply_overrides(plan.config, {"train": {"mirror_axes": [0, 1, 2]}})
    assert config.train.mirror_axes == (0, 1, 2)


def test_cpu_plan_trains_for_a_budget_and_gpu_plan_for_epochs() -> None:
    cpu, gpu = make_plan(_fingerprint()).config.train, make_plan(_fingerprint(), budget="gpu").config.train
    assert cpu.time_budget_minutes == CPU_BUDGET_MINUTES and gpu.time_budget_minutes is None
    assert gpu.epochs == 1000 and cpu.learning_rate == 3e-3 and cpu.augment


def test_explicit_epochs_replace_the_time_budget_unless_a_budget_is_given_too() -> None:
    planned = RunConfig(train=TrainConfig(time_budget_minutes=15.0))
    assert apply_overrides(planned, {"train": {"epochs": 4}}).train.time_budget_minutes is None
    both = apply_overrides(planned, {"train": {"epochs": 4, "time_budget_minutes": 2.0}})
    assert both.train.time_budget_minutes == 2.0
    assert apply_overrides(planned, {"train": {"seed": 1}}).train.time_budget_minutes == 15.0
