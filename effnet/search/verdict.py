"""The verdict: does the best candidate beat the paper's coefficients by more than the seed-to-seed spread?

Every finalist was trained at the final fidelity with several seeds (the search seed and ``repeats`` more).
The winner "beats" the paper's coefficients only when its one-standard-deviation interval lies wholly above
theirs (mean_w - std_w > mean_p + std_p): a stricter rule than a two-standard-error gap, because the winner's
own seed is the one that made it a finalist (its mean is biased up) and a handful of seeds estimates a spread
only roughly. Otherwise the honest answer is that the search cannot tell them apart at this budget.
"""

from __future__ import annotations

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


def _coefficients(key: str) -> str:
    c = Candidate.from_key(key)
    return f"alpha={c.alpha:g} beta={c.beta:g} gamma={c.gamma:g}"


def _paper() -> str:
    """The paper's coefficients as the verdict names them: ``(1.2, 1.1, 1.15)``."""
    return f"({PAPER.alpha:g}, {PAPER.beta:g}, {PAPER.gamma:g})"


def beats(winner: Spread, paper: Spread) -> bool:
    return winner.n >= 2 and paper.n >= 2 and winner.mean - winner.std > paper.mean + paper.std


def decide(spreads: list[Spread], epochs: int) -> tuple[str, str, str]:
    """(kind, verdict line, chosen candidate key). The finalists never include the paper's model under another
    name (the schedule leaves it out). kind: "beats" (use the winner), "keep-paper" (the winner is
    within the spread, or the paper's coefficients are best) or "no-verdict" (not enough finished runs)."""
    paper = next((sp for sp in spreads if sp.candidate == PAPER.key and sp.n), None)
    ranked = sorted((sp for sp in spreads if sp.n), key=lambda sp: -sp.mean)
    at = f"at {epochs} epoch(s)"
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

