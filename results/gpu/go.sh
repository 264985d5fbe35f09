#!/usr/bin/env bash
# The gpu profile on the lent 2 x H200 machine.  go.sh start COMMIT | go.sh wait SECONDS | go.sh pack
set -u
RUN=/tmp/run
status() {
  cd $RUN
  echo "== elapsed $(( $(date +%s) - $(cat t0) )) s; rc $(cat sm.rc 2>/dev/null || echo running)"
  grep -E "steps \(|^Error|Exiting|failed" sm.log | tail -6
  nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
  ls results/gpu/logs 2>/dev/null | tr '\n' ' '; echo
}
pack() {
  cd $RUN
  python3 -m pip freeze > pip_freeze.txt 2>/dev/null
  tar --exclude='*.npy' --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' -cf - results/gpu figures/gpu sm.log sm.rc t0 t1 \
      gpu.txt pip_freeze.txt 2>/dev/null | xz -1 -T8 > /tmp/pack.tar.xz
  split -b 15M -d /tmp/pack.tar.xz $OUT/results_gpu.tar.xz.
  ls -la $OUT
}
case "$1" in
start)
  rm -rf $RUN && mkdir -p $RUN && tar --exclude=./.wh -cf - . | tar -xf - -C $RUN
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .wh/*.whl || exit 3
  cd $RUN
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv > gpu.txt; cat gpu.txt
  export PYTHONPATH=/tmp/site:$RUN PATH=/tmp/site/bin:$PATH LAPR_GIT_COMMIT=$2
  python3 -c "import snakemake, lm_eval, fla, datasets, lapr; print('imports ok')" || exit 4
  date +%s > t0
  setsid nohup bash -c "python3 -m snakemake --profile workflow/profiles/gpu > sm.log 2>&1; echo \$? > sm.rc; date +%s > t1" \
      > /dev/null 2>&1 < /dev/null &
  sleep 20; status ;;
wait)
  cd $RUN; end=$(( $(date +%s) + $2 ))
  while [ ! -f sm.rc ] && [ $(date +%s) -lt $end ]; do sleep 10; done
  status; pack ;;
pack) status; pack ;;
esac
