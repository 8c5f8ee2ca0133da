"""``python -m tools.bench_search``: the command issue #22 named for ``python -m tools.bench.search`` (the rigs now
live in ``tools/bench/``); same options, same output."""

from tools.bench.search import main

if __name__ == "__main__":
    main()
