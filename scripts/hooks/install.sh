#!/usr/bin/env bash
# Installs scripts/hooks/pre-commit as this clone's pre-commit hook: a symlink, so that changes to
# the hook apply at once. Run by `make setup`; quiet when already installed. Leaves any other
# pre-commit hook in place (and says so), and does nothing in CI or outside a git work tree.
set -euo pipefail
cd "$(dirname "$0")/../.."

[ -z "${CI:-}" ] || exit 0
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || exit 0

hooks=$(git rev-parse --git-path hooks)
mkdir -p "$hooks"
target=$hooks/pre-commit
source=$(realpath --relative-to="$(realpath "$hooks")" scripts/hooks/pre-commit)
if [ -L "$target" ] && [ "$(readlink "$target")" = "$source" ]; then exit 0; fi
if [ -e "$target" ] || [ -L "$target" ]; then
  echo "hooks: $target exists and is not ours; left alone (see scripts/hooks/pre-commit)" >&2
  exit 0
fi
ln -s "$source" "$target"
echo "hooks: installed the pre-commit hook (format, lint, typecheck of staged files; skip with --no-verify)" >&2
