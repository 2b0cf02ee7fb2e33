#!/usr/bin/env python
"""Time our pretraining step and encoder against the `transformers` implementation of the same method.

    python scripts/benchmark.py --sizes tiny,small --batch_size 16 --repeats 10 --output results.json
    python scripts/benchmark.py --device cuda --dtype bf16 --sizes base --batch_size 128 --compile
    python scripts/benchmark.py --data --methods mae     # input pipeline: images/s of one loader worker

For each method and size, ours and the peer hold the same weights (copied with the method's key map; where no
map exists yet, an equivalent config with its own random init: the weights do not change the time) and get the
same inputs (pixels, MAE noise, masks from the method's own mask generator). The training step is forward, loss,
backward and AdamW; inference is the encoder over all patches under no_grad. After warm-up, the two sides are
stepped round-robin, and the PAIRED ratio (peer time / our time in the same round, then the median) is reported:
above 1 means we are faster. On the CPU the ratio of process CPU seconds is reported too: when other jobs share
the cores, the time spent waiting for one inflates the wall clock at random but not the CPU seconds (run with
--threads 1 there: with several threads, idle OpenMP workers spin and count). On CUDA the table adds peak memory
and model-FLOP utilisation.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import statistics
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

from hf_mim_cli.arguments import (ArgumentParser, answer_help_early, non_negative_int, positive_float, positive_int,
                                  run_main)
from hf_mim_cli.catalog import backbone_families

logger = logging.getLogger("hf_mim.benchmark")

# Batch sizes that fit: fp32 on a small CPU, and an 80 GB GPU.
DEFAULT_BATCH = {"cpu": {"tiny": 16, "small": 8, "base": 4}, "cuda": {"tiny": 256, "small": 256, "base": 128}}
H100_BF16_DENSE_TFLOPS = 989.0


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=None,
                   help="comma list; default: every method of hf_mim.METHODS with a transformers peer")
    p.add_argument("--backbone", choices=backbone_families(), default=None,
                   help="encoder family to time: swin (SimMIM's Swin-T/S/B for tiny/small/base, at 192 px window 6, "
                        "against transformers' SwinForMaskedImageModeling) or video-vit (MaskFeat video against "
                        "VideoMAE); default: the ViT")
    p.add_argument("--sizes", default="tiny,small,base",
                   help="comma list of tiny (192/12/3), small (384/12/6), base (768/12/12), custom")
    p.add_argument("--custom_size", default=None,
                   help="width,depth,heads,image,patch of the size called 'custom' (added to --sizes if missing)")
    p.add_argument("--config_overrides", default="",
                   help='our config fields "k=v,k=v" (the peer follows); fields a method lacks are skipped, e.g. '
                        '"decoder_hidden_size=256,decoder_num_hidden_layers=4"')
    p.add_argument("--batch_size", default=None,
                   help="one integer, or one per size in --sizes order; default by size and device")
    p.add_argument("--warmup", type=non_negative_int, default=3, help="untimed steps per side before timing")
    p.add_argument("--repeats", type=positive_int, default=10, help="timed rounds (each steps ours and the peer once)")
    p.add_argument("--phases", default="train,inference", help="comma list of train, inference")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="default: cuda where torch sees a GPU, else cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast, fp32 weights")
    p.add_argument("--compile", action="store_true", help="torch.compile both sides (same backend)")
    p.add_argument("--compile_backend", default="inductor")
    p.add_argument("--peak_tflops", type=positive_float, default=None,
                   help=f"device peak for MFU; default {H100_BF16_DENSE_TFLOPS} (H100 SXM bf16 dense) on CUDA")
    p.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--profile", action="store_true", help="also print torch.profiler's top ops of one step per side")
    p.add_argument("--data", action="store_true",
                   help="measure the input pipeline instead (decode + augment + processor + masks, one worker)")
    p.add_argument("--data_samples", type=positive_int, default=256, help="images per timed round in --data mode")
    p.add_argument("--train_dir", default=None,
                   help="--data mode: an image folder to read (default: the embedded 28 px sample; real photos decode "
                        "and resize very differently)")
    p.add_argument("--output", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no GPU")
    if args.warmup < 0 or args.repeats < 1 or args.data_samples < 1:
        p.error("--warmup must be >= 0, --repeats and --data_samples >= 1")
    args.methods = resolve_methods(p, args.methods, args.backbone)
    args.sizes = resolve_sizes(p, args.sizes, args.custom_size)
    args.batch_sizes = resolve_batch_sizes(p, args.batch_size, args.sizes, args.device)
    args.phases = [x for x in args.phases.split(",") if x]
    if not args.phases or set(args.phases) - {"train", "inference"}:
        p.error("--phases takes train and/or inference")
    if args.peak_tflops is None and args.device == "cuda":
        args.peak_tflops = H100_BF16_DENSE_TFLOPS
    return args


if __name__ == "__main__":
    answer_help_early(parse_args)

# Below the parser: these load torch and transformers, which `--help` does not wait for.
import torch
import hf_mim
from hf_mim.benchmarking import (
    SIZES,
    build_pairs,
    chosen_backbone,
    count_trainable,
    eval_loss_gap,
    inference_flops,
    inference_fn,
    make_optimizer,
    methods_with_peers,
    mfu,
    our_config,
    paired_ratio,
    parse_custom_size,
    plain_pil_backend,
    round_robin,
    summarize,
    synchronize,
    train_step_fn,
    training_flops,
)


def resolve_methods(p, text, family=None):
    available = methods_with_peers(family)
    if text is None:
        return available
    methods = [m for m in text.split(",") if m]
    for m in methods:
        if m not in available:
            p.error(f"--methods: no transformers peer is known for {m!r} on a {family or 'vit'} backbone; choose from "
                    f"{', '.join(available)}")
    return methods


def resolve_sizes(p, text, custom):
    names = [s for s in text.split(",") if s]
    if custom and "custom" not in names:
        names.append("custom")
    sizes = []
    for name in names:
        if name == "custom":
            if not custom:
                p.error("--sizes custom needs --custom_size width,depth,heads,image,patch")
            try:
                sizes.append(parse_custom_size(custom))
            except ValueError as error:
                p.error(str(error))
        elif name in SIZES:
            sizes.append(SIZES[name])
        else:
            p.error(f"--sizes: unknown size {name!r}; choose from {', '.join(SIZES)}, custom")
    if not sizes:
        p.error("--sizes is empty")
    return sizes


def resolve_batch_sizes(p, text, sizes, device):
    if text is None:
        return [DEFAULT_BATCH[device].get(s.name, 8) for s in sizes]
    try:
        values = [int(v) for v in str(text).split(",")]
    except ValueError:
        p.error(f"--batch_size takes integers, got {text!r}")
    if len(values) == 1:
        values = values * len(sizes)
    if len(values) != len(sizes) or min(values) < 1:
        p.error(f"--batch_size: give one positive integer or one per size ({len(sizes)})")
    return values


# ----------------------------------------------------------------------------------------------- models


def prepare_side(model, device, compile_backend):
    """Move one side to the device; returns (module to call, resident bytes before the move)."""
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    model.to(device)
    return (torch.compile(model, backend=compile_backend) if compile_backend else model), before


def warm_and_measure(fn, warmup, device, before):
    """Warm one side up alone; on CUDA return its peak bytes (its weights, grads, optimizer state, activations)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(max(1, warmup)):
        fn()
    synchronize(device)
    if device.type != "cuda":
        return None
    return int(torch.cuda.max_memory_allocated(device) - before)


def profile_table(fn, device) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=20)


def benchmark_phase(args, device, pairs, phase, size, batch_size) -> dict:
    pair = pairs.train if phase == "train" else pairs.inference
    backend = args.compile_backend if args.compile else None
    fns, memory, optimizers = {}, {}, []
    for side in ("ours", "peer"):
        model = getattr(pair, side)
        call = pair.call_ours if side == "ours" else pair.call_peer
        module, before = prepare_side(model, device, backend)
        if phase == "train":
            optimizer = make_optimizer(model, device)
            optimizers.append(optimizer)
            fns[side] = train_step_fn(module, optimizer, call, pair.inputs, device, args.dtype)
        else:
            fns[side] = inference_fn(module, call, pair.inputs, device, args.dtype)
        memory[side] = warm_and_measure(fns[side], args.warmup, device, before)
    cpu_times = {}
    times = round_robin(fns, warmup=1, repeats=args.repeats, device=device, cpu_times=cpu_times)
    if phase == "train":
        flops = pairs.train_flops or training_flops(hf_mim.get_method(pairs.method), pairs.config, pairs.num_masked)
    else:
        flops = pairs.inference_flops or inference_flops(size, pairs.config.num_channels)
    result = {"flops_per_image": flops, "ratio": paired_ratio(times["ours"], times["peer"])}
    if device.type == "cpu":  # CPU seconds: the fairer clock when other jobs share the cores
        result["cpu_time_ratio"] = paired_ratio(cpu_times["ours"], cpu_times["peer"])
    for side in ("ours", "peer"):
        stats = summarize(times[side])
        if device.type == "cpu":
            stats["cpu_time"] = summarize(cpu_times[side])
        stats["images_per_s"] = batch_size / stats["median_s"]
        stats["mfu"] = mfu(flops, batch_size, stats["median_s"], args.peak_tflops)
        stats["peak_memory_bytes"] = memory[side]
        result[side] = stats
    if args.profile:
        result["profile"] = {side: profile_table(fns[side], device) for side in ("ours", "peer")}
    for side in ("ours", "peer"):
        getattr(pair, side).to("cpu")
    del fns, optimizers
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def run_models(args, device) -> list[dict]:
    results = []
    for method in args.methods:
        for size, batch_size in zip(args.sizes, args.batch_sizes):
            registered = hf_mim.get_method(method)
            peer = registered.peer(chosen_backbone(registered, args.backbone)).description
            logger.info("%s %s batch %d: building ours and %s", method, size.name, batch_size, peer)
            # a ViT's shape; another family's is in "config"
            dims = {**asdict(size), "mlp": size.intermediate_size} if args.backbone in (None, "vit") else None
            entry = {"method": method, "size": size.name, "dims": dims, "batch_size": batch_size, "peer": peer,
                     "backbone": args.backbone or "vit"}
            try:
                pairs = build_pairs(method, size, batch_size, device, args.seed, args.config_overrides, args.backbone)
            except Exception as error:  # one method's missing piece must not hide the others' numbers
                logger.exception("skipping %s %s", method, size.name)
                entry["error"] = f"{type(error).__name__}: {error}"
                results.append(entry)
                continue
            entry.update(
                config=json.loads(pairs.config.to_json_string(use_diff=True)),
                weights=pairs.weights, notes=pairs.notes, num_masked=pairs.num_masked,
                attn_implementation=getattr(pairs.peer_config, "_attn_implementation", None),
                trainable_params={"ours": count_trainable(pairs.train.ours), "peer": count_trainable(pairs.train.peer)},
                eval_loss=eval_loss_gap(pairs.train),
            )
            if entry["trainable_params"]["ours"] != entry["trainable_params"]["peer"]:
                entry["notes"].append("trainable parameter counts differ: the configs are not equivalent")
            for phase in args.phases:
                logger.info("%s %s: timing %s", method, size.name, phase)
                entry[phase] = benchmark_phase(args, device, pairs, phase, size, batch_size)
            results.append(entry)
            del pairs
            gc.collect()
    return results


# ----------------------------------------------------------------------------------------------- data


def run_data(args) -> list[dict]:
    """Images/s of one loader worker (torch threads = 1, as DataLoader workers run): the whole
    `SeededImageDataset.__getitem__`, paired round by round with the same pipeline on transformers' plain PIL
    backend (the processors' shortcuts are the only difference), and the time per image of each stage."""
    from hf_mim.data import Augmentation, SeededImageDataset, load_image_dataset
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = load_image_dataset(train_dir=args.train_dir) if args.train_dir else load_image_dataset()
    results = []
    try:
        for name in args.methods:
            method = hf_mim.get_method(name)
            seen = set()
            for size in args.sizes:
                if (size.image_size, size.patch_size) in seen:
                    continue
                seen.add((size.image_size, size.patch_size))
                config = our_config(method, size, args.config_overrides)
                processor = method.image_processor_class.for_model_config(config)
                recipe = method.pretrain_recipe
                augmentation = Augmentation(crop_scale=recipe.crop_scale, color_jitter=recipe.color_jitter)
                kwargs = processor.pretraining_kwargs()
                dataset = SeededImageDataset(data, processor, augmentation, seed=args.seed, processor_kwargs=kwargs)
                plain_processor = plain_pil_backend(type(processor)).for_model_config(config)
                plain = SeededImageDataset(data, plain_processor, augmentation, seed=args.seed, processor_kwargs=kwargs)
                count = min(args.data_samples, len(dataset))
                next_index = {"ours": 0, "plain": 0}

                def full_pass(side, side_dataset):
                    """`count` samples, continuing where this side's previous pass stopped (both see the same)."""
                    start, next_index[side] = next_index[side], next_index[side] + count
                    for i in range(start, start + count):
                        side_dataset[i % len(side_dataset)]

                pass_seconds = round_robin({"ours": partial(full_pass, "ours", dataset),
                                       "plain": partial(full_pass, "plain", plain)},
                                      min(args.warmup, 1), args.repeats, torch.device("cpu"))
                rates = [count / t for t in pass_seconds["ours"]]
                stages = stage_seconds(data, augmentation, processor, kwargs, count, args.seed)
                outputs = sorted(dataset[0])
                device_path = time_device_path(args, data, processor, augmentation, kwargs, size.image_size, count)
                results.append({
                    "method": name, "image_size": size.image_size, "patch_size": size.patch_size,
                    "samples_per_round": count, "outputs": outputs,
                    "images_per_s": {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
                                     "per_round": rates},
                    "plain_backend_images_per_s": statistics.median(count / t for t in pass_seconds["plain"]),
                    "vs_plain_backend": paired_ratio(pass_seconds["ours"], pass_seconds["plain"]),
                    "stage_us_per_image": {k: v / count * 1e6 for k, v in stages.items()},
                    "device_path": device_path,
                })
    finally:
        torch.set_num_threads(threads)
    return results


def stage_seconds(data, augmentation, processor, processor_kwargs, count: int, seed: int) -> dict[str, float]:
    """Seconds spent in each stage of one sample (fetch the row, decode, augment, processor), summed over the
    first `count` samples."""
    import numpy as np

    from hf_mim.data import decode_image

    stages = {"fetch": 0.0, "decode": 0.0, "augment": 0.0, "processor": 0.0}
    for i in range(count):
        t0 = time.perf_counter()
        row = data.dataset[i]
        t1 = time.perf_counter()
        image = decode_image(row[data.image_column])
        t2 = time.perf_counter()
        rng = np.random.default_rng([seed, 0, i])
        image = augmentation(image, rng)
        t3 = time.perf_counter()
        processor(image, return_tensors="pt", mask_seed=int(rng.integers(2**31)), **processor_kwargs)
        t4 = time.perf_counter()
        for stage, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[stage] += seconds
    return stages


# ----------------------------------------------------------------------------------------------- output


def fmt_ms(stats) -> str:
    return f"{stats['median_s'] * 1e3:.4g} ({stats['min_s'] * 1e3:.4g}–{stats['max_s'] * 1e3:.4g})"


def method_label(entry) -> str:
    """"simmim", or "simmim-swin" for another backbone family than the ViT."""
    backbone = entry.get("backbone", "vit")
    return entry["method"] if backbone == "vit" else f"{entry['method']}-{backbone}"


def markdown_models(results, device) -> str:
    cuda = device.type == "cuda"
    head = ["method", "size", "phase", "batch", "ours ms (min–max)", "peer ms (min–max)", "ratio peer/ours (min–max)",
            "ours img/s", "peer img/s"]
    if not cuda:
        head += ["CPU-time ratio (min–max)"]
    if cuda:
        head += ["ours MFU", "peer MFU", "ours peak MiB", "peer peak MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in results:
        if "error" in entry:
            lines.append(f"| {method_label(entry)} | {entry['size']} | error: {entry['error'][:80]} |")
            continue
        for phase in ("train", "inference"):
            if phase not in entry:
                continue
            r = entry[phase]
            ratio = r["ratio"]
            row = [method_label(entry), entry["size"], phase, str(entry["batch_size"]), fmt_ms(r["ours"]),
                   fmt_ms(r["peer"]), f"{ratio['median']:.3f} ({ratio['min']:.2f}–{ratio['max']:.2f})",
                   f"{r['ours']['images_per_s']:.1f}", f"{r['peer']['images_per_s']:.1f}"]
            if not cuda:
                c = r["cpu_time_ratio"]
                row += [f"{c['median']:.3f} ({c['min']:.2f}–{c['max']:.2f})"]
            if cuda:
                row += [f"{r['ours']['mfu']:.1%}" if r["ours"]["mfu"] is not None else "-",
                        f"{r['peer']['mfu']:.1%}" if r["peer"]["mfu"] is not None else "-",
                        f"{r['ours']['peak_memory_bytes'] / 2**20:.0f}", f"{r['peer']['peak_memory_bytes'] / 2**20:.0f}"]
            lines.append("| " + " | ".join(row) + " |")
    notes = []
    for entry in results:
        if "error" in entry:
            continue
        gap = entry["eval_loss"]
        notes.append(f"- {method_label(entry)} {entry['size']}: weights {entry['weights']}; eval loss ours "
                     f"{gap['ours']:.6g} vs peer {gap['peer']:.6g}; peer attention {entry['attn_implementation']}"
                     + "".join(f"; {n}" for n in entry["notes"]))
    return "\n".join(lines + [""] + notes)


def time_device_path(args, data, processor, augmentation, processor_kwargs, image_size: int, count: int) -> dict:
    """The --augment_on_device path: images/s of one loader worker (decode, resize to the source square, draw
    the random choices) and the accelerator's crop/flip/jitter/resize/normalise time per image on --device."""
    from hf_mim.data import collate
    from hf_mim.device_augmentation import DeviceAugmentation, DeviceAugmentedImageDataset

    source_size = round(1.5 * image_size)
    dataset = DeviceAugmentedImageDataset(data, processor, augmentation, source_size, seed=args.seed,
                                          processor_kwargs=processor_kwargs)
    rates = []
    for r in range(args.repeats):
        start = time.perf_counter()
        for i in range(count):
            dataset[(r * count + i) % len(dataset)]
        rates.append(count / (time.perf_counter() - start))
    device = torch.device(args.device)
    batch = collate([dataset[i % len(dataset)] for i in range(min(count, 64))])
    batch.pop("num_skipped")
    on_device = DeviceAugmentation.for_processor(processor, processor_kwargs)
    seconds = []
    for _ in range(args.warmup + args.repeats):
        moved = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
        synchronize(device)
        start = time.perf_counter()
        on_device(moved)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    per_image = statistics.median(seconds[args.warmup:]) / len(batch["images"]) * 1e6
    return {"source_size": source_size, "loader_images_per_s": statistics.median(rates),
            "device": device.type, "device_us_per_image": per_image}


def markdown_data(results) -> str:
    lines = ["| method | image | img/s per worker (min–max) | paired ratio vs transformers' PIL backend (min–max) | "
             "fetch µs | decode µs | augment µs | processor µs | outputs | --augment_on_device: img/s per worker | "
             "device µs/img |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s, st, dp = r["images_per_s"], r["stage_us_per_image"], r["device_path"]
        vs = r["vs_plain_backend"]
        lines.append(f"| {r['method']} | {r['image_size']} | {s['median']:.1f} ({s['min']:.1f}–{s['max']:.1f}) | "
                     f"{vs['median']:.2f} ({vs['min']:.2f}–{vs['max']:.2f}) | "
                     f"{st['fetch']:.0f} | {st['decode']:.0f} | {st['augment']:.0f} | {st['processor']:.0f} | "
                     f"{', '.join(r['outputs'])} | {dp['loader_images_per_s']:.1f} (source {dp['source_size']} px) | "
                     f"{dp['device_us_per_image']:.0f} ({dp['device']}) |")
    return "\n".join(lines)


def environment(args, device) -> dict:
    import transformers

    env = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
           "device": device.type, "threads": torch.get_num_threads(), "dtype": args.dtype, "compile": args.compile,
           "compile_backend": args.compile_backend if args.compile else None, "warmup": args.warmup,
           "repeats": args.repeats, "peak_tflops": args.peak_tflops, "seed": args.seed,
           "argv": sys.argv[1:] if __name__ == "__main__" else None}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    try:
        report = {"environment": environment(args, device)}
        if args.data:
            report["data"] = run_data(args)
            print(markdown_data(report["data"]))
        else:
            report["results"] = run_models(args, device)
            print(markdown_models(report["results"], device))
    finally:
        torch.set_num_threads(threads)  # in-process callers (tests) keep their own setting
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2))
    if args.profile and not args.data:
        for entry in report["results"]:
            for phase in ("train", "inference"):
                for side, table in entry.get(phase, {}).get("profile", {}).items():
                    print(f"\n### {entry['method']} {entry['size']} {phase}: {side}\n{table}")
    return report


if __name__ == "__main__":
    run_main(main)
