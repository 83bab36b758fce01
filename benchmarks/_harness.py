"""Shared helpers for the side-by-side benchmarks: fixtures, subprocess timing, tables.

Fairness rules (17.2): every timed (tool, task, repeat) runs in a fresh Python subprocess pinned to
2 threads (OMP/MKL env vars, `torch.set_num_threads(2)`, one inter-op thread); tools are
interleaved repeat by repeat (ABAB...) so drift in machine load hits all of them alike; the
reported time is the median. Workers print one JSON object as their last stdout line.

The fixtures (teacher-labelled synthetic data, trained models) are deterministic: fixed seeds,
CPU, float32. They are built once per benchmark run in the parent and handed to the workers
through a temporary directory (`torch.save`), untimed.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

THREADS = 2
ROOT = Path(__file__).resolve().parents[1]


def thread_env() -> dict[str, str]:
    """Return os.environ with the thread-pinning variables set (for subprocesses)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(THREADS)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def pin_threads() -> None:
    """Pin this process to THREADS intra-op threads and one inter-op thread."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(THREADS))
    import torch

    torch.set_num_threads(THREADS)
    with contextlib.suppress(RuntimeError):  # already set (interop threads can only be set before any parallel work)
        torch.set_num_interop_threads(1)


def have(module: str) -> bool:
    """True when `module` can be imported (without importing it here)."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


INSTALL_HINT = {
    "loss_landscapes": "loss-landscapes==3.0.6",
    "pyhessian": "PyHessian==0.1",
}


def missing_baseline(module: str) -> bool:
    """Return True (and print how to install it) when the baseline package is missing."""
    if have(module):
        return False
    print(
        f"[baseline {module!r} not installed: its columns are skipped. Install it with "
        f"`.venv/bin/pip install --no-deps {INSTALL_HINT.get(module, module)}` (--no-deps keeps the CPU torch)]"
    )
    return True


def run_worker(script: Path, task: dict, timeout: float = 900.0) -> dict:
    """Run `script --worker '<json task>'` in a fresh pinned subprocess and return its last-line JSON."""
    proc = subprocess.run(
        [sys.executable, str(script), "--worker", json.dumps(task)],
        env=thread_env(),
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {task.get('name')} failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1])
    if os.environ.get("LMC_BENCH_VERBOSE"):
        print(f"  [{task.get('name')}] {result.get('seconds', '')}", file=sys.stderr, flush=True)
    return result


def interleaved(script: Path, tasks: dict[str, dict], repeats: int) -> dict[str, list[dict]]:
    """Run every task `repeats` times, round-robin (A B C A B C ...), each in a fresh subprocess."""
    out: dict[str, list[dict]] = {k: [] for k in tasks}
    for _ in range(repeats):
        for key, task in tasks.items():
            out[key].append(run_worker(script, task))
    return out


def median(xs) -> float:
    xs = [float(x) for x in xs]
    return statistics.median(xs) if xs else float("nan")


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0


def table(rows: list[list], headers: list[str]) -> str:
    """Return a plain-text table (numbers formatted by the caller)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n else c.ljust(w) for c, w in zip(r, widths, strict=False)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine_line() -> str:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu={cpu!r} cores={os.cpu_count()} threads/worker={THREADS} torch={torch.__version__} python={platform.python_version()}"


# ----------------------------------------------------------------------------- fixtures (section 17.3)


def teacher_mlp_data(n: int = 4096, seed: int = 1234):
    """X ~ N(0, I_64), labels = argmax of a fixed random teacher MLP 64-256-10 (seed 1234)."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 64, generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    with torch.no_grad():
        y = teacher(x).argmax(1)
    return x, y


def teacher_image_data(n: int = 4096, seed: int = 1234):
    """3x32x32 Gaussian noise blurred by a fixed 5x5 Gaussian, labelled by a fixed random teacher CNN (seed 1234)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    t = torch.arange(5, dtype=torch.float32) - 2
    k1 = torch.exp(-(t**2) / (2 * 1.0**2))
    k2 = torch.outer(k1, k1)
    k2 = (k2 / k2.sum()).view(1, 1, 5, 5).repeat(3, 1, 1, 1)
    x = F.conv2d(x, k2, padding=2, groups=3)
    x = (x - x.mean()) / x.std()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(4),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(8),
            nn.Flatten(),
            nn.Linear(16, 10),
        )
    with torch.no_grad():
        logits = teacher(x)
        logits = (logits - logits.mean(0)) / logits.std(0)  # balance the classes a little
        y = logits.argmax(1)
    return x, y


def build(kind: str):
    """Return a fresh model of the section 17.3 zoo: 't-mlp', 'm-mlp' or 'cnn' (ConvNetBN-D3W16)."""
    from lmc_core.foundations.config import ModelConfig
    from lmc_core.models import build_model

    if kind == "t-mlp":
        return build_model(ModelConfig(arch="mlp", hidden=[32]), (64,), 10, seed=0)
    if kind == "m-mlp":
        return build_model(ModelConfig(arch="mlp", hidden=[128, 128]), (64,), 10, seed=0)
    if kind == "cnn":
        cfg = ModelConfig(arch="convnet", depth=3, width=16, kernel_size=3, norm="batch", pooling="avg")
        return build_model(cfg, (3, 32, 32), 10, seed=0)
    raise ValueError(kind)


def train(model, x, y, steps: int = 300, lr: float = 1e-3, batch: int = 256, seed: int = 0):
    """300 Adam steps (lr 1e-3, batch 256, data-order seed 0), then eval mode. Returns the model."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    return model


def fixture_dir() -> Path:
    """Where trained fixtures are cached between runs (untimed): $LMC_BENCH_CACHE or <tmp>/lmc_bench_fixtures_v1."""
    import tempfile

    d = Path(os.environ.get("LMC_BENCH_CACHE") or Path(tempfile.gettempdir()) / "lmc_bench_fixtures_v1")
    d.mkdir(parents=True, exist_ok=True)
    return d


def fixture(kind: str, workdir: Path | None = None, quick_train: bool = False) -> Path:
    """Train (once, cached) the model `kind` on its teacher data; save {'state', 'x', 'y'} and return the path.

    x, y are the evaluation batch: 1024 examples for the MLPs, 128 for the CNN (the first of the train set).
    """
    import torch

    workdir = fixture_dir() if workdir is None else workdir
    path = workdir / f"{kind}.pt"
    if path.exists():
        return path
    torch.manual_seed(0)
    if kind == "cnn":
        x, y = teacher_image_data()
        n_eval = 128
    else:
        x, y = teacher_mlp_data()
        n_eval = 1024
    model = train(build(kind), x, y, steps=100 if quick_train else 300)
    tmp = path.with_suffix(".tmp")
    torch.save({"state": {k: v.clone() for k, v in model.state_dict().items()}, "x": x[:n_eval].clone(), "y": y[:n_eval].clone()}, tmp)
    tmp.replace(path)
    return path


def load_fixture(kind: str, path: str):
    """Return (model in eval mode, x, y) from a fixture file."""
    import torch

    blob = torch.load(path, weights_only=True)
    model = build(kind)
    model.load_state_dict(blob["state"])
    model.eval()
    return model, blob["x"], blob["y"]
