"""
The loss curve of a fit, and whether each window converged, judged from the events alone.

A fit logs its loss terms every --log_interval iterations (train.fit). They are kept per window
as the record config.json's "fit" holds: {"window", "iteration", "total", "temporal", "spatial",
"brightness", "events_energy"}. The data (temporal) term is a mean squared difference between
the network's change of log intensity and the event frames; `events_energy` is the same mean of
the event frames alone, what a network predicting no change at all would score. Their ratio, the
data ratio, is one thing the check reads: a fit that has not left its random start explains
none of the events' energy. The other is how far the data term ended above its lowest of the
stage: a fit caught in a loss spike at its last iteration (its frames then noise) ends well
above it, a converged one at it. The check reads only the losses a fit already reads at its log
points, so it costs nothing per iteration; a finer --log_interval gives it more of them.
"""

import sys

# A window has not converged when its data term ends above either limit (docs/convergence.md
# has the sweep they were chosen from):
# - its event frames' energy: the fit predicts the changes the events record no better than a
#   still video would (too few iterations: it has not left its random start). Not lower: where
#   events are sparse (a few per pixel and event frame) their count noise, which no smooth video
#   follows, leaves even a converged fit near it;
NOT_STARTED_RATIO = 1.0
# - this multiple of the lowest data term logged in the same coarse-to-fine stage: the fit was
#   caught in a loss spike, which at a constant learning rate Adam runs into from time to time
#   and leaves as noise in the frames until it recovers, tens of iterations later.
SPIKE_RISE = 1.1

TERMS = ("temporal", "spatial", "brightness")


def loss_entries(windows, iteration, total, parts, energies):
    """The record's entries of one log point: one per window of the batch fitted. `windows`: the
    batch's window numbers (from 1); `parts`: each term's values, one per window; `energies`:
    each window's event-frame energy at the current coarse-to-fine stage. `total` is the loss the
    optimiser minimised: for a batch of stacked windows, their sum (and the seam tie)."""
    return [{"window": window, "iteration": iteration, "total": total,
             **{name: parts[name][k] for name in TERMS}, "events_energy": energies[k]}
            for k, window in enumerate(windows)]


def data_ratio(entry):
    """The data term of a log point over its event frames' energy (see the module's note)."""
    return entry["temporal"] / entry["events_energy"] if entry["events_energy"] > 0 else 0.0


def verdict(entries, window):
    """{window, data_ratio, rise, converged} for a window from its log points (None without
    one): `data_ratio` at the last, `rise` the last data term over the lowest logged since the
    last coarse-to-fine switch (the event frames change there, and so does the term's scale)."""
    mine = [entry for entry in entries if entry["window"] == window]
    if not mine:
        return None
    stage = [entry for entry in mine if entry["events_energy"] == mine[-1]["events_energy"]]
    lowest = min(entry["temporal"] for entry in stage)
    rise = mine[-1]["temporal"] / lowest if lowest > 0 else 1.0
    ratio = data_ratio(mine[-1])
    return {"window": window, "data_ratio": ratio, "rise": rise,
            "converged": ratio < NOT_STARTED_RATIO and rise <= SPIKE_RISE}


def final_loss(entries, window):
    """The window's last recorded total: what --retry compares fits by (never the APS frames)."""
    return [entry for entry in entries if entry["window"] == window][-1]["total"]


def warn(source, result, retries):
    """One line on stderr for a window that did not converge: which, why, what to change."""
    hint = "more --iters, or --retry 2" if retries == 0 else "more --iters, or a higher --retry"
    why = (f"its data term is still {result['data_ratio']:.2f} of its event frames' energy"
           if result["data_ratio"] >= NOT_STARTED_RATIO else
           f"it ended in a loss spike, its data term {result['rise']:.2f}x its lowest")
    shown = source.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")  # bytes of a path
    print(f"warning: {shown}: window {result['window']} did not converge ({why}); {hint}", file=sys.stderr)
