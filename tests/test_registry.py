"""One way to register (hwnas.registry): the registry helper's contract, the built-ins declared where the CLI can
list them without importing torch, and another package adding a space and a runtime through an entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hwnas.errors import HwnasError
from hwnas.registry import ALL, STRATEGIES, Registry, register_runtime

PLUGIN = '''
"""A package beside hwnas: a wider tiny space and a runtime that runs nothing, registered from one entry point."""
from hwnas.registry import register_runtime, register_space
from hwnas.runtimes.base import Runtime


class DemoRuntime(Runtime):
    name = "demo-rt"

    @classmethod
    def unavailable_reason(cls, config):
        return None

    def prepare(self, module, input_shape, name):
        raise NotImplementedError

    def describe(self):
        return {"runtime": "demo-rt"}


def register():
    from hwnas.spaces.base import staged_space
    from hwnas.spaces.registry import candidate_spec

    @register_space("tiny-wide", default_resolution=32, default_num_classes=10, total_stride=8,
                    description="tiny with twice the channels (a plugin)")
    def tiny_wide(resolution, num_classes):
        def candidates(position, cin, cout, size, stride):
            return [(n, candidate_spec(n, cin, cout, size, stride, "relu6")) for n in ("k3_e3", "k5_e3")]

        return staged_space("tiny-wide", resolution, num_classes, stem=(16, 3, 2, "relu6"), fixed=[],
                            stages=[(32, 2, 2), (48, 2, 2)], candidates=candidates, head=(64, "relu6"))

    register_runtime("demo-rt", DemoRuntime)
'''

CHECKS = '''
import json, sys
from hwnas.registry import SPACES
assert "hwnas_demo_plugin" not in sys.modules, "plugins load on the first lookup, not on import"
from hwnas.spaces import get_space
from hwnas.runtimes import runtime_class, runtime_names
from hwnas.cli import main
from hwnas.cli.parser import build_parser

space = get_space("tiny-wide")
search_help = [a.choices for a in build_parser()._subparsers._group_actions[0].choices["search"]._actions
               if "--space" in a.option_strings][0]
print(json.dumps({"space": space.name, "layers": len(space.layers), "stem": space.prefix[0].cout,
                  "runtime": runtime_class("demo-rt").__name__, "runtimes": runtime_names(),
                  "choices": list(search_help), "sample": main(["sample", "--space", "tiny-wide", "--n", "2",
                                                                "--out", sys.argv[1], "--json"])}))
'''


def _plugin_dist(root: Path) -> Path:
    """A distribution on ``root`` as pip leaves one: the module and its .dist-info with entry_points.txt (one good
    entry point, one whose module does not exist)."""
    root.mkdir()
    (root / "hwnas_demo_plugin.py").write_text(PLUGIN)
    info = root / "hwnas_demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hwnas-demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hwnas.plugins]\ndemo = hwnas_demo_plugin:register\n"
                                           "broken = hwnas_demo_missing:register\n")
    return root


def _run(args: list[str], plugin_root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_root), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)


def test_a_package_adds_a_space_and_a_runtime_through_an_entry_point(tmp_path: Path) -> None:
    root = _plugin_dist(tmp_path / "site")
    listed = _run(["-m", "hwnas.cli", "spaces", "--json"], root)
    assert listed.returncode == 0, listed.stderr
    spaces = {row["name"]: row for row in json.loads(listed.stdout)["spaces"]}
    assert {"proxyless", "tiny", "tiny-wide"} <= set(spaces)
    assert spaces["tiny-wide"]["description"] == "tiny with twice the channels (a plugin)"
    assert spaces["tiny-wide"]["layers"] == 4
    # the broken entry point is one warning line; the good one still loaded
    warnings = [line for line in listed.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("hwnas: warning: plugin 'broken'"), listed.stderr
    assert "hwnas_demo_missing" in warnings[0]

    checked = _run(["-c", CHECKS, str(tmp_path / "archs")], root)
    assert checked.returncode == 0, checked.stderr
    result = json.loads(checked.stdout.strip().splitlines()[-1])
    assert (result["space"], result["layers"], result["stem"]) == ("tiny-wide", 4, 16)
    assert result["runtime"] == "DemoRuntime" and result["runtimes"][-1] == "demo-rt"
    # the CLI's choices: the built-ins in their declared order, then the plugin's
    assert result["choices"] == ["proxyless", "fbnet", "fbnet-cifar100", "tiny", "mnasnet", "tiny-wide"]
    assert result["sample"] == 0 and len(list((tmp_path / "archs").glob("*.json"))) == 2


def test_registering_a_name_twice_is_one_line_unless_replaced() -> None:
    registry: Registry[object] = Registry("widget", {"dumps": "json:dumps"})
    registry.register("a", 1)
    with pytest.raises(HwnasError) as error:
        registry.register("a", 2)
    assert str(error.value) == "widget 'a' is already registered (builtins.int); pass replace=True to replace it"
    registry.register("a", 3, replace=True)
    assert registry.get("a") == 3
    with pytest.raises(HwnasError, match="widget 'dumps' is already registered"):  # a built-in counts, unimported
        registry.register("dumps", len)
    assert registry.get("dumps") is json.dumps
    with pytest.raises(HwnasError, match="runtime 'torch' is already registered"):
        register_runtime("torch", object)

    @registry.register("b")
    def b() -> None: ...

    assert registry.get("b") is b and registry.names() == ["dumps", "a", "b"]


def test_an_unknown_name_lists_the_choices() -> None:
    from hwnas.search.strategies import get_strategy
    from hwnas.spaces import get_space

    with pytest.raises(HwnasError) as error:
        get_strategy("darts")
    assert str(error.value) == "unknown search strategy 'darts': expected one of proxyless, mnas, evolution"
    with pytest.raises(HwnasError, match="^unknown search space 'nope': expected one of proxyless, fbnet, "):
        get_space("nope")
    registry: Registry[int] = Registry("widget")
    registry.register("a", 1)
    with pytest.raises(HwnasError, match="^unknown widget 'c': expected one of a$"):
        registry.get("c")


@pytest.mark.parametrize("name", sorted(ALL))
def test_the_declared_built_ins_are_what_their_modules_register(name: str) -> None:
    """The light list of built-in names (what the CLI lists without importing torch) against the registrations
    themselves: every declared name resolves, and importing the modules registers no undeclared one."""
    registry = ALL[name]
    declared = registry.names()
    objects = registry.load_all()
    assert list(objects) == declared == registry.names()
    assert all(obj is not None for obj in objects.values())


def test_the_cli_lists_the_registries_without_importing_torch() -> None:
    code = textwrap.dedent("""
        import sys
        from hwnas.cli.parser import build_parser
        parser = build_parser()
        sub = parser._subparsers._group_actions[0].choices
        text = sub["search"].format_help() + sub["profile"].format_help()
        text += sub["predictor"]._subparsers._group_actions[0].choices["fit"].format_help()
        print(" ".join(text.split()))
        print(sorted(m for m in ("torch", "numpy", "xgboost", "hwnas.spaces") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text, imported = done.stdout.strip().splitlines()
    assert imported == "[]"
    assert "--strategy STRATEGY search strategy: proxyless, mnas, evolution" in text
    assert "--space SPACE search space: proxyless, fbnet, fbnet-cifar100, tiny" in text
    assert "--kind KIND predictor kind: calibrated, transfer, kernel" in text
    assert "latency loss of the proxyless strategy: mul#log, add#linear, add#abs" in text


def test_a_registered_strategy_is_a_cli_choice_and_a_config_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnas.cli.parser import build_parser
    from hwnas.search.run_config import SearchConfig
    from hwnas.search.strategies import ProxylessStep

    monkeypatch.setattr(STRATEGIES, "_entries", dict(STRATEGIES._entries))
    monkeypatch.setattr(STRATEGIES, "_order", dict(STRATEGIES._order))
    STRATEGIES.register("proxyless-again", ProxylessStep)
    args = build_parser().parse_args(["search", "--strategy", "proxyless-again"])
    assert args.strategy == "proxyless-again"
    assert SearchConfig(strategy="proxyless-again").strategy == "proxyless-again"
    with pytest.raises(HwnasError,
                       match="field 'strategy': expected one of proxyless, mnas, evolution, proxyless-again"):
        SearchConfig(strategy="darts")


def test_a_registered_strategy_is_given_only_the_settings_it_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import dataclass

    from hwnas.search.run_config import SearchConfig
    from hwnas.search.run_supernet import _strategy_kwargs
    from hwnas.search.strategies import MnasStep

    @dataclass
    class RandomConfig:
        lr: float = 0.0
        seed: int = 0

    class RandomStep(MnasStep):
        config_class = RandomConfig

    class AnyStep(MnasStep):
        config_class = None

    monkeypatch.setattr(STRATEGIES, "_entries", dict(STRATEGIES._entries))
    monkeypatch.setattr(STRATEGIES, "_order", dict(STRATEGIES._order))
    STRATEGIES.register("random-sampling", RandomStep)
    STRATEGIES.register("any-settings", AnyStep)
    assert set(_strategy_kwargs(SearchConfig(strategy="random-sampling"), 1.0)) == {"lr", "seed"}
    everything = set(_strategy_kwargs(SearchConfig(strategy="any-settings"), 1.0))
    assert {"loss", "loss_params", "reward", "reward_params", "lr", "seed"} <= everything
    # the built-ins as before: a loss for proxyless, a reward and its sampling settings for mnas
    assert set(_strategy_kwargs(SearchConfig(strategy="proxyless"), 1.0)) == {
        "lr", "seed", "loss", "loss_params"}
    assert {"reward", "reward_params", "lr", "seed"} <= set(
        _strategy_kwargs(SearchConfig(strategy="mnas"), 1.0)) and "loss" not in _strategy_kwargs(
        SearchConfig(strategy="mnas"), 1.0)
