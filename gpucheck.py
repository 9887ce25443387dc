"""
The GPU check in one command: the GPU tests, the benchmark at the paper preset, path integration's
time, and three paper-preset trainings side by side on the one GPU (NMDA alpha = 10, alpha = 0,
GELU) for a fixed wall time. Prints its plan first and one table last, each figure against its
target where it has one.

    python gpucheck.py                          # on a GPU; the plan says how long at most
    python gpucheck.py --tiny                   # the same steps at tiny sizes, on a CPU in under a minute
    python gpucheck.py --skip tests,bench --train_s 300

Everything goes under --out: each step's stdout and stderr, each run's log.csv and ckpt.pt (trimmed to
its weights in bfloat16: analyze.py reads it, --resume cannot continue it), table.md and summary.json.
"""

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from functools import partial

import torch

import analyze
import cli
import gpu
import train
from model import Model

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = ("tests", "bench", "pi", "train")
RUNS = {"NMDA α = 10": ("nmda_a10", ["--act", "nmda", "--alpha", "10"]),
        "NMDA α = 0": ("nmda_a0", ["--act", "nmda", "--alpha", "0"]), "GELU": ("gelu", ["--act", "gelu"])}
TARGET_MFU, TARGET_PI_MS, TARGET_RM, TARGET_RM_S = 0.40, 2.0, 0.2, 300
SKIPPED, NO_GPU = "skipped (--skip)", "skipped: no GPU"


die = partial(cli.die, "gpucheck.py")  # bad input: one line on stderr, exit status 2


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0], allow_abbrev=False)
    p.error = die  # argparse's own complaints: one line, exit 2
    add = p.add_argument
    add("--tiny", action="store_true", help="tiny sizes (the small preset, a few steps): the whole check in under "
                                            "a minute on a CPU, where the GPU steps are skipped")
    add("--out", default="gpucheck_out", help="the folder for everything it writes (default: %(default)s)")
    add("--train_s", type=float, help="wall time of each training from its launch, compilation included; then "
                                      "SIGINT, and train.py saves and exits (default: 360; --tiny: 90, time to "
                                      "finish on a busy CPU)")
    add("--eval_interval", type=int, help="steps between the trainings' log rows (default: 250, a row every 20 s or "
                                          "so with three paper-preset runs on an H100; --tiny: 10)")
    add("--bench_steps", type=int, help="timed steps of each benchmark run (default: 10; --tiny: 2)")
    add("--tests_s", type=float, default=150, help="time limit of the GPU tests, in s (default: %(default)s)")
    add("--bench_s", type=float, default=120, help="time limit of each benchmark run, in s (default: %(default)s)")
    add("--skip", default="", help=f"steps to leave out, comma-separated: {', '.join(STEPS)} (default: none)")
    args = p.parse_args(argv)
    args.train_s = args.train_s if args.train_s is not None else 90 if args.tiny else 360
    args.eval_interval = args.eval_interval or (10 if args.tiny else 250)
    args.bench_steps = args.bench_steps or (2 if args.tiny else 10)
    args.skip = [s for s in args.skip.split(",") if s]
    for s in args.skip:
        if s not in STEPS:
            die(f"--skip {s!r}: choose from {', '.join(STEPS)}")
    for k in ("train_s", "eval_interval", "bench_steps", "tests_s", "bench_s"):
        if not getattr(args, k) > 0:
            die(f"--{k} must be positive (got {getattr(args, k)})")
    if not torch.cuda.is_available() and not args.tiny:
        die("needs a CUDA GPU, and there is none here; python gpucheck.py --tiny runs it at tiny sizes on a CPU")
    args.out = os.path.abspath(args.out)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        die(f"--out {args.out}: cannot write there ({e.strerror})")
    return args


def row(check, result, target="—", verdict="—", ok=True, **data):
    """A row of the table; data goes to summary.json only."""
    return dict(check=check, result=result, target=target, verdict=verdict, ok=ok, data=data)


def run(cmd, out, name, limit, env):
    """Run cmd here to its end or its time limit; its stdout and stderr go to out/name.out and .err.
    Returns (exit status, or None if it ran out of time; stdout; stderr; seconds)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)  # a group of its own: a time limit ends what it started too
    try:
        stdout, stderr, rc = *p.communicate(timeout=limit), p.returncode
    except BaseException as e:  # over time, or Ctrl-C
        os.killpg(p.pid, signal.SIGKILL)
        stdout, stderr, rc = *p.communicate(), None
        if not isinstance(e, subprocess.TimeoutExpired):
            raise
    for ext, text in (("out", stdout), ("err", stderr)):
        with open(os.path.join(out, f"{name}.{ext}"), "w") as f:
            f.write(text)
    return rc, stdout, stderr, time.perf_counter() - t


def failure(rc, stderr, limit):
    """'timed out', or 'crashed' and the last line it wrote on stderr."""
    last = ([line.strip() for line in stderr.splitlines() if line.strip()] or ["(nothing on stderr)"])[-1]
    return f"timed out after {limit:g} s" if rc is None else f"crashed (exit {rc}): {last[:160]}"


def pytest_counts(last):
    """{'passed': 5, 'skipped': 2, ...} from pytest's last line, as "5 passed, 2 skipped, 80 deselected in 95.2s"."""
    found = re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", last)
    return {k.replace("errors", "error"): int(n) for n, k in found}


def gpu_tests(args, env):
    check = "GPU tests (pytest -k cuda)"
    if "tests" in args.skip or not torch.cuda.is_available():
        return row(check, SKIPPED if "tests" in args.skip else NO_GPU)
    rc, out, err, s = run([sys.executable, "-m", "pytest", "-q", "test_all.py", "-k", "cuda"], args.out, "tests",
                          args.tests_s, env)
    n = pytest_counts(([line for line in out.splitlines() if line.strip()] or [""])[-1])
    result = ", ".join(f"{n.get(k, 0)} {k}" for k in ["passed", "failed", "skipped"] + ["error"] * ("error" in n))
    return row(check, failure(rc, err, args.tests_s) if rc is None else f"{result} ({s:.0f} s)", ok=rc == 0, **n)


def bench_figures(out):
    """From bench.py's output, its one-pass step: dtype, ms/step, predictions/s, MFU and peak GPU memory
    (None where it printed none); None if it printed no table."""
    head = re.search(r"^benchmark: \S+ preset, \S+ (\w+)", out, re.M)  # "benchmark: paper preset, cuda bfloat16 ..."
    one = re.search(r"^\s*one pass:(.*)$", out, re.M)  # "one pass: 85.40 ms/step | 767,823 predictions/s ... MFU 6%"
    if not (head and one):
        return None
    number = lambda pattern, text: (m := re.search(pattern, text)) and float(m[1].replace(",", ""))  # noqa: E731
    return dict(dtype=head[1], ms_per_step=number(r"([\d.]+) ms/step", one[1]),
                predictions_per_s=number(r"([\d,]+) predictions/s", one[1]),
                mfu=(mfu := number(r"MFU\s*([\d.]+)%", one[1])) and mfu / 100,
                peak_gib=number(r"peak GPU memory: ([\d.]+) GiB", out))


def benchmarks(args, env, has_arch):
    """A row per configuration of bench.py: the one-pass step's ms, predictions/s and MFU, and peak memory."""
    preset = "small" if args.tiny else "paper"
    configs = [("float32, eager", ["--dtype", "float32", "--compile", "off"]),
               ("auto dtype, eager", ["--dtype", "auto", "--compile", "off"]),
               ("auto dtype, compiled", ["--dtype", "auto", "--compile", "on"])]
    configs += [("auto dtype, compiled, --arch tem", configs[2][1] + ["--arch", "tem"])] if has_arch else []
    on_h100 = torch.cuda.is_available() and any(n in torch.cuda.get_device_name() for n in ("H100", "H200"))
    rows = []
    for label, flags in configs:
        check, compiled = f"bench.py {preset}: {label}", "on" in flags
        target = f"MFU ≥ {TARGET_MFU:.0%} (bf16 compiled, H100/H200)" if compiled else "—"
        unmeasured = "not measured" if compiled else "—"
        if "bench" in args.skip or compiled and not torch.cuda.is_available():
            rows.append(row(check, SKIPPED if "bench" in args.skip else NO_GPU, target, unmeasured))
            continue
        cmd = [sys.executable, "bench.py", "--preset", preset, "--steps", str(args.bench_steps), *flags]
        rc, out, err, s = run(cmd, args.out, "bench_" + re.sub(r"\W+", "_", label).strip("_"), args.bench_s, env)
        f = bench_figures(out)
        if rc != 0 or not f:
            rows.append(row(check, failure(rc, err, args.bench_s), target, unmeasured, ok=False))
            continue
        mfu, mem = f["mfu"], f["peak_gib"]
        result = (f"{f['dtype']}: {f['ms_per_step']:.1f} ms/step, {f['predictions_per_s']:,.0f} predictions/s, MFU "
                  f"{'n/a' if mfu is None else f'{mfu:.1%}'}, peak memory {'n/a' if mem is None else f'{mem:.2f} GiB'}"
                  f" ({s:.0f} s)")
        judged = mfu is not None and f["dtype"] == "bfloat16" and on_h100
        verdict = ("not measured (--tiny)" if args.tiny else "met" if judged and mfu >= TARGET_MFU else "not met"
                   if judged else "not measured (needs bf16 on an H100/H200)")
        rows.append(row(check, result, target, verdict if compiled else "—", **f))
    return rows


def path_integration_ms(cfg, B, T, device, dtype, reps):
    """Median ms of Model.path_integrate forward + backward on random actions, (B, T)."""
    torch.manual_seed(0)
    model = Model(cfg).to(device)
    act = torch.randint(cfg.n_actions, (B, T), device=device)
    g0 = model.random_g0(B, device=device).requires_grad_()
    autocast = nullcontext() if dtype == "float32" else torch.autocast(device.type, dtype=getattr(torch, dtype))
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None  # a time is the work's, not the launch's
    times = []
    for _ in range(3 + reps):  # 3 to warm up
        sync()
        t = time.perf_counter()
        with autocast:
            g = model.path_integrate(act, g0)  # (B, T+1, d_rnn)
        g.float().sum().backward()
        sync()
        times.append(time.perf_counter() - t)
    return sorted(times[3:])[reps // 2] * 1000


def path_integration(args, eager_ms):
    """At the target's size, and at the benchmark's as a share of its eager step (auto dtype)."""
    check, target = "path integration forward + backward", f"≤ {TARGET_PI_MS:g} ms at B = 512, T = 128"
    if "pi" in args.skip:
        return row(check, SKIPPED, target, "not measured")
    preset, reps = train.settings(["--preset", "small" if args.tiny else "paper", "--device", "cpu"])[0], 5 if args.tiny else 20
    cfg = train.configs(preset)[1]
    (B, T), Bb, Tb = (32, 64) if args.tiny else (512, 128), preset.batch_size, preset.walk_len
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = gpu.auto_settings(gpu.capability(device))[0]
    try:
        ms = path_integration_ms(cfg, B, T, device, dtype, reps)
        ms_b = ms if (B, T) == (Bb, Tb) else path_integration_ms(cfg, Bb, Tb, device, dtype, reps)
    except Exception as e:  # a crash is a result of the check, not its end
        return row(check, f"crashed: {type(e).__name__}: {' '.join(str(e).split())[:160]}", target, "not measured",
                   ok=False)
    share = f"{ms_b / eager_ms:.0%}" if eager_ms else None
    at_bench = f"; {ms_b:.2f} ms at B = {Bb}, T = {Tb}" if (B, T) != (Bb, Tb) else ""
    result = f"{ms:.2f} ms at B = {B}, T = {T}{at_bench}" + (f": {share} of bench's eager step" if share else "")
    verdict = "not measured (--tiny)" if args.tiny else "met" if ms <= TARGET_PI_MS else "not met"
    return row(check, result, target, verdict, ms=ms, B=B, T=T, ms_at_bench_size=ms_b, share_of_eager_step=share)


def stamp(pipe, path, t0, times):
    """Copy a run's stdout to path, each line after the seconds since its launch; times[step] of each log line."""
    with open(path, "w", buffering=1) as f:
        for line in pipe:
            t = time.perf_counter() - t0
            f.write(f"{t:8.1f} s | {line}")
            if m := re.match(r"step\s+(\d+)/", line):
                times[int(m[1])] = t


def trim(path):
    """Keep what analyze.py reads: the weights in bfloat16, the task's and the model's settings, args and
    step. Returns the MiB."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    keep = {k: ckpt[k] for k in ("task_config", "model_config", "args", "step", "elapsed_s")}
    keep["model"] = {k: v.bfloat16() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    torch.save(keep, path + ".tmp")
    os.replace(path + ".tmp", path)
    return os.path.getsize(path) / 2**20


def trainings(args, env):
    """The three runs side by side, each sent SIGINT at --train_s from its launch; a row each."""
    target = f"familiar RM ≤ {TARGET_RM:g} within {TARGET_RM_S} s, compilation included"
    targets = {name: (target, "not measured") if name == "NMDA α = 10" else ("—", "—") for name in RUNS}
    if "train" in args.skip:
        return [row(f"training {name}", SKIPPED, *targets[name]) for name in RUNS]
    flags = (["--preset", "small", "--max_iters", "10", "--warmup_iters", "2", "--batch_size", "16", "--walk_len", "32",
              "--d_model", "32", "--d_ff", "64", "--n_head", "2", "--eval_walks", "16", "--compile", "off"]
             if args.tiny else ["--preset", "paper"])
    flags += ["--eval_interval", str(args.eval_interval), "--overwrite"]
    runs = {}
    for name, (folder, act) in RUNS.items():
        d = os.path.join(args.out, f"run_{folder}")
        os.makedirs(d, exist_ok=True)
        for old in ("log.csv", "ckpt.pt"):  # an earlier check's files must not pass for this one's
            if os.path.exists(os.path.join(d, old)):
                os.remove(os.path.join(d, old))
        r = runs[name] = dict(dir=d, t0=time.perf_counter(), times={}, stopped=False,
                              err=open(os.path.join(d, "stderr.txt"), "w"))
        r["p"] = subprocess.Popen([sys.executable, "train.py", *flags, *act, "--out_dir", d], cwd=HERE, text=True,
                                  env={**env, "PYTHONUNBUFFERED": "1", **({"OMP_NUM_THREADS": "1"} if args.tiny else {})},
                                  stdout=subprocess.PIPE, stderr=r["err"])
        r["reader"] = threading.Thread(target=stamp, args=(r["p"].stdout, os.path.join(d, "stdout.txt"), r["t0"],
                                                           r["times"]), daemon=True)
        r["reader"].start()
    while any(r["p"].poll() is None and not r["stopped"] for r in runs.values()):
        for r in runs.values():
            if r["p"].poll() is None and not r["stopped"] and time.perf_counter() - r["t0"] >= args.train_s:
                r["p"].send_signal(signal.SIGINT)  # train.py ends the step in progress, saves ckpt.pt, exits 130
                r["stopped"] = True
        time.sleep(0.1)
    for r in runs.values():
        try:
            r["p"].wait(timeout=30 if args.tiny else 120)
        except subprocess.TimeoutExpired:
            r["p"].kill()
            r["p"].wait()
        r["ran_s"] = time.perf_counter() - r["t0"]
        r["reader"].join()
        r["err"].close()
    return [training_row(args, f"training {name}", *targets[name], r) for name, r in runs.items()]


def training_row(args, check, target, verdict, r):
    d, rc, ran_s = r["dir"], r["p"].returncode, r["ran_s"]
    log = list(csv.DictReader(open(f"{d}/log.csv"))) if os.path.exists(f"{d}/log.csv") else []
    # 130: stopped in the loop, and saved; -SIGINT: stopped while torch loaded, or as the run was ending
    ok = rc == 0 or (r["stopped"] and rc in (130, -signal.SIGINT))
    status = "finished" if rc == 0 else "stopped at the budget" if ok else failure(
        rc, open(f"{d}/stderr.txt").read(), args.train_s)
    data, saved = dict(exit=rc, log_rows=len(log)), "; no ckpt.pt"
    if os.path.exists(f"{d}/ckpt.pt"):
        mib = trim(f"{d}/ckpt.pt")
        try:
            data.update(step=analyze.load_run(d, "cpu")[2]["step"], ckpt_loads=True)
        except SystemExit:  # analyze.py said why on stderr
            data.update(ckpt_loads=False)
        data.update(ckpt_mib=round(mib, 2))
        saved = f"; ckpt.pt {mib:.1f} MiB bf16, {'loads' if data['ckpt_loads'] else 'does not load'} in analyze.py"
    if not log:
        return row(check, f"no log rows; {status}{saved}", target, verdict, ok=False, **data)
    last = {k: float(v) for k, v in log[-1].items()}
    data.update(wm_error=last["wm_error"], rm_error=last["rm_error"], ms_per_step=last["ms_per_step"])
    result = (f"step {data.get('step', int(last['step']))} at {ran_s:.0f} s, {status}; last row: familiar WM "
              f"{last['wm_error']:.3f} RM {last['rm_error']:.3f}, {last['ms_per_step']:.1f} ms/step")
    if target != "—":  # the first row at RM <= 0.2: its time from the launch, as the reader stamped its line
        hit = next((x for x in log if float(x["rm_error"]) <= TARGET_RM), None)
        if hit:
            t = r["times"].get(int(hit["step"]), float(hit["elapsed_s"]))
            data.update(rm_target_step=int(hit["step"]), rm_target_s=t, rm_target_elapsed_s=float(hit["elapsed_s"]))
        result += (f"; RM ≤ {TARGET_RM:g} at step {hit['step']}: {t:.0f} s from launch ({hit['elapsed_s']} s in "
                   f"train.py's elapsed_s, from its loop's start)" if hit else f"; RM ≤ {TARGET_RM:g} not reached")
        verdict = ("not measured (--tiny)" if args.tiny else "met" if hit and t <= TARGET_RM_S else
                   "not met" if hit or ran_s >= TARGET_RM_S else f"not measured (ran {ran_s:.0f} s)")
    return row(check, result + saved, target, verdict, ok=ok, **data)


def report(args, info, rows):
    """Write table.md and summary.json (after each step, so a check cut short keeps its rows); return the table."""
    lines = [f"GPU check: {info['device']}, torch {info['torch']}, commit {info['commit']}"
             f"{', --tiny' if args.tiny else ''}", "", "| check | result | target | verdict |", "| --- " * 4 + "|"]
    lines += ["| " + " | ".join(str(r[k]).replace("|", "\\|") for k in ("check", "result", "target", "verdict")) + " |"
              for r in rows]
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(dict(info, args=vars(args), checks=rows), f, indent=1, ensure_ascii=False)
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cuda = torch.cuda.is_available()
    env = {**os.environ, **({} if cuda or "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": "1"})}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    info = dict(device=torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)",
                torch=torch.__version__, commit=commit.stdout.strip() or "unknown",
                started=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    has_arch = "--arch" in run([sys.executable, "bench.py", "--help"], args.out, "bench_help", 60, env)[1]
    n_bench = 0 if "bench" in args.skip else 3 + has_arch if cuda else 2  # the compiled ones need a GPU
    tests_s = args.tests_s if cuda and "tests" not in args.skip else 0
    train_s, stop_s = (0, 0) if "train" in args.skip else (args.train_s, 30 if args.tiny else 120)
    total = (tests_s + n_bench * args.bench_s + train_s + stop_s) / 60
    print(f"plan: GPU tests {f'(limit {tests_s:g} s)' if tests_s else 'skipped'}, {n_bench} benchmark runs (limit "
          f"{args.bench_s:g} s each), path integration, 3 trainings side by side for {train_s:g} s (and up to "
          f"{stop_s} s to stop): at most {total:.1f} min; output in {args.out}", flush=True)
    rows = []
    for step in STEPS:
        t = time.perf_counter()
        if step == "tests":
            new = [gpu_tests(args, env)]
        elif step == "bench":
            new = benchmarks(args, env, has_arch)
        elif step == "pi":
            new = [path_integration(args, next((r["data"].get("ms_per_step") for r in rows
                                                if r["check"].endswith("auto dtype, eager")), None))]
        else:
            new = trainings(args, env)
        rows += new
        report(args, info, rows)
        print(f"{step}: done in {time.perf_counter() - t:.0f} s", *(f"  {r['check']}: {r['result']}" for r in new),
              sep="\n", flush=True)
    print(report(args, info, rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
