"""
The event formats that event_data reads, one module per family, and the registry of them.

Every format is read as a stream of pieces, so that a recording of any length can be converted
without ever being whole in memory, and loaded with a single copy of it:
  ("sensor", (H, W))          the sensor size, when the file states it
  ("events", t, x, y, p)      a batch of events, typed as in event_data.Events
  ("frame", key, t, image)    one APS frame (uint8, gray [H, W] or RGB [H, W, 3]); key is
                              "images", or "color_images" for a bag's second, colour topic
  ("info", {name: value})     facts about how the file stores events, for --info: "encoding"
                              and "time_unit" (the unit of its time stamps)

A format is its stream function, registered with `event_format`. Adding one is writing a module
and importing it at the bottom of this file. A path is of the first registered format whose
`detect` accepts it: the order of the imports below, then of the registrations in each module,
so a format with a looser test (any .txt, any .zip) comes after the stricter ones.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class EventFormat:
    name: str
    detect: object          # path -> bool
    stream: object          # (path, **options) -> pieces
    columns: object = None  # path -> common.Columns, for the formats EventFile reads by position
    sort: bool = False      # events may be out of time order (bags): loading sorts them


FORMATS = {}  # name -> EventFormat, in the order they are tried


def event_format(name, detect, columns=None, sort=False):
    """Register the decorated stream function as the reader of format `name`."""
    def register(stream):
        FORMATS[name] = EventFormat(name, detect, stream, columns, sort)
        return stream
    return register


# The formats, one import a module: importing a module registers its formats, in this order.
from . import numpy_files  # noqa: E402,F401
from . import text  # noqa: E402,F401
from . import prophesee  # noqa: E402,F401
from . import hdf5  # noqa: E402,F401
from . import rosbag1  # noqa: E402,F401
from . import rosbag2  # noqa: E402,F401
from . import aedat  # noqa: E402,F401
