"""One model replica's memory, mapped weights against read weights (README "Serving settings", weight files).

  .venv/bin/python bench/llama_memory.py qwen2.5-coder-1.5b          # read into memory (shipped)
  .venv/bin/python bench/llama_memory.py qwen2.5-coder-1.5b --mmap   # mapped

Loads the model as a replica does (2 threads), answers once to warm up, times one 64-token answer and prints this
process's PSS, RSS and anonymous memory from /proc/self/smaps_rollup, as JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.backend import GenerationRequest  # noqa: E402
from models.catalogue import load_catalogue  # noqa: E402
from models.registry import make_backend  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=load_catalogue().names())
    parser.add_argument("--mmap", action="store_true", help="map the weight file instead of reading it")
    args = parser.parse_args()
    backend = make_backend(load_catalogue().model(args.model), threads=2, mmap=args.mmap)
    request = GenerationRequest(messages=[{"role": "user", "content": "Write a story about a robot."}],
                                max_tokens=64, temperature=0.0)
    asyncio.run(backend.generate(request))
    started = time.perf_counter()
    answer = asyncio.run(backend.generate(request))
    elapsed = time.perf_counter() - started
    fields = dict(line.split(":", 1) for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])
    mib = {k: int(fields[k].split()[0]) // 1024 for k in ("Pss", "Rss", "Anonymous")}
    print(json.dumps({"model": args.model, "mmap": args.mmap, "pss_mib": mib["Pss"], "rss_mib": mib["Rss"],
                      "anonymous_mib": mib["Anonymous"], "tokens_per_s": round(answer.output_tokens / elapsed, 1)}))


if __name__ == "__main__":
    main()
