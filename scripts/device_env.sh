# Sourced by the scripts/device_*.sh runs: from the repository root, install the wheels carried in .whl/ (packages the
# device machine lacks: diffusers, trimesh, ...) into /tmp/site, and put them and the repository on PYTHONPATH.
if [ -d .whl ]; then
  rm -rf /tmp/site  # a warm machine keeps an earlier install: start clean
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
