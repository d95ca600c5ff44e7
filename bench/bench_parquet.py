"""Parquet codec and row-group choice for vlbeam's tables: size, write and read speed of a
10,000-row `pages` table (the real schema, realistic OCR text) under each codec, plus the size
and footer share of a typical small per-run file, and two row-group sizes. Prints tables and
writes JSON.

    .venv/bin/python bench/bench_parquet.py [--rows 10000] [--rounds 5] [--corpus DIR] [--out FILE]

Page text: a word-bigram chain over the text layers of the corpus PDFs (`DIR/pdf/good`,
default `$VLBEAM_CORPUS` or `../shared/corpus`), so rows are distinct (repeated pages or
sentences would let dictionary encoding or a large window flatter a codec); page lengths follow
the real pages'. Without a corpus, a seeded Zipf vocabulary stands in (the script says which).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import os
import platform
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vlbeam.schemas import PAGES, SCHEMA_VERSION
from vlbeam.schemas.parquet import CODEC, CODEC_LEVEL, ROW_GROUP_BYTES

REPO = Path(__file__).resolve().parents[1]

# (label, compression, compression_level)
CODECS = [
    ("none", "none", None),
    ("snappy", "snappy", None),
    ("lz4", "lz4", None),
    ("gzip (6)", "gzip", None),
    ("zstd 1", "zstd", 1),
    ("zstd 3", "zstd", 3),
    ("zstd 9", "zstd", 9),
]


def default_corpus() -> Path:
    env = os.environ.get("VLBEAM_CORPUS")
    return Path(env) if env else REPO.parent / "shared" / "corpus"


def real_pages(corpus: Path) -> list[str]:
    """The text layer of every page of the corpus's good PDFs (empty pages dropped)."""
    import pypdfium2 as pdfium

    pages = []
    for path in sorted((corpus / "pdf" / "good").glob("*.pdf")):
        try:
            doc = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError:
            continue
        try:
            for i in range(len(doc)):
                textpage = doc[i].get_textpage()
                text = textpage.get_text_bounded().replace("\r\n", "\n").strip()
                textpage.close()
                if len(text) > 200:
                    pages.append(text)
        finally:
            doc.close()
    return pages


def synthetic_pages(rng: random.Random, n: int = 400) -> list[str]:
    vocab = [
        "".join(rng.choice("etaoinshrdlucmfwypvbgkqjxz") for _ in range(rng.randint(2, 10)))
        for _ in range(5000)
    ]
    weights = [1 / (k + 1) for k in range(len(vocab))]
    return [
        ". ".join(
            " ".join(rng.choices(vocab, weights, k=rng.randint(6, 20)))
            for _ in range(rng.randint(10, 40))
        )
        for _ in range(n)
    ]


def page_texts(rows: int, pages: list[str], rng: random.Random) -> list[str]:
    """`rows` distinct texts, each as long as some real page, from a word-bigram chain over
    the real pages: the words, line breaks and word pairs of real text, but no long passage
    repeated across rows (a pool of repeated sentences would flatter codecs with larger
    windows)."""
    follows: dict[str, list[str]] = {}
    for page in pages:
        words = re.findall(r"\S+|\n", page)
        for a, b in itertools.pairwise(words):
            follows.setdefault(a, []).append(b)
    starts = list(follows)
    out = []
    for _ in range(rows):
        target = len(rng.choice(pages))
        word, parts, size = rng.choice(starts), [], 0
        while size < target:
            parts.append(word)
            size += len(word) + 1
            nxt = follows.get(word)
            word = rng.choice(nxt) if nxt else rng.choice(starts)
        out.append(" ".join(parts).replace(" \n ", "\n"))
    return out


def pages_table(rows: int, texts: list[str], rng: random.Random) -> pa.Table:
    docs = max(1, rows // 12)  # about 12 pages per document
    doc_ids = [hashlib.sha256(f"doc{d}".encode()).hexdigest() for d in range(docs)]
    data = []
    page_of: dict[int, int] = {}
    for i in range(rows):
        d = min(i * docs // rows, docs - 1)
        page_of[d] = page_of.get(d, 0) + 1
        text = texts[i]
        scanned = rng.random() < 0.4
        data.append(
            {
                "doc_id": doc_ids[d],
                "source_uri": f"gs://bucket/scans/2026/11/{d // 100:03d}/document-{d:06d}.pdf",
                "page_number": page_of[d],
                "width_px": rng.choice([911, 996, 1288]),
                "height_px": 1288,
                "text": "# " + text[:60] + "\n\n" + text,
                "text_layer": None if scanned else text,
                "model": "Qwen/Qwen3-VL-8B-Instruct",
                "backend": "transformers",
                "prompt_id": "ocr_markdown_v1-3f2a9c",
                "input_tokens": rng.randint(1100, 1700),
                "output_tokens": max(1, len(text) // 4),
                "finish_reason": "stop" if rng.random() < 0.98 else "length",
                "latency_s": round(rng.uniform(2.0, 9.0), 3),
                "provider": None,
                "served_model": None,
                "request_id": None,
                "reasoning": None,
                "cost_usd": None,
                "run_id": "20261201T020000Z-4be1a7",
            }
        )
    return pa.Table.from_pylist(data, schema=PAGES)


def write(table: pa.Table, path: str, codec: str, level, row_group_size=None) -> None:
    with pq.ParquetWriter(
        path,
        table.schema,
        compression=codec,
        compression_level=level,
        use_compliant_nested_type=True,
    ) as writer:
        writer.write_table(table, row_group_size=row_group_size)


def timed(fn, rounds: int) -> tuple[float, float]:
    """Median CPU seconds (this process, every thread: what the work costs, whatever else the
    machine runs) and median wall seconds."""
    cpu, wall = [], []
    for _ in range(rounds):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return statistics.median(cpu), statistics.median(wall)


def measure(
    table: pa.Table, folder: str, label: str, codec: str, level, rounds: int, row_group_size=None
) -> dict:
    import duckdb

    path = os.path.join(folder, f"{label.replace(' ', '_')}-{row_group_size}.parquet")
    found = {}
    found["write"] = timed(lambda: write(table, path, codec, level, row_group_size), rounds)
    meta = pq.ParquetFile(path).metadata
    found["read_all"] = timed(lambda: pq.read_table(path), rounds)
    found["read_text"] = timed(lambda: pq.read_table(path, columns=["text"]), rounds)
    found["read_narrow"] = timed(
        lambda: pq.read_table(path, columns=["doc_id", "page_number"]), rounds
    )
    con = duckdb.connect()
    found["duckdb_text"] = timed(
        lambda: con.execute("SELECT sum(length(text)) FROM read_parquet(?)", [path]).fetchone(),
        rounds,
    )
    con.close()
    result = {
        "codec": label,
        "row_group_size": row_group_size or table.num_rows,
        "row_groups": meta.num_row_groups,
        "bytes": os.path.getsize(path),
        "footer_bytes": meta.serialized_size,
    }
    for name, (cpu, wall) in found.items():
        result[f"{name}_s"], result[f"{name}_wall_s"] = cpu, wall
    return result


def small_file(table: pa.Table, label: str, codec: str, level) -> dict:
    buf = io.BytesIO()
    write(table, buf, codec, level)
    meta = pq.ParquetFile(io.BytesIO(buf.getvalue())).metadata
    return {
        "codec": label,
        "rows": table.num_rows,
        "bytes": len(buf.getvalue()),
        "footer_bytes": meta.serialized_size,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=default_corpus())
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/bench_parquet.json")
    args = parser.parse_args(argv)

    rng = random.Random(20261201)
    pool = real_pages(args.corpus) if (args.corpus / "pdf" / "good").is_dir() else []
    source = f"text layers of {len(pool)} corpus pages" if pool else "synthetic Zipf text"
    if not pool:
        pool = synthetic_pages(rng)
    table = pages_table(args.rows, page_texts(args.rows, pool, rng), rng)
    print(
        f"pages table: {table.num_rows} rows, {table.nbytes / 2**20:.1f} MiB in Arrow "
        f"(text from {source}); median of {args.rounds} rounds; load {os.getloadavg()[0]:.2f}"
    )

    results, small, groups = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for label, codec, level in CODECS:
            results.append(measure(table, folder, label, codec, level, args.rounds))
        base = results[0]
        print("\ntimes: median CPU seconds of this process, all threads (wall times in the JSON)")
        print(
            f"\n{'codec':10} {'MiB':>7} {'x none':>7} {'write s':>8} {'read s':>7} "
            f"{'text s':>7} {'narrow s':>8} {'duckdb s':>8}"
        )
        for r in results:
            r["size_vs_none"] = r["bytes"] / base["bytes"]
            print(
                f"{r['codec']:10} {r['bytes'] / 2**20:7.2f} {r['size_vs_none']:7.3f} "
                f"{r['write_s']:8.3f} {r['read_all_s']:7.3f} {r['read_text_s']:7.3f} "
                f"{r['read_narrow_s']:8.4f} {r['duckdb_text_s']:8.3f}"
            )

        run = table.slice(0, 20)  # one nightly run's small file
        for label, codec, level in CODECS:
            small.append(small_file(run, label, codec, level))
        print(f"\nsmall file (a {run.num_rows}-row run):\n{'codec':10} {'KiB':>7} {'footer %':>8}")
        for s in small:
            print(
                f"{s['codec']:10} {s['bytes'] / 1024:7.1f} "
                f"{100 * s['footer_bytes'] / s['bytes']:8.1f}"
            )

        for rows_per_group in (1_000, args.rows):
            groups.append(measure(table, folder, "zstd 1", "zstd", 1, args.rounds, rows_per_group))
        print(
            f"\nrow groups (zstd 1):\n{'rows/group':>10} {'groups':>6} {'MiB':>7} "
            f"{'write s':>8} {'read s':>7} {'narrow s':>8}"
        )
        for g in groups:
            print(
                f"{g['row_group_size']:10} {g['row_groups']:6} {g['bytes'] / 2**20:7.2f} "
                f"{g['write_s']:8.3f} {g['read_all_s']:7.3f} {g['read_narrow_s']:8.4f}"
            )

    print(
        f"\nvlbeam writes: codec={CODEC} level={CODEC_LEVEL}, row groups of up to "
        f"{ROW_GROUP_BYTES // 2**20} MiB (Arrow size), schema version {SCHEMA_VERSION}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "rows": table.num_rows,
                "arrow_bytes": table.nbytes,
                "text_source": source,
                "rounds": args.rounds,
                "codecs": results,
                "small_file": small,
                "row_groups": groups,
                "chosen": {
                    "codec": CODEC,
                    "level": CODEC_LEVEL,
                    "row_group_bytes": ROW_GROUP_BYTES,
                },
                "versions": {"pyarrow": pa.__version__, "python": platform.python_version()},
                "cpus": os.cpu_count(),
                "load_avg": os.getloadavg(),
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
