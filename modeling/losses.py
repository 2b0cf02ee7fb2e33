"""The reconstruction losses of the five methods as small pure functions `(pred, target, mask) -> scalar`.

Each reads like its paper's equation and is computed in fp32 whatever the autocast dtype, because the
per-patch variance and the averages lose precision in bf16/fp16.
"""

import torch
import torch.nn.functional as F


def normalize_patch_targets(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's norm_pix target: standardise each patch by its own mean and unbiased variance. (B, L, K) -> same."""
    patches = patches.float()
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)  # unbiased, as torch's default and the official code
    return (patches - mean) / (var + eps) ** 0.5


def masked_mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked patches of the per-patch mean squared error. pred/target (B, L, K), mask (B, L), 1 = masked."""
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


def masked_l1_loss(pred: torch.Tensor, target: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """SimMIM: L1 summed over masked pixels, divided by (masked pixels x channels). pred/target (B, C, H, W),
    pixel_mask (B, 1, H, W) with 1 = masked."""
    l1 = F.l1_loss(pred.float(), target.float(), reduction="none")
    channels = pred.shape[1]
    return (l1 * pixel_mask).sum() / (pixel_mask.sum() + 1e-5) / channels


def masked_token_cross_entropy(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """BEiT/CAE: cross-entropy of the head's logits at masked positions, (N_masked, V), against the tokenizer's ids."""
    return F.cross_entropy(logits.float(), token_ids)
