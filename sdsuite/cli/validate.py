"""``sdsuite validate``: image quality of one configuration over a prompt set.

Generates one image per prompt (prompt i uses seed + i, so images do not depend on the batch size),
checks them for NaN/inf/black/constant output, and computes CLIP score, FID and Inception score when
the user supplies LOCAL weights (a transformers CLIP directory, torch-fidelity's Inception .pth) and
reference statistics (an .npz with mu and sigma, e.g. MLPerf's val2014.npz). Nothing is downloaded:
a metric without its files is reported as unavailable with the path. Acceptance windows (a preset
such as mlperf-sdxl, or JSON) judge the metrics.

Exit codes: 0 accepted (or no acceptance windows asked for), 1 a window was violated, a windowed
metric could not be computed, or the images failed the sanity check; 2 bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdsuite.cli.commands import help_of
from sdsuite.core.errors import UsageError

if TYPE_CHECKING:
    import torch


def register(sub) -> None:
    """Add the ``validate`` subcommand."""
    p = sub.add_parser(
        "validate",
        help=help_of("validate"),
        description=__doc__,
    )
    c = p.add_argument_group("configuration")
    c.add_argument("--variant", default="tiny-sd", help="model variant (default tiny-sd)")
    c.add_argument("--scheduler", default="default", help="sampler (default: the checkpoint's own)")
    c.add_argument(
        "--precision",
        default=None,
        help="fp32, fp16, bf16 (default: the variant's: bf16 for the real DiT ones, else fp32)",
    )
    c.add_argument("--steps", type=int, default=None, help="denoising steps (default: the variant's)")
    c.add_argument("--resolution", default=None, metavar="WxH", help="image size (default: the variant's)")
    c.add_argument(
        "--guidance-scale", type=float, default=None, help="classifier-free guidance (default: the variant's)"
    )
    c.add_argument("--negative-prompt", default=None, help="negative prompt for every image")
    c.add_argument(
        "--seed", type=int, default=0, help="seed of the first prompt's latents; prompt i uses seed + i (default 0)"
    )
    c.add_argument(
        "--recipe",
        "--opt",
        dest="recipe",
        default=None,
        metavar="SET",
        help="one optimization set, e.g. fast or attn=sliced+vae-tiling",
    )
    c.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:<i>")
    c.add_argument("--weights", default="auto", help="auto, random or PATH (as for sdsuite run)")
    q = p.add_argument_group("prompts, metrics and acceptance")
    q.add_argument(
        "--prompts",
        default="builtin",
        metavar="builtin|PATH",
        help="builtin (default), a COCO captions .json or a text file",
    )
    q.add_argument(
        "--num-prompts",
        type=int,
        default=None,
        metavar="N",
        help="prompts to generate (COCO: a seed-42 subset; required for COCO)",
    )
    q.add_argument("--batch-size", type=int, default=1, metavar="N", help="images per pipeline call (default 1)")
    q.add_argument(
        "--clip-model", default=None, metavar="DIR", help="local transformers CLIP directory for the CLIP score"
    )
    q.add_argument(
        "--inception",
        default=None,
        metavar="PTH",
        help="local torch-fidelity Inception weights (pt_inception-2015-12-05-*.pth) for FID and IS",
    )
    q.add_argument(
        "--fid-stats",
        default=None,
        metavar="NPZ",
        help="reference statistics (mu, sigma) for FID, e.g. MLPerf's val2014.npz",
    )
    q.add_argument(
        "--acceptance",
        default=None,
        metavar="PRESET|JSON",
        help="windows: mlperf-sdxl, optsd, or JSON like '{\"fid\": [null, 20]}'",
    )
    q.add_argument("--out", default=None, metavar="FILE", help="also write the JSON report to FILE")
    q.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p.set_defaults(handler=cmd_validate)


def _unavailable(reason: str) -> dict:
    from sdsuite.core.metrics import unavailable_metric

    return unavailable_metric("1", reason)


def _case_from_args(args: argparse.Namespace):
    from sdsuite.optimizations.sets import DEFAULT, parse_optimization_set
    from sdsuite.spec.case import Case, parse_resolution

    h, w = parse_resolution(args.resolution) if args.resolution else (None, None)
    options = parse_optimization_set(args.recipe) if args.recipe else DEFAULT
    return Case(
        args.variant, args.scheduler, args.precision, args.steps, h, w, 1, args.seed, None, args.guidance_scale,
        negative_prompt=args.negative_prompt, options=options,
    ).resolved()  # fmt: skip


def _acceptance(text: str | None):
    from sdsuite.quality.acceptance import ACCEPTANCE_PRESETS, acceptance_from_json, get_acceptance

    if text is None:
        return None
    if text in ACCEPTANCE_PRESETS or not (text.lstrip().startswith("{") or Path(text).is_file()):
        return get_acceptance(text)
    return acceptance_from_json(text)


def generate(case, prompts: list[str], batch_size: int, device: torch.device, weights: str) -> torch.Tensor:
    """One image per prompt with ``case``'s configuration (prompt i: seed + i), in batches; (N, 3, H, W) on the CPU."""
    import torch

    from sdsuite.measure.runner import CaseMeasurement
    from sdsuite.optimizations.apply import apply_optimizations
    from sdsuite.optimizations.support import supported
    from sdsuite.pipelines.cache import PIPELINES
    from sdsuite.pipelines.registry import get_precision, get_variant

    dtype = getattr(torch, get_precision(case.precision))
    reason = supported(case.options, device, dtype, family=get_variant(case.variant).family)
    if reason:
        raise UsageError(f"optimization set {case.options.id} cannot run here: {reason}.")
    loaded = PIPELINES.get(case.variant, weights, case.precision, device, options=case.options)
    applied = apply_optimizations(loaded.pipe, case.options.reversible_part(), device)
    out = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = [
                CaseMeasurement(
                    dataclasses.replace(case, prompt=p, seed=case.seed + start + j), loaded, device, None
                ).call_kwargs()
                for j, p in enumerate(prompts[start : start + batch_size])
            ]
            kwargs = dict(chunk[0])
            kwargs["prompt"] = [k["prompt"][0] for k in chunk]
            kwargs["negative_prompt"] = [k["negative_prompt"][0] for k in chunk] if case.negative_prompt else None
            kwargs["latents"] = torch.cat([k["latents"] for k in chunk])
            kwargs["generator"] = [k["generator"] for k in chunk]
            out.append(loaded.pipe(**kwargs).images.detach().float().cpu())
    finally:
        applied.undo()
    return torch.cat(out)


def evaluate(
    images: torch.Tensor | None,
    prompts: list[str],
    *,
    clip_model: str | None,
    inception: str | None,
    fid_stats: str | None,
    preflight: dict[str, str | None] | None = None,
) -> dict[str, dict]:
    """CLIP score, FID and IS of ``images``; each unavailable with the reason when its files are missing."""
    from sdsuite.core.metrics import value_metric
    from sdsuite.quality import distribution as q

    pre = preflight or preflight_reasons(clip_model, inception, fid_stats)
    metrics: dict[str, dict] = {}
    if pre["clip_score"] or images is None:
        metrics["clip_score"] = _unavailable(pre["clip_score"] or "no images")
    else:
        metrics["clip_score"] = q.clip_score(images, prompts, clip_model)
    if pre["fid"] or images is None:
        metrics["fid"] = _unavailable(pre["fid"] or "no images")
    elif images.shape[0] < 2:
        metrics["fid"] = _unavailable("FID needs at least 2 images (--num-prompts)")
    else:
        extractor, reason = q.load_inception(inception, "2048")
        metrics["fid"] = (
            _unavailable(reason)
            if extractor is None
            else value_metric(
                q.fid_against_reference(images, q.load_reference_stats(fid_stats), extractor), "1", n=images.shape[0]
            )
        )
    if pre["inception_score"] or images is None:
        metrics["inception_score"] = _unavailable(pre["inception_score"] or "no images")
    else:
        classifier, reason = q.load_inception(inception, "logits_unbiased")
        if classifier is None:
            metrics["inception_score"] = _unavailable(reason)
        else:
            splits = min(10, images.shape[0])
            mean, std = q.inception_score(images, classifier, splits=splits)
            metrics["inception_score"] = value_metric(mean, "1", std=std, splits=splits)
    return metrics


def preflight_reasons(clip_model: str | None, inception: str | None, fid_stats: str | None) -> dict[str, str | None]:
    """Why each metric cannot be computed (None: it can), decided before any image is generated.

    A reference statistics file that exists but is malformed is an input error (InputFileError).
    """
    from sdsuite.quality import distribution as q

    clip = q.clip_model_unavailable_reason(clip_model)
    if inception is None:
        inc = (
            "no Inception weights were given (--inception: torch-fidelity's pt_inception-2015-12-05 .pth); "
            "nothing is downloaded"
        )
    elif not Path(inception).is_file():
        inc = f"no local weights at {inception} (the Inception .pth file does not exist)"
    else:
        inc = None
    if fid_stats is None:
        fid = "no reference statistics were given (--fid-stats NPZ with mu and sigma, e.g. MLPerf's val2014.npz)"
    elif not Path(fid_stats).is_file():
        fid = f"no reference statistics at {fid_stats} (the file does not exist)"
    else:
        q.load_reference_stats(fid_stats)  # malformed: exit 2 now, before generating anything
        fid = inc
    return {"clip_score": clip, "fid": fid, "inception_score": inc}


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate the configuration over the prompt set; exit 0/1/2 as documented above."""
    from sdsuite.measure.hardware import precision_support, resolve_device
    from sdsuite.pipelines.build import validate_weights
    from sdsuite.quality.sanity import sanity_check
    from sdsuite.spec.prompts import load_prompt_set

    case = _case_from_args(args)
    windows = _acceptance(args.acceptance)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}.")
    if args.num_prompts is None and str(args.prompts).lower().endswith(".json"):
        raise UsageError(
            "a COCO captions file needs --num-prompts N (the seed-42 subset size; val2017 holds 5000 images)."
        )
    prompt_set = load_prompt_set(args.prompts, args.num_prompts)
    device = resolve_device(args.device)
    validate_weights(args.weights)
    skip = precision_support(device, case.precision)
    if skip:
        raise UsageError(skip)
    pre = preflight_reasons(args.clip_model, args.inception, args.fid_stats)
    prompts = list(prompt_set.prompts)
    images, gen_s, sanity = None, None, None
    if any(v is None for v in pre.values()):
        t0 = time.perf_counter()
        images = generate(case, prompts, args.batch_size, device, args.weights)
        gen_s = time.perf_counter() - t0
        sanity = sanity_check(images)
    # Metrics of broken images would be meaningless numbers: report the sanity failure instead.
    metrics = evaluate(
        None if sanity else images,
        prompts,
        clip_model=args.clip_model,
        inception=args.inception,
        fid_stats=args.fid_stats,
        preflight=pre,
    )
    values = {k: (m.get("value") if m.get("available") else None) for k, m in metrics.items()}
    verdict = windows.check(values) if windows is not None else None
    report: dict[str, Any] = {
        "case_id": case.case_id,
        "case": case.to_dict(),
        "prompt_set": {k: v for k, v in prompt_set.to_dict().items() if k != "prompts"} | {"n": len(prompt_set)},
        "images": None
        if images is None
        else {"n": int(images.shape[0]), "shape": list(images.shape[1:]), "generation_s": gen_s, "sanity": sanity},
        "metrics": metrics,
        "acceptance": verdict,
        "acceptance_note": windows.note if windows is not None else None,
    }
    if args.out:
        try:
            Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write --out {args.out!r}: {exc.strerror or exc}.") from None
    if args.format == "json":
        sys.stdout.write(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    else:
        _print(report, windows)
    if sanity or (verdict is not None and verdict["accepted"] is not True):
        return 1
    return 0


def _print(report: dict, windows) -> None:
    from rich.table import Table

    from sdsuite.core.console import console as make_console
    from sdsuite.core.console import readable

    console = make_console()
    imgs = report["images"]
    title = f"validate {report['case_id']} over {report['prompt_set']['n']} prompts ({report['prompt_set']['name']})"
    t = Table(title=title, title_justify="left")
    for col in ("metric", "value", "window", "verdict"):
        t.add_column(col)
    violations = " ".join((report["acceptance"] or {}).get("violations", []))
    for name, m in report["metrics"].items():
        window = getattr(windows, name, None) if windows is not None else None
        wtxt = (
            "-"
            if window is None
            else f"[{'-inf' if window.low is None else f'{window.low:g}'}, "
            f"{'inf' if window.high is None else f'{window.high:g}'}]"
        )
        if not m.get("available"):
            t.add_row(name, f"unavailable: {m['reason']}", wtxt, "unchecked" if window is not None else "-")
        else:
            verdict = "-" if window is None else ("FAIL" if name in violations else "ok")
            t.add_row(name, f"{m['value']:.4f}", wtxt, verdict)
    console.print(readable(t, "metric"))
    if imgs is None:
        console.print("no images were generated: none of the metrics can be computed here")
    elif imgs["sanity"]:
        console.print(f"images failed the sanity check: {imgs['sanity']}", style="bold red")
    else:
        console.print(
            f"{imgs['n']} images {'x'.join(map(str, imgs['shape']))} generated in {imgs['generation_s']:.2f} s; "
            "sanity check passed"
        )
    acc = report["acceptance"]
    if acc is not None:
        state = {True: "ACCEPTED", False: "REJECTED", None: "NOT ACCEPTED (metrics unchecked)"}[acc["accepted"]]
        console.print(
            f"acceptance {acc['preset']}: {state}"
            + (f"; unchecked: {', '.join(acc['unchecked'])}" if acc["unchecked"] else "")
        )
        for v in acc["violations"]:
            console.print(f"  {v}")
        if report["acceptance_note"]:
            console.print(report["acceptance_note"], style="dim")
