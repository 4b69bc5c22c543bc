"""The trainers' command line: options from the config, errors in one line."""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
import re
import runpy
import sys

import docstring_parser
import pytest

from examples.cifar10 import configs as cnn_configs
from examples.cifar10 import train as cnn_train
from examples.common import cli
from examples.mingpt import configs as gpt_configs
from examples.mingpt import data as text_data
from examples.mingpt import train as gpt_train


def _parse(*argv: str) -> gpt_configs.Config:
  return cli.parse(
    gpt_configs.PRESETS, list(argv), prog="train", description="Train."
  )


def test_options_override_the_chosen_preset():
  config = _parse("--preset", "tiny", "--lr", "3e-4", "--n-layer", "3")
  assert config.preset == "tiny"
  assert config.lr == 3e-4
  assert config.model.n_layer == 3
  assert config.model.n_embd == gpt_configs.PRESETS["tiny"].model.n_embd
  assert config.iters == gpt_configs.PRESETS["tiny"].iters
  assert _parse() == gpt_configs.PRESETS["paper"]


def test_boolean_options_and_the_old_flag_names_work():
  config = _parse(
    "--no-progress",
    "--no-dynamic-step-size",
    "--text",
    "some.txt",
    "--weight-decay",
    "0.1",
  )
  assert (config.progress, config.dynamic_step_size) == (False, False)
  assert (config.text, config.weight_decay) == ("some.txt", 0.1)


def test_help_lists_the_options_with_their_docstrings(capsys):
  with pytest.raises(SystemExit) as exit_info:
    _parse("--preset", "tiny", "--help")
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  assert "--lr" in out and "--n-layer" in out and "--no-progress" in out
  assert "Training iterations" in out
  assert "(default: 600)" in out  # the tiny preset's iterations


@pytest.mark.parametrize(
  "module", ["examples.cifar10.train", "examples.mingpt.train"]
)
# runpy warns that this process imported the module already; --help only
# parses.
@pytest.mark.filterwarnings("ignore:.* found in sys.modules:RuntimeWarning")
def test_help_names_the_command_that_runs_it(module, monkeypatch, capsys):
  # As ``python -m <module> --help`` runs it: the module is __main__.
  monkeypatch.setattr(sys, "argv", [module, "--help"])
  with pytest.raises(SystemExit) as exit_info:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
  assert exit_info.value.code == 0
  usage = capsys.readouterr().out.splitlines()[0]
  assert usage.startswith(f"usage: python -m {module} ")


def _help(configs_module, monkeypatch, capsys) -> list[str]:
  # One column of groups (tyro makes several from 130 columns on); captured
  # output is drawn without box characters.
  monkeypatch.setenv("COLUMNS", "129")
  with pytest.raises(SystemExit):
    cli.parse(
      configs_module.PRESETS, ["--help"], prog="train", description="Train."
    )
  return capsys.readouterr().out.splitlines()


def _option_helps(lines: list[str]) -> dict[str, str]:
  """Each option's help text, by the option's first flag.

  The help starts on the flag's line (after two spaces or more) or below it.
  """
  helps: dict[str, list[str]] = {}
  flag = None
  for line in lines:
    option = re.match(r"  (--[a-z][^ ,]*)(?:.*?  +(\S.*))?", line)
    if option:
      flag = option.group(1)
      helps[flag] = [option.group(2) or ""]
    elif line.startswith("        ") and line.strip() and flag is not None:
      helps[flag].append(line)
    else:
      flag = None
  return {
    flag: " ".join(" ".join(help).split()) for flag, help in helps.items()
  }


def _docstrings(cls: type) -> dict[str, str]:
  """The docstring of each field of ``cls``, read as tyro reads them."""
  docs: dict[str, str] = {}
  for klass in reversed(cls.__mro__[:-1]):
    docs.update(
      (param.arg_name, " ".join(param.description.split()))
      for param in docstring_parser.parse_from_object(klass).params
    )
  return {field.name: docs[field.name] for field in dataclasses.fields(cls)}


@pytest.mark.parametrize("configs_module", [gpt_configs, cnn_configs])
def test_help_shows_each_option_with_its_docstring_and_one_default(
  configs_module, monkeypatch, capsys
):
  helps = _option_helps(_help(configs_module, monkeypatch, capsys))
  config = configs_module.PRESETS["paper"]
  docs = {**_docstrings(type(config)), **_docstrings(type(config.model))}
  del docs["model"]  # the model's group, not an option
  assert sorted(helps) == sorted("--" + n.replace("_", "-") for n in docs)
  for name, doc in docs.items():
    help = helps["--" + name.replace("_", "-")]
    assert help.startswith(doc), (name, help)
    # The docstring says what None means; tyro says what the default is.
    assert help.count("(default:") == 1 and help.endswith(")"), (name, help)


@pytest.mark.parametrize("configs_module", [gpt_configs, cnn_configs])
def test_no_option_help_shows_rst_markup(configs_module, monkeypatch, capsys):
  helps = _option_helps(_help(configs_module, monkeypatch, capsys))
  assert helps
  for flag, help in helps.items():
    assert "``" not in help and ":class:" not in help, (flag, help)


@pytest.mark.parametrize("configs_module", [gpt_configs, cnn_configs])
def test_option_docstrings_are_sentences_one_to_a_line(configs_module):
  # tyro keeps a docstring's line breaks in the help, so a line that does not
  # end a sentence shows as a break mid-sentence.
  config = configs_module.PRESETS["paper"]
  for cls in (type(config), type(config.model)):
    for klass in cls.__mro__[:-1]:
      for param in docstring_parser.parse_from_object(klass).params:
        for line in param.description.splitlines():
          line = line.strip()
          assert line[0].isupper() and line.endswith("."), (
            param.arg_name,
            line,
          )


def test_help_names_the_presets_and_groups_the_model_options(
  monkeypatch, capsys
):
  lines = _help(cnn_configs, monkeypatch, capsys)
  titles = [
    line.strip()
    for line, below in itertools.pairwise(lines)
    if line.startswith(" ") and not line.startswith("  ") and "---" in below
  ]
  assert titles == ["options", "model options"]
  assert "Train. Presets: paper, tiny." in lines
  assert _option_helps(lines)["--num-devices"] == (
    "Use only the first N devices (None: all). (default: None)"
  )


def test_options_parse_into_the_trainers_config():
  config = cli.parse(
    cnn_configs.PRESETS,
    ["--preset=tiny", "--augment", "--fsdp", "--plateau-patience=2"],
    prog="train",
    description="",
  )
  assert type(config) is cnn_configs.Config
  assert config == dataclasses.replace(
    cnn_configs.PRESETS["tiny"], augment=True, fsdp=True, plateau_patience=2
  )


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--lr", "-1e-3"], "error: lr must be positive, got -0.001."),
    (["--lr=-1e-3"], "error: lr must be positive, got -0.001."),
    (["--lr", "nan"], "error: lr must be a finite number, got nan."),
    (["--iters", "0"], "error: iters must be a positive integer, got 0."),
    (
      ["--process-id", "1"],
      "error: --process-id only apply with --distributed.",
    ),
    (
      ["--optimizer", "adam", "--no-gradient-acceleration"],
      "error: The EXAdam switches (--no-cross-moment-debiasing, "
      "--no-gradient-acceleration, --no-dynamic-step-size) only apply to "
      "--optimizer exadam, not to 'adam'.",
    ),
  ],
)
def test_bad_values_reach_the_check_and_give_one_line(argv, message, capsys):
  assert gpt_train.main(["--preset=tiny", *argv]) == 2
  assert capsys.readouterr().err.strip() == message


@pytest.mark.parametrize(
  "main, argv, message",
  [
    (
      gpt_train.main,
      ["--n-head", "7"],
      "n_embd (64) must be divisible by n_head (7) so that every head has "
      "the same width; use n_head 4 or 8, or an n_embd that is a multiple "
      "of 7.",
    ),
    (
      gpt_train.main,
      ["--n-layer", "0"],
      "n_layer must be a positive integer, got 0.",
    ),
    (
      gpt_train.main,
      ["--dropout-rate", "1"],
      "dropout_rate must lie in [0, 1), got 1.0.",
    ),
    (
      gpt_train.main,
      ["--dtype", "int8"],
      "dtype must name a floating dtype such as 'float32' or 'bfloat16', "
      "got 'int8'.",
    ),
    (
      cnn_train.main,
      ["--widths", "8", "0"],
      "widths[1] must be a positive integer, got 0.",
    ),
    (
      cnn_train.main,
      ["--widths", "8", "8", "8", "8", "8", "8"],
      "widths has 6 blocks, but each block halves the 32x32 image; use at "
      "most 5 blocks.",
    ),
    (
      cnn_train.main,
      ["--dense-features", "-1"],
      "dense_features must be a positive integer, got -1.",
    ),
  ],
)
def test_bad_model_options_give_one_line(main, argv, message, capsys):
  # The model config's own check, reached through the same single path as
  # the run config's: no tyro box, no traceback.
  assert main(["--preset=tiny", *argv]) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err == f"error: {message}\n"


@pytest.mark.parametrize(
  "argv, message",
  [
    (
      ["--preset=huge"],
      "error: argument --preset: invalid choice: 'huge' (choose from "
      "'paper', 'tiny').",
    ),
    (
      ["--optimizer=lamb"],
      "error: invalid choice 'lamb' for argument '--optimizer'. Expected one "
      "of ('exadam', 'adam', 'adamw', 'adadelta', 'rmsprop', 'sgd', "
      "'adafactor', 'ademamix', 'signum'). (python -m examples.mingpt.train "
      "--help lists the options)",
    ),
    (
      ["--n-head", "2.5"],
      "error: Error parsing --n-head: invalid literal for int() with base "
      "10: '2.5' (python -m examples.mingpt.train --help lists the options)",
    ),
    (
      ["--bogus", "3"],
      "error: Unrecognized options: --bogus, 3 (python -m "
      "examples.mingpt.train --help lists the options)",
    ),
  ],
)
def test_options_that_do_not_parse_give_one_line(argv, message, capsys):
  # What tyro or argparse reject: an unknown preset, choice or option, a
  # value of the wrong type; tyro's box becomes one line.
  assert gpt_train.main(argv) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err == f"{message}\n"


def _run_error(main, argv, capsys) -> str:
  assert main(argv) == 1
  captured = capsys.readouterr()
  error = captured.err.strip()
  assert error.startswith("error: ")
  assert "Traceback" not in error
  return error


def test_missing_data_is_one_message_and_leaves_no_folders(tmp_path, capsys):
  data_dir = tmp_path / "nothing" / "here"
  error = _run_error(
    cnn_train.main,
    ["--preset=tiny", f"--data-dir={data_dir}", "--no-download"],
    capsys,
  )
  assert "CIFAR-10 was not found" in error
  assert not (tmp_path / "nothing").exists()


def test_a_failed_download_leaves_no_empty_folders(
  tmp_path, capsys, monkeypatch
):
  from examples.cifar10 import data as cifar_data

  monkeypatch.setattr(
    cifar_data, "CIFAR10_URL", (tmp_path / "missing.tar.gz").as_uri()
  )
  data_dir = tmp_path / "new" / "data"
  error = _run_error(
    cnn_train.main, ["--preset=tiny", f"--data-dir={data_dir}"], capsys
  )
  assert "Downloading it from" in error
  assert not (tmp_path / "new").exists()


def test_a_run_folder_in_use_and_too_many_devices(tmp_path, capsys):
  text = tmp_path / "text.txt"
  text.write_text("abcdefghij" * 200, encoding="utf-8")
  out_dir = tmp_path / "run"
  out_dir.mkdir()
  (out_dir / "metrics.jsonl").write_text("")
  common = ["--preset=tiny", f"--text={text}", "--block-size=8"]
  error = _run_error(gpt_train.main, [*common, f"--out-dir={out_dir}"], capsys)
  assert "already holds a training run" in error
  error = _run_error(
    gpt_train.main,
    [*common, f"--out-dir={tmp_path / 'other'}", "--num-devices=99"],
    capsys,
  )
  assert "between 1 and the 8 available devices" in error


def test_a_text_that_is_not_utf8_is_reported(tmp_path, capsys):
  text = tmp_path / "binary.txt"
  text.write_bytes(bytes(range(256)) * 100)
  error = _run_error(
    gpt_train.main,
    ["--preset=tiny", f"--text={text}", f"--out-dir={tmp_path / 'run'}"],
    capsys,
  )
  assert "is not valid UTF-8" in error


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
  argv = ["--preset=tiny", f"--text={tmp_path / 'missing.txt'}"]
  assert gpt_train.main([*argv, "--debug"]) == 1
  assert "Traceback" in capsys.readouterr().err
  monkeypatch.setenv(cli.DEBUG_ENV_VAR, "1")
  assert gpt_train.main(argv) == 1
  assert "Traceback" in capsys.readouterr().err


def test_a_modified_data_file_is_caught_once_and_can_be_accepted(
  tmp_path, capsys, monkeypatch
):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  monkeypatch.delenv("EXADAM_DATA_DIR", raising=False)
  data_dir = tmp_path / "data"
  (data_dir / "tinyshakespeare").mkdir(parents=True)
  copy = data_dir / text_data.TINY_SHAKESPEARE_PATH
  copy.write_bytes(
    pathlib.Path(text_data.EMBEDDED_TINY_SHAKESPEARE).read_bytes()
  )
  assert text_data.load_text(data_dir).vocab_size == 65  # verified, recorded
  copy.write_text("Not Shakespeare at all.\n" * 1000, encoding="utf-8")
  error = _run_error(
    gpt_train.main,
    ["--preset=tiny", f"--data-dir={data_dir}", f"--out-dir={tmp_path / 'r'}"],
    capsys,
  )
  assert "has SHA-256" in error and "--text FILE" in error
  assert text_data.load_text(data_dir, verify=False).vocab_size < 65
