"""
EvINR as installed by pip: `import evinr`. The API a script needs, from the modules that own it:

    import evinr
    events, _ = evinr.load_events("recording.h5")   # (events, sensor size)
    result = evinr.reconstruct(events, evinr.Config(iters=500))
    result.frames                       # uint8 [N, H, W], at result.times (seconds)

In a checkout the same names are imported from the flat modules (`from train import reconstruct`).
"""

if __package__:  # the installed package; a checkout's test runner may import this file alone
    from .cli import VERSION as __version__
    from .config import Config, UsageError
    from .event_data import EventDataError, Events, load_events, open_events
    from .experiment import load_checkpoint, write_experiment
    from .render import Reconstruction, render
    from .train import reconstruct, run
    from .utils import score_reconstruction

__all__ = ["Config", "UsageError", "EventDataError", "Events", "load_events", "open_events", "load_checkpoint",
           "write_experiment", "Reconstruction", "render", "reconstruct", "run", "score_reconstruction",
           "__version__"]
