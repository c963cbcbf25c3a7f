"""The verdict: does the best candidate beat the paper's coefficients by more than the seed-to-seed spread?

Every finalist was trained at the final fidelity with several seeds (the search seed and ``repeats`` more).
The winner "beats" the paper's coefficients only when its one-standard-deviation interval lies wholly above
theirs (mean_w - std_w > mean_p + std_p): a stricter rule than a two-standard-error gap, because the winner's
own seed is the one that made it a finalist (its mean is biased up) and a handful of seeds estimates a spread
only roughly. Otherwise the honest answer is that the search cannot tell them apart at this budget.

The finalists were picked by low-fidelity scores (the rungs of successive halving), so a winner is named only
when those scores rank like the longer runs do: after each rung, Spearman's rho between that rung's and the
previous rung's top-1 over the candidates that reached both (``rank_agreement``). When any rho is below
``RHO_MIN``, when there is no rung pair to measure it on, or when the winner fell behind the paper's coefficients
at a rung they both reached, the verdict is "low-fidelity ranking not trustworthy (rho = ...)" and the paper's
coefficients are kept.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from .grid import Candidate
from .settings import PAPER


@dataclass(frozen=True)
class Spread:
    """A finalist's top-1 (%) at the final fidelity, one value per seed."""

    candidate: str
    seeds: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 with one seed)."""
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    def text(self) -> str:
        return f"{self.mean:.2f} +/- {self.std:.2f}% ({self.n} seeds)"


RHO_MIN = 0.5  # below this, the rungs' rankings disagree more than they agree (rho ranges -1 ... 1)
MIN_PAIRS = 3  # rank correlation of fewer candidates says nothing


@dataclass(frozen=True)
class RungAgreement:
    """Spearman's rho between the top-1 at rung ``lower`` and at the next level ``upper`` (levels in the plan's
    unit), over the ``n`` candidates that reached both; None when fewer than ``MIN_PAIRS`` did (or all tie)."""

    lower: int
    upper: int
    n: int
    rho: float | None

    def to_dict(self) -> dict:
        return dict(lower=self.lower, upper=self.upper, n=self.n, rho=self.rho)


def rank_agreement(curves: list[dict[int, float]], levels: list[int]) -> list[RungAgreement]:
    """One :class:`RungAgreement` per pair of successive levels; ``curves``: each candidate's top-1 by level."""
    from scipy.stats import spearmanr

    out = []
    for lower, upper in zip(levels, levels[1:]):
        pairs = [(c[lower], c[upper]) for c in curves if lower in c and upper in c
                 and not (math.isnan(c[lower]) or math.isnan(c[upper]))]
        rho = None
        if len(pairs) >= MIN_PAIRS:
            value = float(spearmanr(*zip(*pairs)).statistic)
            rho = None if math.isnan(value) else value  # constant scores: no ranking to compare
        out.append(RungAgreement(lower, upper, len(pairs), rho))
    return out


def distrust(agreement: list[RungAgreement], lead: list[tuple[int, float, float]], unit) -> str | None:
    """Why the low-fidelity ranking cannot be trusted, or None. ``lead``: (level, winner's top-1, paper's top-1)
    at the rungs both reached; ``unit(level)``: the level as the report says it ("3 epochs", "30 steps")."""
    measured = [a for a in agreement if a.rho is not None]
    rhos = ", ".join(f"{a.rho:.2f} from {unit(a.lower)} to {unit(a.upper)} over {a.n}" for a in measured)
    low = [a for a in measured if a.rho < RHO_MIN]
    if low:
        return f"low-fidelity ranking not trustworthy (\u03c1 = {rhos}; below {RHO_MIN:g})"
    if not measured:
        why = (f"fewer than {MIN_PAIRS} candidates reached two rungs" if agreement else
               "the plan has one level only, so no rung to compare")
        return f"low-fidelity ranking not trustworthy (\u03c1 not measurable: {why})"
    behind = [(level, w, p) for level, w, p in lead if w < p]
    if behind:
        level, w, p = behind[0]
        return (f"low-fidelity ranking not trustworthy (\u03c1 = {rhos}, but the winner was behind the paper's "
                f"coefficients at {unit(level)}: {w:.2f}% vs {p:.2f}%)")
    return None


def _coefficients(key: str) -> str:
    c = Candidate.from_key(key)
    return f"alpha={c.alpha:g} beta={c.beta:g} gamma={c.gamma:g}"


def _paper() -> str:
    """The paper's coefficients as the verdict names them: ``(1.2, 1.1, 1.15)``."""
    return f"({PAPER.alpha:g}, {PAPER.beta:g}, {PAPER.gamma:g})"


def beats(winner: Spread, paper: Spread) -> bool:
    return winner.n >= 2 and paper.n >= 2 and winner.mean - winner.std > paper.mean + paper.std


def decide(spreads: list[Spread], epochs: int, unit: str = "epoch(s)") -> tuple[str, str, str]:
    """(kind, verdict line, chosen candidate key). The finalists never include the paper's model under another
    name (the schedule leaves it out). kind: "beats" (use the winner), "keep-paper" (the winner is
    within the spread, or the paper's coefficients are best) or "no-verdict" (not enough finished runs)."""
    paper = next((sp for sp in spreads if sp.candidate == PAPER.key and sp.n), None)
    ranked = sorted((sp for sp in spreads if sp.n), key=lambda sp: -sp.mean)
    at = f"at {epochs} {unit}"
    if paper is None or not ranked:
        return "no-verdict", ("no verdict: the paper's coefficients or the finalists have no finished run at the "
                              "final fidelity; keep the paper's coefficients"), PAPER.key
    winner = ranked[0]
    if len(ranked) == 1:
        return "no-verdict", (f"no verdict: no finalist besides the paper's coefficients ({paper.text()} {at}) has a "
                              f"run at the final fidelity (all cut for time?); keep the paper's coefficients"), PAPER.key
    if winner.candidate == PAPER.key:
        other = f"{_coefficients(ranked[1].candidate)} {ranked[1].text()}" if len(ranked) > 1 else "none"
        return "keep-paper", (f"the paper's coefficients are the best {at}: {paper.text()} top-1; the best other "
                              f"candidate is {other} -- keep the paper's coefficients"), PAPER.key
    if paper.n < 2 or winner.n < 2:
        return "no-verdict", (f"no verdict: one seed gives no spread (use --repeats 1 or more); best "
                              f"{_coefficients(winner.candidate)} {winner.text()} vs the paper's {paper.text()}"), PAPER.key
    if beats(winner, paper):
        return "beats", (f"winner beats the paper's coefficients beyond the seed spread {at}: "
                         f"{_coefficients(winner.candidate)} {winner.text()} vs the paper's {_paper()} "
                         f"{paper.text()} top-1"), winner.candidate
    return "keep-paper", (f"indistinguishable at this budget -- keep the paper's coefficients or give more time: "
                          f"best {_coefficients(winner.candidate)} {winner.text()} vs the paper's {_paper()} "
                          f"{paper.text()} top-1 {at}"), PAPER.key



def judge(spreads: list[Spread], plan, agreement: list[RungAgreement],
          curves: dict[str, dict[int, float]]) -> tuple[str, str, str]:
    """:func:`decide` at the plan's final fidelity, then the rungs' evidence: a winner is named only when the
    low-fidelity ranking held (:func:`distrust`); kind "not-trustworthy" otherwise (the paper's coefficients
    kept). ``curves``: each candidate's rung-run top-1 by level."""
    kind, line, chosen = decide(spreads, plan.fidelity(plan.max_epochs), plan.unit())

    def unit(level: int) -> str:
        return f"{plan.fidelity(level)} {plan.unit()}"

    rhos = ", ".join(f"{a.rho:.2f} ({unit(a.lower)} -> {unit(a.upper)}, {a.n})" for a in agreement
                     if a.rho is not None)
    said = f"; rank agreement between rungs \u03c1 = {rhos}" if rhos else ""
    if kind != "beats":
        return kind, line + said, chosen
    w, p = curves.get(chosen, {}), curves.get(PAPER.key, {})
    lead = [(level, w[level], p[level]) for level in plan.levels() if level in w and level in p]
    why = distrust(agreement, lead, unit)
    if why is None:
        return kind, line + said, chosen
    return "not-trustworthy", (f"{why}: keep the paper's coefficients; the finalists were picked by that ranking "
                               f"(at the final fidelity {_coefficients(chosen)} "
                               f"{next(sp for sp in spreads if sp.candidate == chosen).text()} vs the paper's "
                               f"{next(sp for sp in spreads if sp.candidate == PAPER.key).text()})"), PAPER.key
