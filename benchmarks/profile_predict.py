"""Where the time of an end-to-end classification goes: a profile, not a benchmark.

Splits `Predictor.predict(SST-2 dev, mode)` into its phases, timed separately on the same buckets:
tokenization, building the padded tensors, the model's forward pass, and turning outputs into the
response dicts (softmax, slicing and rounding the maps, `.tolist()`); then prints the top operators of
the forward pass from `torch.profiler`.

    python -m benchmarks.profile_predict [--mode cls] [--rounds 5]
"""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import base_parser, median, our_model, sst2, table
from inference.contract import Options
from inference.predictor import Item, Predictor


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--mode", default="cls")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    texts, _ = sst2("dev")
    if args.quick:
        texts, args.rounds = texts[:128], 1
    folder, note = our_model(args.model)
    p = Predictor(folder, max_batch_size=32)
    p.predict(texts, args.mode)

    phases: dict[str, list[float]] = {"tokenize": [], "tensors": [], "forward": [], "outputs → dicts": [], "total": []}
    for _ in range(args.rounds):
        tic = time.perf_counter()
        items = [Item(e, Options(args.mode)) for e in p.encode(texts)]
        t_tok = time.perf_counter() - tic
        buckets = p._buckets(items)
        t_tensors = t_forward = 0.0
        batches = []
        for bucket in buckets:
            tic = time.perf_counter()
            lengths = [len(items[i].encoding.ids) for i in bucket]
            ids = torch.full((len(bucket), max(lengths)), p.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(bucket):
                ids[row, : lengths[row]] = torch.tensor(items[i].encoding.ids)
                mask[row, : lengths[row]] = 1
            t_tensors += time.perf_counter() - tic
            tic = time.perf_counter()
            with torch.inference_mode():
                p.model(input_ids=ids, attention_mask=mask, output_attentions=args.mode != "none")
            t_forward += time.perf_counter() - tic
            batches.append(bucket)
        tic = time.perf_counter()
        p.run(items)
        t_run = time.perf_counter() - tic
        phases["tokenize"].append(t_tok)
        phases["tensors"].append(t_tensors)
        phases["forward"].append(t_forward)
        phases["outputs → dicts"].append(max(0.0, t_run - t_tensors - t_forward))
        phases["total"].append(t_tok + t_run)

    total = median(phases["total"])
    rows = [[name, f"{median(v) * 1000:.1f}", f"{median(v) / total * 100:.0f} %"] for name, v in phases.items()]
    print(f"### Predictor.predict, SST-2 dev ({len(texts)} sentences), mode {args.mode!r}; model: {note}\n")
    print(table(["phase", "ms (median)", "share"], rows))

    items = [Item(e, Options(args.mode)) for e in p.encode(texts)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        p.run(items)
    print("\nTop operators (self CPU time):\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))


if __name__ == "__main__":
    main()
