"""Draw the README's metrics picture from the series a Molecule run saved.

    python -m bench.plot_metrics [sample.json] [out.png]
    (./tasks.sh metrics-plot; default: docs/img/metrics-run.json into docs/img/metrics.png)

The systemd scenario's tests (molecule/systemd/tests/test_prometheus.py) ask the scenario's Prometheus
for the run's series and save them: {"start", "end", "step", "series": {key: [{"labels", "values":
[[seconds since the start, value], ...]}]}}. Three panels, as the dashboard shows them: each board's
live workers against its cap, the default board's cards by state, each endpoint's used slots against
its cap.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "docs" / "img" / "metrics-run.json"
PICTURE = REPO / "docs" / "img" / "metrics.png"
CARDS_BOARD = "default"


def _by(series: list[dict], label: str) -> dict[str, list[list[float]]]:
    """Values by one label; series that differ in another (an endpoint's `kind` once its probe
    found it) are merged."""
    merged: dict[str, list[list[float]]] = {}
    for entry in series:
        merged.setdefault(entry["labels"].get(label, ""), []).extend(entry["values"])
    return {name: sorted(values) for name, values in merged.items()}


def _gapped(values: list[list[float]], step: float) -> tuple[list[float], list[float]]:
    """Times and values, a break (NaN) where Prometheus had no sample: a line never bridges a gap."""
    times, points = [], []
    for time, value in values:
        if times and time - times[-1] > 2.5 * step:
            times.append(times[-1] + step)
            points.append(math.nan)
        times.append(time)
        points.append(value)
    return times, points


def _lines(axis, measured: dict, caps: dict, what: str, step: float) -> None:
    """A step line per board or endpoint, its cap dashed in the same colour."""
    for name, values in sorted(measured.items()):
        (line,) = axis.step(*_gapped(values, step), where="post", label=f"{name}: {what}", linewidth=1.4)
        if name in caps:
            cap = max(value for _, value in caps[name])
            label = f"{name}: cap ({cap:g})"
            axis.axhline(cap, color=line.get_color(), linestyle="--", linewidth=1, label=label)


def _busy_from(series: dict, step: float) -> float:
    """A little before the first live worker: the picture leaves out the converge, when no card is
    on a measured board."""
    busy = [time for entry in series["live_workers"] for time, value in entry["values"] if value > 0]
    return max(0.0, min(busy, default=0.0) - 10 * step)


def plot(sample: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, step = sample["series"], sample["step"]
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    live, cards, endpoint = axes
    _lines(live, _by(series["live_workers"], "board"), _by(series["cap"], "board"), "live workers", step)
    live.set_title("Live workers of each board against its cap")
    live.set_ylabel("workers")
    board_cards = [entry for entry in series["cards"] if entry["labels"].get("board") == CARDS_BOARD]
    for state, values in sorted(_by(board_cards, "state").items()):
        cards.step(*_gapped(values, step), where="post", label=state, linewidth=1.4)
    cards.set_title(f"Cards of board {CARDS_BOARD} by state")
    cards.set_ylabel("cards")
    used, caps = _by(series["endpoint_used"], "endpoint"), _by(series["endpoint_cap"], "endpoint")
    _lines(endpoint, used, caps, "used slots", step)
    endpoint.set_title("Used slots of each endpoint (this host's workers and foreign ones) against its cap")
    endpoint.set_ylabel("slots")
    endpoint.set_xlabel(f"seconds since the first pass Prometheus saw (a sample every {step} s)")
    for axis in axes:
        axis.set_xlim(_busy_from(series, step), sample["end"] - sample["start"])
        axis.legend(fontsize=7, loc="upper right")
        axis.yaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    sample_path = Path(argv[0]) if argv else SAMPLE
    picture = Path(argv[1]) if len(argv) > 1 else PICTURE
    plot(json.loads(sample_path.read_text()), picture)
    print(picture)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
