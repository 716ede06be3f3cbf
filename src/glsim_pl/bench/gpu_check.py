"""One GPU check, one Markdown report: ``make gpu-check`` (= ``python -m glsim_pl.bench gpu_check``), < 8 min.

Sections, each in its own process with a time limit drawn from one overall budget (a failing or slow section is
reported, the others still run): environment; official-checkpoint parity under fp32 / bf16 / fp16 autocast, eager
and compiled; ``bench train`` (the real Lightning loop, glsim + vit, eager + compiled); eval throughput at batch
256 bf16, eager vs compiled; a 2-epoch run of the synthetic default; ``bench forward`` at batch 8 / 64 / 256;
``bench crop`` at batch 64 / 256; ``bench decode`` (JPEG decoding, CPU vs nvJPEG); if time is left, ``bench train``
at batch 32 (compiled). Opt-in, as a second call
(``--sections gate,seeds``, ~6 min): ``bench gate`` on ViT-B/16 at batch 64, and ``bench seeds`` (the embedded default
for seeds 1-5, GLSim and ViT, bf16, eager). ``--smoke`` runs the same code on the CPU with tiny models (a test, not
a measurement).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from glsim_pl.analysis.timing import median_seconds
from glsim_pl.bench.parity_fixture import FIXTURE_NAME, read_parity_fixture

REPO = Path(__file__).resolve().parents[3]
TINY_KW = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def _fixture(given: Path | None) -> Path:
    for path in (given, REPO / ".gpu" / "fixtures" / FIXTURE_NAME, REPO / "tests" / "fixtures" / FIXTURE_NAME):
        if path is not None and path.is_file():
            return path
    raise SystemExit(f"error: {FIXTURE_NAME} not found (make gpu-bundle copies it to .gpu/fixtures; or --fixture)")


def section_env(args: argparse.Namespace) -> None:
    """Versions, device, and what the compile/precision switches resolve to here."""
    import lightning
    import timm

    from glsim_pl.utils.compile import resolve_compile, resolve_compile_mode, uses_cuda

    cuda = uses_cuda("auto")
    print(f"python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, "
          f"lightning {lightning.__version__}, CPUs {len(__import__('os').sched_getaffinity(0))}")  # fmt: skip
    if cuda:
        props = torch.cuda.get_device_properties(0)
        print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, capability {props.major}.{props.minor}, "
              f"bf16 {torch.cuda.is_bf16_supported()}, CUDA {torch.version.cuda}")  # fmt: skip
    print(f"compile=auto -> {resolve_compile('auto', cuda)}, compile_mode=auto -> {resolve_compile_mode('auto', cuda)}")


def section_parity(args: argparse.Namespace) -> None:
    """The official fixture (logits from the official code) under autocast, eager and compiled."""
    from glsim_pl.models import load_official_checkpoint
    from glsim_pl.utils.compile import compile_classifier, resolve_compile_mode

    device = torch.device(args.device)
    data = read_parity_fixture(_fixture(args.fixture))
    images, want = data["images"].to(device), data["logits"].to(device)
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    print("| precision | compile | max abs logit diff vs official | argmax equal | boxes = fp32 eager boxes |")
    print("|---|---|---|---|---|")
    ref_boxes = None
    for compiled in [False] + ([True] if not args.smoke else []):
        model = load_official_checkpoint(data["checkpoint"]).eval().to(device)
        if compiled:
            compile_classifier(model, resolve_compile_mode("auto", device.type == "cuda"), images.shape[0])
        for prec in precisions if not compiled else precisions[:2]:  # each autocast dtype is one more compile
            with torch.inference_mode(), torch.autocast(device.type, dtypes.get(prec), enabled=prec != "fp32"):
                out = model(images)
            ref_boxes = out.boxes if ref_boxes is None else ref_boxes
            diff = (out.logits.float() - want).abs().max().item()
            same = bool((out.logits.argmax(-1) == want.argmax(-1)).all())
            boxes = torch.equal(out.boxes, ref_boxes)
            print(f"| {prec} | {'on' if compiled else 'off'} | {diff:.2e} | {same} | {boxes} |")


def section_eval(args: argparse.Namespace) -> None:
    """Eval img/s at one batch, bf16 autocast (fp32 on the CPU smoke run), eager vs compiled, GLSim vs ViT."""
    from glsim_pl.models import build_classifier
    from glsim_pl.utils.compile import compile_classifier, resolve_compile_mode

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch, size = (256, 224) if not args.smoke else (8, 32)
    kw = dict(backbone="vit_base_patch16_224", num_classes=200, img_size=size)
    kw.update(dict(backbone="vit_tiny_patch16_224", backbone_kwargs=TINY_KW) if args.smoke else {})
    x = torch.randn(batch, 3, size, size, device=device)
    rates: dict[tuple[str, bool], float] = {}
    for compiled in [False] + ([True] if not args.smoke else []):
        for method in ("vit", "glsim"):
            torch.manual_seed(0)
            net = build_classifier(method, **kw).eval().to(device)
            if compiled:
                compile_classifier(net, resolve_compile_mode("auto", cuda), batch)
            with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=cuda):
                rates[method, compiled] = batch / median_seconds(lambda n=net: n(x), repeats=10, warmup=3)
    print(f"batch {batch}, {size} px, {'bf16' if cuda else 'fp32'}; img/s (median of 10)")
    for compiled in sorted({c for _, c in rates}):
        vit, gl = rates["vit", compiled], rates["glsim", compiled]
        print(
            f"compile {'on' if compiled else 'off'}: ViT {vit:.1f}, GLSim {gl:.1f} img/s, GLSim/ViT time {vit / gl:.3f}"
        )


SECTIONS = {"env": section_env, "parity": section_parity, "eval": section_eval}
OPT_IN = ("gate", "seeds")  # left out of the default check; one more call: --sections gate,seeds


def _plan(args: argparse.Namespace, out: Path) -> list[tuple[str, str, list[str], int]]:
    """(key, title, command, time limit in s) of every section, most important first."""
    me = [sys.executable, "-m", "glsim_pl.bench", "gpu_check", "--device", args.device]
    me += (["--smoke"] if args.smoke else []) + (["--fixture", str(args.fixture)] if args.fixture else [])
    bench = [sys.executable, "-m", "glsim_pl.bench"]
    if args.smoke:
        train = ["train", "--tiny", "--device", "cpu", "--compile", "eager", "--size", "32", "--batch", "4",
                 "--classes", "3", "--warmup", "1", "--steps", "2", "--profile-steps", "0", "--sync-steps", "0",
                 "--workers", "0"]  # fmt: skip
        fwd, crop = ["--backbone", "vit_tiny_patch16_224", "--size", "64", "--repeats", "1"], ["--size", "64"]
        tiny_run = [
            "model=vit_tiny_scratch",  # a narrower ViT than the default's pretrained one: from scratch
            "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}",
            "dataset.train_size=40",
            "dataset.test_size=10",
            "dataset.batch_size=8",  # 30 train images: the default batch of 32 would leave no full batch
            "dataset.num_workers=0",
            "trainer.accelerator=cpu",
        ]
    else:
        train = ["train", "--warmup", "20", "--steps", "60", "--timeout", "110"]  # per (method, compile) child
        fwd, crop = ["--repeats", "5"], []
        tiny_run = []
    synth = [sys.executable, "-m", "glsim_pl.train", "trainer.max_epochs=2", "logger=none",
             f"hydra.run.dir={out / 'synthetic'}", *(tiny_run or ["trainer=gpu"])]  # fmt: skip
    plan = [("env", "environment", [*me, "--section", "env"], 60),
            ("parity", "official parity (fixture logits of the official code)", [*me, "--section", "parity"], 120),
            ("train", "bench train (real Lightning loop vs bare loop)", [*bench, *train, "--out", str(out / "train")],
             320),
            ("eval", "eval throughput, eager vs compiled", [*me, "--section", "eval"], 150),
            ("synthetic", "2-epoch synthetic run (glsim_pl.train trainer=gpu, precision=auto, compile=auto)", synth,
             150)]  # fmt: skip
    plan += [(f"forward{b}", f"bench forward, batch {b} (fp32 eager)", [*bench, "forward", "--batch", str(b), *fwd],
              60) for b in ((8, 64, 256) if not args.smoke else (2,))]  # fmt: skip
    plan += [(f"crop{b}", f"bench crop, batch {b}", [*bench, "crop", "--batch", str(b), *crop], 60)
             for b in ((64, 256) if not args.smoke else (8,))]  # fmt: skip
    decode = ["--images", "16", "--rounds", "1"] if args.smoke else []
    plan.append(("decode", "bench decode: JPEG decoding, CPU vs GPU (nvJPEG)", [*bench, "decode", *decode], 60))
    # opt-in (--sections gate,seeds, or all): too long to share the default check's budget
    gate = ["--tiny", "--size", "32", "--batch", "8", "--repeats", "1", "--device", "cpu"] if args.smoke else [
        "--backbone", "vit_base_patch16_224", "--batch", "64", "--repeats", "10"]  # fmt: skip
    plan.append(("gate", "bench gate: measured cost vs second-pass share", [*bench, "gate", *gate], 120))
    # eager: a reduce-overhead compile costs more per run than the ~20 s of GPU training it would speed up (and the
    # goal is the default's accuracy, not its speed); 5 tiny runs at a time share one GPU (2 on the smoke CPU)
    seeds = (
        ["--seeds", "1", "--jobs", "2", "--timeout", "120", "--", *tiny_run, "dataset.batch_size=8",
         "trainer.max_epochs=1"]
        if args.smoke
        else ["--jobs", "5", "--timeout", "180", "--budget", "400",
              "--", "trainer=gpu", "trainer.precision=bf16-mixed", "compile=false"]
    )  # fmt: skip
    plan.append(("seeds", "embedded default, seeds 1-5, GLSim and ViT",
                 [*bench, "seeds", "--out", str(out / "seeds"), *seeds], 420))  # fmt: skip
    if not args.smoke:  # last: runs only if the budget has room left
        train32 = [
            "train",
            "--batch",
            "32",
            "--compile",
            "compiled",
            "--warmup",
            "20",
            "--steps",
            "40",
            "--timeout",
            "110",
        ]
        plan.append(
            ("train32", "bench train, batch 32, compiled", [*bench, *train32, "--out", str(out / "train32")], 240)
        )
    return plan


def _selected(key: str, wanted: set[str] | None) -> bool:
    """No --sections: every section but the opt-in ones; ``all``: every one; else those a listed prefix names."""
    if wanted is None:
        return key not in OPT_IN
    return "all" in wanted or any(key.startswith(w) for w in wanted)


def run_all(args: argparse.Namespace) -> Path:
    """Run the plan within ``args.budget`` seconds and write ``<out>/gpu_check.md``; returns its path."""
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.sections.split(",")) if args.sections else None
    deadline = time.monotonic() + args.budget
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU smoke run (numbers say nothing)"
    parts = [f"# GPU check: {device}", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; `python -m glsim_pl.bench gpu_check"
             f"{' --smoke' if args.smoke else ''}{f' --sections {args.sections}' if args.sections else ''}`; "
             f"torch {torch.__version__}; budget {args.budget} s", ""]  # fmt: skip
    for key, title, cmd, limit in _plan(args, out):
        if not _selected(key, wanted):
            continue
        left = int(deadline - time.monotonic())
        if left < 10:
            parts += [f"## {title}", "", "skipped: the overall budget is spent", ""]
            continue
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=min(limit, left), cwd=REPO, check=False)
            text, status = proc.stdout + proc.stderr[-3000:] * (proc.returncode != 0), f"exit {proc.returncode}"
        except subprocess.TimeoutExpired as exc:
            text, status = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (
                exc.stdout or ""), f"timed out after {min(limit, left)} s"  # fmt: skip
        (out / f"section_{key}.log").write_text(text)
        shown = "\n".join(text.strip().splitlines()[-40:])
        table = [line for line in shown.splitlines() if line.startswith(("|", "GLSim/ViT", "min ≥"))]
        parts += [f"## {title}", "", f"`{' '.join(cmd[1:])}` — {status}, {time.monotonic() - start:.0f} s", "",
                  *(table + [""] if table else []), f"```\n{shown}\n```", ""]  # fmt: skip
    report = out / "gpu_check.md"
    report.write_text("\n".join(parts) + "\n")
    print(f"report: {report}")
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m glsim_pl.bench gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("gpu_report"))
    p.add_argument("--budget", type=int, default=470, help="seconds for all sections together")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny models: checks the script, measures nothing")
    p.add_argument("--device", default=None)
    p.add_argument("--fixture", type=Path, default=None)
    p.add_argument(
        "--sections",
        default=None,
        help="comma list of section keys: env, parity, train, eval, synthetic, forward, crop "
        "(the default); gate, seeds (opt-in, ~6 min together); all (a prefix selects, e.g. forward8)",
    )
    p.add_argument("--section", choices=sorted(SECTIONS), default=None, help=argparse.SUPPRESS)  # internal
    args = p.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device is visible (use --smoke for the CPU check of this script)")
    if args.section:
        SECTIONS[args.section](args)
        return
    run_all(args)


if __name__ == "__main__":
    main()
