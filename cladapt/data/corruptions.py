"""The 15 common corruptions of Hendrycks & Dietterich (ICLR 2019) as batched torch ops.

Every op takes a batch ``x`` of shape (N, C, H, W) with values in [0, 1], a severity 1..5 and a
seeded ``torch.Generator``, and returns a batch of the same shape in [0, 1], quantised to 8 bits
like the released files (written with ``np.uint8``, i.e. floor). Parameters are those of the
reference scripts in github.com/hendrycks/robustness: ``make_cifar_c.py`` for images up to 64 px
(the "cifar" set) and ``make_imagenet_c.py`` / its ``imagenet_c`` package for larger ones (the
"imagenet" set; pixel-valued parameters are relative to 224 px, the scripts' only size).

Devices and randomness. Everything runs on ``x``'s device, random draws included, so a CUDA
batch never visits the host (``jpeg_compression`` excepted: the JPEG bytes are made on the CPU).
A CPU batch draws from the given generator; a GPU batch from a device generator seeded from it:
each device is reproducible on its own (GPU and CPU streams of numbers differ). Random choices
(noise, angles, crops, swaps) are drawn per image, as the reference does per image.

Where an op is not the reference's code path, its docstring says how it is equivalent:

- ``glass_blur``: the reference's sequential pixel "swaps" (numpy views make them copies),
  executed in parallel wavefronts that provably give the same result as the sequential loop for
  the same random draws.
- ``motion_blur`` / ``snow``: ImageMagick's ``MotionBlurImage`` (a one-sided Gaussian line
  kernel of width 2*ceil(radius)+1, offsets rounded, edges replicated) as the reference
  computes it: one shifted, weighted copy per tap, each image with its own angle.
- Gaussian blurs (``gaussian_filter``: glass_blur, elastic_transform's displacement field): one
  matrix product per axis with the filter's matrix, edge padding folded in, equal to scipy's
  ``gaussian_filter`` to float precision for any kernel length.
- ``defocus_blur``: cv2's ``filter2D`` with the reference's anti-aliased disk (reflect-101
  borders), by FFT for large kernels like cv2 does.
- ``frost``: the reference blends crops of six frost photographs shipped with its repository,
  which cannot ship here. A seeded texture replaces them whose pixel distribution per channel is
  the photographs' (quantiles measured by ``benchmarks/frost_statistics.py`` and stored in
  ``frost_stats.json``) and whose split of variance between and within crops is theirs.
- ``jpeg_compression``: libjpeg through torchvision's batched ``encode_jpeg``/``decode_jpeg`` (the
  library PIL, the reference's encoder, also wraps; same quality scaling and 4:2:0 subsampling).
- ``pixelate``: PIL's BOX resampling as two resampling matrices.
- ``elastic_transform``: cv2.warpAffine (reflect-101) then scipy ``map_coordinates`` (order 1,
  scipy's half-sample ``reflect``) as two ``grid_sample`` calls with the matching borders.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import torch
import torch.nn.functional as F

from cladapt.errors import ConfigError, UnknownNameError

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
# the corruptions that draw random numbers (the others are deterministic functions of the image)
STOCHASTIC_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "snow",
    "frost",
    "fog",
    "elastic_transform",
)

# severity 1..5 parameters; "cifar" from make_cifar_c.py, "imagenet" from make_imagenet_c.py
PARAMS: dict[str, dict[str, list]] = {
    "cifar": {
        "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
        "shot_noise": [500, 250, 100, 75, 50],
        "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
        "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
        "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
        "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
        "zoom_blur": [
            (1, 1.06, 0.01),
            (1, 1.11, 0.01),
            (1, 1.16, 0.01),
            (1, 1.21, 0.01),
            (1, 1.26, 0.01),
        ],
        "snow": [
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ],
        "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
        "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
        "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
        "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
        # fractions of the image size (the reference multiplies by IMSIZE = 32)
        "elastic_transform": [
            (0, 0, 0.08),
            (0.05, 0.2, 0.07),
            (0.08, 0.06, 0.06),
            (0.1, 0.04, 0.05),
            (0.1, 0.03, 0.03),
        ],
        "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
        "jpeg_compression": [80, 65, 58, 50, 40],
    },
    "imagenet": {
        "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],
        "shot_noise": [60, 25, 12, 5, 3],
        "impulse_noise": [0.03, 0.06, 0.09, 0.17, 0.27],
        "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
        "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
        "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
        "zoom_blur": [
            (1, 1.11, 0.01),
            (1, 1.16, 0.01),
            (1, 1.21, 0.02),
            (1, 1.26, 0.02),
            (1, 1.31, 0.03),
        ],
        "snow": [
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
        ],
        "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
        "fog": [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)],
        "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
        "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
        # the reference multiplies by 244 ("should have been 224"): kept, relative to 224
        "elastic_transform": [
            (488 / 224, 170.8 / 224, 24.4 / 224),
            (488 / 224, 19.52 / 224, 48.8 / 224),
            (12.2 / 224, 2.44 / 224, 4.88 / 224),
            (17.08 / 224, 2.44 / 224, 4.88 / 224),
            (29.28 / 224, 2.44 / 224, 4.88 / 224),
        ],
        "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
        "jpeg_compression": [25, 18, 15, 10, 7],
    },
}

FFT_MIN_KERNEL = 7  # larger kernels are convolved by FFT (cv2.filter2D switches at 11)
CPU_PARTS = 4  # independent generator streams for the ops sampled in parallel CPU threads


def parameter_set(image_size: int) -> str:
    """CIFAR parameters for images up to 64 px (CIFAR, Tiny-ImageNet scale), ImageNet above."""
    return "cifar" if image_size <= 64 else "imagenet"


# ----------------------------------------------------------------------------- helpers
def _rand(shape, g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=like.device, dtype=torch.float32)


def _randn(shape, g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=g, device=like.device, dtype=torch.float32)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return _rand(n, g, like) * (hi - lo) + lo


def _quantise(x: torch.Tensor) -> torch.Tensor:
    """np.uint8(np.clip(x, 0, 1) * 255) / 255, as the released files were written."""
    return torch.floor(x.clamp(0, 1) * 255) / 255


def _gaussian_kernel1d(sigma: float, truncate: float, like: torch.Tensor) -> torch.Tensor:
    radius = max(int(truncate * sigma + 0.5), 0)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=like.device)
    k = torch.exp(-0.5 * (t / max(sigma, 1e-8)) ** 2)
    return k / k.sum()


def gaussian_filter(
    x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "replicate"
) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), like ``skimage.filters.gaussian``
    (``mode`` "replicate" = skimage's default "nearest"; "reflect" = half-sample symmetric).

    Each axis is one matrix product with the filter's (n, n) matrix, the padding folded in: as
    fast for ImageNet-C's severity-1 elastic field (sigma 0.76 x the image, a 1 025-tap kernel
    at 224 px) as for a 15-tap one, where a depthwise convolution takes seconds per batch."""
    if max(int(truncate * sigma + 0.5), 0) == 0:
        return x
    h, w = x.shape[-2:]
    rows = _blur_matrix(h, sigma, truncate, mode, x.device, x.dtype)
    cols = rows if w == h else _blur_matrix(w, sigma, truncate, mode, x.device, x.dtype)
    return torch.matmul(rows, torch.matmul(x, cols.T))


@functools.lru_cache(maxsize=32)
def _blur_matrix(
    n: int, sigma: float, truncate: float, mode: str, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The 1-D Gaussian filter of length-``n`` signals as an (n, n) matrix: row i holds the
    weights of the input pixels that output i sums once the edge padding is resolved (a tap
    that falls past the edge adds to the pixel the padding repeats there)."""
    k = _gaussian_kernel1d(sigma, truncate, torch.empty(0)).double()
    r = (len(k) - 1) // 2
    out = torch.arange(n)[:, None].expand(n, len(k))
    src = out + torch.arange(-r, r + 1)[None]
    if mode == "reflect":  # scipy's "reflect" repeats the edge pixel: (d c b a | a b c d)
        src = src % (2 * n)
        src = torch.where(src >= n, 2 * n - 1 - src, src)
    elif mode == "replicate":
        src = src.clamp(0, n - 1)
    else:
        raise ValueError(f"gaussian_filter: unknown mode {mode!r} (reflect or replicate)")
    m = torch.zeros(n, n, dtype=torch.float64)
    m.index_put_((out.reshape(-1), src.reshape(-1)), k.expand(n, -1).reshape(-1), accumulate=True)
    return m.to(device=device, dtype=dtype)


def _symmetric_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    """Half-sample symmetric padding (numpy "symmetric" / scipy "reflect"), any width."""
    h, w = x.shape[-2:]
    rows = _symmetric_index(h, r, x.device)
    cols = _symmetric_index(w, r, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _symmetric_index(n: int, r: int, device: torch.device) -> torch.Tensor:
    i = torch.arange(-r, n + r, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


@functools.cache
def _fft_size(n: int) -> int:
    """The smallest 5-smooth number (2^a 3^b 5^c) >= n: sizes the FFT handles fastest."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _fft_conv(x: torch.Tensor, kernel: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    """out[n, c, y, x] = sum_{u,v} kernel[n or 1, u, v] * xpad[n, c, y + u, x + v] (a
    correlation, as cv2.filter2D), with ``pad`` pixels of ``mode`` padding; kernel (K, K) or
    (N, K, K) with K = 2 * pad + 1."""
    h, w = x.shape[-2:]
    xp = _symmetric_pad(x, pad) if mode == "symmetric" else F.pad(x, (pad,) * 4, mode=mode)
    # zeros beyond the padded image change nothing in the valid window (no wrap-around reaches
    # it) and a 5-smooth grid makes the FFT 2-3x faster (92 -> 96 px, 284 -> 288 px)
    size = (_fft_size(xp.shape[-2]), _fft_size(xp.shape[-1]))
    xp = F.pad(xp, (0, size[1] - xp.shape[-1], 0, size[0] - xp.shape[-2]))
    k = kernel if kernel.dim() == 3 else kernel[None]
    # correlation = convolution with the flipped kernel, centred at the origin of the FFT grid
    flipped = torch.zeros(k.shape[0], *size, dtype=x.dtype, device=x.device)
    ksz = k.shape[-1]
    flipped[:, :ksz, :ksz] = k.flip(-1, -2)
    flipped = flipped.roll((-pad, -pad), dims=(-2, -1))
    spectrum = torch.fft.rfft2(xp) * torch.fft.rfft2(flipped)[:, None]
    out = torch.fft.irfft2(spectrum, s=size)
    return out[..., pad : pad + h, pad : pad + w]


def _filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Same-size correlation with one odd (K, K) kernel for every image and channel."""
    r = kernel.shape[-1] // 2
    if kernel.shape[-1] >= FFT_MIN_KERNEL:
        return _fft_conv(x, kernel, r, mode)
    c = x.shape[1]
    padded = _symmetric_pad(x, r) if mode == "symmetric" else F.pad(x, (r,) * 4, mode=mode)
    return F.conv2d(padded, kernel.to(x.dtype).expand(c, 1, -1, -1), groups=c)


# ----------------------------------------------------------------------------- noise
def gaussian_noise(x, c, g):
    return x + c * _randn(x.shape, g, x)


@functools.lru_cache(maxsize=1)
def _threads() -> ThreadPoolExecutor:
    """Worker threads for the CPU work that releases the GIL (Poisson sampling, libjpeg)."""
    return ThreadPoolExecutor(max(2, torch.get_num_threads()), thread_name_prefix="corrupt")


def shot_noise(x, c, g):
    """Poisson counts at rate x * c (on the device; float32 holds the counts exactly). On the
    CPU, torch samples Poisson variates one thread at a time: the batch is cut into a fixed
    number of parts with their own generators (seeded from ``g``, so the result does not depend
    on the thread count), sampled in parallel threads."""
    rate = x * c
    if x.device.type != "cpu" or rate.numel() < 1 << 16:
        return torch.poisson(rate, generator=g) / c
    parts = rate.chunk(CPU_PARTS)
    seeds = torch.randint(0, 2**62, (len(parts),), generator=g).tolist()
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    counts = list(_threads().map(lambda gen, part: torch.poisson(part, generator=gen), gens, parts))
    return torch.cat(counts) / c


def impulse_noise(x, c, g):
    """skimage ``random_noise(mode='s&p', amount=c)``: each value flips with probability c,
    to 1 or 0 with equal odds (channels independently)."""
    u = _rand(x.shape, g, x)  # one draw: flip if u < c; salt if u < c / 2 (half the flips)
    return torch.where(u < c, (u < c / 2).to(x.dtype), x)


# ----------------------------------------------------------------------------- blurs
@functools.lru_cache(maxsize=32)
def _disk(radius: float, alias_blur: float) -> torch.Tensor:
    """The reference's anti-aliased disk kernel (cv2.GaussianBlur of a binary disk)."""
    if radius <= 8:
        half, ksize = 8, 3
    else:
        half, ksize = int(radius), 5
    t = torch.arange(-half, half + 1, dtype=torch.float32)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    d = ((xx**2 + yy**2) <= radius**2).float()
    d = d / d.sum()
    # cv2.GaussianBlur with a fixed (ksize x ksize) window and BORDER_REFLECT_101
    u = torch.arange(ksize, dtype=torch.float32) - (ksize - 1) / 2
    k = torch.exp(-(u**2) / (2 * alias_blur**2))
    k = k / k.sum()
    p = ksize // 2
    d = F.pad(d[None, None], (p, p, p, p), mode="reflect")
    return F.conv2d(F.conv2d(d, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))[0, 0]


def defocus_blur(x, c, g):
    k = _disk(c[0], c[1]).to(x.device)
    r = k.shape[-1] // 2
    mode = "reflect" if r < min(x.shape[-2:]) else "replicate"
    return _filter2d(x, k, mode)


@functools.lru_cache(maxsize=16)
def _glass_schedule(h: int, w: int, delta: int) -> tuple[torch.Tensor, list[int]]:
    """The reference's positions (h from H-delta down to delta+1, w likewise) grouped into
    wavefronts: t(h, w) = (W - w) + 2*delta*(H - h). Updates in one wavefront touch disjoint
    pixel windows, and every update that precedes another in the sequential loop and touches
    its window lies in an earlier wavefront, so running the wavefronts in order gives exactly
    the sequential result. Returns (positions sorted by wavefront with their sequential rank,
    group sizes)."""
    hs = torch.arange(h - delta, delta, -1)
    ws = torch.arange(w - delta, delta, -1)
    hh, ww = torch.meshgrid(hs, ws, indexing="ij")  # sequential order: row-major
    order = (w - ww) + 2 * delta * (h - hh)
    sequential_rank = torch.arange(hh.numel())
    key = order.flatten() * hh.numel() + sequential_rank  # stable within a wavefront
    perm = key.argsort()
    counts = collections.Counter(
        (w - ww_) + 2 * delta * (h - hh_)
        for hh_ in range(h - delta, delta, -1)
        for ww_ in range(w - delta, delta, -1)
    )
    sizes = [counts[t] for t in sorted(counts)]
    positions = torch.stack([hh.flatten()[perm], ww.flatten()[perm], sequential_rank[perm]], 1)
    return positions, sizes


def glass_blur(x, c, g):
    """Blur, replace every pixel by a random neighbour in the reference's sequential order (run
    as parallel wavefronts, see :func:`_glass_schedule`), blur again.

    The reference writes ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on an (H, W, 3) numpy
    array: both sides are views of the pixel rows, so after the first assignment the second one
    copies the new value back, and the neighbour is *copied* into (h, w), not swapped. This
    copy is what produced the released CIFAR-10-C / ImageNet-C files, and what runs here."""
    sigma, delta, iterations = c
    n, ch, h, w = x.shape
    x = torch.floor(gaussian_filter(x, sigma).clamp(0, 1) * 255) / 255
    if h <= 2 * delta or w <= 2 * delta:
        return gaussian_filter(x, sigma)
    positions, sizes = _glass_schedule(h, w, delta)
    positions = positions.to(x.device)
    flat = x.permute(0, 2, 3, 1).reshape(n, h * w, ch).contiguous()
    rows = torch.arange(n, device=x.device)[:, None]
    for _ in range(iterations):
        # np.random.randint(-delta, delta, size=(2,)) per pixel (dx, dy) in the sequential
        # order, per image here; then taken in wavefront order
        draws = torch.randint(-delta, delta, (n, len(positions), 2), generator=g, device=x.device)
        draws = draws[:, positions[:, 2]]
        pos_h, pos_w = positions[:, 0], positions[:, 1]
        here = pos_h * w + pos_w
        there = (pos_h + draws[..., 1]) * w + (pos_w + draws[..., 0])
        start = 0
        for size in sizes:
            i = here[start : start + size].expand(n, -1)
            j = there[:, start : start + size]
            flat[rows, i] = flat[rows, j]  # the reference's "swap" copies, see the docstring
            start += size
    x = flat.view(n, h, w, ch).permute(0, 3, 1, 2)
    return gaussian_filter(x, sigma)


@functools.lru_cache(maxsize=64)
def _line_weights(width: int, sigma: float) -> tuple[float, ...]:
    """The one-sided Gaussian weights of a ``width``-tap motion-blur line, as numbers."""
    weights = [math.exp(-(i**2) / (2 * sigma**2)) for i in range(width)]
    return tuple(v / sum(weights) for v in weights)


def _line_taps(radius: float, sigma: float, angle_deg: torch.Tensor) -> tuple:
    """ImageMagick's motion-blur kernel per image: one-sided Gaussian weights (K numbers) at
    the offsets ceil(k * (cos, sin) - 0.5), as (N, K) integer dx and dy."""
    width = int(2 * math.ceil(radius) + 1)
    i = torch.arange(width, dtype=torch.float32, device=angle_deg.device)
    theta = torch.deg2rad(angle_deg.float())
    dx = torch.ceil(i[None] * torch.cos(theta)[:, None] - 0.5).long()
    dy = torch.ceil(i[None] * torch.sin(theta)[:, None] - 0.5).long()
    return _line_weights(width, float(sigma)), dx, dy


# above this many values per image, a CPU shifts and adds image by image (a view per tap);
# below, one gather per tap over the whole batch costs less than the per-image calls
_SLICE_MIN_VALUES = 4096


def magick_motion_blur(
    x: torch.Tensor, radius: float, sigma: float, angle_deg: torch.Tensor
) -> torch.Tensor:
    """ImageMagick ``MotionBlurImage`` with one angle per image: out[y, x] = sum_k w_k *
    in[y + dy_k, x + dx_k], edges replicated. The kernel is a line of K taps, so the sum is
    K shifted adds (K = 41 at ImageNet-C's severity 5), not a dense K x K convolution."""
    taps, dx, dy = _line_taps(radius, sigma, angle_deg)
    n, c, h, w = x.shape
    pad = len(taps) - 1
    padded = F.pad(x, (pad,) * 4, mode="replicate")
    out = torch.zeros_like(x)
    if x.device.type == "cpu" and c * h * w > _SLICE_MIN_VALUES:
        for i, (xs, ys) in enumerate(zip((dx + pad).tolist(), (dy + pad).tolist(), strict=True)):
            for wt, a, b in zip(taps, ys, xs, strict=True):
                out[i].add_(padded[i, :, a : a + h, b : b + w], alpha=wt)
        return out
    wp = w + 2 * pad
    flat = padded.reshape(n, c, -1)
    rows = torch.arange(h, device=x.device)[:, None] + pad
    base = (rows * wp + torch.arange(w, device=x.device)[None] + pad).reshape(1, 1, -1)
    shift = dy * wp + dx  # (N, K): the flat offset of each tap in each image
    out = out.view(n, c, -1)
    for t, wt in enumerate(taps):
        index = (base + shift[:, t, None, None]).expand(n, c, -1)
        out.add_(torch.gather(flat, 2, index), alpha=wt)
    return out.view(n, c, h, w)


def motion_blur(x, c, g):
    angle = _uniform(x.shape[0], -45, 45, g, x)
    return magick_motion_blur(torch.floor(x * 255) / 255, c[0], c[1], angle)


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Centre crop of side ceil(h / factor), zoomed by ``factor`` (linear, corners aligned like
    scipy.ndimage.zoom), trimmed back to h."""
    h = x.shape[-2]
    ch = int(math.ceil(h / factor))
    top = (h - ch) // 2
    crop = x[..., top : top + ch, top : top + ch]
    size = int(round(ch * factor))
    z = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=True)
    trim = (size - h) // 2
    return z[..., trim : trim + h, trim : trim + h]


def _zoom_factors(start: float, stop: float, step: float) -> list[float]:
    """np.arange(start, stop, step) in float64, without building a tensor."""
    count = math.ceil((stop - start) / step)
    return [start + i * step for i in range(count)]


def zoom_blur(x, c, g):
    factors = _zoom_factors(*c)
    out = torch.zeros_like(x)
    for f in factors:
        out += clipped_zoom(x, f)
    return (x + out) / (len(factors) + 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


# ----------------------------------------------------------------------------- weather
def snow(x, c, g):
    n, _, h, w = x.shape
    layer = _randn((n, 1, h, w), g, x) * c[1] + c[0]
    layer = clipped_zoom(layer, c[2])
    layer = torch.where(layer < c[3], torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255) / 255
    angle = _uniform(n, -135, -45, g, x)
    layer = torch.floor(magick_motion_blur(layer, c[4], c[5], angle) * 255 + 0.5) / 255
    x = c[6] * x + (1 - c[6]) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-1, -2)


def plasma_fractal(n: int, mapsize: int, decay: float, g: torch.Generator, like) -> torch.Tensor:
    """Diamond-square height maps in [0, 1], batched: (n, mapsize, mapsize)."""
    dtype = torch.float32  # as imagecorruptions; the maps are min-max normalised at the end
    m = torch.zeros(n, mapsize, mapsize, dtype=dtype, device=like.device)
    step, wibble = mapsize, 100.0

    def wibbled(a: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(a.shape, generator=g, dtype=dtype, device=like.device)
        return a / 4 + wibble * (noise * 2 * wibble - wibble)

    while step >= 2:
        half = step // 2
        corners = m[:, 0:mapsize:step, 0:mapsize:step]
        sq = corners + corners.roll(-1, 1)
        sq = sq + sq.roll(-1, 2)
        m[:, half:mapsize:step, half:mapsize:step] = wibbled(sq)
        dr = m[:, half:mapsize:step, half:mapsize:step]
        ul = m[:, 0:mapsize:step, 0:mapsize:step]
        m[:, 0:mapsize:step, half:mapsize:step] = wibbled(dr + dr.roll(1, 1) + ul + ul.roll(-1, 2))
        m[:, half:mapsize:step, 0:mapsize:step] = wibbled(dr + dr.roll(1, 2) + ul + ul.roll(-1, 1))
        step //= 2
        wibble /= decay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True)


def _mapsize(h: int, w: int) -> int:
    """The fractal's side: the next power of two of the image side (make_cifar_c: 32,
    make_imagenet_c: 256 for 224, imagecorruptions: next_power_of_2(max side))."""
    return 1 << (max(h, w) - 1).bit_length()


def fog(x, c, g):
    n, _, h, w = x.shape
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    plasma = plasma_fractal(n, _mapsize(h, w), c[1], g, x)[:, None, :h, :w]
    return (x + c[0] * plasma.to(x.dtype)) * max_val / (max_val + c[0])


@functools.lru_cache(maxsize=4)
def frost_statistics() -> dict:
    """Measured statistics of the reference's frost crops (``benchmarks/frost_statistics.py``)."""
    text = resources.files("cladapt.data").joinpath("frost_stats.json").read_text("utf-8")
    return json.loads(text)


def frost_texture(n: int, h: int, w: int, parameters: str, g, like) -> torch.Tensor:
    """Stand-in for the reference's frost crops, (n, 3, h, w) in [0, 255] grey levels.

    A latent Gaussian field z = a * z_crop + b * z_pixel (a^2 + b^2 = 1; z_crop one value per
    image, z_pixel a plasma fractal's normalised ranks) is mapped through the photographs'
    quantile function, channel by channel: the pooled distribution of every channel is the
    photographs', and a^2 is their share of variance between crops (a crop of a large photo is
    nearly uniform: much of the variance is between crops)."""
    regime = parameters if parameters == "cifar" or min(h, w) > 64 else "imagenet@32"
    stats = frost_statistics()[regime]
    a = math.sqrt(stats["between_crop_share"])
    b = math.sqrt(max(1 - a * a, 0.0))
    field = plasma_fractal(n, _mapsize(h, w), stats["fractal_decay"], g, like)[:, :h, :w]
    u = _uniform_scores(field.flatten(1)).clamp(1e-6, 1 - 1e-6)
    z_pixel = math.sqrt(2) * torch.special.erfinv(2 * u - 1)  # standard normal scores
    z_crop = _randn((n, 1), g, like)
    u = 0.5 * (1 + torch.erf((a * z_crop + b * z_pixel) / math.sqrt(2)))
    q = torch.tensor(stats["quantiles"], dtype=torch.float32, device=like.device)  # (3, Q)
    pos = u.clamp(0, 1) * (q.shape[1] - 1)
    lo = pos.floor().long().clamp(max=q.shape[1] - 2)
    frac = pos - lo
    channels = [q[c][lo] * (1 - frac) + q[c][lo + 1] * frac for c in range(3)]
    return torch.stack(channels, 1).view(n, 3, h, w)


def _uniform_scores(values: torch.Tensor, bins: int = 1024) -> torch.Tensor:
    """Each row's values in [0, 1] mapped through the row's own empirical CDF (a histogram of
    ``bins`` bins, linear within a bin): uniform scores like normalised ranks, without a sort."""
    scaled = values * bins
    idx = scaled.long().clamp(max=bins - 1)
    counts = torch.zeros(values.shape[0], bins, device=values.device)
    counts.scatter_add_(1, idx, torch.ones_like(values))
    before = counts.cumsum(1) - counts
    inside = (scaled - idx).clamp(0, 1) * counts.gather(1, idx)
    return (before.gather(1, idx) + inside) / values.shape[1]


def frost(x, c, g, parameters="cifar"):
    n, ch, h, w = x.shape
    tex = frost_texture(n, h, w, parameters, g, x).to(x.dtype) / 255
    tex = tex if ch == 3 else _gray(tex)
    return c[0] * x + c[1] * tex


# ----------------------------------------------------------------------------- digital
def brightness(x, c, g):
    """HSV value + c, clipped; hue and saturation kept (so RGB scales by V'/V)."""
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x))


def contrast(x, c, g):
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * c + mean


def _affine_grids(x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Sampling grid of cv2.warpAffine(M) with M mapping src -> dst points, per image."""
    n, _, h, w = x.shape
    ones = torch.ones(n, 3, 1, device=x.device)
    a = torch.cat([src, ones], 2)  # (n, 3, 3): rows [x, y, 1]
    m = torch.linalg.solve(a, dst).transpose(1, 2)  # (n, 2, 3): dst = m @ [x, y, 1]
    bottom = torch.tensor([[[0.0, 0.0, 1.0]]], device=x.device).expand(n, 1, 3)
    inv = torch.linalg.inv(torch.cat([m, bottom], 1))[:, :2]  # warpAffine samples at M^-1 dst
    ys, xs = torch.meshgrid(
        torch.arange(h, device=x.device).float(),
        torch.arange(w, device=x.device).float(),
        indexing="ij",
    )
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, -1, 3)
    mapped = pts @ inv.transpose(1, 2)  # (n, h*w, 2) in pixel coordinates
    return mapped.view(n, h, w, 2)


def _sample(x: torch.Tensor, coords: torch.Tensor, edge: str) -> torch.Tensor:
    """Bilinear sampling at pixel coordinates (x, y). ``edge``: "reflect101" (cv2's
    BORDER_REFLECT_101: mirror about the border pixels' centres) or "reflect" (scipy's
    map_coordinates mode='reflect': mirror about the image's edges, repeating the border)."""
    h, w = x.shape[-2:]
    if edge == "reflect101":
        gx, gy = coords[..., 0] * 2 / (w - 1) - 1, coords[..., 1] * 2 / (h - 1) - 1
        align = True
    else:
        gx, gy = (coords[..., 0] + 0.5) * 2 / w - 1, (coords[..., 1] + 0.5) * 2 / h - 1
        align = False
    grid = torch.stack([gx, gy], -1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=align)


def elastic_transform(x, c, g):
    n, _, h, w = x.shape
    size = min(h, w)
    alpha, sigma, affine = c[0] * size, c[1] * size, c[2] * size
    centre = torch.tensor([w // 2, h // 2], dtype=torch.float32, device=x.device)
    sq = size // 3
    offsets = torch.tensor([[sq, sq], [sq, -sq], [-sq, -sq]], dtype=torch.float32)
    src = (centre + offsets.to(x.device)).expand(n, 3, 2)
    dst = src + (_rand((n, 3, 2), g, x) * 2 - 1) * affine
    x = _sample(x, _affine_grids(x, src, dst), "reflect101")
    field = _rand((n, 2, h, w), g, x) * 2 - 1
    field = gaussian_filter(field, sigma, truncate=3.0, mode="reflect") * alpha
    ys, xs = torch.meshgrid(
        torch.arange(h, device=x.device).float(),
        torch.arange(w, device=x.device).float(),
        indexing="ij",
    )
    coords = torch.stack([xs + field[:, 0], ys + field[:, 1]], -1)
    return _sample(x, coords, "reflect")


@functools.lru_cache(maxsize=64)
def _box_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """PIL BOX resampling from n_in to n_out pixels as an (n_out, n_in) matrix."""
    scale = n_in / n_out
    support = max(scale, 1.0) * 0.5
    filterscale = max(scale, 1.0)
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in)
        for j in range(lo, hi):
            if -0.5 <= (j - centre + 0.5) / filterscale < 0.5:
                m[i, j] = 1.0
        m[i] /= m[i].sum().clamp_min(1e-12)
    return m


@functools.lru_cache(maxsize=64)
def _box_runs(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """PIL BOX weights are 0/1: each output pixel averages a contiguous run [lo, hi) of input
    pixels. Returns (lo, hi) per output pixel and whether every run is a single pixel."""
    m = _box_matrix(n_in, n_out) > 0
    cols = torch.arange(n_in)
    lo = torch.where(m, cols, n_in).amin(1)
    hi = torch.where(m, cols + 1, 0).amax(1)
    return lo, hi, bool(((hi - lo) == 1).all())


def _box_resample(x: torch.Tensor, n_out: int, dim: int) -> torch.Tensor:
    """PIL BOX resampling along ``dim`` (-1 or -2): run means (by a cumulative sum) when
    shrinking, a plain gather when every run is one pixel (enlarging)."""
    lo, hi, single = _box_runs(x.shape[dim], n_out)
    if single:
        return x.index_select(dim, lo.to(x.device))
    lo, hi = lo.to(x.device), hi.to(x.device)
    csum = x.cumsum(dim)
    upper = csum.index_select(dim, hi - 1)
    lower = csum.index_select(dim, (lo - 1).clamp(min=0))
    first = (lo == 0).view(-1, 1) if dim == -2 else (lo == 0)
    count = (hi - lo).to(x.dtype).view(-1, 1) if dim == -2 else (hi - lo).to(x.dtype)
    return (upper - torch.where(first, torch.zeros_like(lower), lower)) / count


def pixelate(x, c, g):
    """PIL BOX down to c * size, then BOX up (nearest), on the input's 8-bit levels."""
    n, ch, h, w = x.shape
    sh, sw = int(h * c), int(w * c)
    levels = x.mul(255).round_()
    kh, kw = h // sh, w // sw
    whole = (
        kh * sh == h
        and kw * sw == w
        and _box_runs(h, sh)[0].equal(torch.arange(sh) * kh)
        and _box_runs(w, sw)[0].equal(torch.arange(sw) * kw)
    )
    if whole:  # every run is kh x kw pixels: one pooling pass, enlarging is a plain repeat
        small = F.avg_pool2d(levels, (kh, kw)).add_(0.5).floor_().div_(255)
        return small[:, :, :, None, :, None].expand(n, ch, sh, kh, sw, kw).reshape(n, ch, h, w)
    small = _box_resample(_box_resample(levels, sh, -2), sw, -1).add_(0.5).floor_().div_(255)
    # enlarging gathers single pixels; along the rows last (a contiguous row gather)
    return _box_resample(_box_resample(small, w, -1), h, -2)


def jpeg_compression(x, c, g):
    """libjpeg at quality c through torchvision's batched encoder and decoder (PIL, the
    reference's encoder, wraps the same library: bit-identical at the reference's qualities,
    ``tests/test_corruptions.py``); the bytes are made on the CPU and the result goes back to
    ``x``'s device. Without torchvision's image codecs, PIL image by image. Large batches run
    in parallel threads, a part each (libjpeg releases the GIL)."""
    codec = _jpeg_torchvision if _torchvision_jpeg_available() else _jpeg_pil
    out = torch.empty(x.shape, dtype=torch.float32)

    def part(src: torch.Tensor, dst: torch.Tensor) -> None:
        u8 = src.clamp(0, 1).mul_(255).to(torch.uint8).cpu()  # the cast floors
        torch.div(codec(u8, int(c)), 255, out=dst)

    parallel = x.shape[-1] * x.shape[-2] >= 64 * 64 and len(x) > 1
    parts = max(1, min(len(x), torch.get_num_threads())) if parallel else 1
    if parts == 1:
        part(x, out)
    else:
        list(_threads().map(part, x.chunk(parts), out.chunk(parts)))
    return out.to(x.device)


@functools.lru_cache(maxsize=1)
def _torchvision_jpeg_available() -> bool:
    with warnings.catch_warnings():  # torchvision 0.29 points to torchcodec; still shipped
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from torchvision.io import decode_jpeg, encode_jpeg  # noqa: F401
        except ImportError:
            return False
    return True


def _jpeg_torchvision(u8: torch.Tensor, quality: int) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

        encoded = encode_jpeg(list(u8), quality=quality)
        mode = ImageReadMode.GRAY if u8.shape[1] == 1 else ImageReadMode.RGB
        return torch.stack(decode_jpeg(encoded, mode=mode))


def _jpeg_pil(u8: torch.Tensor, quality: int) -> torch.Tensor:
    import io

    import numpy as np
    from PIL import Image

    out = []
    for img in u8.permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(
            buf, "JPEG", quality=quality
        )
        out.append(torch.from_numpy(np.asarray(Image.open(buf)).copy()).reshape(img.shape))
    return torch.stack(out).permute(0, 3, 1, 2)


OPS: dict[str, Callable] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}
_NEED_PARAMETER_SET = ("frost",)
_ON_THE_GRID = ("jpeg_compression", "pixelate")  # already 8-bit levels in [0, 1]


def device_generator(g: torch.Generator, device: torch.device) -> torch.Generator:
    """``g`` for CPU batches; for other devices a generator there, seeded from ``g`` (drawing
    the seed is a CPU operation: it does not wait for the device)."""
    if device.type == "cpu":
        return g
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    return torch.Generator(device=device).manual_seed(seed)


def corrupt(
    x: torch.Tensor,
    name: str,
    severity: int,
    generator: torch.Generator | int,
    parameters: str | None = None,
) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1..5) to a (N, C, H, W) batch in [0, 1].

    ``generator``: a CPU ``torch.Generator`` or an int seed. ``parameters``: "cifar" or
    "imagenet"; by default chosen from the image size (:func:`parameter_set`).
    """
    if name not in OPS:
        raise UnknownNameError("corruption", name, CORRUPTIONS)
    if not 1 <= int(severity) <= 5:
        raise ConfigError(f"severity must be 1..5, got {severity}")
    if x.dim() != 4:
        raise ConfigError(f"corrupt expects a (N, C, H, W) batch, got shape {tuple(x.shape)}")
    g = (
        generator
        if isinstance(generator, torch.Generator)
        else torch.Generator().manual_seed(int(generator))
    )
    parameters = parameters or parameter_set(min(x.shape[-2:]))
    if parameters not in PARAMS:
        raise UnknownNameError("corruption parameter set", parameters, PARAMS)
    c = PARAMS[parameters][name][int(severity) - 1]
    x = x.float()
    g = device_generator(g, x.device)
    extra = (parameters,) if name in _NEED_PARAMETER_SET else ()
    out = OPS[name](x, c, g, *extra)
    return out if name in _ON_THE_GRID else _quantise(out)


def corrupt_dataset_tensor(
    x: torch.Tensor, name: str, severity: int, seed: int, chunk: int = 256
) -> torch.Tensor:
    """Corrupt a whole image tensor in chunks (bounded memory), reproducibly."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat(
        [corrupt(x[i : i + chunk], name, severity, g) for i in range(0, len(x), chunk)]
    )
