"""Test servers listen below the kernel's ephemeral ports, each pytest-xdist worker in its own share."""

from __future__ import annotations

from tests.support.net import LOWEST, ephemeral_low, free_port, listening_ports


def test_workers_shares_do_not_overlap_and_stay_below_the_ephemeral_range() -> None:
    shares = [listening_ports(32768, worker, 3) for worker in range(3)]
    assert [(share.start, share.stop) for share in shares] == [(10000, 17589), (17589, 25178), (25178, 32767)]
    assert all(share.stop <= 32768 and share.start >= LOWEST for share in shares)
    assert not set(shares[0]) & set(shares[1])


def test_free_ports_are_handed_out_in_turn_and_none_twice() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    low = ephemeral_low()
    assert low is not None  # Linux says where its ephemeral ports start
    assert all(LOWEST <= port < low for port in ports)
