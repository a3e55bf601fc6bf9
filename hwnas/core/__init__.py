"""Infrastructure every stage uses: errors, registries, lazy imports, atomic writes, validated reading, host
facts, statistics, progress, plotting."""
