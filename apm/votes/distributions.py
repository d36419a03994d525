"""Parametric fits of AVA vote histograms: Gaussian, Gamma and mirrored Gamma.

Every function works on a whole batch at once: ``votes`` is an ``(N, 10)`` integer array with
``votes[:, k]`` = number of votes for score ``k + 1``. There is no per-image Python loop, so the
241,842 real AVA images fit in seconds.

Families (two parameters each)
    ``gaussian``        Normal(mu, sigma) on the score.
    ``gamma``           Gamma(shape, scale) on the score (support > 0): a right-skewed shape.
    ``gamma_mirrored``  Gamma(shape, scale) on ``11 - score``: the mirror image of ``gamma``,
                        left-skewed, for the ceiling effect of highly rated photos. Scores 1..10
                        map to 10..1, so the fit is the Gamma fit of the reversed histogram.

From a density to a 10-bin pmf (``PMFS``; ``DEFAULT_PMF``, see ``DEFAULT_PMF_REASON``)
    ``binned``   Round and censor. A vote is the latent continuous score rounded to the nearest
                 integer and clipped to the scale: score k owns [k - 0.5, k + 0.5] for
                 k = 2..9, score 1 owns (-inf, 1.5] and score 10 owns [9.5, inf). The pmf is the
                 CDF difference over each bin and sums to 1 by construction. Integrating, rather
                 than sampling the density at the integers, keeps the pmf right for narrow
                 distributions (sigma 0.3 puts ~90 % of the mass in one bin). Open end bins
                 model what a bounded scale does (a voter who would give 11 gives 10, the
                 ceiling effect) and keep the fits of real histograms away from infinite
                 parameters. The alternative, truncating to [0.5, 10.5] and renormalising, was
                 measured and rejected: least squares then exploits limits of the truncated
                 families (a Gaussian with mu = 1000 and sigma = 55 becomes an exponential ramp
                 on the scale, a Gamma with scale 1e140 a power law), which gave ~350 AVA images
                 meaningless parameters. Either way, a family whose unbounded tail crosses an end
                 of the scale can put a spike of votes on 1 or 10, which matters for who wins at
                 the extremes.
    ``density``  The source work's construction (Murray et al., AVA, CVPR 2012): the density at
                 the ten integer scores, renormalised over them, pmf(k) = f(k) / sum_j f(j). It
                 is computed in logs (``log f(k) - max_j log f(j)``, then exp and normalise), so
                 the constants of the density cancel and a narrow density whose f(k) all
                 underflow still gives its mass to the score nearest the mode (a Gaussian with
                 sigma 1e-3 at mu 5.2 gives pmf(5) = 1). Only where the log density itself is
                 not finite (sigma or scale 0 or below ~1e-300, infinite parameters) does the
                 pmf fall back explicitly: all the mass on the score nearest the family's
                 location (mu; shape * scale; 11 - shape * scale), clipped to 1..10. NaN
                 parameters give a NaN pmf. The Gamma's support edge is never touched: its
                 density is evaluated at scores 1..10 and the mirrored Gamma's at 11 - score =
                 10..1, all > 0, where it is finite for every shape > 0. Being a renormalised
                 truncation, this pmf shares the weakness described above: with ``lsq`` a family
                 can run to a limit (huge mu and sigma: a ramp) where the histogram rises to an
                 end of the scale; on AVA about 840 of the 3 x 241,842 family fits do.

    The pmf construction only changes what a fit is compared with and what ``lsq`` minimises;
    ``moments`` and ``mle`` estimate the continuous density and give the same parameters
    under either construction.

Methods
    ``moments``  Match the mean and variance of the votes (Gaussian: mu, sigma; Gamma:
                 shape = mean^2 / var, scale = var / mean). Closed form, fastest.
    ``mle``      Maximum likelihood of the continuous density at the integer votes (the
                 histogram as weighted data). For the Gaussian this equals ``moments``; for the
                 Gamma it solves ``log a - digamma(a) = log(mean) - mean(log x)`` with Minka's
                 (2002) closed-form start and vectorised Newton steps.
    ``lsq``      Least squares of the pmf (of the chosen construction) against the normalised
                 histogram, i.e. the minimum of the reported RMSE, by batched
                 Levenberg-Marquardt (2x2 normal equations solved in closed form,
                 forward-difference Jacobians) from the ``moments`` start. Steps are only
                 accepted when they lower the error, so ``lsq`` is never worse than
                 ``moments``.

Default: ``lsq`` (``DEFAULT_METHOD_REASON``) with the ``binned`` pmf (``DEFAULT_PMF_REASON``).
The product of this module is a comparison of families by RMSE; ``lsq`` is the only method that
gives each family its lowest RMSE, so the comparison measures the shape of each family rather
than how far an estimator that ignores the rounding and the censoring lands from the optimum.
The source work's configuration is ``moments`` with the ``density`` pmf. Measured timings and
RMSE of every method, and of both configurations side by side:
``docs/benchmark_fit_distributions.md``.

Degenerate histograms: a row with (nearly) every vote on one score has (nearly) zero variance;
a variance below ``MIN_VAR`` (std 0.1, a tenth of a bin) is raised to it, which keeps every fit
finite and still reproduces a one-bin histogram to ~1e-6. No AVA image comes close (the
smallest std is ~0.8).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from apm.core.schemas import NUM_BINS

#: Scores 1..10, the value of each histogram bin.
SCORES = np.arange(1, NUM_BINS + 1, dtype=np.float64)
#: Inner bin edges 1.5, .., 9.5: score k owns [k - 0.5, k + 0.5]; scores 1 and 10 own the tails.
INNER_EDGES = np.arange(1, NUM_BINS, dtype=np.float64) + 0.5
#: Variance given to zero-variance histograms (see the module docstring).
MIN_VAR = 0.01
#: Least squares keeps positive parameters in [1e-4, 1e6] and the others in [-1e6, 1e6]. Real
#: AVA fits stay far inside (Gamma shapes up to ~150); the box stops histograms whose best fit
#: is a limit at infinity (all votes on 10; all on 1 and 10) from running into overflow.
LSQ_LIMITS = (1e-4, 1e6)
#: The methods, each with a one-line description for ``--help`` and the reports.
METHODS: dict[str, str] = {
    "moments": "match the mean and variance of the votes (closed form, fastest)",
    "mle": "maximum likelihood of the density at the integer votes (Gamma: digamma equation)",
    "lsq": "least squares of the pmf against the histogram, i.e. minimum RMSE",
}
DEFAULT_METHOD = "lsq"
DEFAULT_METHOD_REASON = (
    "RMSE is the quantity being compared and least squares is the only method that gives "
    "every family its lowest RMSE, so differences between families reflect their shapes, not "
    "how far an estimator that ignores the rounding and censoring of votes lands from the "
    "optimum; it is an order of magnitude slower than moments but still fits all 241,842 AVA "
    "images in under a minute on 2 cores"
)

#: The constructions of a 10-bin pmf from a density, each with a one-line description.
PMFS: dict[str, str] = {
    "binned": "score k takes the mass on [k-0.5, k+0.5], end bins open (rounding, censoring)",
    "density": "the density at k = 1..10, renormalised over them (the source work's)",
}
DEFAULT_PMF = "binned"
DEFAULT_PMF_REASON = (
    "it is what a vote is, the latent score rounded to the nearest integer and clipped to the "
    "scale, and on the 241,842 AVA images it gives every family a lower RMSE with lsq than the "
    "density pmf while keeping the fits on the scale: the density pmf is a renormalised "
    "truncation, so least squares runs about 840 of its family fits to a mean off the scale or "
    "to the parameter bounds (ramps), against 15 binned; the density pmf, the source work's, "
    "stays available for comparison (docs/benchmark_fit_distributions.md)"
)

# Levenberg-Marquardt settings: the relative step for the numeric Jacobian (in the free
# parameters, where 1e-6 is far above rounding noise on pmfs of size ~0.1 and far below the
# curvature scale), the iteration cap, and when a row counts as converged.
_JAC_STEP = 1e-6
_LM_DAMPING0 = 1e-3
_LM_MAX_ITER = 50
_LM_FTOL = 1e-8  # stop when an accepted step lowers the squared error by less than this share
_LM_MAX_DAMPING = 1e10  # stop when no step of any length lowers the error
_NEWTON_ITER = 8  # Minka's start is within ~1 % of the root; Newton doubles the digits per step

Params = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Moments:
    """Weighted moments of the votes of each image (population, not sample, statistics)."""

    n_votes: np.ndarray  # int64
    mean: np.ndarray
    std: np.ndarray
    skewness: np.ndarray  # 0 where the variance is 0

    @property
    def var(self) -> np.ndarray:
        """The variance used by the fits: ``std**2`` floored at ``MIN_VAR``."""
        return np.maximum(self.std**2, MIN_VAR)


class VotesError(ValueError):
    """Unusable vote counts; ``row`` is the index of the first bad row (None: the whole array)."""

    def __init__(self, message: str, row: int | None = None) -> None:
        super().__init__(message)
        self.row = row


def validate_votes(votes: np.ndarray) -> np.ndarray:
    """``votes`` as int64 ``(N, 10)``; VotesError naming the first bad row otherwise."""
    votes = np.asarray(votes)
    if votes.ndim != 2 or votes.shape[1] != NUM_BINS:
        raise VotesError(f"votes must have shape (N, {NUM_BINS}), got {votes.shape}")
    if not np.issubdtype(votes.dtype, np.integer):
        raise VotesError(f"votes must be integer counts, got dtype {votes.dtype}")
    negative = np.flatnonzero((votes < 0).any(axis=1))
    if negative.size:
        row = int(negative[0])
        raise VotesError(f"votes row {row} has a negative count: {votes[row].tolist()} "
                         f"({negative.size} such rows)", row)
    empty = np.flatnonzero(votes.sum(axis=1) == 0)
    if empty.size:
        row = int(empty[0])
        raise VotesError(f"votes row {row} has zero votes ({empty.size} such rows)", row)
    return votes.astype(np.int64, copy=False)


def normalise(votes: np.ndarray) -> np.ndarray:
    """The histogram as a pmf over the 10 scores (rows sum to 1)."""
    return votes / votes.sum(axis=1, keepdims=True)


def histogram_moments(votes: np.ndarray) -> Moments:
    """Mean, population std and skewness of each image's votes."""
    votes = validate_votes(votes)
    n = votes.sum(axis=1)
    p = votes / n[:, None]
    mean = (votes @ SCORES) / n  # exact for integer means (a mean of 4 is in bucket [4,5))
    centred = SCORES[None, :] - mean[:, None]
    var = np.einsum("ij,ij->i", p, centred**2)
    m3 = np.einsum("ij,ij->i", p, centred**3)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(var > 0, m3 / var**1.5, 0.0)
    return Moments(n_votes=n, mean=mean, std=np.sqrt(var), skewness=skew)


def check_choice(name: str, choices: dict[str, str], what: str) -> None:
    """ValueError unless ``name`` is a key of ``choices`` (``METHODS``, ``PMFS``)."""
    if name not in choices:
        raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(choices)}")


def _binned(cdf_at_edges: np.ndarray) -> np.ndarray:
    """CDF values at ``INNER_EDGES`` (..., 9) -> pmf over the 10 bins (end bins open)."""
    return np.diff(cdf_at_edges, axis=-1, prepend=0.0, append=1.0)


def _from_log_density(log_f: np.ndarray, location: np.ndarray) -> np.ndarray:
    """Log density at ``SCORES`` (..., 10), up to a constant per row -> pmf(k) = f(k) / sum f.

    Rows whose largest log density is not finite get all their mass on the score nearest
    ``location`` (clipped to 1..10), or NaN where the location is NaN (see the module
    docstring).
    """
    shape = log_f.shape
    log_f = log_f.reshape(-1, NUM_BINS)
    with np.errstate(all="ignore"):
        top = np.max(log_f, axis=1, keepdims=True)
        pmf = np.exp(log_f - top)
        pmf /= pmf.sum(axis=1, keepdims=True)
    bad = ~np.isfinite(top[:, 0])
    if bad.any():
        nearest = np.clip(np.rint(np.broadcast_to(location, shape[:-1]).reshape(-1)[bad]),
                          1, NUM_BINS)
        pmf[bad] = np.where(np.isnan(nearest)[:, None], np.nan,
                            (SCORES == nearest[:, None]).astype(np.float64))
    return pmf.reshape(shape)


def _gaussian_binned(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    z = (INNER_EDGES - np.asarray(mu, dtype=np.float64)[..., None]) / np.asarray(sigma)[..., None]
    return _binned(special.ndtr(z))


def _gaussian_log_density(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):  # sigma 0 or tiny: not finite, handled by the fallback
        z = (SCORES - np.asarray(mu, dtype=np.float64)[..., None]) / np.asarray(sigma)[..., None]
        return -0.5 * z**2


def _gaussian_location(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return np.asarray(mu, dtype=np.float64)


def _gamma_binned(shape: np.ndarray, scale: np.ndarray) -> np.ndarray:
    shape = np.asarray(shape, dtype=np.float64)[..., None]
    return _binned(special.gammainc(shape, INNER_EDGES / np.asarray(scale)[..., None]))


def _gamma_log_density(shape: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(shape - 1) log x - x / scale`` at x = 1..10 (> 0, so finite for finite parameters)."""
    shape = np.asarray(shape, dtype=np.float64)[..., None]
    with np.errstate(all="ignore"):
        return (shape - 1) * np.log(SCORES) - SCORES / np.asarray(scale)[..., None]


def _gamma_location(shape: np.ndarray, scale: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(shape, dtype=np.float64) * scale


# The mirrored Gamma is the Gamma on 11 - score: both of its pmfs are the Gamma's reversed.
# Exact for ``binned`` too, because the bins of 11 - score are the bins reflected about 5.5.

def _mirrored_binned(shape: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return _gamma_binned(shape, scale)[..., ::-1]


def _mirrored_log_density(shape: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return _gamma_log_density(shape, scale)[..., ::-1]


def _mirrored_location(shape: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return NUM_BINS + 1 - _gamma_location(shape, scale)


def gaussian_pmf(mu: np.ndarray, sigma: np.ndarray, pmf: str = DEFAULT_PMF) -> np.ndarray:
    """Normal(mu, sigma) as a pmf over scores 1..10; shape ``(N, 10)`` for ``(N,)`` parameters.

    ``pmf`` is the construction, a key of ``PMFS``.
    """
    return FAMILIES["gaussian"].pmf(mu, sigma, pmf)


def gamma_pmf(shape: np.ndarray, scale: np.ndarray, pmf: str = DEFAULT_PMF) -> np.ndarray:
    """Gamma(shape, scale) on the score as a pmf over scores 1..10."""
    return FAMILIES["gamma"].pmf(shape, scale, pmf)


def mirrored_gamma_pmf(shape: np.ndarray, scale: np.ndarray,
                       pmf: str = DEFAULT_PMF) -> np.ndarray:
    """Gamma(shape, scale) on ``11 - score``: the Gamma pmf with the scores reversed."""
    return FAMILIES["gamma_mirrored"].pmf(shape, scale, pmf)


def rmse(histogram: np.ndarray, pmf: np.ndarray) -> np.ndarray:
    """Root mean squared difference over the 10 bins, one value per row."""
    return np.sqrt(np.mean((pmf - histogram) ** 2, axis=-1))


# --- per-family estimators ---------------------------------------------------------------

def _gaussian_moments(m: Moments) -> Params:
    return m.mean, np.sqrt(m.var)


def _gamma_moments(m: Moments) -> Params:
    return m.mean**2 / m.var, m.var / m.mean


def _mirrored_moments(m: Moments) -> Params:
    return _gamma_moments(Moments(m.n_votes, NUM_BINS + 1 - m.mean, m.std, -m.skewness))


def _gamma_mle(votes: np.ndarray) -> Params:
    """Gamma MLE with the votes as weighted data: Minka's start, then Newton on the shape.

    ``s = log(mean) - mean(log x) >= 0`` (Jensen); ``s`` is kept at least at the value a
    variance of ``MIN_VAR`` gives (``s ~ var / (2 mean^2)``), so the shape stays finite.
    """
    p = normalise(votes)
    mean = p @ SCORES
    s = np.log(mean) - p @ np.log(SCORES)
    s = np.maximum(s, MIN_VAR / (2 * mean**2))
    shape = (3 - s + np.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s)
    for _ in range(_NEWTON_ITER):
        f = np.log(shape) - special.digamma(shape) - s
        df = 1 / shape - special.polygamma(1, shape)
        shape = np.maximum(shape - f / df, shape / 2)  # the root is > 0: never step past half
    return shape, mean / shape


def _gaussian_mle(votes: np.ndarray) -> Params:
    return _gaussian_moments(histogram_moments(votes))


def _mirrored_mle(votes: np.ndarray) -> Params:
    return _gamma_mle(votes[:, ::-1])


@dataclass(frozen=True)
class Family:
    """A two-parameter family: its pmfs and its estimators.

    ``binned`` is its ``binned`` pmf; ``log_density`` its log density at ``SCORES`` up to a
    constant and ``location`` the score its mass collapses to, which make the ``density`` pmf.
    ``log_params`` says which parameters are positive, so that least squares works on their
    logarithm and can never step out of the valid range.
    """

    binned: Callable[[np.ndarray, np.ndarray], np.ndarray]
    log_density: Callable[[np.ndarray, np.ndarray], np.ndarray]
    location: Callable[[np.ndarray, np.ndarray], np.ndarray]
    param_names: tuple[str, str]
    from_moments: Callable[[Moments], Params]
    mle: Callable[[np.ndarray], Params]
    log_params: tuple[bool, bool]

    def pmf(self, first: np.ndarray, second: np.ndarray, pmf: str = DEFAULT_PMF) -> np.ndarray:
        """The pmf over scores 1..10 by construction ``pmf`` (a key of ``PMFS``)."""
        check_choice(pmf, PMFS, "pmf")
        if pmf == "binned":
            return self.binned(first, second)
        return _from_log_density(self.log_density(first, second), self.location(first, second))


#: The families, in the order used for ties in ``best_family`` and for output columns.
FAMILIES: dict[str, Family] = {
    "gaussian": Family(_gaussian_binned, _gaussian_log_density, _gaussian_location,
                       ("mu", "sigma"), _gaussian_moments, _gaussian_mle, (False, True)),
    "gamma": Family(_gamma_binned, _gamma_log_density, _gamma_location,
                    ("shape", "scale"), _gamma_moments, _gamma_mle, (True, True)),
    "gamma_mirrored": Family(_mirrored_binned, _mirrored_log_density, _mirrored_location,
                             ("shape", "scale"), _mirrored_moments, _mirrored_mle, (True, True)),
}


# --- least squares -----------------------------------------------------------------------

def _lsq(family: Family, histogram: np.ndarray, start: Params, construction: str) -> Params:
    """Batched Levenberg-Marquardt on sum((pmf - histogram)^2), one 2x2 system per image, for
    the pmf of ``construction`` (a key of ``PMFS``).

    Only rows that have not converged are evaluated, and the Jacobian is recomputed only for
    rows whose parameters moved, so the cost falls quickly after the first few iterations.
    """
    logs = np.array(family.log_params)

    lower = np.where(logs, np.log(LSQ_LIMITS[0]), -LSQ_LIMITS[1])
    upper = np.where(logs, np.log(LSQ_LIMITS[1]), LSQ_LIMITS[1])

    def natural(free: np.ndarray) -> np.ndarray:
        params = free.copy()
        params[:, logs] = np.exp(free[:, logs])
        return params

    def pmf(free: np.ndarray) -> np.ndarray:
        params = natural(free)
        return family.pmf(params[:, 0], params[:, 1], construction)

    free = np.stack(start, axis=1)
    free[:, logs] = np.log(free[:, logs])
    free = np.clip(free, lower, upper)
    fitted = pmf(free)
    cost = np.sum((fitted - histogram) ** 2, axis=1)
    damping = np.full(len(free), _LM_DAMPING0)
    jac = np.empty((len(free), NUM_BINS, 2))
    stale = np.ones(len(free), dtype=bool)  # the Jacobian must be (re)computed
    active = np.arange(len(free))
    for _ in range(_LM_MAX_ITER):
        if active.size == 0:
            break
        redo = active[stale[active]]
        for j in range(2):
            shifted = free[redo].copy()
            shifted[:, j] += _JAC_STEP
            jac[redo, :, j] = (pmf(shifted) - fitted[redo]) / _JAC_STEP
        stale[redo] = False
        # A trial step may be singular or leave the range where the pmf is finite; such a
        # step gets an infinite cost and is rejected like any other step that does not help.
        with np.errstate(all="ignore"):
            step = _damped_step(jac[active], fitted[active] - histogram[active], damping[active])
            trial_free = np.clip(free[active] + step, lower, upper)
            trial = pmf(trial_free)
            trial_cost = np.sum((trial - histogram[active]) ** 2, axis=1)
        # A singular system gives a NaN step; where the pmf then falls back to the location
        # its cost can look finite, so the parameters themselves must be finite too.
        finite = np.isfinite(trial_cost) & np.isfinite(trial_free).all(axis=1)
        trial_cost = np.where(finite, trial_cost, np.inf)
        better = trial_cost < cost[active]
        gain = cost[active] - trial_cost
        done = (better & (gain <= _LM_FTOL * cost[active])) | (damping[active] > _LM_MAX_DAMPING)
        moved = active[better]
        free[moved], fitted[moved] = trial_free[better], trial[better]
        cost[moved] = trial_cost[better]
        stale[moved] = True
        damping[active] = np.where(better, damping[active] / 10, damping[active] * 10)
        active = active[~done]
    params = natural(free)
    return params[:, 0], params[:, 1]


def _damped_step(jac: np.ndarray, residual: np.ndarray, damping: np.ndarray) -> np.ndarray:
    """Solve ``(J'J + damping * diag(J'J)) step = -J'r`` for every row (Marquardt scaling)."""
    a = np.einsum("nki,nkj->nij", jac, jac)
    g = np.einsum("nki,nk->ni", jac, residual)
    a00 = a[:, 0, 0] * (1 + damping)
    a11 = a[:, 1, 1] * (1 + damping)
    a01 = a[:, 0, 1]
    det = a00 * a11 - a01**2
    return -np.stack([a11 * g[:, 0] - a01 * g[:, 1], a00 * g[:, 1] - a01 * g[:, 0]], axis=1) \
        / det[:, None]


# --- the batch fit -----------------------------------------------------------------------

@dataclass(frozen=True)
class FitResult:
    """Per-image moments, fitted parameters and RMSE of every family (arrays of length N)."""

    method: str
    moments: Moments
    params: dict[str, Params]  # family -> (first, second) parameter, as in Family.param_names
    rmse: dict[str, np.ndarray]  # family -> RMSE between the normalised histogram and the pmf
    construction: str = DEFAULT_PMF  # the pmf construction, a key of PMFS

    @property
    def best_family(self) -> np.ndarray:
        """Name of the family with the lowest RMSE per image (ties: first in ``FAMILIES``)."""
        names = np.array(list(self.rmse))
        return names[np.argmin(np.stack(list(self.rmse.values())), axis=0)]

    def pmf(self, family: str, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The fitted pmf of ``family`` for the selected rows, by the fit's construction."""
        first, second = self.params[family]
        return FAMILIES[family].pmf(first[rows], second[rows], self.construction)


def fit_family(family: str, votes: np.ndarray, method: str = DEFAULT_METHOD,
               moments: Moments | None = None, pmf: str = DEFAULT_PMF) -> Params:
    """Parameters of one family for every row of ``votes``.

    ``pmf`` (a key of ``PMFS``) matters only to ``lsq``, which fits that pmf.
    """
    check_choice(method, METHODS, "method")
    check_choice(pmf, PMFS, "pmf")
    fam = FAMILIES[family]
    votes = validate_votes(votes)
    moments = moments if moments is not None else histogram_moments(votes)
    if method == "mle":
        return fam.mle(votes)
    start = fam.from_moments(moments)
    return start if method == "moments" else _lsq(fam, normalise(votes), start, pmf)


def fit_all(votes: np.ndarray, method: str = DEFAULT_METHOD,
            pmf: str = DEFAULT_PMF) -> FitResult:
    """Fit every family in ``FAMILIES`` to every row of ``votes`` with ``method``; the RMSE is
    against the pmf of construction ``pmf`` (a key of ``PMFS``)."""
    check_choice(method, METHODS, "method")
    check_choice(pmf, PMFS, "pmf")
    votes = validate_votes(votes)
    moments = histogram_moments(votes)
    histogram = normalise(votes)
    params, errors = {}, {}
    for name, fam in FAMILIES.items():
        params[name] = fit_family(name, votes, method, moments, pmf)
        errors[name] = rmse(histogram, fam.pmf(*params[name], pmf))
    return FitResult(method=method, moments=moments, params=params, rmse=errors,
                     construction=pmf)
