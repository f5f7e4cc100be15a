#!/bin/bash
# On the GPU machine: build albef against its CUDA LibTorch (pip torch) with the packed Debian
# dependencies, then run every command family with --device cuda on the bundled data.
# Made here by scripts/cuda/pack_deps.sh (build-cuda/sysroot.tar.xz travels with the tree); writes $OUT.
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
t0=$(date +%s); stamp() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$OUT/summary.txt"; }
{
  nvidia-smi -L; python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda, torch.cuda.is_available())'
  cmake --version | head -1; g++ --version | head -1; which nvcc && nvcc --version | tail -2; nproc
} > "$OUT/probe.txt" 2>&1
cat "$OUT/probe.txt"
SYS=$PWD/build-cuda/sysroot; rm -rf "$SYS"; tar -C build-cuda -xJf build-cuda/sysroot.tar.xz
grep -rlI '/usr/' "$SYS/usr/lib/x86_64-linux-gnu/cmake" "$SYS/usr/share/cmake" "$SYS/usr/lib/x86_64-linux-gnu/pkgconfig" \
  | xargs sed -i "s#\([\" =;:]\)/usr/#\1$SYS/usr/#g"
# Libraries were packed under their sonames; point the full version names cmake's targets name at them.
LIBDIR=$SYS/usr/lib/x86_64-linux-gnu
grep -rhoE "lib[A-Za-z0-9_+-]*\.so\.[0-9.]*[0-9]" "$LIBDIR/cmake" "$SYS/usr/share/cmake" 2>/dev/null | sort -u |
while read -r b; do [ -e "$LIBDIR/$b" ] && continue
  for c in $(ls "$LIBDIR" | grep -F "${b%%.so*}.so." | sort -r); do ln -sf "$c" "$LIBDIR/$b"; echo "linked $b -> $c"; break; done; done
export LD_LIBRARY_PATH=$SYS/usr/lib/x86_64-linux-gnu PKG_CONFIG_LIBDIR=$SYS/usr/lib/x86_64-linux-gnu/pkgconfig
TORCH_PREFIX=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
NVCC=$(which nvcc || echo /usr/local/cuda/bin/nvcc)
stamp configure
cmake -S . -B build-cuda/build -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$SYS/usr" \
  -DCMAKE_LIBRARY_ARCHITECTURE=x86_64-linux-gnu -DPKG_CONFIG_EXECUTABLE="$SYS/usr/bin/pkgconf" \
  -DCMAKE_CUDA_COMPILER="$NVCC" -DCUDAToolkit_ROOT="$(dirname "$(dirname "$NVCC")")" -DTORCH_CUDA_ARCH_LIST=9.0 \
  -DALBEF_BUILD_TESTS=OFF -DALBEF_BUILD_PYTHON=OFF -DALBEF_WITH_DNNL=OFF \
  -DCMAKE_EXE_LINKER_FLAGS="-Wl,--no-as-needed -Wl,-rpath-link,$SYS/usr/lib/x86_64-linux-gnu" > "$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; cat build-cuda/build/CMakeFiles/CMakeError.log 2>/dev/null | tail -20; exit 1; }
stamp build
cmake --build build-cuda/build -j16 --target albef_cli -- -k >> "$OUT/build.log" 2>&1
rc=$?; stamp "build rc=$rc"
if [ $rc -ne 0 ]; then grep -E 'error|Error' "$OUT/build.log" | grep -v '^make' | sort -u | head -60; exit 1; fi
A=build-cuda/build/albef; R=runs/cuda; mkdir -p $R
run() { local name=$1; shift; local s=$(date +%s)
  timeout 240 "$@" > "$R/$name.log" 2>&1; local c=$?
  stamp "$name rc=$c $(( $(date +%s) - s ))s"; tail -n 4 "$R/$name.log" | sed 's/^/    /' | tee -a "$OUT/summary.txt"; }
D="--device cuda"
run pretrain $A pretrain --overwrite --config configs/demo.yaml --output_dir $R/pre --epochs 40 --keep 1 --print_freq 80 $D
ls $R/pre/checkpoint_*.pth >/dev/null 2>&1 || { cat $R/pretrain.log | tail -n 30; exit 1; }
ck=$(ls $R/pre/checkpoint_*.pth | sort | tail -n 1)
run retrieval_zero_shot $A retrieval --config configs/demo_retrieval.yaml --checkpoint "$ck" --output_dir $R/zs --evaluate $D
run retrieval_finetune $A retrieval --overwrite --config configs/demo_retrieval.yaml --checkpoint "$ck" --output_dir $R/ret --epochs 3 --keep 1 $D
run vqa $A vqa --overwrite --config configs/demo_vqa.yaml --checkpoint "$ck" --output_dir $R/vqa --epochs 2 --keep 1 $D
run ask $A ask --config configs/demo_vqa.yaml --checkpoint "$(ls $R/vqa/checkpoint_*.pth | sort | tail -n 1)" \
  --image data/coco-by/images/000000525891.jpg --question "What color is the sign?" --top 3 $D
run pretrain_nlvr $A pretrain_nlvr --overwrite --config configs/demo_nlvr_pretrain.yaml --checkpoint "$ck" --output_dir $R/np --epochs 1 --keep 1 $D
run nlvr $A nlvr --overwrite --config configs/demo_nlvr.yaml --checkpoint "$(ls $R/np/checkpoint_*.pth | sort | tail -n 1)" --output_dir $R/nlvr --epochs 1 --keep 1 $D
run ve $A ve --overwrite --config configs/demo_ve.yaml --checkpoint "$ck" --output_dir $R/ve --epochs 1 --keep 1 $D
run gradcam $A gradcam --config configs/demo_retrieval.yaml --checkpoint "$ck" --image data/coco-by/images/000000525891.jpg \
  --text "a stop sign" --block_num 1 --out $R/gradcam $D
run int8_refused $A embed --config configs/demo_retrieval.yaml --checkpoint "$ck" --image data/coco-by/images/000000525891.jpg --out $R/e8 --precision int8 $D
run launch_two_cpu_processes $A launch --nproc 2 retrieval --config configs/demo_retrieval.yaml --checkpoint "$ck" --output_dir $R/zs2 --evaluate
imgs=$(ls data/coco-by/images/*.jpg | head -8 | sed 's/^/--image /' | tr '\n' ' ')
for p in "cpu fp32" "cuda fp32" "cuda bf16"; do set -- $p
  run embed_$1_$2 $A embed --config configs/demo_retrieval.yaml --checkpoint "$ck" $imgs --text "a stop sign" --text "a man riding a horse" \
    --out $R/embed_$1_$2 --device $1 --precision $2
done
python3 - $R > "$OUT/parity.txt" 2>&1 <<'PY'
import sys, numpy as np
R = sys.argv[1]
for kind in ("image_feat", "text_feat"):
    cpu = np.load(f"{R}/embed_cpu_fp32/{kind}.npy")
    for other in ("cuda_fp32", "cuda_bf16"):
        x = np.load(f"{R}/embed_{other}/{kind}.npy")
        cos = (cpu * x).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(x, axis=1)
        print(f"{kind} cpu_fp32 vs {other}: max |diff| {np.abs(cpu - x).max():.2e}, min cosine {cos.min():.6f}")
PY
cat "$OUT/parity.txt" | tee -a "$OUT/summary.txt"
grep -h 'steps/s\|r_mean\|acc\|loss' $R/pretrain.log | tail -3 >> "$OUT/summary.txt"
tar -czf "$OUT/runs.tgz" -C runs cuda --exclude='*.pth' 2>/dev/null
stamp done
