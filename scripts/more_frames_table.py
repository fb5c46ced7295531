"""The README table of an equal-compute eval (framefusion eval --frames W... --match-frames F): python scripts/more_frames_table.py DIR/eval.json."""
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
kinds = ["count", "flash_colour", "turns_into", "dot", "order"]
out = ["| setting | frames seen | compute vs untouched at 16 | accuracy | change vs untouched at 16 (points) | " + " | ".join(kinds) + " |",
       "|---|---|---|---|---|" + "---|" * len(kinds)]
for r in rows:
    frames = r.get("frames") or 16
    plan = r.get("plan")
    if plan:
        comp = f"{r['flops_vs_target']['mean']:.3f}x ({plan['scope']})"
    elif r["label"] == "untouched":
        comp = "1x"
    else:
        p = next(x["plan"] for x in rows if x.get("plan") and x.get("frames") == frames)
        comp = f"{p['untouched_flops'] / p['target_flops']:.2f}x (unreduced)"
    ch = "-" if r["change_ci"] is None else f"{r['change']:+.1f} [{r['change_ci'][0]:+.1f}, {r['change_ci'][1]:+.1f}]"
    label = r["label"].split(" @")[0]
    out.append(f"| {label} | {frames} | {comp} | {r['accuracy']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] | {ch} | " + " | ".join(f"{r['per_kind'][k]:.3f}" for k in kinds) + " |")
print("\n".join(out))
