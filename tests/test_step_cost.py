"""Smoke tests of the step-cost benchmark on tiny trees (no timing claims)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import step_cost, step_cost_hlo, step_cost_trees

SIZES = (1000, 2500)
HLO_SIZE = 4096


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  out = tmp_path_factory.mktemp("step_cost")
  argv = [
    "--sizes",
    *map(str, SIZES),
    "--models",
    "--seconds",
    "0.05",
    "--min-rounds",
    "3",
    "--max-rounds",
    "4",
    "--min-sample-ms",
    "0",
    "--warmup-steps",
    "1",
    "--hlo",
    "--hlo-size",
    str(HLO_SIZE),
    "--out",
    str(out),
  ]
  return step_cost.main(argv), out


def test_report_files_hold_the_returned_report(report):
  returned, out = report
  platform = jax.devices()[0].platform
  written = json.loads((out / f"step_cost_{platform}.json").read_text())
  assert written == json.loads(json.dumps(returned))
  assert written["command"].startswith("python -m benchmarks.step_cost ")
  assert "--hlo-size 4096" in written["command"]
  for key in ("jax", "jaxlib", "optax", "device_kind", "cpu_count"):
    assert written["environment"][key]
  markdown = (out / f"step_cost_{platform}.md").read_text()
  for size in SIZES:
    assert f"| flat-{step_cost_trees.size_label(size)} |" in markdown
  assert "| exadam |" in markdown


def test_statistics_are_consistent(report):
  returned, _ = report
  assert [r["tree"] for r in returned["results"]] == ["flat-1e3", "flat-2500"]
  for result, size in zip(returned["results"], SIZES, strict=True):
    assert result["num_params"] == size
    assert result["num_leaves"] == 1
    assert result["min_traffic_bytes"] == 28 * size
    assert 3 <= result["rounds"] <= 4
    stats = result["optimizers"]
    assert list(stats) == ["adam", "adamw", "exadam"]
    adam = stats["adam"]
    assert adam["ratio_to_adam"] == 1.0
    assert adam["paired_ratio_q25"] == adam["paired_ratio_q75"] == 1.0
    for s in stats.values():
      assert 0 < s["q25_us"] <= s["median_us"] <= s["q75_us"]
      assert s["paired_ratio_q25"] <= s["paired_ratio_median"]
      assert s["paired_ratio_median"] <= s["paired_ratio_q75"]
      assert s["ratio_to_adam"] == pytest.approx(
        s["median_us"] / adam["median_us"]
      )
      assert s["gb_per_s"] == pytest.approx(
        result["min_traffic_bytes"] / s["median_us"] / 1e3
      )


def test_hlo_summary_counts_passes_and_costly_ops(report):
  hlo = report[0]["hlo"]
  assert set(hlo) == {"adam", "adamw", "exadam"}
  for summary in hlo.values():
    assert summary["num_elements"] == HLO_SIZE
    assert summary["array_passes"] >= 1
    assert summary["array_streams"] >= 7  # the least traffic of an update
    assert summary["divides"] >= 1 and summary["roots"] >= 1
  # EXAdam's cross-moment terms cost at most one division more than Adam.
  costly = {
    name: s["divides"] + s["roots"] + s["transcendentals"]
    for name, s in hlo.items()
  }
  assert costly["exadam"] <= costly["adam"] + 1


def test_summarize_hlo_rejects_text_without_entry():
  with pytest.raises(ValueError, match="No ENTRY computation"):
    step_cost_hlo.summarize_hlo("HloModule m\n", 10)


@pytest.mark.parametrize(
  ("model", "num_params"),
  # The paper's parameter counts (EXPERIMENTS.md).
  [("cnn", 3_223_882), ("mingpt", 14_335_553)],
)
def test_model_tree_has_the_paper_models_parameters(model, num_params):
  tree = step_cost_trees.model_tree(model, "paper", jnp.bfloat16)
  assert tree.name == f"{model}-paper"
  assert tree.num_params == num_params
  assert tree.param_bytes == 2 * num_params
  leaves = jax.tree.leaves(tree.shapes)
  assert tree.num_leaves == len(leaves) > 10
  assert {leaf.dtype for leaf in leaves} == {jnp.dtype(jnp.bfloat16)}
  assert len({leaf.shape for leaf in leaves}) > 3  # mixed shapes


def test_materialize_is_reproducible():
  shapes = {"a": jax.ShapeDtypeStruct((3, 4), jnp.float32)}
  first = step_cost_trees.materialize(shapes, seed=3, scale=0.5)
  again = step_cost_trees.materialize(shapes, seed=3, scale=0.5)
  np.testing.assert_array_equal(first["a"], again["a"])
  assert first["a"].shape == (3, 4) and first["a"].dtype == jnp.float32
  assert np.all(first["a"] != 0)


@pytest.mark.parametrize(
  ("argv", "message"),
  [
    (["--sizes", "0"], "not a positive whole number"),
    (["--sizes", "1.5"], "not a positive whole number"),
    (["--optimizers", "exadam"], "must include 'adam'"),
    (["--min-rounds", "5", "--max-rounds", "2"], "min_rounds <= max_rounds"),
    (["--seconds", "-1"], "must be positive"),
  ],
)
def test_bad_arguments_are_rejected_with_a_reason(argv, message, capsys):
  with pytest.raises(SystemExit):
    step_cost.parse_args(argv)
  assert message in capsys.readouterr().err


def test_unknown_preset_and_oversized_tree_are_rejected():
  with pytest.raises(ValueError, match="Unknown cnn preset 'huge'"):
    step_cost_trees.model_tree("cnn", "huge", jnp.float32)
  with pytest.raises(ValueError, match="drop it from --sizes"):
    step_cost.check_memory([step_cost_trees.flat_tree(10**15, "float32")], 3)
