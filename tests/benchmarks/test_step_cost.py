"""Smoke tests of the step-cost benchmark on tiny trees (no timing claims)."""

import json
import pathlib
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import exadam_optax
from benchmarks.step_cost import cli, hlo, trees
from benchmarks.step_cost import report as report_lib

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
  return cli.main(argv), out


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
    assert f"| flat-{trees.size_label(size)} |" in markdown
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
    assert list(stats) == list(cli.OPTIMIZERS)
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
  summaries = report[0]["hlo"]
  assert set(summaries) == set(cli.OPTIMIZERS)
  for summary in summaries.values():
    assert summary["num_elements"] == HLO_SIZE
    assert summary["array_passes"] >= 1
    assert summary["array_streams"] >= 7  # the least traffic of an update
    assert summary["divides"] >= 1 and summary["roots"] >= 1
  # EXAdam's cross-moment terms cost two divisions more than Adam,
  # v / (v + eps) and m^2 / (m^2 + eps); the debiasing scalars none.
  costly = {
    name: s["divides"] + s["roots"] + s["transcendentals"]
    for name, s in summaries.items()
  }
  assert costly["exadam"] <= costly["adam"] + 2


def test_summarize_hlo_rejects_text_without_entry():
  with pytest.raises(ValueError, match="No ENTRY computation"):
    hlo.summarize_hlo("HloModule m\n", 10)


@pytest.mark.parametrize(
  ("model", "num_params"),
  # The paper's parameter counts (EXPERIMENTS.md).
  [("cnn", 3_223_882), ("mingpt", 14_335_553)],
)
def test_model_tree_has_the_paper_models_parameters(model, num_params):
  tree = trees.model_tree(model, "paper", jnp.bfloat16)
  assert tree.name == f"{model}-paper"
  assert tree.num_params == num_params
  assert tree.param_bytes == 2 * num_params
  leaves = jax.tree.leaves(tree.shapes)
  assert tree.num_leaves == len(leaves) > 10
  assert {leaf.dtype for leaf in leaves} == {jnp.dtype(jnp.bfloat16)}
  assert len({leaf.shape for leaf in leaves}) > 3  # mixed shapes


def test_materialize_is_reproducible():
  shapes = {"a": jax.ShapeDtypeStruct((3, 4), jnp.float32)}
  first = trees.materialize(shapes, seed=3, scale=0.5)
  again = trees.materialize(shapes, seed=3, scale=0.5)
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
    cli.parse_args(argv)
  assert message in capsys.readouterr().err


def test_unknown_preset_and_oversized_tree_are_rejected():
  with pytest.raises(ValueError, match="Unknown cnn preset 'huge'"):
    trees.model_tree("cnn", "huge", jnp.float32)
  with pytest.raises(ValueError, match="drop it from --sizes"):
    cli.check_memory([trees.flat_tree(10**15, "float32")], 3)


def _run(transform, grads):
  """Applies ``transform`` to each gradient in turn (jitted, no params)."""
  update = jax.jit(transform.update)
  state = transform.init(grads[0])
  outputs = []
  for grad in grads:
    out, state = update(grad, state)
    outputs.append(np.asarray(out))
  return outputs, state


def _paper_equations_float64(grads, b1=0.9, b2=0.999, eps=1e-8):
  """Algorithm 1 of the paper, line by line, in float64 numpy.

  Returns:
    Per step, the update and the size of the terms it sums (where they
    nearly cancel, a float32 result is only accurate relative to that).
  """
  m = v = m_size = 0.0
  outputs = []
  for t, grad in enumerate(grads, start=1):
    g = np.asarray(grad, np.float64)
    m = b1 * m + (1 - b1) * g
    m_size = b1 * m_size + (1 - b1) * np.abs(g)
    v = b2 * v + (1 - b2) * g**2
    factor = (1 + v / (v + eps) * b2**t) / (1 - b1**t)
    m_tilde, g_tilde = m * factor, g * factor
    v_tilde = v / (1 - b2**t) * (1 + m**2 / (m**2 + eps) * b1**t)
    step_size = np.log(np.sqrt(2.0) * np.sqrt(t + 1.0))
    denominator = np.sqrt(v_tilde) + eps
    outputs.append(
      (
        step_size * (m_tilde + g_tilde) / denominator,
        step_size * (m_size + np.abs(g)) * factor / denominator,
      )
    )
  return outputs


def _assert_close(actual, expected, scale, rtol, what):
  error = np.abs(np.asarray(actual, np.float64) - expected)
  relative = error / np.maximum(scale, np.finfo(np.float64).tiny)
  worst = int(np.argmax(relative))
  assert relative[worst] <= rtol, (
    f"{what}: element {worst} is {actual[worst]!r}, not {expected[worst]!r}"
    f" ({relative[worst]:.2g} of the terms' size)"
  )


def test_the_timed_exadam_follows_the_paper():
  # The step-cost benchmark times scale_by_exadam, which must compute the
  # paper's equations.
  rng = np.random.default_rng(0)
  size = 4096
  # Gradients of moderate magnitude (1e-4 to 1, so that v_t lies both below
  # and above eps), some exact zeros, signs changing from step to step.
  magnitudes = 10.0 ** rng.uniform(-4.0, 0.0, size)
  grads = []
  for _ in range(6):
    grad = magnitudes * rng.standard_normal(size)
    grad[rng.integers(0, size, 16)] = 0.0
    grads.append(jnp.asarray(grad, jnp.float32))
  outputs, state = _run(exadam_optax.scale_by_exadam(), grads)
  reference = _paper_equations_float64(grads)
  for step, (output, (exact, scale)) in enumerate(
    zip(outputs, reference, strict=True)
  ):
    assert output.dtype == np.float32
    # float32 roundings (6e-8 each) over some 20 operations, relative to the
    # size of the terms where m~ + g~ cancels.
    _assert_close(output, exact, scale, 1e-5, f"step {step}")
  assert int(state.count) == len(grads)
  # The optimizer the benchmark times applies the learning rate to it.
  params = jnp.asarray(rng.standard_normal(size), jnp.float32)
  optimizer = cli.OPTIMIZERS["exadam"]()
  updates, _ = optimizer.update(grads[0], optimizer.init(params), params)
  np.testing.assert_allclose(
    updates, -cli.LEARNING_RATE * outputs[0], rtol=1e-6
  )


def test_environment_names_the_commit_that_ran():
  root = pathlib.Path(__file__).resolve().parents[2]
  head = subprocess.run(
    ["git", "-C", str(root), "rev-parse", "HEAD"],
    capture_output=True,
    text=True,
    check=True,
  ).stdout.strip()
  environment = report_lib.environment()
  assert environment["commit"] == head
  assert isinstance(environment["commit_modified"], bool)
