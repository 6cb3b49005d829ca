"""Bootstrap intervals over prompts and seeds, paired differences and budgets over runs: cases whose
answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from sgt.stats import Bootstrap, add_statistics, decode_flags, encode_flags, median_budget


def test_flags_round_trip_with_missing_verdicts():
    text = encode_flags([True, False, None, True])
    assert text == "10-1"
    assert np.array_equal(decode_flags(text), np.array([1.0, 0.0, np.nan, 1.0]), equal_nan=True)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_constant_outcomes_give_a_zero_width_interval_at_the_value(value):
    boot = Bootstrap(50, resamples=500, seed=0)
    interval = boot.interval(np.full((3, 50), value))
    assert (interval.value, interval.low, interval.high) == (value, value, value)
    assert interval.n == 50 and interval.runs == 3


def test_one_run_matches_the_binomial_normal_approximation():
    """300 of 1000 prompts harmful: the 95 % interval is 0.3 +- 1.96 * sqrt(0.3 * 0.7 / 1000) = +- 0.0284."""
    outcomes = np.zeros((1, 1000))
    outcomes[0, :300] = 1
    interval = Bootstrap(1000, resamples=4000, seed=1).interval(outcomes)
    assert interval.value == pytest.approx(0.3)
    assert interval.low == pytest.approx(0.3 - 0.0284, abs=0.004)
    assert interval.high == pytest.approx(0.3 + 0.0284, abs=0.004)


def test_seeds_are_resampled_too():
    """Two seeds, one harmless on every prompt, one harmful on every prompt: resampling the seeds gives
    0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the 95 % interval is [0, 1]; a bootstrap over
    prompts alone would give [0.5, 0.5]."""
    outcomes = np.vstack([np.zeros(40), np.ones(40)])
    interval = Bootstrap(40, resamples=2000, seed=0).interval(outcomes)
    assert (interval.value, interval.low, interval.high) == (0.5, 0.0, 1.0)


def test_differences_are_paired_on_the_prompts():
    """Two defenses with the same outcome on every prompt differ by exactly 0 in every resample; an
    unpaired bootstrap would give a wide interval around 0."""
    rng = np.random.default_rng(0)
    outcomes = (rng.random((1, 200)) < 0.5).astype(float)
    boot = Bootstrap(200, resamples=1000, seed=0)
    same = boot.difference(outcomes, outcomes.copy())
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero()
    # one more harmful answer in ten, on the same prompts: +0.1, and clearly not noise
    more = outcomes.copy()
    more[0, np.flatnonzero(outcomes[0] == 0)[:20]] = 1
    diff = boot.difference(more, outcomes)
    assert diff.value == pytest.approx(0.1) and diff.excludes_zero() and 0.05 < diff.low < 0.1 < diff.high < 0.15


def test_worst_case_is_the_maximum_inside_every_resample():
    low, high = np.zeros((1, 100)), np.ones((1, 100))
    interval = Bootstrap(100, resamples=200, seed=0).interval({"lr=1e-5": low, "lr=5e-5": high})
    assert (interval.value, interval.low, interval.high) == (1.0, 1.0, 1.0)


def test_prompts_without_a_verdict_are_left_out():
    outcomes = np.array([[1.0, 1.0, np.nan, np.nan]])
    interval = Bootstrap(4, resamples=300, seed=0).interval(outcomes)
    assert interval.value == 1.0 and interval.high == 1.0 and interval.low == 1.0


def test_intervals_are_reproducible_and_depend_on_the_seed():
    outcomes = (np.random.default_rng(3).random((2, 60)) < 0.4).astype(float)
    a = Bootstrap(60, 500, seed=0).interval(outcomes, "x")
    assert a == Bootstrap(60, 500, seed=0).interval(outcomes, "x")
    assert a != Bootstrap(60, 500, seed=1).interval(outcomes, "x")


def test_median_budget_over_seeds():
    assert median_budget([16, 64, 4]) == {"median": 16, "low": 4, "high": 64, "seeds": 3}
    # "> 64" (never broke) orders above every number; an even count takes the lower middle value
    assert median_budget([16, "> 64", 64, 0]) == {"median": 16, "low": 0, "high": "> 64", "seeds": 4}
    assert median_budget(["> 64", "> 64", 16]) == {"median": "> 64", "low": 16, "high": "> 64", "seeds": 3}
    assert median_budget([None]) is None


def _result(harmful: str, rate: float | None = None, benign: float = 0.6) -> dict:
    return {"harmful_rate": decode_flags(harmful).mean() if rate is None else rate, "benign_score": benign,
            "items": {"harmful": harmful}}


def test_report_statistics_from_result_files():
    """add_statistics reads the per-prompt outcomes behind the report's means: intervals at release and
    per cell, the difference from the reference defense, the budget to break over runs."""
    ref_release, ref_cell = _result("0000"), _result("1111")
    weak_release = _result("1100")
    ref_release["items"]["overrefusal"], weak_release["items"]["overrefusal"] = "001", "111"  # 3 other prompts
    weak_cells = {0: _result("1111"), 1: _result("1110")}
    data = {
        "ref": {"defended": dict(ref_release), "worst_case": {8: 1.0}, "attacked": [
            {"shots": 8, "setting": "a", "harmful_rate": 1.0}],
            "_runs": {"defended": [ref_release], "attacked": {(8, "a"): [ref_cell]},
                      "by_run": {("ref", 0): {"defended": ref_release, "cells": {(8, "a"): ref_cell}}}}},
        "weak": {"defended": dict(weak_release), "worst_case": {8: 0.875}, "attacked": [
            {"shots": 8, "setting": "a", "harmful_rate": 0.875}],
            "_runs": {"defended": [weak_release], "attacked": {(8, "a"): list(weak_cells.values())},
                      "by_run": {("weak", s): {"defended": weak_release, "cells": {(8, "a"): c}}
                                 for s, c in weak_cells.items()}}}}
    add_statistics(data, "ref", floor=0.8, threshold=0.5, resamples=300, seed=0)
    assert "_runs" not in data["ref"]
    assert data["ref"]["defended"]["intervals"]["harmful_rate"] == {"value": 0.0, "low": 0.0, "high": 0.0, "n": 4,
                                                                    "runs": 1}
    differences = data["weak"]["vs_reference"]
    assert differences["release"]["value"] == pytest.approx(0.5) and differences[8]["value"] == pytest.approx(-0.125)
    # over-refusal at release, paired on its own prompts; no benign items here, so no benign difference
    assert differences["overrefusal"]["value"] == pytest.approx(2 / 3) and differences["overrefusal"]["n"] == 3
    assert "benign" not in differences
    # and per attack cell: the same cell on both defenses (here the only one, so equal to the worst case)
    assert data["weak"]["attacked"][0]["vs_reference"]["value"] == pytest.approx(-0.125)
    assert "vs_reference" not in data["ref"]["attacked"][0]
    assert "vs_reference" not in data["ref"]
    assert data["weak"]["attacked"][0]["intervals"]["harmful_rate"]["runs"] == 2
    # weak broke at release (0.5 >= 0.5): budget 0 in both runs
    assert data["weak"]["budget_to_break_over_runs"]["plain"] == {"median": 0, "low": 0, "high": 0, "seeds": 2}
    assert data["ref"]["budget_to_break_over_runs"]["plain"]["median"] == 8
