#!/usr/bin/env sh
# Pre-commit hook: refuse a commit whose ONNX models exceed their budget, priced from the device's table
# (no device needed, a second or so per model). pre-commit passes the staged model files as arguments.
#   HWNAS_DEVICE   device whose table prices them (default: cpu)
#   HWNAS_BUDGETS  budgets file (default: budgets.toml, see tools/ci/budgets.toml)
#   HWNAS_TABLES   folder of tables (default: latency_tables)
# Exit status is hwnas check's: 0 within budget, 1 over budget, 2 bad input.
[ "$#" -eq 0 ] && exit 0
exec hwnas check --predict --device "${HWNAS_DEVICE:-cpu}" --budget "${HWNAS_BUDGETS:-budgets.toml}" \
    --tables "${HWNAS_TABLES:-latency_tables}" "$@"
