"""Read OpenAI's published DALL-E `encoder.pkl` without executing pickled code, and turn it into a `MimDvaeModel`.

The file is a whole pickled `dall_e.encoder.Encoder` module (torch.save of the object, not of a state dict), so a
plain `torch.load` would import `dall_e` and run whatever the pickle names. We load it with torch's weights-only
unpickler instead: it builds tensors, storages, dtypes, devices, OrderedDicts and sets only, and refuses every
other global. On top of that list we allow exactly seven names, each mapped to an inert local stand-in class
that only stores the attributes the pickle gives it:

    dall_e.encoder.Encoder, dall_e.encoder.EncoderBlock, dall_e.utils.Conv2d,
    torch.nn.modules.container.Sequential, torch.nn.modules.activation.ReLU,
    torch.nn.modules.pooling.MaxPool2d, torch.nn.modules.linear.Identity

Then the state dict is collected by walking the stand-ins' `_modules` / `_parameters`, giving DALL-E's own names
(`blocks.input.w`, `blocks.group_1.block_1.res_path.conv_1.w`, ...), which are our encoder's names.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from hf_mim_cli.arguments import MissingInputError, UsageError
from .modeling.configuration_dvae import MimDvaeConfig
from .modeling.modeling_dvae import MimDvaeModel


class RefusedPickleError(UsageError, pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; nothing from it ran."""


class _PickledModuleStandIn:
    """Inert holder for a pickled module's attribute dict. No __init__ logic, no forward, no methods that the
    unpickler could call with pickled arguments besides storing state."""

    pickled_as = ""

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state), as pickle's BUILD allows
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.pickled_as}: expected an attribute dict, got {type(state).__name__}")
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<stand-in for {self.pickled_as}>"


def _stand_in(qualified_name: str) -> type:
    return type(f"StandIn[{qualified_name}]", (_PickledModuleStandIn,), {"pickled_as": qualified_name})


DALLE_CLASS_NAMES = ("dall_e.encoder.Encoder", "dall_e.encoder.EncoderBlock", "dall_e.utils.Conv2d")
TORCH_MODULE_NAMES = (
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.linear.Identity",
)
STAND_INS: dict[str, type] = {name: _stand_in(name) for name in DALLE_CLASS_NAMES + TORCH_MODULE_NAMES}


def _unpickle(path: str):
    """torch.load, weights-only, with the seven stand-ins allowed; a refused global raises UnpicklingError."""
    stand_in_globals = [(cls, name) for name, cls in STAND_INS.items()]
    try:
        with torch.serialization.safe_globals(stand_in_globals):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        refused = re.search(r"GLOBAL (\S+)", message)
        what = f"refused global {refused.group(1)!r}" if refused else message.splitlines()[0]
        raise RefusedPickleError(
            f"{path}: {what} while reading a DALL-E encoder pickle. Only tensor-rebuilding torch names and the "
            f"classes {', '.join(STAND_INS)} are allowed; this file is not OpenAI's encoder.pkl or was altered. "
            "Nothing from it was executed."
        ) from None
    except (RuntimeError, EOFError, TypeError, OSError) as error:  # truncated (OSError), not torch's, misuse
        raise UsageError(f"{path}: cannot read as a torch file, it may be truncated or not the encoder.pkl "
                         f"({type(error).__name__}: {str(error)[:200]}); download it again") from None


def _collect_state_dict(module: _PickledModuleStandIn, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Walk `_parameters`, persistent `_buffers` and `_modules` as nn.Module.state_dict would, by attribute dicts."""
    state = vars(module)
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    buffers = [(k, v) for k, v in state.get("_buffers", {}).items() if k not in non_persistent]
    tensors = [*state.get("_parameters", {}).items(), *buffers]
    for name, tensor in tensors:
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{prefix}{name} is a {type(tensor).__name__}, not a tensor")
        out[prefix + name] = tensor.detach().clone()
    for name, child in state.get("_modules", {}).items():
        if child is None:
            continue
        if not isinstance(child, _PickledModuleStandIn):
            raise ValueError(f"{prefix}{name} is a {type(child).__name__}, not a module of a DALL-E encoder")
        _collect_state_dict(child, f"{prefix}{name}.", out)


def load_dalle_encoder_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """OpenAI's `encoder.pkl` -> {"blocks.input.w": tensor, ...}, DALL-E's (and our encoder's) key names.

    Also accepts a torch file holding such a state dict directly (e.g. an already converted copy).
    Raises pickle.UnpicklingError naming any global outside the allow-list, before anything runs.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MissingInputError(f"DALL-E encoder file {path!r} does not exist")
    root = _unpickle(path)
    if isinstance(root, Mapping):
        if root and all(isinstance(k, str) and k.startswith("blocks.") for k in root) and all(
            isinstance(v, torch.Tensor) for v in root.values()
        ):
            return {k: v.detach().clone() for k, v in root.items()}
        raise UsageError(f"{path}: a dict, but not a DALL-E encoder state dict (keys must all start with 'blocks.')")
    if not isinstance(root, STAND_INS["dall_e.encoder.Encoder"]):
        raise UsageError(f"{path}: holds {root!r}, not a dall_e.encoder.Encoder")
    state_dict: dict[str, torch.Tensor] = {}
    _collect_state_dict(root, "", state_dict)
    return state_dict


def dvae_config_from_dalle_state_dict(state_dict: Mapping[str, torch.Tensor], **overrides) -> MimDvaeConfig:
    """Read the architecture off the shapes (never off a file name): widths, vocabulary, group and block counts.
    The decoder cannot be inferred from an encoder; it gets the defaults and `decoder_trained=False`."""
    try:
        input_w, output_w = state_dict["blocks.input.w"], state_dict["blocks.output.conv.w"]
    except KeyError as missing:
        raise ValueError(f"not a DALL-E encoder state dict: no {missing.args[0]!r}") from None
    groups = {int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.group_(\d+)\.", k))}
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.group_1\.block_(\d+)\.", k))}
    fields = dict(
        vocab_size=output_w.shape[0], hidden_size=input_w.shape[0], num_channels=input_w.shape[1],
        num_groups=max(groups, default=0), num_blocks_per_group=max(blocks, default=0), decoder_trained=False,
    )
    fields.update(overrides)
    return MimDvaeConfig(**fields)


@dataclass
class DalleLoadReport:
    """What the strict load found: everything empty but `loaded` means every encoder tensor matched."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        return (f"loaded {len(self.loaded)} encoder tensors; missing ({len(self.missing)}): {self.missing[:10]}; "
                f"unexpected ({len(self.unexpected)}): {self.unexpected[:10]}; "
                f"shape mismatches ({len(self.mismatched)}): {self.mismatched[:10]}")


def dvae_from_dalle_encoder(
    source: str | os.PathLike | Mapping[str, torch.Tensor], config: MimDvaeConfig | None = None, strict: bool = True
) -> tuple[MimDvaeModel, DalleLoadReport]:
    """`encoder.pkl` (path) or its state dict -> (MimDvaeModel with DALL-E's encoder, report).

    The config is inferred from the shapes unless given. The encoder is loaded strictly (every key and shape
    must match, else ValueError with the report); the decoder stays randomly initialised and the config says so
    (`decoder_trained=False`), because OpenAI's decoder is a separate file with a different pickle.
    """
    state_dict = source if isinstance(source, Mapping) else load_dalle_encoder_state_dict(source)
    if config is None:
        config = dvae_config_from_dalle_state_dict(state_dict)
    else:
        config.decoder_trained = False
    model = MimDvaeModel(config)
    own = model.encoder.state_dict()
    report = DalleLoadReport(
        loaded=sorted(k for k in state_dict if k in own and own[k].shape == state_dict[k].shape),
        missing=sorted(set(own) - set(state_dict)),
        unexpected=sorted(set(state_dict) - set(own)),
        mismatched=sorted(f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                          for k, v in state_dict.items() if k in own and own[k].shape != v.shape),
    )
    if strict and not report.ok:
        raise ValueError(f"DALL-E encoder weights do not fit the config: {report}")
    model.encoder.load_state_dict({k: state_dict[k] for k in report.loaded}, strict=False)
    return model.eval(), report


__all__ = [
    "DalleLoadReport",
    "dvae_config_from_dalle_state_dict",
    "dvae_from_dalle_encoder",
    "load_dalle_encoder_state_dict",
]
