"""The science subcommands of `lmc`: run, show, presets. The entry point (app/cli.py) gathers them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from lmc_core.foundations.config import StudyConfig
from lmc_core.foundations.events import Event
from lmc_core.foundations.layout import CONFIG_FILE
from lmc_core.prune.sources import missing_controls
from lmc_core.studies.presets import PRESETS, merge, preset
from lmc_core.studies.validation import load_config, validate_config

if TYPE_CHECKING:
    from lmc_core.studies.run import Run

console = Console()
if not console.is_terminal:  # piped or captured: rich would fall back to 80 columns and wrap every table
    console = Console(width=200)
errors = Console(stderr=True, soft_wrap=True)  # unwrapped, so messages stay greppable


def register(sub: argparse._SubParsersAction) -> None:
    """Add the run, show and presets subcommands to `sub`."""
    p = sub.add_parser("run", help="run a study (resumes: finished stages are skipped)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help=f"one of: {', '.join(PRESETS)}")
    src.add_argument("config", nargs="?", help="a study config, .yaml or .json")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field, e.g. --set train.epochs=5 (repeatable)"
    )
    p.add_argument("--out", default="runs", help="folder holding run directories (default: runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("show", help="print a run's table: sparsity, accuracy, error and loss barriers, training points")
    p.add_argument("run_dir", help="a run directory (runs/<run id>)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("synthetic", help="a run's synthetic sets: provenance, evaluation, and a picture of each (PNG)")
    p.add_argument("run_dir", help="a run directory (runs/<run id>)")
    p.add_argument("--png", metavar="FOLDER", help="write <set>.png (a row per class) for every finished set into FOLDER")
    p.set_defaults(func=cmd_synthetic)

    p = sub.add_parser("presets", help="list the presets")
    p.add_argument("--show", metavar="NAME", help="print one preset's full config as YAML")
    p.set_defaults(func=cmd_presets)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Return nested overrides from KEY=VALUE strings; values are parsed as YAML (numbers, lists, booleans)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
        nested: Any = yaml.safe_load(value)
        for part in reversed(key.split(".")):
            nested = {part: nested}
        out = merge(out, nested)
    return out


def build_config(args: argparse.Namespace) -> StudyConfig:
    overrides = parse_overrides(args.set)
    if args.preset:
        return preset(args.preset, overrides)
    base = load_config(args.config)
    return validate_config(merge(base.model_dump(mode="json"), overrides))


def format_validation_error(err: ValidationError) -> str:
    """Return one line per invalid field: its dotted path and what is wrong."""
    lines = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"]) or "config"
        lines.append(f"  {where}: {e['msg']}")
    return "invalid study config:\n" + "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from lmc_core.studies import tables
    from lmc_core.studies.run import Run  # torch and the science stack load only when a study runs

    try:
        cfg = build_config(args)
    except ValidationError as err:
        errors.print(f"[red]{format_validation_error(err)}[/red]")
        return 2
    except (KeyError, ValueError, FileNotFoundError) as err:
        errors.print(f"[red]{err.args[0] if err.args else err}[/red]")
        return 2
    run = Run(cfg, args.out)
    try:
        run.data  # noqa: B018 - load the data before any stage, so missing files stop the run at once
    except (FileNotFoundError, ValueError) as err:
        errors.print(f"[red]data: {err}[/red]")
        return 2
    console.print(f"study [bold]{cfg.name}[/bold]  run [bold]{run.id}[/bold]  ->  {run.dir}")
    try:
        if args.quiet:
            run.run()
        else:
            with _ProgressView() as view:
                run.run(view)
    except Exception as err:  # noqa: BLE001 - a failed stage keeps everything before it; say where to resume
        errors.print(f"[red]stage failed: {err}[/red]\nfinished stages are kept in {run.dir}; re-run the same command to resume.")
        return 1
    print_synthetic_table(run.synthetic_table())
    print_table(run.table())
    print_missing_controls(run.cfg.pruning.mask_sources)
    print_distance_table(tables.distance_table(run))
    print_analysis_table(run.analysis_table())
    print_sharpness_table(tables.sharpness_table(run))
    return 0


class _ProgressView:
    """Two rich bars fed by events: the study's stages, and the steps of the stage in flight."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.study = self.progress.add_task("stages", total=None, info="")
        self.stage = self.progress.add_task("", total=None, info="", visible=False)

    def __enter__(self) -> _ProgressView:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: Event) -> None:
        if event.stage == "study":
            self.progress.update(self.study, completed=event.step, total=event.total, info=event.message)
            return
        info = "  ".join(f"{k} {v:.3g}" for k, v in event.metrics.items())
        self.progress.update(self.stage, description=event.stage, completed=event.step, total=event.total, info=info, visible=True)
        if event.step == 0:
            self.progress.reset(self.stage, total=event.total, description=event.stage, info="")


def _distilling(row: dict[str, Any]) -> str:
    """Return the distillation's share of a row's training points: its count, "unknown" for an imported set, or nothing."""
    if row.get("distill_points") is None and "distill_points" in row:
        return " + unknown distilling (imported set)"
    return f" + {row['distill_points']:,} distilling" if row.get("distill_points") else ""


def _with_distilling(row: dict[str, Any]) -> str:
    """Return the ratio to real IMP once distilling is counted too: unknown for an imported set of unreported cost."""
    if not row.get("points_ratio"):
        return ""
    if row.get("distill_points") is None:
        return "unknown"
    ratio = row.get("points_ratio_with_distilling")
    return f"{ratio:.2f}x" if ratio is not None else ""


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print one table per rewind step (a row per mask source and round) and one for the rewinding sweep."""
    groups: dict[tuple[bool, Any], list[dict[str, Any]]] = {}
    for row in rows:
        sweep = row["source"] == "sweep"
        groups.setdefault((sweep, row["mask"] if sweep else row["rewind_step"]), []).append(row)
    for (sweep, key), group in groups.items():
        title = f"rewinding sweep ({key})" if sweep else f"subnetworks rewound to step k = {key}"
        table = Table(title=title, title_justify="left")
        for col in (
            "k" if sweep else "source",
            "round",
            "sparsity %",
            "accuracy % (copies)",
            "error barrier (pts, over seed pairs)",
            "loss barrier (over seed pairs)",
            "training points",
            "IMP's points / these",
            "… with distilling",
        ):
            table.add_column(col, justify="left" if col == "source" else "right")
        previous = None
        for row in group:
            pairs = len(row["error_barriers"])
            # population standard deviation over the seed pairs, with its n; one pair has no spread to show
            spread = f" ± {row['error_barrier_std']:.1f} (sd, n={pairs})" if pairs > 1 else " (n=1)"
            lspread = f" ± {row['loss_barrier_std']:.3f} (sd, n={pairs})" if pairs > 1 else " (n=1)"
            first = str(row["rewind_step"]) if sweep else (row["source"] if row["source"] != previous else "")
            previous = row["source"]
            table.add_row(
                first,
                "" if sweep else str(row["round"]),
                f"{row['sparsity']:.1f}",
                " / ".join(f"{a:.1f}" for a in row["accuracy"]),
                f"{row['error_barrier']:.1f}{spread}",
                f"{row['loss_barrier']:.3f}{lspread}",
                f"{row['training_points']:,}" + _distilling(row),
                f"{row['points_ratio']:.1f}x" if row.get("points_ratio") else "",
                _with_distilling(row),
                end_section=not sweep and row is not group[-1] and group[group.index(row) + 1]["source"] != row["source"],
            )
        console.print(table)
    if rows:
        console.print(
            f"barriers on the {rows[0]['split']} split; error barrier = max err(alpha) - mean endpoint error (Frankle et al. 2020), "
            "loss barrier = max [L(alpha) - linear interpolation of endpoint losses] (Entezari et al. 2022); "
            "training points = sample-gradient evaluations spent finding the mask, counted in decoded examples as they ran "
            "(+ real examples the distillation consumed); IMP's points / these = the measured ratio to real IMP at the same round "
            "(not the paper's accounting, which counts stored images: docs/science.md); "
            "± = population standard deviation over the seed pairs, n = number of pairs"
        )


def print_missing_controls(mask_sources: list[str]) -> None:
    """Say which distilled sets lack their size-matched real subset: without it "distilled" cannot be told from "tiny"."""
    missing = missing_controls(mask_sources)
    if missing:
        console.print(
            f"[yellow]no matched control for {', '.join(m.replace('subset.', 'distilled.') for m in missing)}: add "
            f"{', '.join(missing)} to pruning.mask_sources to tell a distilled set's masks from any tiny set's[/yellow]"
        )


def print_analysis_table(rows: list[dict[str, Any]]) -> None:
    """Print the curvature and surface summary of every analysed subnetwork."""
    if not rows:
        return
    table = Table(title="analyses (Hessian of copy A in its unpruned subspace; loss surface range)", title_justify="left")
    columns = (
        "mask",
        "k",
        "pair",
        "lambda_max (Lanczos)",
        "trace ± s.e. (Hutch++ estimate)",
        "unpruned params",
        "HVPs",
        "surface loss min / max",
    )
    for col in columns:
        table.add_column(col, justify="left" if col == "mask" else "right")

    def num(row: dict[str, Any], key: str, fmt: str = ".4g") -> str:
        return "-" if row.get(key) is None else format(row[key], fmt)

    for row in rows:
        trace = f"{row['trace']:.4g} ± {row['trace_stderr']:.2g}" if "trace" in row else "-"
        surface = f"{row['surface_loss_min']:.3f} / {row['surface_loss_max']:.3f}" if "surface_loss_min" in row else "-"
        table.add_row(
            row["mask"],
            str(row["rewind_step"]),
            str(row["pair"]),
            num(row, "lambda_max"),
            trace,
            num(row, "active", ","),
            num(row, "hvps", ","),
            surface,
        )
    console.print(table)


def print_distance_table(rows: list[dict[str, Any]]) -> None:
    """Print the Hamming distance between every two mask sources' masks at each rewind step and round."""
    if not rows:
        return
    table = Table(title="mask distances (prunable weights whose keep / prune decision differs)", title_justify="left")
    for col in ("k", "round", "masks", "Hamming %", "differ / total", "chance %", "Jaccard (kept)"):
        table.add_column(col, justify="left" if col == "masks" else "right")
    for row in rows:
        table.add_row(
            str(row["rewind_step"]),
            str(row["round"]),
            f"{row['source_a']} vs {row['source_b']}",
            f"{100 * row['hamming']:.2f}",
            f"{row['differ']:,} / {row['total']:,}",
            f"{100 * row['chance']:.2f}",
            f"{row['jaccard']:.3f}",
        )
    console.print(table)
    console.print("chance = the distance of two random masks with the same kept count per layer, on average")


def print_sharpness_table(rows: list[dict[str, Any]]) -> None:
    """Print, per round and mask source, the mean Hessian diagonal over the weights it removed against random removal."""
    if not rows:
        return
    first = rows[0]
    what = "estimated (Hutchinson)" if first["diagonal_estimate"] else f"exact ({first['diagonal_method']})"
    table = Table(title=f"sharpness of removed weights (H_ii {what}, read on one common network per round)", title_justify="left")
    for col in (
        "k",
        "round",
        "common network (copy A)",
        "source",
        "removed (n)",
        "mean H_ii removed",
        "random removal: mean [95 % of draws]",
        "p (sharper)",
        "p (flatter)",
    ):
        table.add_column(col, justify="left" if col == "source" else "right")
    for row in rows:
        null = "-" if row["null_mean"] is None else f"{row['null_mean']:.4g} [{row['null_interval'][0]:.4g}, {row['null_interval'][1]:.4g}]"
        table.add_row(
            str(row["rewind_step"]),
            str(row["round"]),
            row["reference_network"],
            row["source"],
            f"{row['removed']:,}",
            "-" if row["mean_removed"] is None else f"{row['mean_removed']:.4g}",
            null,
            "-" if row["p_greater"] is None else f"{row['p_greater']:.3g}",
            "-" if row["p_less"] is None else f"{row['p_less']:.3g}",
        )
    console.print(table)
    draws = max(r["random_draws"] for r in rows)
    console.print(
        f"random removal = {draws:,} draws of the same per-layer counts from the weights the source kept the round before; "
        f"p = one-sided permutation p-values, (1 + draws at least as extreme) / (1 + draws), smallest possible {1 / (1 + draws):.2g}"
    )


def print_synthetic_table(rows: list[dict[str, Any]]) -> None:
    """Print one row per synthetic set: how it was made, its size and cost, and its evaluation against a random real subset and noise."""
    if not rows:
        return
    table = Table(title="synthetic sets (test accuracy %, fresh networks trained on each)", title_justify="left")
    for col in (
        "set",
        "method",
        "stored / decoded",
        "learned lr",
        "real examples used",
        "synthetic",
        "random subset",
        "noise",
        "subset at recipe lr",
    ):
        table.add_column(col, justify="right")

    def score(row: dict[str, Any], key: str) -> str:
        e = row.get("evaluation", {}).get(key)
        if not e:
            return "-"
        n = len(e.get("accuracies") or [])
        return f"{e['mean']:.1f} ± {e['std']:.1f} (sd, n={n})" if n > 1 else f"{e['mean']:.1f} (n={n})"

    for row in rows:
        lr = row.get("learned_lr")
        table.add_row(
            row["set"],
            row["method"],
            f"{row['stored']} / {row['decoded']}",
            f"{lr:.4g}" if lr else "-",
            "unknown" if row["real_examples"] is None else f"{row['real_examples']:,}",
            score(row, "synthetic"),
            score(row, "random_subset"),
            score(row, "noise"),
            score(row, "random_subset_recipe_lr"),
        )
    console.print(table)


def open_run(path: str) -> Run | None:
    """Return the Run stored in folder `path`, or None after printing why it is not one."""
    from lmc_core.studies.run import Run

    run_dir = Path(path)
    if not (run_dir / CONFIG_FILE).is_file():
        errors.print(f"[red]{run_dir} is not a run directory (no config.json); runs live under the --out folder of `lmc run`[/red]")
        return None
    cfg = StudyConfig.model_validate(json.loads((run_dir / CONFIG_FILE).read_text()))
    run = Run(cfg, run_dir.parent)
    if run.dir.resolve() != run_dir.resolve():
        errors.print(f"[yellow]warning: {run_dir} holds config of run {run.id}; the folder was renamed[/yellow]")
        run.dir = run_dir
    return run


def cmd_synthetic(args: argparse.Namespace) -> int:
    from lmc_core.distill.render import preview, write_png

    run = open_run(args.run_dir)
    if run is None:
        return 2
    rows = run.synthetic_table()
    if not rows:
        errors.print(
            f"[yellow]{args.run_dir}: no finished synthetic set (the study defines: {', '.join(run.cfg.synthetic.sets) or 'none'})[/yellow]"
        )
        return 1
    print_synthetic_table(rows)
    if args.png:
        folder = Path(args.png)
        folder.mkdir(parents=True, exist_ok=True)
        for row in rows:
            s = run.synthetic_set(row["set"])
            if s.kind == "vector":
                continue
            source = s.provenance.get("source", {})
            write_png(folder / f"{row['set']}.png", preview(s, source.get("mean"), source.get("std")))
            console.print(f"wrote {folder / (row['set'] + '.png')}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from lmc_core.studies import tables  # with the science stack, as open_run loads it

    run = open_run(args.run_dir)
    if run is None:
        return 2
    cfg = run.cfg
    rows = run.table()
    if args.json:
        print(json.dumps(rows, indent=2))  # the rows alone, so `lmc show --json | jq` sees one list
    else:
        done = sum(run.is_done(s.key) for s in run.stages)
        console.print(f"study [bold]{cfg.name}[/bold]  run {run.id}: {done}/{len(run.stages)} stages done")
        print_synthetic_table(run.synthetic_table())
        print_table(rows)
        print_missing_controls(cfg.pruning.mask_sources)
        print_distance_table(tables.distance_table(run))
        print_analysis_table(run.analysis_table())
        print_sharpness_table(tables.sharpness_table(run))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    if args.show:
        try:
            cfg = preset(args.show)
        except KeyError as err:
            errors.print(f"[red]{err.args[0]}[/red]")
            return 2
        sys.stdout.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return 0
    table = Table("preset", "what it shows")
    for name, spec in PRESETS.items():
        table.add_row(name, spec["description"])
    console.print(table)
    return 0
