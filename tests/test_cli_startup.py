"""``main()`` builds only the parser of the subcommand it runs (cold start); parsing must not change because of it."""

from __future__ import annotations

import argparse

import pytest

from bastion_fast import cli

VM = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/vm"
ARGVS = [
    ["tunnel", "-n", "b", "-g", "rg", "--target-resource-id", VM, "--resource-port", "22", "--port", "0",
     "--no-discovery-cache", "--debug", "--output", "json"],
    ["tunnel", "-n", "b", "-g", "rg", "--target-ip-address", "10.0.0.4", "--resource-port", "3389", "--port",
     "50022", "--discovery-cache-ttl", "30", "-v", "-v"],
    ["proxy", "-n", "b", "-g", "rg", "--target-ip-address", "10.0.0.4", "--resource-port", "22", "--keepalive", "30"],
    ["ssh-config", "-n", "b", "-g", "rg", "--target-resource-id", VM],
    ["ssh", "-n", "b", "-g", "rg", "--target-resource-id", VM, "--", "-v", "uptime"],
    ["emulator", "--port", "0"],
]


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, object]:
    # Some commands keep their own subparser in the namespace: compare it by what it is, not by identity.
    parsed = vars(parser.parse_args(argv))
    return {k: (v.prog if isinstance(v, argparse.ArgumentParser) else v) for k, v in parsed.items()}


@pytest.mark.parametrize("argv", ARGVS, ids=lambda a: a[0])
def test_single_command_parser_parses_like_the_full_one(argv: list[str]) -> None:
    single = cli._command_parser(argv)
    if single is None:
        pytest.skip(f"no {argv[0]!r} command in this build")
    assert list(single._subparsers._group_actions[0].choices) == [argv[0]]  # type: ignore[union-attr]
    assert _parse(single, argv) == _parse(cli.build_parser(), argv)


@pytest.mark.parametrize("argv", [[], ["--help"], ["--version"], ["--debug", "tunnel"], ["tunel"], ["_options"],
                                  ["ssh_config"]])
def test_anything_else_gets_the_full_parser(argv: list[str]) -> None:
    assert cli._command_parser(argv) is None


def test_usage_errors_read_the_same(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tunnel", "-n", "b", "--port", "not-a-port"]
    texts = []
    for parser in (cli._command_parser(argv), cli.build_parser()):
        assert parser is not None
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(argv)
        assert exited.value.code == cli.EXIT_USAGE
        texts.append(capsys.readouterr().err)
    assert texts[0] == texts[1]
    assert "invalid port 'not-a-port'" in texts[0]
