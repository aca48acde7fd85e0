"""Benchmark 2: encoder forward, batch 32, L = 64 and 128, fp32, against the same-size HF BERT.

Contenders per length (random token ids, no padding, inference mode): our `GazeModel` without maps
(fused attention) and with maps (explicit softmax, every layer's full map), our encoder computing
only the [CLS] rows of the maps (the proposed change), and `BertModel` (no pooler) with `sdpa` and
with `eager` attention, the latter also with `output_attentions=True` (`sdpa` cannot return maps).
The same rounds time `torch.matmul` of two 2048×2048 fp32 matrices: this machine's GEMM peak, to
which the encoder's matmul FLOPs per second are compared.

    python -m benchmarks.encoder_forward [--quick]
"""

from __future__ import annotations

import torch
from transformers import BertModel

from benchmarks.common import (
    SIZE,
    base_parser,
    bert_config,
    goal,
    goals_table,
    interleaved,
    median,
    report,
    table,
)
from benchmarks.levers import cls_row_attention
from model import GazeConfig, GazeModel

BATCH = 32
VOCAB = 8192
GEMM_N = 2048


def encoder_flops(batch: int, length: int, hidden: int, layers: int, ffn: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of the encoder's matmuls: projections, FFN, QKᵀ and AV."""
    tokens = batch * length
    per_layer = (
        2 * tokens * hidden * hidden * 4 + 2 * tokens * hidden * ffn * 2 + 2 * batch * length * length * hidden * 2
    )
    return per_layer * layers


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    lengths = [64] if args.quick else [64, 128]

    torch.manual_seed(0)
    config = GazeConfig(vocab_size=VOCAB, max_position_embeddings=512, **SIZE)
    ours = GazeModel(config).eval()
    ours_cls = cls_row_attention(GazeModel(config).eval())
    ours_cls.load_state_dict(ours.state_dict())
    bert = {impl: BertModel(bert_config(config, impl), add_pooling_layer=False).eval() for impl in ("sdpa", "eager")}
    a, b = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)

    results, rows, goals = {}, [], []
    for length in lengths:
        ids = torch.randint(5, VOCAB, (BATCH, length))
        mask = torch.ones_like(ids)

        def fwd(model, maps=False, ids=ids, mask=mask):
            def call():
                with torch.inference_mode():
                    out = model(input_ids=ids, attention_mask=mask, output_attentions=maps)
                if maps:  # what was asked for really came back
                    assert out.attentions and all(t is not None and t.numel() for t in out.attentions)
                return out

            return call

        def gemm():
            with torch.inference_mode():
                return a @ b

        contenders = {
            "ours, no maps (fused)": fwd(ours),
            "ours, all maps": fwd(ours, True),
            "ours, [CLS]-row maps (proposed)": fwd(ours_cls, True),
            "HF BERT sdpa, no maps": fwd(bert["sdpa"]),
            "HF BERT eager, no maps": fwd(bert["eager"]),
            "HF BERT eager, all maps": fwd(bert["eager"], True),
            f"torch.matmul {GEMM_N}²": gemm,
        }
        times = interleaved(contenders, rounds=rounds, warmup=2)
        peak = 2 * GEMM_N**3 / median(times[f"torch.matmul {GEMM_N}²"])
        flops = encoder_flops(BATCH, length, SIZE["hidden_size"], SIZE["num_hidden_layers"], SIZE["intermediate_size"])
        hf = median(times["HF BERT sdpa, no maps"])
        hf_maps = median(times["HF BERT eager, all maps"])
        for name, values in times.items():
            s = median(values)
            is_gemm = name.startswith("torch.matmul")
            rate = peak if is_gemm else flops / s
            vs_hf = "" if is_gemm else f"{(hf_maps if 'maps' in name and 'no maps' not in name else hf) / s:.2f}×"
            rows.append([length, name, f"{s * 1000:.2f}", f"{rate / 1e9:.0f}", f"{rate / peak:.2f}", vs_hf])
        ours_s = median(times["ours, no maps (fused)"])
        ours_maps_s = median(times["ours, all maps"])
        goals += [
            goal(f"L={length}: ours vs HF BERT sdpa, no maps", hf / ours_s, 1.0),
            goal(f"L={length}: ours vs HF BERT eager, all maps", hf_maps / ours_maps_s, 1.0),
            goal(f"L={length}: ours (no maps) as a fraction of GEMM peak", flops / ours_s / peak, 0.70, ""),
        ]
        results[str(length)] = {
            "seconds": times,
            "median_s": {name: median(v) for name, v in times.items()},
            "gemm_peak_gflops": peak / 1e9,
            "encoder_gflop_per_forward": flops / 1e9,
        }

    headers = ["L", "contender", "ms (median)", "GFLOP/s", "fraction of GEMM peak", "vs HF (same maps)"]
    markdown = "\n\n".join(
        [
            f"### Encoder forward, batch {BATCH}, fp32, median of {rounds} interleaved rounds",
            "4 layers, hidden 256, 4 heads, FFN 1024, vocabulary 8192, random weights; GFLOP/s counts the "
            'matmuls only (projections, FFN, QKᵀ, AV). "vs HF" compares maps-free contenders with BERT sdpa '
            "and map-returning ones with BERT eager + output_attentions.",
            table(headers, rows),
            goals_table(goals),
        ]
    )
    report(
        "encoder_forward", args, {"batch_size": BATCH, "rounds": rounds, "lengths": results, "goals": goals}, markdown
    )


if __name__ == "__main__":
    main()
