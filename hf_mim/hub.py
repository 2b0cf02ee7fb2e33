"""Publishing: model cards rendered from `model_cards/`, pushes to the Hub, and the local hub-cache layout the
tests and offline users rely on (`HF_HUB_OFFLINE=1` resolves `org/name` from it)."""

from __future__ import annotations

import hashlib
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
                     is_classifier: bool = False, tags: list[str] | None = None) -> ModelCard:
    """Render README.md into `output_dir`. `results`: [{"task", "metric", "value", "dataset", "protocol"}] ->
    `model-index` entries through huggingface_hub's EvalResult, and a table in the card."""
    eval_results = [
        EvalResult(task_type=r.get("task", "image-classification"), dataset_type=r.get("dataset", dataset_name),
                   dataset_name=r.get("dataset", dataset_name), metric_type=r["metric"], metric_value=r["value"],
                   metric_name=f"{r.get('protocol', '')} {r['metric']}".strip())
        for r in (results or [])
    ]
    card_data = ModelCardData(
        model_name=model_name, library_name="transformers", license="apache-2.0",
        tags=["hf-mim", "masked-image-modeling", method.name, "vision"] + (tags or []),
        pipeline_tag="image-classification" if is_classifier else "image-feature-extraction",
        eval_results=eval_results or None, datasets=[dataset_name] if dataset_name else None,
    )
    table = ""
    if results:
        rows = "\n".join(f"| {r.get('protocol', '')} | {r['metric']} | {r['value']:.4f} |" for r in results)
        table = "| protocol | metric | value |\n|---|---|---|\n" + rows
    card = ModelCard.from_template(
        card_data, template_path=template_path(), model_name=model_name, method_title=method.name.upper(),
        paper=method.paper, repo_url=REPO_URL, model_id=model_name, summary=method.summary,
        data_source=data_source, steps=steps, effective_batch=effective_batch, learning_rate=f"{learning_rate:.3g}",
        final_loss="n/a" if final_loss is None else f"{final_loss:.4f}", weights_from=weights_from,
        architecture=architecture_summary(config), results_table=table, picture=picture,
        picture_title=picture_title, picture_caption=picture_caption, command=command, is_classifier=is_classifier,
    )
    card.save(str(Path(output_dir) / "README.md"))
    return card


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


def architecture_summary(config) -> str:
    return (f"{config.model_type}, image {config.image_size}, patch {config.patch_size}, width {config.hidden_size}, "
            f"depth {config.num_hidden_layers}, heads {config.num_attention_heads}")


def push_folder(folder: str | Path, repo_id: str, commit_message: str = "Upload with hf-mim", private=None,
                api: HfApi | None = None) -> str:
    """Create the repo if needed and upload the folder (weights, config, processor, card, remote code)."""
    api = api or HfApi()
    api.create_repo(repo_id, exist_ok=True, private=private, repo_type="model")
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message,
                             ignore_patterns=["checkpoints/*", "train_log.jsonl", "runs/*"])
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
        import fnmatch
        import tempfile

        staged = Path(tempfile.mkdtemp())
        for path in Path(folder_path).rglob("*"):
            rel = str(path.relative_to(folder_path))
            if path.is_file() and not any(fnmatch.fnmatch(rel, pattern) for pattern in ignore_patterns or []):
                (staged / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, staged / rel)
        snapshot = seed_hub_cache(staged, repo_id, self.cache_dir)
        shutil.rmtree(staged, ignore_errors=True)
        return snapshot.name
