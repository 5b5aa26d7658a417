"""The pacing strategies compared, each a way to start dispatch passes for one board."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CAPPED = REPO / "scripts" / "hermes-kanban-dispatch-capped.sh"
SUBMINUTE = REPO / "scripts" / "hermes-kanban-dispatch-subminute.sh"
RECIPE = REPO / "bench" / "baselines" / "recipe-capped.sh"


@dataclass(frozen=True)
class Strategy:
    key: str
    label: str
    # Seconds between passes.
    cadence: float
    # What runs: "dispatch" (hermes kanban dispatch), "recipe", "subminute" or "timer".
    runner: str
    # Set kanban.max_in_progress to the cap in the root config (Hermes' native cap).
    native_cap: bool = False
    # The pacer's fleet mode (docs/fleet.md) when the trial's hosts share the endpoint as one
    # inventory group: "sliced" (the endpoint reports its load) or "static" (its metrics are
    # switched off: each host works to its static share); None: every host is paced alone.
    fleet: str | None = None

    @property
    def endpoint_metrics(self) -> bool:
        """Whether the endpoint reports its load in this trial (off for the static shares)."""
        return self.fleet != "static"

    def available(self, version: str) -> bool:
        """Hermes' native cap exists from 0.16 on."""
        return not self.native_cap or tuple(int(part) for part in version.split(".")[:2]) >= (0, 16)

    def driver(self, board: str, cap: int, hermes_bin: Path) -> tuple[list[str], dict[str, str], float, bool]:
        """argv, environment, period and whether its log has one line per pass."""
        env = {"BOARD": board, "MAX_PARALLEL": str(cap), "HERMES_BIN": str(hermes_bin)}
        if self.runner == "dispatch":
            return (
                [str(hermes_bin), "kanban", "--board", board, "dispatch", "--json"],
                env,
                self.cadence,
                False,
            )
        if self.runner == "recipe":
            return [str(RECIPE)], env, self.cadence, False
        if self.runner == "timer":
            return [str(CAPPED)], env, self.cadence, False
        if self.runner == "subminute":
            env["RUNS_PER_MINUTE"] = str(round(60 / self.cadence))
            return [str(SUBMINUTE)], env, 60.0, True
        raise ValueError(f"unknown runner {self.runner!r}")


def catalogue(baseline_cadence: float) -> dict[str, Strategy]:
    """Every strategy the bench knows, by key."""
    every = f"every {baseline_cadence:g} s"
    return {
        "uncapped": Strategy("uncapped", f"uncapped dispatch, {every}", baseline_cadence, "dispatch"),
        "native": Strategy(
            "native", f"native max_in_progress, {every}", baseline_cadence, "dispatch", native_cap=True
        ),
        "recipe": Strategy("recipe", f"manual recipe, {every}", baseline_cadence, "recipe"),
        "pacer-4": Strategy("pacer-4", "hermes-pacer, 4 passes/min", 15.0, "subminute"),
        "pacer-12": Strategy("pacer-12", "hermes-pacer, 12 passes/min", 5.0, "subminute"),
        "pacer-30": Strategy("pacer-30", "hermes-pacer, 30 passes/min", 2.0, "subminute"),
        "pacer-timer-12": Strategy("pacer-timer-12", "hermes-pacer, timer every 5 s", 5.0, "timer"),
        # Several hosts on one endpoint: each host's pacer with the endpoint's whole cap and no fleet
        # (what a fleet gets without one: up to the cap on every host), then the fleet's two modes.
        "alone-12": Strategy("alone-12", "hermes-pacer, each host alone, 12 passes/min", 5.0, "subminute"),
        "fleet-12": Strategy(
            "fleet-12", "hermes-pacer fleet, sliced, 12 passes/min", 5.0, "subminute", fleet="sliced"
        ),
        "fleet-static-12": Strategy(
            "fleet-static-12",
            "hermes-pacer fleet, static shares (no metrics), 12 passes/min",
            5.0,
            "subminute",
            fleet="static",
        ),
    }
