"""The zoo's catalogue and exporter: torch module -> ONNX at batch 1, random weights, cached.

Weights come from fixed seeds, so an export is reproducible, and `head0`/`head1` carry the very
same backbone weights: the pair that `dedup` and `cse` are meant to fold into one backbone.
`resnet_head0`/`resnet_head1` are the same pair on a ResNet-18 trunk, where the shared weights
(43 MiB) outweigh the runtime's own memory instead of the other way round.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fusedinf_cc.common.files import staging_dir
from model_zoo import architectures as arch

ZOO_VERSION = 2
DEFAULT_OPSET = 17
BACKBONE_SEED = 1234
IMAGE = (1, 3, 224, 224)


@dataclass(frozen=True)
class ZooModel:
    name: str
    build: Callable[[], nn.Module]
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    integer_input: bool = False
    shares_trunk: bool = False


def _with_head(
    head: Callable[[int], nn.Module],
    seed: int,
    trunk: Callable[[], nn.Module] = arch.backbone,
    channels: int = 128,
) -> Callable[[], nn.Module]:
    """A model whose trunk weights come from one seed for every head built on that trunk."""

    def build() -> nn.Module:
        torch.manual_seed(BACKBONE_SEED)
        shared = trunk()
        _randomize_norms(shared)
        torch.manual_seed(seed)
        return arch.WithHead(shared, head(channels))

    return build


def _with_resnet_head(head: Callable[[int], nn.Module], seed: int) -> Callable[[], nn.Module]:
    return _with_head(head, seed, arch.resnet18_backbone, 512)


CATALOGUE: dict[str, ZooModel] = {
    model.name: model
    for model in (
        ZooModel("resnet18", arch.resnet18, "image", IMAGE, "logits"),
        ZooModel("vgg16", arch.vgg16, "image", IMAGE, "logits"),
        ZooModel("mobilenet_v3_small", arch.mobilenet_v3_small, "image", IMAGE, "logits"),
        ZooModel("squeezenet1_1", arch.squeezenet1_1, "image", IMAGE, "logits"),
        ZooModel("transformer_encoder", arch.TransformerEncoder, "tokens", (1, 64), "logits", True),
        ZooModel("vit", arch.PatchTransformer, "image", IMAGE, "logits"),
        ZooModel("convnext", arch.ConvNeXt, "image", IMAGE, "logits"),
        ZooModel(
            "head0",
            _with_head(arch.classification_head, 1),
            "image",
            IMAGE,
            "logits",
            shares_trunk=True,
        ),
        ZooModel(
            "head1",
            _with_head(arch.segmentation_head, 2),
            "image",
            IMAGE,
            "mask",
            shares_trunk=True,
        ),
        ZooModel(
            "resnet_head0",
            _with_resnet_head(arch.classification_head, 1),
            "image",
            IMAGE,
            "logits",
            shares_trunk=True,
        ),
        ZooModel(
            "resnet_head1",
            _with_resnet_head(arch.segmentation_head, 2),
            "image",
            IMAGE,
            "mask",
            shares_trunk=True,
        ),
        ZooModel("text_detector", arch.TextDetector, "page", (1, 3, 480, 480), "probability"),
        ZooModel("text_angle_cls", arch.text_angle_classifier, "crop", (1, 3, 48, 192), "angle"),
        ZooModel("text_recognizer", arch.TextRecognizer, "line", (1, 3, 48, 320), "characters"),
    )
}
ALIASES = {
    "heads": ("head0", "head1"),
    "resnet_heads": ("resnet_head0", "resnet_head1"),
    "ocr": ("text_detector", "text_angle_cls", "text_recognizer"),
}


def expand_names(names: list[str]) -> list[str]:
    """Catalogue names, with aliases such as `heads` (head0 and head1) expanded."""
    expanded: list[str] = []
    for name in names:
        for member in ALIASES.get(name, (name,)):
            if member not in CATALOGUE:
                known = ", ".join([*CATALOGUE, *ALIASES])
                raise SystemExit(f"error: unknown zoo model {member!r} (known: {known})")
            if member not in expanded:
                expanded.append(member)
    return expanded


def export(
    name: str,
    out_dir: Path,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    variant: int = 0,
) -> Path:
    """Export one zoo model to `out_dir/NAME.onnx`, unless an identical export is already there.

    `variant` K > 0 gives the same architecture with other random weights, as `NAME-vK.onnx`:
    distinct models of one size, which dedup cannot fold together.
    """
    spec = CATALOGUE[name]
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-v{variant}" if variant else name
    target = out_dir / f"{stem}.onnx"
    stamp_path = out_dir / f".{stem}.onnx.zoo.json"
    stamp = {
        "zoo": ZOO_VERSION,
        "name": name,
        "opset": opset,
        "dynamic_batch": dynamic_batch,
        "variant": variant,
        "torch": torch.__version__,
    }
    if target.is_file() and stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        return target
    model = _seeded(spec, variant)
    example = _example_input(spec)
    dynamic_axes = (
        {spec.input_name: {0: "batch"}, spec.output_name: {0: "batch"}} if dynamic_batch else None
    )
    with staging_dir(target) as staging, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        staged = staging / target.name
        torch.onnx.export(
            model,
            (example,),
            staged,
            dynamo=False,
            opset_version=opset,
            input_names=[spec.input_name],
            output_names=[spec.output_name],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
        os.replace(staged, target)
    stamp_path.write_text(json.dumps(stamp))
    return target


def _seeded(spec: ZooModel, variant: int) -> nn.Module:
    seed = sum(map(ord, spec.name)) + 1000 * variant
    torch.manual_seed(seed)
    model = spec.build()
    if variant and spec.shares_trunk:
        # Its build seeds the trunk and the head itself, so that head0 and head1 share a trunk;
        # a variant is another model, so every weight is drawn again from the variant's seed.
        torch.manual_seed(seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    if variant or not spec.shares_trunk:
        _randomize_norms(model)
    return model.eval()


def _randomize_norms(model: nn.Module) -> None:
    """Fresh BatchNorm layers are identities; give them statistics so folding is exercised."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)


def _example_input(spec: ZooModel) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if spec.integer_input:
        return torch.randint(0, 1000, spec.input_shape, generator=generator)
    return torch.randn(spec.input_shape, generator=generator)
