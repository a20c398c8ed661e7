#!/usr/bin/env bash
# The test command: ./test.sh [pytest args]     e.g. ./test.sh -m "not e2e" -x
#
# Works on a fresh clone with nothing installed by hand: it makes .venv with the dev extras
# (./install.sh --dev --no-hooks --no-daemon: no Claude Code settings touched, no daemon),
# installs the pinned Claude Code CLI into .tools/claude-code for the end-to-end tests, then
# runs pytest. Both steps are skipped when already up to date, so reruns start at once.
# Every test runs with a temp HOME, CLAUDE_CONFIG_DIR and UNDERSTUDY_HOME (tests/conftest.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
root=$(pwd -P)

./install.sh --dev --no-hooks --no-daemon --quiet

claude_version=2.1.328
tools="$root/.tools/claude-code"
claude="$tools/node_modules/.bin/claude"
installed_version() {
  sed -n 's/^ *"version": "\(.*\)",*$/\1/p' "$tools/node_modules/@anthropic-ai/claude-code/package.json" 2>/dev/null | head -n 1
}
if ! [ -x "$claude" ] || [ "$(installed_version)" != "$claude_version" ]; then
  command -v npm >/dev/null || { echo "test.sh: npm not found; install Node.js 18+ with npm" >&2; exit 1; }
  mkdir -p "$tools"
  # A package.json of its own, so npm installs here and not into some parent project.
  [ -f "$tools/package.json" ] || echo '{"private": true}' >"$tools/package.json"
  (cd "$tools" && npm install --no-audit --no-fund --save-exact --loglevel=error \
    "@anthropic-ai/claude-code@$claude_version" >/dev/null)
  echo "claude:  installed Claude Code $(installed_version) in .tools/claude-code"
else
  echo "claude:  Claude Code $claude_version up to date"
fi
# The version matrix (tests/test_claude_versions.py, MATRIX there): older CLIs, each in its own
# folder: the oldest 2.0.x and a 2.1.x before prompt ids; and a 1.0.x that knows neither
# SessionStart nor SessionEnd (its own test there).
for old_version in 2.0.0 2.1.42 1.0.60; do
  dir="$root/.tools/claude-code-$old_version"
  [ -x "$dir/node_modules/.bin/claude" ] && continue
  mkdir -p "$dir" && echo '{"private": true}' >"$dir/package.json"
  (cd "$dir" && npm install --no-audit --no-fund --save-exact --loglevel=error \
    "@anthropic-ai/claude-code@$old_version" >/dev/null)
  echo "claude:  installed Claude Code $old_version in .tools/claude-code-$old_version"
done
export UNDERSTUDY_CLAUDE_BIN="$claude"
# The judging-page test drives the system's headless Chromium; install it where apt-get can.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    && echo "chromium: installed $(chromium --version 2>/dev/null)" || echo "chromium: apt-get install chromium failed; its test will skip" >&2
fi
# A hung test fails after this many seconds instead of eating the CI budget (pytest-timeout).
# Generous: fixtures that train the shared tiny student count towards their first test.
export PYTEST_TIMEOUT="${PYTEST_TIMEOUT:-1500}"

exec "$root/.venv/bin/pytest" "$@"
