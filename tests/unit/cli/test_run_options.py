"""`arbiter run`'s leader-election and Prometheus options: flags, their environment fallbacks, refusals."""

from __future__ import annotations

import pytest

from arbiter.cli import build_parser, main
from arbiter.cli.run import default_prometheus_connection


def parse(*argv: str) -> object:
    return build_parser().parse_args(["run", *argv])


def test_leader_election_is_off_by_default_with_client_go_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ARBITER_LEADER_ELECTION",
        "ARBITER_LEADER_ELECTION_NAME",
        "ARBITER_LEADER_ELECTION_NAMESPACE",
    ):
        monkeypatch.delenv(name, raising=False)
    args = parse()
    assert args.leader_election is False  # type: ignore[attr-defined]
    assert args.leader_election_name == "arbiter-operator"  # type: ignore[attr-defined]
    assert args.leader_election_namespace is None  # type: ignore[attr-defined]
    timings = (
        args.leader_election_lease_duration,  # type: ignore[attr-defined]
        args.leader_election_renew_deadline,  # type: ignore[attr-defined]
        args.leader_election_retry_period,  # type: ignore[attr-defined]
    )
    assert timings == (15.0, 10.0, 2.0)


def test_the_environment_sets_what_the_flags_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBITER_LEADER_ELECTION", "true")
    monkeypatch.setenv("ARBITER_LEADER_ELECTION_NAME", "from-env")
    monkeypatch.setenv("ARBITER_LEADER_ELECTION_LEASE_DURATION", "30")
    args = parse("--leader-election-name", "from-flag")
    assert args.leader_election is True  # type: ignore[attr-defined]
    assert args.leader_election_name == "from-flag"  # type: ignore[attr-defined]
    assert args.leader_election_lease_duration == 30.0  # type: ignore[attr-defined]
    assert parse("--no-leader-election").leader_election is False  # type: ignore[attr-defined]


def test_a_bad_boolean_in_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBITER_LEADER_ELECTION", "maybe")
    with pytest.raises(SystemExit, match="ARBITER_LEADER_ELECTION must be true or false"):
        parse()


def test_timings_that_would_let_two_leaders_overlap_stop_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "run",
            "--leader-election",
            "--leader-election-namespace",
            "ns",
            "--leader-election-lease-duration",
            "5",
            "--leader-election-renew-deadline",
            "10",
        ]
    )
    assert code == 2
    assert "must be longer than the renew deadline" in capsys.readouterr().err


def test_the_default_prometheus_connection_from_flags_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ARBITER_PROMETHEUS_HEADERS", "X-Scope-OrgID=platform, X-Extra=1")
    monkeypatch.setenv("ARBITER_PROMETHEUS_CREDENTIALS_DIRS", "/a:/b")
    defaults = default_prometheus_connection(
        parse(
            "--prometheus-url",
            "https://prom:9090",
            "--prometheus-bearer-token-file",
            "/etc/arbiter/prometheus/t",
        )
    )
    assert defaults.url == "https://prom:9090"
    assert defaults.bearer_token_file == "/etc/arbiter/prometheus/t"
    assert dict(defaults.headers) == {"X-Scope-OrgID": "platform", "X-Extra": "1"}
    assert defaults.credentials_dirs == ("/a", "/b")
    flagged = default_prometheus_connection(parse("--prometheus-header", "X-Scope-OrgID=team"))
    assert dict(flagged.headers) == {"X-Scope-OrgID": "team"}


def test_inconsistent_prometheus_options_stop_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--prometheus-ca-file", "/ca", "--prometheus-insecure-skip-verify"])
    assert code == 2
    assert "cannot be combined" in capsys.readouterr().err
