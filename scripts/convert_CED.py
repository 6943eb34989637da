"""
Convert CED (Scheerlinck et al. 2019): the ROS bags; frames of /dvs/image_raw go to images/, those of
/dvs/image_color to color_images/. Train on the result with --color_event.

    python scripts/convert_CED.py --raw_data_dir DOWNLOADS --output_data_dir OUT [--sequences simple_fruit ...]

Writes OUT/SEQUENCE/ in the layout described in convert_common.py. Sequence names, sensor size
and topics come from datasets.py.
"""

import sys

from convert_common import main

if __name__ == "__main__":
    sys.exit(main("CED"))
