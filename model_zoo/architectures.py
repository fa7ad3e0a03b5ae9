"""Compact torch definitions of the zoo's architectures (random weights; real shapes and ops).

Written here rather than imported from torchvision so that the zoo needs nothing but torch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True), _conv_bn(cout, cout, 3)
        )
        self.shortcut = (
            _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _resnet18_layers() -> list[nn.Module]:
    layers: list[nn.Module] = [
        _conv_bn(3, 64, 7, 2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    return layers


def resnet18(num_classes: int = 1000) -> nn.Module:
    return nn.Sequential(
        *_resnet18_layers(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)
    )


def vgg16(num_classes: int = 1000) -> nn.Module:
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers: list[nn.Module] = []
    cin = 3
    for item in plan:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(item), 3, padding=1), nn.ReLU(inplace=True)]
            cin = int(item)
    layers += [
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(),
        nn.Linear(512 * 7 * 7, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    ]
    return nn.Sequential(*layers)


def _divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        squeezed = _divisible(channels // 4)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = nn.functional.adaptive_avg_pool2d(x, 1)
        scale = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(scale))))
        return x * scale


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, kernel: int, expand: int, cout: int, se: bool, hs: bool, s: int):
        super().__init__()
        act: Callable[[], nn.Module] = nn.Hardswish if hs else nn.ReLU
        layers: list[nn.Module] = []
        if expand != cin:
            layers += [_conv_bn(cin, expand, 1), act()]
        layers += [_conv_bn(expand, expand, kernel, s, groups=expand), act()]
        if se:
            layers.append(SqueezeExcite(expand))
        layers.append(_conv_bn(expand, cout, 1))
        self.body = nn.Sequential(*layers)
        self.residual = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def mobilenet_v3_small(num_classes: int = 1000) -> nn.Module:
    # kernel, expand, out, squeeze-excite, hardswish, stride (MobileNetV3-Small, Howard et al.)
    plan = [
        (3, 16, 16, True, False, 2),
        (3, 72, 24, False, False, 2),
        (3, 88, 24, False, False, 1),
        (5, 96, 40, True, True, 2),
        (5, 240, 40, True, True, 1),
        (5, 240, 40, True, True, 1),
        (5, 120, 48, True, True, 1),
        (5, 144, 48, True, True, 1),
        (5, 288, 96, True, True, 2),
        (5, 576, 96, True, True, 1),
        (5, 576, 96, True, True, 1),
    ]
    layers: list[nn.Module] = [_conv_bn(3, 16, 3, 2), nn.Hardswish()]
    cin = 16
    for kernel, expand, cout, se, hs, stride in plan:
        layers.append(InvertedResidual(cin, kernel, expand, cout, se, hs, stride))
        cin = cout
    layers += [
        _conv_bn(cin, 576, 1),
        nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(576, 1024),
        nn.Hardswish(),
        nn.Linear(1024, num_classes),
    ]
    return nn.Sequential(*layers)


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1(x)), torch.relu(self.expand3(x))], 1)


def squeezenet1_1(num_classes: int = 1000) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, 2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(64, 16, 64),
        Fire(128, 16, 64),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(128, 32, 128),
        Fire(256, 32, 128),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(256, 48, 192),
        Fire(384, 48, 192),
        Fire(384, 64, 256),
        Fire(512, 64, 256),
        nn.Conv2d(512, num_classes, 1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


class EncoderLayer(nn.Module):
    """Post-norm self-attention + feed-forward, spelled out so every exporter sees plain ops."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm1 = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.norm2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        scores = torch.softmax(q @ k.transpose(-2, -1) / (width // self.heads) ** 0.5, dim=-1)
        attended = (scores @ v).transpose(1, 2).reshape(batch, tokens, width)
        x = self.norm1(x + self.out(attended))
        return self.norm2(x + self.ff(x))


class TransformerEncoder(nn.Module):
    """A small BERT-like encoder: token ids -> pooled features -> class logits."""

    def __init__(self, vocab: int = 1000, width: int = 128, layers: int = 2, classes: int = 10):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.layers = nn.Sequential(*(EncoderLayer(width, 4) for _ in range(layers)))
        self.classify = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classify(self.layers(self.embed(tokens)).mean(dim=1))


class PatchTransformer(nn.Module):
    """A small ViT: 16x16 patches of the image -> encoder layers -> pooled -> class logits."""

    def __init__(self, width: int = 96, layers: int = 2, classes: int = 10, tokens: int = 196):
        super().__init__()
        self.patches = nn.Conv2d(3, width, 16, 16)
        self.position = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        self.layers = nn.Sequential(*(EncoderLayer(width, 4) for _ in range(layers)))
        self.norm = nn.LayerNorm(width)
        self.classify = nn.Linear(width, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patches(image).flatten(2).transpose(1, 2) + self.position
        return self.classify(self.norm(self.layers(x)).mean(dim=1))


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, then a channels-last LayerNorm and MLP, scaled, added back."""

    def __init__(self, width: int):
        super().__init__()
        self.depthwise = nn.Conv2d(width, width, 7, padding=3, groups=width)
        self.norm = nn.LayerNorm(width)
        self.expand = nn.Linear(width, 4 * width)
        self.act = nn.GELU()
        self.project = nn.Linear(4 * width, width)
        self.gamma = nn.Parameter(torch.full((width,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.depthwise(x).permute(0, 2, 3, 1)
        y = self.gamma * self.project(self.act(self.expand(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """A small ConvNeXt: a 4x4 patch stem, two stages of blocks, pooled -> class logits."""

    def __init__(self, widths: tuple[int, int] = (48, 96), classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, widths[0], 4, 4)
        self.stage1 = nn.Sequential(ConvNeXtBlock(widths[0]), ConvNeXtBlock(widths[0]))
        self.down = nn.Conv2d(widths[0], widths[1], 2, 2)
        self.stage2 = nn.Sequential(ConvNeXtBlock(widths[1]), ConvNeXtBlock(widths[1]))
        self.norm = nn.LayerNorm(widths[1])
        self.classify = nn.Linear(widths[1], classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(image))))
        return self.classify(self.norm(x.mean(dim=(2, 3))))


def backbone() -> nn.Module:
    """The shared trunk of `head0` and `head1`: a small ResNet stem at 1/8 resolution (128 ch)."""
    return nn.Sequential(
        _conv_bn(3, 32, 3, 2),
        nn.ReLU(inplace=True),
        BasicBlock(32, 64, 2),
        BasicBlock(64, 64, 1),
        BasicBlock(64, 128, 2),
        BasicBlock(128, 128, 1),
    )


def resnet18_backbone() -> nn.Module:
    """The shared trunk of `resnet_head0` and `resnet_head1`: ResNet-18 up to 1/32 (512 ch)."""
    return nn.Sequential(*_resnet18_layers())


class WithHead(nn.Module):
    def __init__(self, trunk: nn.Module, head: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def classification_head(channels: int = 128) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


def segmentation_head(channels: int = 128) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 64, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(64, 21, 1)
    )


# An OCR-like trio, shaped like the real ones an edge OCR box fuses: a large text detector on a
# page, a tiny angle classifier and a CRNN recognizer on text crops, each on its own input.
class TextDetector(nn.Module):
    """DB-like: a ResNet trunk at 1/16, upsampled back to 1/4 for a text probability map."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, 32, 3, 2), nn.ReLU(inplace=True))
        self.down = nn.Sequential(
            BasicBlock(32, 64, 2), BasicBlock(64, 128, 2), BasicBlock(128, 256, 2)
        )
        self.up = nn.Sequential(
            nn.ConvTranspose2d(256, 64, 2, 2),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(64, 32, 2, 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.up(self.down(self.stem(x))))


def text_angle_classifier() -> nn.Module:
    """A tiny CNN: is a text crop upside down?"""
    return nn.Sequential(
        _conv_bn(3, 16, 3, 2),
        nn.ReLU(inplace=True),
        _conv_bn(16, 32, 3, 2),
        nn.ReLU(inplace=True),
        _conv_bn(32, 64, 3, 2),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 2),
    )


class TextRecognizer(nn.Module):
    """CRNN: convolutions collapse a text line's height, a bidirectional LSTM reads its width,
    and a linear layer gives per-column character logits."""

    def __init__(self, classes: int = 97, hidden: int = 96):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(3, 32, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            _conv_bn(32, 64, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            _conv_bn(64, 128, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d((2, 1), (2, 1)),
            _conv_bn(128, 128, 3),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((1, None)),
        )
        self.rnn = nn.LSTM(128, hidden, bidirectional=True, batch_first=True)
        self.classify = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = self.features(x).squeeze(2).transpose(1, 2)  # batch, width, channels
        return self.classify(self.rnn(columns)[0])
