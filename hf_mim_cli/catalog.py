"""The registry's names, for flags and `--help` before torch loads.

`hf_mim.methods` is the registry: each method's classes, recipes, sources and peers. Its classes import torch and
transformers (seconds on a CPU), so the scripts' flags cannot read their choices from it while parsing. This index
holds only the names; `hf_mim.methods` compares itself with it on import and refuses to load on a difference,
naming the entry to change here, so the two never drift apart.
"""

from __future__ import annotations

# method -> its backbone families (`--backbone`), the default ViT first
METHOD_BACKBONES = {
    "beit": ("vit",),
    "cae": ("vit",),
    "mae": ("vit",),
    "maskfeat": ("vit", "video-vit"),
    "simmim": ("vit", "swin"),
}

# method -> the checkpoint layouts `scripts/convert_checkpoint.py --from` converts into it
CONVERSION_SOURCES = {
    "beit": ("beit-unilm", "hf-beit"),
    "cae": ("cae-official", "cae-mmpretrain"),
    "mae": ("mae-official", "hf-vit-mae"),
    "maskfeat": ("maskfeat-slowfast", "maskfeat-mmpretrain"),
    "simmim": ("simmim-official", "hf-swin-mim", "hf-vit-mim"),
}

MODALITIES = ("image", "video")  # what a backbone takes: (B, C, H, W) images or (B, T, C, H, W) clips

NORMALIZATIONS = ("imagenet-default", "imagenet-standard")  # image mean/std of a foreign checkpoint


def method_names() -> list[str]:
    return sorted(METHOD_BACKBONES)


def backbone_families() -> list[str]:
    """Every `--backbone` some method has."""
    return sorted({family for families in METHOD_BACKBONES.values() for family in families})


def conversion_source_ids() -> list[str]:
    return sorted(source for sources in CONVERSION_SOURCES.values() for source in sources)


def differences(backbones: dict[str, tuple[str, ...]], sources: dict[str, tuple[str, ...]],
                normalizations: tuple[str, ...]) -> list[str]:
    """What the registry (`backbones`, `sources`: method -> names; `normalizations`) has that this index does not
    say, or says otherwise: one line per entry to change here."""
    lines = []
    for what, registry, index in (("METHOD_BACKBONES", backbones, METHOD_BACKBONES),
                                  ("CONVERSION_SOURCES", sources, CONVERSION_SOURCES)):
        for method in sorted(set(registry) | set(index)):
            want = tuple(registry.get(method, ()))
            if sorted(want) != sorted(index.get(method, ())):
                lines.append(f'{what}["{method}"] = {want}' if method in registry else f'{what}: drop "{method}"')
    if sorted(normalizations) != sorted(NORMALIZATIONS):
        lines.append(f"NORMALIZATIONS = {tuple(sorted(normalizations))}")
    return lines
