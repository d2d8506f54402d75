#!/usr/bin/env bash
# Mutation testing of the DLP package (sidecars/egress/dlp) with mutmut 3.
#
# mutmut names each mutant after the file's path below its root and compares that with the
# module's __name__ at run time, so the package must be imported under the name its path gives.
# The bundle imports it as `dlp` (sidecars/egress is on its PYTHONPATH), so the run happens in a
# stage whose root holds `dlp/`: the tests see it through BOTTLE_TUI_TEST_SIDECARS, whose egress
# folder is mutmut's own `mutants/` copy. The stage is kept between runs (mutmut resumes and
# re-tests only what changed); `MUTMUT_FRESH=1` starts over.
#
#   scripts/mutmut-dlp.sh [PY] [MUTMUT ARGS...]   (default: run; e.g. `results`, `show NAME`)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-$root/.venv/bin/python}
[[ $py = /* ]] || py=$PWD/$py  # absolute, without resolving the venv's symlink
shift || true
stage=${MUTMUT_STAGE:-$root/.mutmut}
tests=(tests/sidecars/test_dlp.py tests/sidecars/test_dlp_corpus.py tests/sidecars/test_dlp_fail_closed.py
       tests/sidecars/test_dlp_provenance.py)

"$py" -c 'import mutmut' 2>/dev/null || "$py" -m pip install -q 'mutmut==3.8.1'
[ -n "${MUTMUT_FRESH:-}" ] && rm -rf "$stage"
mkdir -p "$stage/side" "$stage/tests/sidecars"

# The sources: the package to mutate, and (copied beside it into mutants/) the rest of egress.
rm -rf "$stage/dlp" && cp -a "$root/sidecars/egress/dlp" "$stage/dlp"
egress_modules=""
for f in "$root"/sidecars/egress/*.py; do
    cp -p "$f" "$stage/"
    egress_modules+="\"$(basename "$f")\", "
done
# The sidecars' folders as the tests see them: egress is the mutated copy, the rest this checkout's.
ln -sfn ../mutants "$stage/side/egress"
ln -sfn "$root/sidecars/common" "$stage/side/common"
ln -sfn "$root/sidecars/daemons.json" "$stage/side/daemons.json"
rm -rf "$stage/tests/support" && cp -a "$root/tests/support" "$stage/tests/support"
cp -p "$root/tests/__init__.py" "$stage/tests/"
cp -p "$root/tests/sidecars/__init__.py" "$root/tests/sidecars/dlp_rules.toml" "$stage/tests/sidecars/"
for t in "${tests[@]}"; do cp -p "$root/$t" "$stage/$t"; done

quoted=$(printf '"%s", ' "${tests[@]}")
cat > "$stage/pyproject.toml" <<EOF
[tool.mutmut]
source_paths = ["dlp/"]
also_copy = ["tests/", ${egress_modules%, }]
pytest_add_cli_args_test_selection = [${quoted%, }]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:randomly"]

[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
filterwarnings = ["ignore::DeprecationWarning"]
EOF

cd "$stage"
export BOTTLE_TUI_TEST_SIDECARS="$stage/side" PYTHONDONTWRITEBYTECODE=1
if [ $# -eq 0 ]; then set -- run; fi
exec "$py" -m mutmut "$@"
