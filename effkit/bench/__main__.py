"""``python -m effkit.bench memory MODEL_DIR ...``: the peak-memory child process."""

from effkit.bench.memory import main

raise SystemExit(main())
