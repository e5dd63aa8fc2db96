#!/usr/bin/env bash
# Run the GPU-side figures of the benchmarks on a machine with a CUDA GPU, into OUTDIR (default out/gpu).
#
#   bash benchmarks/gpu_session.sh [bench|study|all] [OUTDIR]
#
# bench: CPU-vs-CUDA agreement (backend_agreement.py), CPU-vs-Vulkan agreement (--tiny, f64 and f32; skipped
#        when Taichi finds no Vulkan device), DEM throughput at 10k / 100k / 1M particles
#        (bench_dem.py), host launches / syncs / µs per step at 60 particles (bench_host_traffic.py), FV solver
#        throughput (bench_fva.py);
# study: both full-size study scenarios end to end with `pelletsim run --backend cuda` (no .vti: ~1 GB each).
# Each step has its own time limit (STEP_S, seconds) so that one slow step cannot eat the others' time; a step
# that fails is reported and the script goes on. Python is run as $PY (default python3), with the repository
# on PYTHONPATH (no install needed besides the dependencies).
set -u
what=${1:-all}
out=${2:-out/gpu}
PY=${PY:-python3}
STEP_S=${STEP_S:-300}
BACKEND=${BACKEND:-cuda}     # BACKEND=cpu with small sizes: a smoke run of this script
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
step() {   # step NAME CMD...: run with a time limit, log to $out/NAME.log, print the tail and the status
    local name=$1; shift
    local t0=$SECONDS
    timeout "$STEP_S" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc, $((SECONDS - t0)) s"
    tail -n 12 "$out/$name.log"
}
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
if [[ $what == bench || $what == all ]]; then
    step agreement "$PY" benchmarks/backend_agreement.py --backends "cpu,$BACKEND" ${AGREE_ARGS:-} \
        --out "$out/agreement_cpu_$BACKEND.json"
    if "$PY" -c "import sys; from fva.backend import _arch_available; sys.exit(0 if _arch_available('vulkan') else 3)" \
            2> /dev/null; then
        for fp in f64 f32; do
            step "agreement_vulkan_$fp" "$PY" benchmarks/backend_agreement.py --backends cpu,vulkan --tiny --fp "$fp" \
                --out "$out/agreement_cpu_vulkan_tiny_$fp.json"
        done
    else
        echo "== agreement_vulkan: skipped (no Vulkan device for Taichi here)"
    fi
    step dem "$PY" benchmarks/bench_dem.py --backend "$BACKEND" --sizes "${DEM_SIZES:-10000,100000,1000000}" \
        --out "$out/dem_$BACKEND.json"
    # the engine's host overhead per step at 60 particles through `pelletsim run` (blocks of steps, dem.block)
    step host_traffic "$PY" benchmarks/bench_host_traffic.py --backend "$BACKEND" --repeats 2 \
        --out "$out/host_traffic_$BACKEND.json"
    step fva "$PY" benchmarks/bench_fva.py --backend "$BACKEND" --sizes "${FVA_SIZES:-128,256,384}" --no-peers \
        --out "$out/fva_$BACKEND.json"
fi
if [[ $what == study || $what == all ]]; then
    for s in ${STUDIES:-variable_pressure stack_pressure}; do
        step "$s" "$PY" -m dem.cli run "scenarios/schneider2023_$s.toml" -o "$out/$s" --backend "$BACKEND" \
            --set run.write_vti=false ${STUDY_SET:-}
        cp "$out/$s/results.json" "$out/${s}_results.json" 2> /dev/null
    done
fi
# one archive of what a remote run should bring back (results, logs, histories, packings, figures; no .vtu/.vti)
tar czf "$out.tgz" --exclude='*.vtu' --exclude='*.vtp' --exclude='*.vti' -C "$(dirname "$out")" "$(basename "$out")"
ls -la "$out.tgz"
