"""Publishing: model cards rendered from `model_cards/`, pushes to the Hub, and the local hub-cache layout the
tests and offline users rely on (`HF_HUB_OFFLINE=1` resolves `org/name` from it)."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import shutil
from importlib import resources
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

REPO_URL = "https://github.com/hf-mim/hf-mim"


def template_path(name: str = "pretrained.md") -> str:
    return str(resources.files("hf_mim.model_cards") / name)


def write_model_card(output_dir: str | Path, *, model_name: str, method, config, data_source: str, steps: int,
                     effective_batch: int, learning_rate: float, final_loss: float | None, command: str,
                     weights_from: str = "trained from scratch by this run", picture: str | None = None,
                     picture_title: str = "Reconstructions", picture_caption: str = "",
                     results: list[dict] | None = None, dataset_name: str = "fashion_mnist",
                     is_classifier: bool = False, tags: list[str] | None = None, base_model: str | None = None,
                     tokenizer: str | None = None, template: str = "pretrained.md",
                     pipeline_tag: str | None = None) -> ModelCard:
    """Render README.md into `output_dir`. `results`: [{"task", "metric", "value", "dataset", "protocol"}] ->
    `model-index` entries through huggingface_hub's EvalResult, and a table in the card.

    `base_model`: the folder or Hub id the weights came from (default: `weights_from` when it names a model
    folder or a Hub id). `tokenizer`: the tokenizer folder or id a BEiT/CAE run was given; the card also describes
    the tokenizer from `config.tokenizer_config`. `final_loss`: the mean loss of the last logging window, which a
    resumed run logs as the uninterrupted one does. `template` (a file of model_cards/) and `pipeline_tag` serve
    other tasks (segmentation.md, "image-segmentation")."""
    eval_results = [
        EvalResult(task_type=r.get("task", "image-classification"), dataset_type=r.get("dataset", dataset_name),
                   dataset_name=r.get("dataset", dataset_name), metric_type=r["metric"], metric_value=r["value"],
                   metric_name=f"{r.get('protocol', '')} {r['metric']}".strip())
        for r in (results or [])
    ]
    base_model = base_model or (weights_from if names_a_model(weights_from) else None)
    video = video_summary(config)
    card_data = ModelCardData(
        # model_name is no Hub metadata key of its own: only the name of the model-index that results need
        model_name=model_name if eval_results else None, base_model=base_model, library_name="transformers",
        license="apache-2.0", tags=["hf-mim", "masked-image-modeling", method.name, "vision"] + (tags or []) +
        (["video"] if video else []),
        pipeline_tag=pipeline_tag or (f"{'video' if video else 'image'}-classification" if is_classifier
                                      else "image-feature-extraction"),
        eval_results=eval_results or None, datasets=[dataset_name] if dataset_name else None,
    )
    table = ""
    if results:
        rows = "\n".join(f"| {r.get('protocol', '')} | {r['metric']} | {r['value']:.4f} |" for r in results)
        table = "| protocol | metric | value |\n|---|---|---|\n" + rows
    card = ModelCard.from_template(
        card_data, template_path=template_path(template), model_name=model_name, method_title=method.name.upper(),
        paper=method.paper, repo_url=REPO_URL, model_id=model_name, summary=method.summary,
        data_source=data_source, steps=steps, effective_batch=effective_batch, learning_rate=f"{learning_rate:.3g}",
        final_loss="n/a" if final_loss is None else f"{final_loss:.4f}", weights_from=weights_from,
        architecture=architecture_summary(config), results_table=table, picture=picture,
        picture_title=picture_title, picture_caption=picture_caption, command=command, is_classifier=is_classifier,
        tokenizer=tokenizer_summary(config, tokenizer), demo_note=demo_note(method, config), video=video,
        encoder_title=encoder_title(config),
    )
    card.save(str(Path(output_dir) / "README.md"))
    return card


def write_tokenizer_card(output_dir: str | Path, *, model_name: str, config, stats: dict, paper: str, summary: str,
                         data_source: str, command: str, picture: str, dataset_name: str = "fashion_mnist") -> ModelCard:
    """Render a visual tokenizer's README.md (model_cards/tokenizer.md): what it is, its codebook use measured by
    scripts/train_tokenizer.py (`stats`: its summary, with codes_in_use, perplexity, psnr, mean_image_psnr,
    evaluation, steps, effective_batch, learning_rate, final_loss), how to call it and how BEiT/CAE use it. No
    pipeline tag: a tokenizer returns codes, which no pipeline task describes."""
    card_data = ModelCardData(library_name="transformers", license="apache-2.0",
                              tags=["hf-mim", "visual-tokenizer", "dvae", "vision"],
                              datasets=[dataset_name] if dataset_name else None)
    final_loss = stats.get("final_loss")
    card = ModelCard.from_template(
        card_data, template_path=template_path("tokenizer.md"), model_name=model_name, model_id=model_name,
        paper=paper, repo_url=REPO_URL, summary=summary, vocab_size=config.vocab_size,
        codes_in_use=stats["codes_in_use"], perplexity=f"{stats['perplexity']:.1f}", psnr=f"{stats['psnr']:.2f}",
        mean_image_psnr=f"{stats['mean_image_psnr']:.2f}", evaluation=stats["evaluation"],
        downsample_factor=config.downsample_factor, image_size=config.image_size,
        grid=config.image_size // config.downsample_factor, data_source=data_source, steps=stats["steps"],
        effective_batch=stats["effective_batch"], learning_rate=f"{stats['learning_rate']:.3g}",
        final_loss="n/a" if final_loss is None else f"{final_loss:.4f}", picture=picture, command=command,
        architecture=(f"{config.model_type}, {config.num_groups} groups of {config.num_blocks_per_group} residual "
                      f"blocks, width {config.hidden_size}, {config.vocab_size} codes"),
    )
    card.save(str(Path(output_dir) / "README.md"))
    return card


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def names_a_model(reference: str | None) -> bool:
    """A model folder (with config.json) or something shaped like a Hub id (`org/name`)."""
    if not reference:
        return False
    return (Path(reference) / "config.json").is_file() or ("/" in reference and bool(HUB_ID.match(reference)))


def tokenizer_summary(config, tokenizer: str | None = None) -> str | None:
    """The card's tokenizer line for a model that predicts visual tokens (BEiT, CAE with token targets), else None:
    where it came from and its shape, read from `config.tokenizer_config`."""
    if not hasattr(config, "tokenizer_config_object") or getattr(config, "decoder_target", "tokens") != "tokens":
        return None
    shape = config.tokenizer_config_object()
    saved = {k: v for k, v in (config.tokenizer_config or {}).items() if k != "vocab_size"}
    layout = (f"a dVAE of {shape.vocab_size} codes (width {shape.hidden_size}, {shape.image_size} px views)" if saved
              else f"DALL-E's dVAE encoder layout, {shape.vocab_size} codes")
    source = f"`{tokenizer}`" if tokenizer else "not recorded by this run"
    return f"{source}: {layout} (`config.tokenizer_config`)"


DEMO_SHAPE_FIELDS = ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "embed_dim", "depths")


def encoder_title(config) -> str:
    """What the card calls the encoder: its backbone family's title ("ViT", "Swin Transformer")."""
    backbone = backbone_of(config)
    return backbone.title if backbone else "ViT"  # the tokenizer: no backbone family


def demo_note(method, config) -> str | None:
    """A warning line for the CPU demo model (`--model_size demo`, the default on the embedded sample): it shows
    the pipeline working, not features worth reusing. None for any other shape."""
    from hf_mim.methods import METHODS, backbone_of_config

    if method.name not in METHODS:  # the tokenizer: not a ViT
        return None
    demo = (backbone_of(config) or METHODS[method.name].backbone()).demo_config
    if any(getattr(config, field, None) != demo[field] for field in DEMO_SHAPE_FIELDS if field in demo):
        return None
    return (f"**A {config.image_size} px demo model.** The CPU demo's tiny {encoder_title(config)} "
            f"({config.num_hidden_layers} blocks of width {config.hidden_size}, {config.patch_size} px patches), "
            "sized to train in minutes on a CPU: it shows the training and loading path working; its features are "
            "not meant for reuse. Train `--model_size base` on your own images for a useful encoder.")


def add_eval_results(folder: str | Path, results: list[dict], *, dataset_name: str, section: str,
                     section_text: str = "") -> ModelCard:
    """Merge measured results into an existing card: `model-index` entries through EvalResult (an entry with the
    same protocol, metric and dataset is replaced, so re-running a benchmark does not duplicate it) and a
    `## {section}` block of text, replaced on re-runs. `results`: [{"metric", "value", "protocol"}]."""
    path = Path(folder) / "README.md"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: write the card (scripts/pretrain.py does) before adding results")
    card = ModelCard.load(str(path))
    new = [EvalResult(task_type="image-classification", dataset_type=dataset_name, dataset_name=dataset_name,
                      metric_type=r["metric"], metric_value=r["value"], metric_name=f"{r['protocol']} {r['metric']}")
           for r in results]
    replaced = {(r.metric_name, r.dataset_name) for r in new}
    kept = [r for r in (card.data.eval_results or []) if (r.metric_name, r.dataset_name) not in replaced]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or Path(folder).name
    header = f"## {section}"
    text = card.text
    if header in text:  # drop the previous block, up to the next section
        start = text.index(header)
        end = text.find("\n## ", start + len(header))
        text = text[:start] + (text[end + 1:] if end >= 0 else "")
    rows = "\n".join(f"| {r['protocol']} | {r['metric']} | {r['value']:.4f} |" for r in results)
    block = f"{header}\n\n{section_text}\n\n| protocol | metric | value |\n|---|---|---|\n{rows}\n"
    card.text = text.rstrip("\n") + "\n\n" + block
    card.save(str(path))
    return card


def backbone_of(config):
    """The hf-mim backbone family of a config, or None (the tokenizer, a foreign config)."""
    from hf_mim.methods import backbone_of_config

    try:
        return backbone_of_config(config)
    except ValueError:
        return None


def video_summary(config) -> str | None:
    """What a video model's tokens are, for its card; None for image models."""
    backbone = backbone_of(config)
    if backbone is None or backbone.modality != "video":
        return None
    grid = config.image_size // config.patch_size
    return (f"It takes clips as pixel_values (batch, frames, channels, height, width): {config.num_frames} frames "
            f"of {config.image_size}x{config.image_size} px, cut into tubelets of {config.tubelet_size} frames x "
            f"{config.patch_size}x{config.patch_size} px ({config.num_frames // config.tubelet_size} x {grid} x {grid} "
            f"space-time tokens). In pretraining, random space-time cubes cover {config.mask_ratio:.0%} of the tokens "
            "and the head predicts, at each masked tubelet, the HOG of each of its frames.")


def architecture_summary(config) -> str:
    if hasattr(config, "architecture_summary"):  # an encoder family whose shape is not width x depth
        return config.architecture_summary()
    return (f"{config.model_type}, image {config.image_size}, patch {config.patch_size}, width {config.hidden_size}, "
            f"depth {config.num_hidden_layers}, heads {config.num_attention_heads}")


# what stays local: training states (checkpoints/step_N are Accelerate states, not models) and logs
UPLOAD_IGNORE = ["checkpoints/*", "train_log.jsonl", "runs/*"]


def files_to_upload(folder: str | Path, ignore_patterns: list[str] | None = None) -> list[Path]:
    """The files `push_folder` uploads, relative to `folder`, sorted: every file but those matching
    `ignore_patterns` (default UPLOAD_IGNORE), matched as huggingface_hub matches them (fnmatch on the path)."""
    patterns = UPLOAD_IGNORE if ignore_patterns is None else ignore_patterns
    folder = Path(folder)
    relative = (path.relative_to(folder) for path in sorted(folder.rglob("*")) if path.is_file())
    return [rel for rel in relative if not any(fnmatch.fnmatch(rel.as_posix(), pattern) for pattern in patterns)]


def push_folder(folder: str | Path, repo_id: str, commit_message: str = "Upload with hf-mim", private=None,
                api: HfApi | None = None) -> str:
    """Create the repo if needed and upload the folder (weights, config, processor, card, remote code)."""
    api = api or HfApi()
    api.create_repo(repo_id, exist_ok=True, private=private, repo_type="model")
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message,
                             ignore_patterns=UPLOAD_IGNORE)
    return str(getattr(info, "oid", info))


def seed_hub_cache(folder: str | Path, repo_id: str, cache_dir: str | Path, revision: str = "main") -> Path:
    """Place a folder into a hub cache as `models--org--name/snapshots/<sha>/` with `refs/<revision>`, so
    `from_pretrained(repo_id)` resolves it under HF_HUB_OFFLINE=1. The commit id is the folder's content hash."""
    folder = Path(folder)
    digest = hashlib.sha1()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and "checkpoints" not in p.parts)
    for path in files:
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    commit = digest.hexdigest()
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    for path in files:
        target = snapshot / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)
    return snapshot


class LocalHubApi:
    """A stand-in for `HfApi` that writes uploads into a local hub cache instead of the network: used by the
    tests of `--push_to_hub`, and by users who stage a release before a real push."""

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir)
        self.created: list[str] = []

    def create_repo(self, repo_id, exist_ok=True, private=None, repo_type="model", **kwargs):
        self.created.append(repo_id)
        return repo_id

    def upload_folder(self, folder_path, repo_id, commit_message="", ignore_patterns=None, **kwargs):
        import tempfile

        staged = Path(tempfile.mkdtemp())
        for rel in files_to_upload(folder_path, ignore_patterns or []):
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(folder_path) / rel, staged / rel)
        snapshot = seed_hub_cache(staged, repo_id, self.cache_dir)
        shutil.rmtree(staged, ignore_errors=True)
        return snapshot.name
