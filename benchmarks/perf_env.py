"""How fast is the env, next to plain PyTorch training of the same network?

Why: the env *is* the cost of every experiment. An agent learns from thousands of
episodes, and each episode is a training run, so every inner optimiser step the env adds
on top of plain training multiplies into every experiment. Our targets:

* a population of one costs no more than a plain PyTorch loop (env pop 1 >= 0.9x plain);
* a population is far cheaper than separate runs (pop 64 >= 8x plain network-steps/s);
* larger populations keep paying off (pop 256 >= pop 64 network-steps/s).

Run: ``python -m benchmarks.perf_env`` (``--quick`` for a smoke test, ``--device cuda`` on
a GPU). All configurations are measured in one run, side by side: each repeat runs every
configuration once, round-robin, so machine noise hits all of them alike, and the table
shows medians over the repeats. The first repeat of each configuration runs in a fresh
process, where its peak RSS is read; the others run in this process. Every measurement
starts with an untimed warm-up. Torch keeps its default number of threads.

Run it on an otherwise idle machine: other processes competing for the cores slow the
many small kernels of the plain loop and of small populations by up to 10-30x and make
every ratio meaningless (they can turn every target into a PASS). The run warns on
stderr when the CPUs are busy before it starts, and the JSON keeps every repeat.

How to read the table:

* ``plain``: a plain loop of the task's network (``task.build_model``), SGD lr=0.01, random
  minibatches ``x[idx]`` from the train tensors on the device, zero_grad/backward/step.
  Its steps/s is the reference.
* ``env pop N``: the env (``layerwise_lr_v1.parallel_env``, interval 25) driven through
  its public API by a constant controller (LR factor 1.0 for every live agent): reset,
  then step until the episode ends. net-steps/s = N x interval x decisions / time; the
  time includes reset (building the population, the probe gradient), observations,
  validation and the dict handling of the API. For pop 1 (and plain) net-steps/s is the
  ordinary steps/s.
* ``x plain``: net-steps/s over plain steps/s. For pop N it is the speed-up over training
  N networks one after the other with the plain loop.
* ``agent-steps/s``: env.step calls per second x live agents (N x layers), i.e. how many
  agent transitions per second an RL learner can get from one env.
* ``GFLOP/s``: useful training FLOPs per second, from the analytic count for MLPs
  (Linear layers only; bias, ReLU, loss and optimiser ignored)::

      FLOPs per network-step = 3 x 2 x batch x sum over Linear layers of (in x out)

  (forward: one multiply-add per weight and example; backward: twice that, for the input
  and the weight gradients). Probe and validation passes are not counted, so they show
  up as lost GFLOP/s. Compare with the sgemm line: the GFLOP/s of a 1024x1024 float32
  ``torch.mm`` on the same device, i.e. what the machine can do on large matrices.
* ``peak RSS``: ``ru_maxrss`` of the fresh process that ran the configuration's first
  repeat (it includes the interpreter, torch and the dataset).

With ``--profile``, each population's episode also runs once under ``torch.profiler``,
and the run prints the operations that take the most CPU time (their share of all
operator time; the profiler's own overhead inflates the many small calls).

After the table come the sgemm line, the leak line (current RSS after the first and after
the last of ``--leak-episodes`` short episodes of the smallest population, and the
growth between them), and the targets with PASS/FAIL. All numbers go to ``--json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganno_env import layerwise_lr_v1
from ganno_env.tasks import get_task

INTERVAL = 25
LEARNING_RATE = 0.01
WARMUP_STEPS = 25
LEAK_MAX_CYCLES = 4
SGEMM_SIZE = 1024
SGEMM_RUNS = 10
DEFAULTS = {"populations": "1,8,64,256", "steps": 500, "repeats": 3, "leak_episodes": 100}
QUICK = {"populations": "1,8", "steps": 100, "repeats": 1, "leak_episodes": 5}
MIB = 2**20
PROFILE_TOP = 8  # operators listed per population by --profile
BUSY_WARNING = 0.1  # share of the CPUs busy before the run above which we warn


@dataclass(frozen=True)
class Spec:
    """One configuration to measure: the plain loop (population 0) or the env."""

    kind: str  # "plain" or "env"
    population: int
    task: str
    batch_size: int
    steps: int
    device: str

    @property
    def name(self) -> str:
        return "plain" if self.kind == "plain" else f"env pop {self.population}"


# ---------------------------------------------------------------------------- clocks
def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _clock(device: str) -> float:
    """perf_counter after waiting for the device, so queued kernels are counted."""
    _sync(device)
    return time.perf_counter()


def _reset_cuda_peak(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _cuda_peak_mib(device: str) -> float | None:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    return None


def _peak_rss_mib() -> float:
    """Peak resident set size of this process (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def cpu_busy_fraction(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over `seconds` (from /proc/stat); None where it is missing."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values), idle

    try:
        total0, idle0 = read()
        time.sleep(seconds)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total1 - total0
    return 1.0 - (idle1 - idle0) / elapsed if elapsed > 0 else None


def _current_rss_mib() -> float:
    """Resident set size now (from /proc; the peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / MIB
    except (OSError, ValueError, IndexError):
        return _peak_rss_mib()


# ---------------------------------------------------------------------- measurements
def measure_plain(spec: Spec, seed: int) -> dict[str, Any]:
    """Time `spec.steps` steps of a plain PyTorch loop of the task's network."""
    task = get_task(spec.task)
    data = task.load_data()
    torch.manual_seed(seed)
    model = task.build_model(task.width, task.depth, data).to(spec.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    x = data.x_train.to(spec.device, torch.float32)
    y = data.y_train.to(spec.device)
    loss_fn = F.cross_entropy if data.kind == "classification" else F.mse_loss

    def run(steps: int) -> None:
        for _ in range(steps):
            idx = torch.randint(len(x), (spec.batch_size,), device=spec.device)
            loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    run(WARMUP_STEPS)
    _reset_cuda_peak(spec.device)
    start = _clock(spec.device)
    run(spec.steps)
    seconds = _clock(spec.device) - start
    return {
        "seconds": seconds,
        "reset_seconds": 0.0,
        "network_steps": spec.steps,
        "decisions": 0,
        "agent_steps": 0,
        "cuda_peak_mib": _cuda_peak_mib(spec.device),
    }


def make_env(spec: Spec, max_cycles: int) -> layerwise_lr_v1.LayerwiseLREnv:
    """The env of a configuration: fixed LR 0.01 and batch size, interval 25."""
    return layerwise_lr_v1.parallel_env(
        task=spec.task,
        conditions={"initial_lr": LEARNING_RATE, "batch_size": spec.batch_size},
        population=spec.population,
        interval=INTERVAL,
        max_cycles=max_cycles,
        device=spec.device,
    )


def run_episode(
    env: layerwise_lr_v1.LayerwiseLREnv, seed: int, max_decisions: int | None = None
) -> dict[str, Any]:
    """Reset, then step with LR factor 1.0 for every live agent until the episode ends."""
    device = env.config.device
    keep = list(env.config.lr_factors).index(1.0)
    start = _clock(device)
    env.reset(seed=seed)
    after_reset = _clock(device)
    decisions = agent_steps = 0
    while env.agents and (max_decisions is None or decisions < max_decisions):
        agent_steps += len(env.agents)
        env.step({agent: keep for agent in env.agents})
        decisions += 1
    end = _clock(device)
    return {
        "seconds": end - start,
        "reset_seconds": after_reset - start,
        "network_steps": env.config.population * env.config.interval * decisions,
        "decisions": decisions,
        "agent_steps": agent_steps,
        "env_threads": getattr(env.config, "num_threads", None),  # torch threads while training
    }


def measure_env(spec: Spec, seed: int) -> dict[str, Any]:
    """Time one full episode of `spec.steps // 25` decisions (reset included)."""
    env = make_env(spec, max_cycles=spec.steps // INTERVAL)
    run_episode(env, seed=seed + 1_000_000, max_decisions=1)  # warm-up
    env.close()
    gc.collect()
    _reset_cuda_peak(spec.device)
    result = run_episode(env, seed=seed)
    result["cuda_peak_mib"] = _cuda_peak_mib(spec.device)
    env.close()
    return result


def measure(spec: Spec, seed: int) -> dict[str, Any]:
    """One timed measurement of a configuration, in this process."""
    return measure_plain(spec, seed) if spec.kind == "plain" else measure_env(spec, seed)


def measure_fresh(spec: Spec, seed: int) -> dict[str, Any]:
    """Run in a fresh process: one measurement plus that process's peak RSS."""
    rss_start = _current_rss_mib()  # interpreter, torch and this module, before any work
    result = measure(spec, seed)
    result["peak_rss_mib"] = _peak_rss_mib()
    result["rss_start_mib"] = rss_start
    return result


def leak_check(spec: Spec, episodes: int) -> dict[str, Any]:
    """Current RSS after the first and after the last of `episodes` short episodes."""
    env = make_env(spec, max_cycles=LEAK_MAX_CYCLES)
    rss: list[float] = []
    cuda: list[float] = []
    for episode in range(episodes):
        run_episode(env, seed=episode)
        if episode in (0, episodes - 1):
            gc.collect()
            rss.append(_current_rss_mib())
            if torch.device(spec.device).type == "cuda":
                cuda.append(torch.cuda.memory_allocated(spec.device) / MIB)
    env.close()
    return {
        "population": spec.population,
        "episodes": episodes,
        "max_cycles": LEAK_MAX_CYCLES,
        "interval": INTERVAL,
        "rss_first_mib": rss[0],
        "rss_last_mib": rss[-1],
        "growth_mib": rss[-1] - rss[0],
        "cuda_allocated_first_mib": cuda[0] if cuda else None,
        "cuda_allocated_last_mib": cuda[-1] if cuda else None,
    }


def profile_shares(spec: Spec, seed: int, top: int = PROFILE_TOP) -> list[tuple[str, float]]:
    """The `top` operators by self CPU time in one episode, with their share of the total."""
    from torch.profiler import ProfilerActivity, profile

    env = make_env(spec, max_cycles=spec.steps // INTERVAL)
    run_episode(env, seed=seed + 1_000_000, max_decisions=1)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_episode(env, seed=seed)
    env.close()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [(e.key, e.self_cpu_time_total / total) for e in events[:top]]


def in_fresh_process(function: Callable[..., Any], *args: Any) -> Any:
    """Call `function(*args)` in a newly spawned process and return its result."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(function, args)


def sgemm_gflops(device: str, size: int = SGEMM_SIZE, runs: int = SGEMM_RUNS) -> float:
    """Median GFLOP/s of a size x size float32 matrix product on the device."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(runs):
        start = _clock(device)
        torch.mm(a, b)
        times.append(_clock(device) - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def flops_per_network_step(task_name: str, batch_size: int) -> float | None:
    """3 x 2 x batch x sum(in x out) over Linear layers; None if the net has other layers."""
    task = get_task(task_name)
    data = task.load_data()
    model = task.build_model(task.width, task.depth, data)
    if any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in model.modules()):
        return None
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return 3 * 2 * batch_size * sum(m.in_features * m.out_features for m in linear)


# -------------------------------------------------------------------------- summary
def summarise(
    specs: list[Spec], runs: dict[str, list[dict[str, Any]]], flops: float | None
) -> dict[str, dict[str, Any]]:
    """Medians and derived rates per configuration."""
    rows: dict[str, dict[str, Any]] = {}
    for spec in specs:
        measured = runs[spec.name]
        rates = [r["network_steps"] / r["seconds"] for r in measured]
        agent_rates = [r["agent_steps"] / r["seconds"] for r in measured]
        cuda_peaks = [r["cuda_peak_mib"] for r in measured if r.get("cuda_peak_mib") is not None]
        rate = statistics.median(rates)
        rows[spec.name] = {
            "kind": spec.kind,
            "population": spec.population,
            "network_steps_per_s": rate,
            "best_network_steps_per_s": max(rates),  # the least disturbed repeat
            "agent_steps_per_s": statistics.median(agent_rates) if spec.kind == "env" else None,
            "gflops": rate * flops / 1e9 if flops is not None else None,
            "peak_rss_mib": measured[0].get("peak_rss_mib"),
            "cuda_peak_mib": max(cuda_peaks) if cuda_peaks else None,
            "median_seconds": statistics.median(r["seconds"] for r in measured),
            "median_reset_seconds": statistics.median(r["reset_seconds"] for r in measured),
            "measurements": measured,
        }
    plain = rows["plain"]["network_steps_per_s"]
    for row in rows.values():
        row["ratio_to_plain"] = row["network_steps_per_s"] / plain
    return rows


def check_targets(rows: dict[str, dict[str, Any]]) -> dict[str, bool | None]:
    """The issue's targets; None where a configuration was not measured."""

    def rate(population: int) -> float | None:
        row = rows.get(f"env pop {population}")
        return None if row is None else row["network_steps_per_s"]

    plain = rows["plain"]["network_steps_per_s"]
    pop1, pop64, pop256 = rate(1), rate(64), rate(256)
    return {
        "env pop 1 >= 0.9x plain": None if pop1 is None else pop1 >= 0.9 * plain,
        "pop 64 >= 8x plain": None if pop64 is None else pop64 >= 8 * plain,
        "pop 256 >= pop 64": None if pop256 is None or pop64 is None else pop256 >= pop64,
    }


def _fmt(value: float | None, width: int, spec: str) -> str:
    """`value` right-aligned in `width` characters, or a dash when there is none."""
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def format_table(rows: dict[str, dict[str, Any]], cuda: bool) -> str:
    """The results table, one line per configuration."""
    header = (
        f"{'config':<12} | {'net-steps/s':>12} | {'x plain':>8} | {'agent-steps/s':>13} | "
        f"{'GFLOP/s':>8} | {'peak RSS MiB':>12}"
    )
    if cuda:
        header += f" | {'cuda MiB':>9}"
    lines = [header, "-" * len(header)]
    for name, row in rows.items():
        line = (
            f"{name:<12} | {row['network_steps_per_s']:>12,.0f} | "
            f"{row['ratio_to_plain']:>7.2f}x | {_fmt(row['agent_steps_per_s'], 13, ',.0f')} | "
            f"{_fmt(row['gflops'], 8, '.2f')} | {_fmt(row['peak_rss_mib'], 12, '.0f')}"
        )
        if cuda:
            line += f" | {_fmt(row['cuda_peak_mib'], 9, '.1f')}"
        lines.append(line)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with `--quick` or the defaults filling what was not given."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.perf_env",
        description="Env throughput next to a plain PyTorch loop (see the module docstring).",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--populations", help=f"comma list (default {DEFAULTS['populations']})")
    parser.add_argument(
        "--steps", type=int, help=f"inner steps per measurement (default {DEFAULTS['steps']})"
    )
    parser.add_argument("--repeats", type=int, help=f"default {DEFAULTS['repeats']}")
    parser.add_argument("--json", default="perf_env.json", help="where to write the results")
    parser.add_argument(
        "--leak-episodes",
        type=int,
        help=f"episodes of the leak check, 0 skips it (default {DEFAULTS['leak_episodes']})",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print where each population's time goes"
    )
    parser.add_argument("--task", default="digits_mlp")
    parser.add_argument(
        "--batch-size", type=int, help="default: the task's own batch size (digits_mlp: 32)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: populations 1,8, steps 100, repeats 1, leak-episodes 5",
    )
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.populations = sorted({int(p) for p in str(args.populations).split(",")})
    except ValueError:
        parser.error(f"--populations {args.populations!r}; allowed: a comma list of ints")
    if not args.populations or min(args.populations) < 1:
        parser.error("--populations: every population must be >= 1")
    if args.steps < INTERVAL:
        parser.error(f"--steps {args.steps}; allowed: >= {INTERVAL} (one decision)")
    try:
        task = get_task(args.task)
    except ValueError as error:
        parser.error(str(error))
    if args.batch_size is None:
        args.batch_size = task.batch_size
    if args.repeats < 1 or args.leak_episodes < 0 or args.batch_size < 1:
        parser.error("--repeats and --batch-size must be >= 1, --leak-episodes >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch finds no CUDA device")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure every configuration, print the table and write the JSON file."""
    args = parse_args(argv)
    cuda = args.device == "cuda"
    specs = [Spec("plain", 0, args.task, args.batch_size, args.steps, args.device)]
    specs += [
        Spec("env", n, args.task, args.batch_size, args.steps, args.device)
        for n in args.populations
    ]
    print(
        f"perf_env: task {args.task}, batch {args.batch_size}, {args.steps} steps, "
        f"{args.repeats} repeats, device {args.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        file=sys.stderr,
        flush=True,
    )

    busy = cpu_busy_fraction()
    if busy is not None and busy > BUSY_WARNING:
        print(
            f"warning: the CPUs were {busy:.0%} busy before the run: other processes share "
            "them, so the numbers will be noisy (the round-robin only spreads the noise)",
            file=sys.stderr,
            flush=True,
        )
    sgemm = sgemm_gflops(args.device)
    runs: dict[str, list[dict[str, Any]]] = {spec.name: [] for spec in specs}
    for repeat in range(args.repeats):
        for spec in specs:  # round-robin: noise hits every configuration alike
            if repeat == 0:
                result = in_fresh_process(measure_fresh, spec, repeat)
            else:
                result = measure(spec, repeat)
            runs[spec.name].append(result)
            print(
                f"  repeat {repeat + 1}/{args.repeats} {spec.name}: {result['seconds']:.3f} s",
                file=sys.stderr,
                flush=True,
            )

    leak = None
    if args.leak_episodes > 0:
        leak_spec = Spec(
            "env", min(args.populations), args.task, args.batch_size, args.steps, args.device
        )
        leak = in_fresh_process(leak_check, leak_spec, args.leak_episodes)

    flops = flops_per_network_step(args.task, args.batch_size)
    rows = summarise(specs, runs, flops)
    targets = check_targets(rows)

    print(format_table(rows, cuda))
    print(f"sgemm {SGEMM_SIZE}x{SGEMM_SIZE} float32 on {args.device}: {sgemm:.1f} GFLOP/s")
    if leak is None:
        print("leak check: skipped (--leak-episodes 0)")
    else:
        line = (
            f"leak check (pop {leak['population']}, {leak['episodes']} episodes of "
            f"{LEAK_MAX_CYCLES}x{INTERVAL} steps): RSS {leak['rss_first_mib']:.1f} MiB after "
            f"episode 1, {leak['rss_last_mib']:.1f} MiB after episode {leak['episodes']}, "
            f"growth {leak['growth_mib']:+.1f} MiB"
        )
        if leak["cuda_allocated_first_mib"] is not None:
            line += (
                f"; cuda allocated {leak['cuda_allocated_first_mib']:.1f} -> "
                f"{leak['cuda_allocated_last_mib']:.1f} MiB"
            )
        print(line)
    profiles = {}
    if args.profile:
        for spec in specs[1:]:
            profiles[spec.name] = in_fresh_process(profile_shares, spec, 0)
            shares = ", ".join(f"{name} {share:.0%}" for name, share in profiles[spec.name])
            print(f"profile {spec.name}: {shares}")
    verdicts = {None: "n/a", True: "PASS", False: "FAIL"}
    print("targets: " + "; ".join(f"{k}: {verdicts[v]}" for k, v in targets.items()))

    report = {
        "args": dict(vars(args)),
        "machine": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cuda_device": torch.cuda.get_device_name(args.device) if cuda else None,
            "cpu_busy_before": busy,
            "load_average_after": os.getloadavg(),
        },
        "interval": INTERVAL,
        "flops_per_network_step": flops,
        "flops_formula": "3 * 2 * batch * sum(in * out) over Linear layers",
        "sgemm_gflops": sgemm,
        "configs": rows,
        "specs": [asdict(spec) for spec in specs],
        "leak": leak,
        "targets": targets,
        "profiles": profiles,
    }
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(f"results written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
