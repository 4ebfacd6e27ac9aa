"""`ganno bench` with an end-of-run cooldown added to some controllers (an experiment).

Over the last `--fraction` of the decisions no layer's LR may grow by more than `--cap`
per decision: a policy's factor is capped at its largest factor <= `--cap`, and bold
driver's next LR at `--cap` times its last one. `docs/results.md` ("An end-of-run
cooldown") asks whether the agents lose to bold driver by holding their LR at the end::

    python -m benchmarks.cooldown_check --cool ganno,ganno_global -- \\
        --suite unseen --policy pretrained --out runs/bench_cooldown

Everything after `--` goes to `ganno bench`, which runs in this process (one worker), so
the cooldown reaches every run. The records carry the same inputs as plain runs: give
the experiment its own `--out` folder, since a plain benchmark's folder would mix them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import benchmarks.runner as runner
from ganno_env.cli import _positive_float, names_from
from ganno_env.cli import main as ganno_main
from ganno_env.controllers import BoldDriver, Controller
from ganno_env.policy import PolicyController

COOLABLE = ("ganno", "ganno_global", "bold_driver")


def add_cooldown(controller: Controller, fraction: float, cap: float) -> Controller:
    """The same controller, its LR growth capped at `cap` per decision from decision
    `(1 - fraction) * max_cycles` on."""

    def cooling() -> bool:
        return controller.t >= controller.horizon * (1.0 - fraction)

    choose = controller.choose
    if isinstance(controller, PolicyController):
        factors = [float(f) for f in controller.payload["lr_factors"]]
        allowed = [i for i, f in enumerate(factors) if f <= cap]
        if not allowed:
            raise ValueError(f"--cap {cap}: the policy's factors {factors} have none <= it")
        if factors != sorted(factors):  # a smaller index must mean a smaller factor
            raise ValueError(f"the policy's factors {factors} are not in rising order")
        top = max(allowed)

        def capped(observations: dict, infos: dict) -> dict:
            actions = choose(observations, infos)
            if cooling():
                actions = {agent: min(int(a), top) for agent, a in actions.items()}
            return actions

    elif isinstance(controller, BoldDriver):

        def capped(observations: dict, infos: dict) -> dict:
            if not cooling():
                return choose(observations, infos)
            before = {agent: controller.lr[agent] for agent in observations}
            choose(observations, infos)  # the rule's step, then the cap
            for agent in observations:
                controller.lr[agent] = min(controller.lr[agent], cap * before[agent])
            return controller.set_lrs({agent: controller.lr[agent] for agent in observations})

    else:
        raise ValueError(f"no cooldown for {controller.name!r}; allowed: {', '.join(COOLABLE)}")
    controller.choose = capped  # type: ignore[method-assign]
    return controller


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}; allowed: a number in (0, 1]")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cool", type=names_from(COOLABLE), required=True, help="controllers to cool"
    )
    parser.add_argument("--fraction", type=_fraction, default=0.25, help="of the decisions")
    parser.add_argument("--cap", type=_positive_float, default=0.8, help="largest LR factor then")
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="-- then `ganno bench` args")
    args = parser.parse_args(argv)
    bench = args.bench[1:] if args.bench[:1] == ["--"] else args.bench
    if "--workers" in bench or "--address" in bench:
        parser.error("the cooldown reaches runs in this process only; leave out --workers")
    make = runner.make

    def cooled(controller: str, policy: str | None) -> Any:
        made = make(controller, policy)
        if controller in args.cool:
            add_cooldown(made, args.fraction, args.cap)
        return made

    runner.make = cooled
    try:
        return ganno_main(["bench", *bench, "--workers", "1"])
    finally:
        runner.make = make


if __name__ == "__main__":
    raise SystemExit(main())
