"""PyTorch reference networks for the parity tests, written with torch.nn alone (no torchvision).

Parameter names reproduce the layouts `pkd_jax.weights` reads:
  - `VGG19BNTorch`: torchvision `vgg19_bn` feature indices (`features.<i>`) plus the released code's
    `fc` (flatten -> dropout -> linear -> dropout).
  - `ResNet18Torch`: torchvision `resnet18` names (`conv1`, `layer2.0.downsample.1`, `fc`).
  - `StudentTorch` / `TeacherTorch`: the released code's whole-model state dicts (`cnn.cnn_backbone.*`,
    `rnn.rnn.*`, `rnn.out_layer<N>.*`, and for the teacher `spec_cnn.cnn_spec_backbone.<child>.*`, a
    ResNet-18 without its fc wrapped as `nn.Sequential` of its children).
  - `R3D18Torch`: torchvision `r3d_18` names (`stem.0`, `layer2.0.conv1.0`, `layer2.0.downsample.1`, `fc`).
  - `JointCrossAttentionTorch`: the joint cross-attention equations of docs/method.md, written in
    the paper's orientation (features x time), with its own parameter names (see the parity test).
Widths scale like the Flax models (`max(1, round(c * width))`), so small versions match small Flax ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

VGG19_PLAN: tuple[int | Literal["M"], ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
    512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip


def scaled(channels: int, width: float) -> int:
    """Same rounding as `pkd_jax.models.common.scaled`."""
    return max(1, round(channels * width))


def act_fn(activation: str):
    """ "none" -> identity (the released code), "relu" -> ReLU (the paper's text)."""
    return {"none": lambda x: x, "relu": torch.relu}[activation]


class VGG19BNTorch(nn.Module):
    """VGG19-BN trunk: [N, 3, H, W] -> [N, embed_dim]; `spatial` is the final map's side (3 for 112x112)."""

    def __init__(self, width: float = 1.0, embed_dim: int = 512, spatial: int = 3, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG19_PLAN:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            out = scaled(item, width)
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.drop_in = nn.Dropout(dropout)
        self.fc = nn.Linear(channels * spatial * spatial, embed_dim)
        self.drop_out = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)  # NCHW flatten: channel-major
        return self.drop_out(self.fc(self.drop_in(x)))


class BasicBlockTorch(nn.Module):
    """torchvision's BasicBlock: two 3x3 convs, residual, 1x1 strided projection when shapes change."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(skip + y)


class ResNet18Torch(nn.Module):
    """ResNet-18 with torchvision names; `features` gives the pooled [N, 512 * width] trunk output."""

    # Registered with setattr in __init__; declared so the stages have a type.
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, in_channels: int = 3, width: float = 1.0, num_classes: int = 10):
        super().__init__()
        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = stem
        for stage, channels in enumerate((64, 128, 256, 512), start=1):
            cout = scaled(channels, width)
            stride = 1 if stage == 1 else 2
            setattr(
                self,
                f"layer{stage}",
                nn.Sequential(BasicBlockTorch(cin, cout, stride), BasicBlockTorch(cout, cout, 1)),
            )
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)  # ignored by the import, as in the paper

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class VisualBackboneTorch(nn.Module):
    """The released code's wrapper of the VGG (`cnn.cnn_backbone`)."""

    def __init__(self, vgg: VGG19BNTorch):
        super().__init__()
        self.cnn_backbone = vgg

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] -> [B, T, D]."""
        b, t = frames.shape[:2]
        return self.cnn_backbone(frames.flatten(0, 1)).unflatten(0, (b, t))


class AudioBackboneTorch(nn.Module):
    """The released code's audio trunk: a ResNet-18's children but the fc, as one `nn.Sequential`."""

    def __init__(self, resnet: ResNet18Torch):
        super().__init__()
        self.cnn_spec_backbone = nn.Sequential(*list(resnet.children())[:-1])

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, T, C, F, W] -> [B, T, D]."""
        b, t = audio.shape[:2]
        return torch.flatten(self.cnn_spec_backbone(audio.flatten(0, 1)), 1).unflatten(0, (b, t))


def make_rnn(kind: str, input_size: int, hidden: int) -> nn.Module:
    """One-layer, batch-first `nn.GRU` or `nn.LSTM` (the names do not depend on `batch_first`)."""
    return {"gru": nn.GRU, "lstm": nn.LSTM}[kind](input_size, hidden, batch_first=True)


class StudentHeadTorch(nn.Module):
    """`rnn`: recurrent layer, then `out_layer1..N` linears; the embedding is layer `embed_index + 1`."""

    def __init__(self, rnn: nn.Module, sizes: Sequence[int], embed_index: int, activation: str):
        super().__init__()
        self.rnn = rnn
        for i, (cin, cout) in enumerate(itertools.pairwise(sizes), start=1):
            setattr(self, f"out_layer{i}", nn.Linear(cin, cout))
        self.num_layers = len(sizes) - 1
        self.embed_index = embed_index
        self.act = act_fn(activation)

    def forward(self, x: torch.Tensor, carry=None) -> tuple[torch.Tensor, torch.Tensor, object]:
        x, carry = self.rnn(x, carry)
        embedding = None
        for i in range(1, self.num_layers):
            x = self.act(getattr(self, f"out_layer{i}")(x))
            if i - 1 == self.embed_index:
                embedding = x
        if embedding is None:
            raise ValueError(f"embed_index {self.embed_index} is outside {self.num_layers - 1} layers")
        return getattr(self, f"out_layer{self.num_layers}")(x), embedding, carry


class StudentTorch(nn.Module):
    """Student: per-frame VGG19-BN -> recurrent layer -> linear stack; returns (pred, embedding)."""

    def __init__(
        self,
        *,
        vgg_width: float = 1.0,
        spatial: int = 3,
        visual_features: int = 512,
        rnn: str = "gru",
        rnn_hidden: int = 1024,
        head_features: Sequence[int] = (512, 256, 128, 64),
        embed_index: int = 2,
        num_targets: int = 2,
        activation: str = "none",
    ):
        super().__init__()
        self.cnn = VisualBackboneTorch(VGG19BNTorch(vgg_width, visual_features, spatial))
        sizes = (rnn_hidden, *head_features, num_targets)
        self.rnn = StudentHeadTorch(
            make_rnn(rnn, visual_features, rnn_hidden), sizes, embed_index, activation
        )

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred, emb, _ = self.rnn(self.cnn(frames))
        return pred, emb


class TeacherHeadTorch(nn.Module):
    """`rnn`, `out_layer1` (visual projection), concat audio, `out_layer2..N-1` (fused), `out_layerN`."""

    def __init__(self, rnn: nn.Module, sizes: Sequence[int], audio_features: int, activation: str):
        super().__init__()
        self.rnn = rnn
        hidden, visual, *fused, targets = sizes
        self.out_layer1 = nn.Linear(hidden, visual)
        widths = [visual + audio_features, *fused, targets]
        for i, (cin, cout) in enumerate(itertools.pairwise(widths), start=2):
            setattr(self, f"out_layer{i}", nn.Linear(cin, cout))
        self.num_layers = len(widths)
        self.act = act_fn(activation)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = self.rnn(visual)
        x = torch.cat([self.act(self.out_layer1(x)), audio], dim=-1)
        for i in range(2, self.num_layers):
            x = self.act(getattr(self, f"out_layer{i}")(x))
        return getattr(self, f"out_layer{self.num_layers}")(x), x


class TeacherTorch(nn.Module):
    """Teacher: VGG19-BN -> recurrent layer -> linear, concat per-frame ResNet-18 audio -> fused MLP."""

    def __init__(
        self,
        *,
        vgg_width: float = 1.0,
        spatial: int = 3,
        visual_features: int = 512,
        rnn: str = "gru",
        rnn_hidden: int = 1024,
        audio_width: float = 1.0,
        audio_channels: int = 1,
        fusion_visual_features: int = 1024,
        fused_features: Sequence[int] = (256, 128),
        num_targets: int = 2,
        activation: str = "none",
    ):
        super().__init__()
        self.cnn = VisualBackboneTorch(VGG19BNTorch(vgg_width, visual_features, spatial))
        sizes = (rnn_hidden, fusion_visual_features, *fused_features, num_targets)
        audio_features = scaled(512, audio_width)
        rnn_layer = make_rnn(rnn, visual_features, rnn_hidden)
        self.rnn = TeacherHeadTorch(rnn_layer, sizes, audio_features, activation)
        self.spec_cnn = AudioBackboneTorch(ResNet18Torch(audio_channels, audio_width))

    def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rnn(self.cnn(frames), self.spec_cnn(audio))


@torch.no_grad()
def randomize_batch_norm_(model: nn.Module, *calibration_inputs: torch.Tensor, seed: int = 0) -> nn.Module:
    """Random BN affine parameters and running statistics close to real ones.

    Purely random statistics let activations shrink layer after layer until BN biases dominate, which
    would hide a wrong early-layer import. So the statistics are first measured on `calibration_inputs`
    (a train-mode pass with momentum 1), then perturbed so they differ from those batch statistics.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d))]
    for bn in bns:
        bn.weight.copy_(torch.empty_like(bn.weight).uniform_(0.5, 1.5, generator=gen))
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=gen) * 0.2)
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    model(*calibration_inputs)
    model.eval()
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
        # BatchNorm's default track_running_stats=True, so the buffers exist.
        assert bn.running_mean is not None and bn.running_var is not None
        std = bn.running_var.sqrt()
        bn.running_mean.add_(torch.randn(bn.running_mean.shape, generator=gen) * 0.2 * std)
        bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.7, 1.3, generator=gen))
    return model


class BasicBlock3DTorch(nn.Module):
    """torchvision's video BasicBlock with `Conv3DSimple`: conv1 = (conv, BN, ReLU), conv2 = (conv, BN)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)
        )
        self.conv2 = nn.Sequential(nn.Conv3d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm3d(cout))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(skip + y)


class R3D18Torch(nn.Module):
    """R3D-18 with torchvision's names: [N, 3, T, H, W] -> `features` [N, 512 * width], `forward` the fc."""

    # Registered with setattr in __init__; declared so the stages have a type.
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, width: float = 1.0, num_classes: int = 400):
        super().__init__()
        stem = scaled(64, width)
        self.stem = nn.Sequential(
            nn.Conv3d(3, stem, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
            nn.BatchNorm3d(stem),
            nn.ReLU(inplace=True),
        )
        cin = stem
        for stage, channels in enumerate((64, 128, 256, 512), start=1):
            cout = scaled(channels, width)
            stride = 1 if stage == 1 else 2
            blocks = nn.Sequential(BasicBlock3DTorch(cin, cout, stride), BasicBlock3DTorch(cout, cout, 1))
            setattr(self, f"layer{stage}", blocks)
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(cin, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class JointCrossAttentionTorch(nn.Module):
    """Joint cross-attention in the paper's orientation: X is d' x L (features x time) per example.

    J = [Xa; Xv] (2d' x L); Ca = tanh(Xa W_ja J^T / sqrt(2d')) (d' x 2d'); Ha = ReLU(Ca W_ca + Xa W_a)
    (d' x k); Xatt_a = Ha W_ha + Xa (d' x L); likewise for the visual side; then the regressor on
    [Xatt_a; Xatt_v] per time step: 2d' -> hidden -> ReLU -> dropout -> targets.
    """

    def __init__(
        self, audio_dim: int, visual_dim: int, length: int, dim: int = 128, k: int = 32,
        hidden: int = 128, num_targets: int = 2, dropout: float = 0.6,
    ):  # fmt: skip
        super().__init__()
        self.proj_a = nn.Linear(audio_dim, dim)
        self.proj_v = nn.Linear(visual_dim, dim)
        self.corr_a = nn.Parameter(torch.randn(length, length) / length**0.5)  # W_ja
        self.corr_v = nn.Parameter(torch.randn(length, length) / length**0.5)  # W_jv
        self.time_a = nn.Parameter(torch.randn(length, k) / length**0.5)  # W_a
        self.time_v = nn.Parameter(torch.randn(length, k) / length**0.5)  # W_v
        self.back_a = nn.Parameter(torch.randn(k, length) / k**0.5)  # W_ha
        self.back_v = nn.Parameter(torch.randn(k, length) / k**0.5)  # W_hv
        self.joint_a = nn.Linear(2 * dim, k, bias=False)  # W_ca
        self.joint_v = nn.Linear(2 * dim, k, bias=False)  # W_cv
        self.hidden = nn.Linear(2 * dim, hidden)
        self.out = nn.Linear(hidden, num_targets)
        self.dropout = nn.Dropout(dropout)
        self.scale = (2 * dim) ** -0.5

    def _attend(self, x, joint, w_j, w_x, w_h, joint_layer):
        corr = torch.tanh(torch.matmul(torch.matmul(x, w_j), joint.transpose(1, 2)) * self.scale)
        h = torch.relu(joint_layer(corr) + torch.matmul(x, w_x))  # [B, d', k]
        return torch.matmul(h, w_h) + x  # [B, d', L]

    def forward(self, audio: torch.Tensor, visual: torch.Tensor):
        """audio [B, L, Da], visual [B, L, Dv] -> (pred [B, L, K], hidden [B, L, H], attended [B, L, 2d'])."""
        xa = self.proj_a(audio).transpose(1, 2)  # [B, d', L]
        xv = self.proj_v(visual).transpose(1, 2)
        joint = torch.cat([xa, xv], dim=1)  # [B, 2d', L]
        att_a = self._attend(xa, joint, self.corr_a, self.time_a, self.back_a, self.joint_a)
        att_v = self._attend(xv, joint, self.corr_v, self.time_v, self.back_v, self.joint_v)
        attended = torch.cat([att_a, att_v], dim=1).transpose(1, 2)  # [B, L, 2d']
        hidden = torch.relu(self.hidden(attended))
        return self.out(self.dropout(hidden)), hidden, attended
