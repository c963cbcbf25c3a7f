"""Training-step throughput and peak memory side by side: effnet vs timm, each config in its own process.

Every configuration runs in a fresh child process (peak RSS is per process), round-robin over
``--rounds`` rounds so that machine noise is shared; each child does warm-up steps and then ``--steps``
timed optimizer steps (forward, backward, SGD step) at batch ``--batch`` and the model's resolution.

Rows marked ``+ tcmalloc`` run the child under tcmalloc (``LD_PRELOAD``), as ``effnet train`` does by itself
when Debian's libtcmalloc-minimal4 is installed; timm's model gets the same row for a like-for-like ratio.

With ``--turns``, img/s comes from steps interleaved instead: every configuration of one allocator is built in one
process, one process per allocator, and the processes take turns -- each runs one step of every configuration,
then hands over -- so that all configurations share the machine's drift within seconds (the per-process runs
drifted 20% between runs in timm's own speed). Peak memory still comes from the processes of their own; their
img/s is kept in the JSON as ``img_per_s_alone``. Not the default: beside each other the models run 10-20% slower
than alone (measured on B0), each step finding the caches and the allocator's free lists as another model left them.

    python benchmarks/bench_train.py [--model efficientnet_b0] [--batch 16] [--steps 5] [--rounds 2]
    python benchmarks/bench_train.py --goals   # the configurations issue 35's training goal compares, and its table
    python benchmarks/bench_train.py --turns   # img/s from steps interleaved across configurations
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from effnet.cpu import machine  # noqa: E402
from effnet.train.allocator import tcmalloc_library  # noqa: E402

CONFIGS = {
    "timm eager": dict(lib="timm"),
    "timm CL + bf16": dict(lib="timm", cl=True, bf16=True),
    "effnet eager": dict(lib="effnet"),
    "effnet CL + bf16": dict(lib="effnet", cl=True, bf16=True),
    "effnet CL + bf16 plain dw": dict(lib="effnet", cl=True, bf16=True, plain_dw=True),
    "effnet CL + bf16 + mem-eff": dict(lib="effnet", cl=True, bf16=True, memeff=True),
    "effnet CL + bf16 + ckpt": dict(lib="effnet", cl=True, bf16=True, ckpt=True),
    "effnet CL + bf16 + mem-eff + ckpt": dict(lib="effnet", cl=True, bf16=True, memeff=True, ckpt=True),
    "effnet CL + bf16 + compile": dict(lib="effnet", cl=True, bf16=True, compile=True),
    "effnet CL + bf16 + compile + ckpt": dict(lib="effnet", cl=True, bf16=True, compile=True, ckpt=True),
    **{f"effnet CL + bf16 + mem-eff + ckpt {k} stages + tcmalloc": dict(
        lib="effnet", cl=True, bf16=True, memeff=True, ckpt=True, ckpt_stages=k, malloc="tcmalloc") for k in (2, 3, 4, 5)},
    "timm CL + bf16 + tcmalloc": dict(lib="timm", cl=True, bf16=True, malloc="tcmalloc"),
    "effnet CL + bf16 + tcmalloc": dict(lib="effnet", cl=True, bf16=True, malloc="tcmalloc"),
    "effnet CL + bf16 + mem-eff + tcmalloc": dict(lib="effnet", cl=True, bf16=True, memeff=True, malloc="tcmalloc"),
    "effnet CL + bf16 + mem-eff + ckpt + tcmalloc": dict(lib="effnet", cl=True, bf16=True, memeff=True, ckpt=True,
                                                         malloc="tcmalloc"),
}

# the training goal (benchmarks/goals.py): timm's channels-last + bf16 beside effnet's leanest configurations, each
# under the default allocator and under tcmalloc (what `effnet train` preloads), compared like for like
GOAL_CONFIGS = ("timm CL + bf16", "timm CL + bf16 + tcmalloc", "effnet CL + bf16", "effnet CL + bf16 + tcmalloc",
                "effnet CL + bf16 + mem-eff + tcmalloc", "effnet CL + bf16 + mem-eff + ckpt",
                "effnet CL + bf16 + mem-eff + ckpt + tcmalloc",
                *(f"effnet CL + bf16 + mem-eff + ckpt {k} stages + tcmalloc" for k in (2, 3, 4, 5)))

# a training step for one configuration: ``build(cfg)`` returns the step and its warm-up count; the children below
# are code strings so that a timm child imports neither effnet nor this file (its peak memory is timm's own)
BUILD = r"""
import json, sys, time, torch
sys.path.insert(0, {root!r})
from benchmarks.bench_infer import peak_mib
model_name = {model!r}; batch = {batch}

def build(cfg):
    torch.manual_seed(0)
    if cfg["lib"] == "timm":
        import timm
        model = timm.create_model(model_name)
        res = 224 if model_name.endswith("b0") else model.pretrained_cfg["input_size"][-1]
    else:
        import effnet
        model = effnet.create_model(model_name)
        res = model.config.resolution
        model.set_memory_efficient(cfg.get("memeff", False))
        model.set_grad_checkpointing(bool(cfg.get("ckpt", False)), cfg.get("ckpt_stages"))
        if cfg.get("plain_dw"):  # the depthwise convs as plain nn.Conv2d: bf16 gradients from oneDNN
            from effnet.models.nets.layers import DepthwiseConv2d
            for m in model.modules():
                if isinstance(m, DepthwiseConv2d):
                    m.__class__ = torch.nn.Conv2d
    model.train()
    if cfg.get("cl"):
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    fwd = torch.compile(model) if cfg.get("compile") else model
    x = torch.randn(batch, 3, res, res)
    if cfg.get("cl"):
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(cfg.get("bf16"))):
            loss = loss_fn(fwd(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step, 3 if cfg.get("compile") else 2  # compiled: the first steps compile forward and backward
"""

# one configuration in a process of its own: warm-up, ``steps`` timed steps, the process's peak memory
CHILD = BUILD + r"""
step, warm = build(json.loads({cfg!r}))
for _ in range(warm):
    step()
times = []
for _ in range({steps}):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print(json.dumps(dict(times=times, peak_rss_mib=peak_mib())))
"""

# every configuration of one allocator in one process, taking turns with the other processes: on each "go" line,
# one timed step of each configuration (the order reversed every other turn), their times as a JSON line
TURNS = BUILD + r"""
steps = {{name: build(cfg) for name, cfg in json.loads({cfgs!r})}}
for step, warm in steps.values():
    for _ in range(warm):
        step()
print("ready", flush=True)
names = list(steps)
for turn, line in enumerate(sys.stdin):
    times = {{}}
    for name in names[::-1] if turn % 2 else names:
        t = time.perf_counter(); steps[name][0](); times[name] = time.perf_counter() - t
    print(json.dumps(times), flush=True)
"""


def child_env(cfg: dict) -> dict | None:
    """The environment a configuration runs in: tcmalloc preloaded for the ``+ tcmalloc`` rows, as ``effnet train``
    does (effnet/train/allocator.py); None where that row cannot run here."""
    env = dict(os.environ)
    if cfg.get("malloc") == "tcmalloc":
        if tcmalloc_library() is None:
            return None
        env["LD_PRELOAD"] = tcmalloc_library()
    return env


def alone(names: list[str], model: str, batch: int, steps: int, rounds: int) -> dict[str, list[dict]]:
    """Each configuration in a process of its own, round-robin over ``rounds``: step times and peak memory."""
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(rounds):
        for name in names:
            env = child_env(CONFIGS[name])
            if env is None:
                print(f"{name}: skipped, libtcmalloc-minimal4 is not installed", file=sys.stderr)
                continue
            code = CHILD.format(root=str(ROOT), cfg=json.dumps(CONFIGS[name]), model=model, batch=batch, steps=steps)
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
            if proc.returncode != 0:
                print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return runs


def in_turns(names: list[str], model: str, batch: int, steps: int) -> dict[str, list[float]]:
    """Step times of ``names`` interleaved: one process per allocator holding all of its configurations, the
    processes taking turns (one step of each configuration a turn), ``steps`` turns each."""
    groups: dict[str, list[str]] = {}
    for name in names:
        if child_env(CONFIGS[name]) is not None:
            groups.setdefault(CONFIGS[name].get("malloc", "system"), []).append(name)
    procs = []
    for members in groups.values():
        code = TURNS.format(root=str(ROOT), model=model, batch=batch,
                            cfgs=json.dumps([(n, CONFIGS[n]) for n in members]))
        procs.append(subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, cwd=ROOT, env=child_env(CONFIGS[members[0]])))
    times: dict[str, list[float]] = {n: [] for group in groups.values() for n in group}

    def failed(proc) -> RuntimeError:
        proc.kill()
        return RuntimeError(f"a --turns child failed (exit {proc.wait()}); its stderr is above")

    try:
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise failed(proc)
        for _ in range(steps):
            for proc in procs:
                try:
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                except BrokenPipeError:
                    raise failed(proc) from None
                answer = proc.stdout.readline()
                if not answer:
                    raise failed(proc)
                for name, seconds in json.loads(answer).items():
                    times[name].append(seconds)
    finally:
        for proc in procs:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            proc.wait()
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--json", default="bench-out/bench_train.json")
    ap.add_argument("--goals", action="store_true", help="only the goal's configurations, and the goal table")
    ap.add_argument("--turns", action="store_true",
                    help="img/s from steps interleaved across configurations (peak memory still from their own runs)")
    ap.add_argument("--turn-steps", type=int, default=12, help="timed steps of each configuration with --turns")
    args = ap.parse_args()
    names = list(GOAL_CONFIGS) if args.goals else [n for n in args.configs.split(",") if n in CONFIGS]
    runs = alone(names, args.model, args.batch, args.steps, args.rounds)
    turns = in_turns(names, args.model, args.batch, args.turn_steps) if args.turns else {}
    rows = []
    for name, rs in runs.items():
        if not rs:
            continue
        med = statistics.median(t for r in rs for t in r["times"])
        row = dict(config=name, img_per_s=args.batch / med, median_step_s=med,
                   peak_rss_mib=max(r["peak_rss_mib"] for r in rs))
        if turns.get(name):  # the interleaved speed replaces the one measured alone
            med = statistics.median(turns[name])
            row.update(img_per_s=args.batch / med, median_step_s=med, img_per_s_alone=row["img_per_s"])
        rows.append(row)
    by = {r["config"]: r for r in rows}
    how = (f"img/s: medians of {args.turn_steps} interleaved steps; peak memory: " if turns else "medians of ")
    print(f"training {args.model}, batch {args.batch}, {how}{args.steps} x {args.rounds} steps alone")
    print(f"{'config':<28} {'img/s':>7} {'peak RSS MiB':>12} {'speed x timm CL+bf16':>20} {'mem x timm CL+bf16':>18} "
          f"{'speed x timm':>12} {'mem x timm':>10}")
    for r in rows:
        def rel(ref: str, key: str) -> str:
            return f"{r[key] / by[ref][key]:.2f}" if ref in by else "-"

        print(f"{r['config']:<28} {r['img_per_s']:>7.2f} {r['peak_rss_mib']:>12.0f} {rel('timm CL + bf16', 'img_per_s'):>20} "
              f"{rel('timm CL + bf16', 'peak_rss_mib'):>18} {rel('timm eager', 'img_per_s'):>12} "
              f"{rel('timm eager', 'peak_rss_mib'):>10}")
    from benchmarks.goals import table, training_goals

    goals = training_goals(rows)
    print(table(goals, machine()))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(machine=machine(), model=args.model, batch=args.batch, rows=rows, raw=runs,
                                   turns=turns, goals=[g.row() for g in goals]), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
