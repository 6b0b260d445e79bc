#!/usr/bin/env bash
# Create .venv/ and install the mmdense stack in one of two flavours:
#
#   tools/install_env.sh [full]   torch, mmengine, mmcv *with* compiled ops, mmdet, mmseg,
#                                 mmpretrain, test tools, mmdense (`make install`, `make test`)
#   tools/install_env.sh lite     torch, mmengine, the pure-Python mmcv-lite, mmpretrain, mmdense:
#                                 everything the demo and pretraining import, nothing compiled
#                                 (`make install-lite`, `make demo`)
#
# A full venv serves a lite request as it is; a full request on a lite venv replaces mmcv-lite
# with the compiled mmcv (both ship the `mmcv` package: mmcv-lite is uninstalled first). The
# stamp in the venv records the flavour installed. Idempotent: returns in seconds when nothing
# changed.
#
# Environment overrides:
#   PYTHON          interpreter used to create the venv       (default: python3)
#   MMDENSE_VENV    venv location                             (default: <repo>/.venv)
#   TORCH_SPEC      torch/torchvision requirement             (default: torch==2.14.1 torchvision==0.29.1)
#   MMDENSE_CACHE   where the compiled mmcv wheel is kept     (default: ~/.cache/mmdense)
#   MAX_JOBS        parallel compile jobs for mmcv            (default: nproc)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FLAVOUR="${1:-full}"
if [[ "$FLAVOUR" != full && "$FLAVOUR" != lite ]]; then
    echo "usage: $0 [full|lite] (got '$FLAVOUR')" >&2
    exit 2
fi
VENV="${MMDENSE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
CACHE="${MMDENSE_CACHE:-$HOME/.cache/mmdense}"
MMCV_VERSION="2.1.0"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

# one line per stage: the clock time and the seconds since the script started
log() { printf '[install %s +%ss] %s\n' "$(date +%H:%M:%S)" "$SECONDS" "$*"; }

fingerprint() {
    cat "$ROOT/tools/install_env.sh" "$ROOT"/requirements/*.txt "$ROOT/setup.py"
    echo "$TORCH_SPEC $PYTHON"
}
# The stamp holds "<flavour> <fingerprint>" of the last install that finished.
STAMP="$VENV/.mmdense-install-stamp"
WANT="$(fingerprint | sha256sum | cut -d' ' -f1)"
HAVE_FLAVOUR="" HAVE=""
if [[ -f "$STAMP" ]]; then
    read -r HAVE_FLAVOUR HAVE < "$STAMP" || true
fi
if [[ "$HAVE" == "$WANT" && ( "$HAVE_FLAVOUR" == full || "$FLAVOUR" == lite ) ]]; then
    log "environment up to date ($VENV, $HAVE_FLAVOUR)"
    exit 0
fi
if [[ "$FLAVOUR" == lite && "$HAVE_FLAVOUR" == full ]]; then
    log "updating the full environment in $VENV (a full venv serves the lite route too)"
    FLAVOUR=full
fi
log "installing the $FLAVOUR environment into $VENV"

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtualenv $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
pip_quiet() {
    # The machine-wide pip config lists local indexes that lack most projects; hide that noise.
    "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2> >(grep -v '^WARNING: Location' >&2)
}
PIP=(pip_quiet)
log "upgrading pip, setuptools, wheel and ninja in $VENV"
"${PIP[@]}" install -q --upgrade pip "setuptools>=77,<81" wheel ninja

log "installing $TORCH_SPEC (several GB on first install)"
# shellcheck disable=SC2086
"${PIP[@]}" install -q $TORCH_SPEC

TORCH_VERSION="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
PY_TAG="$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')"
WHEEL_DIR="$CACHE/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$PY_TAG"

MMCV_IMPORTS="import mmcv; assert mmcv.__version__ == '$MMCV_VERSION'"
if [[ "$FLAVOUR" == lite ]]; then
    if "$VENV/bin/python" -c "$MMCV_IMPORTS" 2>/dev/null; then
        log "keeping the mmcv $MMCV_VERSION already installed"
    else
        log "installing mmcv-lite $MMCV_VERSION (pure Python, no compiled ops)"
        "${PIP[@]}" install -q "mmcv-lite==$MMCV_VERSION"
    fi
elif ! "$VENV/bin/python" -c "$MMCV_IMPORTS; import mmcv.ops" 2>/dev/null; then
    if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
        log "no cached mmcv wheel in $WHEEL_DIR: compiling mmcv $MMCV_VERSION with ops from source"
        log "this takes ~17 min on 2 cores and happens once per machine (cached afterwards)"
        BUILD="$(mktemp -d)"
        trap 'rm -rf "$BUILD"' EXIT
        "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: -d "$BUILD" "mmcv==$MMCV_VERSION"
        tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
        SRC="$BUILD/mmcv-$MMCV_VERSION"
        # torch >= 2.14 headers need C++20; mmcv 2.1.0's setup.py hard-codes C++14/17.
        sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$SRC/setup.py"
        "${PIP[@]}" install -q "mmengine==0.10.7" addict yapf packaging pyyaml opencv-python Pillow
        mkdir -p "$WHEEL_DIR"
        (cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" \
            "${PIP[@]}" wheel -v --no-build-isolation --no-deps -w "$WHEEL_DIR.tmp" . \
            > "$BUILD/mmcv-build.log" 2>&1) || {
            tail -n 60 "$BUILD/mmcv-build.log"
            log "mmcv build failed (full log above, last 60 lines)"
            exit 1
        }
        mv "$WHEEL_DIR.tmp"/mmcv-*.whl "$WHEEL_DIR"/ && rm -rf "$WHEEL_DIR.tmp"
        log "mmcv wheel cached in $WHEEL_DIR"
    else
        log "reusing cached mmcv wheel from $WHEEL_DIR"
    fi
    if "$VENV/bin/python" -m pip show -q mmcv-lite 2>/dev/null; then
        log "replacing mmcv-lite with the compiled mmcv (both ship the mmcv package)"
        "${PIP[@]}" uninstall -q -y mmcv-lite
    fi
    "${PIP[@]}" install -q "$WHEEL_DIR"/mmcv-*.whl
fi

if [[ "$FLAVOUR" == lite ]]; then
    log "installing mmengine, mmpretrain and the runtime requirements (no mmdet, no mmseg)"
    # the exact versions of the full stack, without mmcv (mmcv-lite is installed) and mmdet/mmseg
    mapfile -t PINS < <(grep -E '^(mmengine|mmpretrain)[=<>]' "$ROOT/requirements/mminstall.txt")
    "${PIP[@]}" install -q "${PINS[@]}" -r "$ROOT/requirements/runtime.txt"
else
    log "installing OpenMMLab packages and runtime/test requirements"
    "${PIP[@]}" install -q -r "$ROOT/requirements/mminstall.txt" \
        -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/transfer.txt" \
        -r "$ROOT/requirements/tests.txt"
fi
"${PIP[@]}" install -q -r "$ROOT/requirements/optional.txt" || log "optional extras failed to install (continuing)"
log "installing mmdense (editable)"
# setuptools warns (11 lines) on an editable install run from a folder that holds a folder named
# like the package, i.e. from every checkout: PYTHONWARNINGS reaches its build backend
PYTHONWARNINGS=ignore "${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

FLAVOUR="$FLAVOUR" "$VENV/bin/python" - <<'PY'
import importlib.util
import os

import mmcv, mmengine, mmpretrain, torch
import mmdense
versions = dict(torch=torch.__version__, mmengine=mmengine.__version__, mmcv=mmcv.__version__,
                mmpretrain=mmpretrain.__version__, mmdense=mmdense.__version__)
if os.environ['FLAVOUR'] == 'full':
    import mmdet, mmseg
    from mmcv.ops import RoIAlign  # noqa: F401  compiled ops must import
    versions.update(mmdet=mmdet.__version__, mmseg=mmseg.__version__)
else:
    compiled = importlib.util.find_spec('mmcv._ext') is not None
    versions['mmcv'] += ' (compiled ops)' if compiled else ' (no compiled ops)'
print(f'[install] {os.environ["FLAVOUR"]}: ' + ' | '.join(f'{k} {v}' for k, v in versions.items()))
PY
echo "$FLAVOUR $WANT" > "$STAMP"
log "done ($FLAVOUR)"
