"""CLI wiring of the optimization/task axes: flags make a grid, unknown names exit 2 listing the choices,
--compare-options prints effects, `sdsuite options` reports, `sdsuite validate` computes CLIP/FID with
local weights and judges acceptance windows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sdsuite.cli.main import main
from sdsuite.quality.effects import REFERENCES
from sdsuite.store.results import ResultsDir

QUICK = [
    "--variant",
    "tiny-sd",
    "--scheduler",
    "euler",
    "--steps",
    "2",
    "--resolution",
    "32x32",
    "--runs",
    "1",
    "--warmup",
    "0",
    "--no-flops",
]


@pytest.fixture(autouse=True)
def _isolated(one_torch_thread):
    REFERENCES.clear()
    yield
    REFERENCES.clear()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--attention", "sdpa,flash"], "unknown attention 'flash'; valid choices: sdpa, eager, sliced, xformers."),
        (
            ["--quantize", "int3"],
            "unknown quantization 'int3'; valid choices: int8wo, int8dq, int4wo, fp8wo, fp8dq, fp8, none.",
        ),
        (["--kv-cache", "maybe"], "unknown kv-cache value 'maybe'; valid choices: on, off."),
        (
            ["--recipe", "turbo"],
            "unknown optimization token (in 'turbo') 'turbo'; valid choices: baseline, memory-saver, fast",
        ),
        (["--offload", "gpu"], "unknown offload mode 'gpu'; valid choices: model, sequential, none."),
        (["--compile", "fastest"], "unknown torch.compile mode 'fastest'; valid choices: default, reduce-overhead"),
        (["--task", "txt2img"], "unknown task 'txt2img'; valid choices: text-to-image, image-to-image, inpainting."),
        (["--strength", "0.5"], "--strength applies to --task image-to-image or inpainting."),
        (["--task", "inpainting", "--strength", "strong"], "--strength must be a finite number in (0, 1]"),
        (["--num-prompts", "3"], "--num-prompts needs --prompts"),
        (["--prompts", "builtin", "--num-prompts", "99"], "asked for 99 prompts but the built-in set holds only 16"),
    ],
)
def test_bad_option_names_exit_2_with_the_valid_choices(tmp_path, capsys, args, message):
    code = main(["run", *QUICK, "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert not (tmp_path / "o" / "results.jsonl").exists()


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_attention_by_kv_cache_matrix_with_compare_options(tmp_path, capsys):
    out = tmp_path / "o"
    code = main(
        ["run", *QUICK, "--attention", "sdpa,sliced", "--kv-cache", "off,on", "--compare-options", "--out", str(out)]
    )
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    recs = ResultsDir(out).records()
    # The reference joined the grid and ran first; every other set was compared with it.
    assert [r["options"]["id"] for r in recs] == [
        "attn=eager",
        "attn=sdpa",
        "attn=sdpa+kv-cache",
        "attn=sliced",
        "attn=sliced+kv-cache",
    ]
    assert all(
        r["fidelity"]["checked"] and r["fidelity"]["passed"] and r["effects"]["speedup"]["available"] for r in recs[1:]
    )
    assert recs[1]["case_id"] == "tiny-sd/euler/fp32/fdefault/32x32/s2/b1"  # the default set keeps today's id
    assert "optimization effects" in stdout and "reference" in stdout
    assert all(r["spans"]["spans"] for r in recs)
    # The same table from the results directory, as markdown.
    assert main(["options", "--results", str(out), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert (
        md.startswith("| case | options | status |")
        and "| attn=sliced+kv-cache | ok |" in md
        and "energy_change:" in md
    )


@pytest.mark.slow  # several seconds: kept out of `pytest -m quick`
def test_recipe_task_prompts_and_trace_flags(tmp_path, capsys):
    out = tmp_path / "o"
    args = ["--recipe", "memory-saver", "--task", "inpainting", "--prompts", "builtin", "--num-prompts", "2", "--trace"]
    quick = [x if x != "2" else "4" for x in QUICK]  # 4 steps: int(4 x 0.75) = 3 denoising steps
    assert main(["run", *quick, *args, "--out", str(out), "--format", "json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [r["case_id"] for r in recs] == [
        f"tiny-sd/euler/fp32/fdefault/32x32/s4/b1/inpaint/prompt-builtin{i}/attn=sliced+vae-slicing+vae-tiling"
        for i in (0, 1)
    ]
    assert recs[0]["case"]["prompt"] != recs[1]["case"]["prompt"]
    assert all(r["status"] == "ok" and r["fidelity"]["checked"] for r in recs)
    assert sorted(p.name for p in (out / "traces").iterdir()) == sorted(
        r["case_id"].replace("/", "_") + ".trace.json" for r in recs
    )  # fmt: skip


def test_an_option_the_cpu_cannot_run_is_a_skipped_record_not_a_crash(tmp_path, capsys):
    code = main(["run", *QUICK, "--quantize", "int4wo,fp8", "--offload", "none,model", "--out", str(tmp_path)])
    assert code == 0
    recs = ResultsDir(tmp_path).records()
    assert len(recs) == 4 and all(r["status"] == "skipped" and r["reason"] for r in recs)
    assert "skipped: quantization int4wo" in capsys.readouterr().out


def test_options_lists_tokens_and_what_runs_here(capsys):
    assert main(["options", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "attn=eager" in out and "memory-saver" in out
    assert "int4wo" in out and "need a CUDA GPU" in out.replace("\n", " ")
    assert main(["options", "--results", "/no/such/dir"]) == 2


# -- sdsuite validate ---------------------------------------------------------------------------------


class _TinyFeatures(torch.nn.Module):
    """A fixed random conv net standing in for Inception (the code path, not the numbers)."""

    def __init__(self, out: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, out, 5, stride=4)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from sdsuite.pipelines.build import tiny_tokenizer

    torch.manual_seed(0)
    text = dict(
        vocab_size=1000,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
    )
    vision = dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tiny_tokenizer(),
    )
    d = tmp_path_factory.mktemp("tiny_clip")
    model.save_pretrained(d)
    processor.save_pretrained(d)
    return d


VALIDATE = [
    "validate",
    "--scheduler",
    "euler",
    "--steps",
    "2",
    "--resolution",
    "32x32",
    "--num-prompts",
    "4",
    "--batch-size",
    "3",
]


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_validate_computes_clip_and_fid_with_local_files_and_judges_windows(
    tmp_path, capsys, monkeypatch, tiny_clip_dir
):
    from sdsuite.quality import distribution as quality

    extractor = _TinyFeatures().eval()
    monkeypatch.setattr(quality, "load_inception", lambda path, feature="2048": (extractor, None))
    stats = tmp_path / "ref.npz"
    feats = extractor(torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))).detach().double()
    np.savez(stats, mu=feats.mean(0).numpy(), sigma=torch.cov(feats.T).numpy())
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"stand-in")
    files = [
        "--clip-model",
        str(tiny_clip_dir),
        "--inception",
        str(weights),
        "--fid-stats",
        str(stats),
        "--format",
        "json",
    ]
    assert (
        main(
            [
                *VALIDATE,
                *files,
                "--acceptance",
                '{"fid": [0, 1e9], "clip_score": [0, 100]}',
                "--out",
                str(tmp_path / "v.json"),
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert (
        report["acceptance"]["accepted"] is True and report["images"]["n"] == 4 and report["images"]["sanity"] is None
    )
    assert report["metrics"]["clip_score"]["available"] and 0 <= report["metrics"]["clip_score"]["value"] <= 100
    assert report["metrics"]["fid"]["value"] > 0 and report["metrics"]["inception_score"]["splits"] == 4
    assert json.loads((tmp_path / "v.json").read_text())["metrics"] == report["metrics"]
    # Images do not depend on the batch size (prompt i always uses seed + i).
    assert main([*VALIDATE[:-1], "1", *files]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["fid"]["value"] == pytest.approx(
        report["metrics"]["fid"]["value"], rel=1e-6
    )
    # A window the value misses rejects: exit 1 with the violation.
    assert main([*VALIDATE, *files, "--acceptance", '{"fid": [null, 1e-9]}']) == 1
    assert "is above the accepted maximum" in json.dumps(json.loads(capsys.readouterr().out)["acceptance"])


def test_validate_without_local_weights_says_unavailable_and_does_not_accept(tmp_path, capsys):
    code = main(
        [
            *VALIDATE,
            "--clip-model",
            str(tmp_path / "clip"),
            "--fid-stats",
            str(tmp_path / "val2014.npz"),
            "--acceptance",
            "mlperf-sdxl",
        ]
    )
    out = capsys.readouterr().out.replace("\n", " ")
    assert code == 1
    assert f"unavailable: no local CLIP weights at {tmp_path / 'clip'}" in out
    assert "no reference statistics at" in out and "NOT ACCEPTED (metrics unchecked)" in out
    assert main([*VALIDATE]) == 0  # nothing asked of it, nothing computable: reported, not failed
    assert main([*VALIDATE, "--acceptance", "mlperf"]) == 2
    assert "unknown acceptance preset 'mlperf'; valid choices: mlperf-sdxl, optsd" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert main([*VALIDATE, "--fid-stats", str(tmp_path / "bad.npz")]) == 2
