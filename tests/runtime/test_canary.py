"""The canary's host-side readers, on texts captured from this kind of host."""

from __future__ import annotations

import errno

import pytest

from agentcell.policy import ProbeOutcome
from agentcell.runtime._canary import _outcome, host_addresses


def test_host_addresses_are_unique_and_never_loopback() -> None:
    found = host_addresses()
    assert len(found) == len(set(found))
    assert "127.0.0.1" not in found and "::1" not in found


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (0, ProbeOutcome.CONNECTED),
        (errno.ECONNREFUSED, ProbeOutcome.REFUSED),
        (errno.ETIMEDOUT, ProbeOutcome.TIMEOUT),
        (errno.EHOSTUNREACH, ProbeOutcome.UNREACHABLE),
        (errno.ENETUNREACH, ProbeOutcome.UNREACHABLE),
        (errno.EADDRNOTAVAIL, ProbeOutcome.UNREACHABLE),
        (errno.EAFNOSUPPORT, ProbeOutcome.UNREACHABLE),
        (errno.EMFILE, ProbeOutcome.ERROR),
        (errno.EPERM, ProbeOutcome.ERROR),
    ],
)
def test_connect_errors_map_to_outcomes(code: int, outcome: ProbeOutcome) -> None:
    assert _outcome(code) is outcome
