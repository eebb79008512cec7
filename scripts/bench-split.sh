#!/usr/bin/env bash
# Training with the layers split among devices, against one device, on loopback: steps/s and the
# bytes sent per step between gguftune and each `gguftune rpc-server` (issue 19).
#
# The model: demo_inputs' `split` shape (hidden 512, 8 layers, 8/4 heads, ffn 1408, vocab 4096;
# random weights) in q8_0; LoRA rank 16 on every projection, --ctx 64 --batch 1 (every sequence
# full), --val-split 0. Two rpc-servers on 127.0.0.1 with --threads 1 each (one core each), and
# gguftune with --threads 1. Configurations:
#   cpu     no --device: this process's CPU alone (the reference for speed and for the losses)
#   single  --device rpc:A                              (the baseline of the ratios)
#   split   --device rpc:A,rpc:B --split 1,1            (half the layers on each server)
#   cpu+rpc --device cpu,rpc:B --split 1,1              (half here, half on a server)
# Speed: BENCH_REPEAT runs of BENCH_STEPS steps each, straight to the servers; steps/s over the
# steps after the first (the first also allocates and first touches every buffer), the median run;
# and one run of a single step (its seconds: setup excluded, first touch included).
# Bytes: each server behind scripts/tcp-count.py (a TCP proxy that counts ggml's RPC messages by
# command and by phase); runs of BENCH_STEPS and 2 x BENCH_STEPS steps: their difference /
# BENCH_STEPS is the traffic of one step, the rest of a run is one-time (weights and LoRA state
# uploaded, the LoRA state read back at the end). A run of one step gives the same from a single
# run: the proxy's "graphs" phase (from the first graph computation to the end of the last).
# Two more byte measurements say what the per-step traffic grows with: the split at twice the
# tokens (--ctx 2 x BENCH_CTX), and the split of a model of half the layers.
# Losses: the learning-rate schedule spans --max-steps, so runs are compared only with runs of the
# same model, ctx and step count; cpu runs (kind "loss") give every such group a reference. The
# device runs of a group (single, split, cpu+rpc: all under ggml's scheduler, one thread per device)
# must agree bit for bit, the cpu runs likewise, and a device run with the cpu run within 1e-3
# relative: the cpu run, without the scheduler, rounds differently (~1e-5 relative from step 3 or
# 4, which the optimizer carries on: ~2e-4 by step 8). A failed run (a server that aborts) is
# reported with its command, and the server restarted: neither is hidden. The script exits 1 when
# a run failed or a loss differed, after printing everything.
#
# Usage: scripts/bench-split.sh [WORKDIR]   (default target/bench-split)
# Environment: GGUFTUNE (a gguftune binary; default: build target/release/gguftune);
#   BENCH_STEPS (default 4), BENCH_REPEAT (default 3), BENCH_CTX (default 64),
#   SPLIT_LAYERS (default 8; even).
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-target/bench-split}"
steps="${BENCH_STEPS:-4}"
repeat="${BENCH_REPEAT:-3}"
ctx="${BENCH_CTX:-64}"
layers="${SPLIT_LAYERS:-8}"
for v in steps repeat ctx layers; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "bench-split: $v must be a positive integer, not '${!v}'" >&2; exit 2; }
done
((steps >= 2)) || { echo "bench-split: BENCH_STEPS must be at least 2 (the first step is left out of steps/s)" >&2; exit 2; }
((layers % 2 == 0)) || { echo "bench-split: SPLIT_LAYERS must be even, not $layers" >&2; exit 2; }
if [ -n "${GGUFTUNE:-}" ]; then
  bin="$GGUFTUNE"
  cargo build --release --locked --example demo_inputs
else
  cargo build --release --locked --bin gguftune --example demo_inputs
  bin=./target/release/gguftune
fi
mkdir -p "$work"
work="$(cd "$work" && pwd)"
results="$work/results.jsonl"
: > "$results"

# Inputs: the model split in the comparisons, and one of half its layers for the scaling check.
inputs() { # layers -> prints the model folder
  local dir="$work/split-${1}l"
  [ -f "$dir/train.jsonl" ] || nice ./target/release/examples/demo_inputs "$dir" split 64 "$1" >&2
  [ -f "$dir/model-q8_0.gguf" ] || nice "$bin" convert "$dir/hf-model" -o "$dir/model-q8_0.gguf" --type q8_0 >&2 2>/dev/null
  echo "$dir"
}
model_dir=$(inputs "$layers")
half_dir=$(inputs $((layers / 2)))

# Servers and proxies, stopped (by their process ids) on exit; a server that died is restarted.
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { # port: until it accepts a connection (10 s)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench-split: nothing listens on 127.0.0.1:$1 after 10 s" >&2
  exit 1
}
declare -A port proxy_port server_pid
start_server() { # A|B
  nice "$bin" rpc-server --host 127.0.0.1 --port "${port[$1]}" --threads 1 >> "$work/server-$1.log" 2>&1 &
  server_pid[$1]=$!
  pids+=($!)
  wait_port "${port[$1]}"
}
for s in A B; do
  port[$s]=$(free_port)
  : > "$work/server-$s.log"
  start_server "$s"
  rm -f "$work/proxy-$s.json"
  python3 scripts/tcp-count.py "127.0.0.1:${port[$s]}" "$work/proxy-$s.json" 2> "$work/proxy-$s.log" &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$work/proxy-$s.json" ] && break; sleep 0.1; done
  proxy_port[$s]=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["port"])' "$work/proxy-$s.json")
done
settled() { # server: waits (10 s) until the proxy has no connection open
  for _ in $(seq 100); do
    python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["open"] != 0)' "$work/proxy-$1.json" && return 0
    sleep 0.1
  done
  echo "bench-split: a connection through the proxy of server $1 is still open 10 s after the run" >&2
  exit 1
}
devices() { # config, ports of A and B -> the --device/--split arguments
  case "$1" in
    cpu) echo "" ;;
    single) echo "--device rpc:127.0.0.1:$2" ;;
    split) echo "--device rpc:127.0.0.1:$2,rpc:127.0.0.1:$3 --split 1,1" ;;
    cpu+rpc) echo "--device cpu,rpc:127.0.0.1:$3 --split 1,1" ;;
  esac
}
commands=()
failed=0
# run CONFIG KIND(time|bytes|loss) STEPS MODEL_DIR CTX: one finetune run, its result appended to $results.
run() {
  local config=$1 kind=$2 n=$3 dir=$4 c=$5 a b rc=0 s
  if [ "$kind" = bytes ]; then a=${proxy_port[A]} b=${proxy_port[B]}; else a=${port[A]} b=${port[B]}; fi
  local out="$work/run"
  rm -rf "$out" && mkdir -p "$out"
  # shellcheck disable=SC2046 # the device arguments are words
  local -a cmd=("$bin" finetune "$dir/model-q8_0.gguf" --data "$dir/train.jsonl" -o "$out/adapter.gguf" --ctx "$c" --batch 1
    --rank 16 --targets q,k,v,o,gate,up,down --val-split 0 --max-steps "$n" --threads 1 $(devices "$config" "$a" "$b") --json)
  if [ "$kind" = bytes ]; then for s in A B; do settled "$s"; cp "$work/proxy-$s.json" "$out/before-$s.json"; done; fi
  for s in A B; do wc -l < "$work/server-$s.log" > "$out/server-$s.lines"; done
  nice "${cmd[@]}" > "$out/summary.json" 2> "$out/finetune.log" || rc=$?
  if [ "$kind" = bytes ]; then for s in A B; do settled "$s"; cp "$work/proxy-$s.json" "$out/after-$s.json"; done; fi
  local shown="${cmd[*]}"
  shown="${shown//$work/\$WORK}"
  if ((rc != 0)); then
    failed=1
    echo "bench-split: FAILED (exit $rc): $shown" >&2
    grep -v '^#\|^\[\|^[0-9]' "$out/finetune.log" | head -n 3 >&2 || true
    for s in A B; do
      tail -n +"$(($(cat "$out/server-$s.lines") + 1))" "$work/server-$s.log" | grep -m1 ASSERT | sed "s/^/  server $s: /" >&2 || true
      kill -0 "${server_pid[$s]}" 2>/dev/null || { echo "  server $s died; restarting it" >&2; start_server "$s"; }
    done
  fi
  python3 - "$config" "$kind" "$n" "$c" "$dir" "$out" "$rc" "$shown" >> "$results" <<'PY'
import json, os, sys
config, kind, n, ctx, model_dir, out, rc, cmd = sys.argv[1:]
row = {"config": config, "kind": kind, "steps": int(n), "ctx": int(ctx), "model": os.path.basename(model_dir),
       "model_bytes": os.path.getsize(f"{model_dir}/model-q8_0.gguf"), "rc": int(rc), "command": cmd}
if rc == "0":
    summary = json.loads(open(f"{out}/summary.json").read().strip().splitlines()[-1])
    metrics = [json.loads(l) for l in open(f"{out}/adapter.metrics.jsonl") if '"loss"' in l and '"val_loss"' not in l]
    row.update(ran_steps=summary["steps"], step_seconds=[m["tokens"] / m["tokens_per_second"] for m in metrics],
               losses=[m["loss"] for m in metrics], placement=summary.get("placement"))
if kind == "bytes":
    def diff(before, after):
        if isinstance(after, dict):
            return {k: diff(before.get(k, [0, 0]), v) for k, v in after.items()}
        return [x - y for x, y in zip(after, before)]
    traffic = {}
    for s in "AB":
        b, a = (json.load(open(f"{out}/{w}-{s}.json")) for w in ("before", "after"))
        t = {"total": [a["sent"] - b["sent"], a["received"] - b["received"]],
             "by_phase": diff(b["by_phase"], a["by_phase"]), "by_command": diff(b["by_command"], a["by_command"])}
        t["by_command"] = {k: v for k, v in t["by_command"].items() if v != [0, 0]}
        t["graphs"] = a["graphs"][len(b["graphs"]):]
        t["transfers"] = a["transfers"][len(b["transfers"]):]
        if t["total"] != [0, 0]:
            traffic[s] = t
    row["traffic"] = traffic
print(json.dumps(row))
PY
  [[ " ${commands[*]} " == *" $shown "* ]] || commands+=("$shown")
}

configs=(cpu single split cpu+rpc)
echo "bench-split: $repeat x $steps steps per configuration for speed, then byte counts ($work)" >&2
for ((r = 1; r <= repeat; r++)); do
  for config in "${configs[@]}"; do run "$config" time "$steps" "$model_dir" "$ctx"; done
done
for config in "${configs[@]}"; do run "$config" time 1 "$model_dir" "$ctx"; done
for config in single split cpu+rpc; do
  for n in 1 "$steps" $((2 * steps)); do run "$config" bytes "$n" "$model_dir" "$ctx"; done
done
# What the per-step traffic grows with: twice the tokens, half the layers.
for n in 1 "$steps" $((2 * steps)); do run split bytes "$n" "$model_dir" $((2 * ctx)); done
for n in 1 "$steps" $((2 * steps)); do run split bytes "$n" "$half_dir" "$ctx"; done
# cpu references for the losses of the byte runs (the schedule depends on the step count).
run cpu loss $((2 * steps)) "$model_dir" "$ctx"
for n in 1 "$steps" $((2 * steps)); do run cpu loss "$n" "$model_dir" $((2 * ctx)); done
for n in 1 "$steps" $((2 * steps)); do run cpu loss "$n" "$half_dir" "$ctx"; done

echo
echo "rpc-servers: $bin rpc-server --host 127.0.0.1 --port PORT --threads 1 (A: ${port[A]}, B: ${port[B]}),"
echo "each behind scripts/tcp-count.py 127.0.0.1:PORT STATUS_FILE (A: ${proxy_port[A]}, B: ${proxy_port[B]})"
echo "commands (WORK=$work; byte runs go to the proxies' ports, speed runs to the servers'):"
printf '  %s\n' "${commands[@]}"
python3 - "$results" "$steps" <<'PY' || failed=1
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = int(sys.argv[2])
mib, kib = (lambda b: b / 2**20), (lambda b: b / 2**10)
ok = [r for r in rows if r["rc"] == 0]
cpu = next(r for r in ok if r["config"] == "cpu" and r["kind"] == "time" and r["steps"] == steps)
model, ctx = cpu["model"], cpu["ctx"]

print()
print(f"speed: {model} q8_0 ({mib(cpu['model_bytes']):.1f} MiB), ctx {ctx} batch 1; steps/s over steps 2..{steps} "
      f"of each run (median, min-max), and the seconds of a run's only step")
print(f"{'config':<9} {'runs ok':>7} {'steps/s':>8} {'(min-max)':>14} {'vs single':>10} {'1-step s':>9}  placement")
speed = {}
for config in ("cpu", "single", "split", "cpu+rpc"):
    runs = [r for r in rows if r["config"] == config and r["kind"] == "time" and r["steps"] == steps]
    good = [r for r in runs if r["rc"] == 0]
    rates = sorted((len(r["step_seconds"]) - 1) / sum(r["step_seconds"][1:]) for r in good)
    speed[config] = statistics.median(rates) if rates else None
    first = next((r for r in rows if r["config"] == config and r["kind"] == "time" and r["steps"] == 1), None)
    placement = next((r["placement"] for r in ok if r["config"] == config and r.get("placement")), None)
    where = "; ".join(f'{b["backend"]}: {b["nodes"]} nodes' for b in placement["backends"]) if placement else ""
    where = f'{placement["splits"]} splits; {where}' if placement else "CPU (no scheduler)"
    base = speed.get("single")
    rate = f"{speed[config]:>8.3f} {f'({rates[0]:.3f}-{rates[-1]:.3f})':>14}" if rates else f"{'failed':>8} {'':>14}"
    ratio = f"{speed[config] / base:>10.2f}" if rates and base else f"{'':>10}"
    one = f"{first['step_seconds'][0]:>9.3f}" if first and first["rc"] == 0 else f"{'failed':>9}"
    print(f"{config:<9} {f'{len(good)}/{len(runs)}':>7} {rate} {ratio} {one}  {where}")

print()
print(f"bytes, per server: sent = gguftune -> server, received = server -> gguftune (KiB). per step = (run of {2 * steps} steps "
      f"- run of {steps}) / {steps}; 1 step = a one-step run's traffic from its first graph to its last (proxy phase "
      f"'graphs'); of which graphs = the serialized graphs (RPC GRAPH_COMPUTE); one-time = a {steps}-step run less "
      f"{steps} x per step (MiB)")
def find(config, m, c, n):
    return next((r for r in rows if r["kind"] == "bytes" and r["config"] == config and r["model"] == m and r["ctx"] == c
                 and r["steps"] == n), None)
cases = [("single", model, ctx), ("split", model, ctx), ("cpu+rpc", model, ctx), ("split", model, 2 * ctx)]
half = next((r["model"] for r in rows if r["model"] != model), None)
if half:
    cases.append(("split", half, ctx))
print(f"{'config':<8} {'model':<10} {'ctx':>4} {'server':>6} {'per step sent':>13} {'recv':>8} {'1 step sent':>11} {'recv':>8} "
      f"{'graphs':>8} {'one-time sent':>13} {'recv':>7} {'per step / single':>17} {'model MiB':>9}")
single_step = None
for config, m, c in cases:
    one, n1, n2 = find(config, m, c, 1), find(config, m, c, steps), find(config, m, c, 2 * steps)
    for s in "AB":
        have = [r for r in (one, n1, n2) if r and s in r.get("traffic", {})]
        if not have:
            continue
        per = once = None
        if n1 and n2 and n1["rc"] == 0 and n2["rc"] == 0:
            per = [(x - y) / steps for x, y in zip(n2["traffic"][s]["total"], n1["traffic"][s]["total"])]
            once = [x - steps * p for x, p in zip(n1["traffic"][s]["total"], per)]
        if config == "single" and per:
            single_step = sum(per)
        g = one["traffic"][s] if one and one["rc"] == 0 and s in one["traffic"] else None
        f = lambda v, w, d=1: f"{v:>{w}.{d}f}" if v is not None else f"{'failed':>{w}}"
        print(f"{config:<8} {m:<10} {c:>4} {s:>6} {f(per and kib(per[0]), 13)} {f(per and kib(per[1]), 8)} "
              f"{f(g and kib(g['by_phase']['graphs'][0]), 11)} {f(g and kib(g['by_phase']['graphs'][1]), 8)} "
              f"{f(g and kib(g['by_command'].get('GRAPH_COMPUTE', [0])[0]), 8)} "
              f"{f(once and mib(once[0]), 13, 2)} {f(once and mib(once[1]), 7, 2)} "
              f"{f(per and single_step and sum(per) / single_step, 17, 2)} {mib(r['model_bytes'] if (r := have[0]) else 0):>9.1f}")

print()
print(f"by command, one-step runs (KiB sent / received), {model} unless named:")
for config, m, c in cases:
    one = find(config, m, c, 1)
    if not one or one["rc"] != 0:
        continue
    for s, t in one["traffic"].items():
        parts = ", ".join(f"{k} {kib(v[0]):.1f}/{kib(v[1]):.1f}" for k, v in sorted(t["by_command"].items(), key=lambda kv: -sum(kv[1])))
        print(f"  {config} {m} ctx {c} server {s}: {parts}")
print()
print("graphs computed in a one-step run, per server: how many, and the largest messages (nodes / tensors described / KiB):")
for config, m, c in cases:
    one = find(config, m, c, 1)
    if not one or one["rc"] != 0:
        continue
    for s, t in one["traffic"].items():
        g = t["graphs"]
        top = ", ".join(f"{n}/{k}/{kib(b):.0f}" for n, k, b in sorted(g, key=lambda x: -x[2])[:4])
        print(f"  {config} {m} ctx {c} server {s}: {len(g)} graphs, {kib(sum(x[2] for x in g)):.0f} KiB; largest: {top}")
print()
print("tensor data moved during a one-step run's graphs (after the first graph, before the last), per server: "
      "set = to the server, get = from it (name: KiB x times)")
for config, m, c in cases:
    one = find(config, m, c, 1)
    if not one or one["rc"] != 0:
        continue
    for s, t in one["traffic"].items():
        moved = {}
        for graphs, way, name, size in t["transfers"]:
            if 1 <= graphs < len(t["graphs"]):
                k = moved.setdefault((way, name), [0, 0])
                k[0] += size
                k[1] += 1
        total = sum(v[0] for v in moved.values())
        top = ", ".join(f"{way} {name}: {kib(b):.1f} x{n}" for (way, name), (b, n) in sorted(moved.items(), key=lambda kv: -kv[1][0])[:8])
        print(f"  {config} {m} ctx {c} server {s}: {kib(total):.1f} KiB in {sum(v[1] for v in moved.values())} transfers; {top}")

print()
bad = [r for r in rows if r["rc"] != 0]
for r in bad:
    print(f"FAILED (exit {r['rc']}): {r['command']}")
differ, worst = [], 0.0
groups = {}
for r in ok:
    groups.setdefault((r["model"], r["ctx"], r["steps"]), []).append(r)
def name(r):
    return f'{r["config"]} ({r["kind"]}, {r["model"]} ctx {r["ctx"]}, {r["steps"]} steps)'
for key, runs in sorted(groups.items()):
    cpu_ref = next((r for r in runs if r["config"] == "cpu"), None)
    dev_ref = next((r for r in runs if r["config"] != "cpu"), None)
    for r in runs:
        ref = cpu_ref if r["config"] == "cpu" else dev_ref
        if r is not ref and r["losses"] != ref["losses"]:
            differ.append(f"{name(r)}: losses {r['losses']}, not bit for bit those of {name(ref)}: {ref['losses']}")
    if cpu_ref and dev_ref:
        for i, (x, y) in enumerate(zip(dev_ref["losses"], cpu_ref["losses"])):
            worst = max(worst, abs(x - y) / abs(y))
            if abs(x - y) > 1e-3 * abs(y):
                differ.append(f"{name(dev_ref)}: step {i + 1} loss {x:.6f}, {name(cpu_ref)} {y:.6f}")
                break
    elif dev_ref:
        differ.append(f"{name(dev_ref)}: no cpu run of {key} to compare with")
for line in differ:
    print(f"LOSS DIFFERS: {line}")
if not bad and not differ:
    print(f"every run finished; in each of {len(groups)} groups of runs (model, ctx, steps) the device runs' losses "
          f"agree bit for bit, and with the cpu run's within {worst:.1e} relative")
sys.exit(1 if bad or differ else 0)
PY
exit "$failed"
