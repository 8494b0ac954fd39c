"""Tests of mapframe.metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from mapframe.errors import ConfigError
from mapframe.hypervolume import greedy_hypervolume_subset
from mapframe.metrics import (
    dominance_matrix,
    generational_distance,
    hypervolume,
    hypervolume_fraction,
    inverted_generational_distance,
    normalize,
    pareto_front,
    pareto_mask,
    preference_scores,
    r2_score,
    reference_point,
    select_by_preference,
    to_minimization,
    win_rate,
)

STAIRS = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])


def brute_force_mask(G: np.ndarray) -> np.ndarray:
    """Non-dominated rows of a minimisation array, first of identical rows kept (O(K^2 T))."""
    keep = np.ones(len(G), dtype=bool)
    for i in range(len(G)):
        for j in range(len(G)):
            if j == i or not np.all(G[j] <= G[i]):
                continue
            if np.any(G[j] < G[i]) or j < i:
                keep[i] = False
                break
    return keep


# --------------------------------------------------------------------------- dominance


def test_to_minimization_negates_max_columns_only() -> None:
    out = to_minimization(np.array([[1.0, 2.0], [3.0, -4.0]]), ["max", "min"])
    np.testing.assert_array_equal(out, [[-1.0, 2.0], [-3.0, -4.0]])
    np.testing.assert_array_equal(to_minimization(np.array([[1.0, 2.0]])), [[-1.0, -2.0]])


def test_dominance_matrix_respects_directions() -> None:
    A = np.array([[2.0, 1.0]])
    B = np.array([[1.0, 2.0], [2.0, 1.0], [1.0, 1.0]])
    # max/max: (2,1) beats (1,1) only; equal points do not dominate each other.
    np.testing.assert_array_equal(dominance_matrix(A, B), [[False, False, True]])
    # max/min: (2,1) is better than (1,2) in both; still not better than itself.
    np.testing.assert_array_equal(
        dominance_matrix(A, B, ["max", "min"]), [[True, False, True]]
    )


def test_pareto_mask_keeps_first_duplicate_only() -> None:
    F = np.array([[1.0, 1.0], [2.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    # (0,0) is dominated by (1,1); (1,1) and (2,0) are incomparable; row 2 repeats row 0.
    np.testing.assert_array_equal(pareto_mask(F), [True, True, False, False])
    np.testing.assert_array_equal(pareto_front(F), [0, 1])


def test_pareto_mask_duplicates_general_path() -> None:
    F = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 2.0, 0.0], [0.0, 1.0, 0.0]])
    # (0,1,0) is dominated by (0,2,0); the two (1,1,1) rows collapse onto the first.
    np.testing.assert_array_equal(pareto_mask(F), [True, False, True, False])


def test_pareto_mask_mixed_directions() -> None:
    F = np.array([[1.0, 5.0], [2.0, 3.0], [2.0, 6.0], [0.0, 1.0]])
    # Column 0 maximised, column 1 minimised: (2,3) beats (1,5) and (2,6); (0,1) has the
    # lowest column 1 and survives.
    np.testing.assert_array_equal(pareto_mask(F, ["max", "min"]), [False, True, False, True])
    # Both maximised: (2,6) beats everything.
    np.testing.assert_array_equal(pareto_mask(F, ["max", "max"]), [False, False, True, False])
    # Both minimised: (0,1) beats everything.
    np.testing.assert_array_equal(pareto_mask(F, "min"), [False, False, False, True])


def test_pareto_mask_negative_zero_is_a_duplicate() -> None:
    F = np.array([[0.0, 1.0, 2.0], [-0.0, 1.0, 2.0]])
    np.testing.assert_array_equal(pareto_mask(F), [True, False])


@pytest.mark.parametrize("n_obj", [1, 2, 3, 5])
def test_pareto_mask_matches_brute_force(n_obj: int) -> None:
    rng = np.random.default_rng(n_obj)
    for _ in range(20):
        # Few distinct values: many ties, duplicates and weak dominance.
        F = rng.integers(0, 4, size=(40, n_obj)).astype(float)
        np.testing.assert_array_equal(pareto_mask(F, "min"), brute_force_mask(F))
        np.testing.assert_array_equal(pareto_mask(F, "max"), brute_force_mask(-F))


def test_pareto_mask_large_front_all_kept() -> None:
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(3000, 4))
    X /= np.linalg.norm(X, axis=1, keepdims=True)  # points on a sphere: mutually non-dominated
    assert pareto_mask(X).all()
    assert pareto_mask(np.vstack([X, X * 0.5])).sum() == 3000


def test_pareto_mask_empty() -> None:
    assert pareto_mask(np.empty((0, 3))).shape == (0,)


# --------------------------------------------------------------------------- hypervolume


def test_hypervolume_staircase_max() -> None:
    # Union of the boxes [0,1]x[0,3], [0,2]x[0,2], [0,3]x[0,1]:
    # x in [0,1] height 3 (3) + x in [1,2] height 2 (2) + x in [2,3] height 1 (1) = 6.
    assert hypervolume(STAIRS, [0.0, 0.0]) == pytest.approx(6.0)


def test_hypervolume_staircase_min_mirrored() -> None:
    # Minimising with ref (4,4): x in [1,2] height 4-3=1, [2,3] height 2, [3,4] height 3 -> 6.
    assert hypervolume(STAIRS, [4.0, 4.0], ["min", "min"]) == pytest.approx(6.0)
    # Negated points, minimised, ref (0,0): the mirror image of the max case.
    assert hypervolume(-STAIRS, [0.0, 0.0], "min") == pytest.approx(6.0)


def test_hypervolume_mixed_directions() -> None:
    F = STAIRS * np.array([1.0, -1.0])  # column 1 is now a loss to minimise
    assert hypervolume(F, [0.0, 0.0], ["max", "min"]) == pytest.approx(6.0)


def test_hypervolume_ignores_points_not_better_than_ref_and_dominated_points() -> None:
    F = np.vstack([STAIRS, [[5.0, 0.0], [0.5, 0.5], [-1.0, 9.0]]])
    assert hypervolume(F, [0.0, 0.0]) == pytest.approx(6.0)
    # A ref point better than every point: nothing is counted.
    assert hypervolume(STAIRS, [4.0, 4.0]) == 0.0


def test_hypervolume_three_objectives_and_one_objective() -> None:
    # Boxes 2x1x1 and 1x2x1 overlap in a 1x1x1 cube: 2 + 2 - 1 = 3.
    F = np.array([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0]])
    assert hypervolume(F, [0.0, 0.0, 0.0]) == pytest.approx(3.0)
    assert hypervolume(np.array([[3.0], [5.0]]), [1.0]) == pytest.approx(4.0)
    assert hypervolume(np.array([[3.0], [5.0]]), [6.0], "min") == pytest.approx(3.0)


def test_hypervolume_empty_is_zero() -> None:
    assert hypervolume(np.empty((0, 2)), [0.0, 0.0]) == 0.0
    assert hypervolume([], [0.0, 0.0]) == 0.0


def test_hypervolume_errors() -> None:
    with pytest.raises(ConfigError, match="ref_point"):
        hypervolume(STAIRS, [0.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match="NaN"):
        hypervolume(np.array([[1.0, np.nan]]), [0.0, 0.0])
    with pytest.raises(ConfigError, match="2-D"):
        hypervolume(np.ones((2, 2, 2)), [0.0, 0.0])
    with pytest.raises(ConfigError, match="directions"):
        hypervolume(STAIRS, [0.0, 0.0], ["max"])
    with pytest.raises(ConfigError, match="'max' or 'min'"):
        hypervolume(STAIRS, [0.0, 0.0], ["max", "up"])
    with pytest.raises(ConfigError, match="ref_point"):
        hypervolume(STAIRS, [0.0, np.inf])


def test_hypervolume_fraction() -> None:
    # The single point (2,2) covers the box [0,2]^2 = 4 of the staircase's 6.
    assert hypervolume_fraction(np.array([[2.0, 2.0]]), STAIRS, [0.0, 0.0]) == pytest.approx(
        4 / 6
    )
    assert hypervolume_fraction(STAIRS, STAIRS, [0.0, 0.0]) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="zero hypervolume"):
        hypervolume_fraction(STAIRS, STAIRS, [5.0, 5.0])


def test_reference_point() -> None:
    # Worst per column 1, range 2, margin 0.1 -> 1 - 0.2 = 0.8.
    np.testing.assert_allclose(reference_point(STAIRS), [0.8, 0.8])
    # Minimising: worst 3 -> 3 + 0.2.
    np.testing.assert_allclose(reference_point(STAIRS, directions="min"), [3.2, 3.2])
    # Shared over two arrays: worst of column 0 is -1 (range 4), of column 1 is 1 (range 2).
    np.testing.assert_allclose(
        reference_point(STAIRS, np.array([[-1.0, 2.0]])), [-1.4, 0.8]
    )
    # A constant column uses max(1, |worst|) = 5 as its range: 5 - 0.5.
    np.testing.assert_allclose(
        reference_point(np.array([[1.0, 5.0], [2.0, 5.0]])), [0.9, 4.5]
    )
    ref = reference_point(STAIRS)
    assert hypervolume(STAIRS, ref) > hypervolume(STAIRS, [1.0, 1.0])
    with pytest.raises(ConfigError, match="margin"):
        reference_point(STAIRS, margin=-1.0)
    with pytest.raises(ConfigError):
        reference_point()
    with pytest.raises(ConfigError, match="objectives"):
        reference_point(STAIRS, np.ones((1, 3)))


# --------------------------------------------------------------------------- GD / IGD


def test_generational_distances() -> None:
    F = np.array([[0.0, 0.0], [3.0, 4.0]])
    F_ref = np.array([[0.0, 1.0], [3.0, 0.0]])
    # GD: (0,0) -> (0,1) is 1; (3,4) -> (3,0) is 4 (vs sqrt(18) to (0,1)); mean 2.5.
    assert generational_distance(F, F_ref) == pytest.approx(2.5)
    # IGD: (0,1) -> (0,0) is 1; (3,0) -> (0,0) is 3 (vs 4 to (3,4)); mean 2.
    assert inverted_generational_distance(F, F_ref) == pytest.approx(2.0)
    # Directions do not change Euclidean distances.
    assert generational_distance(F, F_ref, "min") == pytest.approx(2.5)
    # Normalised by F_ref's ideal (0,0) and nadir (3,1): F -> (0,0),(1,4); F_ref -> (0,1),(1,0).
    # (0,0) -> 1; (1,4) -> sqrt(1 + 9) to (0,1). Mean (1 + sqrt(10)) / 2.
    assert generational_distance(F, F_ref, normalize=True) == pytest.approx(
        (1 + np.sqrt(10)) / 2
    )
    assert generational_distance(F_ref, F_ref) == 0.0
    assert inverted_generational_distance(F_ref, F_ref) == 0.0


def test_generational_distance_errors() -> None:
    with pytest.raises(ConfigError, match="at least one point"):
        generational_distance(np.empty((0, 2)), STAIRS)
    with pytest.raises(ConfigError, match="objectives"):
        inverted_generational_distance(np.ones((2, 3)), STAIRS)


# --------------------------------------------------------------------------- win rate


def test_win_rate_identical_fronts_is_one_half() -> None:
    # No pair of a front against itself is decided: neither front is better.
    assert win_rate(STAIRS, STAIRS) == 0.5


def test_win_rate_dominating_front() -> None:
    better = STAIRS + 1.0
    assert win_rate(better, STAIRS) == 1.0
    assert win_rate(STAIRS, better) == 0.0
    # Under minimisation the shifted front is the worse one.
    assert win_rate(better, STAIRS, "min") == 0.0


def test_win_rate_hand_computed_mixed_case() -> None:
    P = np.array([[2.0, 2.0]])
    Q = np.array([[1.0, 1.0], [0.0, 0.0], [3.0, 3.0], [3.0, 0.0]])
    # (2,2) beats (1,1) and (0,0), loses to (3,3), is incomparable to (3,0): 2 / (2 + 1).
    assert win_rate(P, Q) == pytest.approx(2 / 3)
    assert win_rate(Q, P) == pytest.approx(1 / 3)
    # All minimised: wins and losses swap.
    assert win_rate(P, Q, ["min", "min"]) == pytest.approx(1 / 3)


def test_win_rate_sampling() -> None:
    rng = np.random.default_rng(0)
    P = rng.uniform(size=(30, 2))
    Q = P - 1.0
    assert win_rate(P, Q, n_samples=10, rng=1) == 1.0
    # Sampling more points than the front has draws with replacement.
    assert win_rate(P[:3], Q, n_samples=50, rng=1) == 1.0
    R = rng.uniform(size=(40, 2))
    assert win_rate(P, R, n_samples=20, rng=7) == win_rate(P, R, n_samples=20, rng=7)
    with pytest.raises(ConfigError, match="n_samples"):
        win_rate(P, Q, n_samples=0)
    with pytest.raises(ConfigError, match="at least one point"):
        win_rate(P, np.empty((0, 2)))


# --------------------------------------------------------------------------- preferences


def test_normalize() -> None:
    out = normalize(np.array([[1.0, 10.0], [3.0, 10.0]]), [1.0, 10.0], [5.0, 10.0])
    # Column 0: (x - 1) / 4; column 1 has zero range and maps to 0.
    np.testing.assert_allclose(out, [[0.0, 0.0], [0.5, 0.0]])
    with pytest.raises(ConfigError, match="lower <= upper"):
        normalize(np.ones((1, 2)), [1.0, 1.0], [0.0, 2.0])


def test_preference_scores_hand_computed() -> None:
    F = np.array([[0.8, 2.0]])
    # Weights (3,1) -> (0.75, 0.25). Accuracy 0.8 in [0,1] -> 0.8; loss 2 in [0,4], lower is
    # better -> (4 - 2) / 4 = 0.5. Score 0.75 * 0.8 + 0.25 * 0.5 = 0.725.
    scores = preference_scores(F, [3.0, 1.0], ["max", "min"], lower=[0, 0], upper=[1, 4])
    np.testing.assert_allclose(scores, [0.725])


def test_select_by_preference_picks_extremes() -> None:
    F = np.array([[0.9, 0.1], [0.6, 0.6], [0.1, 0.9]])
    assert select_by_preference(F, [1, 0], "max") == 0
    assert select_by_preference(F, [0, 1], "max") == 2
    # Equal weights: min/max-normalised scores 0.5, 0.625, 0.5.
    assert select_by_preference(F, [1, 1], "max") == 1
    np.testing.assert_allclose(preference_scores(F, [1, 1]), [0.5, 0.625, 0.5])
    # Column 1 as a loss: the lowest loss wins when only it matters.
    assert select_by_preference(F, [0, 1], ["max", "min"]) == 0
    assert select_by_preference(F, [1, 0], ["min", "max"]) == 2


def test_select_by_preference_ties_and_constant_columns() -> None:
    F = np.array([[1.0, 0.5], [1.0, 0.5]])
    assert select_by_preference(F, [1, 1]) == 0
    np.testing.assert_allclose(preference_scores(F, [1, 1]), [1.0, 1.0])


@pytest.mark.parametrize(
    ("preference", "match"),
    [
        ([1.0], "one weight per objective"),
        ([1.0, -1.0], "non-negative"),
        ([0.0, 0.0], "all zero"),
        ([np.nan, 1.0], "finite"),
        ("ab", "preference"),
    ],
)
def test_preference_validation(preference: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        select_by_preference(STAIRS, preference, "max")  # type: ignore[arg-type]


def test_select_by_preference_empty_front() -> None:
    with pytest.raises(ConfigError, match="empty"):
        select_by_preference(np.empty((0, 2)), [1, 1])


# --------------------------------------------------------------------------- r2


def test_r2_score() -> None:
    y = np.array([1.0, 2.0, 3.0])
    assert r2_score(y, y) == 1.0
    # SS_res = 1 + 0 + 1 = 2 = SS_tot -> 0.
    assert r2_score(y, np.array([2.0, 2.0, 2.0])) == pytest.approx(0.0)
    # SS_res = 1, SS_tot = 2 -> 0.5.
    assert r2_score(y, np.array([1.0, 2.0, 4.0])) == pytest.approx(0.5)
    assert r2_score(y[:, None], y[:, None]) == 1.0
    # Constant targets.
    assert r2_score(np.array([2.0, 2.0]), np.array([2.0, 2.0])) == 1.0
    assert r2_score(np.array([2.0, 2.0]), np.array([2.0, 3.0])) == 0.0
    with pytest.raises(ConfigError, match="equal length"):
        r2_score(y, y[:2])
    with pytest.raises(ConfigError, match="NaN"):
        r2_score(y, np.array([1.0, np.nan, 3.0]))


def test_spread_subset_hand_computed():
    from mapframe.metrics import spread_subset

    # five points on a line from (0, 1) to (1, 0); k=3 -> both ends, then the middle
    F = np.array([[0.0, 1.0], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])
    assert spread_subset(F, 3).tolist() == [0, 2, 4]
    assert spread_subset(F, 10).tolist() == [0, 1, 2, 3, 4]
    assert spread_subset(F, 0).tolist() == []
    # for minimisation the "best" ends are the same two rows
    assert set(spread_subset(F, 2, ["min", "min"]).tolist()) == {0, 4}
    with pytest.raises(ConfigError):
        spread_subset(F, -1)


def test_a_task_that_never_varies_does_not_decide_a_selection_by_round_off() -> None:
    """A constant task's spread over a front is round-off (about 1e-15); scaled to [0, 1]
    it decided selection: select([1, 1, 1]) and select([0, 1, 1]) disagreed."""
    from mapframe.metrics import flat_range

    rng = np.random.default_rng(0)
    b = np.sort(rng.uniform(0, 1, 50))
    F = np.column_stack([1.0 + rng.choice([0.0, 2.2e-16, 4.4e-16], 50), b, 1 - b ** 2])
    assert F[:, 0].max() > F[:, 0].min()  # round-off only
    assert list(flat_range(F.min(axis=0), F.max(axis=0))) == [True, False, False]
    assert select_by_preference(F, [1, 1, 1]) == select_by_preference(F, [0, 1, 1])
    np.testing.assert_allclose(preference_scores(F, [1, 0, 0]), 1.0)
    # a real range, however small against the values, still counts
    assert not flat_range(np.array([1000.0]), np.array([1000.001]))[0]


def test_a_task_on_a_small_scale_is_not_flat() -> None:
    """A floor of 1 under the flat tolerance made a metric of about 1e-10 flat: a preference
    for it scored every point 1 and chose its worst point."""
    from mapframe.metrics import flat_range

    F = np.array([[1.0, 1e-10], [0.5, 3e-10]])
    assert select_by_preference(F, [0, 1]) == 1
    assert list(flat_range(np.array([0.0, 1e-10]), np.array([0.0, 3e-10]))) == [True, False]


def test_huge_preference_weights_do_not_overflow_to_zero() -> None:
    """The sum of [1e308, 1e308] overflowed: every weight became 0, select returned row 0,
    and a study ran to its end before saying the weights were all zero."""
    from mapframe.spec import check_preference

    F = np.array([[0.0, 1.0], [0.6, 0.6], [1.0, 0.0]])
    assert select_by_preference(F, [1e308, 1e308]) == select_by_preference(F, [1, 1]) == 1
    np.testing.assert_allclose(check_preference([1e308, 1e308], 2), [0.5, 0.5])


def test_malformed_preference_bounds_are_a_one_line_error() -> None:
    from mapframe.results import Front

    front = Front(np.array([[0.0], [1.0]]), np.array([[0.0, 1.0], [1.0, 0.0]]),
                  np.full((2, 2), np.nan), ["a", "b"], ["max", "max"])
    with pytest.raises(ConfigError, match="preference_bounds must be"):
        front.select([1, 1], ([0, 0],))  # type: ignore[arg-type]


@pytest.mark.parametrize("call, message", [
    (lambda F: greedy_hypervolume_subset(
        F, 2, measured=np.ones((2, 3)) * 0.5), "measured has 3 objectives"),
    (lambda F: greedy_hypervolume_subset(
        F, 2, measured=np.array([[0.9, 0.55, 0.1], [0.1, 0.55, 0.9]])),
     "measured has 3 objectives"),  # a transposed (3, 2) was reshaped and used
    (lambda F: greedy_hypervolume_subset(
        F, "a"), "k must be an integer"),
    (lambda F: hypervolume(F, ["a", "b"]), "ref_point must be a numeric vector"),
    (lambda F: reference_point(F, margin="a"), "margin must be a finite number"),
    (lambda F: win_rate(F, F, n_samples="a"), "n_samples must be a positive integer"),
    (lambda F: r2_score(["a"], ["b"]), "r2_score needs y as a numeric"),
])
def test_misshaped_or_mistyped_metric_inputs_are_one_line_config_errors(call, message):
    """They were used silently (a transposed ``measured`` reshaped to fit) or ended in raw
    numpy/builtin errors."""
    F = np.array([[1.0, 0.0], [0.6, 0.6], [0.0, 1.0], [0.5, 0.4]])
    with pytest.raises(ConfigError, match=message) as info:
        call(F)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("T", [2, 3, 6])
def test_dominated_by_any_on_large_sets_agrees_with_the_whole_dominance_matrix(T: int) -> None:
    """Above 65 536 pairs ``dominated_by_any`` keeps only the dominating set's
    non-dominated rows first (the 16-task scale study's combine phase: 9.3 s to 0.6 s):
    the answer must be the whole matrix's, with duplicates, ties and mixed directions."""
    from mapframe.metrics import dominance_matrix, dominated_by_any

    rng = np.random.default_rng(T)
    A = np.round(rng.random((1200, T)), 2)  # rounding makes ties and duplicates
    A[::97] = A[1::97]
    B = np.concatenate([np.round(rng.random((900, T)), 2), A[:100]])
    directions = ["max", "min", "max", "min", "max", "min"][:T]
    expected = dominance_matrix(A, B, directions).any(axis=0)
    got = dominated_by_any(A, B, directions)
    np.testing.assert_array_equal(got, expected)
    assert 0 < got.sum() < len(B)
