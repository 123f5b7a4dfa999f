"""CoTTA's test-time augmentation as one batched computation over many views.

The reference (qinenergy/cotta ``get_tta_transforms``, also ViDA's and RoTTA's) calls a
torchvision pipeline on the batch tensor once per augmented view: ``Clip``, ``ColorJitterPro``
(brightness, contrast, saturation, hue and gamma, in a random order), an edge ``Pad`` of half the
image size, ``RandomAffine`` (bilinear, zero fill), ``GaussianBlur`` (kernel 5), ``CenterCrop``
back to the image size, ``RandomHorizontalFlip``, Gaussian noise and ``Clip``. Each call draws one
set of parameters shared by the whole batch. Thirty-two views are thirty-two rounds of small
tensor ops, then thirty-two small teacher forwards.

Here every view's parameters are drawn at once (:meth:`Augment.draw`: the reference's ranges, one
draw per view shared by the batch, as the reference), and all views are made in one pass
(:meth:`Augment.views`): the colour operations with per-view factors broadcast (at each of the
five positions of the random order, every operation is applied to the views that have it there),
one ``affine_grid`` / ``grid_sample`` for all views' affine maps, the blur as one grouped
separable convolution with per-view kernels, the flip as an index, the noise as one ``randn``.
:meth:`Augment.reference_view` makes one view with the same parameters through torchvision's own
functions, in the reference's structure: the two agree to float rounding
(``tests/test_augment.py``).

Two exact shortcuts, both invisible in the result: only the region the final crop keeps (plus
the blur's 2-pixel margin) is computed; and the edge padding is not materialised: for the
reference's parameter ranges (rotation <= 15 degrees, scale >= 0.9, translation <= 1/16 of the
padded side) every point that region samples lies inside the padded image, where edge padding
and bilinear interpolation equal ``grid_sample``'s ``border`` mode on the unpadded image (so the
zero fill is never reached; :func:`check_ranges` refuses parameters outside those ranges).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from cladapt.stream import TTAAugmentation

OPS = ("brightness", "contrast", "saturation", "hue", "gamma")  # ColorJitterPro's fn_idx order
GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


@dataclass
class ViewParams:
    """The random draws of ``V`` views (one per view, shared by the batch): each a tensor with
    ``V`` rows on the CPU."""

    order: torch.Tensor  # (V, 5) long: ColorJitterPro's permutation of OPS
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    gamma: torch.Tensor
    angle: torch.Tensor  # degrees
    tx: torch.Tensor  # pixels of the padded image (integers, as torchvision rounds them)
    ty: torch.Tensor
    scale: torch.Tensor
    sigma: torch.Tensor  # the blur's
    flip: torch.Tensor  # bool

    def __len__(self) -> int:
        return len(self.angle)

    def select(self, index: slice) -> ViewParams:
        return ViewParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


class Augment(nn.Module):
    """CoTTA's test-time augmentation for image batches in [0, 1], all views at once (see the
    module docstring). ``policy`` (the stream's :class:`~cladapt.stream.TTAAugmentation`) removes
    the flip and caps the rotation where they would change a label. Always fp32, also under a
    run's autocast: in bf16 the affine grid is off by up to half a pixel and the blur rounds."""

    def __init__(
        self,
        image_size: int,
        noise_std: float = 0.005,
        soft: bool = False,
        policy: TTAAugmentation | None = None,
    ) -> None:
        super().__init__()
        policy = policy or TTAAugmentation()
        self.size = image_size
        self.noise_std = noise_std
        self.hflip = policy.hflip
        degrees = min(8.0 if soft else 15.0, policy.max_degrees)
        self.ranges = {
            "brightness": (0.8, 1.2) if soft else (0.6, 1.4),
            "contrast": (0.85, 1.15) if soft else (0.7, 1.3),
            "saturation": (0.75, 1.25) if soft else (0.5, 1.5),
            "hue": (-0.03, 0.03) if soft else (-0.06, 0.06),
            "gamma": (0.85, 1.15) if soft else (0.7, 1.3),
            "angle": (-degrees, degrees),
            "scale": (0.95, 1.05) if soft else (0.9, 1.1),
            "sigma": (0.001, 0.25) if soft else (0.001, 0.5),
        }
        self.max_shift = (2 * (image_size // 2) + image_size) / 16  # translate 1/16, padded side

    # ------------------------------------------------------------------------------ draws
    def draw(self, views: int) -> ViewParams:
        """``views`` draws from the reference's ranges (torch's global generator, on the CPU,
        as torchvision's transforms draw)."""

        def uniform(name: str) -> torch.Tensor:
            lo, hi = self.ranges[name]
            return torch.empty(views).uniform_(lo, hi)

        order = torch.stack([torch.randperm(len(OPS)) for _ in range(views)])
        shift = torch.empty(2, views).uniform_(-self.max_shift, self.max_shift).round()
        flip = torch.rand(views) < 0.5 if self.hflip else torch.zeros(views, dtype=torch.bool)
        return ViewParams(
            order=order,
            brightness=uniform("brightness"),
            contrast=uniform("contrast"),
            saturation=uniform("saturation"),
            hue=uniform("hue"),
            gamma=uniform("gamma"),
            angle=uniform("angle"),
            tx=shift[0],
            ty=shift[1],
            scale=uniform("scale"),
            sigma=uniform("sigma"),
            flip=flip,
        )

    def forward(self, x: torch.Tensor, views: int = 1) -> torch.Tensor:
        """``views`` augmented views of the batch ``x``, view after view: (views * B, C, H, W)."""
        return self.views(x, self.draw(views))

    # ------------------------------------------------------------------------------ batched
    def views(self, x: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """The views ``p`` of the batch ``x`` (B, C, H, W), all in one pass: (V * B, C, H, W),
        view-major."""
        check_ranges(self, p)
        with torch.autocast(x.device.type, enabled=False):
            x = x.float().clamp(0, 1)
            v, (b, c, h, w) = len(p), x.shape
            dev = x.device
            out = x.unsqueeze(0).expand(v, b, c, h, w)
            if c == 3:
                out = self._colour(out, p)
            out = self._geometry(out, p)  # (V, B, C, h, w)
            if p.flip.any():
                flip = p.flip.to(dev).view(v, 1, 1, 1, 1)
                out = torch.where(flip, out.flip(-1), out)
            out = out + torch.randn(out.shape, device=dev) * self.noise_std
            return out.clamp(0, 1).reshape(v * b, c, h, w)

    def _colour(self, x: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """ColorJitterPro with per-view factors. On a GPU: at each position of the views' random
        orders, each operation is applied (broadcast) to the views that have it there. On a CPU:
        view after view, each in its own order (the same values; a view's images stay in the
        cache through its five operations, where a pass over all views streams them from memory
        five times: 56 vs 95 ms for 32 views of 64 images at 32 px)."""
        dev = x.device
        if dev.type == "cpu":
            out = torch.empty_like(x)
            for v, order in enumerate(p.order.tolist()):
                img = x[v : v + 1]
                for k in order:
                    img = _jitter(OPS[k], img, getattr(p, OPS[k])[v].view(1, 1, 1, 1, 1))
                out[v : v + 1] = img
            return out
        factors = {op: getattr(p, op).to(dev).view(-1, 1, 1, 1, 1) for op in OPS}
        order = p.order.to(dev)
        x = x.clone()
        for slot in range(len(OPS)):
            for k, op in enumerate(OPS):
                chosen = (order[:, slot] == k).nonzero().squeeze(1)
                if len(chosen):
                    x[chosen] = _jitter(op, x[chosen], factors[op][chosen])
        return x

    def _geometry(self, x: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """Edge pad, affine (bilinear), blur (kernel 5) and centre crop, computed on the crop
        and its blur margin only: (V, B, C, H, W) -> (V, B, C, H, W)."""
        v, b, c, h, w = x.shape
        dev = x.device
        margin = 2
        oh, ow = h + 2 * margin, w + 2 * margin
        theta = inverse_affine(p).to(dev)  # (V, 2, 3), pixel units about the image centre
        ys = torch.arange(oh, device=dev, dtype=torch.float32) - oh * 0.5 + 0.5
        xs = torch.arange(ow, device=dev, dtype=torch.float32) - ow * 0.5 + 0.5
        base = torch.stack(
            [
                xs.view(1, -1).expand(oh, ow),
                ys.view(-1, 1).expand(oh, ow),
                torch.ones(oh, ow, device=dev),
            ],
            dim=-1,
        ).view(1, oh * ow, 3)
        points = base.expand(v, -1, -1).bmm(theta.transpose(1, 2))  # (V, oh*ow, 2) pixels
        grid = points / torch.tensor([0.5 * w, 0.5 * h], device=dev)  # the unpadded image's
        grid = grid.view(v, 1, oh, ow, 2).expand(v, b, oh, ow, 2).reshape(v * b, oh, ow, 2)
        warped = F.grid_sample(
            x.reshape(v * b, c, h, w),
            grid,
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )
        return blur(warped.view(v, b, c, oh, ow), p.sigma.to(dev), margin)

    # ------------------------------------------------------------------------------ reference
    def reference_view(
        self, x: torch.Tensor, p: ViewParams, view: int, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """View ``view`` of ``p`` made as the reference makes one: torchvision's functions,
        one at a time, on the whole (edge-padded) image; ``noise`` (B, C, H, W): the noise to
        add (drawn here if not given)."""
        import torchvision.transforms.functional as TF

        with torch.autocast(x.device.type, enabled=False):
            img = x.float().clamp(0, 1)
            if img.shape[1] == 3:
                for k in p.order[view].tolist():
                    op, f = OPS[k], float(getattr(p, OPS[k])[view])
                    if op == "gamma":
                        img = TF.adjust_gamma(img.clamp(1e-8, 1.0), f)
                    else:
                        img = getattr(TF, f"adjust_{op}")(img, f)
            n = img.shape[-1]
            img = TF.pad(img, [n // 2], padding_mode="edge")
            img = TF.affine(
                img,
                angle=float(p.angle[view]),
                translate=[int(p.tx[view]), int(p.ty[view])],
                scale=float(p.scale[view]),
                shear=[0.0, 0.0],
                interpolation=TF.InterpolationMode.BILINEAR,
            )
            img = TF.gaussian_blur(img, [5, 5], [float(p.sigma[view])] * 2)
            img = TF.center_crop(img, [x.shape[-2], x.shape[-1]])
            if bool(p.flip[view]):
                img = TF.hflip(img)
            noise = torch.randn_like(img) * self.noise_std if noise is None else noise
            return (img + noise).clamp(0, 1)


def check_ranges(augment: Augment, p: ViewParams) -> None:
    """The batched geometry is exact for the reference's ranges only (module docstring)."""
    if (
        p.angle.abs().max() > 15
        or p.scale.min() < 0.9
        or max(p.tx.abs().max(), p.ty.abs().max()) > augment.max_shift
    ):
        raise ValueError("augmentation parameters outside CoTTA's ranges")


def _jitter(op: str, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """One ColorJitterPro operation with per-view factors ``f`` (V, 1, 1, 1, 1) on (V, B, 3, H,
    W) images, as torchvision's tensor functions compute it."""
    if op == "brightness":
        return (f * x).clamp(0, 1)
    if op == "contrast":
        mean = _gray(x).mean(dim=(-3, -2, -1), keepdim=True)
        return (f * x + (1 - f) * mean).clamp(0, 1)
    if op == "saturation":
        return (f * x + (1 - f) * _gray(x)).clamp(0, 1)
    if op == "gamma":  # ColorJitterPro clamps to 1e-8 first (no NaN gradient after contrast)
        return x.clamp(1e-8, 1.0).pow(f).clamp(0, 1)
    return _shift_hue(x, f)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    return (GRAY[0] * r + GRAY[1] * g + GRAY[2] * b).unsqueeze(-3)


_CHANNEL_OFFSETS = (5.0, 3.0, 1.0)  # r, g, b in the HSV -> RGB formula below


def _shift_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_hue`` (RGB -> HSV, h + f mod 1, HSV -> RGB; Pillow's algorithm)
    in fewer passes, equal to float rounding: the hue in sixths is one division of the
    channel difference that the largest channel selects; value and chroma are the largest
    channel and largest minus smallest (v s = chroma); and channel n of the result is
    v - chroma clamp(min(k, 4 - k), 0, 1) with k = (n + 6 h) mod 6, n = 5, 3, 1 for r, g, b,
    all three at once."""
    r, g, b = x.unbind(dim=-3)
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    # sixths of the hue before the mod: (g - b) / c where r is largest, 2 + (b - r) / c where g
    # is, else 4 + (r - g) / c (torchvision's hr + hg + hb; grey pixels: 0)
    num = torch.where(
        maxc == r,
        g - b,
        torch.where(maxc == g, (b - r).add_(chroma, alpha=2), (r - g).add_(chroma, alpha=4)),
    )
    sixths = num.div_(torch.where(chroma == 0, 1.0, chroma))
    sixths = sixths.add_(f.squeeze(-3), alpha=6.0).remainder_(6.0).unsqueeze(-3)
    n = torch.tensor(_CHANNEL_OFFSETS, device=x.device).view(3, 1, 1)
    k = sixths.add(n).remainder_(6.0)
    k = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc.unsqueeze(-3) - k.mul_(chroma.unsqueeze(-3))


def inverse_affine(p: ViewParams) -> torch.Tensor:
    """Per view, torchvision's inverse affine matrix (``_get_inverse_affine_matrix`` about the
    image centre, no shear): output pixel coordinates -> input ones, (V, 2, 3)."""
    rot = torch.deg2rad(p.angle.double())
    cos, sin = torch.cos(rot), torch.sin(rot)
    s = p.scale.double()
    a, b, c, d = cos / s, sin / s, -sin / s, cos / s  # [d, -b; -c, a] of the forward RSS / s
    tx, ty = p.tx.double(), p.ty.double()
    e = a * (-tx) + b * (-ty)
    f = c * (-tx) + d * (-ty)
    return torch.stack([torch.stack([a, b, e], -1), torch.stack([c, d, f], -1)], -2).float()


BAND_BLUR_MAX_SIDE = 64  # up to this side the blur is two banded matmuls (faster than a conv)


def blur(x: torch.Tensor, sigma: torch.Tensor, margin: int) -> torch.Tensor:
    """Per-view Gaussian blur (kernel 2 * margin + 1, torchvision's kernel) of (V, B, C, H', W')
    images, separable, keeping the centre (H' - 2 margin) square. Small images: each pass is one
    batched matmul with the view's banded kernel matrix (a 5-tap depthwise conv over 6 000
    planes is slow on a CPU: 45 vs 21 ms for 32 views of 64 images at 32 px); large ones: a
    grouped convolution with one filter per (view, channel), whose cost does not grow with
    the side as the band's does."""
    v, b, c, hh, ww = x.shape
    k = 2 * margin + 1
    taps = torch.arange(k, device=x.device, dtype=torch.float32) - margin
    kernel = torch.exp(-0.5 * (taps.view(1, -1) / sigma.view(-1, 1)) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)  # (V, k)
    oh, ow = hh - 2 * margin, ww - 2 * margin
    if max(hh, ww) <= BAND_BLUR_MAX_SIDE:
        rows = torch.matmul(x.reshape(v, b * c * hh, ww), _band(kernel, ww))
        out = torch.matmul(
            _band(kernel, hh).transpose(1, 2).unsqueeze(1), rows.view(v, b * c, hh, ow)
        )
        return out.view(v, b, c, oh, ow)
    weight = kernel.repeat_interleave(c, dim=0)  # (V * C, k): one filter per (view, channel)
    planes = x.permute(1, 0, 2, 3, 4).reshape(b, v * c, hh, ww)
    planes = F.conv2d(planes, weight.view(v * c, 1, 1, k), groups=v * c)
    planes = F.conv2d(planes, weight.view(v * c, 1, k, 1), groups=v * c)
    return planes.view(b, v, c, oh, ow).permute(1, 0, 2, 3, 4)


def _band(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """(V, n, n - k + 1) matrices whose column j holds view v's kernel in rows j .. j + k - 1:
    ``signal @ band`` is the valid 1-D correlation with the kernel."""
    v, k = kernel.shape
    out = n - k + 1
    band = torch.zeros(v, n, out, device=kernel.device, dtype=kernel.dtype)
    cols = torch.arange(out, device=kernel.device)
    for j in range(k):
        band[:, cols + j, cols] = kernel[:, j : j + 1]
    return band


# ---------------------------------------------------------------------------------- teachers


@contextmanager
def per_view_statistics(model: nn.Module, views: int) -> Iterator[None]:
    """While on: a BatchNorm that normalises with the batch (no running statistics, or in
    training mode) normalises each of ``views`` equal slices of its input with that slice's own
    statistics, as it would if the views went through it one at a time (a model with LayerNorm
    only needs nothing)."""
    patched = []
    for m in model.modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm) or views == 1:
            continue
        if m.training and m.running_mean is not None:
            raise ValueError(
                "views cannot go through a BatchNorm that updates running statistics together"
            )
        if m.running_mean is None:  # batch statistics, in either mode
            patched.append((m, m.__dict__.get("forward")))
            m.forward = _sliced_forward(m, views)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m, own in patched:
            if own is None:
                del m.forward
            else:
                m.forward = own


def _sliced_forward(m: nn.modules.batchnorm._BatchNorm, views: int):
    def forward(x: torch.Tensor) -> torch.Tensor:
        xs = x.reshape(views, x.shape[0] // views, *x.shape[1:])
        dims = (1,) + tuple(range(3, xs.dim()))
        var, mean = torch.var_mean(xs.float(), dim=dims, correction=0, keepdim=True)
        y = (xs.float() - mean) * torch.rsqrt(var + m.eps)
        shape = (1, 1, -1) + (1,) * (xs.dim() - 3)
        if m.weight is not None:
            y = y * m.weight.view(shape) + m.bias.view(shape)
        return y.to(x.dtype).reshape(x.shape)

    return forward


def teacher_views(
    teacher: nn.Module,
    x: torch.Tensor,
    augment: Augment,
    views: int,
    memory_mb: float,
) -> torch.Tensor:
    """The teacher's logits on ``views`` augmented views of ``x``: (views, B, classes). Views are
    made in chunks whose images take at most ``memory_mb`` / 8 (room for the augmentation's
    temporaries and the teacher's activations); on a GPU each chunk is one teacher forward, each
    view normalised with its own batch statistics as one forward per view would; on a CPU the
    teacher takes one view per forward, each made just before it is used, which is faster there
    (a small CNN at 32 px: 32 forwards of 64 images 102 ms, 4 of 512 229 ms, one of 2048 370 ms,
    ``benchmarks/tta_cost.py --profile``)."""
    params = augment.draw(views)
    per_view_mb = x[:1].numel() * 4 * len(x) / 2**20
    per_chunk = max(1, int(memory_mb / 8 / max(per_view_mb, 1e-9)))
    one_by_one = x.device.type == "cpu"
    if one_by_one:  # a view is made and used while it is in the cache (Augment._colour)
        per_chunk = 1
    out = []
    for start in range(0, views, per_chunk):
        chunk = params.select(slice(start, start + per_chunk))
        images = augment.views(x, chunk)
        groups = [images] if not one_by_one else list(images.split(len(x)))
        for part in groups:
            n = len(part) // len(x)
            with torch.no_grad(), per_view_statistics(teacher, n):
                logits = teacher(part)  # under the caller's autocast, if any
            out.append(logits.float().view(n, len(x), -1))
    return torch.cat(out)
