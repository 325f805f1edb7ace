"""Bench results for people: a rich table, and the README/performance-table row."""

from __future__ import annotations

from rich.table import Table

from llava.markdown import markdown_row, markdown_table

GIB = 1024 ** 3
PERFORMANCE_HEADER = ("stage", "profile", "device", "samples/s", "MFU", "peak memory", "date")
SPEEDUP_HEADER = ("stage", "fast / seed samples/s", "max relative loss difference per step", "fast packing, loss")


def _num(value, spec: str = ".3g", none: str = "n/a") -> str:
    return none if value is None else format(value, spec)


def result_table(result: dict) -> Table:
    table = Table(title=f"llava-kit bench {result['stage']} ({result['size']}, profile {result['profile']}) "
                        f"on {result['device']}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    loader = result["dataloader"]
    rows = [
        ("parameters", f"{result['parameters']['total'] / 1e6:.1f} M"),
        ("global batch / per device", f"{result['global_batch']} / {result['per_device_batch']}"),
        ("deepspeed / optim", f"{result['deepspeed']} / {result['optim']}"),
        ("attention / packing", f"{result['attn_implementation']} / {result['packing']}"),
        ("loss", f"{result['loss_impl_effective']} (asked {result['loss_impl']}), {result['loss_average']}"),
    ]
    if "samples_per_s" in result:
        rows += [
            ("timed steps / seconds", f"{result['timed_steps']} / {result['seconds']:.2f}"),
            ("samples/s", _num(result["samples_per_s"], ".3f")),
            ("tokens/s (text + image)", f"{result['tokens_per_s']:.0f} ({result['text_tokens']} + {result['image_tokens']} tokens)"),
            ("model TFLOP/s", _num(result["model_flops_per_s"] / 1e12, ".3g")),
            ("MFU", _num(result["mfu"], ".1%", "n/a (no peak for this device)")),
            ("peak memory", f"{result['peak_memory_bytes'] / GIB:.2f} GiB ({result['peak_memory_kind']})"),
            ("padding fraction", f"{result['padding_fraction']:.3f}"),
            ("losses", ", ".join(f"{x:.4f}" for x in result["losses"])),
        ]
    rows += [("dataloader images/s per core", _num(loader["images_per_s_per_core"], ".1f")),
             ("dataloader samples/s per core", _num(loader["samples_per_s_per_core"], ".1f"))]
    if result.get("loader_headroom") is not None:
        rows.append(("loader / training speed", f"{result['loader_headroom']:.1f}x with {max(1, result['dataloader_workers'])} workers"))
    if "anyres" in loader:
        anyres = loader["anyres"]
        rows += [("anyres kit / transformers PIL (img/s/core)",
                  f"{_num(anyres['kit_anyres_images_per_s_per_core'], '.1f')} / "
                  f"{_num(anyres['transformers_pil_images_per_s_per_core'], '.1f')}"),
                 ("torchvision backend", anyres["torchvision_backend"])]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _performance_cells(result: dict) -> list[str]:
    mfu = _num(result.get("mfu"), ".1%", "n/a")
    return [result["stage"], result["profile"], result["device"], f"{result['samples_per_s']:.2f}", mfu,
            f"{result['peak_memory_bytes'] / GIB:.1f} GiB", result["date"]]


def performance_row(result: dict) -> str:
    """| stage | profile | device | samples/s | MFU | peak memory | date | for docs/performance.md."""
    return markdown_row(_performance_cells(result))


def _speedup_cells(stage: str, seed: dict | None, fast: dict | None) -> list[str]:
    if not (seed and fast):
        return [stage, "missing run", "", ""]
    diff = max(abs(a - b) / abs(a) for a, b in zip(seed["losses"], fast["losses"]))
    return [stage, f"{fast['samples_per_s'] / seed['samples_per_s']:.2f}x", f"{diff:.2e}",
            f"{fast['packing']}, {fast['loss_impl_effective']}"]


def comparison(results: list[dict]) -> str:
    """Markdown: the performance rows, then fast/seed speed-up and loss agreement per stage."""
    measured = [r for r in results if "samples_per_s" in r]
    lines = markdown_table(PERFORMANCE_HEADER, [_performance_cells(r) for r in measured])
    by_key = {(r["stage"], r["profile"]): r for r in measured}
    speedups = [_speedup_cells(stage, by_key.get((stage, "seed")), by_key.get((stage, "fast")))
                for stage in sorted({r["stage"] for r in results})]
    lines += ["", *markdown_table(SPEEDUP_HEADER, speedups)]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m llava.bench.report runs/bench/*.json
    import json
    import sys
    print(comparison([json.loads(open(path).read()) for path in sys.argv[1:]]))
