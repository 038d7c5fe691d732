# %% [markdown]
# # muxsim quickstart: your models on your GPUs, from Python
#
# This notebook runs `experiments/quickstart_h100.yaml` (six LLMs on one node of 8 H100-80GB,
# two popularity skews, MuxServe against spatial partitioning and temporal multiplexing)
# through muxsim's Python API, shows the summary, plots throughput and latency, and simulates
# one cell on its own. It takes a few seconds.
#
# It is generated from `examples/quickstart.py` (the same cells as a plain script, which
# `python examples/quickstart.py` runs too): edit the script, then regenerate the notebook with
# `jupytext --to ipynb --set-kernel python3 examples/quickstart.py`. `tests/test_examples.py`
# checks that the two agree and executes the notebook.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

import muxsim

# the config, found from the repository root or from examples/
CONFIG = next(p for p in (Path("experiments/quickstart_h100.yaml"), Path("../experiments/quickstart_h100.yaml"))
              if p.exists())
cfg = muxsim.load_config(CONFIG)
print(cfg.name, "|", cfg.cluster.nodes, "x", cfg.cluster.gpus_per_node, cfg.cluster.gpu, "|",
      len(cfg.llm_names()), "LLMs:", ", ".join(cfg.llm_models()))
print("cells:", [c.label for c in cfg.cells()], "| strategies:", cfg.strategies)

# %% [markdown]
# ## Run every cell under every strategy
#
# `muxsim.run` is `muxsim run` without the console: the same tables for the same config and
# seed. Pass `out="results/quickstart_h100"` to also write the output folder.

# %%
res = muxsim.run(cfg, jobs=1)
res

# %% [markdown]
# `res.summary` has one row per cell, strategy and LLM, plus `llm == "all"` rows for the whole
# cluster. Throughputs are in requests per second (`estimated_throughput_rps` is what the
# placement search expected, `total_throughput_rps` what the simulation served, summed over the
# LLMs); SLO attainment is the fraction of requests whose latency is within 8 x their SLO base
# (`slo.goodput_scale`). Every column is defined in the README's Outputs section.

# %%
att = f"slo_attainment@{cfg.slo.goodput_scale:g}"
overall = res.summary[res.summary.llm == "all"]
overall[["cell", "strategy", "estimated_throughput_rps", "total_throughput_rps", "goodput_rps", att,
         "latency_source"]]

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
sns.barplot(data=overall, x="cell", y="total_throughput_rps", hue="strategy", ax=axes[0])
axes[0].set(title=f"{cfg.name}: total throughput", ylabel="req/s (sum over LLMs)")
sns.barplot(data=overall, x="cell", y=att, hue="strategy", ax=axes[1])
axes[1].set(title=f"SLO attainment at scale {cfg.slo.goodput_scale:g}", ylabel="fraction of requests", ylim=(0, 1))
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Per request
#
# `res.requests` has every simulated request (times in seconds from the cell's start). Here,
# the end-to-end latency of the finished requests of one cell, per strategy.

# %%
req = res.requests
done = req[req.finished & (req.cell == "alpha=0.9")].assign(e2e_s=lambda d: d.finish_s - d.arrival_s)
ax = sns.ecdfplot(data=done, x="e2e_s", hue="strategy", log_scale=True)
ax.set(title=f"{cfg.name} alpha=0.9: E2E latency of finished requests", xlabel="E2E latency (s)")
plt.show()

# %% [markdown]
# ## Placements
#
# Which LLMs share which mesh, with their SM shares and the placement's throughput estimate.

# %%
pl = res.placements_table()
pl[(pl.cell == "alpha=0.9") & (pl.strategy == "muxserve")]

# %% [markdown]
# ## One cell alone
#
# `muxsim.simulate` runs one strategy of one cell (by index or label); its rows equal the
# whole run's rows for that (cell, strategy).

# %%
one = muxsim.simulate(cfg, cell="alpha=2.1", strategy="muxserve")
print(f"{len(one.requests):,} requests, {one.n_jobs:,} jobs, {one.sim_time_s:.0f} s simulated "
      f"in {one.cpu_s:.2f} CPU s")
one.summary[["llm", "model", "estimated_throughput_rps", "throughput_rps", att]]
