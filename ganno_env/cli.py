"""The `ganno` command line.

`ganno run` is the main job on the embedded default task; `ganno baselines` compares
hand-made schedules. Commands that need Ray import it only when they run.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from ganno_env.conditions import FileProblems
from ganno_env.config import ENV_DEFAULTS, REWARD_MODES
from ganno_env.controllers import HAND_MADE, make_controller
from ganno_env.features import FEATURE_NAMES
from ganno_env.folder_lock import UsageError, folder_lock
from ganno_env.observation_clip import MAIN_JOB_CLIP, add_observation_clip
from ganno_env.policy import (
    FALLBACK_STEP_RATIO,
    MAPPINGS,
    STEP_CLIP,
    add_fallback,
    add_step_clip,
    load_policy,
    resolve_policy_path,
)
from ganno_env.rollout import RunResult, make_env, rollout
from ganno_env.tasks import TASKS
from rllib_configs import CRITICS, PRESET_NAMES, NoSamplesError

DEFAULT_CONTROLLERS = ("constant", "step_decay", "cosine", "warmup_cosine", "bold_driver", "lars")
DEFAULT_LRS = (1e-4, 1e-2, 0.3)


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers, comma-separated") from None
    if not values or any(not np.isfinite(v) or v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive, finite numbers")
    return values


def names_from(known: Iterable[str]) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated names, each one of `known`."""
    known = sorted(known)

    def names(text: str) -> list[str]:
        chosen = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [n for n in chosen if n not in known]
        if not chosen or unknown:
            raise argparse.ArgumentTypeError(f"{unknown or text!r}: known: {known}")
        return chosen

    return names


_names = names_from(HAND_MADE)


def _positive_float(text: str) -> float:
    values = _floats(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected one positive, finite number")
    return values[0]


def _positive_float_or_none(text: str) -> float | None:
    if text == "none":
        return None
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError:
        message = f"{text!r}: expected one positive, finite number or none"
        raise argparse.ArgumentTypeError(message) from None


def _feature_names_or_none(text: str) -> tuple[str, ...] | None:
    """Comma-separated observation features (`--observation-clip`), or none."""
    if text == "none":
        return None
    names = tuple(name.strip() for name in text.split(","))
    unknown = [name for name in names if name not in FEATURE_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r}: unknown features {unknown}; expected none or some of {list(FEATURE_NAMES)}"
        )
    return names


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an int >= 1")
    return int(text)


def compare_baselines(
    task: str,
    controllers: Sequence[str],
    initial_lrs: Sequence[float],
    seeds: int,
    max_cycles: int,
    interval: int,
    device: str,
) -> list[tuple[str, float, list[RunResult]]]:
    """Each controller from each initial LR, the seeds trained as one population."""
    rows = []
    for lr in initial_lrs:
        for name in controllers:
            controller = make_controller(name)
            env = make_env(
                controller, task=task, conditions={"initial_lr": lr}, population=seeds,
                max_cycles=max_cycles, interval=interval, device=device,
            )  # fmt: skip
            results = rollout(env, controller, seed=0)
            rows.append((name, lr, results))
    return rows


def format_table(rows: list[tuple[str, float, list[RunResult]]]) -> str:
    """Mean and spread of final test loss and accuracy per controller and initial LR."""
    lines = [
        f"{'controller':<18}{'initial lr':>11}{'test loss':>20}{'test acc':>10}{'diverged':>10}"
    ]
    for name, lr, results in rows:
        loss = np.array([r.test_loss for r in results])
        acc = [r.test_accuracy for r in results if r.test_accuracy is not None]
        acc_text = f"{np.mean(acc):>10.3f}" if acc else f"{'-':>10}"
        diverged = sum(r.diverged for r in results)
        lines.append(
            f"{name:<18}{lr:>11.0e}{loss.mean():>12.4f} ± {loss.std():<6.4f}{acc_text}"
            f"{diverged:>7}/{len(results)}"
        )
    return "\n".join(lines)


def cmd_baselines(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    rows = compare_baselines(
        args.task, args.controllers, args.lrs, args.seeds, args.max_cycles, args.interval,
        args.device,
    )  # fmt: skip
    print(f"task {args.task}: {args.seeds} seeds x {args.max_cycles} decisions x {args.interval}")
    print(format_table(rows))
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0


def _rllib(command: str):
    """`get_preset` and `train`, or None after saying how to install Ray."""
    try:
        from rllib_configs.ppo import get_preset
        from rllib_configs.train import train
    except ImportError as error:
        print(f"ganno {command} needs Ray: pip install 'ganno[rllib]' ({error})", file=sys.stderr)
        return None
    return get_preset, train


def _controls(text: str) -> list[str]:
    """Comma-separated knob names, checked as env `controls` (an error lists the known)."""
    from ganno_env.knobs import get_knobs

    names = [name.strip() for name in text.split(",") if name.strip()]
    try:
        get_knobs(names)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return names


def _widths(text: str) -> tuple[int, ...]:
    """Comma-separated layer widths for the policy's hidden layers, each an int >= 1."""
    widths = [w.strip() for w in text.split(",") if w.strip()]
    if not widths or not all(w.isdigit() and int(w) >= 1 for w in widths):
        raise argparse.ArgumentTypeError(f"{text!r}: expected ints >= 1, comma-separated")
    return tuple(int(w) for w in widths)


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected an int >= 0")
    return int(text)


def cmd_train(args: argparse.Namespace) -> int:
    """Train one run in --out; a folder that holds another run, a --resume that does not
    match the recorded run and a busy folder are UsageErrors (one line, from `main`)."""
    rllib = _rllib("train")
    if rllib is None:
        return 2
    get_preset, train = rllib
    fields = {"seed": args.seed}
    if args.validate_every is not None:
        fields["validate_every"] = args.validate_every
    if args.critic is not None:
        fields["critic"] = args.critic
    if args.hidden is not None:
        fields["hidden"] = args.hidden
    preset = get_preset(args.preset, **fields)
    # Overrides are merged into the preset's env_config, so run.json and policy.pt record them.
    env_config = dict(preset.env_config)
    if args.conditions is not None:
        from rllib_configs.ppo import training_env_config

        if args.conditions.endswith(".json") or os.path.exists(args.conditions):
            from ganno_env.conditions import load_training_conditions

            task = env_config.get("task", ENV_DEFAULTS["task"])
            env_config["conditions"] = load_training_conditions(args.conditions, task)
        else:
            env_config = training_env_config(preset, args.conditions)
    if args.lr_factors is not None:
        env_config["lr_factors"] = list(args.lr_factors)
    if args.population is not None:
        env_config["population"] = args.population
    if args.siblings is not None:
        env_config["siblings"] = args.siblings
    if args.controls is not None:
        env_config["controls"] = list(args.controls)
    if args.agents_per_env is not None:
        env_config["agents_per_env"] = args.agents_per_env
    if args.max_step_ratio is not None:
        env_config["max_step_ratio"] = args.max_step_ratio
    if args.probe_cuts_only:
        env_config["probe_cuts_only"] = True
    if args.fallback_step_ratio is not None:
        env_config["fallback_step_ratio"] = args.fallback_step_ratio
    if args.step_clip is not None:
        env_config["step_clip"] = args.step_clip
    if args.reward is not None:
        env_config["reward"] = args.reward
    if env_config != preset.env_config:
        from ganno_env.config import EnvConfig

        # a bad override fails here, before Ray starts (agents_per_env is RLlib's wrapper's)
        EnvConfig.from_kwargs({k: v for k, v in env_config.items() if k != "agents_per_env"})
        preset = get_preset(args.preset, **fields, env_config=env_config)
    try:
        train(preset, args.mapping, args.out, args.stop_iters, args.address,
              resume=args.resume, overwrite=args.overwrite)  # fmt: skip
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Train on the `train` conditions of digits_mlp, then benchmark on held-out ones.

    The benchmark runs the trained policy with the fallback added (`add_fallback`, written
    next to it as policy_fallback.pt; `--fallback-step-ratio none`: the policy as trained),
    then clipped to the range of `log10_relative_lr` its training conditions show
    (`add_observation_clip`, policy_clipped.pt; `--observation-clip none`: not clipped).
    Both stages resume: rerunning after an interruption continues from the last
    checkpoint and skips the benchmark runs already in results.jsonl. One `ganno run` per
    --out folder at a time (a folder lock).
    """
    rllib = _rllib("run")
    if rllib is None:
        return 2
    get_preset, train = rllib
    from benchmarks.report import build_report, summary_table
    from benchmarks.runner import controller_names, run_inputs, run_suite
    from benchmarks.suites import load_suite

    start = time.perf_counter()
    preset = get_preset("smoke" if args.quick else "local")
    suite = load_suite("quick" if args.quick else "unseen")
    with folder_lock(args.out) as out:
        try:
            print(f"== 1/2 training GANNO: preset {preset.name}, mapping shared -> {out / 'train'}")
            policy = train(preset, "shared", out / "train", resume="auto")
            guards = (args.fallback_step_ratio, args.observation_clip, args.step_clip)
            policy = str(add_guards(policy, out / "train", *guards))
            print(f"   benchmarked policy -> {policy}")
            trained = time.perf_counter()
            print(f"== 2/2 benchmark: suite {suite.version} -> {out / 'bench'}")
            results = run_suite(suite, out / "bench", policy=policy, workers=args.workers)
            inputs = run_inputs(suite, controller_names(policy), policy)
            summary = build_report(results, suite, out / "bench", inputs=inputs, policy=policy)
        except KeyboardInterrupt:
            print("ganno: interrupted; rerun the same command to resume (training continues "
                  "from its last checkpoint, finished benchmark runs are skipped)",
                  file=sys.stderr)  # fmt: skip
            return 130
    print(summary_table(summary))
    end = time.perf_counter()
    print(f"report: {out / 'bench' / 'report.md'}")
    print(f"wall time: training {trained - start:.0f} s, benchmark {end - trained:.0f} s, "
          f"total {end - start:.0f} s")  # fmt: skip
    return 0


def _policy_file(path: str | None) -> str | None:
    """--policy as a file path, after checking it names a readable file (before any work).

    `pretrained` becomes the shipped file's path here, so the benchmark keys its results on
    that file's content like any other policy's.
    """
    if path is None:
        return None
    try:
        path = str(resolve_policy_path(path))
    except FileNotFoundError as error:
        raise UsageError(f"--policy {path!r}: {error}") from None
    if not os.path.exists(path):
        raise UsageError(f"--policy {path!r} does not exist; allowed: a policy.pt file")
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise UsageError(f"--policy {path!r} is not a readable file; allowed: a policy.pt file")
    return path


def add_guards(
    policy: str | os.PathLike[str],
    folder: Path,
    step_ratio: float | None,
    features: Sequence[str] | None,
    step_clip: float | None = None,
) -> Path:
    """The main job's guards, in their order: the fallback (`add_fallback`, written to
    folder/policy_fallback.pt), then the clip (`add_observation_clip`, of that copy, to
    folder/policy_clipped.pt), then, when asked for, the step clip (`add_step_clip`, to
    folder/policy_step_clip.pt). None leaves one out; the last file written is returned
    (the policy itself when all are None)."""
    policy = Path(policy)
    if step_ratio is not None:
        policy = add_fallback(policy, folder / "policy_fallback.pt", step_ratio)
        print(f"   fallback {step_ratio} added after training")
    if features is not None:
        policy = add_observation_clip(policy, folder / "policy_clipped.pt", features)
        for name, (low, high) in load_policy(policy).payload["observation_clip"].items():
            print(f"   {name} clipped to [{low:.3g}, {high:.3g}], the range training shows")
    if step_clip is not None:
        policy = add_step_clip(policy, folder / "policy_step_clip.pt", step_clip)
        print(f"   every step clipped to step ratio {step_clip}")
    return policy


def cmd_guard(args: argparse.Namespace) -> int:
    """Write a copy of a policy with the main job's guards: the fallback, then the clip.

    The same two steps as `ganno run` after training (`add_fallback`, then
    `add_observation_clip`), for any policy file or `pretrained`, then the step clip where
    --step-clip asks for it (`add_step_clip`). A fallback or step clip the policy already
    runs under is kept; another value, or an observation clip it already has, is refused
    before any work. The copy appears at --out only once complete; the file given never
    changes.
    """
    if (
        args.fallback_step_ratio is None
        and args.observation_clip is None
        and args.step_clip is None
    ):
        raise UsageError(
            "--fallback-step-ratio none and --observation-clip none leave nothing to add; "
            "allowed: at most one of them none, or a --step-clip"
        )
    source = _policy_file(args.policy)
    payload = load_policy(source).payload  # a file the package can run, or a clear error
    has_clip = payload.get("observation_clip")
    if args.observation_clip is not None and has_clip is not None:
        raise UsageError(
            f"--policy {args.policy!r} already clips {sorted(has_clip)}; allowed: a policy "
            "without a clip, or --observation-clip none"
        )
    add_ratio = _not_there(args.policy, payload, "fallback_step_ratio", args.fallback_step_ratio)
    step_clip = _not_there(args.policy, payload, "step_clip", args.step_clip)
    if add_ratio is None and args.observation_clip is None and step_clip is None:
        raise UsageError(f"--policy {args.policy!r} already carries the guards asked for")
    out = Path(args.out)
    if out.resolve() == Path(source).resolve():
        raise UsageError(f"--out {args.out!r} is the policy file itself; allowed: a new path")
    if out.is_dir():
        raise UsageError(f"--out {args.out!r} is a folder; allowed: a file path")
    if out.exists() and not args.overwrite:
        raise UsageError(f"--out {args.out!r} exists; allowed: a new path, or --overwrite")
    folder = next(parent for parent in out.parents if parent.exists())
    if not folder.is_dir():
        raise UsageError(f"--out {args.out!r} cannot be created: {str(folder)!r} is a file")
    if add_ratio is None and args.fallback_step_ratio is not None:
        print(f"   fallback {args.fallback_step_ratio} already there")
    if step_clip is None and args.step_clip is not None:
        print(f"   step clip {args.step_clip} already there")
    with tempfile.TemporaryDirectory(prefix="ganno-guard-") as scratch:
        guards = (add_ratio, args.observation_clip, step_clip)
        policy = add_guards(source, Path(scratch), *guards)
        out.parent.mkdir(parents=True, exist_ok=True)  # only now: a refusal above leaves nothing
        partial = out.with_name(f".{out.name}.partial")
        shutil.copyfile(policy, partial)
        os.replace(partial, out)
    print(f"guarded policy -> {out}")
    return 0


def _not_there(policy: str, payload: dict, key: str, value: float | None) -> float | None:
    """`value` when the policy lacks `key` (a guard to add); None when it has it at that
    value already or none is asked for; a UsageError when it has it at another value."""
    there = payload.get(key)
    if value is None or there is None:
        return value
    if float(there) != float(value):
        option = "--" + key.replace("_", "-")
        raise UsageError(
            f"--policy {policy!r} runs under {key}={there}; allowed: {option} {there} or none"
        )
    return None


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark controllers on a suite into --out; a rerun resumes, one run per folder."""
    if args.perf:
        from benchmarks.perf_env import main as perf_main

        return perf_main(["--quick"] if args.quick else [])
    from benchmarks.report import build_report, summary_table
    from benchmarks.runner import (
        RESULTS,
        check_controllers,
        controller_names,
        run_inputs,
        run_suite,
    )
    from benchmarks.suites import load_suite
    from ganno_env.config import check_device

    # Every argument is checked before the folder is touched or any run starts.
    if args.quick and args.suite not in (None, "quick"):
        raise UsageError(f"--quick and --suite {args.suite!r} exclude each other")
    suite = load_suite("quick" if args.quick else args.suite or "unseen")
    if args.seeds is not None:
        suite = suite.with_seeds(args.seeds)
    if args.data_dir is not None:
        if not os.path.isdir(args.data_dir):
            raise UsageError(f"--data-dir {args.data_dir!r} is not a folder")
        suite = suite.with_data_dir(args.data_dir)
    policy = _policy_file(args.policy)
    controllers = args.controllers.split(",") if args.controllers else None
    check_controllers(controllers or controller_names(policy, suite), policy)
    check_device(args.device)
    names = sorted(set(controller_names(policy, suite)) | set(controllers or []))
    inputs = run_inputs(suite, names, policy, args.device)  # loads policy, checks LRs
    start = time.perf_counter()
    with folder_lock(args.out) as out:
        try:
            results = run_suite(
                suite, out, policy=policy, controllers=controllers, workers=args.workers,
                address=args.address, device=args.device,
            )  # fmt: skip
            summary = build_report(results, suite, out, inputs=inputs, policy=policy)
        except KeyboardInterrupt:
            saved = out / RESULTS
            print(f"ganno: interrupted; finished runs are saved in {saved}: rerun the same "
                  "command to resume (finished runs are skipped)", file=sys.stderr)  # fmt: skip
            return 130
    print(summary_table(summary))
    print(f"report: {out / 'report.md'} ({time.perf_counter() - start:.0f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganno", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def add_baseline_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--task", default=ENV_DEFAULTS["task"], choices=sorted(TASKS))
        p.add_argument("--controllers", type=_names, default=list(DEFAULT_CONTROLLERS))
        p.add_argument("--lrs", type=_floats, default=list(DEFAULT_LRS), help="initial LRs")
        p.add_argument("--seeds", type=_positive_int, default=3, help="networks per row")
        p.add_argument("--max-cycles", type=_positive_int, default=ENV_DEFAULTS["max_cycles"])
        p.add_argument("--interval", type=_positive_int, default=ENV_DEFAULTS["interval"])
        p.add_argument("--device", default=ENV_DEFAULTS["device"])

    run = commands.add_parser(
        "run", help="the main job: train GANNO (local preset), benchmark it on 'unseen'"
    )
    run.add_argument("--out", default="runs/main", help="folder for training and benchmark")
    run.add_argument("--quick", action="store_true", help="smoke training, quick suite")
    run.add_argument("--workers", type=_positive_int, default=2)

    def add_guard_options(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument(
            "--fallback-step-ratio",
            type=_positive_float_or_none,
            default=FALLBACK_STEP_RATIO,
            help=f"{what} with the fallback at this step ratio, added after training "
            f"(add_fallback); none: no fallback (default: {FALLBACK_STEP_RATIO})",
        )
        p.add_argument(
            "--observation-clip",
            type=_feature_names_or_none,
            default=MAIN_JOB_CLIP,
            help="then clip these features, comma-separated, to the range the policy meets on "
            "its training conditions (add_observation_clip); none: no clip (default: "
            f"{','.join(MAIN_JOB_CLIP) if MAIN_JOB_CLIP else 'none'})",
        )
        p.add_argument(
            "--step-clip",
            type=_positive_float_or_none,
            default=None,
            help="then clip every optimiser step to this step ratio (add_step_clip; "
            f"{STEP_CLIP} is what train_wide shows); none: no step clip (default: none)",
        )

    add_guard_options(run, "benchmark the trained policy")
    run.set_defaults(func=cmd_run)
    guard = commands.add_parser(
        "guard", help="write a copy of a policy with the main job's guards (fallback, clip)"
    )
    guard.add_argument("--policy", required=True, help="a policy.pt, or pretrained")
    guard.add_argument("--out", required=True, help="the guarded copy's file path")
    guard.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_guard_options(guard, "copy the policy")
    guard.set_defaults(func=cmd_guard)
    baselines = commands.add_parser("baselines", help="compare hand-made schedules")
    add_baseline_options(baselines)
    baselines.set_defaults(func=cmd_baselines)

    train = commands.add_parser("train", help="train GANNO agents with RLlib (needs Ray)")
    train.add_argument("--preset", default="local", choices=PRESET_NAMES)
    train.add_argument("--mapping", default="shared", choices=MAPPINGS)
    train.add_argument("--out", required=True, help="folder for checkpoints, metrics, policy.pt")
    train.add_argument("--stop-iters", type=_positive_int, default=None)
    train.add_argument("--address", default=None, help="join this Ray cluster (default: local)")
    train.add_argument("--seed", type=_non_negative_int, default=0,
                       help="RLlib's seed, recorded in run.json")  # fmt: skip
    conditions_help = (
        "training conditions: a name of conditions_v0.json or a .json file holding "
        '{"specs": {...}} (default: the preset\'s); never held-out values'
    )
    train.add_argument("--conditions", default=None, help=conditions_help)
    train.add_argument(
        "--lr-factors",
        type=_floats,
        default=None,
        help="the agents' LR factors, comma-separated (default: the preset's)",
    )
    train.add_argument("--population", type=_positive_int, default=None,
                       help="networks per env (default: the preset's)")  # fmt: skip
    train.add_argument("--siblings", type=_positive_int, default=None,
                       help="networks per group of alike networks (the same conditions and "
                       "seed), dividing the population (default: the preset's, 1)")  # fmt: skip
    train.add_argument(
        "--agents-per-env",
        type=_positive_int,
        default=None,
        help="for conditions of several depths (train_depths): layer agents per env at every "
        "depth, a multiple of each depth's layer count (24 for train_depths); RLlib then "
        "sees the same agent ids in every episode",
    )
    train.add_argument(
        "--controls",
        type=_controls,
        default=None,
        help="the knobs agents set, comma-separated, the LR first: lr (default), "
        "lr,momentum, lr,weight_decay",
    )
    train.add_argument(
        "--max-step-ratio",
        type=_positive_float,
        default=None,
        help="safety net: no layer's LR above the one whose SGD step changes its weights by "
        "this fraction (default: the preset's, none)",
    )
    train.add_argument(
        "--fallback-step-ratio",
        type=_positive_float,
        default=None,
        help="fallback: a network with a layer whose SGD step, at its LR or at the one its "
        "agents ask for, changes its weights by more than this fraction has every LR cut by "
        "the smallest factor instead of the agents' actions (default: the preset's, none)",
    )
    train.add_argument(
        "--step-clip",
        type=_positive_float,
        default=None,
        help="step clip: at every optimiser step, a layer whose SGD step would change its "
        "weights by more than this fraction takes the step scaled down to it (default: the "
        "preset's, none)",
    )
    train.add_argument(
        "--reward",
        choices=REWARD_MODES,
        default=None,
        help="log_improvement: each network's log val-loss improvement; final: all of it at "
        "the end; vs_bold_driver: the improvement minus that of a bold-driver twin of the "
        "network (twice the networks to train); vs_siblings: the improvement minus the mean "
        "of its siblings' (needs --siblings 2 or more) (default: the preset's, log_improvement)",
    )
    train.add_argument(
        "--probe-cuts-only",
        action="store_true",
        help="at the first decision (before any update) agents may cut or keep an LR, not "
        "raise it (default: the preset's, raises allowed)",
    )
    train.add_argument(
        "--critic",
        choices=CRITICS,
        default=None,
        help="what the critic sees: the agent's layer (local) or every layer of its network "
        "(network, MAPPO style; the actor still sees its own layer) (default: the preset's)",
    )
    train.add_argument(
        "--hidden",
        type=_widths,
        default=None,
        help="the policy's and critic's hidden layer widths, comma-separated, e.g. 256,256 "
        "(default: the preset's; 64,64 for local and full)",
    )
    train.add_argument(
        "--validate-every",
        type=_non_negative_int,
        default=None,
        help="score the policy on held-in validation every N iterations and export the "
        "best (default: the preset's; 0: export the last iteration's)",
    )
    again = train.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out")
    again.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    train.set_defaults(func=cmd_train)

    bench = commands.add_parser("bench", help="benchmark controllers on a suite of conditions")
    bench.add_argument(
        "--suite",
        default=None,
        help="a shipped suite's name or a suite .json file (default: unseen)",
    )
    bench.add_argument(
        "--data-dir",
        default=None,
        help="folder with MNIST / CIFAR-10 files (their conditions run then)",
    )
    bench.add_argument("--policy", default=None, help="a policy.pt to include as 'ganno'")
    bench.add_argument("--quick", action="store_true", help="the CI-sized 'quick' suite")
    bench.add_argument("--seeds", type=_positive_int, default=None, help="first N seeds only")
    bench.add_argument("--controllers", default=None, help="comma-separated subset")
    bench.add_argument("--workers", type=_positive_int, default=2, help="processes")
    bench.add_argument("--address", default=None, help="run units as Ray tasks on a cluster")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--perf", action="store_true", help="run benchmarks.perf_env instead")
    bench.add_argument("--out", default="runs/bench")
    bench.set_defaults(func=cmd_bench)
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line; a malformed one is a UsageError, one line like any other."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return build_parser().parse_args(argv)
    except SystemExit as exit:
        if not exit.code:  # --help
            raise
        # argparse wrote "usage: ..." and then "PROG: error: MESSAGE"
        last = captured.getvalue().strip().splitlines()[-1]
        prog, _, message = last.partition(": error: ")
        raise UsageError(f"{message} (see '{prog} --help')") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run a `ganno` command. A user mistake is one line on stderr and exit status 2, a
    training run whose env runners all failed (`NoSamplesError`) one line and exit status 1,
    an interruption exit status 130; none prints a traceback.

    Interrupted on the command line (`argv` None), the process ends as soon as the command
    has cleaned up and the exit handlers have run: Python's module teardown after torch takes
    seconds on a busy machine, and Ctrl-C should stop ganno within a moment.
    """
    try:
        args = _parse(argv)
        code = args.func(args)
    except (UsageError, ValueError) as error:
        lines = str(error).splitlines() if isinstance(error, FileProblems) else [str(error)]
        for line in lines:  # a file's problems one per line, any other error on one line
            print(f"ganno: error: {' '.join(line.split())}", file=sys.stderr)
        code = 2
    except NoSamplesError as error:  # the env runners' own errors are in the log above
        print(f"ganno: error: {' '.join(str(error).split())}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("ganno: interrupted", file=sys.stderr)
        code = 130
    if code == 130 and argv is None:
        atexit._run_exitfuncs()  # what a normal exit runs, less the module teardown
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
