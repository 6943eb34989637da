"""
Facts about the public event datasets, in one table that the converters and the evaluation share.

Per dataset: its name in EVREAL's configurations and output tree, the sensor as (H, W) = (rows,
columns), whether its events are colour (RGGB Bayer), the contrast threshold the authors' README
trains it with, the ROS topics of its bags, which downloads a converter accepts, and its
sequences under EVREAL's folder names, each with EVREAL's evaluation interval (config/dataset/,
"std") in seconds after re-zeroing (the earlier of the first APS frame and the first event is
t = 0): `WHOLE_SEQUENCE` for all of it, None where EVREAL does not score the sequence.
`find_sequence` also knows a sequence by the other naming scheme (MVSEC without "_data").
"""

import math

WHOLE_SEQUENCE = (0.0, math.inf)

DATASETS = {
    # The Event-Camera Dataset (Mueggler et al., IJRR 2017), DAVIS240C. Released as folders/zips of
    # text (events.txt, images.txt, images/) and as ROS bags.
    "IJRR": {
        "evreal_name": "ECD",
        "sensor": (180, 240),
        "color": False,
        "event_thresh": 1.0,
        "events_topic": "/dvs/events",
        "images_topic": "/dvs/image_raw",
        "color_images_topic": None,
        "sources": ("", ".zip", ".bag"),  # "": a folder of the text release
        "sequences": {
            "boxes_6dof": (5.0, 20.0),
            "calibration": (5.0, 20.0),
            "dynamic_6dof": (5.0, 20.0),
            "office_zigzag": (5.0, 12.0),
            "poster_6dof": (5.0, 20.0),
            "shapes_6dof": (5.0, 20.0),
            "slider_depth": (1.0, 2.5),
            "boxes_rotation": None,
            "boxes_translation": None,
            "dynamic_rotation": None,
            "dynamic_translation": None,
            "hdr_boxes": None,
            "hdr_poster": None,
            "office_spiral": None,
            "outdoors_running": None,
            "outdoors_walking": None,
            "poster_rotation": None,
            "poster_translation": None,
            "shapes_rotation": None,
            "shapes_translation": None,
            "slider_close": None,
            "slider_far": None,
            "slider_hdr_close": None,
            "slider_hdr_far": None,
            "urban": None,
        },
    },
    # High Quality Frames (Stoffregen et al., ECCV 2020), DAVIS240C, released as bags (and as HDF5
    # in the event_cnn_minimal layout).
    "HQF": {
        "evreal_name": "HQF",
        "sensor": (180, 240),
        "color": False,
        "event_thresh": 1.0,
        "events_topic": "/dvs/events",
        "images_topic": "/dvs/image_raw",
        "color_images_topic": None,
        "sources": (".bag", ".h5"),
        "sequences": {name: WHOLE_SEQUENCE for name in (
            "bike_bay_hdr", "boxes", "desk", "desk_fast", "desk_hand_only", "desk_slow",
            "engineering_posters", "high_texture_plants", "poster_pillar_1", "poster_pillar_2",
            "reflective_materials", "slow_and_fast_desk", "slow_hand", "still_life")},
    },
    # Color Event Camera Dataset (Scheerlinck et al., CVPRW 2019), Color-DAVIS346, bags. The list
    # holds the sequences known here; the converter also converts any other bag it is given.
    "CED": {
        "evreal_name": "CED",
        "sensor": (260, 346),
        "color": True,
        "event_thresh": 1.0,
        "events_topic": "/dvs/events",
        "images_topic": "/dvs/image_raw",
        "color_images_topic": "/dvs/image_color",
        "sources": (".bag",),
        # EVREAL has no CED protocol; its sequences are scored whole against the gray APS frames.
        "sequences": {name: WHOLE_SEQUENCE for name in (
            "calib_low_density", "driving_country", "driving_tunnel_sun", "indoors_foosball_1",
            "indoors_very_dark_250ms", "people_static_air_guitar", "people_static_dancing_multiple_3",
            "people_static_wave_counterclockwise", "simple_color_keyboard_1", "simple_color_keyboard_2",
            "simple_fruit", "simple_jenga_1", "simple_jenga_destroy", "simple_rabbits", "simple_wires_1")},
    },
    # Multi Vehicle Stereo Event Camera dataset (Zhu et al., RA-L 2018): EVREAL scores the left
    # DAVIS346 of these sequences (bags and EVREAL's folders are named <sequence>_data).
    "MVSEC": {
        "evreal_name": "MVSEC",
        "sensor": (260, 346),
        "color": False,
        "event_thresh": 1.0,
        "events_topic": "/davis/left/events",
        "images_topic": "/davis/left/image_raw",
        "color_images_topic": None,
        "sources": (".bag",),
        "sequences": {
            "indoor_flying1_data": (10.0, 70.0),
            "indoor_flying2_data": (10.0, 70.0),
            "indoor_flying3_data": (10.0, 70.0),
            "indoor_flying4_data": (10.0, 19.8),
            "outdoor_day1_data": (0.0, 60.0),
            "outdoor_day2_data": (100.0, 160.0),
        },
    },
    # ALPIX Event Dataset (the EvINR authors'), already [N, 4] npy: no converter. The README's
    # flags give 408 x 306; taken here as 408 columns by 306 rows, like the other datasets'
    # "W x H" sizes (the loader checks the coordinates against it either way).
    "AED": {
        "evreal_name": "AED",
        "sensor": (306, 408),
        "color": False,
        "event_thresh": 0.25,
        "events_topic": None,
        "images_topic": None,
        "color_images_topic": None,
        "sources": (".npy",),
        "sequences": {},
    },
}


def find_sequence(dataset, name):
    """The table's name of `dataset`'s sequence `name` under either naming scheme (EVREAL's
    MVSEC folders and the bags end in "_data", other releases drop it), or None."""
    sequences = DATASETS[dataset]["sequences"]
    for candidate in (name, f"{name}_data", name.removesuffix("_data")):
        if candidate in sequences:
            return candidate
    return None


def dataset_named(name):
    """The table's key of a dataset given by its name here or in EVREAL (ECD is IJRR), or None."""
    return next((key for key, facts in DATASETS.items() if name in (key, facts["evreal_name"])), None)


def evaluated_sequences(dataset):
    """{sequence: (start, end)} of the sequences EVREAL scores in `dataset`."""
    return {name: interval for name, interval in DATASETS[dataset]["sequences"].items() if interval is not None}
