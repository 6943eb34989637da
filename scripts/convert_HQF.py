"""
Convert HQF (Stoffregen et al. 2020): the ROS bags (or the event_cnn_minimal HDF5 files).

    python scripts/convert_HQF.py --raw_data_dir DOWNLOADS --output_data_dir OUT [--sequences desk ...]

Writes OUT/SEQUENCE/ in the layout described in convert_common.py. Sequence names, sensor size
and topics come from datasets.py.
"""

import sys

from convert_common import main

if __name__ == "__main__":
    sys.exit(main("HQF"))
