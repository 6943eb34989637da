"""
Convert IJRR / Event-Camera Dataset (Mueggler et al. 2017): the text release (a folder or .zip per
sequence, as downloaded) or the ROS bags.

    python scripts/convert_IJRR.py --raw_data_dir DOWNLOADS --output_data_dir OUT [--sequences slider_depth ...]

Writes OUT/SEQUENCE/ in the layout described in convert_common.py. Sequence names, sensor size
and topics come from datasets.py.
"""

import sys

from convert_common import main

if __name__ == "__main__":
    sys.exit(main("IJRR"))
